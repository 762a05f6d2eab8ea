"""dicomnet.query (PS3.4 §C.4, §C.6): identifiers built from keyword/tag mappings and data sets,
Query/Retrieve levels and models, command-line query keys. No network."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from dicomnet.query import build_query, parse_keys, parse_tag, resolve_model


def test_build_query_from_keywords_and_tags() -> None:
    ds = build_query(
        {
            "PatientName": "SMITH*",
            "0008,0020": "20240101-",
            "(0020,000D)": None,
            "ModalitiesInStudy": ["CT", "MR"],
            "StudyTime": "",
            "00080061": "CT\\MR",
        },
        level="study",
    )
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.PatientName == "SMITH*"
    assert ds.StudyDate == "20240101-"
    assert ds["StudyInstanceUID"].VR == "UI" and ds["StudyInstanceUID"].value in (None, "")
    assert ds["StudyTime"].value in (None, "")
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]


def test_build_query_keeps_a_datasets_level_and_defaults_to_study() -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.SeriesInstanceUID = ""
    assert build_query(q).QueryRetrieveLevel == "SERIES"
    assert build_query(q, "image").QueryRetrieveLevel == "IMAGE"
    assert q.QueryRetrieveLevel == "SERIES"  # the caller's data set is not changed
    assert build_query({"PatientID": "P1"}).QueryRetrieveLevel == "STUDY"
    assert build_query(None, "INSTANCE").QueryRetrieveLevel == "IMAGE"


def test_build_query_sequences_and_numbers() -> None:
    ds = build_query(
        {"ReferencedStudySequence": {"ReferencedSOPInstanceUID": "1.2"}, "Rows": "512"}
    )
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2"
    assert ds.Rows == 512
    assert len(build_query({"ReferencedStudySequence": None}).ReferencedStudySequence) == 0


@pytest.mark.parametrize("bad", ["NotAKeyword", "0010", "zzzz,0010", ""])
def test_unknown_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        build_query({bad: "x"})


def test_bad_level_is_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        build_query({}, "FRAME")


def test_parse_keys() -> None:
    keys = parse_keys(["PatientName=SMITH*", "StudyDate", "0020,000D=", "AccessionNumber=A=B"])
    assert keys == {
        "PatientName": "SMITH*",
        "StudyDate": None,
        "0020,000D": "",
        "AccessionNumber": "A=B",
    }
    with pytest.raises(ValueError):
        parse_keys(["=x"])
    assert parse_tag("(0010,0020)") == 0x00100020
    assert parse_tag("PatientID") == 0x00100020


def test_resolve_model() -> None:
    assert resolve_model("study", "find") == "1.2.840.10008.5.1.4.1.2.2.1"
    assert resolve_model("P", "move") == "1.2.840.10008.5.1.4.1.2.1.2"
    assert resolve_model("patient", "get") == "1.2.840.10008.5.1.4.1.2.1.3"
    # A FIND UID asked for a C-MOVE gives the same model's MOVE UID.
    assert resolve_model("1.2.840.10008.5.1.4.1.2.2.1", "move") == "1.2.840.10008.5.1.4.1.2.2.2"
    assert resolve_model("1.2.3.4", "find") == "1.2.3.4"
    with pytest.raises(ValueError):
        resolve_model("hanging-protocols", "find")  # ("worklist" is a model since issue 12)


def test_worklist_query_puts_the_step_keys_into_the_sequence_item() -> None:
    from dicomnet.query import worklist_query
    from dicomnet.uids import MODALITY_WORKLIST_FIND

    ds = worklist_query(
        {"PatientName": None, "Modality": "CT", "(0040,0001)": "CT1", "AccessionNumber": "A*"}
    )
    assert "QueryRetrieveLevel" not in ds  # PS3.4 K.6.1.2: the worklist model has no levels
    assert sorted(e.keyword for e in ds) == [
        "AccessionNumber",
        "PatientName",
        "ScheduledProcedureStepSequence",
    ]
    [step] = ds.ScheduledProcedureStepSequence
    assert (step.Modality, step.ScheduledStationAETitle) == ("CT", "CT1")
    assert (
        worklist_query({"ScheduledProcedureStepSequence": None}).ScheduledProcedureStepSequence
        == []
    )
    assert resolve_model("worklist", "find") == MODALITY_WORKLIST_FIND
    with pytest.raises(ValueError, match="C-FIND only"):
        resolve_model("worklist", "move")
    with pytest.raises(ValueError, match="no Query/Retrieve Level"):
        build_query({}, "STUDY", model=MODALITY_WORKLIST_FIND)
