"""Big/little endian re-encoding of OB/OW/OL/OF/OD/OV values (issue 10, bug 3).

Every byte vector here is written by hand from the standard's rules, not from a library's
output: element headers per PS3.5 §7.1.2, OW as 16-bit words "byte swapped within each word"
(§6.2) holding pixel cells least significant bit first, a cell that crosses a word boundary
continuing in the next word (§8.1.1), OF/OL 32-bit and OD/OV 64-bit words (§7.3), OB a byte
stream that byte order does not touch.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomnet.dataset import decode_dataset, encode_dataset
from dicomnet.errors import TranscodeError

_LONG = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UN", "UT"}


def explicit(tag: int, vr: str, value: bytes, little: bool) -> bytes:
    """One explicit VR element, header written by hand (PS3.5 §7.1.2)."""
    order = "<" if little else ">"
    head = struct.pack(order + "HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG:
        return head + b"\x00\x00" + struct.pack(order + "I", len(value)) + value
    return head + struct.pack(order + "H", len(value)) + value


def us(value: int, little: bool) -> bytes:
    return struct.pack("<H" if little else ">H", value)


# (Bits Allocated, VR, pixel values as big endian bytes, as little endian bytes): one pixel or
# a few, each vector spelled out byte by byte.
PIXEL_VECTORS = [
    # Bits Allocated 8 as OB: bytes, no swap.
    (8, "OB", bytes.fromhex("01020304"), bytes.fromhex("01020304")),
    # Bits Allocated 8 as OW: pixels 01 02 03 04 packed into words 0x0201, 0x0403 (§8.1.1).
    (8, "OW", bytes.fromhex("02010403"), bytes.fromhex("01020304")),
    # Bits Allocated 16: pixels 0x1234, 0xABCD.
    (16, "OW", bytes.fromhex("1234ABCD"), bytes.fromhex("3412CDAB")),
    # Bits Allocated 32: pixel 0x11223344 = words 0x3344 (low), 0x1122, each big endian.
    (32, "OW", bytes.fromhex("33441122"), bytes.fromhex("44332211")),
    # Bits Allocated 64: pixel 0x0102030405060708 = words 0x0708, 0x0506, 0x0304, 0x0102.
    (64, "OW", bytes.fromhex("0708050603040102"), bytes.fromhex("0807060504030201")),
]


def pixel_dataset(bits: int, vr: str, value: bytes, little: bool) -> bytes:
    return (
        explicit(0x00280100, "US", us(bits, little), little)
        + explicit(0x00280101, "US", us(bits, little), little)
        + explicit(0x7FE00010, vr, value, little)
    )


@pytest.mark.parametrize(("bits", "vr", "big", "little"), PIXEL_VECTORS)
def test_pixel_data_big_to_little_endian_by_hand(
    bits: int, vr: str, big: bytes, little: bytes
) -> None:
    be = pixel_dataset(bits, vr, big, little=False)
    le = pixel_dataset(bits, vr, little, little=True)
    assert encode_dataset(decode_dataset(be, ExplicitVRBigEndian), ExplicitVRLittleEndian) == le
    assert encode_dataset(decode_dataset(le, ExplicitVRLittleEndian), ExplicitVRBigEndian) == be


@pytest.mark.parametrize(("bits", "vr", "big", "little"), PIXEL_VECTORS)
def test_big_little_big_is_byte_identical(bits: int, vr: str, big: bytes, little: bytes) -> None:
    be = pixel_dataset(bits, vr, big, little=False)
    le = encode_dataset(decode_dataset(be, ExplicitVRBigEndian), ExplicitVRLittleEndian)
    assert encode_dataset(decode_dataset(le, ExplicitVRLittleEndian), ExplicitVRBigEndian) == be


OTHER_VECTORS = [
    # OL: Long Primitive Point Index List (0066,0040), values 1 and 0x01020304.
    (0x00660040, "OL", bytes.fromhex("0000000101020304"), bytes.fromhex("0100000004030201")),
    # OF: Float Pixel Data (7FE0,0008), 1.0f = 0x3F800000.
    (0x7FE00008, "OF", bytes.fromhex("3F800000"), bytes.fromhex("0000803F")),
    # OD: Double Float Pixel Data (7FE0,0009), 1.0 = 0x3FF0000000000000.
    (0x7FE00009, "OD", bytes.fromhex("3FF0000000000000"), bytes.fromhex("000000000000F03F")),
    # OV: Extended Offset Table (7FE0,0001), offset 0x10.
    (0x7FE00001, "OV", bytes.fromhex("0000000000000010"), bytes.fromhex("1000000000000000")),
    # OB: any other byte stream, e.g. (0009,0010)-free private-less File Meta-like data.
    (0x00420011, "OB", bytes.fromhex("0102030405060708"), bytes.fromhex("0102030405060708")),
]


@pytest.mark.parametrize(("tag", "vr", "big", "little"), OTHER_VECTORS)
def test_other_vrs_are_swapped_per_their_word_size(
    tag: int, vr: str, big: bytes, little: bytes
) -> None:
    be = explicit(tag, vr, big, little=False)
    le = explicit(tag, vr, little, little=True)
    assert encode_dataset(decode_dataset(be, ExplicitVRBigEndian), ExplicitVRLittleEndian) == le
    assert encode_dataset(decode_dataset(le, ExplicitVRLittleEndian), ExplicitVRBigEndian) == be


def test_nested_values_are_swapped_too() -> None:
    # An Icon Image Sequence (0088,0200) item with 16-bit OW Pixel Data, defined lengths.
    def item(little: bool, value: bytes) -> bytes:
        body = explicit(0x00280100, "US", us(16, little), little) + explicit(
            0x7FE00010, "OW", value, little
        )
        order = "<" if little else ">"
        return struct.pack(order + "HHI", 0xFFFE, 0xE000, len(body)) + body

    be = explicit(0x00880200, "SQ", item(False, bytes.fromhex("1234")), little=False)
    le = explicit(0x00880200, "SQ", item(True, bytes.fromhex("3412")), little=True)
    assert encode_dataset(decode_dataset(be, ExplicitVRBigEndian), ExplicitVRLittleEndian) == le


@pytest.mark.parametrize(("bits", "warned"), [(8, False), (16, False), (32, True), (64, True)])
def test_warning_for_big_endian_pixels_wider_than_16_bits(
    bits: int, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    vector = next(v for v in PIXEL_VECTORS if v[0] == bits and v[1] == "OW")
    be = pixel_dataset(bits, "OW", vector[2], little=False)
    with caplog.at_level(logging.WARNING, logger="dicomnet.dataset"):
        encode_dataset(decode_dataset(be, ExplicitVRBigEndian), ExplicitVRLittleEndian)
    messages = [r.getMessage() for r in caplog.records if r.name == "dicomnet.dataset"]
    assert bool(messages) == warned
    if warned:
        assert f"Bits Allocated {bits}" in messages[0] and "16-bit OW word" in messages[0]


def test_implicit_little_endian_pixels_are_swapped_for_big_endian() -> None:
    # Implicit VR: Pixel Data's VR is "OB or OW" until resolved (OW by PS3.5 A.1); it used to
    # stay unswapped in a big endian output.
    implicit = (
        struct.pack("<HHI", 0x0028, 0x0100, 2)
        + us(16, True)
        + struct.pack("<HHI", 0x7FE0, 0x0010, 4)
        + bytes.fromhex("3412CDAB")
    )
    ds = decode_dataset(implicit, ImplicitVRLittleEndian)
    assert encode_dataset(ds, ExplicitVRBigEndian) == explicit(
        0x00280100, "US", us(16, False), little=False
    ) + explicit(0x7FE00010, "OW", bytes.fromhex("1234ABCD"), little=False)


def test_rtdose_big_endian_round_trip_is_byte_identical() -> None:
    path = get_testdata_file("rtdose_expb.dcm")
    assert path is not None
    data = Path(path).read_bytes()
    source = dcmread(path)
    little = encode_dataset(source, ExplicitVRLittleEndian)
    back = encode_dataset(decode_dataset(little, ExplicitVRLittleEndian), ExplicitVRBigEndian)
    assert data.endswith(back)
    # pydicom reads this file's 32-bit values per pixel (1249000 for the first); by PS3.5 the
    # little endian file holds the same two 16-bit words, low word first, so the value read
    # back little endian is the one with the two halves of pydicom's reading exchanged.
    first = int(source.pixel_array.flat[0])
    swapped_halves = ((first & 0xFFFF) << 16) | (first >> 16)
    result = decode_dataset(little, ExplicitVRLittleEndian)
    result.file_meta = FileMetaDataset()
    result.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert int(result.pixel_array.flat[0]) == swapped_halves


def test_nested_priv_sq_pixel_data_without_bits_allocated_is_ow_by_a1() -> None:
    path = get_testdata_file("nested_priv_SQ.dcm")
    assert path is not None
    ds = dcmread(path)
    for syntax in (ExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian):
        out = decode_dataset(encode_dataset(ds, syntax), syntax)
        assert out["PixelData"].VR == "OW"
        assert out.PixelData == b"\x00\x00"


def test_an_ambiguous_vr_that_cannot_be_resolved_is_one_clear_error() -> None:
    ds = Dataset()  # built in memory: no original encoding, no Bits Allocated
    ds.add(DataElement(0x7FE00010, "OB or OW", b"\x00\x01"))
    with pytest.raises(TranscodeError) as info:
        encode_dataset(ds, ExplicitVRLittleEndian)
    message = str(info.value)
    assert "(7FE0,0010)" in message and "BitsAllocated" in message
    assert "\n" not in message and "Traceback" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
