"""Modality Worklist items and their matching (PS3.4 Annex K, §C.2.2.2).

One job: keep scheduled procedure steps in the archive's SQLite file and answer a Modality Worklist
C-FIND identifier with the matching items, each holding only the requested attributes.

Rules:

- One row per Scheduled Procedure Step. A data set added with several items in its Scheduled
  Procedure Step Sequence (0040,0100) becomes several worklist items, each with a sequence of one
  item (PS3.4 K.6.1.2.2: a worklist response carries exactly one scheduled procedure step).
- An item is identified by ``item_id``: the caller's, or ``Accession|RequestedProcedureID|SPSID``.
  Adding an item with an existing id replaces it.
- The matching keys of Table K.6-1 that are single-valued text (Patient's Name and ID, Accession
  Number, Modality, Scheduled Station AE Title, Scheduled Procedure Step Start Date/Time...) are
  also kept as columns in ``column_value`` form, so that a query narrows the candidates in SQL with
  ``matching.to_sql``; every key, sequence keys included, is then matched in Python by the same
  rules (``matching.matches``), so the SQL prefilter can only drop rows the full match would drop.
- Sequence Matching (§C.2.2.2.6): a key that is a sequence with one item matches when at least one
  stored item matches all of that item's keys (recursively); the response then holds the matching
  items with only the requested attributes. A sequence key with no item (or one empty item) is
  universal and returns the whole stored sequence.
- Storage is the DICOM JSON model (PS3.18 F.2) of each item; many processes may read and write the
  table at once (WAL), so ``dicomnet worklist add`` works while ``dicomnet serve`` runs.
- ``find`` matches the stored JSON as it is, with the identifier compiled once (``_Identifier``),
  and builds a pydicom ``Dataset`` only for an answer, from the requested attributes: building
  one per candidate made a query that returns 25,000 of 100,000 items take 38 s.
  ``match_dataset`` gives the same answers for data sets already in memory.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag

from dicomnet.archive.db import open_store
from dicomnet.archive.matching import (
    CompiledKey,
    QueryError,
    column_value,
    compile_query,
    key_matches,
    matches,
    to_sql,
)
from dicomnet.errors import DicomNetError
from dicomnet.uids import MODALITY_WORKLIST_FIND

log = logging.getLogger("dicomnet.archive")

__all__ = [
    "MODALITY_WORKLIST_FIND",
    "SPS_KEYWORDS",
    "WorklistError",
    "WorklistItem",
    "WorklistStore",
    "match_dataset",
    "read_csv",
    "read_json",
]


_SPS_SEQUENCE = "ScheduledProcedureStepSequence"
_SPS_TAG = 0x00400100

#: Attributes that belong inside the Scheduled Procedure Step Sequence item (PS3.4 Table K.6-1);
#: a CSV column with one of these names goes into the item, the others to the top level.
SPS_KEYWORDS = frozenset(
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
        "PreMedication",
        "RequestedContrastAgent",
        "CommentsOnTheScheduledProcedureStep",
    }
)

# column -> (keyword, VR, inside the SPS item?)
_COLUMNS: dict[str, tuple[str, str, bool]] = {
    "patient_id": ("PatientID", "LO", False),
    "patient_name": ("PatientName", "PN", False),
    "accession": ("AccessionNumber", "SH", False),
    "requested_procedure_id": ("RequestedProcedureID", "SH", False),
    "study_uid": ("StudyInstanceUID", "UI", False),
    "modality": ("Modality", "CS", True),
    "station_ae": ("ScheduledStationAETitle", "AE", True),
    "start_date": ("ScheduledProcedureStepStartDate", "DA", True),
    "start_time": ("ScheduledProcedureStepStartTime", "TM", True),
    "sps_id": ("ScheduledProcedureStepID", "SH", True),
    "physician": ("ScheduledPerformingPhysicianName", "PN", True),
}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS worklist_item (
    pk INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL UNIQUE,
    {", ".join(f"{name} TEXT" for name in _COLUMNS)},
    added TEXT NOT NULL,
    dataset TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS worklist_item_date ON worklist_item(start_date);
CREATE INDEX IF NOT EXISTS worklist_item_patient ON worklist_item(patient_id);
CREATE INDEX IF NOT EXISTS worklist_item_accession ON worklist_item(accession);
CREATE INDEX IF NOT EXISTS worklist_item_station ON worklist_item(station_ae, modality);
"""

# Never matched, never returned as a key (PS3.4 §C.2.2.2: Specific Character Set is not matched).
_NOT_KEYS = frozenset({0x00080005})


class WorklistError(DicomNetError, ValueError):
    """A worklist item or file that cannot be added (missing sequence, bad JSON or CSV)."""


@dataclass(frozen=True, slots=True)
class WorklistItem:
    """One stored scheduled procedure step."""

    item_id: str
    added: str
    dataset: Dataset

    def summary(self) -> dict[str, str]:
        """The columns ``dicomnet worklist list`` shows."""
        sps = _first_sps(self.dataset)
        return {
            "id": self.item_id,
            "PatientID": _text(self.dataset.get("PatientID")),
            "PatientName": _text(self.dataset.get("PatientName")),
            "AccessionNumber": _text(self.dataset.get("AccessionNumber")),
            "Modality": _text(sps.get("Modality")) if sps is not None else "",
            "ScheduledStationAETitle": _text(sps.get("ScheduledStationAETitle"))
            if sps is not None
            else "",
            "Start": (
                _text(sps.get("ScheduledProcedureStepStartDate"))
                + " "
                + _text(sps.get("ScheduledProcedureStepStartTime"))
            ).strip()
            if sps is not None
            else "",
        }


class WorklistStore:
    """Worklist items in an SQLite file (the archive's index file, or ``":memory:"``)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = open_store(self.path, _SCHEMA, timeout=timeout, durable=False)

    def __enter__(self) -> WorklistStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes

    def add(self, ds: Dataset, item_id: str | None = None) -> list[str]:
        """Add (or replace) the scheduled procedure steps of ``ds``; their ids, in order."""
        return self.add_many([ds], [item_id])

    def add_many(
        self, datasets: Iterable[Dataset], item_ids: Sequence[str | None] | None = None
    ) -> list[str]:
        """Add several data sets in one transaction; all or none."""
        rows: list[tuple[object, ...]] = []
        ids: list[str] = []
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for n, ds in enumerate(datasets):
            wanted = item_ids[n] if item_ids is not None and n < len(item_ids) else None
            steps = split_steps(ds)
            for k, step in enumerate(steps):
                item_id = _item_id(step, wanted, k if len(steps) > 1 else None)
                ids.append(item_id)
                rows.append(
                    (item_id, *(_column(step, name) for name in _COLUMNS), now, _to_json(step))
                )
        names = ", ".join(_COLUMNS)
        marks = ", ".join("?" * (len(_COLUMNS) + 3))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO worklist_item (item_id, {names}, added, dataset) "
                    f"VALUES ({marks})",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return ids

    def remove(self, item_id: str) -> bool:
        """Remove one item; False if there was none with that id."""
        with self._lock:
            cur = self._db.execute("DELETE FROM worklist_item WHERE item_id = ?", (item_id,))
        return cur.rowcount > 0

    # -- reads

    def get(self, item_id: str) -> WorklistItem | None:
        with self._lock:
            row = self._db.execute(
                "SELECT item_id, added, dataset FROM worklist_item WHERE item_id = ?", (item_id,)
            ).fetchone()
        return None if row is None else WorklistItem(row[0], row[1], _from_json(row[2]))

    def items(self) -> Iterator[WorklistItem]:
        """Every item, in the order added."""
        with self._lock:
            rows = self._db.execute(
                "SELECT item_id, added, dataset FROM worklist_item ORDER BY pk"
            ).fetchall()
        for item_id, added, text in rows:
            yield WorklistItem(item_id, added, _from_json(text))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM worklist_item").fetchone()[0])

    def find(self, identifier: Dataset) -> Iterator[Dataset]:
        """The response identifiers for a Modality Worklist C-FIND ``identifier``, one per
        matching item (QueryError for a key that cannot be matched)."""
        compiled = _Identifier(identifier)  # QueryError before any row is read
        where, params = self._prefilter(identifier)
        sql = "SELECT pk FROM worklist_item"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_date, start_time, pk"
        with self._lock:
            pks = [row[0] for row in self._db.execute(sql, params)]
        # The candidates' JSON a batch at a time: 100,000 of them are never in memory at once.
        for start in range(0, len(pks), _FETCH):
            batch = pks[start : start + _FETCH]
            marks = ", ".join("?" * len(batch))
            with self._lock:
                rows = dict(
                    self._db.execute(
                        f"SELECT pk, dataset FROM worklist_item WHERE pk IN ({marks})", batch
                    ).fetchall()
                )
            for pk in batch:
                text = rows.get(pk)
                if text is None:
                    continue  # removed meanwhile
                answer = compiled.match(json.loads(text))
                if answer is not None:
                    if not text.isascii():
                        answer["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
                    yield Dataset.from_json(answer)

    def _prefilter(self, identifier: Dataset) -> tuple[list[str], list[object]]:
        where: list[str] = []
        params: list[object] = []
        item = None
        seq = identifier.get(_SPS_SEQUENCE)
        if isinstance(seq, DicomSequence) and len(seq) == 1:
            item = seq[0]
        for column, (keyword, vr, in_item) in _COLUMNS.items():
            source = item if in_item else identifier
            if source is None or keyword not in source:
                continue
            value = source[keyword].value
            if value is None or isinstance(value, DicomSequence):
                continue
            text = _text(value)
            if not text:
                continue
            fragment, values = to_sql(column, vr, text)
            if fragment != "1":
                where.append(fragment)
                params += values
        return where, params


# --- matching ------------------------------------------------------------------------------------


def match_dataset(identifier: Dataset, stored: Dataset) -> Dataset | None:
    """The response identifier if ``stored`` matches every key of ``identifier``, else None.

    The answer holds the identifier's attributes only, with the stored values (zero length when
    the item has none); sequences follow §C.2.2.2.6.
    """
    answer = Dataset()
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _NOT_KEYS or elem.tag.element == 0 or elem.tag.is_private:
            continue
        stored_elem = stored.get(elem.tag)
        if elem.VR == "SQ":
            result = _match_sequence(elem, stored_elem)
            if result is None:
                return None
            answer.add(DataElement(elem.tag, "SQ", result))
            continue
        query = _text(elem.value)
        stored_text = None if stored_elem is None else _text(stored_elem.value) or None
        vr = _vr(elem)
        if query and not matches(vr, query, stored_text):
            return None
        if stored_elem is not None and stored_elem.VR != "SQ":
            answer.add(DataElement(elem.tag, stored_elem.VR, stored_elem.value))
        else:
            answer.add(DataElement(elem.tag, vr, None))
    if any(_non_ascii(e) for e in answer.iterall()):
        answer.SpecificCharacterSet = "ISO_IR 192"
    return answer


def _match_sequence(key: DataElement, stored: DataElement | None) -> DicomSequence | None:
    items = list(key.value or [])
    stored_items: list[Dataset] = (
        list(stored.value) if stored is not None and stored.VR == "SQ" and stored.value else []
    )
    if len(items) > 1:
        raise QueryError(
            f"{_name(key.tag)}: a sequence key holds one item (PS3.4 §C.2.2.2.6), not {len(items)}"
        )
    if not items or len(items[0]) == 0:
        return DicomSequence([_copy(item) for item in stored_items])  # universal: all of it
    if not stored_items:
        # No stored item can match a key with a value ("at least one of the Items"); a key item
        # of return keys only (all zero length) asks for values, so it matches with none.
        return None if _has_values(items[0]) else DicomSequence([])
    found = [a for a in (match_dataset(items[0], s) for s in stored_items) if a is not None]
    return DicomSequence(found) if found else None


# --- the same matching on the DICOM JSON model ------------------------------------------------------

_FETCH = 256  # candidate rows read per query


@dataclass(slots=True)
class _Key:
    """One element of a compiled identifier: its JSON key, VR, and what to match."""

    key: str
    vr: str
    compiled: CompiledKey | None = None  # None: return key only (universal)
    items: _Identifier | None = None  # a sequence key's item (None: universal sequence)
    item_has_values: bool = False


class _Identifier:
    """An identifier compiled once, matched against stored items in the DICOM JSON model with
    the rules of ``match_dataset`` (the answer is a JSON object of the requested keys)."""

    def __init__(self, identifier: Dataset) -> None:
        self.keys: list[_Key] = []
        for elem in identifier:
            tag = int(elem.tag)
            if tag in _NOT_KEYS or elem.tag.element == 0 or elem.tag.is_private:
                continue
            key = f"{tag:08X}"
            if elem.VR == "SQ":
                items = list(elem.value or [])
                if len(items) > 1:
                    raise QueryError(
                        f"{_name(elem.tag)}: a sequence key holds one item (PS3.4 §C.2.2.2.6), "
                        f"not {len(items)}"
                    )
                if not items or len(items[0]) == 0:
                    self.keys.append(_Key(key, "SQ"))
                else:
                    self.keys.append(
                        _Key(key, "SQ", None, _Identifier(items[0]), _has_values(items[0]))
                    )
                continue
            vr = _vr(elem)
            query = _text(elem.value)
            compiled = compile_query(vr, query) if query else None
            if compiled is not None and compiled.universal:
                compiled = None
            self.keys.append(_Key(key, vr, compiled))

    def match(self, stored: dict[str, Any]) -> dict[str, Any] | None:
        answer: dict[str, Any] = {}
        for k in self.keys:
            elem = stored.get(k.key)
            stored_vr = elem.get("vr") if isinstance(elem, dict) else None
            if k.vr == "SQ":
                seq = _match_json_sequence(k, elem if stored_vr == "SQ" else None)
                if seq is None:
                    return None
                answer[k.key] = {"vr": "SQ", "Value": seq}
                continue
            if elem is None or stored_vr == "SQ":
                if k.compiled is not None and not key_matches(k.compiled, None):
                    return None
                answer[k.key] = {"vr": k.vr}
                continue
            if k.compiled is not None and not key_matches(k.compiled, _json_text(elem) or None):
                return None
            answer[k.key] = elem
        return answer


def _match_json_sequence(k: _Key, stored: dict[str, Any] | None) -> list[Any] | None:
    stored_items = [i for i in (stored or {}).get("Value") or [] if isinstance(i, dict)]
    if k.items is None:
        return stored_items  # universal: all of it
    if not stored_items:
        return None if k.item_has_values else []
    found = [a for a in (k.items.match(item) for item in stored_items) if a is not None]
    return found or None


def _json_text(elem: dict[str, Any]) -> str:
    """An element's value as ``_text`` gives it for the pydicom value (PS3.18 F.2.2)."""
    values = elem.get("Value")
    if not values:
        return ""
    out = []
    for value in values:
        if isinstance(value, dict):  # PN: its component groups (PS3.18 F.2.2)
            groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
            while groups and not groups[-1]:
                groups.pop()
            out.append("=".join(groups))
        else:
            out.append("" if value is None else str(value))
    return "\\".join(out).rstrip(" \x00")


# --- reading items from files --------------------------------------------------------------------


def _has_values(item: Dataset) -> bool:
    for elem in item:
        if int(elem.tag) in _NOT_KEYS:
            continue
        if elem.VR == "SQ":
            if any(_has_values(sub) for sub in elem.value or []):
                return True
        elif _text(elem.value).strip(" *"):
            return True
    return False


def split_steps(ds: Dataset) -> list[Dataset]:
    """One data set per item of the Scheduled Procedure Step Sequence (WorklistError without)."""
    seq = ds.get(_SPS_SEQUENCE)
    if not isinstance(seq, DicomSequence) or len(seq) == 0:
        raise WorklistError(
            "a worklist item needs a Scheduled Procedure Step Sequence (0040,0100) with an item"
        )
    if len(seq) == 1:
        return [ds]
    steps = []
    for item in seq:
        step = _copy(ds)
        step[_SPS_SEQUENCE].value = DicomSequence([_copy(item)])
        steps.append(step)
    return steps


def read_json(text: str) -> list[Dataset]:
    """Data sets from DICOM JSON (PS3.18 F.2): one object or an array of objects."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise WorklistError(f"not JSON: {exc}") from exc
    objects = value if isinstance(value, list) else [value]
    out = []
    for n, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise WorklistError(f"item {n + 1}: a DICOM JSON object is expected")
        try:
            out.append(Dataset.from_json(obj))
        except Exception as exc:  # pydicom raises several types for a bad model
            raise WorklistError(f"item {n + 1}: not the DICOM JSON model: {exc}") from exc
    return out


def read_csv(text: str) -> list[Dataset]:
    """Data sets from a CSV file whose header names attributes by keyword, one row per item;
    keywords of the Scheduled Procedure Step go into its sequence item (``SPS_KEYWORDS``)."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise WorklistError("the CSV file has no header row")
    for name in reader.fieldnames:
        if tag_for_keyword(name.strip()) is None:
            raise WorklistError(f"CSV column {name!r} is not a DICOM keyword")
    out = []
    for row in reader:
        ds = Dataset()
        sps = Dataset()
        for name, value in row.items():
            if name is None:
                raise WorklistError(f"line {reader.line_num}: more values than columns")
            keyword = name.strip()
            target = sps if keyword in SPS_KEYWORDS else ds
            setattr(target, keyword, (value or "").strip())
        ds.ScheduledProcedureStepSequence = DicomSequence([sps])
        out.append(ds)
    return out


# --- helpers -------------------------------------------------------------------------------------


def _item_id(step: Dataset, wanted: str | None, n: int | None) -> str:
    if wanted:
        return wanted if n is None else f"{wanted}#{n + 1}"
    sps = _first_sps(step)
    parts = [
        _text(step.get("AccessionNumber")),
        _text(step.get("RequestedProcedureID")),
        _text(sps.get("ScheduledProcedureStepID")) if sps is not None else "",
    ]
    if not any(parts):
        raise WorklistError(
            "a worklist item needs an id: give one, or an Accession Number, a Requested "
            "Procedure ID or a Scheduled Procedure Step ID"
        )
    return "|".join(parts)


def _first_sps(ds: Dataset) -> Dataset | None:
    seq = ds.get(_SPS_SEQUENCE)
    return seq[0] if isinstance(seq, DicomSequence) and len(seq) else None


def _column(step: Dataset, column: str) -> str | None:
    keyword, vr, in_item = _COLUMNS[column]
    source = _first_sps(step) if in_item else step
    if source is None:
        return None
    return column_value(vr, _text(source.get(keyword)) or None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value).rstrip(" \x00")


def _vr(elem: DataElement) -> str:
    vr = str(elem.VR)
    if vr in ("UN", "") or " or " in vr:
        try:
            return str(dictionary_VR(elem.tag)).split(" or ")[0]
        except KeyError:
            return "UN"
    return vr


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or str(Tag(tag))


def _non_ascii(elem: DataElement) -> bool:
    value = elem.value
    return (isinstance(value, str) and not value.isascii()) or (
        elem.VR == "PN" and value is not None and not str(value).isascii()
    )


def _copy(ds: Dataset) -> Dataset:
    return Dataset.from_json(ds.to_json_dict())


def _to_json(ds: Dataset) -> str:
    return json.dumps(ds.to_json_dict(), separators=(",", ":"), ensure_ascii=False)


def _from_json(text: str) -> Dataset:
    return Dataset.from_json(text)
