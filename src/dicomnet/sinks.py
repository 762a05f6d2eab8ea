"""Where a received data set goes while its fragments stream in: a Part 10 temporary file
(C-STORE) or memory (identifiers, N-service data sets).

Rules: a sink never holds more than one fragment of a large data set in memory; a file sink
writes the PS3.10 preamble and File Meta Information first, so the temporary file is a complete
DICOM file once the last fragment is written, and can be renamed into place without copying.
A sink that is aborted removes its file.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import Protocol

from dicomnet.errors import DIMSEError
from dicomnet.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

PREFIX_SIZE = 16384


class DatasetSink(Protocol):
    """Receives one data set's fragments in order."""

    def write(self, data: bytes | memoryview) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of group 0002 (PS3.5 §7.1.2)."""
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL", b"OV"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _sh(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def file_meta_bytes(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None = None,
) -> bytes:
    """The 128-byte preamble, ``DICM`` and the File Meta Information (PS3.10 §7.1)."""
    body = b"".join(
        [
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _ui(sop_class_uid)),
            _element(0x00020003, b"UI", _ui(sop_instance_uid)),
            _element(0x00020010, b"UI", _ui(transfer_syntax_uid)),
            _element(0x00020012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
            _element(0x00020013, b"SH", _sh(IMPLEMENTATION_VERSION_NAME)),
        ]
    )
    if source_ae_title:
        body += _element(0x00020016, b"AE", _sh(source_ae_title.strip()[:16]))
    group_length = _element(0x00020000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


class MemorySink:
    """Collects a (small) data set in memory, with a size cap so a hostile peer cannot make us
    allocate without bound."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self._parts = bytearray()
        self._limit = limit
        self.value: bytes | None = None

    def write(self, data: bytes | memoryview) -> None:
        if len(self._parts) + len(data) > self._limit:
            raise DIMSEError(
                f"data set larger than {self._limit} bytes; this message type is kept in memory"
            )
        self._parts += data

    def finish(self) -> None:
        self.value = bytes(self._parts)
        self._parts = bytearray()

    def abort(self) -> None:
        self._parts = bytearray()


class FileSink:
    """Streams a data set into a temporary Part 10 file in ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        meta: bytes,
        *,
        fsync: bool = False,
    ) -> None:
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".dicomnet-", suffix=".part", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=1 << 16)
        self._fsync = fsync
        self.size = 0
        self.done = False
        # The first bytes of the data set, kept so a few attributes can be read without
        # opening the file again (dicomnet.dataset.scan_attributes).
        self.prefix = b""
        try:
            self._file.write(meta)
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes | memoryview) -> None:
        if self.size < PREFIX_SIZE:
            self.prefix += bytes(data[: PREFIX_SIZE - self.size])
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        """Flush (and fsync when asked): after this the file is complete on disk."""
        try:
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
        finally:
            self._file.close()
        self.done = True

    def abort(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass
        self.discard()

    def discard(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
