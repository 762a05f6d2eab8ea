"""``DicomClient``: negotiates an association, queues requests and awaits their responses
(fo-dicom's ``DicomClient``), with the direct forms ``await client.c_echo()`` and
``await client.c_store(path)``.

Rules: the association is opened lazily, with the presentation contexts the queued requests need
plus those added explicitly; a request that needs a context the open association lacks makes the
client release it and associate again. Up to the negotiated asynchronous operations window of
requests are outstanding at once. A file's data set is streamed from disk, never read whole.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.association import Association, Incoming, IncomingInvalid
from dicomnet.connection import Role
from dicomnet.dataset import FileInfo, decode_dataset, encode_dataset, read_file_info
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory, category
from dicomnet.errors import (
    AssociationAborted,
    AssociationRejected,
    DicomNetError,
    DicomTimeoutError,
    NegotiationError,
)
from dicomnet.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    Negotiated,
    NegotiatedContext,
    ProposedContext,
    build_request,
    read_accept,
)
from dicomnet.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, UserIdentityRQ
from dicomnet.service import AssociationInfo
from dicomnet.service import CStoreRequest as ReceivedCStore
from dicomnet.sinks import DatasetSink, FileSink, MemorySink, file_meta_bytes
from dicomnet.uids import UNCOMPRESSED, VERIFICATION

log = logging.getLogger("dicomnet.client")

_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    """A queued DIMSE request. ``on_response(request, response)`` is called for every response
    (pending ones included); ``response`` holds the final one."""

    on_response: Callable[[Request, c.Message], None] | None = None
    message_id: int = 0
    response: c.Message | None = None
    error: BaseException | None = None
    _done: asyncio.Future[c.Message] | None = field(default=None, repr=False)

    def contexts(self) -> list[ProposedContext]:
        raise NotImplementedError

    @property
    def status(self) -> int | None:
        return getattr(self.response, "status", None)


@dataclass(eq=False)
class CEchoRequest(Request):
    """A C-ECHO-RQ (PS3.7 §9.1.5)."""

    def contexts(self) -> list[ProposedContext]:
        return [ProposedContext(VERIFICATION, list(UNCOMPRESSED))]


@dataclass(eq=False)
class CStoreRequest(Request):
    """A C-STORE-RQ from a Part 10 file (streamed) or a pydicom ``Dataset`` (encoded in memory)."""

    file: FileInfo | None = None
    dataset: Dataset | None = None
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax: str = ExplicitVRLittleEndian
    priority: int = 0
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        on_response: Callable[[Request, c.Message], None] | None = None,
        **kwargs: Any,
    ) -> CStoreRequest:
        info = read_file_info(path)
        return cls(
            on_response=on_response,
            file=info,
            sop_class_uid=info.sop_class_uid,
            sop_instance_uid=info.sop_instance_uid,
            transfer_syntax=info.transfer_syntax,
            **kwargs,
        )

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        on_response: Callable[[Request, c.Message], None] | None = None,
        **kwargs: Any,
    ) -> CStoreRequest:
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "") or ExplicitVRLittleEndian)
        return cls(
            on_response=on_response,
            dataset=ds,
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            transfer_syntax=ts,
            **kwargs,
        )

    def contexts(self) -> list[ProposedContext]:
        syntaxes = [self.transfer_syntax]
        if self.transfer_syntax in UNCOMPRESSED or self.dataset is not None:
            # Uncompressed data can be re-encoded if the peer prefers another syntax.
            for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                if ts not in syntaxes and (
                    self.transfer_syntax in UNCOMPRESSED
                    or not UID(self.transfer_syntax).is_compressed
                ):
                    syntaxes.append(ts)
        return [ProposedContext(self.sop_class_uid, syntaxes)]


@dataclass(eq=False)
class _QueryRequest(Request):
    """C-FIND/C-MOVE/C-GET: pending responses go to ``results``."""

    identifier: Dataset | None = None
    model: str = ""
    results: asyncio.Queue[tuple[c.Message, Dataset | None]] | None = None

    def contexts(self) -> list[ProposedContext]:
        return [ProposedContext(self.model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


@dataclass(eq=False)
class CFindRequest(_QueryRequest):
    """A C-FIND-RQ; matches arrive as pending responses."""


@dataclass(eq=False)
class CMoveRequest(_QueryRequest):
    destination: str = ""


@dataclass(eq=False)
class CGetRequest(_QueryRequest):
    """A C-GET-RQ; the instances arrive as C-STORE-RQs on this association."""

    storage_contexts: Sequence[ProposedContext] = ()

    def contexts(self) -> list[ProposedContext]:
        return [*super().contexts(), *self.storage_contexts]


StoreHandler = Callable[[ReceivedCStore], Awaitable[int]]


class DicomClient:
    """A DICOM client (SCU) for one peer.

    ``async with DicomClient(host, port, calling_ae="ME", called_ae="PACS") as client:`` then
    ``await client.c_echo()``, ``await client.c_store(path)``, or ``await client.add_request(r)``
    and ``await client.send()``. Leaving the block releases the association.
    """

    def __init__(
        self,
        host: str,
        port: int,
        calling_ae: str = "DICOMNET",
        called_ae: str = "ANY-SCP",
        *,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        connect_timeout: float = 30.0,
        acse_timeout: float = 30.0,
        dimse_timeout: float | None = 60.0,
        user_identity: UserIdentityRQ | None = None,
        ssl: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.max_pdu_length = max_pdu_length
        self.connect_timeout = connect_timeout
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.user_identity = user_identity
        self.ssl = ssl
        self._contexts: list[ProposedContext] = []
        self._async_ops: tuple[int, int] | None = None
        self._queue: list[Request] = []
        self._assoc: Association | None = None
        self._pending: dict[int, Request] = {}
        self._message_ids = itertools.count(1)
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[asyncio.Future[c.Message]] = set()
        self.store_handler: StoreHandler | None = None
        self.temp_dir: str | os.PathLike[str] | None = None

    # -- configuration -----------------------------------------------------------------------------

    def add_presentation_context(
        self,
        abstract_syntax: str,
        transfer_syntaxes: Iterable[str] = UNCOMPRESSED,
        *,
        scu_role: bool | None = None,
        scp_role: bool | None = None,
    ) -> None:
        ctx = ProposedContext(abstract_syntax, list(transfer_syntaxes), scu_role, scp_role)
        if not any(_same(ctx, other) for other in self._contexts):
            self._contexts.append(ctx)

    def negotiate_async_ops(self, invoked: int = 0, performed: int = 1) -> None:
        """Propose an asynchronous operations window (PS3.7 D.3.3.3); 0 = unlimited."""
        self._async_ops = (invoked, performed)

    @property
    def negotiated(self) -> Negotiated | None:
        return self._assoc.negotiated if self._assoc is not None else None

    @property
    def is_associated(self) -> bool:
        return self._assoc is not None and not self._assoc.closed.done()

    # -- association ---------------------------------------------------------------------------------

    async def associate(self, contexts: Sequence[ProposedContext] | None = None) -> Negotiated:
        """Open the association with ``contexts`` (default: those added so far)."""
        wanted = _dedupe([*(contexts or ()), *self._contexts])
        if not wanted:
            wanted = [ProposedContext(VERIFICATION, list(UNCOMPRESSED))]
        rq = build_request(
            self.called_ae,
            self.calling_ae,
            wanted,
            max_pdu_length=self.max_pdu_length,
            async_ops=self._async_ops,
            user_identity=self.user_identity,
        )
        loop = asyncio.get_running_loop()
        info = AssociationInfo(next(_ids), self.host, self.port, self.calling_ae, self.called_ae)
        assoc = Association(
            Role.REQUESTOR,
            info,
            artim_timeout=self.acse_timeout,
            max_pdu_length=self.max_pdu_length,
        )
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: assoc, self.host, self.port, ssl=self.ssl),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise DicomTimeoutError(
                f"no TCP connection to {self.host}:{self.port} within {self.connect_timeout} s"
            ) from exc
        except OSError as exc:
            raise AssociationAborted(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        assoc.on_message = self._on_message
        assoc.sink_factory = self._make_sink
        assoc.on_release = lambda: assoc.send_release_response()
        assoc.on_end = self._on_end
        assoc.send_request(rq)
        try:
            answer = await asyncio.wait_for(assoc.wait_associate(), self.acse_timeout)
        except TimeoutError as exc:
            assoc.abort()
            raise DicomTimeoutError(
                f"no answer to A-ASSOCIATE-RQ from {self.host}:{self.port} within "
                f"{self.acse_timeout} s"
            ) from exc
        if isinstance(answer, A_ASSOCIATE_RJ):
            raise AssociationRejected(answer.result, answer.source, answer.reason)
        assert isinstance(answer, A_ASSOCIATE_AC)
        try:
            negotiated = read_accept(rq, answer)
        except NegotiationError:
            assoc.abort()
            raise
        assoc.set_negotiated(negotiated)
        self._assoc = assoc
        window = negotiated.max_operations_invoked
        self._slots = asyncio.Semaphore(window if window > 0 else 1 << 16)
        self._proposed = wanted
        log.debug("associated with %s: %d contexts accepted", info, len(negotiated.contexts))
        return negotiated

    async def release(self) -> None:
        """Wait for outstanding requests, then release the association."""
        assoc = self._assoc
        if assoc is None:
            return
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._assoc = None
        if not assoc.closed.done():
            await assoc.release(self.acse_timeout)

    async def abort(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.abort()
            await asyncio.wait([assoc.closed], timeout=5)

    async def __aenter__(self) -> DicomClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, DicomNetError):
            await self.abort()
        else:
            await self.release()

    # -- the request queue ------------------------------------------------------------------------

    async def add_request(self, request: Request) -> None:
        """Queue a request; ``send()`` sends the queue."""
        self._queue.append(request)

    async def send(self) -> None:
        """Send every queued request (associating with the contexts they need) and wait for all
        of their final responses. Failures are recorded on the requests, not raised."""
        queue, self._queue = self._queue, []
        if not queue:
            return
        await self._ensure_contexts([ctx for r in queue for ctx in r.contexts()])
        futures = [await self._start(r) for r in queue]
        await asyncio.gather(*futures, return_exceptions=True)

    async def _ensure_contexts(self, needed: Sequence[ProposedContext]) -> Negotiated:
        if self.is_associated:
            assert self._assoc is not None and self._assoc.negotiated is not None
            negotiated = self._assoc.negotiated
            have = getattr(self, "_proposed", [])
            if all(any(_covers(p, n) for p in have) for n in needed):
                return negotiated
            await self.release()
        return await self.associate(needed)

    async def _start(self, request: Request) -> asyncio.Future[c.Message]:
        """Send one request once a slot of the window is free; returns its final response's
        future."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[c.Message] = loop.create_future()
        request._done = done
        assert self._slots is not None
        await self._slots.acquire()
        self._inflight.add(done)
        slots = self._slots

        def finished(f: asyncio.Future[c.Message]) -> None:
            slots.release()
            self._inflight.discard(f)
            self._pending.pop(request.message_id, None)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                request.error = exc

        done.add_done_callback(finished)
        try:
            await self._send_request(request)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
                done.exception()
        return done

    async def _send_request(self, request: Request) -> None:
        assoc = self._assoc
        if assoc is None or assoc.negotiated is None or assoc.closed.done():
            raise AssociationAborted("not associated")
        request.message_id = next(self._message_ids) & 0xFFFF or next(self._message_ids)
        self._pending[request.message_id] = request
        negotiated = assoc.negotiated
        if isinstance(request, CEchoRequest):
            ctx = _need(negotiated, VERIFICATION)
            msg: c.Message = c.CEchoRQ(
                message_id=request.message_id, affected_sop_class_uid=VERIFICATION
            )
            await assoc.send_message(ctx.context_id, msg)
        elif isinstance(request, CStoreRequest):
            ctx, payload = self._store_payload(negotiated, request)
            msg = c.CStoreRQ(
                message_id=request.message_id,
                affected_sop_class_uid=request.sop_class_uid,
                affected_sop_instance_uid=request.sop_instance_uid,
                priority=request.priority,
                move_originator_aet=request.move_originator_ae_title,
                move_originator_message_id=request.move_originator_message_id,
            )
            await assoc.send_message(ctx.context_id, msg, payload)
        elif isinstance(request, _QueryRequest):
            ctx = _need(negotiated, request.model)
            ident = encode_dataset(request.identifier or Dataset(), ctx.transfer_syntax)
            if isinstance(request, CFindRequest):
                msg = c.CFindRQ(message_id=request.message_id, affected_sop_class_uid=request.model)
            elif isinstance(request, CMoveRequest):
                msg = c.CMoveRQ(
                    message_id=request.message_id,
                    affected_sop_class_uid=request.model,
                    move_destination=request.destination,
                )
            else:
                msg = c.CGetRQ(message_id=request.message_id, affected_sop_class_uid=request.model)
            await assoc.send_message(ctx.context_id, msg, ident)
        else:
            raise TypeError(f"cannot send {type(request).__name__}")

    def _store_payload(
        self, negotiated: Negotiated, request: CStoreRequest
    ) -> tuple[NegotiatedContext, bytes | FileInfo]:
        exact = negotiated.find_context(request.sop_class_uid, request.transfer_syntax)
        if exact is not None:
            if request.file is not None:
                return exact, request.file
            assert request.dataset is not None
            return exact, encode_dataset(request.dataset, exact.transfer_syntax)
        other = negotiated.find_context(request.sop_class_uid)
        if other is None:
            raise NegotiationError(
                f"the peer accepted no presentation context for {request.sop_class_uid}"
            )
        if UID(request.transfer_syntax).is_compressed or UID(other.transfer_syntax).is_compressed:
            raise NegotiationError(
                f"the peer accepted {request.sop_class_uid} only with {other.transfer_syntax}, "
                f"and the data is {request.transfer_syntax}; dicomnet does not transcode pixel data"
            )
        ds = request.dataset
        if ds is None:
            assert request.file is not None
            from pydicom import dcmread

            ds = dcmread(request.file.path)
        return other, encode_dataset(ds, other.transfer_syntax)

    # -- receiving ------------------------------------------------------------------------------------

    def _make_sink(self, message: c.Message, ctx: NegotiatedContext) -> DatasetSink:
        if isinstance(message, c.CStoreRQ):
            meta = file_meta_bytes(
                message.affected_sop_class_uid,
                message.affected_sop_instance_uid,
                ctx.transfer_syntax,
            )
            return FileSink(self.temp_dir, meta)
        return MemorySink()

    def _on_end(self, aborted: Any) -> None:
        exc = AssociationAborted(
            getattr(aborted, "message", "the association ended"),
            getattr(aborted, "source", None),
            getattr(aborted, "reason", None),
        )
        for request in list(self._pending.values()):
            done = request._done
            if done is not None and not done.done():
                done.set_exception(exc)
                done.exception()
            if isinstance(request, _QueryRequest) and request.results is not None:
                request.results.put_nowait((c.CCancelRQ(message_id_being_responded_to=0), None))
        self._pending.clear()

    def _on_message(self, item: Incoming | IncomingInvalid) -> None:
        if isinstance(item, IncomingInvalid):
            log.warning("unusable message from the peer: %s", item.event.error)
            return
        message = item.message
        if isinstance(message, c.CStoreRQ):
            asyncio.get_running_loop().create_task(self._receive_store(item))
            return
        responded = getattr(message, "message_id_being_responded_to", None)
        request = self._pending.get(responded) if responded is not None else None
        if request is None:
            log.warning("response to unknown message ID %s ignored", responded)
            if isinstance(item.sink, FileSink):
                item.sink.discard()
            return
        dataset = None
        if isinstance(item.sink, MemorySink) and item.sink.value is not None:
            try:
                dataset = decode_dataset(item.sink.value, item.context.transfer_syntax)
            except Exception as exc:
                log.warning("cannot decode the response's data set: %s", exc)
        if request.on_response is not None:
            try:
                request.on_response(request, message)
            except Exception:
                log.exception("on_response callback failed")
        status = getattr(message, "status", 0)
        if category(status) is StatusCategory.PENDING:
            if isinstance(request, _QueryRequest) and request.results is not None:
                request.results.put_nowait((message, dataset))
            return
        request.response = message
        if isinstance(request, _QueryRequest) and request.results is not None:
            request.results.put_nowait((message, dataset))
        if request._done is not None and not request._done.done():
            request._done.set_result(message)

    async def _receive_store(self, item: Incoming) -> None:
        message = item.message
        assert isinstance(message, c.CStoreRQ) and self._assoc is not None
        sink = item.sink
        status: int = Status.SUCCESS
        try:
            if (
                item.error is not None
                or not isinstance(sink, FileSink)
                or self.store_handler is None
            ):
                status = 0xA700
            else:
                info = self._assoc.info
                request = ReceivedCStore(
                    info, item.context, message, path=sink.path, size=sink.size
                )
                status = int(await self.store_handler(request))
        except Exception:
            log.exception("storing a received instance failed")
            status = 0xC000
        finally:
            if isinstance(sink, FileSink):
                sink.discard()
        rsp = c.CStoreRSP(
            message_id_being_responded_to=message.message_id,
            affected_sop_class_uid=message.affected_sop_class_uid,
            affected_sop_instance_uid=message.affected_sop_instance_uid,
            status=status,
            has_dataset=False,
        )
        try:
            await self._assoc.send_message(item.context.context_id, rsp)
        except DicomNetError as exc:
            log.warning("cannot answer C-STORE-RQ: %s", exc)

    # -- direct forms ---------------------------------------------------------------------------------

    async def _one(self, request: Request) -> c.Message:
        await self._ensure_contexts(request.contexts())
        done = await self._start(request)
        try:
            return await asyncio.wait_for(asyncio.shield(done), self.dimse_timeout)
        except TimeoutError as exc:
            raise DicomTimeoutError(
                f"no response to message {request.message_id} within {self.dimse_timeout} s"
            ) from exc

    async def c_echo(self) -> int:
        """Send a C-ECHO-RQ; returns the response status."""
        rsp = await self._one(CEchoRequest())
        return int(getattr(rsp, "status", 0xFFFF))

    async def c_store(self, source: str | os.PathLike[str] | Dataset, **kwargs: Any) -> int:
        """Store a file (streamed) or a ``Dataset``; returns the response status."""
        if isinstance(source, Dataset):
            request = CStoreRequest.from_dataset(source, **kwargs)
        else:
            request = CStoreRequest.from_file(source, **kwargs)
        rsp = await self._one(request)
        return int(getattr(rsp, "status", 0xFFFF))

    async def _query(
        self, request: _QueryRequest
    ) -> AsyncIterator[tuple[c.Message, Dataset | None]]:
        request.results = asyncio.Queue()
        await self._ensure_contexts(request.contexts())
        done = await self._start(request)
        while True:
            if done.done() and request.results.empty():
                if done.exception() is not None:
                    raise done.exception()  # type: ignore[misc]
                return
            try:
                message, ds = await asyncio.wait_for(request.results.get(), self.dimse_timeout)
            except TimeoutError as exc:
                raise DicomTimeoutError(
                    f"no response to message {request.message_id} within {self.dimse_timeout} s"
                ) from exc
            if isinstance(message, c.CCancelRQ):
                exc2 = done.exception() if done.done() else None
                raise exc2 or AssociationAborted("the association ended")
            yield message, ds
            if category(getattr(message, "status", 0)) is not StatusCategory.PENDING:
                return

    async def c_find(
        self, query: Dataset, model: str = "1.2.840.10008.5.1.4.1.2.2.1"
    ) -> AsyncIterator[Dataset]:
        """Send a C-FIND-RQ (default: Study Root); yields each match's identifier. A final
        failure status raises ``DicomNetError``."""
        async for message, ds in self._query(CFindRequest(identifier=query, model=model)):
            status = getattr(message, "status", 0)
            if category(status) is StatusCategory.PENDING and ds is not None:
                yield ds
            elif category(status) is StatusCategory.FAILURE:
                raise DicomNetError(
                    f"C-FIND failed: 0x{status:04X} {getattr(message, 'error_comment', '') or ''}"
                )

    async def c_move(
        self, query: Dataset, destination: str, model: str = "1.2.840.10008.5.1.4.1.2.2.2"
    ) -> AsyncIterator[c.Message]:
        """Send a C-MOVE-RQ; yields every response (pending ones carry the counts)."""
        request = CMoveRequest(identifier=query, model=model, destination=destination)
        async for message, _ds in self._query(request):
            yield message

    async def c_get(
        self,
        query: Dataset,
        store: StoreHandler,
        storage_contexts: Sequence[ProposedContext],
        model: str = "1.2.840.10008.5.1.4.1.2.2.3",
    ) -> AsyncIterator[c.Message]:
        """Send a C-GET-RQ; instances arrive through ``store``; yields every response."""
        self.store_handler = store
        roles = [
            ProposedContext(x.abstract_syntax, x.transfer_syntaxes, True, True)
            for x in storage_contexts
        ]
        request = CGetRequest(identifier=query, model=model, storage_contexts=roles)
        async for message, _ds in self._query(request):
            yield message


def _same(a: ProposedContext, b: ProposedContext) -> bool:
    return (
        a.abstract_syntax == b.abstract_syntax
        and list(a.transfer_syntaxes) == list(b.transfer_syntaxes)
        and a.scu_role == b.scu_role
        and a.scp_role == b.scp_role
    )


def _covers(have: ProposedContext, need: ProposedContext) -> bool:
    return (
        have.abstract_syntax == need.abstract_syntax
        and need.transfer_syntaxes[:1] == have.transfer_syntaxes[:1]
        and (need.scp_role is None or have.scp_role == need.scp_role)
    )


def _dedupe(contexts: Iterable[ProposedContext]) -> list[ProposedContext]:
    out: list[ProposedContext] = []
    for ctx in contexts:
        if not any(_same(ctx, o) for o in out):
            out.append(ctx)
    return out


def _need(negotiated: Negotiated, abstract_syntax: str) -> NegotiatedContext:
    ctx = negotiated.find_context(abstract_syntax)
    if ctx is None:
        raise NegotiationError(f"the peer accepted no presentation context for {abstract_syntax}")
    return ctx


__all__ = [
    "CEchoRequest",
    "CFindRequest",
    "CGetRequest",
    "CMoveRequest",
    "CStoreRequest",
    "DicomClient",
    "Request",
    "Path",
]
