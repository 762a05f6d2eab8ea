"""PDU codec against byte layouts written by hand from PS3.8 §9.3 and Annex D and PS3.7 Annex D.

Every vector below is built field by field from the standard's tables (bytes literals and
``struct.pack`` in big endian, PS3.8 §9.3.1), never by dicomnet's encoder; each test checks both
directions: ``decode(bytes) == dataclass`` and ``encode(dataclass) == bytes``.
"""

from __future__ import annotations

import struct

import pytest

from dicomnet.errors import PDUError
from dicomnet.negotiation import check_request
from dicomnet.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    DICOM_APPLICATION_CONTEXT,
    P_DATA_TF,
    PDU,
    PDV,
    AbortReason,
    AbortSource,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextACItem,
    PresentationContextResult,
    PresentationContextRQItem,
    RejectReason,
    RejectResult,
    RejectSource,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    SubItem,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    decode,
    encode,
    reject_description,
)

VERIFICATION = "1.2.840.10008.1.1"  # 17 characters
IMPLICIT_LE = "1.2.840.10008.1.2"  # 17 characters
EXPLICIT_LE = "1.2.840.10008.1.2.1"  # 19 characters
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # 25 characters
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # 27 characters
# PS3.7 D.3.3.6 Note 1: Procedure Log of the Storage Service Class, related to Enhanced SR.
PROCEDURE_LOG = "1.2.840.10008.5.1.4.1.1.88.40"  # 29 characters
STORAGE_SERVICE_CLASS = "1.2.840.10008.4.2"  # 17 characters
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"  # 29 characters


def sub(item_type: int, value: bytes, reserved: int = 0x00) -> bytes:
    """An item or sub-item as every item table of PS3.8 §9.3 and Annex D lays it out:
    byte 1 item-type, byte 2 reserved (00H), bytes 3-4 item-length (unsigned, big endian),
    then the value."""
    return struct.pack(">BBH", item_type, reserved, len(value)) + value


def lv(value: bytes) -> bytes:
    """A 2-byte big-endian length followed by the value (the "-length" fields of Annex D)."""
    return struct.pack(">H", len(value)) + value


def associate(
    pdu_type: int,
    variable: bytes,
    called: bytes = b"STORESCP        ",
    calling: bytes = b"ECHOSCU         ",
    version: int = 0x0001,
    reserved: bytes = b"\x00",
) -> bytes:
    """The fixed fields of PS3.8 Table 9-11 (RQ) / Table 9-17 (AC) followed by ``variable``."""
    assert len(called) == len(calling) == 16
    body = (
        struct.pack(">H", version)  # bytes 7-8 protocol-version, bit 0 = version 1
        + reserved * 2  # bytes 9-10 reserved
        + called  # bytes 11-26 called-AE-title
        + calling  # bytes 27-42 calling-AE-title
        + reserved * 32  # bytes 43-74 reserved
        + variable  # bytes 75-xxx variable items
    )
    # byte 1 PDU-type, byte 2 reserved, bytes 3-6 PDU-length
    return struct.pack(">BBI", pdu_type, reserved[0], len(body)) + body


APP_CONTEXT_ITEM = (
    # PS3.8 Table 9-12, application context item
    b"\x10"  # item-type 10H
    b"\x00"  # reserved
    b"\x00\x15"  # item-length 21
    b"1.2.840.10008.3.1.1.1"  # application-context-name (PS3.7 Annex A)
)


# --- A-ASSOCIATE-RQ: one complete vector written out byte by byte ------------------------------

RQ_BYTES = (
    # PS3.8 Table 9-11, A-ASSOCIATE-RQ PDU fields
    b"\x01"  # 1: PDU-type 01H
    b"\x00"  # 2: reserved
    b"\x00\x00\x00\xb2"  # 3-6: PDU-length 178 (68 fixed + 25 + 50 + 35 of items)
    b"\x00\x01"  # 7-8: protocol-version, bit 0 set
    b"\x00\x00"  # 9-10: reserved
    b"STORESCP        "  # 11-26: called-AE-title, 16 characters padded with spaces
    b"ECHOSCU         "  # 27-42: calling-AE-title
    + b"\x00" * 32  # 43-74: reserved
    # Table 9-12 application context item (25 bytes)
    + APP_CONTEXT_ITEM
    # Table 9-13 presentation context item (4 + 46 = 50 bytes)
    + b"\x20"  # item-type 20H
    b"\x00"  # reserved
    b"\x00\x2e"  # item-length 46 = 4 + 21 + 21
    b"\x01"  # presentation-context-ID 1 (odd)
    b"\x00"  # reserved
    b"\x00"  # reserved
    b"\x00"  # reserved
    # Table 9-14 abstract syntax sub-item (21 bytes)
    b"\x30\x00\x00\x11"  # item-type 30H, reserved, item-length 17
    b"1.2.840.10008.1.1"  # abstract-syntax-name: Verification SOP Class
    # Table 9-15 transfer syntax sub-item (21 bytes)
    b"\x40\x00\x00\x11"  # item-type 40H, reserved, item-length 17
    b"1.2.840.10008.1.2"  # transfer-syntax-name: Implicit VR Little Endian
    # Table 9-16 user information item (4 + 31 = 35 bytes)
    b"\x50\x00\x00\x1f"  # item-type 50H, reserved, item-length 31 = 8 + 11 + 12
    # Table D.1-1 maximum length sub-item (8 bytes)
    b"\x51\x00\x00\x04"  # item-type 51H, reserved, item-length 4
    b"\x00\x00\x40\x00"  # maximum-length-received 16384
    # PS3.7 Table D.3-1 implementation class UID sub-item (11 bytes)
    b"\x52\x00\x00\x07"  # item-type 52H, reserved, item-length 7
    b"1.2.3.4"  # implementation-class-uid
    # PS3.7 Table D.3-3 implementation version name sub-item (12 bytes)
    b"\x55\x00\x00\x08"  # item-type 55H, reserved, item-length 8
    b"DCMNET_1"  # implementation-version-name
)

RQ = A_ASSOCIATE_RQ(
    called_ae_title="STORESCP",
    calling_ae_title="ECHOSCU",
    presentation_contexts=[PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE])],
    user_information=UserInformation(
        [
            MaximumLength(16384),
            ImplementationClassUID("1.2.3.4"),
            ImplementationVersionName("DCMNET_1"),
        ]
    ),
)


VERIFICATION_PC = RQ_BYTES[6 + 68 + 25 :][:50]  # the presentation context item above


def test_rq_vector_is_consistent() -> None:
    """Guard against arithmetic slips in the hand-written lengths above."""
    assert len(RQ_BYTES) == 6 + 178
    assert len(APP_CONTEXT_ITEM) == 25


def test_associate_rq_decodes() -> None:
    pdu = decode(RQ_BYTES)
    assert pdu == RQ
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.application_context == DICOM_APPLICATION_CONTEXT
    assert pdu.protocol_version == 1
    info = pdu.user_information
    assert info.maximum_length == 16384
    assert info.implementation_class_uid == "1.2.3.4"
    assert info.implementation_version_name == "DCMNET_1"


def test_associate_rq_encodes() -> None:
    assert encode(RQ) == RQ_BYTES


def test_associate_rq_several_contexts_and_syntaxes() -> None:
    pc1 = sub(
        0x20,
        b"\x01\x00\x00\x00"
        + sub(0x30, VERIFICATION.encode())
        + sub(0x40, IMPLICIT_LE.encode())
        + sub(0x40, EXPLICIT_LE.encode()),
    )
    pc3 = sub(
        0x20, b"\x03\x00\x00\x00" + sub(0x30, CT_STORAGE.encode()) + sub(0x40, EXPLICIT_LE.encode())
    )
    raw = associate(0x01, APP_CONTEXT_ITEM + pc1 + pc3 + sub(0x50, sub(0x51, b"\x00\x00\x00\x00")))
    expected = A_ASSOCIATE_RQ(
        "STORESCP",
        "ECHOSCU",
        [
            PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE, EXPLICIT_LE]),
            PresentationContextRQItem(3, CT_STORAGE, [EXPLICIT_LE]),
        ],
        UserInformation([MaximumLength(0)]),  # 0 = no maximum (PS3.8 D.1)
    )
    assert decode(raw) == expected
    assert encode(expected) == raw


def test_ae_titles_keep_inner_spaces_and_lose_padding() -> None:
    """PS3.8 Table 9-11: leading and trailing spaces of AE titles are not significant."""
    raw = associate(
        0x01,
        APP_CONTEXT_ITEM + sub(0x50, b""),
        called=b"  MY SCP        ",
        calling=b"A" * 16,
    )
    pdu = decode(raw)
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.called_ae_title == "MY SCP"
    assert pdu.calling_ae_title == "A" * 16


def test_uid_with_trailing_null_padding_is_accepted() -> None:
    """Some peers pad UIDs to even length with 00H (PS3.5 §9.1); the value is the same UID."""
    pc = sub(
        0x20,
        b"\x01\x00\x00\x00"
        + sub(0x30, VERIFICATION.encode() + b"\x00")
        + sub(0x40, IMPLICIT_LE.encode() + b"\x00"),
    )
    pdu = decode(associate(0x01, APP_CONTEXT_ITEM + pc + sub(0x50, b"")))
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.presentation_contexts == [PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE])]


# --- A-ASSOCIATE-AC ----------------------------------------------------------------------------

AC_BYTES = (
    # PS3.8 Table 9-17, A-ASSOCIATE-AC PDU fields
    b"\x02"  # 1: PDU-type 02H
    b"\x00"  # 2: reserved
    b"\x00\x00\x00\x99"  # 3-6: PDU-length 153 = 68 + 25 + 29 + 12 + 19
    b"\x00\x01"  # 7-8: protocol-version
    b"\x00\x00"  # 9-10: reserved
    b"STORESCP        "  # 11-26: reserved, sent as received in the RQ
    b"ECHOSCU         "  # 27-42: reserved, sent as received in the RQ
    + b"\x00" * 32  # 43-74: reserved
    + APP_CONTEXT_ITEM  # Table 9-12 (25 bytes)
    # Table 9-18 presentation context item (AC), accepted (29 bytes)
    + b"\x21"  # item-type 21H
    b"\x00"  # reserved
    b"\x00\x19"  # item-length 25 = 4 + (4 + 17)
    b"\x01"  # presentation-context-ID 1
    b"\x00"  # reserved
    b"\x00"  # result/reason 0: acceptance
    b"\x00"  # reserved
    b"\x40\x00\x00\x11"  # Table 9-19 transfer syntax sub-item, item-length 17
    b"1.2.840.10008.1.2"  # transfer-syntax-name
    # Table 9-18 presentation context item (AC), rejected (12 bytes)
    b"\x21\x00\x00\x08"  # item-type 21H, reserved, item-length 8
    b"\x03"  # presentation-context-ID 3
    b"\x00"  # reserved
    b"\x03"  # result/reason 3: abstract-syntax-not-supported (provider rejection)
    b"\x00"  # reserved
    b"\x40\x00\x00\x00"  # transfer syntax sub-item, not significant here: empty
    # Table 9-16 user information item (19 bytes)
    b"\x50\x00\x00\x0f"  # item-type 50H, reserved, item-length 15 = 8 + 7
    b"\x51\x00\x00\x04"  # Table D.1-2 maximum length sub-item, item-length 4
    b"\x00\x01\x00\x00"  # maximum-length-received 65536
    b"\x52\x00\x00\x03"  # PS3.7 Table D.3-2 implementation class UID sub-item, length 3
    b"1.2"  # implementation-class-uid
)

AC = A_ASSOCIATE_AC(
    called_ae_title="STORESCP",
    calling_ae_title="ECHOSCU",
    presentation_contexts=[
        PresentationContextACItem(1, PresentationContextResult.ACCEPTANCE, IMPLICIT_LE),
        PresentationContextACItem(3, PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, ""),
    ],
    user_information=UserInformation([MaximumLength(65536), ImplementationClassUID("1.2")]),
)


def test_ac_vector_is_consistent() -> None:
    assert len(AC_BYTES) == 6 + 153


def test_associate_ac_decodes() -> None:
    assert decode(AC_BYTES) == AC


def test_associate_ac_encodes() -> None:
    assert encode(AC) == AC_BYTES


def test_ac_rejected_context_transfer_syntax_is_not_tested() -> None:
    """Table 9-18: with a result other than acceptance the transfer syntax sub-item "shall not be
    significant and its value shall not be tested when received"; it may even be absent."""
    junk = sub(0x21, b"\x05\x00\x04\x00" + sub(0x40, b"\xff\xfe not a UID"))
    absent = sub(0x21, b"\x07\x00\x01\x00")
    pdu = decode(associate(0x02, APP_CONTEXT_ITEM + junk + absent + sub(0x50, b"")))
    assert isinstance(pdu, A_ASSOCIATE_AC)
    assert [(c.context_id, c.result) for c in pdu.presentation_contexts] == [
        (5, PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (7, PresentationContextResult.USER_REJECTION),
    ]
    assert pdu.presentation_contexts[1].transfer_syntax == ""


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0, "ACCEPTANCE"),
        (1, "USER_REJECTION"),
        (2, "NO_REASON"),
        (3, "ABSTRACT_SYNTAX_NOT_SUPPORTED"),
        (4, "TRANSFER_SYNTAXES_NOT_SUPPORTED"),
    ],
)
def test_presentation_context_result_values(code: int, name: str) -> None:
    """PS3.8 Table 9-18, result/reason field values."""
    assert PresentationContextResult(code).name == name
    raw = associate(
        0x02,
        APP_CONTEXT_ITEM
        + sub(0x21, bytes([1, 0, code, 0]) + sub(0x40, IMPLICIT_LE.encode()))
        + sub(0x50, b""),
    )
    pdu = decode(raw)
    assert isinstance(pdu, A_ASSOCIATE_AC)
    assert pdu.presentation_contexts[0].result == code


# --- user information sub-items, one by one ----------------------------------------------------

# (id, sub-item bytes written from the table, expected dataclass, PDU type it is tested in)
SUB_ITEMS: list[tuple[str, bytes, SubItem, int]] = [
    (
        "0x51 maximum length (PS3.8 Table D.1-1)",
        b"\x51\x00\x00\x04" + b"\x00\x10\x00\x00",  # maximum-length-received 1048576
        MaximumLength(1 << 20),
        0x01,
    ),
    (
        "0x51 maximum length 0 = unlimited (PS3.8 D.1)",
        b"\x51\x00\x00\x04\x00\x00\x00\x00",
        MaximumLength(0),
        0x02,
    ),
    (
        "0x52 implementation class UID (PS3.7 Table D.3-1)",
        b"\x52\x00\x00\x0d" + b"1.2.826.0.1.3",  # 13 characters
        ImplementationClassUID("1.2.826.0.1.3"),
        0x01,
    ),
    (
        "0x53 asynchronous operations window (PS3.7 Table D.3-7)",
        b"\x53\x00\x00\x04"  # item-type 53H, reserved, item-length 4
        b"\x00\x05"  # maximum-number-operations-invoked
        b"\x00\x03",  # maximum-number-operations-performed
        AsynchronousOperationsWindow(invoked=5, performed=3),
        0x01,
    ),
    (
        "0x53 asynchronous operations window 0 = unlimited (PS3.7 Table D.3-8, AC)",
        b"\x53\x00\x00\x04\x00\x00\x00\x01",
        AsynchronousOperationsWindow(invoked=0, performed=1),
        0x02,
    ),
    (
        "0x54 SCP/SCU role selection RQ (PS3.7 Table D.3-9)",
        b"\x54\x00\x00\x1d"  # item-type 54H, reserved, item-length 29 = 2 + 25 + 1 + 1
        b"\x00\x19"  # UID-length 25
        b"1.2.840.10008.5.1.4.1.1.2"  # SOP-class-uid: CT Image Storage
        b"\x00"  # SCU-role 0: non-support of the SCU role
        b"\x01",  # SCP-role 1: support of the SCP role
        RoleSelection(CT_STORAGE, scu_role=False, scp_role=True),
        0x01,
    ),
    (
        "0x54 SCP/SCU role selection AC (PS3.7 Table D.3-10)",
        b"\x54\x00\x00\x1d\x00\x19" + CT_STORAGE.encode() + b"\x01\x00",
        RoleSelection(CT_STORAGE, scu_role=True, scp_role=False),
        0x02,
    ),
    (
        "0x55 implementation version name (PS3.7 Table D.3-3)",
        b"\x55\x00\x00\x10" + b"SIXTEEN_CHARS_OK",  # 16 characters, the maximum
        ImplementationVersionName("SIXTEEN_CHARS_OK"),
        0x01,
    ),
    (
        "0x56 SOP class extended negotiation (PS3.7 Table D.3-11)",
        b"\x56\x00\x00\x20"  # item-type 56H, reserved, item-length 32 = 2 + 27 + 3
        b"\x00\x1b"  # SOP-class-uid-length 27
        b"1.2.840.10008.5.1.4.1.2.2.1"  # SOP-class-uid: Study Root Q/R FIND
        b"\x01\x01\x00",  # service-class-application-information (PS3.4 C.5.1.1)
        SOPClassExtendedNegotiation(STUDY_ROOT_FIND, b"\x01\x01\x00"),
        0x01,
    ),
    (
        "0x56 SOP class extended negotiation AC (PS3.7 Table D.3-11)",
        b"\x56\x00\x00\x1e\x00\x1b" + STUDY_ROOT_FIND.encode() + b"\x01",
        SOPClassExtendedNegotiation(STUDY_ROOT_FIND, b"\x01"),
        0x02,
    ),
    (
        "0x57 SOP class common extended negotiation (PS3.7 Tables D.3-12, D.3-13)",
        b"\x57"  # item-type 57H
        b"\x00"  # sub-item-version 0
        b"\x00\x53"  # item-length 83 = 2 + 29 + 2 + 17 + 2 + 31
        b"\x00\x1d"  # SOP-class-uid-length 29
        b"1.2.840.10008.5.1.4.1.1.88.40"  # SOP-class-uid: Procedure Log
        b"\x00\x11"  # service-class-uid-length 17
        b"1.2.840.10008.4.2"  # service-class-uid: Storage Service Class
        b"\x00\x1f"  # related-general-sop-class-identification-length 31
        b"\x00\x1d"  # Table D.3-13 related-general-sop-class-uid-length 29
        b"1.2.840.10008.5.1.4.1.1.88.22",  # related-general-sop-class-uid: Enhanced SR
        SOPClassCommonExtendedNegotiation(PROCEDURE_LOG, STORAGE_SERVICE_CLASS, [ENHANCED_SR]),
        0x01,
    ),
    (
        "0x57 without related general SOP classes (PS3.7 D.3.3.6 Note 2)",
        b"\x57\x00\x00\x1b"  # item-length 27 = 2 + 4 + 2 + 17 + 2
        b"\x00\x04"
        b"1.23"  # SOP-class-uid
        b"\x00\x11"
        b"1.2.840.10008.4.2"  # service-class-uid
        b"\x00\x00",  # related-general-sop-class-identification-length 0
        SOPClassCommonExtendedNegotiation("1.23", STORAGE_SERVICE_CLASS, []),
        0x01,
    ),
    (
        "0x58 user identity RQ, username and passcode (PS3.7 Table D.3-14)",
        b"\x58"  # item-type 58H
        b"\x00"  # reserved
        b"\x00\x11"  # item-length 17 = 1 + 1 + 2 + 5 + 2 + 6
        b"\x02"  # user-identity-type 2: username and passcode
        b"\x01"  # positive-response-requested 1
        b"\x00\x05"  # primary-field-length 5
        b"alice"  # primary-field: username
        b"\x00\x06"  # secondary-field-length 6
        b"s3cr3t",  # secondary-field: passcode
        UserIdentityRQ(2, True, b"alice", b"s3cr3t"),
        0x01,
    ),
    (
        "0x58 user identity RQ, username only (PS3.7 Table D.3-14)",
        b"\x58\x00\x00\x09"  # item-length 9 = 1 + 1 + 2 + 3 + 2
        b"\x01"  # user-identity-type 1: username
        b"\x00"  # no positive response requested
        b"\x00\x03bob"  # primary-field
        b"\x00\x00",  # secondary-field-length 0 (non-zero only for type 2)
        UserIdentityRQ(1, False, b"bob", b""),
        0x01,
    ),
    (
        "0x59 user identity AC, server response (PS3.7 Table D.3-15)",
        b"\x59"  # item-type 59H
        b"\x00"  # reserved
        b"\x00\x06"  # item-length 6 = 2 + 4
        b"\x00\x04"  # server-response-length 4
        b"\xde\xad\xbe\xef",  # server-response (e.g. a Kerberos ticket for type 3)
        UserIdentityAC(b"\xde\xad\xbe\xef"),
        0x02,
    ),
    (
        "0x59 user identity AC, empty response for types 1 and 2 (PS3.7 Table D.3-15)",
        b"\x59\x00\x00\x02\x00\x00",
        UserIdentityAC(b""),
        0x02,
    ),
]


def _fixed_sub_item_lengths() -> None:
    """The item-length fields above are hand-computed; check them once against the bytes."""
    for _name, raw, _item, _pdu_type in SUB_ITEMS:
        (declared,) = struct.unpack_from(">H", raw, 2)
        assert declared == len(raw) - 4, _name


def test_sub_item_vectors_are_consistent() -> None:
    _fixed_sub_item_lengths()


def _with_user_info(pdu_type: int, user_data: bytes) -> bytes:
    if pdu_type == 0x01:
        pc = sub(
            0x20,
            b"\x01\x00\x00\x00"
            + sub(0x30, VERIFICATION.encode())
            + sub(0x40, IMPLICIT_LE.encode()),
        )
    else:
        pc = sub(0x21, b"\x01\x00\x00\x00" + sub(0x40, IMPLICIT_LE.encode()))
    return associate(pdu_type, APP_CONTEXT_ITEM + pc + sub(0x50, user_data))


def _pdu_with(pdu_type: int, items: list[SubItem]) -> A_ASSOCIATE_RQ | A_ASSOCIATE_AC:
    if pdu_type == 0x01:
        return A_ASSOCIATE_RQ(
            "STORESCP",
            "ECHOSCU",
            [PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE])],
            UserInformation(items),
        )
    return A_ASSOCIATE_AC(
        "STORESCP",
        "ECHOSCU",
        [PresentationContextACItem(1, 0, IMPLICIT_LE)],
        UserInformation(items),
    )


@pytest.mark.parametrize(
    ("raw", "item", "pdu_type"),
    [pytest.param(raw, item, t, id=name) for name, raw, item, t in SUB_ITEMS],
)
def test_sub_item_decodes(raw: bytes, item: SubItem, pdu_type: int) -> None:
    pdu = decode(_with_user_info(pdu_type, raw))
    assert isinstance(pdu, (A_ASSOCIATE_RQ, A_ASSOCIATE_AC))
    assert pdu.user_information.sub_items == [item]
    assert pdu == _pdu_with(pdu_type, [item])


@pytest.mark.parametrize(
    ("raw", "item", "pdu_type"),
    [pytest.param(raw, item, t, id=name) for name, raw, item, t in SUB_ITEMS],
)
def test_sub_item_encodes(raw: bytes, item: SubItem, pdu_type: int) -> None:
    assert encode(_pdu_with(pdu_type, [item])) == _with_user_info(pdu_type, raw)


def test_all_sub_items_together_in_one_rq() -> None:
    """PS3.8 §9.3.2.3 Note: sub-items may come in any order; the decoder keeps that order."""
    rq_items = [(raw, item) for _n, raw, item, t in SUB_ITEMS if t == 0x01]
    raw = b"".join(r for r, _ in reversed(rq_items))
    expected = [i for _, i in reversed(rq_items)]
    pdu = decode(_with_user_info(0x01, raw))
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.user_information.sub_items == expected
    assert encode(pdu) == _with_user_info(0x01, raw)
    info = pdu.user_information
    assert info.maximum_length == 1 << 20
    assert info.async_ops_window == AsynchronousOperationsWindow(5, 3)
    assert info.role_selections == [RoleSelection(CT_STORAGE, False, True)]
    assert info.extended_negotiations == [
        SOPClassExtendedNegotiation(STUDY_ROOT_FIND, b"\x01\x01\x00")
    ]
    assert len(info.common_extended_negotiations) == 2
    assert info.user_identity_rq == UserIdentityRQ(1, False, b"bob", b"")  # the first one
    assert info.user_identity_ac is None


def test_common_extended_negotiation_with_several_related_classes() -> None:
    related = [ENHANCED_SR, "1.2.840.10008.5.1.4.1.1.88.33"]
    related_field = lv(related[0].encode()) + lv(related[1].encode())  # Table D.3-13, twice
    value = lv(PROCEDURE_LOG.encode()) + lv(STORAGE_SERVICE_CLASS.encode()) + lv(related_field)
    raw = sub(0x57, value)
    item = SOPClassCommonExtendedNegotiation(PROCEDURE_LOG, STORAGE_SERVICE_CLASS, related)
    pdu = decode(_with_user_info(0x01, raw))
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.user_information.sub_items == [item]
    assert encode(_pdu_with(0x01, [item])) == _with_user_info(0x01, raw)


def test_user_identity_rq_without_secondary_length_field_is_tolerated() -> None:
    """A type 1 identity whose sender left out the (zero) secondary-field-length."""
    raw = b"\x58\x00\x00\x07\x01\x00\x00\x03bob"
    pdu = decode(_with_user_info(0x01, raw))
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.user_information.user_identity_rq == UserIdentityRQ(1, False, b"bob", b"")


# --- unknown items are skipped (PS3.8 §9.3.1, D.2 Note 2) ----------------------------------------


def test_unknown_user_information_sub_items_are_skipped() -> None:
    """PS3.8 D.2 Note 2: acceptors ignore unrecognized user information sub-items."""
    raw = (
        sub(0x51, b"\x00\x00\x40\x00")
        + sub(0x7F, b"future sub-item")  # not defined by PS3.7/PS3.8
        + sub(0xFF, b"")
        + sub(0x52, b"1.2.3")
    )
    pdu = decode(_with_user_info(0x01, raw))
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    info = pdu.user_information
    assert info.maximum_length == 16384
    assert info.implementation_class_uid == "1.2.3"
    unknown = [i for i in info.sub_items if isinstance(i, UnknownSubItem)]
    assert unknown == [UnknownSubItem(0x7F, b"future sub-item"), UnknownSubItem(0xFF, b"")]
    # kept as raw bytes, so re-encoding forwards them unchanged
    assert encode(pdu) == _with_user_info(0x01, raw)


def test_user_identity_items_in_the_wrong_pdu_are_not_interpreted() -> None:
    """0x58 belongs to the RQ (Table D.3-14), 0x59 to the AC (Table D.3-15)."""
    ac_item = b"\x59\x00\x00\x02\x00\x00"
    rq_item = b"\x58\x00\x00\x06\x01\x00\x00\x00\x00\x00"
    rq = decode(_with_user_info(0x01, ac_item))
    ac = decode(_with_user_info(0x02, rq_item))
    assert isinstance(rq, A_ASSOCIATE_RQ) and isinstance(ac, A_ASSOCIATE_AC)
    assert rq.user_information.user_identity_ac is None
    assert rq.user_information.sub_items == [UnknownSubItem(0x59, b"\x00\x00")]
    assert ac.user_information.user_identity_rq is None
    assert ac.user_information.sub_items == [UnknownSubItem(0x58, rq_item[4:])]


def test_unknown_items_in_the_variable_field_are_skipped() -> None:
    """PS3.8 §9.3.1: "Items of unrecognized types shall be ignored and skipped"."""
    pc = sub(
        0x20,
        b"\x01\x00\x00\x00"
        + sub(0x30, VERIFICATION.encode())
        + sub(0x41, b"unknown sub-item")  # unknown presentation context sub-item
        + sub(0x40, IMPLICIT_LE.encode()),
    )
    raw = associate(
        0x01,
        APP_CONTEXT_ITEM
        + sub(0x11, b"unknown item")
        + pc
        + sub(0x60, b"")
        + sub(0x50, b"")
        + sub(0xEE, b"\x00" * 10),
    )
    pdu = decode(raw)
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.presentation_contexts == [PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE])]
    assert pdu.user_information == UserInformation([])


def test_presentation_context_items_of_the_other_pdu_are_skipped() -> None:
    """An AC item (21H) in an RQ, or an RQ item (20H) in an AC, is not a known item there."""
    pc_ac = sub(0x21, b"\x01\x00\x00\x00" + sub(0x40, IMPLICIT_LE.encode()))
    pc_rq = sub(0x20, b"\x01\x00\x00\x00" + sub(0x30, VERIFICATION.encode()))
    rq = decode(associate(0x01, APP_CONTEXT_ITEM + pc_ac + sub(0x50, b"")))
    ac = decode(associate(0x02, APP_CONTEXT_ITEM + pc_rq + sub(0x50, b"")))
    assert isinstance(rq, A_ASSOCIATE_RQ) and rq.presentation_contexts == []
    assert isinstance(ac, A_ASSOCIATE_AC) and ac.presentation_contexts == []


# --- reserved fields are not tested on receipt -----------------------------------------------


def test_reserved_fields_are_not_tested_in_associate_pdus() -> None:
    """Every reserved byte of Tables 9-11 to 9-19 and D.1-1 set to FFH: decodes the same."""
    pc = sub(
        0x20,
        b"\x01\xff\xff\xff"
        + sub(0x30, VERIFICATION.encode(), 0xFF)
        + sub(0x40, IMPLICIT_LE.encode(), 0xFF),
        0xFF,
    )
    user = sub(0x50, sub(0x51, b"\x00\x00\x40\x00", 0xFF), 0xFF)
    app = b"\x10\xff" + APP_CONTEXT_ITEM[2:]
    raw = associate(0x01, app + pc + user, reserved=b"\xff")
    assert raw[1] == 0xFF and raw[8:10] == b"\xff\xff" and raw[42:74] == b"\xff" * 32
    pdu = decode(raw)
    assert pdu == A_ASSOCIATE_RQ(
        "STORESCP",
        "ECHOSCU",
        [PresentationContextRQItem(1, VERIFICATION, [IMPLICIT_LE])],
        UserInformation([MaximumLength(16384)]),
    )
    ac_pc = sub(0x21, b"\x01\xff\x00\xff" + sub(0x40, IMPLICIT_LE.encode(), 0xAA), 0xAA)
    ac = decode(associate(0x02, app + ac_pc + user, reserved=b"\xaa"))
    assert isinstance(ac, A_ASSOCIATE_AC)
    assert ac.presentation_contexts == [PresentationContextACItem(1, 0, IMPLICIT_LE)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Table 9-21: bytes 2 and 7 reserved
        (b"\x03\xff\x00\x00\x00\x04\xff\x01\x01\x07", A_ASSOCIATE_RJ(1, 1, 7)),
        # Table 9-24: bytes 2 and 7-10 reserved
        (b"\x05\xff\x00\x00\x00\x04\xff\xff\xff\xff", A_RELEASE_RQ()),
        # Table 9-25
        (b"\x06\xff\x00\x00\x00\x04\x12\x34\x56\x78", A_RELEASE_RP()),
        # Table 9-26: bytes 2, 7 and 8 reserved
        (b"\x07\xff\x00\x00\x00\x04\xff\xff\x02\x01", A_ABORT(2, 1)),
    ],
)
def test_reserved_fields_are_not_tested_in_fixed_pdus(raw: bytes, expected: PDU) -> None:
    assert decode(raw) == expected


# --- the fixed-length PDUs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "pdu"),
    [
        pytest.param(
            b"\x03"  # PDU-type 03H (Table 9-21)
            b"\x00"  # reserved
            b"\x00\x00\x00\x04"  # PDU-length 4
            b"\x00"  # reserved
            b"\x01"  # result 1: rejected-permanent
            b"\x01"  # source 1: DICOM UL service-user
            b"\x07",  # reason 7: called-AE-title-not-recognized
            A_ASSOCIATE_RJ(
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLED_AE_NOT_RECOGNIZED,
            ),
            id="A-ASSOCIATE-RJ permanent/user/called AE",
        ),
        pytest.param(
            b"\x03\x00\x00\x00\x00\x04\x00"
            b"\x02"  # result 2: rejected-transient
            b"\x03"  # source 3: service-provider (presentation related function)
            b"\x02",  # reason 2: local-limit-exceeded
            A_ASSOCIATE_RJ(
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                RejectReason.LOCAL_LIMIT_EXCEEDED,
            ),
            id="A-ASSOCIATE-RJ transient/presentation/local limit",
        ),
        pytest.param(
            b"\x03\x00\x00\x00\x00\x04\x00"
            b"\x01"  # rejected-permanent
            b"\x02"  # source 2: service-provider (ACSE related function)
            b"\x02",  # reason 2: protocol-version-not-supported
            A_ASSOCIATE_RJ(1, 2, RejectReason.PROTOCOL_VERSION_NOT_SUPPORTED),
            id="A-ASSOCIATE-RJ permanent/ACSE/protocol version",
        ),
        pytest.param(
            b"\x05"  # PDU-type 05H (Table 9-24)
            b"\x00"  # reserved
            b"\x00\x00\x00\x04"  # PDU-length 4
            b"\x00\x00\x00\x00",  # reserved
            A_RELEASE_RQ(),
            id="A-RELEASE-RQ",
        ),
        pytest.param(
            b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # Table 9-25
            A_RELEASE_RP(),
            id="A-RELEASE-RP",
        ),
        pytest.param(
            b"\x07"  # PDU-type 07H (Table 9-26)
            b"\x00"  # reserved
            b"\x00\x00\x00\x04"  # PDU-length 4
            b"\x00"  # reserved
            b"\x00"  # reserved
            b"\x00"  # source 0: DICOM UL service-user (initiated abort)
            b"\x00",  # reason not significant for the service-user, sent as 00H
            A_ABORT(AbortSource.SERVICE_USER, 0),
            id="A-ABORT user",
        ),
        pytest.param(
            b"\x07\x00\x00\x00\x00\x04\x00\x00"
            b"\x02"  # source 2: DICOM UL service-provider (initiated abort)
            b"\x06",  # reason 6: invalid-PDU-parameter value
            A_ABORT(AbortSource.SERVICE_PROVIDER, AbortReason.INVALID_PDU_PARAMETER_VALUE),
            id="A-ABORT provider/invalid parameter",
        ),
    ],
)
def test_fixed_pdus(raw: bytes, pdu: PDU) -> None:
    assert decode(raw) == pdu
    assert encode(pdu) == raw


def test_abort_reason_values() -> None:
    """PS3.8 Table 9-26, reason/diag. values for the service-provider source."""
    assert [(r.name, r.value) for r in AbortReason] == [
        ("NOT_SPECIFIED", 0),
        ("UNRECOGNIZED_PDU", 1),
        ("UNEXPECTED_PDU", 2),
        ("RESERVED", 3),
        ("UNRECOGNIZED_PDU_PARAMETER", 4),
        ("UNEXPECTED_PDU_PARAMETER", 5),
        ("INVALID_PDU_PARAMETER_VALUE", 6),
    ]
    assert [s.value for s in AbortSource] == [0, 1, 2]


def test_reject_description() -> None:
    assert reject_description(1, 1, 7) == (
        "rejected (permanent) by the service user: called AE title not recognized"
    )
    assert reject_description(2, 3, 1) == (
        "rejected (transient) by the service provider (presentation): temporary congestion"
    )
    assert "reason 9" in reject_description(1, 1, 9)


# --- P-DATA-TF ----------------------------------------------------------------------------------

PDATA_BYTES = (
    # PS3.8 Table 9-22, P-DATA-TF PDU
    b"\x04"  # PDU-type 04H
    b"\x00"  # reserved
    b"\x00\x00\x00\x15"  # PDU-length 21 = (4 + 2 + 5) + (4 + 2 + 4)
    # Table 9-23 presentation-data-value item
    b"\x00\x00\x00\x07"  # item-length 7 = context ID + message control header + 5 data bytes
    b"\x01"  # presentation-context-ID 1
    b"\x03"  # Annex E.2 message control header: bit 0 = 1 command, bit 1 = 1 last fragment
    b"CMD!!"  # the command fragment
    b"\x00\x00\x00\x06"  # item-length 6
    b"\x01"  # presentation-context-ID 1
    b"\x00"  # message control header: data set, not the last fragment
    b"DATA"
)

PDATA = P_DATA_TF(
    [
        PDV(1, is_command=True, is_last=True, data=b"CMD!!"),
        PDV(1, is_command=False, is_last=False, data=b"DATA"),
    ]
)


def test_pdata_decodes_to_memoryviews() -> None:
    pdu = decode(PDATA_BYTES)
    assert pdu == PDATA
    assert isinstance(pdu, P_DATA_TF)
    assert all(isinstance(p.data, memoryview) for p in pdu.pdvs)


def test_pdata_encodes() -> None:
    assert encode(PDATA) == PDATA_BYTES


@pytest.mark.parametrize(
    ("mch", "is_command", "is_last"),
    [(0x00, False, False), (0x01, True, False), (0x02, False, True), (0x03, True, True)],
)
def test_message_control_header_bits(mch: int, is_command: bool, is_last: bool) -> None:
    """PS3.8 E.2: bit 0 command/data set, bit 1 last fragment; bits 2-7 sent as 0 and never
    checked by the receiver."""
    data = b"xy"
    raw = b"\x04\x00" + struct.pack(">I", 8) + struct.pack(">I", 4) + bytes([0x05, mch]) + data
    pdv = PDV(5, is_command, is_last, data)
    assert decode(raw) == P_DATA_TF([pdv])
    assert encode(P_DATA_TF([pdv])) == raw
    noisy = raw[:11] + bytes([mch | 0xFC]) + data  # bits 2-7 set by a sloppy sender
    assert decode(noisy) == P_DATA_TF([pdv])


def test_pdata_with_an_empty_pdv() -> None:
    """A PDV item-length of 2: context ID and message control header, no data."""
    raw = b"\x04\x00\x00\x00\x00\x06" + b"\x00\x00\x00\x02" + b"\x03\x02"
    assert decode(raw) == P_DATA_TF([PDV(3, False, True, b"")])
    assert encode(P_DATA_TF([PDV(3, False, True, b"")])) == raw


# --- protocol version (PS3.8 Table 9-11, bytes 7-8) ----------------------------------------------


@pytest.mark.parametrize("version", [0x0001, 0x0003, 0x8001, 0xFFFF])
def test_protocol_version_only_bit_0_is_tested(version: int) -> None:
    """ "A receiver ... implementing only this version ... shall only test that bit 0 is set"."""
    raw = associate(0x01, APP_CONTEXT_ITEM + VERIFICATION_PC + sub(0x50, b""), version=version)
    pdu = decode(raw)
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.protocol_version == version
    assert check_request(pdu) is None


@pytest.mark.parametrize("version", [0x0000, 0x0002, 0xFFFE])
def test_protocol_version_without_bit_0_is_rejected(version: int) -> None:
    """The decoder keeps the value; the provider answers A-ASSOCIATE-RJ permanent, source 2
    (ACSE), reason 2 protocol-version-not-supported (Table 9-21)."""
    raw = associate(0x01, APP_CONTEXT_ITEM + VERIFICATION_PC + sub(0x50, b""), version=version)
    pdu = decode(raw)
    assert isinstance(pdu, A_ASSOCIATE_RQ)
    assert pdu.protocol_version == version
    rejection = check_request(pdu)
    assert rejection is not None and rejection.pdu == A_ASSOCIATE_RJ(1, 2, 2)


def test_ac_protocol_version_is_kept() -> None:
    raw = associate(0x02, APP_CONTEXT_ITEM + sub(0x50, b""), version=0x0003)
    pdu = decode(raw)
    assert isinstance(pdu, A_ASSOCIATE_AC)
    assert pdu.protocol_version == 3


# --- malformed input: PDUError with an offset ------------------------------------------------


def _error(raw: bytes) -> PDUError:
    with pytest.raises(PDUError) as info:
        decode(raw)
    assert info.value.offset is not None
    assert "offset" in str(info.value)
    return info.value


@pytest.mark.parametrize(
    "raw",
    [RQ_BYTES, AC_BYTES, PDATA_BYTES, encode(A_RELEASE_RQ()), encode(A_ABORT())],
    ids=["RQ", "AC", "P-DATA", "RELEASE-RQ", "ABORT"],
)
def test_every_truncation_raises(raw: bytes) -> None:
    for n in range(len(raw)):
        err = _error(raw[:n])
        assert err.offset == (0 if n < 6 else 2)


def test_extra_bytes_after_the_pdu_raise() -> None:
    assert _error(RQ_BYTES + b"\x00").offset == 2


def test_unknown_pdu_type() -> None:
    """PS3.8 §9.3.1 defines PDU types 01H-07H only (Evt19, unrecognized PDU)."""
    for pdu_type in (0x00, 0x08, 0x10, 0xFF):
        assert _error(bytes([pdu_type, 0, 0, 0, 0, 4, 0, 0, 0, 0])).offset == 0


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
@pytest.mark.parametrize("length", [0, 3, 5, 100])
def test_fixed_pdus_must_have_length_4(pdu_type: int, length: int) -> None:
    raw = bytes([pdu_type, 0]) + struct.pack(">I", length) + b"\x00" * length
    assert _error(raw).offset == 2


def test_associate_shorter_than_the_fixed_fields() -> None:
    raw = b"\x01\x00" + struct.pack(">I", 67) + b"\x00" * 67
    assert _error(raw).offset == 6


def test_item_length_overrunning_the_pdu() -> None:
    """The application context item claims 0xFFFF bytes: the error points at the item."""
    bad = bytearray(RQ_BYTES)
    bad[74 + 2 : 74 + 4] = b"\xff\xff"
    assert _error(bytes(bad)).offset == 74


def test_sub_item_length_overrunning_the_item() -> None:
    """The abstract syntax sub-item runs past the end of its presentation context item."""
    bad = bytearray(RQ_BYTES)
    pc = 74 + 25
    abstract = pc + 8
    assert bad[abstract] == 0x30
    bad[abstract + 3] = 0x60  # item-length 96, the item has 42 bytes left
    assert _error(bytes(bad)).offset == abstract


def test_user_information_sub_item_overrun() -> None:
    user = b"\x51\x00\x00\x08\x00\x00\x40\x00"  # says 8, has 4
    raw = _with_user_info(0x01, user)
    err = _error(raw)
    # the user information item value starts 4 bytes after the item; the sub-item is its start
    ui_value = len(raw) - len(user)
    assert err.offset == ui_value


def test_stray_bytes_after_the_last_item() -> None:
    raw = associate(0x01, APP_CONTEXT_ITEM + sub(0x50, b"") + b"\x10\x00")
    err = _error(raw)
    assert err.offset == len(raw) - 2
    assert "stray" in str(err)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x51\x00\x00\x02\x00\x00", id="maximum length too short"),
        pytest.param(b"\x53\x00\x00\x02\x00\x01", id="async window too short"),
        pytest.param(b"\x54\x00\x00\x05\x00\x09abc", id="role UID length overrun"),
        pytest.param(b"\x54\x00\x00\x05\x00\x02ab\x01", id="role SCP byte missing"),
        pytest.param(b"\x56\x00\x00\x01\x00", id="extended negotiation UID length cut"),
        pytest.param(b"\x57\x00\x00\x06\x00\x01a\x00\x01b", id="common ext. no related length"),
        pytest.param(
            b"\x57\x00\x00\x0b\x00\x01a\x00\x01b\x00\x03\x00\x05c", id="common ext. related overrun"
        ),
        pytest.param(b"\x58\x00\x00\x01\x01", id="user identity too short"),
        pytest.param(b"\x58\x00\x00\x05\x01\x00\x00\x09a", id="user identity primary overrun"),
        pytest.param(
            b"\x58\x00\x00\x08\x02\x00\x00\x01a\x00\x05b", id="user identity secondary overrun"
        ),
    ],
)
def test_malformed_rq_sub_items(raw: bytes) -> None:
    (declared,) = struct.unpack_from(">H", raw, 2)
    assert declared == len(raw) - 4  # the item itself fits; its fields do not
    err = _error(_with_user_info(0x01, raw))
    assert err.offset is not None and err.offset >= 74


def test_malformed_user_identity_ac() -> None:
    _error(_with_user_info(0x02, b"\x59\x00\x00\x03\x00\x05a"))


def test_presentation_context_id_must_be_odd() -> None:
    """PS3.8 Table 9-13: presentation-context-ID values are odd integers between 1 and 255."""
    pc = sub(
        0x20,
        b"\x02\x00\x00\x00" + sub(0x30, VERIFICATION.encode()) + sub(0x40, IMPLICIT_LE.encode()),
    )
    assert _error(associate(0x01, APP_CONTEXT_ITEM + pc + sub(0x50, b""))).offset == 74 + 25


def test_presentation_context_without_abstract_syntax() -> None:
    pc = sub(0x20, b"\x01\x00\x00\x00" + sub(0x40, IMPLICIT_LE.encode()))
    _error(associate(0x01, APP_CONTEXT_ITEM + pc + sub(0x50, b"")))


def test_presentation_context_item_shorter_than_its_fixed_fields() -> None:
    _error(associate(0x01, APP_CONTEXT_ITEM + sub(0x20, b"\x01\x00") + sub(0x50, b"")))
    _error(associate(0x02, APP_CONTEXT_ITEM + sub(0x21, b"\x01") + sub(0x50, b"")))


def test_missing_application_context_or_user_information() -> None:
    """PS3.8 §9.3.2: one application context item and one user information item are required."""
    assert "application context" in str(_error(associate(0x01, sub(0x50, b""))))
    assert "user information" in str(_error(associate(0x01, APP_CONTEXT_ITEM)))


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        pytest.param(b"", 6, id="no PDV at all"),
        pytest.param(b"\x00\x00\x00\x02\x01", 6, id="stray bytes shorter than a PDV header"),
        pytest.param(b"\x00\x00\x00\x01\x01\x03", 6, id="PDV item-length below 2"),
        pytest.param(b"\x00\x00\x00\x09\x01\x03abc", 6, id="PDV overruns the PDU"),
        pytest.param(
            b"\x00\x00\x00\x03\x01\x03a" + b"\x00\x00\x00\x09\x01\x03abc",
            13,
            id="second PDV overruns",
        ),
    ],
)
def test_malformed_pdata(body: bytes, offset: int) -> None:
    raw = b"\x04\x00" + struct.pack(">I", len(body)) + body
    assert _error(raw).offset == offset


def test_encode_refuses_an_item_longer_than_65535() -> None:
    """Item-length is two bytes (PS3.8 §9.3.2.2); a longer value cannot be encoded."""
    item = SOPClassExtendedNegotiation("1.2", b"\x00" * 0x10000)
    with pytest.raises(PDUError):
        encode(_pdu_with(0x01, [item]))


def test_encode_rejects_non_pdus() -> None:
    with pytest.raises(TypeError):
        encode("not a PDU")  # type: ignore[arg-type]


# -- user identity sub-items as a requestor builds them (PS3.7 Table D.3-14) ----------------------


def test_user_identity_constructors_match_the_table_d3_14_vectors() -> None:
    # The first two equal the hand-made vectors above (username+passcode, username only).
    assert UserIdentityRQ.password("alice", "s3cr3t", positive_response=True) == UserIdentityRQ(
        2, True, b"alice", b"s3cr3t"
    )
    assert UserIdentityRQ.username("bob") == UserIdentityRQ(1, False, b"bob", b"")
    assert UserIdentityRQ.kerberos(b"\x60\x82ticket") == UserIdentityRQ(3, False, b"\x60\x82ticket")
    assert UserIdentityRQ.saml("<saml/>").primary_field == b"<saml/>"
    assert UserIdentityRQ.saml("<saml/>").identity_type == 4
    jwt = UserIdentityRQ.jwt("eyJhbGciOiJub25lIn0.e30.", positive_response=True)
    assert (jwt.identity_type, jwt.positive_response_requested) == (5, True)
    # Each field's length is 16 bits: 65,535 bytes at most, and never empty.
    assert len(UserIdentityRQ.username("u" * 0xFFFF).primary_field) == 0xFFFF
    with pytest.raises(ValueError, match="65,535 at most"):
        UserIdentityRQ.jwt(b"x" * 0x10000)
    with pytest.raises(ValueError, match="cannot be empty"):
        UserIdentityRQ.password("alice", "")


def test_a_first_byte_that_is_no_pdu_says_what_it_looks_like() -> None:
    from dicomnet.pdu import PDUReader

    reader = PDUReader()
    reader.feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS ClientHello's start
    with pytest.raises(PDUError, match=r"unknown PDU type 0x16 .*TLS handshake record"):
        reader.next_pdu()
    reader = PDUReader()
    reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(PDUError, match="HTTP GET"):
        reader.next_pdu()
