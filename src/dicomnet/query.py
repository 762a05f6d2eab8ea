"""Query/Retrieve identifiers for the SCU (PS3.4 §C.4, §C.6): the information models, the
identifier a C-FIND/C-MOVE/C-GET sends, and command-line query keys.

Rules: pure functions, no I/O. A model is a name ("patient", "study", "patient-study", with
aliases) or a SOP class UID; an attribute is a keyword or a tag in hexadecimal. An identifier is
always a new ``Dataset``: the caller's query is never changed. Unknown names fail early with a
``ValueError`` that says what is accepted.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.tag import BaseTag, Tag

from dicomnet.uids import MODALITY_WORKLIST_FIND, QR_MODELS

_MODEL_ALIASES = {
    "p": "patient",
    "patient-root": "patient",
    "patientroot": "patient",
    "s": "study",
    "study-root": "study",
    "studyroot": "study",
    "o": "patient-study",
    "patient-study-only": "patient-study",
}
_OPERATION_INDEX = {"find": 0, "move": 1, "get": 2}
QR_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


def resolve_model(model: str, operation: str) -> str:
    """The SOP class UID of ``operation`` ("find", "move" or "get") in ``model``: a name
    ("patient", "study", "patient-study") or a UID. A UID of another operation of a known
    model is mapped to this operation's (the Study Root FIND UID gives the Study Root MOVE UID
    for a C-MOVE); any other UID is used as given."""
    index = _OPERATION_INDEX[operation]
    key = model.strip().lower()
    key = _MODEL_ALIASES.get(key, key)
    if key in QR_MODELS:
        return QR_MODELS[key][index]
    if key in ("worklist", "mwl"):
        if operation != "find":
            raise ValueError("the Modality Worklist model has C-FIND only (PS3.4 K.6.1.2)")
        return MODALITY_WORKLIST_FIND
    for uids in QR_MODELS.values():
        if model in uids:
            return uids[index]
    if not model or not model.replace(".", "").isdigit():
        raise ValueError(
            f"unknown query/retrieve model {model!r}: use patient, study, patient-study or a UID"
        )
    return model


def _normalize_level(level: str) -> str:
    value = level.strip().upper()
    if value == "INSTANCE":
        value = "IMAGE"
    if value not in QR_LEVELS:
        raise ValueError(
            f"unknown query/retrieve level {level!r}: use one of {', '.join(QR_LEVELS)}"
        )
    return value


def parse_tag(key: str) -> BaseTag:
    """A data element tag from a keyword ("PatientName") or "gggg,eeee" / "(gggg,eeee)" /
    "ggggeeee" in hexadecimal."""
    text = key.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    tag = tag_for_keyword(text)
    if tag is not None:
        return Tag(tag)
    hexdigits = text.replace(",", "")
    if len(hexdigits) == 8 and all(ch in "0123456789abcdefABCDEF" for ch in hexdigits):
        return Tag(int(hexdigits, 16))
    raise ValueError(f"unknown attribute {key!r}: give a DICOM keyword or gggg,eeee")


QueryInput = Dataset | Mapping[str, Any] | None


def _dataset_from_mapping(keys: Mapping[str, Any]) -> Dataset:
    ds = Dataset()
    for key, value in keys.items():
        tag = parse_tag(key)
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            raise ValueError(
                f"attribute {key!r} is not in the data dictionary; its VR is unknown"
            ) from None
        if vr == "SQ":
            if value in (None, ""):
                items: list[Dataset] = []
            elif isinstance(value, (Dataset, Mapping)):
                items = [_item(value)]
            else:
                items = [_item(v) for v in value]
            ds.add_new(tag, vr, items)
            continue
        ds.add_new(tag, vr, _element_value(vr, value))
    return ds


def _item(value: Dataset | Mapping[str, Any]) -> Dataset:
    return value if isinstance(value, Dataset) else _dataset_from_mapping(value)


def _element_value(vr: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [_element_value(vr, v) for v in value]
    if vr in ("US", "UL", "SS", "SL", "UV", "SV"):
        return int(value)
    if vr in ("FL", "FD"):
        return float(value)
    if vr == "AT":
        return int(parse_tag(value)) if isinstance(value, str) else int(value)
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return str(value)


def build_query(
    query: QueryInput, level: str | None = None, *, model: str | None = None
) -> Dataset:
    """The identifier of a C-FIND/C-MOVE/C-GET: a copy of ``query`` (a ``Dataset``, or a
    mapping of keyword or "gggg,eeee" to value, where None or "" asks for the attribute back
    and a list or a backslash-separated string gives several values) with Query/Retrieve Level
    set to ``level`` (PATIENT, STUDY, SERIES or IMAGE). Without ``level`` the query's own level
    is kept, and STUDY is used when it has none. The Modality Worklist model (``model``
    1.2.840.10008.5.1.4.31) has no levels: no Query/Retrieve Level is added (PS3.4 K.6.1.2)."""
    # A deep copy: pydicom's Dataset(ds) shares the elements, and setting the level would
    # change the caller's query.
    ds = copy.deepcopy(query) if isinstance(query, Dataset) else _dataset_from_mapping(query or {})
    if model == MODALITY_WORKLIST_FIND:
        if level is not None:
            raise ValueError("the Modality Worklist model has no Query/Retrieve Level")
        return ds
    if level is not None:
        ds.QueryRetrieveLevel = _normalize_level(level)
    elif "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = "STUDY"
    return ds


#: Attributes of a worklist item's Scheduled Procedure Step (PS3.4 Table K.6-1): in a worklist
#: query they go into the item of the Scheduled Procedure Step Sequence (0040,0100).
SCHEDULED_STEP_KEYWORDS = frozenset(
    {
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime",
        "Modality",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepID",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStatus",
        "ScheduledProtocolCodeSequence",
        "PreMedication",
        "RequestedContrastAgent",
        "CommentsOnTheScheduledProcedureStep",
    }
)
_SPS = "ScheduledProcedureStepSequence"


def worklist_query(query: Mapping[str, Any] | None) -> Dataset:
    """A Modality Worklist C-FIND identifier (PS3.4 K.6.1.2) from a mapping as ``build_query``
    takes it, where the attributes of the Scheduled Procedure Step (``SCHEDULED_STEP_KEYWORDS``:
    Modality, Scheduled Station AE Title, its start date and time...) go into the one item of
    the Scheduled Procedure Step Sequence; no Query/Retrieve Level. ``{"Modality": "CT",
    "ScheduledProcedureStepStartDate": "20240101", "PatientName": None}`` asks for today's CT
    steps with the patient's name."""
    top: dict[str, Any] = {}
    step: dict[str, Any] = {}
    for key, value in (query or {}).items():
        try:
            tag = parse_tag(key)
        except ValueError:
            top[key] = value  # build_query says what is wrong with it
            continue
        name = keyword_for_tag(tag) or ""
        if name == _SPS and isinstance(value, Mapping):
            step.update(value)
        elif name in SCHEDULED_STEP_KEYWORDS:
            step[key] = value
        else:
            top[key] = value
    if step or _SPS in top:
        top[_SPS] = {**(top.get(_SPS) or {}), **step} if step else top[_SPS]
    return build_query(top, model=MODALITY_WORKLIST_FIND)


def parse_keys(keys: Iterable[str]) -> dict[str, str | None]:
    """Command-line query keys: ``"PatientName=SMITH*"`` matches, ``"StudyDate"`` (no ``=``)
    asks for the attribute back (findscu's ``-k``)."""
    out: dict[str, str | None] = {}
    for key in keys:
        name, eq, value = key.partition("=")
        if not name.strip():
            raise ValueError(f"query key {key!r} has no attribute name")
        parse_tag(name)  # fail early on unknown names
        out[name.strip()] = value if eq else None
    return out


__all__ = [
    "QR_LEVELS",
    "SCHEDULED_STEP_KEYWORDS",
    "QR_MODELS",
    "QueryInput",
    "build_query",
    "parse_keys",
    "parse_tag",
    "resolve_model",
    "worklist_query",
]
