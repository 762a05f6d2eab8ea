"""Hand-written command set vectors for every DIMSE message class (PS3.7 §9.3, §10.3, Annex C).

Each expected command set is built here, element by element, from the message field tables
(C-STORE 9.3-1/-2, C-FIND 9.3-3/-4, C-CANCEL 9.3-5, C-GET 9.3-6/-7, C-MOVE 9.3-9/-10,
C-ECHO 9.3-12/-13, N-EVENT-REPORT 10.3-1/-2, N-GET 10.3-3/-4, N-SET 10.3-5/-6, N-ACTION 10.3-7/-8,
N-CREATE 10.3-9/-10, N-DELETE 10.3-11/-12) and the status fields of Annex C (C.4 warning, C.5
failure, C.5.21 processing failure), with the struct helpers below and never with dicomnet's
encoder: group 0000 in Implicit VR Little Endian (PS3.5 §7.1.3), elements in ascending tag order,
(0000,0000) Command Group Length first, counting the bytes that follow it.

Every value differs from its neighbours (the four sub-operation counters above all), so a field
written under another field's tag changes the bytes and fails both directions: ``encode()`` against
the vector, and ``decode_message(vector)`` read back field by field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import pytest

from dicomnet.dimse.commands import (
    MESSAGE_CLASSES,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NDeleteRQ,
    NDeleteRSP,
    NEventReportRQ,
    NEventReportRSP,
    NGetRQ,
    NGetRSP,
    NSetRQ,
    NSetRSP,
    decode_message,
)

# --- the test's own encoder: PS3.5 §7.1.3 and §6.2, nothing from dicomnet ------------------------


def us(value: int) -> bytes:
    """US: 16-bit unsigned, little endian."""
    return struct.pack("<H", value)


def ui(uid: str) -> bytes:
    """UI: ASCII, padded to even length with one NUL (PS3.5 §9.1)."""
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def text(value: str) -> bytes:
    """AE and LO: ASCII, padded to even length with one space (PS3.5 §6.2)."""
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def at(*tags: tuple[int, int]) -> bytes:
    """AT: each tag as group then element, both 16-bit little endian (PS3.5 §6.2)."""
    return b"".join(struct.pack("<HH", group, elem) for group, elem in tags)


def command_set(*elements: tuple[int, bytes]) -> bytes:
    """(0000,0000) UL with the byte count of the rest, then each (0000,eeee) element as tag, 32-bit
    length, value. Refuses elements written out of ascending order, so a vector below cannot
    list the table's fields in the wrong order by mistake."""
    tags = [elem for elem, _ in elements]
    if tags != sorted(set(tags)) or 0x0000 in tags:
        raise ValueError(f"vector elements not strictly ascending after (0000,0000): {tags}")
    body = b"".join(
        struct.pack("<HHI", 0x0000, elem, len(value)) + value for elem, value in elements
    )
    return struct.pack("<HHI", 0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


NO_DATA_SET = us(0x0101)  # (0000,0800) 0101H: no data set follows
# PS3.7 allows any value but 0101H for "a data set follows"; dicomnet writes 0001H.
DATA_SET = us(0x0001)

# --- UIDs (PS3.6 Annex A), of odd and even lengths so both paddings appear ----------------------

VERIFICATION = "1.2.840.10008.1.1"  # 17
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # 25
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # 27
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # 27
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"  # 27
STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"  # 20
STORAGE_COMMITMENT_PUSH_INSTANCE = "1.2.840.10008.1.20.1.1"  # 22, well-known SOP instance
MPPS = "1.2.840.10008.3.1.2.3.3"  # 23, Modality Performed Procedure Step
PRINTER = "1.2.840.10008.5.1.1.16"  # 22
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"  # 22, well-known SOP instance
BASIC_FILM_SESSION = "1.2.840.10008.5.1.1.1"  # 21

INSTANCE_ODD = "1.2.826.0.1.3680043.9.7.1"  # 25
INSTANCE_EVEN = "1.2.826.0.1.3680043.9.7.22"  # 26


@dataclass(frozen=True)
class Vector:
    """One hand-written command set, the message object that must encode to it, and the fields
    (by attribute name) that decoding it must give."""

    id: str
    message: Any
    raw: bytes
    fields: dict[str, Any]
    has_dataset: bool


VECTORS: list[Vector] = [
    # ---- C-ECHO (§9.3.5) ------------------------------------------------------------------------
    Vector(
        "C-ECHO-RQ",  # Table 9.3-12
        CEchoRQ(message_id=0x0201, affected_sop_class_uid=VERIFICATION),
        command_set(
            (0x0002, ui(VERIFICATION)),  # Affected SOP Class UID
            (0x0100, us(0x0030)),  # Command Field: C-ECHO-RQ
            (0x0110, us(0x0201)),  # Message ID
            (0x0800, NO_DATA_SET),
        ),
        {"message_id": 0x0201, "affected_sop_class_uid": VERIFICATION},
        False,
    ),
    Vector(
        "C-ECHO-RSP success",  # Table 9.3-13
        CEchoRSP(
            message_id_being_responded_to=0x0201, status=0x0000, affected_sop_class_uid=VERIFICATION
        ),
        command_set(
            (0x0002, ui(VERIFICATION)),
            (0x0100, us(0x8030)),  # C-ECHO-RSP
            (0x0120, us(0x0201)),  # Message ID Being Responded To
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0000)),  # Status: Success
        ),
        {
            "message_id_being_responded_to": 0x0201,
            "status": 0x0000,
            "affected_sop_class_uid": VERIFICATION,
        },
        False,
    ),
    Vector(
        "C-ECHO-RSP processing failure",  # Table 9.3-13 + C.5.21 (Error Comment)
        CEchoRSP(message_id_being_responded_to=3, status=0x0110, error_comment="No echo today"),
        command_set(
            (0x0100, us(0x8030)),
            (0x0120, us(3)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0110)),  # Processing failure
            (0x0902, text("No echo today")),  # Error Comment, LO, 13 characters + space
        ),
        {"message_id_being_responded_to": 3, "status": 0x0110, "error_comment": "No echo today"},
        False,
    ),
    # ---- C-STORE (§9.3.1) -----------------------------------------------------------------------
    Vector(
        "C-STORE-RQ",  # Table 9.3-1, as a C-MOVE sub-operation
        CStoreRQ(
            message_id=0x0A0B,
            affected_sop_class_uid=CT_IMAGE_STORAGE,
            affected_sop_instance_uid=INSTANCE_EVEN,
            priority=0x0001,
            move_originator_aet="MOVESCU",
            move_originator_message_id=0x0C0D,
        ),
        command_set(
            (0x0002, ui(CT_IMAGE_STORAGE)),
            (0x0100, us(0x0001)),  # C-STORE-RQ
            (0x0110, us(0x0A0B)),
            (0x0700, us(0x0001)),  # Priority: HIGH
            (0x0800, DATA_SET),
            (0x1000, ui(INSTANCE_EVEN)),  # Affected SOP Instance UID
            (0x1030, text("MOVESCU")),  # Move Originator Application Entity Title, AE
            (0x1031, us(0x0C0D)),  # Move Originator Message ID
        ),
        {
            "message_id": 0x0A0B,
            "affected_sop_class_uid": CT_IMAGE_STORAGE,
            "affected_sop_instance_uid": INSTANCE_EVEN,
            "priority": 0x0001,
            "move_originator_aet": "MOVESCU",
            "move_originator_message_id": 0x0C0D,
        },
        True,
    ),
    Vector(
        "C-STORE-RSP success",  # Table 9.3-2
        CStoreRSP(
            message_id_being_responded_to=0x0A0B,
            status=0x0000,
            affected_sop_class_uid=CT_IMAGE_STORAGE,
            affected_sop_instance_uid=INSTANCE_EVEN,
        ),
        command_set(
            (0x0002, ui(CT_IMAGE_STORAGE)),
            (0x0100, us(0x8001)),  # C-STORE-RSP
            (0x0120, us(0x0A0B)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0000)),
            (0x1000, ui(INSTANCE_EVEN)),
        ),
        {
            "message_id_being_responded_to": 0x0A0B,
            "status": 0x0000,
            "affected_sop_class_uid": CT_IMAGE_STORAGE,
            "affected_sop_instance_uid": INSTANCE_EVEN,
        },
        False,
    ),
    Vector(
        "C-STORE-RSP coercion warning",  # Table 9.3-2 + PS3.4 B.2-1 B000: (0000,0901), (0000,0902)
        CStoreRSP(
            message_id_being_responded_to=9,
            status=0xB000,
            offending_elements=[0x00100010, 0x00100020],
            error_comment="Names coerced",
        ),
        command_set(
            (0x0100, us(0x8001)),
            (0x0120, us(9)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0xB000)),
            (0x0901, at((0x0010, 0x0010), (0x0010, 0x0020))),  # Offending Element, AT, VM 2
            (0x0902, text("Names coerced")),
        ),
        {
            "message_id_being_responded_to": 9,
            "status": 0xB000,
            "offending_elements": [0x00100010, 0x00100020],
            "error_comment": "Names coerced",
        },
        False,
    ),
    Vector(
        "C-STORE-RSP processing failure",  # C.5.21: class, comment, error ID, instance
        CStoreRSP(
            message_id_being_responded_to=10,
            status=0x0110,
            affected_sop_class_uid=CT_IMAGE_STORAGE,
            affected_sop_instance_uid=INSTANCE_ODD,
            error_comment="Disk full",
            error_id=0x0E0F,
        ),
        command_set(
            (0x0002, ui(CT_IMAGE_STORAGE)),
            (0x0100, us(0x8001)),
            (0x0120, us(10)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0110)),
            (0x0902, text("Disk full")),
            (0x0903, us(0x0E0F)),  # Error ID
            (0x1000, ui(INSTANCE_ODD)),
        ),
        {
            "message_id_being_responded_to": 10,
            "status": 0x0110,
            "affected_sop_class_uid": CT_IMAGE_STORAGE,
            "affected_sop_instance_uid": INSTANCE_ODD,
            "error_comment": "Disk full",
            "error_id": 0x0E0F,
        },
        False,
    ),
    # ---- C-FIND (§9.3.2) ------------------------------------------------------------------------
    Vector(
        "C-FIND-RQ",  # Table 9.3-3
        CFindRQ(message_id=0x0102, affected_sop_class_uid=STUDY_ROOT_FIND, priority=0x0002),
        command_set(
            (0x0002, ui(STUDY_ROOT_FIND)),
            (0x0100, us(0x0020)),  # C-FIND-RQ
            (0x0110, us(0x0102)),
            (0x0700, us(0x0002)),  # Priority: LOW
            (0x0800, DATA_SET),  # the Identifier follows
        ),
        {"message_id": 0x0102, "affected_sop_class_uid": STUDY_ROOT_FIND, "priority": 0x0002},
        True,
    ),
    Vector(
        "C-FIND-RSP pending",  # Table 9.3-4, FF00 with an Identifier
        CFindRSP(
            message_id_being_responded_to=0x0102,
            status=0xFF00,
            affected_sop_class_uid=STUDY_ROOT_FIND,
            has_dataset=True,
        ),
        command_set(
            (0x0002, ui(STUDY_ROOT_FIND)),
            (0x0100, us(0x8020)),  # C-FIND-RSP
            (0x0120, us(0x0102)),
            (0x0800, DATA_SET),
            (0x0900, us(0xFF00)),
        ),
        {
            "message_id_being_responded_to": 0x0102,
            "status": 0xFF00,
            "affected_sop_class_uid": STUDY_ROOT_FIND,
        },
        True,
    ),
    Vector(
        "C-FIND-RSP identifier does not match",  # PS3.4 C.4.1.1.4 A900: (0000,0901), (0000,0902)
        CFindRSP(
            message_id_being_responded_to=0x0103,
            status=0xA900,
            offending_elements=[0x00080052],
            error_comment="Bad level",
        ),
        command_set(
            (0x0100, us(0x8020)),
            (0x0120, us(0x0103)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0xA900)),
            (0x0901, at((0x0008, 0x0052))),  # Query/Retrieve Level
            (0x0902, text("Bad level")),
        ),
        {
            "message_id_being_responded_to": 0x0103,
            "status": 0xA900,
            "offending_elements": [0x00080052],
            "error_comment": "Bad level",
        },
        False,
    ),
    Vector(
        "C-FIND-RSP processing failure",  # C.5.21 with Error ID
        CFindRSP(
            message_id_being_responded_to=0x0104,
            status=0x0110,
            error_comment="Index locked",
            error_id=77,
        ),
        command_set(
            (0x0100, us(0x8020)),
            (0x0120, us(0x0104)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0110)),
            (0x0902, text("Index locked")),
            (0x0903, us(77)),
        ),
        {
            "message_id_being_responded_to": 0x0104,
            "status": 0x0110,
            "error_comment": "Index locked",
            "error_id": 77,
        },
        False,
    ),
    # ---- C-CANCEL (§9.3.2.3, Tables 9.3-5, 9.3-8, 9.3-11: one message for FIND, GET and MOVE) -----
    Vector(
        "C-CANCEL-RQ",
        CCancelRQ(message_id_being_responded_to=0x0102),
        command_set(
            (0x0100, us(0x0FFF)),  # C-CANCEL-RQ
            (0x0120, us(0x0102)),  # the request being cancelled
            (0x0800, NO_DATA_SET),
        ),
        {"message_id_being_responded_to": 0x0102},
        False,
    ),
    # ---- C-GET (§9.3.3) -------------------------------------------------------------------------
    Vector(
        "C-GET-RQ",  # Table 9.3-6
        CGetRQ(message_id=0x0304, affected_sop_class_uid=PATIENT_ROOT_GET, priority=0x0000),
        command_set(
            (0x0002, ui(PATIENT_ROOT_GET)),
            (0x0100, us(0x0010)),  # C-GET-RQ
            (0x0110, us(0x0304)),
            (0x0700, us(0x0000)),  # Priority: MEDIUM
            (0x0800, DATA_SET),
        ),
        {"message_id": 0x0304, "affected_sop_class_uid": PATIENT_ROOT_GET, "priority": 0x0000},
        True,
    ),
    Vector(
        "C-GET-RSP pending",  # Table 9.3-7; pending responses carry all four counters
        CGetRSP(
            message_id_being_responded_to=0x0304,
            status=0xFF00,
            affected_sop_class_uid=PATIENT_ROOT_GET,
            number_of_remaining_suboperations=300,
            number_of_completed_suboperations=21,
            number_of_failed_suboperations=3,
            number_of_warning_suboperations=4,
        ),
        command_set(
            (0x0002, ui(PATIENT_ROOT_GET)),
            (0x0100, us(0x8010)),  # C-GET-RSP
            (0x0120, us(0x0304)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0xFF00)),
            (0x1020, us(300)),  # Number of Remaining Sub-operations
            (0x1021, us(21)),  # Number of Completed Sub-operations
            (0x1022, us(3)),  # Number of Failed Sub-operations
            (0x1023, us(4)),  # Number of Warning Sub-operations
        ),
        {
            "message_id_being_responded_to": 0x0304,
            "status": 0xFF00,
            "affected_sop_class_uid": PATIENT_ROOT_GET,
            "number_of_remaining_suboperations": 300,
            "number_of_completed_suboperations": 21,
            "number_of_failed_suboperations": 3,
            "number_of_warning_suboperations": 4,
        },
        False,
    ),
    Vector(
        # PS3.4 C.4.3.1.4 Cxxx: (0000,0901), (0000,0902); a final failure also reports the counts,
        # with the Failed SOP Instance UID List in a data set.
        "C-GET-RSP unable to process",
        CGetRSP(
            message_id_being_responded_to=0x0305,
            status=0xC012,
            affected_sop_class_uid=PATIENT_ROOT_GET,
            number_of_remaining_suboperations=5,
            number_of_completed_suboperations=6,
            number_of_failed_suboperations=7,
            number_of_warning_suboperations=8,
            offending_elements=[0x0020000D],
            error_comment="Study gone",
            has_dataset=True,
        ),
        command_set(
            (0x0002, ui(PATIENT_ROOT_GET)),
            (0x0100, us(0x8010)),
            (0x0120, us(0x0305)),
            (0x0800, DATA_SET),
            (0x0900, us(0xC012)),
            (0x0901, at((0x0020, 0x000D))),  # Study Instance UID
            (0x0902, text("Study gone")),
            (0x1020, us(5)),
            (0x1021, us(6)),
            (0x1022, us(7)),
            (0x1023, us(8)),
        ),
        {
            "message_id_being_responded_to": 0x0305,
            "status": 0xC012,
            "affected_sop_class_uid": PATIENT_ROOT_GET,
            "number_of_remaining_suboperations": 5,
            "number_of_completed_suboperations": 6,
            "number_of_failed_suboperations": 7,
            "number_of_warning_suboperations": 8,
            "offending_elements": [0x0020000D],
            "error_comment": "Study gone",
        },
        True,
    ),
    Vector(
        "C-GET-RSP cancelled",  # FE00: the counts, Remaining = sub-operations never started
        CGetRSP(
            message_id_being_responded_to=0x0306,
            status=0xFE00,
            number_of_remaining_suboperations=0x0102,
            number_of_completed_suboperations=0x0304,
            number_of_failed_suboperations=0,
            number_of_warning_suboperations=0x0506,
        ),
        command_set(
            (0x0100, us(0x8010)),
            (0x0120, us(0x0306)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0xFE00)),
            (0x1020, us(0x0102)),
            (0x1021, us(0x0304)),
            (0x1022, us(0)),
            (0x1023, us(0x0506)),
        ),
        {
            "message_id_being_responded_to": 0x0306,
            "status": 0xFE00,
            "number_of_remaining_suboperations": 0x0102,
            "number_of_completed_suboperations": 0x0304,
            "number_of_failed_suboperations": 0,
            "number_of_warning_suboperations": 0x0506,
        },
        False,
    ),
    # ---- C-MOVE (§9.3.4) ------------------------------------------------------------------------
    Vector(
        "C-MOVE-RQ",  # Table 9.3-9
        CMoveRQ(
            message_id=0x0506,
            affected_sop_class_uid=STUDY_ROOT_MOVE,
            priority=0x0001,
            move_destination="ARCHIVE",
        ),
        command_set(
            (0x0002, ui(STUDY_ROOT_MOVE)),
            (0x0100, us(0x0021)),  # C-MOVE-RQ
            (0x0110, us(0x0506)),
            (0x0600, text("ARCHIVE")),  # Move Destination, AE, 7 characters + space
            (0x0700, us(0x0001)),
            (0x0800, DATA_SET),
        ),
        {
            "message_id": 0x0506,
            "affected_sop_class_uid": STUDY_ROOT_MOVE,
            "priority": 0x0001,
            "move_destination": "ARCHIVE",
        },
        True,
    ),
    Vector(
        "C-MOVE-RSP pending",  # Table 9.3-10
        CMoveRSP(
            message_id_being_responded_to=0x0506,
            status=0xFF00,
            affected_sop_class_uid=STUDY_ROOT_MOVE,
            number_of_remaining_suboperations=11,
            number_of_completed_suboperations=22,
            number_of_failed_suboperations=33,
            number_of_warning_suboperations=44,
        ),
        command_set(
            (0x0002, ui(STUDY_ROOT_MOVE)),
            (0x0100, us(0x8021)),  # C-MOVE-RSP
            (0x0120, us(0x0506)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0xFF00)),
            (0x1020, us(11)),
            (0x1021, us(22)),
            (0x1022, us(33)),
            (0x1023, us(44)),
        ),
        {
            "message_id_being_responded_to": 0x0506,
            "status": 0xFF00,
            "affected_sop_class_uid": STUDY_ROOT_MOVE,
            "number_of_remaining_suboperations": 11,
            "number_of_completed_suboperations": 22,
            "number_of_failed_suboperations": 33,
            "number_of_warning_suboperations": 44,
        },
        False,
    ),
    Vector(
        "C-MOVE-RSP warning",  # PS3.4 C.4.2.1.5 B000: Completed, Failed, Warning; C.4.1 comment
        CMoveRSP(
            message_id_being_responded_to=0x0507,
            status=0xB000,
            number_of_completed_suboperations=9,
            number_of_failed_suboperations=2,
            number_of_warning_suboperations=1,
            error_comment="2 refused",
            has_dataset=True,
        ),
        command_set(
            (0x0100, us(0x8021)),
            (0x0120, us(0x0507)),
            (0x0800, DATA_SET),  # Failed SOP Instance UID List
            (0x0900, us(0xB000)),
            (0x0902, text("2 refused")),
            (0x1021, us(9)),
            (0x1022, us(2)),
            (0x1023, us(1)),
        ),
        {
            "message_id_being_responded_to": 0x0507,
            "status": 0xB000,
            "number_of_remaining_suboperations": None,
            "number_of_completed_suboperations": 9,
            "number_of_failed_suboperations": 2,
            "number_of_warning_suboperations": 1,
            "error_comment": "2 refused",
        },
        True,
    ),
    Vector(
        "C-MOVE-RSP unable to process",  # Cxxx: (0000,0901), (0000,0902), all four counts
        CMoveRSP(
            message_id_being_responded_to=0x0508,
            status=0xC001,
            affected_sop_class_uid=STUDY_ROOT_MOVE,
            offending_elements=[0x00080052, 0x0020000E],
            error_comment="Series lost",
            number_of_remaining_suboperations=0x1001,
            number_of_completed_suboperations=0x2002,
            number_of_failed_suboperations=0x3003,
            number_of_warning_suboperations=0x4004,
            has_dataset=True,
        ),
        command_set(
            (0x0002, ui(STUDY_ROOT_MOVE)),
            (0x0100, us(0x8021)),
            (0x0120, us(0x0508)),
            (0x0800, DATA_SET),
            (0x0900, us(0xC001)),
            (0x0901, at((0x0008, 0x0052), (0x0020, 0x000E))),
            (0x0902, text("Series lost")),
            (0x1020, us(0x1001)),
            (0x1021, us(0x2002)),
            (0x1022, us(0x3003)),
            (0x1023, us(0x4004)),
        ),
        {
            "message_id_being_responded_to": 0x0508,
            "status": 0xC001,
            "affected_sop_class_uid": STUDY_ROOT_MOVE,
            "offending_elements": [0x00080052, 0x0020000E],
            "error_comment": "Series lost",
            "number_of_remaining_suboperations": 0x1001,
            "number_of_completed_suboperations": 0x2002,
            "number_of_failed_suboperations": 0x3003,
            "number_of_warning_suboperations": 0x4004,
        },
        True,
    ),
    Vector(
        "C-MOVE-RSP processing failure",  # C.5.21: Error Comment and Error ID
        CMoveRSP(
            message_id_being_responded_to=0x0509,
            status=0x0110,
            affected_sop_class_uid=STUDY_ROOT_MOVE,
            error_comment="Peer down",
            error_id=0x00FE,
        ),
        command_set(
            (0x0002, ui(STUDY_ROOT_MOVE)),
            (0x0100, us(0x8021)),
            (0x0120, us(0x0509)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0110)),
            (0x0902, text("Peer down")),
            (0x0903, us(0x00FE)),
        ),
        {
            "message_id_being_responded_to": 0x0509,
            "status": 0x0110,
            "affected_sop_class_uid": STUDY_ROOT_MOVE,
            "error_comment": "Peer down",
            "error_id": 0x00FE,
            "number_of_remaining_suboperations": None,
            "number_of_completed_suboperations": None,
            "number_of_failed_suboperations": None,
            "number_of_warning_suboperations": None,
        },
        False,
    ),
    # ---- N-EVENT-REPORT (§10.3.1) ---------------------------------------------------------------
    Vector(
        "N-EVENT-REPORT-RQ",  # Table 10.3-1: a storage commitment result (event type 1)
        NEventReportRQ(
            message_id=0x0708,
            affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
            affected_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
            event_type_id=1,
            has_dataset=True,
        ),
        command_set(
            (0x0002, ui(STORAGE_COMMITMENT_PUSH)),
            (0x0100, us(0x0100)),  # N-EVENT-REPORT-RQ
            (0x0110, us(0x0708)),
            (0x0800, DATA_SET),  # Event Information
            (0x1000, ui(STORAGE_COMMITMENT_PUSH_INSTANCE)),
            (0x1002, us(1)),  # Event Type ID
        ),
        {
            "message_id": 0x0708,
            "affected_sop_class_uid": STORAGE_COMMITMENT_PUSH,
            "affected_sop_instance_uid": STORAGE_COMMITMENT_PUSH_INSTANCE,
            "event_type_id": 1,
        },
        True,
    ),
    Vector(
        "N-EVENT-REPORT-RSP",  # Table 10.3-2
        NEventReportRSP(
            message_id_being_responded_to=0x0708,
            status=0x0000,
            affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
            affected_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
            event_type_id=2,
        ),
        command_set(
            (0x0002, ui(STORAGE_COMMITMENT_PUSH)),
            (0x0100, us(0x8100)),  # N-EVENT-REPORT-RSP
            (0x0120, us(0x0708)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0000)),
            (0x1000, ui(STORAGE_COMMITMENT_PUSH_INSTANCE)),
            (0x1002, us(2)),
        ),
        {
            "message_id_being_responded_to": 0x0708,
            "status": 0x0000,
            "affected_sop_class_uid": STORAGE_COMMITMENT_PUSH,
            "affected_sop_instance_uid": STORAGE_COMMITMENT_PUSH_INSTANCE,
            "event_type_id": 2,
        },
        False,
    ),
    # ---- N-GET (§10.3.2) ------------------------------------------------------------------------
    Vector(
        "N-GET-RQ",  # Table 10.3-3: Printer Status and Printer Status Info of the Printer
        NGetRQ(
            message_id=0x090A,
            requested_sop_class_uid=PRINTER,
            requested_sop_instance_uid=PRINTER_INSTANCE,
            attribute_identifier_list=[0x21100010, 0x21100020],
        ),
        command_set(
            (0x0003, ui(PRINTER)),  # Requested SOP Class UID
            (0x0100, us(0x0110)),  # N-GET-RQ
            (0x0110, us(0x090A)),
            (0x0800, NO_DATA_SET),
            (0x1001, ui(PRINTER_INSTANCE)),  # Requested SOP Instance UID
            (0x1005, at((0x2110, 0x0010), (0x2110, 0x0020))),  # Attribute Identifier List
        ),
        {
            "message_id": 0x090A,
            "requested_sop_class_uid": PRINTER,
            "requested_sop_instance_uid": PRINTER_INSTANCE,
            "attribute_identifier_list": [0x21100010, 0x21100020],
        },
        False,
    ),
    Vector(
        "N-GET-RSP",  # Table 10.3-4, with the Attribute List
        NGetRSP(
            message_id_being_responded_to=0x090A,
            status=0x0000,
            affected_sop_class_uid=PRINTER,
            affected_sop_instance_uid=PRINTER_INSTANCE,
            has_dataset=True,
        ),
        command_set(
            (0x0002, ui(PRINTER)),
            (0x0100, us(0x8110)),  # N-GET-RSP
            (0x0120, us(0x090A)),
            (0x0800, DATA_SET),
            (0x0900, us(0x0000)),
            (0x1000, ui(PRINTER_INSTANCE)),
        ),
        {
            "message_id_being_responded_to": 0x090A,
            "status": 0x0000,
            "affected_sop_class_uid": PRINTER,
            "affected_sop_instance_uid": PRINTER_INSTANCE,
        },
        True,
    ),
    Vector(
        "N-GET-RSP processing failure",  # C.5.21, every field it names
        NGetRSP(
            message_id_being_responded_to=0x090B,
            status=0x0110,
            affected_sop_class_uid=PRINTER,
            affected_sop_instance_uid=PRINTER_INSTANCE,
            error_comment="Printer offline",
            error_id=0x1234,
        ),
        command_set(
            (0x0002, ui(PRINTER)),
            (0x0100, us(0x8110)),
            (0x0120, us(0x090B)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0110)),
            (0x0902, text("Printer offline")),
            (0x0903, us(0x1234)),
            (0x1000, ui(PRINTER_INSTANCE)),
        ),
        {
            "message_id_being_responded_to": 0x090B,
            "status": 0x0110,
            "affected_sop_class_uid": PRINTER,
            "affected_sop_instance_uid": PRINTER_INSTANCE,
            "error_comment": "Printer offline",
            "error_id": 0x1234,
        },
        False,
    ),
    # ---- N-SET (§10.3.3) ------------------------------------------------------------------------
    Vector(
        "N-SET-RQ",  # Table 10.3-5: an MPPS update with its Modification List
        NSetRQ(
            message_id=0x0B0C, requested_sop_class_uid=MPPS, requested_sop_instance_uid=INSTANCE_ODD
        ),
        command_set(
            (0x0003, ui(MPPS)),
            (0x0100, us(0x0120)),  # N-SET-RQ
            (0x0110, us(0x0B0C)),
            (0x0800, DATA_SET),
            (0x1001, ui(INSTANCE_ODD)),
        ),
        {
            "message_id": 0x0B0C,
            "requested_sop_class_uid": MPPS,
            "requested_sop_instance_uid": INSTANCE_ODD,
        },
        True,
    ),
    Vector(
        "N-SET-RSP",  # Table 10.3-6
        NSetRSP(
            message_id_being_responded_to=0x0B0C,
            status=0x0000,
            affected_sop_class_uid=MPPS,
            affected_sop_instance_uid=INSTANCE_ODD,
        ),
        command_set(
            (0x0002, ui(MPPS)),
            (0x0100, us(0x8120)),  # N-SET-RSP
            (0x0120, us(0x0B0C)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0000)),
            (0x1000, ui(INSTANCE_ODD)),
        ),
        {
            "message_id_being_responded_to": 0x0B0C,
            "status": 0x0000,
            "affected_sop_class_uid": MPPS,
            "affected_sop_instance_uid": INSTANCE_ODD,
        },
        False,
    ),
    Vector(
        # C.5 (service-specific failure): Offending Element, Error Comment. PS3.4 F.7.2.2.4 C310:
        # the Performed Procedure Step may no longer be updated.
        "N-SET-RSP failure",
        NSetRSP(
            message_id_being_responded_to=0x0B0D,
            status=0xC310,
            offending_elements=[0x00400252],
            error_comment="Step is COMPLETED",
        ),
        command_set(
            (0x0100, us(0x8120)),
            (0x0120, us(0x0B0D)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0xC310)),
            (0x0901, at((0x0040, 0x0252))),  # Performed Procedure Step Status
            (0x0902, text("Step is COMPLETED")),
        ),
        {
            "message_id_being_responded_to": 0x0B0D,
            "status": 0xC310,
            "offending_elements": [0x00400252],
            "error_comment": "Step is COMPLETED",
        },
        False,
    ),
    # ---- N-ACTION (§10.3.4) ---------------------------------------------------------------------
    Vector(
        "N-ACTION-RQ",  # Table 10.3-7: storage commitment request (action type 1)
        NActionRQ(
            message_id=0x0D0E,
            requested_sop_class_uid=STORAGE_COMMITMENT_PUSH,
            requested_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
            action_type_id=1,
            has_dataset=True,
        ),
        command_set(
            (0x0003, ui(STORAGE_COMMITMENT_PUSH)),
            (0x0100, us(0x0130)),  # N-ACTION-RQ
            (0x0110, us(0x0D0E)),
            (0x0800, DATA_SET),  # Action Information
            (0x1001, ui(STORAGE_COMMITMENT_PUSH_INSTANCE)),
            (0x1008, us(1)),  # Action Type ID
        ),
        {
            "message_id": 0x0D0E,
            "requested_sop_class_uid": STORAGE_COMMITMENT_PUSH,
            "requested_sop_instance_uid": STORAGE_COMMITMENT_PUSH_INSTANCE,
            "action_type_id": 1,
        },
        True,
    ),
    Vector(
        "N-ACTION-RSP",  # Table 10.3-8
        NActionRSP(
            message_id_being_responded_to=0x0D0E,
            status=0x0000,
            affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
            affected_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
            action_type_id=3,
        ),
        command_set(
            (0x0002, ui(STORAGE_COMMITMENT_PUSH)),
            (0x0100, us(0x8130)),  # N-ACTION-RSP
            (0x0120, us(0x0D0E)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0000)),
            (0x1000, ui(STORAGE_COMMITMENT_PUSH_INSTANCE)),
            (0x1008, us(3)),
        ),
        {
            "message_id_being_responded_to": 0x0D0E,
            "status": 0x0000,
            "affected_sop_class_uid": STORAGE_COMMITMENT_PUSH,
            "affected_sop_instance_uid": STORAGE_COMMITMENT_PUSH_INSTANCE,
            "action_type_id": 3,
        },
        False,
    ),
    # ---- N-CREATE (§10.3.5) ---------------------------------------------------------------------
    Vector(
        "N-CREATE-RQ",  # Table 10.3-9: the SCU names the instance
        NCreateRQ(
            message_id=0x0F10,
            affected_sop_class_uid=MPPS,
            affected_sop_instance_uid=INSTANCE_EVEN,
            has_dataset=True,
        ),
        command_set(
            (0x0002, ui(MPPS)),
            (0x0100, us(0x0140)),  # N-CREATE-RQ
            (0x0110, us(0x0F10)),
            (0x0800, DATA_SET),  # Attribute List
            (0x1000, ui(INSTANCE_EVEN)),
        ),
        {
            "message_id": 0x0F10,
            "affected_sop_class_uid": MPPS,
            "affected_sop_instance_uid": INSTANCE_EVEN,
        },
        True,
    ),
    Vector(
        "N-CREATE-RQ without instance",  # Table 10.3-9: (0000,1000) left to the SCP
        NCreateRQ(message_id=0x0F11, affected_sop_class_uid=MPPS),
        command_set(
            (0x0002, ui(MPPS)),
            (0x0100, us(0x0140)),
            (0x0110, us(0x0F11)),
            (0x0800, NO_DATA_SET),
        ),
        {"message_id": 0x0F11, "affected_sop_class_uid": MPPS, "affected_sop_instance_uid": None},
        False,
    ),
    Vector(
        "N-CREATE-RSP",  # Table 10.3-10: the SCP returns the instance it created
        NCreateRSP(
            message_id_being_responded_to=0x0F11,
            status=0x0000,
            affected_sop_class_uid=MPPS,
            affected_sop_instance_uid=INSTANCE_ODD,
        ),
        command_set(
            (0x0002, ui(MPPS)),
            (0x0100, us(0x8140)),  # N-CREATE-RSP
            (0x0120, us(0x0F11)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0000)),
            (0x1000, ui(INSTANCE_ODD)),
        ),
        {
            "message_id_being_responded_to": 0x0F11,
            "status": 0x0000,
            "affected_sop_class_uid": MPPS,
            "affected_sop_instance_uid": INSTANCE_ODD,
        },
        False,
    ),
    # ---- N-DELETE (§10.3.6) ---------------------------------------------------------------------
    Vector(
        "N-DELETE-RQ",  # Table 10.3-11
        NDeleteRQ(
            message_id=0x1112,
            requested_sop_class_uid=BASIC_FILM_SESSION,
            requested_sop_instance_uid=INSTANCE_EVEN,
        ),
        command_set(
            (0x0003, ui(BASIC_FILM_SESSION)),
            (0x0100, us(0x0150)),  # N-DELETE-RQ
            (0x0110, us(0x1112)),
            (0x0800, NO_DATA_SET),
            (0x1001, ui(INSTANCE_EVEN)),
        ),
        {
            "message_id": 0x1112,
            "requested_sop_class_uid": BASIC_FILM_SESSION,
            "requested_sop_instance_uid": INSTANCE_EVEN,
        },
        False,
    ),
    Vector(
        "N-DELETE-RSP",  # Table 10.3-12
        NDeleteRSP(
            message_id_being_responded_to=0x1112,
            status=0x0000,
            affected_sop_class_uid=BASIC_FILM_SESSION,
            affected_sop_instance_uid=INSTANCE_EVEN,
        ),
        command_set(
            (0x0002, ui(BASIC_FILM_SESSION)),
            (0x0100, us(0x8150)),  # N-DELETE-RSP
            (0x0120, us(0x1112)),
            (0x0800, NO_DATA_SET),
            (0x0900, us(0x0000)),
            (0x1000, ui(INSTANCE_EVEN)),
        ),
        {
            "message_id_being_responded_to": 0x1112,
            "status": 0x0000,
            "affected_sop_class_uid": BASIC_FILM_SESSION,
            "affected_sop_instance_uid": INSTANCE_EVEN,
        },
        False,
    ),
]


def _walk(raw: bytes) -> dict[int, bytes]:
    """The test's own walk over a vector's elements: {element number: value bytes}."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(raw):
        _group, elem, length = struct.unpack_from("<HHI", raw, pos)
        out[elem] = raw[pos + 8 : pos + 8 + length]
        pos += 8 + length
    assert pos == len(raw)
    return out


# Checks of the vectors themselves, at import: a broken vector fails collection, not a test.
assert len({v.id for v in VECTORS}) == len(VECTORS), "vector ids must be unique"
for _v in VECTORS:
    # the group length counts every byte after its own element (12 bytes)
    assert struct.unpack_from("<I", _v.raw, 8)[0] == len(_v.raw) - 12, _v.id
    assert all(len(value) % 2 == 0 for value in _walk(_v.raw).values()), _v.id


def test_every_message_class_has_a_vector() -> None:
    """All 23 classes of the codec, each met by a vector whose Command Field is the class's."""
    covered = {type(v.message) for v in VECTORS}
    assert covered == set(MESSAGE_CLASSES.values())
    assert len(covered) == 23
    for v in VECTORS:
        assert _walk(v.raw)[0x0100] == us(type(v.message).COMMAND_FIELD), v.id


def test_sub_operation_counters_differ_in_every_vector_that_carries_them() -> None:
    """A swap of two counters' tags must change the bytes: within one vector, no two counters
    share a value, and at least one vector carries all four."""
    names = [
        f"number_of_{n}_suboperations" for n in ("remaining", "completed", "failed", "warning")
    ]
    full = 0
    for v in VECTORS:
        present = [v.fields[n] for n in names if v.fields.get(n) is not None]
        assert len(set(present)) == len(present), v.id
        full += len(present) == 4
    assert full >= 4  # C-GET-RSP and C-MOVE-RSP, pending and failure


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.id)
def test_encode_gives_the_vector(vector: Vector) -> None:
    assert vector.message.encode() == vector.raw


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.id)
def test_decode_gives_each_field(vector: Vector) -> None:
    message = decode_message(vector.raw)
    assert type(message) is type(vector.message)
    for name, value in vector.fields.items():
        assert getattr(message, name) == value, f"{vector.id}: {name}"
    assert message.has_dataset is vector.has_dataset
    # and nothing else was read into a field the vector does not name
    assert message == vector.message
