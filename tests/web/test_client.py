"""The DICOMweb client library (dicomnet.web.client) against dicomnet's server."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomnet.archive.index import SQLiteIndex
from dicomnet.web import WebConfig
from dicomnet.web.client import DicomWebClient, DicomWebError
from tests.helpers import write_ct
from tests.web.conftest import INDEX_NAME, web_client


async def test_store_search_retrieve(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    study, series = generate_uid(), generate_uid()
    files = []
    for n in range(3):
        path = tmp_path / "in" / f"{n}.dcm"
        write_ct(path, study_uid=study, series_uid=series, patient_id="CLI")
        files.append(path)
    implicit = tmp_path / "in" / "implicit.dcm"
    ds = write_ct(implicit, study_uid=study, patient_id="CLI")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    ds.save_as(implicit, enforce_file_format=True)
    index = SQLiteIndex(root / INDEX_NAME)
    try:
        async with web_client(root, index, WebConfig(fsync=False)) as server:
            url = f"http://127.0.0.1:{server.port}/dicom-web"
            async with DicomWebClient(url) as client:
                answer = await client.store([*files, implicit])
                assert len(answer["00081199"]["Value"]) == 4
                studies = await client.search(
                    filters={"PatientID": "CLI"}, fields=["StudyDescription"]
                )
                assert len(studies) == 1 and studies[0]["00201208"]["Value"] == [4]
                assert len(await client.search("studies", study=study)) == 1
                assert len(await client.search("series", study=study)) == 2
                assert len(await client.search("series", series=series)) == 1
                assert len(await client.search("instances", study=study, series=series)) == 3
                assert len(await client.search("instances", study=study)) == 4
                assert len(await client.search("instances", limit=2, offset=1)) == 2
                assert len(await client.metadata(study, series)) == 3
                # retrieve as stored: the same bytes after the preamble
                saved = await client.retrieve(tmp_path / "out", study)
                assert len(saved) == 4
                sent = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in [*files, implicit]}
                for path in saved:
                    assert path.read_bytes()[128:] == sent[path.stem][128:]
                assert not list((tmp_path / "out").glob(".*.part"))
                # the server's default: Explicit VR LE
                [one] = await client.retrieve(
                    tmp_path / "out2",
                    study,
                    ds.SeriesInstanceUID,
                    ds.SOPInstanceUID,
                    transfer_syntax=None,
                )
                assert dcmread(one).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
                with pytest.raises(DicomWebError) as info:
                    await client.retrieve(tmp_path / "out3", generate_uid())
                assert info.value.status == 404
                with pytest.raises(DicomWebError) as info:
                    await client.store(files[:1], study=generate_uid())
                assert info.value.status == 409
                with pytest.raises(ValueError):
                    await client.retrieve(tmp_path / "out3", "../etc")
    finally:
        index.close()


async def test_broken_answer_leaves_no_partial_file(tmp_path: Path) -> None:
    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'}
        )
        await response.prepare(request)
        await response.write(b"--xyz\r\nContent-Type: application/dicom\r\n\r\n" + b"\x00" * 5000)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/dicom-web/studies/{study}", truncated)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with DicomWebClient(f"http://127.0.0.1:{server.port}/dicom-web") as client:
            with pytest.raises(DicomWebError):
                await client.retrieve(tmp_path / "out", "1.2.3")
        assert list((tmp_path / "out").iterdir()) == []
    finally:
        await server.close()
