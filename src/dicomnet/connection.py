"""The sans-I/O association (PS3.8 §9.2, PS3.7 §9): bytes in, events out; primitives in, bytes out.

Rules: no sockets, no asyncio, no clocks of its own (callers pass ``now``). Every PDU received and
every primitive requested goes through the PS3.8 state machine in ``dicomnet.fsm``
(``Machine.handle``); the actions the table names are carried out here, one small method per
action, found by name in ``_ACTIONS``. A peer that breaks the protocol gets an A-ABORT (queued in
``data_to_send()``) and an ``Aborted`` event, never an exception out of ``next_events()``. A local
primitive asked for in the wrong state raises ``LocalProtocolError``.

The one way out for bytes: each method for a local primitive returns what to send, and a DIMSE
message leaves only through ``send_message``, which fires the P-DATA request (Evt9: DT-1 in Sta6,
AR-7 in Sta8) once per message and returns the message framed as PDU headers with the data set
passed through (``dimse.fragments.FramedMessage``), so a file goes from disk to socket without
a copy here.

Received P-DATA values are passed on as memoryviews into the reader's buffer: an event's data is
valid only until the next call to ``get_buffer()`` / ``receive_data()``. One exception to "every
PDU through the table" is written out: a P-DATA-TF in Sta6 (DT-2, the receive hot path) skips the
look-up, since the table's answer there is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from dicomnet import fsm
from dicomnet.dimse.fragments import (
    CommandReceived,
    DatasetFragment,
    FramedMessage,
    Reassembler,
    frame_message,
)
from dicomnet.errors import DIMSEError, PDUError
from dicomnet.fsm import Event as Evt
from dicomnet.fsm import State
from dicomnet.negotiation import DEFAULT_MAX_PDU_LENGTH
from dicomnet.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
    PDU,
    PDV,
    AbortReason,
    AbortSource,
    PDUReader,
    encode,
)

log = logging.getLogger("dicomnet.connection")


class Role(Enum):
    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


# --- events handed to the asyncio layer ----------------------------------------------------------


@dataclass(slots=True)
class AssociateRequested:
    """An acceptable A-ASSOCIATE-RQ arrived (Sta3): answer with ``accept()`` or ``reject()``."""

    pdu: A_ASSOCIATE_RQ


@dataclass(slots=True)
class AssociateAccepted:
    pdu: A_ASSOCIATE_AC


@dataclass(slots=True)
class AssociateRejected:
    pdu: A_ASSOCIATE_RJ


@dataclass(slots=True)
class InvalidCommand:
    """A command set that could not be used (missing or malformed elements). When
    ``message_id`` is known the service answers with a failure status; the data set that may
    follow is discarded."""

    context_id: int
    error: DIMSEError
    message_id: int | None
    command_field: int | None


@dataclass(slots=True)
class ReleaseRequested:
    """The peer asked to release (Sta8, or a collision in Sta9/Sta10)."""


@dataclass(slots=True)
class ReleaseConfirmed:
    """Our A-RELEASE-RQ was answered; the transport is to be closed."""


@dataclass(slots=True)
class Aborted:
    """The association ended abnormally: an A-ABORT received (``by_peer``), one we sent because
    the peer broke the protocol, or the transport lost (A-P-ABORT)."""

    source: int | None
    reason: int | None
    by_peer: bool
    message: str


@dataclass(slots=True)
class Closed:
    """The transport is to be closed, or was closed; nothing else will happen."""


ConnectionEvent = (
    AssociateRequested
    | AssociateAccepted
    | AssociateRejected
    | CommandReceived
    | DatasetFragment
    | InvalidCommand
    | ReleaseRequested
    | ReleaseConfirmed
    | Aborted
    | Closed
)

_PDU_EVENTS: dict[type, Evt] = {
    A_ASSOCIATE_AC: Evt.EVT3,
    A_ASSOCIATE_RJ: Evt.EVT4,
    A_ASSOCIATE_RQ: Evt.EVT6,
    P_DATA_TF: Evt.EVT10,
    A_RELEASE_RQ: Evt.EVT12,
    A_RELEASE_RP: Evt.EVT13,
    A_ABORT: Evt.EVT16,
}


class Connection:
    """One association's protocol state, for either role."""

    def __init__(
        self,
        role: Role,
        *,
        artim_timeout: float = 30.0,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        max_command_length: int = 1 << 16,
    ) -> None:
        self.role = role
        self._requestor = role is Role.REQUESTOR  # resolves AR-8 (fsm.next_state)
        self.machine = fsm.Machine()
        self.artim = fsm.Artim(artim_timeout)
        # Accept PDUs up to what we advertise, with slack for peers that count the header.
        limit = 0 if max_pdu_length == 0 else max_pdu_length + 64
        self.reader = PDUReader(max_pdu_length=limit)
        self.reassembler = Reassembler(max_command_length=max_command_length)
        self.accepted_contexts: set[int] | None = None
        self._outbox: list[bytes] = []
        self._events: list[ConnectionEvent] = []
        self._now = 0.0
        self.must_close = False
        self.closed = False
        # Drop data set fragments of a message whose command could not be used.
        self._discarding = False
        self.pdus_received = 0
        self._abort_pdu: A_ABORT | None = None
        self._invalid_reason: int = AbortReason.UNEXPECTED_PDU
        self._invalid_message: str | None = None
        self._state_before: State = self.machine.state

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def established(self) -> bool:
        return self.machine.state == State.STA6

    @property
    def deadline(self) -> float | None:
        """When the ARTIM timer expires (compare with the ``now`` passed in), or None."""
        return self.artim.deadline

    def data_to_send(self) -> list[bytes]:
        """Bytes the protocol itself decided to send (rejects, aborts, release replies)."""
        out, self._outbox = self._outbox, []
        return out

    # -- transport ----------------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """Acceptor: a transport connection was accepted (Evt5 -> AE-5, ARTIM starts)."""
        self._now = now
        self._handle(Evt.EVT5)

    def connection_lost(self, now: float) -> list[ConnectionEvent]:
        """The transport closed (Evt17)."""
        self._now = now
        if self.closed:
            return []
        if self.machine.state == State.STA1:
            self.closed = True
            return [Closed()]
        self._handle(Evt.EVT17)
        self.closed = True
        events, self._events = self._events, []
        if not any(isinstance(e, (Closed, Aborted)) for e in events):
            events.append(Closed())
        return events

    def timer_check(self, now: float) -> list[ConnectionEvent]:
        """Call when ``deadline`` passes: ARTIM expiry (Evt18) closes the transport."""
        self._now = now
        if self.artim.expired(now):
            self.artim.stop()
            self._handle(Evt.EVT18)
        events, self._events = self._events, []
        return events

    # -- receiving ----------------------------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.buffer_updated(nbytes)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self.reader.feed(data)

    def next_events(self, now: float = 0.0) -> list[ConnectionEvent]:
        """Decode every complete PDU received so far and run it through the state machine."""
        self._now = now
        events = self._events
        reader = self.reader
        while not self.must_close:
            try:
                pdu = reader.next_pdu()
            except PDUError as exc:
                log.warning("invalid PDU received: %s", exc)
                # PS3.8 Table 9-26: an unknown PDU type (offset 0) is unrecognized; a known
                # PDU with a value we cannot use (a length over the limit, bad items) is invalid.
                reason = (
                    AbortReason.UNRECOGNIZED_PDU
                    if exc.offset == 0
                    else AbortReason.INVALID_PDU_PARAMETER_VALUE
                )
                self._invalid_pdu(str(exc), reason)
                break
            if pdu is None:
                break
            self.pdus_received += 1
            if type(pdu) is P_DATA_TF and self.machine.state == State.STA6:
                # The hot path: Table 9-10 answers Evt10 in Sta6 with DT-2 and stays in Sta6,
                # so the P-DATA indication is issued without the look-up.
                self._p_data(pdu)
                continue
            self._handle(_PDU_EVENTS[type(pdu)], pdu)
        self._events = []
        return events

    # -- local primitives ----------------------------------------------------------------------

    def request(self, rq: A_ASSOCIATE_RQ) -> bytes:
        """Requestor: the transport is connected; send the A-ASSOCIATE-RQ (Evt1 + Evt2)."""
        self._handle(Evt.EVT1)
        self._handle(Evt.EVT2)
        return encode(rq)

    def accept(self, ac: A_ASSOCIATE_AC, contexts: set[int]) -> bytes:
        """Acceptor: send the A-ASSOCIATE-AC (Evt7 -> AE-7, Sta6)."""
        self._handle(Evt.EVT7)
        self.accepted_contexts = contexts
        return encode(ac)

    def reject(self, rj: A_ASSOCIATE_RJ, now: float | None = None) -> bytes:
        """Acceptor: send the A-ASSOCIATE-RJ (Evt8 -> AE-8, ARTIM, Sta13).

        ``now`` is when ARTIM starts; without it, the time last passed in (which may be long
        ago when the service took its time to decide)."""
        if now is not None:
            self._now = now
        self._handle(Evt.EVT8)
        return encode(rj)

    def send_message(
        self, context_id: int, command: bytes, dataset_length: int | None, max_pdu_length: int
    ) -> FramedMessage:
        """Send one DIMSE message: the P-DATA request (Evt9: DT-1 in Sta6, AR-7 in Sta8, once
        per message; ``LocalProtocolError`` in any other state, nothing framed).

        Returns the encoded command set ``command`` framed as P-DATA-TF PDUs for a peer whose
        maximum PDU length is ``max_pdu_length`` (0 = unlimited), and the header and byte range
        of each PDU of a data set of ``dataset_length`` bytes (None: no data set). The caller
        writes each header followed by its range of the data set, from memory
        (``FramedMessage.with_data``) or read from a file; the data never passes through here.
        """
        self._handle(Evt.EVT9)
        return frame_message(context_id, command, dataset_length, max_pdu_length)

    def release_request(self) -> bytes:
        """Send an A-RELEASE-RQ (Evt11 -> AR-1, Sta7)."""
        self._handle(Evt.EVT11)
        return encode(A_RELEASE_RQ())

    def release_response(self, now: float | None = None) -> bytes:
        """Answer the peer's A-RELEASE-RQ (Evt14 -> AR-4 in Sta8 and Sta12, ARTIM starts at
        ``now``; AR-9 in Sta9)."""
        if now is not None:
            self._now = now
        self._handle(Evt.EVT14)
        return encode(A_RELEASE_RP())

    def abort(
        self,
        source: int = AbortSource.SERVICE_USER,
        reason: int = AbortReason.NOT_SPECIFIED,
        now: float | None = None,
    ) -> bytes:
        """Send an A-ABORT (Evt15 -> AA-1, ARTIM starts at ``now``; or AA-2 before the RQ was
        sent)."""
        if now is not None:
            self._now = now
        state = self.machine.state
        if self.closed or fsm.lookup(state, Evt.EVT15) is None:
            # Sta1, Sta2 (no association yet), Sta13 (closing): nothing to abort, just close.
            self.must_close = True
            return b""
        self._abort_pdu = A_ABORT(source, reason)
        self._handle(Evt.EVT15)
        return b"".join(self.data_to_send())

    # -- the state machine ---------------------------------------------------------------------

    def _handle(self, event: Evt, pdu: PDU | None = None) -> None:
        """Run ``event`` through Table 9-10 and carry out the action it names. An empty cell
        raises ``LocalProtocolError`` and changes nothing (``fsm.Machine.handle``)."""
        # The state the event arrived in, for the messages of the action (run in the new state).
        self._state_before = self.machine.state
        # AE-6: every A-ASSOCIATE-RQ that decodes is acceptable to the provider (Sta3); the
        # service layer's checks answer it with AE-7 or AE-8.
        action = self.machine.handle(event, acceptable=True, requestor=self._requestor)
        _ACTIONS[action.name](self, pdu)

    # Association establishment (PS3.8 Table 9-6)
    def _ae_1(self, pdu: PDU | None) -> None:  # issue TRANSPORT CONNECT: done by the caller
        pass

    def _ae_2(self, pdu: PDU | None) -> None:  # send A-ASSOCIATE-RQ: returned by request()
        pass

    def _ae_3(self, pdu: PDU | None) -> None:
        assert isinstance(pdu, A_ASSOCIATE_AC)
        self._events.append(AssociateAccepted(pdu))

    def _ae_4(self, pdu: PDU | None) -> None:
        assert isinstance(pdu, A_ASSOCIATE_RJ)
        self._events.append(AssociateRejected(pdu))
        self._close()

    def _ae_5(self, pdu: PDU | None) -> None:
        self.artim.start(self._now)

    def _ae_6(self, pdu: PDU | None) -> None:
        assert isinstance(pdu, A_ASSOCIATE_RQ)
        self.artim.stop()
        self._events.append(AssociateRequested(pdu))

    def _ae_7(self, pdu: PDU | None) -> None:  # the AC bytes are returned by accept()
        pass

    def _ae_8(self, pdu: PDU | None) -> None:  # the RJ bytes are returned by reject()
        self.artim.start(self._now)

    # Data transfer (PS3.8 Table 9-7)
    def _dt_1(self, pdu: PDU | None) -> None:  # the P-DATA-TF PDUs are returned by send_message()
        pass

    def _dt_2(self, pdu: PDU | None) -> None:
        assert isinstance(pdu, P_DATA_TF)
        self._p_data(pdu)

    def _p_data(self, pdu: P_DATA_TF) -> None:
        contexts = self.accepted_contexts
        events = self._events
        for pdv in pdu.pdvs:
            if contexts is not None and pdv.context_id not in contexts:
                self._invalid_pdu(
                    f"P-DATA-TF uses presentation context {pdv.context_id}, which was not accepted",
                    AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
                return
            if self._discarding and not pdv.is_command:
                if pdv.is_last:
                    self._discarding = False
                continue
            self._discarding = False
            try:
                events.extend(self.reassembler.add(pdv))
            except DIMSEError as exc:
                if not self._dimse_error(pdv, exc):
                    return

    def _dimse_error(self, pdv: PDV, exc: DIMSEError) -> bool:
        """A command set we cannot use: answer it when we can tell which message it was,
        abort otherwise. Returns False when the association was aborted."""
        message_id = getattr(exc, "message_id", None)
        command_field = getattr(exc, "command_field", None)
        if pdv.is_command and pdv.is_last and message_id is not None:
            log.warning("unusable command set (message ID %s): %s", message_id, exc)
            self._events.append(InvalidCommand(pdv.context_id, exc, message_id, command_field))
            self.reassembler.reset()
            elements = getattr(exc, "elements", None) or {}
            # (0000,0800) CommandDataSetType: anything but 0x0101 announces a data set.
            self._discarding = elements.get(0x00000800, 0x0101) != 0x0101
            return True
        self._invalid_pdu(f"invalid DIMSE message: {exc}", AbortReason.INVALID_PDU_PARAMETER_VALUE)
        return False

    # Association release (PS3.8 Table 9-8)
    def _ar_1(self, pdu: PDU | None) -> None:
        pass

    def _ar_2(self, pdu: PDU | None) -> None:
        self._events.append(ReleaseRequested())

    def _ar_3(self, pdu: PDU | None) -> None:
        self._events.append(ReleaseConfirmed())
        self._close()

    def _ar_4(self, pdu: PDU | None) -> None:  # A-RELEASE-RP returned by release_response()
        self.artim.start(self._now)

    def _ar_5(self, pdu: PDU | None) -> None:
        self.artim.stop()
        self._close()

    def _ar_6(self, pdu: PDU | None) -> None:  # P-DATA while we wait for the release reply
        assert isinstance(pdu, P_DATA_TF)
        self._p_data(pdu)

    def _ar_7(self, pdu: PDU | None) -> None:  # P-DATA-TF PDUs, as DT-1 (send_message())
        pass

    def _ar_8(self, pdu: PDU | None) -> None:  # release collision
        self._events.append(ReleaseRequested())

    def _ar_9(self, pdu: PDU | None) -> None:
        pass

    def _ar_10(self, pdu: PDU | None) -> None:
        self._events.append(ReleaseConfirmed())

    # Association abort (PS3.8 Table 9-9)
    def _aa_1(self, pdu: PDU | None) -> None:
        # Evt19 (unrecognized or invalid PDU) in Sta2 also lands here: answer with its reason.
        reason = self._invalid_reason if self._invalid_message else AbortReason.UNEXPECTED_PDU
        abort = self._abort_pdu or A_ABORT(AbortSource.SERVICE_PROVIDER, reason)
        self._abort_pdu = None
        self._outbox.append(encode(abort))
        self.artim.start(self._now)
        if pdu is not None:
            # An unexpected PDU from the peer (not a local A-ABORT request).
            self._events.append(
                Aborted(
                    abort.source,
                    abort.reason,
                    by_peer=False,
                    message=f"unexpected {type(pdu).__name__} in {self._previous_state_name}",
                )
            )

    def _aa_2(self, pdu: PDU | None) -> None:
        self.artim.stop()
        self._close()

    def _aa_3(self, pdu: PDU | None) -> None:
        if isinstance(pdu, A_ABORT):
            self._events.append(
                Aborted(pdu.source, pdu.reason, by_peer=True, message="A-ABORT received")
            )
        else:
            self._events.append(
                Aborted(None, None, by_peer=True, message="connection closed by the peer")
            )
        self._close()

    def _aa_4(self, pdu: PDU | None) -> None:
        self._events.append(
            Aborted(None, None, by_peer=True, message="connection closed by the peer (A-P-ABORT)")
        )
        self._close()

    def _aa_5(self, pdu: PDU | None) -> None:
        self.artim.stop()
        self._close()

    def _aa_6(self, pdu: PDU | None) -> None:  # ignore the PDU (Sta13)
        pass

    def _aa_7(self, pdu: PDU | None) -> None:
        self._outbox.append(
            encode(A_ABORT(AbortSource.SERVICE_PROVIDER, AbortReason.UNEXPECTED_PDU))
        )

    def _aa_8(self, pdu: PDU | None) -> None:
        reason = self._invalid_reason
        message = self._invalid_message or (
            f"unexpected {type(pdu).__name__ if pdu is not None else 'event'} "
            f"in {self._previous_state_name}"
        )
        self._invalid_reason = AbortReason.UNEXPECTED_PDU
        self._invalid_message = None
        self._outbox.append(encode(A_ABORT(AbortSource.SERVICE_PROVIDER, reason)))
        self.artim.start(self._now)
        log.warning("aborting the association: %s", message)
        self._events.append(
            Aborted(AbortSource.SERVICE_PROVIDER, reason, by_peer=False, message=message)
        )

    @property
    def _previous_state_name(self) -> str:
        return self._state_before.name

    def _invalid_pdu(self, message: str, reason: int) -> None:
        """The peer sent bytes we cannot use (Evt19 -> AA-8 or AA-1 per the table)."""
        self._invalid_reason = reason
        self._invalid_message = message
        # Stop reading: the rest of the stream cannot be trusted.
        self.reader = PDUReader(max_pdu_length=1)
        if self.machine.state is State.STA1:  # no transport connection any more: nothing to answer
            self._close()
            return
        # Table 9-10 answers Evt19 with AA-1 in Sta2, AA-7 in Sta13 and AA-8 elsewhere.
        self._handle(Evt.EVT19)
        if not any(isinstance(e, Aborted) for e in self._events):
            self._events.append(
                Aborted(AbortSource.SERVICE_PROVIDER, reason, by_peer=False, message=message)
            )
        self._invalid_message = None
        self.must_close = True

    def _close(self) -> None:
        if not self.must_close:
            self.must_close = True
            self._events.append(Closed())


# Table 9-10 names the action, this table runs it: one method per action of PS3.8 Tables 9-6 to
# 9-9 (a unit test checks that it covers fsm.ACTIONS). Built once, of plain functions, so that a
# connection holds no reference cycle through bound methods.
_ACTIONS: dict[str, Callable[[Connection, PDU | None], None]] = {
    "AE-1": Connection._ae_1,
    "AE-2": Connection._ae_2,
    "AE-3": Connection._ae_3,
    "AE-4": Connection._ae_4,
    "AE-5": Connection._ae_5,
    "AE-6": Connection._ae_6,
    "AE-7": Connection._ae_7,
    "AE-8": Connection._ae_8,
    "DT-1": Connection._dt_1,
    "DT-2": Connection._dt_2,
    "AR-1": Connection._ar_1,
    "AR-2": Connection._ar_2,
    "AR-3": Connection._ar_3,
    "AR-4": Connection._ar_4,
    "AR-5": Connection._ar_5,
    "AR-6": Connection._ar_6,
    "AR-7": Connection._ar_7,
    "AR-8": Connection._ar_8,
    "AR-9": Connection._ar_9,
    "AR-10": Connection._ar_10,
    "AA-1": Connection._aa_1,
    "AA-2": Connection._aa_2,
    "AA-3": Connection._aa_3,
    "AA-4": Connection._aa_4,
    "AA-5": Connection._aa_5,
    "AA-6": Connection._aa_6,
    "AA-7": Connection._aa_7,
    "AA-8": Connection._aa_8,
}
