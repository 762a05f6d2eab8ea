"""The web pages in a real browser: Debian's headless chromium driven by playwright (its
``executable_path``, never a browser download), against ``dicomnet serve --viewer ohif`` in a
subprocess, on a folder indexed by ``dicomnet index``.

- The OHIF viewer (``make ohif``) at ``/viewer``: the study list shows the archive's studies, a
  CT series opens, every request succeeds, the image is not blank.
- The built-in page at ``/``: search, a study's series with thumbnails, one image with a
  window, frame scrolling; every request succeeds, no script error, and a PatientName of
  ``<script>`` is shown as text.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from tests.helpers import (
    CHROMIUM_ARGS,
    free_port,
    make_ct,
    require_chromium,
    require_ohif,
    wait_for_port,
)

pytest.importorskip("aiohttp")
pytestmark = [pytest.mark.slow, pytest.mark.interop]

#: Seconds a page may take to show something (OHIF's 17 MB bundle on a loaded 2-core machine).
TIMEOUT = 120.0
CT_SLICES = 12


@dataclass
class Data:
    root: Path
    ct_study: str = ""
    ct_series: str = ""
    xss_study: str = ""
    studies: list[str] = field(default_factory=list)


def _save(root: Path, ds: Any) -> None:
    path = root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_archive(root: Path) -> Data:
    """A CT series with geometry (a disc phantom in Hounsfield units), a study whose names are
    markup, and a third study."""
    data = Data(root)
    data.ct_study, data.ct_series = generate_uid(), generate_uid()
    y, x = np.mgrid[0:128, 0:128]
    for n in range(CT_SLICES):
        ds = make_ct(128, 128, study_uid=data.ct_study, series_uid=data.ct_series,
                     patient_name="Phantom^Disc", patient_id="PH1")  # fmt: skip
        radius = 30 + 2 * n
        disc = (x - 64) ** 2 + (y - 64) ** 2 < radius**2
        ds.PixelData = np.where(disc, 1024 + 400, 1024 - 1000).astype(np.uint16).tobytes()
        ds.InstanceNumber, ds.SeriesNumber = n + 1, 1
        ds.ImagePositionPatient = [-45.0, -45.0, 2.0 * n]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 2.0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 0, 1000
        ds.StudyDescription, ds.SeriesDescription = "Phantom", "axial"
        _save(root, ds)
    data.xss_study = generate_uid()
    for series_number in range(2):
        series = generate_uid()
        for n in range(3):
            ds = make_ct(rows=64, columns=64, study_uid=data.xss_study, series_uid=series,
                         patient_name="<script>alert(1)</script>^Eve", patient_id="X1")  # fmt: skip
            yy, xx = np.mgrid[0:64, 0:64]
            ds.PixelData = (
                ((np.sin(xx / 5 + n) + np.cos(yy / 7)) * 500 + 1000).astype(np.uint16).tobytes()
            )
            ds.InstanceNumber, ds.SeriesNumber = n + 1, series_number + 1
            ds.StudyDescription = "<img src=x onerror=alert(2)>"
            _save(root, ds)
    other = make_ct(patient_name="Doe^John", patient_id="P2")
    _save(root, other)
    data.studies = [data.ct_study, data.xss_study, other.StudyInstanceUID]
    return data


class Server:
    """``dicomnet serve`` on the archive's folder (indexed first by ``dicomnet index``, which
    computes the metadata fragments), DICOMweb on a free port, in a subprocess stopped by PID."""

    def __init__(self, root: Path, *args: str) -> None:
        dicomnet = [sys.executable, "-m", "dicomnet"]
        indexed = subprocess.run([*dicomnet, "index", str(root)], capture_output=True, text=True,
                                 timeout=120, check=False)  # fmt: skip
        assert indexed.returncode == 0, indexed.stderr
        assert "DICOMweb metadata of" in indexed.stdout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root.parent / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115
        dicom_port = free_port()
        self.proc = subprocess.Popen(
            [*dicomnet, "serve", "--storage", str(root), "--port", str(dicom_port),
             "--http-port", str(self.port), "--no-fsync", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(dicom_port, self.proc, timeout=30)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return make_archive(tmp_path_factory.mktemp("browser") / "store")


@pytest.fixture(scope="module")
def server(archive: Data) -> Iterator[Server]:
    require_chromium()  # before the server: a skip costs nothing
    args = ["--viewer", "ohif", "--viewer-dir", str(require_ohif())] if _ohif_available() else []
    web = Server(archive.root, *args)
    yield web
    web.stop()


def _ohif_available() -> bool:
    try:
        require_ohif()
    except BaseException:  # skipped or failed: only the OHIF test reports it
        return False
    return True


class Watch:
    """Everything a page did that went wrong: HTTP errors, failed requests, script errors,
    dialogs (an injected ``alert``)."""

    def __init__(self, page: Any, origin: str) -> None:
        self.origin = origin
        self.responses: list[tuple[int, str]] = []
        self.failures: list[str] = []
        page.on("response", lambda r: self.responses.append((r.status, r.url)))
        page.on("requestfailed", lambda r: self.failures.append(f"{r.url}: {r.failure}"))
        page.on("pageerror", lambda e: self.failures.append(f"script error: {e}"))
        page.on("dialog", lambda d: self.failures.append(f"dialog: {d.message}"))

    def bad(self) -> list[str]:
        return self.failures + [f"{s} {u}" for s, u in self.responses if s >= 400]

    def ours(self, part: str) -> list[str]:
        return [u for _, u in self.responses if u.startswith(self.origin) and part in u]


@asynccontextmanager
async def browser_page(origin: str) -> AsyncIterator[tuple[Any, Watch]]:
    from playwright.async_api import async_playwright

    chromium = require_chromium()
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT * 1000
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(TIMEOUT * 1000)
            yield page, Watch(page, origin)
        finally:
            await browser.close()


async def until(page: Any, expression: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``expression`` in the page until it is truthy (bounded). Playwright's
    ``wait_for_function`` compiles its predicate with ``eval``, which the built-in page's
    Content-Security-Policy rightly forbids; ``evaluate`` goes through the DevTools protocol."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(expression)
        await asyncio.sleep(0.1)


async def picture(locator: Any) -> np.ndarray[Any, Any]:
    """What the browser shows of the element, in grey levels."""
    shot = await locator.screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L"))


async def test_ohif_shows_the_studies_and_opens_a_ct_series(server: Server, archive: Data) -> None:
    require_ohif()
    async with browser_page(server.url) as (page, watch):
        await page.goto(f"{server.url}/viewer/")
        count = len(archive.studies)
        await page.get_by_text(f"1-{count} of {count}").wait_for()
        rows = page.locator("table tbody tr").filter(has_text="CT")  # not the filter row
        assert await rows.count() == count
        listed = "\n".join(await rows.all_inner_texts())
        assert "Phantom, Disc" in listed and "Doe, John" in listed
        assert "<script>alert(1)</script>" in listed  # shown as text
        # open the CT study from the list, as a user does
        await rows.filter(has_text="Phantom").click()
        await page.get_by_role("button", name="Basic Viewer").click()
        await page.wait_for_url(f"**/viewer/viewer?*StudyInstanceUIDs={archive.ct_study}*")
        canvas = page.locator(".cornerstone-viewport-element canvas, canvas").first
        await canvas.wait_for(state="visible")
        # every slice of the series is fetched, one frames request per instance
        await page.wait_for_function(
            f"performance.getEntriesByType('resource').filter(e => e.name.includes("
            f"'/series/{archive.ct_series}/instances/') && e.name.includes('/frames/1'))"
            f".length >= {CT_SLICES}"
        )
        assert watch.ours(f"/studies/{archive.ct_study}/series/{archive.ct_series}/metadata")
        frames = watch.ours("/frames/")
        assert len({u.split("/instances/")[1].split("/")[0] for u in frames}) == CT_SLICES
        await page.wait_for_function(  # the viewport has drawn (its overlay shows the slice)
            "document.body.innerText.includes('axial')"
        )
        image = await picture(canvas)
        assert image.std() > 20, "the viewport is blank"
        assert (image > 200).mean() > 0.05 and (image < 50).mean() > 0.05  # disc and background
        assert watch.bad() == []
        assert len(watch.ours("/dicom-web/")) >= CT_SLICES + 3


async def test_page_search_thumbnails_and_one_image(server: Server, archive: Data) -> None:
    async with browser_page(server.url) as (page, watch):
        await page.goto(f"{server.url}/")
        await until(
            page,
            f"document.querySelectorAll('#studies tbody tr').length === {len(archive.studies)}",
        )
        names = await page.locator("#studies tbody tr td:first-child").all_inner_texts()
        assert "<script>alert(1)</script>^Eve" in names
        assert await page.locator("script").count() == 1  # nothing injected
        # search
        await page.fill("[name=PatientName]", "doe")
        await page.click("#search button")
        await until(page, "document.querySelectorAll('#studies tbody tr').length === 1")
        await page.fill("[name=PatientName]", "eve")
        await page.click("#search button")
        await until(
            page, "document.querySelector('#studies tbody tr td')?.textContent.includes('Eve')"
        )
        # the study: two series with thumbnails
        await page.click("#studies tbody tr")
        await until(
            page,
            "[...document.querySelectorAll('.series img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length === 2",
        )
        assert (await picture(page.locator(".series img").first)).std() > 10
        # one image, windowed, then the next one
        await page.click(".series")
        await until(page, "document.getElementById('image').naturalWidth === 64")
        # both values, then one change event (fill would also fire #center's on its blur,
        # and the browser would abort that first image for the second)
        await page.evaluate(
            "document.getElementById('center').value = '1000';"
            "document.getElementById('width').value = '600'"
        )
        await page.dispatch_event("#width", "change")
        shown = (
            "document.getElementById('image').src.includes('window=1000')"
            " && document.getElementById('image').complete"
        )
        await until(page, shown)  # the windowed image, loaded before the next one is asked
        first = await page.get_attribute("#image", "src")
        await page.keyboard.press("ArrowDown")
        await until(page, "document.getElementById('position-text').textContent === '2 / 3'")
        await until(page, f"document.getElementById('image').src !== {first!r} && {shown}")
        assert (await picture(page.locator("#image"))).std() > 10
        assert watch.bad() == []
        assert len(watch.responses) >= 8
