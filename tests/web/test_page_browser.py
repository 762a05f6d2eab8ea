"""The browser page in a real browser: headless Chromium (Debian's ``chromium``), driven over
the DevTools protocol with aiohttp's websocket client (no browser download, no extra package).
Search, a study's thumbnails, one image with a window: every request succeeds, no script error,
the pictures are not blank, and a PatientName of ``<script>`` is shown as text."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from tests.helpers import free_port, make_ct
from tests.web.conftest import Archive, web_client

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


class Page:
    """A minimal DevTools protocol session on one page."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.failures: list[str] = []
        self.responses: list[tuple[int, str]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), 30)
            event = message.get("method")
            if event == "Runtime.exceptionThrown":
                self.failures.append(str(message["params"])[:300])
            elif event == "Network.responseReceived":
                response = message["params"]["response"]
                self.responses.append((response["status"], response["url"]))
            elif event == "Network.loadingFailed":
                self.failures.append(str(message["params"])[:300])
            if message.get("id") == my_id:
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise TimeoutError(expression)

    async def image(self, selector: str) -> Image.Image:
        """What the browser shows of the element: a screenshot clipped to it."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
        )
        shot = await self.call("Page.captureScreenshot", format="png", clip={**box, "scale": 1})
        return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("L")


def _study(root: Path) -> None:
    study = generate_uid()
    for series_number in range(2):
        series = generate_uid()
        for n in range(3):
            ds = make_ct(rows=64, columns=64, study_uid=study, series_uid=series,
                         patient_name="<script>alert(1)</script>^Eve", patient_id="X1")  # fmt: skip
            y, x = np.mgrid[0:64, 0:64]
            ds.PixelData = (
                ((np.sin(x / 5 + n) + np.cos(y / 7)) * 500 + 1000).astype(np.uint16).tobytes()
            )
            ds.InstanceNumber, ds.SeriesNumber = n + 1, series_number + 1
            ds.StudyDescription = "<img src=x onerror=alert(2)>"
            path = root / study / series / f"{ds.SOPInstanceUID}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)


@pytest.mark.slow
async def test_page_in_chromium(tmp_path: Path) -> None:
    arc = Archive(tmp_path / "page")
    arc.root.mkdir()
    _study(arc.root)
    arc.add(make_ct(patient_name="Doe^John", patient_id="P2"))
    index = arc.index()
    port = free_port()
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--remote-debugging-port={port}",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,700", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with web_client(arc.root, index) as server, aiohttp.ClientSession() as session:
            targets: list[dict[str, Any]] = []
            for _ in range(200):  # readiness of the DevTools endpoint, bounded
                try:
                    async with session.get(f"http://127.0.0.1:{port}/json") as response:
                        targets = await response.json()
                    if any(t["type"] == "page" for t in targets):
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            target = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                for domain in ("Runtime", "Network", "Page"):
                    await page.call(f"{domain}.enable")
                await page.call("Page.navigate", url=f"http://127.0.0.1:{server.port}/")
                await page.wait_for("document.querySelectorAll('#studies tbody tr').length === 2")
                names = await page.evaluate(
                    "[...document.querySelectorAll('#studies tbody tr td:first-child')].map(t => t.textContent)"
                )
                assert "<script>alert(1)</script>^Eve" in names
                assert await page.evaluate("document.querySelectorAll('script').length") == 1
                # search
                await page.evaluate(
                    "document.querySelector('[name=PatientName]').value = 'doe';"
                    "document.querySelector('#search button').click()"
                )
                await page.wait_for("document.querySelectorAll('#studies tbody tr').length === 1")
                await page.evaluate(
                    "document.querySelector('[name=PatientName]').value = 'eve';"
                    "document.querySelector('#search button').click()"
                )
                await page.wait_for(
                    "document.querySelector('#studies tbody tr td')?.textContent.includes('Eve')"
                )
                # the study: two series with thumbnails
                await page.evaluate("document.querySelector('#studies tbody tr').click()")
                await page.wait_for(
                    "[...document.querySelectorAll('.series img')].filter(i => i.complete && i.naturalWidth > 0).length === 2"
                )
                thumbnail = np.asarray(await page.image(".series img"))
                assert thumbnail.std() > 10  # not blank
                # one image, windowed, then the next one
                await page.evaluate("document.querySelector('.series').click()")
                await page.wait_for("document.getElementById('image').naturalWidth === 64")
                await page.evaluate(
                    "document.getElementById('center').value = '1000';"
                    "document.getElementById('width').value = '600';"
                    "document.getElementById('width').dispatchEvent(new Event('change'));"
                    "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown'}))"
                )
                await page.wait_for("document.getElementById('image').src.includes('window=1000')")
                await page.wait_for("document.getElementById('image').complete")
                picture = np.asarray(await page.image("#image"))
                assert picture.std() > 10
                assert (
                    await page.evaluate("document.getElementById('position-text').textContent")
                    == "2 / 3"
                )
                await page.evaluate("1")
                bad = [(status, url) for status, url in page.responses if status >= 400]
                assert bad == [] and page.failures == []
                assert len(page.responses) >= 8
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(5)
        index.close()
