"""Tests of dicomnet.fsm against PS3.8 §9.2 (Table 9-10), written from the standard's text."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomnet.errors import LocalProtocolError
from dicomnet.fsm import (
    ACTIONS,
    CONNECTED_STATES,
    EVENT_DESCRIPTIONS,
    LOCAL_PRIMITIVES,
    PEER_EVENTS,
    STATE_DESCRIPTIONS,
    TRANSITIONS,
    Action,
    Artim,
    Event,
    Machine,
    State,
    describe_table,
    lookup,
    next_state,
)

S = State
E = Event

PDU_EVENTS = [E.EVT3, E.EVT4, E.EVT6, E.EVT10, E.EVT12, E.EVT13, E.EVT16, E.EVT19]


# --- the names -------------------------------------------------------------------------------


def test_thirteen_states_and_nineteen_events() -> None:
    assert [s.value for s in State] == list(range(1, 14))
    assert [e.value for e in Event] == list(range(1, 20))
    assert set(STATE_DESCRIPTIONS) == set(State)
    assert set(EVENT_DESCRIPTIONS) == set(Event)
    assert all(STATE_DESCRIPTIONS.values()) and all(EVENT_DESCRIPTIONS.values())


def test_labels_follow_the_standard() -> None:
    assert S.STA6.label == "Sta6"
    assert E.EVT19.label == "Evt19"
    assert S.STA1.description == "Idle"
    assert E.EVT18.description.startswith("ARTIM timer expired")


def test_twenty_eight_actions_named_as_the_standard_names_them() -> None:
    expected = (
        [f"AE-{i}" for i in range(1, 9)]
        + ["DT-1", "DT-2"]
        + [f"AR-{i}" for i in range(1, 11)]
        + [f"AA-{i}" for i in range(1, 9)]
    )
    assert list(ACTIONS) == expected
    for name, action in ACTIONS.items():
        assert action.name == name
        assert action.description
        assert action.next_states and all(isinstance(s, State) for s in action.next_states)


@pytest.mark.parametrize(
    ("name", "next_states"),
    [
        ("AE-1", (S.STA4,)),
        ("AE-2", (S.STA5,)),
        ("AE-3", (S.STA6,)),
        ("AE-4", (S.STA1,)),
        ("AE-5", (S.STA2,)),
        ("AE-6", (S.STA3, S.STA13)),
        ("AE-7", (S.STA6,)),
        ("AE-8", (S.STA13,)),
        ("DT-1", (S.STA6,)),
        ("DT-2", (S.STA6,)),
        ("AR-1", (S.STA7,)),
        ("AR-2", (S.STA8,)),
        ("AR-3", (S.STA1,)),
        ("AR-4", (S.STA13,)),
        ("AR-5", (S.STA1,)),
        ("AR-6", (S.STA7,)),
        ("AR-7", (S.STA8,)),
        ("AR-8", (S.STA9, S.STA10)),
        ("AR-9", (S.STA11,)),
        ("AR-10", (S.STA12,)),
        ("AA-1", (S.STA13,)),
        ("AA-2", (S.STA1,)),
        ("AA-3", (S.STA1,)),
        ("AA-4", (S.STA1,)),
        ("AA-5", (S.STA1,)),
        ("AA-6", (S.STA13,)),
        ("AA-7", (S.STA13,)),
        ("AA-8", (S.STA13,)),
    ],
)
def test_action_next_states(name: str, next_states: tuple[State, ...]) -> None:
    """PS3.8 Tables 9-6 to 9-9, "Next state is …"."""
    assert ACTIONS[name].next_states == next_states


def test_actions_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ACTIONS["AE-1"].name = "AE-2"  # type: ignore[misc]


# --- the table -------------------------------------------------------------------------------


def test_table_has_every_state_and_only_known_actions() -> None:
    assert set(TRANSITIONS) == set(State)
    for state, row in TRANSITIONS.items():
        for event, name in row.items():
            assert isinstance(event, Event)
            assert name in ACTIONS, (state, event, name)
            action = lookup(state, event)
            assert action is ACTIONS[name]
            assert all(s in State for s in action.next_states)


def test_number_of_cells() -> None:
    # Counted in PS3.8 Table 9-10: 2 + 10 + 12 + 3 + 10 + 12 + 10 + 12 + 11 + 10 + 10 + 11 + 10.
    counts = {state: len(row) for state, row in TRANSITIONS.items()}
    assert counts == {
        S.STA1: 2,
        S.STA2: 10,
        S.STA3: 12,
        S.STA4: 3,
        S.STA5: 10,
        S.STA6: 12,
        S.STA7: 10,
        S.STA8: 12,
        S.STA9: 11,
        S.STA10: 10,
        S.STA11: 10,
        S.STA12: 11,
        S.STA13: 10,
    }


# (state, event, action, next state) read off PS3.8 Table 9-10 and Tables 9-6 to 9-9.
CELLS = [
    # association establishment, requestor side
    (S.STA1, E.EVT1, "AE-1", S.STA4),
    (S.STA4, E.EVT2, "AE-2", S.STA5),
    (S.STA5, E.EVT3, "AE-3", S.STA6),
    (S.STA5, E.EVT4, "AE-4", S.STA1),
    (S.STA4, E.EVT15, "AA-2", S.STA1),
    (S.STA4, E.EVT17, "AA-4", S.STA1),
    (S.STA5, E.EVT6, "AA-8", S.STA13),
    (S.STA5, E.EVT10, "AA-8", S.STA13),
    (S.STA5, E.EVT15, "AA-1", S.STA13),
    (S.STA5, E.EVT16, "AA-3", S.STA1),
    # association establishment, acceptor side
    (S.STA1, E.EVT5, "AE-5", S.STA2),
    (S.STA2, E.EVT3, "AA-1", S.STA13),
    (S.STA2, E.EVT4, "AA-1", S.STA13),
    (S.STA2, E.EVT10, "AA-1", S.STA13),
    (S.STA2, E.EVT12, "AA-1", S.STA13),
    (S.STA2, E.EVT13, "AA-1", S.STA13),
    (S.STA2, E.EVT16, "AA-2", S.STA1),
    (S.STA2, E.EVT17, "AA-5", S.STA1),
    (S.STA2, E.EVT18, "AA-2", S.STA1),
    (S.STA2, E.EVT19, "AA-1", S.STA13),
    (S.STA3, E.EVT7, "AE-7", S.STA6),
    (S.STA3, E.EVT8, "AE-8", S.STA13),
    (S.STA3, E.EVT6, "AA-8", S.STA13),
    (S.STA3, E.EVT15, "AA-1", S.STA13),
    (S.STA3, E.EVT16, "AA-3", S.STA1),
    (S.STA3, E.EVT17, "AA-4", S.STA1),
    # data transfer
    (S.STA6, E.EVT9, "DT-1", S.STA6),
    (S.STA6, E.EVT10, "DT-2", S.STA6),
    (S.STA6, E.EVT3, "AA-8", S.STA13),
    (S.STA6, E.EVT6, "AA-8", S.STA13),
    (S.STA6, E.EVT13, "AA-8", S.STA13),
    (S.STA6, E.EVT19, "AA-8", S.STA13),
    # release
    (S.STA6, E.EVT11, "AR-1", S.STA7),
    (S.STA6, E.EVT12, "AR-2", S.STA8),
    (S.STA7, E.EVT10, "AR-6", S.STA7),
    (S.STA7, E.EVT13, "AR-3", S.STA1),
    (S.STA8, E.EVT9, "AR-7", S.STA8),
    (S.STA8, E.EVT14, "AR-4", S.STA13),
    (S.STA8, E.EVT10, "AA-8", S.STA13),
    # release collision
    (S.STA9, E.EVT14, "AR-9", S.STA11),
    (S.STA10, E.EVT13, "AR-10", S.STA12),
    (S.STA11, E.EVT13, "AR-3", S.STA1),
    (S.STA12, E.EVT14, "AR-4", S.STA13),
    (S.STA9, E.EVT13, "AA-8", S.STA13),
    (S.STA10, E.EVT12, "AA-8", S.STA13),
    (S.STA12, E.EVT13, "AA-8", S.STA13),
    # waiting for the transport to close
    (S.STA13, E.EVT3, "AA-6", S.STA13),
    (S.STA13, E.EVT4, "AA-6", S.STA13),
    (S.STA13, E.EVT6, "AA-7", S.STA13),
    (S.STA13, E.EVT10, "AA-6", S.STA13),
    (S.STA13, E.EVT12, "AA-6", S.STA13),
    (S.STA13, E.EVT13, "AA-6", S.STA13),
    (S.STA13, E.EVT16, "AA-2", S.STA1),
    (S.STA13, E.EVT17, "AR-5", S.STA1),
    (S.STA13, E.EVT18, "AA-2", S.STA1),
    (S.STA13, E.EVT19, "AA-7", S.STA13),
]


@pytest.mark.parametrize(("state", "event", "name", "target"), CELLS)
def test_cell(state: State, event: Event, name: str, target: State) -> None:
    action = lookup(state, event)
    assert action is not None
    assert action.name == name
    assert next_state(action) == target
    machine = Machine(state)
    assert machine.handle(event) is action
    assert machine.state == target


def test_two_way_cells() -> None:
    ae6 = lookup(S.STA2, E.EVT6)
    assert ae6 is not None and ae6.name == "AE-6"
    assert next_state(ae6, acceptable=True) == S.STA3
    assert next_state(ae6, acceptable=False) == S.STA13
    ar8 = lookup(S.STA7, E.EVT12)
    assert ar8 is not None and ar8.name == "AR-8"
    assert next_state(ar8, requestor=True) == S.STA9
    assert next_state(ar8, requestor=False) == S.STA10
    # the flags only matter to the action they belong to
    dt2 = ACTIONS["DT-2"]
    assert next_state(dt2, acceptable=False, requestor=False) == S.STA6


def test_next_state_refuses_an_unknown_two_way_action() -> None:
    odd = Action("XX-1", "made up", (S.STA1, S.STA2))
    with pytest.raises(ValueError):
        next_state(odd)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.STA1, E.EVT2),
        (S.STA1, E.EVT15),  # nothing to abort
        (S.STA2, E.EVT15),  # the local user has not seen the association yet
        (S.STA13, E.EVT15),  # the association no longer exists
        (S.STA4, E.EVT1),
        (S.STA5, E.EVT9),  # no P-DATA before the association is accepted
        (S.STA7, E.EVT9),  # no P-DATA after our A-RELEASE request (PS3.8 §7.2.2)
        (S.STA6, E.EVT14),
        (S.STA7, E.EVT11),
        (S.STA10, E.EVT14),  # the collision acceptor waits for the A-RELEASE-RP first
        (S.STA11, E.EVT14),
        (S.STA3, E.EVT18),
        (S.STA6, E.EVT18),  # ARTIM only runs in Sta2 and Sta13
    ],
)
def test_empty_cells(state: State, event: Event) -> None:
    assert event not in TRANSITIONS[state]
    assert lookup(state, event) is None


def test_local_primitives_only_where_the_table_allows_them() -> None:
    allowed = {
        (state, event)
        for state, row in TRANSITIONS.items()
        for event in row
        if event in LOCAL_PRIMITIVES
    }
    assert allowed == {
        (S.STA1, E.EVT1),
        (S.STA3, E.EVT7),
        (S.STA3, E.EVT8),
        (S.STA6, E.EVT9),
        (S.STA8, E.EVT9),
        (S.STA6, E.EVT11),
        (S.STA8, E.EVT14),
        (S.STA9, E.EVT14),
        (S.STA12, E.EVT14),
        *((s, E.EVT15) for s in (S.STA3, S.STA4, S.STA5, S.STA6, S.STA7, S.STA8)),
        *((s, E.EVT15) for s in (S.STA9, S.STA10, S.STA11, S.STA12)),
    }


def test_event_classes() -> None:
    assert set(PDU_EVENTS) | {E.EVT17} == PEER_EVENTS
    assert not PEER_EVENTS & LOCAL_PRIMITIVES
    assert set(Event) - PEER_EVENTS - LOCAL_PRIMITIVES == {E.EVT2, E.EVT5, E.EVT18}
    assert set(State) - CONNECTED_STATES == {S.STA1, S.STA4}


@pytest.mark.parametrize("state", sorted(CONNECTED_STATES))
@pytest.mark.parametrize("event", sorted(PEER_EVENTS))
def test_every_peer_event_has_a_cell_in_every_connected_state(state: State, event: Event) -> None:
    assert lookup(state, event) is not None


@pytest.mark.parametrize("state", [S.STA3, *(State(i) for i in range(5, 13))])
@pytest.mark.parametrize("event", PDU_EVENTS)
def test_unexpected_pdu_in_an_association_aborts(state: State, event: Event) -> None:
    """Outside Sta2 and Sta13, a PDU that does not belong to the state is answered with AA-8,
    an A-ABORT PDU is answered with AA-3."""
    action = lookup(state, event)
    assert action is not None
    expected_normal = {
        (S.STA5, E.EVT3),
        (S.STA5, E.EVT4),
        (S.STA6, E.EVT10),
        (S.STA6, E.EVT12),
        (S.STA7, E.EVT10),
        (S.STA7, E.EVT12),
        (S.STA7, E.EVT13),
        (S.STA10, E.EVT13),
        (S.STA11, E.EVT13),
    }
    if (state, event) in expected_normal:
        assert action.name.startswith(("AE", "DT", "AR"))
    elif event == E.EVT16:
        assert action.name == "AA-3"
    else:
        assert action.name == "AA-8"


@pytest.mark.parametrize("event", PDU_EVENTS)
def test_no_pdu_without_a_transport(event: Event) -> None:
    assert lookup(S.STA1, event) is None
    assert lookup(S.STA4, event) is None


# --- the Machine -----------------------------------------------------------------------------


def walk(machine: Machine, steps: list[tuple[Event, str, State]], **flags: bool) -> None:
    for event, name, state in steps:
        action = machine.handle(event, **flags)
        assert (action.name, machine.state) == (name, state), event


def test_machine_starts_idle() -> None:
    assert Machine().state == S.STA1
    assert repr(Machine(S.STA6)) == "<Machine Sta6>"


def test_requestor_normal_association() -> None:
    machine = Machine()
    walk(
        machine,
        [
            (E.EVT1, "AE-1", S.STA4),  # A-ASSOCIATE request: connect
            (E.EVT2, "AE-2", S.STA5),  # connected: send A-ASSOCIATE-RQ
            (E.EVT3, "AE-3", S.STA6),  # A-ASSOCIATE-AC received
            (E.EVT9, "DT-1", S.STA6),  # send P-DATA-TF
            (E.EVT10, "DT-2", S.STA6),  # receive P-DATA-TF
            (E.EVT9, "DT-1", S.STA6),
            (E.EVT10, "DT-2", S.STA6),
            (E.EVT11, "AR-1", S.STA7),  # send A-RELEASE-RQ
            (E.EVT10, "AR-6", S.STA7),  # a late P-DATA-TF still arrives
            (E.EVT13, "AR-3", S.STA1),  # A-RELEASE-RP received: close
        ],
        requestor=True,
    )


def test_requestor_rejected() -> None:
    walk(
        Machine(),
        [(E.EVT1, "AE-1", S.STA4), (E.EVT2, "AE-2", S.STA5), (E.EVT4, "AE-4", S.STA1)],
    )


def test_acceptor_normal_association() -> None:
    machine = Machine()
    walk(
        machine,
        [
            (E.EVT5, "AE-5", S.STA2),  # connection accepted, ARTIM started
            (E.EVT6, "AE-6", S.STA3),  # A-ASSOCIATE-RQ received and acceptable
            (E.EVT7, "AE-7", S.STA6),  # local user accepts: send A-ASSOCIATE-AC
            (E.EVT10, "DT-2", S.STA6),
            (E.EVT9, "DT-1", S.STA6),
            (E.EVT12, "AR-2", S.STA8),  # A-RELEASE-RQ received
            (E.EVT9, "AR-7", S.STA8),  # a last P-DATA-TF before answering
            (E.EVT14, "AR-4", S.STA13),  # send A-RELEASE-RP, start ARTIM
            (E.EVT17, "AR-5", S.STA1),  # the requestor closed the connection
        ],
        requestor=False,
        acceptable=True,
    )


def test_acceptor_rejects() -> None:
    walk(
        Machine(),
        [
            (E.EVT5, "AE-5", S.STA2),
            (E.EVT6, "AE-6", S.STA3),
            (E.EVT8, "AE-8", S.STA13),  # local user rejects: send A-ASSOCIATE-RJ
            (E.EVT18, "AA-2", S.STA1),  # peer never closed: ARTIM expired, close
        ],
    )


def test_provider_rejects_unacceptable_request() -> None:
    walk(
        Machine(),
        [
            (E.EVT5, "AE-5", S.STA2),
            (E.EVT6, "AE-6", S.STA13),  # not acceptable: A-ASSOCIATE-RJ sent by the provider
            (E.EVT17, "AR-5", S.STA1),
        ],
        acceptable=False,
    )


def test_acceptor_artim_expires_before_a_request() -> None:
    walk(Machine(), [(E.EVT5, "AE-5", S.STA2), (E.EVT18, "AA-2", S.STA1)])


def test_release_collision_requestor_side() -> None:
    """PS3.8 §7.2.2: the association-requestor answers the collision first."""
    walk(
        Machine(S.STA6),
        [
            (E.EVT11, "AR-1", S.STA7),  # we send A-RELEASE-RQ
            (E.EVT12, "AR-8", S.STA9),  # and receive the peer's: collision, requestor side
            (E.EVT14, "AR-9", S.STA11),  # our A-RELEASE response: send A-RELEASE-RP
            (E.EVT13, "AR-3", S.STA1),  # the peer's A-RELEASE-RP: confirmation, close
        ],
        requestor=True,
    )


def test_release_collision_acceptor_side() -> None:
    walk(
        Machine(S.STA6),
        [
            (E.EVT11, "AR-1", S.STA7),
            (E.EVT12, "AR-8", S.STA10),  # collision, acceptor side: wait for the A-RELEASE-RP
            (E.EVT13, "AR-10", S.STA12),  # A-RELEASE-RP received: confirmation
            (E.EVT14, "AR-4", S.STA13),  # our A-RELEASE response: send A-RELEASE-RP, ARTIM
            (E.EVT17, "AR-5", S.STA1),
        ],
        requestor=False,
    )


def test_both_sides_of_a_collision_together() -> None:
    """Two machines, each feeding what the other sends, end released."""
    requestor, acceptor = Machine(S.STA6), Machine(S.STA6)
    assert requestor.handle(E.EVT11).name == "AR-1"  # both send A-RELEASE-RQ
    assert acceptor.handle(E.EVT11).name == "AR-1"
    assert requestor.handle(E.EVT12, requestor=True).name == "AR-8"
    assert acceptor.handle(E.EVT12, requestor=False).name == "AR-8"
    assert requestor.handle(E.EVT14).name == "AR-9"  # requestor sends A-RELEASE-RP
    assert acceptor.handle(E.EVT13).name == "AR-10"  # acceptor receives it
    assert acceptor.handle(E.EVT14).name == "AR-4"  # acceptor sends A-RELEASE-RP
    assert requestor.handle(E.EVT13).name == "AR-3"  # requestor receives it and closes
    assert acceptor.handle(E.EVT17).name == "AR-5"
    assert requestor.state == acceptor.state == S.STA1


ABORTABLE = [S.STA3, S.STA5, S.STA6, S.STA7, S.STA8, S.STA9, S.STA10, S.STA11, S.STA12]


@pytest.mark.parametrize("state", ABORTABLE)
def test_local_abort(state: State) -> None:
    machine = Machine(state)
    walk(
        machine,
        [
            (E.EVT15, "AA-1", S.STA13),  # send A-ABORT, start ARTIM
            (E.EVT17, "AR-5", S.STA1),  # the peer closed the connection
        ],
    )


def test_local_abort_while_connecting() -> None:
    machine = Machine(S.STA4)
    assert machine.handle(E.EVT15).name == "AA-2"
    assert machine.state == S.STA1


@pytest.mark.parametrize("state", ABORTABLE)
def test_peer_abort(state: State) -> None:
    machine = Machine(state)
    assert machine.handle(E.EVT16).name == "AA-3"
    assert machine.state == S.STA1


@pytest.mark.parametrize("state", [S.STA2, S.STA13])
def test_peer_abort_without_association(state: State) -> None:
    machine = Machine(state)
    assert machine.handle(E.EVT16).name == "AA-2"
    assert machine.state == S.STA1


@pytest.mark.parametrize("state", [S.STA3, S.STA4, *ABORTABLE[1:]])
def test_transport_lost(state: State) -> None:
    machine = Machine(state)
    assert machine.handle(E.EVT17).name == "AA-4"  # A-P-ABORT indication
    assert machine.state == S.STA1


@pytest.mark.parametrize("state", [S.STA3, *ABORTABLE[1:]])
def test_invalid_pdu_aborts(state: State) -> None:
    machine = Machine(state)
    assert machine.handle(E.EVT19).name == "AA-8"
    assert machine.state == S.STA13


def test_abort_then_peer_keeps_talking() -> None:
    walk(
        Machine(S.STA6),
        [
            (E.EVT15, "AA-1", S.STA13),
            (E.EVT10, "AA-6", S.STA13),  # ignored
            (E.EVT6, "AA-7", S.STA13),  # a new A-ASSOCIATE-RQ: A-ABORT again
            (E.EVT18, "AA-2", S.STA1),  # ARTIM expired: close
        ],
    )


@pytest.mark.parametrize("event", sorted(LOCAL_PRIMITIVES - {E.EVT1}))
def test_local_primitive_in_wrong_state_raises(event: Event) -> None:
    machine = Machine(S.STA1)
    with pytest.raises(LocalProtocolError, match=rf"{event.label}\b.*Sta1"):
        machine.handle(event)
    assert machine.state == S.STA1


def test_p_data_after_release_request_raises() -> None:
    machine = Machine(S.STA7)
    with pytest.raises(LocalProtocolError, match="not allowed"):
        machine.handle(E.EVT9)
    assert machine.state == S.STA7


@pytest.mark.parametrize("state", [S.STA1, S.STA4])
@pytest.mark.parametrize("event", PDU_EVENTS)
def test_pdu_without_transport_raises(state: State, event: Event) -> None:
    machine = Machine(state)
    with pytest.raises(LocalProtocolError, match="no transport connection"):
        machine.handle(event)
    assert machine.state == state


def test_transport_closed_in_idle_raises() -> None:
    with pytest.raises(LocalProtocolError, match="no transport connection"):
        Machine(S.STA1).handle(E.EVT17)


def test_stale_artim_raises() -> None:
    with pytest.raises(LocalProtocolError, match="no entry"):
        Machine(S.STA6).handle(E.EVT18)


@given(
    start=st.sampled_from(list(State)),
    events=st.lists(
        st.tuples(st.sampled_from(list(Event)), st.booleans(), st.booleans()), max_size=60
    ),
)
def test_random_event_sequences(start: State, events: list[tuple[Event, bool, bool]]) -> None:
    machine = Machine(start)
    for event, acceptable, requestor in events:
        before = machine.state
        try:
            action = machine.handle(event, acceptable=acceptable, requestor=requestor)
        except LocalProtocolError:
            assert not (event in PEER_EVENTS and before in CONNECTED_STATES)
            assert lookup(before, event) is None
            assert machine.state == before
        else:
            assert machine.state in action.next_states
        assert isinstance(machine.state, State)


@given(
    start=st.sampled_from(sorted(CONNECTED_STATES)),
    events=st.lists(st.sampled_from(sorted(PEER_EVENTS)), max_size=60),
    acceptable=st.booleans(),
    requestor=st.booleans(),
)
def test_peer_events_never_raise_while_connected(
    start: State, events: list[Event], acceptable: bool, requestor: bool
) -> None:
    machine = Machine(start)
    for event in events:
        if machine.state not in CONNECTED_STATES:
            break  # Sta1: the transport is gone, nothing more can arrive
        machine.handle(event, acceptable=acceptable, requestor=requestor)
        assert machine.state in State


# --- ARTIM -----------------------------------------------------------------------------------


def test_artim_stopped_by_default() -> None:
    artim = Artim(30.0)
    assert artim.timeout == 30.0
    assert not artim.running
    assert artim.deadline is None
    assert artim.remaining(100.0) is None
    assert not artim.expired(1e12)


def test_artim_deadline() -> None:
    artim = Artim(30.0)
    artim.start(100.0)
    assert artim.running
    assert artim.deadline == 130.0
    assert artim.remaining(110.0) == 20.0
    assert not artim.expired(129.999)
    assert artim.expired(130.0)
    assert artim.expired(200.0)
    assert artim.remaining(200.0) == 0.0


def test_artim_restart_moves_the_deadline() -> None:
    """AA-1: "start (or restart if already started) ARTIM timer"."""
    artim = Artim(10.0)
    artim.start(0.0)
    artim.start(5.0)
    assert artim.deadline == 15.0
    assert not artim.expired(12.0)


def test_artim_stop() -> None:
    artim = Artim(10.0)
    artim.start(0.0)
    artim.stop()
    assert not artim.running
    assert artim.deadline is None
    assert not artim.expired(100.0)
    assert artim.remaining(100.0) is None
    artim.stop()  # AA-2: "stop ARTIM timer if running" — stopping twice is harmless


def test_artim_zero_and_infinite_timeouts() -> None:
    now_expired = Artim(0.0)
    now_expired.start(5.0)
    assert now_expired.expired(5.0)
    never = Artim(math.inf)
    never.start(5.0)
    assert not never.expired(1e300)
    assert never.remaining(1e300) == math.inf


@pytest.mark.parametrize("timeout", [-1.0, math.nan])
def test_artim_rejects_bad_timeouts(timeout: float) -> None:
    with pytest.raises(ValueError):
        Artim(timeout)


def test_artim_drives_the_machine() -> None:
    """The caller's loop: start on AE-5, feed Evt18 once expired, AA-2 closes."""
    machine, artim = Machine(), Artim(30.0)
    assert machine.handle(E.EVT5).name == "AE-5"
    artim.start(now=1000.0)
    assert not artim.expired(1029.0)
    assert artim.expired(1030.5)
    assert machine.handle(E.EVT18).name == "AA-2"
    artim.stop()
    assert machine.state == S.STA1


# --- generated docs --------------------------------------------------------------------------


def test_describe_table() -> None:
    text = describe_table()
    lines = text.splitlines()
    assert lines[0].startswith("| Event | Sta1 | Sta2 |") and lines[0].endswith("Sta13 |")
    rows = [line for line in lines if line.startswith("| Evt")]
    assert len(rows) == 19
    assert all(row.count("|") == 15 for row in rows)
    evt6 = next(row for row in rows if row.startswith("| Evt6 "))
    assert "AE-6 → Sta3/Sta13" in evt6
    evt1 = rows[0].split("|")
    assert evt1[2].strip() == "AE-1 → Sta4" and all(not c.strip() for c in evt1[3:-1])
    for name, action in ACTIONS.items():
        assert f"| {name} | {action.description} |" in text
    cells = sum(len(row) for row in TRANSITIONS.values())
    assert text.count(" → ") == cells
