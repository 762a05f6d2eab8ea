"""DIMSE status codes and their categories (PS3.7 Annex C, PS3.4 service statuses).

Rules: a status is an int on the wire; ``category()`` is the one place that decides whether it
means success, pending, cancel, warning or failure (PS3.7 C.1).
"""

from __future__ import annotations

from enum import Enum, IntEnum


class StatusCategory(Enum):
    SUCCESS = "Success"
    PENDING = "Pending"
    CANCEL = "Cancel"
    WARNING = "Warning"
    FAILURE = "Failure"


class Status(IntEnum):
    """Common status codes (PS3.7 Annex C; PS3.4 for service-specific ones)."""

    SUCCESS = 0x0000
    WARNING = 0x0001
    ATTRIBUTE_LIST_ERROR = 0x0107
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    NO_SUCH_EVENT_TYPE = 0x0113
    NO_SUCH_ARGUMENT = 0x0114
    INVALID_ARGUMENT_VALUE = 0x0115
    INVALID_OBJECT_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NO_SUCH_ACTION = 0x0123
    NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    RESOURCE_LIMITATION = 0x0213
    OUT_OF_RESOURCES = 0xA700
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
    UNABLE_TO_PROCESS = 0xC000
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01


# Per-service names. A code's meaning depends on the service that answers it (0xB000 is
# "coercion of data elements" in C-STORE and "sub-operations complete, one or more failures" in
# C-MOVE/C-GET); these enums give each service the names of its own PS3.4 table, so code reads
# as the standard does. Their values compare equal to the ints and to ``Status``'s members.


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 B.2.3, Table B.2-1)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700  # Refused: A7xx
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: A9xx
    CANNOT_UNDERSTAND = 0xC000  # Error: Cxxx
    COERCION_OF_DATA_ELEMENTS = 0xB000  # Warning
    ELEMENTS_DISCARDED = 0xB006  # Warning
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007  # Warning


class FindStatus(IntEnum):
    """C-FIND response statuses (PS3.4 C.4.1.1.4, Table C.4-1)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700  # Refused
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Failed
    UNABLE_TO_PROCESS = 0xC000  # Failed: Cxxx
    CANCEL = 0xFE00  # Matching terminated due to Cancel request
    PENDING = 0xFF00  # Matches are continuing
    PENDING_OPTIONAL_KEYS_NOT_SUPPORTED = 0xFF01  # ... optional keys were not supported


class RetrieveStatus(IntEnum):
    """C-MOVE and C-GET response statuses (PS3.4 C.4.2.1.5 Table C.4-2, C.4.3.1.4 Table C.4-3;
    Move Destination Unknown is C-MOVE's only)."""

    SUCCESS = 0x0000  # Sub-operations complete, no failures
    OUT_OF_RESOURCES_MATCHES = 0xA701  # Refused: unable to calculate number of matches
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # Refused: unable to perform sub-operations
    MOVE_DESTINATION_UNKNOWN = 0xA801  # Refused (C-MOVE)
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Failed
    UNABLE_TO_PROCESS = 0xC000  # Failed: Cxxx
    CANCEL = 0xFE00  # Sub-operations terminated due to Cancel indication
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000  # Warning: one or more failures or warnings
    PENDING = 0xFF00  # Sub-operations are continuing


_WARNINGS = {0x0001, 0x0107, 0x0116}
_NAMES = {
    0x0000: "Success",
    0x0001: "Warning",
    0x0105: "No such attribute",
    0x0106: "Invalid attribute value",
    0x0107: "Attribute list error",
    0x0110: "Processing failure",
    0x0111: "Duplicate SOP instance",
    0x0112: "No such SOP instance",
    0x0113: "No such event type",
    0x0114: "No such argument",
    0x0115: "Invalid argument value",
    0x0116: "Attribute value out of range",
    0x0117: "Invalid object instance",
    0x0118: "No such SOP class",
    0x0119: "Class-instance conflict",
    0x0120: "Missing attribute",
    0x0121: "Missing attribute value",
    0x0122: "SOP class not supported",
    0x0123: "No such action",
    0x0124: "Refused: not authorized",
    0x0210: "Duplicate invocation",
    0x0211: "Unrecognized operation",
    0x0212: "Mistyped argument",
    0x0213: "Resource limitation",
    0xA700: "Out of resources",
    0xA701: "Out of resources: unable to calculate number of matches",
    0xA702: "Out of resources: unable to perform sub-operations",
    0xA801: "Move destination unknown",
    0xA900: "Identifier does not match SOP class",
    0xB000: "Coercion of data elements / sub-operations complete with failures",
    0xB006: "Elements discarded",
    0xB007: "Data set does not match SOP class",
    0xC000: "Unable to process",
    0xFE00: "Cancel",
    0xFF00: "Pending",
    0xFF01: "Pending (optional keys not supported)",
}


def category(code: int) -> StatusCategory:
    """The category of a status code (PS3.7 C.1 and Annex C)."""
    if code == 0x0000:
        return StatusCategory.SUCCESS
    if code in (0xFF00, 0xFF01):
        return StatusCategory.PENDING
    if code == 0xFE00:
        return StatusCategory.CANCEL
    if code in _WARNINGS or (code & 0xF000) == 0xB000:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


def describe(code: int) -> str:
    """E.g. ``"0xA700 Out of resources (Failure)"``."""
    name = _NAMES.get(code)
    if name is None and (code & 0xF000) == 0xC000:
        name = "Unable to process"
    return f"0x{code:04X} {name or 'Unknown status'} ({category(code).value})"
