"""Modality Worklist store and matching (PS3.4 Annex K, §C.2.2.2), without a network."""

from __future__ import annotations

import json

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from dicomnet.archive.matching import QueryError
from dicomnet.archive.worklist import (
    WorklistError,
    WorklistStore,
    match_dataset,
    read_csv,
    read_json,
    split_steps,
)


def _item(
    patient_id: str,
    name: str,
    accession: str,
    modality: str,
    station: str,
    date: str,
    time: str,
    *,
    codes: tuple[str, ...] = (),
    sps_id: str = "SPS1",
) -> Dataset:
    ds = Dataset()
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.AccessionNumber = accession
    ds.RequestedProcedureID = "RP" + accession
    ds.StudyInstanceUID = "1.2.3." + accession.lstrip("A")
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = time
    sps.ScheduledProcedureStepID = sps_id
    sps.ScheduledPerformingPhysicianName = "Who^Doctor"
    protocol = []
    for code in codes:
        c = Dataset()
        c.CodeValue = code
        c.CodingSchemeDesignator = "LOCAL"
        c.CodeMeaning = "protocol " + code
        protocol.append(c)
    sps.ScheduledProtocolCodeSequence = Sequence(protocol)
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


@pytest.fixture
def store() -> WorklistStore:
    s = WorklistStore(":memory:")
    s.add(_item("P1", "Doe^John", "A1", "CT", "CT1", "20261201", "083000", codes=("C1", "C2")))
    s.add(_item("P2", "Doe^Jane", "A2", "MR", "MR1", "20261201", "140000", codes=("M1",)))
    s.add(_item("P3", "Smith^Anna", "A3", "CT", "CT2", "20261202", "091500"))
    s.add(_item("P4", "Müller^Jürgen", "A4", "US", "US1", "20261203", "101010"))
    return s


def _query(**top: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    return ds


def _with_sps(ds: Dataset, **keys: str) -> Dataset:
    sps = Dataset()
    for keyword in (
        "Modality",
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
    ):
        setattr(sps, keyword, keys.pop(keyword, ""))
    for keyword, value in keys.items():
        setattr(sps, keyword, value)
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def _ids(answers: list[Dataset]) -> list[str]:
    return [str(a.PatientID) for a in answers]


def test_universal_query_returns_every_item_with_only_the_requested_keys(
    store: WorklistStore,
) -> None:
    answers = list(store.find(_query()))
    assert _ids(answers) == ["P1", "P2", "P3", "P4"]
    assert sorted(e.keyword for e in answers[0]) == ["AccessionNumber", "PatientID", "PatientName"]
    assert str(answers[0].PatientName) == "Doe^John"


def test_single_value_and_wildcard_and_pn_folding(store: WorklistStore) -> None:
    assert _ids(list(store.find(_query(PatientID="P2")))) == ["P2"]
    assert _ids(list(store.find(_query(PatientName="Doe^*")))) == ["P1", "P2"]
    assert _ids(list(store.find(_query(PatientName="d?e^j*")))) == ["P1", "P2"]
    # PN matching is case- and accent-insensitive (the archive's documented choice)
    assert _ids(list(store.find(_query(PatientName="MULLER^JURGEN")))) == ["P4"]
    assert _ids(list(store.find(_query(AccessionNumber="A1\\A3")))) == ["P1", "P3"]


def test_sps_keys_modality_station_and_date_time_ranges(store: WorklistStore) -> None:
    def find(**keys: str) -> list[str]:
        return _ids(list(store.find(_with_sps(_query(), **keys))))

    assert find(Modality="CT") == ["P1", "P3"]
    assert find(ScheduledStationAETitle="MR1") == ["P2"]
    assert find(ScheduledProcedureStepStartDate="20261201") == ["P1", "P2"]
    assert find(ScheduledProcedureStepStartDate="20261202-") == ["P3", "P4"]
    assert find(ScheduledProcedureStepStartDate="-20261201") == ["P1", "P2"]
    assert find(ScheduledProcedureStepStartDate="20261201-20261202") == ["P1", "P2", "P3"]
    assert find(
        ScheduledProcedureStepStartDate="20261201", ScheduledProcedureStepStartTime="0800-1200"
    ) == ["P1"]
    assert find(Modality="CT", ScheduledStationAETitle="CT2") == ["P3"]
    assert find(Modality="XA") == []


def test_answer_sequence_holds_the_requested_item_keys_with_stored_values(
    store: WorklistStore,
) -> None:
    [answer] = store.find(_with_sps(_query(PatientID="P1"), Modality="CT"))
    [sps] = answer.ScheduledProcedureStepSequence
    assert sps.Modality == "CT"
    assert sps.ScheduledStationAETitle == "CT1"
    assert sps.ScheduledProcedureStepStartDate == "20261201"
    assert sps.ScheduledProcedureStepStartTime == "083000"
    assert "ScheduledProcedureStepID" not in sps  # not asked for


def test_nested_sequence_matching_any_item_and_only_matching_items_returned(
    store: WorklistStore,
) -> None:
    code = Dataset()
    code.CodeValue = "C2"
    code.CodeMeaning = ""
    query = _with_sps(_query())
    query.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = Sequence([code])
    answers = list(store.find(query))
    assert _ids(answers) == ["P1"]
    [codes] = [answers[0].ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence]
    assert [(c.CodeValue, c.CodeMeaning) for c in codes] == [("C2", "protocol C2")]
    assert "CodingSchemeDesignator" not in codes[0]


def test_empty_sequence_key_is_universal_and_returns_the_whole_sequence(
    store: WorklistStore,
) -> None:
    query = _with_sps(_query(PatientID="P1"))
    query.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = Sequence([])
    [answer] = store.find(query)
    codes = answer.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert [c.CodeValue for c in codes] == ["C1", "C2"]
    assert codes[0].CodingSchemeDesignator == "LOCAL"  # the whole items


def test_a_sequence_key_with_two_items_is_refused(store: WorklistStore) -> None:
    query = _query()
    query.ScheduledProcedureStepSequence = Sequence([Dataset(), Dataset()])
    query.ScheduledProcedureStepSequence[0].Modality = "CT"
    with pytest.raises(QueryError, match="one item"):
        list(store.find(query))


def test_unknown_stored_value_matches_and_comes_back_empty() -> None:
    stored = _item("P9", "X^Y", "A9", "CT", "CT1", "20261201", "080000")
    query = _query(PatientID="P9")
    query.PatientBirthDate = "19700101"
    answer = match_dataset(query, stored)
    assert answer is not None and answer.PatientBirthDate in (None, "")


def test_non_ascii_answer_declares_utf8(store: WorklistStore) -> None:
    [answer] = store.find(_query(PatientID="P4"))
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "Müller^Jürgen"


def test_several_steps_become_several_items_and_replace_by_id() -> None:
    ds = _item("P5", "Five^Pat", "A5", "CT", "CT1", "20261205", "080000")
    second = Dataset()
    second.Modality = "MR"
    second.ScheduledStationAETitle = "MR1"
    second.ScheduledProcedureStepID = "SPS2"
    ds.ScheduledProcedureStepSequence.append(second)
    assert len(split_steps(ds)) == 2
    s = WorklistStore(":memory:")
    ids = s.add(ds)
    assert ids == ["A5|RPA5|SPS1", "A5|RPA5|SPS2"]
    assert len(s) == 2
    s.add(_item("P5", "Five^Pat", "A5", "XA", "XA1", "20261205", "080000"))  # same id as SPS1
    assert len(s) == 2
    assert _ids(list(s.find(_with_sps(_query(), Modality="XA")))) == ["P5"]
    assert s.remove("A5|RPA5|SPS2") and not s.remove("A5|RPA5|SPS2")
    assert len(s) == 1


def test_an_item_without_a_step_is_refused() -> None:
    ds = Dataset()
    ds.PatientID = "P"
    with pytest.raises(WorklistError, match="Scheduled Procedure Step Sequence"):
        WorklistStore(":memory:").add(ds)


def test_json_and_csv_inputs() -> None:
    ds = _item("P6", "Six^Pat", "A6", "CT", "CT1", "20261206", "080000")
    [back] = read_json(json.dumps(ds.to_json_dict()))
    assert back.ScheduledProcedureStepSequence[0].Modality == "CT"
    assert len(read_json(json.dumps([ds.to_json_dict(), ds.to_json_dict()]))) == 2
    with pytest.raises(WorklistError, match="not JSON"):
        read_json("{")
    rows = read_csv(
        "PatientID,PatientName,AccessionNumber,Modality,ScheduledStationAETitle,"
        "ScheduledProcedureStepStartDate\n"
        "P7,Seven^Pat,A7,MR,MR2,20261207\n"
    )
    [row] = rows
    assert row.PatientID == "P7"
    assert row.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "MR2"
    assert "Modality" not in row  # inside the step
    with pytest.raises(WorklistError, match="not a DICOM keyword"):
        read_csv("PatientID,NoSuchKeyword\nP,x\n")


def test_two_stores_on_one_file_see_each_other(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "index.sqlite"
    writer = WorklistStore(path)
    reader = WorklistStore(path)
    writer.add(_item("P8", "Eight^Pat", "A8", "CT", "CT1", "20261208", "080000"))
    assert _ids(list(reader.find(_query()))) == ["P8"]
    writer.close()
    reader.close()


def test_find_matches_the_stored_json_as_match_dataset_matches_data_sets(
    store: WorklistStore,
) -> None:
    """``find`` matches each item's DICOM JSON without making it a Dataset first: the same
    answers as ``match_dataset`` on the items, for every kind of key."""
    code = Dataset()
    code.CodeValue = "C*"
    queries = [
        _query(),
        _query(PatientName="doe^*"),
        _query(PatientName="MULLER^JURGEN"),
        _query(AccessionNumber="A2\\A4"),
        _with_sps(_query(), Modality="CT", ScheduledProcedureStepStartTime="0800-0900"),
        _with_sps(_query(), ScheduledProcedureStepStartDate="20261202-"),
        _with_sps(_query(), ScheduledStationAETitle="?R1"),
        _with_sps(_query(), ScheduledProtocolCodeSequence=Sequence([code])),
        _with_sps(_query(PatientID="P3"), ScheduledProtocolCodeSequence=Sequence([])),
        _query(PatientBirthDate="19700101"),  # unknown in every item: matches (see above)
    ]
    items = sorted(store.items(), key=lambda i: _ids([i.dataset]))
    for query in queries:
        expected = [a for a in (match_dataset(query, i.dataset) for i in items) if a is not None]
        got = list(store.find(query))
        assert [a.to_json_dict() for a in got] == [a.to_json_dict() for a in expected], query
