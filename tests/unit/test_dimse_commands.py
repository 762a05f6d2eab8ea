"""DIMSE command sets (PS3.7 §6.3.1, §9.3, §10.3, Annex E): the group 0000 codec in Implicit VR
Little Endian, byte vectors written from the message field tables, and a round trip of every
message class."""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomnet.dimse.commands import (
    COMMAND_ELEMENTS,
    DATASET_PRESENT,
    MESSAGE_CLASSES,
    NO_DATASET,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRSP,
    CommandField,
    CStoreRQ,
    CStoreRSP,
    NGetRQ,
    Priority,
    RequestMessage,
    ResponseMessage,
    decode_command_set,
    decode_message,
    encode_command_set,
    is_request,
)
from dicomnet.errors import DIMSEError

VERIFICATION = "1.2.840.10008.1.1"  # 17 characters: padded to 18 with a NUL (PS3.5 §9.1)
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # 25 characters


def element(elem: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element of group 0000 (PS3.5 §7.1.3): tag group and element
    as little-endian 16-bit numbers, a 32-bit little-endian value length, the value."""
    return struct.pack("<HHI", 0x0000, elem, len(value)) + value


def us(value: int) -> bytes:
    return struct.pack("<H", value)


# PS3.7 Table 9.3-12, C-ECHO-RQ message fields, Message ID 7, written out byte by byte.
C_ECHO_RQ_BYTES = (
    # (0000,0000) Command Group Length, UL: 56 bytes follow (26 + 10 + 10 + 10)
    b"\x00\x00\x00\x00"  # tag (0000,0000)
    b"\x04\x00\x00\x00"  # value length 4
    b"\x38\x00\x00\x00"  # 56
    # (0000,0002) Affected SOP Class UID, UI
    b"\x00\x00\x02\x00"  # tag (0000,0002)
    b"\x12\x00\x00\x00"  # value length 18
    b"1.2.840.10008.1.1\x00"  # Verification SOP Class, NUL padded to even length
    # (0000,0100) Command Field, US: 0030H for C-ECHO-RQ
    b"\x00\x00\x00\x01"
    b"\x02\x00\x00\x00"
    b"\x30\x00"
    # (0000,0110) Message ID, US
    b"\x00\x00\x10\x01"
    b"\x02\x00\x00\x00"
    b"\x07\x00"
    # (0000,0800) Command Data Set Type, US: 0101H, no data set
    b"\x00\x00\x00\x08"
    b"\x02\x00\x00\x00"
    b"\x01\x01"
)

# PS3.7 Table 9.3-13, C-ECHO-RSP message fields, answering Message ID 7 with Success.
C_ECHO_RSP_BYTES = (
    b"\x00\x00\x00\x00\x04\x00\x00\x00"
    b"\x42\x00\x00\x00"  # group length 66 = 26 + 4 * 10
    b"\x00\x00\x02\x00\x12\x00\x00\x00"
    b"1.2.840.10008.1.1\x00"  # (0000,0002) Affected SOP Class UID
    b"\x00\x00\x00\x01\x02\x00\x00\x00"
    b"\x30\x80"  # (0000,0100) Command Field 8030H
    b"\x00\x00\x20\x01\x02\x00\x00\x00"
    b"\x07\x00"  # (0000,0120) Message ID Being Responded To
    b"\x00\x00\x00\x08\x02\x00\x00\x00"
    b"\x01\x01"  # (0000,0800) Command Data Set Type: no data set
    b"\x00\x00\x00\x09\x02\x00\x00\x00"
    b"\x00\x00"  # (0000,0900) Status 0000H, Success
)


def test_c_echo_rq_vector_is_consistent() -> None:
    assert len(C_ECHO_RQ_BYTES) == 12 + 56
    assert len(C_ECHO_RSP_BYTES) == 12 + 66


def test_c_echo_rq_encodes() -> None:
    assert CEchoRQ(message_id=7, affected_sop_class_uid=VERIFICATION).encode() == C_ECHO_RQ_BYTES


def test_c_echo_rq_decodes() -> None:
    message = decode_message(C_ECHO_RQ_BYTES)
    assert message == CEchoRQ(message_id=7, affected_sop_class_uid=VERIFICATION)
    assert message.has_dataset is False
    assert is_request(message)
    assert decode_command_set(C_ECHO_RQ_BYTES) == {
        0x0000: 56,
        0x0002: VERIFICATION,
        0x0100: 0x0030,
        0x0110: 7,
        0x0800: 0x0101,
    }


def test_c_echo_rsp_vector() -> None:
    rsp = CEchoRSP(
        message_id_being_responded_to=7, status=0x0000, affected_sop_class_uid=VERIFICATION
    )
    assert rsp.encode() == C_ECHO_RSP_BYTES
    assert decode_message(C_ECHO_RSP_BYTES) == rsp
    assert not is_request(rsp)


def test_c_store_rq_vector() -> None:
    """PS3.7 Table 9.3-1 C-STORE-RQ, with the optional move originator fields (C-MOVE
    sub-operation) and a data set following."""
    raw_body = (
        element(0x0002, CT_STORAGE.encode() + b"\x00")  # Affected SOP Class UID, 26 bytes
        + element(0x0100, us(0x0001))  # Command Field: C-STORE-RQ
        + element(0x0110, us(0x1234))  # Message ID
        + element(0x0700, us(0x0002))  # Priority: LOW
        + element(0x0800, us(0x0001))  # Command Data Set Type: anything but 0101H = present
        + element(0x1000, b"1.2.3.4.5\x00")  # Affected SOP Instance UID, NUL padded
        + element(0x1030, b"MOVESCU ")  # Move Originator AE Title, AE padded with a space
        + element(0x1031, us(99))  # Move Originator Message ID
    )
    raw = element(0x0000, struct.pack("<I", len(raw_body))) + raw_body
    rq = CStoreRQ(
        message_id=0x1234,
        affected_sop_class_uid=CT_STORAGE,
        affected_sop_instance_uid="1.2.3.4.5",
        priority=Priority.LOW,
        move_originator_aet="MOVESCU",
        move_originator_message_id=99,
    )
    assert rq.encode() == raw
    assert decode_message(raw) == rq
    assert rq.has_dataset


def test_c_store_rsp_with_error_fields() -> None:
    """PS3.7 Table 9.3-2 and Annex C: Offending Element (AT, VM 1-n), Error Comment (LO)."""
    body = (
        element(0x0002, CT_STORAGE.encode() + b"\x00")
        + element(0x0100, us(0x8001))
        + element(0x0120, us(5))
        + element(0x0800, us(0x0101))
        + element(0x0900, us(0xA700))
        + element(0x0901, struct.pack("<HHHH", 0x0010, 0x0010, 0x7FE0, 0x0010))  # AT x2
        + element(0x0902, b"disk full ")  # LO, padded with a space to even length
        + element(0x1000, b"1.2.3\x00")
    )
    raw = element(0x0000, struct.pack("<I", len(body))) + body
    rsp = CStoreRSP(
        message_id_being_responded_to=5,
        status=0xA700,
        affected_sop_class_uid=CT_STORAGE,
        affected_sop_instance_uid="1.2.3",
        offending_elements=[0x00100010, 0x7FE00010],
        error_comment="disk full",
    )
    assert rsp.encode() == raw
    assert decode_message(raw) == rsp


@pytest.mark.parametrize("value", [0x0000, 0x0001, 0x0102, 0xFEFE])
def test_any_data_set_type_but_0101_means_a_data_set(value: int) -> None:
    """PS3.7 Table E.1-1, (0000,0800): 0101H means no data set; any other value, present."""
    raw = encode_command_set({0x0100: 0x0020, 0x0110: 1, 0x0002: "1.2", 0x0800: value})
    assert decode_message(raw).has_dataset


def test_missing_data_set_type_means_no_data_set() -> None:
    raw = encode_command_set({0x0100: 0x0030, 0x0110: 1, 0x0002: VERIFICATION})
    assert not decode_message(raw).has_dataset


def test_command_field_values() -> None:
    """PS3.7 Annex E, Command Field (0000,0100) values."""
    expected = {
        "C_STORE_RQ": 0x0001,
        "C_STORE_RSP": 0x8001,
        "C_GET_RQ": 0x0010,
        "C_GET_RSP": 0x8010,
        "C_FIND_RQ": 0x0020,
        "C_FIND_RSP": 0x8020,
        "C_MOVE_RQ": 0x0021,
        "C_MOVE_RSP": 0x8021,
        "C_ECHO_RQ": 0x0030,
        "C_ECHO_RSP": 0x8030,
        "N_EVENT_REPORT_RQ": 0x0100,
        "N_EVENT_REPORT_RSP": 0x8100,
        "N_GET_RQ": 0x0110,
        "N_GET_RSP": 0x8110,
        "N_SET_RQ": 0x0120,
        "N_SET_RSP": 0x8120,
        "N_ACTION_RQ": 0x0130,
        "N_ACTION_RSP": 0x8130,
        "N_CREATE_RQ": 0x0140,
        "N_CREATE_RSP": 0x8140,
        "N_DELETE_RQ": 0x0150,
        "N_DELETE_RSP": 0x8150,
        "C_CANCEL_RQ": 0x0FFF,
    }
    assert {c.name: c.value for c in CommandField} == expected
    assert set(MESSAGE_CLASSES) == set(expected.values())
    for value, cls in MESSAGE_CLASSES.items():
        assert value == cls.COMMAND_FIELD
        assert cls.NAME.replace("-", "_") == CommandField(value).name


def test_priority_values() -> None:
    """PS3.7 Table E.1-1, Priority (0000,0700): LOW 0002H, MEDIUM 0000H, HIGH 0001H."""
    assert (Priority.LOW, Priority.MEDIUM, Priority.HIGH) == (2, 0, 1)


# --- round trip of every message class ----------------------------------------------------------


def _sample(name: str, variant: int) -> Any:
    """A plausible value for a message attribute, by name."""
    if name.endswith("_uid"):
        return ["1.2.840.10008.5.1.4.1.1.2", "1.2.3.44", "1.2.826.0.1.3680043.2.1143.1"][
            variant % 3
        ]
    if name in ("move_destination", "move_originator_aet"):
        return ["STORESCP", "A", "SIXTEEN_CHARS_AE"][variant % 3]
    if name == "error_comment":
        return ["out of disk", "odd", "x" * 64][variant % 3]
    if name in ("offending_elements", "attribute_identifier_list"):
        return [[0x00100010], [0x00080018, 0x7FE00010], [0xFFFEE000]][variant % 3]
    if name == "priority":
        return [Priority.LOW, Priority.MEDIUM, Priority.HIGH][variant % 3]
    if name == "status":
        return [0x0000, 0xFF00, 0xC123][variant % 3]
    return [1, 0xFFFF, 0x8000][variant % 3]


def _full(cls: type, variant: int) -> Any:
    kwargs = {f.name: _sample(f.name, variant) for f in fields(cls) if f.name != "has_dataset"}
    return cls(**kwargs)


@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("cls", list(MESSAGE_CLASSES.values()), ids=lambda c: c.NAME)
def test_every_message_round_trips(cls: type, variant: int) -> None:
    message = _full(cls, variant)
    raw = message.encode()
    decoded = decode_message(raw)
    assert type(decoded) is cls
    assert decoded == message
    assert is_request(decoded) == (not cls.COMMAND_FIELD & 0x8000)


@pytest.mark.parametrize("cls", list(MESSAGE_CLASSES.values()), ids=lambda c: c.NAME)
def test_minimal_message_round_trips(cls: type) -> None:
    """Only the elements the class requires; optional ones stay None."""
    kwargs = {name: _sample(name, 0) for name in cls.REQUIRED}
    message = cls(**kwargs)
    assert decode_message(message.encode()) == message


@pytest.mark.parametrize("has_dataset", [True, False])
@pytest.mark.parametrize("cls", list(MESSAGE_CLASSES.values()), ids=lambda c: c.NAME)
def test_data_set_flag_round_trips(cls: type, has_dataset: bool) -> None:
    message = _full(cls, 0)
    message.has_dataset = has_dataset
    raw = message.encode()
    elements = decode_command_set(raw)
    assert elements[0x0800] == (DATASET_PRESENT if has_dataset else NO_DATASET)
    assert decode_message(raw).has_dataset is has_dataset


@pytest.mark.parametrize("cls", list(MESSAGE_CLASSES.values()), ids=lambda c: c.NAME)
def test_encoding_rules(cls: type) -> None:
    """PS3.7 §6.3.1: group 0000 only, ascending tag order, (0000,0000) first with the number of
    bytes that follow; every value of even length (PS3.5 §7.1)."""
    raw = _full(cls, 1).encode()
    tags: list[int] = []
    pos = 0
    while pos < len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        assert group == 0x0000
        assert length % 2 == 0, f"(0000,{elem:04X}) has odd length {length}"
        tags.append(elem)
        if elem == 0x0000:
            assert length == 4
            (group_length,) = struct.unpack_from("<I", raw, pos + 8)
            assert group_length == len(raw) - 12
        pos += 8 + length
    assert pos == len(raw)
    assert tags[0] == 0x0000
    assert tags == sorted(tags)
    assert len(tags) == len(set(tags))
    assert all(t in COMMAND_ELEMENTS for t in tags)


uids = st.from_regex(r"\A[12](\.[1-9][0-9]{0,5}){1,12}\Z")
ae_titles = st.from_regex(r"\A[A-Z0-9_]{1,16}\Z")
us_values = st.integers(0, 0xFFFF)


@settings(max_examples=60, deadline=None)
@given(
    message_id=us_values,
    sop_class=uids,
    sop_instance=uids,
    priority=st.sampled_from(list(Priority)),
    originator=st.none() | ae_titles,
    originator_id=st.none() | us_values,
)
def test_c_store_rq_round_trip_property(
    message_id: int,
    sop_class: str,
    sop_instance: str,
    priority: Priority,
    originator: str | None,
    originator_id: int | None,
) -> None:
    rq = CStoreRQ(
        message_id=message_id,
        affected_sop_class_uid=sop_class,
        affected_sop_instance_uid=sop_instance,
        priority=priority,
        move_originator_aet=originator,
        move_originator_message_id=originator_id,
    )
    assert decode_message(rq.encode()) == rq


@settings(max_examples=60, deadline=None)
@given(
    responded=us_values,
    status=us_values,
    tags=st.none() | st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=5),
    comment=st.none() | st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9 ]{0,62}[A-Za-z0-9]\Z"),
    error_id=st.none() | us_values,
)
def test_c_find_rsp_round_trip_property(
    responded: int, status: int, tags: list[int] | None, comment: str | None, error_id: int | None
) -> None:
    rsp = CFindRSP(
        message_id_being_responded_to=responded,
        status=status,
        offending_elements=tags,
        error_comment=comment,
        error_id=error_id,
    )
    assert decode_message(rsp.encode()) == rsp


# --- missing and malformed elements ------------------------------------------------------------

# Attribute name -> (0000,xxxx) element, from the message field tables of PS3.7 §9.3 and §10.3.
NAME_TAGS = {
    "affected_sop_class_uid": 0x0002,
    "requested_sop_class_uid": 0x0003,
    "message_id": 0x0110,
    "message_id_being_responded_to": 0x0120,
    "move_destination": 0x0600,
    "status": 0x0900,
    "affected_sop_instance_uid": 0x1000,
    "requested_sop_instance_uid": 0x1001,
    "event_type_id": 0x1002,
    "action_type_id": 0x1008,
}

REQUIRED_CASES = [
    pytest.param(cls, name, id=f"{cls.NAME}-{name}")
    for cls in MESSAGE_CLASSES.values()
    for name in cls.REQUIRED
]


def test_required_elements_follow_the_tables() -> None:
    """Requests need a Message ID, responses the Message ID Being Responded To and a Status;
    plus the UIDs and IDs their tables mark mandatory (PS3.7 §9.3, §10.3)."""
    required = {cls.NAME: set(cls.REQUIRED) for cls in MESSAGE_CLASSES.values()}
    rsp = {"message_id_being_responded_to", "status"}
    assert required["C-ECHO-RQ"] == {"message_id", "affected_sop_class_uid"}
    assert required["C-STORE-RQ"] == {
        "message_id",
        "affected_sop_class_uid",
        "affected_sop_instance_uid",
    }
    assert required["C-FIND-RQ"] == required["C-GET-RQ"] == required["C-ECHO-RQ"]
    assert required["C-MOVE-RQ"] == {"message_id", "affected_sop_class_uid", "move_destination"}
    assert required["C-CANCEL-RQ"] == {"message_id_being_responded_to"}
    assert required["N-EVENT-REPORT-RQ"] == {
        "message_id",
        "affected_sop_class_uid",
        "affected_sop_instance_uid",
        "event_type_id",
    }
    n_requested = {"message_id", "requested_sop_class_uid", "requested_sop_instance_uid"}
    assert required["N-GET-RQ"] == required["N-SET-RQ"] == required["N-DELETE-RQ"] == n_requested
    assert required["N-ACTION-RQ"] == n_requested | {"action_type_id"}
    assert required["N-CREATE-RQ"] == {"message_id", "affected_sop_class_uid"}
    for name, names in required.items():
        if name.endswith("-RSP"):
            assert names == rsp, name


@pytest.mark.parametrize(("cls", "name"), REQUIRED_CASES)
def test_missing_required_element_is_detected(cls: type, name: str) -> None:
    elements = decode_command_set(_full(cls, 0).encode())
    tag = NAME_TAGS[name]
    del elements[tag]
    raw = encode_command_set(elements)
    with pytest.raises(DIMSEError) as info:
        decode_message(raw)
    err = info.value
    assert f"(0000,{tag:04X})" in str(err)
    assert cls.NAME in str(err)
    # what could be read is kept, so that a server can still answer the message
    assert err.command_field == cls.COMMAND_FIELD
    assert err.message_id == elements.get(0x0110)
    assert tag not in err.elements


def test_c_echo_rq_without_message_id_keeps_what_was_read() -> None:
    raw = encode_command_set({0x0002: VERIFICATION, 0x0100: 0x0030, 0x0800: 0x0101})
    with pytest.raises(DIMSEError) as info:
        decode_message(raw)
    assert "(0000,0110)" in str(info.value)
    assert info.value.message_id is None
    assert info.value.command_field == 0x0030


def test_missing_command_field() -> None:
    raw = encode_command_set({0x0110: 3, 0x0800: 0x0101})
    with pytest.raises(DIMSEError) as info:
        decode_message(raw)
    assert "(0000,0100)" in str(info.value)
    assert info.value.message_id == 3


def test_unknown_command_field() -> None:
    raw = encode_command_set({0x0100: 0x0042, 0x0110: 3, 0x0800: 0x0101})
    with pytest.raises(DIMSEError) as info:
        decode_message(raw)
    assert "0x0042" in str(info.value)
    assert info.value.command_field == 0x0042


def test_unknown_group_0000_elements_are_kept_raw() -> None:
    raw = C_ECHO_RQ_BYTES[12:] + element(0x5555, b"\x01\x02")
    raw = element(0x0000, struct.pack("<I", len(raw))) + raw
    elements = decode_command_set(raw)
    assert elements[0x5555] == b"\x01\x02"
    assert decode_message(raw) == CEchoRQ(message_id=7, affected_sop_class_uid=VERIFICATION)


def test_retired_elements_do_not_disturb_decoding() -> None:
    """Old peers may send retired group 0000 elements, e.g. (0000,0001) Length to End (UL)."""
    body = element(0x0001, struct.pack("<I", 0)) + C_ECHO_RQ_BYTES[12:]
    raw = element(0x0000, struct.pack("<I", len(body))) + body
    assert decode_message(raw) == CEchoRQ(message_id=7, affected_sop_class_uid=VERIFICATION)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        pytest.param(C_ECHO_RQ_BYTES + b"\x00\x00\x00", "stray", id="stray bytes"),
        pytest.param(
            C_ECHO_RQ_BYTES + struct.pack("<HHI", 0x0008, 0x0016, 0),
            "(0008,0016)",
            id="not group 0000",
        ),
        pytest.param(
            C_ECHO_RQ_BYTES + struct.pack("<HHI", 0, 0x0902, 100) + b"ab", "runs past", id="overrun"
        ),
        pytest.param(element(0x0110, b"\x01\x00\x00"), "US of length 3", id="US length 3"),
        pytest.param(element(0x0000, b"\x01\x00"), "UL of length 2", id="UL length 2"),
        pytest.param(
            element(0x0901, b"\x10\x00\x10\x00\x20\x00"), "AT of length 6", id="AT length 6"
        ),
    ],
)
def test_malformed_command_sets(raw: bytes, words: str) -> None:
    with pytest.raises(DIMSEError) as info:
        decode_command_set(raw)
    assert words in str(info.value)


def test_huge_length_does_not_allocate() -> None:
    raw = struct.pack("<HHI", 0, 0x0902, 0xFFFFFFFF) + b"x"
    with pytest.raises(DIMSEError):
        decode_command_set(raw)


def test_encode_refuses_elements_outside_group_0000() -> None:
    with pytest.raises(DIMSEError):
        encode_command_set({0x00080016: "1.2"})


def test_given_group_length_is_recomputed() -> None:
    raw = encode_command_set(
        {0x0000: 12345, 0x0100: 0x0030, 0x0110: 7, 0x0002: VERIFICATION, 0x0800: 0x0101}
    )
    assert raw == C_ECHO_RQ_BYTES


def test_c_cancel_rq() -> None:
    """PS3.7 Table 9.3-7 (C-FIND-CANCEL): Command Field 0FFFH, Message ID Being Responded To."""
    body = element(0x0100, us(0x0FFF)) + element(0x0120, us(12)) + element(0x0800, us(0x0101))
    raw = element(0x0000, struct.pack("<I", len(body))) + body
    assert CCancelRQ(message_id_being_responded_to=12).encode() == raw
    message = decode_message(raw)
    assert message == CCancelRQ(message_id_being_responded_to=12)
    assert is_request(message)


def test_n_get_rq_attribute_identifier_list() -> None:
    """PS3.7 Table 10.3-3 N-GET-RQ: Requested SOP Class/Instance UID, Attribute Identifier
    List (AT, VM 1-n)."""
    rq = NGetRQ(
        message_id=2,
        requested_sop_class_uid="1.2.840.10008.3.1.2.3.3",
        requested_sop_instance_uid="1.2.3",
        attribute_identifier_list=[0x00080016, 0x00080018],
    )
    raw = rq.encode()
    elements = decode_command_set(raw)
    assert elements[0x0003] == "1.2.840.10008.3.1.2.3.3"
    assert elements[0x1001] == "1.2.3"
    assert elements[0x1005] == [0x00080016, 0x00080018]
    assert decode_message(raw) == rq


@pytest.mark.parametrize(
    ("message", "tag"),
    [
        (CEchoRQ(message_id=0x10000, affected_sop_class_uid=VERIFICATION), "(0000,0110)"),
        (CStoreRSP(message_id_being_responded_to=1, status=-1), "(0000,0900)"),
        (CStoreRSP(message_id_being_responded_to=1, offending_elements=5), "(0000,0901)"),  # type: ignore[arg-type]
    ],
)
def test_values_that_do_not_fit_their_vr(message: Any, tag: str) -> None:
    """US is 16 bits unsigned, AT a list of tags (PS3.5 §6.2): a clear error naming the element."""
    with pytest.raises(DIMSEError) as info:
        message.encode()
    assert tag in str(info.value)


def test_every_request_names_its_response() -> None:
    """PS3.7 §9.3, §10.3: each -RQ has one -RSP, whose command field is the request's with bit
    15 set (Annex E); C-CANCEL-RQ has none."""
    requests = [cls for cls in MESSAGE_CLASSES.values() if issubclass(cls, RequestMessage)]
    assert len(requests) == 11
    for rq_cls in requests:
        assert issubclass(rq_cls.RESPONSE, ResponseMessage)
        assert rq_cls.RESPONSE.COMMAND_FIELD == rq_cls.COMMAND_FIELD | 0x8000
    assert not hasattr(CCancelRQ, "RESPONSE")


def test_a_response_echoes_what_its_request_says() -> None:
    rq = CStoreRQ(message_id=9, affected_sop_class_uid=CT_STORAGE, affected_sop_instance_uid="1.2")
    rsp = rq.response(0xB000, error_comment="coerced", number_of_completed_suboperations=3)
    assert isinstance(rsp, CStoreRSP)
    assert (rsp.message_id_being_responded_to, rsp.status) == (9, 0xB000)
    assert (rsp.affected_sop_class_uid, rsp.affected_sop_instance_uid) == (CT_STORAGE, "1.2")
    assert rsp.error_comment == "coerced"  # and no count: a C-STORE-RSP has none
    # N-GET: the requested SOP class/instance become the affected ones (PS3.7 §10.1.2.1).
    n_rsp = NGetRQ(
        message_id=4, requested_sop_class_uid="1.2.3", requested_sop_instance_uid="1.2.3.4"
    ).response(0)
    assert (n_rsp.affected_sop_class_uid, n_rsp.affected_sop_instance_uid) == (  # type: ignore[attr-defined]
        "1.2.3",
        "1.2.3.4",
    )
    # A value given explicitly wins over the echoed one; None leaves the element out.
    ex = rq.response(0, affected_sop_instance_uid="9.9", error_id=None)
    assert ex.affected_sop_instance_uid == "9.9" and ex.error_id is None  # type: ignore[attr-defined]


def test_the_error_comment_is_cut_to_64_characters_once() -> None:
    """(0000,0902) is LO, at most 64 characters (PS3.5 Table 6.2-1): any response, built or
    decoded, holds at most that, so the encoder never sends more."""
    long = "e" * 100
    for rsp_cls in (CEchoRSP, CStoreRSP, CFindRSP):
        assert rsp_cls(error_comment=long).error_comment == "e" * 64
    raw = CStoreRSP(message_id_being_responded_to=1, status=0xC000, error_comment=long).encode()
    decoded = decode_message(raw)
    assert isinstance(decoded, CStoreRSP) and decoded.error_comment == "e" * 64
    assert CStoreRSP(error_comment="short").error_comment == "short"
