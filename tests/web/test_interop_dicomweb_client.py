"""dicomweb-client (PyPI, the Python DICOMweb client) against ``python -m dicomnet.web`` on
127.0.0.1: every search, retrieve and store call, results compared with what was stored."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid

from tests.helpers import make_ct

dicomweb_client = pytest.importorskip("dicomweb_client")
pytestmark = pytest.mark.interop


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``python -m dicomnet.web`` on a free port; yields its DICOMweb root URL."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dicomnet.web",
            str(tmp_path / "store"),
            "--port",
            "0",
            "--no-fsync",
        ],
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # readiness: the server prints this once it listens
        assert "listening on " in line, line
        yield line.split("listening on ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def same_instance(got: Dataset, sent: Dataset) -> None:
    assert got.SOPInstanceUID == sent.SOPInstanceUID
    assert got.StudyInstanceUID == sent.StudyInstanceUID
    assert got.PatientName == sent.PatientName
    assert got.PixelData == sent.PixelData


@pytest.mark.filterwarnings("ignore:No bulk data URI handler")
def test_store_search_retrieve(server: str) -> None:
    client = dicomweb_client.DICOMwebClient(url=server)
    study, series = generate_uid(), generate_uid()
    sent = [make_ct(study_uid=study, series_uid=series, patient_id="DWC") for _ in range(3)]
    for n, ds in enumerate(sent):
        ds.InstanceNumber = n + 1
    multi = make_ct(study_uid=study, frames=4, rows=16, columns=16, patient_id="DWC")
    other = make_ct(patient_id="OTHER", patient_name="Other^Patient")
    stored = [*sent, multi, other]
    by_uid = {ds.SOPInstanceUID: ds for ds in stored}

    answer = client.store_instances(datasets=stored)
    assert len(answer.ReferencedSOPSequence) == 5
    assert "FailedSOPSequence" not in answer or not answer.FailedSOPSequence
    answer = client.store_instances(datasets=[sent[0]], study_instance_uid=study)
    assert len(answer.ReferencedSOPSequence) == 1

    # QIDO
    studies = client.search_for_studies()
    assert {Dataset.from_json(s).StudyInstanceUID for s in studies} == {
        study,
        other.StudyInstanceUID,
    }
    found = client.search_for_studies(
        search_filters={"PatientID": "DWC"}, fields=["StudyDescription"]
    )
    [one] = [Dataset.from_json(s) for s in found]
    assert one.StudyInstanceUID == study and one.NumberOfStudyRelatedInstances == 4
    assert client.search_for_studies(search_filters={"PatientName": "other*"}, fuzzymatching=False)
    series_list = [Dataset.from_json(s) for s in client.search_for_series(study)]
    assert {s.SeriesInstanceUID for s in series_list} == {series, multi.SeriesInstanceUID}
    assert len(client.search_for_series()) == 3  # relational
    instances = [Dataset.from_json(i) for i in client.search_for_instances(study, series)]
    assert sorted(i.SOPInstanceUID for i in instances) == sorted(ds.SOPInstanceUID for ds in sent)
    assert len(client.search_for_instances()) == 5
    assert len(client.search_for_instances(study)) == 4
    # paging until empty (get_remaining): every result once
    paged = client.search_for_instances(limit=2, get_remaining=True)
    assert sorted(Dataset.from_json(i).SOPInstanceUID for i in paged) == sorted(by_uid)

    # WADO-RS instances
    got = client.retrieve_instance(study, series, sent[1].SOPInstanceUID)
    same_instance(got, sent[1])
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    got_series = client.retrieve_series(study, series)
    assert len(got_series) == 3
    for ds in got_series:
        same_instance(ds, by_uid[ds.SOPInstanceUID])
    got_study = client.retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in got_study) == sorted(
        ds.SOPInstanceUID for ds in stored if ds.StudyInstanceUID == study
    )

    # metadata
    meta = client.retrieve_series_metadata(study, series)
    assert len(meta) == 3
    first = Dataset.from_json(meta[0])
    assert first.PatientID == "DWC" and first.Rows == 64
    instance_meta = client.retrieve_instance_metadata(study, series, sent[0].SOPInstanceUID)
    assert Dataset.from_json(instance_meta).SOPInstanceUID == sent[0].SOPInstanceUID
    assert len(client.retrieve_study_metadata(study)) == 4

    # frames and bulk data
    frame_size = 16 * 16 * 2
    frames = client.retrieve_instance_frames(
        study, multi.SeriesInstanceUID, multi.SOPInstanceUID, frame_numbers=[2, 4]
    )
    assert frames == [
        multi.PixelData[frame_size : 2 * frame_size],
        multi.PixelData[3 * frame_size :],
    ]
    frames = client.retrieve_instance_frames(
        study,
        multi.SeriesInstanceUID,
        multi.SOPInstanceUID,
        frame_numbers=[1],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    assert frames == [multi.PixelData[:frame_size]]
    multi_meta = client.retrieve_instance_metadata(
        study, multi.SeriesInstanceUID, multi.SOPInstanceUID
    )
    uri = multi_meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(server)
    assert client.retrieve_bulkdata(uri) == [multi.PixelData]

    # rendered
    import io

    from PIL import Image

    png = client.retrieve_instance_rendered(
        study, series, sent[0].SOPInstanceUID, media_types=("image/png",)
    )
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    jpeg = client.retrieve_instance_frames_rendered(
        study, multi.SeriesInstanceUID, multi.SOPInstanceUID, frame_numbers=[3]
    )
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    assert Image.open(io.BytesIO(client.retrieve_series_rendered(study, series))).format == "JPEG"


def test_errors_are_exceptions_not_crashes(server: str) -> None:
    import requests

    client = dicomweb_client.DICOMwebClient(url=server)
    with pytest.raises(requests.exceptions.HTTPError) as info:
        client.retrieve_study(generate_uid())
    assert info.value.response.status_code == 404
    with pytest.raises(requests.exceptions.HTTPError) as info:
        client.search_for_studies(search_filters={"NoSuchKeyword": "x"})
    assert info.value.response.status_code == 400
    # a STOW whose every instance fails is 409 (raised by the client)
    ds = make_ct()
    with pytest.raises(requests.exceptions.HTTPError) as info:
        client.store_instances(datasets=[ds], study_instance_uid=generate_uid())
    assert info.value.response.status_code == 409
    assert client.search_for_studies() == []
