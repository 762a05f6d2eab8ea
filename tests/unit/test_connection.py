"""The sans-I/O Connection as requestor and acceptor (PS3.8 §9.2, Table 9-10): establishment,
rejection, data transfer, release and release collision, abort, ARTIM, every received PDU in
every state answered as the table says, without an exception escaping, and every outgoing message
driving the table (Evt9: DT-1, AR-7, or a refusal)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomnet import fsm
from dicomnet.connection import (
    _ACTIONS,
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
from dicomnet.dimse.commands import CEchoRQ, CStoreRQ, encode_command_set
from dicomnet.dimse.fragments import (
    CommandReceived,
    DatasetFragment,
    FramedMessage,
    frame_message,
)
from dicomnet.errors import LocalProtocolError
from dicomnet.fsm import Event, State
from dicomnet.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
    PDV,
    MaximumLength,
    PresentationContextACItem,
    PresentationContextRQItem,
    UserInformation,
    decode,
    encode,
)

VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
ARTIM = 30.0

RQ = A_ASSOCIATE_RQ(
    "ACCEPTOR",
    "REQUESTOR",
    [
        PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE]),
        PresentationContextRQItem(3, CT_STORAGE, [IMPLICIT_LE]),
    ],
    UserInformation([MaximumLength(16384)]),
)
AC = A_ASSOCIATE_AC(
    "ACCEPTOR",
    "REQUESTOR",
    [PresentationContextACItem(1, 0, IMPLICIT_LE), PresentationContextACItem(3, 0, IMPLICIT_LE)],
    UserInformation([MaximumLength(16384)]),
)
RJ = A_ASSOCIATE_RJ(1, 1, 7)
ECHO = CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION).encode()


def pdata(
    context_id: int, command: bytes, dataset: bytes | None = None, max_pdu: int = 16384
) -> bytes:
    """A message's P-DATA-TF PDUs, as a peer would send them."""
    if dataset is None:
        return frame_message(context_id, command, None, max_pdu).command
    return b"".join(frame_message(context_id, command, len(dataset), max_pdu).with_data(dataset))


def echo_pdata(context_id: int = 1) -> bytes:
    return pdata(context_id, ECHO)


def aborts(data: list[bytes]) -> list[A_ABORT]:
    out = []
    for raw in data:
        pdu = decode(raw)
        assert isinstance(pdu, A_ABORT), pdu
        out.append(pdu)
    return out


def feed(conn: Connection, data: bytes, now: float = 0.0) -> list[ConnectionEvent]:
    conn.receive_data(data)
    return conn.next_events(now)


# --- reaching each state ------------------------------------------------------------------------


def acceptor_sta2() -> Connection:
    acc = Connection(Role.ACCEPTOR, artim_timeout=ARTIM)
    acc.connection_made(0.0)
    return acc


def acceptor_sta3() -> Connection:
    acc = acceptor_sta2()
    assert feed(acc, encode(RQ)) == [AssociateRequested(RQ)]
    return acc


def requestor_sta5() -> Connection:
    req = Connection(Role.REQUESTOR, artim_timeout=ARTIM)
    assert decode(req.request(RQ)) == RQ
    return req


def established(role: Role) -> Connection:
    if role is Role.ACCEPTOR:
        acc = acceptor_sta3()
        assert decode(acc.accept(AC, {1, 3})) == AC
        return acc
    req = requestor_sta5()
    assert feed(req, encode(AC)) == [AssociateAccepted(AC)]
    req.accepted_contexts = {1, 3}
    return req


def sta7(role: Role) -> Connection:
    conn = established(role)
    assert decode(conn.release_request()) == A_RELEASE_RQ()
    return conn


def sta8(role: Role) -> Connection:
    conn = established(role)
    assert feed(conn, encode(A_RELEASE_RQ())) == [ReleaseRequested()]
    return conn


def sta9() -> Connection:  # release collision, requestor side
    conn = sta7(Role.REQUESTOR)
    assert feed(conn, encode(A_RELEASE_RQ())) == [ReleaseRequested()]
    return conn


def sta10() -> Connection:  # release collision, acceptor side
    conn = sta7(Role.ACCEPTOR)
    assert feed(conn, encode(A_RELEASE_RQ())) == [ReleaseRequested()]
    return conn


def sta11() -> Connection:
    conn = sta9()
    assert decode(conn.release_response()) == A_RELEASE_RP()
    return conn


def sta12() -> Connection:
    conn = sta10()
    assert feed(conn, encode(A_RELEASE_RP())) == [ReleaseConfirmed()]
    return conn


def sta13() -> Connection:
    acc = acceptor_sta3()
    assert decode(acc.reject(RJ)) == RJ
    return acc


STATES: dict[State, Callable[[], Connection]] = {
    State.STA2: acceptor_sta2,
    State.STA3: acceptor_sta3,
    State.STA5: requestor_sta5,
    State.STA6: lambda: established(Role.ACCEPTOR),
    State.STA7: lambda: sta7(Role.REQUESTOR),
    State.STA8: lambda: sta8(Role.ACCEPTOR),
    State.STA9: sta9,
    State.STA10: sta10,
    State.STA11: sta11,
    State.STA12: sta12,
    State.STA13: sta13,
}


def test_each_state_is_reached() -> None:
    for state, make in STATES.items():
        assert make().state is state


# --- the normal sequences, two connections against each other -----------------------------------


class Pair:
    """A requestor and an acceptor whose bytes are carried by hand."""

    def __init__(self) -> None:
        self.req = Connection(Role.REQUESTOR, artim_timeout=ARTIM)
        self.acc = Connection(Role.ACCEPTOR, artim_timeout=ARTIM)
        self.acc.connection_made(0.0)

    def to_acc(self, data: bytes) -> list[ConnectionEvent]:
        return feed(self.acc, data)

    def to_req(self, data: bytes) -> list[ConnectionEvent]:
        return feed(self.req, data)

    def associate(self) -> None:
        assert self.to_acc(self.req.request(RQ)) == [AssociateRequested(RQ)]
        assert self.to_req(self.acc.accept(AC, {1, 3})) == [AssociateAccepted(AC)]
        self.req.accepted_contexts = {1, 3}
        assert self.req.established and self.acc.established


def test_associate_and_release() -> None:
    p = Pair()
    assert p.acc.deadline == ARTIM  # AE-5 started ARTIM
    assert p.req.state is State.STA1
    rq_bytes = p.req.request(RQ)
    assert p.req.state is State.STA5  # AE-1 then AE-2
    assert p.to_acc(rq_bytes) == [AssociateRequested(RQ)]
    assert p.acc.state is State.STA3
    assert p.acc.deadline is None  # AE-6 stopped ARTIM
    assert p.to_req(p.acc.accept(AC, {1, 3})) == [AssociateAccepted(AC)]
    assert p.req.state is p.acc.state is State.STA6

    assert p.to_acc(p.req.release_request()) == [ReleaseRequested()]
    assert (p.req.state, p.acc.state) == (State.STA7, State.STA8)
    rp = p.acc.release_response()
    assert decode(rp) == A_RELEASE_RP()
    assert p.acc.state is State.STA13 and p.acc.deadline is not None  # AR-4
    assert p.to_req(rp) == [ReleaseConfirmed(), Closed()]  # AR-3
    assert p.req.state is State.STA1 and p.req.must_close
    assert p.acc.connection_lost(1.0) == [Closed()]  # AR-5
    assert p.acc.state is State.STA1 and p.acc.deadline is None
    assert p.req.data_to_send() == [] and p.acc.data_to_send() == []


def test_acceptor_releases() -> None:
    """Either side may request the release."""
    p = Pair()
    p.associate()
    assert p.to_req(p.acc.release_request()) == [ReleaseRequested()]
    assert p.to_acc(p.req.release_response()) == [ReleaseConfirmed(), Closed()]
    assert p.req.state is State.STA13
    assert p.req.connection_lost(0.0) == [Closed()]


def test_reject() -> None:
    p = Pair()
    assert p.to_acc(p.req.request(RQ)) == [AssociateRequested(RQ)]
    rj = p.acc.reject(RJ)
    assert p.acc.state is State.STA13 and p.acc.deadline == ARTIM  # AE-8
    assert p.to_req(rj) == [AssociateRejected(RJ), Closed()]  # AE-4
    assert p.req.state is State.STA1 and p.req.must_close
    assert p.acc.connection_lost(1.0) == [Closed()]


def test_data_transfer_both_ways() -> None:
    p = Pair()
    p.associate()
    dataset = bytes(range(256)) * 200
    command = CStoreRQ(
        message_id=9, affected_sop_class_uid=CT_STORAGE, affected_sop_instance_uid="1.2.3"
    ).encode()
    framed = p.req.send_message(3, command, len(dataset), 16384)
    assert len(framed.dataset) == 4  # 51,200 bytes at 16,378 a PDV
    events: list[ConnectionEvent] = []
    received = bytearray()
    for part in framed.with_data(dataset):  # headers and data slices, fed one by one
        for event in p.to_acc(bytes(part)):
            events.append(event)
            if isinstance(event, DatasetFragment):
                assert isinstance(event.data, memoryview)
                received += event.data
    commands = [e for e in events if isinstance(e, CommandReceived)]
    assert len(commands) == 1 and commands[0].context_id == 3
    assert isinstance(commands[0].message, CStoreRQ)
    assert bytes(received) == dataset
    assert [e.is_last for e in events if isinstance(e, DatasetFragment)][-1]
    back = p.to_req(p.acc.send_message(1, ECHO, None, 16384).command)
    assert [type(e) for e in back] == [CommandReceived]


def test_pdata_while_awaiting_the_release_reply() -> None:
    """AR-7: the side that received A-RELEASE-RQ may still send P-DATA (Sta8); AR-6: the
    requestor of the release still receives it (Sta7)."""
    p = Pair()
    p.associate()
    assert p.to_acc(p.req.release_request()) == [ReleaseRequested()]
    with pytest.raises(LocalProtocolError):
        p.req.send_message(1, ECHO, None, 16384)  # Sta7: no Evt9
    events = p.to_req(p.acc.send_message(1, ECHO, None, 16384).command)  # Sta8: AR-7
    assert [type(e) for e in events] == [CommandReceived]
    assert p.req.state is State.STA7
    assert p.to_req(p.acc.release_response()) == [ReleaseConfirmed(), Closed()]


def test_release_collision() -> None:
    """PS3.8 §9.2: both sides send A-RELEASE-RQ; the requestor's side answers first (Sta9 ->
    Sta11), the acceptor's side waits for that A-RELEASE-RP (Sta10 -> Sta12)."""
    p = Pair()
    p.associate()
    from_req = p.req.release_request()
    from_acc = p.acc.release_request()
    assert p.req.state is p.acc.state is State.STA7
    assert p.to_req(from_acc) == [ReleaseRequested()]  # AR-8
    assert p.to_acc(from_req) == [ReleaseRequested()]  # AR-8
    assert (p.req.state, p.acc.state) == (State.STA9, State.STA10)
    with pytest.raises(LocalProtocolError):
        p.acc.release_response()  # the acceptor side must wait (no Evt14 in Sta10)
    rp1 = p.req.release_response()  # AR-9
    assert p.req.state is State.STA11
    assert p.to_acc(rp1) == [ReleaseConfirmed()]  # AR-10
    assert p.acc.state is State.STA12
    rp2 = p.acc.release_response()  # AR-4
    assert p.acc.state is State.STA13
    assert p.to_req(rp2) == [ReleaseConfirmed(), Closed()]  # AR-3
    assert p.req.state is State.STA1
    assert p.acc.connection_lost(0.0) == [Closed()]  # AR-5
    assert p.acc.state is State.STA1


@pytest.mark.parametrize("who", ["req", "acc"])
def test_user_abort(who: str) -> None:
    p = Pair()
    p.associate()
    me, peer = (p.req, p.acc) if who == "req" else (p.acc, p.req)
    raw = me.abort()
    assert decode(raw) == A_ABORT(0, 0)  # service-user source
    assert me.state is State.STA13 and me.deadline is not None  # AA-1
    events = feed(peer, raw)
    assert events == [Aborted(0, 0, by_peer=True, message="A-ABORT received"), Closed()]  # AA-3
    assert peer.state is State.STA1 and peer.must_close
    assert me.connection_lost(0.0) == [Closed()]  # AR-5 in Sta13


def test_abort_with_a_provider_reason() -> None:
    conn = established(Role.REQUESTOR)
    assert decode(conn.abort(2, 6)) == A_ABORT(2, 6)


@pytest.mark.parametrize("make", [lambda: Connection(Role.REQUESTOR), acceptor_sta2, sta13])
def test_abort_where_there_is_nothing_to_abort(make: Callable[[], Connection]) -> None:
    """No Evt15 cell in Sta1, Sta2 and Sta13: nothing is sent, the transport is just closed."""
    conn = make()
    assert conn.abort() == b""
    assert conn.must_close


def test_abort_before_the_answer() -> None:
    """AA-1 in Sta5 (requestor waiting for the AC) and Sta3 (acceptor deciding)."""
    for conn in (requestor_sta5(), acceptor_sta3()):
        assert decode(conn.abort()) == A_ABORT(0, 0)
        assert conn.state is State.STA13


# --- ARTIM --------------------------------------------------------------------------------------


def test_artim_expires_while_waiting_for_the_rq() -> None:
    acc = acceptor_sta2()
    assert acc.deadline == ARTIM
    assert acc.timer_check(ARTIM - 0.001) == []
    assert acc.state is State.STA2
    assert acc.timer_check(ARTIM) == [Closed()]  # Evt18 -> AA-2
    assert acc.state is State.STA1 and acc.must_close
    assert acc.deadline is None
    assert acc.data_to_send() == []


def test_artim_expires_after_a_reject() -> None:
    acc = Connection(Role.ACCEPTOR, artim_timeout=5.0)
    acc.connection_made(100.0)
    feed(acc, encode(RQ), now=101.0)
    acc.reject(RJ)
    assert acc.deadline == 106.0  # without ``now``: the last time the connection saw
    assert acc.timer_check(105.5) == []
    assert acc.timer_check(106.0) == [Closed()]
    assert acc.state is State.STA1


def test_artim_starts_when_the_answer_is_given() -> None:
    """A service that took 40 s to decide must not find ARTIM already expired (AE-8, AR-4 and
    AA-1 start ARTIM at the time of the primitive)."""
    acc = Connection(Role.ACCEPTOR, artim_timeout=5.0)
    acc.connection_made(100.0)
    feed(acc, encode(RQ), now=101.0)
    acc.reject(RJ, now=141.0)
    assert acc.deadline == 146.0
    assert acc.timer_check(142.0) == []
    conn = sta8(Role.ACCEPTOR)
    conn.release_response(now=50.0)
    assert conn.deadline == 50.0 + ARTIM
    conn = established(Role.REQUESTOR)
    conn.abort(now=60.0)
    assert conn.deadline == 60.0 + ARTIM


def test_artim_after_release_response_and_abort() -> None:
    conn = sta8(Role.ACCEPTOR)
    conn.release_response()
    assert conn.deadline is not None
    assert conn.timer_check(conn.deadline) == [Closed()]
    conn = established(Role.REQUESTOR)
    conn.abort()
    assert conn.deadline is not None
    assert conn.timer_check(conn.deadline) == [Closed()]


def test_artim_is_not_running_during_the_association() -> None:
    assert established(Role.ACCEPTOR).deadline is None
    assert established(Role.REQUESTOR).deadline is None
    assert requestor_sta5().deadline is None


def test_pdata_before_the_association_is_aborted() -> None:
    """Evt10 in Sta2: AA-1, A-ABORT sent, ARTIM (re)started, Sta13; then ARTIM closes."""
    acc = acceptor_sta2()
    events = feed(acc, echo_pdata(), now=3.0)
    assert [type(e) for e in events] == [Aborted]
    assert aborts(acc.data_to_send()) == [A_ABORT(2, 2)]
    assert acc.state is State.STA13
    assert acc.deadline == 3.0 + ARTIM
    assert acc.timer_check(3.0 + ARTIM) == [Closed()]


# --- every received PDU in every state (PS3.8 Table 9-10) ----------------------------------------

PDUS: dict[str, tuple[Event, bytes]] = {
    "A-ASSOCIATE-AC": (Event.EVT3, encode(AC)),
    "A-ASSOCIATE-RJ": (Event.EVT4, encode(RJ)),
    "A-ASSOCIATE-RQ": (Event.EVT6, encode(RQ)),
    "P-DATA-TF": (Event.EVT10, echo_pdata()),
    "A-RELEASE-RQ": (Event.EVT12, encode(A_RELEASE_RQ())),
    "A-RELEASE-RP": (Event.EVT13, encode(A_RELEASE_RP())),
    "A-ABORT": (Event.EVT16, encode(A_ABORT(0, 0))),
    "unknown PDU type": (Event.EVT19, b"\x09\x00\x00\x00\x00\x04\x00\x00\x00\x00"),
    "malformed A-RELEASE-RQ": (Event.EVT19, b"\x05\x00\x00\x00\x00\x02\x00\x00"),
    "P-DATA-TF without PDV": (Event.EVT19, b"\x04\x00\x00\x00\x00\x00"),
    "truncated A-ASSOCIATE-RQ": (Event.EVT19, b"\x01\x00\x00\x00\x00\x10" + b"\x00" * 16),
}


@pytest.mark.parametrize("state", list(STATES), ids=lambda s: s.label)
@pytest.mark.parametrize("name", list(PDUS))
def test_received_pdu_follows_table_9_10(state: State, name: str) -> None:
    event, raw = PDUS[name]
    conn = STATES[state]()
    conn.data_to_send()
    action = fsm.lookup(state, event)
    assert action is not None  # a peer event has a cell in every connected state
    events = feed(conn, raw, now=10.0)  # never raises
    sent = conn.data_to_send()
    kinds = [type(e) for e in events]
    name_ = action.name
    if name_ in ("AE-3", "AE-4", "AE-6"):
        expected = {
            "AE-3": [AssociateAccepted],
            "AE-4": [AssociateRejected, Closed],
            "AE-6": [AssociateRequested],
        }[name_]
        assert kinds == expected and sent == []
    elif name_ in ("DT-2", "AR-6"):
        assert kinds == [CommandReceived] and sent == []
    elif name_ in ("AR-2", "AR-8"):
        assert kinds == [ReleaseRequested] and sent == []
    elif name_ == "AR-3":
        assert kinds == [ReleaseConfirmed, Closed] and sent == []
    elif name_ == "AR-10":
        assert kinds == [ReleaseConfirmed] and sent == []
    elif name_ in ("AA-1", "AA-8"):
        # an A-ABORT from the provider, an A-P-ABORT indication, ARTIM running
        [abort] = aborts(sent)
        assert abort.source == 2
        [aborted] = [e for e in events if isinstance(e, Aborted)]
        assert not aborted.by_peer
        assert (aborted.source, aborted.reason) == (abort.source, abort.reason)
        # PS3.8 Table 9-26: 2 unexpected-PDU for a valid PDU out of place, 1 unrecognized-PDU
        # for an unknown PDU type, 6 invalid-PDU-parameter value for a known one we cannot use
        expected_reason = 2 if event is not Event.EVT19 else 1 if name == "unknown PDU type" else 6
        assert abort.reason == expected_reason
        assert conn.deadline == 10.0 + ARTIM
    elif name_ == "AA-2":
        assert kinds == [Closed] and sent == []
    elif name_ == "AA-3":
        assert kinds == [Aborted, Closed] and sent == []
        assert events[0] == Aborted(0, 0, by_peer=True, message="A-ABORT received")
    elif name_ == "AA-6":
        assert kinds == [] and sent == []
    elif name_ == "AA-7":
        [abort] = aborts(sent)
        assert abort.source == 2
    else:
        pytest.fail(f"unexpected action {name_}")
    # the machine moved to the action's next state
    assert conn.state in action.next_states
    if conn.state in (State.STA1, State.STA13) and name_ not in ("AA-6", "AA-7"):
        assert conn.must_close or conn.state is State.STA13


@pytest.mark.parametrize("state", list(STATES), ids=lambda s: s.label)
def test_transport_closed_in_each_state(state: State) -> None:
    """Evt17: AA-5 in Sta2, AR-5 in Sta13, AA-4 (A-P-ABORT indication) elsewhere."""
    conn = STATES[state]()
    events = conn.connection_lost(1.0)
    action = fsm.lookup(state, Event.EVT17)
    assert action is not None
    if action.name == "AA-4":
        assert [type(e) for e in events] == [Aborted, Closed]
        assert isinstance(events[0], Aborted) and events[0].by_peer
    else:
        assert action.name in ("AA-5", "AR-5")
        assert events == [Closed()]
    assert conn.state is State.STA1
    assert conn.deadline is None
    assert conn.connection_lost(2.0) == []  # once only


def test_transport_closed_in_sta1() -> None:
    assert Connection(Role.REQUESTOR).connection_lost(0.0) == [Closed()]


def test_nothing_is_read_after_an_abort() -> None:
    """After an A-ABORT for a broken PDU the rest of the stream is not interpreted."""
    conn = established(Role.ACCEPTOR)
    events = feed(conn, b"\x09\x00\x00\x00\x00\x00" + echo_pdata() + encode(A_RELEASE_RQ()))
    assert [type(e) for e in events] == [Aborted]
    assert conn.must_close
    assert feed(conn, echo_pdata()) == []


def test_several_pdus_in_one_read() -> None:
    conn = established(Role.ACCEPTOR)
    events = feed(conn, echo_pdata() + echo_pdata() + encode(A_RELEASE_RQ()))
    assert [type(e) for e in events] == [CommandReceived, CommandReceived, ReleaseRequested]
    assert conn.state is State.STA8


def test_pdus_after_a_reject_are_not_processed() -> None:
    """AE-4 closes the transport: what follows the A-ASSOCIATE-RJ in the same read is dropped."""
    req = requestor_sta5()
    events = feed(req, encode(RJ) + encode(A_ABORT()))
    assert events == [AssociateRejected(RJ), Closed()]


# --- bad DIMSE content --------------------------------------------------------------------------


def test_pdata_on_a_context_that_was_not_accepted() -> None:
    conn = established(Role.ACCEPTOR)
    events = feed(conn, echo_pdata(5))
    assert [type(e) for e in events] == [Aborted]
    assert aborts(conn.data_to_send()) == [A_ABORT(2, 6)]  # invalid-PDU-parameter value
    assert conn.state is State.STA13


def test_command_missing_an_element_is_answered_not_aborted() -> None:
    """A command set with a Message ID but without a mandatory element: the service can answer
    it with a failure status; the data set announced after it is dropped."""
    bad = encode_command_set({0x0100: 0x0001, 0x0110: 42, 0x0800: 0x0000, 0x0002: CT_STORAGE})
    conn = established(Role.ACCEPTOR)
    events: list[ConnectionEvent] = []
    framed = frame_message(3, bad, 5000, 1000)
    for pdu in [framed.command, *(h + b"x" * (b - a) for h, a, b in framed.dataset)]:
        events += feed(conn, pdu)
    assert [type(e) for e in events] == [InvalidCommand]
    invalid = events[0]
    assert isinstance(invalid, InvalidCommand)
    assert (invalid.context_id, invalid.message_id, invalid.command_field) == (3, 42, 0x0001)
    assert "(0000,1000)" in str(invalid.error)
    assert conn.data_to_send() == []
    # the association goes on
    assert [type(e) for e in feed(conn, echo_pdata())] == [CommandReceived]
    assert conn.established


def test_command_without_message_id_aborts() -> None:
    bad = encode_command_set({0x0100: 0x0030, 0x0800: 0x0101, 0x0002: VERIFICATION})
    conn = established(Role.ACCEPTOR)
    events = feed(conn, pdata(1, bad))
    assert [type(e) for e in events] == [Aborted]
    assert aborts(conn.data_to_send()) == [A_ABORT(2, 6)]


def test_garbage_command_aborts() -> None:
    conn = established(Role.REQUESTOR)
    events = feed(conn, pdata(1, b"\x01\x02\x03"))
    assert [type(e) for e in events] == [Aborted]
    assert conn.state is State.STA13


def test_data_set_without_command_aborts() -> None:
    conn = established(Role.ACCEPTOR)
    [(header, _start, _stop)] = frame_message(1, ECHO, 4, 16384).dataset
    events = feed(conn, header + b"data")
    assert [type(e) for e in events] == [Aborted]


def test_pdata_larger_than_we_announced_aborts() -> None:
    conn = Connection(Role.ACCEPTOR, max_pdu_length=1000)
    conn.connection_made(0.0)
    feed(conn, encode(RQ))
    conn.accept(AC, {1, 3})
    command = CStoreRQ(
        message_id=1, affected_sop_class_uid=CT_STORAGE, affected_sop_instance_uid="1.2"
    ).encode()
    events = feed(conn, pdata(3, command, b"z" * 5000, 5000))
    # PS3.8 D.1: exceeding the announced maximum "shall be a protocol error"
    assert [type(e) for e in events] == [CommandReceived, Aborted]
    assert aborts(conn.data_to_send()) == [A_ABORT(2, 6)]


# --- outgoing messages drive the table (Evt9) ---------------------------------------------------


def record_table(conn: Connection) -> list[tuple[str, str, str]]:
    """Every (state, event, action) the connection runs through ``fsm.Machine.handle`` from now
    on: the one entry point of Table 9-10."""
    seen: list[tuple[str, str, str]] = []
    handle = conn.machine.handle

    def spy(event: Event, **kwargs: bool) -> fsm.Action:
        state = conn.machine.state
        action = handle(event, **kwargs)
        seen.append((state.label, event.label, action.name))
        return action

    conn.machine.handle = spy  # type: ignore[method-assign]
    return seen


STORE = CStoreRQ(
    message_id=7, affected_sop_class_uid=CT_STORAGE, affected_sop_instance_uid="1.2.3.4"
).encode()


def test_every_action_of_the_table_has_a_method() -> None:
    """Table 9-10 names 28 actions; the connection runs each through its own method."""
    assert set(_ACTIONS) == set(fsm.ACTIONS)
    for name, method in _ACTIONS.items():
        assert method.__name__ == "_" + name.replace("-", "_").lower()


@pytest.mark.parametrize("role", [Role.REQUESTOR, Role.ACCEPTOR])
def test_sending_a_message_fires_dt1_once_in_sta6(role: Role) -> None:
    """PS3.8 Table 9-10: P-DATA request (Evt9) in Sta6 is DT-1, next state Sta6: once per
    message, however many PDUs it takes."""
    conn = established(role)
    seen = record_table(conn)
    framed = conn.send_message(3, STORE, 40_000, 16384)
    assert isinstance(framed, FramedMessage)
    assert len(framed.dataset) == 3  # 16,378 + 16,378 + 7,244 bytes
    assert seen == [("Sta6", "Evt9", "DT-1")]
    assert conn.state is State.STA6
    assert conn.data_to_send() == []  # the PDUs are returned, not queued
    conn.send_message(1, ECHO, None, 16384)
    assert seen[1:] == [("Sta6", "Evt9", "DT-1")]


@pytest.mark.parametrize("role", [Role.REQUESTOR, Role.ACCEPTOR])
def test_sending_while_the_peer_releases_fires_ar7(role: Role) -> None:
    """Evt9 in Sta8 (the peer asked to release, we have not answered) is AR-7: the P-DATA-TF
    goes out and the state stays Sta8 until our A-RELEASE response."""
    conn = sta8(role)
    seen = record_table(conn)
    framed = conn.send_message(3, STORE, 10, 16384)
    assert seen == [("Sta8", "Evt9", "AR-7")]
    assert conn.state is State.STA8
    assert decode(framed.command) == P_DATA_TF([PDV(3, True, True, STORE)])
    assert decode(conn.release_response()) == A_RELEASE_RP()
    assert seen[1:] == [("Sta8", "Evt14", "AR-4")]


# Table 9-10 has an Evt9 cell in Sta6 and Sta8 only (Sta1 and Sta4 have no association yet).
SENDING_REFUSED = [State.STA2, State.STA3, State.STA5, State.STA7, *range(9, 14)]


@pytest.mark.parametrize("state", [State(s) for s in SENDING_REFUSED], ids=lambda s: s.label)
def test_sending_is_refused_where_the_table_has_no_p_data_request(state: State) -> None:
    conn = STATES[state]()
    deadline = conn.deadline
    with pytest.raises(LocalProtocolError, match="Evt9"):
        conn.send_message(1, ECHO, None, 16384)
    assert conn.state is state and conn.deadline == deadline
    assert conn.data_to_send() == [] and not conn.must_close


def test_sending_before_the_association_is_refused() -> None:
    conn = Connection(Role.REQUESTOR)  # Sta1
    with pytest.raises(LocalProtocolError):
        conn.send_message(1, ECHO, None, 16384)
    assert conn.state is State.STA1


def test_framing_is_byte_exact() -> None:
    """A 60-byte data set at max PDU 30 (24 data bytes a PDV, PS3.8 D.1): the command in one
    PDU, then the data set in 24 + 24 + 12. Every field written out from Tables 9-22, 9-23
    and E.2 (message control header: bit 0 command, bit 1 last fragment)."""
    command = bytes(range(0x40, 0x50))  # 16 bytes: any command set fits the one PDU
    dataset = bytes(range(60))
    conn = established(Role.REQUESTOR)
    framed = conn.send_message(5, command, len(dataset), 30)
    wire = b"".join(framed.with_data(dataset))
    assert wire == b"".join(
        [
            # PDU-type, reserved, PDU-length 22 | item-length 18 | context 5 | MCH 03H
            bytes.fromhex("04 00 00000016 00000012 05 03"),
            command,
            # PDU-length 30 (= the maximum) | item-length 26 | context 5 | MCH 00H
            bytes.fromhex("04 00 0000001e 0000001a 05 00"),
            dataset[0:24],
            bytes.fromhex("04 00 0000001e 0000001a 05 00"),
            dataset[24:48],
            # the last fragment: PDU-length 18 | item-length 14 | MCH 02H
            bytes.fromhex("04 00 00000012 0000000e 05 02"),
            dataset[48:60],
        ]
    )


def test_what_one_side_sends_the_other_receives() -> None:
    """A C-STORE-RQ framed by one connection at a small maximum arrives whole at the other."""
    p = Pair()
    p.associate()
    dataset = bytes(range(256)) * 40
    wire = b"".join(p.acc.send_message(3, STORE, len(dataset), 1000).with_data(dataset))
    events = p.to_req(wire)
    assert [type(e) for e in events] == [CommandReceived] + [DatasetFragment] * 11
    assert b"".join(bytes(e.data) for e in events if isinstance(e, DatasetFragment)) == dataset


# --- local primitives in the wrong state --------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "call"),
    [
        (acceptor_sta2, lambda c: c.accept(AC, {1})),
        (acceptor_sta2, lambda c: c.reject(RJ)),
        (acceptor_sta2, lambda c: c.release_request()),
        (acceptor_sta3, lambda c: c.send_message(1, ECHO, None, 16384)),
        (requestor_sta5, lambda c: c.release_request()),
        (requestor_sta5, lambda c: c.request(RQ)),
        (lambda: established(Role.REQUESTOR), lambda c: c.release_response()),
        (lambda: established(Role.REQUESTOR), lambda c: c.accept(AC, {1})),
        (lambda: sta7(Role.REQUESTOR), lambda c: c.release_request()),
        (sta13, lambda c: c.send_message(1, ECHO, None, 16384)),
        (lambda: Connection(Role.REQUESTOR), lambda c: c.release_request()),
    ],
)
def test_local_primitive_in_the_wrong_state(
    make: Callable[[], Connection], call: Callable[[Connection], object]
) -> None:
    conn = make()
    state = conn.state
    with pytest.raises(LocalProtocolError):
        call(conn)
    assert conn.state is state


# --- robustness: arbitrary bytes never raise --------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    state=st.sampled_from(list(STATES)),
    junk=st.binary(min_size=1, max_size=200),
    prefix=st.sampled_from([b"", b"\x01", b"\x04\x00\x00\x00", encode(A_RELEASE_RQ())[:8]]),
    chunk=st.integers(1, 64),
)
def test_arbitrary_bytes_never_raise(state: State, junk: bytes, prefix: bytes, chunk: int) -> None:
    conn = STATES[state]()
    data = prefix + junk
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i : i + chunk])
        events = conn.next_events(1.0)
        for e in events:
            assert not isinstance(e, (AssociateAccepted, AssociateRejected)) or state is State.STA5
        for raw in conn.data_to_send():
            assert isinstance(decode(raw), A_ABORT)
        if conn.must_close:
            break
    conn.connection_lost(2.0)
    assert conn.state is State.STA1
