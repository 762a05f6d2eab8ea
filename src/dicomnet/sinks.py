"""Where a received data set goes while its fragments stream in: a Part 10 temporary file
(C-STORE) or memory (identifiers, N-service data sets).

Rules: a sink never holds more than one fragment of a large data set in memory; a file sink
writes the PS3.10 preamble and File Meta Information first, so the temporary file is a complete
DICOM file once the last fragment is written, and can be renamed into place without copying.
A sink that is aborted removes its file.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import secrets
import struct
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dicomnet.dimse.commands import CStoreRQ, DimseMessage
from dicomnet.errors import DIMSEError
from dicomnet.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

if TYPE_CHECKING:
    from dicomnet.negotiation import NegotiatedContext

PREFIX_SIZE = 16384

log = logging.getLogger("dicomnet.sinks")

#: Name prefix of every temporary file dicomnet creates (received data sets, pooled files).
TEMP_PREFIX = ".dicomnet-"
TEMP_SUFFIX = ".part"


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


def make_sink(
    message: DimseMessage,
    context: NegotiatedContext,
    *,
    temp_dir: str | os.PathLike[str] | None = None,
    fsync: bool = False,
    memory_limit: int = 64 << 20,
    source_ae_title: str | None = None,
) -> DatasetSink:
    """Where a received message's data set goes, for a server and a client (C-GET) alike: a
    C-STORE-RQ's streams into a temporary Part 10 file in ``temp_dir`` whose File Meta comes
    from the command and the context (with ``source_ae_title`` as the Source AE, PS3.10
    §7.1); any other (an identifier, an N-service attribute list, a response's data set) is
    kept in memory up to ``memory_limit`` bytes. Bind the keywords with ``functools.partial``
    to get an ``Association.sink_factory``."""
    if isinstance(message, CStoreRQ):
        meta = file_meta_bytes(
            message.affected_sop_class_uid,
            message.affected_sop_instance_uid,
            context.transfer_syntax,
            source_ae_title,
        )
        return FileSink(temp_dir, meta, fsync=fsync)
    return MemorySink(memory_limit)


def _create_temp(directory: str) -> tuple[int, str]:
    """Create and open a new empty temporary file in ``directory``."""
    for _ in range(100):
        name = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            # 0o666 less the umask, as any program's files (the archive is read by others).
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {directory}")


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class TempFilePool:
    """Empty temporary files created ahead of time by a worker thread.

    Creating a file costs a few hundred microseconds of file-system work on common Linux
    set-ups (inode allocation and journaling), which is most of a small C-STORE's cost. A worker
    thread keeps ``size`` files ready so that the event loop only takes one; when the pool runs
    dry the caller creates its own. While a file is created its folder is locked, and renaming a
    file out of that folder waits for the lock: so the files are spread over ``folders``
    sub-folders and a file is taken from a folder the worker is not writing into. The files are
    empty until taken and are removed by ``close`` (at the latest when the interpreter exits).
    """

    def __init__(self, directory: str, size: int = 16, folders: int = 4) -> None:
        self.directory = directory
        self.size = size
        self._folders = [os.path.join(directory, f"{TEMP_PREFIX}{i}") for i in range(folders)]
        for folder in self._folders:
            os.makedirs(folder, exist_ok=True)
        self._ready: list[collections.deque[tuple[int, str]]] = [
            collections.deque() for _ in self._folders
        ]
        self._busy = -1  # the folder the worker is creating a file in
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._fill, name=f"dicomnet-tempfiles:{directory}", daemon=True
        )
        self._wake.set()
        self._thread.start()

    def take(self) -> tuple[int, str]:
        """An open, empty temporary file: (fd, path)."""
        busy = self._busy
        for i, ready in enumerate(self._ready):
            if i != busy and ready:
                try:
                    item = ready.popleft()
                except IndexError:  # taken meanwhile by another thread
                    continue
                # Wake the worker only once the pool is half empty: it then refills in one
                # burst, instead of a thread switch (and a fight for the GIL) per file.
                if sum(map(len, self._ready)) <= self.size // 2:
                    self._wake.set()
                return item
        self._wake.set()
        return _create_temp(self.directory)

    def _fill(self) -> None:
        turn = 0
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while not self._closed and sum(map(len, self._ready)) < self.size:
                turn = (turn + 1) % len(self._folders)
                self._busy = turn
                try:
                    item = _create_temp(self._folders[turn])
                except OSError as exc:  # a full disk, a removed folder: callers create their own
                    log.warning("cannot pre-create temporary files in %s: %s", self.directory, exc)
                    break
                finally:
                    self._busy = -1
                self._ready[turn].append(item)

    def close(self) -> None:
        """Stop the worker and remove the files nobody took."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        for ready in self._ready:
            while ready:
                fd, name = ready.popleft()
                os.close(fd)
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
        for folder in self._folders:
            try:
                os.rmdir(folder)
            except OSError:  # in use by a file being received, or already gone
                pass


#: Files each folder's pool keeps ready; 0 turns the pools off (DICOMNET_TEMP_POOL=0).
POOL_SIZE = int(os.environ.get("DICOMNET_TEMP_POOL", "16") or 0)
_made_dirs: set[str] = set()
_pools: dict[str, TempFilePool] = {}
_pools_lock = threading.Lock()


def temp_file(directory: str | os.PathLike[str] | None) -> tuple[int, str]:
    """An open, new, empty temporary file in ``directory`` (the system's temporary folder when
    None), from that folder's pool (created on first use, along with the folder)."""
    key = os.fspath(directory) if directory is not None else tempfile.gettempdir()
    if POOL_SIZE <= 0:
        if key not in _made_dirs:
            os.makedirs(key, exist_ok=True)
            _made_dirs.add(key)
        return _create_temp(key)
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                os.makedirs(key, exist_ok=True)
                pool = _pools[key] = TempFilePool(key, POOL_SIZE)
    return pool.take()


def close_temp_pools() -> None:
    """Remove every pre-created temporary file (the server calls this when it closes)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


atexit.register(close_temp_pools)


class FileSink:
    """Streams a data set into a temporary Part 10 file in ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        meta: bytes,
        *,
        fsync: bool = False,
    ) -> None:
        fd, name = temp_file(directory)
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
