"""DIMSE command sets (PS3.7 §6.3, §9.3, §10.3, Annex E): the group 0000 codec and one dataclass
per message.

Rules: command sets are always Implicit VR Little Endian with (0000,0000) CommandGroupLength first
and elements in ascending tag order. Decoding never trusts a length: an element running past the
end, or an element outside group 0000, raises ``DIMSEError``; unknown group 0000 elements are kept
as raw bytes. A message missing an element its table marks mandatory raises ``DIMSEError`` naming
the element, carrying the elements read and the message ID so a server can answer it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar, cast

from dicomnet.errors import DIMSEError


class CommandField(IntEnum):
    """(0000,0100) values (PS3.7 Annex E)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_GET_RQ = 0x0110
    N_GET_RSP = 0x8110
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140
    N_DELETE_RQ = 0x0150
    N_DELETE_RSP = 0x8150
    C_CANCEL_RQ = 0x0FFF


class Priority(IntEnum):
    """(0000,0700) values."""

    LOW = 0x0002
    MEDIUM = 0x0000
    HIGH = 0x0001


NO_DATASET = 0x0101
DATASET_PRESENT = 0x0001  # PS3.7 E.1-1: any value other than 0x0101 means a data set follows

# tag -> (keyword, VR) for the command elements of PS3.7 Table E.1-1.
COMMAND_ELEMENTS: dict[int, tuple[str, str]] = {
    0x00000000: ("CommandGroupLength", "UL"),
    0x00000002: ("AffectedSOPClassUID", "UI"),
    0x00000003: ("RequestedSOPClassUID", "UI"),
    0x00000100: ("CommandField", "US"),
    0x00000110: ("MessageID", "US"),
    0x00000120: ("MessageIDBeingRespondedTo", "US"),
    0x00000600: ("MoveDestination", "AE"),
    0x00000700: ("Priority", "US"),
    0x00000800: ("CommandDataSetType", "US"),
    0x00000900: ("Status", "US"),
    0x00000901: ("OffendingElement", "AT"),
    0x00000902: ("ErrorComment", "LO"),
    0x00000903: ("ErrorID", "US"),
    0x00001000: ("AffectedSOPInstanceUID", "UI"),
    0x00001001: ("RequestedSOPInstanceUID", "UI"),
    0x00001002: ("EventTypeID", "US"),
    0x00001005: ("AttributeIdentifierList", "AT"),
    0x00001008: ("ActionTypeID", "US"),
    0x00001020: ("NumberOfRemainingSuboperations", "US"),
    0x00001021: ("NumberOfCompletedSuboperations", "US"),
    0x00001022: ("NumberOfFailedSuboperations", "US"),
    0x00001023: ("NumberOfWarningSuboperations", "US"),
    0x00001030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x00001031: ("MoveOriginatorMessageID", "US"),
}

_ELEM = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")

Value = int | str | list[int] | bytes


def _encode_value(vr: str, value: Value) -> bytes:
    if vr == "US":
        return _US.pack(int(value))  # type: ignore[arg-type]
    if vr == "UL":
        return _UL.pack(int(value))  # type: ignore[arg-type]
    if vr == "AT":
        assert isinstance(value, list)
        return b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in value)
    if isinstance(value, bytes):
        return value
    raw = str(value).encode("ascii", "replace")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "
    return raw


def encode_command_set(elements: dict[int, Value]) -> bytes:
    """Encode group 0000 elements (without the group length, which is computed) in Implicit VR
    Little Endian, ascending tag order, with (0000,0000) first."""
    parts: list[bytes] = []
    for tag in sorted(elements):
        if tag == 0x00000000:
            continue
        if tag >> 16 != 0:
            raise DIMSEError(
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not a command element"
            )
        keyword, vr = COMMAND_ELEMENTS.get(tag, ("", "UN"))
        try:
            value = _encode_value(vr, elements[tag])
        except (struct.error, TypeError, ValueError, AssertionError) as exc:
            raise DIMSEError(
                f"(0000,{tag & 0xFFFF:04X}) {keyword}: {elements[tag]!r} cannot be encoded as "
                f"{vr} ({exc})"
            ) from exc
        parts.append(_ELEM.pack(0, tag & 0xFFFF, len(value)) + value)
    body = b"".join(parts)
    return _ELEM.pack(0, 0, 4) + _UL.pack(len(body)) + body


def _decode_value(vr: str, raw: bytes | memoryview, tag: int, offset: int) -> Value:
    if vr == "US":
        if len(raw) != 2:
            raise DIMSEError(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) US of length {len(raw)}, 2 expected (offset {offset})"
            )
        return int(_US.unpack(raw)[0])
    if vr == "UL":
        if len(raw) != 4:
            raise DIMSEError(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) UL of length {len(raw)}, 4 expected (offset {offset})"
            )
        return int(_UL.unpack(raw)[0])
    if vr == "AT":
        if len(raw) % 4:
            raise DIMSEError(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) AT of length {len(raw)}, a multiple of 4 expected"
            )
        return [(g << 16) | e for g, e in struct.iter_unpack("<HH", raw)]
    if vr == "UN":
        return bytes(raw)
    return bytes(raw).decode("ascii", "replace").rstrip("\x00 ").lstrip(" ")


def decode_command_set(data: bytes | memoryview) -> dict[int, Value]:
    """Decode a command set into {tag: value}. Raises DIMSEError on malformed bytes."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    out: dict[int, Value] = {}
    while pos < end:
        if end - pos < 8:
            raise DIMSEError(f"command set: {end - pos} stray bytes at offset {pos}")
        group, elem, length = _ELEM.unpack_from(view, pos)
        if group != 0:
            raise DIMSEError(
                f"command set: element ({group:04X},{elem:04X}) at offset {pos} is not in group 0000"
            )
        if length > end - pos - 8:
            raise DIMSEError(
                f"command set: element (0000,{elem:04X}) length {length} runs past the end "
                f"({end - pos - 8} bytes left, offset {pos})"
            )
        raw = view[pos + 8 : pos + 8 + length]
        vr = COMMAND_ELEMENTS.get(elem, ("", "UN"))[1]
        out[elem] = _decode_value(vr, raw, elem, pos)
        pos += 8 + length
    return out


# --- messages ------------------------------------------------------------------------------------

# attribute name -> tag
_ATTR_TAGS: dict[str, int] = {
    "affected_sop_class_uid": 0x00000002,
    "requested_sop_class_uid": 0x00000003,
    "message_id": 0x00000110,
    "message_id_being_responded_to": 0x00000120,
    "move_destination": 0x00000600,
    "priority": 0x00000700,
    "status": 0x00000900,
    "offending_elements": 0x00000901,
    "error_comment": 0x00000902,
    "error_id": 0x00000903,
    "affected_sop_instance_uid": 0x00001000,
    "requested_sop_instance_uid": 0x00001001,
    "event_type_id": 0x00001002,
    "attribute_identifier_list": 0x00001005,
    "action_type_id": 0x00001008,
    "number_of_remaining_suboperations": 0x00001020,
    "number_of_completed_suboperations": 0x00001021,
    "number_of_failed_suboperations": 0x00001022,
    "number_of_warning_suboperations": 0x00001023,
    "move_originator_aet": 0x00001030,
    "move_originator_message_id": 0x00001031,
}


_FIELD_CACHE: dict[type, tuple[tuple[str, int], ...]] = {}


def _tagged_fields(cls: type) -> tuple[tuple[str, int], ...]:
    """(attribute, tag) of a message class's command elements, computed once per class."""
    known = _FIELD_CACHE.get(cls)
    if known is None:
        known = _FIELD_CACHE[cls] = tuple(
            (f.name, _ATTR_TAGS[f.name]) for f in fields(cls) if f.name in _ATTR_TAGS
        )
    return known


@dataclass(slots=True, kw_only=True)
class DimseMessage:
    """Base of every DIMSE message class; ``RequestMessage`` and ``ResponseMessage`` below are
    the public bases to annotate with, so that ``response.status`` type-checks."""

    COMMAND_FIELD: ClassVar[int] = 0
    NAME: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    has_dataset: bool = False

    def encode(self) -> bytes:
        """The whole command set (PS3.7 §6.3.1)."""
        elements: dict[int, Value] = {
            0x00000100: self.COMMAND_FIELD,
            0x00000800: DATASET_PRESENT if self.has_dataset else NO_DATASET,
        }
        for name, tag in _tagged_fields(type(self)):
            value = getattr(self, name)
            if value is None:
                continue
            elements[tag] = int(value) if isinstance(value, IntEnum) else value
        return encode_command_set(elements)

    @classmethod
    def from_elements(cls, elements: dict[int, Value]) -> DimseMessage:
        kwargs: dict[str, Any] = {"has_dataset": elements.get(0x00000800, NO_DATASET) != NO_DATASET}
        for name in cls.REQUIRED:
            if _ATTR_TAGS[name] not in elements:
                tag = _ATTR_TAGS[name]
                keyword = COMMAND_ELEMENTS[tag][0]
                raise DIMSEError(
                    f"{cls.NAME} is missing (0000,{tag & 0xFFFF:04X}) {keyword}",
                    elements=elements,
                )
        for name, attr_tag in _tagged_fields(cls):
            if attr_tag in elements:
                kwargs[name] = elements[attr_tag]
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise DIMSEError(f"{cls.NAME}: {exc}", elements=elements) from exc


@dataclass(slots=True, kw_only=True)
class RequestMessage(DimseMessage):
    """A request (-RQ) that is answered: ``RESPONSE`` is its response class, and
    ``response(status, ...)`` builds the answer (C-CANCEL-RQ is not one: it has no answer)."""

    RESPONSE: ClassVar[type[ResponseMessage]]
    message_id: int = 0

    @property
    def is_request(self) -> bool:
        return True

    def response(self, status: int, **values: Any) -> ResponseMessage:
        """The response to this request (PS3.7 §9.3, §10.3): the message ID it answers, the
        status, the affected SOP class and instance it echoes (an N-service request's
        *requested* ones become the response's *affected* ones), the Event/Action Type ID when
        a reply data set goes with it (PS3.7 §10.1.1.1.4, §10.1.4.1.5), then ``values``; a
        value that is None, or names an element this response does not have, is left out."""
        cls = self.RESPONSE
        names, echoed, typed = _response_plan(type(self))
        fields_: dict[str, Any] = {
            "message_id_being_responded_to": self.message_id,
            "status": status,
        }
        for name, source in echoed:
            value = getattr(self, source)
            if value is not None:
                fields_[name] = value
        if values.get("has_dataset"):
            for name in typed:
                fields_[name] = getattr(self, name)
        for name, value in values.items():
            if value is not None and name in names:
                fields_[name] = value
        return cls(**fields_)


@dataclass(slots=True, kw_only=True)
class ResponseMessage(DimseMessage):
    """A response (-RSP). Every one may carry an Error Comment (0000,0902), an LO: it is cut to
    64 characters here, once, whoever builds the message (PS3.5 §6.2)."""

    message_id_being_responded_to: int = 0
    status: int = 0
    error_comment: str | None = None

    def __post_init__(self) -> None:
        comment = self.error_comment
        if comment is not None and len(comment) > MAX_ERROR_COMMENT:
            self.error_comment = comment[:MAX_ERROR_COMMENT]

    @property
    def is_request(self) -> bool:
        return False


#: (0000,0902) Error Comment is LO: at most 64 characters (PS3.5 Table 6.2-1).
MAX_ERROR_COMMENT = 64

_Plan = tuple[frozenset[str], tuple[tuple[str, str], ...], tuple[str, ...]]
_PLANS: dict[type, _Plan] = {}


def _response_plan(rq_cls: type[RequestMessage]) -> _Plan:
    """(the response's field names, (response field, request field) pairs to echo, the type
    IDs echoed with a reply data set), once per request class."""
    plan = _PLANS.get(rq_cls)
    if plan is None:
        names = frozenset(f.name for f in fields(rq_cls.RESPONSE))
        ours = {f.name for f in fields(rq_cls)}
        typed = tuple(n for n in ("event_type_id", "action_type_id") if n in names and n in ours)
        echoed: list[tuple[str, str]] = []
        for name, requested in (
            ("affected_sop_class_uid", "requested_sop_class_uid"),
            ("affected_sop_instance_uid", "requested_sop_instance_uid"),
        ):
            if name not in names:
                continue
            if name in ours:
                echoed.append((name, name))
            elif requested in ours:
                echoed.append((name, requested))
        plan = _PLANS[rq_cls] = (names, tuple(echoed), typed)
    return plan


_RQ = ("message_id",)
_RSP = ("message_id_being_responded_to", "status")


@dataclass(slots=True, kw_only=True)
class CEchoRQ(RequestMessage):
    COMMAND_FIELD = CommandField.C_ECHO_RQ
    NAME = "C-ECHO-RQ"
    REQUIRED = (*_RQ, "affected_sop_class_uid")
    affected_sop_class_uid: str = ""


@dataclass(slots=True, kw_only=True)
class CEchoRSP(ResponseMessage):
    COMMAND_FIELD = CommandField.C_ECHO_RSP
    NAME = "C-ECHO-RSP"
    REQUIRED = _RSP
    affected_sop_class_uid: str | None = None


@dataclass(slots=True, kw_only=True)
class CStoreRQ(RequestMessage):
    COMMAND_FIELD = CommandField.C_STORE_RQ
    NAME = "C-STORE-RQ"
    REQUIRED = (*_RQ, "affected_sop_class_uid", "affected_sop_instance_uid")
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    priority: int = Priority.MEDIUM
    move_originator_aet: str | None = None
    move_originator_message_id: int | None = None
    has_dataset: bool = True


@dataclass(slots=True, kw_only=True)
class CStoreRSP(ResponseMessage):
    COMMAND_FIELD = CommandField.C_STORE_RSP
    NAME = "C-STORE-RSP"
    REQUIRED = _RSP
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    offending_elements: list[int] | None = None
    error_id: int | None = None


@dataclass(slots=True, kw_only=True)
class CFindRQ(RequestMessage):
    COMMAND_FIELD = CommandField.C_FIND_RQ
    NAME = "C-FIND-RQ"
    REQUIRED = (*_RQ, "affected_sop_class_uid")
    affected_sop_class_uid: str = ""
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(slots=True, kw_only=True)
class CFindRSP(ResponseMessage):
    COMMAND_FIELD = CommandField.C_FIND_RSP
    NAME = "C-FIND-RSP"
    REQUIRED = _RSP
    affected_sop_class_uid: str | None = None
    offending_elements: list[int] | None = None
    error_id: int | None = None


@dataclass(slots=True, kw_only=True)
class _SubOps(ResponseMessage):
    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    offending_elements: list[int] | None = None
    error_id: int | None = None


@dataclass(slots=True, kw_only=True)
class CGetRQ(RequestMessage):
    COMMAND_FIELD = CommandField.C_GET_RQ
    NAME = "C-GET-RQ"
    REQUIRED = (*_RQ, "affected_sop_class_uid")
    affected_sop_class_uid: str = ""
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(slots=True, kw_only=True)
class CGetRSP(_SubOps):
    COMMAND_FIELD = CommandField.C_GET_RSP
    NAME = "C-GET-RSP"
    REQUIRED = _RSP


@dataclass(slots=True, kw_only=True)
class CMoveRQ(RequestMessage):
    COMMAND_FIELD = CommandField.C_MOVE_RQ
    NAME = "C-MOVE-RQ"
    REQUIRED = (*_RQ, "affected_sop_class_uid", "move_destination")
    affected_sop_class_uid: str = ""
    priority: int = Priority.MEDIUM
    move_destination: str = ""
    has_dataset: bool = True


@dataclass(slots=True, kw_only=True)
class CMoveRSP(_SubOps):
    COMMAND_FIELD = CommandField.C_MOVE_RSP
    NAME = "C-MOVE-RSP"
    REQUIRED = _RSP


@dataclass(slots=True, kw_only=True)
class CCancelRQ(DimseMessage):
    COMMAND_FIELD = CommandField.C_CANCEL_RQ
    NAME = "C-CANCEL-RQ"
    REQUIRED = ("message_id_being_responded_to",)
    message_id_being_responded_to: int = 0

    @property
    def is_request(self) -> bool:
        return True


@dataclass(slots=True, kw_only=True)
class _NResponse(ResponseMessage):
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    error_id: int | None = None
    offending_elements: list[int] | None = None
    # The attributes a status names, e.g. 0x0107 Attribute list error (PS3.7 Annex C).
    attribute_identifier_list: list[int] | None = None


@dataclass(slots=True, kw_only=True)
class NEventReportRQ(RequestMessage):
    COMMAND_FIELD = CommandField.N_EVENT_REPORT_RQ
    NAME = "N-EVENT-REPORT-RQ"
    REQUIRED = (*_RQ, "affected_sop_class_uid", "affected_sop_instance_uid", "event_type_id")
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    event_type_id: int = 0


@dataclass(slots=True, kw_only=True)
class NEventReportRSP(_NResponse):
    COMMAND_FIELD = CommandField.N_EVENT_REPORT_RSP
    NAME = "N-EVENT-REPORT-RSP"
    REQUIRED = _RSP
    event_type_id: int | None = None


@dataclass(slots=True, kw_only=True)
class NGetRQ(RequestMessage):
    COMMAND_FIELD = CommandField.N_GET_RQ
    NAME = "N-GET-RQ"
    REQUIRED = (*_RQ, "requested_sop_class_uid", "requested_sop_instance_uid")
    requested_sop_class_uid: str = ""
    requested_sop_instance_uid: str = ""
    attribute_identifier_list: list[int] | None = None


@dataclass(slots=True, kw_only=True)
class NGetRSP(_NResponse):
    COMMAND_FIELD = CommandField.N_GET_RSP
    NAME = "N-GET-RSP"
    REQUIRED = _RSP


@dataclass(slots=True, kw_only=True)
class NSetRQ(RequestMessage):
    COMMAND_FIELD = CommandField.N_SET_RQ
    NAME = "N-SET-RQ"
    REQUIRED = (*_RQ, "requested_sop_class_uid", "requested_sop_instance_uid")
    requested_sop_class_uid: str = ""
    requested_sop_instance_uid: str = ""
    has_dataset: bool = True


@dataclass(slots=True, kw_only=True)
class NSetRSP(_NResponse):
    COMMAND_FIELD = CommandField.N_SET_RSP
    NAME = "N-SET-RSP"
    REQUIRED = _RSP


@dataclass(slots=True, kw_only=True)
class NActionRQ(RequestMessage):
    COMMAND_FIELD = CommandField.N_ACTION_RQ
    NAME = "N-ACTION-RQ"
    REQUIRED = (*_RQ, "requested_sop_class_uid", "requested_sop_instance_uid", "action_type_id")
    requested_sop_class_uid: str = ""
    requested_sop_instance_uid: str = ""
    action_type_id: int = 0


@dataclass(slots=True, kw_only=True)
class NActionRSP(_NResponse):
    COMMAND_FIELD = CommandField.N_ACTION_RSP
    NAME = "N-ACTION-RSP"
    REQUIRED = _RSP
    action_type_id: int | None = None


@dataclass(slots=True, kw_only=True)
class NCreateRQ(RequestMessage):
    COMMAND_FIELD = CommandField.N_CREATE_RQ
    NAME = "N-CREATE-RQ"
    REQUIRED = (*_RQ, "affected_sop_class_uid")
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str | None = None


@dataclass(slots=True, kw_only=True)
class NCreateRSP(_NResponse):
    COMMAND_FIELD = CommandField.N_CREATE_RSP
    NAME = "N-CREATE-RSP"
    REQUIRED = _RSP


@dataclass(slots=True, kw_only=True)
class NDeleteRQ(RequestMessage):
    COMMAND_FIELD = CommandField.N_DELETE_RQ
    NAME = "N-DELETE-RQ"
    REQUIRED = (*_RQ, "requested_sop_class_uid", "requested_sop_instance_uid")
    requested_sop_class_uid: str = ""
    requested_sop_instance_uid: str = ""


@dataclass(slots=True, kw_only=True)
class NDeleteRSP(_NResponse):
    COMMAND_FIELD = CommandField.N_DELETE_RSP
    NAME = "N-DELETE-RSP"
    REQUIRED = _RSP


# Each request's response (PS3.7 §9.3, §10.3).
CEchoRQ.RESPONSE = CEchoRSP
CStoreRQ.RESPONSE = CStoreRSP
CFindRQ.RESPONSE = CFindRSP
CGetRQ.RESPONSE = CGetRSP
CMoveRQ.RESPONSE = CMoveRSP
NEventReportRQ.RESPONSE = NEventReportRSP
NGetRQ.RESPONSE = NGetRSP
NSetRQ.RESPONSE = NSetRSP
NActionRQ.RESPONSE = NActionRSP
NCreateRQ.RESPONSE = NCreateRSP
NDeleteRQ.RESPONSE = NDeleteRSP


Message = (
    CEchoRQ
    | CEchoRSP
    | CStoreRQ
    | CStoreRSP
    | CFindRQ
    | CFindRSP
    | CGetRQ
    | CGetRSP
    | CMoveRQ
    | CMoveRSP
    | CCancelRQ
    | NEventReportRQ
    | NEventReportRSP
    | NGetRQ
    | NGetRSP
    | NSetRQ
    | NSetRSP
    | NActionRQ
    | NActionRSP
    | NCreateRQ
    | NCreateRSP
    | NDeleteRQ
    | NDeleteRSP
)

MESSAGE_CLASSES: dict[int, type[DimseMessage]] = {
    cls.COMMAND_FIELD: cls
    for cls in (
        CEchoRQ,
        CEchoRSP,
        CStoreRQ,
        CStoreRSP,
        CFindRQ,
        CFindRSP,
        CGetRQ,
        CGetRSP,
        CMoveRQ,
        CMoveRSP,
        CCancelRQ,
        NEventReportRQ,
        NEventReportRSP,
        NGetRQ,
        NGetRSP,
        NSetRQ,
        NSetRSP,
        NActionRQ,
        NActionRSP,
        NCreateRQ,
        NCreateRSP,
        NDeleteRQ,
        NDeleteRSP,
    )
}


def as_message(message: DimseMessage) -> Message:
    """``message`` typed as the ``Message`` union (which every concrete message class is in),
    for code that builds messages through the bases, e.g. ``RequestMessage.response``."""
    assert type(message) in _CONCRETE
    return cast("Message", message)


_CONCRETE = frozenset(MESSAGE_CLASSES.values())


def decode_message(data: bytes | memoryview) -> Message:
    """Decode a command set into its message class (dispatching on (0000,0100))."""
    elements = decode_command_set(data)
    command_field = elements.get(0x00000100)
    if not isinstance(command_field, int):
        raise DIMSEError("command set has no (0000,0100) CommandField", elements=elements)
    cls = MESSAGE_CLASSES.get(command_field)
    if cls is None:
        raise DIMSEError(f"unknown command field 0x{command_field:04X}", elements=elements)
    return cls.from_elements(elements)  # type: ignore[return-value]


def is_request(message: Message) -> bool:
    return not (message.COMMAND_FIELD & 0x8000)
