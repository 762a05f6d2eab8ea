"""Shared ground for the DICOMweb tests: an archive folder with indexed instances, and an
aiohttp test client on the application (127.0.0.1, a free port)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from aiohttp.test_utils import TestClient, TestServer
from pydicom import Dataset
from pydicom.uid import generate_uid

from dicomnet.archive.index import SQLiteIndex, build_index
from dicomnet.web import WebConfig, create_app
from tests.helpers import make_ct

INDEX_NAME = ".dicomnet-index.sqlite"


def store_file(root: Path, ds: Dataset) -> Path:
    path = root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


class Archive:
    """A storage folder with a few studies: ``studies[i]`` is (study UID, [series UIDs]),
    ``datasets`` every instance written, by SOP Instance UID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datasets: dict[str, Dataset] = {}
        self.paths: dict[str, Path] = {}

    def add(self, ds: Dataset) -> Dataset:
        self.paths[ds.SOPInstanceUID] = store_file(self.root, ds)
        self.datasets[ds.SOPInstanceUID] = ds
        return ds

    def index(self) -> SQLiteIndex:
        index = SQLiteIndex(self.root / INDEX_NAME)
        build_index(self.root, index)
        return index


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    """Two patients, three studies: S1 (CT, 2 series x 2 instances; one series with
    SeriesDate), S2 (MR, 1 x 1, 3 frames), S3 (CT, 1 x 1, non-ASCII name)."""
    arc = Archive(tmp_path / "store")
    arc.root.mkdir()
    s1, s2, s3 = (generate_uid() for _ in range(3))
    se1, se2, se3, se4 = (generate_uid() for _ in range(4))
    for n in range(2):
        ds = make_ct(study_uid=s1, series_uid=se1, patient_id="P1", patient_name="Doe^John")
        ds.InstanceNumber = n + 1
        ds.SeriesDate = "20240102"
        ds.StudyDescription = "Chest"
        arc.add(ds)
    for n in range(2):
        ds = make_ct(study_uid=s1, series_uid=se2, patient_id="P1", patient_name="Doe^John")
        ds.InstanceNumber = n + 1
        ds.SeriesNumber = 2
        ds.StudyDescription = "Chest"
        arc.add(ds)
    ds = make_ct(study_uid=s2, series_uid=se3, patient_id="P2", patient_name="Roe^Jane", frames=3)
    ds.Modality = "MR"
    ds.StudyDate = "20230505"
    ds.AccessionNumber = "A2"
    arc.add(ds)
    ds = make_ct(study_uid=s3, series_uid=se4, patient_id="P2", patient_name="Roe^Jane")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDescription = "Tête"
    ds.StudyDate = "20220101"
    arc.add(ds)
    arc.studies = [(s1, [se1, se2]), (s2, [se3]), (s3, [se4])]  # type: ignore[attr-defined]
    return arc


@asynccontextmanager
async def web_client(
    root: Path, index: Any, config: WebConfig | None = None, **kwargs: Any
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(config or WebConfig(), root, index, **kwargs)
    server = TestServer(app, host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def client_for(archive: Archive) -> Callable[..., Any]:
    """``async with client_for() as client``: a test client on the archive's index."""

    @asynccontextmanager
    async def make(config: WebConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        index = archive.index()
        try:
            async with web_client(archive.root, index, config, **kwargs) as client:
                yield client
        finally:
            index.close()

    return make


def raw_url(client: Any, path_and_query: str) -> Any:
    """A URL sent exactly as written (no re-encoding of ``%`` by the client)."""
    from yarl import URL

    return URL(f"http://127.0.0.1:{client.port}{path_and_query}", encoded=True)


def tag_value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object (None when absent or empty)."""
    element = item.get(tag)
    if not element or "Value" not in element:
        return None
    return element["Value"][0]
