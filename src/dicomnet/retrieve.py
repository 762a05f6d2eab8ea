"""The SCU side of an outstanding C-FIND/C-MOVE/C-GET (PS3.4 §C.4): its responses as an async
iterator, retrieve progress, the failure exceptions, and answering a C-GET's C-STORE
sub-operations.

Rules: ``QueryRetrieveResponses`` knows the request and two callables, ``start`` (send it) and
``cancel`` (send a C-CANCEL-RQ), not the client. Pending responses are progress (or C-FIND
matches); the final response ends iteration, and a final failure status raises the operation's
``QueryRetrieveError``, while a warning is the final progress. An iterator that is left early
cancels and reads the remaining responses, so the association stays usable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from pydicom import Dataset
from pydicom.multival import MultiValue

from dicomnet.association import Association, Incoming
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory, category, describe
from dicomnet.errors import DicomNetError, DicomTimeoutError
from dicomnet.requests import QueryRequest, StoreHandler
from dicomnet.service import CStoreRequest as ReceivedCStore
from dicomnet.service import Response
from dicomnet.sinks import FileSink

log = logging.getLogger("dicomnet.client")


@dataclass(frozen=True, slots=True)
class RetrieveProgress:
    """One C-MOVE/C-GET response: the sub-operation counts (PS3.7 §9.1.3.1, §9.1.4.1) and the
    status; ``final`` on the last one, which may list the failed SOP instances."""

    status: int
    remaining: int | None
    completed: int
    failed: int
    warning: int
    final: bool
    error_comment: str | None = None
    failed_instances: tuple[str, ...] = ()

    @property
    def category(self) -> StatusCategory:
        return category(self.status)

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.warning

    @classmethod
    def from_response(cls, message: c.ResponseMessage, ds: Dataset | None) -> RetrieveProgress:
        status = int(message.status)
        failed: tuple[str, ...] = ()
        if ds is not None and "FailedSOPInstanceUIDList" in ds:
            value = ds.FailedSOPInstanceUIDList
            failed = tuple(str(v) for v in (value if isinstance(value, MultiValue) else [value]))
        if not isinstance(message, c.CMoveRSP | c.CGetRSP):
            # Not a retrieve response (a peer that answered with another type): no counts.
            final = category(status) is not StatusCategory.PENDING
            return cls(status, None, 0, 0, 0, final, _error_fields(message)[0], failed)
        return cls(
            status=status,
            remaining=message.number_of_remaining_suboperations,
            completed=message.number_of_completed_suboperations or 0,
            failed=message.number_of_failed_suboperations or 0,
            warning=message.number_of_warning_suboperations or 0,
            final=category(status) is not StatusCategory.PENDING,
            error_comment=message.error_comment,
            failed_instances=failed,
        )


class QueryRetrieveError(DicomNetError):
    """A C-FIND/C-MOVE/C-GET ended with a failure status (PS3.4 §C.4): ``status``,
    ``error_comment`` and, for retrievals, the final ``progress``."""

    operation = "query/retrieve"

    def __init__(
        self,
        status: int,
        error_comment: str | None = None,
        progress: RetrieveProgress | None = None,
        offending_elements: Sequence[int] | None = None,
    ) -> None:
        text = f"{self.operation} failed: {describe(status)}"
        if error_comment:
            text += f": {error_comment}"
        if offending_elements:
            text += (
                " (offending elements "
                + ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in offending_elements)
                + ")"
            )
        super().__init__(text)
        self.status = status
        self.error_comment = error_comment
        self.progress = progress
        self.offending_elements = list(offending_elements or ())


class CFindError(QueryRetrieveError):
    operation = "C-FIND"


class CMoveError(QueryRetrieveError):
    operation = "C-MOVE"


class CGetError(QueryRetrieveError):
    operation = "C-GET"


_T = TypeVar("_T")


class QueryRetrieveResponses(Generic[_T]):
    """The responses of one C-FIND/C-MOVE/C-GET as an async iterator (matches for C-FIND,
    ``RetrieveProgress`` for C-MOVE/C-GET). The request is sent, by ``start()``, when iteration
    starts; each response is awaited for ``timeout`` seconds (None: without a limit).

    ``cancel()`` sends a C-CANCEL-RQ (PS3.7 §9.3.2.3) and iteration goes on to the final
    response (status Cancel, or whatever the peer had already finished with). ``aclose()``, or
    leaving ``async with``, cancels an unfinished operation and reads its remaining responses,
    so the association stays usable. A failure status raises ``QueryRetrieveError``.
    """

    def __init__(
        self,
        request: QueryRequest,
        convert: Callable[[c.ResponseMessage, Dataset | None], _T | None],
        *,
        start: Callable[[], Awaitable[None]],
        cancel: Callable[[], Awaitable[None]],
        timeout: float | None,
    ) -> None:
        self.request = request
        self._convert = convert
        self._send = start
        self._send_cancel = cancel
        self.timeout = timeout
        self._started = False
        self._finished = False
        self.cancel_sent = False
        #: The final response's status once it arrived.
        self.final_status: int | None = None

    @property
    def message_id(self) -> int:
        return self.request.message_id

    def __aiter__(self) -> QueryRetrieveResponses[_T]:
        return self

    async def __anext__(self) -> _T:
        while not self._finished:
            message, ds = await self._next_response()
            value = self._convert(message, ds)
            if value is not None:
                return value
        raise StopAsyncIteration

    async def _start(self) -> None:
        self._started = True
        try:
            await self._send()
        except BaseException:
            self._finished = True
            raise

    async def _next_response(self) -> tuple[c.ResponseMessage, Dataset | None]:
        if not self._started:
            await self._start()
        results = self.request.results
        assert results is not None
        try:
            item = await asyncio.wait_for(results.get(), self.timeout)
        except TimeoutError as exc:
            self._finished = True
            raise DicomTimeoutError(
                f"no response to message {self.request.message_id} within {self.timeout} s"
            ) from exc
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        status = int(item[0].status)
        if category(status) is not StatusCategory.PENDING:
            self._finished = True
            self.final_status = status
        return item

    async def cancel(self) -> None:
        """Ask the peer to stop (C-CANCEL-RQ); does nothing once the final response came."""
        if not self._started or self._finished or self.cancel_sent:
            return
        self.cancel_sent = True
        await self._send_cancel()

    async def aclose(self) -> None:
        """Cancel if unfinished and consume the remaining responses (each within
        ``timeout``)."""
        if not self._started or self._finished:
            self._started = self._finished = True
            return
        try:
            await self.cancel()
            for _ in range(1 << 20):
                if self._finished:
                    break
                await self._next_response()
        except DicomNetError as exc:
            log.warning("closing message %d: %s", self.request.message_id, exc)

    async def __aenter__(self) -> QueryRetrieveResponses[_T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def find_match(message: c.ResponseMessage, ds: Dataset | None) -> Dataset | None:
    """A C-FIND response's match (pending), None for the final one; a failure raises."""
    cat = category(message.status)
    if cat is StatusCategory.PENDING:
        if ds is None:
            log.warning("pending C-FIND-RSP without an identifier ignored")
        return ds
    if cat is StatusCategory.FAILURE:
        comment, offending = _error_fields(message)
        raise CFindError(message.status, comment, offending_elements=offending)
    return None


def progress(
    error: type[QueryRetrieveError],
) -> Callable[[c.ResponseMessage, Dataset | None], RetrieveProgress]:
    """A C-MOVE/C-GET response as ``RetrieveProgress``; a final failure raises ``error``."""

    def convert(message: c.ResponseMessage, ds: Dataset | None) -> RetrieveProgress:
        result = RetrieveProgress.from_response(message, ds)
        if result.final and result.category is StatusCategory.FAILURE:
            raise error(result.status, result.error_comment, result, _error_fields(message)[1])
        return result

    return convert


def _error_fields(message: c.ResponseMessage) -> tuple[str | None, list[int] | None]:
    """Error Comment and Offending Element(s) of a C-FIND/C-MOVE/C-GET response."""
    if isinstance(message, c.CFindRSP | c.CMoveRSP | c.CGetRSP):
        return message.error_comment, message.offending_elements
    return None, None


async def receive_store(assoc: Association, item: Incoming, store: StoreHandler | None) -> None:
    """Answer a C-STORE-RQ received during a C-GET (PS3.4 §C.4.3.1.2): hand its file to the
    C-GET's ``store`` handler and answer with the status it returns (None means success).
    The temporary file is removed afterwards unless the handler saved it."""
    message = item.message
    assert isinstance(message, c.CStoreRQ)
    sink = item.sink
    status: int = Status.SUCCESS
    comment: str | None = None
    try:
        if item.error is not None or not isinstance(sink, FileSink):
            status = Status.OUT_OF_RESOURCES
            comment = f"data set not received: {item.error}"
        elif store is None:
            status = Status.OUT_OF_RESOURCES
            comment = "no C-STORE handler (not in a C-GET)"
        else:
            request = ReceivedCStore(
                assoc.info,
                item.context,
                message,
                path=sink.path,
                size=sink.size,
                prefix=sink.prefix,
            )
            result = await store(request)
            if isinstance(result, Response):
                status, comment = int(result.status), result.error_comment
            elif result is not None:
                status = int(result)
    except Exception as exc:
        log.exception("storing a received instance failed")
        status, comment = Status.UNABLE_TO_PROCESS, f"{type(exc).__name__}: {exc}"
    finally:
        if isinstance(sink, FileSink):
            sink.discard()  # gone already when the handler saved it
    rsp = c.CStoreRSP(
        message_id_being_responded_to=message.message_id,
        affected_sop_class_uid=message.affected_sop_class_uid,
        affected_sop_instance_uid=message.affected_sop_instance_uid,
        status=status,
        error_comment=comment[:64] if comment else None,
        has_dataset=False,
    )
    try:
        await assoc.send_message(item.context.context_id, rsp)
    except DicomNetError as exc:
        log.warning("cannot answer C-STORE-RQ: %s", exc)


__all__ = [
    "CFindError",
    "CGetError",
    "CMoveError",
    "QueryRetrieveError",
    "QueryRetrieveResponses",
    "RetrieveProgress",
    "find_match",
    "progress",
    "receive_store",
]
