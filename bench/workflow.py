"""Workflow services of `dicomnet serve`, measured: a Modality Worklist C-FIND over 100,000 items
(median latency of a modality's daily query, and the time of a broad query), and a storage
commitment report for 10,000 instances (seconds from the N-ACTION to the report, as a modality
sees it, and the archive's own check).

    python bench/workflow.py [--items 100000] [--instances 10000] [--repeat 15] [--keep DIR]

The server is `dicomnet serve` in its own process; the client is dicomnet's DicomClient (and
DCMTK's `findscu -W`, when installed, for the same daily query). The worklist is written straight
into the index file (``WorklistStore.add_many``), the instances as index rows with small files
(what the commitment check reads: the index and each file's size), so that setting up takes
minutes, not the hours 10,000 C-STOREs and 100,000 `dicomnet worklist add` would. ``--keep DIR``
keeps (and reuses) the storage folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage

from dicomnet import DicomClient
from dicomnet.archive.index import InstanceRecord, SQLiteIndex
from dicomnet.archive.worklist import WorklistStore
from dicomnet.query import worklist_query
from dicomnet.services.storage import INDEX_NAME

STATIONS = 20


def worklist_item(n: int) -> Dataset:
    """Item ``n``: 20 stations, 4 modalities, about 100 items a day per station over a year."""
    ds = Dataset()
    ds.PatientID = f"P{n:06d}"
    ds.PatientName = f"Name{n % 997}^Given{n % 13}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = f"A{n:07d}"
    ds.RequestedProcedureID = f"RP{n}"
    ds.RequestedProcedureDescription = "Procedure"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{n + 1}"
    sps = Dataset()
    sps.Modality = ["CT", "MR", "US", "CR"][n % 4]
    sps.ScheduledStationAETitle = f"STATION{n % STATIONS}"
    day = n // (100 * STATIONS // 10)
    sps.ScheduledProcedureStepStartDate = f"2026{1 + day // 28 % 12:02d}{1 + day % 28:02d}"
    sps.ScheduledProcedureStepStartTime = f"{8 + n % 10:02d}{n % 60:02d}00"
    sps.ScheduledProcedureStepID = f"SPS{n}"
    sps.ScheduledProcedureStepDescription = "Step"
    sps.ScheduledPerformingPhysicianName = "Who^Doctor"
    ds.ScheduledProcedureStepSequence = DicomSequence([sps])
    return ds


def prepare(root: Path, items: int, instances: int) -> list[tuple[str, str]]:
    root.mkdir(parents=True, exist_ok=True)
    path = root / INDEX_NAME
    store = WorklistStore(path)
    if len(store) != items:
        start = time.perf_counter()
        for first in range(len(store), items, 5000):
            store.add_many([worklist_item(n) for n in range(first, min(items, first + 5000))])
        print(f"worklist: {items} items written in {time.perf_counter() - start:.0f} s")
    store.close()
    refs = [(CTImageStorage, f"1.2.826.0.1.3680043.8.498.9.{n + 1}") for n in range(instances)]
    index = SQLiteIndex(path)
    if sum(1 for _ in index.paths()) != instances:
        folder = root / "bench"
        folder.mkdir(exist_ok=True)
        records = []
        for n, (sop_class, uid) in enumerate(refs):
            (folder / f"{n}.dcm").write_bytes(b"\0" * 128)
            records.append(
                InstanceRecord(
                    sop_instance_uid=uid,
                    sop_class_uid=sop_class,
                    study_instance_uid="1.2.826.0.1.3680043.8.498.9",
                    series_instance_uid="1.2.826.0.1.3680043.8.498.9.0",
                    path=f"bench/{n}.dcm",
                    size=128,
                )
            )
        index.add_many(records)
    index.set_state("shutdown", "clean")  # no repair walk at the server's start
    index.close()
    return refs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


DAILY = {
    "PatientName": None,
    "PatientID": None,
    "AccessionNumber": None,
    "RequestedProcedureID": None,
    "StudyInstanceUID": None,
    "Modality": None,
    "ScheduledStationAETitle": "STATION3",
    "ScheduledProcedureStepStartDate": "20260105",
    "ScheduledProcedureStepStartTime": None,
    "ScheduledProcedureStepID": None,
}
BROAD = {
    "PatientID": None,
    "Modality": "CT",
    "ScheduledProcedureStepStartDate": "20260101-20260131",
}


async def c_find(port: int, query: dict[str, object], repeat: int) -> tuple[list[float], int]:
    times = []
    found = 0
    async with DicomClient("127.0.0.1", port, "STATION3", "ARCHIVE", dimse_timeout=600) as client:
        for _ in range(repeat):
            start = time.perf_counter()
            found = len([m async for m in client.c_find(worklist_query(query), "worklist")])
            times.append(time.perf_counter() - start)
    return times, found


def findscu(port: int, repeat: int) -> list[float] | None:
    exe = shutil.which("findscu")
    if exe is None:
        return None
    keys = ["-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber"]
    sps = "(0040,0100)[0]"
    keys += ["-k", f"{sps}.ScheduledStationAETitle=STATION3"]
    keys += ["-k", f"{sps}.ScheduledProcedureStepStartDate=20260105", "-k", f"{sps}.Modality"]
    times = []
    env = dict(os.environ, TCP_NODELAY="1")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [exe, "-W", "-aec", "ARCHIVE", *keys, "127.0.0.1", str(port)],
            env=env,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return times


async def commit(port: int, refs: list[tuple[str, str]]) -> float:
    async with DicomClient("127.0.0.1", port, "MODALITY", "ARCHIVE", dimse_timeout=600) as client:
        await client.c_echo()  # associated: time the commitment only
        start = time.perf_counter()
        report = await client.request_commitment(refs, timeout=600)
        elapsed = time.perf_counter() - start
    assert len(report.success) == len(refs), (len(report.success), report.failure[:3])
    return elapsed


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="dicomnet-bench-workflow-")) / "store"
    refs = prepare(root, args.items, args.instances)
    port = free_port()
    log = root.parent / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dicomnet", "serve", "--aet", "ARCHIVE", "--port", str(port),
             "--storage", str(root), "--no-fsync"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port)
            daily, n_daily = asyncio.run(c_find(port, DAILY, args.repeat))
            broad, n_broad = asyncio.run(c_find(port, BROAD, 3))
            dcmtk = findscu(port, args.repeat)
            seconds = [asyncio.run(commit(port, refs)) for _ in range(3)]
            peak = peak_rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    checks = [float(x) for x in re.findall(r"checked in ([\d.]+) s", log.read_text())]
    print(f"worklist of {args.items} items, a station's day ({n_daily} matches), DicomClient: "
          f"median {statistics.median(daily) * 1000:.1f} ms (min {min(daily) * 1000:.1f}, "
          f"max {max(daily) * 1000:.1f}) over {len(daily)} C-FINDs")  # fmt: skip
    if dcmtk:
        print(f"  same query with DCMTK findscu -W (process start included): median "
              f"{statistics.median(dcmtk) * 1000:.1f} ms")  # fmt: skip
    print(f"  broad query ({n_broad} matches, a month of CT): median "
          f"{statistics.median(broad):.2f} s, {n_broad / statistics.median(broad):.0f} matches/s")  # fmt: skip
    print(f"storage commitment of {args.instances} instances, N-ACTION to report at the client: "
          f"{', '.join(f'{s:.2f}' for s in seconds)} s (median {statistics.median(seconds):.2f} s); "
          f"the archive's check: {', '.join(f'{c:.2f}' for c in checks)} s")  # fmt: skip
    print(f"dicomnet serve's peak RSS over the whole run: {peak:.0f} MB")
    if args.keep is None:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
