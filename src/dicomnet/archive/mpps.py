"""Modality Performed Procedure Steps kept in the archive (PS3.4 Annex F, §F.7).

One job: store the MPPS instances a modality creates (N-CREATE) and updates (N-SET), enforcing the
state rules of PS3.4 §F.7.2 and Table F.7.2-1, and link each to the worklist item it performs.

Rules:

- N-CREATE: Performed Procedure Step Status (0040,0252) must be "IN PROGRESS" (0x0106 invalid
  attribute value otherwise); an existing SOP Instance UID is 0x0111 duplicate SOP instance.
- N-SET: an unknown instance is 0x0112 no such SOP instance; once the status is COMPLETED or
  DISCONTINUED the step is final and any N-SET is 0x0110 processing failure with the Error
  Comment and Error ID of PS3.4 Table F.7.2-2 ("Performed Procedure Step Object may no longer be
  updated", 0xA710); a new status other
  than IN PROGRESS, COMPLETED or DISCONTINUED is 0x0106. The N-SET's attributes replace the
  stored ones (a zero-length value empties an attribute).
- The worklist link is the Scheduled Step Attributes Sequence (0040,0270): its first item's
  Accession Number, Requested Procedure ID and Scheduled Procedure Step ID form the worklist item
  id that ``archive.worklist`` gives an item added without an explicit id.
- The store never raises for a peer's bad request: it answers an ``MppsResult`` with the status.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicomnet.archive.db import open_store

__all__ = [
    "MODALITY_PERFORMED_PROCEDURE_STEP",
    "MppsRecord",
    "MppsResult",
    "MppsStore",
]

#: Modality Performed Procedure Step SOP Class (PS3.4 F.7.3).
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
_STATES = frozenset({IN_PROGRESS, COMPLETED, DISCONTINUED})
_FINAL = frozenset({COMPLETED, DISCONTINUED})

# PS3.7 Annex C statuses the store answers with.
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
INVALID_ATTRIBUTE_VALUE = 0x0106
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
#: The Error Comment and Error ID of an N-SET on a final MPPS (PS3.4 Table F.7.2-2).
NO_LONGER_UPDATABLE = "Performed Procedure Step Object may no longer be updated"
NO_LONGER_UPDATABLE_ID = 0xA710

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mpps (
    sop_instance_uid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    worklist_item_id TEXT,
    calling_ae TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    dataset TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mpps_worklist ON mpps(worklist_item_id);
"""


@dataclass(frozen=True, slots=True)
class MppsResult:
    """The answer to an N-CREATE or N-SET: a PS3.7 status, an Error Comment (and Error ID)
    for failures, and the stored data set after the change (None on failure)."""

    status: int
    comment: str | None = None
    dataset: Dataset | None = None
    error_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


@dataclass(frozen=True, slots=True)
class MppsRecord:
    sop_instance_uid: str
    status: str
    worklist_item_id: str | None
    calling_ae: str | None
    created: str
    updated: str
    dataset: Dataset


class MppsStore:
    """MPPS instances in an SQLite file (the archive's index file, or ``":memory:"``)."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = open_store(self.path, _SCHEMA, timeout=timeout)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> MppsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(
        self, sop_instance_uid: str, ds: Dataset, calling_ae: str | None = None
    ) -> MppsResult:
        """N-CREATE of the MPPS ``sop_instance_uid`` with the attributes ``ds``."""
        status = _text(ds.get("PerformedProcedureStepStatus"))
        if status != IN_PROGRESS:
            return MppsResult(
                INVALID_ATTRIBUTE_VALUE,
                f"Performed Procedure Step Status must be IN PROGRESS at N-CREATE, not {status!r}",
            )
        now = _now()
        stored = _copy(ds)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO mpps VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        sop_instance_uid,
                        status,
                        worklist_item_id(stored),
                        calling_ae,
                        now,
                        now,
                        _to_json(stored),
                    ),
                )
            except sqlite3.IntegrityError:
                return MppsResult(DUPLICATE_SOP_INSTANCE, f"MPPS {sop_instance_uid} exists already")
        return MppsResult(SUCCESS, dataset=stored)

    def set(self, sop_instance_uid: str, modification: Dataset) -> MppsResult:
        """N-SET of the MPPS ``sop_instance_uid``: apply ``modification`` under the F.7 rules."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = self._set(sop_instance_uid, modification)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT" if result.ok else "ROLLBACK")
        return result

    def _set(self, uid: str, modification: Dataset) -> MppsResult:
        row = self._db.execute(
            "SELECT status, dataset FROM mpps WHERE sop_instance_uid = ?", (uid,)
        ).fetchone()
        if row is None:
            return MppsResult(NO_SUCH_SOP_INSTANCE, f"no MPPS instance {uid}")
        current, text = row
        if current in _FINAL:
            return MppsResult(
                PROCESSING_FAILURE, NO_LONGER_UPDATABLE, error_id=NO_LONGER_UPDATABLE_ID
            )
        stored = Dataset.from_json(text)
        new_status = current
        if "PerformedProcedureStepStatus" in modification:
            new_status = _text(modification.PerformedProcedureStepStatus)
            if new_status not in _STATES:
                return MppsResult(
                    INVALID_ATTRIBUTE_VALUE,
                    f"Performed Procedure Step Status {new_status!r} is not one of "
                    "IN PROGRESS, COMPLETED, DISCONTINUED",
                )
        for elem in modification:
            if elem.tag.group == 0x0002 or elem.tag.element == 0:
                continue
            stored[elem.tag] = elem
        self._db.execute(
            "UPDATE mpps SET status = ?, updated = ?, dataset = ?, worklist_item_id = "
            "coalesce(?, worklist_item_id) WHERE sop_instance_uid = ?",
            (new_status, _now(), _to_json(stored), worklist_item_id(stored), uid),
        )
        return MppsResult(SUCCESS, dataset=stored)

    def get(self, sop_instance_uid: str) -> MppsRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return None if row is None else _record(row)

    def records(self, *, worklist_item_id: str | None = None) -> Iterator[MppsRecord]:
        """Every MPPS (or those linked to one worklist item), oldest first."""
        sql = "SELECT * FROM mpps"
        params: tuple[Any, ...] = ()
        if worklist_item_id is not None:
            sql += " WHERE worklist_item_id = ?"
            params = (worklist_item_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created, rowid", params).fetchall()
        for row in rows:
            yield _record(row)


def worklist_item_id(ds: Dataset) -> str | None:
    """The worklist item id an MPPS performs (its first Scheduled Step Attributes item)."""
    seq = ds.get("ScheduledStepAttributesSequence")
    if not isinstance(seq, DicomSequence) or not len(seq):
        return None
    item = seq[0]
    parts = [
        _text(item.get("AccessionNumber")),
        _text(item.get("RequestedProcedureID")),
        _text(item.get("ScheduledProcedureStepID")),
    ]
    return "|".join(parts) if any(parts) else None


def _record(row: tuple[Any, ...]) -> MppsRecord:
    uid, status, item_id, calling_ae, created, updated, text = row
    return MppsRecord(uid, status, item_id, calling_ae, created, updated, Dataset.from_json(text))


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip(" \x00")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _copy(ds: Dataset) -> Dataset:
    return Dataset.from_json(ds.to_json_dict())


def _to_json(ds: Dataset) -> str:
    return json.dumps(ds.to_json_dict(), separators=(",", ":"), ensure_ascii=False)
