"""``dicomnet worklist add|list|remove`` on a storage folder, from DICOM files, DICOM JSON and CSV,
with the errors a user makes (a file that is none of them, an unknown id, --id for several items),
and ``dicomnet commit`` with no DICOM file or no peer. Against peers: test_workflow_peers.py."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.cli.conftest import dicomnet
from tests.helpers import free_port, write_ct


def _item(pid: str, accession: str) -> Dataset:
    ds = Dataset()
    ds.PatientID = pid
    ds.PatientName = "Test^" + pid
    ds.AccessionNumber = accession
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledStationAETitle = "CT1"
    step.ScheduledProcedureStepID = "S" + accession
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def test_worklist_add_list_remove(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    part10 = tmp_path / "item.wl"
    ds = _item("P1", "A1")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"  # as dump2dcm writes .wl
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(part10, enforce_file_format=True)
    as_json = tmp_path / "items.json"
    as_json.write_text(json.dumps([_item("P2", "A2").to_json_dict()]))
    as_csv = tmp_path / "items.csv"
    as_csv.write_text("PatientID,AccessionNumber,Modality,ScheduledProcedureStepID\nP3,A3,MR,S3\n")

    added = dicomnet(
        "worklist", "add", "--storage", storage, str(part10), str(as_json), str(as_csv)
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.split() == ["A1||SA1", "A2||SA2", "A3||S3"]
    assert "3 item(s) added; 3 in the worklist" in added.stderr
    named = dicomnet("worklist", "add", "--storage", storage, "--id", "mine", str(part10))
    assert named.returncode == 0 and named.stdout.split() == ["mine"]

    listed = dicomnet("worklist", "list", "--storage", storage, "--csv")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].startswith("id,PatientID,PatientName,AccessionNumber,Modality")
    assert [row.split(",")[0] for row in rows[1:]] == ["A1||SA1", "A2||SA2", "A3||S3", "mine"]
    full = json.loads(dicomnet("worklist", "list", "--storage", storage, "--json").stdout)
    assert Dataset.from_json(full["A3||S3"]).ScheduledProcedureStepSequence[0].Modality == "MR"

    removed = dicomnet("worklist", "remove", "--storage", storage, "mine", "nothing")
    assert removed.returncode == 1
    assert removed.stdout.strip() == "removed mine"
    assert "no worklist item 'nothing'" in removed.stderr


def test_worklist_add_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    text = tmp_path / "notes.txt"
    text.write_text("not a worklist\n")
    bad = dicomnet("worklist", "add", "--storage", storage, str(text))
    assert bad.returncode == 1 and "not DICOM, DICOM JSON (.json) or CSV (.csv)" in bad.stderr
    no_step = tmp_path / "no-step.json"
    no_step.write_text(json.dumps({"00100020": {"vr": "LO", "Value": ["P"]}}))
    refused = dicomnet("worklist", "add", "--storage", storage, str(no_step))
    assert refused.returncode == 1 and "Scheduled Procedure Step Sequence" in refused.stderr
    two = tmp_path / "two.json"
    two.write_text(json.dumps([_item("P1", "A1").to_json_dict(), _item("P2", "A2").to_json_dict()]))
    usage = dicomnet("worklist", "add", "--storage", storage, "--id", "x", str(two))
    assert usage.returncode == 2 and "--id names one item" in usage.stderr
    empty = dicomnet("worklist", "list", "--storage", storage)
    assert empty.returncode == 0 and "the worklist is empty" in empty.stderr
    assert dicomnet("mpps", "list", "--storage", storage).stderr.strip() == "no MPPS"


def test_commit_without_dicom_files_or_peer(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("x")
    nothing = dicomnet("commit", "127.0.0.1", "11112", str(text))
    assert nothing.returncode == 1 and "nothing to commit" in nothing.stderr
    write_ct(tmp_path / "a.dcm")
    unreachable = dicomnet("commit", "127.0.0.1", str(free_port()), str(tmp_path / "a.dcm"))
    assert unreachable.returncode == 2 and "cannot connect" in unreachable.stderr
