"""dicomnet's codecs against DCMTK's own: what dicomnet compresses DCMTK decodes to the same
pixels (dcmdjpls, dcmdrle), and what DCMTK compresses (dcmcjpls, dcmcrle, dcmcjpeg) dicomnet
decodes to the pixels DCMTK's decoders give."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from pydicom import dcmread  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomnet.pixels import Target, can_encode, transcode_file  # noqa: E402
from tests.helpers import dcmtk_env, require_tool  # noqa: E402
from tests.unit.test_pixels_transcode import as_frames, smooth, write_image  # noqa: E402

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not all(can_encode(t) for t in ("rle", "jpeg-ls-lossless")),
        reason="the codecs extra is not installed",
    ),
]

IMAGES = {
    # name: (frames, rows, columns, samples, bits stored, signed)
    "ct12": (1, 64, 80, 1, 12, False),
    "signed16": (2, 48, 40, 1, 16, True),
    "rgb8": (1, 40, 56, 3, 8, False),
    "mono8x3": (3, 32, 32, 1, 8, False),
}


def image(tmp_path: Path, name: str) -> tuple[Path, np.ndarray]:
    frames, rows, columns, spp, bits, signed = IMAGES[name]
    pixels = smooth(frames, rows, columns, spp, bits, signed, seed=len(name))
    path = tmp_path / f"{name}.dcm"
    write_image(path, pixels, bits_stored=bits, signed=signed)
    return path, pixels


def dcmtk(tool: str, *args: str | Path) -> None:
    done = subprocess.run(
        [require_tool(tool), *map(str, args)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{tool}: {done.stderr or done.stdout}"


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize(
    ("target", "decoder", "syntax"),
    [("jpeg-ls-lossless", "dcmdjpls", JPEGLSLossless), ("rle", "dcmdrle", RLELossless)],
)
def test_dcmtk_decodes_what_dicomnet_compresses(
    tmp_path: Path, name: str, target: str, decoder: str, syntax: str
) -> None:
    src, pixels = image(tmp_path, name)
    packed, plain = tmp_path / "packed.dcm", tmp_path / "plain.dcm"
    transcode_file(src, packed, target)
    assert dcmread(packed).file_meta.TransferSyntaxUID == syntax
    dcmtk(decoder, packed, plain)
    out = dcmread(plain)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(as_frames(out), pixels)


def test_dcmtk_decodes_dicomnet_near_lossless_within_near(tmp_path: Path) -> None:
    src, pixels = image(tmp_path, "ct12")
    packed, plain = tmp_path / "packed.dcm", tmp_path / "plain.dcm"
    transcode_file(src, packed, Target(JPEGLSNearLossless, near_lossless=2), allow_lossy=True)
    dcmtk("dcmdjpls", packed, plain)
    diff = np.abs(as_frames(dcmread(plain)).astype(int) - pixels.astype(int))
    assert 0 < diff.max() <= 2


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize(
    ("encoder", "options", "decoder", "syntax"),
    [
        ("dcmcjpls", [], "dcmdjpls", JPEGLSLossless),
        ("dcmcjpls", ["+en", "+md", "3"], "dcmdjpls", JPEGLSNearLossless),
        ("dcmcrle", [], "dcmdrle", RLELossless),
        ("dcmcjpeg", ["+e1"], "dcmdjpeg", JPEGLosslessSV1),
    ],
)
def test_dicomnet_decodes_what_dcmtk_compresses(
    tmp_path: Path,
    name: str,
    encoder: str,
    options: list[str],
    decoder: str,
    syntax: str,
) -> None:
    if syntax == JPEGLSNearLossless and IMAGES[name][5]:
        pytest.skip("dcmcjpls: unsupported pixel representation for near-lossless (signed)")
    src, pixels = image(tmp_path, name)
    packed, theirs, ours = tmp_path / "packed.dcm", tmp_path / "theirs.dcm", tmp_path / "ours.dcm"
    dcmtk(encoder, *options, src, packed)
    assert dcmread(packed).file_meta.TransferSyntaxUID == syntax
    dcmtk(decoder, packed, theirs)
    result = transcode_file(packed, ours, ExplicitVRLittleEndian)
    assert result.frames == IMAGES[name][0]
    mine, dcmtks = as_frames(dcmread(ours)), as_frames(dcmread(theirs))
    assert np.array_equal(mine, dcmtks)
    if syntax != JPEGLSNearLossless:
        assert np.array_equal(mine, pixels)


def test_dicomnet_decodes_dcmtk_jpeg_baseline_like_dcmdjpeg(tmp_path: Path) -> None:
    src, _pixels = image(tmp_path, "rgb8")
    packed, theirs, ours = tmp_path / "packed.dcm", tmp_path / "theirs.dcm", tmp_path / "ours.dcm"
    dcmtk("dcmcjpeg", "+eb", src, packed)
    assert dcmread(packed).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    dcmtk("dcmdjpeg", packed, theirs)
    transcode_file(packed, ours, ExplicitVRLittleEndian)
    mine, dcmtks = dcmread(ours), dcmread(theirs)
    assert mine.PhotometricInterpretation == dcmtks.PhotometricInterpretation == "RGB"
    assert mine.LossyImageCompression == "01"
    # Two JPEG decoders (libjpeg 9 here, IJG 6b in DCMTK) may differ by IDCT and colour
    # conversion rounding only: a few levels at most, well under one on average.
    diff = np.abs(as_frames(mine).astype(int) - as_frames(dcmtks).astype(int))
    assert diff.max() <= 4 and diff.mean() < 1
