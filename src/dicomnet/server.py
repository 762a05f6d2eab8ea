"""``DicomServer``: listens, and runs one ``Service`` per association (fo-dicom's ``DicomServer``).

Rules: one event loop, one task per association; a handler's failure fails its request (a failure
status), never the server; a peer that breaks the protocol is aborted and logged, and the server
goes on. Limits: the number of associations at once (beyond it: A-ASSOCIATE-RJ transient, local
limit exceeded), ARTIM, the idle time of an established association, and the time a handler may
take.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import UID

from dicomnet.association import Association, Incoming, IncomingInvalid
from dicomnet.connection import Aborted, Role
from dicomnet.dataset import FileInfo, encode_dataset, read_file_info
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory, category
from dicomnet.errors import AssociationAborted, DicomNetError
from dicomnet.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    MIN_PEER_MAX_PDU_LENGTH,
    NegotiatedContext,
    build_accept,
    build_reject,
    check_request,
    request_from_pdu,
)
from dicomnet.pdu import (
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    AbortReason,
    AbortSource,
    RejectReason,
    RejectResult,
    RejectSource,
)
from dicomnet.service import (
    AssociationInfo,
    CEchoRequest,
    CFindRequest,
    CGetRequest,
    CMoveRequest,
    CStoreRequest,
    DimseRequest,
    NRequest,
    Response,
    Service,
)
from dicomnet.sinks import DatasetSink, FileSink, MemorySink, close_temp_pools, file_meta_bytes

log = logging.getLogger("dicomnet.server")

ServiceFactory = Callable[[AssociationInfo], Service]


@dataclass(slots=True)
class ServerLimits:
    """Configurable limits of a ``DicomServer``."""

    max_associations: int = 64
    artim_timeout: float = 30.0  # PS3.8 §9.1.5
    idle_timeout: float | None = 300.0  # established association with no traffic
    dimse_timeout: float | None = None  # how long one handler may take
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    max_dataset_in_memory: int = 64 << 20  # identifiers and N-service data sets


_ids = itertools.count(1)

# Request -> response class, for answering messages generically.
_RESPONSES: dict[type[Any], type[Any]] = {
    c.CEchoRQ: c.CEchoRSP,
    c.CStoreRQ: c.CStoreRSP,
    c.CFindRQ: c.CFindRSP,
    c.CMoveRQ: c.CMoveRSP,
    c.CGetRQ: c.CGetRSP,
    c.NEventReportRQ: c.NEventReportRSP,
    c.NGetRQ: c.NGetRSP,
    c.NSetRQ: c.NSetRSP,
    c.NActionRQ: c.NActionRSP,
    c.NCreateRQ: c.NCreateRSP,
    c.NDeleteRQ: c.NDeleteRSP,
}

_RESPONSE_BY_FIELD: dict[int, type[Any]] = {rsp.COMMAND_FIELD: rsp for rsp in _RESPONSES.values()}
_RESPONSE_TYPES = frozenset(_RESPONSES.values())


def _response(rq: c.Message, status: int, *, has_dataset: bool = False, **extra: Any) -> c.Message:
    """The response message for a request, echoing the fields PS3.7 says it echoes."""
    rsp_cls = _RESPONSES[type(rq)]
    fields: dict[str, Any] = {
        "message_id_being_responded_to": rq.message_id,  # type: ignore[union-attr]
        "status": status,
        "has_dataset": has_dataset,
    }
    for name in ("affected_sop_class_uid", "affected_sop_instance_uid"):
        if hasattr(rsp_cls, "__dataclass_fields__") and name in rsp_cls.__dataclass_fields__:
            value = getattr(rq, name, None)
            if value is None and name == "affected_sop_class_uid":
                value = getattr(rq, "requested_sop_class_uid", None)
            if value is None and name == "affected_sop_instance_uid":
                value = getattr(rq, "requested_sop_instance_uid", None)
            if value is not None:
                fields[name] = value
    for key, value in extra.items():
        if value is not None and key in rsp_cls.__dataclass_fields__:
            fields[key] = value
    return rsp_cls(**fields)  # type: ignore[no-any-return]


def _status_fields(result: int | Response) -> tuple[int, dict[str, Any], Dataset | None]:
    if isinstance(result, Response):
        extra: dict[str, Any] = dict(result.extra)
        if result.error_comment is not None:
            extra["error_comment"] = result.error_comment[:64]
        if result.error_id is not None:
            extra["error_id"] = result.error_id
        if result.offending_elements is not None:
            extra["offending_elements"] = result.offending_elements
        return int(result.status), extra, result.dataset
    return int(result), {}, None


class _AssociationRunner:
    """Runs one association on the server side: negotiation, then the request loop."""

    def __init__(self, server: DicomServer, assoc: Association) -> None:
        self.server = server
        self.assoc = assoc
        self.queue: asyncio.Queue[Incoming | IncomingInvalid | str] = asyncio.Queue()
        self.service: Service | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.find_requests: dict[int, DimseRequest] = {}
        self.early_cancels: set[int] = set()
        self.queued_queries: set[int] = set()  # C-FIND/MOVE/GET queued, not started yet
        # C-STORE sub-operations of C-GET we sent and await the response of, by message ID.
        self.sub_operations: dict[int, asyncio.Future[c.Message]] = {}
        self.message_ids = itertools.count(1)
        self._idle_timer: asyncio.TimerHandle | None = None
        self.busy = False  # a request is being handled (asynchronous operations window of 1)
        assoc.on_message = self.on_message
        assoc.on_release = lambda: self.queue.put_nowait("release")
        assoc.on_end = self.on_end
        assoc.sink_factory = self.make_sink

    def on_message(self, item: Incoming | IncomingInvalid) -> None:
        """Requests queue up for the service; C-CANCEL and the responses to our own
        sub-operations are handled at once, even while a handler is busy."""
        if isinstance(item, Incoming):
            message = item.message
            if isinstance(message, c.CCancelRQ):
                self.cancel(message)
                return
            if type(message) in _RESPONSE_TYPES:
                if isinstance(item.sink, FileSink):
                    item.sink.discard()
                responded = int(getattr(message, "message_id_being_responded_to", -1))
                future = self.sub_operations.pop(responded, None)
                if future is None or future.done():
                    log.warning(
                        "[%s] %s to unknown message ID %d ignored",
                        self.assoc.info,
                        type(message).__name__,
                        responded,
                    )
                else:
                    future.set_result(message)
                return
            if isinstance(message, (c.CFindRQ, c.CMoveRQ, c.CGetRQ)):
                self.queued_queries.add(message.message_id)
            elif isinstance(message, c.CEchoRQ) and self._echo_now(item):
                return
        self.queue.put_nowait(item)

    def _echo_now(self, item: Incoming) -> bool:
        """Answer a C-ECHO in the receive callback when the service's ``on_c_echo`` is a plain
        function and nothing is queued or running before it: no task switch per echo."""
        handler = getattr(self.service, "on_c_echo", None)
        if (
            handler is None
            or self.busy
            or not self.queue.empty()
            or inspect.iscoroutinefunction(handler)
        ):
            return False
        message = item.message
        try:
            result = handler(CEchoRequest(self.assoc.info, item.context, message))
        except Exception as exc:
            log.exception("[%s] on_c_echo failed", self.assoc.info)
            result = Response(0x0110, error_comment=f"{type(exc).__name__}: {exc}")
        if inspect.isawaitable(result):  # a plain function that returned an awaitable
            self._spawn(self._reply_later(item, result))
            return True
        status, extra, _ = _status_fields(result)
        rsp = _response(message, status, **extra)
        try:
            if not self.assoc.send_message_now(item.context.context_id, rsp):
                self._spawn(self.send(item.context, rsp))
        except DicomNetError as exc:
            log.warning("[%s] %s", self.assoc.info, exc)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reply_later(self, item: Incoming, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as exc:
            log.exception("[%s] on_c_echo failed", self.assoc.info)
            result = Response(0x0110, error_comment=f"{type(exc).__name__}: {exc}")
        status, extra, _ = _status_fields(result)
        try:
            await self.send(item.context, _response(item.message, status, **extra))
        except DicomNetError as exc:
            log.warning("[%s] %s", self.assoc.info, exc)

    def on_end(self, aborted: object) -> None:
        for future in self.sub_operations.values():
            if not future.done():
                future.set_exception(AssociationAborted("the association ended"))
        self.sub_operations.clear()
        self.queue.put_nowait("end")

    # -- data set sinks -------------------------------------------------------------------------

    def make_sink(self, message: c.Message, ctx: NegotiatedContext) -> DatasetSink:
        if isinstance(message, c.CStoreRQ) and self.service is not None:
            meta = file_meta_bytes(
                message.affected_sop_class_uid,
                message.affected_sop_instance_uid,
                ctx.transfer_syntax,
                self.assoc.info.calling_ae_title,
            )
            return FileSink(self.service.temp_dir, meta, fsync=self.service.fsync)
        return MemorySink(self.server.limits.max_dataset_in_memory)

    # -- the association's life -----------------------------------------------------------------

    async def run(self) -> None:
        assoc = self.assoc
        info = assoc.info
        try:
            try:
                pdu = await assoc.wait_associate()
            except AssociationAborted as exc:
                log.info("[%s] connection ended before association: %s", info, exc)
                return
            assert isinstance(pdu, A_ASSOCIATE_RQ)
            info.calling_ae_title = pdu.calling_ae_title
            info.called_ae_title = pdu.called_ae_title
            if not await self.negotiate(pdu):
                return
            await self.serve()
        except Exception:
            log.exception("[%s] association failed", info)
            assoc.abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
        finally:
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            if not assoc.closed.done():
                await asyncio.wait([assoc.closed], timeout=self.server.limits.artim_timeout)
                if assoc.transport is not None:
                    assoc.transport.close()
            if self.service is not None:
                try:
                    await self.service.on_connection_closed(None)
                except Exception:
                    log.exception("[%s] on_connection_closed failed", info)

    async def negotiate(self, rq: A_ASSOCIATE_RQ) -> bool:
        assoc, info, server = self.assoc, self.assoc.info, self.server
        rj = check_request(rq)
        detail = ""  # what was wrong, for the log
        if rj is None and not (rq.called_ae_title and rq.calling_ae_title):
            # PS3.8 §9.3.2: an AE title of 16 spaces ("no name") shall not be used.
            empty = "called" if not rq.called_ae_title else "calling"
            detail = f"the {empty} AE title is empty"
            rj = A_ASSOCIATE_RJ(
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLED_AE_NOT_RECOGNIZED
                if empty == "called"
                else RejectReason.CALLING_AE_NOT_RECOGNIZED,
            )
        elif rj is not None and not rq.presentation_contexts:
            detail = "no presentation context proposed"
        elif (
            rj is not None
            and 0 < (rq.user_information.maximum_length or 0) < MIN_PEER_MAX_PDU_LENGTH
        ):
            detail = f"maximum PDU length {rq.user_information.maximum_length} is too small"
        if rj is None and server.active > server.limits.max_associations:
            rj = A_ASSOCIATE_RJ(
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                RejectReason.LOCAL_LIMIT_EXCEEDED,
            )
            detail = f"{server.limits.max_associations} associations at once"
        if rj is not None:
            log.warning(
                "[%s] rejecting association: %s%s",
                info,
                _rj_text(rj),
                f" ({detail})" if detail else "",
            )
            assoc.send_reject(rj)
            return False
        request = request_from_pdu(rq, info.peer_host, info.peer_port)
        self.service = server.service_factory(info)
        try:
            decision = await self.service.on_association_request(request)
        except Exception:
            log.exception("[%s] on_association_request failed; rejecting", info)
            decision = request.reject(RejectResult.TRANSIENT, RejectSource.SERVICE_USER)
        if not decision.accepted:
            rj = build_reject(decision)
            log.info("[%s] association rejected: %s", info, _rj_text(rj))
            assoc.send_reject(rj)
            return False
        ac, negotiated = build_accept(rq, request, server.limits.max_pdu_length)
        assoc.send_accept(ac, negotiated)
        log.info(
            "[%s] association accepted: %d of %d presentation contexts, peer max PDU %s",
            info,
            len(negotiated.contexts),
            len(rq.presentation_contexts),
            negotiated.peer_max_pdu_length or "unlimited",
        )
        return True

    async def serve(self) -> None:
        assoc, service = self.assoc, self.service
        assert service is not None and assoc.negotiated is not None
        window = assoc.negotiated.max_operations_performed or 1 << 16
        slots = asyncio.Semaphore(window)
        idle = self.server.limits.idle_timeout
        # The idle limit is a timer that queues a check, so waiting for a message costs no
        # task or timer of its own (this loop runs once per message).
        if idle:
            self._idle_timer = assoc.loop.call_later(idle, self._idle_check, idle)
        try:
            await self._serve_loop(window, slots)
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()

    def _idle_check(self, idle: float) -> None:
        quiet = self.assoc.loop.time() - self.assoc.last_activity
        if quiet >= idle:
            self.queue.put_nowait("idle")
            self._idle_timer = None
        else:
            self._idle_timer = self.assoc.loop.call_later(idle - quiet, self._idle_check, idle)

    async def _serve_loop(self, window: int, slots: asyncio.Semaphore) -> None:
        assoc, service = self.assoc, self.service
        assert service is not None
        idle = self.server.limits.idle_timeout
        while True:
            item = await self.queue.get()
            if item == "idle":
                assert idle is not None
                if assoc.loop.time() - assoc.last_activity < idle:
                    self._idle_check(idle)
                    continue
                log.warning("[%s] idle for %s s; aborting", assoc.info, idle)
                assoc.abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
                await service.on_abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
                return
            if item == "release":
                if self.tasks:
                    await asyncio.gather(*self.tasks, return_exceptions=True)
                try:
                    await service.on_association_release()
                finally:
                    assoc.send_release_response()
                log.info("[%s] association released", assoc.info)
                await assoc.closed
                return
            if item == "end":
                aborted: Aborted | None = assoc.closed.result() if assoc.closed.done() else None
                await service.on_abort(
                    aborted.source if aborted else None, aborted.reason if aborted else None
                )
                return
            assert not isinstance(item, str)
            if window == 1:
                self.busy = True
                try:
                    await self.handle(item)
                finally:
                    self.busy = False
            else:
                await slots.acquire()
                task = asyncio.create_task(self.handle(item))
                self.tasks.add(task)
                task.add_done_callback(self._task_done(slots))

    def _task_done(self, slots: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            slots.release()

        return done

    def cancel(self, message: c.CCancelRQ) -> None:
        responded = message.message_id_being_responded_to
        request = self.find_requests.get(responded)
        if isinstance(request, (CFindRequest, CMoveRequest, CGetRequest)):
            request.cancelled.set()
        elif responded in self.queued_queries:
            # The request is still queued behind others: cancel it when it starts.
            self.early_cancels.add(responded)

    async def store_sub_operation(self, path: str | os.PathLike[str]) -> int:
        """C-GET: send the Part 10 file ``path`` to the requestor as a C-STORE-RQ on this
        association and return the status of its C-STORE-RSP."""
        assoc = self.assoc
        negotiated = assoc.negotiated
        assert negotiated is not None
        try:
            info = read_file_info(path)
        except (OSError, DicomNetError) as exc:
            log.warning("[%s] C-GET sub-operation: cannot read %s: %s", assoc.info, path, exc)
            return 0xA702  # PS3.4 C.4.3.1.3.1: refused, unable to perform sub-operations
        payload: bytes | FileInfo = info
        ctx = negotiated.find_context(info.sop_class_uid, info.transfer_syntax, scu=True)
        if ctx is None:
            ctx = negotiated.find_context(info.sop_class_uid, scu=True)
            if (
                ctx is None
                or UID(ctx.transfer_syntax).is_compressed
                or UID(info.transfer_syntax).is_compressed
            ):
                log.warning(
                    "[%s] C-GET sub-operation: the peer took the SCP role for no context that "
                    "fits %s in %s",
                    assoc.info,
                    info.sop_class_uid,
                    info.transfer_syntax,
                )
                return Status.SOP_CLASS_NOT_SUPPORTED
            # An uncompressed instance in another uncompressed transfer syntax: re-encode.
            ds = await asyncio.to_thread(dcmread, info.path)
            payload = encode_dataset(ds, ctx.transfer_syntax)
        message_id = next(self.message_ids) & 0xFFFF or next(self.message_ids)
        future: asyncio.Future[c.Message] = assoc.loop.create_future()
        self.sub_operations[message_id] = future
        rq = c.CStoreRQ(
            message_id=message_id,
            affected_sop_class_uid=info.sop_class_uid,
            affected_sop_instance_uid=info.sop_instance_uid,
        )
        try:
            await assoc.send_message(ctx.context_id, rq, payload)
            timeout = self.server.limits.dimse_timeout
            rsp = await (asyncio.wait_for(future, timeout) if timeout else future)
        finally:
            self.sub_operations.pop(message_id, None)
        return int(getattr(rsp, "status", 0xC000))

    # -- one request ----------------------------------------------------------------------------

    async def handle(self, item: Incoming | IncomingInvalid) -> None:
        try:
            if isinstance(item, IncomingInvalid):
                await self.answer_invalid(item)
                return
            message = item.message
            if isinstance(message, c.CStoreRQ):
                await self.c_store(item)
            elif isinstance(message, c.CEchoRQ):
                await self.simple(
                    item, "on_c_echo", CEchoRequest(self.assoc.info, item.context, message)
                )
            elif isinstance(message, (c.CFindRQ, c.CMoveRQ, c.CGetRQ)):
                await self.multi(item)
            elif type(message) in _RESPONSES:
                await self.n_service(item)
            else:
                log.warning(
                    "[%s] unexpected %s from the peer; ignored",
                    self.assoc.info,
                    type(message).__name__,
                )
        except AssociationAborted:
            pass
        except DicomNetError as exc:
            log.warning("[%s] %s", self.assoc.info, exc)

    async def _call(self, handler: Callable[..., Any], request: DimseRequest) -> Any:
        """Run a handler (``async`` or plain) under the DIMSE timeout."""
        result = handler(request)
        if not inspect.isawaitable(result):
            return result
        timeout = self.server.limits.dimse_timeout
        if timeout:
            return await asyncio.wait_for(result, timeout)
        return await result

    async def send(
        self, ctx: NegotiatedContext, message: c.Message, data: bytes | None = None
    ) -> None:
        await self.assoc.send_message(ctx.context_id, message, data)

    async def simple(self, item: Incoming, name: str, request: DimseRequest) -> None:
        handler = getattr(self.service, name, None)
        if handler is None:
            result: int | Response = Status.SOP_CLASS_NOT_SUPPORTED
        else:
            try:
                result = await self._call(handler, request)
            except Exception as exc:
                log.exception("[%s] %s failed", self.assoc.info, name)
                result = Response(0x0110, error_comment=f"{type(exc).__name__}: {exc}")
        status, extra, _ = _status_fields(result)
        await self.send(item.context, _response(item.message, status, **extra))

    async def c_store(self, item: Incoming) -> None:
        service = self.service
        assert service is not None
        message = item.message
        assert isinstance(message, c.CStoreRQ)
        sink = item.sink
        path = sink.path if isinstance(sink, FileSink) else None
        result: int | Response
        request: CStoreRequest | None = None
        try:
            if item.error is not None or not isinstance(sink, FileSink):
                error = item.error or DicomNetError("no data set was received")
                await service.on_c_store_exception(path, error)
                result = Response(
                    0xA700 if isinstance(error, OSError) else 0xC000,
                    error_comment=f"data set not stored: {error}"[:64],
                )
            elif not hasattr(service, "on_c_store"):
                result = Status.SOP_CLASS_NOT_SUPPORTED
            else:
                request = CStoreRequest(
                    self.assoc.info,
                    item.context,
                    message,
                    path=sink.path,
                    size=sink.size,
                    prefix=sink.prefix,
                )
                try:
                    result = await self._call(service.on_c_store, request)
                except Exception as exc:
                    log.exception("[%s] on_c_store failed", self.assoc.info)
                    await service.on_c_store_exception(sink.path, exc)
                    result = Response(
                        0xC000 if not isinstance(exc, OSError) else 0xA700,
                        error_comment=f"{type(exc).__name__}: {exc}"[:64],
                    )
        finally:
            if isinstance(sink, FileSink) and (request is None or request.saved_to is None):
                sink.discard()  # the handler did not keep it
        status, extra, _ = _status_fields(result)
        if category(status) is StatusCategory.FAILURE:
            log.warning(
                "[%s] C-STORE %s failed: 0x%04X %s",
                self.assoc.info,
                message.affected_sop_instance_uid,
                status,
                extra.get("error_comment", ""),
            )
        await self.send(item.context, _response(message, status, **extra))

    async def multi(self, item: Incoming) -> None:
        """C-FIND, C-MOVE, C-GET: the handler is an async iterator of pending results."""
        message = item.message
        raw = item.sink.value if isinstance(item.sink, MemorySink) else None
        cls: type[CFindRequest | CMoveRequest | CGetRequest]
        name: str
        if isinstance(message, c.CFindRQ):
            cls, name = CFindRequest, "on_c_find"
        elif isinstance(message, c.CMoveRQ):
            cls, name = CMoveRequest, "on_c_move"
        else:
            cls, name = CGetRequest, "on_c_get"
        request = cls(self.assoc.info, item.context, message, raw=raw)
        if isinstance(request, CGetRequest):
            request.sender = self.store_sub_operation
        self.queued_queries.discard(request.message_id)
        if request.message_id in self.early_cancels:
            self.early_cancels.discard(request.message_id)
            request.cancelled.set()
        handler = getattr(self.service, name, None)
        if item.error is not None:
            await self.send(
                item.context, _response(message, 0xA700, error_comment=str(item.error)[:64])
            )
            return
        if handler is None:
            await self.send(item.context, _response(message, 0x0122))
            return
        self.find_requests[request.message_id] = request
        stream: AsyncIterator[Dataset | Response] | None = None
        try:
            final: int | Response = Status.SUCCESS
            stream = handler(request)
            async for result in stream:
                if isinstance(result, Dataset):
                    result = Response(Status.PENDING, dataset=result)
                status, extra, ds = _status_fields(result)
                if category(status) is not StatusCategory.PENDING:
                    final = result  # also the handler's own Cancel answer (with its counts)
                    break
                if request.cancelled.is_set():
                    final = Status.CANCEL
                    break
                data = encode_dataset(ds, item.context.transfer_syntax) if ds is not None else None
                await self.send(
                    item.context,
                    _response(message, status, has_dataset=data is not None, **extra),
                    data,
                )
            else:
                if request.cancelled.is_set():
                    final = Status.CANCEL
        except Exception as exc:
            log.exception("[%s] %s failed", self.assoc.info, name)
            final = Response(0xC000, error_comment=f"{type(exc).__name__}: {exc}"[:64])
        finally:
            self.find_requests.pop(request.message_id, None)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:  # run the handler's cleanup now (e.g. release a C-MOVE's
                with contextlib.suppress(Exception):  # association), not at garbage collection
                    await aclose()
        status, extra, ds = _status_fields(final)
        data = encode_dataset(ds, item.context.transfer_syntax) if ds is not None else None
        await self.send(
            item.context, _response(message, status, has_dataset=data is not None, **extra), data
        )

    async def n_service(self, item: Incoming) -> None:
        message = item.message
        name = "on_" + _snake(type(message).__name__.removesuffix("RQ"))
        raw = item.sink.value if isinstance(item.sink, MemorySink) else None
        request = NRequest(self.assoc.info, item.context, message, raw=raw)
        handler = getattr(self.service, name, None)
        result: int | Response
        if handler is None:
            result = Response(0x0211, error_comment=f"{name} is not offered")
        else:
            try:
                result = await self._call(handler, request)
            except Exception as exc:
                log.exception("[%s] %s failed", self.assoc.info, name)
                result = Response(0x0110, error_comment=f"{type(exc).__name__}: {exc}"[:64])
        status, extra, ds = _status_fields(result)
        data = encode_dataset(ds, item.context.transfer_syntax) if ds is not None else None
        await self.send(
            item.context, _response(message, status, has_dataset=data is not None, **extra), data
        )

    async def answer_invalid(self, item: IncomingInvalid) -> None:
        event = item.event
        rsp_cls = _RESPONSE_BY_FIELD.get((event.command_field or 0) | 0x8000)
        ctx = item.context
        if rsp_cls is None or ctx is None or event.message_id is None:
            log.warning(
                "[%s] unusable command set, no way to answer: %s", self.assoc.info, event.error
            )
            self.assoc.abort(AbortSource.SERVICE_PROVIDER, AbortReason.INVALID_PDU_PARAMETER_VALUE)
            return
        fields: dict[str, Any] = {
            "message_id_being_responded_to": event.message_id,
            "status": 0xC000 if rsp_cls.COMMAND_FIELD < 0x8100 else 0x0120,
            "has_dataset": False,
        }
        if "error_comment" in rsp_cls.__dataclass_fields__:
            fields["error_comment"] = str(event.error)[:64]
        elements = getattr(event.error, "elements", None) or {}
        for name, tag in (
            ("affected_sop_class_uid", 0x00000002),
            ("affected_sop_instance_uid", 0x00001000),
        ):
            if name in rsp_cls.__dataclass_fields__ and isinstance(elements.get(tag), str):
                fields[name] = elements[tag]
        try:
            rsp = rsp_cls(**fields)
        except TypeError:
            self.assoc.abort(AbortSource.SERVICE_PROVIDER, AbortReason.INVALID_PDU_PARAMETER_VALUE)
            return
        await self.send(ctx, rsp)


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _rj_text(rj: A_ASSOCIATE_RJ) -> str:
    from dicomnet.pdu import reject_description

    return reject_description(rj.result, rj.source, rj.reason)


class DicomServer:
    """Listens for associations and runs ``service_factory(info)`` for each.

    Use as ``async with DicomServer(MyService, port=11112) as server: await server.serve_forever()``.
    ``port=0`` picks a free port (see ``server.port``).
    """

    def __init__(
        self,
        service_factory: ServiceFactory,
        host: str = "127.0.0.1",
        port: int = 11112,
        *,
        limits: ServerLimits | None = None,
        ssl: Any = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.service_factory = service_factory
        self.host = host
        self.port = port
        self.limits = limits or ServerLimits()
        self.ssl = ssl
        # A listening socket made elsewhere: ``dicomnet serve --workers N`` binds it once and
        # forks, and every process accepts from it (like storescp --fork, but pre-started).
        self.sock = sock
        self.active = 0
        self._server: asyncio.base_events.Server | None = None
        self._runners: set[asyncio.Task[None]] = set()
        self._associations: set[Association] = set()
        self.associations_served = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(
                self._protocol_factory, sock=self.sock, ssl=self.ssl, backlog=256
            )
        else:
            self._server = await loop.create_server(
                self._protocol_factory,
                self.host,
                self.port,
                ssl=self.ssl,
                reuse_address=True,
                backlog=256,
            )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("listening on %s:%d", self.host, self.port)

    def _protocol_factory(self) -> Association:
        info = AssociationInfo(next(_ids), "", 0)
        assoc = Association(
            Role.ACCEPTOR,
            info,
            artim_timeout=self.limits.artim_timeout,
            max_pdu_length=self.limits.max_pdu_length,
        )
        original = assoc.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername") or ("", 0)
            info.peer_host, info.peer_port = str(peer[0]), int(peer[1])
            original(transport)
            self._start_runner(assoc)

        assoc.connection_made = connection_made  # type: ignore[method-assign]
        return assoc

    def _start_runner(self, assoc: Association) -> None:
        self.active += 1
        self._associations.add(assoc)
        task = asyncio.get_running_loop().create_task(_AssociationRunner(self, assoc).run())
        self._runners.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._runners.discard(t)
            self._associations.discard(assoc)
            self.active -= 1
            self.associations_served += 1

        task.add_done_callback(done)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self, *, abort_after: float = 10.0) -> None:
        """Stop listening; let running associations finish for ``abort_after`` seconds, then
        abort them (their partial files are removed by the sinks)."""
        if self._server is not None:
            self._server.close()
        if self._runners:
            _done, pending = await asyncio.wait(set(self._runners), timeout=abort_after)
            if pending:
                for assoc in list(self._associations):
                    assoc.abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
                await asyncio.wait(pending, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        close_temp_pools()  # no pre-created temporary file outlives the server

    async def __aenter__(self) -> DicomServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(abort_after=0 if exc is not None else 10.0)


__all__ = ["DicomServer", "ServerLimits", "Path", "os"]
