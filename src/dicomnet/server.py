"""``DicomServer``: listens, and runs one ``Service`` per association (fo-dicom's ``DicomServer``).

Rules: one event loop, one task per association; a handler's failure fails its request (a failure
status), never the server; a peer that breaks the protocol is aborted and logged, and the server
goes on. Limits: the number of associations at once (beyond it: A-ASSOCIATE-RJ transient, local
limit exceeded), ARTIM, the idle time of an established association, and the time a handler may
take.

Each association's runner owns its life: negotiation (the provider's checks are
``negotiation.check_request``), the request queue and the asynchronous operations window, the
idle limit, release and abort, and the requests sent to the peer: the C-STORE sub-operations
of C-GET and the service's own (``Service.peer``, ``peer.PeerRequests``), with the association's
message IDs (``dimse.ids.MessageIds``). What each request means, its handler and
its response, is ``dispatch.RequestDispatcher``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import ssl as _ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from dicomnet.association import Association, Incoming, IncomingInvalid
from dicomnet.connection import Aborted, Role
from dicomnet.dimse.commands import (
    CCancelRQ,
    CEchoRQ,
    RequestMessage,
    ResponseMessage,
    as_message,
)
from dicomnet.dimse.ids import MessageIds
from dicomnet.dimse.status import RetrieveStatus, Status
from dicomnet.dispatch import RequestDispatcher
from dicomnet.errors import AssociationAborted, DicomNetError, reject_description
from dicomnet.fsm import State
from dicomnet.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
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
    RejectResult,
    RejectSource,
)
from dicomnet.peer import PeerRequests
from dicomnet.requests import CStoreRequest
from dicomnet.security.decisions import Decision
from dicomnet.security.guard import ServerSecurity
from dicomnet.security.tls import TLSListener
from dicomnet.service import AssociationInfo, Service
from dicomnet.sinks import FileSink, close_temp_pools, make_sink

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


# What the runner's queue carries besides requests: the association's life events, in order
# with the requests received before them.


@dataclass(frozen=True, slots=True)
class PeerReleased:
    """The peer sent A-RELEASE-RQ: finish the running requests, then answer it."""


@dataclass(frozen=True, slots=True)
class AssociationEnded:
    """Aborted (``aborted`` says by whom and why) or the connection closed."""

    aborted: Aborted | None


@dataclass(frozen=True, slots=True)
class IdleExpired:
    """No PDU for the idle limit: time to check, and abort if still quiet."""


Control = PeerReleased | AssociationEnded | IdleExpired


class _AssociationRunner:
    """Runs one association on the server side: negotiation, then the request loop."""

    def __init__(
        self, server: DicomServer, assoc: Association, admission: Decision | None = None
    ) -> None:
        self.server = server
        self.assoc = assoc
        # The security policy's answer to this connection's address (per-address limit).
        self.admission = admission
        self.queue: asyncio.Queue[Incoming | IncomingInvalid | Control] = asyncio.Queue()
        self.service: Service | None = None
        self.dispatcher: RequestDispatcher | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # C-STORE sub-operations of C-GET we sent and await the response of, by message ID.
        self.sub_operations: dict[int, asyncio.Future[ResponseMessage]] = {}
        self.message_ids = MessageIds()
        # Requests the service sends to the peer (N-EVENT-REPORT...), IDs shared with the above;
        # a response is awaited for the DIMSE timeout, 30 s when there is none.
        self.peer = PeerRequests(
            assoc, self.message_ids, self.sub_operations, timeout=server.limits.dimse_timeout or 30
        )
        self._idle_timer: asyncio.TimerHandle | None = None
        self.busy = False  # a request is being handled (asynchronous operations window of 1)
        assoc.on_message = self.on_message
        assoc.on_release = lambda: self.queue.put_nowait(PeerReleased())
        assoc.on_end = self.on_end

    def on_message(self, item: Incoming | IncomingInvalid) -> None:
        """Requests queue up for the service; C-CANCEL and the responses to our own
        sub-operations are handled at once, even while a handler is busy."""
        dispatcher = self.dispatcher
        assert dispatcher is not None  # no message arrives before the association is accepted
        if isinstance(item, Incoming):
            message = item.message
            if isinstance(message, CCancelRQ):
                dispatcher.cancel(message)
                return
            if isinstance(message, ResponseMessage):
                self._sub_operation_answered(item, message)
                return
            if isinstance(message, CEchoRQ) and self._echo_now(item):
                return
            if isinstance(message, RequestMessage):
                dispatcher.received(message)
        self.queue.put_nowait(item)

    def _sub_operation_answered(self, item: Incoming, message: ResponseMessage) -> None:
        if self.peer.answered(item):
            return
        if isinstance(item.sink, FileSink):
            item.sink.discard()
        responded = message.message_id_being_responded_to
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

    def _echo_now(self, item: Incoming) -> bool:
        """Answer a C-ECHO in the receive callback when the service's ``on_c_echo`` is a plain
        function and nothing is queued or running before it: no task switch per echo."""
        if self.busy or not self.queue.empty():
            return False
        assert self.dispatcher is not None
        answer = self.dispatcher.echo_now(item)
        if answer is None:
            return False
        if not isinstance(answer, ResponseMessage):  # a plain function returned an awaitable
            self._spawn(self._reply_later(item, answer))
            return True
        try:
            if not self.assoc.send_message_now(item.context.context_id, as_message(answer)):
                self._spawn(self._send(item, answer))
        except DicomNetError as exc:
            log.warning("[%s] %s", self.assoc.info, exc)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reply_later(self, item: Incoming, pending: Any) -> None:
        await self._send(item, await pending)

    async def _send(self, item: Incoming, response: ResponseMessage) -> None:
        try:
            await self.assoc.send_message(item.context.context_id, as_message(response))
        except DicomNetError as exc:
            log.warning("[%s] %s", self.assoc.info, exc)

    def on_end(self, aborted: Aborted | None) -> None:
        self.peer.ended()
        for future in self.sub_operations.values():
            if not future.done():
                future.set_exception(AssociationAborted("the association ended"))
        self.sub_operations.clear()
        self.queue.put_nowait(AssociationEnded(aborted))

    # -- the association's life -----------------------------------------------------------------

    async def run(self) -> None:
        assoc = self.assoc
        info = assoc.info
        try:
            try:
                pdu = await assoc.wait_associate()
            except AssociationAborted as exc:
                log.info("[%s] connection ended before association: %s", info, exc)
                security = self.server.security
                if security is not None and exc.source == AbortSource.SERVICE_PROVIDER:
                    # We aborted: the peer sent something that is no association request
                    # (a TLS ClientHello on the plain port, garbage): a node that did not
                    # say who it is.
                    security.unidentified(info.peer_host, f"no association request: {exc}")
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
            if self.server.security is not None:
                self.server.security.ended(info, self.admission, self.dispatcher is not None)

    async def negotiate(self, rq: A_ASSOCIATE_RQ) -> bool:
        assoc, info, server = self.assoc, self.assoc.info, self.server
        security = server.security
        rejection = check_request(
            rq, active=server.active, max_associations=server.limits.max_associations
        )
        if rejection is not None:
            log.warning(
                "[%s] rejecting association: %s (%s)", info, _rj_text(rejection.pdu), rejection.why
            )
            assoc.send_reject(rejection.pdu)
            if security is not None:
                security.rejected(info, rejection.why, rejection.pdu)
            return False
        request = request_from_pdu(rq, info.peer_host, info.peer_port)
        if security is not None:
            # The per-address limit, the user identity, the permission to associate (in this
            # order: the cheap count first, scrypt only for a peer within its limit).
            admission = self.admission
            answer = None
            if admission is not None and not admission.allowed:
                assert admission.reject is not None
                answer = admission.reject
                security.refuse(info, admission.reason, answer)
            else:
                answer = await security.authorize(info, request)
            if answer is not None:
                assoc.send_reject(answer.to_pdu())
                return False
        service = self.service = server.service_factory(info)
        # The service's window holds whatever its on_association_request does, unless that
        # handler sets the request's own value (PS3.7 D.3.3.3).
        request.max_operations_performed = service.max_operations_performed
        try:
            decision = await service.on_association_request(request)
        except Exception:
            log.exception("[%s] on_association_request failed; rejecting", info)
            decision = request.reject(RejectResult.TRANSIENT, RejectSource.SERVICE_USER)
        if assoc.closed.done() or assoc.conn.state is not State.STA3:
            # The peer aborted (or sent a PDU that made us abort, AA-8 in Sta3) while the
            # service decided: there is nobody to answer any more.
            log.info("[%s] association ended before it was answered", info)
            return False
        if not decision.accepted:
            rj = build_reject(decision)
            log.info("[%s] association rejected: %s", info, _rj_text(rj))
            assoc.send_reject(rj)
            if security is not None:
                security.rejected(info, "rejected by the service", rj)
            return False
        if security is not None:
            security.restrict_contexts(info, request)
        ac, negotiated = build_accept(rq, request, server.limits.max_pdu_length)
        limits = server.limits
        assoc.sink_factory = partial(
            make_sink,
            temp_dir=service.temp_dir,
            fsync=service.fsync,
            memory_limit=limits.max_dataset_in_memory,
            source_ae_title=info.calling_ae_title,
        )
        guard = security.guard(info) if security is not None else None
        if guard is not None:
            assoc.sink_factory = guard.sink_factory(assoc.sink_factory)
        self.dispatcher = RequestDispatcher(
            service,
            info,
            assoc.send_message,
            store_sub_operation=self.store_sub_operation,
            abort=partial(
                assoc.abort, AbortSource.SERVICE_PROVIDER, AbortReason.INVALID_PDU_PARAMETER_VALUE
            ),
            dimse_timeout=limits.dimse_timeout,
            guard=guard,
        )
        service.peer = self.peer
        assoc.send_accept(ac, negotiated)
        if security is not None:
            security.accepted(info)
        log.info(
            "[%s] association accepted: %d of %d presentation contexts, peer max PDU %s",
            info,
            len(negotiated.contexts),
            len(rq.presentation_contexts),
            negotiated.peer_max_pdu_length or "unlimited",
        )
        return True

    async def serve(self) -> None:
        assoc, dispatcher = self.assoc, self.dispatcher
        assert dispatcher is not None and assoc.negotiated is not None
        window = assoc.negotiated.max_operations_performed or 1 << 16
        slots = asyncio.Semaphore(window)
        idle = self.server.limits.idle_timeout
        # The idle limit is a timer that queues a check, so waiting for a message costs no
        # task or timer of its own (this loop runs once per message).
        if idle:
            self._idle_timer = assoc.loop.call_later(idle, self._idle_check, idle)
        try:
            await self._serve_loop(dispatcher, window, slots)
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()

    def _idle_check(self, idle: float) -> None:
        quiet = self.assoc.loop.time() - self.assoc.last_activity
        if quiet >= idle:
            self.queue.put_nowait(IdleExpired())
            self._idle_timer = None
        else:
            self._idle_timer = self.assoc.loop.call_later(idle - quiet, self._idle_check, idle)

    async def _serve_loop(
        self, dispatcher: RequestDispatcher, window: int, slots: asyncio.Semaphore
    ) -> None:
        assoc, service = self.assoc, dispatcher.service
        idle = self.server.limits.idle_timeout
        while True:
            item = await self.queue.get()
            if isinstance(item, IdleExpired):
                assert idle is not None
                if assoc.loop.time() - assoc.last_activity < idle:
                    self._idle_check(idle)
                    continue
                log.warning("[%s] idle for %s s; aborting", assoc.info, idle)
                assoc.abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
                await service.on_abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
                return
            if isinstance(item, PeerReleased):
                if self.tasks:
                    await asyncio.gather(*self.tasks, return_exceptions=True)
                try:
                    await service.on_association_release()
                finally:
                    assoc.send_release_response()
                log.info("[%s] association released", assoc.info)
                await assoc.closed
                return
            if isinstance(item, AssociationEnded):
                aborted = item.aborted
                await service.on_abort(
                    aborted.source if aborted else None, aborted.reason if aborted else None
                )
                return
            if window == 1:
                self.busy = True
                try:
                    await dispatcher.handle(item)
                finally:
                    self.busy = False
            else:
                await slots.acquire()
                task = asyncio.create_task(dispatcher.handle(item))
                self.tasks.add(task)
                task.add_done_callback(self._task_done(slots))

    def _task_done(self, slots: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            slots.release()

        return done

    async def store_sub_operation(self, path: str | os.PathLike[str]) -> int:
        """C-GET: send the Part 10 file ``path`` to the requestor as a C-STORE-RQ on this
        association and return the status of its C-STORE-RSP (PS3.4 §C.4.3.1.2)."""
        assoc = self.assoc
        negotiated = assoc.negotiated
        assert negotiated is not None
        try:
            request = CStoreRequest.from_file(path)
        except (OSError, DicomNetError) as exc:
            log.warning("[%s] C-GET sub-operation: cannot read %s: %s", assoc.info, path, exc)
            return RetrieveStatus.OUT_OF_RESOURCES_SUB_OPERATIONS  # PS3.4 C.4.3.1.3.1
        try:
            # Among every context the peer took the SCP role on: the file's own syntax, else
            # converted to one it accepted (off the event loop, issue 10).
            await request.prepare(negotiated)
        except (DicomNetError, OSError) as exc:
            log.warning(
                "[%s] C-GET sub-operation %s not sent: %s",
                assoc.info,
                request.sop_instance_uid,
                exc,
            )
            request.cleanup()
            return Status.SOP_CLASS_NOT_SUPPORTED
        # IDs cycle 1..65535 and skip the requests to the peer still waiting for their response.
        message_id = self.message_ids.allocate(self.peer.in_use)
        future: asyncio.Future[ResponseMessage] = assoc.loop.create_future()
        self.sub_operations[message_id] = future
        request.message_id = message_id
        try:
            ctx, rq, payload = request.outgoing(negotiated)
            await assoc.send_message(ctx.context_id, rq, payload)
            timeout = self.server.limits.dimse_timeout
            rsp = await (asyncio.wait_for(future, timeout) if timeout else future)
        finally:
            self.sub_operations.pop(message_id, None)
            request.cleanup()
        return rsp.status


def _rj_text(rj: A_ASSOCIATE_RJ) -> str:
    return reject_description(rj.result, rj.source, rj.reason)


class DicomServer:
    """Listens for associations and runs ``service_factory(info)`` for each.

    Use as ``async with DicomServer(MyService, port=11112) as server: await server.serve_forever()``.
    ``port=0`` picks a free port (see ``server.port``).

    TLS (PS3.15 Annex B): with ``ssl`` (an ``ssl.SSLContext``, e.g.
    ``security.tls.server_context``) the server speaks TLS on ``port``, or, with ``tls_port``,
    plain DICOM on ``port`` and TLS on ``tls_port`` (2762 is the registered one). A handshake
    must end within ``ssl_handshake_timeout`` (default: the ARTIM timeout); a peer whose
    certificate does not verify never reaches an association, and every failed handshake is
    logged (and audited, with ``security``). Handlers see the peer's verified certificate as
    ``info.peer_certificate``. ``security`` (``security.guard.ServerSecurity``) applies users,
    permissions, per-address limits, resource limits and the audit trail.
    """

    def __init__(
        self,
        service_factory: ServiceFactory,
        host: str = "127.0.0.1",
        port: int = 11112,
        *,
        limits: ServerLimits | None = None,
        ssl: _ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
        tls_port: int | None = None,
        tls_sock: socket.socket | None = None,
        ssl_handshake_timeout: float | None = None,
        security: ServerSecurity | None = None,
    ) -> None:
        if (tls_port is not None or tls_sock is not None) and ssl is None:
            raise ValueError("a TLS port needs an ssl context (ssl=...)")
        self.service_factory = service_factory
        self.host = host
        self.port = port
        self.limits = limits or ServerLimits()
        self.ssl = ssl
        self.tls_port = tls_port
        self.ssl_handshake_timeout = ssl_handshake_timeout or self.limits.artim_timeout
        self.security = security
        # A listening socket made elsewhere: ``dicomnet serve --workers N`` binds it once and
        # forks, and every process accepts from it (like storescp --fork, but pre-started).
        self.sock = sock
        self.tls_sock = tls_sock
        self.active = 0
        self._server: asyncio.base_events.Server | None = None
        self._tls_listener: TLSListener | None = None
        self._runners: set[asyncio.Task[None]] = set()
        self._associations: set[Association] = set()
        self.associations_served = 0
        self.tls_failures = 0

    async def start(self) -> None:
        both = self.tls_port is not None or self.tls_sock is not None
        if self.ssl is not None and not both:  # TLS only, on ``port``
            self._tls_listener = self._listen_tls(self.sock, self.port)
            self.port = self._tls_listener.port
            log.info("listening on %s:%d (TLS)", self.host, self.port)
            return
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(
                self._protocol_factory, sock=self.sock, backlog=256
            )
        else:
            self._server = await loop.create_server(
                self._protocol_factory, self.host, self.port, reuse_address=True, backlog=256
            )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d", self.host, self.port)
        if both:
            self._tls_listener = self._listen_tls(self.tls_sock, self.tls_port or 0)
            self.tls_port = self._tls_listener.port
            log.info("listening on %s:%d (TLS)", self.host, self.tls_port)

    def _listen_tls(self, sock: socket.socket | None, port: int) -> TLSListener:
        """A TLS port: each connection is upgraded before it reaches an association
        (``TLSListener``: the per-address limit before the handshake, every failure logged and
        audited)."""
        assert self.ssl is not None
        if sock is None:
            family = socket.getaddrinfo(self.host, port, type=socket.SOCK_STREAM)[0][0]
            sock = socket.create_server((self.host, port), family=family, backlog=256)
        callbacks = self.security.tls_callbacks() if self.security is not None else {}
        on_failure = callbacks.get("on_failure")

        def failed(failure: Any) -> None:
            self.tls_failures += 1
            if on_failure is not None:
                on_failure(failure)

        callbacks["on_failure"] = failed
        listener = TLSListener(
            sock, self._protocol_factory, self.ssl, self.ssl_handshake_timeout, **callbacks
        )
        listener.start()
        return listener

    def _protocol_factory(self) -> Association:
        info = AssociationInfo(next(_ids), "", 0)
        assoc = Association(
            Role.ACCEPTOR,
            info,
            artim_timeout=self.limits.artim_timeout,
            max_pdu_length=self.limits.max_pdu_length,
            on_connected=self._on_connected,
        )
        return assoc

    def _on_connected(self, assoc: Association) -> None:
        """A connection is up: note the peer's address and start its runner."""
        transport = assoc.transport
        peer = (transport.get_extra_info("peername") if transport else None) or ("", 0)
        info = assoc.info
        info.peer_host, info.peer_port = str(peer[0]), int(peer[1])
        if transport is not None and transport.get_extra_info("ssl_object") is not None:
            info.peer_certificate, info.tls = assoc.peer_certificate, assoc.tls
        admission = None
        if self.security is not None:
            admission = self.security.connected(info.peer_host, info.peer_port)
        self.active += 1
        self._associations.add(assoc)
        runner = _AssociationRunner(self, assoc, admission)
        task = asyncio.get_running_loop().create_task(runner.run())
        self._runners.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._runners.discard(t)
            self._associations.discard(assoc)
            self.active -= 1
            self.associations_served += 1

        task.add_done_callback(done)

    async def serve_forever(self) -> None:
        if self._server is None and self._tls_listener is None:
            await self.start()
        if self._server is not None:
            await self._server.serve_forever()
        else:  # TLS only: the listener's task accepts; wait until cancelled
            await asyncio.get_running_loop().create_future()

    async def close(self, *, abort_after: float = 10.0) -> None:
        """Stop listening; let running associations finish for ``abort_after`` seconds, then
        abort them (their partial files are removed by the sinks)."""
        if self._server is not None:
            self._server.close()
        if self._tls_listener is not None:
            self._tls_listener.close()  # and the handshakes still running
        if self._runners:
            _done, pending = await asyncio.wait(set(self._runners), timeout=abort_after)
            if pending:
                for assoc in list(self._associations):
                    assoc.abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
                await asyncio.wait(pending, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self._tls_listener is not None:
            await self._tls_listener.wait_closed()
        self._server, self._tls_listener = None, None
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


__all__ = [
    "AssociationEnded",
    "Control",
    "DicomServer",
    "IdleExpired",
    "PeerReleased",
    "ServerLimits",
    "ServiceFactory",
]
