"""Query/Retrieve SCP (PS3.4 Annex C) over the archive's index: C-FIND, C-MOVE and C-GET in the
Patient Root and Study Root information models, on top of the storage SCP.

Rules:

- The identifier is checked before the index is asked: no identifier, no or an unknown Query/
  Retrieve Level, a level the model lacks, or a key the index rejects (hierarchy, values that cannot
  be parsed) is a failure 0xA900 (Identifier does not match SOP Class) with an Error Comment saying
  why; an element that cannot be decoded is 0xC000 (Unable to process). Statuses are named by
  their service's table (``FindStatus``, ``RetrieveStatus``).
- C-FIND (§C.4.1): one pending response per match with the requested keys; 0xFF01 instead of 0xFF00
  when the identifier holds keys the index does not match (they come back zero length). Queries are
  hierarchical (§C.4.1.3.1); relational queries are not offered. C-CANCEL is honoured between
  matches (the server answers 0xFE00).
- C-MOVE (§C.4.2) and C-GET (§C.4.3): the instances under the selected entities are sent as C-STORE
  sub-operations, over a new association to the destination (from the ``peers`` configuration; an
  unknown one is 0xA801) or on the requestor's own association. The stored syntax and the
  uncompressed ones are proposed; an instance the destination accepted only in another syntax is
  converted first (off the event loop); when nothing it accepted fits, that sub-operation fails
  with the reason in the log, the others go on. A pending response with the
  remaining/completed/failed/warning counts follows every sub-operation; the final status is success,
  warning 0xB000 with the Failed SOP Instance UID List, or failure 0xA702 when every sub-operation
  failed. A file gone from disk, a destination that refuses or vanishes: failed sub-operations,
  never a crash. C-CANCEL stops between sub-operations with 0xFE00 and the counts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian

from dicomnet.archive.index import LEVELS, SUPPORTED_KEYS, Index, InstanceRecord, QueryError
from dicomnet.client import DicomClient
from dicomnet.dimse.status import FindStatus, RetrieveStatus, Status, StatusCategory, category
from dicomnet.errors import AssociationAborted, DicomNetError, DicomTimeoutError
from dicomnet.negotiation import ProposedContext
from dicomnet.pixels import storage_plan
from dicomnet.service import (
    CFindProvider,
    CGetProvider,
    CMoveProvider,
    ReceivedCFind,
    ReceivedCGet,
    ReceivedCMove,
    ReceivedQueryRetrieve,
    Response,
)
from dicomnet.services.storage import StorageService
from dicomnet.uids import QR_MODELS

log = logging.getLogger("dicomnet.services.qr")

#: Query/Retrieve SOP classes this service offers (PS3.4 §C.6.1, §C.6.2) -> information model
#: root: the Patient Root and Study Root models of ``uids.QR_MODELS``.
MODELS: dict[str, str] = {
    uid: model.upper() for model in ("patient", "study") for uid in QR_MODELS[model]
}
QR_SOP_CLASSES: tuple[str, ...] = tuple(MODELS)

_QR_LEVEL_TAG = 0x00080052
_CHARSET_TAG = 0x00080005
# Keys answered by the service itself rather than matched by the index.
_SERVICE_KEYS = frozenset({"RetrieveAETitle", "InstanceAvailability"})
# Keys the index matches or computes (the rest are unsupported: universal, returned empty).
_SUPPORTED = SUPPORTED_KEYS | _SERVICE_KEYS | {"QueryRetrieveLevel", "SpecificCharacterSet"}
_FETCH = 64  # matches fetched from the index per worker-thread hop
#: "Unable to process" (Cxxx, PS3.4 C.4.1.1.4, C.4.2.1.5); the low bits are ours: no index.
NO_INDEX = FindStatus.UNABLE_TO_PROCESS + 1


class IdentifierError(DicomNetError):
    """An identifier the service cannot use: ``status`` and an Error Comment (``str(exc)``)."""

    def __init__(
        self,
        message: str,
        status: int = FindStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        offending: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.offending = offending

    def response(self) -> Response:
        return Response(
            self.status,
            error_comment=str(self),
            offending_elements=[self.offending] if self.offending is not None else None,
        )


@dataclass(slots=True)
class Identifier:
    """A checked C-FIND/C-MOVE/C-GET identifier: the level, the index query, the requested
    elements in order, and whether some key is not supported."""

    level: str
    model: str
    query: dict[str, tuple[str, str]]
    requested: list[tuple[int, str, str]] = field(default_factory=list)  # (tag, keyword, VR)
    unsupported: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    return str(value).rstrip(" \x00")


def parse_identifier(ds: Dataset | None, sop_class_uid: str) -> Identifier:
    """Check ``ds`` against the information model of ``sop_class_uid`` and turn it into an index
    query; IdentifierError when it does not fit (PS3.4 §C.4.1.1.3, §C.4.2.1.4)."""
    model = MODELS.get(sop_class_uid)
    if model is None:
        raise IdentifierError(
            f"{sop_class_uid} is not a Query/Retrieve SOP class", Status.SOP_CLASS_NOT_SUPPORTED
        )
    if ds is None:
        raise IdentifierError("no identifier was received")
    if _QR_LEVEL_TAG not in ds:
        raise IdentifierError("QueryRetrieveLevel (0008,0052) is missing", offending=_QR_LEVEL_TAG)
    try:
        level = _text(ds[_QR_LEVEL_TAG].value).strip().upper()
    except Exception as exc:
        raise IdentifierError(
            f"QueryRetrieveLevel unreadable: {exc}", FindStatus.UNABLE_TO_PROCESS, _QR_LEVEL_TAG
        )
    if level not in LEVELS:
        raise IdentifierError(
            f"QueryRetrieveLevel {level!r} is not one of {', '.join(LEVELS)}",
            offending=_QR_LEVEL_TAG,
        )
    if model == "STUDY" and level == "PATIENT":
        raise IdentifierError(
            "QueryRetrieveLevel PATIENT is not in the Study Root model", offending=_QR_LEVEL_TAG
        )
    ident = Identifier(level, model, {})
    for tag in list(ds.keys()):  # tags only: a value is decoded inside the try below
        if tag.group in (0x0000, 0x0002) or tag.is_private or tag == _CHARSET_TAG:
            continue
        keyword = keyword_for_tag(tag)
        if not keyword:
            continue  # repeating groups, retired elements without a keyword: not returned
        try:
            elem = ds[tag]
            vr = str(elem.VR)
            if vr == "SQ":
                ident.requested.append((int(tag), keyword, vr))
                ident.unsupported.append(keyword)
                continue
            value = elem.value
            if isinstance(value, bytes | bytearray):
                ident.unsupported.append(keyword)
                ident.requested.append((int(tag), keyword, vr))
                continue
            text = _text(value)
        except Exception as exc:
            raise IdentifierError(
                f"cannot read {keyword}: {type(exc).__name__}: {exc}",
                FindStatus.UNABLE_TO_PROCESS,
                int(tag),
            )
        ident.requested.append((int(tag), keyword, vr))
        ident.query[keyword] = (vr, text)
        if keyword not in _SUPPORTED:
            ident.unsupported.append(keyword)
    return ident


def _element(tag: int, vr: str, value: object) -> DataElement:
    if value is None or value == "":
        return DataElement(tag, vr, [] if vr == "SQ" else None)
    if isinstance(value, int) and vr in ("IS", "DS"):
        return DataElement(tag, vr, str(value))
    if isinstance(value, list):
        return DataElement(tag, vr, [str(v) for v in value])
    return DataElement(tag, vr, value)


def _vr_of(tag: int, fallback: str) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return fallback
    return fallback if " or " in vr else vr


def _take(iterator: Iterator[dict[str, object]], n: int) -> list[dict[str, object]]:
    return list(itertools.islice(iterator, n))


def _counts(
    remaining: int | None, completed: int, failed: int, warning: int
) -> dict[str, int | None]:
    """The sub-operation counts of a C-MOVE/C-GET response. They are US (PS3.7 §E.1): a
    retrieve of more than 65,535 instances reports 65,535 rather than no response at all."""
    return {
        "number_of_remaining_suboperations": None if remaining is None else min(remaining, _US),
        "number_of_completed_suboperations": min(completed, _US),
        "number_of_failed_suboperations": min(failed, _US),
        "number_of_warning_suboperations": min(warning, _US),
    }


_US = 0xFFFF  # the largest US value


def _failed_list(uids: Sequence[str]) -> Dataset | None:
    if not uids:
        return None
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = list(uids)
    return ds


def store_contexts(records: Sequence[InstanceRecord]) -> list[ProposedContext]:
    """Presentation contexts to send ``records``: per SOP class each stored transfer syntax and
    the uncompressed fallback (``pixels.storage_plan``), so that a destination that takes only
    uncompressed data gets the instances decompressed (issue 10); the first association's worth
    (at most 128 contexts, PS3.8 §9.3.2.2)."""
    pairs = ((r.sop_class_uid, r.transfer_syntax_uid or ExplicitVRLittleEndian) for r in records)
    plan = storage_plan(pairs)
    return plan[0][0] if plan else []


SubOperation = Callable[[Path], Awaitable[int]]


class ArchiveService(StorageService, CFindProvider, CMoveProvider, CGetProvider):
    """The archive node: Verification, Storage (with the index), and Query/Retrieve (C-FIND,
    C-MOVE, C-GET) in the Patient Root and Study Root models. Configure with
    ``ArchiveService.factory(root, index=open_index(root), peers={"AE": ("host", port)})``."""

    abstract_syntaxes = QR_SOP_CLASSES
    #: C-MOVE destinations: AE title -> (host, port).
    peers: Mapping[str, tuple[str, int]] = {}
    #: Our AE title as the calling AE of C-MOVE sub-operations (default: the one we were called).
    aet: str | None = None
    #: Seconds to connect/associate with a C-MOVE destination, and to wait for each C-STORE-RSP.
    move_timeout: float = 30.0

    @classmethod
    def factory(  # type: ignore[override]
        cls,
        root: str | Path,
        *,
        index: Index,
        peers: Mapping[str, tuple[str, int]] | None = None,
        aet: str | None = None,
        move_timeout: float = 30.0,
        **storage: Any,
    ) -> type[ArchiveService]:
        """A configured subclass: the storage options of ``StorageService.factory``, the
        ``index`` (shared by every association, see ``open_index``), the C-MOVE ``peers``, our
        AE title ``aet`` for C-MOVE sub-operations, and their timeout."""
        configured = super().factory(
            root,
            index=index,
            peers=dict(peers or {}),
            aet=aet,
            move_timeout=move_timeout,
            **storage,
        )
        assert issubclass(configured, ArchiveService)
        return configured

    @property
    def our_ae_title(self) -> str:
        return self.aet or self.ae_title or self.association.called_ae_title or "DICOMNET"

    def _checked(self, request: ReceivedQueryRetrieve) -> Identifier:
        if self.index is None:
            raise IdentifierError("this node keeps no index", NO_INDEX)
        try:
            return parse_identifier(request.dataset, request.sop_class_uid)
        except IdentifierError:
            raise
        except Exception as exc:  # the identifier's bytes could not be decoded at all
            raise IdentifierError(f"identifier unreadable: {exc}", FindStatus.UNABLE_TO_PROCESS)

    # -- C-FIND ------------------------------------------------------------------------------------

    async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset | Response]:
        try:
            ident = self._checked(request)
            assert self.index is not None
            if self.index_writer is not None:
                await self.index_writer.aflush()
            matches = self.index.query(ident.level, ident.query, model=ident.model)
        except IdentifierError as exc:
            log.warning("[%s] C-FIND refused: %s", request.association, exc)
            yield exc.response()
            return
        except QueryError as exc:
            log.warning("[%s] C-FIND refused: %s", request.association, exc)
            yield Response(FindStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment=str(exc))
            return
        status = (
            FindStatus.PENDING_OPTIONAL_KEYS_NOT_SUPPORTED
            if ident.unsupported
            else FindStatus.PENDING
        )
        found = 0
        while not request.cancelled.is_set():
            try:
                chunk = await asyncio.to_thread(_take, matches, _FETCH)
            except QueryError as exc:
                yield Response(
                    FindStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment=str(exc)
                )
                return
            if not chunk:
                break
            for match in chunk:
                if request.cancelled.is_set():
                    break
                found += 1
                yield Response(status, dataset=self._match_dataset(ident, match))
        log.info(
            "[%s] C-FIND %s level: %d matches%s",
            request.association,
            ident.level,
            found,
            " (cancelled)" if request.cancelled.is_set() else "",
        )

    def _match_dataset(self, ident: Identifier, match: Mapping[str, object]) -> Dataset:
        ds = Dataset()
        charset = match.get("SpecificCharacterSet")
        if charset:
            ds.SpecificCharacterSet = charset
        done: set[str] = set()
        for tag, keyword, vr in ident.requested:
            done.add(keyword)
            if keyword == "RetrieveAETitle":
                value: object = self.our_ae_title
            elif keyword == "InstanceAvailability":
                value = "ONLINE"
            else:
                value = match.get(keyword)
            ds.add(_element(tag, _vr_of(tag, vr), value))
        for keyword, value in match.items():  # unique keys the identifier did not ask for
            if keyword in done or keyword == "SpecificCharacterSet":
                continue
            tag = _tag(keyword)
            ds.add(_element(tag, _vr_of(tag, "LO"), value))
        return ds

    # -- C-MOVE ------------------------------------------------------------------------------------

    async def on_c_move(self, request: ReceivedCMove) -> AsyncIterator[Response]:
        destination = request.move_destination
        address = self.peers.get(destination)
        if address is None:
            log.warning("[%s] C-MOVE to unknown AE %r", request.association, destination)
            yield Response(
                RetrieveStatus.MOVE_DESTINATION_UNKNOWN,
                error_comment=f"unknown move destination {destination!r}",
            )
            return
        try:
            records = await self._instances(request)
        except IdentifierError as exc:
            log.warning("[%s] C-MOVE refused: %s", request.association, exc)
            yield exc.response()
            return
        host, port = address
        client = DicomClient(
            host,
            port,
            calling_ae=self.our_ae_title,
            called_ae=destination,
            connect_timeout=self.move_timeout,
            acse_timeout=self.move_timeout,
            dimse_timeout=self.move_timeout,
        )
        originator = request.association.calling_ae_title
        message_id = request.message_id
        problem: str | None = None
        if records:
            try:
                await client.associate(store_contexts(records))
            except (DicomNetError, OSError) as exc:
                problem = f"cannot associate with {destination}: {exc}"
                log.warning("[%s] C-MOVE: %s", request.association, problem)

        async def send(path: Path) -> int:
            if not client.is_associated:
                raise AssociationAborted(f"the association with {destination} has ended")
            return await client.c_store(
                path,
                move_originator_ae_title=originator,
                move_originator_message_id=message_id,
            )

        try:
            async for response in self._sub_operations(request, records, send, problem):
                yield response
        finally:
            if client.is_associated:
                try:
                    await client.release()
                except (DicomNetError, OSError):
                    await client.abort()

    # -- C-GET -------------------------------------------------------------------------------------

    async def on_c_get(self, request: ReceivedCGet) -> AsyncIterator[Response]:
        try:
            records = await self._instances(request)
        except IdentifierError as exc:
            log.warning("[%s] C-GET refused: %s", request.association, exc)
            yield exc.response()
            return

        async def send(path: Path) -> int:
            return await request.store(path)

        async for response in self._sub_operations(request, records, send, None):
            yield response

    # -- retrieval --------------------------------------------------------------------------------

    async def _instances(self, request: ReceivedQueryRetrieve) -> list[InstanceRecord]:
        ident = self._checked(request)
        assert self.index is not None
        if self.index_writer is not None:
            await self.index_writer.aflush()
        index = self.index

        def collect() -> list[InstanceRecord]:
            return list(index.instances(ident.level, ident.query, model=ident.model))

        try:
            return await asyncio.to_thread(collect)
        except QueryError as exc:
            raise IdentifierError(str(exc))

    async def _sub_operations(
        self,
        request: ReceivedQueryRetrieve,
        records: Sequence[InstanceRecord],
        send: SubOperation,
        problem: str | None,
    ) -> AsyncIterator[Response]:
        """Send every record with ``send`` and yield the pending responses and the final one.
        ``problem`` set: no sub-operation can be performed (all fail with that comment)."""
        total = len(records)
        completed = failed = warning = 0
        failed_uids: list[str] = []
        stopped = problem  # when set, every remaining sub-operation fails with this reason
        comment = problem  # the first failure's reason, for the final Error Comment
        for i, record in enumerate(records):
            if request.cancelled.is_set():
                remaining = total - i
                log.info("[%s] retrieve cancelled, %d left", request.association, remaining)
                yield Response(
                    RetrieveStatus.CANCEL,
                    extra=_counts(remaining, completed, failed, warning),
                    dataset=_failed_list(failed_uids),
                )
                return
            status, why = int(RetrieveStatus.OUT_OF_RESOURCES_SUB_OPERATIONS), stopped
            path = self.root / record.path
            if stopped is None and not path.is_file():
                why = f"{record.sop_instance_uid} is gone from disk"
                log.warning("[%s] %s (%s)", request.association, why, path)
            elif stopped is None:
                try:
                    status = await send(path)
                    why = f"C-STORE of {record.sop_instance_uid}: 0x{status:04X}"
                except (AssociationAborted, DicomTimeoutError) as exc:
                    stopped = why = f"sub-operations stopped: {exc}"
                    log.warning("[%s] %s", request.association, why)
                except (DicomNetError, OSError) as exc:
                    why = f"{record.sop_instance_uid}: {exc}"
                    log.warning("[%s] sub-operation failed: %s", request.association, why)
            kind = category(status)
            if kind is StatusCategory.SUCCESS:
                completed += 1
            elif kind is StatusCategory.WARNING:
                warning += 1
            else:
                failed += 1
                failed_uids.append(record.sop_instance_uid)
                comment = comment or why
            if i + 1 < total and not request.cancelled.is_set():  # else: Cancel, with counts
                yield Response(
                    RetrieveStatus.PENDING,
                    extra=_counts(total - i - 1, completed, failed, warning),
                )
        if failed == 0 and warning == 0:
            final = Response(RetrieveStatus.SUCCESS, extra=_counts(None, completed, 0, 0))
        else:
            final = Response(
                RetrieveStatus.OUT_OF_RESOURCES_SUB_OPERATIONS
                if completed == warning == 0
                else RetrieveStatus.SUB_OPERATIONS_COMPLETE_WITH_FAILURES,
                extra=_counts(None, completed, failed, warning),
                dataset=_failed_list(failed_uids),
                error_comment=comment if comment and failed else None,
            )
        log.info(
            "[%s] retrieve done: %d completed, %d failed, %d warning",
            request.association,
            completed,
            failed,
            warning,
        )
        yield final


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return int(tag)


__all__ = [
    "MODELS",
    "NO_INDEX",
    "QR_SOP_CLASSES",
    "ArchiveService",
    "Identifier",
    "IdentifierError",
    "parse_identifier",
    "store_contexts",
]
