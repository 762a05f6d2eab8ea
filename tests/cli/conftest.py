"""Fixtures for the ``dicomnet`` command tested as a user runs it: the installed entry point (or
``python -m dicomnet``) in subprocesses, ``dicomnet serve`` on a free port of 127.0.0.1 stopped by
its PID, and a folder of DICOM files of several SOP classes and transfer syntaxes with a
non-DICOM file and an empty file among them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicomnet.dataset import FileInfo, read_file_info
from tests.helpers import free_port, wait_for_port
from tests.interop.conftest import dcmtk_storescp  # noqa: F401  (a fixture, re-exported)

_ENTRY_POINT = Path(sys.executable).with_name("dicomnet")
#: How a user runs the command: the console script of this venv, else ``python -m dicomnet``.
DICOMNET: list[str] = (
    [str(_ENTRY_POINT)] if _ENTRY_POINT.exists() else [sys.executable, "-m", "dicomnet"]
)

#: pydicom test files with distinct SOP Instance UIDs: (name, SOP class, transfer syntax).
MIXED: list[tuple[str, str, str]] = [
    ("CT_small.dcm", "CT", "Explicit VR Little Endian"),
    ("MR_small_RLE.dcm", "MR", "RLE Lossless"),
    ("SC_rgb_jpeg_dcmtk.dcm", "SC", "JPEG Baseline"),
    ("JPEG2000.dcm", "SC", "JPEG 2000"),
    ("ExplVR_BigEnd.dcm", "US", "Explicit VR Big Endian"),
    ("image_dfl.dcm", "SC", "Deflated Explicit VR Little Endian (odd length, unpadded)"),
    ("reportsi.dcm", "Basic Text SR", "Explicit VR Little Endian"),
    ("rtplan.dcm", "RT Plan", "Implicit VR Little Endian"),
]
#: Put in a sub-folder, so they are only sent with --recursive.
IN_SUBFOLDER = {"reportsi.dcm", "rtplan.dcm"}


def dicomnet(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``dicomnet ARGS`` to completion, capturing its output."""
    return subprocess.run(
        [*DICOMNET, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information (the data set as sent)."""
    info = read_file_info(path)
    with open(path, "rb") as f:
        f.seek(info.offset)
        return f.read()


@dataclass
class Mixed:
    folder: Path
    files: dict[str, FileInfo]  # name -> meta information of the copy in ``folder``
    not_dicom: list[Path]


@pytest.fixture(scope="session")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Mixed:
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "sub").mkdir()
    files: dict[str, FileInfo] = {}
    for name, _, _ in MIXED:
        source = get_testdata_file(name)
        assert source is not None, name
        target = folder / "sub" / name if name in IN_SUBFOLDER else folder / name
        shutil.copyfile(str(source), target)
        files[name] = read_file_info(target)
    assert len({f.sop_instance_uid for f in files.values()}) == len(files)
    notes = folder / "notes.txt"
    notes.write_text("not a DICOM file\n")
    empty = folder / "empty.dcm"
    empty.write_bytes(b"")
    return Mixed(folder, files, [notes, empty])


#: Options that make a ``Serve`` serve DICOMweb too (without one it gets ``--no-web``).
WEB_OPTIONS = {"--http-port", "--no-web", "--viewer", "--viewer-dir"}


class Serve:
    """``dicomnet serve`` in a subprocess on a free port, its log in a file."""

    def __init__(
        self, storage: Path, *args: str, port: int | None = None, cwd: Path | None = None
    ) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.log_path = storage.parent / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115
        command = [*DICOMNET, "serve", *args]
        if "--config" not in args:
            command += ["--port", str(self.port), "--storage", str(storage)]
        if not WEB_OPTIONS & set(args):  # DICOM only, unless the test is about DICOMweb
            command.append("--no-web")
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            wait_for_port(self.port, self.proc, timeout=30)  # type: ignore[arg-type]
        except BaseException:
            self.stop()
            raise

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def send(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not stop in time; returns the exit code."""
        self.send(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code

    def stored(self) -> list[Path]:
        return sorted(p for p in self.storage.rglob("*.dcm") if ".incoming" not in p.parts)

    def temporary_files(self) -> list[Path]:
        return [p for p in self.storage.rglob("*") if p.suffix == ".part" or ".incoming" in p.parts]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str, storage: Path | None = None, **kwargs: object) -> Serve:
        server = Serve(storage or tmp_path / f"store-{len(started)}", *args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()
