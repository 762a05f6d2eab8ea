"""Transcode a Part 10 file to another transfer syntax, frame by frame, into a new file.

Rules:
- The source is opened read-only and never altered; the destination is written to a temporary
  file in its own folder and renamed into place only when complete (a failure leaves nothing).
- Memory is bounded by one frame (plus the data set's other elements): native Pixel Data is
  copied or read in frame-sized pieces, encapsulated Pixel Data through its item table
  (``frames.py``), encoded frames are spooled to a temporary file so that the Basic Offset Table
  can precede them (PS3.5 A.4).
- Never silently lossy: a lossy target needs ``allow_lossy``; lossy input needs
  ``allow_lossy_to_lossy`` as well. Lossy output sets Lossy Image Compression (0028,2110) "01",
  appends its Ratio (0028,2112) and Method (0028,2114), and gets a new SOP Instance UID (PS3.3
  C.7.6.1.1.5).
- Photometric Interpretation follows the codec (PS3.5 §8.2): JPEG lossy YBR_FULL(_422) decodes
  to RGB, JPEG 2000 YBR_RCT/YBR_ICT decodes to RGB, RGB encoded as JPEG 2000 uses the
  component transform and becomes YBR_RCT (lossless) or YBR_ICT (lossy).
- Codec work is CPU-bound and, as measured, not safe to run concurrently in threads (openjpeg's
  encoder crashes the process); ``pool.py`` runs this module's functions in worker processes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from dicomnet.dataset import WORD_SIZES, NotDicomError, encode_dataset, read_file_info, swap_bytes
from dicomnet.errors import TranscodeError
from dicomnet.pixels.frames import (
    Encapsulated,
    frame_fragments,
    native_frame_length,
    read_frame,
    read_items,
)
from dicomnet.pixels.syntaxes import (
    ALWAYS_LOSSY,
    LOSSY_METHODS,
    Target,
    as_target,
    capability,
    is_native,
    syntax_name,
)
from dicomnet.sinks import file_meta_bytes

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("dicomnet.pixels")


class _PluginFailureFilter(logging.Filter):
    """pydicom logs every failing decoder plugin at ERROR with its traceback before it raises;
    the TranscodeError that follows says what was wrong in one line, so those records are
    lowered to DEBUG (a user's terminal shows no chain of pydicom tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("pydicom.pixels.decoders.base").addFilter(_PluginFailureFilter())

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_BULK_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}
_IMPLICIT_BULK_VR = {PIXEL_DATA: "OW", FLOAT_PIXEL_DATA: "OF", DOUBLE_FLOAT_PIXEL_DATA: "OD"}
_CHUNK = 4 << 20  # a multiple of every word size
_UNDEFINED = 0xFFFFFFFF
_EXTRA_HINT = "pip install 'dicomnet[codecs]'"


class Action(StrEnum):
    """What it takes to send a file in another transfer syntax."""

    SEND = "send"  # the same syntax: the file as it is
    REENCODE = "re-encode"  # native -> native (byte order, VR, deflate)
    DECOMPRESS = "decompress"  # encapsulated -> native
    COMPRESS = "compress"  # native -> encapsulated
    TRANSCODE = "transcode"  # encapsulated -> another encapsulated


@functools.lru_cache(maxsize=256)
def classify(source: str, target: str) -> Action:
    if source == target:
        return Action.SEND
    native_in, native_out = is_native(source), is_native(target)
    if native_in and native_out:
        return Action.REENCODE
    if native_out:
        return Action.DECOMPRESS
    return Action.COMPRESS if native_in else Action.TRANSCODE


@dataclass(frozen=True, slots=True)
class TranscodeResult:
    """What ``transcode_file`` wrote."""

    path: Path
    source_syntax: str
    transfer_syntax: str
    action: Action
    frames: int
    lossy: bool  # this conversion lost information (the output got a new SOP Instance UID)
    sop_instance_uid: str
    photometric_interpretation: str | None
    bytes_in: int
    bytes_out: int
    seconds: float
    #: Warnings about the input met while converting it (set by ``pool.py``, whose worker
    #: processes do not log: the caller's process logs them).
    notes: tuple[str, ...] = ()


# --- reading the source --------------------------------------------------------------------------


class _Source:
    """A Part 10 file opened read-only: positional reads, the data set's encoding."""

    def __init__(self, path: Path, fileobj: IO[bytes], offset: int, transfer_syntax: str) -> None:
        self.path = path
        self.file = fileobj
        self.size = os.fstat(fileobj.fileno()).st_size
        self.offset = offset
        uid_flags = _encoding(transfer_syntax)
        self.implicit, self.little = uid_flags

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.file.fileno(), length, offset)
        while len(data) < length:
            more = os.pread(self.file.fileno(), length - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data


@functools.lru_cache(maxsize=64)
def _encoding(transfer_syntax: str) -> tuple[bool, bool]:
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        return False, True
    return bool(uid.is_implicit_VR), bool(uid.is_little_endian)


@dataclass(slots=True)
class _Bulk:
    """The Pixel Data (or Float/Double Float Pixel Data) element of the source."""

    tag: int
    vr: str
    header_offset: int
    value_offset: int
    length: int  # _UNDEFINED for encapsulated

    @property
    def end(self) -> int:
        return self.value_offset + self.length


def _read_head(source: _Source) -> tuple[Dataset, _Bulk | None, Dataset | None]:
    """The elements before the bulk element, the bulk element's header, and the elements after
    it (usually none: Data Set Trailing Padding)."""
    f = source.file
    f.seek(source.offset)
    try:
        head = read_dataset(
            f,  # type: ignore[arg-type]
            source.implicit,
            source.little,
            stop_when=lambda tag, _vr, _length: int(tag) in _BULK_TAGS,
        )
    except Exception as exc:  # pydicom raises many kinds for malformed data
        raise TranscodeError(
            f"{source.path}: cannot read the data set: {_first_line(exc)}"
        ) from None
    if head.original_encoding[0] is not None and head.original_encoding[0] != source.implicit:
        # pydicom noticed the data set is not in the VR encoding its syntax says (a known writer
        # bug, e.g. implicit VR under JPEG Baseline): read the rest as it really is.
        log.warning("%s: data set is not encoded as its transfer syntax says", source.path)
        source.implicit = bool(head.original_encoding[0])
    pos = f.tell()
    raw = source.read(pos, 12)
    if len(raw) < 8:
        return head, None, None
    group, element = struct.unpack("<HH" if source.little else ">HH", raw[:4])
    tag = (group << 16) | element
    if tag not in _BULK_TAGS:
        return head, None, None
    if source.implicit:
        (length,) = struct.unpack("<I", raw[4:8])
        vr, header = _IMPLICIT_BULK_VR[tag], 8
    else:
        vr_bytes = raw[4:6]
        if vr_bytes in _LONG_VRS:
            (length,) = struct.unpack("<I" if source.little else ">I", raw[8:12])
            header = 12
        else:
            (length,) = struct.unpack("<H" if source.little else ">H", raw[6:8])
            header = 8
        vr = vr_bytes.decode("ascii", "replace")
    bulk = _Bulk(tag, vr, pos, pos + header, length)
    if length != _UNDEFINED and bulk.end > source.size:
        raise TranscodeError(
            f"{source.path}: {_tag_name(tag)} claims {length} bytes at offset {pos + header}, "
            f"past the end of the file ({source.size} bytes)"
        )
    return head, bulk, None


def _read_trailing(source: _Source, end: int) -> Dataset | None:
    if end >= source.size:
        return None
    f = source.file
    f.seek(end)
    try:
        return read_dataset(
            f,  # type: ignore[arg-type]
            source.implicit,
            source.little,
            bytelength=source.size - end,
        )
    except Exception as exc:
        raise TranscodeError(
            f"{source.path}: cannot read the elements after the Pixel Data: {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    """pydicom's message on one line: without the traceback some of its messages carry, with
    the per-plugin reasons of "Unable to decode as exceptions were raised by all plugins:"."""
    text = str(exc).split("Traceback (most recent call last)")[0].strip()
    return " ".join(line.strip() for line in text.splitlines()) or type(exc).__name__


def _tag_name(tag: int) -> str:
    names = {PIXEL_DATA: "Pixel Data", FLOAT_PIXEL_DATA: "Float Pixel Data"}
    return names.get(tag, "Double Float Pixel Data") + f" ({tag >> 16:04X},{tag & 0xFFFF:04X})"


# --- the pixel module ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Pixels:
    """The Image Pixel module values the codecs need (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int

    def options(self, **changes: Any) -> dict[str, Any]:
        """Keyword options for pydicom's Decoder/Encoder, one frame."""
        opts: dict[str, Any] = {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric_interpretation,
            "number_of_frames": 1,
        }
        if self.samples_per_pixel > 1:
            opts["planar_configuration"] = self.planar_configuration
        opts.update(changes)
        return opts


def _pixels(head: Dataset, path: Path) -> _Pixels:
    def number(keyword: str, default: int | None = None) -> int:
        try:
            value = head.get(keyword, default)
            if value is None or value == "":
                if default is None:
                    raise TranscodeError(f"{path}: {keyword} is missing; the frames cannot be read")
                return default
            return int(value)
        except (TypeError, ValueError):
            raise TranscodeError(
                f"{path}: {keyword} is {head.get(keyword)!r}, not a number"
            ) from None

    bits = number("BitsAllocated")
    return _Pixels(
        rows=number("Rows"),
        columns=number("Columns"),
        samples_per_pixel=number("SamplesPerPixel", 1),
        bits_allocated=bits,
        bits_stored=number("BitsStored", bits),
        pixel_representation=number("PixelRepresentation", 0),
        photometric_interpretation=str(head.get("PhotometricInterpretation", "MONOCHROME2")),
        planar_configuration=number("PlanarConfiguration", 0),
        number_of_frames=number("NumberOfFrames", 1),
    )


# --- writing -------------------------------------------------------------------------------------


class _Body:
    """Where the data set bytes go: the output file, through a raw deflate stream for Deflated
    Explicit VR Little Endian (PS3.5 A.5, padded to even length)."""

    def __init__(self, out: IO[bytes], deflate: bool) -> None:
        self.out = out
        self.compressor = (
            zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
            if deflate
            else None
        )
        self.deflated = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.compressor is None:
            self.out.write(data)
        else:
            chunk = self.compressor.compress(data)
            self.deflated += len(chunk)
            self.out.write(chunk)

    def finish(self) -> None:
        if self.compressor is not None:
            chunk = self.compressor.flush()
            self.deflated += len(chunk)
            self.out.write(chunk)
            if self.deflated % 2:
                self.out.write(b"\x00")


def _element_header(tag: int, vr: str, length: int, implicit: bool, little: bool) -> bytes:
    """A long-form element header (PS3.5 §7.1.2/7.1.3) for OB/OW/OF/OD values."""
    order = "<" if little else ">"
    if implicit:
        return struct.pack(order + "HHI", tag >> 16, tag & 0xFFFF, length)
    return struct.pack(order + "HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)


def _dataset_syntax(target: str) -> str:
    """The syntax the elements are encoded in (deflate is applied by ``_Body``)."""
    return ExplicitVRLittleEndian if target == DeflatedExplicitVRLittleEndian else target


def _output_copy(head: Dataset) -> Dataset:
    out = Dataset(head)
    implicit, little = head.original_encoding
    out.set_original_encoding(implicit, little, head.original_character_set)
    return out


# --- the entry point ----------------------------------------------------------------------------


def transcode_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    target: str | Target,
    *,
    allow_lossy: bool = False,
    allow_lossy_to_lossy: bool = False,
    temp_dir: str | os.PathLike[str] | None = None,
    fsync: bool = False,
) -> TranscodeResult:
    """Write ``src`` (a Part 10 file) to ``dst`` in ``target`` (a Target, a UID or a short
    name such as ``"jpeg-ls-lossless"``), frame by frame. Raises ``TranscodeError`` saying what
    was wrong; ``src`` is never altered and ``dst`` is left untouched on failure. ``fsync``:
    the new file is on disk before it is renamed to ``dst``."""
    started = time.perf_counter()
    goal = as_target(target)
    source_path, dest = Path(src), Path(dst)
    try:
        info = read_file_info(source_path)
    except NotDicomError as exc:
        raise TranscodeError(str(exc)) from None
    except OSError as exc:
        raise TranscodeError(f"{source_path}: {exc.strerror or exc}") from None
    action = classify(info.transfer_syntax, goal.transfer_syntax)
    work_dir = Path(temp_dir) if temp_dir is not None else (dest.parent or Path("."))
    fd, tmp_name = tempfile.mkstemp(prefix=".transcode-", suffix=".part", dir=work_dir)
    tmp = Path(tmp_name)
    try:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(os.fdopen(fd, "wb", buffering=1 << 20))
            if action is Action.SEND and dataset_mislabelled(
                source_path, info.offset, info.transfer_syntax
            ):
                # The same syntax, but the data set is not encoded as it says (implicit VR
                # under an explicit syntax): written again as the syntax says, pixels as they
                # are.
                action = Action.REENCODE
            if action is Action.SEND:
                with source_path.open("rb") as f:
                    shutil.copyfileobj(f, out, _CHUNK)
                frames, lossy, uid, pi = 0, False, info.sop_instance_uid, None
            else:
                frames, lossy, uid, pi = _convert(
                    stack, source_path, info.transfer_syntax, info.offset, out, goal,
                    action, work_dir, allow_lossy, allow_lossy_to_lossy,
                    info.sop_class_uid, info.sop_instance_uid,
                )  # fmt: skip
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return TranscodeResult(
        path=dest,
        source_syntax=info.transfer_syntax,
        transfer_syntax=goal.transfer_syntax,
        action=action,
        frames=frames,
        lossy=lossy,
        sop_instance_uid=uid,
        photometric_interpretation=pi,
        bytes_in=info.size,
        bytes_out=dest.stat().st_size,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True, slots=True)
class FileProbe:
    """What the choice of a context needs to know of a file's data set."""

    has_pixels: bool  # it has (Float/Double Float) Pixel Data at the top level
    lossy: bool  # its image was lossy compressed (PS3.3 C.7.6.1.1.5, or an always-lossy syntax)


def probe_file(
    path: str | os.PathLike[str], temp_dir: str | os.PathLike[str] | None = None
) -> FileProbe:
    """Read ``path``'s data set up to its Pixel Data (never the pixels): whether it has pixels
    and whether they were lossy compressed. Raises ``TranscodeError`` for an unreadable file."""
    source_path = Path(path)
    try:
        info = read_file_info(source_path)
    except NotDicomError as exc:
        raise TranscodeError(str(exc)) from None
    except OSError as exc:
        raise TranscodeError(f"{source_path}: {exc.strerror or exc}") from None
    with contextlib.ExitStack() as stack:
        if info.transfer_syntax == DeflatedExplicitVRLittleEndian:
            work_dir = Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir())
            fileobj, offset = _inflated(stack, source_path, info.offset, work_dir)
            source = _Source(source_path, fileobj, offset, ExplicitVRLittleEndian)
        else:
            fileobj = stack.enter_context(source_path.open("rb"))
            source = _Source(source_path, fileobj, info.offset, info.transfer_syntax)
        head, bulk, _ = _read_head(source)
    lossy = _text(head.get("LossyImageCompression")) == "01" or info.transfer_syntax in ALWAYS_LOSSY
    return FileProbe(has_pixels=bulk is not None, lossy=lossy)


#: Value Representations (PS3.5 Table 6.2-1): an explicit VR element header names one.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)


def dataset_mislabelled(path: str | os.PathLike[str], offset: int, transfer_syntax: str) -> bool:
    """True when the data set at ``offset`` is visibly not in the VR encoding its transfer
    syntax says (a known writer bug: implicit VR elements under an explicit VR syntax, or the
    other way round): the first element's header decides, as pydicom's reader does. Deflated
    and unknown syntaxes are not checked."""
    try:
        with open(path, "rb") as f:
            raw = os.pread(f.fileno(), 8, offset)
    except OSError:
        return False
    return prefix_mislabelled(raw, transfer_syntax)


def prefix_mislabelled(prefix: bytes, transfer_syntax: str) -> bool:
    """``dataset_mislabelled`` from the data set's first bytes (8 are enough)."""
    implicit, little = _encoding(transfer_syntax)
    if transfer_syntax == DeflatedExplicitVRLittleEndian or not little or len(prefix) < 8:
        return False
    looks_explicit = prefix[4:6] in _VRS
    return looks_explicit if implicit else not looks_explicit


def _copy_range(source: _Source, start: int, end: int, body: _Body) -> None:
    pos = start
    while pos < end:
        chunk = source.read(pos, min(_CHUNK, end - pos))
        if not chunk:
            raise TranscodeError(f"{source.path}: the file ends inside the Pixel Data")
        body.write(chunk)
        pos += len(chunk)


def convert_for_storage(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    target: str | Target,
    *,
    temp_dir: str | os.PathLike[str] | None = None,
    fsync: bool = False,
) -> TranscodeResult | None:
    """An archive's ``--store-as``: ``src`` written to ``dst`` in the lossless ``target`` when
    it is an image that is worth it; None (nothing written) when it is kept as it arrived: in
    ``target`` already, no pixels to compress, or lossy compressed before (decoding lossy data
    to store it losslessly keeps the loss and takes more room). Raises ``TranscodeError`` when
    the conversion fails (the caller keeps the original)."""
    goal = as_target(target)
    if goal.lossy:
        raise TranscodeError(f"{goal} is lossy: an archive stores losslessly")
    try:
        info = read_file_info(src)
    except (NotDicomError, OSError) as exc:
        raise TranscodeError(str(exc)) from None
    if info.transfer_syntax == goal.transfer_syntax:
        return None
    probe = probe_file(src, temp_dir)
    if not probe.has_pixels and not goal.native:
        return None
    if probe.lossy and not is_native(info.transfer_syntax):
        return None
    return transcode_file(src, dst, goal, temp_dir=temp_dir, fsync=fsync)


def _inflated(
    stack: contextlib.ExitStack, path: Path, offset: int, work_dir: Path
) -> tuple[IO[bytes], int]:
    """A temporary file holding the inflated data set of a deflated file (PS3.5 A.5)."""
    spool = stack.enter_context(tempfile.TemporaryFile(dir=work_dir))  # noqa: SIM115
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    with path.open("rb") as f:
        f.seek(offset)
        try:
            while chunk := f.read(_CHUNK):
                spool.write(inflater.decompress(chunk))
            spool.write(inflater.flush())
        except zlib.error as exc:
            raise TranscodeError(f"{path}: the deflated data set is corrupt ({exc})") from None
    spool.flush()
    return spool, 0


def _convert(
    stack: contextlib.ExitStack,
    path: Path,
    source_syntax: str,
    offset: int,
    out: IO[bytes],
    goal: Target,
    action: Action,
    work_dir: Path,
    allow_lossy: bool,
    allow_lossy_to_lossy: bool,
    sop_class_uid: str,
    sop_instance_uid: str,
) -> tuple[int, bool, str, str | None]:
    if source_syntax == DeflatedExplicitVRLittleEndian:
        fileobj, offset = _inflated(stack, path, offset, work_dir)
        source = _Source(path, fileobj, offset, ExplicitVRLittleEndian)
    else:
        source = _Source(path, stack.enter_context(path.open("rb")), offset, source_syntax)
    head, bulk, _ = _read_head(source)
    trailing = None
    if bulk is not None and bulk.length != _UNDEFINED:
        trailing = _read_trailing(source, bulk.end)
    target_syntax = goal.transfer_syntax
    implicit, little = _encoding(_dataset_syntax(target_syntax))
    # The File Meta Information of the output names the data set's own SOP Class and Instance
    # (PS3.10 7.1: copies of them), also when the source's meta information disagreed.
    sop_class_uid = _text(head.get("SOPClassUID")) or sop_class_uid
    sop_instance_uid = _text(head.get("SOPInstanceUID")) or sop_instance_uid
    meta_ae = None
    if action in (Action.REENCODE,) or bulk is None or bulk.tag != PIXEL_DATA:
        if bulk is not None and bulk.tag != PIXEL_DATA and not goal.native:
            raise TranscodeError(
                f"{path}: {_tag_name(bulk.tag)} cannot be compressed (PS3.5 A.4 encapsulates "
                "Pixel Data only)"
            )
        encapsulated = bulk is not None and bulk.length == _UNDEFINED
        if encapsulated and (is_native(source_syntax) or source_syntax != target_syntax):
            raise TranscodeError(
                f"{path}: Pixel Data of undefined length in {syntax_name(source_syntax)}, a "
                "native syntax (PS3.5 A.4 allows it only for encapsulated syntaxes)"
            )
        out.write(file_meta_bytes(sop_class_uid, sop_instance_uid, target_syntax, meta_ae))
        body = _Body(out, target_syntax == DeflatedExplicitVRLittleEndian)
        body.write(encode_dataset(head, _dataset_syntax(target_syntax)))
        if bulk is not None and encapsulated:
            # The same encapsulated syntax: the items are copied as they are (their headers
            # carry no VR, PS3.5 A.4), the elements after them re-encoded.
            items = read_items(source.read, bulk.value_offset, source.size)
            body.write(_element_header(bulk.tag, "OB", _UNDEFINED, False, True))
            _copy_range(source, bulk.value_offset, items.end, body)
            trailing = _read_trailing(source, items.end)
        elif bulk is not None:
            _copy_native(source, bulk, head, body, implicit, little)
        if trailing is not None:
            body.write(encode_dataset(trailing, _dataset_syntax(target_syntax)))
        body.finish()
        frames = _frame_count(head) if bulk is not None and bulk.tag == PIXEL_DATA else 0
        return frames, False, sop_instance_uid, _text(head.get("PhotometricInterpretation"))

    # Frames: decode and/or encode through pydicom's pixel data plugins.
    pixels = _pixels(head, path)
    if pixels.bits_allocated % 8:
        # Bit-packed frames (PS3.5 8.1.1, Bits Allocated 1) are re-encoded between native
        # syntaxes only; no codec in pydicom writes them.
        raise TranscodeError(
            f"{path}: Bits Allocated {pixels.bits_allocated} pixel data can only be re-encoded "
            "between native syntaxes, not compressed or decompressed"
        )
    source_lossy = _text(head.get("LossyImageCompression")) == "01" or source_syntax in ALWAYS_LOSSY
    if goal.lossy:
        if not allow_lossy:
            raise TranscodeError(
                f"{path}: {goal} is lossy and lossy output was not asked for (allow_lossy)"
            )
        if source_lossy and not allow_lossy_to_lossy:
            raise TranscodeError(
                f"{path}: the image was already lossy compressed; compressing it lossy again "
                f"({goal}) needs allow_lossy_to_lossy"
            )
    if not is_native(source_syntax) and not capability(source_syntax).decode:
        raise TranscodeError(f"{path}: {capability(source_syntax).why_not(encode=False)}")
    if not goal.native:
        encoder_syntax = (
            JPEG2000Lossless
            if goal.transfer_syntax == JPEG2000 and not goal.lossy
            else goal.transfer_syntax
        )
        if not capability(encoder_syntax).encode:
            raise TranscodeError(f"{path}: {capability(encoder_syntax).why_not(encode=True)}")
    if not _has_numpy():
        raise TranscodeError(f"{path}: pixel data conversion needs numpy ({_EXTRA_HINT})")
    assert bulk is not None
    decoded = _decoded_frames(source, source_syntax, bulk, pixels, head)
    if goal.native:
        return _write_native(
            out, decoded, head, trailing, pixels, goal, source_syntax, sop_class_uid,
            sop_instance_uid, source_lossy,
        )  # fmt: skip
    return _write_encapsulated(
        out, decoded, head, trailing, pixels, goal, source_syntax, sop_class_uid,
        sop_instance_uid, source_lossy, work_dir,
    )  # fmt: skip


def _has_numpy() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _frame_count(head: Dataset) -> int:
    try:
        return int(head.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _copy_native(
    source: _Source, bulk: _Bulk, head: Dataset, body: _Body, implicit: bool, little: bool
) -> None:
    """Copy a native bulk element, swapping its words when the byte order changes (see
    ``dicomnet.dataset.WORD_SIZES`` for the standard's rule)."""
    vr = bulk.vr
    if bulk.tag == PIXEL_DATA and vr not in ("OB", "OW"):
        vr = "OW"  # "OB or OW" or UN from a broken writer: A.1's choice for native Pixel Data
    swap = WORD_SIZES.get(vr) if source.little != little else None
    if swap == 2 and bulk.tag == PIXEL_DATA:
        bits = head.get("BitsAllocated")
        if isinstance(bits, int) and bits > 16:
            log.warning(
                "%s: re-encoding Pixel Data with Bits Allocated %d between big and little "
                "endian: swapped per 16-bit OW word as PS3.5 6.2 and 8.1.1 say; readers that "
                "swap big endian pixels per %d-bit value read other numbers",
                source.path,
                bits,
                bits,
            )
    body.write(_element_header(bulk.tag, vr, bulk.length, implicit, little))
    pos, end = bulk.value_offset, bulk.end
    while pos < end:
        chunk = source.read(pos, min(_CHUNK, end - pos))
        if not chunk:
            raise TranscodeError(f"{source.path}: the file ends inside the Pixel Data")
        body.write(swap_bytes(chunk, swap) if swap else chunk)
        pos += len(chunk)


# --- frames in --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Frame:
    index: int
    array: np.ndarray
    meta: dict[str, Any]


def _decoded_frames(
    source: _Source, source_syntax: str, bulk: _Bulk, pixels: _Pixels, head: Dataset
) -> Iterator[_Frame]:
    """Each frame as an array (planar configuration 0), with the pixel module values that
    describe it after decoding."""
    from pydicom.pixels.decoders.base import get_decoder

    path = source.path
    count = pixels.number_of_frames
    if is_native(source_syntax):
        if bulk.length == _UNDEFINED:
            raise TranscodeError(f"{path}: native Pixel Data of undefined length")
        subsampled = pixels.photometric_interpretation == "YBR_FULL_422"
        spp = 2 if subsampled and pixels.samples_per_pixel == 3 else pixels.samples_per_pixel
        bits, size = native_frame_length(pixels.rows, pixels.columns, spp, pixels.bits_allocated)
        if bits % 8:
            raise TranscodeError(
                f"{path}: frames of {bits} bits do not end on a byte boundary (Bits Allocated "
                f"{pixels.bits_allocated}); such frames are only re-encoded, not compressed"
            )
        needed = size * count
        if bulk.length < needed:
            raise TranscodeError(
                f"{path}: Pixel Data holds {bulk.length} bytes but Number of Frames "
                f"{count} of {pixels.rows}x{pixels.columns}x{pixels.samples_per_pixel} at "
                f"{pixels.bits_allocated} bits needs {needed}"
            )
        if bulk.length > needed + 1 + (needed % 2):
            raise TranscodeError(
                f"{path}: Pixel Data holds {bulk.length} bytes, more than Number of Frames "
                f"{count} accounts for ({needed}); the frame count does not match"
            )
        decoder = get_decoder(ExplicitVRLittleEndian)
        swap = 2 if (not source.little and bulk.vr == "OW") else 0
        for index in range(count):
            data = source.read(bulk.value_offset + index * size, size)
            if swap:
                data = swap_bytes(data, swap)
            try:
                arr, meta = decoder.as_array(
                    data, raw=True, **pixels.options(pixel_keyword="PixelData")
                )
            except Exception as exc:
                raise TranscodeError(f"{path}: frame {index + 1}: {_first_line(exc)}") from None
            yield _Frame(index, arr, meta)
        return

    if bulk.length != _UNDEFINED:
        raise TranscodeError(
            f"{path}: {syntax_name(source_syntax)} needs encapsulated Pixel Data (undefined "
            f"length, PS3.5 A.4), found a defined length of {bulk.length}"
        )
    items: Encapsulated = read_items(source.read, bulk.value_offset, source.size)
    extended = _extended_offsets(head)
    groups = frame_fragments(items, count, source_syntax, source.read, extended)
    decoder = get_decoder(source_syntax)
    plugin = _DECODING_PLUGINS.get(source_syntax, "")
    if plugin not in decoder.available_plugins:
        plugin = ""  # pydicom tries every available plugin in its own order
    # JPEG's lossy processes code colour as YCbCr: decode to RGB (what DCMTK's dcmdjpeg does);
    # lossless codecs keep the colour space they were given, so the values stay exact.
    as_rgb = source_syntax in ALWAYS_LOSSY
    for index, group in enumerate(groups):
        codestream = read_frame(source.read, group)
        if len(codestream) % 2:
            codestream += b"\x00"
        wrapped = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + struct.pack(
            "<HHI", 0xFFFE, 0xE000, len(codestream)
        )
        try:
            arr, meta = decoder.as_array(
                wrapped + codestream,
                index=0,
                decoding_plugin=plugin,
                **pixels.options(as_rgb=as_rgb),
            )
        except Exception as exc:
            raise TranscodeError(
                f"{path}: frame {index + 1} of {count} cannot be decoded as "
                f"{syntax_name(source_syntax)}: {_first_line(exc)}"
            ) from None
        expected: tuple[int, ...] = (pixels.rows, pixels.columns)
        if pixels.samples_per_pixel > 1:
            expected += (pixels.samples_per_pixel,)
        if tuple(arr.shape) != expected:
            raise TranscodeError(
                f"{path}: frame {index + 1} decodes to shape {tuple(arr.shape)}, the data set "
                f"says {expected}"
            )
        yield _Frame(index, arr, meta)


#: The fastest decoder plugin per syntax where pydicom's own order picks a slower one
#: (bench/codec_speed.py, 512x512 12-bit frames: JPEG-LS 8.5 ms per frame with pyjpegls
#: (CharLS) against 32 ms with pylibjpeg-libjpeg; RLE 1.5 ms with pylibjpeg-rle against 10.7 ms
#: with pydicom's own).
_DECODING_PLUGINS: dict[str, str] = {
    JPEGLSLossless: "pyjpegls",
    JPEGLSNearLossless: "pyjpegls",
    RLELossless: "pylibjpeg",
}


def _extended_offsets(head: Dataset) -> tuple[list[int], list[int]] | None:
    table = head.get("ExtendedOffsetTable")
    lengths = head.get("ExtendedOffsetTableLengths")
    if not table:
        return None
    raw = bytes(table)
    order = "<" if head.original_encoding[1] is not False else ">"
    offsets = list(struct.unpack(f"{order}{len(raw) // 8}Q", raw[: len(raw) // 8 * 8]))
    sizes: list[int] = []
    if lengths:
        raw_lengths = bytes(lengths)
        sizes = list(
            struct.unpack(
                f"{order}{len(raw_lengths) // 8}Q", raw_lengths[: len(raw_lengths) // 8 * 8]
            )
        )
    return offsets, sizes


# --- frames out ---------------------------------------------------------------------------------


def _frame_bytes(arr: np.ndarray, bits_allocated: int, signed: bool) -> bytes:
    """Little endian native bytes of a decoded frame (planar configuration 0)."""
    dtype = f"<{'i' if signed else 'u'}{max(1, bits_allocated // 8)}"
    return bytes(arr.astype(dtype, copy=False).tobytes())


def _header_for(
    head: Dataset,
    pi: str,
    samples_per_pixel: int,
    source_syntax: str,
    source_lossy: bool,
) -> Dataset:
    """The data set to write before the new Pixel Data."""
    out = _output_copy(head)
    out.PhotometricInterpretation = pi
    if samples_per_pixel > 1:
        out.PlanarConfiguration = 0
    for tag in _EXTENDED_OFFSETS:
        if tag in out:
            del out[tag]
    if source_lossy and _text(head.get("LossyImageCompression")) != "01":
        # Decoding lossy JPEG keeps the loss on record (PS3.3 C.7.6.1.1.5).
        out.LossyImageCompression = "01"
        if source_syntax in LOSSY_METHODS and "LossyImageCompressionMethod" not in out:
            out.LossyImageCompressionMethod = LOSSY_METHODS[source_syntax]
    return out


def _mark_lossy(out: Dataset, goal: Target, ratio: float) -> str:
    """PS3.3 C.7.6.1.1.5: the attributes of a lossy compression and a new SOP Instance UID."""
    ratios = [str(v) for v in _values(out.get("LossyImageCompressionRatio"))]
    methods = [str(v) for v in _values(out.get("LossyImageCompressionMethod"))]
    out.LossyImageCompression = "01"
    out.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"]
    out.LossyImageCompressionMethod = [*methods, goal.method]
    uid = generate_uid(prefix=None)
    out.SOPInstanceUID = uid
    return str(uid)


def _values(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _write_native(
    out: IO[bytes],
    frames: Iterator[_Frame],
    head: Dataset,
    trailing: Dataset | None,
    pixels: _Pixels,
    goal: Target,
    source_syntax: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    source_lossy: bool,
) -> tuple[int, bool, str, str | None]:
    target_syntax = goal.transfer_syntax
    implicit, little = _encoding(_dataset_syntax(target_syntax))
    first = next(frames)
    pi = str(first.meta.get("photometric_interpretation", pixels.photometric_interpretation))
    bits = int(first.meta.get("bits_allocated", pixels.bits_allocated))
    signed = pixels.pixel_representation == 1
    header = _header_for(head, pi, pixels.samples_per_pixel, source_syntax, source_lossy)
    frame_size = pixels.rows * pixels.columns * pixels.samples_per_pixel * max(1, bits // 8)
    total = frame_size * pixels.number_of_frames
    vr = "OW" if bits > 8 or implicit else "OB"
    out.write(file_meta_bytes(sop_class_uid, sop_instance_uid, target_syntax))
    body = _Body(out, target_syntax == DeflatedExplicitVRLittleEndian)
    body.write(encode_dataset(header, _dataset_syntax(target_syntax)))
    body.write(_element_header(PIXEL_DATA, vr, total + total % 2, implicit, little))
    count = 0
    for frame in _chain(first, frames):
        data = _frame_bytes(frame.array, bits, signed)
        if len(data) != frame_size:
            raise TranscodeError(
                f"frame {frame.index + 1} decodes to {len(data)} bytes, expected {frame_size}"
            )
        body.write(swap_bytes(data, 2) if (not little and vr == "OW") else data)
        count += 1
    if total % 2:
        body.write(b"\x00")
    if trailing is not None:
        body.write(encode_dataset(trailing, _dataset_syntax(target_syntax)))
    body.finish()
    return count, False, sop_instance_uid, pi


def _chain(first: _Frame, rest: Iterator[_Frame]) -> Iterator[_Frame]:
    yield first
    yield from rest


def _encoder_pi(pi: str, goal: Target, samples_per_pixel: int) -> str:
    """The Photometric Interpretation of the encoded frames (PS3.5 §8.2.4: JPEG 2000 applies its
    reversible or irreversible component transform to RGB)."""
    if (
        samples_per_pixel == 3
        and pi == "RGB"
        and goal.transfer_syntax in (JPEG2000Lossless, JPEG2000)
    ):
        return "YBR_ICT" if goal.lossy else "YBR_RCT"
    return pi


def _write_encapsulated(
    out: IO[bytes],
    frames: Iterator[_Frame],
    head: Dataset,
    trailing: Dataset | None,
    pixels: _Pixels,
    goal: Target,
    source_syntax: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    source_lossy: bool,
    work_dir: Path,
) -> tuple[int, bool, str, str | None]:
    from pydicom.pixels.encoders.base import get_encoder

    encoder_syntax = goal.transfer_syntax
    options: dict[str, Any] = {}
    if goal.transfer_syntax == JPEG2000:
        if goal.lossy:
            if goal.j2k_ratios:
                options["j2k_cr"] = list(goal.j2k_ratios)
            else:
                options["j2k_psnr"] = list(goal.j2k_psnr)
        else:
            encoder_syntax = JPEG2000Lossless  # lossless coding in the .91 syntax (PS3.5 8.2.4)
    if goal.near_lossless:
        options["jls_error"] = goal.near_lossless
    smallest = min(pixels.rows, pixels.columns)
    if encoder_syntax in (JPEG2000Lossless, JPEG2000) and smallest < 32:
        # pylibjpeg-openjpeg always codes 6 resolution levels (5 wavelet decompositions).
        raise TranscodeError(
            f"{goal}: the JPEG 2000 encoder (openjpeg, 6 resolution levels) needs at least 32 "
            f"rows and columns; this image is {pixels.rows}x{pixels.columns}"
        )
    if encoder_syntax in (JPEGLSLossless, JPEGLSNearLossless) and smallest < 4:
        raise TranscodeError(
            f"{goal}: the JPEG-LS encoder (CharLS) fails on images under 4x4; this image is "
            f"{pixels.rows}x{pixels.columns}"
        )
    encoder = get_encoder(encoder_syntax)
    plugins = encoder.available_plugins
    # pydicom's own RLE encoder is pure Python (about 15x slower than pylibjpeg-rle's, measured)
    plugin = "pylibjpeg" if "pylibjpeg" in plugins and encoder_syntax.endswith(".5") else ""
    with tempfile.TemporaryFile(dir=work_dir) as spool:
        lengths: list[int] = []
        raw_total = 0
        pi = pixels.photometric_interpretation
        out_pi = pi
        bits = pixels.bits_allocated
        for frame in frames:
            pi = str(
                frame.meta.get("photometric_interpretation", pixels.photometric_interpretation)
            )
            out_pi = _encoder_pi(pi, goal, pixels.samples_per_pixel)
            opts = pixels.options(photometric_interpretation=out_pi, planar_configuration=0)
            opts.update(options)
            try:
                encoded = encoder.encode(frame.array, encoding_plugin=plugin, **opts)
            except Exception as exc:
                raise TranscodeError(
                    f"frame {frame.index + 1} cannot be encoded as {goal}: {_first_line(exc)}"
                ) from None
            if len(encoded) % 2:
                encoded += b"\x00"  # PS3.5 A.4: fragments have even length
            spool.write(encoded)
            lengths.append(len(encoded))
            raw_total += frame.array.size * max(1, bits // 8)
        if not lengths:
            raise TranscodeError("no frame to encode")
        header = _header_for(head, out_pi, pixels.samples_per_pixel, source_syntax, source_lossy)
        uid = sop_instance_uid
        lossy = goal.lossy
        if lossy:
            uid = _mark_lossy(header, goal, raw_total / max(1, sum(lengths)))
        offsets, position = [], 0
        for length in lengths:
            offsets.append(position)
            position += 8 + length
        use_basic = position < 1 << 32
        if not use_basic:
            # PS3.3 C.7.6.3.1.8: offsets past 4 GiB need the Extended Offset Table.
            header.ExtendedOffsetTable = struct.pack(f"<{len(offsets)}Q", *offsets)
            header.ExtendedOffsetTableLengths = struct.pack(f"<{len(lengths)}Q", *lengths)
        out.write(file_meta_bytes(sop_class_uid, uid, goal.transfer_syntax))
        out.write(encode_dataset(header, ExplicitVRLittleEndian))
        out.write(_element_header(PIXEL_DATA, "OB", _UNDEFINED, False, True))
        table = struct.pack(f"<{len(offsets)}I", *offsets) if use_basic else b""
        out.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(table)) + table)
        spool.seek(0)
        for length in lengths:
            out.write(struct.pack("<HHI", 0xFFFE, 0xE000, length))
            out.write(spool.read(length))
        out.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        if trailing is not None:
            out.write(encode_dataset(trailing, ExplicitVRLittleEndian))
    return len(lengths), lossy, uid, out_pi
