"""The SCU's request types (fo-dicom's ``DicomRequest`` family): C-ECHO, C-STORE, C-FIND,
C-MOVE and C-GET requests, the presentation contexts each needs, and the DIMSE command and data
set each becomes on the association the peer accepted.

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
from typing import Any

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.dataset import FileInfo, encode_dataset, read_file_info
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status
from dicomnet.errors import NegotiationError
from dicomnet.negotiation import Negotiated, NegotiatedContext, ProposedContext, storage_context
from dicomnet.service import CStoreRequest as ReceivedCStore
from dicomnet.service import Response
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
    "CEchoRequest",
    "CFindRequest",
    "CGetRequest",
    "CMoveRequest",
    "CStoreRequest",
    "QueryRequest",
    "Request",
    "StoreHandler",
    "accepted_context",
    "get_storage_contexts",
    "save_into",
]
