"""DICOMweb benchmarks (issue 13): ``dicomnet serve`` against Orthanc 1.10 with its DICOMweb
plugin 1.7 (Debian's ``orthanc`` and ``orthanc-dicomweb``), on the same data in the same run.

    python bench/web.py            # every row (about 3 minutes; the first run generates the data)
    python bench/web.py --quick    # fewer requests, one STOW round

Data (generated once into ``bench/.data/web``, about 650 MB): CT instances 512x512x16 bit with a
realistic header (about 65 attributes), in 4 studies of one 50-instance series, one study of one
500-instance series, and 5 sets of 100 instances with their own UIDs for STOW. Both servers get
the same files with DCMTK's storescu (their C-STORE path), then each row's request is sent to
both in turn, the first one alternating, over one keep-alive connection each (Python's
http.client; the body is read whole), after warm-up requests. The table gives the median (and
the 90th percentile) of the round trips. A different instance or series is asked each time, so
that no answer is a repeat of the one before (dicomnet caches rendered thumbnails, not these).
STOW: one request of 100 new instances per round (each round a new set, the same set to both),
sent with Content-Length and no ``Expect: 100-continue`` (Orthanc never answers it).

Orthanc runs with a configuration file of its own in a temporary folder (HTTP and DICOM ports,
no authentication, no remote access, ``SeriesMetadata: Full`` so that both answer the complete
metadata, ``StorageCompression`` off), stopped by its PID. Orthanc 1.10 cannot be told to listen
on 127.0.0.1 only, so the whole benchmark runs in a network namespace of its own that has only
the loopback interface (``unshare --net``, when it can be made; otherwise on the machine's
loopback, said in the output).

The 1,000,000-instance row is dicomnet's alone: the index of ``bench/qr.py`` (10,000 patients;
rows generated directly, no files) served by ``dicomnet serve``; Orthanc would take hours to
ingest as many instances. Its queries: OHIF's study list (``limit=101``), a PatientID, and a
PatientName prefix, a new value each time.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

from data import ROOT  # noqa: E402
from peers import PYTHON, dcmtk, dicomnet_cli  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import dcmtk_env, free_port, wait_for_port  # noqa: E402

CACHE = BENCH / ".data" / "web"
VERSION = "1"
ENV = dcmtk_env()
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
UID_ROOT = "1.2.826.0.1.3680043.10.1472.13"
JSON = {"Accept": "application/dicom+json"}
OHIF_LIST = (
    "/dicom-web/studies?limit=101&offset=0&fuzzymatching=false"
    "&includefield=00081030%2C00080060%2C00080090%2C00100030"
)
FRAMES = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
STOW_SETS = 5


# --- data -------------------------------------------------------------------------------------------


@dataclass
class Series:
    study: str
    series: str
    instances: list[str]
    files: list[Path]


@dataclass
class WebData:
    small: list[Series]  # 4 studies of one 50-instance series
    large: Series  # one 500-instance series
    stow: list[list[Path]]  # sets of 100 new instances

    def all_files(self) -> list[Path]:
        return [f for s in [*self.small, self.large] for f in s.files]


def _header(study: str, series: str, n: int, patient: int) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{series}.{n + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", "20240315")
        setattr(ds, f"{prefix}Time", "101500.000000")
    ds.AccessionNumber = f"ACC{patient:05d}"
    ds.Modality = "CT"
    ds.Manufacturer = "dicomnet bench"
    ds.InstitutionName = "Loopback General Hospital"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StationName = "CT01"
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.SeriesDescription = "AXIAL 1.0 B30f"
    ds.ManufacturerModelName = "Synthetic 64"
    ds.PatientName = f"PATIENT^{patient:05d}"
    ds.PatientID = f"PID{patient:05d}"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.PatientAge = "064Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = "360"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "250"
    ds.Exposure = "125"
    ds.ConvolutionKernel = "B30f"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = n + 1
    ds.ImagePositionPatient = ["-180.0", "-180.0", f"{-n * 1.0:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = f"{study}.9"
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{-n * 1.0:.1f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.PixelSpacing = ["0.703125", "0.703125"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    return ds


def _slices() -> list[bytes]:
    """16 distinct 512x512 slices: a body ellipse with organs and noise (compresses as CT does)."""
    import numpy as np

    rng = np.random.default_rng(13)
    y, x = np.mgrid[-256:256, -256:256]
    out = []
    for k in range(16):
        image = np.full((512, 512), 24.0)  # air (-1000 HU)
        body = (x / 220) ** 2 + (y / 160) ** 2 < 1
        image[body] = 1064  # soft tissue (+40 HU)
        for cx, cy, r, hu in ((-90, 0, 60 + k, -800), (90, 0, 58 + k, -800), (0, 80, 18, 1000)):
            image[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = 1024 + hu
        image += rng.normal(0, 12, image.shape)
        out.append(np.clip(image, 0, 4095).astype(np.uint16).tobytes())
    return out


def _write_series(folder: Path, study: str, series: str, count: int, patient: int,
                  slices: list[bytes]) -> Series:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    files, uids = [], []
    for n in range(count):
        ds = _header(study, series, n, patient)
        ds.PixelData = slices[n % len(slices)]
        path = folder / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        uids.append(str(ds.SOPInstanceUID))
    return Series(study, series, uids, files)


def ensure_data() -> WebData:
    """The generated instances (once; again when VERSION changes)."""
    stamp = CACHE / "done"
    layout = CACHE / "layout.json"
    if not (stamp.exists() and stamp.read_text() == VERSION and layout.exists()):
        start = time.perf_counter()
        print(f"generating the DICOMweb data into {CACHE} (once) ...", flush=True)
        shutil.rmtree(CACHE, ignore_errors=True)
        slices = _slices()
        small = [_write_series(CACHE / f"s50-{k}", f"{UID_ROOT}.1.{k}", f"{UID_ROOT}.1.{k}.1",
                               50, k, slices) for k in range(4)]  # fmt: skip
        large = _write_series(CACHE / "s500", f"{UID_ROOT}.2", f"{UID_ROOT}.2.1", 500, 10, slices)
        stow = [
            _write_series(CACHE / f"stow-{r}", f"{UID_ROOT}.3.{r}", f"{UID_ROOT}.3.{r}.1", 100,
                          20 + r, slices).files
            for r in range(STOW_SETS)
        ]  # fmt: skip
        data = WebData(small, large, stow)
        layout.write_text(json.dumps(_to_json(data)))
        stamp.write_text(VERSION)
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return _from_json(json.loads(layout.read_text()))


def _to_json(data: WebData) -> dict[str, Any]:
    def one(s: Series) -> dict[str, Any]:
        return {"study": s.study, "series": s.series, "instances": s.instances,
                "files": [str(f) for f in s.files]}  # fmt: skip

    return {"small": [one(s) for s in data.small], "large": one(data.large),
            "stow": [[str(f) for f in fs] for fs in data.stow]}  # fmt: skip


def _from_json(raw: dict[str, Any]) -> WebData:
    def one(s: dict[str, Any]) -> Series:
        return Series(s["study"], s["series"], s["instances"], [Path(f) for f in s["files"]])

    return WebData([one(s) for s in raw["small"]], one(raw["large"]),
                   [[Path(f) for f in fs] for fs in raw["stow"]])  # fmt: skip


# --- servers ----------------------------------------------------------------------------------------


@dataclass
class WebServer:
    name: str
    proc: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    aet: str
    log: Any

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def _wait_http(port: int, proc: subprocess.Popen[bytes], path: str, timeout: float = 120) -> None:
    """Until ``GET path`` answers 200 (readiness; Orthanc opens its port before its plugins)."""
    deadline = time.monotonic() + timeout
    wait_for_port(port, proc, timeout=timeout)  # type: ignore[arg-type]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before answering {path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path, headers=JSON)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"127.0.0.1:{port}{path} did not answer 200 in {timeout} s")


def start_orthanc(folder: Path) -> WebServer:
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "SaveJobs": False,
        "Plugins": [ORTHANC_PLUGIN],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT, env=ENV,
                            cwd=folder)  # fmt: skip
    server = WebServer("Orthanc", proc, http_port, dicom_port, "ORTHANC", log)
    try:
        _wait_http(http_port, proc, "/dicom-web/studies")
    except BaseException:
        server.stop()
        raise
    return server


def start_dicomnet(storage: Path, *extra: str) -> WebServer:
    storage.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    log = open(storage.parent / f"dicomnet-{http_port}.log", "wb")  # noqa: SIM115
    cmd = [dicomnet_cli(), "serve", "--host", "127.0.0.1", "--port", str(dicom_port),
           "--http-port", str(http_port), "--storage", str(storage), "--no-fsync", "-q", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    server = WebServer("dicomnet", proc, http_port, dicom_port, "DICOMNET", log)
    try:
        _wait_http(http_port, proc, "/dicom-web/studies?limit=1")
    except BaseException:
        server.stop()
        raise
    return server


def load(server: WebServer, files: list[Path]) -> float:
    """C-STORE ``files`` with storescu; returns the seconds it took."""
    start = time.perf_counter()
    for chunk in range(0, len(files), 400):  # command lines of a bounded length
        result = subprocess.run(
            [dcmtk("storescu"), "-aec", server.aet, "-pdu", "131072", "127.0.0.1",
             str(server.dicom_port), *map(str, files[chunk : chunk + 400])],
            capture_output=True, env=ENV, timeout=600, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"storescu to {server.name}: {result.stderr[-500:]!r}")
    return time.perf_counter() - start


# --- requests ---------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to a server. A connection the server closed while idle (its
    keep-alive timeout) is made again and the request sent again, as browsers do; the time
    counted is that of the request that got the answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def _again(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)

    def request(self, method: str, path: str, headers: dict[str, str],
                body: bytes | None = None) -> tuple[float, int, bytes]:  # fmt: skip
        for attempt in (1, 2):
            start = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self._again()
                if attempt == 2:
                    raise
                continue
            except (OSError, http.client.HTTPException):
                self._again()
                raise
            elapsed = time.perf_counter() - start
            if response.getheader("Connection", "").lower() == "close":
                self._again()
            return elapsed, response.status, data
        raise AssertionError("unreachable")


@dataclass
class Row:
    label: str
    times: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    note: str = ""

    def stat(self, name: str) -> tuple[float, float] | None:
        times = sorted(self.times.get(name, []))
        if not times:
            return None
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        return statistics.median(times) * 1000, p90 * 1000


#: (label, f(data, server kind, rep) -> (method, path, headers), check of the answer)
Request = Callable[[WebData, int], tuple[str, str, dict[str, str]]]


def _instance_path(s: Series, i: int) -> str:
    return f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instances[i]}"


def requests(data: WebData) -> list[tuple[str, Request, Callable[[bytes], str | None]]]:
    def count(n: int) -> Callable[[bytes], str | None]:
        def check(body: bytes) -> str | None:
            got = len(json.loads(body))
            return None if got == n else f"{got} results, not {n}"

        return check

    def nonempty(body: bytes) -> str | None:
        return None if len(body) > 1000 else f"{len(body)} bytes"

    studies = len(data.small) + 1
    return [
        ("QIDO /studies", lambda d, r: ("GET", "/dicom-web/studies", JSON), count(studies)),
        ("QIDO /studies, OHIF's study-list query", lambda d, r: ("GET", OHIF_LIST, JSON),
         count(studies)),
        ("QIDO instances of a 50-instance series",
         lambda d, r: ("GET", f"/dicom-web/studies/{d.small[r % 4].study}/series/"
                              f"{d.small[r % 4].series}/instances", JSON), count(50)),
        ("WADO-RS series metadata, 50 instances",
         lambda d, r: ("GET", f"/dicom-web/studies/{d.small[r % 4].study}/series/"
                              f"{d.small[r % 4].series}/metadata", JSON), count(50)),
        ("WADO-RS series metadata, 500 instances",
         lambda d, r: ("GET", f"/dicom-web/studies/{d.large.study}/series/{d.large.series}"
                              "/metadata", JSON), count(500)),
        ("WADO-RS frames/1 (OHIF's Accept), 512 KB",
         lambda d, r: ("GET", _instance_path(d.large, r % 500) + "/frames/1", FRAMES), nonempty),
        ("WADO-RS rendered, image/jpeg",
         lambda d, r: ("GET", _instance_path(d.large, (r * 7) % 500) + "/rendered",
                       {"Accept": "image/jpeg"}), nonempty),
    ]  # fmt: skip


def stow_body(files: list[Path]) -> tuple[bytes, str]:
    boundary = "dicomnet-bench-" + hashlib.sha1(str(files[0]).encode()).hexdigest()[:20]
    parts = []
    for f in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(f.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f'multipart/related; type="application/dicom"; boundary={boundary}'


def run_rows(data: WebData, servers: list[WebServer], reps: int, stow_rounds: int) -> list[Row]:
    clients = {s.name: Client(s.http_port) for s in servers}
    rows: list[Row] = []
    for label, make, check in requests(data):
        row = Row(label)
        rows.append(row)
        for warm in range(3):
            for s in servers:
                clients[s.name].request(*make(data, 1000 + warm))
        for rep in range(reps):
            order = servers if rep % 2 == 0 else servers[::-1]
            for s in order:
                method, path, headers = make(data, rep)
                try:
                    seconds, status, body = clients[s.name].request(method, path, headers)
                except (OSError, http.client.HTTPException) as exc:
                    row.problems.append(f"{s.name}: {exc}")
                    continue
                problem = f"HTTP {status}" if status != 200 else check(body)
                if problem:
                    row.problems.append(f"{s.name}: {path[:80]}: {problem}")
                    continue
                row.times.setdefault(s.name, []).append(seconds)
                row.sizes[s.name] = len(body)
        print("  " + " | ".join(_cells(row, [s.name for s in servers])), flush=True)
    row = Row("STOW-RS of 100 CT in one request (52 MB)")
    rows.append(row)
    for rep in range(stow_rounds):
        body, content_type = stow_body(data.stow[rep % len(data.stow)])
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        for s in servers if rep % 2 == 0 else servers[::-1]:
            seconds, status, answer = clients[s.name].request("POST", "/dicom-web/studies",
                                                              headers, body)  # fmt: skip
            stored = len(json.loads(answer).get("00081199", {}).get("Value", [])) if answer else 0
            if status != 200 or stored != 100:
                row.problems.append(f"{s.name}: HTTP {status}, {stored} stored")
                continue
            row.times.setdefault(s.name, []).append(seconds)
            row.sizes[s.name] = len(answer)
    row.note = f"{stow_rounds} request(s), each of a new set of 100 instances"
    print("  " + " | ".join(_cells(row, [s.name for s in servers])), flush=True)
    return rows


def run_million(reps: int) -> list[Row]:
    import qr

    folder = qr.cached_index(qr.PATIENTS)
    server = start_dicomnet(folder, "--aet", "QRSCP")
    rows: list[Row] = []
    try:
        client = Client(server.http_port)
        rng = random.Random("web-million")
        kinds: list[tuple[str, Callable[[], str], int | None]] = [
            ("QIDO /studies, OHIF's study-list query", lambda: OHIF_LIST, 101),
            ("QIDO /studies?PatientID=PIDnnnnn",
             lambda: f"/dicom-web/studies?PatientID={qr.patient(rng.randrange(qr.PATIENTS))[0]}",
             5),
            ("QIDO /studies?PatientName=SURNAME^GIV*",
             lambda: "/dicom-web/studies?PatientName="
                     + qr.patient(rng.randrange(qr.PATIENTS))[1].split("^")[0] + "%5E"
                     + qr.patient(rng.randrange(qr.PATIENTS))[1].split("^")[1][:3] + "*", None),
        ]  # fmt: skip
        for label, path_of, expected in kinds:
            row = Row(label + " (1,000,000 instances)")
            rows.append(row)
            for _ in range(3):
                client.request("GET", path_of(), JSON)
            for _ in range(reps):
                seconds, status, body = client.request("GET", path_of(), JSON)
                found = len(json.loads(body)) if status == 200 else -1
                if status != 200 or (expected is not None and found != expected):
                    row.problems.append(f"HTTP {status}, {found} results")
                    continue
                row.times.setdefault("dicomnet", []).append(seconds)
                row.sizes["dicomnet"] = len(body)
            print("  " + " | ".join(_cells(row, ["Orthanc", "dicomnet"])), flush=True)
    finally:
        server.stop()
    return rows


# --- report -----------------------------------------------------------------------------------------


def _cells(row: Row, names: list[str]) -> list[str]:
    cells = [row.label]
    stats = {n: row.stat(n) for n in names}
    for n in names:
        s = stats[n]
        cells.append(f"{s[0]:.2f} ({s[1]:.2f})" if s else "-")
    o, d = stats.get("Orthanc"), stats.get("dicomnet")
    cells.append(f"{o[0] / d[0]:.1f}x" if o and d else "")
    sizes = " / ".join(f"{row.sizes[n] / 1000:,.1f}" for n in reversed(names) if n in row.sizes)
    cells.append(sizes)
    cells.append("; ".join(filter(None, [row.note, *row.problems[:3]])))
    return cells


def markdown(rows: list[Row], info: dict[str, Any]) -> str:
    lines = [
        "### DICOMweb: dicomnet serve against Orthanc 1.10 + DICOMweb plugin (bench/web.py)",
        "",
        f"{info['orthanc']}; {info['where']}; one keep-alive connection per server, "
        f"{info['reps']} requests per row after 3 warm-up requests, servers alternating. "
        "Milliseconds per request: median (90th percentile). Faster: Orthanc's median divided "
        "by dicomnet's. Sizes of the answers in KB (dicomnet / Orthanc).",
        f"Ingest with storescu ({info['files']} CT): dicomnet {info['load_dicomnet']:.1f} s, "
        f"Orthanc {info['load_orthanc']:.1f} s.",
        "",
        "| request | Orthanc ms | dicomnet ms | dicomnet faster | KB | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += ["| " + " | ".join(_cells(r, ["Orthanc", "dicomnet"])) + " |" for r in rows]
    return "\n".join(lines)


def _orthanc_version() -> str:
    try:
        out = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "Orthanc (version unknown)"


def run(quick: bool, where: str) -> tuple[str, bool]:
    """Every row; returns the markdown and whether a row failed."""
    if not Path(ORTHANC).exists() or not Path(ORTHANC_PLUGIN).exists():
        raise SystemExit(
            "Orthanc and its DICOMweb plugin: apt-get install orthanc orthanc-dicomweb"
        )
    dcmtk("storescu")
    data = ensure_data()
    reps = 5 if quick else 30
    work = Path(tempfile.mkdtemp(prefix="dicomnet-web-bench-"))
    servers: list[WebServer] = []
    try:
        orthanc = start_orthanc(work / "orthanc")
        servers.append(orthanc)
        mine = start_dicomnet(work / "dicomnet" / "storage")
        servers.append(mine)
        files = data.all_files()
        loaded = {s.name: load(s, files) for s in servers}
        print(f"loaded {len(files)} CT: " + ", ".join(f"{k} {v:.1f} s" for k, v in loaded.items()),
              flush=True)  # fmt: skip
        rows = run_rows(data, servers, reps, 1 if quick else STOW_SETS)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows += run_million(50 if quick else 200)
    info = {"orthanc": _orthanc_version() + " + DICOMweb plugin 1.7 (Debian)", "where": where,
            "reps": reps, "files": len(data.all_files()), "load_dicomnet": loaded["dicomnet"],
            "load_orthanc": loaded["Orthanc"]}  # fmt: skip
    failed = any(r.problems for r in rows)
    return markdown(rows, info), failed


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"],
                           capture_output=True, check=False)  # fmt: skip
    return probe.returncode == 0


def _in_own_network() -> bool:
    return os.environ.get("DICOMNET_BENCH_NETNS") == "1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one STOW round")
    parser.add_argument("--output", type=Path, default=None, help="write the table here too")
    parser.add_argument("--no-netns", action="store_true", help="on the machine's loopback")
    args = parser.parse_args(argv)
    if not _in_own_network() and not args.no_netns and _can_unshare():
        # Again, in a network namespace that holds only a loopback interface.
        inner = [
            PYTHON,
            str(Path(__file__).resolve()),
            *(argv if argv is not None else sys.argv[1:]),
        ]
        script = 'ip link set lo up && exec "$@"'
        return subprocess.run(["unshare", "--net", "sh", "-c", script, "sh", *inner],
                              env={**os.environ, "DICOMNET_BENCH_NETNS": "1"}, check=False).returncode  # fmt: skip
    where = ("loopback of a network namespace of its own" if _in_own_network()
             else "the machine's loopback")  # fmt: skip
    start = time.perf_counter()
    table, failed = run(args.quick, where)
    print()
    print(table)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    if args.output is not None:
        args.output.write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
