"""Transfer syntaxes as the pixel layer sees them: native or encapsulated, lossless or lossy, the
short names the command line uses, output targets with their encoder parameters, and what this
installation can decode and encode (pydicom's pixel data plugins, PS3.5 §8 and Annex A).

Rules: no I/O, no numpy at import time (dicomnet works without the ``codecs`` extra; a transfer
syntax it cannot handle is named with the package it needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomnet.errors import TranscodeError

#: The native (not encapsulated) syntaxes, in the order dicomnet prefers to send in them.
NATIVE: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

#: Syntaxes whose compression is always lossy (PS3.5 §8.2.1: JPEG processes 1, 2 and 4).
ALWAYS_LOSSY: frozenset[str] = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
#: Syntaxes that may hold lossy data (their lossless use is allowed too).
MAYBE_LOSSY: frozenset[str] = frozenset({JPEGLSNearLossless, JPEG2000, HTJ2K})

#: PS3.3 C.7.6.1.1.5.1: Lossy Image Compression Method (0028,2114) defined terms, per syntax.
LOSSY_METHODS: dict[str, str] = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    HTJ2K: "ISO_15444_15",
}


@lru_cache(maxsize=256)
def is_native(transfer_syntax: str) -> bool:
    """True for a syntax whose Pixel Data is native (PS3.5 §8.1.1): the uncompressed ones."""
    return transfer_syntax in NATIVE or not UID(transfer_syntax).is_encapsulated


@lru_cache(maxsize=256)
def syntax_name(transfer_syntax: str) -> str:
    name = UID(transfer_syntax).name
    return name if name and name != transfer_syntax else transfer_syntax


@dataclass(frozen=True, slots=True)
class Target:
    """An output transfer syntax with its encoder parameters.

    ``near_lossless`` is JPEG-LS's NEAR (the largest error per sample, PS3.5 §8.2.3) and only
    means something for JPEG-LS Near-Lossless; ``j2k_ratios`` (compression ratios per quality
    layer) or ``j2k_psnr`` (dB) make JPEG 2000 lossy. Without them those two syntaxes are written
    losslessly, which PS3.5 allows."""

    transfer_syntax: str
    near_lossless: int = 0
    j2k_ratios: tuple[float, ...] = ()
    j2k_psnr: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.near_lossless < 0 or self.near_lossless > 255:
            raise ValueError(f"JPEG-LS NEAR must be 0..255, not {self.near_lossless}")
        if self.near_lossless and self.transfer_syntax != JPEGLSNearLossless:
            raise ValueError("near_lossless applies to JPEG-LS Near-Lossless only")
        if (self.j2k_ratios or self.j2k_psnr) and self.transfer_syntax != JPEG2000:
            raise ValueError("j2k_ratios/j2k_psnr apply to JPEG 2000 (1.2.840.10008.1.2.4.91)")
        if self.j2k_ratios and self.j2k_psnr:
            raise ValueError("give JPEG 2000 either compression ratios or PSNR, not both")
        if any(r < 1 for r in self.j2k_ratios):
            raise ValueError("JPEG 2000 compression ratios are at least 1")

    @property
    def lossy(self) -> bool:
        """True when writing this target loses information."""
        if self.transfer_syntax in ALWAYS_LOSSY:
            return True
        if self.transfer_syntax == JPEGLSNearLossless:
            return self.near_lossless > 0
        if self.transfer_syntax == JPEG2000:
            return bool(self.j2k_ratios or self.j2k_psnr)
        return False

    @property
    def native(self) -> bool:
        return is_native(self.transfer_syntax)

    @property
    def method(self) -> str:
        """The Lossy Image Compression Method (0028,2114) term of a lossy target."""
        return LOSSY_METHODS.get(self.transfer_syntax, "")

    def __str__(self) -> str:
        text = syntax_name(self.transfer_syntax)
        if self.near_lossless:
            text += f" (NEAR={self.near_lossless})"
        if self.j2k_ratios:
            text += f" (ratio {':'.join(f'{r:g}' for r in self.j2k_ratios)})"
        if self.j2k_psnr:
            text += f" (PSNR {':'.join(f'{r:g}' for r in self.j2k_psnr)} dB)"
        return text


#: Short names for the command line (``--transfer-syntax NAME``), each an output target.
ALIASES: dict[str, Target] = {
    "explicit-le": Target(ExplicitVRLittleEndian),
    "implicit-le": Target(ImplicitVRLittleEndian),
    "explicit-be": Target(ExplicitVRBigEndian),
    "deflated": Target(DeflatedExplicitVRLittleEndian),
    "rle": Target(RLELossless),
    "jpeg-ls-lossless": Target(JPEGLSLossless),
    # NEAR=2 is also DCMTK dcmcjpls's default maximum deviation for near-lossless.
    "jpeg-ls-near-lossless": Target(JPEGLSNearLossless, near_lossless=2),
    "jpeg2000-lossless": Target(JPEG2000Lossless),
    "jpeg2000": Target(JPEG2000, j2k_ratios=(10.0,)),
    "jpeg-lossless": Target(JPEGLosslessSV1),
    "jpeg-lossless-p14": Target(JPEGLossless),
    "jpeg-baseline": Target(JPEGBaseline8Bit),
    "jpeg-extended": Target(JPEGExtended12Bit),
    "htj2k-lossless": Target(HTJ2KLossless),
    "htj2k-lossless-rpcl": Target(HTJ2KLosslessRPCL),
    "htj2k": Target(HTJ2K),
}


def as_target(value: str | Target) -> Target:
    """A ``Target`` from a short name (``ALIASES``), a transfer syntax UID, or a ``Target``."""
    if isinstance(value, Target):
        return value
    key = value.strip()
    if key.lower() in ALIASES:
        return ALIASES[key.lower()]
    uid = UID(key)
    if uid.is_transfer_syntax:
        return Target(uid)
    names = ", ".join(ALIASES)
    raise TranscodeError(f"unknown transfer syntax {value!r}: give a UID or one of {names}")


# --- what this installation can do ---------------------------------------------------------------

_EXTRA = "pip install 'dicomnet[codecs]'"


@dataclass(frozen=True, slots=True)
class Capability:
    """Whether this installation can decode / encode one transfer syntax's pixel data, and if
    not, which packages are missing."""

    transfer_syntax: str
    name: str
    decode: bool
    encode: bool
    decode_missing: tuple[str, ...] = ()
    encode_missing: tuple[str, ...] = ()

    def why_not(self, encode: bool) -> str:
        """One line: why this syntax cannot be decoded (or encoded) here."""
        missing = self.encode_missing if encode else self.decode_missing
        verb = "encoding" if encode else "decoding"
        if not missing:
            return f"{verb} {self.name} is not supported by pydicom's pixel data plugins"
        return f"{verb} {self.name} needs {' and '.join(missing)} ({_EXTRA})"


def _numpy_available() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _missing(coder: object) -> tuple[str, ...]:
    """Package names pydicom says a coder lacks, from messages like ``'pylibjpeg - requires
    numpy, pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0'``: one plugin's list is enough, that of
    a plugin the ``codecs`` extra installs when there is one."""
    messages: list[str] = list(getattr(coder, "missing_dependencies", []))
    if not messages:
        return ()
    ours = [m for m in messages if m.startswith(("pyjpegls", "pylibjpeg"))]
    text = (ours or messages)[0].split(" - requires ", 1)[-1]
    parts = [p.strip() for p in text.replace(" and ", ", ").split(",") if p.strip()]
    if "numpy" not in parts and not _numpy_available():
        parts.insert(0, "numpy")
    return tuple(parts)


@cache
def capability(transfer_syntax: str) -> Capability:
    """What this installation can do with ``transfer_syntax`` (cached: plugins do not appear
    while the process runs)."""
    uid = UID(transfer_syntax)
    name = syntax_name(uid)
    if is_native(uid):
        # Re-encoding between native syntaxes is dicomnet's own code; decoding native pixels
        # into values (to compress them) needs numpy.
        if _numpy_available():
            return Capability(uid, name, True, True)
        return Capability(uid, name, True, True, ("numpy",), ("numpy",))
    from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS
    from pydicom.pixels.encoders.base import _PIXEL_DATA_ENCODERS

    decode = encode = False
    decode_missing: tuple[str, ...] = ()
    encode_missing: tuple[str, ...] = ()
    if uid in _PIXEL_DATA_DECODERS:
        decoder = _PIXEL_DATA_DECODERS[uid][0]
        decode = bool(decoder.is_available) and _numpy_available()
        if not decode:
            decode_missing = _missing(decoder) or ("numpy",)
    if uid in _PIXEL_DATA_ENCODERS:
        encoder = _PIXEL_DATA_ENCODERS[uid][0]
        encode = bool(encoder.is_available) and _numpy_available()
        if not encode:
            encode_missing = _missing(encoder) or ("numpy",)
    return Capability(uid, name, decode, encode, decode_missing, encode_missing)


def capabilities() -> list[Capability]:
    """The table for every transfer syntax pydicom knows of that carries pixel data in the data
    set (referenced-pixel syntaxes such as JPIP and the video ones are listed as not handled)."""
    from dicomnet.uids import all_transfer_syntaxes

    return [capability(ts) for ts in all_transfer_syntaxes()]


def can_decode(transfer_syntax: str) -> bool:
    return capability(transfer_syntax).decode


def can_encode(target: str | Target) -> bool:
    """True when this installation can write ``target`` (with its parameters)."""
    t = as_target(target)
    if t.native:
        return True
    if t.transfer_syntax == JPEG2000 and not t.lossy:
        return capability(JPEG2000Lossless).encode
    return capability(t.transfer_syntax).encode
