"""Splitting DIMSE messages into P-DATA-TF PDUs and reassembling them (PS3.7 §8, PS3.8 §9.3.5,
D.1 and Annex E), as properties over message sizes, maximum PDU lengths, PDU groupings and
read chunkings."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomnet.dimse.commands import CEchoRQ, CEchoRSP, CStoreRQ, decode_message, encode_command_set
from dicomnet.dimse.fragments import (
    UNLIMITED_FRAGMENT,
    CommandReceived,
    DatasetFragment,
    Reassembler,
    fragment_message,
    pdv_data_limit,
)
from dicomnet.errors import DIMSEError
from dicomnet.pdu import P_DATA_TF, PDV, PDUReader, decode, encode

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"

max_lengths = st.one_of(st.just(0), st.integers(7, 64), st.integers(65, 5000))
contexts = st.integers(0, 127).map(lambda n: 2 * n + 1)


def _store(message_id: int) -> bytes:
    return CStoreRQ(
        message_id=message_id,
        affected_sop_class_uid=CT_STORAGE,
        affected_sop_instance_uid=f"1.2.3.{message_id}",
    ).encode()


def _pdvs_of(pdus: list[bytes]) -> list[PDV]:
    out: list[PDV] = []
    for raw in pdus:
        pdu = decode(raw)
        assert isinstance(pdu, P_DATA_TF)
        out.extend(PDV(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs)
    return out


# --- fragment_message ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    context_id=contexts,
    message_id=st.integers(0, 0xFFFF),
    dataset=st.none() | st.binary(max_size=3000),
    max_pdu=max_lengths,
)
def test_fragments_respect_the_maximum_and_the_control_header(
    context_id: int, message_id: int, dataset: bytes | None, max_pdu: int
) -> None:
    command = _store(message_id)
    pdus = fragment_message(context_id, command, dataset, max_pdu)
    for raw in pdus:
        pdu_type, _reserved, length = struct.unpack_from(">BBI", raw)
        assert pdu_type == 0x04
        assert length == len(raw) - 6
        # PS3.8 D.1: the PDU-length field never exceeds the peer's maximum-length-received
        if max_pdu:
            assert length <= max_pdu
        else:
            assert length <= UNLIMITED_FRAGMENT + 6
        # one PDV per PDU; bits 2-7 of the message control header are sent as 0 (PS3.8 E.2)
        (item_length,) = struct.unpack_from(">I", raw, 6)
        assert item_length == length - 4
        assert raw[10] == context_id
        assert raw[11] & 0xFC == 0
    pdvs = _pdvs_of(pdus)
    commands = [p for p in pdvs if p.is_command]
    data = [p for p in pdvs if not p.is_command]
    # command fragments first, then data set fragments (PS3.7 §8: the command set precedes)
    assert pdvs == commands + data
    # bit 1 is set on the last fragment of the command and of the data set, and only there
    assert [p.is_last for p in commands] == [False] * (len(commands) - 1) + [True]
    assert b"".join(bytes(p.data) for p in commands) == command
    if dataset is None:
        assert data == []
    else:
        assert [p.is_last for p in data] == [False] * (len(data) - 1) + [True]
        assert b"".join(bytes(p.data) for p in data) == dataset
    # every fragment but the last of each part is as full as the maximum allows
    limit = pdv_data_limit(max_pdu)
    for part in (commands, data):
        assert all(len(p.data) == limit for p in part[:-1])
    assert all(p.context_id == context_id for p in pdvs)


@pytest.mark.parametrize("max_pdu", [1, 2, 6])
def test_maximum_too_small_to_carry_data(max_pdu: int) -> None:
    """Six bytes of every P-DATA-TF variable field are PDV item header and control header."""
    with pytest.raises(ValueError):
        fragment_message(1, b"\x00" * 10, None, max_pdu)


def test_smallest_maximum_carries_one_byte_per_pdu() -> None:
    pdus = fragment_message(1, b"abc", b"de", 7)
    assert [len(p) for p in pdus] == [13] * 5
    assert pdus[0] == b"\x04\x00\x00\x00\x00\x07" + b"\x00\x00\x00\x03" + b"\x01\x01" + b"a"
    assert pdus[2] == b"\x04\x00\x00\x00\x00\x07" + b"\x00\x00\x00\x03" + b"\x01\x03" + b"c"
    assert pdus[3][11:] == b"\x00d"  # data set, not last
    assert pdus[4][11:] == b"\x02e"  # data set, last


def test_pdv_data_limit() -> None:
    assert pdv_data_limit(16384) == 16384 - 6
    assert pdv_data_limit(7) == 1
    assert pdv_data_limit(0) == UNLIMITED_FRAGMENT


def test_exact_multiple_of_the_limit() -> None:
    """A part whose size is a multiple of the fragment size ends with a full last fragment,
    not an empty one."""
    pdvs = _pdvs_of(fragment_message(1, b"c" * 20, b"d" * 30, 16))  # 10 data bytes per PDV
    assert [(p.is_command, p.is_last, len(p.data)) for p in pdvs] == [
        (True, False, 10),
        (True, True, 10),
        (False, False, 10),
        (False, False, 10),
        (False, True, 10),
    ]


def test_empty_data_set_is_one_empty_last_fragment() -> None:
    pdvs = _pdvs_of(fragment_message(3, b"cmd", b"", 100))
    assert pdvs == [PDV(3, True, True, b"cmd"), PDV(3, False, True, b"")]


def test_memoryview_data_set() -> None:
    data = bytearray(range(200))
    pdvs = _pdvs_of(fragment_message(1, b"c", memoryview(data), 56))
    assert b"".join(bytes(p.data) for p in pdvs if not p.is_command) == bytes(data)


# --- reassembly -------------------------------------------------------------------------------


def _group(pdvs: list[PDV], sizes: list[int]) -> list[bytes]:
    """The PDVs packed into P-DATA-TF PDUs of the given numbers of PDVs (PS3.8 §9.3.5 allows
    several PDVs per PDU)."""
    out: list[bytes] = []
    pos = 0
    sizes = [*sizes]
    while pos < len(pdvs):
        n = max(1, sizes.pop(0) if sizes else len(pdvs))
        out.append(encode(P_DATA_TF(pdvs[pos : pos + n])))
        pos += n
    return out


def _receive(
    stream: bytes, cuts: list[int], reassembler: Reassembler
) -> tuple[list[CommandReceived], io.BytesIO, list[bool], int]:
    """Feed ``stream`` in chunks; stream data set fragments to a sink as they come."""
    reader = PDUReader()
    commands: list[CommandReceived] = []
    sink = io.BytesIO()
    lasts: list[bool] = []
    views = 0
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        reader.feed(stream[start:cut])
        start = cut
        while (pdu := reader.next_pdu()) is not None:
            assert isinstance(pdu, P_DATA_TF)
            for pdv in pdu.pdvs:
                for event in reassembler.add(pdv):
                    if isinstance(event, CommandReceived):
                        commands.append(event)
                    else:
                        assert isinstance(event, DatasetFragment)
                        views += isinstance(event.data, memoryview)
                        # written now: the view is only valid until the next feed()
                        sink.write(event.data)
                        lasts.append(event.is_last)
    return commands, sink, lasts, views


@settings(max_examples=150, deadline=None)
@given(
    context_id=contexts,
    message_id=st.integers(0, 0xFFFF),
    dataset=st.binary(max_size=4000),
    max_pdu=max_lengths,
    data=st.data(),
)
def test_reassembly_in_any_grouping_and_chunking(
    context_id: int, message_id: int, dataset: bytes, max_pdu: int, data: st.DataObject
) -> None:
    command = _store(message_id)
    pdvs = _pdvs_of(fragment_message(context_id, command, dataset, max_pdu))
    sizes = data.draw(st.lists(st.integers(1, 8), max_size=len(pdvs)))
    stream = b"".join(_group(pdvs, sizes))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    reassembler = Reassembler()
    commands, sink, lasts, views = _receive(stream, cuts, reassembler)
    assert len(commands) == 1
    assert commands[0].context_id == context_id
    assert commands[0].message == decode_message(command)
    assert sink.getvalue() == dataset
    # streamed: one event per data set PDV, handed over as views into the receive buffer
    data_pdvs = [p for p in pdvs if not p.is_command]
    assert len(lasts) == len(data_pdvs) == views
    assert lasts == [False] * (len(lasts) - 1) + [True]
    assert not reassembler.expecting_dataset


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.none() | st.integers(0, 1500), min_size=1, max_size=5),
    max_pdu=max_lengths,
    data=st.data(),
)
def test_several_messages_in_a_row(
    sizes: list[int | None], max_pdu: int, data: st.DataObject
) -> None:
    """C-STORE-RQs with data sets and C-ECHO-RQs without, back to back on one context."""
    pdvs: list[PDV] = []
    expected: list[tuple[object, bytes | None]] = []
    for i, size in enumerate(sizes):
        if size is None:
            command = CEchoRQ(message_id=i, affected_sop_class_uid=VERIFICATION).encode()
            dataset = None
        else:
            command = _store(i)
            dataset = bytes([i]) * size
        expected.append((decode_message(command), dataset))
        pdvs += _pdvs_of(fragment_message(1, command, dataset, max_pdu))
    group_sizes = data.draw(st.lists(st.integers(1, 6), max_size=len(pdvs)))
    reassembler = Reassembler()
    got: list[tuple[object, bytes | None]] = []
    current: bytearray | None = None
    for raw in _group(pdvs, group_sizes):
        pdu = decode(raw)
        assert isinstance(pdu, P_DATA_TF)
        for pdv in pdu.pdvs:
            for event in reassembler.add(pdv):
                if isinstance(event, CommandReceived):
                    got.append((event.message, None))
                    current = bytearray() if event.message.has_dataset else None
                else:
                    assert current is not None
                    current += event.data
                    if event.is_last:
                        got[-1] = (got[-1][0], bytes(current))
                        current = None
    assert got == expected


# --- reassembly errors ------------------------------------------------------------------------


def _echo() -> bytes:
    return CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION).encode()


def test_data_set_fragment_without_a_command() -> None:
    with pytest.raises(DIMSEError):
        Reassembler().add(PDV(1, False, True, b"data"))


def test_data_set_fragment_after_a_command_without_data_set() -> None:
    r = Reassembler()
    assert len(r.add(PDV(1, True, True, _echo()))) == 1
    with pytest.raises(DIMSEError):
        r.add(PDV(1, False, True, b"data"))


def test_command_fragment_while_a_data_set_is_incomplete() -> None:
    r = Reassembler()
    r.add(PDV(1, True, True, _store(1)))
    r.add(PDV(1, False, False, b"part"))
    with pytest.raises(DIMSEError):
        r.add(PDV(1, True, True, _echo()))


def test_command_fragments_on_two_contexts() -> None:
    command = _echo()
    r = Reassembler()
    assert r.add(PDV(1, True, False, command[:10])) == []
    with pytest.raises(DIMSEError):
        r.add(PDV(3, True, True, command[10:]))


def test_data_set_on_another_context() -> None:
    r = Reassembler()
    r.add(PDV(1, True, True, _store(1)))
    with pytest.raises(DIMSEError):
        r.add(PDV(3, False, True, b"data"))


def test_command_set_larger_than_the_cap() -> None:
    r = Reassembler(max_command_length=100)
    r.add(PDV(1, True, False, b"\x00" * 60))
    with pytest.raises(DIMSEError):
        r.add(PDV(1, True, False, b"\x00" * 41))


def test_undecodable_command_raises_and_the_next_message_still_works() -> None:
    r = Reassembler()
    bad = encode_command_set({0x0100: 0x0030, 0x0800: 0x0101})  # no Message ID
    with pytest.raises(DIMSEError):
        r.add(PDV(1, True, True, bad))
    events = r.add(PDV(3, True, True, _echo()))
    assert events == [CommandReceived(3, decode_message(_echo()))]


def test_reset_forgets_a_partial_message() -> None:
    r = Reassembler()
    r.add(PDV(1, True, True, _store(1)))
    assert r.expecting_dataset
    r.reset()
    assert not r.expecting_dataset
    rsp = CEchoRSP(message_id_being_responded_to=1, status=0).encode()
    assert r.add(PDV(5, True, True, rsp)) == [CommandReceived(5, decode_message(rsp))]
