"""STOW-RS: storing through the same layout, index and duplicate policy as C-STORE; the bad
bodies of DICOMWEB.md section 8 give 4xx and leave no partial or temporary file."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomnet.archive.index import SQLiteIndex
from dicomnet.archive.metadata import MetadataStore
from dicomnet.web import WebConfig
from tests.helpers import make_ct
from tests.web.conftest import INDEX_NAME, web_client

ROOT = "/dicom-web"
BOUNDARY = "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"
CT_MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def part10(ds: Any) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def body_of(files: list[bytes], preamble: bytes = b"\r\n", epilogue: bytes = b"") -> bytes:
    out = preamble
    for data in files:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--".encode() + epilogue


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm"))


def leftovers(root: Path) -> list[Path]:
    incoming = root / ".incoming"
    return list(incoming.iterdir()) if incoming.exists() else []


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


async def post(client: Any, body: bytes, *, path: str = "/studies", content_type: str = CT_MULTIPART,
               status: int | None = None, headers: dict[str, str] | None = None) -> Any:  # fmt: skip
    all_headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    all_headers.update(headers or {})
    response = await client.post(ROOT + path, data=body, headers=all_headers)
    text = await response.read()
    if status is not None:
        assert response.status == status, text[:300]
    return response


async def test_store_then_search_and_retrieve(store_root: Path) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    study = generate_uid()
    datasets = [
        make_ct(
            study_uid=study, series_uid=generate_uid(), patient_id="STOW1", patient_name="Stow^Test"
        )
        for _ in range(3)
    ]
    other = make_ct()
    try:
        async with web_client(store_root, index, WebConfig(fsync=False)) as client:
            files = [part10(ds) for ds in [*datasets, other]]
            response = await post(client, body_of(files), status=200)
            assert response.headers["Content-Type"] == "application/dicom+json"
            answer = await response.json(content_type=None)
            referenced = answer["00081199"]["Value"]
            assert len(referenced) == 4
            assert "Value" not in answer["00081198"]
            sops = {item["00081155"]["Value"][0] for item in referenced}
            assert sops == {ds.SOPInstanceUID for ds in [*datasets, other]}
            assert all(
                item["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"] for item in referenced
            )
            url = referenced[0]["00081190"]["Value"][0]
            assert url.startswith(f"http://127.0.0.1:{client.port}{ROOT}/studies/")
            # stored in the layout, byte for byte after the (blanked) preamble
            for ds, data in zip(datasets, files, strict=False):
                path = store_root / study / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
                assert path.read_bytes()[128:] == data[128:]
            assert leftovers(store_root) == []
            # QIDO sees them at once; metadata is cached at ingest
            response = await client.get(f"{ROOT}/studies?PatientName=stow*")
            [found] = await response.json(content_type=None)
            assert found["00201208"]["Value"] == [3]
            cache = MetadataStore(index.path)
            assert set(cache.cached(list(sops))) == sops
            cache.close()
            response = await client.get(f"{ROOT}/studies/{study}/metadata")
            assert len(await response.json(content_type=None)) == 3
            # stored again (the C-STORE policy): replaced, 200
            datasets[0].PatientName = "Stow^Again"
            await post(client, body_of([part10(datasets[0])]), status=200)
            response = await client.get(f"{ROOT}/studies?PatientName=stow*again")
            assert len(await response.json(content_type=None)) == 1
            assert len(stored_files(store_root)) == 4
    finally:
        index.close()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_partial_and_failed(store_root: Path) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    study = generate_uid()
    good = make_ct(study_uid=study)
    wrong_study = make_ct()
    unsafe = make_ct(study_uid="1.2.3")
    unsafe.SeriesInstanceUID = "../../etc"
    try:
        async with web_client(store_root, index, WebConfig(fsync=False)) as client:
            files = [part10(good), part10(wrong_study), b"not dicom at all", part10(unsafe)]
            response = await post(client, body_of(files), path=f"/studies/{study}", status=202)
            assert "299" in response.headers["Warning"]
            answer = await response.json(content_type=None)
            assert answer["00081190"]["Value"] == [
                f"http://127.0.0.1:{client.port}{ROOT}/studies/{study}"
            ]
            assert [i["00081155"]["Value"][0] for i in answer["00081199"]["Value"]] == [
                good.SOPInstanceUID
            ]
            reasons = {
                i.get("00081155", {}).get("Value", ["?"])[0]: i["00081197"]["Value"][0]
                for i in answer["00081198"]["Value"]
            }
            assert reasons[wrong_study.SOPInstanceUID] == 43265
            assert reasons["?"] == 0xC000
            assert reasons[unsafe.SOPInstanceUID] == 43265  # its study is not the URL's either
            # without the URL's study the unsafe UID is what fails
            response = await post(client, body_of([part10(unsafe)]), status=409)
            answer = await response.json(content_type=None)
            assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
            assert "Value" not in answer["00081199"]
            assert stored_files(store_root) == [
                store_root / study / good.SeriesInstanceUID / f"{good.SOPInstanceUID}.dcm"
            ]
            assert leftovers(store_root) == []
            assert not (store_root.parent / "etc").exists()
    finally:
        index.close()


async def test_what_real_clients_send(store_root: Path) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    try:
        async with web_client(store_root, index, WebConfig(fsync=False)) as client:
            a, b = make_ct(), make_ct()
            # dicomweb-client JS: NUL bytes after the close delimiter
            await post(client, body_of([part10(a), part10(b)], epilogue=b"\x00" * 70), status=200)
            # a quoted boundary, a part without Content-Type, a single-part body
            body = (
                f"--{BOUNDARY}\r\n\r\n".encode()
                + part10(make_ct())
                + f"\r\n--{BOUNDARY}--\r\n".encode()
            )
            ct = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
            await post(client, body, content_type=ct, status=200)
            await post(client, part10(make_ct()), content_type="application/dicom", status=200)
            # an application/dicom+json part is not supported: a failure, not an error
            body = (
                f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n[]\r\n--{BOUNDARY}--"
            ).encode()
            response = await post(client, body, status=409)
            answer = await response.json(content_type=None)
            assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC122]
            # a malicious preamble is blanked
            ds = make_ct()
            data = bytearray(part10(ds))
            data[:128] = b"MZ" + b"\x90" * 126
            await post(client, body_of([bytes(data)]), status=200)
            [path] = [p for p in stored_files(store_root) if p.stem == ds.SOPInstanceUID]
            assert path.read_bytes()[:128] == b"\x00" * 128
            assert dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
    finally:
        index.close()


@pytest.mark.parametrize(
    "content_type,status",
    [
        ("text/plain", 415),
        ("application/json", 415),
        (f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}', 415),
        ('multipart/related; type="application/dicom"', 400),
        ('multipart/related; type="application/dicom"; boundary=' + "a" * 71, 400),
        ("multipart/related; type=application/dicom; boundary=absent-from-body", 400),
        ("", 415),
    ],
)
async def test_bad_content_type(store_root: Path, content_type: str, status: int) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    try:
        async with web_client(store_root, index) as client:
            await post(
                client, body_of([part10(make_ct())]), content_type=content_type, status=status
            )
            assert stored_files(store_root) == [] and leftovers(store_root) == []
    finally:
        index.close()


@pytest.mark.parametrize(
    "body",
    [
        body_of([part10(make_ct())])[:-20],  # truncated: no close delimiter
        body_of([part10(make_ct()), part10(make_ct())])[:-5000],
        body_of([b"x"]).replace(b"\r\n", b"\n"),  # bare LF
        b"",
        b"\r\n--" + BOUNDARY.encode() + b"--",  # no part at all
    ],
)
async def test_malformed_bodies_store_nothing(store_root: Path, body: bytes) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    try:
        async with web_client(store_root, index, WebConfig(fsync=False)) as client:
            await post(client, body, status=400)
            assert stored_files(store_root) == [] and leftovers(store_root) == []
            response = await client.get(f"{ROOT}/studies")
            assert await response.json(content_type=None) == []
    finally:
        index.close()


async def test_limits(store_root: Path) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    config = WebConfig(
        fsync=False, max_stow_bytes=50_000, max_stow_parts=3, max_part_header_bytes=1024
    )
    try:
        async with web_client(store_root, index, config) as client:
            big = body_of([part10(make_ct(rows=256, columns=256))])  # ~131 KB
            await post(client, big, status=413)  # Content-Length says so at once

            async def chunked() -> Any:  # no Content-Length: the count stops it
                for start in range(0, len(big), 8192):
                    yield big[start : start + 8192]

            await post(client, chunked(), status=413)  # type: ignore[arg-type]
            await post(client, body_of([b"x"] * 4), status=413)
            header = f"--{BOUNDARY}\r\nX-Pad: {'a' * 2000}\r\n\r\nx\r\n--{BOUNDARY}--".encode()
            await post(client, header, status=413)
            await post(
                client,
                body_of([part10(make_ct())]),
                headers={"Content-Encoding": "gzip"},
                status=415,
            )
            assert stored_files(store_root) == [] and leftovers(store_root) == []
    finally:
        index.close()


async def _raw_request(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def test_expect_continue(store_root: Path) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    body = body_of([part10(make_ct())])
    try:
        async with web_client(store_root, index, WebConfig(fsync=False)) as client:
            head = (
                f"POST {ROOT}/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {CT_MULTIPART}\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
            reader, writer = await _raw_request(client.port, head)
            line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert line.startswith(b"HTTP/1.1 100 Continue")
            writer.write(body)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.startswith(b"HTTP/1.1 200")
            writer.close()
            # a body that would be refused is never invited
            head = (
                f"POST {ROOT}/studies HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
            reader, writer = await _raw_request(client.port, head)
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.startswith(b"HTTP/1.1 415")
            writer.close()
    finally:
        index.close()


async def test_slow_sender_is_dropped(store_root: Path) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    body = body_of([part10(make_ct())])
    try:
        async with web_client(
            store_root, index, WebConfig(fsync=False, body_timeout=0.5)
        ) as client:
            head = (
                f"POST {ROOT}/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {CT_MULTIPART}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            reader, writer = await _raw_request(client.port, head + body[:3000])
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.startswith(b"HTTP/1.1 408")
            writer.close()
            assert stored_files(store_root) == [] and leftovers(store_root) == []
    finally:
        index.close()


async def test_client_that_disconnects_leaves_nothing(store_root: Path) -> None:
    index = SQLiteIndex(store_root / INDEX_NAME)
    body = body_of([part10(make_ct()), part10(make_ct(rows=128, columns=128))])
    try:
        async with web_client(store_root, index, WebConfig(fsync=False)) as client:
            head = (
                f"POST {ROOT}/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {CT_MULTIPART}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            _reader, writer = await _raw_request(client.port, head + body[: len(body) // 2])
            writer.close()
            await writer.wait_closed()
            # the server notices and cleans up: wait for it, bounded
            for _ in range(200):
                if not leftovers(store_root):
                    break
                await asyncio.sleep(0.01)
            assert stored_files(store_root) == [] and leftovers(store_root) == []
            response = await client.get(f"{ROOT}/studies")  # still serving
            assert response.status == 200
    finally:
        index.close()


async def test_deflate_bomb_is_refused(store_root: Path, monkeypatch: Any) -> None:
    from pydicom.data import get_testdata_file

    from dicomnet.web import stow

    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    index = SQLiteIndex(store_root / INDEX_NAME)
    try:
        async with web_client(store_root, index, WebConfig(fsync=False)) as client:
            monkeypatch.setattr(stow, "MAX_INFLATED", 10_000)  # the file inflates to ~260 KB
            response = await post(client, body_of([data]), status=409)
            answer = await response.json(content_type=None)
            assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
            monkeypatch.setattr(stow, "MAX_INFLATED", 256 << 20)
            await post(client, body_of([data]), status=200)
            assert leftovers(store_root) == []
    finally:
        index.close()
