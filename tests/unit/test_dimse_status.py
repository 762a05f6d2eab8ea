"""DIMSE status classes (PS3.7 Annex C, "Status Type Encoding"): every 16-bit code falls in the
class the standard's convention gives it."""

from __future__ import annotations

import pytest

from dicomnet.dimse.status import Status, StatusCategory, category, describe

S = StatusCategory


def standard_class(code: int) -> StatusCategory | None:
    """PS3.7 Annex C, the Status Class convention, read literally:

    Success 0000; Warning 0001 or Bxxx or 0107 or 0116; Failure Axxx or Cxxx or 01xx (except
    0107 and 0116) or 02xx; Cancel FE00; Pending FF00 and FF01. Other values are not assigned
    ("Implementations shall not use Status Codes with values not listed"): None.
    """
    if code == 0x0000:
        return S.SUCCESS
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return S.WARNING
    if 0xA000 <= code <= 0xAFFF or 0xC000 <= code <= 0xCFFF or 0x0100 <= code <= 0x02FF:
        return S.FAILURE
    if code == 0xFE00:
        return S.CANCEL
    if code in (0xFF00, 0xFF01):
        return S.PENDING
    return None


def test_every_assigned_code_is_in_its_standard_class() -> None:
    assigned = 0
    for code in range(0x10000):
        expected = standard_class(code)
        if expected is not None:
            assigned += 1
            assert category(code) is expected, f"0x{code:04X}"
    # 1 + (3 + 4096) + (4096 * 2 + 512 - 2) + 1 + 2
    assert assigned == 1 + 4099 + 8192 + 510 + 1 + 2


def test_unassigned_codes_count_as_failures() -> None:
    """A code outside the convention is a peer's error; treating it as success or pending would
    be wrong, so dicomnet treats it as a failure."""
    for code in (0x0002, 0x00FF, 0x0300, 0x1234, 0x9FFF, 0xD000, 0xFDFF, 0xFE01, 0xFF02, 0xFFFF):
        assert standard_class(code) is None
        assert category(code) is S.FAILURE


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0x0000, S.SUCCESS),
        (0xFF00, S.PENDING),
        (0xFF01, S.PENDING),
        (0xFE00, S.CANCEL),
        (0x0001, S.WARNING),
        (0xB000, S.WARNING),
        (0xB006, S.WARNING),
        (0xB007, S.WARNING),
        (0xBFFF, S.WARNING),
        (0x0107, S.WARNING),  # attribute list error
        (0x0116, S.WARNING),  # attribute value out of range
        (0xA000, S.FAILURE),
        (0xA700, S.FAILURE),
        (0xA801, S.FAILURE),
        (0xAFFF, S.FAILURE),
        (0xC000, S.FAILURE),
        (0xCFFF, S.FAILURE),
        (0x0100, S.FAILURE),
        (0x0106, S.FAILURE),
        (0x0108, S.FAILURE),
        (0x0115, S.FAILURE),
        (0x0117, S.FAILURE),
        (0x0122, S.FAILURE),
        (0x01FF, S.FAILURE),
        (0x0200, S.FAILURE),
        (0x0210, S.FAILURE),
        (0x0213, S.FAILURE),
        (0x02FF, S.FAILURE),
    ],
)
def test_boundaries(code: int, expected: StatusCategory) -> None:
    assert category(code) is expected


def test_named_statuses_are_in_their_class() -> None:
    """The enum's members agree with the convention (PS3.7 Annex C, PS3.4 service statuses)."""
    for status in Status:
        assert standard_class(status) is not None, status.name
        assert category(status) is standard_class(status), status.name


@pytest.mark.parametrize(
    ("status", "code"),
    [
        # PS3.7 Annex C general statuses
        (Status.SUCCESS, 0x0000),
        (Status.CANCEL, 0xFE00),
        (Status.PENDING, 0xFF00),
        (Status.ATTRIBUTE_LIST_ERROR, 0x0107),
        (Status.ATTRIBUTE_VALUE_OUT_OF_RANGE, 0x0116),
        (Status.NO_SUCH_ATTRIBUTE, 0x0105),
        (Status.INVALID_ATTRIBUTE_VALUE, 0x0106),
        (Status.PROCESSING_FAILURE, 0x0110),
        (Status.DUPLICATE_SOP_INSTANCE, 0x0111),
        (Status.NO_SUCH_SOP_INSTANCE, 0x0112),
        (Status.NO_SUCH_EVENT_TYPE, 0x0113),
        (Status.NO_SUCH_ARGUMENT, 0x0114),
        (Status.INVALID_ARGUMENT_VALUE, 0x0115),
        (Status.INVALID_OBJECT_INSTANCE, 0x0117),
        (Status.NO_SUCH_SOP_CLASS, 0x0118),
        (Status.CLASS_INSTANCE_CONFLICT, 0x0119),
        (Status.MISSING_ATTRIBUTE, 0x0120),
        (Status.MISSING_ATTRIBUTE_VALUE, 0x0121),
        (Status.SOP_CLASS_NOT_SUPPORTED, 0x0122),
        (Status.NO_SUCH_ACTION, 0x0123),
        (Status.NOT_AUTHORIZED, 0x0124),
        (Status.DUPLICATE_INVOCATION, 0x0210),
        (Status.UNRECOGNIZED_OPERATION, 0x0211),
        (Status.MISTYPED_ARGUMENT, 0x0212),
        (Status.RESOURCE_LIMITATION, 0x0213),
        # PS3.4 Table B.2-1 (C-STORE) and C.4 (query/retrieve)
        (Status.OUT_OF_RESOURCES, 0xA700),
        (Status.OUT_OF_RESOURCES_MATCHES, 0xA701),
        (Status.OUT_OF_RESOURCES_SUB_OPERATIONS, 0xA702),
        (Status.MOVE_DESTINATION_UNKNOWN, 0xA801),
        (Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, 0xA900),
        (Status.COERCION_OF_DATA_ELEMENTS, 0xB000),
        (Status.ELEMENTS_DISCARDED, 0xB006),
        (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, 0xB007),
        (Status.UNABLE_TO_PROCESS, 0xC000),
        (Status.PENDING_WARNING, 0xFF01),
    ],
)
def test_status_codes(status: Status, code: int) -> None:
    assert status == code


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0x0000, "0x0000 Success (Success)"),
        (0xA700, "0xA700 Out of resources (Failure)"),
        (0xFF00, "0xFF00 Pending (Pending)"),
        (0xFE00, "0xFE00 Cancel (Cancel)"),
        (0xC123, "0xC123 Unable to process (Failure)"),  # PS3.4 "Error: Cannot understand" Cxxx
        (0xB123, "0xB123 Unknown status (Warning)"),
        (0x0107, "0x0107 Attribute list error (Warning)"),
        (0x9999, "0x9999 Unknown status (Failure)"),
    ],
)
def test_describe(code: int, text: str) -> None:
    assert describe(code) == text


def test_every_named_status_has_a_description() -> None:
    for status in Status:
        assert "Unknown" not in describe(status), status.name


def test_per_service_names_say_what_a_code_means_in_that_service() -> None:
    """0xB000 is "coercion of data elements" for C-STORE (PS3.4 Table B.2-1) and "sub-operations
    complete, one or more failures" for C-MOVE/C-GET (Tables C.4-2, C.4-3); the names compare
    equal to the codes and keep their categories."""
    from dicomnet.dimse.status import FindStatus, RetrieveStatus, StoreStatus

    assert StoreStatus.COERCION_OF_DATA_ELEMENTS == 0xB000
    assert RetrieveStatus.SUB_OPERATIONS_COMPLETE_WITH_FAILURES == 0xB000
    assert RetrieveStatus(0xB000).name == "SUB_OPERATIONS_COMPLETE_WITH_FAILURES"
    assert StoreStatus(0xB000).name == "COERCION_OF_DATA_ELEMENTS"
    assert RetrieveStatus.OUT_OF_RESOURCES_SUB_OPERATIONS == Status.OUT_OF_RESOURCES_SUB_OPERATIONS
    assert FindStatus.PENDING_OPTIONAL_KEYS_NOT_SUPPORTED == 0xFF01
    assert category(RetrieveStatus.SUB_OPERATIONS_COMPLETE_WITH_FAILURES) is S.WARNING
    assert category(RetrieveStatus.MOVE_DESTINATION_UNKNOWN) is S.FAILURE
    assert category(FindStatus.PENDING_OPTIONAL_KEYS_NOT_SUPPORTED) is S.PENDING
    assert category(StoreStatus.CANNOT_UNDERSTAND) is S.FAILURE
