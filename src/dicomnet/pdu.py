"""PS3.8 §9.3 upper layer PDUs: one dataclass per PDU, item and sub-item, ``encode()`` and an
incremental ``PDUReader``.

Rules: no sockets, no state, no timers. Decoding never trusts a length field: it checks it against
what is there and against a configurable maximum before allocating anything. P-DATA-TF values are
handed out as memoryviews into the received buffer, not copies. Unknown items and sub-items are
skipped where PS3.8 allows it (user information sub-items, §9.3.2.3 and Annex D).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from dicomnet.errors import PDUError

# reject_description moved to errors.py (it ended an errors <-> pdu import cycle); re-exported.
from dicomnet.errors import reject_description as reject_description


class PDUType(IntEnum):
    """PS3.8 Table 9-1 (PDU types)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class ItemType(IntEnum):
    """Item and sub-item types of PS3.8 §9.3 and Annex D."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS_WINDOW = 0x53
    SCP_SCU_ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


class PresentationContextResult(IntEnum):
    """PS3.8 Table 9-18, result/reason of a presentation context AC item."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2  # provider rejection, no reason given
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ result (PS3.8 Table 9-21)."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ source (PS3.8 Table 9-21)."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ reason/diag. (PS3.8 Table 9-21); the meaning depends on the source.

    Source 1 (service user): 1, 2, 3, 7. Source 2 (ACSE): 1, 2. Source 3 (presentation): 1, 2.
    """

    NO_REASON = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2  # source 1
    PROTOCOL_VERSION_NOT_SUPPORTED = 2  # source 2 (same code as above, other source)
    CALLING_AE_NOT_RECOGNIZED = 3  # source 1
    TEMPORARY_CONGESTION = 1  # source 3
    LOCAL_LIMIT_EXCEEDED = 2  # source 3
    CALLED_AE_NOT_RECOGNIZED = 7  # source 1


class AbortSource(IntEnum):
    """A-ABORT source (PS3.8 Table 9-26)."""

    SERVICE_USER = 0
    RESERVED = 1
    SERVICE_PROVIDER = 2


class AbortReason(IntEnum):
    """A-ABORT reason/diag. when the source is the service provider (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    RESERVED = 3
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


# --- user information sub-items (PS3.8 Annex D, PS3.7 Annex D) -------------------------------


@dataclass(slots=True)
class MaximumLength:
    """Sub-item 0x51: the largest P-DATA-TF PDU length the sender can receive; 0 = unlimited."""

    maximum_length: int


@dataclass(slots=True)
class ImplementationClassUID:
    """Sub-item 0x52."""

    uid: str


@dataclass(slots=True)
class ImplementationVersionName:
    """Sub-item 0x55, 1 to 16 characters."""

    name: str


@dataclass(slots=True)
class AsynchronousOperationsWindow:
    """Sub-item 0x53; 0 means unlimited."""

    invoked: int
    performed: int


@dataclass(slots=True)
class RoleSelection:
    """Sub-item 0x54: SCP/SCU role selection for one SOP class (PS3.7 D.3.3.4)."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(slots=True)
class SOPClassExtendedNegotiation:
    """Sub-item 0x56: service-class specific application information (PS3.7 D.3.3.5)."""

    sop_class_uid: str
    application_information: bytes


@dataclass(slots=True)
class SOPClassCommonExtendedNegotiation:
    """Sub-item 0x57 (PS3.7 D.3.3.6); only in A-ASSOCIATE-RQ."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class UserIdentityRQ:
    """Sub-item 0x58 (PS3.7 D.3.3.7): type 1 username, 2 username+passcode, 3 Kerberos,
    4 SAML, 5 JWT."""

    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""

    # The five kinds a requestor sends (PS3.7 Table D.3-14); the fields are 16-bit length-prefixed.

    @classmethod
    def username(cls, name: str, *, positive_response: bool = False) -> UserIdentityRQ:
        """Type 1: a username alone (proves nothing; the Basic User Identity profile)."""
        return cls(1, positive_response, _identity_field(name.encode("utf-8"), "username"))

    @classmethod
    def password(
        cls, name: str, passcode: str | bytes, *, positive_response: bool = False
    ) -> UserIdentityRQ:
        """Type 2: username and passcode (UTF-8), as DCMTK's ``--user``/``--password``."""
        raw = passcode.encode("utf-8") if isinstance(passcode, str) else bytes(passcode)
        return cls(
            2,
            positive_response,
            _identity_field(name.encode("utf-8"), "username"),
            _identity_field(raw, "passcode"),
        )

    @classmethod
    def kerberos(cls, ticket: bytes, *, positive_response: bool = False) -> UserIdentityRQ:
        """Type 3: a Kerberos service ticket, opaque bytes."""
        return cls(3, positive_response, _identity_field(ticket, "Kerberos ticket"))

    @classmethod
    def saml(cls, assertion: str | bytes, *, positive_response: bool = False) -> UserIdentityRQ:
        """Type 4: a SAML assertion, opaque bytes (UTF-8 when given as text)."""
        raw = assertion.encode("utf-8") if isinstance(assertion, str) else bytes(assertion)
        return cls(4, positive_response, _identity_field(raw, "SAML assertion"))

    @classmethod
    def jwt(cls, token: str | bytes, *, positive_response: bool = False) -> UserIdentityRQ:
        """Type 5: a JSON Web Token, opaque bytes (ASCII when given as text)."""
        raw = token.encode("ascii") if isinstance(token, str) else bytes(token)
        return cls(5, positive_response, _identity_field(raw, "JSON web token"))


def _identity_field(value: bytes, what: str) -> bytes:
    """A user identity field: 1 to 65,535 bytes (its length is a 16-bit number, D.3.3.7.1);
    that the sub-item fits in its user information item is the encoder's to check."""
    if not value:
        raise ValueError(f"the {what} of a user identity cannot be empty")
    if len(value) > 0xFFFF:
        raise ValueError(f"the {what} of a user identity is {len(value)} bytes, 65,535 at most")
    return value


@dataclass(slots=True)
class UserIdentityAC:
    """Sub-item 0x59: the server response (empty for types 1 and 2)."""

    server_response: bytes


@dataclass(slots=True)
class UnknownSubItem:
    """A user information sub-item this implementation does not know, kept as raw bytes."""

    item_type: int
    data: bytes


SubItem = (
    MaximumLength
    | ImplementationClassUID
    | ImplementationVersionName
    | AsynchronousOperationsWindow
    | RoleSelection
    | SOPClassExtendedNegotiation
    | SOPClassCommonExtendedNegotiation
    | UserIdentityRQ
    | UserIdentityAC
    | UnknownSubItem
)


@dataclass(slots=True)
class UserInformation:
    """Item 0x50: the user information sub-items, in the order they are encoded."""

    sub_items: list[SubItem] = field(default_factory=list)

    # Convenience accessors; each returns the first sub-item of its kind or None/[].
    @property
    def maximum_length(self) -> int | None:
        for item in self.sub_items:
            if isinstance(item, MaximumLength):
                return item.maximum_length
        return None

    @property
    def implementation_class_uid(self) -> str | None:
        for item in self.sub_items:
            if isinstance(item, ImplementationClassUID):
                return item.uid
        return None

    @property
    def implementation_version_name(self) -> str | None:
        for item in self.sub_items:
            if isinstance(item, ImplementationVersionName):
                return item.name
        return None

    @property
    def async_ops_window(self) -> AsynchronousOperationsWindow | None:
        for item in self.sub_items:
            if isinstance(item, AsynchronousOperationsWindow):
                return item
        return None

    @property
    def role_selections(self) -> list[RoleSelection]:
        return [i for i in self.sub_items if isinstance(i, RoleSelection)]

    @property
    def extended_negotiations(self) -> list[SOPClassExtendedNegotiation]:
        return [i for i in self.sub_items if isinstance(i, SOPClassExtendedNegotiation)]

    @property
    def common_extended_negotiations(self) -> list[SOPClassCommonExtendedNegotiation]:
        return [i for i in self.sub_items if isinstance(i, SOPClassCommonExtendedNegotiation)]

    @property
    def user_identity_rq(self) -> UserIdentityRQ | None:
        for item in self.sub_items:
            if isinstance(item, UserIdentityRQ):
                return item
        return None

    @property
    def user_identity_ac(self) -> UserIdentityAC | None:
        for item in self.sub_items:
            if isinstance(item, UserIdentityAC):
                return item
        return None


# --- presentation context items ----------------------------------------------------------------


@dataclass(slots=True)
class PresentationContextRQItem:
    """Item 0x20: one proposed presentation context (odd ID 1..255)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


@dataclass(slots=True)
class PresentationContextACItem:
    """Item 0x21: the acceptor's answer for one context. ``transfer_syntax`` is meaningful only
    when ``result`` is ACCEPTANCE (the sub-item is still encoded otherwise, per PS3.8 §9.3.3.2)."""

    context_id: int
    result: int
    transfer_syntax: str


# --- PDUs ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class A_ASSOCIATE_RQ:
    """PS3.8 §9.3.2. AE titles are str, stripped of padding spaces on decode."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: list[PresentationContextRQItem]
    user_information: UserInformation
    application_context: str = DICOM_APPLICATION_CONTEXT
    protocol_version: int = 1


@dataclass(slots=True)
class A_ASSOCIATE_AC:
    """PS3.8 §9.3.3. The AE title fields are echoed from the RQ (not tested on receipt)."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: list[PresentationContextACItem]
    user_information: UserInformation
    application_context: str = DICOM_APPLICATION_CONTEXT
    protocol_version: int = 1


@dataclass(slots=True)
class A_ASSOCIATE_RJ:
    """PS3.8 §9.3.4."""

    result: int
    source: int
    reason: int


@dataclass(slots=True)
class PDV:
    """One presentation data value (PS3.8 §9.3.5.1, Annex E.2): the message control header
    is split into ``is_command`` (bit 0) and ``is_last`` (bit 1); ``data`` is a memoryview
    on decode."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | memoryview


@dataclass(slots=True)
class P_DATA_TF:
    """PS3.8 §9.3.5."""

    pdvs: list[PDV]


@dataclass(slots=True)
class A_RELEASE_RQ:
    """PS3.8 §9.3.6."""


@dataclass(slots=True)
class A_RELEASE_RP:
    """PS3.8 §9.3.7."""


@dataclass(slots=True)
class A_ABORT:
    """PS3.8 §9.3.8."""

    source: int = AbortSource.SERVICE_USER
    reason: int = AbortReason.NOT_SPECIFIED


PDU = (
    A_ASSOCIATE_RQ
    | A_ASSOCIATE_AC
    | A_ASSOCIATE_RJ
    | P_DATA_TF
    | A_RELEASE_RQ
    | A_RELEASE_RP
    | A_ABORT
)


# --- codec ---------------------------------------------------------------------------------------

_HEADER = struct.Struct(">BBI")  # PDU type, reserved, length (PS3.8 §9.3.1)
_ITEM = struct.Struct(">BBH")  # item type, reserved, item length
_PDATA_HEADER = struct.Struct(">BBIIBB")  # PDU header + PDV item length + context ID + MCH
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _ae(title: str) -> bytes:
    raw = title.encode("ascii", "replace")[:16]
    return raw.ljust(16, b" ")


def _uid_bytes(uid: str) -> bytes:
    return uid.encode("ascii")


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise PDUError(f"item 0x{item_type:02X} value of {len(value)} bytes exceeds 65535")
    return _ITEM.pack(item_type, 0, len(value)) + value


def _lv(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


def _encode_sub_item(item: SubItem) -> bytes:
    if isinstance(item, MaximumLength):
        return _item(0x51, _U32.pack(item.maximum_length))
    if isinstance(item, ImplementationClassUID):
        return _item(0x52, _uid_bytes(item.uid))
    if isinstance(item, AsynchronousOperationsWindow):
        return _item(0x53, _U16.pack(item.invoked) + _U16.pack(item.performed))
    if isinstance(item, RoleSelection):
        value = _lv(_uid_bytes(item.sop_class_uid)) + bytes(
            [int(item.scu_role), int(item.scp_role)]
        )
        return _item(0x54, value)
    if isinstance(item, ImplementationVersionName):
        return _item(0x55, item.name.encode("ascii", "replace"))
    if isinstance(item, SOPClassExtendedNegotiation):
        return _item(0x56, _lv(_uid_bytes(item.sop_class_uid)) + item.application_information)
    if isinstance(item, SOPClassCommonExtendedNegotiation):
        related = b"".join(_lv(_uid_bytes(u)) for u in item.related_general_sop_classes)
        value = _lv(_uid_bytes(item.sop_class_uid)) + _lv(_uid_bytes(item.service_class_uid))
        return _item(0x57, value + _lv(related))
    if isinstance(item, UserIdentityRQ):
        value = bytes([item.identity_type, int(item.positive_response_requested)])
        value += _lv(item.primary_field) + _lv(item.secondary_field)
        return _item(0x58, value)
    if isinstance(item, UserIdentityAC):
        return _item(0x59, _lv(item.server_response))
    return _item(item.item_type, item.data)


def _encode_associate(pdu: A_ASSOCIATE_RQ | A_ASSOCIATE_AC) -> bytes:
    parts = [
        _U16.pack(pdu.protocol_version),
        b"\x00\x00",
        _ae(pdu.called_ae_title),
        _ae(pdu.calling_ae_title),
        b"\x00" * 32,
        _item(0x10, _uid_bytes(pdu.application_context)),
    ]
    if isinstance(pdu, A_ASSOCIATE_RQ):
        for pc in pdu.presentation_contexts:
            value = bytes([pc.context_id, 0, 0, 0]) + _item(0x30, _uid_bytes(pc.abstract_syntax))
            value += b"".join(_item(0x40, _uid_bytes(ts)) for ts in pc.transfer_syntaxes)
            parts.append(_item(0x20, value))
        pdu_type = 0x01
    else:
        for ac in pdu.presentation_contexts:
            value = bytes([ac.context_id, 0, ac.result, 0]) + _item(
                0x40, _uid_bytes(ac.transfer_syntax)
            )
            parts.append(_item(0x21, value))
        pdu_type = 0x02
    parts.append(_item(0x50, b"".join(_encode_sub_item(i) for i in pdu.user_information.sub_items)))
    body = b"".join(parts)
    return _HEADER.pack(pdu_type, 0, len(body)) + body


def encode_pdata_header(
    context_id: int, is_command: bool, is_last: bool, data_length: int
) -> bytes:
    """The 12 bytes before the data of a P-DATA-TF PDU holding one PDV (PS3.8 §9.3.5, Annex E.2)."""
    return _PDATA_HEADER.pack(
        0x04, 0, data_length + 6, data_length + 2, context_id, int(is_command) | (int(is_last) << 1)
    )


def encode(pdu: PDU) -> bytes:
    """Encode one PDU to bytes (PS3.8 §9.3)."""
    if isinstance(pdu, P_DATA_TF):
        if len(pdu.pdvs) == 1:
            pdv = pdu.pdvs[0]
            return encode_pdata_header(
                pdv.context_id, pdv.is_command, pdv.is_last, len(pdv.data)
            ) + bytes(pdv.data)
        items = b"".join(
            _U32.pack(len(p.data) + 2)
            + bytes([p.context_id, int(p.is_command) | (int(p.is_last) << 1)])
            + bytes(p.data)
            for p in pdu.pdvs
        )
        return _HEADER.pack(0x04, 0, len(items)) + items
    if isinstance(pdu, (A_ASSOCIATE_RQ, A_ASSOCIATE_AC)):
        return _encode_associate(pdu)
    if isinstance(pdu, A_ASSOCIATE_RJ):
        return _HEADER.pack(0x03, 0, 4) + bytes([0, pdu.result, pdu.source, pdu.reason])
    if isinstance(pdu, A_RELEASE_RQ):
        return _HEADER.pack(0x05, 0, 4) + b"\x00\x00\x00\x00"
    if isinstance(pdu, A_RELEASE_RP):
        return _HEADER.pack(0x06, 0, 4) + b"\x00\x00\x00\x00"
    if isinstance(pdu, A_ABORT):
        return _HEADER.pack(0x07, 0, 4) + bytes([0, 0, pdu.source, pdu.reason])
    raise TypeError(f"not a PDU: {type(pdu).__name__}")


# --- decoding ------------------------------------------------------------------------------------


def _text(data: memoryview | bytes) -> str:
    return bytes(data).decode("ascii", "replace").rstrip("\x00 ").lstrip(" ")


class _Items:
    """Walks the items of a variable field, checking every length against what is there."""

    def __init__(self, data: memoryview, base: int, where: str) -> None:
        self.data = data
        self.base = base  # offset of data within the PDU, for messages
        self.where = where

    def __iter__(self) -> Iterator[tuple[int, memoryview, int]]:
        data, pos, end = self.data, 0, len(self.data)
        while pos < end:
            if end - pos < 4:
                raise PDUError(
                    f"{self.where}: {end - pos} stray bytes where an item header (4 bytes) was "
                    "expected",
                    self.base + pos,
                )
            item_type, _reserved, length = _ITEM.unpack_from(data, pos)
            if pos + 4 + length > end:
                raise PDUError(
                    f"{self.where}: item 0x{item_type:02X} length {length} runs past the end "
                    f"({end - pos - 4} bytes left)",
                    self.base + pos,
                )
            yield item_type, data[pos + 4 : pos + 4 + length], self.base + pos
            pos += 4 + length


def _need(value: memoryview, size: int, what: str, offset: int) -> None:
    if len(value) < size:
        raise PDUError(f"{what}: {len(value)} bytes, at least {size} expected", offset)


def _lv_field(value: memoryview, pos: int, what: str, offset: int) -> tuple[bytes, int]:
    if pos + 2 > len(value):
        raise PDUError(f"{what}: length field runs past the end of the sub-item", offset + pos)
    (n,) = _U16.unpack_from(value, pos)
    if pos + 2 + n > len(value):
        raise PDUError(f"{what}: field length {n} runs past the end of the sub-item", offset + pos)
    return bytes(value[pos + 2 : pos + 2 + n]), pos + 2 + n


def _decode_sub_item(item_type: int, v: memoryview, offset: int, in_rq: bool) -> SubItem:
    if item_type == 0x51:
        _need(v, 4, "maximum length sub-item", offset)
        return MaximumLength(_U32.unpack_from(v, 0)[0])
    if item_type == 0x52:
        return ImplementationClassUID(_text(v))
    if item_type == 0x53:
        _need(v, 4, "asynchronous operations window sub-item", offset)
        return AsynchronousOperationsWindow(_U16.unpack_from(v, 0)[0], _U16.unpack_from(v, 2)[0])
    if item_type == 0x54:
        uid, pos = _lv_field(v, 0, "role selection sub-item", offset)
        if pos + 2 > len(v):
            raise PDUError("role selection sub-item: SCU/SCP role bytes missing", offset)
        return RoleSelection(_text(uid), bool(v[pos]), bool(v[pos + 1]))
    if item_type == 0x55:
        return ImplementationVersionName(_text(v))
    if item_type == 0x56:
        uid, pos = _lv_field(v, 0, "SOP class extended negotiation sub-item", offset)
        return SOPClassExtendedNegotiation(_text(uid), bytes(v[pos:]))
    if item_type == 0x57:
        what = "SOP class common extended negotiation sub-item"
        uid, pos = _lv_field(v, 0, what, offset)
        service, pos = _lv_field(v, pos, what, offset)
        related_raw, pos = _lv_field(v, pos, what, offset)
        related: list[str] = []
        rv = memoryview(related_raw)
        rpos = 0
        while rpos < len(rv):
            one, rpos = _lv_field(rv, rpos, what, offset)
            related.append(_text(one))
        return SOPClassCommonExtendedNegotiation(_text(uid), _text(service), related)
    if item_type == 0x58 and in_rq:
        _need(v, 2, "user identity sub-item", offset)
        primary, pos = _lv_field(v, 2, "user identity sub-item", offset)
        secondary, pos = (
            _lv_field(v, pos, "user identity sub-item", offset) if pos < len(v) else (b"", pos)
        )
        return UserIdentityRQ(v[0], bool(v[1]), primary, secondary)
    if item_type == 0x59 and not in_rq:
        response, _pos = _lv_field(v, 0, "user identity response sub-item", offset)
        return UserIdentityAC(response)
    return UnknownSubItem(item_type, bytes(v))


def _decode_associate(body: memoryview, is_rq: bool) -> A_ASSOCIATE_RQ | A_ASSOCIATE_AC:
    name = "A-ASSOCIATE-RQ" if is_rq else "A-ASSOCIATE-AC"
    if len(body) < 68:
        raise PDUError(f"{name}: {len(body)} bytes, the fixed fields alone need 68", 6)
    version = _U16.unpack_from(body, 0)[0]
    called = _text(body[4:20])
    calling = _text(body[20:36])
    app_context: str | None = None
    rq_items: list[PresentationContextRQItem] = []
    ac_items: list[PresentationContextACItem] = []
    info: UserInformation | None = None
    for item_type, value, offset in _Items(body[68:], 6 + 68, name):
        if item_type == 0x10:
            app_context = _text(value)
        elif item_type == 0x20 and is_rq:
            _need(value, 4, "presentation context item", offset)
            cid = value[0]
            if cid % 2 == 0:
                raise PDUError(
                    f"{name}: presentation context ID {cid} is even (must be odd)", offset
                )
            abstract: str | None = None
            syntaxes: list[str] = []
            for sub_type, sub, _sub_off in _Items(
                value[4:], offset + 8, "presentation context item"
            ):
                if sub_type == 0x30:
                    abstract = _text(sub)
                elif sub_type == 0x40:
                    syntaxes.append(_text(sub))
            if abstract is None:
                raise PDUError(f"{name}: presentation context {cid} has no abstract syntax", offset)
            rq_items.append(PresentationContextRQItem(cid, abstract, syntaxes))
        elif item_type == 0x21 and not is_rq:
            _need(value, 4, "presentation context item", offset)
            ts = ""
            for sub_type, sub, _o in _Items(value[4:], offset + 8, "presentation context item"):
                if sub_type == 0x40:
                    ts = _text(sub)
            ac_items.append(PresentationContextACItem(value[0], value[2], ts))
        elif item_type == 0x50:
            subs: list[SubItem] = []
            for sub_type, sub, sub_off in _Items(value, offset + 4, "user information item"):
                subs.append(_decode_sub_item(sub_type, sub, sub_off, is_rq))
            info = UserInformation(subs)
        # other item types: ignored (PS3.8 §9.3.1)
    if app_context is None:
        raise PDUError(f"{name}: no application context item", 6 + 68)
    if info is None:
        raise PDUError(f"{name}: no user information item", 6 + 68)
    if is_rq:
        return A_ASSOCIATE_RQ(called, calling, rq_items, info, app_context, version)
    return A_ASSOCIATE_AC(called, calling, ac_items, info, app_context, version)


def _decode_pdata(body: memoryview) -> P_DATA_TF:
    pdvs: list[PDV] = []
    pos, end = 0, len(body)
    unpack = _U32.unpack_from
    while pos < end:
        if end - pos < 6:
            raise PDUError(
                f"P-DATA-TF: {end - pos} stray bytes where a PDV item was expected", 6 + pos
            )
        (length,) = unpack(body, pos)
        if length < 2:
            raise PDUError(f"P-DATA-TF: PDV item length {length} (at least 2 expected)", 6 + pos)
        if pos + 4 + length > end:
            raise PDUError(
                f"P-DATA-TF: PDV item length {length} runs past the end of the PDU "
                f"({end - pos - 4} bytes left)",
                6 + pos,
            )
        mch = body[pos + 5]
        pdvs.append(
            PDV(body[pos + 4], bool(mch & 1), bool(mch & 2), body[pos + 6 : pos + 4 + length])
        )
        pos += 4 + length
    if not pdvs:
        raise PDUError("P-DATA-TF without a presentation data value", 6)
    return P_DATA_TF(pdvs)


def decode(data: bytes | memoryview) -> PDU:
    """Decode one whole PDU (header included)."""
    view = memoryview(data)
    if len(view) < 6:
        raise PDUError(f"PDU header needs 6 bytes, {len(view)} given", 0)
    pdu_type, _r, length = _HEADER.unpack_from(view, 0)
    if len(view) != 6 + length:
        raise PDUError(f"PDU length field says {length} bytes, {len(view) - 6} given", 2)
    return _decode_body(pdu_type, view[6:])


_FIXED_NAMES = {3: "A-ASSOCIATE-RJ", 5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}


def _decode_body(pdu_type: int, body: memoryview) -> PDU:
    if pdu_type == 0x04:
        return _decode_pdata(body)
    if pdu_type in _FIXED_NAMES:
        if len(body) != 4:
            raise PDUError(f"{_FIXED_NAMES[pdu_type]}: length {len(body)}, 4 expected", 2)
        if pdu_type == 0x03:
            return A_ASSOCIATE_RJ(body[1], body[2], body[3])
        if pdu_type == 0x05:
            return A_RELEASE_RQ()
        if pdu_type == 0x06:
            return A_RELEASE_RP()
        return A_ABORT(body[2], body[3])
    if pdu_type in (0x01, 0x02):
        return _decode_associate(body, pdu_type == 0x01)
    raise PDUError(unknown_pdu_type(pdu_type), 0)


# First bytes that are not a PDU but say what the peer speaks instead: a TLS record (RFC 8446
# §5.1: 0x16 handshake, 0x15 alert) or an HTTP request line.
_FOREIGN_FIRST_BYTES = {
    0x16: "a TLS handshake record (a TLS client on a port without TLS?)",
    0x15: "a TLS alert record (the peer speaks TLS on this port?)",
    0x47: "'G' as in an HTTP GET (an HTTP client?)",
    0x50: "'P' as in an HTTP POST (an HTTP client?)",
}


def unknown_pdu_type(pdu_type: int) -> str:
    """The message for a first byte that is no PDU type, saying what it looks like instead."""
    text = f"unknown PDU type 0x{pdu_type:02X} (0x01-0x07 expected)"
    foreign = _FOREIGN_FIRST_BYTES.get(pdu_type)
    return f"{text}; 0x{pdu_type:02X} starts {foreign}" if foreign else text


class PDUReader:
    """Incremental PDU decoder: ``feed(bytes)`` (or ``get_buffer``/``buffer_updated``) in any
    chunking, then ``next_pdu()`` until None.

    Memoryviews inside a returned P_DATA_TF (``PDV.data``) point into the internal buffer and stay
    valid only until the next call to ``get_buffer()`` or ``feed()``.
    """

    MIN_READ = 64 * 1024
    # A P-DATA-TF is buffered whole before it is decoded, so even "unlimited" (a maximum length
    # of 0, PS3.8 D.1) needs a ceiling: a length field of up to 0xFFFFFFFF must not make us
    # allocate 4 GiB on a peer's say-so.
    UNLIMITED_PDU_CEILING = 1 << 28
    # Never allocate more than this ahead of the bytes actually received for one PDU; a larger
    # PDU grows the buffer as its bytes arrive.
    MAX_PREALLOCATION = 16 << 20

    def __init__(
        self,
        max_pdu_length: int = 0,
        max_control_pdu_length: int = 1 << 20,
        initial_buffer: int = 256 * 1024,
    ) -> None:
        self.max_pdu_length = max_pdu_length
        self.max_control_pdu_length = max_control_pdu_length
        self._buf = bytearray(max(initial_buffer, self.MIN_READ))
        self._start = 0  # first unconsumed byte
        self._end = 0  # end of received data

    @property
    def pending(self) -> int:
        return self._end - self._start

    def _check_header(self) -> int | None:
        """Validate the header at _start; the total PDU size, or None when incomplete."""
        buf, start = self._buf, self._start
        avail = self._end - start
        if avail < 1:
            return None
        pdu_type = buf[start]
        if not 1 <= pdu_type <= 7:
            raise PDUError(unknown_pdu_type(pdu_type), 0)
        if avail < 6:
            return None
        length: int = _U32.unpack_from(buf, start + 2)[0]
        if pdu_type == 4:
            if self.max_pdu_length and length > self.max_pdu_length:
                raise PDUError(
                    f"P-DATA-TF of {length} bytes exceeds the maximum of {self.max_pdu_length} "
                    "we announced",
                    2,
                )
            if length > self.UNLIMITED_PDU_CEILING:
                raise PDUError(
                    f"P-DATA-TF of {length} bytes exceeds the limit of "
                    f"{self.UNLIMITED_PDU_CEILING}",
                    2,
                )
        elif length > self.max_control_pdu_length:
            raise PDUError(
                f"{PDUType(pdu_type).name} of {length} bytes exceeds the limit of "
                f"{self.max_control_pdu_length}",
                2,
            )
        return 6 + length

    def _make_room(self, need: int) -> None:
        """Ensure `need` free bytes after _end, compacting or replacing the buffer."""
        buf = self._buf
        if len(buf) - self._end >= need:
            return
        pending = self._end - self._start
        if pending + need <= len(buf):
            buf[:pending] = buf[self._start : self._end]
        else:
            new = bytearray(max(len(buf) * 2, pending + need))
            new[:pending] = buf[self._start : self._end]
            self._buf = new
        self._start, self._end = 0, pending

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        want = self.MIN_READ
        try:
            total = self._check_header()
        except PDUError:
            total = None
        if total is not None:
            want = max(want, min(total - (self._end - self._start), self.MAX_PREALLOCATION))
        if self._start == self._end:
            self._start = self._end = 0
        self._make_room(want)
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            target = self.get_buffer(len(view))
            n = min(len(target), len(view))
            target[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def next_pdu(self) -> PDU | None:
        total = self._check_header()
        if total is None or self._end - self._start < total:
            return None
        start = self._start
        self._start += total
        body = memoryview(self._buf)[start + 6 : start + total]
        return _decode_body(self._buf[start], body)
