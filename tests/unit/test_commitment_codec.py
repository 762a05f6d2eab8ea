"""The storage commitment data sets as bytes (``parse_request_bytes``, ``encode_report``, and the
SCU's ``encode_request``, ``parse_report_bytes``, ``transaction_uid_of``): vectors
written from PS3.5 §7 (data element and sequence encoding) by hand, and the same data sets
decoded and encoded by pydicom for any list of references (Hypothesis); the pending reports'
claim and hold."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomnet.archive.commitment import (
    CommitmentReport,
    CommitmentRequestError,
    PendingReports,
    encode_report,
    encode_request,
    parse_report,
    parse_report_bytes,
    parse_request_bytes,
    report_dataset,
    request_dataset,
    transaction_uid_of,
)
from dicomnet.dataset import decode_dataset, encode_dataset

IMPLICIT, EXPLICIT = ImplicitVRLittleEndian, ExplicitVRLittleEndian


def _implicit(group: int, element: int, value: bytes) -> bytes:
    """A data element in implicit VR little endian (PS3.5 §7.1.3): tag, 4-byte length, value."""
    return struct.pack("<HHI", group, element, len(value)) + value


def _explicit_short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """Explicit VR with a 2-byte length (PS3.5 Table 7.1-2): UI, US..."""
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _explicit_sq(group: int, element: int, body: bytes, *, undefined: bool = False) -> bytes:
    """Explicit VR SQ: VR, 2 reserved bytes, 4-byte length (PS3.5 Table 7.1-1)."""
    length = 0xFFFFFFFF if undefined else len(body)
    tail = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) if undefined else b""
    return struct.pack("<HH2s2xI", group, element, b"SQ", length) + body + tail


def _item(body: bytes, *, undefined: bool = False) -> bytes:
    """A sequence item (PS3.5 §7.5): (FFFE,E000), length, elements [, (FFFE,E00D)]."""
    if undefined:
        return (
            struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + body
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        )
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


CT = CTImageStorage.encode() + b"\0"  # "1.2.840.10008.5.1.4.1.1.2" is 25 characters: NUL pad


def test_a_report_encoded_as_ps3_5_says() -> None:
    report = CommitmentReport(
        "1.2.3", [(CTImageStorage, "1.2.4")], [(CTImageStorage, "1.25", 0x0112)]
    )
    failed_item = (
        _implicit(0x0008, 0x1150, CT)
        + _implicit(0x0008, 0x1155, b"1.25")
        + _implicit(0x0008, 0x1197, b"\x12\x01")
    )
    done_item = _implicit(0x0008, 0x1150, CT) + _implicit(0x0008, 0x1155, b"1.2.4\0")
    expected = (
        _implicit(0x0008, 0x1195, b"1.2.3\0")  # Transaction UID, NUL-padded to even length
        + _implicit(0x0008, 0x1198, _item(failed_item))  # Failed SOP Sequence: before 1199
        + _implicit(0x0008, 0x1199, _item(done_item))
    )
    assert encode_report(report, IMPLICIT) == expected
    explicit = encode_report(report, EXPLICIT)
    assert explicit is not None
    assert explicit.startswith(_explicit_short(0x0008, 0x1195, b"UI", b"1.2.3\0"))
    assert _explicit_short(0x0008, 0x1197, b"US", b"\x12\x01") in explicit
    assert encode_report(report, DeflatedExplicitVRLittleEndian) is None  # pydicom's job


def test_a_request_with_undefined_lengths_and_other_elements() -> None:
    # Explicit VR: an unknown element before, an item of undefined length, a sequence of
    # undefined length, a private UN element of undefined length inside the item (its content
    # implicit VR, PS3.5 §6.2.2), and an element after the sequence.
    un_content = _item(_implicit(0x0009, 0x0010, b"XX"))
    un = (
        struct.pack("<HH2s2xI", 0x0009, 0x1001, b"UN", 0xFFFFFFFF)
        + un_content
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    first = _item(
        _explicit_short(0x0008, 0x1150, b"UI", CT)
        + _explicit_short(0x0008, 0x1155, b"UI", b"1.2.5\0")
        + un,
        undefined=True,
    )
    second = _item(
        _explicit_short(0x0008, 0x1150, b"UI", CT) + _explicit_short(0x0008, 0x1155, b"UI", b"1.26")
    )
    raw = (
        _explicit_short(0x0008, 0x0005, b"CS", b"ISO_IR 100")
        + _explicit_short(0x0008, 0x1195, b"UI", b"2.25.9\0")
        + _explicit_sq(0x0008, 0x1199, first + second, undefined=True)
        + _explicit_short(0x0088, 0x0130, b"SH", b"DISK")
    )
    assert parse_request_bytes(raw, EXPLICIT) == (
        "2.25.9",
        [(CTImageStorage, "1.2.5"), (CTImageStorage, "1.26")],
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"\x08\x00\x95\x11\xff\xff",  # a header cut short
        _implicit(0x0008, 0x1195, b"2.25.9\0")[:-2],  # a value that runs past the end
        _implicit(0x0008, 0x1195, b"2.25.9\0")
        + _implicit(0x0008, 0x1199, _implicit(0x0010, 0x0010, b"AB")),
        b"",  # no Transaction UID
        _implicit(0x0008, 0x1195, b"2.25.9\0"),  # no Referenced SOP Sequence
        _implicit(0x0008, 0x1195, b"2.25.9\0") + _implicit(0x0008, 0x1199, b""),  # empty
        _implicit(0x0008, 0x1195, b"x.y\0") + _implicit(0x0008, 0x1199, _item(b"")),
    ],
)
def test_bad_action_information_is_0x0115(raw: bytes) -> None:
    with pytest.raises(CommitmentRequestError) as refused:
        parse_request_bytes(raw, IMPLICIT)
    assert refused.value.status == 0x0115


def test_no_data_set_and_other_syntaxes() -> None:
    with pytest.raises(CommitmentRequestError):
        parse_request_bytes(None, IMPLICIT)
    assert parse_request_bytes(b"", DeflatedExplicitVRLittleEndian) is None


uid_strategy = st.lists(
    st.integers(min_value=0, max_value=10**12).map(str), min_size=2, max_size=8
).map(lambda parts: "1." + ".".join(p.lstrip("0") or "0" for p in parts)[:60].rstrip("."))
refs_strategy = st.lists(st.tuples(st.just(CTImageStorage), uid_strategy), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(refs=refs_strategy, transaction=uid_strategy, syntax=st.sampled_from([IMPLICIT, EXPLICIT]))
def test_requests_read_as_pydicom_writes_them(
    refs: list[tuple[str, str]], transaction: str, syntax: str
) -> None:
    raw = encode_dataset(request_dataset(transaction, refs), syntax)
    assert parse_request_bytes(raw, syntax) == (transaction, refs)


@settings(max_examples=60, deadline=None)
@given(
    refs=refs_strategy,
    transaction=uid_strategy,
    reasons=st.lists(st.sampled_from([0x0110, 0x0112, 0x0119, 0x0122]), max_size=30),
    syntax=st.sampled_from([IMPLICIT, EXPLICIT]),
)
def test_reports_read_by_pydicom(
    refs: list[tuple[str, str]], transaction: str, reasons: list[int], syntax: str
) -> None:
    failed = [(c, i, r) for (c, i), r in zip(refs, reasons, strict=False)]
    report = CommitmentReport(transaction, refs[len(failed) :], failed)
    data = encode_report(report, syntax)
    assert data is not None
    assert parse_report(decode_dataset(data, syntax)) == report


def test_claim_holds_a_report_for_one_attempt() -> None:
    now = [100.0]
    pending = PendingReports(":memory:", first_retry=2.0, clock=lambda: now[0])
    report = CommitmentReport("2.25.1", [(CTImageStorage, "1.2")], [])
    assert pending.add("AE", report, hold=60.0)
    assert pending.due() == []  # the first attempt is the receiver's own
    now[0] = 161.0
    assert pending.due() == [("2.25.1", "AE")]
    assert pending.claim("2.25.1", hold=30.0)
    assert not pending.claim("2.25.1")  # taken: no second process sends it meanwhile
    assert pending.due() == []
    assert pending.failed("2.25.1", "refused") == 2.0
    assert pending.attempts("2.25.1") == 1
    now[0] = 163.5
    assert pending.claim("2.25.1")
    pending.delivered("2.25.1")
    assert not pending.claim("2.25.1") and pending.attempts("2.25.1") == 0


@settings(max_examples=60, deadline=None)
@given(
    refs=refs_strategy,
    transaction=uid_strategy,
    reasons=st.lists(st.sampled_from([0x0110, 0x0112, 0x0119, 0x0122]), max_size=30),
    syntax=st.sampled_from([IMPLICIT, EXPLICIT]),
)
def test_the_scu_side_reads_and_writes_as_pydicom(
    refs: list[tuple[str, str]], transaction: str, reasons: list[int], syntax: str
) -> None:
    # The request: the same bytes as pydicom writes (defined lengths, NUL-padded UIDs).
    assert encode_request(transaction, refs, syntax) == encode_dataset(
        request_dataset(transaction, refs), syntax
    )
    # The report, as pydicom writes it, read back; and its Transaction UID alone.
    failed = [(c, i, r) for (c, i), r in zip(refs, reasons, strict=False)]
    report = CommitmentReport(transaction, refs[len(failed) :], failed)
    raw = encode_dataset(report_dataset(report), syntax)
    assert parse_report_bytes(raw, syntax) == report
    assert transaction_uid_of(raw, syntax) == transaction


def test_bad_reports_and_other_syntaxes() -> None:
    item = _implicit(0x0008, 0x1155, b"1.2\0")  # no Referenced SOP Class UID
    raw = _implicit(0x0008, 0x1195, b"2.25.9\0") + _implicit(0x0008, 0x1199, _item(item))
    with pytest.raises(ValueError, match="lacks"):
        parse_report_bytes(raw, IMPLICIT)
    with pytest.raises(ValueError, match="cannot be decoded"):
        parse_report_bytes(raw[:-3], IMPLICIT)
    assert transaction_uid_of(raw, IMPLICIT) == "2.25.9"
    assert transaction_uid_of(b"\x08\x00", IMPLICIT) is None
    assert parse_report_bytes(raw, DeflatedExplicitVRLittleEndian) is None
    assert encode_request("2.25.9", [], DeflatedExplicitVRLittleEndian) is None
