"""``dicomnet web search|retrieve|store`` as a user runs them, against ``dicomnet serve
--http-port`` on 127.0.0.1: STOW of a folder (non-DICOM files skipped), QIDO as a table, DICOM
JSON and CSV, WADO-RS of a study into a folder (the data sets byte for byte), the exit codes (0
ok, 1 a failed operation, 2 an unreachable or refusing server or a bad command line), and DICOM
and DICOMweb on one archive: C-STORE then QIDO/WADO, STOW then C-FIND, metadata computed at
ingest."""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnet.web.config import DEFAULT_HTTP_PORT
from tests.cli.conftest import DICOMNET, IN_SUBFOLDER, Mixed, Serve, dataset_bytes, dicomnet
from tests.helpers import free_port, wait_for_port, write_ct

pytest.importorskip("aiohttp")


@dataclass
class WebServer:
    """``dicomnet serve`` with DICOMweb on a free port (DICOM on another)."""

    serve: Serve
    url: str

    @property
    def storage(self) -> Path:
        return self.serve.storage


@pytest.fixture
def server(serve: Callable[..., Serve]) -> WebServer:
    http = free_port()
    started = serve("--http-port", str(http), "--no-fsync")
    wait_for_port(http, started.proc)  # type: ignore[arg-type]
    return WebServer(started, f"http://127.0.0.1:{http}/dicom-web")


def test_store_search_retrieve(server: WebServer, mixed: Mixed, tmp_path: Path) -> None:
    # STOW of a folder: every DICOM file (sub-folder with -r), the others reported and skipped
    stored = dicomnet("web", "store", server.url, str(mixed.folder), "-r", "--batch", "3")
    assert stored.returncode == 0, stored.stderr
    count = len(mixed.files)
    assert f"stored {count} of {count} files" in stored.stderr
    assert f"{len(mixed.not_dicom)} skipped" in stored.stderr
    on_disk = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in server_files(server)}
    sent = {dcmread(f.path, stop_before_pixels=True).SOPInstanceUID for f in mixed.files.values()}
    assert on_disk == sent  # (one file's meta information names another SOP Instance UID)

    # QIDO: JSON (as the server answered), CSV and a table
    result = dicomnet("web", "search", server.url, "-L", "instances", "--json", "-q")
    assert result.returncode == 0, result.stderr
    matches = json.loads(result.stdout)
    assert {m["00080018"]["Value"][0] for m in matches} == sent

    ct = mixed.files["CT_small.dcm"]
    ct_ds = dcmread(ct.path, stop_before_pixels=True)
    result = dicomnet(
        "web", "search", server.url, "-k", "0008,0020", "-k", f"StudyInstanceUID={ct_ds.StudyInstanceUID}",
        "--csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["StudyInstanceUID"] for r in rows] == [ct_ds.StudyInstanceUID]
    assert list(rows[0])[:2] == ["StudyDate", "StudyInstanceUID"]  # the -k keys first
    assert rows[0]["StudyDate"] == ct_ds.StudyDate
    assert "1 match in" in result.stderr

    result = dicomnet("web", "search", server.url, "-L", "series", "--study",
                      ct_ds.StudyInstanceUID)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ct_ds.SeriesInstanceUID in result.stdout and "SeriesInstanceUID" in result.stdout

    # WADO-RS of the study into a folder, as stored
    out = tmp_path / "got"
    result = dicomnet("web", "retrieve", server.url, ct_ds.StudyInstanceUID, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "retrieved 1 instance " in result.stderr
    assert [p.name for p in out.iterdir()] == [f"{ct.sop_instance_uid}.dcm"]
    assert dataset_bytes(out / f"{ct.sop_instance_uid}.dcm") == dataset_bytes(ct.path)


def server_files(server: WebServer) -> list[Path]:
    return [p for p in server.storage.rglob("*.dcm") if ".incoming" not in p.parts]


def test_retrieve_a_series_in_the_default_transfer_syntax(
    server: WebServer, tmp_path: Path
) -> None:
    study = "1.2.826.0.1.3680043.10.1472.99.1"
    paths = [write_ct(tmp_path / "in" / f"{n}.dcm", study_uid=study, series_uid=f"{study}.1")
             for n in range(3)]  # fmt: skip
    assert dicomnet("web", "store", server.url, str(tmp_path / "in"), "-q").returncode == 0
    out = tmp_path / "series"
    result = dicomnet("web", "retrieve", server.url, study, f"{study}.1", "--out", str(out),
                      "--transfer-syntax", "default", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in out.iterdir()) == sorted(ds.SOPInstanceUID for ds in paths)
    for path in out.iterdir():
        assert dcmread(path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_failures_exit_with_1(server: WebServer, tmp_path: Path) -> None:
    ds = write_ct(tmp_path / "in" / "a.dcm")
    # a study other than the instance's: not stored, the reason named
    result = dicomnet("web", "store", server.url, str(tmp_path / "in"), "--study", "1.2.3.4")
    assert result.returncode == 1
    assert "stored 0 of 1 files" in result.stderr
    assert f"failed: {ds.SOPInstanceUID}: FailureReason 0xA901" in result.stderr
    # nothing to retrieve
    result = dicomnet("web", "retrieve", server.url, "1.2.3.4", "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr
    # a match value the server refuses
    result = dicomnet("web", "search", server.url, "-k", "StudyDate=2024-")
    assert result.returncode == 1
    assert "HTTP 400" in result.stderr
    # no DICOM file to send
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not DICOM")
    result = dicomnet("web", "store", server.url, str(tmp_path / "text"))
    assert result.returncode == 1
    assert "nothing to send" in result.stderr


def test_unreachable_server_and_bad_command_lines_exit_with_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    for args in (
        ("search", url),
        ("retrieve", url, "1.2.3", "--out", str(tmp_path / "o")),
        ("store", url, str(write_path(tmp_path))),
    ):
        result = dicomnet("web", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "cannot reach the server" in result.stderr
    result = dicomnet("web", "search", url, "-k", "PatientNme=X")
    assert result.returncode == 2 and "unknown attribute 'PatientNme'" in result.stderr
    result = dicomnet("web", "search", "pacs:8042", "-q")
    assert result.returncode == 2 and "DICOMweb root" in result.stderr
    result = dicomnet("web", "retrieve", url, "1.2.x", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not a valid UID" in result.stderr


def write_path(tmp_path: Path) -> Path:
    path = tmp_path / "one.dcm"
    write_ct(path)
    return path


def test_refused_is_2_and_other_http_errors_are_1() -> None:
    """401/403 are a refusal (as a rejected association), other statuses a failed operation."""
    from dicomnet.cli.web import _web_main
    from dicomnet.web.client import DicomWebError

    for status, code in ((401, 2), (403, 2), (404, 1), (500, 1), (409, 1)):

        async def fail(status: int = status) -> int:
            raise DicomWebError(status, "no", "http://x/dicom-web")

        assert _web_main(fail) == code, status


def test_subfolders_only_with_recursive(server: WebServer, mixed: Mixed) -> None:
    result = dicomnet("web", "store", server.url, str(mixed.folder), "-q")
    assert result.returncode == 0, result.stderr
    top = len(mixed.files) - len(IN_SUBFOLDER)
    assert f"stored {top} of {top} files" in result.stderr


def test_dicom_and_dicomweb_on_one_archive(server: WebServer, tmp_path: Path) -> None:
    """C-STORE (dicomnet store) then QIDO and WADO-RS see it, its metadata computed at ingest;
    STOW (dicomnet web store) then C-FIND (dicomnet find) sees it."""
    import sqlite3

    study = "1.2.826.0.1.3680043.10.1472.99.2"
    by_dimse = write_ct(tmp_path / "dimse" / "a.dcm", study_uid=study, patient_id="ONE")
    by_web = write_ct(tmp_path / "web" / "b.dcm", study_uid=study, patient_id="ONE")
    port = str(server.serve.port)
    result = dicomnet("store", "127.0.0.1", port, str(tmp_path / "dimse"), "--aec", "DICOMNET")
    assert result.returncode == 0, result.stderr
    result = dicomnet("web", "search", server.url, "-L", "instances", "--study", study, "--csv")
    assert result.returncode == 0, result.stderr
    assert [r["SOPInstanceUID"] for r in csv.DictReader(io.StringIO(result.stdout))] == [
        by_dimse.SOPInstanceUID
    ]
    index = server.storage / ".dicomnet-index.sqlite"
    deadline = time.monotonic() + 30  # written by a worker thread after the C-STORE answer
    while True:  # the fragment is computed at ingest, not on request (nothing asked for it)
        with sqlite3.connect(index) as db:
            rows = db.execute("SELECT sop_instance_uid FROM instance_metadata").fetchall()
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rows == [(by_dimse.SOPInstanceUID,)]
    assert dicomnet("web", "store", server.url, str(tmp_path / "web"), "-q").returncode == 0
    result = dicomnet("find", "127.0.0.1", port, "--aec", "DICOMNET", "-L", "IMAGE", "--csv",
                      "-k", f"StudyInstanceUID={study}",
                      "-k", f"SeriesInstanceUID={by_web.SeriesInstanceUID}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = [r["SOPInstanceUID"] for r in csv.DictReader(io.StringIO(result.stdout))]
    assert found == [by_web.SOPInstanceUID]
    out = tmp_path / "both"
    result = dicomnet("web", "retrieve", server.url, study, "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in out.iterdir()) == sorted(
        [by_dimse.SOPInstanceUID, by_web.SOPInstanceUID]
    )


def test_workers_share_the_http_socket_and_stop_together(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    """--workers 2 with DICOMweb: both processes answer HTTP from the one socket bound before
    the fork (each has its own fragment writer, a child at nice 19), every request succeeds,
    and SIGTERM stops them all."""
    import psutil

    http = free_port()
    server = serve("--workers", "2", "--http-port", str(http), "--no-fsync")
    url = f"http://127.0.0.1:{http}/dicom-web"
    wait_for_port(http, server.proc)  # type: ignore[arg-type]
    for n in range(6):
        write_ct(
            tmp_path / "in" / f"{n}.dcm",
            patient_id="W2",
            study_uid="1.2.826.0.1.3680043.10.1472.99.3",
        )
    assert dicomnet("web", "store", url, str(tmp_path / "in"), "-q").returncode == 0
    for _ in range(4):  # connections spread over both processes' accept calls
        result = dicomnet("web", "search", url, "-k", "PatientID=W2", "--csv", "-q")
        assert result.returncode == 0, result.stderr
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert [r["NumberOfStudyRelatedInstances"] for r in rows] == ["6"]
    family = psutil.Process(server.proc.pid).children(recursive=True)
    assert len(family) >= 3  # a worker, and a metadata child per process
    assert server.stop() == 0
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family):
        assert time.monotonic() < deadline, [p.cmdline() for p in family if p.is_running()]
        time.sleep(0.05)


def test_http_port_errors_and_the_default_port_taken(tmp_path: Path) -> None:
    """A port asked for that is taken: exit 2 before anything listens. --no-index with a web
    option, or a viewer folder with no viewer: a usage error. The default port taken: DICOMweb
    off with a warning, DICOM served."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        port = free_port()
        result = dicomnet("serve", "--port", str(port), "--http-port", str(busy),
                          "--storage", str(tmp_path / "a"))  # fmt: skip
        assert result.returncode == 2
        assert f"cannot listen for DICOMweb on 127.0.0.1:{busy}" in result.stderr
    result = dicomnet("serve", "--port", str(free_port()), "--no-index", "--http-port", "0",
                      "--storage", str(tmp_path / "b"))  # fmt: skip
    assert result.returncode == 2 and "--no-index" in result.stderr
    result = dicomnet("serve", "--port", str(free_port()), "--viewer-dir", str(tmp_path),
                      "--storage", str(tmp_path / "c"))  # fmt: skip
    assert result.returncode == 2 and "make ohif" in result.stderr
    # the default port taken (by this test, or by whoever holds it): a warning, DICOM served
    try:
        holder: socket.socket | None = socket.create_server(("127.0.0.1", DEFAULT_HTTP_PORT))
    except OSError:
        holder = None  # taken already
    try:
        port = free_port()
        log = tmp_path / "default.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([*DICOMNET, "serve", "--port", str(port), "--storage",
                                     str(tmp_path / "e")], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                wait_for_port(port, proc)  # type: ignore[arg-type]
                result = dicomnet("echo", "127.0.0.1", str(port), "--aec", "DICOMNET")
                assert result.returncode == 0
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0
        assert "DICOMweb is off: cannot listen on 127.0.0.1:8042" in log.read_text()
    finally:
        if holder is not None:
            holder.close()


def test_index_computes_the_metadata(tmp_path: Path) -> None:
    """`dicomnet index` writes the DICOMweb metadata of every instance, then only of new or
    changed files; --no-metadata skips it."""
    root = tmp_path / "folder"
    for n in range(3):
        write_ct(root / f"{n}.dcm")
    result = dicomnet("index", str(root), "--no-metadata")
    assert result.returncode == 0 and "DICOMweb" not in result.stdout
    result = dicomnet("index", str(root))
    assert result.returncode == 0, result.stderr
    assert "DICOMweb metadata of 3 instances computed" in result.stdout
    write_ct(root / "new.dcm")
    result = dicomnet("index", str(root))
    assert "DICOMweb metadata of 1 instances computed" in result.stdout
