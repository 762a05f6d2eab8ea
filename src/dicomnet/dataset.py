"""Data set bytes <-> pydicom ``Dataset`` for a transfer syntax (PS3.5 §10), and the parts of a
Part 10 file a sender needs (PS3.10 §7.1).

Rules: pydicom does the encoding and decoding; this module only picks its options (implicit or
explicit VR, endianness, deflate) from the transfer syntax UID, and finds where a file's data set
starts so it can be streamed without being parsed.
"""

from __future__ import annotations

import array
import io
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom import DataElement, Dataset, Sequence, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr_element, write_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR

from dicomnet.errors import DicomNetError, TranscodeError


def _flags(transfer_syntax: str) -> tuple[bool, bool]:
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        # Private or unknown syntaxes: PS3.5 says they are explicit VR little endian
        # unless they say otherwise.
        return False, True
    return uid.is_implicit_VR, uid.is_little_endian


def decode_dataset(data: bytes, transfer_syntax: str) -> Dataset:
    """Decode data set bytes received with ``transfer_syntax``."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    implicit, little = _flags(transfer_syntax)
    return read_dataset(io.BytesIO(data), implicit, little)


log = logging.getLogger("dicomnet.dataset")

# Byte order (PS3.5 §7.3 as it stood when Explicit VR Big Endian was defined, PS3.5 2016b; A.3).
# pydicom parses the numeric VRs (US, SS, UL, SL, FL, FD, AT, ...) and re-encodes them itself in
# the target order, but keeps OW/OF/OL/OD/OV values as raw bytes in the order they were read
# with, so those are swapped here, each per its own word size, whatever the data means:
# - PS3.5 §6.2 defines OW as "a string of 16-bit words ... a VR that requires byte swapping within
#   each word when changing between Little Endian and Big Endian byte ordering"; OF, OL are
#   32-bit and OD, OV 64-bit words in the same table.
# - Pixel Data is OW whenever Bits Allocated > 8 (PS3.5 A.1, A.2, and A.3 of 2016b: "shall have
#   the Value Representation OW and shall be encoded in Big Endian"), and PS3.5 §8.1.1 packs
#   pixel cells into those words least significant bit first, a cell that crosses a word boundary
#   continuing "in the next word". A 32-bit cell is therefore two 16-bit words, low word first,
#   each word in the syntax's byte order; swapping per 16-bit word is the standard's reading
#   (DCMTK's too). Readers that swap big endian Pixel Data per pixel (pydicom, some viewers) see
#   other values for Bits Allocated > 16, so dicomnet logs a warning when it re-encodes such data.
# - OB (and Pixel Data with Bits Allocated <= 8 sent as OB) is a byte stream: never swapped.
WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_ARRAY_CODES = {2: "H", 4: "I", 8: "Q"}


def swap_bytes(value: bytes | bytearray | memoryview, word_size: int) -> bytes:
    """``value`` with the bytes of every ``word_size``-byte word reversed; an odd trailing part
    (malformed data) is kept as it is."""
    whole = len(value) - len(value) % word_size
    words = array.array(_ARRAY_CODES[word_size], value[:whole])
    words.byteswap()
    return words.tobytes() + bytes(value[whole:])


def _copy(ds: Dataset) -> Dataset:
    """A shallow copy that keeps what pydicom needs to write it right: the original encoding
    (ambiguous VRs of an Implicit VR data set resolve by PS3.5 A.1, e.g. Pixel Data is OW) and
    the character set. pydicom's file meta is not carried (it is not part of the data set)."""
    out = Dataset(ds)
    implicit, little = ds.original_encoding
    out.set_original_encoding(implicit, little, ds.original_character_set)
    return out


def _resolved(elem: DataElement, ds: Dataset, little: bool, where: str) -> DataElement:
    """``elem`` with a definite VR: ambiguous VRs ("OB or OW", "US or SS", ...) are resolved as
    pydicom's writer would, or the data set is refused with one clear error."""
    if elem.VR not in AMBIGUOUS_VR:
        return elem
    try:
        resolved = correct_ambiguous_vr_element(elem, ds, little)
    except (AttributeError, KeyError, ValueError, TypeError) as exc:
        raise TranscodeError(
            f"cannot re-encode{where}: the VR of {elem.tag} ({elem.name}) is ambiguous "
            f"({elem.VR}) and the data set does not say which it is "
            f"({str(exc).splitlines()[0]})"
        ) from None
    if resolved.VR in AMBIGUOUS_VR:
        raise TranscodeError(
            f"cannot re-encode{where}: the VR of {elem.tag} ({elem.name}) is ambiguous ({elem.VR})"
        )
    return resolved  # type: ignore[return-value]


def _swap_byte_order(ds: Dataset, source_little: bool, where: str = "") -> Dataset:
    """A copy of ``ds`` with its OW/OF/OL/OD/OV values byte-swapped (see WORD_SIZES), in nested
    sequences too; other values are numbers and strings pydicom re-encodes."""
    out = Dataset()
    implicit, little = ds.original_encoding
    out.set_original_encoding(implicit, little, ds.original_character_set)
    for raw in ds:
        elem = _resolved(raw, ds, source_little, where)
        if elem.VR == "SQ":
            items = Sequence(
                _swap_byte_order(item, source_little, f"{where} in {elem.tag} item {i + 1}")
                for i, item in enumerate(elem.value)
            )
            out.add(DataElement(elem.tag, "SQ", items))
        elif elem.VR in WORD_SIZES and isinstance(elem.value, bytes) and elem.value:
            if elem.tag == 0x7FE00010 and elem.VR == "OW":
                bits = ds.get("BitsAllocated")
                if isinstance(bits, int) and bits > 16:
                    log.warning(
                        "re-encoding Pixel Data%s with Bits Allocated %d between big and "
                        "little endian: swapped per 16-bit OW word as PS3.5 6.2 and 8.1.1 say; "
                        "readers that swap big endian pixels per %d-bit value read other numbers",
                        where,
                        bits,
                        bits,
                    )
            out.add(DataElement(elem.tag, elem.VR, swap_bytes(elem.value, WORD_SIZES[elem.VR])))
        else:
            out.add(elem)
    return out


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    """Encode ``ds`` for ``transfer_syntax`` (without File Meta Information). A data set that
    cannot be encoded raises one ``TranscodeError`` that says why."""
    implicit, little = _flags(transfer_syntax)
    buf = DicomBytesIO()
    buf.is_implicit_VR = implicit
    buf.is_little_endian = little
    source_little = ds.original_encoding[1]
    try:
        if source_little is not None and source_little != little:
            ds = _swap_byte_order(ds, source_little)
        else:
            ds = _copy(ds)
        write_dataset(buf, ds)
    except TranscodeError:
        raise
    except (AttributeError, KeyError, ValueError, TypeError, OverflowError, struct.error) as exc:
        # pydicom's message carries a formatted traceback after its first line: keep the line.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TranscodeError(
            f"cannot encode the data set as {UID(transfer_syntax).name}: {reason}"
        ) from None
    data = buf.getvalue()
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
        if len(data) % 2:  # PS3.5 §A.5: the deflated bit stream is padded to even length
            data += b"\x00"
    return data


@dataclass(slots=True, frozen=True)
class FileInfo:
    """What a sender needs of a Part 10 file: its UIDs and where its data set starts."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    offset: int
    size: int

    @property
    def dataset_length(self) -> int:
        return self.size - self.offset


class NotDicomError(DicomNetError):
    """The file is not a DICOM Part 10 file."""


def read_file_info(path: str | os.PathLike[str]) -> FileInfo:
    """Read a Part 10 file's meta information without reading its data set (PS3.10 §7.1)."""
    p = Path(path)
    fd = os.open(p, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.read(fd, 4096)
        if len(head) < 144 or head[128:132] != b"DICM":
            raise NotDicomError(f"{p}: not a DICOM Part 10 file (no 'DICM' at offset 128)")
        group, elem, vr, vlen = struct.unpack_from("<HH2sH", head, 132)
        if (group, elem) != (2, 0) or vr != b"UL" or vlen != 4:
            # No group length: let pydicom read the meta and tell where it ended.
            meta_ds = dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            raise NotDicomError(
                f"{p}: File Meta Information without (0002,0000) group length "
                f"({meta_ds.file_meta.get('TransferSyntaxUID', '?')}); not streamable"
            )
        (group_length,) = struct.unpack_from("<I", head, 140)
        offset = 144 + group_length
        if offset > size:
            raise NotDicomError(f"{p}: group length {group_length} runs past the end of the file")
        if offset > len(head) and group_length <= 1 << 20:
            head += os.pread(fd, offset - len(head), len(head))
    finally:
        os.close(fd)
    body = head[144:offset]
    if len(body) < group_length:
        raise NotDicomError(f"{p}: File Meta Information of {group_length} bytes is implausible")
    values = _meta_values(body, p)
    try:
        sop_class = values[0x0002]
        sop_instance = values[0x0003]
        ts = values[0x0010]
    except KeyError as exc:
        raise NotDicomError(f"{p}: File Meta Information lacks (0002,{exc.args[0]:04X})") from exc
    return FileInfo(p, sop_class, sop_instance, ts, offset, size)


def _meta_values(data: bytes, path: Path) -> dict[int, str]:
    """The UI values of group 0002 (Explicit VR Little Endian, PS3.10 §7.1), by element."""
    out: dict[int, str] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, vr = struct.unpack_from("<HH2s", data, pos)
        if group != 2:
            raise NotDicomError(f"{path}: element ({group:04X},{elem:04X}) inside group 0002")
        if vr in _EXPLICIT_LONG:
            if pos + 12 > end:
                break
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if length > end - pos:
            raise NotDicomError(
                f"{path}: meta element (0002,{elem:04X}) of length {length} overruns the group"
            )
        if vr == b"UI":
            out[elem] = data[pos : pos + length].decode("ascii", "replace").rstrip("\x00 ")
        pos += length
    return out


# --- a fast look at the first elements of a data set ---------------------------------------------

_EXPLICIT_LONG = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_TEXT_VRS = {b"UI", b"SH", b"LO", b"CS", b"DA", b"TM", b"DT", b"AE", b"PN", b"IS", b"DS"}
_UNDEFINED = 0xFFFFFFFF


class _ScanError(Exception):
    pass


def _skip_undefined(data: memoryview, pos: int, implicit: bool) -> int:
    """Skip a sequence or item of undefined length: returns the offset after its delimiter."""
    end = len(data)
    depth = 1
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", data, pos)
        if group == 0xFFFE:
            (length,) = struct.unpack_from("<I", data, pos + 4)
            pos += 8
            if elem in (0xE0DD, 0xE00D):  # sequence / item delimitation
                depth -= 1
                if depth == 0:
                    return pos
            elif elem == 0xE000:  # item
                if length == _UNDEFINED:
                    depth += 1
                else:
                    pos += length
            continue
        pos, _vr, _value = _element(data, pos, implicit, nested=True)
    raise _ScanError("undefined length runs past the scanned prefix")


def _element(
    data: memoryview, pos: int, implicit: bool, nested: bool = False
) -> tuple[int, bytes, memoryview | None]:
    end = len(data)
    if pos + 8 > end:
        raise _ScanError("element header past the prefix")
    if implicit:
        (length,) = struct.unpack_from("<I", data, pos + 4)
        vr = b""
        header = 8
    else:
        vr = bytes(data[pos + 4 : pos + 6])
        if vr in _EXPLICIT_LONG:
            if pos + 12 > end:
                raise _ScanError("element header past the prefix")
            (length,) = struct.unpack_from("<I", data, pos + 8)
            header = 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            header = 8
    start = pos + header
    if length == _UNDEFINED:
        return _skip_undefined(data, start, implicit), vr, None
    if start + length > end:
        if nested:
            raise _ScanError("value past the prefix")
        return start + length, vr, None
    return start + length, vr, data[start : start + length]


def scan_attributes(
    prefix: bytes | memoryview, transfer_syntax: str, tags: set[int]
) -> dict[int, str] | None:
    """Read text values of top-level ``tags`` from the first bytes of an uncompressed little
    endian data set without pydicom (the storage layout needs a few UIDs near the front).
    Returns None when the prefix cannot answer (other syntaxes, a value past the prefix, an
    unexpected structure): the caller then parses the file with pydicom."""
    if transfer_syntax == "1.2.840.10008.1.2":
        implicit = True
    elif transfer_syntax in ("1.2.840.10008.1.2.1",) or (
        transfer_syntax.startswith("1.2.840.10008.1.2.4")
        or transfer_syntax.startswith("1.2.840.10008.1.2.5")
    ):
        implicit = False  # explicit VR little endian, also for the encapsulated syntaxes
    else:
        return None
    data = memoryview(prefix)
    found: dict[int, str] = {}
    highest = max(tags)
    pos = 0
    try:
        while pos < len(data) and len(found) < len(tags):
            if pos + 4 > len(data):
                return None
            group, elem = struct.unpack_from("<HH", data, pos)
            tag = (group << 16) | elem
            if tag > highest:
                break
            pos, _vr, value = _element(data, pos, implicit)
            if tag in tags:
                if value is None:
                    return None
                found[tag] = bytes(value).decode("ascii", "replace").strip(" \x00")
    except _ScanError:
        return None
    for tag in tags:
        found.setdefault(tag, "")
    return found
