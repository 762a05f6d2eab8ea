"""The prebuilt viewer at ``/viewer`` (web.viewer) on a small stand-in of OHIF's ``dist``
folder: the root the build names is rewritten to ``/viewer/`` where OHIF writes it (index.html,
webpack's public path, style sheets), ``app-config.js`` is ours and points at ``/dicom-web``,
client-side routes get index.html, missing files are 404, nothing outside the folder is served,
and the settings that turn it on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dicomnet.web import WebConfig, create_app
from dicomnet.web.config import DEFAULT_OHIF_DIR
from tests.web.conftest import Archive, raw_url, web_client

INDEX = (
    b'<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
    b'<script src="/app-config.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    b'<a href="//cdn.example/x">x</a><script defer src="/app.bundle.1.js"></script></head>'
    b'<body><div id="root"></div></body></html>'
)
BUNDLE = b'(()=>{var __webpack_require__={};\n__webpack_require__.p = "/";\nload("x.js")})();'
CSS = b"@font-face{src:url(/a1.woff2)}body{background:url(//cdn.example/b.png)}"
WASM = b"\x00asm\x01\x00\x00\x00"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_bytes(INDEX)
    (folder / "app.bundle.1.js").write_bytes(BUNDLE)
    (folder / "app.bundle.css").write_bytes(CSS)
    (folder / "plain.js").write_bytes(b"console.log('/')")
    (folder / "0ddf.wasm").write_bytes(WASM)
    (folder / "assets" / "icon.png").write_bytes(b"\x89PNG fake")
    (folder / "app-config.js").write_bytes(b"window.config = {dataSources: 'theirs'}")
    (tmp_path / "secret.txt").write_text("outside the viewer folder")
    os.symlink(tmp_path / "secret.txt", folder / "link.txt")
    return folder


@pytest.fixture
def viewer_client(archive: Archive, dist: Path) -> Any:
    index = archive.index()
    client = web_client(archive.root, index, WebConfig(viewer_dir=str(dist)))
    yield client
    index.close()


async def test_index_and_bundles_are_rewritten_to_the_prefix(viewer_client: Any) -> None:
    async with viewer_client as client:
        response = await client.get("/viewer", allow_redirects=False)
        assert response.status == 301 and response.headers["Location"] == "/viewer/"
        response = await client.get("/viewer/")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        body = await response.read()
        assert b'window.PUBLIC_URL="/viewer/"' in body
        assert b'src="/viewer/app-config.js"' in body
        assert b'href="/viewer/app.bundle.css"' in body
        assert b'src="/viewer/app.bundle.1.js"' in body
        assert b'href="//cdn.example/x"' in body  # a scheme-relative URL is not ours
        response = await client.get("/viewer/app.bundle.1.js")
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert await response.read() == BUNDLE.replace(b'p = "/"', b'p = "/viewer/"')
        tag = response.headers["ETag"]  # revalidation of a rewritten file: 304, no body
        again = await client.get("/viewer/app.bundle.1.js", headers={"If-None-Match": tag})
        assert again.status == 304 and await again.read() == b""
        response = await client.get("/viewer/app.bundle.css")
        assert await response.read() == CSS.replace(b"url(/a1", b"url(/viewer/a1")
        for _ in range(2):  # from the file, then from what was learnt about it
            response = await client.get("/viewer/plain.js")
            assert await response.read() == b"console.log('/')"
        response = await client.get("/viewer/0ddf.wasm")
        assert response.headers["Content-Type"] == "application/wasm"
        assert await response.read() == WASM
        response = await client.get("/viewer/assets/icon.png")
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]


async def test_app_config_points_at_this_server(viewer_client: Any) -> None:
    async with viewer_client as client:
        response = await client.get("/viewer/app-config.js")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        text = await response.text()
        assert "theirs" not in text
        assert "routerBasename: '/viewer'" in text
        assert "qidoRoot: origin + '/dicom-web'" in text
        assert "wadoRoot: origin + '/dicom-web'" in text
        assert "wadoUriRoot: origin + '/wado'" in text
        assert "var origin = window.location.origin" in text  # same origin, whatever the host


async def test_routes_of_the_application_and_missing_files(viewer_client: Any) -> None:
    async with viewer_client as client:
        for route in ("/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/viewer/dicomweb"):
            response = await client.get(route)
            assert response.status == 200, route
            assert b'window.PUBLIC_URL="/viewer/"' in await response.read()
        for missing in ("/viewer/9999.bundle.js", "/viewer/assets/nothing.png"):
            assert (await client.get(missing)).status == 404, missing


@pytest.mark.parametrize(
    "path",
    [
        "/viewer/..%2Fsecret.txt",
        "/viewer/%2e%2e/secret.txt",
        "/viewer/assets/..%2F..%2Fsecret.txt",
        "/viewer/link.txt",
        "/viewer/%2Fetc%2Fpasswd",
        "/viewer/assets%5C..%5C..%5Csecret.txt",
        "/viewer/x%00.js",
    ],
)
async def test_nothing_outside_the_folder(viewer_client: Any, path: str) -> None:
    async with viewer_client as client:
        response = await client.session.get(raw_url(client, path))
        body = await response.read()
        assert b"outside the viewer folder" not in body and b"root:" not in body
        assert response.status in (200, 400, 404)
        if response.status == 200:  # a client-side route: the application's page
            assert body.startswith(b"<!doctype html>")


async def test_no_viewer_unless_configured(archive: Archive) -> None:
    index = archive.index()
    try:
        async with web_client(archive.root, index) as client:
            assert (await client.get("/viewer/")).status == 404
            assert (await client.get("/viewer/app-config.js")).status == 404
    finally:
        index.close()


def test_settings(tmp_path: Path) -> None:
    assert WebConfig(viewer="ohif").viewer_dir == DEFAULT_OHIF_DIR == "ohif/dist"
    assert WebConfig(viewer_dir=str(tmp_path)).viewer == "ohif"
    assert WebConfig(viewer="none").viewer is None
    config = WebConfig.from_mapping({"viewer": "ohif", "viewer-dir": str(tmp_path)})
    assert config.viewer_dir == str(tmp_path)
    with pytest.raises(ValueError, match="viewer 'orthanc'"):
        WebConfig(viewer="orthanc")
    with pytest.raises(ValueError, match="make ohif"):
        create_app(WebConfig(viewer_dir=str(tmp_path)), tmp_path, None)  # type: ignore[arg-type]
