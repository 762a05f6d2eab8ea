"""Answering an association's DIMSE requests with a service's handlers (PS3.7 §9, §10): find
the handler of each request, call it, and send the response it leads to. The server runs one
``RequestDispatcher`` per association; a client receiving C-GET sub-operations calls the same
C-STORE path, ``answer_c_store``.

Rules: no sockets, and no knowledge of the server. Everything comes in through the constructor:
the service, who the peer is, ``send`` (the association's ``send_message``), the C-GET
sub-operation sender, ``abort`` and the DIMSE timeout. A handler's failure (an exception, a
timeout) becomes a failure status, never an exception out of here; a request the service has no
handler for gets the status PS3.7 gives for it; a command set that could not be decoded is
answered when it still says what to answer (its message ID and command field), and the
association is aborted otherwise. Every response is built by its request
(``RequestMessage.response``), which echoes what PS3.7 says it echoes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

from pydicom import Dataset

from dicomnet.association import Incoming, IncomingInvalid
from dicomnet.dataset import encode_dataset
from dicomnet.dimse.commands import (
    MESSAGE_CLASSES,
    CCancelRQ,
    CEchoRQ,
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CommandField,
    CStoreRQ,
    Message,
    NActionRQ,
    NCreateRQ,
    NDeleteRQ,
    NEventReportRQ,
    NGetRQ,
    NSetRQ,
    RequestMessage,
    ResponseMessage,
    as_message,
)
from dicomnet.dimse.status import Status, StatusCategory, StoreStatus, category
from dicomnet.errors import AssociationAborted, DicomNetError
from dicomnet.negotiation import NegotiatedContext
from dicomnet.security.decisions import RequestRefused
from dicomnet.service import (
    AssociationInfo,
    DimseRequest,
    HandlerResult,
    ReceivedCEcho,
    ReceivedCFind,
    ReceivedCGet,
    ReceivedCMove,
    ReceivedCStore,
    ReceivedN,
    ReceivedQueryRetrieve,
    Response,
    Service,
    SubOperationSender,
)
from dicomnet.sinks import FileSink, MemorySink

log = logging.getLogger("dicomnet.dispatch")

#: Sends one message on a presentation context, with its data set when given: the
#: association's ``send_message``.
Send = Callable[[int, Message, bytes | None], Awaitable[None]]
#: A C-STORE handler: a service's ``on_c_store``, or a client's C-GET store handler.
StoreHandler = Callable[[ReceivedCStore], HandlerResult | Awaitable[HandlerResult | None] | None]
#: Told when a C-STORE fails before or inside its handler (``Service.on_c_store_exception``).
StoreExceptionHook = Callable[[Path | None, BaseException], Awaitable[None]]


class RequestGuard(Protocol):
    """The node's security policy for one association's requests
    (``dicomnet.security.guard.RequestGuard``): the dispatcher asks before each handler runs and
    tells it how each ended."""

    def refuse(self, message: RequestMessage) -> tuple[int, str] | None:
        """(status, reason) when the peer may not make this request (0x0124, 0xA801)."""

    def store_handler(self, item: Incoming, handler: StoreHandler | None) -> StoreHandler | None:
        """The C-STORE handler to call for ``item`` (wrapped to record what it answers)."""

    def answered(
        self,
        request: ReceivedQueryRetrieve,
        status: int,
        values: Mapping[str, Any],
        results: int,
    ) -> None:
        """A C-FIND/C-MOVE/C-GET's final response was sent after ``results`` pending ones."""


# The handler of each N-service request (PS3.7 §10.1).
_N_HANDLERS: dict[type[RequestMessage], str] = {
    NEventReportRQ: "on_n_event_report",
    NGetRQ: "on_n_get",
    NSetRQ: "on_n_set",
    NActionRQ: "on_n_action",
    NCreateRQ: "on_n_create",
    NDeleteRQ: "on_n_delete",
}


def failure_comment(exc: BaseException) -> str:
    """An Error Comment for a failure caused by ``exc`` (cut to 64 characters by the message)."""
    return f"{type(exc).__name__}: {exc}"


def status_fields(result: HandlerResult | None) -> tuple[int, dict[str, Any], Dataset | None]:
    """A handler's answer as (status, the response's other fields, data set). None counts as
    success (as a client's C-GET store handler has always been allowed to answer)."""
    if result is None:
        return Status.SUCCESS, {}, None
    if isinstance(result, Response):
        values: dict[str, Any] = dict(result.extra)
        if result.error_comment is not None:
            values["error_comment"] = result.error_comment
        if result.error_id is not None:
            values["error_id"] = result.error_id
        if result.offending_elements is not None:
            values["offending_elements"] = result.offending_elements
        return int(result.status), values, result.dataset
    return int(result), {}, None


def _refusal(exc: BaseException) -> int:
    """A C-STORE that failed on ``exc``: the status of a refusal by the security policy (not
    authorized, out of resources), out of resources for an OS error (a full disk, a timeout),
    cannot understand otherwise (PS3.4 B.2.3)."""
    if isinstance(exc, RequestRefused):
        return exc.status
    return (
        StoreStatus.OUT_OF_RESOURCES if isinstance(exc, OSError) else StoreStatus.CANNOT_UNDERSTAND
    )


async def _call(handler: Callable[..., Any], request: DimseRequest, timeout: float | None) -> Any:
    """Run a handler, ``async`` or plain, under the DIMSE timeout."""
    result = handler(request)
    if not inspect.isawaitable(result):
        return result
    if timeout:
        return await asyncio.wait_for(result, timeout)
    return await result


async def answer_c_store(
    item: Incoming,
    info: AssociationInfo,
    handler: StoreHandler | None,
    send: Send,
    *,
    on_exception: StoreExceptionHook | None = None,
    timeout: float | None = None,
) -> None:
    """Hand a received C-STORE-RQ's file to ``handler`` and answer with its status: the one
    C-STORE path of a server (``on_c_store``) and of a client receiving C-GET sub-operations.

    A data set that could not be received is refused (``_refusal``) without calling the
    handler; no handler is "SOP class not supported"; a handler's exception is a failure with
    the exception as Error Comment. ``on_exception`` hears of both failures. The temporary file
    is removed afterwards unless the handler saved it.
    """
    message = item.message
    assert isinstance(message, CStoreRQ)
    sink = item.sink
    request: ReceivedCStore | None = None
    result: HandlerResult | None
    try:
        if item.error is not None or not isinstance(sink, FileSink):
            error = item.error or DicomNetError("no data set was received")
            if on_exception is not None:
                await on_exception(sink.path if isinstance(sink, FileSink) else None, error)
            comment = error.reason if isinstance(error, RequestRefused) else None
            result = Response(
                _refusal(error), error_comment=comment or f"data set not stored: {error}"
            )
        elif handler is None:
            result = Status.SOP_CLASS_NOT_SUPPORTED
        else:
            request = ReceivedCStore(
                info, item.context, message, path=sink.path, size=sink.size, prefix=sink.prefix
            )
            try:
                result = await _call(handler, request, timeout)
            except Exception as exc:
                log.exception("[%s] on_c_store failed", info)
                if on_exception is not None:
                    await on_exception(sink.path, exc)
                result = Response(_refusal(exc), error_comment=failure_comment(exc))
    finally:
        if isinstance(sink, FileSink) and (request is None or request.saved_to is None):
            sink.discard()  # the handler did not keep it
    status, values, _ = status_fields(result)
    if category(status) is StatusCategory.FAILURE:
        log.warning(
            "[%s] C-STORE %s failed: 0x%04X %s",
            info,
            message.affected_sop_instance_uid,
            status,
            values.get("error_comment", ""),
        )
    await send(item.context.context_id, as_message(message.response(status, **values)), None)


class RequestDispatcher:
    """Answers one association's requests with ``service``'s handlers.

    The caller feeds it: ``received`` for each request it queues, ``cancel`` for each
    C-CANCEL-RQ (at once, even while a handler runs), ``echo_now`` to answer a C-ECHO inside the
    receive callback, and ``handle`` for each queued request or unusable command set.
    """

    def __init__(
        self,
        service: Service,
        info: AssociationInfo,
        send: Send,
        *,
        store_sub_operation: SubOperationSender | None = None,
        abort: Callable[[], None] | None = None,
        dimse_timeout: float | None = None,
        guard: RequestGuard | None = None,
    ) -> None:
        self.service = service
        self.info = info
        self.send = send
        self.store_sub_operation = store_sub_operation
        self.abort = abort
        self.dimse_timeout = dimse_timeout
        self.guard = guard
        self._running: dict[int, ReceivedQueryRetrieve] = {}  # C-FIND/MOVE/GET being answered
        self._queued: set[int] = set()  # C-FIND/MOVE/GET received, not started yet
        self._early_cancels: set[int] = set()  # ... and already cancelled

    # -- bookkeeping, from the receive callback --------------------------------------------------

    def received(self, message: RequestMessage) -> None:
        """Note a request queued for ``handle``, so that a C-CANCEL-RQ arriving before its
        handler starts still reaches it (PS3.7 §9.3.2.3)."""
        if isinstance(message, CFindRQ | CMoveRQ | CGetRQ):
            self._queued.add(message.message_id)

    def cancel(self, message: CCancelRQ) -> None:
        """A C-CANCEL-RQ: set the ``cancelled`` event of the C-FIND/MOVE/GET it names."""
        responded = message.message_id_being_responded_to
        request = self._running.get(responded)
        if request is not None:
            request.cancelled.set()
        elif responded in self._queued:
            self._early_cancels.add(responded)

    def echo_now(self, item: Incoming) -> ResponseMessage | Awaitable[ResponseMessage] | None:
        """Answer a C-ECHO-RQ without a task when the service's ``on_c_echo`` is a plain
        function: the response (or, when that function returned an awaitable, an awaitable of
        it). None when the request must be queued (no handler, or an ``async`` one)."""
        handler = getattr(self.service, "on_c_echo", None)
        message = item.message
        if handler is None or inspect.iscoroutinefunction(handler):
            return None
        assert isinstance(message, CEchoRQ)
        refused = self.guard.refuse(message) if self.guard is not None else None
        if refused is not None:
            return message.response(refused[0], error_comment=refused[1])
        try:
            result = handler(ReceivedCEcho(self.info, item.context, message))
        except Exception as exc:
            log.exception("[%s] on_c_echo failed", self.info)
            result = Response(Status.PROCESSING_FAILURE, error_comment=failure_comment(exc))
        if inspect.isawaitable(result):
            return self._echo_later(message, result)
        status, values, _ = status_fields(result)
        return message.response(status, **values)

    async def _echo_later(self, message: CEchoRQ, pending: Awaitable[Any]) -> ResponseMessage:
        try:
            result = await pending
        except Exception as exc:
            log.exception("[%s] on_c_echo failed", self.info)
            result = Response(Status.PROCESSING_FAILURE, error_comment=failure_comment(exc))
        status, values, _ = status_fields(result)
        return message.response(status, **values)

    # -- one request ----------------------------------------------------------------------------

    async def handle(self, item: Incoming | IncomingInvalid) -> None:
        """Answer one request (or unusable command set). The association ending meanwhile is
        not an error; a message that cannot be sent is logged."""
        try:
            if isinstance(item, IncomingInvalid):
                await self.answer_invalid(item)
                return
            message = item.message
            if self.guard is not None and isinstance(message, RequestMessage):
                refused = self.guard.refuse(message)
                if refused is not None:
                    status, why = refused
                    await self._answer(item, message, Response(status, error_comment=why))
                    return
            if isinstance(message, CStoreRQ):
                handler = getattr(self.service, "on_c_store", None)
                if self.guard is not None:
                    handler = self.guard.store_handler(item, handler)
                await answer_c_store(
                    item,
                    self.info,
                    handler,
                    self.send,
                    on_exception=self.service.on_c_store_exception,
                    timeout=self.dimse_timeout,
                )
            elif isinstance(message, CEchoRQ):
                await self.c_echo(item, message)
            elif isinstance(message, CFindRQ | CMoveRQ | CGetRQ):
                await self.query_retrieve(item, message)
            elif type(message) in _N_HANDLERS:
                assert isinstance(message, RequestMessage)
                await self.n_service(item, message)
            else:
                log.warning(
                    "[%s] unexpected %s from the peer; ignored", self.info, type(message).__name__
                )
        except AssociationAborted:
            pass
        except DicomNetError as exc:
            log.warning("[%s] %s", self.info, exc)

    async def _send(
        self, context: NegotiatedContext, response: ResponseMessage, data: bytes | None = None
    ) -> None:
        await self.send(context.context_id, as_message(response), data)

    async def _answer(
        self, item: Incoming, message: RequestMessage, result: HandlerResult | None
    ) -> None:
        """Send the response a handler's answer leads to, with its data set if any."""
        status, values, ds = status_fields(result)
        context = item.context
        data = encode_dataset(ds, context.transfer_syntax) if ds is not None else None
        response = message.response(status, has_dataset=data is not None, **values)
        await self._send(context, response, data)

    async def c_echo(self, item: Incoming, message: CEchoRQ) -> None:
        handler = getattr(self.service, "on_c_echo", None)
        result: HandlerResult | None
        if handler is None:
            result = Status.SOP_CLASS_NOT_SUPPORTED
        else:
            try:
                result = await _call(
                    handler, ReceivedCEcho(self.info, item.context, message), self.dimse_timeout
                )
            except Exception as exc:
                log.exception("[%s] on_c_echo failed", self.info)
                result = Response(Status.PROCESSING_FAILURE, error_comment=failure_comment(exc))
        status, values, _ = status_fields(result)
        await self._send(item.context, message.response(status, **values))

    async def query_retrieve(self, item: Incoming, message: CFindRQ | CMoveRQ | CGetRQ) -> None:
        """C-FIND, C-MOVE, C-GET: the handler is an async iterator of pending results, then
        (optionally) the final one; C-CANCEL stops it between results."""
        raw = item.sink.value if isinstance(item.sink, MemorySink) else None
        request: ReceivedQueryRetrieve
        if isinstance(message, CFindRQ):
            request, name = ReceivedCFind(self.info, item.context, message, raw=raw), "on_c_find"
        elif isinstance(message, CMoveRQ):
            request, name = ReceivedCMove(self.info, item.context, message, raw=raw), "on_c_move"
        else:
            request = ReceivedCGet(
                self.info, item.context, message, raw=raw, sender=self.store_sub_operation
            )
            name = "on_c_get"
        message_id = message.message_id
        self._queued.discard(message_id)
        if message_id in self._early_cancels:
            self._early_cancels.discard(message_id)
            request.cancelled.set()
        handler = getattr(self.service, name, None)
        if item.error is not None:
            error = Response(Status.OUT_OF_RESOURCES, error_comment=str(item.error))
            await self._answer(item, message, error)
            return
        if handler is None:
            await self._answer(item, message, Status.SOP_CLASS_NOT_SUPPORTED)
            return
        self._running[message_id] = request
        stream: AsyncIterator[Dataset | Response] | None = None
        final: HandlerResult = Status.SUCCESS
        pending = 0
        try:
            stream = handler(request)
            async for result in stream:
                if isinstance(result, Dataset):
                    result = Response(Status.PENDING, dataset=result)
                status = int(result) if isinstance(result, int) else int(result.status)
                if category(status) is not StatusCategory.PENDING:
                    final = result  # also the handler's own Cancel answer (with its counts)
                    break
                if request.cancelled.is_set():
                    final = Status.CANCEL
                    break
                await self._answer(item, message, result)
                pending += 1
            else:
                if request.cancelled.is_set():
                    final = Status.CANCEL
        except Exception as exc:
            log.exception("[%s] %s failed", self.info, name)
            final = Response(Status.UNABLE_TO_PROCESS, error_comment=failure_comment(exc))
        finally:
            self._running.pop(message_id, None)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:  # run the handler's cleanup now (e.g. release a C-MOVE's
                with contextlib.suppress(Exception):  # association), not at garbage collection
                    await aclose()
        await self._answer(item, message, final)
        if self.guard is not None:
            status, values, _ = status_fields(final)
            self.guard.answered(request, status, values, pending)

    async def n_service(self, item: Incoming, message: RequestMessage) -> None:
        name = _N_HANDLERS[type(message)]
        raw = item.sink.value if isinstance(item.sink, MemorySink) else None
        handler = getattr(self.service, name, None)
        result: HandlerResult | None
        if handler is None:
            result = Response(Status.UNRECOGNIZED_OPERATION, error_comment=f"{name} is not offered")
        else:
            try:
                request = ReceivedN(self.info, item.context, as_message(message), raw=raw)
                result = await _call(handler, request, self.dimse_timeout)
            except Exception as exc:
                log.exception("[%s] %s failed", self.info, name)
                result = Response(Status.PROCESSING_FAILURE, error_comment=failure_comment(exc))
        await self._answer(item, message, result)

    async def answer_invalid(self, item: IncomingInvalid) -> None:
        """A command set that could not be used: answer it with a failure (PS3.7 §9.3, §10.3:
        0xC000 for a C-service, 0x0120 missing attribute for an N-service) when its message ID,
        command field and context are known; abort otherwise."""
        event = item.event
        rsp_cls = MESSAGE_CLASSES.get((event.command_field or 0) | 0x8000)
        context = item.context
        if (
            rsp_cls is None
            or not issubclass(rsp_cls, ResponseMessage)
            or context is None
            or event.message_id is None
        ):
            log.warning("[%s] unusable command set, no way to answer: %s", self.info, event.error)
            if self.abort is not None:
                self.abort()
            return
        n_service = rsp_cls.COMMAND_FIELD >= CommandField.N_EVENT_REPORT_RSP
        values: dict[str, Any] = {
            "message_id_being_responded_to": event.message_id,
            "status": Status.MISSING_ATTRIBUTE if n_service else Status.UNABLE_TO_PROCESS,
            "error_comment": str(event.error),
        }
        names = {f.name for f in fields(rsp_cls)}
        elements = event.error.elements
        for name, tag in (
            ("affected_sop_class_uid", 0x00000002),
            ("affected_sop_instance_uid", 0x00001000),
        ):
            if name in names and isinstance(elements.get(tag), str):
                values[name] = elements[tag]
        await self._send(context, rsp_cls(**values))


__all__ = [
    "RequestDispatcher",
    "RequestGuard",
    "Send",
    "StoreExceptionHook",
    "StoreHandler",
    "answer_c_store",
    "failure_comment",
    "status_fields",
]
