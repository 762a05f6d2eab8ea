"""The query/retrieve index: upserts, hierarchical C-FIND at each level, computed keys, retrieve."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnet.archive.index import InstanceRecord, QueryError, SQLiteIndex

SR = "1.2.840.10008.5.1.4.1.1.88.11"
CT = "1.2.840.10008.5.1.4.1.1.2"


def rec(sop: str, series: str, study: str, **kw: Any) -> InstanceRecord:
    values: dict[str, Any] = {
        "sop_instance_uid": sop,
        "sop_class_uid": CT,
        "series_instance_uid": series,
        "study_instance_uid": study,
        "path": f"{study}/{series}/{sop}.dcm",
        "size": 1000,
    }
    values.update(kw)
    return InstanceRecord(**values)


P1 = {"patient_id": "P1", "patient_name": "Doe^John", "patient_birth_date": "19700101"}
P2 = {"patient_id": "P2", "patient_name": "Müller^Hans"}
S1 = {
    "study_date": "20200110",
    "study_time": "101500",
    "accession_number": "A1",
    "study_description": "CT HEAD",
}
S2 = {"study_date": "20210301", "study_time": "0830", "accession_number": "A2"}
S3 = {"study_date": "20200115", "study_time": "2300"}  # no accession number
S4 = {"study_date": "20190101", "study_time": "1200", "accession_number": "A4"}


def archive() -> list[InstanceRecord]:
    """P1: study 1 (CT series of 3, SR series of 1), study 2 (MR series of 2); P2: study 3 (CT);
    a patient with no PatientID: study 4 (US)."""
    out = [rec(f"1.1.{n}", "1.1", "1", modality="CT", **P1, **S1) for n in (1, 2, 3)]
    out.append(rec("1.2.1", "1.2", "1", modality="SR", sop_class_uid=SR, **P1, **S1))
    out += [rec(f"2.1.{n}", "2.1", "2", modality="MR", **P1, **S2) for n in (1, 2)]
    out.append(rec("3.1.1", "3.1", "3", modality="CT", **P2, **S3))
    out.append(rec("4.1.1", "4.1", "4", modality="US", patient_name="Anon", **S4))
    return out


@pytest.fixture
def index() -> Iterator[SQLiteIndex]:
    with SQLiteIndex(":memory:") as idx:
        for record in archive():
            idx.add(record)
        yield idx


def q(**keys: str) -> dict[str, tuple[str, str]]:
    vrs = {
        "PatientID": "LO",
        "PatientName": "PN",
        "StudyInstanceUID": "UI",
        "SeriesInstanceUID": "UI",
        "SOPInstanceUID": "UI",
        "StudyDate": "DA",
        "StudyTime": "TM",
        "Modality": "CS",
        "ModalitiesInStudy": "CS",
        "AccessionNumber": "SH",
    }
    return {k: (vrs.get(k, "IS" if k.startswith("Number") else "LO"), v) for k, v in keys.items()}


def uids(results: Iterator[dict[str, object]], key: str = "StudyInstanceUID") -> list[object]:
    return [r[key] for r in results]


def test_patient_level(index: SQLiteIndex) -> None:
    (result,) = index.query(
        "PATIENT",
        q(
            PatientName="doe*",
            PatientBirthDate="",
            NumberOfPatientRelatedStudies="",
            NumberOfPatientRelatedSeries="",
            NumberOfPatientRelatedInstances="",
        ),
    )
    assert result == {
        "PatientID": "P1",
        "PatientName": "Doe^John",
        "PatientBirthDate": "19700101",
        "NumberOfPatientRelatedStudies": 2,
        "NumberOfPatientRelatedSeries": 3,
        "NumberOfPatientRelatedInstances": 6,
    }


def test_study_level_range_and_computed_keys(index: SQLiteIndex) -> None:
    results = list(
        index.query(
            "STUDY",
            q(
                StudyDate="20200101-20201231",
                PatientName="",
                ModalitiesInStudy="",
                NumberOfStudyRelatedSeries="",
                NumberOfStudyRelatedInstances="",
                SOPClassesInStudy="",
            ),
        )
    )
    assert uids(iter(results)) == ["1", "3"]
    first = results[0]
    assert first["ModalitiesInStudy"] == ["CT", "SR"]
    assert first["NumberOfStudyRelatedSeries"] == 2
    assert first["NumberOfStudyRelatedInstances"] == 4
    assert first["SOPClassesInStudy"] == [CT, SR]
    assert first["StudyDate"] == "20200110"
    assert "SpecificCharacterSet" not in first
    # Müller is not ASCII: the response declares UTF-8.
    assert results[1]["PatientName"] == "Müller^Hans"
    assert results[1]["SpecificCharacterSet"] == "ISO_IR 192"


def test_study_level_time_range_with_partial_precision(index: SQLiteIndex) -> None:
    assert uids(index.query("STUDY", q(StudyTime="1000-1100"))) == ["1"]
    assert uids(index.query("STUDY", q(StudyTime="-0830"))) == ["2"]
    assert uids(index.query("STUDY", q(StudyTime="2259-"))) == ["3"]


def test_study_level_uid_list(index: SQLiteIndex) -> None:
    assert uids(index.query("STUDY", q(StudyInstanceUID="3\\1\\9"))) == ["1", "3"]


def test_modalities_in_study_is_matched_against_any_series(index: SQLiteIndex) -> None:
    assert uids(index.query("STUDY", q(ModalitiesInStudy="MR"))) == ["2"]
    assert uids(index.query("STUDY", q(ModalitiesInStudy="SR\\US"))) == ["1", "4"]
    assert uids(index.query("STUDY", q(ModalitiesInStudy="C?"))) == ["1", "3"]


def test_person_name_is_case_and_accent_insensitive(index: SQLiteIndex) -> None:
    assert uids(index.query("STUDY", q(PatientName="MULLER^HANS"))) == ["3"]
    assert uids(index.query("STUDY", q(PatientName="mül*"))) == ["3"]


def test_zero_length_stored_value_matches_any_key(index: SQLiteIndex) -> None:
    # PS3.4 §C.2.2.1.1: study 3 has no Accession Number, study 4's patient has no Patient ID.
    assert uids(index.query("STUDY", q(AccessionNumber="A1"))) == ["1", "3"]
    assert uids(index.query("STUDY", q(PatientID="P1"))) == ["1", "2", "4"]


def test_patient_root_study_level_needs_a_single_patient_id(index: SQLiteIndex) -> None:
    found = index.query("STUDY", q(PatientID="P2", StudyDate=""), model="PATIENT")
    assert uids(found) == ["3"]
    for bad in ({}, q(PatientID=""), q(PatientID="P*"), q(PatientID="P1\\P2")):
        with pytest.raises(QueryError, match="PatientID"):
            list(index.query("STUDY", bad, model="PATIENT"))
    # A relational query does not need it. PatientID is Patient Root's unique key, so the patient
    # with no ID is not "unknown, hence matching" here (unlike in Study Root, below).
    found = index.query("STUDY", q(PatientID="P*"), relational=True, model="PATIENT")
    assert uids(found) == ["1", "2", "3"]
    assert uids(index.query("STUDY", q(PatientID="P*"))) == ["1", "2", "3", "4"]


def test_series_level(index: SQLiteIndex) -> None:
    results = list(
        index.query(
            "SERIES",
            q(
                StudyInstanceUID="1",
                Modality="CT",
                SeriesInstanceUID="",
                NumberOfSeriesRelatedInstances="",
                NumberOfStudyRelatedInstances="",
            ),
        )
    )
    assert results == [
        {
            "StudyInstanceUID": "1",
            "SeriesInstanceUID": "1.1",
            "Modality": "CT",
            "NumberOfSeriesRelatedInstances": 3,
            "NumberOfStudyRelatedInstances": 4,
        }
    ]
    with pytest.raises(QueryError, match="StudyInstanceUID"):
        list(index.query("SERIES", q(Modality="CT")))


def test_patient_root_series_level(index: SQLiteIndex) -> None:
    found = index.query(
        "SERIES", q(PatientID="P1", StudyInstanceUID="2", Modality=""), model="PATIENT"
    )
    assert list(found) == [
        {"PatientID": "P1", "StudyInstanceUID": "2", "SeriesInstanceUID": "2.1", "Modality": "MR"}
    ]


def test_image_level_with_uid_list(index: SQLiteIndex) -> None:
    found = index.query(
        "IMAGE",
        q(
            StudyInstanceUID="1",
            SeriesInstanceUID="1.1",
            SOPInstanceUID="1.1.3\\1.1.1",
            SOPClassUID="",
            InstanceNumber="",
            QueryRetrieveLevel="",
        ),
    )
    assert list(found) == [
        {
            "StudyInstanceUID": "1",
            "SeriesInstanceUID": "1.1",
            "SOPInstanceUID": uid,
            "SOPClassUID": CT,
            "InstanceNumber": None,
            "QueryRetrieveLevel": "IMAGE",
        }
        for uid in ("1.1.1", "1.1.3")
    ]
    with pytest.raises(QueryError, match="SeriesInstanceUID"):
        list(index.query("IMAGE", q(StudyInstanceUID="1", SeriesInstanceUID="1.*")))


def test_keys_below_the_level_and_unknown_keys_are_not_matched(index: SQLiteIndex) -> None:
    found = list(index.query("STUDY", q(Modality="MR", InstitutionName="X", PatientAge="")))
    assert uids(iter(found)) == ["1", "2", "3", "4"]
    assert all(r["Modality"] is None and r["PatientAge"] is None for r in found)
    assert all(r["InstitutionName"] is None for r in found)


def test_counts_are_return_only(index: SQLiteIndex) -> None:
    assert len(list(index.query("STUDY", q(NumberOfStudyRelatedInstances="99")))) == 4


def test_bad_levels_and_values(index: SQLiteIndex) -> None:
    with pytest.raises(QueryError):
        list(index.query("FRAME", {}))
    with pytest.raises(QueryError, match="no PATIENT level"):
        list(index.query("PATIENT", {}, model="STUDY"))
    with pytest.raises(QueryError, match="DA"):
        list(index.query("STUDY", q(StudyDate="2020*")))


def test_instances_for_retrieve(index: SQLiteIndex) -> None:
    records = list(index.instances("STUDY", q(StudyInstanceUID="1")))
    assert [r.sop_instance_uid for r in records] == ["1.1.1", "1.1.2", "1.1.3", "1.2.1"]
    assert records[0].path == "1/1.1/1.1.1.dcm"
    assert records[0].patient_name == "Doe^John"
    assert records[3].sop_class_uid == SR
    series = index.instances("SERIES", q(StudyInstanceUID="1", SeriesInstanceUID="1.2\\1.1"))
    assert len(list(series)) == 4
    patient = index.instances("PATIENT", q(PatientID="P1"), model="PATIENT")
    assert len(list(patient)) == 6
    image = index.instances(
        "IMAGE", q(StudyInstanceUID="2", SeriesInstanceUID="2.1", SOPInstanceUID="2.1.2")
    )
    assert [r.sop_instance_uid for r in image] == ["2.1.2"]
    # Never the whole archive by accident: the level's unique key is required.
    for bad in ({}, q(StudyInstanceUID=""), q(StudyInstanceUID="*")):
        with pytest.raises(QueryError, match="StudyInstanceUID"):
            list(index.instances("STUDY", bad))


def test_upsert_replaces_and_moves_an_instance(index: SQLiteIndex) -> None:
    # Re-adding 3.1.1 under a new study of P1 empties study 3 and patient P2, which go.
    index.add(rec("3.1.1", "5.1", "5", modality="CT", path="moved.dcm", size=7, **P1))
    assert uids(index.query("STUDY", q(PatientID="P2"))) == ["4"]  # 4: unknown Patient ID
    names = [r["PatientName"] for r in index.query("PATIENT", q(PatientName=""))]
    assert names == ["Doe^John", "Anon"]
    (moved,) = index.instances("STUDY", q(StudyInstanceUID="5"))
    assert (moved.path, moved.size) == ("moved.dcm", 7)
    assert len(list(index.records())) == 8


def test_latest_non_empty_values_win(index: SQLiteIndex) -> None:
    index.add(rec("1.1.9", "1.1", "1", modality="CT", **P1))  # no study description
    (study,) = index.query("STUDY", q(StudyInstanceUID="1", StudyDescription=""))
    assert study["StudyDescription"] == "CT HEAD"
    index.add(rec("1.1.9", "1.1", "1", modality="CT", study_description="CT HEAD NECK", **P1))
    (study,) = index.query("STUDY", q(StudyInstanceUID="1", StudyDescription=""))
    assert study["StudyDescription"] == "CT HEAD NECK"


def test_remove_prunes_empty_parents(index: SQLiteIndex) -> None:
    index.remove("2.1.1")
    assert len(list(index.query("STUDY", q(StudyInstanceUID="2")))) == 1
    index.remove("2.1.2")
    assert list(index.query("STUDY", q(StudyInstanceUID="2"))) == []
    (p1,) = index.query("PATIENT", q(PatientID="P1", NumberOfPatientRelatedStudies=""))
    assert p1["NumberOfPatientRelatedStudies"] == 1
    index.remove("3.1.1")
    assert [r["PatientID"] for r in index.query("PATIENT", q(PatientName=""))] == ["P1", None]
    index.remove("no.such.uid")  # not an error


def test_add_many_and_records() -> None:
    with SQLiteIndex(":memory:") as idx:
        assert idx.add_many(archive()) == 8
        assert [r.sop_instance_uid for r in idx.records()][:2] == ["1.1.1", "1.1.2"]


def test_from_dataset() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    ds = dcmread(path, stop_before_pixels=True)
    record = InstanceRecord.from_dataset(ds, Path("a") / "b.dcm", 123)
    assert record.path == "a/b.dcm"
    assert record.size == 123
    assert record.sop_instance_uid == ds.SOPInstanceUID
    assert record.patient_name == "CompressedSamples^CT1"
    assert record.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert record.specific_character_set == "ISO_IR 100"
    assert record.accession_number is None
    del ds.SOPInstanceUID  # falls back to the Media Storage SOP Instance UID
    assert InstanceRecord.from_dataset(ds, "x", 1, "1.2.3").sop_instance_uid == (
        ds.file_meta.MediaStorageSOPInstanceUID
    )
    del ds.StudyInstanceUID
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        InstanceRecord.from_dataset(ds, "x", 1)


def test_file_index_persists_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    with SQLiteIndex(db) as idx:
        idx.add_many(archive())
    with SQLiteIndex(db) as idx:
        assert len(list(idx.records())) == 8
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1


def test_threads_share_one_index(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with SQLiteIndex(tmp_path / "index.sqlite") as idx:

        def writer(n: int) -> None:
            try:
                for i in range(50):
                    idx.add(rec(f"9.{n}.{i}", f"9.{n}", "9", modality="OT", **P1))
                    list(idx.query("STUDY", q(PatientID="P1", ModalitiesInStudy="")))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        (study,) = idx.query("STUDY", q(StudyInstanceUID="9", NumberOfStudyRelatedInstances=""))
        assert study["NumberOfStudyRelatedInstances"] == 200


def test_results_are_batched_and_stream(index: SQLiteIndex) -> None:
    index.add_many(rec(f"7.1.{n}", "7.1", "7", **P2) for n in range(1234))
    found = index.query("IMAGE", q(StudyInstanceUID="7", SeriesInstanceUID="7.1"))
    assert sum(1 for _ in found) == 1234
    # A query being consumed does not block writers.
    pending = index.query("IMAGE", q(StudyInstanceUID="7", SeriesInstanceUID="7.1"))
    next(pending)
    index.remove("7.1.1000")  # in a batch not fetched yet
    assert sum(1 for _ in pending) == 1232  # the removed row is skipped


def test_study_query_by_patient_id_uses_an_index_on_100k_instances() -> None:
    with SQLiteIndex(":memory:") as idx:
        idx.add_many(
            rec(
                f"1.{s}.{n}",
                f"1.{s}",
                f"{s}",
                patient_id=f"PID{s // 4:05d}",
                patient_name=f"Name{s // 4}^Given",
                study_date=f"2020{1 + s % 12:02d}{1 + s % 28:02d}",
                modality=("CT", "MR", "US")[s % 3],
            )
            for s in range(10_000)
            for n in range(10)
        )
        plan = idx.explain("STUDY", q(PatientID="PID00042"))
        assert re.search(r"SEARCH p USING (COVERING )?INDEX patient_id_idx", plan), plan
        assert "SCAN" not in plan, plan
        found = idx.query("STUDY", q(PatientID="PID00042", NumberOfStudyRelatedInstances=""))
        assert [(r["StudyInstanceUID"], r["NumberOfStudyRelatedInstances"]) for r in found] == [
            (str(s), 10) for s in range(168, 172)
        ]
        plan = idx.explain("STUDY", q(PatientName="name42^*"))
        assert "USING INDEX patient_name_idx" in plan or "COVERING INDEX patient_name_idx" in plan
        plan = idx.explain("STUDY", q(StudyDate="20200301-20200305"))
        assert "INDEX study_date_idx" in plan, plan


def test_one_batch_that_moves_an_instance_away_and_back() -> None:
    """add_many reuses the patient/study/series rows it wrote earlier in the same transaction;
    an instance moving to another series prunes the emptied series, and a later record of that
    series in the same batch must create it again, not point at the deleted row."""
    a = rec("9.1.1", "9.1", "9", modality="CT", **P1, **S1)
    moved = rec("9.1.1", "9.2", "9", modality="CT", **P1, **S1)  # the only instance leaves 9.1
    back = rec("9.1.2", "9.1", "9", modality="CT", **P1, **S1)
    with SQLiteIndex(":memory:") as idx:
        idx.add_many([a, moved, back])
        by_uid = {r.sop_instance_uid: r.series_instance_uid for r in idx.records()}
        assert by_uid == {"9.1.1": "9.2", "9.1.2": "9.1"}
        series = uids(idx.query("SERIES", q(StudyInstanceUID="9", SeriesInstanceUID="")),
                      "SeriesInstanceUID")  # fmt: skip
        assert sorted(series) == ["9.1", "9.2"]


def test_the_attribute_list_is_read_from_the_record_once() -> None:
    """Every record field that holds an attribute names its keyword; files are read for
    exactly those, and a record built from a data set fills each of them."""
    from dataclasses import fields as dc_fields

    from pydicom import Dataset
    from pydicom.datadict import dictionary_VR

    from dicomnet.archive.index import _READ_TAGS as read_tags
    from dicomnet.archive.index import OPTIONAL_KEYWORDS, RECORD_KEYWORDS, SUPPORTED_KEYS

    names = {f.name for f in dc_fields(InstanceRecord)}
    assert set(RECORD_KEYWORDS) == names - {"path", "size", "transfer_syntax_uid"}
    assert sorted(read_tags) == sorted(RECORD_KEYWORDS.values())
    assert len(OPTIONAL_KEYWORDS) == len(RECORD_KEYWORDS) - 4
    by_vr = {"UI": "1.2", "IS": "7", "DA": "20240101", "TM": "120000", "PN": "A^B", "CS": "CT"}
    values = {k: by_vr.get(str(dictionary_VR(k)), "V") for k in RECORD_KEYWORDS.values()}
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    record = InstanceRecord.from_dataset(ds, "a/b.dcm", 10)
    for name, keyword in RECORD_KEYWORDS.items():
        assert getattr(record, name) == values[keyword], keyword
    assert {"PatientID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"} <= SUPPORTED_KEYS


def test_a_page_is_the_slice_of_the_whole_answer(index: SQLiteIndex) -> None:
    """query_page: SQLite's LIMIT/OFFSET gives what slicing the whole answer gives (QIDO)."""
    from itertools import islice

    for level, keys in (
        ("STUDY", q(StudyInstanceUID="", NumberOfStudyRelatedInstances="")),
        ("SERIES", q(StudyInstanceUID="1", SeriesInstanceUID="", Modality="")),
        ("IMAGE", q(SOPInstanceUID="", Modality="C*")),
        ("STUDY", q(PatientName="doe*", ModalitiesInStudy="")),
    ):
        whole = list(index.query(level, keys, relational=True))
        assert whole
        for offset in range(len(whole) + 2):
            for limit in (None, 0, 1, 2, 100):
                page = list(index.query_page(level, keys, relational=True, offset=offset,
                                             limit=limit))  # fmt: skip
                end = None if limit is None else offset + limit
                assert page == list(islice(whole, offset, end)), (level, offset, limit)
