"""WADO-RS (PS3.18 §10.4): instances, series and studies as multipart application/dicom, and
their metadata as DICOM JSON.

One job: find the instances a path names in the index, choose each one's transfer syntax from
the Accept header, and stream the files. Rules:

- No ``transfer-syntax`` means Explicit VR Little Endian (PS3.18 §8.7.3.5.2, since 2016c);
  ``*`` means as stored. An uncompressed file goes out re-encoded (``transcode``); a compressed
  one only as stored unless a codec is registered. When an instance cannot be sent in any
  acceptable form the answer is 406, decided before the first byte is sent.
- Files stream from disk in chunks (read in a worker thread), one part per instance, each part
  with ``Content-Type: application/dicom; transfer-syntax=<uid>``; a single-part
  ``application/dicom`` is accepted for one instance (as Google's and Azure's servers do).
- Metadata is the join of the cached per-instance fragments (``archive.metadata``), with the
  BulkDataURIs completed with the public base URL; fragments missing or stale are computed
  from the files on the way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from dicomnet.archive.index import InstanceRecord
from dicomnet.archive.metadata import Fragment, with_base
from dicomnet.dataset import NotDicomError, read_file_info
from dicomnet.web.common import (
    Archive,
    HTTPProblem,
    archive_of,
    base_url,
    cut_short,
    decorate,
    json_response,
    path_uid,
    query_pairs,
)
from dicomnet.web.media import (
    DICOM_JSON,
    EXPLICIT_VR_LE,
    Want,
    accepts,
    parse_accept,
    wants,
)
from dicomnet.web.multipart import closing, new_boundary, part_header
from dicomnet.web.transcode import can_convert, convert_file

__all__ = ["add_routes", "read_chunks"]

log = logging.getLogger("dicomnet.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHUNK = 1 << 20
_LEVEL_KEYS = (
    ("study", "StudyInstanceUID"),
    ("series", "SeriesInstanceUID"),
    ("instance", "SOPInstanceUID"),
)
_LEVEL_NAMES = ("STUDY", "SERIES", "IMAGE")


def accept_of(request: web.Request) -> str | None:
    """The ``accept`` query parameter (PS3.18 §8.3.3.1) or else the Accept header."""
    for key, value in query_pairs(request):
        if key == "accept":
            return value
    return request.headers.get("Accept")


async def records_of(request: web.Request, depth: int) -> list[InstanceRecord]:
    """The instances under the study/series/instance the path names (404 when none)."""
    archive = archive_of(request)
    query = {keyword: ("UI", path_uid(request, name)) for name, keyword in _LEVEL_KEYS[:depth]}
    records = await archive.records(_LEVEL_NAMES[depth - 1], query)
    if not records:
        raise HTTPProblem(404, f"no such {_LEVEL_KEYS[depth - 1][0]} in this archive")
    return records


async def read_chunks(
    path: Path, start: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """The bytes of ``path`` from ``start`` (``length`` of them, or to the end) in chunks read
    in a worker thread."""

    def open_and_read(size: int) -> tuple[int, bytes]:
        # one worker-thread hop for the open and the first chunk (most files are one chunk)
        fd = os.open(path, os.O_RDONLY)
        try:
            return fd, os.pread(fd, size, start)
        except BaseException:
            os.close(fd)
            raise

    first_size = CHUNK if length is None else min(CHUNK, length)
    fd, data = await asyncio.to_thread(open_and_read, first_size)
    try:
        position = start
        remaining = length
        first = True
        while remaining is None or remaining > 0:
            size = CHUNK if remaining is None else min(CHUNK, remaining)
            if not first:
                data = await asyncio.to_thread(os.pread, fd, size, position)
            first = False
            if not data:
                if remaining:
                    raise OSError(f"{path} ended {remaining} bytes early")
                return
            position += len(data)
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        os.close(fd)


# --- instances -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Planned:
    record: InstanceRecord
    path: Path
    stored: str
    target: str


def stored_syntax(archive: Archive, record: InstanceRecord) -> tuple[Path, str]:
    path = archive.root / record.path
    if record.transfer_syntax_uid:
        if not path.is_file():
            raise FileNotFoundError(path)
        return path, record.transfer_syntax_uid
    return path, read_file_info(path).transfer_syntax


def _choose(stored: str, options: list[Want]) -> str | None:
    for want in options:
        target = want.transfer_syntax
        if target == "*":
            return stored
        target = target or EXPLICIT_VR_LE
        if can_convert(stored, target):
            return target
    return None


async def _retrieve(request: web.Request, depth: int) -> web.StreamResponse:
    archive = archive_of(request)
    accept = accept_of(request)
    options = wants(parse_accept(accept), ("application/dicom",))
    if not options:
        raise HTTPProblem(
            406,
            f"this resource is multipart/related; type=application/dicom; Accept was {accept!r:.200}",
        )
    records = await records_of(request, depth)

    def plan() -> list[_Planned]:
        out = []
        for record in records:
            try:
                path, stored = stored_syntax(archive, record)
            except (OSError, NotDicomError) as exc:
                log.warning(
                    "%s: file of %s unusable: %s", request.path, record.sop_instance_uid, exc
                )
                continue
            multipart = [w for w in options if w.multipart or len(records) == 1]
            target = _choose(stored, multipart)
            if target is None:
                raise HTTPProblem(
                    406,
                    f"instance {record.sop_instance_uid} is stored in {stored} and cannot be "
                    f"converted to an acceptable transfer syntax (Accept: {accept!r:.200})",
                )
            out.append(_Planned(record, path, stored, target))
        return out

    planned = await asyncio.to_thread(plan)
    if not planned:
        raise HTTPProblem(404, "the files of these instances are missing")
    single = len(planned) == 1 and not any(w.multipart for w in options)
    if not single and not any(w.multipart for w in options):
        raise HTTPProblem(406, "several instances need multipart/related; Accept was single-part")
    response = web.StreamResponse()
    boundary = new_boundary()
    if single:
        response.content_type = "application/dicom"
        response.headers["Content-Type"] = f"application/dicom; transfer-syntax={planned[0].target}"
    else:
        response.headers["Content-Type"] = (
            f'multipart/related; type="application/dicom"; boundary={boundary}'
        )
    decorate(request, response)
    await response.prepare(request)
    try:
        for n, item in enumerate(planned):
            if not single:
                await response.write(
                    part_header(
                        boundary,
                        f"application/dicom; transfer-syntax={item.target}",
                        first=n == 0,
                    )
                )
            if item.target == item.stored:
                async for chunk in read_chunks(item.path):
                    await response.write(chunk)
            else:
                data = await asyncio.to_thread(convert_file, item.path, item.stored, item.target)
                await response.write(data)
        if not single:
            await response.write(closing(boundary))
    except Exception as exc:  # the status is sent: close rather than look complete
        cut_short(request, exc)
        return response
    await response.write_eof()
    log.info("%s: sent %d instance(s)", request.path, len(planned))
    return response


# --- metadata ------------------------------------------------------------------------------------


async def fragments_of(archive: Archive, records: list[InstanceRecord]) -> list[Fragment]:
    """The cached metadata of ``records`` (computed for those missing), in order; 503 when no
    metadata store is configured."""
    store = archive.store
    if store is None:
        raise HTTPProblem(503, "this server has no metadata store")
    pairs = [(r.sop_instance_uid, archive.root / r.path) for r in records]
    found = await asyncio.to_thread(store.get_many, pairs)
    return [f for f in found if f is not None]


async def _metadata(request: web.Request, depth: int) -> web.StreamResponse:
    archive = archive_of(request)
    accept = accept_of(request)
    if accepts(parse_accept(accept), DICOM_JSON, "application/json") is None:
        raise HTTPProblem(406, f"metadata is {DICOM_JSON}; Accept was {accept!r:.200}")
    uids = [path_uid(request, name) for name, _ in _LEVEL_KEYS[:depth]]
    documents = None
    if archive.store is not None:
        await archive.ready()
        documents = await asyncio.to_thread(archive.store.documents, archive.root, *uids)
    if documents is None:  # not the SQLite index: the generic path
        documents = [f.json for f in await fragments_of(archive, await records_of(request, depth))]
    if not documents:
        raise HTTPProblem(404, f"no such {_LEVEL_KEYS[depth - 1][0]} in this archive")
    body = b"[" + b",".join(documents) + b"]"
    return json_response(None, body=with_base(body, base_url(request).encode()))


def _level(function: Callable[[web.Request, int], Awaitable[web.StreamResponse]],
           depth: int) -> Handler:  # fmt: skip
    async def handler(request: web.Request) -> web.StreamResponse:
        return await function(request, depth)

    return handler


def add_routes(app: web.Application, root: str) -> None:
    study = root + "/studies/{study:[^/]+}"
    series = study + "/series/{series:[^/]+}"
    instance = series + "/instances/{instance:[^/]+}"
    add = app.router.add_route
    for depth, path in enumerate((study, series, instance), 1):
        add("GET", path, _level(_retrieve, depth))
        add("GET", path + "/metadata", _level(_metadata, depth))
