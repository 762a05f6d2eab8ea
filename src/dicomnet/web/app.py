"""The DICOMweb application: routes, answers to errors, CORS, and a server that runs it on an
existing event loop (beside ``DicomServer``).

Rules: the DICOMweb root is ``/dicom-web`` (as Orthanc's), WADO-URI is ``/wado``, the page is
``/``, a prebuilt viewer (OHIF) ``/viewer`` when configured. Every failure is an HTTP status with a plain-text reason and a log line, never a
traceback to the client; an unexpected exception is a 500 with its reason logged. CORS headers
are sent only to origins listed in the configuration (``*`` allows any origin, without
credentials); every answer carries ``X-Content-Type-Options: nosniff``. The server shares the
caller's event loop and installs no signal handlers; it may listen on a socket the caller
bound (``sock``), as ``dicomnet serve --workers`` shares its DICOM socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from dicomnet.archive.index import Index
from dicomnet.archive.metadata import MetadataStore
from dicomnet.archive.storage import DEFAULT_LAYOUT
from dicomnet.web import frames, page, render, stow, viewer, wado, wado_uri
from dicomnet.web.common import (
    ARCHIVE,
    Archive,
    HTTPProblem,
    archive_of,
    base_url,
    decorate,
    json_response,
    path_uid,
    query_pairs,
    warning_header,
)
from dicomnet.web.config import WebConfig
from dicomnet.web.media import DICOM_JSON, accepts, parse_accept
from dicomnet.web.qido import QidoError, parse_search, run_search

__all__ = ["WebServer", "create_app"]

log = logging.getLogger("dicomnet.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UID = r"{%s:[^/]+}"
ROOT = "/dicom-web"


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.method == "OPTIONS" and not isinstance(
            request.match_info.http_exception, web.HTTPNotFound
        ):
            handler = _options
        response = await handler(request)
    except HTTPProblem as problem:
        level = logging.WARNING if problem.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d: %s", request.method, request.path_qs[:200],
                problem.status, problem.reason)  # fmt: skip
        response = web.Response(
            status=problem.status, text=problem.reason + "\n", headers=problem.headers
        )
    except web.HTTPException as exc:  # aiohttp's own: 404 no route, 405, 413 from its parser
        log.info("%s %s -> %d", request.method, request.path_qs[:200], exc.status)
        response = web.Response(status=exc.status, text=exc.reason + "\n", headers=exc.headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("%s %s -> 500", request.method, request.path_qs[:200])
        response = web.Response(status=500, text="internal error (logged by the server)\n")
    if not response.prepared:
        decorate(request, response)
    return response


async def _options(request: web.Request) -> web.StreamResponse:
    """OPTIONS: the methods of the resource; a CORS preflight from an allowed origin gets the
    Access-Control-Allow-* answers (PS3.18 §8.9; Fetch standard CORS protocol)."""
    response = web.Response(status=204)
    response.headers["Allow"] = "GET, HEAD, POST, OPTIONS"
    decorate(request, response)
    if "Access-Control-Allow-Origin" in response.headers:
        response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, OPTIONS"
        asked = request.headers.get("Access-Control-Request-Headers", "")
        allowed = "Accept, Authorization, Content-Type, Range"
        if asked and all(t.strip().replace("-", "").isalnum() for t in asked.split(",")):
            allowed = asked
        response.headers["Access-Control-Allow-Headers"] = allowed
        response.headers["Access-Control-Max-Age"] = "600"
    return response


# --- QIDO-RS -------------------------------------------------------------------------------------


def _search(level: int, relational: bool, uid_names: tuple[str, ...] = ()) -> Handler:
    keywords = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}

    async def handler(request: web.Request) -> web.StreamResponse:
        archive = archive_of(request)
        pairs = query_pairs(request)
        accept = next((v for k, v in pairs if k == "accept"), request.headers.get("Accept"))
        pairs = [(k, v) for k, v in pairs if k != "accept"]
        if accepts(parse_accept(accept), DICOM_JSON, "application/json") is None:
            raise HTTPProblem(406, f"QIDO-RS answers {DICOM_JSON}; Accept was {accept!r:.200}")
        path_uids = {keywords[name]: path_uid(request, name) for name in uid_names}
        config = archive.config
        try:
            search = parse_search(
                level,
                relational,
                path_uids,
                pairs,
                default_limit=config.qido_default_limit,
                max_limit=config.qido_max_limit,
            )
        except QidoError as exc:
            raise HTTPProblem(400, str(exc)) from None
        await archive.ready()
        base = base_url(request)
        try:
            results, more = await asyncio.to_thread(
                run_search, search, archive.index, archive.store, archive.root, base
            )
        except QidoError as exc:
            raise HTTPProblem(400, str(exc)) from None
        warnings = list(search.warnings)
        if more:
            warnings.append("There are additional results that can be requested")
        return json_response(results, headers=warning_header(warnings))

    return handler


def create_app(
    config: WebConfig,
    storage: str | Path,
    index: Index,
    *,
    store: MetadataStore | None = None,
    writer: Any = None,
    layout: str = DEFAULT_LAYOUT,
) -> web.Application:
    """The DICOMweb application over the archive in ``storage`` with ``index``.

    ``store`` is the metadata cache (default: one on the index's SQLite file, closed with the
    application); ``writer`` the ``services.storage.IndexWriter`` shared with the DICOM storage
    service (STOW writes its rows through it, and searches flush it first); without one, STOW
    writes rows directly. With ``config.viewer_dir`` a prebuilt viewer is served at
    ``/viewer`` (ValueError when the folder holds none).
    """
    owns_store = False
    if store is None:
        path = getattr(index, "path", None)
        if path is not None and path != ":memory:":
            store = MetadataStore(path)
            owns_store = True
    archive = Archive(Path(storage), index, store, config, layout=layout, writer=writer)
    app = web.Application(middlewares=[_problems], client_max_size=1 << 20)
    app[ARCHIVE] = archive
    add = app.router.add_route
    add("GET", f"{ROOT}/studies", _search(1, False))
    add("GET", f"{ROOT}/studies/{_UID % 'study'}/series", _search(2, False, ("study",)))
    add(
        "GET",
        f"{ROOT}/studies/{_UID % 'study'}/series/{_UID % 'series'}/instances",
        _search(3, False, ("study", "series")),
    )
    add("GET", f"{ROOT}/studies/{_UID % 'study'}/instances", _search(3, True, ("study",)))
    add("GET", f"{ROOT}/series", _search(2, True))
    add("GET", f"{ROOT}/instances", _search(3, True))
    for module in (wado, frames, render, stow, wado_uri, page):
        module.add_routes(app, ROOT)
    if config.viewer_dir is not None:
        viewer.add_routes(app, config.viewer_dir)

    async def close_store(_app: web.Application) -> None:
        if owns_store and store is not None:
            store.close()

    app.on_cleanup.append(close_store)
    return app


class WebServer:
    """Runs a DICOMweb application on the running event loop: ``await start()``, then
    ``await close()``. ``sock``: listen on this bound socket instead of ``host``/``port``."""

    def __init__(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        port: int = 8042,
        *,
        sock: socket.socket | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._sock = sock
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=shutdown_timeout, access_log=None
        )

    async def start(self) -> None:
        await self._runner.setup()
        site: web.BaseSite
        if self._sock is not None:
            site = web.SockSite(self._runner, self._sock)
        else:
            site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked)."""
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        return self._port

    async def close(self) -> None:
        """Stop listening, let running requests finish (up to ``shutdown_timeout``), then run
        the application's cleanup (the metadata store it opened is closed)."""
        await self._runner.cleanup()

    async def __aenter__(self) -> WebServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
