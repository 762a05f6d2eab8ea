"""WADO-RS retrieve (instance, series, study) and metadata over the archive."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.helpers import make_ct
from tests.web.conftest import Archive, web_client

ROOT = "/dicom-web"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """A plain reading of a multipart body (RFC 2046), independent of the server's code."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params["boundary"].strip('"').encode()
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.rstrip(b"\r\n").endswith(b"--" + boundary + b"--")
    pieces = body.split(b"\r\n--" + boundary)
    pieces[0] = pieces[0][len(b"--" + boundary) :]
    parts = []
    for piece in pieces[:-1]:
        assert piece.startswith(b"\r\n")
        head, _, data = piece[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name] = value.strip()
        parts.append((headers, data))
    assert pieces[-1].startswith(b"--")
    return parts


async def fetch(client: Any, url: str, accept: str | None = None, status: int = 200) -> Any:
    headers = {"Accept": accept} if accept else {}
    response = await client.get(url, headers=headers)
    body = await response.read()
    assert response.status == status, body[:300]
    return response, body


@pytest.fixture
def mixed(tmp_path: Path) -> Archive:
    """One series of instances in four transfer syntaxes (explicit LE, implicit LE, big endian,
    JPEG 2000), from generated data and pydicom's test files."""
    arc = Archive(tmp_path / "mixed")
    arc.root.mkdir()
    study, series = generate_uid(), generate_uid()
    ds = make_ct(study_uid=study, series_uid=series)
    arc.add(ds)
    ds = make_ct(study_uid=study, series_uid=series)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    arc.add(ds)
    for name in ("MR_small_bigendian.dcm", "JPEG2000.dcm"):
        source = dcmread(get_testdata_file(name))
        source.StudyInstanceUID = study
        source.SeriesInstanceUID = series
        arc.add(source)
    arc.study, arc.series = study, series  # type: ignore[attr-defined]
    return arc


def by_syntax(arc: Archive, ts: str) -> str:
    return next(u for u, d in arc.datasets.items() if d.file_meta.TransferSyntaxUID == ts)


async def test_retrieve_instance_transfer_syntaxes(mixed: Archive) -> None:
    index = mixed.index()
    study, series = mixed.study, mixed.series  # type: ignore[attr-defined]
    base = f"{ROOT}/studies/{study}/series/{series}/instances"
    try:
        async with web_client(mixed.root, index) as client:
            # stored implicit VR LE, asked with no transfer syntax: Explicit VR LE
            implicit = by_syntax(mixed, "1.2.840.10008.1.2")
            response, body = await fetch(client, f"{base}/{implicit}", DICOM_MULTIPART)
            assert response.headers["Content-Type"].startswith(DICOM_MULTIPART + "; boundary=")
            [(headers, data)] = split_multipart(body, response.headers["Content-Type"])
            assert (
                headers["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
            )
            got = dcmread(io.BytesIO(data))
            assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            assert got.PixelData == mixed.datasets[implicit].PixelData
            assert got.PatientName == mixed.datasets[implicit].PatientName
            # big endian re-encoded to little endian: same pixel values
            big = by_syntax(mixed, "1.2.840.10008.1.2.2")
            response, body = await fetch(client, f"{base}/{big}", DICOM_MULTIPART)
            [(_, data)] = split_multipart(body, response.headers["Content-Type"])
            got = dcmread(io.BytesIO(data))
            assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            original = dcmread(mixed.paths[big])
            assert (got.pixel_array == original.pixel_array).all()
            # as stored: the file's bytes exactly
            jpeg = by_syntax(mixed, "1.2.840.10008.1.2.4.91")
            accept = DICOM_MULTIPART + "; transfer-syntax=*"
            response, body = await fetch(client, f"{base}/{jpeg}", accept)
            [(headers, data)] = split_multipart(body, response.headers["Content-Type"])
            assert data == mixed.paths[jpeg].read_bytes()
            assert headers["Content-Type"].endswith("transfer-syntax=1.2.840.10008.1.2.4.91")
            # compressed, asked uncompressed: no codec here, so 406 (never 500)
            await fetch(client, f"{base}/{jpeg}", DICOM_MULTIPART, status=406)
            await fetch(
                client,
                f"{base}/{jpeg}",
                DICOM_MULTIPART + "; transfer-syntax=1.2.840.10008.1.2.4.50",
                status=406,
            )
            # a list: the first acceptable wins per instance
            accept = f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.50, {DICOM_MULTIPART}; transfer-syntax=*; q=0.5"
            response, body = await fetch(client, f"{base}/{jpeg}", accept)
            # single part application/dicom for one instance
            explicit = by_syntax(mixed, "1.2.840.10008.1.2.1")
            response, body = await fetch(client, f"{base}/{explicit}", "application/dicom")
            assert response.headers["Content-Type"].startswith("application/dicom")
            assert body == mixed.paths[explicit].read_bytes()
            # Orthanc's form of the parameters; */*
            accept = 'multipart/related; type="application/dicom; transfer-syntax=*"'
            response, body = await fetch(client, f"{base}/{jpeg}", accept)
            response, body = await fetch(client, f"{base}/{jpeg}", "*/*")
            # not acceptable at all
            for accept in (
                "image/png",
                "application/dicom+json",
                "multipart/related; type=image/jpeg",
            ):
                await fetch(client, f"{base}/{explicit}", accept, status=406)
    finally:
        index.close()


async def test_retrieve_series_and_study(mixed: Archive) -> None:
    index = mixed.index()
    study, series = mixed.study, mixed.series  # type: ignore[attr-defined]
    try:
        async with web_client(mixed.root, index) as client:
            accept = DICOM_MULTIPART + "; transfer-syntax=*"
            for url in (f"{ROOT}/studies/{study}/series/{series}", f"{ROOT}/studies/{study}"):
                response, body = await fetch(client, url, accept)
                parts = split_multipart(body, response.headers["Content-Type"])
                got = {dcmread(io.BytesIO(d)).SOPInstanceUID: d for _, d in parts}
                assert got == {u: p.read_bytes() for u, p in mixed.paths.items()}
            # the JPEG 2000 instance cannot be sent as explicit VR LE: the whole answer is 406
            await fetch(client, f"{ROOT}/studies/{study}", DICOM_MULTIPART, status=406)
            # several instances cannot be one single part
            await fetch(client, f"{ROOT}/studies/{study}", "application/dicom", status=406)
            await fetch(client, f"{ROOT}/studies/1.2.3", DICOM_MULTIPART, status=404)
            await fetch(client, f"{ROOT}/studies/{study}/series/1.2.3", DICOM_MULTIPART, status=404)
            # a series under another study is not found
            await fetch(
                client, f"{ROOT}/studies/1.2.3/series/{series}", DICOM_MULTIPART, status=404
            )
            await fetch(client, f"{ROOT}/studies/abc", DICOM_MULTIPART, status=400)
    finally:
        index.close()


async def test_metadata(mixed: Archive) -> None:
    index = mixed.index()
    study, series = mixed.study, mixed.series  # type: ignore[attr-defined]
    try:
        async with web_client(mixed.root, index) as client:
            response, _ = await fetch(client, f"{ROOT}/studies/{study}/series/{series}/metadata")
            assert response.headers["Content-Type"] == "application/dicom+json"
            items = await response.json(content_type=None)
            assert len(items) == 4
            base = f"http://127.0.0.1:{client.port}{ROOT}"
            for item in items:
                sop = item["00080018"]["Value"][0]
                original = dcmread(mixed.paths[sop], stop_before_pixels=True)
                assert item["0020000D"]["Value"] == [study]
                assert item["00080060"]["Value"] == [original.Modality]
                assert item["00280010"]["Value"] == [original.Rows]
                pixel = item["7FE00010"]
                assert pixel["BulkDataURI"] == (
                    f"{base}/studies/{study}/series/{series}/instances/{sop}/bulkdata/7FE00010"
                )
                assert "0002" not in "".join(item)[:4]  # no file meta group
            sop = next(iter(mixed.paths))
            response, _ = await fetch(
                client, f"{ROOT}/studies/{study}/series/{series}/instances/{sop}/metadata"
            )
            assert len(await response.json(content_type=None)) == 1
            response, _ = await fetch(client, f"{ROOT}/studies/{study}/metadata")
            assert len(await response.json(content_type=None)) == 4
            await fetch(
                client, f"{ROOT}/studies/{study}/metadata", "application/dicom+xml", status=406
            )
            await fetch(client, f"{ROOT}/studies/1.2.3/metadata", status=404)
            # a file replaced by another version of the instance: the cache notices
            path = mixed.paths[sop]
            ds = dcmread(path)
            ds.PatientName = "Changed^Name"
            ds.save_as(path)
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
            response, _body = await fetch(
                client, f"{ROOT}/studies/{study}/series/{series}/instances/{sop}/metadata"
            )
            [item] = await response.json(content_type=None)
            assert item["00100010"]["Value"] == [{"Alphabetic": "Changed^Name"}]
    finally:
        index.close()


async def test_metadata_of_nested_bulk_and_private(tmp_path: Path) -> None:
    """A large binary value inside a sequence gets a BulkDataURI naming its path; a small one
    is inline."""
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    arc = Archive(tmp_path / "nested")
    arc.root.mkdir()
    ds = make_ct()
    item = Dataset()
    item.add_new(0x00420011, "OB", b"\x01" * 4096)  # EncapsulatedDocument
    item.add_new(0x00189219, "OB", b"\x02" * 8)
    ds.add_new(0x00400275, "SQ", Sequence([item]))
    arc.add(ds)
    index = arc.index()
    try:
        async with web_client(arc.root, index) as client:
            url = f"{ROOT}/studies/{ds.StudyInstanceUID}/metadata"
            response, _ = await fetch(client, url)
            [doc] = await response.json(content_type=None)
            nested = doc["00400275"]["Value"][0]
            assert nested["00420011"]["BulkDataURI"].endswith("/bulkdata/00400275/0/00420011")
            assert nested["00189219"]["InlineBinary"] == "AgICAgICAgI="
    finally:
        index.close()


@pytest.mark.slow
async def test_series_metadata_of_500_instances_is_fast(tmp_path: Path) -> None:
    """The cached fragments are joined, not parsed: 500 instances in well under 20 ms once
    the cache is warm (measured in process, best of 5, loopback)."""
    arc = Archive(tmp_path / "big")
    arc.root.mkdir()
    study, series = generate_uid(), generate_uid()
    template = make_ct(rows=16, columns=16, study_uid=study, series_uid=series)
    folder = arc.root / study / series
    folder.mkdir(parents=True)
    template.save_as(folder / "template.dcm", enforce_file_format=True)
    for n in range(500):
        ds = template.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    os.unlink(folder / "template.dcm")
    index = arc.index()
    try:
        async with web_client(arc.root, index) as client:
            url = f"{ROOT}/studies/{study}/series/{series}/metadata"
            response, body = await fetch(client, url)  # computes and caches the fragments
            assert len(await response.json(content_type=None)) == 500
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                response, body = await fetch(client, url)
                best = min(best, time.perf_counter() - start)
            print(f"series metadata, 500 instances: {best * 1000:.1f} ms, {len(body)} bytes")
            assert best < 0.040  # target 20 ms; the margin is for a loaded CI machine
    finally:
        index.close()
    shutil.rmtree(arc.root)
