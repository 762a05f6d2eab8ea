"""Transfer syntax names, output targets, and the capability table (what this installation can
decode and encode, and which package a syntax needs when it cannot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomnet.errors import TranscodeError
from dicomnet.pixels import ALIASES, Target, as_target, capabilities, capability

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_aliases_and_uids_resolve() -> None:
    assert as_target("jpeg-ls-lossless") == Target(JPEGLSLossless)
    assert as_target(" RLE ") == Target(RLELossless)
    assert as_target(JPEG2000Lossless) == Target(JPEG2000Lossless)
    assert as_target("jpeg-ls-near-lossless").lossy
    assert not Target(JPEGLSNearLossless).lossy  # NEAR=0 in the near-lossless syntax
    assert not Target(JPEG2000).lossy and Target(JPEG2000, j2k_ratios=(10,)).lossy
    assert Target(JPEGBaseline8Bit).lossy
    with pytest.raises(TranscodeError, match="unknown transfer syntax"):
        as_target("jpeg-xl")
    assert all(isinstance(t, Target) for t in ALIASES.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transfer_syntax": JPEGLSLossless, "near_lossless": 2}, "Near-Lossless only"),
        ({"transfer_syntax": JPEG2000Lossless, "j2k_ratios": (5,)}, "apply to JPEG 2000"),
        ({"transfer_syntax": JPEG2000, "j2k_ratios": (5,), "j2k_psnr": (40,)}, "not both"),
        ({"transfer_syntax": JPEG2000, "j2k_ratios": (0.5,)}, "at least 1"),
        ({"transfer_syntax": JPEGLSNearLossless, "near_lossless": 300}, "0..255"),
    ],
)
def test_impossible_targets(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Target(**kwargs)  # type: ignore[arg-type]


def test_native_syntaxes_are_always_handled() -> None:
    native = capability(ExplicitVRLittleEndian)
    assert native.decode and native.encode


def test_table_covers_every_transfer_syntax_and_names_what_it_cannot_do() -> None:
    table = {c.transfer_syntax: c for c in capabilities()}
    assert ExplicitVRLittleEndian in table and JPEGBaseline8Bit in table
    mpeg = table["1.2.840.10008.1.2.4.100"]
    assert not mpeg.decode and "not supported" in mpeg.why_not(encode=False)
    assert not table[JPEGBaseline8Bit].encode  # pydicom has no JPEG baseline encoder


def run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_numpy_dicomnet_works_and_says_what_is_missing() -> None:
    out = run(
        "import sys; sys.modules['numpy'] = None\n"
        "import dicomnet\n"
        "from dicomnet.pixels import capability\n"
        "c = capability('1.2.840.10008.1.2.4.90')\n"
        "print(c.decode, c.encode)\n"
        "print(c.why_not(encode=False))\n"
    )
    first, why = out.splitlines()[:2]
    assert first == "False False"
    assert "numpy" in why and "pylibjpeg-openjpeg" in why and "dicomnet[codecs]" in why


def test_without_pyjpegls_jpeg_ls_encoding_names_it() -> None:
    out = run(
        "import sys; sys.modules['jpeg_ls'] = None\n"
        "from dicomnet.pixels import capability\n"
        "c = capability('1.2.840.10008.1.2.4.80')\n"
        "print(c.encode)\n"
        "print(c.why_not(encode=True))\n"
    )
    encode, why = out.splitlines()[:2]
    assert encode == "False" and "pyjpegls" in why
