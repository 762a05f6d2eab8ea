"""Every Part 10 file pydicom ships, transcoded to Explicit VR Little Endian: its pixel values
equal pydicom's decode of the original (exact: the lossy sources are decoded by the same
decoders, so their values match too). The files that do not get through are listed with the
reason, and the test fails if that list changes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from pydicom import dcmread  # noqa: E402
from pydicom.data import get_testdata_files  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from dicomnet.errors import TranscodeError  # noqa: E402
from dicomnet.pixels import can_decode, transcode_file  # noqa: E402

pytestmark = pytest.mark.skipif(
    not can_decode("1.2.840.10008.1.2.4.90"), reason="the codecs extra is not installed"
)

# dicomnet refuses these, and says why (substring of the TranscodeError).
REFUSED = {
    # pydicom cannot decode them either: a JPEG Extended codestream libjpeg rejects, a JPEG 2000
    # codestream whose header openjpeg cannot read.
    "JPEG-lossy.dcm": "cannot be decoded as JPEG Extended",
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot be decoded as JPEG 2000",
    # Not sendable Part 10 files for dicomnet's reader (no pixel data in either).
    "empty_charset_LEI.dcm": "File Meta Information lacks (0002,0002)",
    "no_meta_group_length.dcm": "without (0002,0000) group length",
    # No Transfer Syntax UID in the File Meta Information: the data set's encoding is unknown.
    "meta_missing_tsyntax.dcm": "File Meta Information lacks (0002,0010)",
}
# Big endian with Bits Allocated 32: PS3.5's reading (16-bit OW words, low word first) differs
# from pydicom's (per 32-bit value); see test_pixels_byteorder.py.
WORD_ORDER = {"rtdose_expb.dcm", "rtdose_expb_1frame.dcm"}


def part10_files() -> list[Path]:
    out = []
    for name in get_testdata_files():
        path = Path(name)
        if path.is_dir() or path.suffix in (".json", ".txt", ".dump", ".gz", ".icc"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dcmread(path)
            except Exception:
                continue  # pydicom cannot read it: not a Part 10 file it ships for us
        out.append(path)
    return sorted(out, key=lambda p: (p.name, str(p)))


FILES = part10_files()


def test_enough_files() -> None:
    assert len(FILES) > 100


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_decompresses_to_explicit_little_endian(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    try:
        transcode_file(path, out, ExplicitVRLittleEndian)
    except TranscodeError as exc:
        assert path.name in REFUSED, f"{path.name}: {exc}"
        assert REFUSED[path.name] in str(exc)
        return
    assert path.name not in REFUSED, f"{path.name} now gets through: update REFUSED"
    source, result = dcmread(path), dcmread(out)
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.get("SOPInstanceUID") == source.get("SOPInstanceUID")
    if "PixelData" not in source:
        assert set(result.keys()) == set(source.keys())
        return
    try:
        expected = source.pixel_array
    except Exception:
        # pydicom cannot decode the original (truncated data, a broken Number of Frames):
        # the native bytes go through unchanged.
        assert result.PixelData == source.PixelData
        return
    values = result.pixel_array
    if path.name in WORD_ORDER:
        halves = ((expected & 0xFFFF) << 16) | (expected >> 16)
        assert np.array_equal(values, halves.astype(values.dtype))
        return
    assert values.shape == expected.shape
    assert np.array_equal(values, expected)
