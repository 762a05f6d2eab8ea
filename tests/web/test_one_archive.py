"""DICOM and DICOMweb on one archive, in one event loop (the shape ``dicomnet serve
--http-port`` will have): C-STORE then QIDO/WADO sees it; STOW then C-FIND sees it. The web
application shares the storage service's index and IndexWriter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomnet.archive.metadata import MetadataStore, MetadataWriter
from dicomnet.client import DicomClient
from dicomnet.dimse.status import Status
from dicomnet.server import DicomServer
from dicomnet.services.qr import ArchiveService
from dicomnet.services.storage import open_index
from dicomnet.web import WebConfig, WebServer, create_app
from dicomnet.web.client import DicomWebClient
from tests.helpers import write_ct


async def test_dicom_and_dicomweb_on_one_archive(tmp_path: Path) -> None:
    root = tmp_path / "store"
    index = open_index(root)
    store = MetadataStore(index.path)
    fragments = MetadataWriter(store)  # metadata computed at ingest, off the event loop

    def stored(request: Any, path: Path) -> None:
        fragments.add(request.sop_instance_uid, path)

    factory = ArchiveService.factory(
        root, index=index, fsync=False, aet="ARCHIVE", on_stored=stored
    )
    dicom = DicomServer(factory, "127.0.0.1", 0)
    await dicom.start()
    app = create_app(WebConfig(fsync=False), root, index, store=store, writer=factory.index_writer)
    web = WebServer(app, "127.0.0.1", 0)
    await web.start()
    try:
        url = f"http://127.0.0.1:{web.port}/dicom-web"
        study = generate_uid()
        # C-STORE, then QIDO and WADO-RS see it at once (the writer is flushed before reading)
        ds = write_ct(tmp_path / "in" / "a.dcm", study_uid=study, patient_id="ONE")
        async with DicomClient("127.0.0.1", dicom.port, "SCU", "ARCHIVE") as client:
            assert await client.c_store(tmp_path / "in" / "a.dcm") == Status.SUCCESS
        assert fragments.flush()
        assert set(store.cached([ds.SOPInstanceUID])) == {ds.SOPInstanceUID}
        async with DicomWebClient(url) as web_client:
            [found] = await web_client.search(filters={"PatientID": "ONE"})
            assert found["0020000D"]["Value"] == [study]
            [meta] = await web_client.metadata(study, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            assert meta["00080018"]["Value"] == [ds.SOPInstanceUID]
            [saved] = await web_client.retrieve(tmp_path / "out", study)
            got = dcmread(saved)  # C-STORE wrote its own File Meta Information
            assert got.SOPInstanceUID == ds.SOPInstanceUID and got.PixelData == ds.PixelData
            # STOW, then C-FIND sees it
            other = write_ct(tmp_path / "in" / "b.dcm", study_uid=study, patient_id="ONE")
            answer = await web_client.store([tmp_path / "in" / "b.dcm"])
            assert len(answer["00081199"]["Value"]) == 1
        async with DicomClient("127.0.0.1", dicom.port, "SCU", "ARCHIVE") as client:
            matches = []
            for series in (ds.SeriesInstanceUID, other.SeriesInstanceUID):
                query = {
                    "StudyInstanceUID": study,
                    "SeriesInstanceUID": series,
                    "SOPInstanceUID": "",
                }
                matches += [m async for m in client.c_find(query, level="IMAGE")]
        assert sorted(m.SOPInstanceUID for m in matches) == sorted(
            [ds.SOPInstanceUID, other.SOPInstanceUID]
        )
        # the page and the DICOM port answer side by side
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{web.port}/") as r,
        ):
            assert r.status == 200
    finally:
        await web.close()
        await dicom.close()
        assert factory.index_writer is not None
        factory.index_writer.close()
        fragments.close()
        store.close()
        index.close()


async def test_web_server_on_a_bound_socket(tmp_path: Path) -> None:
    """``dicomnet serve --workers`` binds once and hands the socket to every process."""
    import socket

    root = tmp_path / "store"
    index = open_index(root)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    web = WebServer(create_app(WebConfig(), root, index), sock=sock)
    await web.start()
    try:
        assert web.port == port
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/dicom-web/studies") as response:
                assert response.status == 200 and await response.json(content_type=None) == []
    finally:
        await web.close()
        index.close()


def test_metadata_process_computes_fragments_out_of_process(tmp_path: Path) -> None:
    """``dicomnet serve``'s fragment writer: a child process at nice 19 fed through a pipe;
    flush waits for what was queued, a file it cannot read is skipped, close ends the child."""
    from dicomnet.archive.metadata import MetadataProcess

    root = tmp_path / "store"
    index = open_index(root)
    store = MetadataStore(index.path)
    writer = MetadataProcess(index.path)
    try:
        paths = [tmp_path / f"{n}.dcm" for n in range(3)]
        datasets = [write_ct(p) for p in paths]
        writer.add("1.2.3.4", tmp_path / "missing.dcm")  # logged by the child, nothing stored
        for ds, path in zip(datasets, paths, strict=True):
            writer.add(ds.SOPInstanceUID, path)
        assert writer.flush(timeout=60)
        cached = store.cached([ds.SOPInstanceUID for ds in datasets] + ["1.2.3.4"])
        assert set(cached) == {ds.SOPInstanceUID for ds in datasets}
        with open(f"/proc/{writer._proc.pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[16]) == 19  # its nice value
    finally:
        writer.close(timeout=30)
        store.close()
        index.close()
    assert writer._proc.returncode == 0  # ended by its closed stdin, not killed
