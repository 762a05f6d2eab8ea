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
- A pending report has a next-attempt time; ``due()`` lists the ones to send now, ``claim()``
  takes one for an attempt (pushing its next attempt back by a lease, atomically, so that two
  processes on one index never send it at once), ``failed()`` pushes the next attempt back
  exponentially (capped), ``delivered()`` removes it.
- A bad request is refused with the statuses PS3.7 §10.1.4.1.10 gives N-ACTION: 0x0115 Invalid
  argument value for Action Information that is missing, malformed or empty (0x0120 and 0x0106
  are N-SET/N-CREATE statuses, not N-ACTION's).
- The request and report data sets of 100,000 references are parsed and encoded here for the
  little endian transfer syntaxes (``parse_request_bytes``, ``encode_report``, and for the SCU
  ``encode_request``, ``parse_report_bytes``): pydicom takes about 18 s for either, building a
  ``Dataset`` per item; other syntaxes go through pydicom.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.archive.db import open_store
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
    "encode_report",
    "encode_request",
    "parse_report",
    "parse_report_bytes",
    "parse_request",
    "parse_request_bytes",
    "report_dataset",
    "request_dataset",
    "transaction_uid_of",
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
        self._db = open_store(self.path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, requester_ae: str, report: CommitmentReport, *, hold: float = 0.0) -> bool:
        """Keep ``report`` for ``requester_ae``, due in ``hold`` seconds (the caller's own first
        attempt runs meanwhile); False if the transaction UID is known (a repeated request is
        answered once)."""
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
                        now + hold,
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

    def claim(self, transaction_uid: str, hold: float = 60.0) -> bool:
        """Take a due report for one delivery attempt: its next attempt moves ``hold`` seconds
        on (a process that dies while sending leaves it to be retried then). False when it is
        not due (any more): delivered, or claimed by someone else."""
        now = self._clock()
        with self._lock:
            cur = self._db.execute(
                "UPDATE commitment_report SET next_attempt = ? "
                "WHERE transaction_uid = ? AND next_attempt <= ?",
                (now + hold, transaction_uid, now),
            )
        return cur.rowcount == 1

    def attempts(self, transaction_uid: str) -> int:
        """Failed deliveries so far (0 for an unknown transaction)."""
        with self._lock:
            row = self._db.execute(
                "SELECT attempts FROM commitment_report WHERE transaction_uid = ?",
                (transaction_uid,),
            ).fetchone()
        return 0 if row is None else int(row[0])

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
    PS3.7 status to answer (0x0115 invalid argument value, PS3.7 §10.1.4.1.10)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: N-ACTION's status for Action Information it cannot use (PS3.7 §10.1.4.1.10, Annex C).
INVALID_ARGUMENT_VALUE = 0x0115


def parse_request(ds: Dataset | None) -> tuple[str, list[tuple[str, str]]]:
    """(Transaction UID, [(class, instance)...]) of a Request Storage Commitment action
    (PS3.4 Table J.3-1); CommitmentRequestError when it is missing or malformed."""
    if ds is None:
        raise CommitmentRequestError("the N-ACTION has no data set", INVALID_ARGUMENT_VALUE)
    seq = ds.get("ReferencedSOPSequence")
    items = None
    if isinstance(seq, DicomSequence):
        items = [
            (
                str(item.get("ReferencedSOPClassUID", "") or ""),
                str(item.get("ReferencedSOPInstanceUID", "") or ""),
            )
            for item in seq
        ]
    return _checked(str(ds.get("TransactionUID", "") or ""), items)


def _checked(
    transaction: str, items: list[tuple[str, str]] | None
) -> tuple[str, list[tuple[str, str]]]:
    """The rules of PS3.4 Table J.3-1 on what a request holds (``items`` None: no sequence)."""
    transaction = transaction.strip(" \x00")
    if not transaction:
        raise CommitmentRequestError(
            "Transaction UID (0008,1195) is missing", INVALID_ARGUMENT_VALUE
        )
    if not is_valid_uid(transaction):
        raise CommitmentRequestError(
            f"Transaction UID {transaction[:70]!r} is not a UID", INVALID_ARGUMENT_VALUE
        )
    if items is None:
        raise CommitmentRequestError(
            "Referenced SOP Sequence (0008,1199) is missing", INVALID_ARGUMENT_VALUE
        )
    if not items:
        raise CommitmentRequestError(
            "Referenced SOP Sequence (0008,1199) has no item", INVALID_ARGUMENT_VALUE
        )
    refs = []
    for n, (sop_class, sop_instance) in enumerate(items, 1):
        sop_class, sop_instance = sop_class.strip(" \x00"), sop_instance.strip(" \x00")
        if not (is_valid_uid(sop_class) and is_valid_uid(sop_instance)):
            raise CommitmentRequestError(
                f"Referenced SOP Sequence item {n} needs a Referenced SOP Class UID and a "
                "Referenced SOP Instance UID that are UIDs",
                INVALID_ARGUMENT_VALUE,
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


# --- the same data sets as bytes, for the little endian transfer syntaxes (PS3.5 §7) --------------

_LITTLE_ENDIAN: dict[str, bool] = {ImplicitVRLittleEndian: False, ExplicitVRLittleEndian: True}
_TRANSACTION_UID = 0x00081195
_FAILED_SOP_SEQUENCE = 0x00081198
_REFERENCED_SOP_SEQUENCE = 0x00081199
_REFERENCED_SOP_CLASS_UID = 0x00081150
_REFERENCED_SOP_INSTANCE_UID = 0x00081155
_FAILURE_REASON = 0x00081197
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG_LENGTH = struct.Struct("<HHI")
_TAG_VR_SHORT = struct.Struct("<HH2sH")


class _Malformed(ValueError):
    pass


class _Reader:
    """Walks a little endian data set (PS3.5 §7.1, §7.5): element headers, and the end of a
    value of undefined length (a sequence's items or encapsulated fragments)."""

    def __init__(self, data: bytes | memoryview, explicit: bool) -> None:
        self.data = data
        self.explicit = explicit

    def header(self, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None, value length, value position) of the element at ``pos``."""
        data = self.data
        if pos + 8 > len(data):
            raise _Malformed(f"element header cut short at offset {pos}")
        group, element, length = _TAG_LENGTH.unpack_from(data, pos)
        tag = group << 16 | element
        if group == 0xFFFE or not explicit:
            return tag, None, length, pos + 8
        vr = bytes(data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise _Malformed(f"element header cut short at offset {pos}")
            return tag, vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
        return tag, vr, _U16.unpack_from(data, pos + 6)[0], pos + 8

    def value_end(self, vr: bytes | None, length: int, pos: int, explicit: bool) -> int:
        """Where a value starting at ``pos`` ends (after its delimiter when undefined)."""
        if length != _UNDEFINED:
            end = pos + length
            if end > len(self.data):
                raise _Malformed(f"value of {length} bytes at offset {pos} runs past the end")
            return end
        # An undefined length: a sequence, or UN whose content is implicit VR (PS3.5 §6.2.2).
        inner = explicit and vr != b"UN"
        while True:
            tag, _vr, item_length, at = self.header(pos, explicit=False)
            if tag == _SEQUENCE_END:
                return at
            if tag != _ITEM:
                raise _Malformed(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item was due")
            pos = self.item_end(item_length, at, inner)

    def item_end(self, length: int, pos: int, explicit: bool) -> int:
        if length != _UNDEFINED:
            return self.value_end(None, length, pos, explicit)
        while True:
            tag, vr, value_length, at = self.header(pos, explicit)
            if tag == _ITEM_END:
                return at
            pos = self.value_end(vr, value_length, at, explicit)

    def elements(self, pos: int, end: int | None, explicit: bool) -> Iterator[tuple[int, int, int]]:
        """(tag, value length, value position) of each element from ``pos`` to ``end`` (an
        item of undefined length when None: up to its delimiter)."""
        stop = len(self.data) if end is None else end
        while pos < stop:
            tag, vr, length, at = self.header(pos, explicit)
            if end is None and tag == _ITEM_END:
                return
            yield tag, length, at
            pos = self.value_end(vr, length, at, explicit)
        if end is None:
            raise _Malformed("item without its delimiter")

    def items(self, pos: int, length: int, explicit: bool) -> Iterator[tuple[int, int | None]]:
        """(content position, content end or None when undefined) of each item of a
        sequence value at ``pos``."""
        end = None if length == _UNDEFINED else pos + length
        while end is None or pos < end:
            tag, _vr, item_length, at = self.header(pos, explicit=False)
            if end is None and tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                raise _Malformed(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item was due")
            yield at, (None if item_length == _UNDEFINED else at + item_length)
            pos = self.item_end(item_length, at, explicit)

    def text(self, pos: int, end: int) -> str:
        return bytes(self.data[pos:end]).decode("ascii", "replace").rstrip("\x00 ")


def _references(
    reader: _Reader, at: int, length: int, explicit: bool
) -> list[tuple[str, str, int | None]]:
    """(class, instance, Failure Reason or None) of each item of a sequence of references."""
    out = []
    for start, stop in reader.items(at, length, explicit):
        sop_class = sop_instance = ""
        reason = None
        for inner, size, vat in reader.elements(start, stop, explicit):
            if size == _UNDEFINED:
                continue
            if inner == _REFERENCED_SOP_CLASS_UID:
                sop_class = reader.text(vat, vat + size)
            elif inner == _REFERENCED_SOP_INSTANCE_UID:
                sop_instance = reader.text(vat, vat + size)
            elif inner == _FAILURE_REASON and size == 2:
                reason = _U16.unpack_from(reader.data, vat)[0]
        out.append((sop_class, sop_instance, reason))
    return out


def _read(
    raw: bytes | memoryview, explicit: bool, *, top_level_only: bool = False
) -> tuple[str, dict[int, list[tuple[str, str, int | None]]]]:
    """The Transaction UID and the reference sequences (by tag) of a request or report."""
    reader = _Reader(raw, explicit)
    transaction = ""
    sequences: dict[int, list[tuple[str, str, int | None]]] = {}
    for tag, length, at in reader.elements(0, len(raw), explicit):
        if tag == _TRANSACTION_UID and length != _UNDEFINED:
            transaction = reader.text(at, at + length)
            if top_level_only:
                break
        elif tag in (_REFERENCED_SOP_SEQUENCE, _FAILED_SOP_SEQUENCE) and not top_level_only:
            sequences[tag] = _references(reader, at, length, explicit)
    return transaction, sequences


def parse_request_bytes(
    raw: bytes | memoryview | None, transfer_syntax: str
) -> tuple[str, list[tuple[str, str]]] | None:
    """``parse_request`` straight from the N-ACTION-RQ's data set bytes, without a pydicom
    ``Dataset`` per item; None for a transfer syntax other than implicit/explicit VR little
    endian (use ``parse_request`` on the decoded data set then)."""
    explicit = _LITTLE_ENDIAN.get(transfer_syntax)
    if explicit is None:
        return None
    if raw is None:
        raise CommitmentRequestError("the N-ACTION has no data set", INVALID_ARGUMENT_VALUE)
    try:
        transaction, sequences = _read(raw, explicit)
    except (_Malformed, struct.error) as exc:
        raise CommitmentRequestError(
            f"the Action Information cannot be decoded: {exc}", INVALID_ARGUMENT_VALUE
        ) from None
    refs = sequences.get(_REFERENCED_SOP_SEQUENCE)
    return _checked(transaction, None if refs is None else [(c, i) for c, i, _r in refs])


def parse_report_bytes(
    raw: bytes | memoryview | None, transfer_syntax: str
) -> CommitmentReport | None:
    """``parse_report`` straight from the N-EVENT-REPORT-RQ's data set bytes; None for a
    transfer syntax other than implicit/explicit VR little endian (decode it with pydicom
    then); ValueError for bytes that are no data set."""
    explicit = _LITTLE_ENDIAN.get(transfer_syntax)
    if explicit is None:
        return None
    if raw is None:
        raise ValueError("no event information")
    try:
        transaction, sequences = _read(raw, explicit)
    except (_Malformed, struct.error) as exc:
        raise ValueError(f"the event information cannot be decoded: {exc}") from None
    for items in sequences.values():
        for n, (sop_class, sop_instance, _reason) in enumerate(items, 1):
            if not (sop_class and sop_instance):
                raise ValueError(
                    f"item {n} lacks its Referenced SOP Class UID or Referenced SOP Instance UID"
                )
    return CommitmentReport(
        transaction,
        [(c, i) for c, i, _r in sequences.get(_REFERENCED_SOP_SEQUENCE, [])],
        [
            (c, i, PROCESSING_FAILURE if r is None else r)
            for c, i, r in sequences.get(_FAILED_SOP_SEQUENCE, [])
        ],
    )


def transaction_uid_of(raw: bytes | memoryview | None, transfer_syntax: str) -> str | None:
    """The Transaction UID of a commitment request or report's bytes, read without the
    sequences (a sequence of defined length is stepped over at once); None when the syntax is
    not little endian or the bytes cannot be read."""
    explicit = _LITTLE_ENDIAN.get(transfer_syntax)
    if explicit is None or raw is None:
        return None
    try:
        return _read(raw, explicit, top_level_only=True)[0]
    except (_Malformed, struct.error):
        return None


def _uid_element(tag: int, value: str, explicit: bool) -> bytes:
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\x00"  # UI values are padded with NUL (PS3.5 §6.2)
    if explicit:
        return _TAG_VR_SHORT.pack(tag >> 16, tag & 0xFFFF, b"UI", len(data)) + data
    return _TAG_LENGTH.pack(tag >> 16, tag & 0xFFFF, len(data)) + data


def _append_sequence(out: bytearray, tag: int, items: Iterable[bytes], explicit: bool) -> None:
    """Append a sequence of defined length with ``items`` (each an item's content), writing
    into ``out`` once: its length is filled in at the end."""
    if explicit:
        out += struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, b"SQ", 0)
    else:
        out += _TAG_LENGTH.pack(tag >> 16, tag & 0xFFFF, 0)
    start = len(out)
    for item in items:
        out += _TAG_LENGTH.pack(0xFFFE, 0xE000, len(item))
        out += item
    _U32.pack_into(out, start - 4, len(out) - start)


def encode_request(
    transaction_uid: str, references: Iterable[tuple[str, str]], transfer_syntax: str
) -> bytes | None:
    """The N-ACTION-RQ data set asking to commit ``references`` (``request_dataset``) encoded
    in ``transfer_syntax``, with defined lengths; None for a syntax other than implicit/explicit
    VR little endian (encode ``request_dataset`` with pydicom then)."""
    explicit = _LITTLE_ENDIAN.get(transfer_syntax)
    if explicit is None:
        return None
    out = bytearray(_uid_element(_TRANSACTION_UID, transaction_uid, explicit))
    items = (
        _uid_element(_REFERENCED_SOP_CLASS_UID, c, explicit)
        + _uid_element(_REFERENCED_SOP_INSTANCE_UID, i, explicit)
        for c, i in references
    )
    _append_sequence(out, _REFERENCED_SOP_SEQUENCE, items, explicit)
    return bytes(out)


def encode_report(report: CommitmentReport, transfer_syntax: str) -> bytes | None:
    """The N-EVENT-REPORT-RQ data set of ``report`` (``report_dataset``) encoded in
    ``transfer_syntax``, with defined lengths, in one buffer; None for a syntax other than
    implicit/explicit VR little endian (encode ``report_dataset`` with pydicom then)."""
    explicit = _LITTLE_ENDIAN.get(transfer_syntax)
    if explicit is None:
        return None
    out = bytearray(_uid_element(_TRANSACTION_UID, report.transaction_uid, explicit))
    if explicit:
        reason_head = _TAG_VR_SHORT.pack(0x0008, 0x1197, b"US", 2)
    else:
        reason_head = _TAG_LENGTH.pack(0x0008, 0x1197, 2)
    if report.failure:  # (0008,1198) before (0008,1199): ascending tags (PS3.5 §7.1)
        failed = (
            _uid_element(_REFERENCED_SOP_CLASS_UID, c, explicit)
            + _uid_element(_REFERENCED_SOP_INSTANCE_UID, i, explicit)
            + reason_head
            + _U16.pack(reason)
            for c, i, reason in report.failure
        )
        _append_sequence(out, _FAILED_SOP_SEQUENCE, failed, explicit)
    if report.success:
        done = (
            _uid_element(_REFERENCED_SOP_CLASS_UID, c, explicit)
            + _uid_element(_REFERENCED_SOP_INSTANCE_UID, i, explicit)
            for c, i in report.success
        )
        _append_sequence(out, _REFERENCED_SOP_SEQUENCE, done, explicit)
    return bytes(out)
