"""The request dispatcher without a socket: a service's handlers answered through a recording
``send`` (PS3.7 §9.3, §10.3 response fields; PS3.4 statuses for handler failures)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

import dicomnet.sinks
from dicomnet.association import Incoming, IncomingInvalid
from dicomnet.connection import InvalidCommand
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status
from dicomnet.dispatch import RequestDispatcher, answer_c_store, status_fields
from dicomnet.errors import DIMSEError
from dicomnet.negotiation import NegotiatedContext
from dicomnet.service import (
    AssociationInfo,
    ReceivedCEcho,
    ReceivedCFind,
    ReceivedCStore,
    ReceivedN,
    Response,
    Service,
)
from dicomnet.sinks import FileSink, MemorySink, file_meta_bytes, make_sink
from dicomnet.uids import VERIFICATION

INFO = AssociationInfo(7, "127.0.0.1", 104, "SCU", "SCP")
ECHO_CTX = NegotiatedContext(1, VERIFICATION, ExplicitVRLittleEndian)
CT_CTX = NegotiatedContext(3, CTImageStorage, ExplicitVRLittleEndian)
FIND_CTX = NegotiatedContext(5, "1.2.840.10008.5.1.4.1.2.2.1", ExplicitVRLittleEndian)
N_CTX = NegotiatedContext(7, "1.2.840.10008.3.1.2.3.3", ExplicitVRLittleEndian)


class Sent:
    """A ``send`` that records (context ID, message, data)."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, c.Message, bytes | None]] = []

    async def __call__(self, context_id: int, message: c.Message, data: bytes | None) -> None:
        self.messages.append((context_id, message, data))

    @property
    def last(self) -> Any:
        return self.messages[-1][1]


def _dispatcher(service: Service, **kw: Any) -> tuple[RequestDispatcher, Sent]:
    sent = Sent()
    return RequestDispatcher(service, INFO, sent, **kw), sent


def _echo(message_id: int = 5) -> Incoming:
    return Incoming(c.CEchoRQ(message_id=message_id, affected_sop_class_uid=VERIFICATION), ECHO_CTX)


async def test_an_echo_is_answered_with_the_handlers_status() -> None:
    class Echo(Service):
        async def on_c_echo(self, request: ReceivedCEcho) -> int:
            assert request.association is INFO and request.message_id == 5
            return Status.SUCCESS

    dispatcher, sent = _dispatcher(Echo(INFO))
    await dispatcher.handle(_echo())
    context_id, rsp, data = sent.messages[0]
    assert context_id == ECHO_CTX.context_id and data is None
    assert isinstance(rsp, c.CEchoRSP)
    assert (rsp.message_id_being_responded_to, rsp.status) == (5, Status.SUCCESS)
    assert rsp.affected_sop_class_uid == VERIFICATION


async def test_echo_now_answers_a_plain_handler_and_leaves_an_async_one_to_handle() -> None:
    class Plain(Service):
        def on_c_echo(self, request: ReceivedCEcho) -> int:
            return Status.SUCCESS

    class Async(Service):
        async def on_c_echo(self, request: ReceivedCEcho) -> int:
            return Status.SUCCESS

    answer = _dispatcher(Plain(INFO))[0].echo_now(_echo(9))
    assert isinstance(answer, c.CEchoRSP) and answer.message_id_being_responded_to == 9
    assert _dispatcher(Async(INFO))[0].echo_now(_echo()) is None
    assert _dispatcher(Service(INFO))[0].echo_now(_echo()) is None  # no handler: queue it


async def test_a_failing_handler_is_a_failure_status_with_a_64_character_comment() -> None:
    class Broken(Service):
        async def on_c_echo(self, request: ReceivedCEcho) -> int:
            raise RuntimeError("x" * 100)

    dispatcher, sent = _dispatcher(Broken(INFO))
    await dispatcher.handle(_echo())
    assert sent.last.status == Status.PROCESSING_FAILURE
    assert sent.last.error_comment == ("RuntimeError: " + "x" * 100)[:64]


async def test_requests_without_a_handler() -> None:
    """C-ECHO: SOP class not supported (0x0122); an N-service: unrecognized operation (0x0211)
    saying which handler is missing."""
    dispatcher, sent = _dispatcher(Service(INFO))
    await dispatcher.handle(_echo())
    assert sent.last.status == Status.SOP_CLASS_NOT_SUPPORTED
    n_get = c.NGetRQ(
        message_id=3, requested_sop_class_uid="1.2.3", requested_sop_instance_uid="1.2.3.4"
    )
    await dispatcher.handle(Incoming(n_get, N_CTX))
    rsp = sent.last
    assert isinstance(rsp, c.NGetRSP)
    assert rsp.status == Status.UNRECOGNIZED_OPERATION
    assert rsp.error_comment == "on_n_get is not offered"
    # The requested SOP class/instance come back as the affected ones (PS3.7 §10.1.2.1.2).
    assert (rsp.affected_sop_class_uid, rsp.affected_sop_instance_uid) == ("1.2.3", "1.2.3.4")


async def test_an_n_service_answer_carries_its_data_set() -> None:
    class Getter(Service):
        async def on_n_get(self, request: ReceivedN) -> Response:
            ds = Dataset()
            ds.PatientID = "P1"
            return Response(Status.SUCCESS, dataset=ds)

    dispatcher, sent = _dispatcher(Getter(INFO))
    n_get = c.NGetRQ(message_id=4, requested_sop_class_uid="1.2", requested_sop_instance_uid="3")
    await dispatcher.handle(Incoming(n_get, N_CTX))
    _ctx, rsp, data = sent.messages[-1]
    assert isinstance(rsp, c.NGetRSP) and rsp.has_dataset and data is not None
    assert b"P1" in data


@pytest.fixture(autouse=True)
def _no_temp_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary files created on demand: no pool thread per test folder."""
    monkeypatch.setattr(dicomnet.sinks, "POOL_SIZE", 0)


def _store_item(tmp_path: Path, *, error: BaseException | None = None) -> Incoming:
    rq = c.CStoreRQ(
        message_id=11, affected_sop_class_uid=CTImageStorage, affected_sop_instance_uid="1.2.3"
    )
    meta = file_meta_bytes(CTImageStorage, "1.2.3", ExplicitVRLittleEndian)
    sink = FileSink(tmp_path, meta)
    sink.write(b"\x08\x00\x18\x00UI\x06\x001.2.3\x00")
    sink.finish()
    return Incoming(rq, CT_CTX, sink, error)


async def test_a_stored_instance_the_handler_did_not_keep_is_removed(tmp_path: Path) -> None:
    seen: list[Path] = []

    async def handler(request: ReceivedCStore) -> None:  # None means success
        seen.append(request.path)
        assert request.path.exists() and request.prefix.endswith(b"1.2.3\x00")

    sent = Sent()
    await answer_c_store(_store_item(tmp_path), INFO, handler, sent)
    rsp = sent.last
    assert isinstance(rsp, c.CStoreRSP)
    assert (rsp.status, rsp.message_id_being_responded_to) == (Status.SUCCESS, 11)
    assert rsp.affected_sop_instance_uid == "1.2.3"
    assert seen and not seen[0].exists()


@pytest.mark.parametrize(
    ("error", "status"),
    [(OSError(28, "No space left on device"), 0xA700), (DIMSEError("too large"), 0xC000)],
)
async def test_a_data_set_not_received_is_refused_and_reported(
    tmp_path: Path, error: BaseException, status: int
) -> None:
    """PS3.4 B.2.3: out of resources (A7xx) for an OS error, cannot understand (Cxxx) else;
    the handler is not called, the exception hook is, and no file stays."""
    reported: list[BaseException] = []

    async def hook(path: Path | None, exc: BaseException) -> None:
        reported.append(exc)

    async def handler(request: ReceivedCStore) -> int:
        raise AssertionError("not called")

    sent = Sent()
    item = _store_item(tmp_path, error=error)
    assert isinstance(item.sink, FileSink) and item.sink.path.exists()
    await answer_c_store(item, INFO, handler, sent, on_exception=hook)
    assert sent.last.status == status
    assert sent.last.error_comment.startswith("data set not stored")
    assert reported == [error]
    assert not item.sink.path.exists()


async def test_a_c_cancel_for_a_queued_find_stops_it_when_it_starts() -> None:
    """PS3.7 §9.3.2.3: a C-CANCEL-RQ that arrives while the C-FIND waits its turn still
    cancels it: the handler sees ``cancelled`` set and the final status is Cancel."""
    seen: list[bool] = []

    class Finder(Service):
        async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset]:
            seen.append(request.cancelled.is_set())
            for _ in range(3):
                yield Dataset()

    dispatcher, sent = _dispatcher(Finder(INFO))
    find = c.CFindRQ(message_id=21, affected_sop_class_uid=FIND_CTX.abstract_syntax)
    sink = MemorySink()
    sink.finish()
    dispatcher.received(find)
    dispatcher.cancel(c.CCancelRQ(message_id_being_responded_to=21))
    await dispatcher.handle(Incoming(find, FIND_CTX, sink))
    assert seen == [True]
    statuses = [m.status for _, m, _ in sent.messages]  # type: ignore[union-attr]
    assert statuses == [Status.CANCEL]


async def test_a_find_handler_may_yield_bare_statuses() -> None:
    class Finder(Service):
        async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Any]:
            yield Dataset()
            yield 0xA700  # a bare status ends the stream as its final answer

    dispatcher, sent = _dispatcher(Finder(INFO))
    sink = MemorySink()
    sink.finish()
    find = c.CFindRQ(message_id=2, affected_sop_class_uid=FIND_CTX.abstract_syntax)
    await dispatcher.handle(Incoming(find, FIND_CTX, sink))
    assert [m.status for _, m, _ in sent.messages] == [Status.PENDING, 0xA700]  # type: ignore[union-attr]


async def test_an_unusable_command_set_is_answered_when_it_can_be_and_aborted_otherwise() -> None:
    aborted: list[bool] = []
    dispatcher, sent = _dispatcher(Service(INFO), abort=lambda: aborted.append(True))
    error = DIMSEError("C-STORE-RQ is missing (0000,1000)", elements={0x00000002: CTImageStorage})
    await dispatcher.handle(IncomingInvalid(InvalidCommand(3, error, 17, 0x0001), CT_CTX))
    rsp = sent.last
    assert isinstance(rsp, c.CStoreRSP)
    assert (rsp.message_id_being_responded_to, rsp.status) == (17, Status.UNABLE_TO_PROCESS)
    assert rsp.affected_sop_class_uid == CTImageStorage
    n_error = DIMSEError("N-SET-RQ is missing (0000,1001)")
    await dispatcher.handle(IncomingInvalid(InvalidCommand(7, n_error, 18, 0x0120), N_CTX))
    assert sent.last.status == Status.MISSING_ATTRIBUTE
    assert not aborted
    await dispatcher.handle(IncomingInvalid(InvalidCommand(3, error, None, 0x0001), CT_CTX))
    assert aborted == [True]
    assert len(sent.messages) == 2


async def test_the_dimse_timeout_bounds_a_handler() -> None:
    class Slow(Service):
        async def on_c_echo(self, request: ReceivedCEcho) -> int:
            await asyncio.sleep(10)
            return Status.SUCCESS

    dispatcher, sent = _dispatcher(Slow(INFO), dimse_timeout=0.05)
    await dispatcher.handle(_echo())
    assert sent.last.status == Status.PROCESSING_FAILURE
    assert sent.last.error_comment.startswith("TimeoutError")


def test_status_fields() -> None:
    assert status_fields(None) == (Status.SUCCESS, {}, None)
    assert status_fields(0xB000) == (0xB000, {}, None)
    status, values, ds = status_fields(
        Response(0xA900, error_comment="bad", offending_elements=[0x00080052], extra={"x": 1})
    )
    assert (status, ds) == (0xA900, None)
    assert values == {"x": 1, "error_comment": "bad", "offending_elements": [0x00080052]}


def test_make_sink_streams_a_c_store_into_a_part_10_file_and_keeps_the_rest_in_memory(
    tmp_path: Path,
) -> None:
    """One sink factory for server and client: a C-STORE-RQ's data set goes to a temporary
    file that starts with the preamble, DICM and the File Meta (PS3.10 §7.1) naming the
    instance, the context's transfer syntax and the source AE; anything else to memory, with
    its size limit."""
    rq = c.CStoreRQ(
        message_id=1, affected_sop_class_uid=CTImageStorage, affected_sop_instance_uid="1.2.3"
    )
    sink = make_sink(rq, CT_CTX, temp_dir=tmp_path, source_ae_title="MODALITY")
    assert isinstance(sink, FileSink)
    sink.write(b"\x08\x00\x18\x00UI\x06\x001.2.3\x00")
    sink.finish()
    ds = dcmread(sink.path)
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert ds.SOPInstanceUID == "1.2.3"
    sink.discard()
    files = sorted(tmp_path.rglob("*"))
    find = c.CFindRQ(message_id=2, affected_sop_class_uid=FIND_CTX.abstract_syntax)
    memory = make_sink(find, FIND_CTX, temp_dir=tmp_path, memory_limit=4)
    assert isinstance(memory, MemorySink)
    with pytest.raises(DIMSEError, match="larger than 4 bytes"):
        memory.write(b"12345")
    assert sorted(tmp_path.rglob("*")) == files  # nothing written for it


def test_dispatch_does_not_import_the_server() -> None:
    """dispatch sits below server: neither it nor anything it imports reaches dicomnet.server
    (read from the sources: importing any submodule runs the package's ``__init__``, which
    re-exports the server, so the facade itself is not followed)."""
    import ast

    src = Path(dicomnet.sinks.__file__).parent

    def imports(module: str) -> set[str]:
        path = src.joinpath(*module.split(".")[1:])
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "dicomnet":
                found.update(f"dicomnet.{a.name}" for a in node.names)  # from dicomnet import fsm
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dicomnet."):
                found.add(str(node.module))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("dicomnet"))
        return found

    seen: set[str] = set()
    todo = ["dicomnet.dispatch"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports(module))
    assert "dicomnet.server" not in seen
    assert {"dicomnet.association", "dicomnet.service", "dicomnet.sinks"} <= seen
