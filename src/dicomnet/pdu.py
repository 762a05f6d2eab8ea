"""PS3.8 §9.3 upper layer PDUs: one dataclass per PDU, item and sub-item, ``encode()`` and an
incremental ``PDUReader``.

Rules: no sockets, no state, no timers. Decoding never trusts a length field: it checks it against
what is there and against a configurable maximum before allocating anything. P-DATA-TF values are
handed out as memoryviews into the received buffer, not copies. Unknown items and sub-items are
skipped where PS3.8 allows it (user information sub-items, §9.3.2.3 and Annex D).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


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
    """One presentation data value (PS3.8 §9.3.5.1, Annex E.2): the message control header is
    split into ``is_command`` (bit 0) and ``is_last`` (bit 1). ``data`` is a memoryview on decode."""

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


def reject_description(result: int, source: int, reason: int) -> str:
    """A human sentence for an A-ASSOCIATE-RJ (PS3.8 Table 9-21)."""
    raise NotImplementedError  # helper fills in


def encode(pdu: PDU) -> bytes:
    """Encode one PDU to bytes (PS3.8 §9.3)."""
    raise NotImplementedError  # helper fills in


class PDUReader:
    """Incremental PDU decoder: ``feed(bytes)`` in any chunking, then ``next_pdu()`` until None."""

    def __init__(self, max_pdu_length: int = 0) -> None:
        raise NotImplementedError  # helper fills in
