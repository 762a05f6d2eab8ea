"""Framing DIMSE messages as P-DATA-TF PDUs and reassembling them (PS3.7 §8, PS3.8 §9.3.5,
D.1 and Annex E): byte vectors written from the standard, and properties over message sizes,
maximum PDU lengths, PDU groupings and read chunkings."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomnet.dimse.commands import CEchoRQ, CEchoRSP, CStoreRQ, decode_message, encode_command_set
from dicomnet.dimse.fragments import (
    MAX_FRAGMENT,
    CommandReceived,
    DatasetFragment,
    Reassembler,
    frame_message,
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


def split_pdus(stream: bytes) -> list[bytes]:
    """A stream of PDUs cut at each PDU-length field (PS3.8 Table 9-22, bytes 3-6)."""
    out = []
    pos = 0
    while pos < len(stream):
        (length,) = struct.unpack_from(">I", stream, pos + 2)
        out.append(stream[pos : pos + 6 + length])
        pos += 6 + length
    return out


def message_pdus(
    context_id: int, command: bytes, dataset: bytes | memoryview | None, max_pdu: int
) -> list[bytes]:
    """Every PDU of a framed message, one bytes each, its data set passed through."""
    if dataset is None:
        return split_pdus(frame_message(context_id, command, None, max_pdu).command)
    framed = frame_message(context_id, command, len(dataset), max_pdu)
    return split_pdus(b"".join(framed.with_data(dataset)))


def _pdvs_of(pdus: list[bytes]) -> list[PDV]:
    out: list[PDV] = []
    for raw in pdus:
        pdu = decode(raw)
        assert isinstance(pdu, P_DATA_TF)
        out.extend(PDV(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs)
    return out


# --- framing: byte vectors from PS3.8 §9.3.5 and Annex E --------------------------------------


def _pdata(context_id: int, control: int, data: bytes) -> bytes:
    """A one-PDV P-DATA-TF written out field by field (Tables 9-22 and 9-23, E.2)."""
    return (
        b"\x04\x00"  # PDU-type 04H, reserved
        + struct.pack(">I", len(data) + 6)  # PDU-length: item-length field (4) + item
        + struct.pack(">I", len(data) + 2)  # item-length: context ID (1) + MCH (1) + data
        + bytes([context_id, control])
        + data
    )


def test_framing_of_a_message_over_several_pdus_is_byte_exact() -> None:
    """Max PDU 26: 20 data bytes a PDV. A 24-byte command in 2 PDUs (MCH 01H: command, not
    last; 03H: command, last), a 50-byte data set in 3 (00H, 00H, 02H: data set, last)."""
    command = bytes(range(100, 124))
    dataset = bytes(range(50))
    framed = frame_message(7, command, len(dataset), 26)
    assert framed.command == (
        bytes.fromhex("04 00 0000001a 00000016 07 01") + command[:20]
        + bytes.fromhex("04 00 0000000a 00000006 07 03") + command[20:]
    )  # fmt: skip
    assert framed.dataset == [
        (bytes.fromhex("04 00 0000001a 00000016 07 00"), 0, 20),
        (bytes.fromhex("04 00 0000001a 00000016 07 00"), 20, 40),
        (bytes.fromhex("04 00 00000010 0000000c 07 02"), 40, 50),
    ]
    assert b"".join(framed.with_data(dataset)) == b"".join(
        [
            _pdata(7, 0x01, command[:20]),
            _pdata(7, 0x03, command[20:]),
            _pdata(7, 0x00, dataset[:20]),
            _pdata(7, 0x00, dataset[20:40]),
            _pdata(7, 0x02, dataset[40:]),
        ]
    )


def test_data_set_passes_through_uncopied() -> None:
    """h11's data pass-through: the data set's parts are views of the caller's buffer."""
    data = bytearray(range(40))
    parts = frame_message(1, b"cm", len(data), 26).with_data(data)
    views = [p for p in parts if isinstance(p, memoryview)]
    assert [v.obj is data for v in views] == [True, True]
    assert [bytes(v) for v in views] == [bytes(data[:20]), bytes(data[20:])]


def test_with_data_checks_the_length() -> None:
    with pytest.raises(ValueError):
        frame_message(1, b"cm", 10, 100).with_data(b"x" * 11)


def test_odd_maximum_gives_even_fragments() -> None:
    """PS3.8 E.1: each fragment shall be of even length. Max PDU 25 leaves 19 bytes, so 18."""
    framed = frame_message(1, b"c" * 20, 40, 25)
    assert framed.command == _pdata(1, 0x01, b"c" * 18) + _pdata(1, 0x03, b"cc")
    assert [(a, b) for _h, a, b in framed.dataset] == [(0, 18), (18, 36), (36, 40)]
    assert framed.dataset[0][0] == bytes.fromhex("04 00 00000018 00000014 01 00")


def test_unlimited_maximum_frames_a_large_data_set_without_its_bytes() -> None:
    """Max PDU 0 (no limit, PS3.8 D.1): fragments of MAX_FRAGMENT, framed from the length alone
    (a file's data set is read behind each header by the sender)."""
    length = 3 * MAX_FRAGMENT + 2
    framed = frame_message(3, b"cm", length, 0)
    assert framed.command == _pdata(3, 0x03, b"cm")
    assert [(a, b) for _h, a, b in framed.dataset] == [
        (0, MAX_FRAGMENT),
        (MAX_FRAGMENT, 2 * MAX_FRAGMENT),
        (2 * MAX_FRAGMENT, 3 * MAX_FRAGMENT),
        (3 * MAX_FRAGMENT, length),
    ]
    assert framed.dataset[-1][0] == bytes.fromhex("04 00 00000008 00000004 03 02")
    assert framed.dataset[0][0][2:6] == struct.pack(">I", MAX_FRAGMENT + 6)


def test_message_without_a_data_set() -> None:
    framed = frame_message(1, b"cmd0", None, 16384)
    assert framed.command == _pdata(1, 0x03, b"cmd0")
    assert framed.dataset == []


# --- framing properties -------------------------------------------------------------------------


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
    pdus = message_pdus(context_id, command, dataset, max_pdu)
    for raw in pdus:
        pdu_type, _reserved, length = struct.unpack_from(">BBI", raw)
        assert pdu_type == 0x04
        assert length == len(raw) - 6
        # PS3.8 D.1: the PDU-length field never exceeds the peer's maximum-length-received
        if max_pdu:
            assert length <= max_pdu
        else:
            assert length <= MAX_FRAGMENT + 6
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
    # PS3.8 E.1: fragments of even length, whenever the maximum leaves room for two bytes
    if limit > 1:
        assert all(len(p.data) % 2 == 0 for p in [*commands[:-1], *data[:-1]])
    assert all(p.context_id == context_id for p in pdvs)


@pytest.mark.parametrize("max_pdu", [1, 2, 6])
def test_maximum_too_small_to_carry_data(max_pdu: int) -> None:
    """Six bytes of every P-DATA-TF variable field are PDV item header and control header."""
    with pytest.raises(ValueError):
        message_pdus(1, b"\x00" * 10, None, max_pdu)


def test_smallest_maximum_carries_one_byte_per_pdu() -> None:
    pdus = message_pdus(1, b"abc", b"de", 7)
    assert [len(p) for p in pdus] == [13] * 5
    assert pdus[0] == b"\x04\x00\x00\x00\x00\x07" + b"\x00\x00\x00\x03" + b"\x01\x01" + b"a"
    assert pdus[2] == b"\x04\x00\x00\x00\x00\x07" + b"\x00\x00\x00\x03" + b"\x01\x03" + b"c"
    assert pdus[3][11:] == b"\x00d"  # data set, not last
    assert pdus[4][11:] == b"\x02e"  # data set, last


def test_pdv_data_limit() -> None:
    assert pdv_data_limit(16384) == 16384 - 6
    assert pdv_data_limit(16385) == 16384 - 6  # even fragments (PS3.8 E.1)
    assert pdv_data_limit(7) == 1
    assert pdv_data_limit(8) == 2
    assert pdv_data_limit(9) == 2
    assert pdv_data_limit(0) == MAX_FRAGMENT
    assert pdv_data_limit(MAX_FRAGMENT + 6) == MAX_FRAGMENT
    assert pdv_data_limit(1 << 30) == MAX_FRAGMENT  # one buffer per PDU stays bounded


def test_exact_multiple_of_the_limit() -> None:
    """A part whose size is a multiple of the fragment size ends with a full last fragment,
    not an empty one."""
    pdvs = _pdvs_of(message_pdus(1, b"c" * 20, b"d" * 30, 16))  # 10 data bytes per PDV
    assert [(p.is_command, p.is_last, len(p.data)) for p in pdvs] == [
        (True, False, 10),
        (True, True, 10),
        (False, False, 10),
        (False, False, 10),
        (False, True, 10),
    ]


def test_empty_data_set_is_one_empty_last_fragment() -> None:
    pdvs = _pdvs_of(message_pdus(3, b"cmd", b"", 100))
    assert pdvs == [PDV(3, True, True, b"cmd"), PDV(3, False, True, b"")]


def test_memoryview_data_set() -> None:
    data = bytearray(range(200))
    pdvs = _pdvs_of(message_pdus(1, b"c", memoryview(data), 56))
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
    pdvs = _pdvs_of(message_pdus(context_id, command, dataset, max_pdu))
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
        pdvs += _pdvs_of(message_pdus(1, command, dataset, max_pdu))
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
