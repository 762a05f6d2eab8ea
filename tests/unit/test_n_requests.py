"""The DIMSE-N side of the SCU without a network: the N request types (contexts and role
selection, the command and data set each becomes, what they refuse), ``NResult`` read from a
response, the responses the client builds for the peer's N requests (PS3.7 §10.3), storage
commitment references and ``CommitmentReports``. The command set bytes are the codec's
(tests/unit/test_dimse_commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.archive.commitment import (
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    CommitmentReport,
    report_dataset,
)
from dicomnet.dataset import decode_dataset, encode_dataset
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status
from dicomnet.errors import DicomTimeoutError, NegotiationError
from dicomnet.negotiation import Negotiated, NegotiatedContext
from dicomnet.requests import (
    NActionRequest,
    NCreateRequest,
    NDeleteRequest,
    NEventReportRequest,
    NGetRequest,
    NResult,
    NSetRequest,
    commitment_references,
)
from dicomnet.retrieve import CommitmentReports, n_response
from dicomnet.service import AssociationInfo, ReceivedN
from tests.helpers import make_ct, write_ct

MPPS = "1.2.840.10008.3.1.2.3.3"
UID = "1.2.826.0.1.3680043.8.498.5"
GRAYSCALE_PRINT_META = "1.2.840.10008.5.1.1.9"
FILM_SESSION = "1.2.840.10008.5.1.1.1"


def _negotiated(*contexts: NegotiatedContext) -> Negotiated:
    return Negotiated({cx.context_id: cx for cx in contexts}, 16384, 16384)


def _ds(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


# -- requests -----------------------------------------------------------------------------------


def test_contexts_are_uncompressed_with_role_selection_only_for_event_reports() -> None:
    [get] = NGetRequest(sop_class_uid=MPPS, sop_instance_uid=UID).contexts()
    assert get.abstract_syntax == MPPS
    assert list(get.transfer_syntaxes) == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert (get.scu_role, get.scp_role) == (None, None)
    [event] = NEventReportRequest(sop_class_uid=MPPS, sop_instance_uid=UID).contexts()
    # Only the SCP of a SOP class reports events: a requestor proposes that role (D.3.3.4).
    assert (event.scu_role, event.scp_role) == (False, True)
    [meta] = NCreateRequest(
        sop_class_uid=FILM_SESSION, abstract_syntax=GRAYSCALE_PRINT_META, scu_role=True
    ).contexts()
    assert (meta.abstract_syntax, meta.scu_role, meta.scp_role) == (
        GRAYSCALE_PRINT_META,
        True,
        None,
    )


def test_commands_and_data_sets() -> None:
    negotiated = _negotiated(NegotiatedContext(3, MPPS, ImplicitVRLittleEndian))
    cases: list[tuple[object, type[c.DimseMessage], dict[str, object]]] = [
        (
            NGetRequest(
                sop_class_uid=MPPS, sop_instance_uid=UID, attributes=["PatientID", 0x00080060]
            ),
            c.NGetRQ,
            {
                "requested_sop_class_uid": MPPS,
                "requested_sop_instance_uid": UID,
                "attribute_identifier_list": [0x00100020, 0x00080060],
            },
        ),
        (
            NSetRequest(sop_class_uid=MPPS, sop_instance_uid=UID, dataset=_ds(PatientID="1")),
            c.NSetRQ,
            {"requested_sop_class_uid": MPPS, "requested_sop_instance_uid": UID},
        ),
        (
            NActionRequest(sop_class_uid=MPPS, sop_instance_uid=UID, action_type_id=5),
            c.NActionRQ,
            {"requested_sop_instance_uid": UID, "action_type_id": 5},
        ),
        (
            NCreateRequest(sop_class_uid=MPPS, dataset=_ds(PatientID="1")),
            c.NCreateRQ,
            {"affected_sop_class_uid": MPPS, "affected_sop_instance_uid": None},
        ),
        (
            NDeleteRequest(sop_class_uid=MPPS, sop_instance_uid=UID),
            c.NDeleteRQ,
            {"requested_sop_class_uid": MPPS, "requested_sop_instance_uid": UID},
        ),
        (
            NEventReportRequest(sop_class_uid=MPPS, sop_instance_uid=UID, event_type_id=2),
            c.NEventReportRQ,
            {"affected_sop_instance_uid": UID, "event_type_id": 2},
        ),
    ]
    for request, cls, fields in cases:
        request.message_id = 9  # type: ignore[attr-defined]
        ctx, message, data = request.outgoing(negotiated)  # type: ignore[attr-defined]
        assert ctx.context_id == 3
        assert type(message) is cls
        assert message.message_id == 9
        for name, value in fields.items():
            assert getattr(message, name) == value, (cls, name)
        dataset = request.dataset  # type: ignore[attr-defined]
        assert message.has_dataset == (dataset is not None)
        if dataset is None:
            assert data is None
        else:
            assert isinstance(data, bytes)
            assert decode_dataset(data, ImplicitVRLittleEndian) == dataset


def test_n_get_of_every_attribute_omits_the_list() -> None:
    request = NGetRequest(sop_class_uid=MPPS, sop_instance_uid=UID)
    _ctx, message, _data = request.outgoing(
        _negotiated(NegotiatedContext(1, MPPS, ExplicitVRLittleEndian))
    )
    assert isinstance(message, c.NGetRQ)
    assert message.attribute_identifier_list is None


def test_outgoing_prefers_the_context_with_the_role_granted() -> None:
    plain = NegotiatedContext(1, MPPS, ExplicitVRLittleEndian, scu_role=True, scp_role=False)
    as_scp = NegotiatedContext(3, MPPS, ExplicitVRLittleEndian, scu_role=False, scp_role=True)
    negotiated = _negotiated(plain, as_scp)
    event = NEventReportRequest(sop_class_uid=MPPS, sop_instance_uid=UID, event_type_id=1)
    assert event.outgoing(negotiated)[0].context_id == 3
    get = NGetRequest(sop_class_uid=MPPS, sop_instance_uid=UID)
    assert get.outgoing(negotiated)[0].context_id == 1
    # A peer that did not answer the role selection still gets the report.
    assert event.outgoing(_negotiated(plain))[0].context_id == 1
    with pytest.raises(NegotiationError):
        get.outgoing(_negotiated(NegotiatedContext(1, CTImageStorage, ExplicitVRLittleEndian)))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: NGetRequest(sop_class_uid=MPPS), "SOP Instance UID"),
        (lambda: NGetRequest(sop_instance_uid=UID), "SOP Class UID"),
        (lambda: NSetRequest(sop_class_uid=MPPS, sop_instance_uid=UID), "data set"),
        (
            lambda: NDeleteRequest(sop_class_uid=MPPS, sop_instance_uid=UID, dataset=Dataset()),
            "no data set",
        ),
        (
            lambda: NActionRequest(sop_class_uid=MPPS, sop_instance_uid=UID, action_type_id=-1),
            "Action Type ID",
        ),
        (
            lambda: NEventReportRequest(
                sop_class_uid=MPPS, sop_instance_uid=UID, event_type_id=70000
            ),
            "Event Type ID",
        ),
        (
            lambda: NGetRequest(sop_class_uid=MPPS, sop_instance_uid=UID, attributes=["Nope"]),
            "unknown attribute",
        ),
    ],
)
def test_requests_refuse_what_ps37_does_not_allow(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_result_reads_the_response() -> None:
    request = NCreateRequest(sop_class_uid=MPPS)
    assert request.result is None
    request.response = c.NCreateRSP(
        message_id_being_responded_to=1,
        status=Status.SUCCESS,
        affected_sop_class_uid=MPPS,
        affected_sop_instance_uid=UID,
    )
    request.response_dataset = _ds(PatientID="7")
    result = request.result
    assert result is not None
    assert result.affected_sop_instance_uid == UID  # assigned by the SCP
    assert result.dataset is not None and result.dataset.PatientID == "7"
    assert result.ok

    action = NActionRequest(sop_class_uid=MPPS, sop_instance_uid=UID, action_type_id=3)
    action.response = c.NActionRSP(
        message_id_being_responded_to=1,
        status=Status.NO_SUCH_ATTRIBUTE,
        action_type_id=3,
        error_comment="no",
        error_id=4,
        offending_elements=[0x00100010],
        attribute_identifier_list=[0x00100020],
    )
    assert action.result == NResult(
        status=Status.NO_SUCH_ATTRIBUTE,
        dataset=None,
        affected_sop_class_uid=MPPS,
        affected_sop_instance_uid=UID,
        error_comment="no",
        error_id=4,
        offending_elements=(0x00100010,),
        attribute_identifier_list=(0x00100020,),
        type_id=3,
    )
    assert action.result is not None and not action.result.ok

    odd = NGetRequest(sop_class_uid=MPPS, sop_instance_uid=UID)
    odd.response = c.CEchoRSP(message_id_being_responded_to=1, status=0x0110)
    assert odd.result == NResult(0x0110, None, MPPS, UID)


# -- the client's answers to the peer's N requests ---------------------------------------------


def test_n_response_echoes_what_ps37_section_10_3_says() -> None:
    event = c.NEventReportRQ(
        message_id=4, affected_sop_class_uid=MPPS, affected_sop_instance_uid=UID, event_type_id=2
    )
    plain = n_response(event, Status.SUCCESS)
    assert plain == c.NEventReportRSP(
        message_id_being_responded_to=4,
        status=0,
        affected_sop_class_uid=MPPS,
        affected_sop_instance_uid=UID,
    )
    # Event Type ID only with an Event Reply (C(=), PS3.7 §10.1.1.1.4).
    replied = n_response(event, Status.SUCCESS, has_dataset=True)
    assert isinstance(replied, c.NEventReportRSP)
    assert replied.event_type_id == 2 and replied.has_dataset

    action = c.NActionRQ(
        message_id=5, requested_sop_class_uid=MPPS, requested_sop_instance_uid=UID, action_type_id=3
    )
    rsp = n_response(action, 0x0110, error_comment="x" * 100, unknown_field=1, error_id=None)
    assert isinstance(rsp, c.NActionRSP)
    assert (rsp.affected_sop_class_uid, rsp.affected_sop_instance_uid) == (MPPS, UID)
    assert rsp.action_type_id is None
    assert rsp.error_comment == "x" * 64  # LO
    assert rsp.error_id is None

    create = c.NCreateRQ(message_id=6, affected_sop_class_uid=MPPS)
    assigned = n_response(create, 0, affected_sop_instance_uid=UID)
    assert isinstance(assigned, c.NCreateRSP)
    assert assigned.affected_sop_instance_uid == UID


# -- storage commitment ---------------------------------------------------------------------------


def test_commitment_references(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    on_disk = write_ct(path, rows=4, columns=4)
    in_memory = make_ct(rows=4, columns=4)
    refs = commitment_references([(CTImageStorage, UID), in_memory, path, str(path)])
    assert refs == [
        (CTImageStorage, UID),
        (CTImageStorage, in_memory.SOPInstanceUID),
        (CTImageStorage, on_disk.SOPInstanceUID),
        (CTImageStorage, on_disk.SOPInstanceUID),
    ]
    with pytest.raises(ValueError, match="pair of UIDs"):
        commitment_references([(CTImageStorage, "not a uid")])
    with pytest.raises(ValueError, match="pair of UIDs"):
        commitment_references([Dataset()])


def _received(
    ds: Dataset | None,
    *,
    sop_class: str = STORAGE_COMMITMENT_PUSH,
    event: int = 1,
) -> ReceivedN:
    ctx = NegotiatedContext(1, sop_class, ExplicitVRLittleEndian)
    message = c.NEventReportRQ(
        message_id=1,
        affected_sop_class_uid=sop_class,
        affected_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
        event_type_id=event,
        has_dataset=ds is not None,
    )
    raw = None if ds is None else encode_dataset(ds, ExplicitVRLittleEndian)
    return ReceivedN(AssociationInfo(1, "127.0.0.1", 1), ctx, message, raw=raw)


async def test_commitment_reports_deliver_by_transaction_uid() -> None:
    reports = CommitmentReports()
    report = CommitmentReport(UID, [(CTImageStorage, "1.2.3")], [(CTImageStorage, "1.2.4", 0x112)])
    assert not reports.deliver(report)  # nobody awaits it
    future = reports.expect(UID)
    assert reports.awaits(UID)
    with pytest.raises(ValueError, match="already awaited"):
        reports.expect(UID)
    answer = await reports.on_n_event_report(_received(report_dataset(report), event=2))
    assert answer == Status.SUCCESS
    assert future.result() == report
    assert await reports.wait(UID, timeout=1) == report
    assert not reports.awaits(UID)  # wait() ends the wait
    with pytest.raises(ValueError, match="not awaited"):
        await reports.wait(UID, timeout=1)


async def test_commitment_reports_wait_times_out_and_forgets() -> None:
    reports = CommitmentReports()
    future = reports.expect(UID)
    with pytest.raises(DicomTimeoutError):
        await reports.wait(UID, timeout=0.01)
    assert future.cancelled() and not reports.awaits(UID)


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (lambda ds: _received(ds, sop_class=MPPS), Status.NO_SUCH_SOP_CLASS),
        (lambda ds: _received(ds, event=3), Status.NO_SUCH_EVENT_TYPE),
        (lambda ds: _received(None), Status.INVALID_ARGUMENT_VALUE),
        (lambda ds: _received(Dataset()), Status.INVALID_ARGUMENT_VALUE),
        # The items lack their Referenced SOP Instance UID.
        (
            lambda ds: _received(_ds(TransactionUID=UID, ReferencedSOPSequence=[Dataset()])),
            Status.INVALID_ARGUMENT_VALUE,
        ),
        # A Transaction UID nobody awaits.
        (
            lambda ds: _received(report_dataset(CommitmentReport("1.2.9", [("1.2", "1.3")], []))),
            Status.INVALID_ARGUMENT_VALUE,
        ),
    ],
)
async def test_commitment_reports_refuse_bad_reports(
    request_: object, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    reports = CommitmentReports()
    future = reports.expect(UID)
    good = report_dataset(CommitmentReport(UID, [(CTImageStorage, "1.2.3")], []))
    answer = await reports.on_n_event_report(request_(good))  # type: ignore[operator]
    assert int(getattr(answer, "status", answer)) == status
    assert not future.done()  # still awaited: the SCP may send a good one
    assert caplog.records
    reports.forget(UID)
    assert future.cancelled()
