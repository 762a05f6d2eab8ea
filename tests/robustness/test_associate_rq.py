"""Bad A-ASSOCIATE-RQ PDUs (PS3.8 §9.3.2) against a running server: each gets the A-ASSOCIATE-RJ
(Table 9-21) or A-ABORT (Table 9-26) the standard prescribes, a log record, and the server goes
on serving."""

from __future__ import annotations

import logging

import pytest

from tests.robustness.conftest import (
    ARTIM,
    IMPLICIT_VR_LE,
    VERIFICATION,
    Running,
    ae,
    associate_rq,
    c_echo_rq,
    item,
    p_data,
    parse_command,
    pdu,
    pdv,
    presentation_context,
    user_information,
)
from tests.robustness.test_pdu_level import logged

# A-ASSOCIATE-RJ (PS3.8 Table 9-21)
PERMANENT = 1
SERVICE_USER, ACSE, PRESENTATION = 1, 2, 3


async def _rejected(server: Running, rq: bytes) -> tuple[int, int, int]:
    peer = await server.peer()
    await peer.send(rq)
    rj = await peer.read_pdu()
    fields = rj.reject
    # AE-8 then Sta13: the requestor closes the connection (AE-4).
    await peer.aclose()
    return fields


async def test_rejected_peer_that_stays_is_closed_by_artim(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """After an A-ASSOCIATE-RJ the server waits ARTIM in Sta13 for the peer to close, then
    closes itself (Evt18 -> AA-2)."""
    peer = await server.peer()
    await peer.send(associate_rq(contexts=[]))
    assert (await peer.read_pdu()).type == 0x03
    assert await peer.closed_by_server(timeout=ARTIM + 8)
    logged(caplog, "ARTIM")
    await peer.aclose()


@pytest.mark.parametrize("version", [0x0000, 0x0002, 0xFFFE])
async def test_protocol_version_not_supported(
    server: Running, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    """Bit 0 of the protocol version is version 1 (PS3.8 §9.3.2): without it, RJ permanent,
    source 2 (service provider, ACSE), reason 2 (protocol version not supported)."""
    assert await _rejected(server, associate_rq(version=version)) == (PERMANENT, ACSE, 2)
    logged(caplog, "protocol version not supported", level=logging.WARNING)
    await server.echo_works()


async def test_no_presentation_contexts(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    """PS3.8 §9.3.2: one or more presentation context items are required. Rejected
    permanently by the service user, no reason given (Table 9-21 source 1 reason 1)."""
    assert await _rejected(server, associate_rq(contexts=[])) == (PERMANENT, SERVICE_USER, 1)
    logged(caplog, "rejecting association", "no presentation context", level=logging.WARNING)
    await server.echo_works()


@pytest.mark.parametrize("max_pdu", [1, 6])
async def test_maximum_pdu_length_too_small(
    server: Running, caplog: pytest.LogCaptureFixture, max_pdu: int
) -> None:
    """A maximum length that leaves no room for one byte of PDV data (PS3.8 §9.3.5, Annex
    D.1): no message could ever be sent to this peer, so the association is rejected."""
    assert await _rejected(server, associate_rq(max_pdu=max_pdu)) == (PERMANENT, SERVICE_USER, 1)
    logged(caplog, f"maximum PDU length {max_pdu} is too small", level=logging.WARNING)
    await server.echo_works()


async def test_smallest_usable_maximum_pdu_length(server: Running) -> None:
    """A maximum length of 7 allows one byte per PDV: the C-ECHO-RSP comes in many PDUs,
    none longer than the peer allows."""
    peer = await server.peer()
    await peer.associate(associate_rq(max_pdu=7))
    await peer.send(p_data(pdv(1, c_echo_rq(message_id=4), command=True)))
    data = b""
    for _ in range(200):
        answer = await peer.read_pdu()
        assert answer.type == 0x04 and len(answer.body) <= 7
        ((context, control, value),) = answer.pdvs()
        assert context == 1 and control & 1
        data += value
        if control & 2:
            break
    rsp = parse_command(data)
    assert rsp[0x00000900] == b"\x00\x00" and rsp[0x00000120] == b"\x04\x00"
    await peer.aclose()


async def test_application_context_not_supported(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    rq = bytearray(associate_rq())
    name = b"1.2.840.10008.3.1.1.1"
    at = rq.index(name)
    rq[at : at + len(name)] = b"1.2.840.10008.3.1.1.9"
    assert await _rejected(server, bytes(rq)) == (PERMANENT, SERVICE_USER, 2)
    logged(caplog, "application context", level=logging.WARNING)
    await server.echo_works()


@pytest.mark.parametrize(
    ("called", "calling", "reason", "words"),
    [
        (b" " * 16, ae("ROBUST"), 7, "called AE title"),
        (b"\x00" * 16, ae("ROBUST"), 7, "called AE title"),
        (ae("ANY-SCP"), b" " * 16, 3, "calling AE title"),
    ],
    ids=["called-spaces", "called-nul", "calling-spaces"],
)
async def test_empty_ae_titles_rejected(
    server: Running,
    caplog: pytest.LogCaptureFixture,
    called: bytes,
    calling: bytes,
    reason: int,
    words: str,
) -> None:
    """PS3.8 §9.3.2: an AE title of 16 spaces ("no name") shall not be used. The server
    rejects it permanently as an AE title it does not recognize (Table 9-21 source 1, reason
    7 called / 3 calling)."""
    rq = associate_rq(called=called, calling=calling)
    assert await _rejected(server, rq) == (PERMANENT, SERVICE_USER, reason)
    logged(caplog, words, "empty", level=logging.WARNING)
    await server.echo_works()


async def test_ae_titles_with_spaces_around_are_accepted(server: Running) -> None:
    """Leading and trailing spaces are not significant (PS3.8 §9.3.2)."""
    peer = await server.peer()
    await peer.associate(associate_rq(called=b"  ANY-SCP       ", calling=b" ROBUST  ".ljust(16)))
    await peer.aclose()
    await server.echo_works()


@pytest.mark.parametrize(
    "body",
    [
        # Fixed fields cut short (68 bytes are needed before the items).
        b"\x00\x01\x00\x00" + ae("ANY-SCP"),
        # An item whose length runs past the end of the PDU.
        b"\x00\x01\x00\x00" + ae("A") + ae("B") + b"\x00" * 32 + b"\x10\x00\x01\x00abc",
        # An even presentation context ID (PS3.8 §9.3.2.2: odd integers 1-255).
        b"\x00\x01\x00\x00"
        + ae("A")
        + ae("B")
        + b"\x00" * 32
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + presentation_context(2, VERIFICATION)
        + user_information(),
        # No user information item.
        b"\x00\x01\x00\x00"
        + ae("A")
        + ae("B")
        + b"\x00" * 32
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + presentation_context(1, VERIFICATION),
        # A presentation context without an abstract syntax sub-item.
        b"\x00\x01\x00\x00"
        + ae("A")
        + ae("B")
        + b"\x00" * 32
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + item(0x20, b"\x01\x00\x00\x00" + item(0x40, b"1.2.840.10008.1.2"))
        + user_information(),
    ],
    ids=["short", "item-overrun", "even-context-id", "no-user-info", "no-abstract-syntax"],
)
async def test_malformed_associate_rq_aborted(
    server: Running, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    """A PDU we cannot decode in Sta2 is Evt19 -> AA-1: A-ABORT from the service provider,
    reason 6 (invalid PDU parameter value), then the connection closes."""
    peer = await server.peer()
    await peer.send(pdu(0x01, body))
    abort = await peer.read_pdu()
    assert abort.abort == (2, 6)
    assert await peer.closed_by_server()
    logged(caplog, "A-ASSOCIATE-RQ", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


async def test_transfer_syntax_that_is_not_a_uid_is_not_accepted(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A transfer syntax item holding bytes that are no UID (PS3.5 §9.1) cannot be chosen: the
    A-ASSOCIATE-AC would have to echo it. The context is refused (result 4, transfer syntaxes
    not supported, PS3.8 Table 9-18) or accepted with a valid syntax proposed beside it."""
    garbage = presentation_context(1, VERIFICATION, "1.2\xff.840")
    value = bytes([3, 0, 0, 0]) + item(0x30, VERIFICATION.encode())
    value += item(0x40, b"1.2.8\xff0") + item(0x40, IMPLICIT_VR_LE.encode())
    mixed = item(0x20, value)
    peer = await server.peer()
    await peer.send(associate_rq(contexts=[garbage, mixed]))
    ac = await peer.read_pdu()
    assert ac.accepted_contexts() == {1: 4, 3: 0}
    await peer.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await server.echo_works()


async def test_percent_in_an_ae_title_is_logged_as_text(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Log lines carry the peer's AE titles; a "%" in one is text, not a format directive."""
    peer = await server.peer()
    await peer.send(associate_rq(calling=ae("RO%^ST%d")))
    assert (await peer.read_pdu()).type == 0x02
    await peer.send(b"\x04\x00\x00\x00")  # a truncated P-DATA-TF header, then gone
    await peer.aclose()
    await server.wait_idle()
    text = logged(caplog, "incomplete PDU", level=logging.WARNING)
    assert "RO%^ST%d->" in text and "4 bytes" in text
    await server.echo_works()
