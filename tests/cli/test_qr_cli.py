"""``dicomnet find``, ``move`` and ``get`` as subprocesses against DCMTK's dcmqrscp: output as a
table, DICOM JSON and CSV, C-MOVE received by the command itself (``--listen``), C-GET into a
folder, and the exit codes of failures."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.interop.test_qr_client_dcmqrscp import (
    DEST_AET,
    Archive,
    Dcmqrscp,
    dataset_bytes,
    make_archive,
)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return make_archive(tmp_path_factory.mktemp("cli-archive"))


@pytest.fixture(scope="module")
def dest_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def qrscp(
    archive: Archive, dest_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dcmqrscp]:
    server = Dcmqrscp(
        tmp_path_factory.mktemp("cli-dcmqrscp"), list(archive.files.values()), {DEST_AET: dest_port}
    )
    yield server
    server.stop()


def dicomnet(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomnet.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def peer(qrscp: Dcmqrscp) -> list[str]:
    return ["127.0.0.1", str(qrscp.port), "--aec", qrscp.aet, "--timeout", "30"]


@pytest.mark.interop
def test_find_prints_a_table(qrscp: Dcmqrscp) -> None:
    result = dicomnet("find", *peer(qrscp), "-L", "STUDY", "-k", "PatientName=SMITH*")
    assert result.returncode == 0, result.stderr
    assert "SMITH^JOHN" in result.stdout and "SMITHERS^ANN" in result.stdout
    assert "JONES" not in result.stdout
    assert "StudyInstanceUID" in result.stdout  # a default return key of the level
    assert "2 matches" in result.stderr


@pytest.mark.interop
def test_find_json_in_the_dicom_json_model(qrscp: Dcmqrscp, archive: Archive) -> None:
    result = dicomnet(
        "find",
        *peer(qrscp),
        "-k",
        "StudyDate=20240101-",
        "-k",
        "0010,0020",
        "--no-default-keys",
        "-k",
        "StudyInstanceUID",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    matches = json.loads(result.stdout)
    assert sorted(m["00100020"]["Value"][0] for m in matches) == ["P1", "P3"]
    assert all(m["00080052"] == {"vr": "CS", "Value": ["STUDY"]} for m in matches)
    studies = {m["0020000D"]["Value"][0] for m in matches}
    assert studies == {archive.patients["P1"][1][0], archive.patients["P3"][1][0]}


@pytest.mark.interop
def test_find_csv_series_level(qrscp: Dcmqrscp, archive: Archive) -> None:
    study = archive.patients["P1"][1][0]
    result = dicomnet(
        "find",
        *peer(qrscp),
        "-L",
        "series",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        "0008,0060",
        "--csv",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["SeriesInstanceUID"] for r in rows) == sorted(archive.studies[study])
    assert {r["Modality"] for r in rows} == {"CT"}


@pytest.mark.interop
def test_find_patient_root_patient_level(qrscp: Dcmqrscp) -> None:
    result = dicomnet(
        "find", *peer(qrscp), "-P", "-L", "PATIENT", "-k", "PatientID=P3", "--csv", "-q"
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["PatientID"], r["PatientName"]) for r in rows] == [("P3", "JONES^BOB")]


def test_find_refuses_an_unknown_key() -> None:
    # checked before connecting: nothing listens on the port, and the error is about the key
    result = dicomnet("find", "127.0.0.1", str(free_port()), "-k", "PatientNme=X")
    assert result.returncode == 2
    assert "unknown attribute 'PatientNme'" in result.stderr


def test_find_without_a_peer_fails_with_2() -> None:
    result = dicomnet("find", "127.0.0.1", str(free_port()), "-k", "PatientID=1")
    assert result.returncode == 2
    assert "cannot connect" in result.stderr


@pytest.mark.interop
def test_move_with_listen_receives_the_study(
    qrscp: Dcmqrscp, archive: Archive, dest_port: int, tmp_path: Path
) -> None:
    study = archive.patients["P1"][1][0]
    out = tmp_path / "moved"
    result = dicomnet(
        "move",
        *peer(qrscp),
        "--aet",
        DEST_AET,
        "--listen",
        str(dest_port),
        "--out",
        str(out),
        "-k",
        f"StudyInstanceUID={study}",
    )
    assert result.returncode == 0, result.stderr
    assert "3 completed, 0 failed" in result.stderr
    assert "received 3" in result.stderr
    files = sorted(p for p in out.rglob("*.dcm"))
    assert sorted(p.stem for p in files) == sorted(archive.instances(study))
    for path in files:
        assert path.parent.parent.name == study
        assert dataset_bytes(path) == dataset_bytes(archive.files[path.stem])


@pytest.mark.interop
def test_move_to_an_unknown_destination_fails(qrscp: Dcmqrscp, archive: Archive) -> None:
    study = archive.patients["P3"][1][0]
    result = dicomnet("move", *peer(qrscp), "--dest", "NOSUCHAE", "-k", f"StudyInstanceUID={study}")
    assert result.returncode == 1
    assert "0xA801" in result.stderr


def test_move_needs_a_destination() -> None:
    result = dicomnet("move", "127.0.0.1", str(free_port()), "-k", "StudyInstanceUID=1.2")
    assert result.returncode == 2
    assert "--dest" in result.stderr


@pytest.mark.interop
def test_get_into_a_folder(qrscp: Dcmqrscp, archive: Archive, tmp_path: Path) -> None:
    study = archive.patients["P2"][1][0]
    out = tmp_path / "got"
    result = dicomnet("get", *peer(qrscp), "-k", f"StudyInstanceUID={study}", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 completed, 0 failed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{uid}.dcm" for uid in archive.instances(study)
    )
    for path in out.iterdir():
        assert dataset_bytes(path) == dataset_bytes(archive.files[path.stem])


@pytest.mark.interop
def test_get_series_patient_root(qrscp: Dcmqrscp, archive: Archive, tmp_path: Path) -> None:
    study = archive.patients["P1"][1][0]
    series = sorted(archive.studies[study])[0]
    out = tmp_path / "got"
    result = dicomnet(
        "get",
        *peer(qrscp),
        "-P",
        "-L",
        "SERIES",
        "-k",
        "PatientID=P1",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={series}",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in out.iterdir()) == archive.studies[study][series]
