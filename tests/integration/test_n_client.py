"""The DIMSE-N client over loopback: every N call against a dicomnet server's ``on_n_*``
handlers (the fields they received, what the client got back, the queue form), and requests a
peer sends to the client on the same association, from a scripted acceptor built on dicomnet's
``Association``: N requests answered by the client's handlers or with 0x0211, storage commitment
reports before and after the N-ACTION-RSP, refused, late, missing, and on a new association to
``CommitmentReports.listener()``. The same against pynetdicom: tests/interop/test_n_pynetdicom.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.archive.commitment import (
    CLASS_INSTANCE_CONFLICT,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    CommitmentReport,
    parse_request,
    report_dataset,
)
from dicomnet.association import Association, Incoming, IncomingInvalid
from dicomnet.client import (
    CommitmentError,
    CommitmentReports,
    NActionRequest,
    NCreateRequest,
    NGetRequest,
    NResult,
    Request,
)
from dicomnet.connection import Role
from dicomnet.dataset import decode_dataset, encode_dataset
from dicomnet.dimse import commands as c
from dicomnet.errors import AssociationAborted, DicomTimeoutError
from dicomnet.negotiation import build_accept, request_from_pdu
from dicomnet.pdu import A_ASSOCIATE_RQ
from dicomnet.requests import N_RESPONSES
from dicomnet.service import AssociationInfo, ReceivedN, Response, Service
from dicomnet.sinks import MemorySink

MPPS = "1.2.840.10008.3.1.2.3.3"
MPPS_UID = "1.2.826.0.1.3680043.8.498.10"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_UID = "1.2.840.10008.5.1.1.17"  # the well-known Printer SOP Instance


def _ds(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


# -- against a dicomnet server's handlers -------------------------------------------------------


def _n_service(received: list[tuple[str, c.Message, Dataset | None]]) -> type[Service]:
    class NService(Service):
        abstract_syntaxes = (MPPS, PRINTER)

        async def on_n_get(self, request: ReceivedN) -> Response:
            received.append(("get", request.message, request.dataset))
            return Response(Status.SUCCESS, dataset=_ds(PatientID="P1", Modality="CT"))

        async def on_n_set(self, request: ReceivedN) -> int | Response:
            received.append(("set", request.message, request.dataset))
            ds = request.dataset
            if ds is not None and "PerformedProcedureStepStatus" not in ds:
                return Response(
                    Status.NO_SUCH_ATTRIBUTE,
                    error_comment="unknown attribute",
                    extra={"attribute_identifier_list": [0x00100010]},
                )
            return Status.SUCCESS

        async def on_n_action(self, request: ReceivedN) -> Response:
            received.append(("action", request.message, request.dataset))
            return Response(Status.SUCCESS, dataset=_ds(PrinterStatus="NORMAL"))

        async def on_n_create(self, request: ReceivedN) -> Response:
            received.append(("create", request.message, request.dataset))
            message = request.message
            assert isinstance(message, c.NCreateRQ)
            return Response(
                Status.SUCCESS,
                extra={"affected_sop_instance_uid": message.affected_sop_instance_uid or MPPS_UID},
            )

        async def on_n_delete(self, request: ReceivedN) -> int:
            received.append(("delete", request.message, request.dataset))
            return Status.SUCCESS

        async def on_n_event_report(self, request: ReceivedN) -> int:
            received.append(("event", request.message, request.dataset))
            return Status.SUCCESS

    return NService


async def test_every_n_call_against_a_dicomnet_service() -> None:
    received: list[tuple[str, c.Message, Dataset | None]] = []
    async with (
        DicomServer(_n_service(received), "127.0.0.1", 0) as server,
        DicomClient("127.0.0.1", server.port, "SCU", "SCP") as client,
    ):
        created = await client.n_create(MPPS, attributes=_ds(PerformedStationAETitle="SCU"))
        got = await client.n_get(MPPS, MPPS_UID, ["PatientID", 0x00080060])
        updated = await client.n_set(MPPS, MPPS_UID, _ds(PerformedProcedureStepStatus="COMPLETED"))
        refused = await client.n_set(MPPS, MPPS_UID, _ds(PatientName="X"))
        acted = await client.n_action(PRINTER, PRINTER_UID, 7, _ds(NumberOfCopies=1))
        reported = await client.n_event_report(
            PRINTER, PRINTER_UID, 1, _ds(PrinterStatus="WARNING")
        )
        deleted = await client.n_delete(MPPS, MPPS_UID)
    kinds = [kind for kind, _m, _d in received]
    assert kinds == ["create", "get", "set", "set", "action", "event", "delete"]
    messages = {kind: m for kind, m, _d in received}
    data = {kind: d for kind, _m, d in received}

    create = messages["create"]
    assert isinstance(create, c.NCreateRQ)
    assert create.affected_sop_class_uid == MPPS and create.affected_sop_instance_uid is None
    assert data["create"] is not None and data["create"].PerformedStationAETitle == "SCU"
    assert created.status == Status.SUCCESS and created.affected_sop_instance_uid == MPPS_UID

    get = messages["get"]
    assert isinstance(get, c.NGetRQ)
    assert (get.requested_sop_class_uid, get.requested_sop_instance_uid) == (MPPS, MPPS_UID)
    assert get.attribute_identifier_list == [0x00100020, 0x00080060]
    assert data["get"] is None
    assert got.ok and got.dataset is not None and got.dataset.PatientID == "P1"
    assert (got.affected_sop_class_uid, got.affected_sop_instance_uid) == (MPPS, MPPS_UID)

    assert updated.status == Status.SUCCESS and updated.dataset is None
    assert refused.status == Status.NO_SUCH_ATTRIBUTE and not refused.ok
    assert refused.error_comment == "unknown attribute"
    assert refused.attribute_identifier_list == (0x00100010,)

    action = messages["action"]
    assert isinstance(action, c.NActionRQ) and action.action_type_id == 7
    assert data["action"] is not None and data["action"].NumberOfCopies == 1
    assert acted.dataset is not None and acted.dataset.PrinterStatus == "NORMAL"

    event = messages["event"]
    assert isinstance(event, c.NEventReportRQ)
    assert (event.affected_sop_class_uid, event.affected_sop_instance_uid) == (
        PRINTER,
        PRINTER_UID,
    )
    assert event.event_type_id == 1
    assert data["event"] is not None and data["event"].PrinterStatus == "WARNING"
    assert reported.status == Status.SUCCESS

    delete = messages["delete"]
    assert isinstance(delete, c.NDeleteRQ) and not delete.has_dataset
    assert deleted.status == Status.SUCCESS


async def test_n_requests_through_the_queue() -> None:
    received: list[tuple[str, c.Message, Dataset | None]] = []
    answered: list[tuple[Request, int]] = []
    requests = [
        NCreateRequest(sop_class_uid=MPPS, sop_instance_uid=MPPS_UID, dataset=_ds(Modality="MR")),
        NGetRequest(sop_class_uid=MPPS, sop_instance_uid=MPPS_UID, attributes=["Modality"]),
        NActionRequest(
            sop_class_uid=PRINTER,
            sop_instance_uid=PRINTER_UID,
            action_type_id=2,
            on_response=lambda rq, rsp: answered.append((rq, rsp.status)),
        ),
    ]
    async with (
        DicomServer(_n_service(received), "127.0.0.1", 0) as server,
        DicomClient("127.0.0.1", server.port, "SCU", "SCP") as client,
    ):
        for request in requests:
            await client.add_request(request)
        await client.send()
    assert [kind for kind, _m, _d in received] == ["create", "get", "action"]
    results = [r.result for r in requests]
    assert all(isinstance(r, NResult) and r.status == Status.SUCCESS for r in results)
    assert results[0] is not None and results[0].affected_sop_instance_uid == MPPS_UID
    assert results[1] is not None and results[1].dataset is not None
    assert answered == [(requests[2], Status.SUCCESS)]


# -- a scripted acceptor that sends requests to the client ----------------------------------------


@dataclass
class Peer:
    """An acceptor built on dicomnet's ``Association``: it accepts every proposed context (and
    role), hands each request from the client to ``on_request``, and sends its own requests
    with ``request()``, returning the client's response and its data set."""

    on_request: Callable[[Peer, c.Message, Dataset | None, int], Awaitable[None]]
    port: int = 0
    assoc: Association | None = None
    responses: dict[int, asyncio.Future[tuple[c.ResponseMessage, Dataset | None]]] = field(
        default_factory=dict
    )
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    next_id: int = 100

    def factory(self) -> Association:
        assoc = Association(Role.ACCEPTOR, AssociationInfo(1, "127.0.0.1", 0))
        assoc.sink_factory = lambda message, ctx: MemorySink()
        assoc.on_message = self._on_message
        assoc.on_release = assoc.send_release_response
        self.assoc = assoc
        made = assoc.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            made(transport)
            self._spawn(self._negotiate(assoc))

        assoc.connection_made = connection_made  # type: ignore[method-assign]
        return assoc

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _negotiate(self, assoc: Association) -> None:
        rq = await assoc.wait_associate()
        assert isinstance(rq, A_ASSOCIATE_RQ)
        request = request_from_pdu(rq)
        for pc in request.presentation_contexts:
            pc.accept()
        ac, negotiated = build_accept(rq, request)
        assoc.send_accept(ac, negotiated)

    def _on_message(self, item: Incoming | IncomingInvalid) -> None:
        assert isinstance(item, Incoming), item
        ds = None
        if isinstance(item.sink, MemorySink) and item.sink.value is not None:
            ds = decode_dataset(item.sink.value, item.context.transfer_syntax)
        message = item.message
        if isinstance(message, c.ResponseMessage):
            self.responses.pop(message.message_id_being_responded_to).set_result((message, ds))
        else:
            self._spawn(self.on_request(self, message, ds, item.context.context_id))

    async def send(self, context_id: int, message: c.Message, ds: Dataset | None = None) -> None:
        assert self.assoc is not None and self.assoc.negotiated is not None
        ts = self.assoc.negotiated.contexts[context_id].transfer_syntax
        await self.assoc.send_message(
            context_id, message, None if ds is None else encode_dataset(ds, ts)
        )

    async def request(
        self, context_id: int, message: c.Message, ds: Dataset | None = None
    ) -> tuple[c.ResponseMessage, Dataset | None]:
        """Send a request (its message ID is set here) and wait for the client's response."""
        self.next_id += 1
        message.message_id = self.next_id  # type: ignore[union-attr]
        message.has_dataset = ds is not None
        future = asyncio.get_running_loop().create_future()
        self.responses[self.next_id] = future
        await self.send(context_id, message, ds)
        return await asyncio.wait_for(future, 10)


@asynccontextmanager
async def scripted(
    on_request: Callable[[Peer, c.Message, Dataset | None, int], Awaitable[None]],
) -> AsyncIterator[Peer]:
    peer = Peer(on_request)
    server = await asyncio.get_running_loop().create_server(peer.factory, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        if peer.assoc is not None and not peer.assoc.closed.done():
            peer.assoc.abort()
        for task in list(peer.tasks):
            task.cancel()
        await asyncio.gather(*peer.tasks, return_exceptions=True)
        await server.wait_closed()


def _client(peer: Peer, **kwargs: Any) -> DicomClient:
    return DicomClient("127.0.0.1", peer.port, "SCU", "PEER", dimse_timeout=10, **kwargs)


def _report(info: Dataset | None, failed: int = -1) -> CommitmentReport:
    uid, refs = parse_request(info)
    return CommitmentReport(
        uid,
        [r for i, r in enumerate(refs) if i != failed],
        [(*r, CLASS_INSTANCE_CONFLICT) for i, r in enumerate(refs) if i == failed],
    )


def _event_report(uid: str = STORAGE_COMMITMENT_PUSH_INSTANCE, event: int = 1) -> c.NEventReportRQ:
    return c.NEventReportRQ(
        affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
        affected_sop_instance_uid=uid,
        event_type_id=event,
    )


REFS = [(CTImageStorage, f"1.2.826.0.1.3680043.8.498.{2000 + i}") for i in range(3)]


@dataclass
class Commit:
    """A commitment SCP script: report ``when`` ("before"/"after" the N-ACTION-RSP, or never),
    answer the N-ACTION with ``status``; what the client answered to each report."""

    when: str = "before"
    status: int = Status.SUCCESS
    failed: int = -1
    abort_after: bool = False
    #: Set by the test before an "after" report goes out (a late report).
    go: asyncio.Event | None = None
    answers: list[tuple[c.ResponseMessage, Dataset | None]] = field(default_factory=list)
    actions: list[c.NActionRQ] = field(default_factory=list)
    reported: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, peer: Peer, message: c.Message, ds: Dataset | None, cx: int) -> None:
        assert isinstance(message, c.NActionRQ)
        self.actions.append(message)
        report = _report(ds, self.failed)
        rq = _event_report(event=report.event_type_id)
        if self.when == "before":
            self.answers.append(await peer.request(cx, rq, report_dataset(report)))
        rsp = c.NActionRSP(
            message_id_being_responded_to=message.message_id,
            status=self.status,
            affected_sop_class_uid=message.requested_sop_class_uid,
            affected_sop_instance_uid=message.requested_sop_instance_uid,
        )
        await peer.send(cx, rsp)
        if self.abort_after:
            assert peer.assoc is not None
            peer.assoc.abort()
        elif self.when == "after":
            if self.go is not None:
                await self.go.wait()
            self.answers.append(await peer.request(cx, rq, report_dataset(report)))
            self.reported.set()


@pytest.mark.parametrize("when", ["before", "after"])
async def test_commitment_report_on_the_same_association(when: str) -> None:
    script = Commit(when=when, failed=1)
    async with scripted(script) as peer, _client(peer) as client:
        report = await client.request_commitment(REFS, timeout=10)
        negotiated = client.negotiated
    [action] = script.actions
    assert action.requested_sop_class_uid == STORAGE_COMMITMENT_PUSH
    assert action.requested_sop_instance_uid == STORAGE_COMMITMENT_PUSH_INSTANCE
    assert action.action_type_id == 1
    assert report.success == [REFS[0], REFS[2]]
    assert report.failure == [(*REFS[1], CLASS_INSTANCE_CONFLICT)]
    [(rsp, reply)] = script.answers
    # PS3.7 §10.1.1.1: the N-EVENT-REPORT-RSP echoes class and instance; no Event Reply, so
    # no Event Type ID (C(=)).
    assert isinstance(rsp, c.NEventReportRSP)
    assert rsp.status == Status.SUCCESS
    assert rsp.message_id_being_responded_to == 101
    assert rsp.affected_sop_class_uid == STORAGE_COMMITMENT_PUSH
    assert rsp.affected_sop_instance_uid == STORAGE_COMMITMENT_PUSH_INSTANCE
    assert rsp.event_type_id is None and reply is None and not rsp.has_dataset
    # Default roles on the request's association (PS3.7 §D.3.3.4): no role selection.
    assert negotiated is not None
    [ctx] = negotiated.contexts.values()
    assert ctx.scu_role and not ctx.scp_role


async def test_commitment_refused_and_a_late_report_not_awaited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Commit(when="after", status=Status.PROCESSING_FAILURE, go=asyncio.Event())
    async with scripted(script) as peer, _client(peer) as client:
        with pytest.raises(CommitmentError) as info:
            await client.request_commitment(REFS, timeout=10)
        assert info.value.status == Status.PROCESSING_FAILURE
        assert script.go is not None
        script.go.set()  # the report the script sends anyway, now that nobody awaits it
        await asyncio.wait_for(script.reported.wait(), 10)
    [(rsp, _)] = script.answers
    # Not awaited (the request failed) and no on_n_event_report: unrecognized operation.
    assert rsp.status == Status.UNRECOGNIZED_OPERATION
    assert "no handler on this client" in caplog.text


async def test_commitment_timeout_and_abort() -> None:
    async with scripted(Commit(when="never")) as peer, _client(peer) as client:
        with pytest.raises(DicomTimeoutError):
            await client.request_commitment(REFS, timeout=0.2)
        assert client.is_associated
        assert not client._commitments
    async with scripted(Commit(when="never", abort_after=True)) as peer, _client(peer) as client:
        with pytest.raises(AssociationAborted, match="new association"):
            await client.request_commitment(REFS, timeout=10)


async def test_commitment_report_on_a_new_association() -> None:
    """The SCP answers the N-ACTION, then reports on its own association to the SCU's
    listener, as a dicomnet client with the SCP role selected (PS3.4 J.3.3.1.3)."""
    reports = CommitmentReports()
    statuses: list[NResult] = []
    roles: list[tuple[bool, bool]] = []

    async with DicomServer(reports.listener(), "127.0.0.1", 0) as listener:

        async def commit(peer: Peer, message: c.Message, ds: Dataset | None, cx: int) -> None:
            assert isinstance(message, c.NActionRQ)
            await peer.send(
                cx, c.NActionRSP(message_id_being_responded_to=message.message_id, status=0)
            )
            report = _report(ds)
            async with DicomClient("127.0.0.1", listener.port, "PEER", "SCU") as back:
                statuses.append(
                    await back.n_event_report(
                        STORAGE_COMMITMENT_PUSH,
                        STORAGE_COMMITMENT_PUSH_INSTANCE,
                        report.event_type_id,
                        report_dataset(report),
                    )
                )
                assert back.negotiated is not None
                [ctx] = back.negotiated.contexts.values()
                roles.append((ctx.scu_role, ctx.scp_role))

        async with scripted(commit) as peer, _client(peer) as client:
            report = await client.request_commitment(REFS, timeout=10, reports=reports)
    assert report.success == REFS and report.failure == []
    [result] = statuses
    assert result.status == Status.SUCCESS
    assert roles == [(False, True)]


async def test_listener_answers_bad_reports() -> None:
    """A report nobody awaits, an unknown event type, a report without its Transaction UID:
    the listener answers each with its status and keeps serving."""
    reports = CommitmentReports()
    uid = "1.2.826.0.1.3680043.8.498.3000"
    async with (
        DicomServer(reports.listener(), "127.0.0.1", 0) as listener,
        DicomClient("127.0.0.1", listener.port, "PEER", "SCU") as back,
    ):
        report = report_dataset(CommitmentReport(uid, REFS, []))
        nobody = await back.n_event_report(
            STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE, 1, report
        )
        odd = await back.n_event_report(
            STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE, 9, report
        )
        empty = await back.n_event_report(
            STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE, 1, Dataset()
        )
        waiter = reports.expect(uid)
        good = await back.n_event_report(
            STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE, 1, report
        )
        assert await back.c_echo() == Status.SUCCESS
    assert nobody.status == Status.INVALID_ARGUMENT_VALUE
    assert nobody.error_comment is not None and "not awaited" in nobody.error_comment
    assert odd.status == Status.NO_SUCH_EVENT_TYPE and odd.type_id == 9
    assert empty.status == Status.INVALID_ARGUMENT_VALUE
    assert good.status == Status.SUCCESS
    assert waiter.done() and waiter.result().success == REFS


# -- N requests to the client: handlers and 0x0211 ------------------------------------------------

_RQS: list[c.Message] = [
    c.NEventReportRQ(
        affected_sop_class_uid=PRINTER, affected_sop_instance_uid=PRINTER_UID, event_type_id=3
    ),
    c.NGetRQ(requested_sop_class_uid=PRINTER, requested_sop_instance_uid=PRINTER_UID),
    c.NSetRQ(requested_sop_class_uid=PRINTER, requested_sop_instance_uid=PRINTER_UID),
    c.NActionRQ(
        requested_sop_class_uid=PRINTER, requested_sop_instance_uid=PRINTER_UID, action_type_id=4
    ),
    c.NCreateRQ(affected_sop_class_uid=PRINTER),
    c.NDeleteRQ(requested_sop_class_uid=PRINTER, requested_sop_instance_uid=PRINTER_UID),
]


@dataclass
class Sender:
    """Sends ``messages`` to the client while answering the client's N-GET."""

    messages: list[tuple[c.Message, Dataset | None]]
    answers: list[tuple[c.ResponseMessage, Dataset | None]] = field(default_factory=list)

    async def __call__(self, peer: Peer, message: c.Message, ds: Dataset | None, cx: int) -> None:
        for rq, data in self.messages:
            self.answers.append(await peer.request(cx, rq, data))
        assert isinstance(message, c.NGetRQ)
        await peer.send(cx, c.NGetRSP(message_id_being_responded_to=message.message_id, status=0))


async def test_client_without_handlers_answers_unrecognized_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Sender([(rq, _ds(PatientID="X") if isinstance(rq, c.NSetRQ) else None) for rq in _RQS])
    async with scripted(script) as peer, _client(peer) as client:
        result = await client.n_get(PRINTER, PRINTER_UID)
    assert result.status == Status.SUCCESS
    assert len(script.answers) == len(_RQS)
    for rq, (rsp, reply) in zip(_RQS, script.answers, strict=True):
        assert type(rsp).__name__ == type(rq).__name__.replace("RQ", "RSP")
        assert isinstance(rsp, N_RESPONSES)
        assert rsp.status == Status.UNRECOGNIZED_OPERATION
        assert rsp.message_id_being_responded_to == rq.message_id  # type: ignore[union-attr]
        # PS3.7 §10.3: the affected class (and instance, when the request named one) echo it.
        assert rsp.affected_sop_class_uid == PRINTER
        expected = None if isinstance(rq, c.NCreateRQ) else PRINTER_UID
        assert rsp.affected_sop_instance_uid == expected
        assert rsp.error_comment
        assert reply is None and not rsp.has_dataset
    assert caplog.text.count("no handler on this client") == len(_RQS)


async def test_client_handlers_answer_the_peers_requests() -> None:
    seen: list[tuple[str, Dataset | None]] = []

    async def on_event(request: ReceivedN) -> Response:
        seen.append(("event", request.dataset))
        return Response(Status.SUCCESS, dataset=_ds(PrinterStatus="NORMAL"))

    def on_get(request: ReceivedN) -> int:  # a plain function is a handler too
        seen.append(("get", request.dataset))
        return Status.NO_SUCH_SOP_INSTANCE

    async def on_set(request: ReceivedN) -> int:
        raise RuntimeError("disk on fire")

    async def on_create(request: ReceivedN) -> Response:
        return Response(Status.SUCCESS, extra={"affected_sop_instance_uid": "1.2.3.4"})

    messages: list[tuple[c.Message, Dataset | None]] = [
        (_RQS[0], _ds(PrinterStatusInfo="COVER OPEN")),
        (_RQS[1], None),
        (_RQS[2], _ds(PatientID="X")),
        (_RQS[4], None),
    ]
    script = Sender(messages)
    async with scripted(script) as peer, _client(peer) as client:
        client.on_n_event_report = on_event
        client.on_n_get = on_get
        client.on_n_set = on_set
        client.on_n_create = on_create
        await client.n_get(PRINTER, PRINTER_UID)
    (event, reply), (get, _), (set_, _), (create, _) = script.answers
    assert isinstance(event, c.NEventReportRSP) and event.status == Status.SUCCESS
    assert event.event_type_id == 3  # with an Event Reply, the Event Type ID (C(=))
    assert reply is not None and reply.PrinterStatus == "NORMAL"
    assert isinstance(set_, c.NSetRSP) and isinstance(create, c.NCreateRSP)
    assert get.status == Status.NO_SUCH_SOP_INSTANCE
    assert set_.status == Status.PROCESSING_FAILURE
    assert "disk on fire" in (set_.error_comment or "")
    assert create.affected_sop_instance_uid == "1.2.3.4"
    assert seen[0][0] == "event" and seen[0][1] is not None
    assert seen[0][1].PrinterStatusInfo == "COVER OPEN"
    assert seen[1] == ("get", None)


async def test_a_subclass_defines_handlers_as_methods() -> None:
    class Printer(DicomClient):
        events: list[int] = []

        async def on_n_event_report(self, request: ReceivedN) -> int:
            message = request.message
            assert isinstance(message, c.NEventReportRQ)
            self.events.append(message.event_type_id)
            return Status.SUCCESS

    script = Sender([(_RQS[0], None)])
    async with scripted(script) as peer:
        async with Printer("127.0.0.1", peer.port, "SCU", "PEER") as client:
            await client.n_get(PRINTER, PRINTER_UID)
    assert Printer.events == [3]
    assert script.answers[0][0].status == Status.SUCCESS
