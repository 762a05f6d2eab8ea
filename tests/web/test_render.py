"""Rendered and thumbnail resources, WADO-URI, and the HTTP behaviour around them (OPTIONS,
CORS, headers)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnet.web import WebConfig
from tests.helpers import make_ct
from tests.web.conftest import Archive, raw_url, web_client

ROOT = "/dicom-web"


@pytest.fixture
def images(tmp_path: Path) -> Archive:
    arc = Archive(tmp_path / "images")
    arc.root.mkdir()
    ct = make_ct(rows=64, columns=48)
    ct.RescaleSlope, ct.RescaleIntercept = 1, -1024
    ct.WindowCenter, ct.WindowWidth = 40, 400
    arc.add(ct)
    arc.add(make_ct(frames=3, rows=16, columns=16, study_uid=ct.StudyInstanceUID))
    for name in ("JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "test-SR.dcm", "MR_small_bigendian.dcm"):
        arc.add(dcmread(get_testdata_file(name)))
    arc.ct = ct  # type: ignore[attr-defined]
    return arc


def url_of(ds: Any) -> str:
    return f"{ROOT}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def by_name(arc: Archive, sop_class: str) -> Any:
    return next(d for d in arc.datasets.values() if d.SOPClassUID == sop_class)


async def image(client: Any, url: str, status: int = 200, **kwargs: Any) -> Any:
    fetch = client.session.get if str(url).startswith("http") else client.get
    response = await fetch(url, **kwargs)
    body = await response.read()
    assert response.status == status, body[:300]
    if status != 200:
        return None
    picture = Image.open(io.BytesIO(body))
    assert response.headers["Content-Type"] == f"image/{picture.format.lower()}"
    return picture


async def test_rendered_instances(images: Archive) -> None:
    index = images.index()
    ct = images.ct  # type: ignore[attr-defined]
    try:
        async with web_client(images.root, index) as client:
            picture = await image(client, url_of(ct) + "/rendered")
            assert picture.format == "JPEG" and picture.size == (48, 64) and picture.mode == "L"
            png = await image(client, url_of(ct) + "/rendered", headers={"Accept": "image/png"})
            assert png.format == "PNG"
            png = await image(client, url_of(ct) + "/rendered?accept=image/png")
            assert png.format == "PNG"
            small = await image(client, url_of(ct) + "/rendered?viewport=24,24")
            assert max(small.size) <= 24
            # a window changes the picture: a narrow one saturates more pixels
            wide = np.asarray(
                await image(client, url_of(ct) + "/rendered?window=0,100000&accept=image/png")
            )
            narrow = np.asarray(
                await image(client, url_of(ct) + "/rendered?window=-900,20&accept=image/png")
            )
            assert (narrow == 255).sum() > (wide == 255).sum()
            # frames
            multi = next(
                d for d in images.datasets.values() if int(d.get("NumberOfFrames", 1)) == 3
            )
            assert (await image(client, url_of(multi) + "/frames/2/rendered")).size == (16, 16)
            await image(client, url_of(multi) + "/frames/4/rendered", status=404)
            await image(client, url_of(multi) + "/frames/0/rendered", status=400)
            # compressed and colour sources
            for sop_class in ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.4"):
                ds = by_name(images, sop_class)
                assert (await image(client, url_of(ds) + "/rendered")).format == "JPEG"
            rgb = next(
                d
                for d in images.datasets.values()
                if d.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
            )
            assert (await image(client, url_of(rgb) + "/frames/2/rendered")).mode == "RGB"
            jp2 = next(
                d
                for d in images.datasets.values()
                if d.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
            )
            response = await client.get(url_of(jp2) + "/rendered")
            assert response.status in (200, 406)  # 406 only when no JPEG 2000 decoder is installed
            # no pixel data
            sr = by_name(images, "1.2.840.10008.5.1.4.1.1.88.33")
            await image(client, url_of(sr) + "/rendered", status=404)
    finally:
        index.close()


async def test_thumbnails(images: Archive) -> None:
    index = images.index()
    ct = images.ct  # type: ignore[attr-defined]
    try:
        async with web_client(images.root, index) as client:
            series = f"{ROOT}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
            assert max((await image(client, series + "/thumbnail")).size) <= 128
            picture = await image(client, series + "/thumbnail?viewport=32,32")  # OHIF's form
            assert max(picture.size) <= 32
            assert await image(client, f"{ROOT}/studies/{ct.StudyInstanceUID}/thumbnail")
            assert await image(client, url_of(ct) + "/thumbnail")
            assert await image(client, series + "/rendered")
            again = await client.get(series + "/thumbnail?viewport=32,32")  # from the cache
            assert again.status == 200
    finally:
        index.close()


@pytest.mark.parametrize(
    "query,status",
    [
        ("viewport=100000,100000", 400),
        ("viewport=0,10", 400),
        ("viewport=abc", 400),
        ("quality=1000", 400),
        ("quality=0", 400),
        ("window=a,b", 400),
        ("window=10,-5", 400),
        ("window=10,5,cubic", 400),
        ("accept=image/gif", 406),
        ("viewport=10,10&viewport=20,20", 400),
    ],
)
async def test_bad_render_parameters(images: Archive, query: str, status: int) -> None:
    index = images.index()
    ct = images.ct  # type: ignore[attr-defined]
    try:
        async with web_client(images.root, index) as client:
            await image(client, raw_url(client, url_of(ct) + f"/rendered?{query}"), status=status)
    finally:
        index.close()


async def test_huge_images_are_refused(images: Archive) -> None:
    index = images.index()
    ct = images.ct  # type: ignore[attr-defined]
    try:
        async with web_client(images.root, index, WebConfig(max_render_pixels=1000)) as client:
            await image(client, url_of(ct) + "/rendered", status=413)
            assert (await client.get(f"{ROOT}/studies")).status == 200  # still serving
    finally:
        index.close()


async def test_wado_uri(images: Archive) -> None:
    index = images.index()
    ct = images.ct  # type: ignore[attr-defined]
    uids = f"studyUID={ct.StudyInstanceUID}&seriesUID={ct.SeriesInstanceUID}&objectUID={ct.SOPInstanceUID}"
    try:
        async with web_client(images.root, index) as client:
            picture = await image(client, f"/wado?requestType=WADO&{uids}")
            assert picture.format == "JPEG"
            picture = await image(
                client, f"/wado?requestType=WADO&{uids}&contentType=image/png&rows=20"
            )
            assert picture.format == "PNG" and picture.size[1] <= 20
            await image(client, f"/wado?requestType=WADO&{uids}&windowCenter=40&windowWidth=400")
            # percent-encoded content type (the form cornerstone's documentation uses)
            response = await client.session.get(
                raw_url(client, f"/wado?requestType=WADO&{uids}&contentType=application%2Fdicom")
            )
            assert (
                response.status == 200 and response.headers["Content-Type"] == "application/dicom"
            )
            got = dcmread(io.BytesIO(await response.read()))
            assert got.SOPInstanceUID == ct.SOPInstanceUID and got.PixelData == ct.PixelData
            jp2 = next(
                d
                for d in images.datasets.values()
                if d.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
            )
            jp2_uids = f"studyUID={jp2.StudyInstanceUID}&seriesUID={jp2.SeriesInstanceUID}&objectUID={jp2.SOPInstanceUID}"
            response = await client.get(
                f"/wado?requestType=WADO&{jp2_uids}&contentType=application/dicom&transferSyntax=*"
            )
            assert await response.read() == images.paths[jp2.SOPInstanceUID].read_bytes()
            response = await client.get(
                f"/wado?requestType=WADO&{jp2_uids}&contentType=application/dicom"
            )
            assert response.status == 406
            for query, status in (
                (uids, 400),  # no requestType
                ("requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=abc", 400),
                (f"requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID={ct.SOPInstanceUID}", 404),
                (f"requestType=WADO&{uids}&contentType=text/html", 406),
                (f"requestType=WADO&{uids}&rows=0", 400),
                (f"requestType=WADO&{uids}&frameNumber=5", 404),
                (f"requestType=WADO&{uids}&windowCenter=4", 400),
                (f"requestType=WADO&{uids}&studyUID={ct.StudyInstanceUID}", 400),
                (f"requestType=WADO&{uids}&transferSyntax=x&contentType=application/dicom", 400),
            ):
                response = await client.get(f"/wado?{query}")
                assert response.status == status, query
    finally:
        index.close()


async def test_options_cors_and_headers(images: Archive) -> None:
    index = images.index()
    try:
        async with web_client(images.root, index) as client:
            response = await client.options(f"{ROOT}/studies")
            assert response.status == 204 and "GET" in response.headers["Allow"]
            assert "Access-Control-Allow-Origin" not in response.headers
            response = await client.get(
                f"{ROOT}/studies", headers={"Origin": "http://evil.example"}
            )
            assert "Access-Control-Allow-Origin" not in response.headers
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert (await client.options(f"{ROOT}/nothing")).status == 404
        config = WebConfig(cors_origins=("http://viewer.example",))
        async with web_client(images.root, index, config) as client:
            preflight = await client.options(
                f"{ROOT}/studies",
                headers={
                    "Origin": "http://viewer.example",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "accept, authorization",
                },
            )
            assert preflight.status == 204
            assert preflight.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
            assert "authorization" in preflight.headers["Access-Control-Allow-Headers"]
            assert "Access-Control-Allow-Credentials" not in preflight.headers
            response = await client.get(
                f"{ROOT}/studies", headers={"Origin": "http://viewer.example"}
            )
            assert response.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
            assert "Origin" in response.headers["Vary"]
            ct = images.ct  # type: ignore[attr-defined]
            response = await client.get(url_of(ct), headers={"Origin": "http://viewer.example"})
            assert response.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
            response = await client.get(
                f"{ROOT}/studies", headers={"Origin": "http://other.example"}
            )
            assert "Access-Control-Allow-Origin" not in response.headers
        async with web_client(images.root, index, WebConfig(cors_origins=("*",))) as client:
            response = await client.get(f"{ROOT}/studies", headers={"Origin": "http://any.example"})
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in response.headers
    finally:
        index.close()


def _general(path: Path, fragment: Any, number: int, options: Any) -> bytes:
    """What ``render`` gives through pydicom's path (the fast path turned off)."""
    from unittest import mock

    from dicomnet.web import render as module

    with mock.patch.object(module, "_native_grey", return_value=None):
        return module.render(path, fragment, number, options, 10**8)


@pytest.mark.parametrize(
    ("bits", "stored", "signed", "photometric", "rescale", "window"),
    [
        (16, 16, 0, "MONOCHROME2", (1, -1024), (40, 400)),
        (16, 12, 0, "MONOCHROME2", (1, -1024), None),  # garbage above the stored bits
        (16, 12, 1, "MONOCHROME2", (2.5, 7), (100, 1000)),  # signed in 12 bits
        (16, 16, 1, "MONOCHROME1", (1, 0), None),
        (8, 8, 0, "MONOCHROME2", None, (128, 100)),
        (8, 7, 0, "MONOCHROME1", (1, 0), (60, 1)),  # a window of width 1
    ],
)
def test_the_fast_path_renders_what_pydicom_does(
    tmp_path: Path,
    bits: int,
    stored: int,
    signed: int,
    photometric: str,
    rescale: tuple[float, float] | None,
    window: tuple[float, float] | None,
) -> None:
    """Native grey frames are read from the file and windowed through a lookup table; the PNG
    is the one pydicom's decode + Modality LUT + VOI window gives, frame by frame."""
    from dicomnet.archive.metadata import compute_fragment
    from dicomnet.web.render import RenderOptions, _native_grey, render

    ds = make_ct(rows=40, columns=24, frames=2)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation, ds.PhotometricInterpretation = signed, photometric
    rng = np.random.default_rng(bits * 100 + stored)
    dtype = np.uint16 if bits == 16 else np.uint8
    pixels = rng.integers(0, 1 << bits, size=(2, 40, 24), dtype=np.uint64).astype(dtype)
    ds.PixelData = pixels.tobytes()
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    path = tmp_path / "frame.dcm"
    ds.save_as(path, enforce_file_format=True)
    fragment = compute_fragment(path)
    for options in (
        RenderOptions("image/png"),
        RenderOptions("image/png", window=(10.0, 300.0, "LINEAR_EXACT")),
        RenderOptions("image/png", window=(10.0, 300.0, "SIGMOID"), viewport=(12, 20)),
    ):
        assert _native_grey(path, fragment, 1, options) is not None  # the fast path is taken
        for number in (1, 2):
            fast = np.asarray(
                Image.open(io.BytesIO(render(path, fragment, number, options, 10**8)))
            )
            general = np.asarray(Image.open(io.BytesIO(_general(path, fragment, number, options))))
            assert fast.shape == general.shape
            # float32 (pydicom's path) against float64 (the table): a level at most apart
            assert np.abs(fast.astype(int) - general.astype(int)).max() <= 1, (options, number)
