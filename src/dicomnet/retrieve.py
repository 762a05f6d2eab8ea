"""The SCU side of what outlives one request/response: an outstanding C-FIND/C-MOVE/C-GET (PS3.4
§C.4) with its responses as an async iterator, retrieve progress and the failure exceptions; the
requests a peer sends on the client's association (a C-GET's C-STORE sub-operations, N-EVENT-REPORT
and the other N requests, PS3.7 §10.1), answered here and only here; and storage commitment
reports awaited by Transaction UID (PS3.4 J.3.3).

Rules: ``QueryRetrieveResponses`` knows the request and two callables, ``start`` (send it) and
``cancel`` (send a C-CANCEL-RQ), not the client. Pending responses are progress (or C-FIND
matches); the final response ends iteration, and a final failure status raises the operation's
``QueryRetrieveError``, while a warning is the final progress. An iterator that is left early
cancels and reads the remaining responses, so the association stays usable. Every request the
peer sends is answered: by its handler's status, with a failure status when the handler fails,
and with 0x0211 (unrecognized operation) when there is no handler. ``CommitmentReports`` knows
neither client nor server: whatever receives a report hands it over.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from pydicom import Dataset
from pydicom.multival import MultiValue

from dicomnet.archive.commitment import (
    STORAGE_COMMITMENT_PUSH,
    CommitmentReport,
    parse_report,
)
from dicomnet.association import Association, Incoming
from dicomnet.dataset import encode_dataset
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory, category, describe
from dicomnet.dispatch import answer_c_store, status_fields
from dicomnet.errors import DicomNetError, DicomTimeoutError
from dicomnet.requests import QueryRequest, StoreHandler
from dicomnet.service import AssociationInfo, ReceivedN, Response, Service
from dicomnet.uids import VERIFICATION

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
    """Answer a C-STORE-RQ received during a C-GET (PS3.4 §C.4.3.1.2) through the server's one
    C-STORE path (``dispatch.answer_c_store``): the C-GET's ``store`` handler gets the file and
    its status is the answer (None means success; no C-GET outstanding is "SOP class not
    supported"). The temporary file is removed afterwards unless the handler saved it."""
    try:
        await answer_c_store(item, assoc.info, store, assoc.send_message)
    except DicomNetError as exc:
        log.warning("cannot answer C-STORE-RQ: %s", exc)


# -- N requests from the peer (PS3.7 §10.1) --------------------------------------------------------

#: A handler for an N request the peer sends: takes the received request and returns a status,
#: a ``Response`` (with a data set: the event reply, the attribute list...) or None (success);
#: ``async`` or plain.
NHandler = Callable[[ReceivedN], "Awaitable[int | Response | None] | int | Response | None"]

#: The six N request classes, and the response class of each.
N_REQUESTS: dict[type[c.Message], type[c.Message]] = {
    c.NEventReportRQ: c.NEventReportRSP,
    c.NGetRQ: c.NGetRSP,
    c.NSetRQ: c.NSetRSP,
    c.NActionRQ: c.NActionRSP,
    c.NCreateRQ: c.NCreateRSP,
    c.NDeleteRQ: c.NDeleteRSP,
}

#: The handler name of each N request (the server's ``Service`` uses the same names).
N_HANDLER_NAMES: dict[type[c.Message], str] = {
    c.NEventReportRQ: "on_n_event_report",
    c.NGetRQ: "on_n_get",
    c.NSetRQ: "on_n_set",
    c.NActionRQ: "on_n_action",
    c.NCreateRQ: "on_n_create",
    c.NDeleteRQ: "on_n_delete",
}

#: (0000,0902) Error Comment is an LO: at most 64 characters (PS3.5 Table 6.2-1).


def n_response(
    message: c.Message, status: int, *, has_dataset: bool = False, **values: Any
) -> c.Message:
    """The response to a received N request (PS3.7 §10.3), built by the request's own
    ``response`` (which echoes the affected/requested SOP class and instance and, with a reply
    data set, the Event / Action Type ID)."""
    assert isinstance(message, c.RequestMessage)
    return c.as_message(message.response(status, has_dataset=has_dataset, **values))


async def answer_n_request(
    assoc: Association,
    request: ReceivedN,
    handler: NHandler | None,
    error: BaseException | None = None,
) -> None:
    """Answer an N request the peer sent on the client's association: with ``handler``'s status
    and data set; 0x0211 Unrecognized operation (logged) without a handler; 0x0110 Processing
    failure when its data set could not be received (``error``) or the handler raised."""
    message = request.message
    name = message.NAME
    result: int | Response | None
    if error is not None:
        log.warning("[%s] %s: data set not received: %s", assoc.info, name, error)
        result = Response(
            Status.PROCESSING_FAILURE, error_comment=f"data set not received: {error}"
        )
    elif handler is None:
        log.warning(
            "[%s] %s for %s %s from the peer: no handler on this client; answered 0x0211",
            assoc.info,
            name,
            getattr(message, "affected_sop_class_uid", None)
            or getattr(message, "requested_sop_class_uid", ""),
            getattr(message, "affected_sop_instance_uid", None)
            or getattr(message, "requested_sop_instance_uid", ""),
        )
        result = Response(Status.UNRECOGNIZED_OPERATION, error_comment=f"no {name} handler")
    else:
        try:
            answer = handler(request)
            result = await answer if inspect.isawaitable(answer) else answer
        except Exception as exc:
            log.exception("[%s] the %s handler failed", assoc.info, name)
            result = Response(
                Status.PROCESSING_FAILURE, error_comment=f"{type(exc).__name__}: {exc}"
            )
    status, values, ds = status_fields(result)
    data = None
    if ds is not None:
        try:
            data = encode_dataset(ds, request.context.transfer_syntax)
        except Exception as exc:
            log.warning("[%s] cannot encode the %s reply data set: %s", assoc.info, name, exc)
            status = Status.PROCESSING_FAILURE
            values["error_comment"] = f"reply not encodable: {exc}"
    rsp = n_response(message, status, has_dataset=data is not None, **values)
    try:
        await assoc.send_message(request.context.context_id, rsp, data)
    except DicomNetError as exc:
        log.warning("[%s] cannot answer %s: %s", assoc.info, name, exc)


# -- storage commitment reports (PS3.4 J.3.3) ------------------------------------------------------


class CommitmentError(DicomNetError):
    """A storage commitment request the SCP refused: its N-ACTION-RSP had a failure status
    (PS3.4 J.3.2.1.2: the Transaction UID is then no longer active)."""

    def __init__(self, transaction_uid: str, status: int, error_comment: str | None = None):
        text = f"storage commitment request {transaction_uid} refused: {describe(status)}"
        if error_comment:
            text += f": {error_comment}"
        super().__init__(text)
        self.transaction_uid = transaction_uid
        self.status = status
        self.error_comment = error_comment


class CommitmentReports:
    """Storage commitment reports awaited by Transaction UID, from whichever association brings
    them: the one the N-ACTION went on, or a new one the SCP opens to us (PS3.4 J.3.3.1.3).

    ``expect(uid)`` before sending the request, then ``wait(uid, timeout)``; whatever receives
    the N-EVENT-REPORT calls ``on_n_event_report(request)`` (a client's or a ``Service``'s N
    handler) or ``deliver(report)``. ``listener()`` is a ``DicomServer`` service factory that
    does it. One event loop: the futures belong to the loop that called ``expect``.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[CommitmentReport]] = {}

    def expect(self, transaction_uid: str) -> asyncio.Future[CommitmentReport]:
        """Start awaiting the report of ``transaction_uid``; its future."""
        if transaction_uid in self._waiting:
            raise ValueError(f"Transaction UID {transaction_uid} is already awaited")
        future: asyncio.Future[CommitmentReport] = asyncio.get_running_loop().create_future()
        self._waiting[transaction_uid] = future
        return future

    def awaits(self, transaction_uid: str) -> bool:
        future = self._waiting.get(transaction_uid)
        return future is not None and not future.done()

    def forget(self, transaction_uid: str) -> None:
        """Stop awaiting ``transaction_uid`` (a later report for it is not awaited)."""
        future = self._waiting.pop(transaction_uid, None)
        if future is not None and not future.done():
            future.cancel()

    def deliver(self, report: CommitmentReport) -> bool:
        """Complete the wait for ``report``'s transaction; False when nobody awaits it."""
        future = self._waiting.get(report.transaction_uid)
        if future is None or future.done():
            return False
        future.set_result(report)
        return True

    async def wait(self, transaction_uid: str, timeout: float | None) -> CommitmentReport:
        """The report of ``transaction_uid`` (which must be expected), within ``timeout``
        seconds; DicomTimeoutError otherwise. The wait ends either way."""
        future = self._waiting.get(transaction_uid)
        if future is None:
            raise ValueError(f"Transaction UID {transaction_uid} is not awaited: expect() it first")
        try:
            await asyncio.wait([future], timeout=timeout)
            if not future.done():
                raise DicomTimeoutError(
                    f"no storage commitment report for {transaction_uid} within {timeout} s"
                )
            return future.result()
        finally:
            self.forget(transaction_uid)

    async def on_n_event_report(self, request: ReceivedN) -> int | Response:
        """An N-EVENT-REPORT handler: a Storage Commitment result (PS3.4 Table J.3-2) for an
        awaited Transaction UID completes its wait and is answered with Success. Otherwise:
        0x0118 (not the Storage Commitment Push Model), 0x0113 (event type not 1 or 2), 0x0115
        (event information unreadable, or a Transaction UID nobody awaits), logged."""
        message = request.message
        assert isinstance(message, c.NEventReportRQ)
        peer = request.association
        if message.affected_sop_class_uid != STORAGE_COMMITMENT_PUSH:
            log.warning(
                "[%s] N-EVENT-REPORT for %s is not a commitment report",
                peer,
                message.affected_sop_class_uid,
            )
            return Response(
                Status.NO_SUCH_SOP_CLASS,
                error_comment="only Storage Commitment Push Model reports are received here",
            )
        if message.event_type_id not in (1, 2):
            log.warning("[%s] commitment report with event type %s", peer, message.event_type_id)
            return Response(
                Status.NO_SUCH_EVENT_TYPE,
                error_comment="event types 1 and 2 only (PS3.4 Table J.3-2)",
                extra={"event_type_id": message.event_type_id},
            )
        try:
            ds = request.dataset
            if ds is None:
                raise ValueError("no event information")
            report = parse_report(ds)
            if not report.transaction_uid:
                raise ValueError("no Transaction UID (0008,1195)")
        except Exception as exc:
            log.warning("[%s] unreadable commitment report: %s", peer, exc)
            return Response(Status.INVALID_ARGUMENT_VALUE, error_comment=f"{exc}")
        if not self.deliver(report):
            log.warning(
                "[%s] commitment report for Transaction UID %s, which nobody awaits",
                peer,
                report.transaction_uid,
            )
            return Response(
                Status.INVALID_ARGUMENT_VALUE,
                error_comment=f"Transaction UID {report.transaction_uid} is not awaited",
            )
        log.info(
            "[%s] commitment report %s: %d committed, %d failed",
            peer,
            report.transaction_uid,
            len(report.success),
            len(report.failure),
        )
        return Status.SUCCESS

    def listener(self) -> Callable[[AssociationInfo], Service]:
        """A ``DicomServer`` service factory receiving commitment reports on new associations
        (PS3.4 J.3.3.1.3): it accepts Verification and the Storage Commitment Push Model, with
        the SCP role the SCP proposes for itself (PS3.7 §D.3.3.4), and hands each
        N-EVENT-REPORT to ``on_n_event_report``."""
        reports = self

        class CommitmentListener(Service):
            abstract_syntaxes = (VERIFICATION, STORAGE_COMMITMENT_PUSH)

            async def on_c_echo(self, request: Any) -> int:
                return Status.SUCCESS

            async def on_n_event_report(self, request: ReceivedN) -> int | Response:
                return await reports.on_n_event_report(request)

        return CommitmentListener


__all__ = [
    "N_HANDLER_NAMES",
    "N_REQUESTS",
    "CFindError",
    "CGetError",
    "CMoveError",
    "CommitmentError",
    "CommitmentReports",
    "NHandler",
    "QueryRetrieveError",
    "QueryRetrieveResponses",
    "RetrieveProgress",
    "answer_n_request",
    "find_match",
    "n_response",
    "progress",
    "receive_store",
]
