"""The workflow services of ``dicomnet serve`` over loopback, with dicomnet's client: Modality
Worklist C-FIND (sequence matching, refusals), MPPS N-CREATE/N-SET and the F.7 state rules,
Storage Commitment with the report on the same association, on a new association (role
selection), retried until the requester listens and after a restart, for more instances than
one index query checks; bad requests answered with the right N status and a log line while the
server keeps serving; and every DIMSE-N request sent by a server's handler to the client over
``Service.peer``. The same against DCMTK and pynetdicom: tests/cli/test_workflow_peers.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.archive.commitment import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    request_dataset,
)
from dicomnet.archive.index import InstanceRecord
from dicomnet.archive.mpps import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from dicomnet.archive.worklist import MODALITY_WORKLIST_FIND
from dicomnet.client import CFindError, CommitmentReports, NActionRequest, NResult
from dicomnet.errors import AssociationAborted
from dicomnet.negotiation import AssociationDecision, AssociationRequest, Negotiated
from dicomnet.query import worklist_query
from dicomnet.requests import (
    NCreateRequest,
    NDeleteRequest,
    NEventReportRequest,
    NGetRequest,
    NSetRequest,
    Outgoing,
)
from dicomnet.service import ReceivedN, Response, Service
from dicomnet.services.storage import open_index
from dicomnet.services.workflow import WorkflowService, start_workflow, stop_workflow
from tests.helpers import free_port, make_ct

PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_UID = "1.2.840.10008.5.1.1.17"


def _ds(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _item(pid: str, name: str, accession: str, modality: str, station: str, date: str) -> Dataset:
    ds = _ds(
        PatientID=pid,
        PatientName=name,
        AccessionNumber=accession,
        RequestedProcedureID="RP" + accession,
        StudyInstanceUID=generate_uid(),
    )
    protocol = _ds(CodeValue="P" + accession, CodingSchemeDesignator="LOCAL", CodeMeaning="x")
    sps = _ds(
        Modality=modality,
        ScheduledStationAETitle=station,
        ScheduledProcedureStepStartDate=date,
        ScheduledProcedureStepStartTime="080000",
        ScheduledProcedureStepID="SPS" + accession,
        ScheduledProtocolCodeSequence=DicomSequence([protocol]),
    )
    ds.ScheduledProcedureStepSequence = DicomSequence([sps])
    return ds


@dataclass
class Node:
    server: DicomServer
    factory: type[WorkflowService]
    root: Path

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, calling_ae: str = "MODALITY", **kwargs: Any) -> DicomClient:
        return DicomClient(
            "127.0.0.1", self.port, calling_ae, "ARCHIVE", dimse_timeout=10, **kwargs
        )

    def pending(self) -> int:
        assert self.factory.commitments is not None
        return len(self.factory.commitments.pending)


@asynccontextmanager
async def workflow_node(
    root: Path, peers: dict[str, tuple[str, int]] | None = None, *, retries: bool = True
) -> AsyncIterator[Node]:
    index = open_index(root)
    factory = WorkflowService.factory(
        root,
        index=index,
        peers=peers or {},
        aet="ARCHIVE",
        fsync=False,
        commitment_retry=(0.2, 0.5),
    )
    assert factory.commitments is not None
    factory.commitments.timeout = 5
    try:
        start_workflow(factory, retries=retries)
        async with DicomServer(factory, "127.0.0.1", 0) as server:
            yield Node(server, factory, root)
    finally:
        await stop_workflow(factory)
        assert factory.index_writer is not None
        factory.index_writer.close()
        index.close()


async def _until(check: Any, timeout: float = 15.0) -> None:
    """Wait (bounded) until ``check()`` is true: readiness, not a fixed sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- Modality Worklist ---------------------------------------------------------------------------


async def test_worklist_c_find_with_sequence_matching(tmp_path: Path) -> None:
    async with workflow_node(tmp_path / "store") as node:
        assert node.factory.worklist is not None
        node.factory.worklist.add_many(
            [
                _item("P1", "Doe^John", "A1", "CT", "CT1", "20261201"),
                _item("P2", "Roe^Jane", "A2", "MR", "MR1", "20261201"),
                _item("P3", "Doe^Anna", "A3", "CT", "CT2", "20261202"),
            ]
        )
        async with node.client() as client:

            async def find(query: dict[str, Any]) -> list[Dataset]:
                return [m async for m in client.c_find(worklist_query(query), "worklist")]

            ct = await find({"PatientName": None, "Modality": "CT"})
            assert [str(m.PatientName) for m in ct] == ["Doe^John", "Doe^Anna"]
            # Only the requested attributes come back, the SPS in its sequence of one item.
            assert sorted(e.keyword for e in ct[0]) == [
                "PatientName",
                "ScheduledProcedureStepSequence",
            ]
            assert [e.keyword for e in ct[0].ScheduledProcedureStepSequence[0]] == ["Modality"]
            day = await find(
                {
                    "PatientID": None,
                    "ScheduledProcedureStepStartDate": "20261201",
                    "ScheduledStationAETitle": "MR*",
                }
            )
            assert [m.PatientID for m in day] == ["P2"]
            # A sequence key inside the step item: the protocol code of A3 only.
            code = await find(
                {
                    "AccessionNumber": None,
                    "ScheduledProtocolCodeSequence": {"CodeValue": "PA3", "CodeMeaning": None},
                }
            )
            assert [m.AccessionNumber for m in code] == ["A3"]
            protocol = code[0].ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
            assert [(p.CodeValue, p.CodeMeaning) for p in protocol] == [("PA3", "x")]
            assert await find({"PatientID": "nobody"}) == []
            # A sequence key with two items cannot be matched: 0xA900 with the reason.
            bad = worklist_query({"PatientID": None})
            bad.ScheduledProcedureStepSequence = DicomSequence([_ds(Modality="CT")] * 2)
            with pytest.raises(CFindError) as refused:
                _ = [m async for m in client.c_find(bad, MODALITY_WORKLIST_FIND)]
            assert refused.value.status == 0xA900
            assert "one item" in (refused.value.error_comment or "")
            # The archive's own C-FIND still answers on the same service.
            studies = [m async for m in client.c_find({"PatientID": None}, level="STUDY")]
            assert studies == []


# -- MPPS ----------------------------------------------------------------------------------------


def _mpps_start(accession: str = "A1") -> Dataset:
    ds = _ds(
        PerformedProcedureStepStatus="IN PROGRESS",
        PatientID="P1",
        Modality="CT",
        PerformedProcedureStepID="PPS1",
    )
    ds.ScheduledStepAttributesSequence = DicomSequence(
        [
            _ds(
                AccessionNumber=accession,
                RequestedProcedureID="RP" + accession,
                ScheduledProcedureStepID="SPS" + accession,
            )
        ]
    )
    return ds


async def test_mpps_create_set_and_the_f7_state_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dicomnet")
    async with workflow_node(tmp_path / "store") as node, node.client("CT1") as client:
        created = await client.n_create(MPPS, attributes=_mpps_start())
        assert created.status == Status.SUCCESS
        uid = created.affected_sop_instance_uid
        assert uid is not None and uid.startswith("1.2.826.0.1.3680043.8.498.")
        again = await client.n_create(MPPS, uid, _mpps_start())
        assert again.status == Status.DUPLICATE_SOP_INSTANCE
        wrong = await client.n_create(MPPS, generate_uid(), _ds(PerformedProcedureStepStatus="X"))
        assert wrong.status == Status.INVALID_ATTRIBUTE_VALUE
        bare = await client.n_create(MPPS, generate_uid())
        assert bare.status == Status.MISSING_ATTRIBUTE

        update = await client.n_set(MPPS, uid, _ds(PerformedProcedureStepDescription="head"))
        assert update.status == Status.SUCCESS
        done = await client.n_set(MPPS, uid, _ds(PerformedProcedureStepStatus="COMPLETED"))
        assert done.status == Status.SUCCESS
        late = await client.n_set(MPPS, uid, _ds(PerformedProcedureStepStatus="IN PROGRESS"))
        # PS3.4 F.7.2.2.3 and Table F.7.2-2
        assert late.status == Status.PROCESSING_FAILURE
        assert late.error_comment == "Performed Procedure Step Object may no longer be updated"
        assert late.error_id == 0xA710
        unknown = await client.n_set(MPPS, "1.2.3.4", _ds(PerformedProcedureStepStatus="COMPLETED"))
        assert unknown.status == Status.NO_SUCH_SOP_INSTANCE
        assert await client.c_echo() == Status.SUCCESS  # still serving
        assert node.factory.mpps is not None
        records = list(node.factory.mpps.records())
    assert [(r.sop_instance_uid, r.status, r.worklist_item_id, r.calling_ae) for r in records] == [
        (uid, "COMPLETED", "A1|RPA1|SPSA1", "CT1")
    ]
    assert records[0].dataset.PerformedProcedureStepDescription == "head"
    assert f"MPPS N-SET {uid} refused: 0x0110" in caplog.text
    assert "MPPS N-SET 1.2.3.4 refused: 0x0112" in caplog.text


# -- Storage Commitment --------------------------------------------------------------------------


async def _store(client: DicomClient, count: int) -> list[Dataset]:
    instances = [make_ct(8, 8) for _ in range(count)]
    for ds in instances:
        assert await client.c_store(ds) == Status.SUCCESS
    return instances


async def test_commitment_report_on_the_same_association(tmp_path: Path) -> None:
    async with workflow_node(tmp_path / "store") as node, node.client() as client:
        stored = await _store(client, 3)
        missing = (CTImageStorage, generate_uid())
        conflict = (MRImageStorage, stored[2].SOPInstanceUID)
        refs = [(CTImageStorage, ds.SOPInstanceUID) for ds in stored[:2]] + [missing, conflict]
        report = await client.request_commitment(refs, timeout=10)
        await _until(lambda: node.pending() == 0)
    assert report.success == refs[:2]
    assert report.failure == [
        (*missing, NO_SUCH_OBJECT_INSTANCE),
        (*conflict, CLASS_INSTANCE_CONFLICT),
    ]


class _Listener:
    """A commitment report listener that records the roles proposed for each context."""

    def __init__(self) -> None:
        self.reports = CommitmentReports()
        self.roles: list[tuple[str, bool | None, bool | None]] = []
        base = self.reports.listener()
        roles = self.roles

        class Recording(base):  # type: ignore[valid-type,misc]
            async def on_association_request(
                self, request: AssociationRequest
            ) -> AssociationDecision:
                for pc in request.presentation_contexts:
                    roles.append((pc.abstract_syntax, pc.proposed_scu_role, pc.proposed_scp_role))
                return await super().on_association_request(request)

        self.factory = Recording


async def _request_and_hang_up(node: Node, refs: Sequence[tuple[str, str]]) -> str:
    """An N-ACTION on an association released at once after its response."""
    uid = generate_uid()
    async with node.client() as client:
        result = await client.n_action(
            STORAGE_COMMITMENT_PUSH,
            STORAGE_COMMITMENT_PUSH_INSTANCE,
            1,
            request_dataset(uid, refs),
        )
        assert result.status == Status.SUCCESS
    return uid


async def test_commitment_report_on_a_new_association_with_role_selection(tmp_path: Path) -> None:
    listener = _Listener()
    async with DicomServer(listener.factory, "127.0.0.1", 0) as receiver:
        peers = {"MODALITY": ("127.0.0.1", receiver.port)}
        async with workflow_node(tmp_path / "store", peers) as node:
            async with node.client() as client:
                stored = await _store(client, 2)
            refs = [(CTImageStorage, ds.SOPInstanceUID) for ds in stored]
            uid = generate_uid()
            waiter = listener.reports.expect(uid)
            async with node.client() as client:
                result = await client.n_action(
                    STORAGE_COMMITMENT_PUSH,
                    STORAGE_COMMITMENT_PUSH_INSTANCE,
                    1,
                    request_dataset(uid, refs),
                )
            assert result.status == Status.SUCCESS
            report = await asyncio.wait_for(waiter, 10)
            await _until(lambda: node.pending() == 0)
    assert report.success == refs and report.failure == []
    # The archive proposed the SCP role for itself, not the SCU role (PS3.4 J.3.3.1.3).
    assert listener.roles == [(STORAGE_COMMITMENT_PUSH, False, True)]


async def test_commitment_report_retried_until_the_requester_listens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dicomnet")
    port = free_port()  # nothing listens there yet
    async with workflow_node(tmp_path / "store", {"MODALITY": ("127.0.0.1", port)}) as node:
        assert node.factory.commitments is not None
        pending = node.factory.commitments.pending
        uid = await _request_and_hang_up(node, [(CTImageStorage, generate_uid())])
        await _until(lambda: pending.attempts(uid) >= 2)
        assert "not delivered (attempt 1" in caplog.text
        listener = _Listener()
        waiter = listener.reports.expect(uid)
        async with DicomServer(listener.factory, "127.0.0.1", port):
            report = await asyncio.wait_for(waiter, 15)
            await _until(lambda: node.pending() == 0)
    assert report.transaction_uid == uid
    assert [reason for _c, _i, reason in report.failure] == [NO_SUCH_OBJECT_INSTANCE]


async def test_a_pending_report_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()
    peers = {"MODALITY": ("127.0.0.1", port)}
    root = tmp_path / "store"
    async with workflow_node(root, peers, retries=False) as node:
        assert node.factory.commitments is not None
        pending = node.factory.commitments.pending
        uid = await _request_and_hang_up(node, [(CTImageStorage, generate_uid())])
        await _until(lambda: pending.attempts(uid) == 1)  # the first attempt failed
    listener = _Listener()
    waiter = listener.reports.expect(uid)
    async with DicomServer(listener.factory, "127.0.0.1", port):
        async with workflow_node(root, peers) as restarted:
            report = await asyncio.wait_for(waiter, 15)
            await _until(lambda: restarted.pending() == 0)
    assert report.transaction_uid == uid


async def test_commitment_of_more_instances_than_one_index_query(tmp_path: Path) -> None:
    root = tmp_path / "store"
    count = 1234
    refs = [(CTImageStorage, f"1.2.826.0.1.3680043.8.498.7.{n}") for n in range(count)]
    folder = root / "x"
    folder.mkdir(parents=True)
    index = open_index(root)
    records = []
    for n, (sop_class, uid) in enumerate(refs):
        (folder / f"{n}.dcm").write_bytes(b"\0" * 16)
        records.append(
            InstanceRecord(
                sop_instance_uid=uid,
                sop_class_uid=sop_class,
                study_instance_uid="1.2.3",
                series_instance_uid="1.2.3.4",
                path=f"x/{n}.dcm",
                size=16 if n != 7 else 99,  # the file of #7 is not complete
            )
        )
    index.add_many(records)
    index.close()
    async with workflow_node(root) as node:
        delivery = node.factory.commitments
        assert delivery is not None
        asked: list[int] = []
        lookup = delivery.lookup

        def counting(uids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
            asked.append(len(uids))
            return lookup(uids)

        delivery.lookup = counting
        async with node.client() as client:
            report = await client.request_commitment(refs, timeout=20)
    assert len(report.success) == count - 1
    assert report.failure == [(*refs[7], NO_SUCH_OBJECT_INSTANCE)]
    assert sum(asked) == count and max(asked) <= 500  # chunked (archive.commitment.CHUNK)


# -- bad requests ----------------------------------------------------------------------------------


@dataclass(eq=False)
class RawAction(NActionRequest):
    """An N-ACTION-RQ whose Action Information is the given bytes, whatever they are."""

    raw: bytes = b""

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        ctx, message, _data = super().outgoing(negotiated)
        message.has_dataset = True  # type: ignore[union-attr]
        return ctx, message, self.raw


def _action(info: Dataset | None, *, action: int = 1, instance: str = "") -> NActionRequest:
    return NActionRequest(
        sop_class_uid=STORAGE_COMMITMENT_PUSH,
        sop_instance_uid=instance or STORAGE_COMMITMENT_PUSH_INSTANCE,
        action_type_id=action,
        dataset=info,
    )


async def test_bad_requests_get_their_n_status_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dicomnet")
    ok_info = request_dataset(generate_uid(), [(CTImageStorage, generate_uid())])
    no_instance_uid = request_dataset(generate_uid(), [(CTImageStorage, generate_uid())])
    del no_instance_uid.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    cases: list[tuple[str, Any, int]] = [
        ("empty Referenced SOP Sequence", _action(request_dataset(generate_uid(), [])), 0x0115),
        ("item without an instance", _action(no_instance_uid), 0x0115),
        ("no data set", _action(None), 0x0115),
        (
            "undecodable data set",
            RawAction(
                sop_class_uid=STORAGE_COMMITMENT_PUSH,
                sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
                action_type_id=1,
                raw=b"\x08\x00\x99\x11\xff\xff",
            ),
            0x0115,
        ),
        ("another action", _action(ok_info, action=2), Status.NO_SUCH_ACTION),
        ("another instance", _action(ok_info, instance="1.2.3"), Status.NO_SUCH_SOP_INSTANCE),
    ]
    async with workflow_node(tmp_path / "store") as node, node.client() as client:
        for name, request, status in cases:
            result = await client.n_request(request)
            assert result.status == status, name
            assert result.error_comment, name
        # An N-EVENT-REPORT nobody asked for: the archive is not the report's receiver.
        stray = await client.n_event_report(
            STORAGE_COMMITMENT_PUSH,
            STORAGE_COMMITMENT_PUSH_INSTANCE,
            1,
            request_dataset(generate_uid(), [(CTImageStorage, generate_uid())]),
        )
        assert stray.status == Status.UNRECOGNIZED_OPERATION
        # N-SET/N-CREATE on the commitment class: not offered for it.
        refused = await client.n_request(
            NSetRequest(
                sop_class_uid=STORAGE_COMMITMENT_PUSH,
                sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
                dataset=_ds(PatientID="x"),
            )
        )
        assert refused.status == Status.UNRECOGNIZED_OPERATION
        assert await client.c_echo() == Status.SUCCESS  # still serving
        good = await client.n_request(_action(ok_info))
        assert good.status == Status.SUCCESS
        # Only the good one is pending, until it is delivered on this association.
        await _until(lambda: node.pending() == 0)
    log = caplog.text
    assert "has no item" in log and "commitment request refused: 0x0115" in log
    assert "cannot be decoded" in log and "commitment N-ACTION type 2" in log
    assert "not the well-known" in log
    assert "N-EVENT-REPORT-RQ for 1.2.840.10008.1.20.1 1.2.840.10008.1.20.1.1: not offered" in log
    assert "N-SET-RQ for 1.2.840.10008.1.20.1: not offered here; answered 0x0211" in log


# -- every N request from a server's handler to the client ------------------------------------------


async def test_every_n_service_from_the_server_to_the_client() -> None:
    sent: list[NResult] = []
    errors: list[BaseException] = []

    class Asks(Service):
        abstract_syntaxes = (PRINTER,)

        async def on_n_action(self, request: ReceivedN) -> int:
            peer = self.peer
            assert peer is not None and peer.is_open
            cls, uid = PRINTER, PRINTER_UID
            for rq in (
                NEventReportRequest(
                    sop_class_uid=cls,
                    sop_instance_uid=uid,
                    event_type_id=3,
                    dataset=_ds(PrinterStatus="WARNING"),
                ),
                NGetRequest(sop_class_uid=cls, sop_instance_uid=uid, attributes=["PrinterName"]),
                NSetRequest(sop_class_uid=cls, sop_instance_uid=uid, dataset=_ds(PrinterName="A")),
                NActionRequest(sop_class_uid=cls, sop_instance_uid=uid, action_type_id=4),
                NCreateRequest(sop_class_uid=cls, dataset=_ds(PrinterName="B")),
                NDeleteRequest(sop_class_uid=cls, sop_instance_uid=uid),
            ):
                sent.append(await peer.send(rq))
            return Status.SUCCESS

    received: list[tuple[str, ReceivedN]] = []

    def handler(name: str, reply: Dataset | None = None, status: int = 0) -> Any:
        async def answer(request: ReceivedN) -> Response:
            received.append((name, request))
            extra = {"affected_sop_instance_uid": "1.2.3.9"} if name == "create" else {}
            return Response(status, dataset=reply, extra=extra)

        return answer

    async with DicomServer(Asks, "127.0.0.1", 0) as server:
        client = DicomClient("127.0.0.1", server.port, "SCU", "SCP", dimse_timeout=10)
        client.on_n_event_report = handler("event", _ds(PrinterStatus="ACK"))
        client.on_n_get = handler("get", _ds(PrinterName="LASER"))
        client.on_n_set = handler("set", status=Status.NO_SUCH_ATTRIBUTE)
        client.on_n_action = handler("action")
        client.on_n_create = handler("create")
        client.on_n_delete = handler("delete", status=Status.NO_SUCH_SOP_INSTANCE)
        async with client:
            trigger = await client.n_action(PRINTER, PRINTER_UID, 1)
        assert trigger.status == Status.SUCCESS
    assert not errors
    assert [name for name, _r in received] == ["event", "get", "set", "action", "create", "delete"]
    requests = dict(received)
    assert requests["event"].event_type_id == 3
    assert requests["event"].dataset is not None
    assert requests["event"].dataset.PrinterStatus == "WARNING"
    assert requests["get"].attribute_identifier_list == [0x21100030]
    assert requests["action"].action_type_id == 4
    assert requests["create"].sop_instance_uid is None
    assert all(r.sop_class_uid == PRINTER for _n, r in received)
    statuses = [r.status for r in sent]
    assert statuses == [0, 0, Status.NO_SUCH_ATTRIBUTE, 0, 0, Status.NO_SUCH_SOP_INSTANCE]
    assert sent[0].type_id == 3 and sent[0].dataset is not None
    assert sent[0].dataset.PrinterStatus == "ACK"
    assert sent[1].dataset is not None and sent[1].dataset.PrinterName == "LASER"
    assert sent[4].affected_sop_instance_uid == "1.2.3.9"


async def test_a_request_to_a_peer_that_has_gone_fails() -> None:
    got: list[BaseException] = []
    released = asyncio.Event()

    class Later(Service):
        abstract_syntaxes = (PRINTER,)

        async def on_n_action(self, request: ReceivedN) -> int:
            peer = self.peer
            assert peer is not None

            async def after() -> None:
                await released.wait()
                try:
                    await peer.n_event_report(PRINTER, PRINTER_UID, 1)
                except AssociationAborted as exc:
                    got.append(exc)

            asyncio.get_running_loop().create_task(after())
            return Status.SUCCESS

    async with DicomServer(Later, "127.0.0.1", 0) as server:
        async with DicomClient("127.0.0.1", server.port, "SCU", "SCP") as client:
            assert (await client.n_action(PRINTER, PRINTER_UID, 1)).ok
        released.set()
        await _until(lambda: bool(got))
    assert "not open" in str(got[0])
