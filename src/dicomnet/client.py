"""``DicomClient``: negotiates an association, queues requests and awaits their responses
(fo-dicom's ``DicomClient``), with the direct forms ``await client.c_echo()``,
``await client.c_store(path)``, ``await client.n_get(...)`` (and the other DIMSE-N calls) and
``await client.request_commitment(references)``.

Rules: the association is opened lazily, with the presentation contexts the queued requests need
plus those added explicitly; a request that needs a context the open association lacks makes the
client release it and associate again. A C-STORE whose data set must be converted for the context
the peer accepted is converted off the event loop (``transcode_pool``), a few requests ahead of
the one being sent, so that the codecs use the cores while the network is busy; an association
the peer ended while nothing was outstanding (an idle timeout during a long conversion) is opened
again once, and the converted file is reused. Up to the negotiated asynchronous operations window of
requests are outstanding at once, each under a message ID that no outstanding request holds
(``dimse.ids``: 1..65535, cycling). A file's data set is streamed from disk, never read whole.
Requests the peer sends on the association (a C-GET's C-STORE-RQs, N-EVENT-REPORT-RQs and the
other N requests) go to the client's handlers (``on_n_event_report``, ...) and are answered by
``dicomnet.retrieve``; a storage commitment report for a transaction the client awaits goes to
its ``CommitmentReports``.
The request types live in ``dicomnet.requests``, identifiers and models in ``dicomnet.query``,
query/retrieve responses and errors in ``dicomnet.retrieve``; their names are re-exported here.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import os
import ssl as ssl_module
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pydicom import Dataset
from pydicom.uid import generate_uid

from dicomnet.archive.commitment import (
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    CommitmentReport,
    transaction_uid_of,
)
from dicomnet.association import Association, Incoming, IncomingInvalid
from dicomnet.connection import Aborted, Role
from dicomnet.dataset import decode_dataset
from dicomnet.dimse import commands as c
from dicomnet.dimse.ids import MessageIds
from dicomnet.dimse.status import StatusCategory, category
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
from dicomnet.pixels import TranscodePolicy, TranscodePool
from dicomnet.pixels.policy import DEFAULT_POLICY
from dicomnet.pixels.pool import default_pool
from dicomnet.query import (
    QR_LEVELS,
    QR_MODELS,
    QueryInput,
    build_query,
    parse_keys,
    parse_tag,
    resolve_model,
)
from dicomnet.requests import (
    AttributeKey,
    CEchoRequest,
    CFindRequest,
    CGetRequest,
    CMoveRequest,
    CommitmentReference,
    CommitmentRequest,
    CStoreRequest,
    NActionRequest,
    NCreateRequest,
    NDeleteRequest,
    NEventReportRequest,
    NGetRequest,
    NResult,
    NServiceRequest,
    NSetRequest,
    QueryRequest,
    Request,
    StoreHandler,
    commitment_references,
    get_storage_contexts,
    save_into,
)
from dicomnet.retrieve import (
    N_HANDLER_NAMES,
    N_REQUESTS,
    CFindError,
    CGetError,
    CMoveError,
    CommitmentError,
    CommitmentReports,
    NHandler,
    QueryRetrieveError,
    QueryRetrieveResponses,
    RetrieveProgress,
    answer_n_request,
    find_match,
    progress,
    receive_store,
)
from dicomnet.security.tls import PeerCertificate, TLSSession, describe_tls_error
from dicomnet.service import AssociationInfo, ReceivedN
from dicomnet.sinks import DatasetSink, FileSink, MemorySink, make_sink
from dicomnet.uids import UNCOMPRESSED, VERIFICATION

log = logging.getLogger("dicomnet.client")

_ids = itertools.count(1)
_T = TypeVar("_T")


class DicomClient:
    """A DICOM client (SCU) for one peer.

    ``async with DicomClient(host, port, calling_ae="ME", called_ae="PACS") as client:`` then
    ``await client.c_echo()``, ``await client.c_store(path)``, or ``await client.add_request(r)``
    and ``await client.send()``. Leaving the block releases the association.

    N requests the peer sends on the association go to ``on_n_event_report``, ``on_n_get``,
    ``on_n_set``, ``on_n_action``, ``on_n_create`` and ``on_n_delete`` (an ``NHandler`` each:
    set the attribute, or define the method in a subclass); without one the client answers
    0x0211 Unrecognized operation.

    ``transcode_policy`` is what C-STOREs may do to get a file through (propose its own syntax
    and an uncompressed fallback, decompress when only that was accepted, compress only to the
    ``targets`` asked for; a request's own ``policy`` overrides it); conversions run in
    ``transcode_pool`` (None: the process-wide pool) into files in ``temp_dir``.
    """

    on_n_event_report: NHandler | None = None
    on_n_get: NHandler | None = None
    on_n_set: NHandler | None = None
    on_n_action: NHandler | None = None
    on_n_create: NHandler | None = None
    on_n_delete: NHandler | None = None

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
        ssl_handshake_timeout: float | None = None,
        server_hostname: str | None = None,
        transcode_policy: TranscodePolicy | None = None,
        transcode_pool: TranscodePool | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.max_pdu_length = max_pdu_length
        self.connect_timeout = connect_timeout
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        #: The user identity sent in each A-ASSOCIATE-RQ (PS3.7 D.3.3.7):
        #: ``UserIdentityRQ.password("alice", "secret")``, ``.username``, ``.kerberos``,
        #: ``.saml``, ``.jwt``; the server's answer is ``negotiated.user_identity_response``.
        self.user_identity = user_identity
        #: TLS (PS3.15 Annex B): an ``ssl.SSLContext`` (``security.tls.client_context``); the
        #: server's certificate is checked against ``server_hostname`` (default: ``host``).
        self.ssl = ssl
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.server_hostname = server_hostname
        #: Where received instances (a C-GET's) stream to when the C-GET names no folder, and
        #: where converted C-STORE data sets are written (None: the system's temporary folder).
        self.temp_dir: str | os.PathLike[str] | None = None
        self.transcode_policy = transcode_policy or DEFAULT_POLICY
        self.transcode_pool = transcode_pool
        self._contexts: list[ProposedContext] = []
        self._async_ops: tuple[int, int] | None = None
        self._queue: list[Request] = []
        self._assoc: Association | None = None
        # The contexts the open association was proposed with (a request they cover needs no
        # new association).
        self._proposed: list[ProposedContext] = []
        # Outstanding requests by message ID, in the order they were sent.
        self._pending: dict[int, Request] = {}
        self._message_ids = MessageIds()
        self._slots: asyncio.Semaphore | None = None
        self._ended_idle = False  # the last association ended with no request outstanding
        self._inflight: set[asyncio.Future[c.ResponseMessage]] = set()
        # Answers to the peer's requests (C-GET sub-operations, N requests) being worked on.
        self._answer_tasks: set[asyncio.Task[None]] = set()
        #: Where this client's storage commitment reports are awaited (``request_commitment``).
        self.commitments = CommitmentReports()
        # Transaction UID -> the reports that await it, for reports arriving on our association.
        self._commitments: dict[str, CommitmentReports] = {}

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
    def peer_certificate(self) -> PeerCertificate | None:
        """The server's verified TLS certificate on the open association (None on a plain
        connection or without verification)."""
        return self._assoc.info.peer_certificate if self._assoc is not None else None

    @property
    def tls(self) -> TLSSession | None:
        """The TLS version and cipher of the open association (None on a plain one)."""
        return self._assoc.info.tls if self._assoc is not None else None

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
        tls: dict[str, Any] = {}
        if self.ssl is not None:
            tls = {"ssl": self.ssl, "server_hostname": self.server_hostname}
            if self.ssl_handshake_timeout is not None:
                tls["ssl_handshake_timeout"] = self.ssl_handshake_timeout
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: assoc, self.host, self.port, **tls),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise DicomTimeoutError(
                f"no TCP connection to {self.host}:{self.port} within {self.connect_timeout} s"
            ) from exc
        except ssl_module.SSLError as exc:
            why = describe_tls_error(exc, self.ssl_handshake_timeout, client=True)
            raise AssociationAborted(
                f"TLS handshake with {self.host}:{self.port} failed: {why} ({exc})"
            ) from exc
        except OSError as exc:
            raise AssociationAborted(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        info.peer_certificate, info.tls = assoc.peer_certificate, assoc.tls
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
        if self._answer_tasks:
            # Let the answers to the peer's requests go out before the A-RELEASE-RQ.
            await asyncio.wait(list(self._answer_tasks), timeout=self.dimse_timeout)
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
        self._adopt(request)
        self._queue.append(request)

    def _adopt(self, request: Request) -> None:
        if isinstance(request, CStoreRequest) and request.policy is None:
            request.policy = self.transcode_policy

    @property
    def _pool(self) -> TranscodePool:
        return self.transcode_pool or default_pool()

    async def _prepare(self, request: Request, negotiated: Negotiated) -> None:
        if isinstance(request, CStoreRequest) and not request.prepared_for(negotiated):
            await request.prepare(negotiated, pool=self._pool, temp_dir=self.temp_dir)

    async def _still_associated(
        self, request: Request, needed: Sequence[ProposedContext]
    ) -> Negotiated:
        """The association to send ``request`` on, prepared for it. A peer may end an idle
        association while a long conversion runs (DCMTK's tools after 60 s without a PDU):
        then we associate again once, and the converted file is reused."""
        if not self.is_associated:
            if not self._ended_idle:
                raise AssociationAborted("not associated")
            log.info(
                "the association with %s:%d ended while a data set was converted (a peer's "
                "idle timeout?); associating again",
                self.host,
                self.port,
            )
            self._assoc = None
            self._ended_idle = False  # one attempt per association that ended
            await self._ensure_contexts(needed)
        assert self._assoc is not None and self._assoc.negotiated is not None
        negotiated = self._assoc.negotiated
        await self._prepare(request, negotiated)
        return negotiated

    async def send(self) -> None:
        """Send every queued request (associating with the contexts they need) and wait for all
        of their final responses. Failures are recorded on the requests, not raised.

        C-STOREs are prepared (their context chosen, their data set converted if it must be)
        up to twice the transcoding pool's workers ahead of the one being sent."""
        queue, self._queue = self._queue, []
        if not queue:
            return
        needed = [ctx for r in queue for ctx in r.contexts()]
        negotiated = await self._ensure_contexts(needed)
        if any(isinstance(r, CStoreRequest) and r.may_convert(negotiated) for r in queue):
            self._pool.warm()  # the codec workers start while the first files go out
        ahead = 2 * self._pool.max_workers
        upcoming = iter(queue)
        preparing: collections.deque[tuple[Request, asyncio.Task[None]]] = collections.deque()
        loop = asyncio.get_running_loop()

        def fill() -> None:
            while len(preparing) < ahead:
                request = next(upcoming, None)
                if request is None:
                    return
                task = loop.create_task(self._prepare(request, negotiated))
                preparing.append((request, task))

        futures = []
        try:
            fill()
            while preparing:
                request, task = preparing.popleft()
                try:
                    await task
                except Exception as exc:
                    request.error = exc
                    request.cleanup()
                    fill()
                    continue
                fill()
                try:
                    await self._still_associated(request, needed)
                except (AssociationRejected, DicomTimeoutError):
                    request.cleanup()
                    raise  # associating again failed, as the first association would
                except Exception as exc:
                    request.error = exc
                    request.cleanup()
                    continue
                futures.append(await self._start(request))
        finally:
            for request, task in preparing:
                task.cancel()
                request.cleanup()
        await asyncio.gather(*futures, return_exceptions=True)

    async def _ensure_contexts(self, needed: Sequence[ProposedContext]) -> Negotiated:
        if self.is_associated:
            assert self._assoc is not None and self._assoc.negotiated is not None
            negotiated = self._assoc.negotiated
            if all(any(_covers(p, n) for p in self._proposed) for n in needed):
                return negotiated
            await self.release()
        return await self.associate(needed)

    async def _start(self, request: Request) -> asyncio.Future[c.ResponseMessage]:
        """Send one request once a slot of the window is free; returns its final response's
        future."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[c.ResponseMessage] = loop.create_future()
        request._done = done
        assert self._slots is not None
        await self._slots.acquire()
        self._inflight.add(done)
        slots = self._slots

        def finished(f: asyncio.Future[c.ResponseMessage]) -> None:
            slots.release()
            self._inflight.discard(f)
            request.cleanup()
            if self._pending.get(request.message_id) is request:
                del self._pending[request.message_id]
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
        await self._prepare(request, assoc.negotiated)
        if assoc.closed.done():
            raise AssociationAborted("the association ended while the data set was converted")
        # PS3.7 §9.1.1.1: unique among the outstanding requests; 1..65535 (US), cycling.
        request.message_id = self._message_ids.allocate(self._pending)
        self._pending[request.message_id] = request
        ctx, message, dataset = request.outgoing(assoc.negotiated)
        await assoc.send_message(ctx.context_id, message, dataset)

    # -- receiving ------------------------------------------------------------------------------------

    def _make_sink(self, message: c.Message, ctx: NegotiatedContext) -> DatasetSink:
        # A C-GET's instance streams into a temporary file: in the C-GET's folder if it names
        # one, else the client's (sinks.make_sink, shared with the server).
        temp_dir = self.temp_dir
        if isinstance(message, c.CStoreRQ):
            get = self._get_for(message)
            if get is not None and get.temp_dir is not None:
                temp_dir = get.temp_dir
        return make_sink(message, ctx, temp_dir=temp_dir)

    def _get_for(self, message: c.CStoreRQ) -> CGetRequest | None:
        """The outstanding C-GET a received C-STORE-RQ belongs to. PS3.4 §C.4.3.1.2 sends the
        sub-operations on the C-GET's association but the C-STORE-RQ does not name the C-GET
        (Move Originator Message ID is C-MOVE's): with several C-GETs outstanding, the oldest
        that proposed the SOP class, else the oldest."""
        gets = [r for r in self._pending.values() if isinstance(r, CGetRequest)]
        for get in gets:
            proposed = (ctx.abstract_syntax for ctx in get.storage_contexts)
            if message.affected_sop_class_uid in proposed:
                return get
        return gets[0] if gets else None

    def _on_end(self, aborted: Aborted | None) -> None:
        # Nothing was outstanding: an idle association the peer ended (or released).
        self._ended_idle = not self._pending
        exc = (
            AssociationAborted(aborted.message, aborted.source, aborted.reason)
            if aborted is not None
            else AssociationAborted("the association ended")
        )
        for request in list(self._pending.values()):
            done = request._done
            if done is not None and not done.done():
                done.set_exception(exc)
                done.exception()
            if isinstance(request, QueryRequest) and request.results is not None:
                request.results.put_nowait(exc)
        self._pending.clear()

    def _on_message(self, item: Incoming | IncomingInvalid) -> None:
        if isinstance(item, IncomingInvalid):
            log.warning("unusable message from the peer: %s", item.event.error)
            return
        message = item.message
        if isinstance(message, c.CStoreRQ):
            # A C-GET sub-operation (PS3.4 §C.4.3.1.2): stored by a task, answered when done.
            assoc = self._assoc
            if assoc is None:
                if isinstance(item.sink, FileSink):
                    item.sink.discard()
                return
            get = self._get_for(message)
            store = get.store if get is not None else None
            task = asyncio.get_running_loop().create_task(receive_store(assoc, item, store))
            self._answer_tasks.add(task)
            task.add_done_callback(self._answer_tasks.discard)
            return
        if type(message) in N_REQUESTS:
            self._answer_n(item)
            return
        if not isinstance(message, c.ResponseMessage):
            log.warning("unexpected %s from the peer ignored", message.NAME)
            if isinstance(item.sink, FileSink):
                item.sink.discard()
            return
        responded = message.message_id_being_responded_to
        request = self._pending.get(responded)
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
        results = request.results if isinstance(request, QueryRequest) else None
        if category(message.status) is StatusCategory.PENDING:
            if results is not None:
                results.put_nowait((message, dataset))
            return
        request.response = message
        if isinstance(request, NServiceRequest):
            request.response_dataset = dataset
        if results is not None:
            results.put_nowait((message, dataset))
        if request._done is not None and not request._done.done():
            request._done.set_result(message)

    def _answer_n(self, item: Incoming) -> None:
        """An N request from the peer (PS3.7 §10.1): answered by a task, with its handler."""
        assoc = self._assoc
        if assoc is None:
            return
        raw = item.sink.value if isinstance(item.sink, MemorySink) else None
        request = ReceivedN(assoc.info, item.context, item.message, raw=raw)
        handler = self._n_handler(request)
        task = asyncio.get_running_loop().create_task(
            answer_n_request(assoc, request, handler, item.error)
        )
        self._answer_tasks.add(task)
        task.add_done_callback(self._answer_tasks.discard)

    def _n_handler(self, request: ReceivedN) -> NHandler | None:
        """The handler of a received N request: a storage commitment report whose Transaction
        UID is awaited goes to the reports that await it, anything else to ``on_n_*``."""
        message = request.message
        if (
            self._commitments
            and isinstance(message, c.NEventReportRQ)
            and message.affected_sop_class_uid == STORAGE_COMMITMENT_PUSH
        ):
            # Read without decoding the report's sequences when the syntax allows.
            transaction = transaction_uid_of(request.raw, request.transfer_syntax) or ""
            if not transaction:
                try:
                    ds = request.dataset
                    transaction = str(ds.get("TransactionUID", "")) if ds is not None else ""
                except Exception:  # unreadable: the ordinary handler (or 0x0211) answers
                    transaction = ""
            reports = self._commitments.get(transaction)
            if reports is not None:
                return reports.on_n_event_report
        handler: NHandler | None = getattr(self, N_HANDLER_NAMES[type(message)], None)
        return handler

    # -- direct forms ---------------------------------------------------------------------------------

    async def _one(self, request: Request) -> c.ResponseMessage:
        self._adopt(request)
        needed = request.contexts()
        await self._ensure_contexts(needed)
        if isinstance(request, CStoreRequest):
            await self._still_associated(request, needed)
        done = await self._start(request)
        if not done.done():
            # Wait for the response without cancelling ``done`` on a timeout (its slot of the
            # window stays taken until the peer answers); cheaper than wait_for(shield(...)).
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            done.add_done_callback(wake)
            timeout = self.dimse_timeout
            timer = None if timeout is None else loop.call_later(timeout, wake)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                done.remove_done_callback(wake)
            if not done.done():
                raise DicomTimeoutError(
                    f"no response to message {request.message_id} within {self.dimse_timeout} s"
                )
        return done.result()

    async def c_echo(self) -> int:
        """Send a C-ECHO-RQ; returns the response status."""
        rsp = await self._one(CEchoRequest())
        return int(rsp.status)

    async def c_store(self, source: str | os.PathLike[str] | Dataset, **kwargs: Any) -> int:
        """Store a file (streamed) or a ``Dataset``; returns the response status."""
        if isinstance(source, Dataset):
            request = CStoreRequest.from_dataset(source, **kwargs)
        else:
            request = CStoreRequest.from_file(source, **kwargs)
        rsp = await self._one(request)
        return int(rsp.status)

    # -- DIMSE-N (PS3.7 §10.1) ------------------------------------------------------------------

    async def n_request(self, request: NServiceRequest) -> NResult:
        """Send an N request (associating with its context if needed) and return its answer;
        a failure status is a result, not an exception."""
        await self._one(request)
        result = request.result
        assert result is not None
        return result

    async def n_get(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        attributes: Iterable[AttributeKey] = (),
    ) -> NResult:
        """N-GET (PS3.7 §10.1.2): the ``attributes`` (tags, keywords or "gggg,eeee"; all of
        them when empty) of a SOP instance, in ``NResult.dataset``."""
        return await self.n_request(
            NGetRequest(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                attributes=list(attributes),
            )
        )

    async def n_set(
        self, sop_class_uid: str, sop_instance_uid: str, modifications: Dataset
    ) -> NResult:
        """N-SET (PS3.7 §10.1.3): change a SOP instance's attributes to ``modifications``."""
        return await self.n_request(
            NSetRequest(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                dataset=modifications,
            )
        )

    async def n_action(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        action_type_id: int,
        information: Dataset | None = None,
    ) -> NResult:
        """N-ACTION (PS3.7 §10.1.4): action ``action_type_id`` with its Action Information;
        the Action Reply is ``NResult.dataset``."""
        return await self.n_request(
            NActionRequest(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                action_type_id=action_type_id,
                dataset=information,
            )
        )

    async def n_create(
        self,
        sop_class_uid: str,
        sop_instance_uid: str | None = None,
        attributes: Dataset | None = None,
    ) -> NResult:
        """N-CREATE (PS3.7 §10.1.5): a new SOP instance with ``attributes``; without
        ``sop_instance_uid`` the SCP assigns one, in ``NResult.affected_sop_instance_uid``."""
        return await self.n_request(
            NCreateRequest(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                dataset=attributes,
            )
        )

    async def n_delete(self, sop_class_uid: str, sop_instance_uid: str) -> NResult:
        """N-DELETE (PS3.7 §10.1.6)."""
        return await self.n_request(
            NDeleteRequest(sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid)
        )

    async def n_event_report(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type_id: int,
        information: Dataset | None = None,
    ) -> NResult:
        """N-EVENT-REPORT (PS3.7 §10.1.1): report event ``event_type_id`` with its Event
        Information, as the SCP of the SOP class (proposed with role selection, see
        ``NEventReportRequest``); the Event Reply is ``NResult.dataset``."""
        return await self.n_request(
            NEventReportRequest(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                event_type_id=event_type_id,
                dataset=information,
            )
        )

    # -- storage commitment (PS3.4 J.3) ---------------------------------------------------------

    async def request_commitment(
        self,
        references: Iterable[CommitmentReference],
        *,
        timeout: float | None = 60.0,
        transaction_uid: str | None = None,
        reports: CommitmentReports | None = None,
    ) -> CommitmentReport:
        """Ask the peer to commit to storing ``references`` ((SOP Class UID, SOP Instance UID)
        pairs, data sets or Part 10 files) and wait for its report (Storage Commitment Push
        Model, PS3.4 J.3): an N-ACTION (Action Type ID 1) on the well-known instance, then the
        N-EVENT-REPORT with the same Transaction UID, waited for ``timeout`` seconds after the
        N-ACTION-RSP. The association stays open meanwhile: the SCP may report on it.

        The context is proposed with the default roles, which already let the acceptor (the
        SCP) send the report on this association (PS3.7 §D.3.3.4; role selection is only for
        the SCP's own association, PS3.4 J.3.3.1.3). For a report on a new association, pass
        ``reports`` shared with a ``DicomServer`` that receives it (``reports.listener()``):
        then the end of this association does not end the wait. A refused request raises
        ``CommitmentError``; no report in time, ``DicomTimeoutError``; this association ending
        first without ``reports``, ``AssociationAborted``."""
        refs = commitment_references(references)
        if not refs:
            raise ValueError("a storage commitment request needs at least one reference")
        uid = transaction_uid or generate_uid()
        registry = reports if reports is not None else self.commitments
        waiter = registry.expect(uid)  # before the N-ACTION: the report may come before its RSP
        self._commitments[uid] = registry
        try:
            result = await self.n_request(
                CommitmentRequest(
                    sop_class_uid=STORAGE_COMMITMENT_PUSH,
                    sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
                    action_type_id=1,  # Request Storage Commitment (PS3.4 Table J.3-1)
                    transaction_uid=uid,
                    references=refs,
                )
            )
            if not result.ok:
                raise CommitmentError(uid, result.status, result.error_comment)
            assoc = self._assoc
            watch: set[asyncio.Future[Any]] = {waiter}
            if reports is None and assoc is not None:
                watch.add(assoc.closed)
            await asyncio.wait(watch, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                return waiter.result()
            if reports is None and assoc is not None and assoc.closed.done():
                raise AssociationAborted(
                    f"the association ended before the storage commitment report for {uid}; "
                    "the SCP sends it on a new association (PS3.4 J.3.3.1.3): receive it "
                    "with reports= and a listening server"
                )
            raise DicomTimeoutError(f"no storage commitment report for {uid} within {timeout} s")
        finally:
            self._commitments.pop(uid, None)
            registry.forget(uid)

    # -- query/retrieve ---------------------------------------------------------------------------

    async def _start_query(self, request: QueryRequest) -> None:
        """Associate if needed and send a C-FIND/C-MOVE/C-GET request; its responses go to
        ``request.results``."""
        request.results = asyncio.Queue()
        await self._ensure_contexts(request.contexts())
        done = await self._start(request)
        error = done.exception() if done.done() else None
        if error is not None:
            raise error

    async def _send_cancel(self, request: QueryRequest) -> None:
        assoc = self._assoc
        if assoc is None or assoc.closed.done():
            return
        await assoc.send_message(
            request.context_id,
            c.CCancelRQ(message_id_being_responded_to=request.message_id),
        )

    def c_find(
        self,
        query: QueryInput = None,
        model: str = "study",
        *,
        level: str | None = None,
        priority: int = 0,
    ) -> QueryRetrieveResponses[Dataset]:
        """C-FIND (PS3.4 §C.4.1): ``async for match in client.c_find({"PatientName": "SMITH*",
        "StudyDate": "20240101-"}, level="STUDY")`` yields each match's identifier.

        ``query`` is a ``Dataset`` or a mapping of keyword/"gggg,eeee" to value (None or ""
        asks for the attribute back); ``model`` is "patient", "study", "patient-study",
        "worklist" (Modality Worklist, PS3.4 K.6: no level) or a SOP class UID; ``level`` sets
        the Query/Retrieve Level (default: the query's, else STUDY).
        A failure status raises ``CFindError``."""
        model_uid = resolve_model(model, "find")
        request = CFindRequest(
            identifier=build_query(query, level, model=model_uid),
            model=model_uid,
            priority=priority,
        )
        return self._responses(request, find_match)

    def c_move(
        self,
        query: QueryInput = None,
        destination: str = "",
        model: str = "study",
        *,
        level: str | None = None,
        priority: int = 0,
    ) -> QueryRetrieveResponses[RetrieveProgress]:
        """C-MOVE (PS3.4 §C.4.2): asks the peer to send the matching instances to the AE
        ``destination`` (which the peer must know); yields a ``RetrieveProgress`` per response,
        the last one ``final``. A failure status raises ``CMoveError`` (with the progress); a
        warning (some sub-operations failed) is the final progress, not an error."""
        if not destination:
            raise ValueError("C-MOVE needs a destination AE title")
        request = CMoveRequest(
            identifier=build_query(query, level),
            model=resolve_model(model, "move"),
            priority=priority,
            destination=destination,
        )
        return self._responses(request, progress(CMoveError))

    def c_get(
        self,
        query: QueryInput = None,
        store: StoreHandler | None = None,
        storage_contexts: Sequence[ProposedContext] | None = None,
        model: str = "study",
        *,
        level: str | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        priority: int = 0,
    ) -> QueryRetrieveResponses[RetrieveProgress]:
        """C-GET (PS3.4 §C.4.3): the peer sends the matching instances back as C-STORE-RQs on
        this association. Each goes to ``store`` (an async callable taking the received
        ``CStoreRequest`` and returning a status, a ``Response`` or None for success), or is
        saved as ``out_dir/<SOP Instance UID>.dcm``. ``storage_contexts`` default to
        ``get_storage_contexts()``; role selection gives us the SCP role on them. Instances
        stream into temporary files in ``temp_dir`` (default: the client's ``temp_dir``, else
        the system's; on the file system of ``out_dir`` saving is a rename). Yields a
        ``RetrieveProgress`` per response; a failure status raises ``CGetError``."""
        if (store is None) == (out_dir is None):
            raise ValueError("C-GET needs exactly one of store= and out_dir=")
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            store = save_into(out_dir)
        contexts = [
            ctx
            if ctx.scp_role
            else ProposedContext(ctx.abstract_syntax, list(ctx.transfer_syntaxes), False, True)
            for ctx in (get_storage_contexts() if storage_contexts is None else storage_contexts)
        ]
        request = CGetRequest(
            identifier=build_query(query, level),
            model=resolve_model(model, "get"),
            priority=priority,
            storage_contexts=contexts,
            store=store,
            temp_dir=temp_dir,
        )
        return self._responses(request, progress(CGetError))

    def _responses(
        self,
        request: QueryRequest,
        convert: Callable[[c.ResponseMessage, Dataset | None], _T | None],
    ) -> QueryRetrieveResponses[_T]:
        return QueryRetrieveResponses(
            request,
            convert,
            start=functools.partial(self._start_query, request),
            cancel=functools.partial(self._send_cancel, request),
            timeout=self.dimse_timeout,
        )


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


__all__ = [
    "QR_LEVELS",
    "QR_MODELS",
    "CEchoRequest",
    "CFindError",
    "CFindRequest",
    "CGetError",
    "CGetRequest",
    "CMoveError",
    "CMoveRequest",
    "CStoreRequest",
    "CommitmentError",
    "CommitmentReports",
    "DicomClient",
    "NActionRequest",
    "NCreateRequest",
    "NDeleteRequest",
    "NEventReportRequest",
    "NGetRequest",
    "NHandler",
    "NResult",
    "NServiceRequest",
    "NSetRequest",
    "QueryRequest",
    "QueryRetrieveError",
    "QueryRetrieveResponses",
    "Request",
    "RetrieveProgress",
    "StoreHandler",
    "build_query",
    "get_storage_contexts",
    "parse_keys",
    "parse_tag",
    "resolve_model",
    "save_into",
]
