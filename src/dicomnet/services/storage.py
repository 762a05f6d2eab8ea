"""Storage SCP (PS3.4 Annex B) and Verification SCP (PS3.4 Annex A) writing into a folder.

Rules: success is answered only after the instance is complete on disk and renamed into place
(fsynced first when ``fsync`` is on); a value that would make an unsafe path gets a failure status
and nothing is written; an unexpected error is a failure status, never a crash.

Store as: with ``store_as`` (a lossless transfer syntax), an image that arrives otherwise is
converted (``pixels.convert_for_storage``, in the codec worker processes) before it is renamed
into place, so success still means "stored as configured"; lossy-compressed images, data sets
without pixels and a conversion that fails keep the received file as it is (logged), never a
failed store. The index row records the syntax of the file as stored.

Index: with an ``index`` configured, the instance's row is written after the file is in place
(a crash in between is repaired by ``archive.index.reconcile`` on the next start). The row is
built from the first bytes received (``dataset.scan_attributes``), with no second parse of the
file; only text that is not plain ASCII (or an unusual encoding) makes it parse the header with
pydicom, up to the pixel data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path

from pydicom.datadict import tag_for_keyword

from dicomnet.archive.index import RECORD_KEYWORDS, Index, InstanceRecord, SQLiteIndex, reconcile
from dicomnet.archive.storage import DEFAULT_LAYOUT, UnsafePathError, instance_path, layout_keys
from dicomnet.dataset import scan_attributes
from dicomnet.dimse.status import Status, StoreStatus
from dicomnet.errors import TranscodeError
from dicomnet.negotiation import AssociationDecision, AssociationRequest
from dicomnet.pdu import RejectReason, RejectResult, RejectSource
from dicomnet.pixels import TranscodePool, as_target
from dicomnet.pixels.pool import default_pool
from dicomnet.pixels.syntaxes import syntax_name
from dicomnet.service import (
    CEchoProvider,
    CStoreProvider,
    ReceivedCEcho,
    ReceivedCStore,
    Response,
    Service,
)

log = logging.getLogger("dicomnet.services.storage")

#: The index file inside the storage folder (hidden: the index's file walk skips it).
INDEX_NAME = ".dicomnet-index.sqlite"


#: The index's state key that says how the last server using it stopped.
SHUTDOWN_KEY = "shutdown"


def open_index(root: str | os.PathLike[str], *, repair: bool = True) -> SQLiteIndex:
    """Open (creating it if needed) the index of the storage folder ``root``.

    With ``repair`` (a server starting): unless the last server stopped cleanly (``mark_clean``),
    reconcile the index with the files first (index files with no row, drop rows with no file),
    which walks the whole folder; then mark the index in use until ``mark_clean``. Files added
    to the folder by something else while no server ran are indexed by ``dicomnet index``.
    """
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    index = SQLiteIndex(folder / INDEX_NAME)
    if repair:
        try:
            if index.get_state(SHUTDOWN_KEY) == "clean":
                log.info("index %s: the last server stopped cleanly; no repair", index.path)
            else:
                added, removed = reconcile(index, folder)
                log.info("index %s: %d files indexed, %d rows dropped", index.path, added, removed)
            index.set_state(SHUTDOWN_KEY, "running")
        except BaseException:
            index.close()
            raise
    return index


def mark_clean(index: SQLiteIndex) -> None:
    """Every stored instance has its row: the next ``open_index(repair=True)`` skips the walk."""
    index.set_state(SHUTDOWN_KEY, "clean")


class IndexWriter:
    """Writes index rows on a worker thread, in batches of one transaction each, so that a
    C-STORE response never waits for SQLite (about 0.1 ms per row added one by one).

    Rows become visible a moment after the store is answered: readers in this process call
    ``flush()`` (or ``await aflush()``) first; a crash loses at most the queued rows, which
    ``reconcile`` indexes again on the next start.
    """

    def __init__(self, index: Index, *, batch: int = 256, linger: float = 0.02) -> None:
        self.index = index
        self.batch = batch
        # Seconds the writer waits after the first queued row for more to come, so that a
        # transaction holds many rows (SQLite writes every page it touches once per
        # transaction: a row a transaction cost a dozen writes per instance); flush and close
        # cut the wait short.
        self.linger = linger
        self._hurry = threading.Event()
        self.written = 0
        self.failed = 0  # rows that could not be written (logged)
        self._queue: queue.SimpleQueue[InstanceRecord | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pending = 0  # queued or being written (a record taken off the queue counts)

    def add(self, record: InstanceRecord) -> None:
        """Queue ``record`` for writing."""
        if self._closed:
            raise RuntimeError("the index writer is closed")
        self._ensure_thread()
        with self._lock:
            self._pending += 1
        self._queue.put(record)

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until every row queued before this call is written; False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        self._hurry.set()
        return done.wait(timeout)

    async def aflush(self, timeout: float | None = 60.0) -> bool:
        """``flush`` without blocking the event loop (returns at once when nothing is queued)."""
        if self._thread is None or self._pending == 0:
            return True
        return await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = 60.0) -> bool:
        """Write what is queued and stop the worker (the index itself stays open); True when
        every queued row was written."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            self._hurry.set()
            thread.join(timeout)
            if thread.is_alive():
                return False
        return self.failed == 0

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name="dicomnet-index-writer", daemon=True
                    )
                    thread.start()
                    self._thread = thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, InstanceRecord) and self.linger > 0:
                self._hurry.wait(self.linger)
            self._hurry.clear()
            records: list[InstanceRecord] = []
            markers: list[threading.Event] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    records.append(item)
                if stop or len(records) >= self.batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if records:
                self._write(records)
                with self._lock:
                    self._pending -= len(records)
            for marker in markers:
                marker.set()
            if stop:
                return

    def _write(self, records: list[InstanceRecord]) -> None:
        try:
            self.index.add_many(records)
            self.written += len(records)
        except Exception:
            # One bad row must not lose the batch: write them one by one, logging failures.
            for record in records:
                try:
                    self.index.add(record)
                    self.written += 1
                except Exception as exc:
                    self.failed += 1
                    log.warning(
                        "index: %s (%s) not indexed: %s", record.path, record.sop_instance_uid, exc
                    )


# The attributes of an index row that come from the data set (the SOP Class and Instance UIDs
# come from the command), by record field: the index's own list, all before the pixel data.
_ROW_TAGS: dict[str, int] = {
    name: int(tag_for_keyword(keyword) or 0)
    for name, keyword in RECORD_KEYWORDS.items()
    if name not in ("sop_instance_uid", "sop_class_uid")
}
_ROW_TAG_SET = frozenset(_ROW_TAGS.values())


@cache
def _layout_tags(layout: str) -> tuple[tuple[str, int | None], ...]:
    """(keyword, tag) of the attributes a layout needs from the data set (the SOP Class and
    Instance UIDs come from the command)."""
    return tuple(
        (keyword, tag_for_keyword(keyword))
        for keyword in layout_keys(layout)
        if keyword not in ("SOPInstanceUID", "SOPClassUID")
    )


def _plain(text: str) -> bool:
    """Printable ASCII only: safe to take as it is, whatever the Specific Character Set."""
    return all(" " <= ch <= "~" for ch in text)


def instance_record(
    request: ReceivedCStore,
    path: Path,
    root: Path,
    found: Mapping[int, str] | None = None,
) -> InstanceRecord:
    """The index row of a received instance about to be saved at ``path`` under ``root``
    (call before ``save``: the fallback parses the temporary file). ``found``: the values
    already read from the first bytes received (read here when not given)."""
    relative = path.relative_to(root)
    if found is None:
        found = scan_attributes(request.prefix, request.transfer_syntax, set(_ROW_TAG_SET))
    if found is None or not all(_plain(found.get(tag, "")) for tag in _ROW_TAG_SET):
        return InstanceRecord.from_dataset(
            request.dataset, relative, 0, transfer_syntax=request.transfer_syntax
        )
    values = {name: found.get(tag, "").rstrip(" ") or None for name, tag in _ROW_TAGS.items()}
    study, series = values.pop("study_instance_uid"), values.pop("series_instance_uid")
    if not study or not series:
        raise ValueError("StudyInstanceUID or SeriesInstanceUID is missing; not indexed")
    return InstanceRecord(
        sop_instance_uid=request.sop_instance_uid.strip("\x00 "),
        sop_class_uid=request.sop_class_uid.strip("\x00 "),
        study_instance_uid=study,
        series_instance_uid=series,
        path=relative.as_posix(),
        size=0,
        transfer_syntax_uid=request.transfer_syntax,
        **values,
    )


class StorageService(Service, CEchoProvider, CStoreProvider):
    """Accepts Verification and every storage SOP class, and writes each instance to
    ``root/<layout>``. Configure with ``StorageService.factory(...)``."""

    root: Path = Path("dicom-store")
    layout: str = DEFAULT_LAYOUT
    ae_title: str | None = None  # when set, other called AE titles are rejected
    allowed_calling_aes: Sequence[str] = ()  # when non-empty, only these may associate
    on_stored: Callable[[ReceivedCStore, Path], None] | None = None
    index: Index | None = None  # when set, every stored instance gets its row ...
    index_writer: IndexWriter | None = None  # ... written by this worker
    store_as: str | None = None  # a lossless transfer syntax UID to store images in
    transcode_pool: TranscodePool | None = None  # where conversions run (None: the shared one)

    @classmethod
    def factory(
        cls,
        root: str | Path,
        *,
        layout: str = DEFAULT_LAYOUT,
        ae_title: str | None = None,
        allowed_calling_aes: Sequence[str] = (),
        fsync: bool = True,
        max_operations_performed: int = 1,
        on_stored: Callable[[ReceivedCStore, Path], None] | None = None,
        index: Index | None = None,
        store_as: str | None = None,
        **extra: object,
    ) -> type[StorageService]:
        """A configured subclass (the server creates one instance per association). ``index``
        is shared by every association (open it with ``open_index``; rows are written by the
        class's ``index_writer``: ``close()`` it before closing the index); ``extra`` sets
        further class attributes of subclasses."""
        layout_keys(layout)  # validate early
        if store_as:
            target = as_target(store_as)
            if target.lossy:
                raise ValueError(f"store_as {target} is lossy; an archive stores losslessly")
            store_as = target.transfer_syntax
        root_path = Path(root)
        root_path.mkdir(parents=True, exist_ok=True)
        attrs = {
            "root": root_path,
            "layout": layout,
            "ae_title": ae_title,
            "allowed_calling_aes": tuple(allowed_calling_aes),
            "fsync": fsync,
            "temp_dir": root_path / ".incoming",
            "max_operations_performed": max_operations_performed,
            "on_stored": staticmethod(on_stored) if on_stored else None,
            "index": index,
            "index_writer": IndexWriter(index) if index is not None else None,
            "store_as": store_as or None,
            **extra,
        }
        configured = type(cls.__name__, (cls,), attrs)
        return configured

    async def on_association_request(self, request: AssociationRequest) -> AssociationDecision:
        if self.ae_title and request.called_ae_title != self.ae_title:
            return request.reject(
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLED_AE_NOT_RECOGNIZED,
            )
        if self.allowed_calling_aes and request.calling_ae_title not in self.allowed_calling_aes:
            return request.reject(
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLING_AE_NOT_RECOGNIZED,
            )
        return await super().on_association_request(request)

    def on_c_echo(self, request: ReceivedCEcho) -> int:
        return Status.SUCCESS

    def _scan(self, request: ReceivedCStore) -> tuple[dict[str, object], dict[int, str] | None]:
        """The layout's values and, with an index, the row's, read from the first bytes
        received in one scan: (layout keyword -> value, tag -> value or None when the scan
        could not answer)."""
        values: dict[str, object] = {
            "SOPInstanceUID": request.sop_instance_uid,
            "SOPClassUID": request.sop_class_uid,
        }
        needed = _layout_tags(self.layout)
        wanted = {tag for _, tag in needed if tag is not None}
        if self.index is not None:
            wanted |= _ROW_TAG_SET
        found = scan_attributes(request.prefix, request.transfer_syntax, wanted) if wanted else None
        if needed:
            if found is not None:
                values.update({k: found.get(t, "") if t is not None else "" for k, t in needed})
            else:  # the first bytes could not answer: the layout's keys alone, or the file
                values.update(request.attributes(*(keyword for keyword, _ in needed)))
        return values, found

    async def on_c_store(self, request: ReceivedCStore) -> int | Response:
        values, found = self._scan(request)
        try:
            path = instance_path(self.root, self.layout, values)
        except UnsafePathError as exc:
            log.warning("[%s] refused %s: %s", request.association, request.sop_instance_uid, exc)
            return Response(StoreStatus.CANNOT_UNDERSTAND, error_comment=str(exc))
        record = None
        if self.index is not None:
            try:
                record = instance_record(request, path, self.root, found)
            except (ValueError, OSError) as exc:
                log.warning("[%s] %s not indexed: %s", request.association, path, exc)
        stored_syntax = request.transfer_syntax
        if self.store_as and self.store_as != stored_syntax:
            stored_syntax = await self._convert(request, self.store_as)
        await request.save(path, fsync_dir=self.fsync)
        if record is not None and self.index_writer is not None:
            # After the rename: a row never names a file that is not there yet.
            try:
                size = os.stat(path).st_size
                self.index_writer.add(replace(record, size=size, transfer_syntax_uid=stored_syntax))
            except OSError as exc:  # the instance is stored; reconcile indexes it later
                log.warning("[%s] %s not indexed: %s", request.association, path, exc)
        log.info(
            "[%s] stored %s (%d bytes) as %s",
            request.association,
            request.sop_instance_uid,
            request.size,
            path,
        )
        if self.on_stored is not None:
            self.on_stored(request, path)
        return Status.SUCCESS

    async def _convert(self, request: ReceivedCStore, target: str) -> str:
        """Convert the received file to ``target`` in place (a new temporary file renamed over
        it); the transfer syntax it is in afterwards. A conversion that fails or is not worth
        it keeps the file as received."""
        received = request.path
        converted = received.with_name(received.name + ".converted")
        try:
            result = await (self.transcode_pool or default_pool()).convert_for_storage(
                received, converted, target, temp_dir=received.parent, fsync=self.fsync
            )
        except TranscodeError as exc:
            converted.unlink(missing_ok=True)
            log.warning(
                "[%s] %s kept in %s, not converted to %s: %s",
                request.association,
                request.sop_instance_uid,
                syntax_name(request.transfer_syntax),
                syntax_name(target),
                exc,
            )
            return request.transfer_syntax
        if result is None:
            log.debug(
                "[%s] %s kept in %s (no pixels to compress, or lossy already)",
                request.association,
                request.sop_instance_uid,
                syntax_name(request.transfer_syntax),
            )
            return request.transfer_syntax
        os.replace(converted, received)
        log.info(
            "[%s] %s converted from %s to %s (%d -> %d bytes, %.3f s)",
            request.association,
            request.sop_instance_uid,
            syntax_name(result.source_syntax),
            syntax_name(result.transfer_syntax),
            result.bytes_in,
            result.bytes_out,
            result.seconds,
        )
        return result.transfer_syntax
