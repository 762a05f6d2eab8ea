"""Data set encoding for the wire and the fast Part 10 readers (PS3.5, PS3.10)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicomnet.dataset import NotDicomError, decode_dataset, encode_dataset, read_file_info


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="ABCDEFGHIJ^", min_size=0, max_size=64))
def test_deflated_data_sets_have_even_length_and_round_trip(name: str) -> None:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = "X"
    data = encode_dataset(ds, DeflatedExplicitVRLittleEndian)
    assert len(data) % 2 == 0  # PS3.5 §A.5
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    assert decode_dataset(inflated, ExplicitVRLittleEndian).PatientName == name


def test_big_endian_pixel_words_are_swapped_to_little_endian() -> None:
    path = get_testdata_file("MR_small_bigendian.dcm")
    assert path is not None
    source = dcmread(path)
    little = decode_dataset(encode_dataset(source, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    reference = dcmread(get_testdata_file("MR_small.dcm"))
    assert little.PixelData == reference.PixelData
    assert encode_dataset(source, ExplicitVRBigEndian)  # same order: nothing to swap


def test_read_file_info_matches_the_file_meta(tmp_path: Path) -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    info = read_file_info(path)
    meta = dcmread(path).file_meta
    assert info.sop_class_uid == meta.MediaStorageSOPClassUID
    assert info.sop_instance_uid == meta.MediaStorageSOPInstanceUID
    assert info.transfer_syntax == meta.TransferSyntaxUID
    # The data set starts right after group 0002: 128 + 4 + 12 + group length.
    assert info.offset == 144 + meta.FileMetaInformationGroupLength
    assert info.size == Path(path).stat().st_size


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not dicom at all",
        b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\xff\xff\x00\x00",
    ],
)
def test_read_file_info_refuses_what_is_not_part_10(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "f.dcm"
    path.write_bytes(content)
    with pytest.raises(NotDicomError):
        read_file_info(path)
