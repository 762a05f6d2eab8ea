"""What every DICOMweb handler shares: the archive it serves, HTTP errors, path UIDs, the
public base URL, query strings, and JSON answers.

Rules: a path segment is used only once ``uids.is_valid_uid`` accepts it (ASCII digits and dots,
no leading zeros, at most 64 characters), so no file name or SQL ever sees request text; file
paths come from the index only. The base URL of RetrieveURL and BulkDataURI comes from the
configured public URL, else from a Host header that is a plain host[:port] (and in
``allowed_hosts`` when that is set), else from the listening socket: Forwarded and
X-Forwarded-* are ignored, so a request cannot plant its own URL in an answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from dicomnet.archive.index import Index, InstanceRecord
from dicomnet.archive.metadata import MetadataStore, dumps
from dicomnet.archive.storage import DEFAULT_LAYOUT
from dicomnet.uids import is_valid_uid
from dicomnet.web.config import WebConfig
from dicomnet.web.media import DICOM_JSON

log = logging.getLogger("dicomnet.web")

__all__ = [
    "ARCHIVE",
    "Archive",
    "HTTPProblem",
    "base_url",
    "cut_short",
    "decorate",
    "json_response",
    "path_uid",
    "query_pairs",
]


class HTTPProblem(Exception):
    """An answer other than success: status and a short plain-text reason (logged)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass(slots=True)
class Archive:
    """The archive a DICOMweb application serves: the storage folder, its index and metadata
    cache, and (optionally) the index writer shared with the DICOM storage service."""

    root: Path
    index: Index
    store: MetadataStore | None
    config: WebConfig
    layout: str = DEFAULT_LAYOUT
    writer: Any = None  # services.storage.IndexWriter (not imported: web must not need services)
    #: rendered thumbnails (an LRU kept by ``render``) and the renders allowed at once
    render_cache: OrderedDict[Any, bytes] = field(default_factory=OrderedDict)
    render_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    async def ready(self) -> None:
        """Make rows queued by the writer visible before reading the index."""
        if self.writer is not None:
            await self.writer.aflush()

    async def records(self, level: str, query: dict[str, tuple[str, str]]) -> list[InstanceRecord]:
        """Every instance under the entity ``query`` names (a retrieve), in index order."""
        await self.ready()
        return await asyncio.to_thread(
            lambda: list(self.index.instances(level, query, model="STUDY", relational=True))
        )


ARCHIVE: web.AppKey[Archive] = web.AppKey("dicomnet_archive", Archive)


def archive_of(request: web.Request) -> Archive:
    return request.app[ARCHIVE]


def path_uid(request: web.Request, name: str) -> str:
    """The UID in path segment ``name``; 400 if it is not a valid UID."""
    value = request.match_info.get(name, "")
    if not is_valid_uid(value):
        raise HTTPProblem(400, f"{name}: {value[:80]!r} is not a valid UID")
    return value


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def query_pairs(request: web.Request) -> list[tuple[str, str]]:
    """The query parameters, percent-decoded once (``+`` is a space, as forms send it);
    400 for a malformed escape or text that is not UTF-8."""
    raw = request.rel_url.raw_query_string
    if not raw:
        return []
    if _BAD_PERCENT.search(raw):
        raise HTTPProblem(400, "the query string has a malformed percent escape")
    try:
        pairs = urllib.parse.parse_qsl(
            raw, keep_blank_values=True, errors="strict", max_num_fields=1000
        )
    except UnicodeDecodeError:
        raise HTTPProblem(400, "the query string is not UTF-8") from None
    except ValueError as exc:
        raise HTTPProblem(400, f"query string: {exc}") from None
    return pairs


def single_parameter(pairs: list[tuple[str, str]], name: str) -> str | None:
    """A parameter that may appear at most once (400 otherwise)."""
    values = [v for k, v in pairs if k == name]
    if len(values) > 1:
        raise HTTPProblem(400, f"{name} is given more than once")
    return values[0] if values else None


_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")  # fmt: skip


def base_url(request: web.Request) -> str:
    """The DICOMweb root URL for RetrieveURL and BulkDataURI (no trailing slash)."""
    config = request.app[ARCHIVE].config
    if config.public_url:
        return config.public_url + "/dicom-web"
    host = request.headers.get("Host", "")
    ok = bool(_HOST_RE.match(host)) and len(host) <= 255
    if ok and config.allowed_hosts:
        ok = host.lower() in config.allowed_hosts or host.lower().rsplit(":", 1)[0] in (
            config.allowed_hosts
        )
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    local = None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        address, port = str(sockname[0]), int(sockname[1])
        local = (address, f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    if ok and local is not None and host.strip("[]") == local[0]:
        # The listening address without its port (dicomweb-client sends ``Host: 127.0.0.1``
        # for http://127.0.0.1:8042): the client connected directly, so the port is ours.
        host = local[1]
    if not ok:
        host = local[1] if local is not None else f"{config.host}:{config.port}"
    scheme = "https" if request.secure else "http"
    return f"{scheme}://{host}/dicom-web"


def json_response(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None,
                  body: bytes | None = None) -> web.Response:  # fmt: skip
    """``application/dicom+json`` exactly (no charset suffix: some clients compare the whole
    value)."""
    data = body if body is not None else dumps(payload)
    all_headers = {"Content-Type": DICOM_JSON}
    if headers:
        all_headers.update(headers)
    return web.Response(body=data, status=status, headers=all_headers)


def warning_header(texts: list[str]) -> dict[str, str]:
    """A ``Warning: 299`` header (PS3.18 §8.4.3) for ``texts`` (ASCII, no quotes or breaks)."""
    if not texts:
        return {}
    clean = [re.sub(r'[^ -~]|["\\]', "?", t)[:500] for t in texts]
    return {"Warning": ", ".join(f'299 dicomnet "{t}"' for t in clean)}


def decorate(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer carries (call before ``prepare`` on a streamed answer)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = request.app[ARCHIVE].config.cors_origins
    if "*" in allowed:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin.rstrip("/") in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    else:
        return
    response.headers["Access-Control-Expose-Headers"] = "Warning, Content-Location, Content-Type"


def cut_short(request: web.Request, error: BaseException) -> None:
    """An error after the status line was sent: too late for a status, so the connection is
    closed and the client sees an incomplete answer (never a truncated one that looks whole)."""
    log.warning("%s %s: answer cut short: %s: %s", request.method, request.path[:200],
                type(error).__name__, error)  # fmt: skip
    if request.transport is not None:
        request.transport.close()
