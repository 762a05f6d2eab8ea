"""The incremental PDUReader: any chunking gives the same PDUs, P-DATA values are memoryviews into
the receive buffer, and length fields are checked before anything is allocated (PS3.8 §9.3.1,
§9.3.5, D.1)."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomnet.errors import PDUError
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
    MaximumLength,
    PDUReader,
    PresentationContextACItem,
    PresentationContextRQItem,
    UserInformation,
    encode,
)

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


def _snapshot(pdu: PDU) -> PDU:
    """A copy whose P-DATA values are bytes (memoryviews are valid only until the next feed)."""
    if isinstance(pdu, P_DATA_TF):
        return P_DATA_TF(
            [PDV(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs]
        )
    return pdu


def _stream() -> list[PDU]:
    big = bytes(range(256)) * 1200  # 307200 bytes: larger than the initial buffer
    return [
        A_ASSOCIATE_RQ(
            "SCP",
            "SCU",
            [PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE])],
            UserInformation([MaximumLength(0)]),
        ),
        A_ASSOCIATE_AC(
            "SCP",
            "SCU",
            [PresentationContextACItem(1, 0, IMPLICIT_LE)],
            UserInformation([MaximumLength(16384)]),
        ),
        P_DATA_TF([PDV(1, True, True, b"command set bytes")]),
        P_DATA_TF([PDV(1, False, False, b"a" * 1000), PDV(1, False, True, b"b" * 7)]),
        P_DATA_TF([PDV(3, False, True, big)]),
        P_DATA_TF([PDV(5, False, True, b"")]),
        A_RELEASE_RQ(),
        A_RELEASE_RP(),
        A_ASSOCIATE_RJ(1, 1, 7),
        A_ABORT(2, 6),
    ]


STREAM = _stream()
STREAM_BYTES = b"".join(encode(p) for p in STREAM)


def _drain(reader: PDUReader, out: list[PDU]) -> None:
    while (pdu := reader.next_pdu()) is not None:
        out.append(_snapshot(pdu))


def _read_with_feed(data: bytes, cuts: list[int]) -> list[PDU]:
    reader = PDUReader()
    out: list[PDU] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed(data[start:cut])
        start = cut
        _drain(reader, out)
    assert reader.pending == 0
    return out


def _read_with_buffer(data: bytes, cuts: list[int]) -> list[PDU]:
    """The BufferedProtocol path: get_buffer() / buffer_updated(), short writes included."""
    reader = PDUReader()
    out: list[PDU] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        while start < cut:
            target = reader.get_buffer(-1)
            assert len(target) > 0
            n = min(len(target), cut - start)
            target[:n] = data[start : start + n]
            reader.buffer_updated(n)
            start += n
        _drain(reader, out)
    assert reader.pending == 0
    return out


def test_whole_stream_at_once() -> None:
    assert _read_with_feed(STREAM_BYTES, []) == STREAM


def test_one_byte_at_a_time() -> None:
    head = STREAM_BYTES[:2000]  # the associate PDUs and the first P-DATA, byte by byte
    reader = PDUReader()
    out: list[PDU] = []
    for i in range(len(head)):
        reader.feed(head[i : i + 1])
        _drain(reader, out)
    reader.feed(STREAM_BYTES[2000:])
    _drain(reader, out)
    assert out == STREAM


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM_BYTES)), max_size=40))
def test_any_chunking_gives_the_same_pdus(cuts: list[int]) -> None:
    assert _read_with_feed(STREAM_BYTES, cuts) == STREAM


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM_BYTES)), max_size=40))
def test_any_chunking_through_get_buffer(cuts: list[int]) -> None:
    assert _read_with_buffer(STREAM_BYTES, cuts) == STREAM


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 127), st.booleans(), st.booleans(), st.binary(max_size=300)),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_random_pdata_streams(
    pdus: list[list[tuple[int, bool, bool, bytes]]], data: st.DataObject
) -> None:
    expected: list[PDU] = [
        P_DATA_TF([PDV(2 * c + 1, cmd, last, d) for c, cmd, last, d in pdvs]) for pdvs in pdus
    ]
    raw = b"".join(encode(p) for p in expected)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    assert _read_with_feed(raw, cuts) == expected


def test_pdata_values_are_memoryviews_into_the_receive_buffer() -> None:
    reader = PDUReader()
    reader.feed(encode(P_DATA_TF([PDV(1, False, True, b"x" * 100), PDV(1, True, True, b"yz")])))
    pdu = reader.next_pdu()
    assert isinstance(pdu, P_DATA_TF)
    for pdv in pdu.pdvs:
        assert isinstance(pdv.data, memoryview)
        assert isinstance(pdv.data.obj, bytearray)  # a view on the buffer, not a copy
    assert bytes(pdu.pdvs[0].data) == b"x" * 100
    assert bytes(pdu.pdvs[1].data) == b"yz"


def test_pending_counts_unconsumed_bytes() -> None:
    raw = encode(A_RELEASE_RQ()) + encode(A_ABORT())
    reader = PDUReader()
    assert reader.pending == 0
    reader.feed(raw[:7])
    assert reader.pending == 7
    assert reader.next_pdu() is None  # 3 bytes of the body still missing
    assert reader.pending == 7
    reader.feed(raw[7:13])
    assert reader.pending == 13
    assert reader.next_pdu() == A_RELEASE_RQ()
    assert reader.pending == 3
    assert reader.next_pdu() is None
    reader.feed(raw[13:])
    assert reader.next_pdu() == A_ABORT()
    assert reader.pending == 0
    assert reader.next_pdu() is None


def test_no_pdu_before_the_header_is_complete() -> None:
    reader = PDUReader()
    for i in range(1, 6):
        reader.feed(b"\x05\x00\x00\x00\x00\x04"[i - 1 : i])
        assert reader.next_pdu() is None
        assert reader.pending == i


# --- limits -------------------------------------------------------------------------------------


def _pdata_header(length: int) -> bytes:
    return b"\x04\x00" + struct.pack(">I", length)  # PS3.8 Table 9-22, bytes 1-6


def test_pdata_up_to_the_announced_maximum_is_accepted() -> None:
    """PS3.8 D.1: the maximum length applies to the PDU-length field of P-DATA-TF PDUs."""
    reader = PDUReader(max_pdu_length=100)
    reader.feed(encode(P_DATA_TF([PDV(1, False, True, b"z" * 94)])))  # PDU-length 4 + 2 + 94
    pdu = reader.next_pdu()
    assert isinstance(pdu, P_DATA_TF) and bytes(pdu.pdvs[0].data) == b"z" * 94


def test_pdata_over_the_announced_maximum_raises_on_the_header() -> None:
    """ "This maximum length value shall never be exceeded ... Otherwise, it shall be a protocol
    error" (PS3.8 D.1); detected from the 6-byte header, before the body arrives."""
    reader = PDUReader(max_pdu_length=100)
    reader.feed(_pdata_header(101))
    with pytest.raises(PDUError) as info:
        reader.next_pdu()
    assert info.value.offset == 2
    assert "101" in str(info.value)


def test_maximum_applies_only_to_pdata() -> None:
    """An A-ASSOCIATE-AC larger than the P-DATA maximum is fine: it has its own limit."""
    ac = A_ASSOCIATE_AC(
        "SCP",
        "SCU",
        [PresentationContextACItem(i, 0, IMPLICIT_LE) for i in range(1, 40, 2)],
        UserInformation([]),
    )
    raw = encode(ac)
    assert len(raw) > 300
    reader = PDUReader(max_pdu_length=100)
    reader.feed(raw)
    assert reader.next_pdu() == ac


def test_control_pdu_limit() -> None:
    reader = PDUReader(max_control_pdu_length=1000)
    reader.feed(b"\x01\x00" + struct.pack(">I", 1001))
    with pytest.raises(PDUError) as info:
        reader.next_pdu()
    assert info.value.offset == 2


@pytest.mark.parametrize("max_pdu_length", [0, 16384, 1 << 20])
@pytest.mark.parametrize("pdu_type", [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07])
def test_length_ffffffff_raises_without_allocating_it(max_pdu_length: int, pdu_type: int) -> None:
    """A peer's length field of 0xFFFFFFFF must neither allocate 4 GiB nor wait for it."""
    reader = PDUReader(max_pdu_length=max_pdu_length)
    tracemalloc.start()
    try:
        reader.feed(bytes([pdu_type, 0]) + b"\xff\xff\xff\xff" + b"\x00" * 100)
        reader.get_buffer(-1)  # what an asyncio BufferedProtocol would call next
        with pytest.raises(PDUError) as info:
            reader.next_pdu()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.offset == 2
    assert peak < 4 << 20


def test_large_declared_pdu_grows_the_buffer_as_bytes_arrive() -> None:
    """Under the ceiling but large: get_buffer() does not preallocate the whole declared size."""
    reader = PDUReader(max_pdu_length=0)
    declared = 200 << 20
    reader.feed(_pdata_header(declared))
    tracemalloc.start()
    try:
        view = reader.get_buffer(-1)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(view) >= PDUReader.MIN_READ
    assert peak <= PDUReader.MAX_PREALLOCATION + (1 << 20)
    assert reader.next_pdu() is None


def test_a_pdu_larger_than_the_preallocation_still_decodes() -> None:
    size = PDUReader.MAX_PREALLOCATION + 12345
    payload = b"\x5a" * size
    raw = encode(P_DATA_TF([PDV(1, False, True, payload)]))
    reader = PDUReader()
    out: list[PDU] = []
    for start in range(0, len(raw), 1 << 20):
        reader.feed(raw[start : start + (1 << 20)])
        _drain(reader, out)
    assert len(out) == 1
    pdu = out[0]
    assert isinstance(pdu, P_DATA_TF) and pdu.pdvs[0].data == payload


@pytest.mark.parametrize("first", [0x00, 0x08, 0x41, 0xFF])
def test_unknown_pdu_type_is_detected_on_the_first_byte(first: int) -> None:
    reader = PDUReader()
    reader.feed(bytes([first]))
    with pytest.raises(PDUError) as info:
        reader.next_pdu()
    assert info.value.offset == 0


def test_body_errors_surface_from_next_pdu() -> None:
    reader = PDUReader()
    reader.feed(encode(A_RELEASE_RQ()) + b"\x06\x00\x00\x00\x00\x05" + b"\x00" * 5)
    assert reader.next_pdu() == A_RELEASE_RQ()
    with pytest.raises(PDUError):
        reader.next_pdu()


def test_get_buffer_asks_for_the_rest_of_a_partial_pdu() -> None:
    """After a header announcing N bytes, one read can take the whole remaining body."""
    reader = PDUReader()
    size = 3 << 20  # larger than the initial buffer
    reader.feed(_pdata_header(size + 6) + struct.pack(">I", size + 2) + b"\x01\x02")
    view = reader.get_buffer(-1)
    assert len(view) >= size
    view[:size] = b"\x11" * size
    reader.buffer_updated(size)
    pdu = reader.next_pdu()
    assert isinstance(pdu, P_DATA_TF)
    assert pdu.pdvs[0].data == b"\x11" * size


def test_views_of_pdus_from_one_feed_stay_valid_together() -> None:
    """Decoding the next PDU does not move the buffer: every view handed out since the last
    feed() is still valid."""
    reader = PDUReader()
    reader.feed(
        encode(P_DATA_TF([PDV(1, True, True, b"first")]))
        + encode(P_DATA_TF([PDV(3, False, True, b"second")]))
    )
    one = reader.next_pdu()
    two = reader.next_pdu()
    assert isinstance(one, P_DATA_TF) and isinstance(two, P_DATA_TF)
    assert one.pdvs[0].data == b"first"
    assert two.pdvs[0].data == b"second"
    assert reader.next_pdu() is None
