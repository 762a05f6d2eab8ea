"""The browser page: served with a strict CSP, values as text only, no inline script."""

from __future__ import annotations

import re
from pathlib import Path

from dicomnet.web.page import CSP
from tests.helpers import make_ct
from tests.web.conftest import Archive, web_client

STATIC = Path(__file__).parents[2] / "src" / "dicomnet" / "web" / "static"


async def test_page_and_its_policy(tmp_path: Path) -> None:
    arc = Archive(tmp_path / "page")
    arc.root.mkdir()
    ds = make_ct(patient_name="<script>alert(1)</script>^<img src=x onerror=alert(2)>")
    ds.StudyDescription = '"><svg onload=alert(3)>'
    arc.add(ds)
    index = arc.index()
    try:
        async with web_client(arc.root, index) as client:
            response = await client.get("/")
            html = await response.text()
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            assert response.headers["Content-Security-Policy"] == CSP
            assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
            assert "frame-ancestors 'none'" in CSP
            # every script is a file of this origin; no inline code or handlers
            assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js" defer>']
            assert "</script>" in html and not re.search(r"<script[^>]*>[^<]+</script>", html)
            assert not re.search(r"\son[a-z]+=", html)
            for name in ("app.js", "app.css"):
                response = await client.get(f"/static/{name}")
                assert response.status == 200
                assert response.headers["Content-Security-Policy"] == CSP
            for name in ("../__init__.py", "index.htm", "app.py", "%2e%2e%2fpage.py"):
                assert (await client.get(f"/static/{name}")).status == 404
            # the stored markup comes back as JSON data, for the page to show as text
            response = await client.get("/dicom-web/studies?includefield=00081030")
            assert response.headers["Content-Type"] == "application/dicom+json"
            [study] = await response.json(content_type=None)
            assert study["00100010"]["Value"][0]["Alphabetic"].startswith("<script>")
    finally:
        index.close()


def test_script_writes_text_never_markup() -> None:
    script = (STATIC / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setAttribute(\"on"):  # fmt: skip
        assert sink not in script, sink
    assert "textContent" in script
