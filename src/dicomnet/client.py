"""``DicomClient``: negotiates an association, queues requests and awaits their responses
(fo-dicom's ``DicomClient``), with the direct forms ``await client.c_echo()`` and
``await client.c_store(path)``.

Rules: the association is opened lazily, with the presentation contexts the queued requests need
plus those added explicitly; a request that needs a context the open association lacks makes the
client release it and associate again. Up to the negotiated asynchronous operations window of
requests are outstanding at once. A file's data set is streamed from disk, never read whole.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.association import Association, Incoming, IncomingInvalid
from dicomnet.connection import Role
from dicomnet.dataset import FileInfo, decode_dataset, encode_dataset, read_file_info
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory, category, describe
from dicomnet.errors import (
    AssociationAborted,
    AssociationRejected,
    DicomNetError,
    DicomTimeoutError,
    NegotiationError,
)
from dicomnet.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    Negotiated,
    NegotiatedContext,
    ProposedContext,
    build_request,
    read_accept,
)
from dicomnet.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, UserIdentityRQ
from dicomnet.service import AssociationInfo, Response
from dicomnet.service import CStoreRequest as ReceivedCStore
from dicomnet.sinks import DatasetSink, FileSink, MemorySink, file_meta_bytes
from dicomnet.uids import (
    GET_IMAGE_CLASSES,
    GET_OTHER_CLASSES,
    IMAGE_SYNTAXES,
    QR_MODELS,
    UNCOMPRESSED,
    VERIFICATION,
    is_valid_uid,
)

log = logging.getLogger("dicomnet.client")

_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    """A queued DIMSE request. ``on_response(request, response)`` is called for every response
    (pending ones included); ``response`` holds the final one."""

    on_response: Callable[[Request, c.Message], None] | None = None
    message_id: int = 0
    response: c.Message | None = None
    error: BaseException | None = None
    _done: asyncio.Future[c.Message] | None = field(default=None, repr=False)

    def contexts(self) -> list[ProposedContext]:
        raise NotImplementedError

    @property
    def status(self) -> int | None:
        return getattr(self.response, "status", None)


@dataclass(eq=False)
class CEchoRequest(Request):
    """A C-ECHO-RQ (PS3.7 §9.1.5)."""

    def contexts(self) -> list[ProposedContext]:
        return [ProposedContext(VERIFICATION, list(UNCOMPRESSED))]


@dataclass(eq=False)
class CStoreRequest(Request):
    """A C-STORE-RQ from a Part 10 file (streamed) or a pydicom ``Dataset`` (encoded in memory)."""

    file: FileInfo | None = None
    dataset: Dataset | None = None
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax: str = ExplicitVRLittleEndian
    priority: int = 0
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        on_response: Callable[[Request, c.Message], None] | None = None,
        **kwargs: Any,
    ) -> CStoreRequest:
        info = read_file_info(path)
        return cls(
            on_response=on_response,
            file=info,
            sop_class_uid=info.sop_class_uid,
            sop_instance_uid=info.sop_instance_uid,
            transfer_syntax=info.transfer_syntax,
            **kwargs,
        )

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        on_response: Callable[[Request, c.Message], None] | None = None,
        **kwargs: Any,
    ) -> CStoreRequest:
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "") or ExplicitVRLittleEndian)
        return cls(
            on_response=on_response,
            dataset=ds,
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            transfer_syntax=ts,
            **kwargs,
        )

    def contexts(self) -> list[ProposedContext]:
        syntaxes = [self.transfer_syntax]
        if self.transfer_syntax in UNCOMPRESSED or self.dataset is not None:
            # Uncompressed data can be re-encoded if the peer prefers another syntax.
            for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                if ts not in syntaxes and (
                    self.transfer_syntax in UNCOMPRESSED
                    or not UID(self.transfer_syntax).is_compressed
                ):
                    syntaxes.append(ts)
        return [ProposedContext(self.sop_class_uid, syntaxes)]


@dataclass(eq=False)
class _QueryRequest(Request):
    """C-FIND/C-MOVE/C-GET: every response (pending and final) goes to ``results``; an
    exception put there means the association ended before the final response."""

    identifier: Dataset | None = None
    model: str = ""
    priority: int = 0
    context_id: int = 0
    results: asyncio.Queue[tuple[c.Message, Dataset | None] | BaseException] | None = None

    def contexts(self) -> list[ProposedContext]:
        return [ProposedContext(self.model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


@dataclass(eq=False)
class CFindRequest(_QueryRequest):
    """A C-FIND-RQ (PS3.7 §9.1.2); matches arrive as pending responses."""


@dataclass(eq=False)
class CMoveRequest(_QueryRequest):
    """A C-MOVE-RQ (PS3.7 §9.1.4); the instances go to the AE ``destination``."""

    destination: str = ""


StoreHandler = Callable[[ReceivedCStore], Awaitable["int | Response | None"]]


@dataclass(eq=False)
class CGetRequest(_QueryRequest):
    """A C-GET-RQ (PS3.7 §9.1.3); the instances arrive as C-STORE-RQs on this association,
    on the ``storage_contexts`` (proposed with the SCP role for us, PS3.7 §D.3.3.4), and are
    handed to ``store``."""

    storage_contexts: Sequence[ProposedContext] = ()
    store: StoreHandler | None = None
    temp_dir: str | os.PathLike[str] | None = None

    def contexts(self) -> list[ProposedContext]:
        return [*super().contexts(), *self.storage_contexts]


# -- query/retrieve: models, identifiers, progress, errors -----------------------------------------

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


def build_query(query: QueryInput, level: str | None = None) -> Dataset:
    """The identifier of a C-FIND/C-MOVE/C-GET: a copy of ``query`` (a ``Dataset``, or a
    mapping of keyword or "gggg,eeee" to value, where None or "" asks for the attribute back
    and a list or a backslash-separated string gives several values) with Query/Retrieve Level
    set to ``level`` (PATIENT, STUDY, SERIES or IMAGE). Without ``level`` the query's own level
    is kept, and STUDY is used when it has none."""
    # A deep copy: pydicom's Dataset(ds) shares the elements, and setting the level would
    # change the caller's query.
    ds = copy.deepcopy(query) if isinstance(query, Dataset) else _dataset_from_mapping(query or {})
    if level is not None:
        ds.QueryRetrieveLevel = _normalize_level(level)
    elif "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = "STUDY"
    return ds


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


@dataclass(frozen=True, slots=True)
class RetrieveProgress:
    """One C-MOVE/C-GET response: the sub-operation counts (PS3.7 §9.1.3.1, §9.1.4.1) and the
    status; ``final`` on the last one, which may list the failed SOP instances."""

    status: int
    remaining: int | None
    completed: int
    failed: int
    warning: int
    final: bool
    error_comment: str | None = None
    failed_instances: tuple[str, ...] = ()

    @property
    def category(self) -> StatusCategory:
        return category(self.status)

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.warning

    @classmethod
    def from_response(cls, message: c.Message, ds: Dataset | None) -> RetrieveProgress:
        status = int(getattr(message, "status", 0xFFFF))
        failed: tuple[str, ...] = ()
        if ds is not None and "FailedSOPInstanceUIDList" in ds:
            value = ds.FailedSOPInstanceUIDList
            failed = tuple(str(v) for v in (value if isinstance(value, MultiValue) else [value]))
        return cls(
            status=status,
            remaining=getattr(message, "number_of_remaining_suboperations", None),
            completed=getattr(message, "number_of_completed_suboperations", None) or 0,
            failed=getattr(message, "number_of_failed_suboperations", None) or 0,
            warning=getattr(message, "number_of_warning_suboperations", None) or 0,
            final=category(status) is not StatusCategory.PENDING,
            error_comment=getattr(message, "error_comment", None),
            failed_instances=failed,
        )


class QueryRetrieveError(DicomNetError):
    """A C-FIND/C-MOVE/C-GET ended with a failure status (PS3.4 §C.4): ``status``,
    ``error_comment`` and, for retrievals, the final ``progress``."""

    operation = "query/retrieve"

    def __init__(
        self,
        status: int,
        error_comment: str | None = None,
        progress: RetrieveProgress | None = None,
        offending_elements: Sequence[int] | None = None,
    ) -> None:
        text = f"{self.operation} failed: {describe(status)}"
        if error_comment:
            text += f": {error_comment}"
        if offending_elements:
            text += (
                " (offending elements "
                + ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in offending_elements)
                + ")"
            )
        super().__init__(text)
        self.status = status
        self.error_comment = error_comment
        self.progress = progress
        self.offending_elements = list(offending_elements or ())


class CFindError(QueryRetrieveError):
    operation = "C-FIND"


class CMoveError(QueryRetrieveError):
    operation = "C-MOVE"


class CGetError(QueryRetrieveError):
    operation = "C-GET"


_T = TypeVar("_T")
_Convert = Callable[[c.Message, "Dataset | None"], "_T | None"]


class QueryRetrieveResponses(Generic[_T]):
    """The responses of one C-FIND/C-MOVE/C-GET as an async iterator (matches for C-FIND,
    ``RetrieveProgress`` for C-MOVE/C-GET). The request is sent when iteration starts.

    ``cancel()`` sends a C-CANCEL-RQ (PS3.7 §9.3.2.3) and iteration goes on to the final
    response (status Cancel, or whatever the peer had already finished with). ``aclose()``, or
    leaving ``async with``, cancels an unfinished operation and reads its remaining responses,
    so the association stays usable. A failure status raises ``QueryRetrieveError``.
    """

    def __init__(
        self,
        client: DicomClient,
        request: _QueryRequest,
        convert: Callable[[c.Message, Dataset | None], _T | None],
    ) -> None:
        self._client = client
        self.request = request
        self._convert = convert
        self._started = False
        self._finished = False
        self.cancel_sent = False
        #: The final response's status once it arrived.
        self.final_status: int | None = None

    @property
    def message_id(self) -> int:
        return self.request.message_id

    def __aiter__(self) -> QueryRetrieveResponses[_T]:
        return self

    async def __anext__(self) -> _T:
        while not self._finished:
            message, ds = await self._next_response()
            value = self._convert(message, ds)
            if value is not None:
                return value
        raise StopAsyncIteration

    async def _start(self) -> None:
        self._started = True
        try:
            await self._client._start_query(self.request)
        except BaseException:
            self._finished = True
            raise

    async def _next_response(self) -> tuple[c.Message, Dataset | None]:
        if not self._started:
            await self._start()
        results = self.request.results
        assert results is not None
        timeout = self._client.dimse_timeout
        try:
            item = await asyncio.wait_for(results.get(), timeout)
        except TimeoutError as exc:
            self._finished = True
            raise DicomTimeoutError(
                f"no response to message {self.request.message_id} within {timeout} s"
            ) from exc
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        message = item[0]
        status = int(getattr(message, "status", 0xFFFF))
        if category(status) is not StatusCategory.PENDING:
            self._finished = True
            self.final_status = status
        return item

    async def cancel(self) -> None:
        """Ask the peer to stop (C-CANCEL-RQ); does nothing once the final response came."""
        if not self._started or self._finished or self.cancel_sent:
            return
        self.cancel_sent = True
        await self._client._send_cancel(self.request)

    async def aclose(self) -> None:
        """Cancel if unfinished and consume the remaining responses (each within the client's
        DIMSE timeout)."""
        if not self._started or self._finished:
            self._started = self._finished = True
            return
        try:
            await self.cancel()
            for _ in range(1 << 20):
                if self._finished:
                    break
                await self._next_response()
        except DicomNetError as exc:
            log.warning("closing message %d: %s", self.request.message_id, exc)

    async def __aenter__(self) -> QueryRetrieveResponses[_T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _find_match(message: c.Message, ds: Dataset | None) -> Dataset | None:
    status = int(getattr(message, "status", 0xFFFF))
    cat = category(status)
    if cat is StatusCategory.PENDING:
        if ds is None:
            log.warning("pending C-FIND-RSP without an identifier ignored")
        return ds
    if cat is StatusCategory.FAILURE:
        raise CFindError(
            status,
            getattr(message, "error_comment", None),
            offending_elements=getattr(message, "offending_elements", None),
        )
    return None


def _progress(
    error: type[QueryRetrieveError],
) -> Callable[[c.Message, Dataset | None], RetrieveProgress]:
    def convert(message: c.Message, ds: Dataset | None) -> RetrieveProgress:
        progress = RetrieveProgress.from_response(message, ds)
        if progress.final and progress.category is StatusCategory.FAILURE:
            raise error(
                progress.status,
                progress.error_comment,
                progress,
                getattr(message, "offending_elements", None),
            )
        return progress

    return convert


def get_storage_contexts(
    sop_classes: Iterable[str] | None = None, *, compressed: bool = True
) -> list[ProposedContext]:
    """Storage presentation contexts for a C-GET, each with the SCP role for us and not the SCU
    role (PS3.4 §C.4.3.1.2, PS3.7 §D.3.3.4). ``sop_classes`` default to about fifty common ones
    (fewer than 128 contexts with the compressed ones); with ``compressed``, image classes get a
    second context with the compressed transfer syntaxes, since the SCP picks one transfer
    syntax per context and sends compressed instances only where it fits."""
    uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    packed = [ts for ts in IMAGE_SYNTAXES if ts not in UNCOMPRESSED]
    contexts: list[ProposedContext] = []
    if sop_classes is None:
        for uid in GET_IMAGE_CLASSES:
            contexts.append(ProposedContext(uid, list(uncompressed), False, True))
            if compressed:
                contexts.append(ProposedContext(uid, list(packed), False, True))
        for uid in GET_OTHER_CLASSES:
            contexts.append(ProposedContext(uid, list(uncompressed), False, True))
        return contexts
    for uid in sop_classes:
        contexts.append(ProposedContext(uid, list(uncompressed), False, True))
        if compressed and uid in GET_IMAGE_CLASSES:
            contexts.append(ProposedContext(uid, list(packed), False, True))
    return contexts


def save_into(folder: str | os.PathLike[str]) -> StoreHandler:
    """A C-GET store handler that moves each received instance to ``folder/<SOP Instance
    UID>.dcm`` (a rename when the temporary file is on the same file system)."""
    root = Path(folder)

    async def store(request: ReceivedCStore) -> int | Response:
        uid = request.sop_instance_uid
        if not is_valid_uid(uid):
            return Response(0xC000, error_comment=f"unsafe SOP Instance UID {uid[:30]!r}")
        await request.save(root / f"{uid}.dcm")
        return Status.SUCCESS

    return store


class DicomClient:
    """A DICOM client (SCU) for one peer.

    ``async with DicomClient(host, port, calling_ae="ME", called_ae="PACS") as client:`` then
    ``await client.c_echo()``, ``await client.c_store(path)``, or ``await client.add_request(r)``
    and ``await client.send()``. Leaving the block releases the association.
    """

    def __init__(
        self,
        host: str,
        port: int,
        calling_ae: str = "DICOMNET",
        called_ae: str = "ANY-SCP",
        *,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        connect_timeout: float = 30.0,
        acse_timeout: float = 30.0,
        dimse_timeout: float | None = 60.0,
        user_identity: UserIdentityRQ | None = None,
        ssl: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.max_pdu_length = max_pdu_length
        self.connect_timeout = connect_timeout
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.user_identity = user_identity
        self.ssl = ssl
        self._contexts: list[ProposedContext] = []
        self._async_ops: tuple[int, int] | None = None
        self._queue: list[Request] = []
        self._assoc: Association | None = None
        self._pending: dict[int, Request] = {}
        self._message_ids = itertools.count(1)
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[asyncio.Future[c.Message]] = set()
        self.store_handler: StoreHandler | None = None
        self._store_tasks: set[asyncio.Task[None]] = set()
        self.temp_dir: str | os.PathLike[str] | None = None

    # -- configuration -----------------------------------------------------------------------------

    def add_presentation_context(
        self,
        abstract_syntax: str,
        transfer_syntaxes: Iterable[str] = UNCOMPRESSED,
        *,
        scu_role: bool | None = None,
        scp_role: bool | None = None,
    ) -> None:
        ctx = ProposedContext(abstract_syntax, list(transfer_syntaxes), scu_role, scp_role)
        if not any(_same(ctx, other) for other in self._contexts):
            self._contexts.append(ctx)

    def negotiate_async_ops(self, invoked: int = 0, performed: int = 1) -> None:
        """Propose an asynchronous operations window (PS3.7 D.3.3.3); 0 = unlimited."""
        self._async_ops = (invoked, performed)

    @property
    def negotiated(self) -> Negotiated | None:
        return self._assoc.negotiated if self._assoc is not None else None

    @property
    def is_associated(self) -> bool:
        return self._assoc is not None and not self._assoc.closed.done()

    # -- association ---------------------------------------------------------------------------------

    async def associate(self, contexts: Sequence[ProposedContext] | None = None) -> Negotiated:
        """Open the association with ``contexts`` (default: those added so far)."""
        wanted = _dedupe([*(contexts or ()), *self._contexts])
        if not wanted:
            wanted = [ProposedContext(VERIFICATION, list(UNCOMPRESSED))]
        rq = build_request(
            self.called_ae,
            self.calling_ae,
            wanted,
            max_pdu_length=self.max_pdu_length,
            async_ops=self._async_ops,
            user_identity=self.user_identity,
        )
        loop = asyncio.get_running_loop()
        info = AssociationInfo(next(_ids), self.host, self.port, self.calling_ae, self.called_ae)
        assoc = Association(
            Role.REQUESTOR,
            info,
            artim_timeout=self.acse_timeout,
            max_pdu_length=self.max_pdu_length,
        )
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: assoc, self.host, self.port, ssl=self.ssl),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise DicomTimeoutError(
                f"no TCP connection to {self.host}:{self.port} within {self.connect_timeout} s"
            ) from exc
        except OSError as exc:
            raise AssociationAborted(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        assoc.on_message = self._on_message
        assoc.sink_factory = self._make_sink
        assoc.on_release = lambda: assoc.send_release_response()
        assoc.on_end = self._on_end
        assoc.send_request(rq)
        try:
            answer = await asyncio.wait_for(assoc.wait_associate(), self.acse_timeout)
        except TimeoutError as exc:
            assoc.abort()
            raise DicomTimeoutError(
                f"no answer to A-ASSOCIATE-RQ from {self.host}:{self.port} within "
                f"{self.acse_timeout} s"
            ) from exc
        if isinstance(answer, A_ASSOCIATE_RJ):
            raise AssociationRejected(answer.result, answer.source, answer.reason)
        assert isinstance(answer, A_ASSOCIATE_AC)
        try:
            negotiated = read_accept(rq, answer)
        except NegotiationError:
            assoc.abort()
            raise
        assoc.set_negotiated(negotiated)
        self._assoc = assoc
        window = negotiated.max_operations_invoked
        self._slots = asyncio.Semaphore(window if window > 0 else 1 << 16)
        self._proposed = wanted
        log.debug("associated with %s: %d contexts accepted", info, len(negotiated.contexts))
        return negotiated

    async def release(self) -> None:
        """Wait for outstanding requests, then release the association."""
        assoc = self._assoc
        if assoc is None:
            return
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._assoc = None
        if not assoc.closed.done():
            await assoc.release(self.acse_timeout)

    async def abort(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.abort()
            await asyncio.wait([assoc.closed], timeout=5)

    async def __aenter__(self) -> DicomClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, DicomNetError):
            await self.abort()
        else:
            await self.release()

    # -- the request queue ------------------------------------------------------------------------

    async def add_request(self, request: Request) -> None:
        """Queue a request; ``send()`` sends the queue."""
        self._queue.append(request)

    async def send(self) -> None:
        """Send every queued request (associating with the contexts they need) and wait for all
        of their final responses. Failures are recorded on the requests, not raised."""
        queue, self._queue = self._queue, []
        if not queue:
            return
        await self._ensure_contexts([ctx for r in queue for ctx in r.contexts()])
        futures = [await self._start(r) for r in queue]
        await asyncio.gather(*futures, return_exceptions=True)

    async def _ensure_contexts(self, needed: Sequence[ProposedContext]) -> Negotiated:
        if self.is_associated:
            assert self._assoc is not None and self._assoc.negotiated is not None
            negotiated = self._assoc.negotiated
            have = getattr(self, "_proposed", [])
            if all(any(_covers(p, n) for p in have) for n in needed):
                return negotiated
            await self.release()
        return await self.associate(needed)

    async def _start(self, request: Request) -> asyncio.Future[c.Message]:
        """Send one request once a slot of the window is free; returns its final response's
        future."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[c.Message] = loop.create_future()
        request._done = done
        assert self._slots is not None
        await self._slots.acquire()
        self._inflight.add(done)
        slots = self._slots

        def finished(f: asyncio.Future[c.Message]) -> None:
            slots.release()
            self._inflight.discard(f)
            self._pending.pop(request.message_id, None)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                request.error = exc

        done.add_done_callback(finished)
        try:
            await self._send_request(request)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
                done.exception()
        return done

    async def _send_request(self, request: Request) -> None:
        assoc = self._assoc
        if assoc is None or assoc.negotiated is None or assoc.closed.done():
            raise AssociationAborted("not associated")
        request.message_id = next(self._message_ids) & 0xFFFF or next(self._message_ids)
        self._pending[request.message_id] = request
        negotiated = assoc.negotiated
        if isinstance(request, CEchoRequest):
            ctx = _need(negotiated, VERIFICATION)
            msg: c.Message = c.CEchoRQ(
                message_id=request.message_id, affected_sop_class_uid=VERIFICATION
            )
            await assoc.send_message(ctx.context_id, msg)
        elif isinstance(request, CStoreRequest):
            ctx, payload = self._store_payload(negotiated, request)
            msg = c.CStoreRQ(
                message_id=request.message_id,
                affected_sop_class_uid=request.sop_class_uid,
                affected_sop_instance_uid=request.sop_instance_uid,
                priority=request.priority,
                move_originator_aet=request.move_originator_ae_title,
                move_originator_message_id=request.move_originator_message_id,
            )
            await assoc.send_message(ctx.context_id, msg, payload)
        elif isinstance(request, _QueryRequest):
            ctx = _need(negotiated, request.model)
            request.context_id = ctx.context_id
            ident = encode_dataset(request.identifier or Dataset(), ctx.transfer_syntax)
            mid, model, prio = request.message_id, request.model, request.priority
            if isinstance(request, CFindRequest):
                msg = c.CFindRQ(message_id=mid, affected_sop_class_uid=model, priority=prio)
            elif isinstance(request, CMoveRequest):
                msg = c.CMoveRQ(
                    message_id=mid,
                    affected_sop_class_uid=model,
                    priority=prio,
                    move_destination=request.destination,
                )
            else:
                msg = c.CGetRQ(message_id=mid, affected_sop_class_uid=model, priority=prio)
            await assoc.send_message(ctx.context_id, msg, ident)
        else:
            raise TypeError(f"cannot send {type(request).__name__}")

    def _store_payload(
        self, negotiated: Negotiated, request: CStoreRequest
    ) -> tuple[NegotiatedContext, bytes | FileInfo]:
        exact = negotiated.find_context(request.sop_class_uid, request.transfer_syntax)
        if exact is not None:
            if request.file is not None:
                return exact, request.file
            assert request.dataset is not None
            return exact, encode_dataset(request.dataset, exact.transfer_syntax)
        other = negotiated.find_context(request.sop_class_uid)
        if other is None:
            raise NegotiationError(
                f"the peer accepted no presentation context for {request.sop_class_uid}"
            )
        if UID(request.transfer_syntax).is_compressed or UID(other.transfer_syntax).is_compressed:
            raise NegotiationError(
                f"the peer accepted {request.sop_class_uid} only with {other.transfer_syntax}, "
                f"and the data is {request.transfer_syntax}; dicomnet does not transcode pixel data"
            )
        ds = request.dataset
        if ds is None:
            assert request.file is not None
            from pydicom import dcmread

            ds = dcmread(request.file.path)
        return other, encode_dataset(ds, other.transfer_syntax)

    # -- receiving ------------------------------------------------------------------------------------

    def _make_sink(self, message: c.Message, ctx: NegotiatedContext) -> DatasetSink:
        if isinstance(message, c.CStoreRQ):
            meta = file_meta_bytes(
                message.affected_sop_class_uid,
                message.affected_sop_instance_uid,
                ctx.transfer_syntax,
            )
            return FileSink(self.temp_dir, meta)
        return MemorySink()

    def _on_end(self, aborted: Any) -> None:
        exc = AssociationAborted(
            getattr(aborted, "message", "the association ended"),
            getattr(aborted, "source", None),
            getattr(aborted, "reason", None),
        )
        for request in list(self._pending.values()):
            done = request._done
            if done is not None and not done.done():
                done.set_exception(exc)
                done.exception()
            if isinstance(request, _QueryRequest) and request.results is not None:
                request.results.put_nowait(exc)
        self._pending.clear()

    def _on_message(self, item: Incoming | IncomingInvalid) -> None:
        if isinstance(item, IncomingInvalid):
            log.warning("unusable message from the peer: %s", item.event.error)
            return
        message = item.message
        if isinstance(message, c.CStoreRQ):
            # A C-GET sub-operation (PS3.4 §C.4.3.1.2): stored by a task, answered when done.
            assoc = self._assoc
            if assoc is None:
                if isinstance(item.sink, FileSink):
                    item.sink.discard()
                return
            task = asyncio.get_running_loop().create_task(self._receive_store(assoc, item))
            self._store_tasks.add(task)
            task.add_done_callback(self._store_tasks.discard)
            return
        responded = getattr(message, "message_id_being_responded_to", None)
        request = self._pending.get(responded) if responded is not None else None
        if request is None:
            log.warning("response to unknown message ID %s ignored", responded)
            if isinstance(item.sink, FileSink):
                item.sink.discard()
            return
        dataset = None
        if isinstance(item.sink, MemorySink) and item.sink.value is not None:
            try:
                dataset = decode_dataset(item.sink.value, item.context.transfer_syntax)
            except Exception as exc:
                log.warning("cannot decode the response's data set: %s", exc)
        if request.on_response is not None:
            try:
                request.on_response(request, message)
            except Exception:
                log.exception("on_response callback failed")
        status = getattr(message, "status", 0)
        if category(status) is StatusCategory.PENDING:
            if isinstance(request, _QueryRequest) and request.results is not None:
                request.results.put_nowait((message, dataset))
            return
        request.response = message
        if isinstance(request, _QueryRequest) and request.results is not None:
            request.results.put_nowait((message, dataset))
        if request._done is not None and not request._done.done():
            request._done.set_result(message)

    async def _receive_store(self, assoc: Association, item: Incoming) -> None:
        """Hand a received C-STORE-RQ's file to ``store_handler`` and answer with its status
        (a handler returning None means success)."""
        message = item.message
        assert isinstance(message, c.CStoreRQ)
        sink = item.sink
        status: int = Status.SUCCESS
        comment: str | None = None
        try:
            if item.error is not None or not isinstance(sink, FileSink):
                status = 0xA700
                comment = f"data set not received: {item.error}"
            elif self.store_handler is None:
                status = 0xA700
                comment = "no C-STORE handler (not in a C-GET)"
            else:
                request = ReceivedCStore(
                    assoc.info,
                    item.context,
                    message,
                    path=sink.path,
                    size=sink.size,
                    prefix=sink.prefix,
                )
                result = await self.store_handler(request)
                if isinstance(result, Response):
                    status, comment = int(result.status), result.error_comment
                elif result is not None:
                    status = int(result)
        except Exception as exc:
            log.exception("storing a received instance failed")
            status, comment = 0xC000, f"{type(exc).__name__}: {exc}"
        finally:
            if isinstance(sink, FileSink):
                sink.discard()  # gone already when the handler saved it
        rsp = c.CStoreRSP(
            message_id_being_responded_to=message.message_id,
            affected_sop_class_uid=message.affected_sop_class_uid,
            affected_sop_instance_uid=message.affected_sop_instance_uid,
            status=status,
            error_comment=comment[:64] if comment else None,
            has_dataset=False,
        )
        try:
            await assoc.send_message(item.context.context_id, rsp)
        except DicomNetError as exc:
            log.warning("cannot answer C-STORE-RQ: %s", exc)

    # -- direct forms ---------------------------------------------------------------------------------

    async def _one(self, request: Request) -> c.Message:
        await self._ensure_contexts(request.contexts())
        done = await self._start(request)
        if not done.done():
            # Wait for the response without cancelling ``done`` on a timeout (its slot of the
            # window stays taken until the peer answers); cheaper than wait_for(shield(...)).
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            done.add_done_callback(wake)
            timeout = self.dimse_timeout
            timer = None if timeout is None else loop.call_later(timeout, wake)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                done.remove_done_callback(wake)
            if not done.done():
                raise DicomTimeoutError(
                    f"no response to message {request.message_id} within {self.dimse_timeout} s"
                )
        return done.result()

    async def c_echo(self) -> int:
        """Send a C-ECHO-RQ; returns the response status."""
        rsp = await self._one(CEchoRequest())
        return int(getattr(rsp, "status", 0xFFFF))

    async def c_store(self, source: str | os.PathLike[str] | Dataset, **kwargs: Any) -> int:
        """Store a file (streamed) or a ``Dataset``; returns the response status."""
        if isinstance(source, Dataset):
            request = CStoreRequest.from_dataset(source, **kwargs)
        else:
            request = CStoreRequest.from_file(source, **kwargs)
        rsp = await self._one(request)
        return int(getattr(rsp, "status", 0xFFFF))

    # -- query/retrieve ---------------------------------------------------------------------------

    async def _start_query(self, request: _QueryRequest) -> None:
        """Associate if needed and send a C-FIND/C-MOVE/C-GET request; its responses go to
        ``request.results``."""
        request.results = asyncio.Queue()
        if isinstance(request, CGetRequest):
            self.store_handler = request.store
            if request.temp_dir is not None:
                self.temp_dir = request.temp_dir
        await self._ensure_contexts(request.contexts())
        done = await self._start(request)
        if done.done() and done.exception() is not None:
            raise done.exception()  # type: ignore[misc]

    async def _send_cancel(self, request: _QueryRequest) -> None:
        assoc = self._assoc
        if assoc is None or assoc.closed.done():
            return
        await assoc.send_message(
            request.context_id,
            c.CCancelRQ(message_id_being_responded_to=request.message_id),
        )

    def c_find(
        self,
        query: QueryInput = None,
        model: str = "study",
        *,
        level: str | None = None,
        priority: int = 0,
    ) -> QueryRetrieveResponses[Dataset]:
        """C-FIND (PS3.4 §C.4.1): ``async for match in client.c_find({"PatientName": "SMITH*",
        "StudyDate": "20240101-"}, level="STUDY")`` yields each match's identifier.

        ``query`` is a ``Dataset`` or a mapping of keyword/"gggg,eeee" to value (None or ""
        asks for the attribute back); ``model`` is "patient", "study", "patient-study" or a SOP
        class UID; ``level`` sets the Query/Retrieve Level (default: the query's, else STUDY).
        A failure status raises ``CFindError``."""
        request = CFindRequest(
            identifier=build_query(query, level),
            model=resolve_model(model, "find"),
            priority=priority,
        )
        return QueryRetrieveResponses(self, request, _find_match)

    def c_move(
        self,
        query: QueryInput = None,
        destination: str = "",
        model: str = "study",
        *,
        level: str | None = None,
        priority: int = 0,
    ) -> QueryRetrieveResponses[RetrieveProgress]:
        """C-MOVE (PS3.4 §C.4.2): asks the peer to send the matching instances to the AE
        ``destination`` (which the peer must know); yields a ``RetrieveProgress`` per response,
        the last one ``final``. A failure status raises ``CMoveError`` (with the progress); a
        warning (some sub-operations failed) is the final progress, not an error."""
        if not destination:
            raise ValueError("C-MOVE needs a destination AE title")
        request = CMoveRequest(
            identifier=build_query(query, level),
            model=resolve_model(model, "move"),
            priority=priority,
            destination=destination,
        )
        return QueryRetrieveResponses(self, request, _progress(CMoveError))

    def c_get(
        self,
        query: QueryInput = None,
        store: StoreHandler | None = None,
        storage_contexts: Sequence[ProposedContext] | None = None,
        model: str = "study",
        *,
        level: str | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        priority: int = 0,
    ) -> QueryRetrieveResponses[RetrieveProgress]:
        """C-GET (PS3.4 §C.4.3): the peer sends the matching instances back as C-STORE-RQs on
        this association. Each goes to ``store`` (an async callable taking the received
        ``CStoreRequest`` and returning a status, a ``Response`` or None for success), or is
        saved as ``out_dir/<SOP Instance UID>.dcm``. ``storage_contexts`` default to
        ``get_storage_contexts()``; role selection gives us the SCP role on them. Instances
        stream into temporary files in ``temp_dir`` (default: the client's ``temp_dir``, else
        the system's; on the file system of ``out_dir`` saving is a rename). Yields a
        ``RetrieveProgress`` per response; a failure status raises ``CGetError``."""
        if (store is None) == (out_dir is None):
            raise ValueError("C-GET needs exactly one of store= and out_dir=")
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            store = save_into(out_dir)
        contexts = [
            ctx
            if ctx.scp_role
            else ProposedContext(ctx.abstract_syntax, list(ctx.transfer_syntaxes), False, True)
            for ctx in (get_storage_contexts() if storage_contexts is None else storage_contexts)
        ]
        request = CGetRequest(
            identifier=build_query(query, level),
            model=resolve_model(model, "get"),
            priority=priority,
            storage_contexts=contexts,
            store=store,
            temp_dir=temp_dir,
        )
        return QueryRetrieveResponses(self, request, _progress(CGetError))


def _same(a: ProposedContext, b: ProposedContext) -> bool:
    return (
        a.abstract_syntax == b.abstract_syntax
        and list(a.transfer_syntaxes) == list(b.transfer_syntaxes)
        and a.scu_role == b.scu_role
        and a.scp_role == b.scp_role
    )


def _covers(have: ProposedContext, need: ProposedContext) -> bool:
    return (
        have.abstract_syntax == need.abstract_syntax
        and need.transfer_syntaxes[:1] == have.transfer_syntaxes[:1]
        and (need.scp_role is None or have.scp_role == need.scp_role)
    )


def _dedupe(contexts: Iterable[ProposedContext]) -> list[ProposedContext]:
    out: list[ProposedContext] = []
    for ctx in contexts:
        if not any(_same(ctx, o) for o in out):
            out.append(ctx)
    return out


def _need(negotiated: Negotiated, abstract_syntax: str) -> NegotiatedContext:
    ctx = negotiated.find_context(abstract_syntax)
    if ctx is None:
        raise NegotiationError(f"the peer accepted no presentation context for {abstract_syntax}")
    return ctx


__all__ = [
    "QR_LEVELS",
    "QR_MODELS",
    "CEchoRequest",
    "CFindError",
    "CFindRequest",
    "CGetError",
    "CGetRequest",
    "CMoveError",
    "CMoveRequest",
    "CStoreRequest",
    "DicomClient",
    "Path",
    "QueryRetrieveError",
    "QueryRetrieveResponses",
    "Request",
    "RetrieveProgress",
    "build_query",
    "get_storage_contexts",
    "parse_keys",
    "parse_tag",
    "resolve_model",
    "save_into",
]
