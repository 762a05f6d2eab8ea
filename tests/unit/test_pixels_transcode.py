"""The frame-by-frame transcoder: lossless round trips through every encoder (hypothesis over
image geometry), lossy output only when asked and then marked (PS3.3 C.7.6.1.1.5), Photometric
Interpretation as the codec requires (PS3.5 §8.2), and bad input refused with a TranscodeError
that leaves the source alone and the destination unwritten."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

np = pytest.importorskip("numpy")

from pydicom import Dataset, dcmread  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.encaps import generate_frames  # noqa: E402
from pydicom.uid import (  # noqa: E402
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from dicomnet.errors import TranscodeError  # noqa: E402
from dicomnet.pixels import Action, Target, can_encode, transcode_file  # noqa: E402

SC_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.7.3"

needs = pytest.mark.skipif(
    not all(can_encode(t) for t in ("rle", "jpeg-ls-lossless", "jpeg2000-lossless")),
    reason="the codecs extra is not installed (pip install 'dicomnet[codecs]')",
)
pytestmark = needs


def write_image(
    path: Path,
    pixels: np.ndarray,
    *,
    bits_stored: int,
    signed: bool = False,
    photometric: str | None = None,
    lossy: bool = False,
) -> Dataset:
    """An Explicit VR Little Endian Part 10 file holding ``pixels`` (frames, rows, cols[, 3])."""
    frames, rows, columns = pixels.shape[:3]
    spp = pixels.shape[3] if pixels.ndim == 4 else 1
    bits = pixels.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SC_MULTIFRAME
    ds.SOPClassUID = SC_MULTIFRAME
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PIXELS"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, spp
    ds.PhotometricInterpretation = photometric or ("RGB" if spp == 3 else "MONOCHROME2")
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if lossy:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = "8.5"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def smooth(frames: int, rows: int, columns: int, spp: int, bits_stored: int, signed: bool, seed: int) -> np.ndarray:  # fmt: skip
    """Deterministic image content: gradients plus noise, within Bits Stored."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(f"{'i' if signed else 'u'}{1 if bits_stored <= 8 else 2}")
    low = -(1 << (bits_stored - 1)) if signed else 0
    high = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    shape = (frames, rows, columns) + ((spp,) if spp > 1 else ())
    base = np.linspace(low, high, num=int(np.prod(shape))).reshape(shape)
    noise = rng.integers(-3, 4, size=shape)
    return np.clip(base + noise, low, high).astype(dtype)


def decoded(path: Path) -> np.ndarray:
    ds = dcmread(path)
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr.reshape((frames, *arr.shape[-3 + (arr.ndim == 4 or (arr.ndim == 3 and frames == 1 and ds.SamplesPerPixel == 3)) :]))  # fmt: skip


def as_frames(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    return arr.reshape((frames, int(ds.Rows), int(ds.Columns)) + ((spp,) if spp > 1 else ()))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LOSSLESS = ["rle", "jpeg-ls-lossless", "jpeg2000-lossless"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.sampled_from(LOSSLESS),
    frames=st.integers(1, 3),
    rows=st.integers(1, 40),
    columns=st.integers(1, 40),
    colour=st.booleans(),
    bits_stored=st.sampled_from([8, 12, 16]),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lossless_round_trip(
    tmp_path: Path,
    target: str,
    frames: int,
    rows: int,
    columns: int,
    colour: bool,
    bits_stored: int,
    signed: bool,
    seed: int,
) -> None:
    spp = 3 if colour else 1
    signed = signed and not colour  # PS3.5 8.2: colour is unsigned
    # The codecs' own limits (said by TranscodeError, tested below): openjpeg codes 6
    # resolution levels; pyjpegls sizes its output buffer too small for tiny incompressible
    # frames (measured: up to 132 pixels of 8-bit noise fail, "destination buffer too small").
    least = {"jpeg2000-lossless": 32, "jpeg-ls-lossless": 16}.get(target, 1)
    rows, columns = max(rows, least), max(columns, least)
    pixels = smooth(frames, rows, columns, spp, bits_stored, signed, seed)
    src = tmp_path / f"src-{seed}.dcm"
    write_image(src, pixels, bits_stored=bits_stored, signed=signed)
    before = digest(src)
    packed, back = tmp_path / f"packed-{seed}.dcm", tmp_path / f"back-{seed}.dcm"
    result = transcode_file(src, packed, target)
    assert result.action is Action.COMPRESS and not result.lossy and result.frames == frames
    assert dcmread(packed).file_meta.TransferSyntaxUID == Target_uid(target)
    assert np.array_equal(as_frames(dcmread(packed)), pixels)  # pydicom decodes ours
    again = transcode_file(packed, back, "explicit-le")
    assert again.action is Action.DECOMPRESS
    out = dcmread(back)
    assert np.array_equal(as_frames(out), pixels)
    assert out.SOPInstanceUID == dcmread(src).SOPInstanceUID  # lossless keeps the instance
    assert digest(src) == before


def Target_uid(name: str) -> str:
    return {"rle": RLELossless, "jpeg-ls-lossless": JPEGLSLossless, "jpeg2000-lossless": JPEG2000Lossless}[name]  # fmt: skip


def test_transcode_between_compressed_syntaxes_and_native_byte_orders(tmp_path: Path) -> None:
    pixels = smooth(3, 32, 40, 1, 12, True, 7)
    src = tmp_path / "src.dcm"
    write_image(src, pixels, bits_stored=12, signed=True)
    chain = ["rle", "jpeg-ls-lossless", "jpeg2000-lossless", "explicit-be", "deflated", "implicit-le", "rle", "explicit-le"]  # fmt: skip
    current = src
    for n, name in enumerate(chain):
        nxt = tmp_path / f"{n}-{name}.dcm"
        transcode_file(current, nxt, name)
        assert np.array_equal(as_frames(dcmread(nxt)), pixels), name
        current = nxt
    be = dcmread(tmp_path / "3-explicit-be.dcm")
    assert be.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    # 16-bit words, big endian: the first pixel's two bytes are most significant first.
    assert be.PixelData[:2] == struct.pack(">h", int(pixels.flat[0]))
    assert dcmread(tmp_path / "4-deflated.dcm").file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian  # fmt: skip
    assert dcmread(tmp_path / "5-implicit-le.dcm").file_meta.TransferSyntaxUID == ImplicitVRLittleEndian  # fmt: skip


def test_basic_offset_table_points_at_each_frame(tmp_path: Path) -> None:
    pixels = smooth(4, 9, 7, 1, 8, False, 3)  # odd sizes: fragments padded to even length
    src, packed = tmp_path / "src.dcm", tmp_path / "packed.dcm"
    write_image(src, pixels, bits_stored=8)
    transcode_file(src, packed, "jpeg-ls-lossless")
    data = dcmread(packed).PixelData
    (bot_length,) = struct.unpack_from("<I", data, 4)
    offsets = struct.unpack_from(f"<{bot_length // 4}I", data, 8)
    first = 8 + bot_length
    assert len(offsets) == 4 and offsets[0] == 0
    for offset in offsets:
        assert data[first + offset : first + offset + 4] == b"\xfe\xff\x00\xe0"
    assert len(list(generate_frames(data, number_of_frames=4))) == 4


def test_near_lossless_is_refused_unless_asked_then_marked(tmp_path: Path) -> None:
    pixels = smooth(2, 32, 32, 1, 12, False, 11)
    src, out = tmp_path / "src.dcm", tmp_path / "out.dcm"
    source = write_image(src, pixels, bits_stored=12)
    with pytest.raises(TranscodeError, match="lossy"):
        transcode_file(src, out, "jpeg-ls-near-lossless")
    assert not out.exists()
    result = transcode_file(src, out, Target(JPEGLSNearLossless, near_lossless=3), allow_lossy=True)
    assert result.lossy and result.sop_instance_uid != source.SOPInstanceUID
    ds = dcmread(out)
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_14495_1"
    assert float(ds.LossyImageCompressionRatio) > 1
    assert ds.SOPInstanceUID == result.sop_instance_uid == ds.file_meta.MediaStorageSOPInstanceUID
    diff = np.abs(as_frames(ds).astype(int) - pixels.astype(int))
    assert diff.max() <= 3  # JPEG-LS NEAR bounds every sample's error


def test_lossy_input_needs_asking_twice_and_keeps_its_history(tmp_path: Path) -> None:
    pixels = smooth(1, 32, 32, 1, 12, False, 5)
    src, out = tmp_path / "src.dcm", tmp_path / "out.dcm"
    write_image(src, pixels, bits_stored=12, lossy=True)
    lossy_j2k = Target(JPEG2000, j2k_ratios=(5.0,))
    with pytest.raises(TranscodeError, match="allow_lossy_to_lossy"):
        transcode_file(src, out, lossy_j2k, allow_lossy=True)
    transcode_file(src, out, lossy_j2k, allow_lossy=True, allow_lossy_to_lossy=True)
    ds = dcmread(out)
    assert list(ds.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_1"]
    assert len(ds.LossyImageCompressionRatio) == 2 and ds.LossyImageCompressionRatio[0] == 8.5
    # Lossless compression of lossy data is fine and keeps the record.
    transcode_file(src, tmp_path / "ls.dcm", "jpeg-ls-lossless")
    assert dcmread(tmp_path / "ls.dcm").LossyImageCompression == "01"


def test_rgb_uses_the_jpeg2000_component_transform(tmp_path: Path) -> None:
    pixels = smooth(1, 32, 33, 3, 8, False, 9)
    src = tmp_path / "src.dcm"
    write_image(src, pixels, bits_stored=8)
    transcode_file(src, tmp_path / "rct.dcm", "jpeg2000-lossless")
    assert dcmread(tmp_path / "rct.dcm").PhotometricInterpretation == "YBR_RCT"
    result = transcode_file(tmp_path / "rct.dcm", tmp_path / "rgb.dcm", "explicit-le")
    assert result.photometric_interpretation == "RGB"
    assert np.array_equal(as_frames(dcmread(tmp_path / "rgb.dcm")), pixels)
    transcode_file(src, tmp_path / "ict.dcm", "jpeg2000", allow_lossy=True)
    assert dcmread(tmp_path / "ict.dcm").PhotometricInterpretation == "YBR_ICT"
    # JPEG-LS and RLE keep RGB.
    transcode_file(src, tmp_path / "jls.dcm", "jpeg-ls-lossless")
    assert dcmread(tmp_path / "jls.dcm").PhotometricInterpretation == "RGB"


def test_jpeg_baseline_ybr_full_422_decodes_to_rgb_and_stays_marked_lossy(tmp_path: Path) -> None:
    path = get_testdata_file("SC_rgb_dcmtk_+eb+cy+np.dcm")
    assert path is not None
    source = dcmread(path)
    assert source.PhotometricInterpretation == "YBR_FULL_422"
    out = tmp_path / "out.dcm"
    result = transcode_file(path, out, "explicit-le")
    ds = dcmread(out)
    assert result.action is Action.DECOMPRESS and not result.lossy
    assert ds.PhotometricInterpretation == "RGB" and ds.PlanarConfiguration == 0
    assert ds.LossyImageCompression == "01"  # PS3.3 C.7.6.1.1.5: once lossy, always on record
    assert ds.SOPInstanceUID == source.SOPInstanceUID
    assert np.array_equal(ds.pixel_array, source.pixel_array)


def test_same_syntax_is_a_copy_and_no_pixel_data_is_a_re_encoding(tmp_path: Path) -> None:
    ct = get_testdata_file("CT_small.dcm")
    plan = get_testdata_file("rtplan.dcm")
    assert ct is not None and plan is not None
    assert transcode_file(ct, tmp_path / "ct.dcm", ExplicitVRLittleEndian).action is Action.SEND
    assert (tmp_path / "ct.dcm").read_bytes() == Path(ct).read_bytes()
    result = transcode_file(plan, tmp_path / "plan.dcm", "jpeg-ls-lossless")
    out = dcmread(tmp_path / "plan.dcm")
    assert out.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert out.SOPInstanceUID == dcmread(plan).SOPInstanceUID and result.frames == 0


# --- bad input -------------------------------------------------------------------------------


def compressed(tmp_path: Path, target: str, frames: int = 2) -> tuple[Path, bytes]:
    pixels = smooth(frames, 32, 32, 1, 12, False, 1)
    src, packed = tmp_path / "src.dcm", tmp_path / f"packed-{target}.dcm"
    write_image(src, pixels, bits_stored=12)
    transcode_file(src, packed, target)
    return packed, packed.read_bytes()


def pixel_value_offset(data: bytes) -> int:
    """Offset of encapsulated Pixel Data's first item (after the OB header)."""
    return data.rindex(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12


def refuses(src: Path, tmp_path: Path, match: str, target: str = "explicit-le") -> None:
    before = digest(src)
    out = tmp_path / "out.dcm"
    with pytest.raises(TranscodeError, match=match):
        transcode_file(src, out, target)
    assert digest(src) == before and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".transcode-")]


def test_corrupt_codestream(tmp_path: Path) -> None:
    packed, data = compressed(tmp_path, "jpeg2000-lossless", frames=1)
    start = pixel_value_offset(data)
    (bot,) = struct.unpack_from("<I", data, start + 4)
    fragment = start + 8 + bot + 8
    bad = bytearray(data)
    bad[fragment : fragment + 64] = b"\x00" * 64
    packed.write_bytes(bytes(bad))
    refuses(packed, tmp_path, "frame 1 of 1 cannot be decoded as JPEG 2000")


def test_basic_offset_table_that_lies(tmp_path: Path) -> None:
    packed, data = compressed(tmp_path, "rle", frames=2)
    start = pixel_value_offset(data)
    bad = bytearray(data)
    struct.pack_into("<I", bad, start + 8 + 4, 6)  # second frame "at" offset 6: inside an item
    packed.write_bytes(bytes(bad))
    refuses(packed, tmp_path, "Basic Offset Table entry 2 .* does not point at a fragment")


def test_frame_count_that_does_not_match_encapsulated(tmp_path: Path) -> None:
    packed, _ = compressed(tmp_path, "jpeg-ls-lossless", frames=2)
    ds = dcmread(packed)
    ds.NumberOfFrames = 3
    ds.save_as(packed)
    refuses(packed, tmp_path, "entries but Number of Frames is 3")


def test_frame_count_that_does_not_match_native(tmp_path: Path) -> None:
    src = tmp_path / "src.dcm"
    ds = write_image(src, smooth(2, 8, 8, 1, 8, False, 2), bits_stored=8)
    ds.NumberOfFrames = 3
    ds.save_as(src, enforce_file_format=True)
    refuses(src, tmp_path, "needs 192", target="rle")


def test_fragment_past_the_end_of_the_file(tmp_path: Path) -> None:
    packed, data = compressed(tmp_path, "rle", frames=2)
    packed.write_bytes(data[:-40])
    refuses(packed, tmp_path, "past the end of the file")


def test_missing_item_tag(tmp_path: Path) -> None:
    packed, data = compressed(tmp_path, "rle", frames=1)
    start = pixel_value_offset(data)
    bad = bytearray(data)
    bad[start : start + 4] = b"\x10\x00\x10\x00"
    packed.write_bytes(bytes(bad))
    refuses(packed, tmp_path, "Basic Offset Table item")


def test_not_dicom_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"x" * 300)
    refuses(junk, tmp_path, "not a DICOM Part 10 file")
    with pytest.raises(TranscodeError, match="No such file"):
        transcode_file(tmp_path / "absent.dcm", tmp_path / "out.dcm", "rle")


def test_float_pixel_data_cannot_be_compressed(tmp_path: Path) -> None:
    ds = write_image(tmp_path / "f.dcm", smooth(1, 4, 4, 1, 8, False, 0), bits_stored=8)
    del ds.PixelData
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    del ds.PixelRepresentation
    ds.FloatPixelData = struct.pack("<16f", *range(16))
    ds.save_as(tmp_path / "f.dcm", enforce_file_format=True)
    refuses(tmp_path / "f.dcm", tmp_path, "Float Pixel Data .* cannot be compressed", "rle")
    transcode_file(tmp_path / "f.dcm", tmp_path / "be.dcm", "explicit-be")
    back = tmp_path / "le.dcm"
    transcode_file(tmp_path / "be.dcm", back, "explicit-le")
    assert dcmread(back).FloatPixelData == struct.pack("<16f", *range(16))
    assert dcmread(tmp_path / "be.dcm").FloatPixelData[:8] == struct.pack(">2f", 0, 1)


def test_unknown_target_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(TranscodeError, match="jpeg-ls-lossless"):
        transcode_file(get_testdata_file("CT_small.dcm") or "", tmp_path / "x.dcm", "jpeg-xl")


def test_codec_size_limits_are_said_clearly(tmp_path: Path) -> None:
    src = tmp_path / "small.dcm"
    write_image(src, smooth(1, 16, 40, 1, 8, False, 0), bits_stored=8)
    refuses(src, tmp_path, "at least 32 rows and columns; this image is 16x40", "jpeg2000-lossless")
    write_image(src, smooth(1, 3, 40, 1, 8, False, 0), bits_stored=8)
    refuses(src, tmp_path, "under 4x4", "jpeg-ls-lossless")


def test_bit_packed_frames_are_re_encoded_only(tmp_path: Path) -> None:
    path = get_testdata_file("liver_1frame.dcm")  # Bits Allocated 1
    assert path is not None
    src = tmp_path / "liver.dcm"
    src.write_bytes(Path(path).read_bytes())
    refuses(src, tmp_path, "Bits Allocated 1 pixel data can only be re-encoded", "rle")
    transcode_file(src, tmp_path / "be.dcm", "explicit-be")
    assert dcmread(tmp_path / "be.dcm").PixelData == dcmread(src).PixelData  # OB: no swap
