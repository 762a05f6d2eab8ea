"""Shared test helpers: synthetic instances, peer discovery, subprocess runners.

Peers (DCMTK tools, pynetdicom) are optional on a developer's machine: a test that needs one calls
``require_tool``/``require_pynetdicom``, which skips with the reason, or fails when
``DICOMNET_REQUIRE_PEERS=1`` (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REQUIRE_PEERS = os.environ.get("DICOMNET_REQUIRE_PEERS") == "1"


def _missing(reason: str) -> None:
    if REQUIRE_PEERS:
        pytest.fail(f"{reason} (DICOMNET_REQUIRE_PEERS=1: peers are required)")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of a DCMTK tool; skip (or fail in CI) when it is not installed.

    pynetdicom installs Python console scripts with the same names (storescu, findscu, ...) into
    the virtual environment's bin folder, which comes first on PATH once the environment is
    activated; those are skipped here so that a DCMTK test really talks to DCMTK."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = shutil.which(name, path=folder or ".")
        if path is not None and not _is_python_script(path):
            return path
    _missing(f"peer missing: DCMTK's {name} is not installed (apt-get install dcmtk)")
    raise AssertionError("unreachable")


def _is_python_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


#: How the tests start Debian's chromium (besides playwright's own headless flags): no sandbox
#: (root in CI), no GPU (SwiftShader renders WebGL), and none of the background connections to
#: Google's hosts that a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where ``make ohif`` unpacks the prebuilt OHIF viewer (DICOMNET_OHIF_DIR overrides).
OHIF_DIR = Path(__file__).resolve().parents[1] / "ohif" / "dist"


def require_chromium() -> str:
    """The path of Debian's chromium, with Python's playwright to drive it (never a browser
    download); skip (or fail in CI) when either is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("peer missing: Debian's chromium is not installed (apt-get install chromium)")
        raise AssertionError("unreachable")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _missing("peer missing: playwright is not installed (pip install playwright)")
    return path


def require_ohif() -> Path:
    """The prebuilt OHIF viewer's folder; skip (or fail in CI) when ``make ohif`` did not run."""
    folder = Path(os.environ.get("DICOMNET_OHIF_DIR") or OHIF_DIR)
    if not (folder / "index.html").is_file():
        _missing(f"peer missing: no OHIF viewer in {folder} (run `make ohif`)")
    return folder


def require_pynetdicom() -> None:
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        _missing("peer missing: pynetdicom is not installed (pip install pynetdicom)")


def echo_statuses(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The status of every "Received Echo Response (<status>)" line of ``echoscu -v``, in order.

    echoscu exits with 0 whatever status the C-ECHO-RSP carries, so a test that cares about the
    answer counts these lines instead of trusting the exit status."""
    return re.findall(r"Received Echo Response \(([^)]*)\)", result.stdout + result.stderr)


def dcmtk_env() -> dict[str, str]:
    """DCMTK keeps Nagle's algorithm on unless told; every message would wait for a delayed ACK."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ct(
    rows: int = 64,
    columns: int = 64,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_id: str = "PAT001",
    patient_name: str = "DOE^JOHN",
    frames: int = 1,
) -> Dataset:
    """A synthetic CT instance (16 bit, explicit VR little endian) with deterministic pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.Modality = "CT"
    ds.AccessionNumber = "A1"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    size = rows * columns * 2 * frames
    pattern = bytes(range(256)) * (size // 256 + 1)
    ds.PixelData = pattern[:size]
    return ds


def write_ct(path: Path, **kwargs: object) -> Dataset:
    ds = make_ct(**kwargs)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def run(
    cmd: Sequence[str], timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a peer tool with TCP_NODELAY=1, capturing its output for the assertion message."""
    return subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dcmtk_env(),
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15
) -> None:
    """Wait until something accepts connections on 127.0.0.1:port (readiness, not a sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
