"""Cached DICOM JSON per stored instance (PS3.18 Annex F), for DICOMweb metadata and QIDO.

One job: compute one instance's metadata fragment from its file once (at ingest, by ``dicomnet
index``, or lazily on first use) and keep it, with where its pixel data lies in the file, in a
table of the index's SQLite file, so that the metadata of a 500-instance series is a join of 500
cached fragments instead of 500 file parses (pydicom takes 2-10 ms per header).

Rules:

- A fragment is the DICOM JSON object of the data set without File Meta Information, with the
  binary values above ``BULK_THRESHOLD`` bytes and the pixel data as ``BulkDataURI`` (PS3.18
  §F.2.6). The URI is stored relative to the DICOMweb root (``/studies/.../bulkdata/<path>``),
  so the server prefixes its public base when it serves it (``with_base``): the key
  ``"BulkDataURI":"`` cannot occur inside a JSON string (its quotes would be escaped), so the
  prefixing is a byte replacement that data cannot forge.
- A fragment is valid for the file size and modification time it was computed from; a file
  replaced since (a duplicate stored again) is read again on first use.
- Values the JSON model cannot hold are dropped with a warning (pydicom raises on invalid IS/DS);
  text that is not valid Unicode (lone surrogates) is replaced, never an error.
- The table lives beside the index's tables (same file, own connection, WAL mode): the index's
  schema and its ``Index`` protocol are untouched; deleting the index file loses only a cache.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicomnet.archive.db import open_store

try:  # the ``web`` extra; the standard library's json otherwise (slower, same output)
    import orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    orjson = None  # type: ignore[assignment]

__all__ = [
    "BULK_THRESHOLD",
    "Fragment",
    "MetadataProcess",
    "MetadataStore",
    "MetadataWriter",
    "build_metadata",
    "compute_fragment",
    "read_instance",
    "dumps",
    "with_base",
]

log = logging.getLogger("dicomnet.archive")

#: Binary values longer than this many bytes are given as BulkDataURI, shorter ones inline.
BULK_THRESHOLD = 1024
#: Bumped whenever the fragment's form changes: older rows are computed again.
FRAGMENT_VERSION = 1
_PIXEL_TAGS = {0x7FE00010: "7FE00010", 0x7FE00008: "7FE00008", 0x7FE00009: "7FE00009"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_BULK_KEY = b'"BulkDataURI":"'


@dataclass(slots=True)
class Fragment:
    """One instance's cached metadata and pixel data location.

    ``pixel_offset`` is the file offset of the pixel data value (None when the instance has no
    pixel data or the file is deflated); ``pixel_length`` is its length, -1 when undefined
    (encapsulated). ``pixel_vr`` is OB/OW/OF/OD as in the file.
    """

    json: bytes
    size: int
    mtime_ns: int
    transfer_syntax_uid: str
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    number_of_frames: int | None = None
    pixel_tag: int | None = None
    pixel_vr: str | None = None
    pixel_offset: int | None = None
    pixel_length: int | None = None
    samples_per_pixel: int | None = None

    @property
    def little_endian(self) -> bool:
        return self.transfer_syntax_uid != "1.2.840.10008.1.2.2"

    @property
    def encapsulated(self) -> bool:
        return self.pixel_length == -1


def dumps(value: Any) -> bytes:
    """orjson's JSON, with text that is not valid Unicode (lone surrogates) replaced instead of
    an error (orjson refuses to write it)."""
    if orjson is None:
        text = json.dumps(_clean(value), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")
    try:
        return orjson.dumps(value)
    except TypeError:
        return orjson.dumps(_clean(value))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # as orjson writes NaN and infinities: JSON has no such numbers
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def with_base(fragment_json: bytes, base: bytes) -> bytes:
    """The fragment (or a join of fragments) with every BulkDataURI prefixed by ``base``
    (the DICOMweb root URL as JSON-safe bytes, e.g. ``b"http://host:8042/dicom-web"``)."""
    return fragment_json.replace(_BULK_KEY, _BULK_KEY + base)


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def compute_fragment(path: str | os.PathLike[str]) -> Fragment:
    """The fragment of the Part 10 file at ``path``; raises what pydicom raises on a file it
    cannot read."""
    return read_instance(path)[0]


def read_instance(path: str | os.PathLike[str]) -> tuple[Fragment, Dataset]:
    """The fragment of the Part 10 file at ``path`` and its data set up to the pixel data (one
    parse for a caller that also needs the data set, e.g. to build the index row)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        ds = dcmread(f, stop_before_pixels=True)
        position = f.tell()
        header = f.read(12)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") if meta is not None else "").strip("\x00 ")
    ts = ts or "1.2.840.10008.1.2"
    pixel_tag, pixel_vr, pixel_offset, pixel_length = _pixel_location(ts, position, header, ds)
    if pixel_tag is None and ts == DeflatedExplicitVRLittleEndian:
        full = dcmread(path)  # deflated: positions are in the inflated stream; look for pixels
        for tag in _PIXEL_TAGS:
            if tag in full:
                pixel_tag, pixel_vr = tag, full[tag].VR
                break
    prefix = (
        f"/studies/{_uid(ds, 'StudyInstanceUID')}/series/{_uid(ds, 'SeriesInstanceUID')}"
        f"/instances/{_uid(ds, 'SOPInstanceUID')}/bulkdata/"
    )
    document = _to_json(ds, prefix)
    if pixel_tag is not None:
        key = _PIXEL_TAGS[pixel_tag]
        document[key] = {"vr": pixel_vr or "OW", "BulkDataURI": prefix + key}
    frames = _int(ds, "NumberOfFrames")
    fragment = Fragment(
        json=dumps(document),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        transfer_syntax_uid=ts,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        bits_allocated=_int(ds, "BitsAllocated"),
        number_of_frames=frames if frames is not None else (1 if pixel_tag is not None else None),
        pixel_tag=pixel_tag,
        pixel_vr=pixel_vr,
        pixel_offset=pixel_offset,
        pixel_length=pixel_length,
        samples_per_pixel=_int(ds, "SamplesPerPixel"),
    )
    return fragment, ds


def _uid(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip("\x00 ")


def _pixel_location(
    ts: str, position: int, header: bytes, ds: Dataset
) -> tuple[int | None, str | None, int | None, int | None]:
    """(tag, VR, value offset, length) of the pixel data element whose header starts at
    ``position`` (where pydicom's ``stop_before_pixels`` left the file), or Nones."""
    if ts == DeflatedExplicitVRLittleEndian or len(header) < 8:
        return None, None, None, None
    uid = UID(ts)
    little = uid.is_little_endian if uid.is_transfer_syntax else True
    implicit = uid.is_implicit_VR if uid.is_transfer_syntax else False
    group, element = struct.unpack("<HH" if little else ">HH", header[:4])
    tag = (group << 16) | element
    if tag not in _PIXEL_TAGS:
        return None, None, None, None
    if implicit:
        (length,) = struct.unpack("<I" if little else ">I", header[4:8])
        vr = "OW" if tag == 0x7FE00010 else ("OF" if tag == 0x7FE00008 else "OD")
        if tag == 0x7FE00010 and (_int(ds, "BitsAllocated") or 16) <= 8:
            vr = "OB"
        offset = position + 8
    else:
        raw_vr = header[4:6]
        vr = raw_vr.decode("ascii", "replace")
        if raw_vr in _LONG_VRS:
            if len(header) < 12:
                return None, None, None, None
            (length,) = struct.unpack("<I" if little else ">I", header[8:12])
            offset = position + 12
        else:
            (length,) = struct.unpack("<H" if little else ">H", header[6:8])
            offset = position + 8
    return tag, vr, offset, -1 if length == 0xFFFFFFFF else length


def _to_json(ds: Dataset, prefix: str) -> dict[str, Any]:
    """pydicom's JSON model of ``ds`` with BulkDataURIs naming each element's path."""
    paths: dict[int, str] = {}

    def walk(item: Dataset, base: str) -> None:
        for elem in item:  # iterating converts raw elements: the ids below are the final ones
            key = f"{elem.tag:08X}"
            paths[id(elem)] = base + key
            if elem.VR == "SQ":
                for n, child in enumerate(elem.value):
                    walk(child, f"{base}{key}/{n}/")

    walk(ds, "")

    def handler(elem: DataElement) -> str:
        return prefix + paths.get(id(elem), f"{elem.tag:08X}")

    document: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=BULK_THRESHOLD,
        bulk_data_element_handler=handler,
        suppress_invalid_tags=True,
    )
    return document


_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance_metadata (
    sop_instance_uid TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    rows INTEGER,
    columns INTEGER,
    bits_allocated INTEGER,
    number_of_frames INTEGER,
    pixel_tag INTEGER,
    pixel_vr TEXT,
    pixel_offset INTEGER,
    pixel_length INTEGER,
    samples_per_pixel INTEGER,
    json BLOB NOT NULL
);
"""
_COLUMNS = (
    "size, mtime_ns, transfer_syntax_uid, rows, columns, bits_allocated, number_of_frames, "
    "pixel_tag, pixel_vr, pixel_offset, pixel_length, samples_per_pixel, json"
)
_BATCH = 500


def _from_row(row: Sequence[Any]) -> Fragment:
    (size, mtime, ts, rows, cols, bits, frames, ptag, pvr, poff, plen, spp, blob) = row
    return Fragment(
        json=bytes(blob),
        size=size,
        mtime_ns=mtime,
        transfer_syntax_uid=ts,
        rows=rows,
        columns=cols,
        bits_allocated=bits,
        number_of_frames=frames,
        pixel_tag=ptag,
        pixel_vr=pvr,
        pixel_offset=poff,
        pixel_length=plen,
        samples_per_pixel=spp,
    )


class MetadataStore:
    """The fragments of an archive, in the ``instance_metadata`` table of an SQLite file (the
    index's, ``SQLiteIndex.path``). Thread-safe: one connection, one lock."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = open_store(self.path, _SCHEMA, timeout=timeout, durable=False)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, sop_instance_uid: str, fragment: Fragment) -> None:
        """Store (or replace) the fragment of an instance."""
        self.put_many([(sop_instance_uid, fragment)])

    def put_many(self, items: Iterable[tuple[str, Fragment]]) -> None:
        rows = [
            (
                uid,
                FRAGMENT_VERSION,
                f.size,
                f.mtime_ns,
                f.transfer_syntax_uid,
                f.rows,
                f.columns,
                f.bits_allocated,
                f.number_of_frames,
                f.pixel_tag,
                f.pixel_vr,
                f.pixel_offset,
                f.pixel_length,
                f.samples_per_pixel,
                f.json,
            )
            for uid, f in items
        ]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO instance_metadata (sop_instance_uid, version, "
                    f"{_COLUMNS}) VALUES ({', '.join('?' * 15)})",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def remove(self, sop_instance_uid: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM instance_metadata WHERE sop_instance_uid = ?", (sop_instance_uid,)
            )

    def cached(self, uids: Sequence[str]) -> dict[str, Fragment]:
        """The stored fragments of ``uids`` (current version), without checking the files."""
        out: dict[str, Fragment] = {}
        for start in range(0, len(uids), _BATCH):
            batch = list(uids[start : start + _BATCH])
            marks = ", ".join("?" * len(batch))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT sop_instance_uid, {_COLUMNS} FROM instance_metadata "
                    f"WHERE sop_instance_uid IN ({marks}) AND version = ?",
                    (*batch, FRAGMENT_VERSION),
                ).fetchall()
            for row in rows:
                out[row[0]] = _from_row(row[1:])
        return out

    def get_many(
        self,
        items: Sequence[tuple[str, str | os.PathLike[str]]],
        *,
        check: bool = True,
        refresh: bool = False,
    ) -> list[Fragment | None]:
        """The fragments of ``(SOP Instance UID, file path)`` pairs, in order: cached ones whose
        file is unchanged (size and mtime; ``check=False`` skips the stat), the others computed
        from the file and stored (all of them with ``refresh``). None for a file that is gone
        or unreadable (logged)."""
        found = {} if refresh else self.cached([uid for uid, _ in items])
        out: list[Fragment | None] = []
        fresh: list[tuple[str, Fragment]] = []
        for uid, path in items:
            fragment = found.get(uid)
            if fragment is not None and check:
                try:
                    st = os.stat(path)
                except OSError:
                    out.append(None)
                    continue
                if st.st_size != fragment.size or st.st_mtime_ns != fragment.mtime_ns:
                    fragment = None
            if fragment is None:
                try:
                    fragment = compute_fragment(path)
                except Exception as exc:  # an unreadable file: no metadata, the rest goes on
                    log.warning("metadata of %s (%s) not computed: %s", path, uid, exc)
                    out.append(None)
                    continue
                fresh.append((uid, fragment))
            out.append(fragment)
        if fresh:
            try:
                self.put_many(fresh)
            except sqlite3.Error as exc:  # a cache: serving goes on without storing
                log.warning("metadata cache not written: %s", exc)
        return out

    def get(self, sop_instance_uid: str, path: str | os.PathLike[str]) -> Fragment | None:
        return self.get_many([(sop_instance_uid, path)])[0]

    def documents(
        self,
        root: str | os.PathLike[str],
        study: str,
        series: str | None = None,
        instance: str | None = None,
    ) -> list[bytes] | None:
        """The JSON fragments of every instance of a study, series or instance, in index order,
        checked against their files and computed where missing or stale.

        The fast path of WADO-RS metadata: one query joins the index's own tables (``instance``,
        ``series``, ``study`` of ``SQLiteIndex``) with the cache. None when the file holds no
        such tables (another index implementation): the caller then uses ``get_many``.
        """
        where = ["st.study_uid = ?"]
        params: list[object] = [FRAGMENT_VERSION, study]  # the JOIN's parameter comes first
        if series is not None:
            where.append("se.series_uid = ?")
            params.append(series)
        if instance is not None:
            where.append("i.sop_instance_uid = ?")
            params.append(instance)
        sql = (
            "SELECT i.sop_instance_uid, i.path, m.size, m.mtime_ns, m.json FROM instance i "
            "JOIN series se ON se.pk = i.series_fk JOIN study st ON st.pk = se.study_fk "
            "LEFT JOIN instance_metadata m ON m.sop_instance_uid = i.sop_instance_uid "
            f"AND m.version = ? WHERE {' AND '.join(where)} ORDER BY i.pk"
        )
        try:
            with self._lock:
                rows = self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return None
        base = os.fspath(root) + os.sep  # plain strings: pathlib costs more than the stat
        out: list[bytes | None] = []
        redo: list[tuple[int, str, str]] = []
        stat = os.stat
        for n, (uid, relative, size, mtime, blob) in enumerate(rows):
            path = base + relative
            if blob is not None:
                try:
                    st = stat(path)
                except OSError:
                    out.append(None)
                    continue
                if st.st_size == size and st.st_mtime_ns == mtime:
                    out.append(blob)
                    continue
            out.append(None)
            redo.append((n, uid, path))
        if redo:
            fragments = self.get_many([(uid, path) for _, uid, path in redo], refresh=True)
            for (n, _uid, _path), fragment in zip(redo, fragments, strict=True):
                if fragment is not None:
                    out[n] = fragment.json
        return [b for b in out if b is not None]

    def representatives(self, level: int, uids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
        """The first stored instance of each study (``level`` 1) or series (2) in ``uids``:
        UID -> (SOP Instance UID, path relative to the storage root), from the index's tables
        in one query; None when the file holds no ``SQLiteIndex`` tables."""
        if level == 1:
            source = (
                "instance i JOIN series se ON se.pk = i.series_fk "
                "JOIN study st ON st.pk = se.study_fk"
            )
            key = "st"
            column = "st.study_uid"
        elif level == 2:
            source = "instance i JOIN series se ON se.pk = i.series_fk"
            key = "se"
            column = "se.series_uid"
        else:
            raise ValueError(f"level {level}: 1 (study) or 2 (series)")
        out: dict[str, tuple[str, str]] = {}
        for start in range(0, len(uids), _BATCH):
            batch = list(uids[start : start + _BATCH])
            marks = ", ".join("?" * len(batch))
            # SQLite returns the other columns of the row that gives min() (bare columns)
            sql = (
                f"SELECT {column}, i.sop_instance_uid, i.path, min(i.pk) FROM {source} "
                f"WHERE {column} IN ({marks}) GROUP BY {key}.pk"
            )
            try:
                with self._lock:
                    rows = self._db.execute(sql, batch).fetchall()
            except sqlite3.OperationalError:
                return None
            for uid, sop, path, _pk in rows:
                out[str(uid)] = (str(sop), str(path))
        return out

    def uids(self) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT sop_instance_uid FROM instance_metadata").fetchall()
        return iter([str(r[0]) for r in rows])


class MetadataWriter:
    """Computes and stores the fragments of newly stored instances on a worker thread, so that
    a storage service's answer never waits for pydicom (2-10 ms per header). Queue with
    ``add(sop_instance_uid, path)`` (e.g. from ``StorageService``'s ``on_stored``); ``close()``
    writes what is queued. A fragment not written yet is computed on first use anyway."""

    def __init__(self, store: MetadataStore, *, batch: int = 64) -> None:
        self.store = store
        self.batch = batch
        self.written = 0
        self._queue: queue.SimpleQueue[tuple[str, str] | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="dicomnet-metadata", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def add(self, sop_instance_uid: str, path: str | os.PathLike[str]) -> None:
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True
        self._queue.put((sop_instance_uid, os.fspath(path)))

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until what was queued before this call is stored."""
        if not self._started:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            items: list[tuple[str, str]] = []
            markers: list[threading.Event] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    items.append(item)
                if stop or len(items) >= self.batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if items:
                try:
                    self.store.get_many(items, refresh=True)
                    self.written += len(items)
                except Exception as exc:  # a cache: serving computes what is missing
                    log.warning("metadata of %d instances not cached: %s", len(items), exc)
            for marker in markers:
                marker.set()
            if stop:
                return


class MetadataProcess:
    """``MetadataWriter``'s job in a child process at the lowest CPU priority (``nice`` 19), for
    a server that ingests: pydicom's parse of a header (2-10 ms) holds the GIL, so a thread
    doing it slows the event loop's C-STORE and STOW handling several times over (measured: 500
    CT stored in 1.0 s without it, 3.5 s with a thread); the child uses idle CPU only and
    catches up. Same interface: ``add``, ``flush``, ``close``.

    Rules: ``add`` never blocks (a queue, written to the child's stdin by a thread); the child
    writes each fragment into the same SQLite file through its own ``MetadataStore``; it ignores
    SIGINT (Ctrl-C reaches the whole process group) and ends when its stdin closes, so it never
    outlives the server. A child that died is logged once; the fragments are then computed on
    first use, as for any instance whose fragment is missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import subprocess
        import sys

        self.path = os.fspath(path)
        code = "from dicomnet.archive.metadata import _child_main; _child_main()"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            start_new_session=False,
        )
        self._queue: queue.SimpleQueue[tuple[str, str] | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._feed, name="dicomnet-metadata", daemon=True)
        self._thread.start()

    def add(self, sop_instance_uid: str, path: str | os.PathLike[str]) -> None:
        self._queue.put((sop_instance_uid, os.fspath(path)))

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until the child has stored what was queued before this call."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        """Let the child store what is queued, then end it (killed after ``timeout``)."""
        import subprocess

        self._queue.put(None)
        self._thread.join(timeout)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("metadata process did not stop in %s s: killed", timeout)
            self._proc.kill()
            self._proc.wait()

    def _feed(self) -> None:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        broken = False
        while True:
            item = self._queue.get()
            if item is None:
                break
            if broken:
                if isinstance(item, threading.Event):
                    item.set()
                continue
            try:
                if isinstance(item, threading.Event):
                    stdin.write(b"\n")
                    stdin.flush()
                    stdout.readline()  # the child's answer once the items before are stored
                    item.set()
                else:
                    stdin.write(f"{item[0]}\t{item[1]}\n".encode("utf-8", "surrogateescape"))
                    if self._queue.empty():
                        stdin.flush()
            except (OSError, ValueError) as exc:
                broken = True
                log.warning("metadata process gone (%s): fragments are computed on use", exc)
                if isinstance(item, threading.Event):
                    item.set()
        try:
            stdin.close()
        except OSError:
            pass


def _child_main() -> None:
    """The child of ``MetadataProcess``: lines ``uid<TAB>path`` in, fragments into the store;
    an empty line is answered with ``ok`` once everything before it is stored."""
    import select
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(19)
    except OSError:
        pass
    store = MetadataStore(sys.argv[1])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    pending: list[tuple[str, str | os.PathLike[str]]] = []

    def write() -> None:
        if pending:
            try:
                store.get_many(pending, refresh=True)
            except Exception as exc:  # a cache: serving computes what is missing
                log.warning("metadata of %d instances not cached: %s", len(pending), exc)
            pending.clear()

    try:
        while True:
            line = stdin.readline()
            if not line:
                break
            text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
            if not text:
                write()
                stdout.write(b"ok\n")
                stdout.flush()
                continue
            uid, _, path = text.partition("\t")
            pending.append((uid, path))
            more = select.select([stdin], [], [], 0)[0] and len(pending) < 64
            if not more:
                write()
        write()
    finally:
        store.close()


def build_metadata(
    storage_root: str | os.PathLike[str],
    records: Iterable[tuple[str, str]],
    store: MetadataStore,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Compute the fragments of ``(SOP Instance UID, path relative to the root)`` pairs that
    are missing or stale (for ``dicomnet index``); returns how many were computed."""
    root = Path(storage_root)
    computed = 0
    batch: list[tuple[str, str | os.PathLike[str]]] = []
    done = 0

    def flush() -> None:
        nonlocal computed, done
        cached = store.cached([uid for uid, _ in batch])
        before = len(batch) - sum(
            1 for uid, path in batch if (f := cached.get(uid)) is not None and _unchanged(path, f)
        )
        store.get_many(batch)
        computed += before
        done += len(batch)
        if progress is not None:
            progress(done)
        batch.clear()

    for uid, relative in records:
        batch.append((uid, root / relative))
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    return computed


def _unchanged(path: str | os.PathLike[str], fragment: Fragment) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return True  # gone: nothing to compute
    return st.st_size == fragment.size and st.st_mtime_ns == fragment.mtime_ns
