"""The query/retrieve index: which instances the archive holds, and C-FIND/C-MOVE/C-GET lookups.

One job: keep one row per stored instance (upsert by SOP Instance UID) with the Patient, Study,
Series and Image attributes PS3.4 Annex C lists as unique and required keys (§C.6.1.1, §C.6.2.1),
and answer queries on them with the matching rules of ``archive.matching`` (PS3.4 §C.2.2.2).
The ``Index`` protocol is what the services use; ``SQLiteIndex`` is the default implementation
(stdlib ``sqlite3``), and a PostgreSQL one can implement the same protocol later.

Rules:

- Queries are hierarchical (Hierarchical Search Method, PS3.4 §C.4.1.3.1.1, in the Patient Root
  and Study Root models of §C.6.1 and §C.6.2): for every level above the query level the unique
  key must be given as a single value (QueryError otherwise); keys at the query level and above
  are matched; keys below the query level are not matched and come back zero-length.
  ``relational=True`` drops the unique-key requirement (relational queries, §C.4.1.3.2), with the
  same matching.
- A zero-length stored value is unknown and matches any key (§C.2.2.1.1), except PatientID when it
  is the unique key of Patient Root: a patient with no ID is not patient "P1".
- Retrieval (``instances``, for C-MOVE/C-GET, §C.4.2.2.1) needs the unique key of its level
  (a UID or a list of UIDs) and, unless relational, single unique keys above; it yields every
  instance under the matching entities.
- Keys the index does not keep are not matched (Universal Matching) and come back as ``None``
  (zero length), as PS3.4 §C.2.2.1.3 allows for unsupported optional keys. Computed keys
  (Number of Patient/Study/Series Related ..., Modalities in Study, SOP Classes in Study) are
  returned; Modalities in Study and SOP Classes in Study are matched as "any series/instance
  matches"; the counts are return-only.
- Character sets: values are stored as decoded ``str``; the query's values are decoded ``str`` too,
  so Specific Character Set is never matched (§C.2.2.2). A result carries
  ``SpecificCharacterSet = "ISO_IR 192"`` (UTF-8) when any of its text is not ASCII, and no
  Specific Character Set otherwise (default repertoire).
- Patient, Study and Series rows take the latest non-empty value of each attribute from the
  instances added; an entity is deleted with its last instance.

Schema: four tables (patient, study, series, instance) rather than one denormalised table. A
study-level query then scans or seeks the study table (tens of thousands of rows for a million
instances) instead of grouping a million instance rows, patient/study attributes are written once
per entity, and each level has its own indexes: patient (PatientID, folded PatientName), study
(StudyInstanceUID unique, patient, StudyDate, AccessionNumber, StudyID), series (SeriesInstanceUID
unique, (study, Modality)), instance (SOPInstanceUID unique, series). Counts are computed per
result batch with indexed GROUP BY queries, so they are never stale.

Threads: one connection in WAL mode (readers of other processes do not block the writer), one lock
around every statement or write transaction, so the server may call the index from a worker thread
(``asyncio.to_thread``) or directly. A query holds the lock while it collects the matching row ids,
then once per batch of rows; nothing is held while the caller consumes results.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomnet.archive.matching import QueryError, column_value, compile_query, to_sql

__all__ = [
    "LEVELS",
    "OPTIONAL_KEYWORDS",
    "RECORD_KEYWORDS",
    "SUPPORTED_KEYS",
    "Index",
    "InstanceRecord",
    "Query",
    "QueryError",
    "SQLiteIndex",
    "build_index",
    "iter_files",
    "read_record",
    "reconcile",
]

log = logging.getLogger("dicomnet.archive")

#: Query/Retrieve levels, top to bottom (PS3.4 §C.3).
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_NOT_MATCHED = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
_BATCH = 500


# --- the record ----------------------------------------------------------------------------------


def _attribute(keyword: str, *, required: bool = False) -> Any:
    """A record field that holds the value of the DICOM attribute ``keyword``."""
    if required:
        return field(metadata={"keyword": keyword})
    return field(default=None, metadata={"keyword": keyword})


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRecord:
    """One stored instance: its unique and required keys, how it is encoded, and where it is.

    ``path`` is relative to the storage root, with ``/`` separators; ``size`` is in bytes. Text
    values are decoded ``str`` (PN as its DICOM string form), ``None`` when absent or empty;
    multiple values are joined with ``\\``. The fields that hold an attribute name it, once,
    and ``RECORD_KEYWORDS`` is read from them.
    """

    sop_instance_uid: str = _attribute("SOPInstanceUID", required=True)
    sop_class_uid: str = _attribute("SOPClassUID", required=True)
    study_instance_uid: str = _attribute("StudyInstanceUID", required=True)
    series_instance_uid: str = _attribute("SeriesInstanceUID", required=True)
    path: str
    size: int
    patient_id: str | None = _attribute("PatientID")
    patient_name: str | None = _attribute("PatientName")
    patient_birth_date: str | None = _attribute("PatientBirthDate")
    patient_sex: str | None = _attribute("PatientSex")
    study_date: str | None = _attribute("StudyDate")
    study_time: str | None = _attribute("StudyTime")
    accession_number: str | None = _attribute("AccessionNumber")
    study_id: str | None = _attribute("StudyID")
    study_description: str | None = _attribute("StudyDescription")
    referring_physician_name: str | None = _attribute("ReferringPhysicianName")
    modality: str | None = _attribute("Modality")
    series_number: str | None = _attribute("SeriesNumber")
    series_description: str | None = _attribute("SeriesDescription")
    body_part_examined: str | None = _attribute("BodyPartExamined")
    instance_number: str | None = _attribute("InstanceNumber")
    specific_character_set: str | None = _attribute("SpecificCharacterSet")
    transfer_syntax_uid: str | None = None

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        path: str | os.PathLike[str],
        size: int,
        transfer_syntax: str | None = None,
    ) -> InstanceRecord:
        """Build the record of ``ds`` stored at ``path`` (relative to the storage root).

        ``transfer_syntax`` defaults to the File Meta Information's; the SOP Class and Instance
        UIDs fall back to the Media Storage ones. ValueError if a UID the index needs is missing.
        """
        meta = getattr(ds, "file_meta", None)

        def uid(keyword: str, meta_keyword: str | None = None) -> str:
            value = _text(ds, keyword)
            if value is None and meta_keyword is not None and meta is not None:
                value = _text(meta, meta_keyword)
            if value is None:
                raise ValueError(f"{keyword} is missing from the data set stored at {path}")
            return value.strip("\x00 ")

        if transfer_syntax is None and meta is not None:
            transfer_syntax = _text(meta, "TransferSyntaxUID")
        return cls(
            sop_instance_uid=uid("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
            sop_class_uid=uid("SOPClassUID", "MediaStorageSOPClassUID"),
            study_instance_uid=uid("StudyInstanceUID"),
            series_instance_uid=uid("SeriesInstanceUID"),
            path=Path(path).as_posix(),
            size=int(size),
            transfer_syntax_uid=str(transfer_syntax).strip("\x00 ") if transfer_syntax else None,
            **{name: _text(ds, keyword) for name, keyword in OPTIONAL_KEYWORDS.items()},
        )


#: Record field -> the attribute keyword it holds: every attribute the index keeps of an
#: instance (all before the pixel data), read from ``InstanceRecord``'s fields.
RECORD_KEYWORDS: dict[str, str] = {
    f.name: f.metadata["keyword"] for f in fields(InstanceRecord) if "keyword" in f.metadata
}
#: The ones that may be absent (``None``): all but the four UIDs a record requires.
OPTIONAL_KEYWORDS: dict[str, str] = {
    name: keyword
    for name, keyword in RECORD_KEYWORDS.items()
    if name
    not in ("sop_instance_uid", "sop_class_uid", "study_instance_uid", "series_instance_uid")
}


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join(str(v) for v in value)
    elif isinstance(value, bytes):
        text = value.decode("latin-1")
    else:
        text = str(value)
    text = text.rstrip(" \x00")
    return text or None


# --- the protocol --------------------------------------------------------------------------------

#: A C-FIND identifier: keyword -> (VR, value); a zero-length value asks for the key's value.
Query = Mapping[str, tuple[str, str]]


class Index(Protocol):
    """What the query/retrieve services need from an index."""

    def add(self, record: InstanceRecord) -> None:
        """Insert or replace the instance ``record.sop_instance_uid``."""

    def add_many(self, records: Iterable[InstanceRecord]) -> int:
        """``add`` every record, in one transaction when the index has them; returns how
        many (the storage service's ``IndexWriter`` writes its batches with this)."""
        ...

    def remove(self, sop_instance_uid: str) -> None:
        """Forget an instance (and its series, study, patient when it was their last)."""

    def query(
        self,
        level: str,
        query: Query,
        *,
        model: str | None = None,
        relational: bool = False,
    ) -> Iterator[dict[str, object]]:
        """C-FIND: one dict per matching entity at ``level`` (see ``SQLiteIndex.query``)."""
        ...

    def instances(
        self,
        level: str,
        query: Query,
        *,
        model: str | None = None,
        relational: bool = False,
    ) -> Iterator[InstanceRecord]:
        """C-MOVE/C-GET: every instance under the entities the identifier selects."""
        ...

    def records(self) -> Iterator[InstanceRecord]:
        """Every instance in the index (for repair and migration)."""
        ...

    def paths(self) -> Iterator[tuple[str, str]]:
        """(path, SOP Instance UID) of every instance: what ``reconcile`` compares with the
        files, without building whole records."""
        ...

    def get_state(self, key: str) -> str | None:
        """A value the server keeps with the index (e.g. how the last server stopped)."""
        ...

    def set_state(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` (see ``get_state``)."""

    def close(self) -> None:
        """Release the index's resources."""


# --- the key catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """An attribute the index keeps: its VR, entity level, returned column and matched column."""

    vr: str
    level: int
    column: str
    match_column: str
    nullable: bool = True


_KEYS: dict[str, _Key] = {
    "PatientID": _Key("LO", 0, "p.patient_id", "p.patient_id"),
    "PatientName": _Key("PN", 0, "p.patient_name", "p.patient_name_key"),
    "PatientBirthDate": _Key("DA", 0, "p.patient_birth_date", "p.patient_birth_date"),
    "PatientSex": _Key("CS", 0, "p.patient_sex", "p.patient_sex"),
    "StudyInstanceUID": _Key("UI", 1, "st.study_uid", "st.study_uid", nullable=False),
    "StudyDate": _Key("DA", 1, "st.study_date", "st.study_date"),
    "StudyTime": _Key("TM", 1, "st.study_time", "st.study_time_key"),
    "AccessionNumber": _Key("SH", 1, "st.accession_number", "st.accession_number"),
    "StudyID": _Key("SH", 1, "st.study_id", "st.study_id"),
    "StudyDescription": _Key("LO", 1, "st.study_description", "st.study_description"),
    "ReferringPhysicianName": _Key(
        "PN", 1, "st.referring_physician_name", "st.referring_physician_name_key"
    ),
    "SeriesInstanceUID": _Key("UI", 2, "se.series_uid", "se.series_uid", nullable=False),
    "Modality": _Key("CS", 2, "se.modality", "se.modality"),
    "SeriesNumber": _Key("IS", 2, "se.series_number", "se.series_number"),
    "SeriesDescription": _Key("LO", 2, "se.series_description", "se.series_description"),
    "BodyPartExamined": _Key("CS", 2, "se.body_part_examined", "se.body_part_examined"),
    "SOPInstanceUID": _Key("UI", 3, "i.sop_instance_uid", "i.sop_instance_uid", nullable=False),
    "SOPClassUID": _Key("UI", 3, "i.sop_class_uid", "i.sop_class_uid", nullable=False),
    "InstanceNumber": _Key("IS", 3, "i.instance_number", "i.instance_number"),
    "AvailableTransferSyntaxUID": _Key("UI", 3, "i.transfer_syntax_uid", "i.transfer_syntax_uid"),
}


@dataclass(frozen=True, slots=True)
class _Computed:
    """A key computed from the entities below ``level``: a count, or the distinct ``column``."""

    vr: str
    level: int
    target: int
    column: str | None = None
    nullable_column: bool = True


_COMPUTED: dict[str, _Computed] = {
    "NumberOfPatientRelatedStudies": _Computed("IS", 0, 1),
    "NumberOfPatientRelatedSeries": _Computed("IS", 0, 2),
    "NumberOfPatientRelatedInstances": _Computed("IS", 0, 3),
    "NumberOfStudyRelatedSeries": _Computed("IS", 1, 2),
    "NumberOfStudyRelatedInstances": _Computed("IS", 1, 3),
    "ModalitiesInStudy": _Computed("CS", 1, 2, "se.modality"),
    "SOPClassesInStudy": _Computed("UI", 1, 3, "i.sop_class_uid", nullable_column=False),
    "NumberOfSeriesRelatedInstances": _Computed("IS", 2, 3),
}

#: Every key the index matches or returns (the rest of an identifier's keys are not supported:
#: matched universally and returned zero-length, PS3.4 §C.2.2.1.3).
SUPPORTED_KEYS: frozenset[str] = frozenset(_KEYS) | frozenset(_COMPUTED)

_ALIAS = ("p", "st", "se", "i")
_TABLE = ("patient", "study", "series", "instance")
_PARENT_FK = (None, "patient_fk", "study_fk", "series_fk")


def _from(base: int, top: int, prefix: str = "") -> str:
    """``FROM`` body joining the table at level ``base`` up to the table at level ``top``."""
    a = [prefix + alias for alias in _ALIAS]
    clause = f"{_TABLE[base]} {a[base]}"
    for level in range(base - 1, top - 1, -1):
        child_fk = f"{a[level + 1]}.{_PARENT_FK[level + 1]}"
        clause += f" JOIN {_TABLE[level]} {a[level]} ON {a[level]}.pk = {child_fk}"
    return clause


_RECORD_COLUMNS: dict[str, str] = {
    "sop_instance_uid": "i.sop_instance_uid",
    "sop_class_uid": "i.sop_class_uid",
    "study_instance_uid": "st.study_uid",
    "series_instance_uid": "se.series_uid",
    "path": "i.path",
    "size": "i.size",
    "patient_id": "p.patient_id",
    "patient_name": "p.patient_name",
    "patient_birth_date": "p.patient_birth_date",
    "patient_sex": "p.patient_sex",
    "study_date": "st.study_date",
    "study_time": "st.study_time",
    "accession_number": "st.accession_number",
    "study_id": "st.study_id",
    "study_description": "st.study_description",
    "referring_physician_name": "st.referring_physician_name",
    "modality": "se.modality",
    "series_number": "se.series_number",
    "series_description": "se.series_description",
    "body_part_examined": "se.body_part_examined",
    "instance_number": "i.instance_number",
    "specific_character_set": "i.specific_character_set",
    "transfer_syntax_uid": "i.transfer_syntax_uid",
}
assert set(_RECORD_COLUMNS) == {f.name for f in fields(InstanceRecord)}


# --- the query plan ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """A checked identifier: levels, WHERE conditions, the highest level they refer to, keys."""

    level: int
    root: int
    where: list[str]
    params: list[object]
    top: int
    requested: list[str]


def _plan(level: str, query: Query, model: str | None, relational: bool) -> _Plan:
    """Check the identifier against the hierarchy and turn its keys into WHERE conditions."""
    level = level.upper()
    if level not in LEVELS:
        raise QueryError(f"unknown Query/Retrieve Level {level!r}; expected one of {LEVELS}")
    level_no = LEVELS.index(level)
    model = (model or ("PATIENT" if level_no == 0 else "STUDY")).upper()
    if model not in ("PATIENT", "STUDY"):
        raise QueryError(f"unknown information model {model!r}; expected PATIENT or STUDY")
    root = 0 if model == "PATIENT" else 1
    if level_no < root:
        raise QueryError("the Study Root information model has no PATIENT level (PS3.4 §C.6.2)")
    if not relational:
        for above in range(root, level_no):
            keyword = _UNIQUE_KEYS[above]
            _vr, value = query.get(keyword, ("", ""))
            if not _is_single(value or ""):
                raise QueryError(
                    f"a hierarchical {level} query needs {keyword} as a single value "
                    f"(PS3.4 §C.4.1.3.1.1); got {value!r}"
                )
    where: list[str] = []
    params: list[object] = []
    top = level_no
    for keyword, (_vr, value) in query.items():
        if keyword in _NOT_MATCHED or not value:
            continue
        key = _KEYS.get(keyword)
        computed = _COMPUTED.get(keyword)
        entity_level = key.level if key else computed.level if computed else None
        if entity_level is None or max(entity_level, root) > level_no:
            continue  # not kept, or below the query level: not matched, returned empty
        if key is not None:
            # A zero-length value is unknown and matches (§C.2.2.1.1), except where the key is the
            # unique key of a level (PatientID in Patient Root): a patient with no ID is not P1.
            unknown = key.nullable and not (root == 0 and keyword == "PatientID")
            sql, args = to_sql(key.match_column, key.vr, value, match_unknown=unknown)
        elif computed is not None and computed.column is not None:
            inner, args = to_sql(
                "x" + computed.column, computed.vr, value, match_unknown=computed.nullable_column
            )
            sql = (
                f"EXISTS (SELECT 1 FROM {_from(computed.target, computed.level + 1, 'x')} "
                f"WHERE x{_ALIAS[computed.level + 1]}.{_PARENT_FK[computed.level + 1]} = "
                f"{_ALIAS[computed.level]}.pk AND {inner})"
            )
        else:
            continue  # counts are return-only
        if sql != "1":
            where.append(sql)
            params += args
            top = min(top, entity_level)
    requested = [k for k in query if k not in _NOT_MATCHED]
    return _Plan(level_no, root, where, params, top, requested)


def _is_single(value: str) -> bool:
    text = value.strip("\x00 ")
    return bool(text) and not any(c in text for c in "\\*?")


# --- SQLite --------------------------------------------------------------------------------------

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS patient (
    pk INTEGER PRIMARY KEY,
    patient_id TEXT,
    patient_name TEXT,
    patient_name_key TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT
);
CREATE TABLE IF NOT EXISTS study (
    pk INTEGER PRIMARY KEY,
    patient_fk INTEGER NOT NULL REFERENCES patient(pk),
    study_uid TEXT NOT NULL UNIQUE,
    study_date TEXT,
    study_time TEXT,
    study_time_key TEXT,
    accession_number TEXT,
    study_id TEXT,
    study_description TEXT,
    referring_physician_name TEXT,
    referring_physician_name_key TEXT
);
CREATE TABLE IF NOT EXISTS series (
    pk INTEGER PRIMARY KEY,
    study_fk INTEGER NOT NULL REFERENCES study(pk),
    series_uid TEXT NOT NULL UNIQUE,
    modality TEXT,
    series_number TEXT,
    series_description TEXT,
    body_part_examined TEXT
);
CREATE TABLE IF NOT EXISTS instance (
    pk INTEGER PRIMARY KEY,
    series_fk INTEGER NOT NULL REFERENCES series(pk),
    sop_instance_uid TEXT NOT NULL UNIQUE,
    sop_class_uid TEXT NOT NULL,
    instance_number TEXT,
    specific_character_set TEXT,
    transfer_syntax_uid TEXT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS patient_id_idx ON patient(patient_id);
CREATE INDEX IF NOT EXISTS patient_name_idx ON patient(patient_name_key);
CREATE INDEX IF NOT EXISTS study_patient_idx ON study(patient_fk);
CREATE INDEX IF NOT EXISTS study_date_idx ON study(study_date);
CREATE INDEX IF NOT EXISTS study_accession_idx ON study(accession_number);
CREATE INDEX IF NOT EXISTS study_id_idx ON study(study_id);
CREATE INDEX IF NOT EXISTS series_study_idx ON series(study_fk, modality);
CREATE INDEX IF NOT EXISTS instance_series_idx ON instance(series_fk);
"""


class SQLiteIndex:
    """The ``Index`` on an SQLite file (or ``":memory:"``), created with its schema if needed."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        # (table, unique key) -> (pk, previous parent pk, the raw values written): see add_many
        self._written: dict[tuple[str, str], tuple[int, int | None, tuple[object, ...]]] | None = (
            None
        )
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise RuntimeError(
                    f"index {self.path} has schema version {version}; "
                    f"this dicomnet reads version {_SCHEMA_VERSION}"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> SQLiteIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (further calls raise ``sqlite3.ProgrammingError``)."""
        with self._lock:
            self._db.close()

    # -- writes

    def add(self, record: InstanceRecord) -> None:
        """Insert or replace the instance; parent entities are created or refreshed."""
        with self._lock, self._transaction():
            self._add(record)

    def add_many(self, records: Iterable[InstanceRecord]) -> int:
        """``add`` every record in one transaction (fast bulk loads); returns how many."""
        count = 0
        with self._lock, self._transaction():
            # Within one transaction nobody else writes: a patient, study or series already
            # written in it with the same values needs no second SELECT and UPDATE (a batch is
            # mostly instances of one series, so this saves 6 of 8 statements per instance).
            self._written = {}
            try:
                for record in records:
                    self._add(record)
                    count += 1
            finally:
                self._written = None
        return count

    def remove(self, sop_instance_uid: str) -> None:
        """Delete the instance, then its series, study and patient if they are left empty."""
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT pk, series_fk FROM instance WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM instance WHERE pk = ?", (row[0],))
            self._prune_series(row[1])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # -- state (the server's clean-shutdown mark, see ``services.storage.open_index``)

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def paths(self) -> Iterator[tuple[str, str]]:
        """(path, SOP Instance UID) of every instance, without building records (repair)."""
        with self._lock:
            rows = self._db.execute("SELECT path, sop_instance_uid FROM instance").fetchall()
        return iter([(str(p), str(u)) for p, u in rows])

    def _add(self, r: InstanceRecord) -> None:
        written = self._written
        patient_raw = (r.patient_id, r.patient_name, r.patient_birth_date, r.patient_sex)
        seen = None if written is None else written.get(("patient", str(r.patient_id)))
        if seen is not None and seen[2] == patient_raw:
            patient_pk = seen[0]
        else:
            patient_pk = self._add_patient(r)
            if written is not None:
                written["patient", str(r.patient_id)] = (patient_pk, None, patient_raw)
        self._add_below(r, patient_pk)

    def _add_patient(self, r: InstanceRecord) -> int:
        db = self._db
        cv = column_value
        patient_id = cv("LO", r.patient_id)
        patient_values = (
            r.patient_name,
            cv("PN", r.patient_name),
            cv("DA", r.patient_birth_date),
            cv("CS", r.patient_sex),
        )
        row = db.execute("SELECT pk FROM patient WHERE patient_id IS ?", (patient_id,)).fetchone()
        patient_pk: int | None
        if row is None:
            patient_pk = db.execute(
                "INSERT INTO patient (patient_id, patient_name, patient_name_key, "
                "patient_birth_date, patient_sex) VALUES (?, ?, ?, ?, ?)",
                (patient_id, *patient_values),
            ).lastrowid
            assert patient_pk is not None
        else:
            patient_pk = row[0]
            db.execute(
                "UPDATE patient SET patient_name = coalesce(?, patient_name), "
                "patient_name_key = coalesce(?, patient_name_key), "
                "patient_birth_date = coalesce(?, patient_birth_date), "
                "patient_sex = coalesce(?, patient_sex) WHERE pk = ?",
                (*patient_values, patient_pk),
            )
        return int(patient_pk)

    def _add_below(self, r: InstanceRecord, patient_pk: int) -> None:
        db = self._db
        cv = column_value
        study_values = (
            cv("DA", r.study_date),
            r.study_time,
            cv("TM", r.study_time),
            cv("SH", r.accession_number),
            cv("SH", r.study_id),
            cv("LO", r.study_description),
            r.referring_physician_name,
            cv("PN", r.referring_physician_name),
        )
        study_cols = (
            "study_date",
            "study_time",
            "study_time_key",
            "accession_number",
            "study_id",
            "study_description",
            "referring_physician_name",
            "referring_physician_name_key",
        )
        study_pk, old_patient = self._upsert(
            "study", ("study_uid", r.study_instance_uid), ("patient_fk", patient_pk),
            study_cols, study_values,
        )  # fmt: skip
        series_cols = ("modality", "series_number", "series_description", "body_part_examined")
        series_values = (
            cv("CS", r.modality),
            cv("IS", r.series_number),
            cv("LO", r.series_description),
            cv("CS", r.body_part_examined),
        )
        series_pk, old_study = self._upsert(
            "series", ("series_uid", r.series_instance_uid), ("study_fk", study_pk),
            series_cols, series_values,
        )  # fmt: skip
        instance_values = (
            series_pk,
            r.sop_class_uid,
            cv("IS", r.instance_number),
            r.specific_character_set,
            r.transfer_syntax_uid,
            r.path,
            r.size,
        )
        inserted = db.execute(
            "INSERT INTO instance (series_fk, sop_class_uid, instance_number, "
            "specific_character_set, transfer_syntax_uid, path, size, sop_instance_uid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sop_instance_uid) DO NOTHING",
            (*instance_values, r.sop_instance_uid),
        ).rowcount
        if inserted != 1:  # stored before: refresh its row
            row = db.execute(
                "SELECT pk, series_fk FROM instance WHERE sop_instance_uid = ?",
                (r.sop_instance_uid,),
            ).fetchone()
            db.execute(
                "UPDATE instance SET series_fk = ?, sop_class_uid = ?, instance_number = ?, "
                "specific_character_set = ?, transfer_syntax_uid = ?, path = ?, size = ? "
                "WHERE pk = ?",
                (*instance_values, row[0]),
            )
            if row[1] != series_pk:
                self._prune_series(row[1])
        if old_study is not None and old_study != study_pk:
            self._prune_study(old_study)
        if old_patient is not None and old_patient != patient_pk:
            self._prune_patient(old_patient)

    def _upsert(
        self,
        table: str,
        unique: tuple[str, str],
        parent: tuple[str, int],
        columns: Sequence[str],
        values: Sequence[object],
    ) -> tuple[int, int | None]:
        """Insert or refresh an entity row; returns its pk and its previous parent's pk."""
        uid_column, uid = unique
        parent_column, parent_pk = parent
        written = self._written
        raw = (parent_pk, *values)
        seen = None if written is None else written.get((table, uid))
        if seen is not None and seen[2] == raw:
            return seen[0], parent_pk  # written in this transaction with these values
        row = self._db.execute(
            f"SELECT pk, {parent_column} FROM {table} WHERE {uid_column} = ?", (uid,)
        ).fetchone()
        result: tuple[int, int | None]
        if row is None:
            placeholders = ", ".join("?" * (len(columns) + 2))
            cursor = self._db.execute(
                f"INSERT INTO {table} ({uid_column}, {parent_column}, {', '.join(columns)}) "
                f"VALUES ({placeholders})",
                (uid, parent_pk, *values),
            )
            assert cursor.lastrowid is not None
            result = cursor.lastrowid, None
        else:
            sets = ", ".join(f"{c} = coalesce(?, {c})" for c in columns)
            self._db.execute(
                f"UPDATE {table} SET {parent_column} = ?, {sets} WHERE pk = ?",
                (parent_pk, *values, row[0]),
            )
            result = row[0], row[1]
        if written is not None:
            written[table, uid] = (result[0], result[1], raw)
        return result

    def _prune_series(self, pk: int) -> None:
        # Rows may be deleted below: add_many's memory of rows written in this transaction
        # would point at them (rare: only when an instance changes series, study or patient).
        if self._written is not None:
            self._written.clear()
        row = self._db.execute("SELECT study_fk FROM series WHERE pk = ?", (pk,)).fetchone()
        deleted = self._db.execute(
            "DELETE FROM series WHERE pk = ? AND NOT EXISTS "
            "(SELECT 1 FROM instance WHERE series_fk = ?)",
            (pk, pk),
        ).rowcount
        if deleted and row is not None:
            self._prune_study(row[0])

    def _prune_study(self, pk: int) -> None:
        if self._written is not None:
            self._written.clear()
        row = self._db.execute("SELECT patient_fk FROM study WHERE pk = ?", (pk,)).fetchone()
        deleted = self._db.execute(
            "DELETE FROM study WHERE pk = ? AND NOT EXISTS "
            "(SELECT 1 FROM series WHERE study_fk = ?)",
            (pk, pk),
        ).rowcount
        if deleted and row is not None:
            self._prune_patient(row[0])

    def _prune_patient(self, pk: int) -> None:
        if self._written is not None:
            self._written.clear()
        self._db.execute(
            "DELETE FROM patient WHERE pk = ? AND NOT EXISTS "
            "(SELECT 1 FROM study WHERE patient_fk = ?)",
            (pk, pk),
        )

    # -- reads

    def query(
        self,
        level: str,
        query: Query,
        *,
        model: str | None = None,
        relational: bool = False,
    ) -> Iterator[dict[str, object]]:
        """C-FIND at ``level`` (PATIENT, STUDY, SERIES, IMAGE) in ``model`` (PATIENT or STUDY root).

        ``query`` maps keywords to (VR, value): a non-empty value is matched (PS3.4 §C.2.2.2), an
        empty one only asks for the value. Keys the index keeps are matched with their dictionary
        VR; the given VR only matters to the caller. Each result maps every requested keyword
        (plus the unique keys of the query level and the levels above it in the model) to
        ``str``, ``int`` (counts), ``list[str]`` (Modalities/SOP Classes in Study) or ``None``
        (zero length).
        The model defaults to Patient Root for PATIENT and Study Root otherwise. QueryError when
        the identifier does not fit the hierarchy or a value cannot be parsed.
        """
        plan = _plan(level, query, model, relational)
        return self._results(plan, query)

    def query_page(
        self,
        level: str,
        query: Query,
        *,
        model: str | None = None,
        relational: bool = False,
        offset: int = 0,
        limit: int | None = None,
    ) -> Iterator[dict[str, object]]:
        """As ``query``, only the ``limit`` results after the first ``offset``, in the same
        order, chosen by SQLite (``LIMIT``/``OFFSET``): a page of a broad search (QIDO-RS's
        ``limit``/``offset``) costs that page, not the whole match list."""
        plan = _plan(level, query, model, relational)
        return self._results(plan, query, (offset, -1 if limit is None else limit))

    def instances(
        self,
        level: str,
        query: Query,
        *,
        model: str | None = None,
        relational: bool = False,
    ) -> Iterator[InstanceRecord]:
        """C-MOVE/C-GET: every instance under the entities the identifier selects at ``level``.

        The unique key of ``level`` (a UID, or a list of UIDs; PatientID at PATIENT level) is
        required (PS3.4 §C.4.2.2.1), so an empty identifier never selects the whole archive.
        """
        plan = _plan(level, query, model, relational)
        keyword = _UNIQUE_KEYS[plan.level]
        value = query.get(keyword, ("", ""))[1] or ""
        key = compile_query(_KEYS[keyword].vr, value)
        if key.universal or any(c in value for c in "*?"):
            raise QueryError(
                f"a {LEVELS[plan.level]} retrieve needs {keyword} as a value or a list of values "
                f"(PS3.4 §C.4.2.2.1); got {value!r}"
            )
        return self._records(plan.where, plan.params)

    def records(self) -> Iterator[InstanceRecord]:
        """Every instance in the index, in insertion order."""
        return self._records([], [])

    def explain(self, level: str, query: Query, *, model: str | None = None) -> str:
        """SQLite's EXPLAIN QUERY PLAN for the matching step of ``query`` (for tuning and tests)."""
        plan = _plan(level, query, model, relational=True)
        sql, params = self._select_pks(plan.level, plan)
        with self._lock:
            rows = self._db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "\n".join(str(row[-1]) for row in rows)

    def _select_pks(self, base: int, plan: _Plan) -> tuple[str, list[object]]:
        where = " AND ".join(plan.where) if plan.where else "1"
        top = min(plan.top, base)
        return f"SELECT {_ALIAS[base]}.pk FROM {_from(base, top)} WHERE {where}", plan.params

    def _pks(self, base: int, plan: _Plan, window: tuple[int, int] | None = None) -> list[int]:
        sql, params = self._select_pks(base, plan)
        if window is not None:  # pk order, as the sort below gives
            sql += f" ORDER BY {_ALIAS[base]}.pk LIMIT ? OFFSET ?"
            params = [*params, window[1], window[0]]
        with self._lock:
            pks = [row[0] for row in self._db.execute(sql, params)]
        pks.sort()
        return pks

    def _results(
        self, plan: _Plan, query: Query, window: tuple[int, int] | None = None
    ) -> Iterator[dict[str, object]]:
        base = plan.level
        pks = self._pks(base, plan, window)
        unique = [_UNIQUE_KEYS[level] for level in range(plan.root, base + 1)]
        wanted = list(dict.fromkeys(unique + plan.requested))
        columns: dict[str, str] = {}
        computed: dict[str, _Computed] = {}
        for keyword in wanted:
            key = _KEYS.get(keyword)
            comp = _COMPUTED.get(keyword)
            if key is not None and max(key.level, plan.root) <= base:
                columns[keyword] = key.column
            elif comp is not None and max(comp.level, plan.root) <= base:
                computed[keyword] = comp
        top = min([_KEYS[k].level for k in columns] + [base])
        select = ", ".join([f"{_ALIAS[base]}.pk", *columns.values()])
        for start in range(0, len(pks), _BATCH):
            batch = pks[start : start + _BATCH]
            marks = ", ".join("?" * len(batch))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {select} FROM {_from(base, top)} WHERE {_ALIAS[base]}.pk IN ({marks})",
                    batch,
                ).fetchall()
                extra = {k: self._computed(c, batch, base) for k, c in computed.items()}
            by_pk = {row[0]: row for row in rows}
            for pk in batch:
                row = by_pk.get(pk)
                if row is None:  # removed between the two steps
                    continue
                result: dict[str, object] = {}
                values = dict(zip(columns, row[1:], strict=True))
                for keyword in wanted:
                    if keyword in values:
                        result[keyword] = values[keyword]
                    elif keyword in extra:
                        result[keyword] = extra[keyword].get(pk)
                    else:
                        result[keyword] = None
                if "QueryRetrieveLevel" in query:
                    result["QueryRetrieveLevel"] = LEVELS[base]
                if _needs_utf8(result):
                    result["SpecificCharacterSet"] = "ISO_IR 192"
                yield result

    def _computed(self, comp: _Computed, pks: list[int], base: int) -> dict[int, object]:
        """A computed key for the entities ``pks`` at level ``base``: the key's own level, or a
        level below it (Number of Patient Related Studies on a Study Root study)."""
        marks = ", ".join("?" * len(pks))
        result_pk = f"{_ALIAS[base]}.pk"
        if base == comp.level:
            source = _from(comp.target, comp.level)
            column = comp.column
            where = f"{result_pk} IN ({marks})"
        else:  # count below the result's owner entity, reached through the result's chain
            owner = _ALIAS[comp.level]
            source = f"{_from(comp.target, comp.level, 'o')}, {_from(base, comp.level)}"
            column = None if comp.column is None else "o" + comp.column
            where = f"o{owner}.pk = {owner}.pk AND {result_pk} IN ({marks})"
        if column is None:
            sql = f"SELECT {result_pk}, count(*) FROM {source} WHERE {where} GROUP BY 1"
            return {pk: n for pk, n in self._db.execute(sql, pks)}
        sql = (
            f"SELECT DISTINCT {result_pk}, {column} FROM {source} "
            f"WHERE {where} AND {column} IS NOT NULL ORDER BY 1, 2"
        )
        out: dict[int, list[str]] = {}
        for pk, value in self._db.execute(sql, pks):
            out.setdefault(pk, []).append(value)
        return dict(out)

    def _records(self, where: list[str], params: list[object]) -> Iterator[InstanceRecord]:
        plan = _Plan(3, 0, where, params, 0, [])
        pks = self._pks(3, plan)
        select = ", ".join(_RECORD_COLUMNS.values())
        names = list(_RECORD_COLUMNS)
        for start in range(0, len(pks), _BATCH):
            batch = pks[start : start + _BATCH]
            marks = ", ".join("?" * len(batch))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT i.pk, {select} FROM {_from(3, 0)} WHERE i.pk IN ({marks})", batch
                ).fetchall()
            by_pk = {row[0]: row[1:] for row in rows}
            for pk in batch:
                found = by_pk.get(pk)
                if found is not None:
                    yield InstanceRecord(**dict(zip(names, found, strict=True)))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _needs_utf8(result: Mapping[str, object]) -> bool:
    for value in result.values():
        items: Iterable[Any] = value if isinstance(value, list) else (value,)
        if any(isinstance(item, str) and not item.isascii() for item in items):
            return True
    return False


# --- files ---------------------------------------------------------------------------------------

_READ_TAGS = list(RECORD_KEYWORDS.values())
_SKIP_SUFFIXES = (".part", ".tmp", "-wal", "-shm", "-journal")


def iter_files(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the regular files under ``root``, skipping hidden names and the
    storage writer's and SQLite's temporary files, in a stable order."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            full = Path(directory, name)
            if full.is_file():
                yield full.relative_to(root).as_posix()


_walk = iter_files  # the old private name, kept for callers not yet moved


def read_record(storage_root: str | os.PathLike[str], relative_path: str) -> InstanceRecord | None:
    """The record of one file under ``storage_root``, or None (with a warning) if it is not a
    DICOM Part 10 file the index can use."""
    full = Path(storage_root, relative_path)
    try:
        with open(full, "rb") as f:
            head = f.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            log.warning("skipping %s: not a DICOM Part 10 file (no DICM prefix)", full)
            return None
        ds = dcmread(full, stop_before_pixels=True, specific_tags=_READ_TAGS)
        return InstanceRecord.from_dataset(ds, relative_path, full.stat().st_size)
    except Exception as exc:  # any unreadable file is skipped; the scan goes on
        log.warning("skipping %s: %s: %s", full, type(exc).__name__, exc)
        return None


def build_index(
    storage_root: str | os.PathLike[str],
    index: Index,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Index every DICOM file under ``storage_root`` (any layout); returns how many were indexed.

    Files that are not DICOM Part 10 are skipped with a logged warning. ``progress`` is called
    after each file with the number of files examined so far.
    """
    root = Path(storage_root)
    indexed = 0
    for examined, relative in enumerate(iter_files(root), 1):
        record = read_record(root, relative)
        if record is not None:
            index.add(record)
            indexed += 1
        if progress is not None:
            progress(examined)
    return indexed


def reconcile(index: Index, storage_root: str | os.PathLike[str]) -> tuple[int, int]:
    """Repair the index against the files on start: returns (files indexed, rows dropped).

    A file with no row is read and indexed; a row whose file is gone is removed. A file holding an
    instance that is already indexed at another existing path is a duplicate: it is logged, not
    indexed.
    """
    root = Path(storage_root)
    by_path = dict(index.paths())
    on_disk = set(iter_files(root))
    removed = 0
    for path, uid in by_path.items():
        if path not in on_disk:
            log.info("index: %s is gone; dropping %s", path, uid)
            index.remove(uid)
            removed += 1
    indexed_uids = {uid: path for path, uid in by_path.items() if path in on_disk}
    added = 0
    for path in sorted(on_disk - by_path.keys()):
        record = read_record(root, path)
        if record is None:
            continue
        other = indexed_uids.get(record.sop_instance_uid)
        if other is not None:
            log.warning("%s duplicates %s (%s); not indexed", path, other, record.sop_instance_uid)
            continue
        index.add(record)
        indexed_uids[record.sop_instance_uid] = path
        added += 1
    return added, removed
