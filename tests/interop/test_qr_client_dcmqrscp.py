"""dicomnet's query/retrieve client against DCMTK's dcmqrscp over 127.0.0.1: C-FIND at every level
in the Patient Root and Study Root models (wildcards, date ranges), C-MOVE to a dicomnet storage
SCP that dcmqrscp knows from its HostTable, C-GET into a folder, and the failure statuses.

The archive is built with dcmqridx from generated CT instances with known UIDs; instances that
come back are checked byte for byte (their data sets) against the files that were indexed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import Dataset

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.client import CFindError, CMoveError, RetrieveProgress
from dicomnet.dataset import read_file_info
from dicomnet.services.storage import StorageService
from tests.helpers import dcmtk_env, free_port, make_ct, require_tool, run, wait_for_port

pytestmark = pytest.mark.interop

QR_AET = "QRSCP"
DEST_AET = "DNSTORE"


@dataclass
class Archive:
    """The generated instances: patient -> study -> series -> SOP instance UIDs."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # SOP instance UID -> file
    studies: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    patients: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # id -> name, studies

    def instances(self, study: str) -> list[str]:
        return [uid for series in self.studies[study].values() for uid in series]


# PatientID, PatientName, StudyDate, [images per series]
LAYOUT = [
    ("P1", "SMITH^JOHN", "20240105", [2, 1]),
    ("P2", "SMITHERS^ANN", "20231215", [2]),
    ("P3", "JONES^BOB", "20240301", [1]),
]


def make_archive(folder: Path, rows: int = 64) -> Archive:
    """Write the instances of LAYOUT into ``folder`` with UIDs 1.2.826.0.1.3680043.10.1472.9.*."""
    archive = Archive(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = "1.2.826.0.1.3680043.10.1472.9"
    for p, (pid, name, date, series_sizes) in enumerate(LAYOUT, 1):
        study = f"{base}.{p}"
        archive.patients[pid] = (name, [study])
        archive.studies[study] = {}
        for s, count in enumerate(series_sizes, 1):
            series = f"{study}.{s}"
            archive.studies[study][series] = []
            for i in range(1, count + 1):
                sop = f"{series}.{i}"
                ds = make_ct(
                    rows,
                    rows,
                    study_uid=study,
                    series_uid=series,
                    sop_uid=sop,
                    patient_id=pid,
                    patient_name=name,
                )
                ds.StudyDate = date
                ds.SeriesNumber = s
                ds.InstanceNumber = i
                ds.StudyDescription = f"study of {pid}"
                path = folder / f"{sop}.dcm"
                ds.save_as(path, enforce_file_format=True)
                archive.files[sop] = path
                archive.studies[study][series].append(sop)
    return archive


class Dcmqrscp:
    """DCMTK's dcmqrscp serving ``files``, indexed by dcmqridx, with the
    C-MOVE destinations ``hosts`` (AE title -> port on 127.0.0.1)."""

    def __init__(
        self, folder: Path, files: list[Path], hosts: dict[str, int], aet: str = QR_AET
    ) -> None:
        exe = require_tool("dcmqrscp")
        indexer = require_tool("dcmqridx")
        self.aet = aet
        self.storage = folder / "db"
        self.storage.mkdir(parents=True, exist_ok=True)
        copies = []
        for f in files:
            target = self.storage / f.name
            shutil.copyfile(f, target)
            copies.append(str(target))
        for start in range(0, len(copies), 500):
            result = run([indexer, str(self.storage), *copies[start : start + 500]], timeout=300)
            assert result.returncode == 0, result.stdout + result.stderr
        self.port = free_port()
        host_lines = "\n".join(
            f"peer{i} = ({ae}, 127.0.0.1, {port})" for i, (ae, port) in enumerate(hosts.items())
        )
        self.config = folder / "dcmqrscp.cfg"
        self.config.write_text(
            f"NetworkTCPPort  = {self.port}\n"
            "MaxPDUSize      = 131072\n"
            "MaxAssociations = 16\n"
            f"HostTable BEGIN\n{host_lines}\nHostTable END\n"
            "VendorTable BEGIN\nVendorTable END\n"
            "AETable BEGIN\n"
            f"{aet} {self.storage} RW (1000, 1024mb) ANY\n"
            "AETable END\n"
        )
        self.log = open(folder / "dcmqrscp.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            # One process per association (the default): dcmqrscp 3.6.7's --single-process
            # mode crashes after the first association is released.
            [exe, "-c", str(self.config), str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dcmtk_env(),
        )
        try:
            wait_for_port(self.port, self.proc)  # type: ignore[arg-type]
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return make_archive(tmp_path_factory.mktemp("qr-archive"))


@pytest.fixture(scope="module")
def dest_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def qrscp(
    archive: Archive, dest_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dcmqrscp]:
    server = Dcmqrscp(
        tmp_path_factory.mktemp("dcmqrscp"), list(archive.files.values()), {DEST_AET: dest_port}
    )
    yield server
    server.stop()


def client(qrscp: Dcmqrscp) -> DicomClient:
    return DicomClient("127.0.0.1", qrscp.port, "DICOMNET", qrscp.aet, dimse_timeout=30)


def dataset_bytes(path: Path) -> bytes:
    info = read_file_info(path)
    with open(path, "rb") as f:
        f.seek(info.offset)
        return f.read()


async def find(qrscp: Dcmqrscp, query: dict[str, object], **kwargs: str) -> list[Dataset]:
    async with client(qrscp) as c:
        return [m async for m in c.c_find(query, **kwargs)]


# -- C-FIND ----------------------------------------------------------------------------------------


async def test_patient_level_wildcard_patient_root(qrscp: Dcmqrscp) -> None:
    matches = await find(
        qrscp, {"PatientName": "SMITH*", "PatientID": None}, model="patient", level="PATIENT"
    )
    assert sorted((m.PatientID, str(m.PatientName)) for m in matches) == [
        ("P1", "SMITH^JOHN"),
        ("P2", "SMITHERS^ANN"),
    ]
    assert all(m.QueryRetrieveLevel == "PATIENT" for m in matches)


async def test_study_level_date_ranges_study_root(qrscp: Dcmqrscp, archive: Archive) -> None:
    keys = {"StudyInstanceUID": None, "PatientID": None, "StudyDate": "20240101-"}
    recent = await find(qrscp, keys, level="STUDY")
    assert sorted(m.PatientID for m in recent) == ["P1", "P3"]
    december = await find(qrscp, {**keys, "StudyDate": "20231201-20231231"}, level="STUDY")
    assert [m.StudyInstanceUID for m in december] == archive.patients["P2"][1]
    before = await find(qrscp, {**keys, "StudyDate": "-20240105"}, level="STUDY")
    assert sorted(m.PatientID for m in before) == ["P1", "P2"]


async def test_study_level_wildcards_study_root(qrscp: Dcmqrscp) -> None:
    matches = await find(
        qrscp,
        {"PatientName": "SMITH*", "StudyInstanceUID": None, "StudyDescription": None},
        model="study",
        level="STUDY",
    )
    assert sorted(m.StudyDescription for m in matches) == ["study of P1", "study of P2"]
    question = await find(qrscp, {"PatientName": "JONES^B?B", "PatientID": None}, level="STUDY")
    assert [m.PatientID for m in question] == ["P3"]


async def test_study_level_under_a_patient_patient_root(qrscp: Dcmqrscp, archive: Archive) -> None:
    matches = await find(
        qrscp, {"PatientID": "P1", "StudyInstanceUID": None}, model="patient", level="STUDY"
    )
    assert [m.StudyInstanceUID for m in matches] == archive.patients["P1"][1]


async def test_series_and_image_levels(qrscp: Dcmqrscp, archive: Archive) -> None:
    study = archive.patients["P1"][1][0]
    series = await find(
        qrscp,
        {"StudyInstanceUID": study, "SeriesInstanceUID": None, "Modality": None},
        level="SERIES",
    )
    assert sorted(m.SeriesInstanceUID for m in series) == sorted(archive.studies[study])
    assert {m.Modality for m in series} == {"CT"}
    first = sorted(archive.studies[study])[0]
    images = await find(
        qrscp,
        {"StudyInstanceUID": study, "SeriesInstanceUID": first, "SOPInstanceUID": None},
        level="IMAGE",
    )
    assert sorted(m.SOPInstanceUID for m in images) == archive.studies[study][first]
    # The same in the Patient Root model, which needs the patient's ID as well.
    images = await find(
        qrscp,
        {
            "PatientID": "P1",
            "StudyInstanceUID": study,
            "SeriesInstanceUID": first,
            "SOPInstanceUID": None,
        },
        model="patient",
        level="IMAGE",
    )
    assert sorted(m.SOPInstanceUID for m in images) == archive.studies[study][first]


async def test_no_match_is_an_empty_result(qrscp: Dcmqrscp) -> None:
    assert await find(qrscp, {"PatientName": "NOBODY*"}, level="STUDY") == []


async def test_bad_level_raises_a_failure_status(qrscp: Dcmqrscp) -> None:
    bad = Dataset()
    bad.QueryRetrieveLevel = "FRAME"
    bad.PatientName = "*"
    async with client(qrscp) as c:
        with pytest.raises(CFindError) as info:
            async for _m in c.c_find(bad):
                pass
        # The association survives a failed query.
        assert [m async for m in c.c_find({"PatientID": "P3"}, level="STUDY")]
    assert info.value.status & 0xF000 in (0xA000, 0xC000)


async def test_cancel_is_honoured_or_the_query_completes(qrscp: Dcmqrscp) -> None:
    async with client(qrscp) as c:
        matches = c.c_find({"PatientName": "*", "StudyInstanceUID": None}, level="STUDY")
        async for _m in matches:
            await matches.cancel()
        assert matches.cancel_sent
        assert matches.final_status in (Status.CANCEL, Status.SUCCESS)
        assert len([m async for m in c.c_find({"PatientName": "*"}, level="STUDY")]) == 3


# -- C-MOVE ----------------------------------------------------------------------------------------


async def test_c_move_study_to_a_dicomnet_storage_scp(
    qrscp: Dcmqrscp, archive: Archive, dest_port: int, tmp_path: Path
) -> None:
    study = archive.patients["P1"][1][0]
    store = tmp_path / "moved"
    received: list[Path] = []
    factory = StorageService.factory(
        store, fsync=False, on_stored=lambda _rq, path: received.append(path)
    )
    async with DicomServer(factory, "127.0.0.1", dest_port):
        async with client(qrscp) as c:
            progress = [
                p
                async for p in c.c_move(
                    {"StudyInstanceUID": study}, destination=DEST_AET, level="STUDY"
                )
            ]
    final = progress[-1]
    assert isinstance(final, RetrieveProgress) and final.final
    assert final.status == Status.SUCCESS and final.completed == 3 and final.failed == 0
    assert all(not p.final for p in progress[:-1])
    expected = archive.instances(study)
    assert sorted(p.stem for p in received) == sorted(expected)
    for path in received:
        assert dataset_bytes(path) == dataset_bytes(archive.files[path.stem])


async def test_c_move_series_patient_root(
    qrscp: Dcmqrscp, archive: Archive, dest_port: int, tmp_path: Path
) -> None:
    study = archive.patients["P1"][1][0]
    series = sorted(archive.studies[study])[1]
    received: list[Path] = []
    factory = StorageService.factory(
        tmp_path / "moved", fsync=False, on_stored=lambda _rq, path: received.append(path)
    )
    async with DicomServer(factory, "127.0.0.1", dest_port):
        async with client(qrscp) as c:
            progress = [
                p
                async for p in c.c_move(
                    {"PatientID": "P1", "StudyInstanceUID": study, "SeriesInstanceUID": series},
                    DEST_AET,
                    model="patient",
                    level="SERIES",
                )
            ]
    assert progress[-1].completed == 1
    assert [p.stem for p in received] == archive.studies[study][series]


async def test_c_move_to_an_unknown_destination(qrscp: Dcmqrscp, archive: Archive) -> None:
    study = archive.patients["P3"][1][0]
    async with client(qrscp) as c:
        with pytest.raises(CMoveError) as info:
            async for _p in c.c_move({"StudyInstanceUID": study}, "NOSUCHAE", level="STUDY"):
                pass
    assert info.value.status == Status.MOVE_DESTINATION_UNKNOWN


# -- C-GET -----------------------------------------------------------------------------------------


async def test_c_get_study_into_a_folder(qrscp: Dcmqrscp, archive: Archive, tmp_path: Path) -> None:
    study = archive.patients["P2"][1][0]
    out = tmp_path / "got"
    async with client(qrscp) as c:
        progress = [
            p async for p in c.c_get({"StudyInstanceUID": study}, out_dir=out, level="STUDY")
        ]
    final = progress[-1]
    assert final.final and final.status == Status.SUCCESS
    assert final.completed == 2 and final.failed == 0
    got = sorted(out.glob("*.dcm"))
    assert [p.stem for p in got] == sorted(archive.instances(study))
    for path in got:
        assert dataset_bytes(path) == dataset_bytes(archive.files[path.stem])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


async def test_c_get_images_with_a_store_callback_patient_root(
    qrscp: Dcmqrscp, archive: Archive
) -> None:
    study = archive.patients["P1"][1][0]
    series = sorted(archive.studies[study])[0]
    sops = archive.studies[study][series]
    seen: dict[str, bytes] = {}

    async def store(request) -> None:  # type: ignore[no-untyped-def]
        seen[request.sop_instance_uid] = dataset_bytes(request.path)

    async with client(qrscp) as c:
        progress = [
            p
            async for p in c.c_get(
                {
                    "PatientID": "P1",
                    "StudyInstanceUID": study,
                    "SeriesInstanceUID": series,
                    "SOPInstanceUID": sops,
                },
                store,
                model="patient",
                level="IMAGE",
            )
        ]
    assert progress[-1].completed == len(sops)
    assert seen == {sop: dataset_bytes(archive.files[sop]) for sop in sops}
