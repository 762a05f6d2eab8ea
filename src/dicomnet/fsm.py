"""The DICOM upper layer state machine of PS3.8 §9.2, written as data.

Job: name the states (§9.2.1, Tables 9-1 to 9-5), the events (the rows of Table 9-10), the
actions (§9.2.2, Tables 9-6 to 9-9) and the state transition table (§9.2.3, Table 9-10), and keep
the ARTIM timer (§9.1.5) as a deadline.

Rules:

1. Everything that affects transitions lives in this file. ``TRANSITIONS[state][event]`` is Table
   9-10, one entry per non-empty cell, written out cell by cell so it can be read against the
   standard; ``ACTIONS[name]`` carries each action's definition and next state(s). The docs' table
   is generated from the data (:func:`describe_table`), never written by hand.
2. The file does not know its role. The two actions whose next state depends on context take the
   answer from the caller: AE-6 (was the A-ASSOCIATE-RQ acceptable to the upper layer service
   provider? Sta3 if so, else Sta13) and AR-8 (are we the association-requestor? Sta9 if so, else
   Sta10). See :func:`next_state`.
3. Actions are named and described here, executed elsewhere: ``dicomnet.connection`` has one small
   function per action (AE-1 … AA-8) that sends PDUs, issues primitives, starts or stops ARTIM and
   closes the transport. This module only says which one to run and where the machine goes next.
4. Pure: no I/O, no clock. :class:`Artim` is a deadline; the caller passes ``now`` (for example
   ``loop.time()``) and feeds :attr:`Event.EVT18` when :meth:`Artim.expired` says so.
5. Empty cells. An empty cell of Table 9-10 is an event that cannot happen in that state.

   * A local service primitive (:data:`LOCAL_PRIMITIVES`: Evt1, 7, 8, 9, 11, 14, 15) in an empty
     cell means our own code asked for something the protocol does not allow there:
     :class:`~dicomnet.errors.LocalProtocolError` (h11's rule).
   * A peer-caused event (:data:`PEER_EVENTS`: a received PDU, Evt3, 4, 6, 10, 12, 13, 16, 19, or
     the transport closing, Evt17) has a cell in every state with an open transport connection
     (:data:`CONNECTED_STATES`: Sta2, Sta3, Sta5 … Sta13), mostly AA-1, AA-3, AA-6, AA-7 or AA-8,
     so :meth:`Machine.handle` never raises for one there: a PDU that is out of place is answered
     as the table prescribes (an A-ABORT, or ignored in Sta13). In Sta1 and Sta4 there is no
     transport connection yet (or any more), so a received PDU there, or Evt17 in Sta1, is a bug of
     the caller (bytes fed before Evt2, or the close of a transport that an action such as AE-4,
     AR-3, AA-2 or AA-3 already closed fed back as Evt17) and raises LocalProtocolError too.
   * The local transport and timer events (Evt2, Evt5, Evt18) in an empty cell are also the
     caller's bug (ARTIM only runs in Sta2 and Sta13; a new connection gets a new machine) and
     raise LocalProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from dicomnet.errors import LocalProtocolError

__all__ = [
    "ACTIONS",
    "CONNECTED_STATES",
    "EVENT_DESCRIPTIONS",
    "LOCAL_PRIMITIVES",
    "PEER_EVENTS",
    "STATE_DESCRIPTIONS",
    "TRANSITIONS",
    "Action",
    "Artim",
    "Event",
    "Machine",
    "State",
    "describe_table",
    "lookup",
    "next_state",
]


class State(IntEnum):
    """The thirteen states of PS3.8 §9.2.1 (Tables 9-1 to 9-5); ``label`` is the standard's name."""

    STA1 = 1  # Idle
    STA2 = 2  # Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
    STA3 = 3  # Awaiting local A-ASSOCIATE response primitive
    STA4 = 4  # Awaiting transport connection opening to complete
    STA5 = 5  # Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
    STA6 = 6  # Association established and ready for data transfer
    STA7 = 7  # Awaiting A-RELEASE-RP PDU
    STA8 = 8  # Awaiting local A-RELEASE response primitive
    STA9 = 9  # Release collision requestor side; awaiting A-RELEASE response
    STA10 = 10  # Release collision acceptor side; awaiting A-RELEASE-RP PDU
    STA11 = 11  # Release collision requestor side; awaiting A-RELEASE-RP PDU
    STA12 = 12  # Release collision acceptor side; awaiting A-RELEASE response primitive
    STA13 = 13  # Awaiting transport connection close indication

    @property
    def label(self) -> str:
        """``"Sta6"`` for ``State.STA6``, as PS3.8 writes it."""
        return f"Sta{self.value}"

    @property
    def description(self) -> str:
        """The standard's definition of the state."""
        return STATE_DESCRIPTIONS[self]


STATE_DESCRIPTIONS: dict[State, str] = {
    # Table 9-1, no association
    State.STA1: "Idle",
    # Table 9-2, association establishment
    State.STA2: "Transport connection open (awaiting A-ASSOCIATE-RQ PDU)",
    State.STA3: "Awaiting local A-ASSOCIATE response primitive (from local user)",
    State.STA4: "Awaiting transport connection opening to complete (from local transport service)",
    State.STA5: "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU",
    # Table 9-3, data transfer
    State.STA6: "Association established and ready for data transfer",
    # Table 9-4, association release
    State.STA7: "Awaiting A-RELEASE-RP PDU",
    State.STA8: "Awaiting local A-RELEASE response primitive (from local user)",
    State.STA9: "Release collision requestor side; awaiting A-RELEASE response (from local user)",
    State.STA10: "Release collision acceptor side; awaiting A-RELEASE-RP PDU",
    State.STA11: "Release collision requestor side; awaiting A-RELEASE-RP PDU",
    State.STA12: (
        "Release collision acceptor side; awaiting A-RELEASE response primitive (from local user)"
    ),
    # Table 9-5, waiting for transport connection close
    State.STA13: "Awaiting transport connection close indication (association no longer exists)",
}


class Event(IntEnum):
    """The nineteen events of PS3.8 §9.2.3 (the rows of Table 9-10); ``label`` is ``"Evt10"``."""

    EVT1 = 1  # A-ASSOCIATE request (local user)
    EVT2 = 2  # Transport connection confirm (local transport service)
    EVT3 = 3  # A-ASSOCIATE-AC PDU received
    EVT4 = 4  # A-ASSOCIATE-RJ PDU received
    EVT5 = 5  # Transport connection indication (local transport service)
    EVT6 = 6  # A-ASSOCIATE-RQ PDU received
    EVT7 = 7  # A-ASSOCIATE response primitive (accept)
    EVT8 = 8  # A-ASSOCIATE response primitive (reject)
    EVT9 = 9  # P-DATA request primitive
    EVT10 = 10  # P-DATA-TF PDU received
    EVT11 = 11  # A-RELEASE request primitive
    EVT12 = 12  # A-RELEASE-RQ PDU received
    EVT13 = 13  # A-RELEASE-RP PDU received
    EVT14 = 14  # A-RELEASE response primitive
    EVT15 = 15  # A-ABORT request primitive
    EVT16 = 16  # A-ABORT PDU received
    EVT17 = 17  # Transport connection closed indication (local transport service)
    EVT18 = 18  # ARTIM timer expired
    EVT19 = 19  # Unrecognized or invalid PDU received

    @property
    def label(self) -> str:
        """``"Evt10"`` for ``Event.EVT10``, as PS3.8 writes it."""
        return f"Evt{self.value}"

    @property
    def description(self) -> str:
        """The standard's definition of the event."""
        return EVENT_DESCRIPTIONS[self]


EVENT_DESCRIPTIONS: dict[Event, str] = {
    Event.EVT1: "A-ASSOCIATE request (local user)",
    Event.EVT2: "Transport connection confirm (local transport service)",
    Event.EVT3: "A-ASSOCIATE-AC PDU (received on transport connection)",
    Event.EVT4: "A-ASSOCIATE-RJ PDU (received on transport connection)",
    Event.EVT5: "Transport connection indication (local transport service)",
    Event.EVT6: "A-ASSOCIATE-RQ PDU (received on transport connection)",
    Event.EVT7: "A-ASSOCIATE response primitive (accept)",
    Event.EVT8: "A-ASSOCIATE response primitive (reject)",
    Event.EVT9: "P-DATA request primitive",
    Event.EVT10: "P-DATA-TF PDU (received on transport connection)",
    Event.EVT11: "A-RELEASE request primitive",
    Event.EVT12: "A-RELEASE-RQ PDU (received on open transport connection)",
    Event.EVT13: "A-RELEASE-RP PDU (received on transport connection)",
    Event.EVT14: "A-RELEASE response primitive",
    Event.EVT15: "A-ABORT request primitive",
    Event.EVT16: "A-ABORT PDU (received on open transport connection)",
    Event.EVT17: "Transport connection closed indication (local transport service)",
    Event.EVT18: "ARTIM timer expired (association reject/release timer)",
    Event.EVT19: "Unrecognized or invalid PDU received",
}

#: Service primitives issued by our own user; in an empty cell they raise LocalProtocolError.
LOCAL_PRIMITIVES: frozenset[Event] = frozenset(
    {Event.EVT1, Event.EVT7, Event.EVT8, Event.EVT9, Event.EVT11, Event.EVT14, Event.EVT15}
)

#: Events the peer causes: a received PDU (valid or not) or the transport connection closing.
PEER_EVENTS: frozenset[Event] = frozenset(
    {
        Event.EVT3,
        Event.EVT4,
        Event.EVT6,
        Event.EVT10,
        Event.EVT12,
        Event.EVT13,
        Event.EVT16,
        Event.EVT17,
        Event.EVT19,
    }
)

#: States with an open transport connection: every state but Sta1 (idle) and Sta4 (connecting).
CONNECTED_STATES: frozenset[State] = frozenset(State) - {State.STA1, State.STA4}


@dataclass(frozen=True)
class Action:
    """One action of PS3.8 §9.2.2 (Tables 9-6 to 9-9).

    ``next_states`` holds one state, or two for the actions whose next state depends on context:
    AE-6 ``(Sta3, Sta13)`` and AR-8 ``(Sta9, Sta10)``; :func:`next_state` picks one.
    """

    name: str
    description: str
    next_states: tuple[State, ...]


def _action(name: str, description: str, *next_states: State) -> tuple[str, Action]:
    return name, Action(name, description, next_states)


S = State  # short alias for the tables below only

ACTIONS: dict[str, Action] = dict(
    [
        # Table 9-6, association establishment related actions
        _action(
            "AE-1", "Issue TRANSPORT CONNECT request primitive to local transport service", S.STA4
        ),
        _action("AE-2", "Send A-ASSOCIATE-RQ PDU", S.STA5),
        _action("AE-3", "Issue A-ASSOCIATE confirmation (accept) primitive", S.STA6),
        _action(
            "AE-4",
            "Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection",
            S.STA1,
        ),
        _action("AE-5", "Issue transport connection response primitive; start ARTIM timer", S.STA2),
        _action(
            "AE-6",
            "Stop ARTIM timer and, if the A-ASSOCIATE-RQ is acceptable by the service-provider, "
            "issue A-ASSOCIATE indication primitive (next state Sta3); otherwise issue "
            "A-ASSOCIATE-RJ PDU and start ARTIM timer (next state Sta13)",
            S.STA3,
            S.STA13,
        ),
        _action("AE-7", "Send A-ASSOCIATE-AC PDU", S.STA6),
        _action("AE-8", "Send A-ASSOCIATE-RJ PDU and start ARTIM timer", S.STA13),
        # Table 9-7, data transfer related actions
        _action("DT-1", "Send P-DATA-TF PDU", S.STA6),
        _action("DT-2", "Send P-DATA indication primitive", S.STA6),
        # Table 9-8, association release related actions
        _action("AR-1", "Send A-RELEASE-RQ PDU", S.STA7),
        _action("AR-2", "Issue A-RELEASE indication primitive", S.STA8),
        _action(
            "AR-3",
            "Issue A-RELEASE confirmation primitive, and close transport connection",
            S.STA1,
        ),
        _action("AR-4", "Issue A-RELEASE-RP PDU and start ARTIM timer", S.STA13),
        _action("AR-5", "Stop ARTIM timer", S.STA1),
        _action("AR-6", "Issue P-DATA indication", S.STA7),
        _action("AR-7", "Issue P-DATA-TF PDU", S.STA8),
        _action(
            "AR-8",
            "Issue A-RELEASE indication (release collision); next state Sta9 if "
            "association-requestor, otherwise Sta10",
            S.STA9,
            S.STA10,
        ),
        _action("AR-9", "Send A-RELEASE-RP PDU", S.STA11),
        _action("AR-10", "Issue A-RELEASE confirmation primitive", S.STA12),
        # Table 9-9, association abort related actions
        _action(
            "AA-1",
            "Send A-ABORT PDU (service-user source) and start (or restart if already started) "
            "ARTIM timer",
            S.STA13,
        ),
        _action("AA-2", "Stop ARTIM timer if running; close transport connection", S.STA1),
        _action(
            "AA-3",
            "If service-user initiated abort, issue A-ABORT indication and close transport "
            "connection; otherwise (service-provider initiated abort) issue A-P-ABORT indication "
            "and close transport connection",
            S.STA1,
        ),
        _action("AA-4", "Issue A-P-ABORT indication primitive", S.STA1),
        _action("AA-5", "Stop ARTIM timer", S.STA1),
        _action("AA-6", "Ignore PDU", S.STA13),
        _action("AA-7", "Send A-ABORT PDU", S.STA13),
        _action(
            "AA-8",
            "Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and "
            "start ARTIM timer",
            S.STA13,
        ),
    ]
)

E = Event  # short alias for the table below only

# PS3.8 Table 9-10, one column (state) at a time; one entry per non-empty cell.
TRANSITIONS: dict[State, dict[Event, str]] = {
    S.STA1: {
        E.EVT1: "AE-1",  # A-ASSOCIATE request -> transport connect
        E.EVT5: "AE-5",  # transport connection indication -> accept it, start ARTIM
    },
    S.STA2: {
        E.EVT3: "AA-1",
        E.EVT4: "AA-1",
        E.EVT6: "AE-6",  # A-ASSOCIATE-RQ received
        E.EVT10: "AA-1",
        E.EVT12: "AA-1",
        E.EVT13: "AA-1",
        E.EVT16: "AA-2",
        E.EVT17: "AA-5",
        E.EVT18: "AA-2",
        E.EVT19: "AA-1",
    },
    S.STA3: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT7: "AE-7",  # local accept -> send A-ASSOCIATE-AC
        E.EVT8: "AE-8",  # local reject -> send A-ASSOCIATE-RJ
        E.EVT10: "AA-8",
        E.EVT12: "AA-8",
        E.EVT13: "AA-8",
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA4: {
        E.EVT2: "AE-2",  # transport connected -> send A-ASSOCIATE-RQ
        E.EVT15: "AA-2",
        E.EVT17: "AA-4",
    },
    S.STA5: {
        E.EVT3: "AE-3",  # A-ASSOCIATE-AC received
        E.EVT4: "AE-4",  # A-ASSOCIATE-RJ received
        E.EVT6: "AA-8",
        E.EVT10: "AA-8",
        E.EVT12: "AA-8",
        E.EVT13: "AA-8",
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA6: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT9: "DT-1",  # P-DATA request -> send P-DATA-TF
        E.EVT10: "DT-2",  # P-DATA-TF received -> P-DATA indication
        E.EVT11: "AR-1",  # A-RELEASE request -> send A-RELEASE-RQ
        E.EVT12: "AR-2",  # A-RELEASE-RQ received -> A-RELEASE indication
        E.EVT13: "AA-8",
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA7: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT10: "AR-6",  # P-DATA-TF still arriving while we wait for A-RELEASE-RP
        E.EVT12: "AR-8",  # A-RELEASE-RQ received: release collision
        E.EVT13: "AR-3",  # A-RELEASE-RP received -> confirmation, close
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA8: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT9: "AR-7",  # we may still send P-DATA before answering the release
        E.EVT10: "AA-8",
        E.EVT12: "AA-8",
        E.EVT13: "AA-8",
        E.EVT14: "AR-4",  # A-RELEASE response -> send A-RELEASE-RP, start ARTIM
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA9: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT10: "AA-8",
        E.EVT12: "AA-8",
        E.EVT13: "AA-8",
        E.EVT14: "AR-9",  # requestor side of a collision answers first
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA10: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT10: "AA-8",
        E.EVT12: "AA-8",
        E.EVT13: "AR-10",  # acceptor side of a collision gets the A-RELEASE-RP first
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA11: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT10: "AA-8",
        E.EVT12: "AA-8",
        E.EVT13: "AR-3",
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA12: {
        E.EVT3: "AA-8",
        E.EVT4: "AA-8",
        E.EVT6: "AA-8",
        E.EVT10: "AA-8",
        E.EVT12: "AA-8",
        E.EVT13: "AA-8",
        E.EVT14: "AR-4",
        E.EVT15: "AA-1",
        E.EVT16: "AA-3",
        E.EVT17: "AA-4",
        E.EVT19: "AA-8",
    },
    S.STA13: {
        E.EVT3: "AA-6",
        E.EVT4: "AA-6",
        E.EVT6: "AA-7",
        E.EVT10: "AA-6",
        E.EVT12: "AA-6",
        E.EVT13: "AA-6",
        E.EVT16: "AA-2",
        E.EVT17: "AR-5",
        E.EVT18: "AA-2",
        E.EVT19: "AA-7",
    },
}

del S, E


def lookup(state: State, event: Event) -> Action | None:
    """The action of Table 9-10's cell (``state``, ``event``); None for an empty cell."""
    name = TRANSITIONS[state].get(event)
    return None if name is None else ACTIONS[name]


def next_state(action: Action, *, acceptable: bool = True, requestor: bool = True) -> State:
    """The state ``action`` leads to.

    ``acceptable`` resolves AE-6 (the A-ASSOCIATE-RQ is acceptable to the upper layer
    service-provider: Sta3, else the provider rejects it itself: Sta13); ``requestor`` resolves
    AR-8 (we are the association-requestor: Sta9, else Sta10). Other actions ignore both.
    """
    if action.name == "AE-6":
        return action.next_states[0] if acceptable else action.next_states[1]
    if action.name == "AR-8":
        return action.next_states[0] if requestor else action.next_states[1]
    if len(action.next_states) != 1:
        raise ValueError(f"action {action.name} has no rule to choose among {action.next_states}")
    return action.next_states[0]


class Machine:
    """The current state of one association, moved by :meth:`handle`.

    One machine per transport connection; it starts in Sta1.
    """

    def __init__(self, state: State = State.STA1) -> None:
        self.state: State = state

    def __repr__(self) -> str:
        return f"<Machine {self.state.label}>"

    def handle(self, event: Event, *, acceptable: bool = True, requestor: bool = True) -> Action:
        """Look ``event`` up in the current state, move to the next state, return the action.

        ``acceptable`` and ``requestor`` are passed to :func:`next_state`. An empty cell raises
        :class:`~dicomnet.errors.LocalProtocolError` and leaves the state unchanged; by the table's
        construction that never happens for a peer event (:data:`PEER_EVENTS`) in a state with a
        transport connection (:data:`CONNECTED_STATES`), see the module docstring.
        """
        action = lookup(self.state, event)
        if action is None:
            raise LocalProtocolError(_empty_cell_message(self.state, event))
        self.state = next_state(action, acceptable=acceptable, requestor=requestor)
        return action


def _empty_cell_message(state: State, event: Event) -> str:
    where = f"{event.label} ({event.description}) in {state.label} ({state.description})"
    if event in LOCAL_PRIMITIVES:
        return f"can't handle {where}: the primitive is not allowed in this state (PS3.8 9.2.3)"
    if event in PEER_EVENTS and state not in CONNECTED_STATES:
        return f"can't handle {where}: there is no transport connection in this state"
    return f"can't handle {where}: Table 9-10 has no entry for it (PS3.8 9.2.3)"


class Artim:
    """The ARTIM timer of PS3.8 §9.1.5 as a deadline; the caller supplies ``now``.

    ARTIM bounds the wait for an A-ASSOCIATE-RQ after a connection is accepted (AE-5) and for the
    peer to close the connection after we rejected, released or aborted (AE-6 reject, AE-8, AR-4,
    AA-1, AA-8). The caller feeds :attr:`Event.EVT18` when :meth:`expired` returns True; the table
    answers it with AA-2 in Sta2 and Sta13, the only states where it runs.
    """

    def __init__(self, timeout: float) -> None:
        if not timeout >= 0:  # also rejects NaN
            raise ValueError(f"ARTIM timeout must be a non-negative number of seconds: {timeout!r}")
        self.timeout = timeout
        self._deadline: float | None = None

    def __repr__(self) -> str:
        return f"<Artim timeout={self.timeout} deadline={self._deadline}>"

    def start(self, now: float) -> None:
        """Start the timer, or restart it if already running (AA-1: "start (or restart)")."""
        self._deadline = now + self.timeout

    def stop(self) -> None:
        """Stop the timer; stopping a stopped timer is harmless (AA-2: "if running")."""
        self._deadline = None

    @property
    def running(self) -> bool:
        """Whether the timer has been started and not stopped."""
        return self._deadline is not None

    @property
    def deadline(self) -> float | None:
        """The time (on the caller's clock) at which the timer expires; None when stopped."""
        return self._deadline

    def expired(self, now: float) -> bool:
        """Whether the timer is running and its deadline has been reached."""
        return self._deadline is not None and now >= self._deadline

    def remaining(self, now: float) -> float | None:
        """Seconds left before expiry (0.0 once expired); None when stopped."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - now)


def _cell_text(action: Action) -> str:
    targets = "/".join(state.label for state in action.next_states)
    return f"{action.name} → {targets}"


def describe_table() -> str:
    """Table 9-10 as markdown, generated from :data:`TRANSITIONS`, followed by the actions.

    Rows are events and columns states, as in the standard; a cell reads ``AE-6 → Sta3/Sta13``.
    """
    lines = [
        "| Event | " + " | ".join(state.label for state in State) + " |",
        "|---|" + "---|" * len(State),
    ]
    for event in Event:
        cells = []
        for state in State:
            action = lookup(state, event)
            cells.append("" if action is None else _cell_text(action))
        lines.append(f"| {event.label} {event.description} | " + " | ".join(cells) + " |")
    lines += ["", "| Action | Definition | Next state |", "|---|---|---|"]
    for action in ACTIONS.values():
        targets = " or ".join(state.label for state in action.next_states)
        lines.append(f"| {action.name} | {action.description} | {targets} |")
    return "\n".join(lines) + "\n"
