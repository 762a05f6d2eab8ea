"""dicomnet's DIMSE-N client against a pynetdicom SCP over 127.0.0.1: every N call (the fields
pynetdicom received and what the client got back), N-EVENT-REPORT sent by the client with the
SCP role selected, the storage commitment report pynetdicom sends on the same association from
inside its N-ACTION handler and on a new association it opens to a dicomnet listener, and the
0x0211 answer of a client without a handler."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.archive.commitment import (
    NO_SUCH_OBJECT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    CommitmentReport,
    report_dataset,
)
from dicomnet.client import CommitmentReports
from dicomnet.service import ReceivedN, Response
from tests.helpers import free_port, require_pynetdicom

pytestmark = pytest.mark.interop

#: Basic Film Session: pynetdicom's Print Management service class serves all six N services.
FILM_SESSION = "1.2.840.10008.5.1.1.1"
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
FILM_UID = "1.2.826.0.1.3680043.8.498.1"


@dataclass
class NSCP:
    """What the pynetdicom SCP received: (event name, request primitive, data set) in order, the
    status our client answered to each N-EVENT-REPORT pynetdicom sent, and the roles it
    accepted."""

    port: int
    received: list[tuple[str, Any, Dataset | None]] = field(default_factory=list)
    report_status: list[int] = field(default_factory=list)
    report_reply: list[Dataset | None] = field(default_factory=list)
    #: What each handler returns, by event name (default: success without a data set).
    answers: dict[str, Any] = field(default_factory=dict)
    #: Commitment: "same" (report inside the N-ACTION handler), "new" (a new association to
    #: ``listener_port``), or "none".
    commit_mode: str = "same"
    listener_port: int = 0
    #: Event Type ID to send (on the Basic Film Session instance) inside the N-GET handler.
    stray_event: int | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    new_assoc_roles: list[tuple[bool, bool]] = field(default_factory=list)


def _report_for(info: Dataset, missing: set[str]) -> CommitmentReport:
    refs = [
        (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
        for i in info.ReferencedSOPSequence
    ]
    return CommitmentReport(
        str(info.TransactionUID),
        [r for r in refs if r[1] not in missing],
        [(c, i, NO_SUCH_OBJECT_INSTANCE) for c, i in refs if i in missing],
    )


def _send_on_new_association(scp: NSCP, report: CommitmentReport) -> None:
    """The SCP's side of PS3.4 J.3.3.1.3: associate to the SCU proposing the SCP role for
    ourselves, send the report, release."""
    from pynetdicom import AE, build_role

    ae = AE(ae_title="PYNSCP")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH, SYNTAXES)
    role = build_role(STORAGE_COMMITMENT_PUSH, scp_role=True)
    assoc = ae.associate("127.0.0.1", scp.listener_port, ae_title="DICOMNET", ext_neg=[role])
    assert assoc.is_established
    cx = assoc.accepted_contexts[0]
    scp.new_assoc_roles.append((bool(cx.as_scu), bool(cx.as_scp)))
    status, _reply = assoc.send_n_event_report(
        report_dataset(report),
        report.event_type_id,
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_PUSH_INSTANCE,
    )
    scp.report_status.append(int(status.Status))
    assoc.release()


@contextmanager
def pynetdicom_n_scp(missing: set[str] | None = None) -> Iterator[NSCP]:
    require_pynetdicom()
    from pynetdicom import AE, evt

    scp = NSCP(free_port())
    gone = missing or set()
    ae = AE(ae_title="PYNSCP")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    # scp_role=True: accept the SCP role our client proposes for its N-EVENT-REPORTs.
    ae.add_supported_context(FILM_SESSION, SYNTAXES, scu_role=True, scp_role=True)
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH, SYNTAXES)

    def answer(name: str) -> Any:
        return scp.answers.get(name, (0x0000, None))

    def on_n_get(event: Any) -> Any:
        scp.received.append(("N-GET", event.request, None))
        if scp.stray_event is not None:
            status, reply = event.assoc.send_n_event_report(
                None, scp.stray_event, FILM_SESSION, event.request.RequestedSOPInstanceUID
            )
            scp.report_status.append(int(status.Status))
            scp.report_reply.append(reply)
        return answer("N-GET")

    def on_n_set(event: Any) -> Any:
        scp.received.append(("N-SET", event.request, event.modification_list))
        return answer("N-SET")

    def on_n_create(event: Any) -> Any:
        scp.received.append(("N-CREATE", event.request, event.attribute_list))
        return answer("N-CREATE")

    def on_n_delete(event: Any) -> Any:
        scp.received.append(("N-DELETE", event.request, None))
        return answer("N-DELETE")[0]

    def on_n_event_report(event: Any) -> Any:
        info = event.event_information if event.request.EventInformation else None
        scp.received.append(("N-EVENT-REPORT", event.request, info))
        return answer("N-EVENT-REPORT")

    def on_n_action(event: Any) -> Any:
        request = event.request
        info = event.action_information if request.ActionInformation else None
        scp.received.append(("N-ACTION", request, info))
        if request.RequestedSOPClassUID != STORAGE_COMMITMENT_PUSH or scp.commit_mode == "none":
            return answer("N-ACTION")
        assert info is not None
        report = _report_for(info, gone)
        if scp.commit_mode == "same":
            # Inside the handler: the report goes out before the N-ACTION-RSP.
            status, _ = event.assoc.send_n_event_report(
                report_dataset(report),
                report.event_type_id,
                STORAGE_COMMITMENT_PUSH,
                STORAGE_COMMITMENT_PUSH_INSTANCE,
            )
            scp.report_status.append(int(status.Status))
        else:
            thread = threading.Thread(target=_send_on_new_association, args=(scp, report))
            thread.start()
            scp.threads.append(thread)
        return 0x0000, None

    handlers = [
        (evt.EVT_N_GET, on_n_get),
        (evt.EVT_N_SET, on_n_set),
        (evt.EVT_N_CREATE, on_n_create),
        (evt.EVT_N_DELETE, on_n_delete),
        (evt.EVT_N_ACTION, on_n_action),
        (evt.EVT_N_EVENT_REPORT, on_n_event_report),
    ]
    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=handlers)
    try:
        yield scp
    finally:
        for thread in scp.threads:
            thread.join(30)
        server.shutdown()


def _client(scp: NSCP) -> DicomClient:
    return DicomClient("127.0.0.1", scp.port, "DICOMNET", "PYNSCP", dimse_timeout=30)


def _ds(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


# -- the six N calls --------------------------------------------------------------------------


async def test_n_get_sends_the_attribute_list_and_returns_the_attributes() -> None:
    with pynetdicom_n_scp() as scp:
        scp.answers["N-GET"] = (0x0000, _ds(NumberOfCopies=2, MediumType="PAPER"))
        async with _client(scp) as client:
            result = await client.n_get(
                FILM_SESSION, FILM_UID, ["NumberOfCopies", 0x20000030, "2000,0040"]
            )
    [(name, rq, _)] = scp.received
    assert name == "N-GET"
    assert rq.RequestedSOPClassUID == FILM_SESSION
    assert rq.RequestedSOPInstanceUID == FILM_UID
    assert [int(t) for t in rq.AttributeIdentifierList] == [0x20000010, 0x20000030, 0x20000040]
    assert result.status == Status.SUCCESS and result.ok
    assert result.dataset is not None
    assert result.dataset.NumberOfCopies == 2
    assert result.dataset.MediumType == "PAPER"
    assert result.affected_sop_class_uid == FILM_SESSION
    assert result.affected_sop_instance_uid == FILM_UID


async def test_n_get_without_attributes_omits_the_list() -> None:
    with pynetdicom_n_scp() as scp:
        async with _client(scp) as client:
            result = await client.n_get(FILM_SESSION, FILM_UID)
    [(_, rq, _)] = scp.received
    assert rq.AttributeIdentifierList is None  # PS3.7 §10.1.2.1.3: omitted = all attributes
    assert result.status == Status.SUCCESS
    assert result.dataset is None


async def test_n_set_sends_the_modification_list_and_reads_a_failure() -> None:
    with pynetdicom_n_scp() as scp:
        failure = Dataset()
        failure.Status = 0x0112
        failure.ErrorComment = "no such film session"
        scp.answers["N-SET"] = (failure, None)
        async with _client(scp) as client:
            result = await client.n_set(FILM_SESSION, FILM_UID, _ds(NumberOfCopies=3))
            # The association is still usable after a failure status.
            ok = await client.n_delete(FILM_SESSION, FILM_UID)
    (name, rq, modifications), (name2, rq2, _) = scp.received
    assert (name, name2) == ("N-SET", "N-DELETE")
    assert rq.RequestedSOPInstanceUID == FILM_UID
    assert modifications is not None and modifications.NumberOfCopies == 3
    assert result.status == 0x0112 and not result.ok
    assert result.error_comment == "no such film session"
    assert rq2.RequestedSOPClassUID == FILM_SESSION and rq2.RequestedSOPInstanceUID == FILM_UID
    assert ok.status == Status.SUCCESS


async def test_n_action_sends_the_action_type_and_returns_the_reply() -> None:
    with pynetdicom_n_scp() as scp:
        scp.answers["N-ACTION"] = (0x0000, _ds(ReferencedPrintJobSequence=[]))
        async with _client(scp) as client:
            result = await client.n_action(FILM_SESSION, FILM_UID, 1, _ds(NumberOfCopies=1))
    [(name, rq, info)] = scp.received
    assert name == "N-ACTION"
    assert rq.ActionTypeID == 1
    assert rq.RequestedSOPClassUID == FILM_SESSION and rq.RequestedSOPInstanceUID == FILM_UID
    assert info is not None and info.NumberOfCopies == 1
    assert result.status == Status.SUCCESS
    assert result.type_id == 1  # Action Type ID echoed with the Action Reply (C(=))
    assert result.dataset is not None and "ReferencedPrintJobSequence" in result.dataset


async def test_n_create_with_and_without_an_instance_uid() -> None:
    assigned = "1.2.826.0.1.3680043.8.498.77"
    with pynetdicom_n_scp() as scp:
        async with _client(scp) as client:
            named = await client.n_create(FILM_SESSION, FILM_UID, _ds(NumberOfCopies=1))
            reply = _ds(NumberOfCopies=1)
            reply.AffectedSOPInstanceUID = assigned  # pynetdicom moves it into the response
            scp.answers["N-CREATE"] = (0x0000, reply)
            unnamed = await client.n_create(FILM_SESSION, attributes=_ds(NumberOfCopies=1))
    (_, rq1, attrs1), (_, rq2, _) = scp.received
    assert rq1.AffectedSOPClassUID == FILM_SESSION
    assert rq1.AffectedSOPInstanceUID == FILM_UID
    assert attrs1 is not None and attrs1.NumberOfCopies == 1
    assert rq2.AffectedSOPInstanceUID is None
    assert named.status == Status.SUCCESS and named.affected_sop_instance_uid == FILM_UID
    assert unnamed.status == Status.SUCCESS
    assert unnamed.affected_sop_instance_uid == assigned


async def test_n_event_report_from_the_client_with_the_scp_role() -> None:
    with pynetdicom_n_scp() as scp:
        scp.answers["N-EVENT-REPORT"] = (0x0000, _ds(PrinterStatus="NORMAL"))
        async with _client(scp) as client:
            result = await client.n_event_report(
                FILM_SESSION, FILM_UID, 2, _ds(PrinterStatusInfo="NORMAL")
            )
            negotiated = client.negotiated
    [(name, rq, info)] = scp.received
    assert name == "N-EVENT-REPORT"
    assert rq.AffectedSOPClassUID == FILM_SESSION and rq.AffectedSOPInstanceUID == FILM_UID
    assert rq.EventTypeID == 2
    assert info is not None and info.PrinterStatusInfo == "NORMAL"
    # Role selection (PS3.7 §D.3.3.4): pynetdicom granted us the SCP role we proposed.
    assert negotiated is not None
    [ctx] = negotiated.contexts.values()
    assert ctx.scp_role and not ctx.scu_role
    assert result.status == Status.SUCCESS
    assert result.dataset is not None and result.dataset.PrinterStatus == "NORMAL"


# -- requests pynetdicom sends to the client ---------------------------------------------------


async def test_client_without_handler_answers_unrecognized_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pynetdicom_n_scp() as scp:
        scp.stray_event = 3
        async with _client(scp) as client:
            result = await client.n_get(FILM_SESSION, FILM_UID)
    assert result.status == Status.SUCCESS
    assert scp.report_status == [Status.UNRECOGNIZED_OPERATION]
    assert scp.report_reply == [None]
    assert "no handler on this client" in caplog.text


async def test_client_handler_answers_the_event_report() -> None:
    seen: list[tuple[Any, ...]] = []

    async def on_event(request: ReceivedN) -> Response:
        message = request.message
        seen.append(
            (
                message.event_type_id,  # type: ignore[union-attr]
                message.affected_sop_class_uid,  # type: ignore[union-attr]
                message.affected_sop_instance_uid,  # type: ignore[union-attr]
            )
        )
        return Response(Status.SUCCESS, dataset=_ds(PrinterStatus="NORMAL"))

    with pynetdicom_n_scp() as scp:
        scp.stray_event = 3
        async with _client(scp) as client:
            client.on_n_event_report = on_event
            await client.n_get(FILM_SESSION, FILM_UID)
    assert seen == [(3, FILM_SESSION, FILM_UID)]
    assert scp.report_status == [Status.SUCCESS]
    [reply] = scp.report_reply
    assert reply is not None and reply.PrinterStatus == "NORMAL"


# -- storage commitment (PS3.4 J.3) -----------------------------------------------------------


def _refs(n: int) -> list[tuple[str, str]]:
    return [(CTImageStorage, f"1.2.826.0.1.3680043.8.498.{1000 + i}") for i in range(n)]


async def test_commitment_report_on_the_same_association() -> None:
    refs = _refs(3)
    with pynetdicom_n_scp() as scp:
        async with _client(scp) as client:
            report = await client.request_commitment(refs, timeout=30)
            assert client.is_associated
    [(name, rq, info)] = scp.received
    assert name == "N-ACTION"
    assert rq.ActionTypeID == 1
    assert rq.RequestedSOPClassUID == STORAGE_COMMITMENT_PUSH
    assert rq.RequestedSOPInstanceUID == STORAGE_COMMITMENT_PUSH_INSTANCE
    assert info is not None
    assert report.transaction_uid == info.TransactionUID
    assert report.success == refs and report.failure == []
    assert scp.report_status == [Status.SUCCESS]


async def test_commitment_report_with_failures() -> None:
    refs = _refs(4)
    with pynetdicom_n_scp(missing={refs[1][1], refs[3][1]}) as scp:
        async with _client(scp) as client:
            report = await client.request_commitment(refs, timeout=30)
    assert report.event_type_id == 2
    assert report.success == [refs[0], refs[2]]
    assert report.failure == [
        (*refs[1], NO_SUCH_OBJECT_INSTANCE),
        (*refs[3], NO_SUCH_OBJECT_INSTANCE),
    ]
    assert scp.report_status == [Status.SUCCESS]


async def test_commitment_report_on_a_new_association() -> None:
    refs = _refs(2)
    reports = CommitmentReports()
    async with DicomServer(reports.listener(), "127.0.0.1", 0) as listener:
        with pynetdicom_n_scp() as scp:
            scp.commit_mode = "new"
            scp.listener_port = listener.port
            async with _client(scp) as client:
                report = await client.request_commitment(refs, timeout=30, reports=reports)
            for thread in scp.threads:
                await asyncio.to_thread(thread.join, 30)
    assert report.success == refs
    assert scp.report_status == [Status.SUCCESS]
    # pynetdicom, the association requestor, proposed the SCP role and we granted it.
    assert scp.new_assoc_roles == [(False, True)]
