"""STOW-RS (PS3.18 §10.5): instances uploaded as multipart/related application/dicom, stored as
C-STORE stores them.

One job: stream a request body into temporary files part by part, check each instance, and only
when the whole body has arrived intact move them into the storage layout, index them and cache
their metadata. Rules:

- Never the whole body in memory: parts are written to ``STORAGE/.incoming/.dicomnet-web-*.part``
  as they arrive (the folder and the name pattern ``dicomnet serve`` cleans on start and stop);
  the 128-byte preamble of every file is blanked (PS3.10 §7.5: its content is not trusted).
- A body that is not well-formed multipart, is truncated (no close delimiter), breaks a limit
  (total bytes, parts, header size: 413), stalls longer than ``body_timeout`` (408), or the
  client's disconnect stores nothing: every temporary file is removed and the answer is 4xx.
- Checked per instance: a DICOM Part 10 file pydicom reads, UIDs that make a safe path
  (``archive.storage.instance_path``), the Study Instance UID of the URL when there is one
  (FailureReason 43265 otherwise, as Azure's). The same duplicate policy as C-STORE: an
  instance stored again replaces the stored one.
- The answer (``application/dicom+json`` exactly): 200 when every instance was stored, 202 when
  some were (with ``Warning: 299``), 409 when none were; ReferencedSOPSequence (0008,1199) and
  FailedSOPSequence (0008,1198) with FailureReason (0008,1197) say which.
- ``Expect: 100-continue`` is answered after the headers were checked, so a client that would
  get 415 or 413 never sends its body.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomnet.archive.index import InstanceRecord
from dicomnet.archive.metadata import Fragment, read_instance
from dicomnet.archive.storage import UnsafePathError, instance_path, layout_keys
from dicomnet.dataset import NotDicomError, read_file_info
from dicomnet.web.common import (
    Archive,
    HTTPProblem,
    archive_of,
    base_url,
    decorate,
    json_response,
    path_uid,
    warning_header,
)
from dicomnet.web.dicomjson import attribute
from dicomnet.web.media import parse_media_type
from dicomnet.web.multipart import (
    MultipartError,
    MultipartLimitError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from,
)

__all__ = ["add_routes", "FAILURE_STUDY_MISMATCH"]

log = logging.getLogger("dicomnet.web")

#: FailureReason (0008,1197) values (PS3.18 Table 10.5.3-2; 43265 as Azure's for the URL study).
FAILURE_PROCESSING = 0x0110
FAILURE_UNDERSTAND = 0xC000
FAILURE_STUDY_MISMATCH = 43265
FAILURE_MEDIA_TYPE = 0xC122
_CHUNK = 1 << 18
_PREAMBLE = 128
DEFLATED = "1.2.840.10008.1.2.1.99"
#: The most a deflated instance may inflate to (pydicom holds it in memory).
MAX_INFLATED = 256 << 20


@dataclass(slots=True)
class _Part:
    """One part of the body: where it is staged, and what checking it found."""

    temp: Path | None = None
    fd: int = -1
    size: int = 0
    media_type: str = "application/dicom"
    failure: int | None = None
    reason: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    dest: Path | None = None
    record: InstanceRecord | None = None
    fragment: Fragment | None = None
    head: bytearray | None = field(default_factory=bytearray)


@dataclass(slots=True)
class _Stager:
    """Writes parts into temporary files and checks each one when it ends (runs in a worker
    thread, one call at a time)."""

    archive: Archive
    study: str | None
    incoming: Path
    parts: list[_Part] = field(default_factory=list)
    current: _Part | None = None

    def handle(self, events: Iterable[PartStart | PartData | PartEnd]) -> None:
        for event in events:
            if isinstance(event, PartStart):
                media = parse_media_type(event.headers.get("content-type", "application/dicom"))
                new = _Part(media_type=media.type if media is not None else "?")
                if new.media_type != "application/dicom":
                    new.failure = FAILURE_MEDIA_TYPE
                    new.reason = f"part of type {new.media_type!r}: only application/dicom"
                self.parts.append(new)
                self.current = new
            elif isinstance(event, PartData):
                current = self.current
                if current is None or current.failure is not None:
                    continue
                self._write(current, event.data)
            else:
                if self.current is not None:
                    self._finish(self.current)
                self.current = None

    def _write(self, part: _Part, data: bytes) -> None:
        if part.head is not None:
            # The first 132 bytes decide how the file starts (see _start); hold them back.
            part.head += data
            if len(part.head) < _PREAMBLE + 4:
                return
            data = self._start(part)
        self._put(part, data)

    def _start(self, part: _Part) -> bytes:
        """The first bytes of a part as they go to the file: the 128-byte preamble blanked
        (PS3.10 §7.5: its content is not trusted), or added when the part starts right with
        the File Meta Information (pydicom's ``dcmwrite`` of a data set that has no preamble,
        as dicomweb-client sends in-memory data sets)."""
        head = bytes(part.head or b"")
        part.head = None
        if head[_PREAMBLE : _PREAMBLE + 4] == b"DICM":
            return b"\x00" * _PREAMBLE + head[_PREAMBLE:]
        if head[:2] == b"\x02\x00":  # group 0002 little endian: meta without preamble
            return b"\x00" * _PREAMBLE + b"DICM" + head
        return head

    def _put(self, part: _Part, data: bytes) -> None:
        if part.fd < 0:
            self.incoming.mkdir(parents=True, exist_ok=True)
            name = f".dicomnet-web-{secrets.token_hex(8)}.part"
            part.temp = self.incoming / name
            part.fd = os.open(part.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        view = memoryview(data)
        while view:
            written = os.write(part.fd, view)
            view = view[written:]
        part.size += len(data)

    def _finish(self, part: _Part) -> None:
        if part.head is not None and part.failure is None and part.head:
            self._put(part, self._start(part))
        if part.fd >= 0:
            if self.archive.config.fsync:
                os.fsync(part.fd)
            os.close(part.fd)
            part.fd = -1
        if part.failure is not None:
            self._drop(part)
            return
        if part.temp is None:
            part.failure, part.reason = FAILURE_UNDERSTAND, "empty part"
            return
        self._check(part)
        if part.failure is not None:
            self._drop(part)

    def _check(self, part: _Part) -> None:
        assert part.temp is not None
        try:
            try:
                info = read_file_info(part.temp)
                if info.transfer_syntax == DEFLATED:
                    _check_inflated_size(part.temp, info.offset)
            except NotDicomError:
                self._rewrite_meta(part)  # no group length or UIDs: write a proper one
            fragment, ds = read_instance(part.temp)
        except Exception as exc:  # whatever pydicom raises on bytes that are not DICOM
            part.failure = FAILURE_UNDERSTAND
            part.reason = f"not a DICOM Part 10 file: {type(exc).__name__}: {exc}"[:200]
            return
        part.sop_instance_uid = _text(ds, "SOPInstanceUID") or _meta(
            ds, "MediaStorageSOPInstanceUID"
        )
        part.sop_class_uid = _text(ds, "SOPClassUID") or _meta(ds, "MediaStorageSOPClassUID")
        study = _text(ds, "StudyInstanceUID")
        if self.study is not None and study != self.study:
            part.failure = FAILURE_STUDY_MISMATCH
            part.reason = f"StudyInstanceUID {study[:64]!r} is not the study of the URL"
            return
        archive = self.archive
        values: dict[str, object] = {k: _text(ds, k) for k in layout_keys(archive.layout)}
        try:
            dest = instance_path(archive.root, archive.layout, values)
        except UnsafePathError as exc:
            part.failure, part.reason = FAILURE_UNDERSTAND, str(exc)[:200]
            return
        try:
            record = InstanceRecord.from_dataset(ds, dest.relative_to(archive.root), part.size)
        except (ValueError, TypeError) as exc:
            part.failure, part.reason = FAILURE_UNDERSTAND, str(exc)[:200]
            return
        part.dest, part.record, part.fragment = dest, record, fragment

    def _rewrite_meta(self, part: _Part) -> None:
        """Rewrite a file whose File Meta Information lacks its group length or a required
        element (PS3.10 §7.1), so that every stored file streams as C-STORE's do."""
        assert part.temp is not None
        ds = dcmread(part.temp)
        fixed = part.temp.with_name(part.temp.name[: -len(".part")] + "-meta.part")
        ds.save_as(fixed, enforce_file_format=True)
        os.replace(fixed, part.temp)
        part.size = os.stat(part.temp).st_size

    def _drop(self, part: _Part) -> None:
        if part.temp is not None:
            try:
                os.unlink(part.temp)
            except FileNotFoundError:
                pass
            part.temp = None

    def discard(self) -> None:
        """Remove every temporary file (a failed or abandoned request)."""
        for part in self.parts:
            if part.fd >= 0:
                os.close(part.fd)
                part.fd = -1
            self._drop(part)

    def commit(self) -> None:
        """Move the checked instances into place, then index them and cache their metadata."""
        archive = self.archive
        stored: list[_Part] = []
        folders: set[Path] = set()
        for part in self.parts:
            if part.failure is not None or part.temp is None or part.dest is None:
                continue
            try:
                part.dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part.temp, part.dest)
            except OSError as exc:
                log.warning("STOW: %s not stored: %s", part.sop_instance_uid, exc)
                part.failure, part.reason = FAILURE_PROCESSING, f"not stored: {exc}"[:200]
                self._drop(part)
                continue
            part.temp = None
            folders.add(part.dest.parent)
            stored.append(part)
        if archive.config.fsync:
            for folder in folders:
                fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        records = [p.record for p in stored if p.record is not None]
        # After the renames: a row never names a file that is not there yet (as C-STORE).
        if archive.writer is not None:
            for record in records:
                archive.writer.add(record)
        else:
            add_many = getattr(archive.index, "add_many", None)
            if add_many is not None:
                add_many(records)
            else:
                for record in records:
                    archive.index.add(record)
        if archive.store is not None:
            fragments = [
                (p.sop_instance_uid, _moved(p.fragment, p))
                for p in stored
                if p.fragment is not None
            ]
            try:
                archive.store.put_many(fragments)
            except Exception as exc:  # a cache: it is filled again on first use
                log.warning("STOW: metadata not cached: %s", exc)


def _check_inflated_size(path: Path, offset: int) -> None:
    """A deflated data set (PS3.5 §A.5) is inflated whole by pydicom: refuse one that would
    grow past ``MAX_INFLATED`` bytes (a deflate bomb) before pydicom sees it."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while not inflater.eof and (chunk := f.read(_CHUNK)):
            data = inflater.decompress(chunk, _CHUNK)
            while True:
                total += len(data)
                if total > MAX_INFLATED:
                    raise ValueError(f"the deflated data set inflates past {MAX_INFLATED} bytes")
                if inflater.eof or not inflater.unconsumed_tail:
                    break
                if not data:  # input left but no progress: never loop on it
                    raise ValueError("the deflated data set does not inflate")
                data = inflater.decompress(inflater.unconsumed_tail, _CHUNK)


def _moved(fragment: Fragment, part: _Part) -> Fragment:
    """The fragment with the stat of the file in its final place (a rename keeps it, but the
    cache compares both)."""
    if part.dest is None:
        return fragment
    try:
        st = os.stat(part.dest)
    except OSError:
        return fragment
    return replace(fragment, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip("\x00 ")


def _meta(ds: Dataset, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return "" if meta is None else _text(meta, keyword)


# --- HTTP ----------------------------------------------------------------------------------------


def _check_headers(request: web.Request) -> tuple[str | None, str | None]:
    """(boundary or None for a single application/dicom body, the URL's study UID); raises
    HTTPProblem 415/413/400 before any body byte is read."""
    archive = archive_of(request)
    study = path_uid(request, "study") if "study" in request.match_info else None
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPProblem(415, f"Content-Encoding {encoding[:40]!r} is not accepted")
    length = request.content_length
    if length is not None and length > archive.config.max_stow_bytes:
        raise HTTPProblem(413, f"the body is larger than {archive.config.max_stow_bytes} bytes")
    media = parse_media_type(request.headers.get("Content-Type", ""))
    if media is None:
        raise HTTPProblem(
            415, "STOW-RS needs Content-Type multipart/related; type=application/dicom"
        )
    if media.type == "application/dicom":
        return None, study
    if media.type != "multipart/related":
        raise HTTPProblem(415, f"{media.type[:60]!r}: STOW-RS takes multipart/related")
    part_type = media.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise HTTPProblem(415, f"type={part_type[:60]!r}: only application/dicom is stored here")
    try:
        return boundary_from(media.params), study
    except MultipartError as exc:
        raise HTTPProblem(400, str(exc)) from None


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: check the headers first, then invite the body."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        return web.Response(status=417, text="only Expect: 100-continue is understood\n")
    try:
        _check_headers(request)
    except HTTPProblem as problem:
        log.info("STOW %s -> %d: %s", request.path, problem.status, problem.reason)
        response = web.Response(status=problem.status, text=problem.reason + "\n")
        decorate(request, response)
        return response
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


async def _store(request: web.Request) -> web.StreamResponse:
    archive = archive_of(request)
    config = archive.config
    boundary, study = _check_headers(request)
    stager = _Stager(archive, study, archive.root / ".incoming")
    parser = (
        MultipartParser(
            boundary, max_header_bytes=config.max_part_header_bytes, max_parts=config.max_stow_parts
        )
        if boundary is not None
        else None
    )
    total = 0
    committed = False
    try:
        if parser is None:
            stager.handle([PartStart({"content-type": "application/dicom"})])
        content = request.content
        while True:
            try:
                async with asyncio.timeout(config.body_timeout):
                    chunk = await content.readany()
            except TimeoutError:
                raise HTTPProblem(408, f"no body bytes for {config.body_timeout:g} s") from None
            if not chunk:
                break
            total += len(chunk)
            if total > config.max_stow_bytes:
                raise HTTPProblem(413, f"the body is larger than {config.max_stow_bytes} bytes")
            events = parser.feed(chunk) if parser is not None else [PartData(chunk)]
            if events:
                await asyncio.to_thread(stager.handle, events)
            if parser is not None and parser.done:
                break  # the epilogue is ignored (dicomweb-client JS pads it with NUL bytes)
        if parser is not None:
            parser.close()
        else:
            await asyncio.to_thread(stager.handle, [PartEnd()])
        if not stager.parts:
            raise HTTPProblem(400, "the body holds no instance")
        await asyncio.to_thread(stager.commit)
        committed = True
    except MultipartLimitError as exc:
        raise HTTPProblem(413, str(exc)) from None
    except MultipartError as exc:
        raise HTTPProblem(400, f"malformed multipart body: {exc}") from None
    finally:
        if not committed:
            await asyncio.shield(asyncio.to_thread(stager.discard))
    return _answer(request, stager.parts, study)


def _answer(request: web.Request, parts: list[_Part], study: str | None) -> web.Response:
    base = base_url(request)
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    studies: set[str] = set()
    for part in parts:
        item = dict(
            [
                attribute("ReferencedSOPClassUID", part.sop_class_uid or None),
                attribute("ReferencedSOPInstanceUID", part.sop_instance_uid or None),
            ]
        )
        if part.failure is None and part.record is not None:
            r = part.record
            studies.add(r.study_instance_uid)
            url = (
                f"{base}/studies/{r.study_instance_uid}/series/{r.series_instance_uid}"
                f"/instances/{r.sop_instance_uid}"
            )
            item.update([attribute("RetrieveURL", url)])
            referenced.append(item)
        else:
            item.update([attribute("FailureReason", part.failure or FAILURE_PROCESSING)])
            failed.append(item)
            log.info(
                "STOW %s: failed %s: %s", request.path, part.sop_instance_uid or "?", part.reason
            )
    document: dict[str, Any] = {}
    one_study = study or (next(iter(studies)) if len(studies) == 1 else None)
    if one_study:
        document.update([attribute("RetrieveURL", f"{base}/studies/{one_study}")])
    document["00081198"] = {"vr": "SQ", "Value": failed} if failed else {"vr": "SQ"}
    document["00081199"] = {"vr": "SQ", "Value": referenced} if referenced else {"vr": "SQ"}
    if failed and referenced:
        status, warnings = 202, [f"{len(failed)} of {len(parts)} instances were not stored"]
    elif failed:
        status, warnings = 409, []
    else:
        status, warnings = 200, []
    log.info(
        "STOW %s -> %d: %d stored, %d failed", request.path, status, len(referenced), len(failed)
    )
    return json_response(
        dict(sorted(document.items())), status=status, headers=warning_header(warnings)
    )


def add_routes(app: web.Application, root: str) -> None:
    app.router.add_route("POST", root + "/studies", _store, expect_handler=_expect)
    app.router.add_route("POST", root + "/studies/{study:[^/]+}", _store, expect_handler=_expect)
