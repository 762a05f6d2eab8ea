"""The browser page at ``/``: a study list with search, a study's series with thumbnails, and an
image view with window/level and frame scrolling, on this server's DICOMweb endpoints.

Rules: no build step and no framework (three static files shipped in the package); every value
from the archive reaches the page as text (``textContent``), never as markup; the page is served
with a strict Content-Security-Policy (scripts, styles, images and connections from this origin
only, no inline script, no framing), so a PatientName of ``<script>`` stays text even if a
future change forgot the rule.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

__all__ = ["CSP", "add_routes"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def _read(name: str) -> bytes:
    return resources.files("dicomnet.web").joinpath("static", name).read_bytes()


def _response(name: str) -> web.Response:
    return web.Response(
        body=_read(name),
        headers={
            "Content-Type": _FILES[name],
            "Content-Security-Policy": CSP,
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


async def _index(request: web.Request) -> web.StreamResponse:
    return _response("index.html")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _FILES or name == "index.html":
        raise web.HTTPNotFound()
    return _response(name)


async def _favicon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)  # no icon; answered so that browsers log no error


def add_routes(app: web.Application, root: str) -> None:
    del root
    app.router.add_route("GET", "/", _index)
    app.router.add_route("GET", "/favicon.ico", _favicon)
    app.router.add_route("GET", "/static/{name}", _static)
