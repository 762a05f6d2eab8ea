"""Where a received data set goes while its fragments stream in: a Part 10 temporary file
(C-STORE) or memory (identifiers, N-service data sets).

Rules: a sink never holds more than one fragment of a large data set in memory; a file sink
writes the PS3.10 preamble and File Meta Information first, so the temporary file is a complete
DICOM file once the last fragment is written, and can be renamed into place without copying.
A sink that is aborted removes its file.

Temporary files live in a folder of their own per process and directory
(``<directory>/.dicomnet-<pid>-<token>/``), beside a lock file of the same name plus ``.lock``
that the process holds an exclusive ``flock`` on while it lives. A process that dies, even by
SIGKILL, loses its lock; ``remove_temp_files`` removes only folders whose lock it can take, so
a restart cleans up what a crash left while the live processes sharing the directory (workers,
a second server on the same storage) keep theirs.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import secrets
import struct
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

try:
    import fcntl
except ImportError:  # not POSIX: no locks, but an open file cannot be deleted there either
    fcntl = None  # type: ignore[assignment]

from dicomnet.dimse.commands import CStoreRQ, DimseMessage
from dicomnet.dimse.status import Status
from dicomnet.errors import DIMSEError
from dicomnet.security.decisions import RequestRefused
from dicomnet.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

if TYPE_CHECKING:
    from dicomnet.negotiation import NegotiatedContext

PREFIX_SIZE = 16384

log = logging.getLogger("dicomnet.sinks")

#: Name prefix of every temporary file dicomnet creates (received data sets, pooled files).
TEMP_PREFIX = ".dicomnet-"
TEMP_SUFFIX = ".part"
#: Suffix of the lock file beside each process's temporary folder.
LOCK_SUFFIX = ".lock"


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
    ``directory`` is the process's own folder (see ``temp_file``).
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

    def forget(self) -> None:
        """In a forked child: close the inherited files, which stay the parent's."""
        self._closed = True
        for ready in self._ready:
            while ready:
                os.close(ready.popleft()[0])


# --- ownership: one locked folder per process and directory --------------------------------------


def _lock(fd: int) -> bool | None:
    """Take the exclusive lock of an open lock file without waiting: True when taken, False when
    another open file (of any process) holds it, None when the file system has no locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK and the like: e.g. NFS without a lock manager
        return None
    return True


def _names_file(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed, not replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


class _OwnedFolder:
    """This process's folder of temporary files in ``directory``
    (``.dicomnet-<pid>-<token>``), with the lock file beside it that this process holds.

    The lock file is created and locked before the folder exists, so a folder without its lock
    file is never in use. A cleanup may open a new lock file and take its lock before its
    creator does, and remove it: the creator then sees it lost the race and picks another
    name."""

    def __init__(self, directory: str) -> None:
        for _ in range(100):
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
            lock_path = path + LOCK_SUFFIX
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
            except (FileExistsError, FileNotFoundError):  # name taken; directory just removed
                continue
            locked = _lock(fd)
            if locked is not False and _names_file(lock_path, fd):
                if locked is None:
                    log.warning("no file locks in %s: crash leftovers stay there", directory)
                try:
                    os.mkdir(path)
                except BaseException:
                    os.close(fd)
                    _unlink(lock_path)
                    raise
                self.path, self.lock_path, self._fd = path, lock_path, fd
                return
            os.close(fd)
        raise FileExistsError(f"no free temporary folder name in {directory}")

    def identity(self) -> tuple[int, int]:
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def release(self) -> bool:
        """Remove the folder and its lock file if the folder is empty; False (and still
        locked) while it holds a file, e.g. one still being received."""
        # The pool's sub-folders are removed by the pool's close, except one that still held a
        # file being received then: remove it now if that file has gone since.
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path):
                if entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        _unlink(self.lock_path)  # before the lock goes: no cleanup can take it meanwhile
        os.close(self._fd)
        return True

    def forget(self) -> None:
        """In a forked child: close the inherited lock file without unlocking it (the lock
        belongs to the open file the parent shares)."""
        os.close(self._fd)


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


def _remove_folder(folder: str) -> int:
    """Remove dicomnet's temporary files under ``folder``, then the folders left empty (anything
    else stays, and so do the folders holding it). Returns the number of files removed."""
    removed = 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                removed += _unlink(os.path.join(root, name))
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)
    return removed


def _remove_unowned(folder: str, lock_path: str, ours: set[tuple[int, int]]) -> int:
    """Remove ``folder`` if no running process holds ``lock_path``; then the lock file."""
    try:
        fd = os.open(lock_path, os.O_RDWR | _O_CLOEXEC)
    except OSError:  # gone meanwhile, or another user's
        return 0
    try:
        st = os.fstat(fd)
        # Our own folders are skipped by identity too: where flock is emulated with POSIX
        # record locks (NFS), one process does not conflict with itself.
        if (st.st_dev, st.st_ino) in ours or _lock(fd) is not True:
            return 0
        removed = _remove_folder(folder)
        if not os.path.lexists(folder) and _names_file(lock_path, fd):
            _unlink(lock_path)
        return removed
    finally:
        os.close(fd)


def remove_temp_files(directory: str | os.PathLike[str]) -> int:
    """Remove what stopped processes left in the temporary directory ``directory`` (a crash, a
    SIGKILL): each process's temporary folder whose lock nobody holds, with its files; folders
    and loose temporary files without a lock file (left by dicomnet 0.1); then ``directory``
    itself if that empties it. Safe while other processes use ``directory``: their folders are
    locked and stay. Returns the number of files removed."""
    top = os.fspath(directory)
    try:
        names = sorted(os.listdir(top))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    with _pools_lock:
        ours = {folder.identity() for folder in _owned.values()}
    removed = 0
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        path = os.path.join(top, name)
        if name.endswith(LOCK_SUFFIX):
            removed += _remove_unowned(path[: -len(LOCK_SUFFIX)], path, ours)
        elif os.path.isdir(path) and not os.path.islink(path):
            # Checked now, not from the listing: a lock file created after listdir started
            # may be missing from it.
            if not os.path.lexists(path + LOCK_SUFFIX):
                removed += _remove_folder(path)
        elif name.endswith(TEMP_SUFFIX):
            removed += _unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(top)
    if removed:
        log.info("removed %d temporary file(s) left in %s by stopped processes", removed, top)
    return removed


# --- the pools, per directory ----------------------------------------------------------------------

#: Files each folder's pool keeps ready; 0 turns the pools off (DICOMNET_TEMP_POOL=0).
POOL_SIZE = int(os.environ.get("DICOMNET_TEMP_POOL", "16") or 0)
_owned: dict[str, _OwnedFolder] = {}
_pools: dict[str, TempFilePool] = {}
_pools_lock = threading.Lock()


def temp_file(directory: str | os.PathLike[str] | None) -> tuple[int, str]:
    """An open, new, empty temporary file in this process's folder in ``directory`` (the
    system's temporary folder when None), from that folder's pool (created on first use, along
    with the folders)."""
    key = os.fspath(directory) if directory is not None else tempfile.gettempdir()
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                owned = _owned.get(key)
                if owned is None:
                    owned = _owned[key] = _OwnedFolder(key)
                if POOL_SIZE <= 0:
                    return _create_temp(owned.path)
                pool = _pools[key] = TempFilePool(owned.path, POOL_SIZE)
    return pool.take()


def close_temp_pools() -> None:
    """Remove every pre-created temporary file, and give up this process's temporary folders
    that are empty (the server calls this when it closes; a folder that still holds a file
    being received stays, locked, until the process exits)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
        for pool in pools:
            pool.close()
        for key, owned in list(_owned.items()):
            if owned.release():
                del _owned[key]


def _after_fork_in_child() -> None:
    """A forked child starts with no pool and no folder: the parent's belong to the parent (its
    pool thread does not exist here, and its ready files must not be handed out twice)."""
    global _pools_lock
    _pools_lock = threading.Lock()
    for pool in _pools.values():
        pool.forget()
    _pools.clear()
    for owned in _owned.values():
        owned.forget()
    _owned.clear()


atexit.register(close_temp_pools)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
        #: The largest data set this sink takes (None: any); past it ``write`` raises
        #: ``RequestRefused`` 0xA700 and the association removes the file (``--max-instance-size``).
        self.max_size: int | None = None
        # The first bytes of the data set, kept so a few attributes can be read without
        # opening the file again (dicomnet.dataset.scan_attributes).
        self.prefix = b""
        try:
            self._file.write(meta)
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes | memoryview) -> None:
        if self.max_size is not None and self.size + len(data) > self.max_size:
            raise RequestRefused(
                f"the data set is larger than the limit of {self.max_size} bytes",
                Status.OUT_OF_RESOURCES,  # PS3.4 B.2.3: Refused, out of resources
            )
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
