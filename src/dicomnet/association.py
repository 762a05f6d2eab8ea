"""The asyncio face of one association: a ``BufferedProtocol`` around a sans-I/O ``Connection``.

Rules: no protocol decisions here (they live in ``connection``, ``negotiation`` and ``dimse``).
Bytes are read into the connection's preallocated buffer; data set fragments are written to their
sink synchronously inside ``buffer_updated`` (they are memoryviews valid only until the next read);
complete messages are handed to ``on_message``. Every message leaves through
``Connection.send_message`` (the state table's P-DATA request, which also frames it); this class
only writes what it returns: a data set in memory joined behind its PDU headers in one write, a
file's data set read with ``preadv`` straight behind each PDU header into a fresh buffer per PDU
(the command set rides in the first one), one write per PDU. Every socket gets TCP_NODELAY. Both
the server and the client use this class.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from dicomnet.connection import (
    Aborted,
    AssociateAccepted,
    AssociateRejected,
    AssociateRequested,
    Closed,
    Connection,
    ConnectionEvent,
    InvalidCommand,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from dicomnet.dataset import FileInfo
from dicomnet.dimse.commands import Message
from dicomnet.dimse.fragments import CommandReceived, DatasetFragment
from dicomnet.errors import AssociationAborted, DicomNetError, LocalProtocolError
from dicomnet.negotiation import DEFAULT_MAX_PDU_LENGTH, Negotiated, NegotiatedContext
from dicomnet.pdu import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    AbortReason,
    AbortSource,
)
from dicomnet.security.tls import PeerCertificate, TLSSession, peer_certificate, tls_session
from dicomnet.service import AssociationInfo
from dicomnet.sinks import DatasetSink

log = logging.getLogger("dicomnet.association")

_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian


def _read_pdu(fd: int, info: FileInfo, head: bytes, start: int, stop: int) -> bytearray:
    """``head`` (the PDU's header, after the command set's PDUs in the first one) and bytes
    ``[start, stop)`` of the file's data set read straight behind it. A fresh buffer per PDU: a
    transport may keep a reference to what it could not send yet, so a reused buffer could be
    overwritten before it leaves."""
    buf = bytearray(len(head) + stop - start)
    buf[: len(head)] = head
    want = min(stop, info.dataset_length) - start  # short by the pad byte, which stays 0
    offset = info.offset + start
    view = memoryview(buf)[len(head) : len(head) + want]
    got = os.preadv(fd, [view], offset) if want > 0 else 0
    if got != want:
        raise DicomNetError(
            f"{info.path}: file shrank while being sent (read {got} of {want} bytes at "
            f"offset {offset})"
        )
    return buf


@dataclass(slots=True, eq=False)
class Incoming:
    """A complete received message: the command, its context, and its data set's sink (None
    when the message has no data set). ``error`` is set when the data set could not be kept
    (a full disk, an oversized identifier): the service answers with a failure status."""

    message: Message
    context: NegotiatedContext
    sink: DatasetSink | None = None
    error: BaseException | None = None


@dataclass(slots=True, eq=False)
class IncomingInvalid:
    """A command set we could not use, with the message ID to answer it."""

    event: InvalidCommand
    context: NegotiatedContext | None


SinkFactory = Callable[[Message, NegotiatedContext], DatasetSink]


class _Adapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        # The prefix holds the peer's AE titles: a "%" in one must not act as a format directive.
        prefix = str(self.extra["association"] if self.extra else "").replace("%", "%%")
        return f"[{prefix}] {msg}", kwargs


class Association(asyncio.BufferedProtocol):
    """One association over one transport, for either role."""

    def __init__(
        self,
        role: Role,
        info: AssociationInfo,
        *,
        artim_timeout: float = 30.0,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        on_connected: Callable[[Association], None] | None = None,
    ) -> None:
        """``on_connected`` is called with this association once its transport is connected
        (at the end of ``connection_made``), e.g. for a server to start serving it."""
        self.role = role
        self.info = info
        self.conn = Connection(role, artim_timeout=artim_timeout, max_pdu_length=max_pdu_length)
        self.max_pdu_length = max_pdu_length
        self.log = _Adapter(log, {"association": info})
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.negotiated: Negotiated | None = None
        self.on_message: Callable[[Incoming | IncomingInvalid], None] = lambda m: None
        self.on_release: Callable[[], None] = lambda: None
        self.on_end: Callable[[Aborted | None], None] = lambda a: None
        self.sink_factory: SinkFactory | None = None
        self._current: Incoming | None = None
        self._associate_waiter: asyncio.Future[A_ASSOCIATE_RQ | A_ASSOCIATE_AC | A_ASSOCIATE_RJ] = (
            self.loop.create_future()
        )
        self._release_waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[Aborted | None] = self.loop.create_future()
        self._aborted: Aborted | None = None
        self._send_lock = asyncio.Lock()
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self.last_activity = self.loop.time()
        self._on_connected = on_connected

    # -- asyncio.BufferedProtocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.transport.set_write_buffer_limits(high=4 << 20, low=1 << 20)
        if self.role is Role.ACCEPTOR:
            self.conn.connection_made(self.loop.time())
            self._update_timer()
        if self._on_connected is not None:
            self._on_connected(self)

    @property
    def peer_certificate(self) -> PeerCertificate | None:
        """The peer's verified TLS certificate (None on a plain transport, or unverified)."""
        return peer_certificate(self.transport) if self.transport is not None else None

    @property
    def tls(self) -> TLSSession | None:
        """The TLS version and cipher of the transport (None on a plain one)."""
        return tls_session(self.transport) if self.transport is not None else None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.buffer_updated(nbytes)
        now = self.loop.time()
        before = self.conn.pdus_received
        events = self.conn.next_events(now)
        if self.conn.pdus_received != before:
            # Activity is a complete PDU, not a byte: a peer that trickles one byte at a time
            # into a PDU it never finishes still reaches the idle limit.
            self.last_activity = now
        self._dispatch(events)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pending = self.conn.reader.pending
        if pending and not self.conn.closed:
            self.log.warning(
                "connection closed with %d bytes of an incomplete PDU unread (truncated PDU)",
                pending,
            )
        self._dispatch(self.conn.connection_lost(self.loop.time()))
        self._finish(None if self._aborted is None else self._aborted)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(AssociationAborted("connection lost"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._drain_waiter = None

    # -- events ---------------------------------------------------------------------------------

    def _dispatch(self, events: list[ConnectionEvent]) -> None:
        for event in events:
            kind = type(event)
            if kind is DatasetFragment:
                self._fragment(event)  # type: ignore[arg-type]
            elif kind is CommandReceived:
                self._command(event)  # type: ignore[arg-type]
            else:
                self._other(event)
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))
        if self.conn.must_close and self.transport is not None:
            self.transport.close()
        self._update_timer()

    def _command(self, event: CommandReceived) -> None:
        assert self.negotiated is not None
        ctx = self.negotiated.contexts[event.context_id]
        message = event.message
        if not message.has_dataset:
            self.on_message(Incoming(message, ctx))
            return
        incoming = Incoming(message, ctx)
        try:
            assert self.sink_factory is not None
            incoming.sink = self.sink_factory(message, ctx)
        except Exception as exc:  # e.g. no space for the temporary file
            self.log.warning("cannot receive the data set of %s: %s", type(message).__name__, exc)
            incoming.error = exc
        self._current = incoming

    def _fragment(self, event: DatasetFragment) -> None:
        incoming = self._current
        if incoming is None:  # the reassembler guarantees a command came first
            return
        sink = incoming.sink
        if sink is not None and incoming.error is None:
            try:
                sink.write(event.data)
            except Exception as exc:  # ENOSPC, EIO, size limit
                self.log.warning("writing the received data set failed: %s", exc)
                incoming.error = exc
                sink.abort()
        if event.is_last:
            self._current = None
            if sink is not None and incoming.error is None:
                try:
                    sink.finish()
                except Exception as exc:
                    self.log.warning("finishing the received data set failed: %s", exc)
                    incoming.error = exc
                    sink.abort()
            self.on_message(incoming)

    def _other(self, event: ConnectionEvent) -> None:
        if isinstance(event, (AssociateRequested, AssociateAccepted, AssociateRejected)):
            self._resolve_associate(event.pdu)
        elif isinstance(event, InvalidCommand):
            ctx = self.negotiated.contexts.get(event.context_id) if self.negotiated else None
            self.on_message(IncomingInvalid(event, ctx))
        elif isinstance(event, ReleaseRequested):
            self.on_release()
        elif isinstance(event, ReleaseConfirmed):
            if self._release_waiter is not None and not self._release_waiter.done():
                self._release_waiter.set_result(None)
        elif isinstance(event, Aborted):
            self._aborted = event
            if event.by_peer:
                self.log.info("association aborted: %s", event.message)
            else:
                self.log.warning("association aborted by us: %s", event.message)
            self._drop_current()
            self._fail_waiters(event)
        elif isinstance(event, Closed) and self.transport is not None:
            self.transport.close()

    def _resolve_associate(self, pdu: A_ASSOCIATE_RQ | A_ASSOCIATE_AC | A_ASSOCIATE_RJ) -> None:
        if not self._associate_waiter.done():
            self._associate_waiter.set_result(pdu)

    def _drop_current(self) -> None:
        if self._current is not None and self._current.sink is not None:
            self._current.sink.abort()
        self._current = None

    def _fail_waiters(self, event: Aborted | None) -> None:
        exc = AssociationAborted(
            event.message if event else "connection closed",
            event.source if event else None,
            event.reason if event else None,
        )
        for fut in (self._associate_waiter, self._release_waiter):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved

    def _finish(self, aborted: Aborted | None) -> None:
        self._drop_current()
        self._fail_waiters(aborted)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed.done():
            self.closed.set_result(aborted)
            self.on_end(aborted)

    def _update_timer(self) -> None:
        deadline = self.conn.deadline
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._timer_deadline = None
        events = self.conn.timer_check(self.loop.time())
        if self.conn.must_close or not events:
            self.log.info("ARTIM timer expired; closing the connection")
        self._dispatch(events)
        if self.transport is not None and self.conn.must_close:
            self.transport.close()

    # -- establishment ----------------------------------------------------------------------------

    async def wait_associate(self) -> A_ASSOCIATE_RQ | A_ASSOCIATE_AC | A_ASSOCIATE_RJ:
        return await self._associate_waiter

    def send_request(self, rq: A_ASSOCIATE_RQ) -> None:
        self._write(self.conn.request(rq))

    def send_accept(self, ac: A_ASSOCIATE_AC, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        self._write(self.conn.accept(ac, set(negotiated.contexts)))

    def set_negotiated(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        self.conn.accepted_contexts = set(negotiated.contexts)

    def send_reject(self, rj: A_ASSOCIATE_RJ) -> None:
        self._write(self.conn.reject(rj, self.loop.time()))
        self._update_timer()

    # -- release and abort --------------------------------------------------------------------------

    async def release(self, timeout: float | None = 30.0) -> None:
        """Send A-RELEASE-RQ and wait for the reply and the close."""
        if self.closed.done():
            return
        async with self._send_lock:
            self._release_waiter = self.loop.create_future()
            self._write(self.conn.release_request())
        try:
            await asyncio.wait_for(asyncio.shield(self._release_waiter), timeout)
        except TimeoutError:
            self.log.warning("no A-RELEASE-RP within %s s; aborting", timeout)
            self.abort()
            return
        if self.transport is not None:
            self.transport.close()
        await self.closed

    def send_release_response(self) -> None:
        try:
            self._write(self.conn.release_response(self.loop.time()))
        except LocalProtocolError as exc:
            self.log.warning("cannot answer the release request: %s", exc)
        self._update_timer()

    def abort(
        self, source: int = AbortSource.SERVICE_USER, reason: int = AbortReason.NOT_SPECIFIED
    ) -> None:
        """Send A-ABORT and close the transport (AA-1 then, without waiting, AA-2)."""
        if self.transport is None or self.transport.is_closing():
            return
        data = self.conn.abort(source, reason, self.loop.time())
        if data:
            self.transport.write(data)
        self._aborted = Aborted(source, reason, by_peer=False, message="aborted locally")
        self.transport.close()

    # -- sending ----------------------------------------------------------------------------------

    def _write(self, data: bytes | bytearray) -> None:
        if self.transport is None or self.transport.is_closing():
            raise AssociationAborted("the connection is closed")
        self.transport.write(data)

    async def _drain(self) -> None:
        if self._paused:
            if self.transport is None or self.transport.is_closing():
                raise AssociationAborted("the connection is closed")
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    @property
    def _peer_max_pdu_length(self) -> int:
        if self.negotiated is None:
            raise LocalProtocolError("cannot send a message: no association was negotiated")
        return self.negotiated.peer_max_pdu_length

    def send_message_now(self, context_id: int, message: Message) -> bool:
        """Send a message without a data set at once, from a callback, when nothing else is
        being sent; False when it has to wait its turn (then use ``send_message``)."""
        if self._send_lock.locked() or self._paused or self.closed.done():
            return False
        framed = self.conn.send_message(
            context_id, message.encode(), None, self._peer_max_pdu_length
        )
        self._write(framed.command)
        return True

    async def send_message(
        self,
        context_id: int,
        message: Message,
        dataset: bytes | FileInfo | None = None,
    ) -> None:
        """Send a DIMSE message: its command set and, when given, its data set from memory or
        streamed from a file's data set."""
        if self.closed.done():
            raise AssociationAborted("the association has ended")
        command = message.encode()
        async with self._send_lock:
            if not isinstance(dataset, FileInfo):
                length = None if dataset is None else len(dataset)
                framed = self.conn.send_message(
                    context_id, command, length, self._peer_max_pdu_length
                )
                # One write for the whole message: the data set's slices are joined behind
                # their headers, the only copy.
                self._write(
                    framed.command if dataset is None else b"".join(framed.with_data(dataset))
                )
                await self._drain()
                return
            # A file's data set is read behind each PDU header, one write per PDU; the command
            # set rides in the first (a small file goes out in one write, one TCP segment).
            # PS3.5 §A.5: an odd-length deflated bit stream gets one trailing NUL byte (files
            # that lack it exist; strict peers such as DCMTK abort on an odd fragment length).
            pad = dataset.dataset_length % 2 if dataset.transfer_syntax == _DEFLATED else 0
            fd = os.open(dataset.path, os.O_RDONLY)
            try:
                framed = self.conn.send_message(
                    context_id, command, dataset.dataset_length + pad, self._peer_max_pdu_length
                )
                head = framed.command
                for header, start, stop in framed.dataset:
                    self._write(_read_pdu(fd, dataset, head + header, start, stop))
                    head = b""
                    if self._paused:
                        await self._drain()
            finally:
                os.close(fd)
