"""More of DICOMWEB.md section 8: header tricks on the wire, concurrency, JSON edge values, and
the metadata cache's build and refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from dicomnet.archive.index import SQLiteIndex
from dicomnet.archive.metadata import MetadataStore, build_metadata, compute_fragment, with_base
from dicomnet.web import WebConfig
from dicomnet.web.dicomjson import attribute
from tests.helpers import make_ct
from tests.web.conftest import INDEX_NAME, Archive, web_client
from tests.web.test_stow import CT_MULTIPART, body_of, part10

ROOT = "/dicom-web"


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_request_smuggling_shapes_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    index = SQLiteIndex(root / INDEX_NAME)
    body = body_of([part10(make_ct())])
    try:
        async with web_client(root, index, WebConfig(fsync=False)) as client:
            both = (
                f"POST {ROOT}/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {CT_MULTIPART}\r\n"
                f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode() + body
            answer = await _exchange(client.port, both)
            assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:100]
            # a Content-Length shorter than the body: the body is cut, so it is malformed
            short = (
                f"POST {ROOT}/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {CT_MULTIPART}\r\n"
                f"Content-Length: {len(body) - 100}\r\n\r\n"
            ).encode() + body
            answer = await _exchange(client.port, short)
            assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:100]
            assert not list(root.rglob("*.dcm"))
            assert (
                not list((root / ".incoming").glob("*")) if (root / ".incoming").exists() else True
            )
            response = await client.get(f"{ROOT}/studies")  # still serving
            assert response.status == 200
    finally:
        index.close()


async def test_same_instance_twice_in_one_request(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    index = SQLiteIndex(root / INDEX_NAME)
    ds = make_ct()
    try:
        async with web_client(root, index, WebConfig(fsync=False)) as client:
            response = await client.post(
                f"{ROOT}/studies", data=body_of([part10(ds), part10(ds)]),
                headers={"Content-Type": CT_MULTIPART},
            )  # fmt: skip
            assert response.status == 200  # the C-STORE policy: stored again replaces
            assert len(list(root.rglob("*.dcm"))) == 1
            response = await client.get(f"{ROOT}/instances")
            assert len(await response.json(content_type=None)) == 1
    finally:
        index.close()


async def test_concurrent_retrieves_and_range(archive: Archive, client_for: Any) -> None:
    s1, (se1, _se2) = archive.studies[0]
    async with client_for() as client:
        accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}

        async def one() -> int:
            response = await client.get(f"{ROOT}/studies/{s1}/series/{se1}", headers=accept)
            body = await response.read()
            assert body.count(b"Content-Type: application/dicom") == 2
            return response.status

        statuses = await asyncio.gather(*(one() for _ in range(20)))
        assert statuses == [200] * 20
        sop = next(u for u, d in archive.datasets.items() if d.SeriesInstanceUID == se1)
        url = f"{ROOT}/studies/{s1}/series/{se1}/instances/{sop}/bulkdata/7FE00010"
        response = await client.get(
            url, headers={"Range": "bytes=999999999-", "Accept": "application/octet-stream"}
        )
        assert response.status == 200  # Range is ignored: the whole value (PS3.18 allows it)
        assert await response.read() == archive.datasets[sop].PixelData


def test_json_numbers_and_empty_values() -> None:
    assert attribute("InstanceNumber", "12") == ("00200013", {"vr": "IS", "Value": [12]})
    assert attribute("InstanceNumber", str(2**60))[1]["Value"] == [str(2**60)]  # past 2^53: text
    assert attribute("InstanceNumber", "abc")[1]["Value"] == ["abc"]
    assert attribute("SliceThickness", "NaN")[1]["Value"] == ["NaN"]
    assert attribute("SliceThickness", "1e400")[1]["Value"] == ["1e400"]
    assert attribute("SliceThickness", "2.5")[1]["Value"] == [2.5]
    assert attribute("PatientName", None) == ("00100010", {"vr": "PN"})
    assert attribute("PatientName", "A^B=C^D")[1]["Value"] == [
        {"Alphabetic": "A^B", "Ideographic": "C^D"}
    ]
    assert attribute("ModalitiesInStudy", ["CT", "MR"])[1]["Value"] == ["CT", "MR"]
    assert attribute("StudyDescription", "a\\b")[1]["Value"] == ["a", "b"]


def test_metadata_cache_build_and_prefix(tmp_path: Path) -> None:
    arc = Archive(tmp_path / "m")
    arc.root.mkdir()
    for _ in range(3):
        arc.add(make_ct())
    index = arc.index()
    store = MetadataStore(index.path)
    try:
        records = [(r.sop_instance_uid, r.path) for r in index.records()]
        assert build_metadata(arc.root, records, store) == 3
        assert build_metadata(arc.root, records, store) == 0  # nothing stale
        _uid, relative = records[0]
        fragment = compute_fragment(arc.root / relative)
        assert b'"BulkDataURI":"/studies/' in fragment.json
        assert (
            with_base(fragment.json, b"http://h/dicom-web").count(
                b'"BulkDataURI":"http://h/dicom-web/studies/'
            )
            == 1
        )
        # a text value cannot forge the prefix: its quotes are escaped
        ds = make_ct(study_uid=generate_uid())
        ds.StudyDescription = '"BulkDataURI":"x'
        arc.add(ds)
        forged = compute_fragment(arc.paths[ds.SOPInstanceUID])
        assert with_base(forged.json, b"BASE").count(b"BASE") == 1
        assert fragment.pixel_offset is not None and fragment.pixel_length == 64 * 64 * 2
        assert fragment.rows == 64 and fragment.number_of_frames == 1
    finally:
        store.close()
        index.close()


async def test_error_after_the_status_cuts_the_answer(
    archive: Any, client_for: Any, monkeypatch: Any
) -> None:
    """A file that fails half way (disk error, removed): the connection is closed, so the
    client sees an incomplete answer, never one that looks whole."""
    import aiohttp

    from dicomnet.web import wado

    async def failing(path: Any, start: int = 0, length: Any = None) -> Any:
        yield b"\x00" * 1000
        raise OSError("disk error")

    monkeypatch.setattr(wado, "read_chunks", failing)
    s1, (se1, _se2) = archive.studies[0]
    async with client_for() as client:
        response = await client.get(
            f"{ROOT}/studies/{s1}/series/{se1}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert response.status == 200
        try:
            await response.read()
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("the answer looked complete")
        assert (await client.get(f"{ROOT}/studies")).status == 200  # still serving
