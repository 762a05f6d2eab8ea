"""Storage Commitment Push Model: what the archive holds, and reports that must not be lost
(PS3.4 Annex J).

One job: answer a commitment request (its Referenced SOP Sequence) with the success and failure
lists, checking the index and the files, and keep each answer until it has been delivered as an
N-EVENT-REPORT, so that a report survives a requester that is down and a restart of the server.

Rules:

- An instance is committed when the index has it with the same SOP Class, and its file is
  present with the size the index recorded. Otherwise it fails with reason 0x0112 (no such object
  instance) or 0x0119 (class / instance conflict) (PS3.4 J.3.3.1.1 Failure Reason, Table J.3-2).
- References are checked in chunks (``CHUNK`` UIDs per index query), so a request for 100,000
  instances never holds more than a chunk of index rows; the lists themselves are what the report
  carries and are kept in the database, not in memory, until sent.
- A pending report has a next-attempt time; ``due()`` lists the ones to send now, ``failed()``
  pushes the next attempt back exponentially (capped), ``delivered()`` removes it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicomnet.uids import is_valid_uid

__all__ = [
    "CHUNK",
    "CLASS_INSTANCE_CONFLICT",
    "NO_SUCH_OBJECT_INSTANCE",
    "STORAGE_COMMITMENT_PUSH",
    "STORAGE_COMMITMENT_PUSH_INSTANCE",
    "CommitmentReport",
    "PendingReports",
    "check_references",
]

#: Storage Commitment Push Model SOP Class and its well-known instance (PS3.4 J.3.5).
STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_PUSH_INSTANCE = "1.2.840.10008.1.20.1.1"

#: Failure Reasons (PS3.4 Table J.3-2 / PS3.3 C.14.1.1).
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
RESOURCE_LIMITATION = 0x0213
REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
CLASS_INSTANCE_CONFLICT = 0x0119
DUPLICATE_TRANSACTION_UID = 0x0131

CHUNK = 500

#: (SOP Instance UID) -> (SOP Class UID, path relative to the storage root, size in bytes)
Lookup = Callable[[Sequence[str]], dict[str, tuple[str, str, int]]]


@dataclass(frozen=True, slots=True)
class CommitmentReport:
    """The content of one N-EVENT-REPORT: successes as (class, instance), failures as
    (class, instance, reason)."""

    transaction_uid: str
    success: list[tuple[str, str]]
    failure: list[tuple[str, str, int]]

    @property
    def event_type_id(self) -> int:
        """1: all committed; 2: failures exist (PS3.4 Table J.3-1)."""
        return 2 if self.failure else 1


def check_references(
    references: Iterable[tuple[str, str]],
    lookup: Lookup,
    storage_root: str | os.PathLike[str],
    *,
    chunk: int = CHUNK,
) -> Iterator[tuple[str, str, int | None]]:
    """(class, instance, None) for each committed reference, (class, instance, reason) for each
    failed one, in request order; ``lookup`` asks the index for one chunk of UIDs at a time."""
    root = Path(storage_root)
    batch: list[tuple[str, str]] = []

    def flush() -> Iterator[tuple[str, str, int | None]]:
        found = lookup([uid for _cls, uid in batch])
        for sop_class, uid in batch:
            hit = found.get(uid)
            if hit is None:
                yield sop_class, uid, NO_SUCH_OBJECT_INSTANCE
            elif hit[0] != sop_class:
                yield sop_class, uid, CLASS_INSTANCE_CONFLICT
            elif not _complete(root / hit[1], hit[2]):
                yield sop_class, uid, NO_SUCH_OBJECT_INSTANCE
            else:
                yield sop_class, uid, None
        batch.clear()

    for ref in references:
        batch.append(ref)
        if len(batch) >= chunk:
            yield from flush()
    if batch:
        yield from flush()


def _complete(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


_SCHEMA = """
CREATE TABLE IF NOT EXISTS commitment_report (
    transaction_uid TEXT PRIMARY KEY,
    requester_ae TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    success TEXT NOT NULL,
    failure TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commitment_report_due ON commitment_report(next_attempt);
"""


class PendingReports:
    """Commitment reports not yet delivered, in an SQLite file (the archive's index file)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        first_retry: float = 5.0,
        max_retry: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.first_retry = first_retry
        self.max_retry = max_retry
        self._clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, requester_ae: str, report: CommitmentReport) -> bool:
        """Keep ``report`` for ``requester_ae``, due now; False if the transaction UID is known
        (a repeated request is answered once)."""
        now = self._clock()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO commitment_report (transaction_uid, requester_ae, created, "
                    "next_attempt, success, failure) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        report.transaction_uid,
                        requester_ae,
                        now,
                        now,
                        json.dumps(report.success, separators=(",", ":")),
                        json.dumps(report.failure, separators=(",", ":")),
                    ),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def get(self, transaction_uid: str) -> tuple[str, CommitmentReport] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT requester_ae, success, failure FROM commitment_report "
                "WHERE transaction_uid = ?",
                (transaction_uid,),
            ).fetchone()
        if row is None:
            return None
        return row[0], _report(transaction_uid, row[1], row[2])

    def due(self, limit: int = 16) -> list[tuple[str, str]]:
        """(transaction UID, requester AE) of reports whose next attempt has come."""
        with self._lock:
            rows = self._db.execute(
                "SELECT transaction_uid, requester_ae FROM commitment_report "
                "WHERE next_attempt <= ? ORDER BY next_attempt LIMIT ?",
                (self._clock(), limit),
            ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def next_due(self) -> float | None:
        """When the earliest pending report is due (a clock value), or None if none is pending."""
        with self._lock:
            row = self._db.execute("SELECT min(next_attempt) FROM commitment_report").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def failed(self, transaction_uid: str, error: str) -> float:
        """Record a failed delivery; returns the delay until the next attempt."""
        with self._lock:
            row = self._db.execute(
                "SELECT attempts FROM commitment_report WHERE transaction_uid = ?",
                (transaction_uid,),
            ).fetchone()
            if row is None:
                return 0.0
            attempts = int(row[0]) + 1
            delay = float(min(self.max_retry, self.first_retry * 2 ** (attempts - 1)))
            self._db.execute(
                "UPDATE commitment_report SET attempts = ?, next_attempt = ?, last_error = ? "
                "WHERE transaction_uid = ?",
                (attempts, self._clock() + delay, error[:500], transaction_uid),
            )
        return delay

    def delivered(self, transaction_uid: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM commitment_report WHERE transaction_uid = ?", (transaction_uid,)
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM commitment_report").fetchone()[0])


def _report(transaction_uid: str, success: str, failure: str) -> CommitmentReport:
    return CommitmentReport(
        transaction_uid,
        [(str(c), str(i)) for c, i in json.loads(success)],
        [(str(c), str(i), int(r)) for c, i, r in json.loads(failure)],
    )


# --- the data sets of PS3.4 J.3.3 ---------------------------------------------------------------


class CommitmentRequestError(ValueError):
    """An N-ACTION-RQ data set that is not a valid commitment request; ``status`` is the
    PS3.7 status to answer (0x0120 missing attribute, 0x0106 invalid attribute value)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


MISSING_ATTRIBUTE = 0x0120
INVALID_ATTRIBUTE_VALUE = 0x0106


def parse_request(ds: Dataset | None) -> tuple[str, list[tuple[str, str]]]:
    """(Transaction UID, [(class, instance)...]) of a Request Storage Commitment action
    (PS3.4 Table J.3-1); CommitmentRequestError when it is missing or malformed."""
    if ds is None:
        raise CommitmentRequestError("the N-ACTION has no data set", MISSING_ATTRIBUTE)
    transaction = str(ds.get("TransactionUID", "") or "").strip()
    if not transaction:
        raise CommitmentRequestError("Transaction UID (0008,1195) is missing", MISSING_ATTRIBUTE)
    if not is_valid_uid(transaction):
        raise CommitmentRequestError(
            f"Transaction UID {transaction[:70]!r} is not a UID", INVALID_ATTRIBUTE_VALUE
        )
    seq = ds.get("ReferencedSOPSequence")
    if not isinstance(seq, DicomSequence):
        raise CommitmentRequestError(
            "Referenced SOP Sequence (0008,1199) is missing", MISSING_ATTRIBUTE
        )
    if len(seq) == 0:
        raise CommitmentRequestError(
            "Referenced SOP Sequence (0008,1199) has no item", INVALID_ATTRIBUTE_VALUE
        )
    refs = []
    for n, item in enumerate(seq, 1):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not (is_valid_uid(sop_class) and is_valid_uid(sop_instance)):
            raise CommitmentRequestError(
                f"Referenced SOP Sequence item {n} needs a Referenced SOP Class UID and a "
                "Referenced SOP Instance UID that are UIDs",
                INVALID_ATTRIBUTE_VALUE,
            )
        refs.append((sop_class, sop_instance))
    return transaction, refs


def request_dataset(transaction_uid: str, references: Iterable[tuple[str, str]]) -> Dataset:
    """The N-ACTION-RQ data set asking to commit ``references`` (SCU side)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = DicomSequence([_ref(c, i) for c, i in references])
    return ds


def report_dataset(report: CommitmentReport) -> Dataset:
    """The N-EVENT-REPORT-RQ data set of ``report`` (PS3.4 Table J.3-2 / J.3-3)."""
    ds = Dataset()
    ds.TransactionUID = report.transaction_uid
    if report.success:
        ds.ReferencedSOPSequence = DicomSequence([_ref(c, i) for c, i in report.success])
    if report.failure:
        items = []
        for c, i, reason in report.failure:
            item = _ref(c, i)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = DicomSequence(items)
    return ds


def parse_report(ds: Dataset) -> CommitmentReport:
    """The report an SCU receives in an N-EVENT-REPORT-RQ data set."""

    def pairs(keyword: str) -> list[Dataset]:
        seq = ds.get(keyword)
        return list(seq) if isinstance(seq, DicomSequence) else []

    return CommitmentReport(
        str(ds.get("TransactionUID", "") or ""),
        [
            (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in pairs("ReferencedSOPSequence")
        ],
        [
            (
                str(i.ReferencedSOPClassUID),
                str(i.ReferencedSOPInstanceUID),
                int(i.get("FailureReason", PROCESSING_FAILURE)),
            )
            for i in pairs("FailedSOPSequence")
        ],
    )


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item
