"""The SCU's request types (fo-dicom's ``DicomRequest`` family): C-ECHO, C-STORE, C-FIND,
C-MOVE and C-GET requests, the six DIMSE-N requests (PS3.7 §10.1) with ``NResult``, their answer,
the presentation contexts each needs, and the DIMSE command and data set each becomes on the
association the peer accepted.

Rules: a request proposes its contexts before the association exists and builds its command
after, with the message ID the client gave it; it never sends anything (``DicomClient`` does).
A file's data set is sent as a ``FileInfo`` and streamed by the association, never read whole,
unless the peer accepted the SOP class only in another uncompressed transfer syntax and the data
set has to be re-encoded. dicomnet does not transcode pixel data.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.dataset import FileInfo, encode_dataset, read_file_info
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory, category
from dicomnet.errors import NegotiationError
from dicomnet.negotiation import Negotiated, NegotiatedContext, ProposedContext, storage_context
from dicomnet.query import parse_tag
from dicomnet.service import ReceivedCStore, Response
from dicomnet.uids import (
    GET_IMAGE_CLASSES,
    GET_OTHER_CLASSES,
    IMAGE_SYNTAXES,
    UNCOMPRESSED,
    VERIFICATION,
    is_valid_uid,
)

#: What a request sends: the accepted context, the command, and the data set (None: no data set).
Outgoing = tuple[NegotiatedContext, c.Message, bytes | FileInfo | None]

ResponseCallback = Callable[["Request", c.ResponseMessage], None]


def accepted_context(negotiated: Negotiated, abstract_syntax: str) -> NegotiatedContext:
    """The context the peer accepted for ``abstract_syntax``; NegotiationError without one."""
    ctx = negotiated.find_context(abstract_syntax)
    if ctx is None:
        raise NegotiationError(f"the peer accepted no presentation context for {abstract_syntax}")
    return ctx


@dataclass(eq=False)
class Request:
    """A queued DIMSE request. ``on_response(request, response)`` is called for every response
    (pending ones included); ``response`` holds the final one."""

    on_response: ResponseCallback | None = None
    message_id: int = 0
    response: c.ResponseMessage | None = None
    error: BaseException | None = None
    _done: asyncio.Future[c.ResponseMessage] | None = field(default=None, repr=False)

    def contexts(self) -> list[ProposedContext]:
        """The presentation contexts to propose for this request."""
        raise NotImplementedError

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        """The command (with ``message_id``) and data set to send, and the context to send
        them on; NegotiationError when the peer accepted no usable context."""
        raise NotImplementedError

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status


@dataclass(eq=False)
class CEchoRequest(Request):
    """A C-ECHO-RQ (PS3.7 §9.1.5)."""

    def contexts(self) -> list[ProposedContext]:
        return [ProposedContext(VERIFICATION, list(UNCOMPRESSED))]

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        ctx = accepted_context(negotiated, VERIFICATION)
        msg = c.CEchoRQ(message_id=self.message_id, affected_sop_class_uid=VERIFICATION)
        return ctx, msg, None


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
        on_response: ResponseCallback | None = None,
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
        on_response: ResponseCallback | None = None,
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
        # Uncompressed data can be re-encoded if the peer prefers another syntax: a file only
        # from the three uncompressed syntaxes, a Dataset from any unencapsulated one.
        reencodable = self.transfer_syntax in UNCOMPRESSED or (
            self.dataset is not None and not UID(self.transfer_syntax).is_compressed
        )
        return [storage_context(self.sop_class_uid, self.transfer_syntax, reencodable=reencodable)]

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        ctx, payload = self._payload(negotiated)
        msg = c.CStoreRQ(
            message_id=self.message_id,
            affected_sop_class_uid=self.sop_class_uid,
            affected_sop_instance_uid=self.sop_instance_uid,
            priority=self.priority,
            move_originator_aet=self.move_originator_ae_title,
            move_originator_message_id=self.move_originator_message_id,
        )
        return ctx, msg, payload

    def _payload(self, negotiated: Negotiated) -> tuple[NegotiatedContext, bytes | FileInfo]:
        """The context for the data set and the data set in its transfer syntax: the file as
        it is when its own syntax was accepted, else re-encoded (uncompressed only)."""
        exact = negotiated.find_context(self.sop_class_uid, self.transfer_syntax)
        if exact is not None:
            if self.file is not None:
                return exact, self.file
            assert self.dataset is not None
            return exact, encode_dataset(self.dataset, exact.transfer_syntax)
        other = negotiated.find_context(self.sop_class_uid)
        if other is None:
            raise NegotiationError(
                f"the peer accepted no presentation context for {self.sop_class_uid}"
            )
        if UID(self.transfer_syntax).is_compressed or UID(other.transfer_syntax).is_compressed:
            raise NegotiationError(
                f"the peer accepted {self.sop_class_uid} only with {other.transfer_syntax}, "
                f"and the data is {self.transfer_syntax}; dicomnet does not transcode pixel data"
            )
        ds = self.dataset
        if ds is None:
            assert self.file is not None
            from pydicom import dcmread

            ds = dcmread(self.file.path)
        return other, encode_dataset(ds, other.transfer_syntax)


@dataclass(eq=False)
class QueryRequest(Request):
    """C-FIND/C-MOVE/C-GET: every response (pending and final) goes to ``results``; an
    exception put there means the association ended before the final response.
    ``context_id`` is the context the request went on (a C-CANCEL-RQ goes on it too)."""

    identifier: Dataset | None = None
    model: str = ""
    priority: int = 0
    context_id: int = 0
    results: asyncio.Queue[tuple[c.ResponseMessage, Dataset | None] | BaseException] | None = None

    def contexts(self) -> list[ProposedContext]:
        return [ProposedContext(self.model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        ctx = accepted_context(negotiated, self.model)
        self.context_id = ctx.context_id
        ident = encode_dataset(self.identifier or Dataset(), ctx.transfer_syntax)
        return ctx, self._command(), ident

    def _command(self) -> c.Message:
        raise NotImplementedError


@dataclass(eq=False)
class CFindRequest(QueryRequest):
    """A C-FIND-RQ (PS3.7 §9.1.2); matches arrive as pending responses."""

    def _command(self) -> c.Message:
        return c.CFindRQ(
            message_id=self.message_id, affected_sop_class_uid=self.model, priority=self.priority
        )


@dataclass(eq=False)
class CMoveRequest(QueryRequest):
    """A C-MOVE-RQ (PS3.7 §9.1.4); the instances go to the AE ``destination``."""

    destination: str = ""

    def _command(self) -> c.Message:
        return c.CMoveRQ(
            message_id=self.message_id,
            affected_sop_class_uid=self.model,
            priority=self.priority,
            move_destination=self.destination,
        )


StoreHandler = Callable[[ReceivedCStore], Awaitable["int | Response | None"]]


@dataclass(eq=False)
class CGetRequest(QueryRequest):
    """A C-GET-RQ (PS3.7 §9.1.3); the instances arrive as C-STORE-RQs on this association,
    on the ``storage_contexts`` (proposed with the SCP role for us, PS3.7 §D.3.3.4), stream
    into temporary files in ``temp_dir`` (None: the client's) and are handed to ``store``."""

    storage_contexts: Sequence[ProposedContext] = ()
    store: StoreHandler | None = None
    temp_dir: str | os.PathLike[str] | None = None

    def contexts(self) -> list[ProposedContext]:
        return [*super().contexts(), *self.storage_contexts]

    def _command(self) -> c.Message:
        return c.CGetRQ(
            message_id=self.message_id, affected_sop_class_uid=self.model, priority=self.priority
        )


# -- DIMSE-N (PS3.7 §10.1) -------------------------------------------------------------------------

#: How a caller names an attribute of an N-GET's Attribute Identifier List: a tag (an int, e.g.
#: 0x00100010) or a keyword / "gggg,eeee" string.
AttributeKey = int | str

#: Transfer syntaxes proposed for the N-services' (small) data sets, as for the Q/R identifiers.
N_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True, slots=True)
class NResult:
    """The answer to an N-service request (PS3.7 §10.1): the status, the response's data set
    decoded (N-GET's attribute list, N-ACTION's action reply, N-CREATE's or N-SET's attribute
    list, N-EVENT-REPORT's event reply; None without one), the affected SOP class and instance
    (for N-CREATE, the instance the SCP assigned when the request named none), and the status
    fields of PS3.7 Annex C. A failure status is a result, not an exception."""

    status: int
    dataset: Dataset | None
    affected_sop_class_uid: str | None
    affected_sop_instance_uid: str | None
    error_comment: str | None = None
    error_id: int | None = None
    offending_elements: tuple[int, ...] = ()
    #: (0000,1005): the attributes a status names, e.g. 0x0107 Attribute list error.
    attribute_identifier_list: tuple[int, ...] = ()
    #: Event Type ID / Action Type ID echoed by an N-EVENT-REPORT-RSP / N-ACTION-RSP.
    type_id: int | None = None
    message: c.ResponseMessage | None = field(default=None, compare=False, repr=False)

    @property
    def category(self) -> StatusCategory:
        return category(self.status)

    @property
    def ok(self) -> bool:
        """Success or warning (PS3.7 C.1): the operation was performed."""
        return self.category in (StatusCategory.SUCCESS, StatusCategory.WARNING)


@dataclass(eq=False)
class NServiceRequest(Request):
    """A DIMSE-N request on the SOP instance ``sop_instance_uid`` of ``sop_class_uid``, with
    its data set (``dataset``: modification list, action or event information, attribute
    list). The presentation context proposed is ``abstract_syntax`` (a Meta SOP Class, PS3.4
    H) or the SOP class, with the uncompressed syntaxes and the role selection given by
    ``scu_role``/``scp_role`` (None: no SCP/SCU Role Selection item, PS3.7 §D.3.3.4).
    ``response_dataset`` and ``result`` hold the answer once it came."""

    #: The operation's name in messages, e.g. "N-GET".
    OPERATION: ClassVar[str] = ""
    #: Whether the instance UID may be left out (N-CREATE: the SCP may assign it).
    INSTANCE_OPTIONAL: ClassVar[bool] = False
    #: Whether the request must carry a data set (N-SET's Modification List).
    DATASET_REQUIRED: ClassVar[bool] = False
    #: Whether the sender acts as the SCP of the SOP class (N-EVENT-REPORT: the SCP notifies).
    SENDER_IS_SCP: ClassVar[bool] = False

    sop_class_uid: str = ""
    sop_instance_uid: str | None = None
    dataset: Dataset | None = None
    abstract_syntax: str | None = None
    transfer_syntaxes: Sequence[str] = N_SYNTAXES
    scu_role: bool | None = None
    scp_role: bool | None = None
    response_dataset: Dataset | None = None

    def __post_init__(self) -> None:
        if not self.sop_class_uid:
            raise ValueError(f"{self.OPERATION} needs a SOP Class UID")
        if not self.sop_instance_uid and not self.INSTANCE_OPTIONAL:
            raise ValueError(f"{self.OPERATION} needs a SOP Instance UID")
        if self.dataset is None and self.DATASET_REQUIRED:
            raise ValueError(f"{self.OPERATION} needs a data set (PS3.7 §10.1)")

    def contexts(self) -> list[ProposedContext]:
        syntax = self.abstract_syntax or self.sop_class_uid
        return [ProposedContext(syntax, list(self.transfer_syntaxes), self.scu_role, self.scp_role)]

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        syntax = self.abstract_syntax or self.sop_class_uid
        # Prefer a context where the peer granted the role this operation is sent in; a peer
        # that ignored the role selection item still gets the request (it may serve it).
        ctx = negotiated.find_context(
            syntax, scp=self.SENDER_IS_SCP, scu=not self.SENDER_IS_SCP
        ) or accepted_context(negotiated, syntax)
        data = None if self.dataset is None else encode_dataset(self.dataset, ctx.transfer_syntax)
        return ctx, self._command(data is not None), data

    def _command(self, has_dataset: bool) -> c.Message:
        raise NotImplementedError

    @property
    def result(self) -> NResult | None:
        """The answer, once the final response came."""
        rsp = self.response
        if rsp is None:
            return None
        if not isinstance(rsp, N_RESPONSES):
            # A peer that answered with another message type: only its status is usable.
            return NResult(int(rsp.status), None, self.sop_class_uid, self.sop_instance_uid)
        type_id = None
        if isinstance(rsp, c.NEventReportRSP):
            type_id = rsp.event_type_id
        elif isinstance(rsp, c.NActionRSP):
            type_id = rsp.action_type_id
        return NResult(
            status=int(rsp.status),
            dataset=self.response_dataset,
            affected_sop_class_uid=rsp.affected_sop_class_uid or self.sop_class_uid,
            # N-CREATE: the instance the SCP assigned (PS3.7 §10.1.5.1.2), else the one asked.
            affected_sop_instance_uid=rsp.affected_sop_instance_uid or self.sop_instance_uid,
            error_comment=rsp.error_comment,
            error_id=rsp.error_id,
            offending_elements=tuple(rsp.offending_elements or ()),
            attribute_identifier_list=tuple(rsp.attribute_identifier_list or ()),
            type_id=type_id,
            message=rsp,
        )


#: The six N-service response classes.
N_RESPONSES = (
    c.NEventReportRSP,
    c.NGetRSP,
    c.NSetRSP,
    c.NActionRSP,
    c.NCreateRSP,
    c.NDeleteRSP,
)


def attribute_tags(attributes: Iterable[AttributeKey]) -> list[int]:
    """An Attribute Identifier List (PS3.7 §10.1.2.1.3) from tags and keywords / "gggg,eeee";
    ValueError for a name that is neither."""
    tags: list[int] = []
    for key in attributes:
        tags.append(int(parse_tag(key)) if isinstance(key, str) else int(key))
    for tag in tags:
        if not 0 <= tag <= 0xFFFFFFFF:
            raise ValueError(f"attribute tag {tag:#x} is not a 32-bit tag")
    return tags


@dataclass(eq=False)
class NGetRequest(NServiceRequest):
    """An N-GET-RQ (PS3.7 §10.1.2): the attributes ``attributes`` (all when empty) of a SOP
    instance."""

    OPERATION = "N-GET"
    attributes: Sequence[AttributeKey] = ()
    attribute_identifier_list: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.attribute_identifier_list = attribute_tags(self.attributes)

    def _command(self, has_dataset: bool) -> c.Message:
        assert self.sop_instance_uid is not None
        return c.NGetRQ(
            message_id=self.message_id,
            requested_sop_class_uid=self.sop_class_uid,
            requested_sop_instance_uid=self.sop_instance_uid,
            # Omitted, not empty, when every attribute is wanted (PS3.7 §10.1.2.1.3).
            attribute_identifier_list=self.attribute_identifier_list or None,
            has_dataset=has_dataset,
        )


@dataclass(eq=False)
class NSetRequest(NServiceRequest):
    """An N-SET-RQ (PS3.7 §10.1.3): ``dataset`` is the Modification List."""

    OPERATION = "N-SET"
    DATASET_REQUIRED = True

    def _command(self, has_dataset: bool) -> c.Message:
        assert self.sop_instance_uid is not None
        return c.NSetRQ(
            message_id=self.message_id,
            requested_sop_class_uid=self.sop_class_uid,
            requested_sop_instance_uid=self.sop_instance_uid,
            has_dataset=has_dataset,
        )


def _type_id(name: str, value: int) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} {value} is not a US value (0..65535)")
    return value


@dataclass(eq=False)
class NActionRequest(NServiceRequest):
    """An N-ACTION-RQ (PS3.7 §10.1.4): action ``action_type_id``, ``dataset`` the Action
    Information (optional)."""

    OPERATION = "N-ACTION"
    action_type_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _type_id("Action Type ID", self.action_type_id)

    def _command(self, has_dataset: bool) -> c.Message:
        assert self.sop_instance_uid is not None
        return c.NActionRQ(
            message_id=self.message_id,
            requested_sop_class_uid=self.sop_class_uid,
            requested_sop_instance_uid=self.sop_instance_uid,
            action_type_id=self.action_type_id,
            has_dataset=has_dataset,
        )


@dataclass(eq=False)
class NCreateRequest(NServiceRequest):
    """An N-CREATE-RQ (PS3.7 §10.1.5): ``dataset`` the Attribute List (optional); without
    ``sop_instance_uid`` the SCP assigns one and returns it (``NResult.affected_sop_instance_uid``)."""

    OPERATION = "N-CREATE"
    INSTANCE_OPTIONAL = True

    def _command(self, has_dataset: bool) -> c.Message:
        return c.NCreateRQ(
            message_id=self.message_id,
            affected_sop_class_uid=self.sop_class_uid,
            affected_sop_instance_uid=self.sop_instance_uid or None,
            has_dataset=has_dataset,
        )


@dataclass(eq=False)
class NDeleteRequest(NServiceRequest):
    """An N-DELETE-RQ (PS3.7 §10.1.6): no data set."""

    OPERATION = "N-DELETE"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset is not None:
            raise ValueError("N-DELETE carries no data set (PS3.7 §10.1.6)")

    def _command(self, has_dataset: bool) -> c.Message:
        assert self.sop_instance_uid is not None
        return c.NDeleteRQ(
            message_id=self.message_id,
            requested_sop_class_uid=self.sop_class_uid,
            requested_sop_instance_uid=self.sop_instance_uid,
        )


@dataclass(eq=False)
class NEventReportRequest(NServiceRequest):
    """An N-EVENT-REPORT-RQ (PS3.7 §10.1.1): event ``event_type_id`` on a SOP instance,
    ``dataset`` the Event Information (optional). Only the SCP of a SOP class reports events,
    so the context is proposed by default with the SCP role for us and not the SCU role (an
    association requestor needs role selection to act as SCP, PS3.7 §D.3.3.4 Note 1; e.g. a
    storage commitment report on a new association, PS3.4 J.3.3.1.3)."""

    OPERATION = "N-EVENT-REPORT"
    SENDER_IS_SCP = True
    scu_role: bool | None = False
    scp_role: bool | None = True
    event_type_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _type_id("Event Type ID", self.event_type_id)

    def _command(self, has_dataset: bool) -> c.Message:
        assert self.sop_instance_uid is not None
        return c.NEventReportRQ(
            message_id=self.message_id,
            affected_sop_class_uid=self.sop_class_uid,
            affected_sop_instance_uid=self.sop_instance_uid,
            event_type_id=self.event_type_id,
            has_dataset=has_dataset,
        )


#: What a storage commitment request names: a (SOP Class UID, SOP Instance UID) pair, a data
#: set, or a Part 10 file (only its File Meta Information is read).
CommitmentReference = tuple[str, str] | Dataset | str | os.PathLike[str]


def commitment_references(items: Iterable[CommitmentReference]) -> list[tuple[str, str]]:
    """The (SOP Class UID, SOP Instance UID) pairs of a storage commitment request (PS3.4
    Table J.3-1); ValueError for one that is not a pair of UIDs."""
    refs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, Dataset):
            pair = (str(item.get("SOPClassUID", "")), str(item.get("SOPInstanceUID", "")))
        elif isinstance(item, tuple):
            pair = (str(item[0]), str(item[1]))
        else:
            info = read_file_info(item)
            pair = (info.sop_class_uid, info.sop_instance_uid)
        if not (is_valid_uid(pair[0]) and is_valid_uid(pair[1])):
            raise ValueError(f"not a (SOP Class UID, SOP Instance UID) pair of UIDs: {pair!r}")
        refs.append(pair)
    return refs


@dataclass(eq=False)
class CommitmentRequest(NActionRequest):
    """Request Storage Commitment (PS3.4 J.3.2.1): an N-ACTION of type 1 whose Action
    Information holds ``transaction_uid`` and ``references`` ((SOP Class UID, SOP Instance
    UID) pairs), encoded without a pydicom ``Dataset`` per reference in the little endian
    syntaxes (``archive.commitment.encode_request``: 10,000 references take 0.1 s, not 2)."""

    transaction_uid: str = ""
    references: Sequence[tuple[str, str]] = ()

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        from dicomnet.archive.commitment import encode_request, request_dataset

        syntax = self.abstract_syntax or self.sop_class_uid
        ctx = negotiated.find_context(syntax, scu=True) or accepted_context(negotiated, syntax)
        data = encode_request(self.transaction_uid, self.references, ctx.transfer_syntax)
        if data is None:
            ds = request_dataset(self.transaction_uid, self.references)
            data = encode_dataset(ds, ctx.transfer_syntax)
        return ctx, self._command(True), data


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
            return Response(
                Status.UNABLE_TO_PROCESS, error_comment=f"unsafe SOP Instance UID {uid[:30]!r}"
            )
        await request.save(root / f"{uid}.dcm")
        return Status.SUCCESS

    return store


__all__ = [
    "N_SYNTAXES",
    "AttributeKey",
    "CEchoRequest",
    "CFindRequest",
    "CGetRequest",
    "CMoveRequest",
    "CStoreRequest",
    "CommitmentReference",
    "CommitmentRequest",
    "NActionRequest",
    "NCreateRequest",
    "NDeleteRequest",
    "NEventReportRequest",
    "NGetRequest",
    "NResult",
    "NServiceRequest",
    "NSetRequest",
    "QueryRequest",
    "Request",
    "StoreHandler",
    "accepted_context",
    "attribute_tags",
    "commitment_references",
    "get_storage_contexts",
    "save_into",
]
