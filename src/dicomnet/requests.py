"""The SCU's request types (fo-dicom's ``DicomRequest`` family): C-ECHO, C-STORE, C-FIND,
C-MOVE and C-GET requests, the six DIMSE-N requests (PS3.7 §10.1) with ``NResult``, their answer,
the presentation contexts each needs, and the DIMSE command and data set each becomes on the
association the peer accepted.

Rules: a request proposes its contexts before the association exists and builds its command
after, with the message ID the client gave it; it never sends anything (``DicomClient`` does).
A file's data set is sent as a ``FileInfo`` and streamed by the association, never read whole.
A C-STORE chooses among all the contexts the peer accepted for its SOP class
(``pixels.choose_context``); when the file must be re-encoded or transcoded, ``prepare`` writes
the converted file to a temporary file off the event loop (``pixels.transcode_file_async``),
which is streamed in its place and removed once the request is over (``cleanup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.dataset import FileInfo, encode_dataset, read_file_info, scan_attributes
from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory, category
from dicomnet.errors import NegotiationError
from dicomnet.negotiation import Negotiated, NegotiatedContext, ProposedContext
from dicomnet.pixels import (
    Action,
    ContextChoice,
    Target,
    TranscodePolicy,
    TranscodePool,
    TranscodeResult,
    choose_context,
    dataset_mislabelled,
    probe_file,
    proposed_contexts,
    transcode_file_async,
)
from dicomnet.pixels.policy import DEFAULT_POLICY
from dicomnet.pixels.transcode import prefix_mislabelled
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

log = logging.getLogger("dicomnet.client")

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

    def cleanup(self) -> None:
        """Release what the request holds once it is over (a C-STORE's temporary file)."""


@dataclass(eq=False)
class CEchoRequest(Request):
    """A C-ECHO-RQ (PS3.7 §9.1.5)."""

    def contexts(self) -> list[ProposedContext]:
        return [ProposedContext(VERIFICATION, list(UNCOMPRESSED))]

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        ctx = accepted_context(negotiated, VERIFICATION)
        msg = c.CEchoRQ(message_id=self.message_id, affected_sop_class_uid=VERIFICATION)
        return ctx, msg, None


_SOP_UID_TAGS = {0x00080016, 0x00080018}
#: How far into the data set the SOP Common UIDs are looked for (they come early: group 0008).
_UID_PREFIX = 16384


@dataclass(frozen=True, slots=True)
class InstanceNames:
    """What a sender reads from the start of a file's data set: the SOP Class and Instance UIDs
    its C-STORE names (``instance_uids``), and whether the data set is visibly not in the VR
    encoding its transfer syntax says (``pixels.dataset_mislabelled``)."""

    sop_class_uid: str
    sop_instance_uid: str
    mislabelled: bool


def instance_uids(info: FileInfo, *, warn: bool = True) -> tuple[str, str]:
    """The SOP Class and Instance UIDs of ``instance_names``."""
    names = instance_names(info, warn=warn)
    return names.sop_class_uid, names.sop_instance_uid


def instance_names(info: FileInfo, *, warn: bool = True) -> InstanceNames:
    """The SOP Class and Instance UIDs a C-STORE of the file names: the data set's own (0008,0016)
    and (0008,0018) when they can be read from its first bytes, else the File Meta
    Information's. PS3.4 B.2.2 has the C-STORE name the instance it stores; files whose meta
    information disagrees with their data set exist (DCMTK's senders use the data set's too,
    and its storescp refuses a command that does not match the data set: 0xA900)."""
    try:
        fd = os.open(info.path, os.O_RDONLY)
        try:
            prefix = os.pread(fd, _UID_PREFIX, info.offset)
        finally:
            os.close(fd)
    except OSError:
        return InstanceNames(info.sop_class_uid, info.sop_instance_uid, False)
    mislabelled = prefix_mislabelled(prefix, info.transfer_syntax)
    found = None if mislabelled else scan_attributes(prefix, info.transfer_syntax, _SOP_UID_TAGS)
    if found is None:
        found = _read_uids(info)
    sop_class = found.get(0x00080016) or info.sop_class_uid
    sop_instance = found.get(0x00080018) or info.sop_instance_uid
    if warn and (sop_class, sop_instance) != (info.sop_class_uid, info.sop_instance_uid):
        log.warning(
            "%s: the File Meta Information names %s / %s, the data set %s / %s: the C-STORE "
            "names the data set's",
            info.path,
            info.sop_class_uid,
            info.sop_instance_uid,
            sop_class,
            sop_instance,
        )
    return InstanceNames(sop_class, sop_instance, mislabelled)


def _read_uids(info: FileInfo) -> dict[int, str]:
    """The SOP Common UIDs through pydicom, for what ``scan_attributes`` does not read (big
    endian, deflated, a value past the prefix); empty when pydicom cannot read them either."""
    import warnings

    from pydicom import dcmread

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(
                info.path,
                stop_before_pixels=True,
                specific_tags=["SOPClassUID", "SOPInstanceUID"],
            )
    except Exception:  # pydicom raises many kinds for malformed data
        return {}
    return {
        0x00080016: str(ds.get("SOPClassUID", "") or ""),
        0x00080018: str(ds.get("SOPInstanceUID", "") or ""),
    }


@dataclass(eq=False)
class CStoreRequest(Request):
    """A C-STORE-RQ from a Part 10 file (streamed) or a pydicom ``Dataset`` (encoded in memory).

    ``policy`` says what may be done to get the data set through (None: the client's
    ``transcode_policy``): which syntaxes to propose and prefer, whether to decompress, and
    lossy compression only when asked. After ``prepare``, ``choice`` is the context chosen and
    what it took, and ``transcoded`` what the conversion wrote (None when sent as it is)."""

    file: FileInfo | None = None
    dataset: Dataset | None = None
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax: str = ExplicitVRLittleEndian
    priority: int = 0
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None
    policy: TranscodePolicy | None = None
    #: Whether the file's data set is not in the VR encoding its syntax says (None: look).
    mislabelled: bool | None = None
    choice: ContextChoice | None = field(default=None, init=False)
    transcoded: TranscodeResult | None = field(default=None, init=False)
    _prepared: tuple[NegotiatedContext, bytes | FileInfo] | None = field(
        default=None, init=False, repr=False
    )
    _temporary: list[Path] = field(default_factory=list, init=False, repr=False)
    # The (SOP class, SOP instance) of the converted data set, when it was converted.
    _names: tuple[str, str] | None = field(default=None, init=False, repr=False)
    # What ``prepare`` chose for, and the converted file (kept for another association that
    # accepts the same syntax: a conversion is not done twice).
    _negotiated: Negotiated | None = field(default=None, init=False, repr=False)
    _converted: FileInfo | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        on_response: ResponseCallback | None = None,
        **kwargs: Any,
    ) -> CStoreRequest:
        return cls.from_info(read_file_info(path), on_response, **kwargs)

    @classmethod
    def from_info(
        cls,
        info: FileInfo,
        on_response: ResponseCallback | None = None,
        **kwargs: Any,
    ) -> CStoreRequest:
        """A request for a Part 10 file whose meta information was read (``read_file_info``);
        the command names the SOP class and instance of ``instance_uids``."""
        names = instance_names(info)
        return cls(
            on_response=on_response,
            file=info,
            sop_class_uid=names.sop_class_uid,
            sop_instance_uid=names.sop_instance_uid,
            transfer_syntax=info.transfer_syntax,
            mislabelled=names.mislabelled,
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

    @property
    def effective_policy(self) -> TranscodePolicy:
        return self.policy or DEFAULT_POLICY

    @property
    def prepared(self) -> bool:
        return self._prepared is not None

    def prepared_for(self, negotiated: Negotiated) -> bool:
        """Whether ``prepare`` ran for this association (its context IDs)."""
        return self._prepared is not None and self._negotiated is negotiated

    def may_convert(self, negotiated: Negotiated) -> bool:
        """Whether ``prepare`` may have to convert the data set (cheap: no file is read)."""
        if self.effective_policy.targets:
            return True
        return negotiated.find_context(self.sop_class_uid, self.transfer_syntax) is None

    def contexts(self) -> list[ProposedContext]:
        # The file's own syntax alone, a native fallback, the requested targets first.
        return proposed_contexts(self.sop_class_uid, self.transfer_syntax, self.effective_policy)

    def _accepted(self, negotiated: Negotiated) -> dict[int, str]:
        # The contexts we may send a C-STORE-RQ on: as the requestor by default, as the
        # acceptor where the peer took the SCP role (a C-GET, PS3.7 D.3.3.4).
        accepted = {
            ctx.context_id: ctx.transfer_syntax
            for ctx in negotiated.contexts.values()
            if ctx.abstract_syntax == self.sop_class_uid and ctx.scu_role
        }
        if not accepted:
            raise NegotiationError(
                f"the peer accepted no presentation context for {self.sop_class_uid}"
            )
        return accepted

    def _choose(
        self, negotiated: Negotiated, has_pixels: bool = True, lossy: bool = False
    ) -> ContextChoice:
        if not self.effective_policy.targets:
            # The common case, without the candidates: the file's own syntax was accepted.
            for ctx in negotiated.contexts.values():
                if (
                    ctx.transfer_syntax == self.transfer_syntax
                    and ctx.abstract_syntax == self.sop_class_uid
                    and ctx.scu_role
                ):
                    return ContextChoice(
                        ctx.context_id, ctx.transfer_syntax, Action.SEND, _own(ctx.transfer_syntax)
                    )
        return choose_context(
            self.transfer_syntax,
            self._accepted(negotiated),
            self.effective_policy,
            source_lossy=lossy,
            has_pixels=has_pixels,
        )

    async def prepare(
        self,
        negotiated: Negotiated,
        *,
        pool: TranscodePool | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Choose the accepted context to send on and, when the data set must be converted for
        it, convert it into a temporary file in ``temp_dir`` (None: the system's), in ``pool``
        (None: the shared one). Raises ``NegotiationError`` when no accepted context fits,
        ``TranscodeError`` when the conversion fails; the source is never altered."""
        self._prepared = None
        self._negotiated = negotiated
        policy = self.effective_policy
        has_pixels, lossy = True, False
        if policy.targets and self.file is not None:
            # Compressing is asked for: it applies only to pixels, lossy ones only when asked
            # twice; read the data set up to its Pixel Data to know.
            probe = await asyncio.to_thread(probe_file, self.file.path, temp_dir)
            has_pixels, lossy = probe.has_pixels, probe.lossy
        elif policy.targets and self.dataset is not None:
            has_pixels = any(k in self.dataset for k in _PIXEL_KEYWORDS)
            lossy = str(self.dataset.get("LossyImageCompression", "")) == "01"
        choice = self._choose(negotiated, has_pixels, lossy)
        ctx = negotiated.contexts[choice.context_id]
        if (
            self._converted is not None
            and self.choice is not None
            and self.choice.target == choice.target
        ):
            # Converted for an earlier association (that ended while we converted: a peer's
            # idle timeout) into what this one accepts too.
            self.choice = choice
            self._prepared = (ctx, self._converted)
            return
        self.cleanup()
        self._names = None
        self.transcoded = None
        self.choice = choice
        file = self.file
        if choice.action is Action.SEND and file is not None:
            if self.mislabelled is None:
                self.mislabelled = dataset_mislabelled(file.path, file.offset, file.transfer_syntax)
            if not self.mislabelled:
                self._prepared = (ctx, file)
                return
        if self.dataset is not None and choice.action in (Action.SEND, Action.REENCODE):
            data = await asyncio.to_thread(encode_dataset, self.dataset, ctx.transfer_syntax)
            self._prepared = (ctx, data)
            return
        try:
            source = await self._source_file(temp_dir)
            target = self._temporary_path(temp_dir, "send")
            self.transcoded = await transcode_file_async(
                source,
                target,
                choice.target,
                pool=pool,
                allow_lossy=policy.allow_lossy,
                allow_lossy_to_lossy=policy.allow_lossy_to_lossy,
                temp_dir=temp_dir,
            )
            info = await asyncio.to_thread(read_file_info, target)
            # The converted data set names the instance (a lossy copy is a new one, PS3.3
            # C.7.6.1.1.5); its meta information agrees with it.
            self._names = instance_uids(info, warn=False)
        except BaseException:
            self.cleanup()
            raise
        log.debug(
            "%s: %s %s -> %s in %.3f s",
            source,
            choice.action,
            self.transfer_syntax,
            choice.transfer_syntax,
            self.transcoded.seconds,
        )
        self._converted = info
        self._prepared = (ctx, info)

    async def _source_file(self, temp_dir: str | os.PathLike[str] | None) -> Path:
        """The Part 10 file to convert: the request's, or its data set written to one."""
        if self.file is not None:
            return self.file.path
        assert self.dataset is not None
        path = self._temporary_path(temp_dir, "dataset")
        ds = self.dataset

        def write() -> None:
            from pydicom.dataset import FileMetaDataset
            from pydicom.uid import UID

            copy = Dataset(ds)
            copy.file_meta = FileMetaDataset(getattr(ds, "file_meta", FileMetaDataset()))
            copy.file_meta.TransferSyntaxUID = UID(self.transfer_syntax)
            copy.file_meta.MediaStorageSOPClassUID = UID(self.sop_class_uid)
            copy.file_meta.MediaStorageSOPInstanceUID = UID(self.sop_instance_uid)
            copy.save_as(path, enforce_file_format=True)

        await asyncio.to_thread(write)
        return path

    def _temporary_path(self, temp_dir: str | os.PathLike[str] | None, what: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".dicomnet-{what}-", suffix=".dcm", dir=temp_dir)
        os.close(fd)
        path = Path(name)
        self._temporary.append(path)
        return path

    def cleanup(self) -> None:
        """Remove the converted temporary files (the association has an open handle on the one
        it streams, so an early answer does not cut the sending short)."""
        self._converted = None
        while self._temporary:
            with contextlib.suppress(OSError):
                self._temporary.pop().unlink()

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        ctx, payload = self._payload(negotiated)
        sop_class, sop_instance = self._names or (self.sop_class_uid, self.sop_instance_uid)
        msg = c.CStoreRQ(
            message_id=self.message_id,
            affected_sop_class_uid=sop_class,
            affected_sop_instance_uid=sop_instance,
            priority=self.priority,
            move_originator_aet=self.move_originator_ae_title,
            move_originator_message_id=self.move_originator_message_id,
        )
        return ctx, msg, payload

    def _payload(self, negotiated: Negotiated) -> tuple[NegotiatedContext, bytes | FileInfo]:
        """The prepared context and data set; without ``prepare``, the file as it is or the
        data set re-encoded in memory, when that is what the choice needs."""
        if self._prepared is not None:
            return self._prepared
        choice = self._choose(negotiated)
        ctx = negotiated.contexts[choice.context_id]
        if choice.action is Action.SEND and self.file is not None:
            return ctx, self.file
        if self.dataset is not None and choice.action in (Action.SEND, Action.REENCODE):
            return ctx, encode_dataset(self.dataset, ctx.transfer_syntax)
        raise NegotiationError(
            f"the data set must be converted ({choice.action} from {self.transfer_syntax} to "
            f"{choice.transfer_syntax}) first: await request.prepare(negotiated) (DicomClient "
            "does)"
        )


@functools.lru_cache(maxsize=64)
def _own(transfer_syntax: str) -> Target:
    return Target(transfer_syntax)


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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
    "InstanceNames",
    "instance_names",
    "instance_uids",
    "save_into",
]
