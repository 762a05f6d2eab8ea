"""Data set bytes <-> pydicom ``Dataset`` for a transfer syntax (PS3.5 §10), and the parts of a
Part 10 file a sender needs (PS3.10 §7.1).

Rules: pydicom does the encoding and decoding; this module only picks its options (implicit or
explicit VR, endianness, deflate) from the transfer syntax UID, and finds where a file's data set
starts so it can be streamed without being parsed.
"""

from __future__ import annotations

import array
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom import DataElement, Dataset, Sequence, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicomnet.errors import DicomNetError


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


# Bytes per word of the VRs whose values pydicom keeps as raw bytes in the byte order they were
# read with (PS3.5 §7.3): they must be swapped when the byte order changes.
_WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _swap_byte_order(ds: Dataset) -> Dataset:
    """A copy of ``ds`` with its OW/OF/OL/OD/OV values byte-swapped (pydicom writes them as they
    are), in nested sequences too; other values are numbers and strings pydicom re-encodes."""
    out = Dataset()
    for elem in ds:
        if elem.VR == "SQ":
            items = Sequence(_swap_byte_order(item) for item in elem.value)
            out.add(DataElement(elem.tag, "SQ", items))
        elif elem.VR in _WORD_SIZES and isinstance(elem.value, bytes) and elem.value:
            size = _WORD_SIZES[elem.VR]
            whole = len(elem.value) - len(elem.value) % size
            words = array.array({2: "H", 4: "I", 8: "Q"}[size], elem.value[:whole])
            words.byteswap()
            out.add(DataElement(elem.tag, elem.VR, words.tobytes() + elem.value[whole:]))
        else:
            out.add(elem)
    return out


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    """Encode ``ds`` for ``transfer_syntax`` (without File Meta Information)."""
    implicit, little = _flags(transfer_syntax)
    buf = DicomBytesIO()
    buf.is_implicit_VR = implicit
    buf.is_little_endian = little
    source_little = ds.original_encoding[1]
    if source_little is not None and source_little != little:
        ds = _swap_byte_order(ds)
    write_dataset(buf, Dataset(ds))  # a shallow copy: pydicom's file meta is not written
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
