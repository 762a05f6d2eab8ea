"""The handler API: a ``Service`` class whose methods answer an association's requests, in the
shape of fo-dicom's provider interfaces (``IDicomServiceProvider``, ``IDicomCStoreProvider``, ...).

Rules: one ``Service`` instance per association, created by the server from the class (or any
callable taking an ``AssociationInfo``). A service that lacks ``on_c_find`` does not offer C-FIND:
the default ``on_association_request`` accepts exactly the SOP classes the class has handlers
for. Handlers are ``async`` and return a status (an ``int``/``Status``) or a ``Response``.

Names: what a handler receives is a ``Received...`` (``ReceivedCStore``, ``ReceivedCFind``, ...);
``dicomnet.CStoreRequest`` and its siblings are what a client sends. The handler signatures are
``typing.Protocol``s (``CStoreProvider``, ``CFindProvider``, ...): a service that names them as
bases (``class StoreSCP(Service, CStoreProvider)``) has its handlers checked by mypy, and cannot
be created without them.

This module sits in the asyncio layer (``dicomnet.dispatch`` calls the handlers); the concrete
services (storage, query/retrieve) live in ``dicomnet.services``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import warnings
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydicom import Dataset, dcmread
from pydicom.datadict import tag_for_keyword

from dicomnet.dataset import decode_dataset, scan_attributes
from dicomnet.dimse.commands import (
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    Message,
    NActionRQ,
    NEventReportRQ,
    NGetRQ,
    RequestMessage,
)
from dicomnet.dimse.status import Status
from dicomnet.negotiation import (
    AssociationDecision,
    AssociationRequest,
    NegotiatedContext,
)
from dicomnet.uids import VERIFICATION, all_transfer_syntaxes, is_storage

if TYPE_CHECKING:
    from dicomnet.security.tls import PeerCertificate, TLSSession

log = logging.getLogger("dicomnet.service")


@dataclass(slots=True)
class AssociationInfo:
    """Who is on the other end of an association (for handlers and log records)."""

    id: int
    peer_host: str
    peer_port: int
    calling_ae_title: str = ""
    called_ae_title: str = ""
    #: The peer's verified TLS certificate (None on a plain connection, or when the server
    #: does not verify client certificates), for handlers and permission rules.
    peer_certificate: PeerCertificate | None = None
    #: The TLS version and cipher of the connection (None on a plain connection).
    tls: TLSSession | None = None
    #: The user the peer authenticated as (PS3.7 D.3.3.7); None without a verified identity.
    username: str | None = None

    def __str__(self) -> str:
        return (
            f"#{self.id} {self.calling_ae_title or '?'}->{self.called_ae_title or '?'} "
            f"{self.peer_host}:{self.peer_port}"
        )


@dataclass(slots=True)
class Response:
    """A handler's answer when a bare status is not enough (PS3.7 §9.1.*: error comment,
    offending elements, a data set for N-services and C-FIND matches)."""

    status: int
    error_comment: str | None = None
    error_id: int | None = None
    offending_elements: list[int] | None = None
    dataset: Dataset | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: What a handler answers: a status, or a ``Response`` with more of the response's fields.
HandlerResult = int | Response


@dataclass(eq=False)
class DimseRequest:
    """A received DIMSE request: the message, its presentation context, and who sent it."""

    association: AssociationInfo
    context: NegotiatedContext
    message: Message

    @property
    def message_id(self) -> int:
        message = self.message
        assert isinstance(message, RequestMessage)
        return message.message_id

    @property
    def transfer_syntax(self) -> str:
        return self.context.transfer_syntax


@dataclass(eq=False)
class ReceivedCEcho(DimseRequest):
    """A received C-ECHO-RQ (PS3.7 §9.1.5)."""


@dataclass(eq=False)
class ReceivedCStore(DimseRequest):
    """A received C-STORE-RQ whose data set has streamed into a temporary Part 10 file.

    ``dataset`` parses that file lazily and stops before the pixel data; ``save(path)`` moves the
    file into place with a rename (a copy only across file systems). If the handler does not save
    it, the temporary file is removed after the handler returns.
    """

    path: Path = Path()
    size: int = 0
    prefix: bytes = b""
    _saved: Path | None = None

    @property
    def sop_class_uid(self) -> str:
        return self._rq.affected_sop_class_uid

    @property
    def sop_instance_uid(self) -> str:
        return self._rq.affected_sop_instance_uid

    @property
    def move_originator_ae_title(self) -> str | None:
        return self._rq.move_originator_aet

    @property
    def _rq(self) -> CStoreRQ:
        message = self.message
        assert isinstance(message, CStoreRQ)
        return message

    @cached_property
    def dataset(self) -> Dataset:
        """The data set, read from the temporary file up to (not including) the pixel data."""
        return dcmread(self.path, stop_before_pixels=True)

    def attributes(self, *keywords: str) -> dict[str, str]:
        """Text values of top-level attributes (e.g. ``"StudyInstanceUID"``), read from the
        first bytes received when possible, else from ``dataset``; missing ones are ""."""
        tags = {keyword: tag_for_keyword(keyword) for keyword in keywords}
        wanted = {t for t in tags.values() if t is not None}
        found = scan_attributes(self.prefix, self.transfer_syntax, wanted) if wanted else None
        if found is not None:
            return {k: found.get(t, "") if t is not None else "" for k, t in tags.items()}
        ds = self.dataset
        return {k: str(ds.get(k, "") or "") for k in keywords}

    @property
    def saved_to(self) -> Path | None:
        return self._saved

    async def save(self, destination: str | os.PathLike[str], *, fsync_dir: bool = False) -> Path:
        """Move the received file to ``destination`` atomically (creating folders), replacing
        what is there. Runs in a thread when a copy is needed."""
        dest = Path(destination)
        try:
            # A rename in the same file system is one quick metadata operation: no thread.
            if dest.parent not in _known_dirs:
                dest.parent.mkdir(parents=True, exist_ok=True)
                _known_dirs.add(dest.parent)
            os.replace(self.path, dest)
            if fsync_dir:
                await asyncio.to_thread(_fsync_dir, dest.parent)
        except FileNotFoundError:
            _known_dirs.discard(dest.parent)
            await asyncio.to_thread(_move_into_place, self.path, dest, fsync_dir)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            await asyncio.to_thread(_move_into_place, self.path, dest, fsync_dir)
        self._saved = dest
        return dest


def _move_into_place(src: Path, dest: Path, fsync_dir: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # another file system: copy, then rename there
            raise
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        src.unlink()
    if fsync_dir:
        _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Folders known to exist (bounded: cleared when large), so a store does not stat its parents.
class _DirCache(set[Path]):
    def add(self, item: Path) -> None:
        if len(self) > 10000:
            self.clear()
        super().add(item)


_known_dirs = _DirCache()


@dataclass(eq=False)
class DatasetRequest(DimseRequest):
    """A request that carries a (small) data set in memory: C-FIND/C-MOVE/C-GET identifiers and
    N-service attribute lists. ``dataset`` decodes it with the context's transfer syntax."""

    raw: bytes | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @cached_property
    def dataset(self) -> Dataset | None:
        if self.raw is None:
            return None
        return decode_dataset(self.raw, self.context.transfer_syntax)


class ReceivedQueryRetrieve(DatasetRequest):
    """A received C-FIND/C-MOVE/C-GET-RQ; ``cancelled`` is set when a C-CANCEL-RQ for it
    arrives (PS3.7 §9.3.2.3)."""

    @property
    def sop_class_uid(self) -> str:
        """The Query/Retrieve SOP class (the information model) of the request."""
        message = self.message
        assert isinstance(message, CFindRQ | CMoveRQ | CGetRQ)
        return message.affected_sop_class_uid


class ReceivedCFind(ReceivedQueryRetrieve):
    """A received C-FIND-RQ (PS3.4 §C.4.1)."""


class ReceivedCMove(ReceivedQueryRetrieve):
    """A received C-MOVE-RQ (PS3.4 §C.4.2)."""

    @property
    def move_destination(self) -> str:
        """The AE title the instances go to (PS3.7 §9.3.4.1), without padding."""
        message = self.message
        assert isinstance(message, CMoveRQ)
        return message.move_destination.strip()


SubOperationSender = Callable[[str | os.PathLike[str]], Awaitable[int]]


@dataclass(eq=False)
class ReceivedCGet(ReceivedQueryRetrieve):
    """A received C-GET-RQ. ``store(path)`` sends one stored instance back to the requestor as a
    C-STORE sub-operation on this association (PS3.4 §C.4.3.1.2) and returns the peer's status."""

    sender: SubOperationSender | None = None

    async def store(self, path: str | os.PathLike[str]) -> int:
        """Send the Part 10 file ``path`` to the peer (which must have accepted the SCP role for
        its SOP class) and wait for its C-STORE-RSP; returns the response status, or a failure
        status when no presentation context fits."""
        if self.sender is None:
            raise RuntimeError("this C-GET request is not attached to an association")
        return await self.sender(path)


@dataclass(eq=False)
class ReceivedN(DatasetRequest):
    """A received N-EVENT-REPORT/N-GET/N-SET/N-ACTION/N-CREATE/N-DELETE-RQ (PS3.7 §10.1).

    ``dataset`` is its data set (Event/Action Information, Modification or Attribute List),
    None without one. ``sop_class_uid`` and ``sop_instance_uid`` are the affected or requested
    ones, whichever the message carries (N-CREATE may name no instance: the SCP assigns one and
    answers it as ``Response(extra={"affected_sop_instance_uid": uid})``). ``responded`` is set
    once the response has been sent (or could not be): what must follow the response, such as
    a storage commitment report after its N-ACTION-RSP (PS3.4 J.3.3), waits for it.
    """

    responded: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sop_class_uid(self) -> str:
        message = self.message
        return str(
            getattr(message, "affected_sop_class_uid", None)
            or getattr(message, "requested_sop_class_uid", None)
            or ""
        )

    @property
    def sop_instance_uid(self) -> str | None:
        message = self.message
        return (
            getattr(message, "affected_sop_instance_uid", None)
            or getattr(message, "requested_sop_instance_uid", None)
            or None
        )

    @property
    def event_type_id(self) -> int | None:
        """N-EVENT-REPORT's Event Type ID (PS3.7 §10.1.1.1.5)."""
        message = self.message
        return message.event_type_id if isinstance(message, NEventReportRQ) else None

    @property
    def action_type_id(self) -> int | None:
        """N-ACTION's Action Type ID (PS3.7 §10.1.4.1.4)."""
        message = self.message
        return message.action_type_id if isinstance(message, NActionRQ) else None

    @property
    def attribute_identifier_list(self) -> list[int]:
        """N-GET's Attribute Identifier List (PS3.7 §10.1.2.1.3); empty: every attribute."""
        message = self.message
        if isinstance(message, NGetRQ):
            return list(message.attribute_identifier_list or [])
        return []


class PeerLink(Protocol):
    """What a service may do with its association's peer: send it requests as the SCP of a
    notification (``dicomnet.peer.PeerRequests`` is the implementation; a Protocol here keeps
    the handler API below the asyncio layer, PS3.7 §10.1.1)."""

    @property
    def is_open(self) -> bool:
        """Established and not being released or aborted."""
        ...

    async def send(self, request: Any) -> Any:
        """Send an N request (``dicomnet.requests.NServiceRequest``) and wait for its
        ``NResult``."""
        ...

    async def n_event_report(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type_id: int,
        information: Dataset | None = None,
    ) -> Any:
        """N-EVENT-REPORT of ``event_type_id``; returns the ``NResult``."""
        ...


class Service:
    """Base class of a service: override the handlers you offer.

    ``on_association_request`` by default accepts Verification when ``on_c_echo`` is defined,
    every storage SOP class when ``on_c_store`` is defined (with the first proposed transfer
    syntax pydicom knows), and the abstract syntaxes listed in ``abstract_syntaxes``.
    """

    #: Extra abstract syntaxes accepted by the default ``on_association_request``.
    abstract_syntaxes: Sequence[str] = ()
    #: Where C-STORE data sets stream to; put it on the same file system as the archive so
    #: ``ReceivedCStore.save`` is a rename. None = the system's temporary folder.
    temp_dir: str | os.PathLike[str] | None = None
    #: fsync each received file before the handler sees it (and so before success is sent).
    fsync: bool = False
    #: How many operations this service performs at once (asynchronous operations window,
    #: PS3.7 D.3.3.3). The server puts it into the ``AssociationRequest`` before
    #: ``on_association_request`` runs, so it holds whatever that handler does, unless the
    #: handler sets ``request.max_operations_performed`` itself.
    max_operations_performed: int = 1
    #: Requests this side sends to the peer on the association (``peer.n_event_report(...)``:
    #: the SCP's notifications, PS3.7 §10.1.1), set by the server once the association is
    #: accepted; ``peer.is_open`` says whether it still is.
    peer: PeerLink | None = None

    def __init__(self, association: AssociationInfo) -> None:
        self.association = association
        self.log = logging.LoggerAdapter(log, {"association": str(association)})

    async def on_association_request(self, request: AssociationRequest) -> AssociationDecision:
        echo = hasattr(self, "on_c_echo")
        store = hasattr(self, "on_c_store")
        get = hasattr(self, "on_c_get")
        known = set(all_transfer_syntaxes())
        extra = set(self.abstract_syntaxes)
        for pc in request.presentation_contexts:
            wanted = (
                (echo and pc.abstract_syntax == VERIFICATION)
                or (store and is_storage(pc.abstract_syntax))
                # C-GET sends instances back on storage contexts where the requestor takes
                # the SCP role (PS3.4 §C.4.3.1.2, role selection PS3.7 §D.3.3.4).
                or (get and bool(pc.proposed_scp_role) and is_storage(pc.abstract_syntax))
                or pc.abstract_syntax in extra
            )
            if wanted:
                pc.accept([ts for ts in pc.transfer_syntaxes if ts in known])
        return request.accept()

    async def on_association_release(self) -> None:
        """The peer released the association normally."""

    async def on_abort(self, source: int | None, reason: int | None) -> None:
        """The association was aborted (by the peer, or by us because of a protocol error)."""

    async def on_connection_closed(self, exc: BaseException | None) -> None:
        """The transport closed; called last, whatever happened before."""

    async def on_c_store_exception(self, path: Path | None, exc: BaseException) -> None:
        """A C-STORE failed before or inside the handler (the temporary file is removed
        after this returns)."""
        self.log.warning("C-STORE failed: %s", exc)


# --- handler signatures --------------------------------------------------------------------
# The dispatcher finds handlers by name (a service without ``on_c_find`` does not offer C-FIND);
# these protocols say what each one must look like. Name them as bases of a service to have mypy
# check its handlers (fo-dicom's ``IDicomCStoreProvider`` and siblings, checked by the compiler).


class CEchoProvider(Protocol):
    """Offers C-ECHO. A plain ``def`` is answered in the receive callback, with no task
    switch per echo."""

    @abstractmethod
    def on_c_echo(self, request: ReceivedCEcho) -> HandlerResult | Awaitable[HandlerResult]: ...


class CStoreProvider(Protocol):
    """Offers C-STORE: called once the data set is complete in a temporary file."""

    @abstractmethod
    def on_c_store(self, request: ReceivedCStore) -> HandlerResult | Awaitable[HandlerResult]: ...


class CFindProvider(Protocol):
    """Offers C-FIND: yields one match (a data set, or a pending ``Response``) per result, and
    may end with a final ``Response`` (success otherwise)."""

    @abstractmethod
    def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset | Response]: ...


class CMoveProvider(Protocol):
    """Offers C-MOVE: yields a pending ``Response`` per sub-operation, then the final one."""

    @abstractmethod
    def on_c_move(self, request: ReceivedCMove) -> AsyncIterator[Response]: ...


class CGetProvider(Protocol):
    """Offers C-GET: sends with ``request.store(path)``; yields like C-MOVE."""

    @abstractmethod
    def on_c_get(self, request: ReceivedCGet) -> AsyncIterator[Response]: ...


# The DIMSE-N handlers (PS3.7 §10.1). Each answers a status, or a ``Response`` with the reply
# data set (N-GET's Attribute List, N-ACTION's Action Reply, N-EVENT-REPORT's Event Reply, the
# Attribute List an N-CREATE/N-SET may return) and the status fields of PS3.7 Annex C:
# ``error_comment`` (LO, cut to 64 characters), ``error_id``, ``offending_elements``, and in
# ``extra`` the ``attribute_identifier_list`` of 0x0105/0x0107 or the
# ``affected_sop_instance_uid`` an N-CREATE assigned. The response echoes the request's SOP
# class and instance (and Event/Action Type ID with a reply data set) by itself. A service
# without the handler answers 0x0211 Unrecognized operation; a handler that raises, 0x0110
# Processing failure. The statuses each operation may answer (PS3.7 §10.1.x.1.x, Annex C):
#
# - every one: 0x0110 processing failure, 0x0112 no such SOP instance, 0x0117 invalid SOP
#   instance, 0x0118 no such SOP class, 0x0119 class-instance conflict, 0x0124 not authorized
#   (not N-EVENT-REPORT), 0x0210 duplicate invocation, 0x0211 unrecognized operation, 0x0212
#   mistyped argument, 0x0213 resource limitation;
# - N-EVENT-REPORT: also 0x0113 no such event type, 0x0114 no such argument, 0x0115 invalid
#   argument value (the Event Information);
# - N-GET: warning 0x0107 attribute list error (an unknown tag in the identifier list);
# - N-SET and N-CREATE: also 0x0105 no such attribute, 0x0106 invalid attribute value, 0x0121
#   missing attribute value, warnings 0x0107 and 0x0116 attribute value out of range;
#   N-CREATE: 0x0111 duplicate SOP instance, 0x0120 missing attribute;
# - N-ACTION: also 0x0114 no such argument, 0x0115 invalid argument value (the Action
#   Information), 0x0123 no such action.


class NEventReportProvider(Protocol):
    """Receives N-EVENT-REPORT: the SCP of a SOP class notifies an event (``event_type_id``,
    Event Information in ``dataset``); unknown event 0x0113, bad information 0x0115."""

    @abstractmethod
    def on_n_event_report(self, request: ReceivedN) -> HandlerResult | Awaitable[HandlerResult]: ...


class NGetProvider(Protocol):
    """Offers N-GET: answer the ``attribute_identifier_list`` attributes (all when empty) of
    ``sop_instance_uid`` as the ``Response``'s data set; unknown instance 0x0112."""

    @abstractmethod
    def on_n_get(self, request: ReceivedN) -> HandlerResult | Awaitable[HandlerResult]: ...


class NSetProvider(Protocol):
    """Offers N-SET: apply the Modification List ``dataset`` to ``sop_instance_uid``; unknown
    instance 0x0112, an attribute that may not be set 0x0105, a bad value 0x0106."""

    @abstractmethod
    def on_n_set(self, request: ReceivedN) -> HandlerResult | Awaitable[HandlerResult]: ...


class NActionProvider(Protocol):
    """Offers N-ACTION: perform ``action_type_id`` with the Action Information ``dataset``;
    unknown action 0x0123, bad information 0x0115. What must follow the response (an event
    report) waits for ``request.responded``."""

    @abstractmethod
    def on_n_action(self, request: ReceivedN) -> HandlerResult | Awaitable[HandlerResult]: ...


class NCreateProvider(Protocol):
    """Offers N-CREATE: create ``sop_instance_uid`` (or one the handler assigns and returns in
    ``extra["affected_sop_instance_uid"]``) with the Attribute List ``dataset``; existing
    instance 0x0111, missing attribute 0x0120, bad value 0x0106."""

    @abstractmethod
    def on_n_create(self, request: ReceivedN) -> HandlerResult | Awaitable[HandlerResult]: ...


class NDeleteProvider(Protocol):
    """Offers N-DELETE of ``sop_instance_uid``; unknown instance 0x0112."""

    @abstractmethod
    def on_n_delete(self, request: ReceivedN) -> HandlerResult | Awaitable[HandlerResult]: ...


# --- the names of dicomnet 0.1 ---------------------------------------------------------------
# They clashed with the client's request types (dicomnet.CStoreRequest is what a client sends);
# importable for one more release, with a DeprecationWarning.
_RENAMED: dict[str, str] = {
    "CEchoRequest": "ReceivedCEcho",
    "CStoreRequest": "ReceivedCStore",
    "CFindRequest": "ReceivedCFind",
    "CMoveRequest": "ReceivedCMove",
    "CGetRequest": "ReceivedCGet",
    "NRequest": "ReceivedN",
}

if TYPE_CHECKING:
    CEchoRequest = ReceivedCEcho
    CStoreRequest = ReceivedCStore
    CFindRequest = ReceivedCFind
    CMoveRequest = ReceivedCMove
    CGetRequest = ReceivedCGet
    NRequest = ReceivedN
else:

    def __getattr__(name: str) -> Any:
        new = _RENAMED.get(name)
        if new is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        warnings.warn(
            f"dicomnet.service.{name} is renamed {new} (dicomnet.{name}, if any, is the "
            f"client's request type); the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]


__all__ = [
    "AssociationInfo",
    "CEchoProvider",
    "CFindProvider",
    "CGetProvider",
    "CMoveProvider",
    "CStoreProvider",
    "DatasetRequest",
    "DimseRequest",
    "HandlerResult",
    "NActionProvider",
    "NCreateProvider",
    "NDeleteProvider",
    "NEventReportProvider",
    "NGetProvider",
    "NSetProvider",
    "ReceivedCEcho",
    "ReceivedCFind",
    "ReceivedCGet",
    "ReceivedCMove",
    "ReceivedCStore",
    "ReceivedN",
    "ReceivedQueryRetrieve",
    "Response",
    "Service",
    "Status",
    "SubOperationSender",
]
