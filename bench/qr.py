"""Query/retrieve benchmarks (issue 5): C-FIND latency on a 1,000,000-instance index, and C-MOVE /
C-GET throughput of 500 CT instances, dicomnet next to DCMTK's dcmqrscp.

    python bench/qr.py             # everything (< 5 minutes; the first run also builds the caches)
    python bench/qr.py --quick     # 50 queries per row, 100 instances per retrieve

(a) C-FIND: study-level queries, Study Root, in one association per row (the association is opened
    before the clock starts; each latency is one C-FIND-RQ to its final response, every match
    read). By PatientID (5 matches) and by PatientName with a wildcard (``SURNAME^GIV*``, about
    one patient); on the 1M index also a broad ``SMI*`` (a hundred patients, about 500 matches).
    dicomnet serves a SQLiteIndex whose rows are generated directly (10,000 patients x 5 studies x
    4 series x 5 instances) in ``bench/.data/``; dcmqrscp's index is a flat file that dcmqridx
    fills quadratically slowly (4,000 instances take about 45 s) and is limited to 32 MiB of
    about 8 KB records ("DB ALERT: attempt to seek beyond 33554432 bytes"), so it holds 4,000
    instances (40 patients, 200 studies), and dicomnet is measured on an index of the same
    4,000 instances too. The client is dicomnet's ``DicomClient`` for every server.
(b) C-MOVE and C-GET: the first 500 CT instances of ``bench/data/ct`` (512x512x16 bit), five
    studies retrieved with one STUDY-level request (a list of five Study Instance UIDs); C-MOVE
    to DCMTK storescp started by movescu; C-GET by getscu and by ``DicomClient.c_get``. Every
    received folder is checked (UIDs and pixel SHA-1) with bench/data.py's ``verify``.

The dicomnet server is ``dicomnet serve`` itself (ArchiveService) with its storage folder set to the
cached folder that holds the index (``.dicomnet-index.sqlite``, marked as cleanly closed so that
the start does not walk the folder: the 1M rows of the C-FIND index have no files). Servers and
tools run with TCP_NODELAY=1, on 127.0.0.1, stopped by PID. ``python bench/run.py`` runs this as
its row 7 and puts the tables into bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

from data import ROOT, ensure, verify  # noqa: E402
from peers import dcmtk, dicomnet_cli  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import dcmtk_env, free_port, wait_for_port  # noqa: E402

CACHE = BENCH / ".data"
OUT = CACHE / "out"
ENV = dcmtk_env()
QR_AET = "QRSCP"
BASE_UID = "1.2.826.0.1.3680043.10.1472.7"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

PATIENTS, STUDIES, SERIES, IMAGES = 10_000, 5, 4, 5  # 1,000,000 instances
ROWS_VERSION = "3"  # bumped when the generated rows change, so the caches are rebuilt
DCMTK_PATIENTS = 40  # 4,000 instances: dcmqrscp's flat index stops at 32 MiB (~4,160)

SURNAMES = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "GOMEZ",
    "PHILLIPS",
    "EVANS",
    "TURNER",
    "DIAZ",
    "PARKER",
    "CRUZ",
    "EDWARDS",
    "COLLINS",
    "REYES",
    "STEWART",
    "MORRIS",
    "MORALES",
    "MURPHY",
    "COOK",
    "ROGERS",
    "GUTIERREZ",
    "ORTIZ",
    "MORGAN",
    "COOPER",
    "PETERSON",
    "BAILEY",
    "REED",
    "KELLY",
    "HOWARD",
    "RAMOS",
    "KIM",
    "COX",
    "WARD",
    "RICHARDSON",
    "WATSON",
    "BROOKS",
    "CHAVEZ",
    "WOOD",
    "JAMES",
    "BENNETT",
    "GRAY",
    "MENDOZA",
    "RUIZ",
    "HUGHES",
    "PRICE",
    "ALVAREZ",
    "CASTILLO",
    "SANDERS",
    "PATEL",
    "MYERS",
    "LONG",
    "ROSS",
    "FOSTER",
    "JIMENEZ",
]
# 100 given names with distinct first three letters ("BALO", "BANO", ..., "RUNO").
GIVEN = [f"{c}{v}{n}O" for c in "BDFGKLMNPR" for v in "AEIOU" for n in "LN"]


def patient(p: int) -> tuple[str, str]:
    """(PatientID, PatientName) of patient ``p``; names are unique over the 10,000."""
    return f"PID{p:05d}", f"{SURNAMES[p % 100]}^{GIVEN[(p // 100) % 100]}"


# -- the dicomnet index (rows generated directly) ---------------------------------------------------


def build_index(path: Path, patients: int) -> None:
    """Fill a new SQLiteIndex with ``patients`` x 5 x 4 x 5 instances, bypassing ``add`` (one
    executemany per table), with the key columns computed as ``SQLiteIndex.add`` does."""
    from dicomnet.archive.index import SQLiteIndex
    from dicomnet.archive.matching import column_value as cv

    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    SQLiteIndex(path).close()  # the schema
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    rng = random.Random("dicomnet-bench-qr")
    pat_rows, study_rows, series_rows, inst_rows = [], [], [], []
    study_pk = series_pk = inst_pk = 0
    for p in range(patients):
        pid, name = patient(p)
        pat_rows.append((p + 1, pid, name, cv("PN", name), "19700101", "O"))
        for s in range(STUDIES):
            study_pk += 1
            study_uid = f"{BASE_UID}.{p}.{s}"
            date = (
                f"20{10 + rng.randrange(14)}{1 + rng.randrange(12):02d}{1 + rng.randrange(28):02d}"
            )
            study_rows.append(
                (study_pk, p + 1, study_uid, date, "101500", cv("TM", "101500"),
                 f"ACC{study_pk:07d}", str(s + 1), "CT CHEST", None, None)
            )  # fmt: skip
            for r in range(SERIES):
                series_pk += 1
                series_rows.append(
                    (series_pk, study_pk, f"{study_uid}.{r}", "CT", str(r + 1), "AXIAL", "CHEST")
                )
                for i in range(IMAGES):
                    inst_pk += 1
                    sop = f"{study_uid}.{r}.{i}"
                    inst_rows.append(
                        (inst_pk, series_pk, sop, "1.2.840.10008.5.1.4.1.1.2", str(i + 1), None,
                         "1.2.840.10008.1.2.1", f"{study_uid}/{study_uid}.{r}/{sop}.dcm", 525_000)
                    )  # fmt: skip
    with db:
        db.executemany("INSERT INTO patient VALUES (?, ?, ?, ?, ?, ?)", pat_rows)
        db.executemany("INSERT INTO study VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", study_rows)
        db.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?)", series_rows)
        db.executemany("INSERT INTO instance VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", inst_rows)
    db.execute("ANALYZE")
    db.close()
    _mark_clean(path)


def _mark_clean(path: Path) -> None:
    """As a server that stopped cleanly would leave it: ``dicomnet serve`` starts without a walk."""
    from dicomnet.archive.index import SQLiteIndex
    from dicomnet.services.storage import mark_clean

    with SQLiteIndex(path) as index:
        mark_clean(index)


def cached_index(patients: int) -> Path:
    """The storage folder (holding no files) of the generated index of ``patients`` patients."""
    from dicomnet.services.storage import INDEX_NAME

    folder = CACHE / f"qr-index-{patients * STUDIES * SERIES * IMAGES}"
    path = folder / INDEX_NAME
    stamp = folder / "index.done"
    if not stamp.exists() or stamp.read_text() != ROWS_VERSION:
        start = time.perf_counter()
        print(f"building {path} ({patients * 100:,} instances) ...", flush=True)
        for old in folder.glob("index.sqlite*"):  # the layout before ROWS_VERSION 3
            old.unlink()
        build_index(path, patients)
        stamp.write_text(ROWS_VERSION)
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return folder


# -- dcmqrscp's index (files indexed by dcmqridx) -----------------------------------------------------


def cached_dcmqrscp_find_db(patients: int) -> Path:
    """A dcmqrscp storage area with the same rows as the first ``patients`` of the SQLite index,
    as small files (no pixel data) indexed by dcmqridx."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    folder = CACHE / f"dcmqrscp-find-{patients * 100}" / "db"
    stamp = folder.parent / "done"
    if stamp.exists() and stamp.read_text() == ROWS_VERSION:
        return folder
    start = time.perf_counter()
    print(f"building dcmqrscp's index of {patients * 100:,} instances (once) ...", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from dicomnet.services.storage import INDEX_NAME

    db = sqlite3.connect(cached_index(PATIENTS) / INDEX_NAME)
    dates = dict(
        db.execute("SELECT study_uid, study_date FROM study WHERE pk <= ?", (patients * 5,))
    )
    db.close()
    files = []
    for p in range(patients):
        pid, name = patient(p)
        for s in range(STUDIES):
            study_uid = f"{BASE_UID}.{p}.{s}"
            for r in range(SERIES):
                for i in range(IMAGES):
                    ds = Dataset()
                    ds.file_meta = FileMetaDataset()
                    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
                    ds.SOPInstanceUID = f"{study_uid}.{r}.{i}"
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    ds.SOPClassUID = CTImageStorage
                    ds.PatientID, ds.PatientName = pid, name
                    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
                    ds.StudyInstanceUID = study_uid
                    ds.StudyDate, ds.StudyTime = dates[study_uid], "101500"
                    ds.AccessionNumber = f"ACC{p * 5 + s + 1:07d}"
                    ds.StudyID, ds.StudyDescription = str(s + 1), "CT CHEST"
                    ds.SeriesInstanceUID = f"{study_uid}.{r}"
                    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", r + 1, i + 1
                    path = folder / f"{ds.SOPInstanceUID}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    files.append(str(path))
    indexer = dcmtk("dcmqridx")
    for chunk in range(0, len(files), 1000):
        subprocess.run([indexer, str(folder), *files[chunk : chunk + 1000]], check=True, env=ENV)
    stamp.write_text(ROWS_VERSION)
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return folder


def cached_retrieve_sets(files: list[Path]) -> tuple[Path, Path]:
    """(dcmqrscp storage area with hard links to ``files`` and its index, a ``dicomnet serve``
    storage folder with hard links to the same files and its index)."""
    from dicomnet.services.storage import mark_clean, open_index

    root = CACHE / f"retrieve-{len(files)}"
    stamp = root / "done"
    db, store = root / "db", root / "dicomnet"
    if stamp.exists() and stamp.read_text() == ROWS_VERSION:
        return db, store
    shutil.rmtree(root, ignore_errors=True)
    db.mkdir(parents=True)
    store.mkdir()
    links = []
    for f in files:
        os.link(f, db / f.name)
        os.link(f, store / f.name)
        links.append(str(db / f.name))
    subprocess.run([dcmtk("dcmqridx"), str(db), *links], check=True, env=ENV)
    index = open_index(store)  # the first start's repair indexes every file
    mark_clean(index)
    index.close()
    stamp.write_text(ROWS_VERSION)
    return db, store


# -- servers ------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Any

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def start(name: str, cmd: list[str], port: int, logdir: Path) -> Proc:
    logdir.mkdir(parents=True, exist_ok=True)
    log = open(logdir / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        wait_for_port(port, proc, timeout=60)  # type: ignore[arg-type]
    except BaseException:
        proc.kill()
        proc.wait(10)
        log.close()
        raise
    return Proc(name, proc, port, log)


def dcmqrscp(storage: Path, hosts: dict[str, int], logdir: Path) -> Proc:
    port = free_port()
    lines = "\n".join(f"h{i} = ({ae}, 127.0.0.1, {p})" for i, (ae, p) in enumerate(hosts.items()))
    config = logdir / f"dcmqrscp-{port}.cfg"
    logdir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 131072\nMaxAssociations = 16\n"
        f"HostTable BEGIN\n{lines}\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{QR_AET} {storage} RW (500, 4096mb) ANY\nAETable END\n"
    )
    # Default mode (a process per association): --single-process crashes on release in 3.6.7.
    return start("dcmqrscp", [dcmtk("dcmqrscp"), "-c", str(config), str(port)], port, logdir)


def dicomnet_qr(storage: Path, hosts: dict[str, int], logdir: Path) -> Proc:
    """``dicomnet serve`` on the storage folder ``storage`` (its index included)."""
    port = free_port()
    peers = [f"--peer={ae}=127.0.0.1:{p}" for ae, p in hosts.items()]
    cmd = [dicomnet_cli(), "serve", "--host", "127.0.0.1", "--port", str(port), "--aet", QR_AET,
           "--storage", str(storage), "--max-associations", "16", "--no-web", *peers]  # fmt: skip
    return start("dicomnet-serve", cmd, port, logdir)


def storescp(folder: Path, logdir: Path) -> Proc:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [dcmtk("storescp"), "-aet", "STORESCP", "-pdu", "131072", "-od", str(folder), str(port)]
    return start("storescp", cmd, port, logdir)


# -- measurements -----------------------------------------------------------------------------------


@dataclass
class FindRow:
    server: str
    instances: int
    query: str
    latencies: list[float]
    matches: float

    def cells(self) -> list[str]:
        lat = sorted(self.latencies)
        median = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return [self.server, f"{self.instances:,}", self.query, f"{len(lat)}",
                f"{self.matches:.1f}", f"{median:.2f}", f"{p99:.2f}"]  # fmt: skip


async def find_latencies(port: int, queries: list[dict[str, Any]]) -> tuple[list[float], float]:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    from dicomnet import DicomClient
    from dicomnet.negotiation import ProposedContext

    async with DicomClient("127.0.0.1", port, "FINDSCU", QR_AET, dimse_timeout=120) as client:
        # Associate first, with the context c_find needs: the association is not timed.
        await client.associate(
            [ProposedContext(STUDY_FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        )
        times, total = [], 0
        for q in queries:
            start = time.perf_counter()
            n = 0
            async for _m in client.c_find(q, level="STUDY"):
                n += 1
            times.append(time.perf_counter() - start)
            total += n
    return times, total / max(1, len(queries))


def find_queries(patients: int, count: int, kind: str) -> list[dict[str, Any]]:
    rng = random.Random(f"queries-{kind}-{patients}")
    keys = {"StudyInstanceUID": None, "StudyDate": None, "AccessionNumber": None,
            "PatientName": None, "PatientID": None}  # fmt: skip
    out = []
    for _ in range(count):
        pid, name = patient(rng.randrange(patients))
        surname, given = name.split("^")
        if kind == "PatientID":
            out.append({**keys, "PatientID": pid})
        elif kind == "name":
            out.append({**keys, "PatientName": f"{surname}^{given[:3]}*"})
        else:
            out.append({**keys, "PatientName": f"{surname[:3]}*"})
    return out


QUERY_LABELS = {
    "PatientID": "PatientID=PIDnnnnn",
    "name": "PatientName=SURNAME^GIV*",
    "broad": "PatientName=SMI* (3 letters)",
}


def run_find(count: int, logdir: Path) -> list[FindRow]:
    rows: list[FindRow] = []
    big = cached_index(PATIENTS)
    small = cached_index(DCMTK_PATIENTS)
    dcm_db = cached_dcmqrscp_find_db(DCMTK_PATIENTS)
    servers = [
        ("dicomnet serve", lambda: dicomnet_qr(big, {}, logdir), PATIENTS),
        ("dicomnet serve", lambda: dicomnet_qr(small, {}, logdir), DCMTK_PATIENTS),
        ("DCMTK dcmqrscp", lambda: dcmqrscp(dcm_db, {}, logdir), DCMTK_PATIENTS),
    ]
    for label, starter, patients in servers:
        server = starter()
        try:
            kinds = ["PatientID", "name"] + (["broad"] if patients == PATIENTS else [])
            for kind in kinds:
                # Queries drawn from the patients both indexes hold, so results are alike.
                queries = find_queries(min(patients, DCMTK_PATIENTS) if kind != "broad" else patients,
                                       count if kind != "broad" else max(10, count // 4), kind)  # fmt: skip
                times, matches = asyncio.run(find_latencies(server.port, queries))
                rows.append(FindRow(label, patients * 100, QUERY_LABELS[kind], times, matches))
                print("  " + " | ".join(rows[-1].cells()), flush=True)
        finally:
            server.stop()
    return rows


@dataclass
class RetrieveRow:
    operation: str
    server: str
    client: str
    count: int
    seconds: float | None  # the best of ``times``
    problem: str | None = None
    times: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.count / self.seconds if self.seconds else None


def run_tool(cmd: list[str], logdir: Path, name: str, timeout: float = 300) -> float:
    start = time.perf_counter()
    with open(logdir / f"{name}.log", "wb") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited with {proc.returncode} (see {logdir / name}.log)")
    return elapsed


async def api_get(port: int, studies: list[str], out: Path) -> float:
    from dicomnet import DicomClient
    from dicomnet.client import get_storage_contexts

    out.mkdir(parents=True, exist_ok=True)
    async with DicomClient("127.0.0.1", port, "GETSCU", QR_AET, dimse_timeout=120) as client:
        contexts = get_storage_contexts(["1.2.840.10008.5.1.4.1.1.2"], compressed=False)
        start = time.perf_counter()
        last = None
        async for progress in client.c_get(
            {"StudyInstanceUID": studies}, out_dir=out, temp_dir=out.parent / f".{out.name}-tmp",
            storage_contexts=contexts, level="STUDY",
        ):  # fmt: skip
            last = progress
        elapsed = time.perf_counter() - start
    if last is None or last.completed != last.done:
        raise RuntimeError(f"C-GET ended with {last}")
    return elapsed


def run_retrieve(count: int, logdir: Path, reps: int = 3) -> list[RetrieveRow]:
    """C-MOVE and C-GET of ``count`` CT instances from each server, ``reps`` times; the best
    time counts (as in run.py)."""
    sets = ensure()
    files = sets["ct"].files[:count]
    expected = sets["ct"].expected(files)
    db, store = cached_retrieve_sets(files)
    from pydicom import dcmread

    studies = sorted({str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files})
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + "\\".join(studies)]
    rows: dict[tuple[str, str, str], RetrieveRow] = {}
    for rep in range(reps):  # DCMTK and dicomnet alternate, so drift hits both alike
        for label, kind in (("DCMTK dcmqrscp", "dcmtk"), ("dicomnet serve", "dicomnet")):
            target = OUT / f"move-{kind}"
            scp = storescp(target, logdir)
            hosts = {"STORESCP": scp.port}
            server = (
                dcmqrscp(db, hosts, logdir)
                if kind == "dcmtk"
                else dicomnet_qr(store, hosts, logdir)
            )
            try:
                cases: list[tuple[str, str, Path, Any]] = [
                    ("C-MOVE", "movescu → storescp", target,
                     lambda out, s=server: run_tool([dcmtk("movescu"), "-S", "-aec", QR_AET, "-aem", "STORESCP",
                                                  *keys, "127.0.0.1", str(s.port)], logdir, "movescu")),
                    ("C-GET", "getscu", OUT / f"getscu-{kind}",
                     lambda out, s=server: run_tool([dcmtk("getscu"), "-S", "-aec", QR_AET, "-od", str(out),
                                                  *keys, "127.0.0.1", str(s.port)], logdir, "getscu")),
                    ("C-GET", "DicomClient.c_get", OUT / f"api-{kind}",
                     lambda out, s=server: asyncio.run(api_get(s.port, studies, out))),
                ]  # fmt: skip
                for operation, client, out, action in cases:
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir(parents=True)
                    try:
                        seconds: float | None = action(out)
                        problem = verify(out, expected)
                    except Exception as exc:
                        seconds, problem = None, str(exc)
                    row = rows.setdefault(
                        (operation, label, client),
                        RetrieveRow(operation, label, client, len(files), None),
                    )
                    if problem:
                        row.problem = problem
                    elif seconds is not None:
                        row.times.append(seconds)
                        row.seconds = min(row.times)
                    print(f"  [{rep + 1}/{reps}] {operation} {label} → {client}: "
                          f"{'FAILED ' + str(problem) if problem else f'{len(files) / seconds:.0f} images/s'}",
                          flush=True)  # fmt: skip
            finally:
                server.stop()
                scp.stop()
    order = {"dcmtk": 0, "dicomnet": 1}
    return sorted(
        rows.values(), key=lambda r: order["dcmtk" if r.server.startswith("DCMTK") else "dicomnet"]
    )


def markdown(find: list[FindRow], retrieve: list[RetrieveRow]) -> str:
    lines = ["### C-FIND latency (study level, Study Root, one association, dicomnet client)", "",
             "| server | instances | query | queries | matches/query | median ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += ["| " + " | ".join(row.cells()) + " |" for row in find]
    lines += ["", f"### C-MOVE / C-GET throughput ({retrieve[0].count if retrieve else 0} CT instances, "
              "512x512x16 bit, one request; best of the runs)", "",
              "| operation | server | client | images/s | best s | every run s | vs DCMTK |",
              "|---|---|---|---:|---:|---|---:|"]  # fmt: skip
    base = {
        (r.operation, r.client): r.rate
        for r in retrieve
        if r.server.startswith("DCMTK") and not r.problem
    }
    for r in retrieve:
        ref = base.get((r.operation, r.client))
        ratio = f"{r.rate / ref:.2f}x" if r.rate and ref else ""
        rate = f"FAILED: {r.problem}" if r.problem or not r.rate else f"{r.rate:.0f}"
        ratio = "" if r.problem else ratio
        secs = f"{r.seconds:.2f}" if r.seconds else ""
        runs = ", ".join(f"{t:.2f}" for t in r.times)
        lines.append(
            f"| {r.operation} | {r.server} | {r.client} | {rate} | {secs} | {runs} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer queries and instances")
    parser.add_argument("--only", choices=["find", "retrieve"], default=None)
    args = parser.parse_args(argv)
    for tool in ("dcmqrscp", "dcmqridx", "movescu", "getscu", "storescp"):
        dcmtk(tool)  # exits with a clear message when DCMTK is missing
    start = time.perf_counter()
    find, retrieve = run(args.quick, args.only)
    print()
    print(markdown(find, retrieve))
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    return 1 if any(r.problem for r in retrieve) else 0


def run(quick: bool, only: str | None = None) -> tuple[list[FindRow], list[RetrieveRow]]:
    """Both parts (``only``: one of them); logs in bench/.data/out/logs."""
    logdir = OUT / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    find = run_find(50 if quick else 200, logdir) if only != "retrieve" else []
    retrieve = (
        run_retrieve(100 if quick else 500, logdir, 1 if quick else 3) if only != "find" else []
    )
    return find, retrieve


if __name__ == "__main__":
    sys.exit(main())
