"""DCMTK's findscu, movescu and getscu against `dicomnet serve` over 127.0.0.1: C-FIND at every
level in the Patient Root and Study Root models (checked in findscu's output), C-MOVE to DCMTK's
storescp, to a second `dicomnet serve` and to movescu itself (the instances checked byte for byte),
C-GET into getscu's folder, and the faults: unknown destination, a destination that is not
listening, a file gone from disk, a missing Query/Retrieve Level.

One archive node serves the module (the instances of the dcmqrscp client test's LAYOUT, indexed on
start); tests that change it use their own node."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import Serve, dataset_bytes, dicomnet
from tests.helpers import free_port, require_tool, run
from tests.interop.conftest import DcmtkStorescp
from tests.interop.test_qr_client_dcmqrscp import LAYOUT, Archive, make_archive

pytestmark = pytest.mark.interop

AET = "ARCHIVE"
_ELEMENT = re.compile(r"^I: \(([0-9a-f]{4}),([0-9a-f]{4})\) (\w\w) (.*?)\s+#\s+\d+,")


@dataclass
class Node:
    archive: Archive
    serve: Serve
    storescp: DcmtkStorescp
    dest: Serve  # a second dicomnet serve, known as DNDEST
    movescu_port: int

    @property
    def port(self) -> str:
        return str(self.serve.port)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    for tool in ("findscu", "movescu", "getscu", "storescp"):
        require_tool(tool)
    base = tmp_path_factory.mktemp("qrscp")
    archive = make_archive(base / "archive", rows=32)
    storescp = DcmtkStorescp(base / "storescp", aet="STORESCP")
    started: list[Serve] = []
    try:
        dest = Serve(base / "dest", "--aet", "DNDEST", "--strict-aet", "--no-fsync", "-q")
        started.append(dest)
        movescu_port = free_port()
        serve = Serve(
            archive.root,
            "--aet",
            AET,
            "--no-fsync",
            "--peer",
            f"STORESCP=127.0.0.1:{storescp.port}",
            "--peer",
            f"DNDEST=127.0.0.1:{dest.port}",
            "--peer",
            f"MOVESCU=127.0.0.1:{movescu_port}",
            "--peer",
            f"CLOSED=127.0.0.1:{free_port()}",
            "--peer",
            f"WRONGAE=127.0.0.1:{dest.port}",  # dest rejects the called AE WRONGAE
        )
        started.append(serve)
        yield Node(archive, serve, storescp, dest, movescu_port)
    finally:
        for server in started:
            server.stop()
        storescp.stop()


def responses(output: str) -> list[dict[str, str]]:
    """The identifiers of findscu's pending responses: "gggg,eeee" -> value as printed."""
    found: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in output.splitlines():
        if re.match(r"^I: Find Response: \d+ \(Pending", line):
            current = {}
            found.append(current)
        elif line.startswith("I: Received Final Find Response") or line.startswith("I: ----"):
            current = None
        elif current is not None and (m := _ELEMENT.match(line)):
            text = m.group(4)  # "[value]", or "(no value available)"
            value = text[1 : text.rindex("]")].rstrip("\x00 ") if text.startswith("[") else ""
            current[f"{m.group(1)},{m.group(2)}"] = value
    return found


def findscu(node: Node, model: str, *keys: str) -> tuple[list[dict[str, str]], str]:
    args = [v for k in keys for v in ("-k", k)]
    result = run([require_tool("findscu"), "-v", model, "-aec", AET, *args, "127.0.0.1", node.port])
    assert result.returncode == 0, result.stderr
    return responses(result.stderr + result.stdout), result.stderr + result.stdout


def test_findscu_patient_root_patient_level_wildcard(node: Node) -> None:
    found, out = findscu(
        node,
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientName=SMITH*",
        "PatientID",
        "NumberOfPatientRelatedStudies",
    )
    assert "Received Final Find Response (Success)" in out
    assert sorted((r["0010,0020"], r["0010,0010"]) for r in found) == [
        ("P1", "SMITH^JOHN"),
        ("P2", "SMITHERS^ANN"),
    ]
    assert {r["0020,1200"] for r in found} == {"1"}
    assert all(r["0008,0052"] == "PATIENT" for r in found)


def test_findscu_study_root_study_level_date_range(node: Node) -> None:
    found, _ = findscu(
        node,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "StudyDate=20240101-",
        "StudyInstanceUID",
        "PatientID",
        "StudyDescription",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
    )
    by_patient = {r["0010,0020"]: r for r in found}
    assert set(by_patient) == {"P1", "P3"}  # P2's study is from 2023
    p1 = next(
        s for s, (pid, *_rest) in zip(node.archive.studies, LAYOUT, strict=True) if pid == "P1"
    )
    assert by_patient["P1"]["0020,000d"] == p1
    assert by_patient["P1"]["0020,1208"] == "3"
    assert by_patient["P1"]["0008,0061"] == "CT"
    assert by_patient["P1"]["0008,1030"] == "study of P1"


def test_findscu_series_and_image_levels(node: Node) -> None:
    study = next(iter(node.archive.studies))
    series_uids = list(node.archive.studies[study])
    found, _ = findscu(
        node,
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert sorted(r["0020,000e"] for r in found) == sorted(series_uids)
    assert {r["0020,000e"]: r["0020,1209"] for r in found} == {
        s: str(len(node.archive.studies[study][s])) for s in series_uids
    }
    found, _ = findscu(
        node,
        "-P",
        "QueryRetrieveLevel=IMAGE",
        "PatientID=P1",
        f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={series_uids[0]}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert sorted(r["0008,0018"] for r in found) == node.archive.studies[study][series_uids[0]]


def test_findscu_without_query_retrieve_level_fails(node: Node) -> None:
    result = run(
        [
            require_tool("findscu"),
            "-v",
            "-S",
            "-aec",
            AET,
            "-k",
            "PatientID",
            "127.0.0.1",
            node.port,
        ]
    )
    out = result.stderr + result.stdout
    assert responses(out) == []
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in out, out


def _move(node: Node, dest: str, study: str, *extra: str) -> str:
    result = run(
        [
            require_tool("movescu"),
            "-v",
            "-S",
            "-aet",
            "MOVESCU",
            "-aec",
            AET,
            "-aem",
            dest,
            *extra,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            node.port,
        ]
    )
    return result.stderr + result.stdout


def _same_instances(node: Node, study: str, files: list[Path]) -> None:
    expected = {
        uid: dataset_bytes(node.archive.files[uid]) for uid in node.archive.instances(study)
    }
    got = {p.name.split(".", 1)[1] if p.name.startswith("CT.") else p.stem: p for p in files}
    assert sorted(got) == sorted(expected)
    for uid, path in got.items():
        assert dataset_bytes(path) == expected[uid], uid


_DIMSE_FIELD = re.compile(r"^D: (Message Type|[A-Za-z ]+Suboperations|DIMSE Status)\s*: (\S+)")


def move_responses(output: str) -> list[dict[str, str]]:
    """Each C-MOVE-RSP as ``movescu -d`` prints it (DCMTK's own decoding of the command set):
    "Remaining", "Completed", "Failed", "Warning" (a number, or "none" when absent) and
    "Status" ("0xff00", ...)."""
    found: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in output.splitlines():
        m = _DIMSE_FIELD.match(line)
        if m is None:
            continue
        name, value = m.groups()
        if name == "Message Type":
            current = {} if value == "C-MOVE" and "RSP" in line else None
            if current is not None:
                found.append(current)
        elif current is not None:
            current[name.split()[0] if name != "DIMSE Status" else "Status"] = value.rstrip(":")
    return found


def test_movescu_to_dcmtk_storescp(node: Node) -> None:
    """The sub-operation counters as DCMTK reads them (audit item 1): every pending response
    counts Remaining > 0 and the four add up to the study's instances; nothing failed or warned;
    the final response counts them all Completed."""
    study = next(iter(node.archive.studies))
    count = len(node.archive.instances(study))
    assert count >= 2  # so that there are pending responses with Remaining > 0
    out = _move(node, "STORESCP", study, "-d")
    rsps = move_responses(out)
    assert rsps, out
    *pending, final = rsps
    assert final["Status"] == "0x0000", out
    assert final["Completed"] == str(count), final
    assert final["Failed"] == final["Warning"] == "0", final
    assert final["Remaining"] in ("none", "0"), final
    assert pending, out
    for rsp in pending:
        assert rsp["Status"] == "0xff00", rsp
        assert int(rsp["Remaining"]) > 0, rsp
        assert rsp["Failed"] == rsp["Warning"] == "0", rsp
        assert sum(int(rsp[k]) for k in ("Remaining", "Completed", "Failed", "Warning")) == count
    _same_instances(node, study, sorted(node.storescp.folder.glob("CT.*")))


def test_movescu_to_a_second_dicomnet_serve(node: Node) -> None:
    study = list(node.archive.studies)[1]
    out = _move(node, "DNDEST", study)
    assert "Received Final Move Response (Success)" in out, out
    _same_instances(node, study, node.dest.stored())
    # the destination indexed them: it answers C-FIND for them
    result = run(
        [
            require_tool("findscu"),
            "-v",
            "-S",
            "-aec",
            "DNDEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(node.dest.port),
        ]
    )
    assert [r["0020,000d"] for r in responses(result.stderr)] == [study]


def test_movescu_to_itself(node: Node, tmp_path: Path) -> None:
    study = list(node.archive.studies)[2]
    out = _move(node, "MOVESCU", study, "--port", str(node.movescu_port), "-od", str(tmp_path))
    assert "Received Final Move Response (Success)" in out, out
    _same_instances(node, study, sorted(tmp_path.glob("CT.*")))


def test_movescu_faults(node: Node) -> None:
    study = next(iter(node.archive.studies))
    assert "MoveDestinationUnknown" in _move(node, "NOBODY", study)
    for dest in ("CLOSED", "WRONGAE"):
        out = _move(node, dest, study)
        assert "OutOfResourcesSubOperations" in out, out
        assert "Success" not in out.split("Move Response")[-1]
    # the node still answers
    found, _ = findscu(node, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert len(found) == len(node.archive.studies)


def test_getscu_into_a_folder(node: Node, tmp_path: Path) -> None:
    study = next(iter(node.archive.studies))
    result = run(
        [
            require_tool("getscu"),
            "-v",
            "-S",
            "-aec",
            AET,
            "-od",
            str(tmp_path),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            node.port,
        ]
    )
    out = result.stderr + result.stdout
    assert result.returncode == 0, out
    assert "Received C-GET Response (Success)" in out, out
    _same_instances(node, study, sorted(tmp_path.glob("CT.*")))


def test_missing_file_is_a_failed_sub_operation(tmp_path: Path) -> None:
    getscu = require_tool("getscu")
    archive = make_archive(tmp_path / "archive", rows=16)
    study = next(iter(archive.studies))
    gone = archive.instances(study)[0]
    server = Serve(archive.root, "--aet", AET, "--no-fsync")
    try:
        os.unlink(archive.files[gone])
        out_dir = tmp_path / "got"
        out_dir.mkdir()
        result = run(
            [
                getscu,
                "-v",
                "-S",
                "-aec",
                AET,
                "-od",
                str(out_dir),
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study}",
                "127.0.0.1",
                str(server.port),
            ]
        )
        out = result.stderr + result.stdout
        assert "Received C-GET Response (Warning" in out, out
        assert "Number of Failed Suboperations    : 1" in out, out
        got = sorted(p.name.split(".", 1)[1] for p in out_dir.glob("CT.*"))
        assert got == sorted(set(archive.instances(study)) - {gone})
    finally:
        server.stop()
    assert "is gone from disk" in server.log


def test_index_command_on_a_storescp_folder_then_serve_it(node: Node, tmp_path: Path) -> None:
    """`dicomnet index` builds the index of a folder DCMTK's storescp wrote (its own file names,
    no index); `dicomnet serve` then answers queries on it, with a C-MOVE destination from a
    [peers] table of its TOML configuration."""
    study = next(iter(node.archive.studies))
    count = len(node.archive.instances(study))
    folder = tmp_path / "from-storescp"
    first = DcmtkStorescp(folder, aet="STORESCP")
    try:
        files = [str(node.archive.files[uid]) for uid in node.archive.instances(study)]
        sent = run(
            [require_tool("storescu"), "-aec", "STORESCP", "127.0.0.1", str(first.port), *files]
        )
        assert sent.returncode == 0, sent.stderr
    finally:
        first.stop()
    (folder / "notes.txt").write_text("not DICOM")
    result = dicomnet("index", str(folder))
    assert result.returncode == 0, result.stderr
    assert f"indexed {count} of {count + 1} files" in result.stdout
    assert "1 patients, 1 studies" in result.stdout

    second = DcmtkStorescp(tmp_path / "second", aet="STORESCP")
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[serve]\naet = "{AET}"\nport = {port}\nstorage = "{folder}"\nno-fsync = true\n\n'
        f'[peers]\nSTORESCP = "127.0.0.1:{second.port}"\n'
    )
    server = Serve(folder, "--config", str(config), port=port)
    try:
        result = run(
            [
                require_tool("findscu"),
                "-v",
                "-S",
                "-aec",
                AET,
                "-k",
                "QueryRetrieveLevel=SERIES",
                "-k",
                f"StudyInstanceUID={study}",
                "-k",
                "SeriesInstanceUID",
                "127.0.0.1",
                str(port),
            ]
        )
        found = sorted(r["0020,000e"] for r in responses(result.stderr))
        assert found == sorted(node.archive.studies[study])
        moved = run(
            [
                require_tool("movescu"),
                "-v",
                "-S",
                "-aec",
                AET,
                "-aem",
                "STORESCP",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study}",
                "127.0.0.1",
                str(port),
            ]
        )
        assert "Received Final Move Response (Success)" in moved.stderr, moved.stderr
    finally:
        server.stop()
        second.stop()
    assert len(list(second.folder.glob("CT.*"))) == count
