"""What ``Association`` writes for a message: every message through ``Connection.send_message``
(the state table's P-DATA request), a file's data set read behind each PDU header into its own
buffer, one write per PDU, the command set in the first (PS3.8 §9.3.5, Annex E; PS3.5 §A.5 for
the pad byte of a deflated data set). A fake transport records the writes: no sockets."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from dicomnet.association import Association
from dicomnet.connection import Role
from dicomnet.dataset import FileInfo
from dicomnet.dimse.commands import CEchoRQ, CStoreRQ
from dicomnet.errors import DicomNetError, LocalProtocolError
from dicomnet.fsm import State
from dicomnet.negotiation import Negotiated, NegotiatedContext
from dicomnet.pdu import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RQ,
    A_RELEASE_RQ,
    MaximumLength,
    PresentationContextACItem,
    PresentationContextRQItem,
    UserInformation,
    encode,
)
from dicomnet.service import AssociationInfo

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"

RQ = A_ASSOCIATE_RQ(
    "SCP",
    "SCU",
    [PresentationContextRQItem(3, CT_STORAGE, [EXPLICIT_LE, DEFLATED])],
    UserInformation([MaximumLength(16384)]),
)
AC = A_ASSOCIATE_AC(
    "SCP", "SCU", [PresentationContextACItem(3, 0, EXPLICIT_LE)], UserInformation([])
)
STORE = CStoreRQ(message_id=1, affected_sop_class_uid=CT_STORAGE, affected_sop_instance_uid="1.2")


class Transport(asyncio.Transport):
    """Records what is written; never busy."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def _pdata(control: int, data: bytes, context_id: int = 3) -> bytes:
    """One P-DATA-TF PDU with one PDV, field by field (PS3.8 Tables 9-22, 9-23 and E.2)."""
    return (
        b"\x04\x00"
        + struct.pack(">I", len(data) + 6)
        + struct.pack(">I", len(data) + 2)
        + bytes([context_id, control])
        + data
    )


def _receive(assoc: Association, data: bytes) -> None:
    buf = assoc.get_buffer(len(data))
    buf[: len(data)] = data
    assoc.buffer_updated(len(data))


def established(peer_max_pdu: int) -> tuple[Association, Transport]:
    """A requestor in Sta6 whose peer accepts PDUs of ``peer_max_pdu`` bytes at most."""
    assoc = Association(Role.REQUESTOR, AssociationInfo(1, "127.0.0.1", 104))
    transport = Transport()
    assoc.connection_made(transport)
    assoc.send_request(RQ)
    _receive(assoc, encode(AC))
    assoc.set_negotiated(
        Negotiated({3: NegotiatedContext(3, CT_STORAGE, EXPLICIT_LE)}, peer_max_pdu, 16384)
    )
    assert assoc.conn.state is State.STA6
    transport.writes.clear()
    return assoc, transport


def _file(tmp_path: Path, dataset: bytes, syntax: str = EXPLICIT_LE) -> FileInfo:
    """A file whose data set starts after 10 bytes that must never be sent."""
    path = tmp_path / "f.dcm"
    path.write_bytes(b"HEADER....."[:10] + dataset)
    return FileInfo(path, CT_STORAGE, "1.2", syntax, 10, 10 + len(dataset))


async def test_a_file_goes_out_one_write_per_pdu(tmp_path: Path) -> None:
    """Peer max PDU 26: 20 data bytes a PDV. The command shares the first write with the first
    data set PDU; each further PDU is one write of header + data read from the file."""
    dataset = bytes(range(50))
    assoc, transport = established(26)
    await assoc.send_message(3, STORE, _file(tmp_path, dataset))
    command = STORE.encode()
    command_pdus = b"".join(
        _pdata(0x03 if i + 20 >= len(command) else 0x01, command[i : i + 20])
        for i in range(0, len(command), 20)
    )
    assert transport.writes == [
        command_pdus + _pdata(0x00, dataset[:20]),
        _pdata(0x00, dataset[20:40]),
        _pdata(0x02, dataset[40:]),
    ]


async def test_a_small_file_goes_out_in_one_write(tmp_path: Path) -> None:
    dataset = b"\x08\x00\x18\x00UI\x04\x001.2\x00"
    assoc, transport = established(16384)
    await assoc.send_message(3, STORE, _file(tmp_path, dataset))
    assert transport.writes == [_pdata(0x03, STORE.encode()) + _pdata(0x02, dataset)]


async def test_an_odd_deflated_data_set_gets_its_pad_byte(tmp_path: Path) -> None:
    """PS3.5 §A.5: an odd-length deflated stream is sent with one trailing NUL, so that the
    last fragment is of even length (PS3.8 E.1)."""
    dataset = bytes(range(1, 26))  # 25 bytes
    assoc, transport = established(26)
    await assoc.send_message(3, STORE, _file(tmp_path, dataset, DEFLATED))
    assert transport.writes[1:] == [_pdata(0x02, dataset[20:] + b"\x00")]
    assert transport.writes[0].endswith(_pdata(0x00, dataset[:20]))


async def test_an_empty_data_set_is_one_empty_last_fragment(tmp_path: Path) -> None:
    assoc, transport = established(16384)
    await assoc.send_message(3, STORE, _file(tmp_path, b""))
    assert transport.writes == [_pdata(0x03, STORE.encode()) + _pdata(0x02, b"")]


async def test_a_file_that_shrank_is_an_error(tmp_path: Path) -> None:
    assoc, transport = established(16384)
    info = _file(tmp_path, b"x" * 100)
    info.path.write_bytes(b"0123456789" + b"x" * 60)
    with pytest.raises(DicomNetError, match="shrank"):
        await assoc.send_message(3, STORE, info)
    assert transport.writes == []  # read before anything was written


async def test_a_data_set_in_memory_is_one_write() -> None:
    dataset = bytes(range(50))
    assoc, transport = established(26)
    await assoc.send_message(3, STORE, dataset)
    [wire] = transport.writes
    assert wire.endswith(
        _pdata(0x00, dataset[:20]) + _pdata(0x00, dataset[20:40]) + _pdata(0x02, dataset[40:])
    )


async def test_send_message_now() -> None:
    assoc, transport = established(16384)
    echo = CEchoRQ(message_id=2, affected_sop_class_uid=VERIFICATION)
    assert assoc.send_message_now(3, echo)
    assert transport.writes == [_pdata(0x03, echo.encode())]


async def test_sending_after_the_peer_released_is_ar7_then_refused(tmp_path: Path) -> None:
    """The peer's A-RELEASE-RQ (Sta8): messages still go out (AR-7); once we answered (Sta13)
    the table refuses them and nothing is written."""
    assoc, transport = established(16384)
    _receive(assoc, encode(A_RELEASE_RQ()))
    assert assoc.conn.state is State.STA8
    await assoc.send_message(3, STORE, b"ab")
    assert len(transport.writes) == 1
    assoc.send_release_response()
    assert assoc.conn.state is State.STA13
    transport.writes.clear()
    with pytest.raises(LocalProtocolError):
        await assoc.send_message(3, STORE, _file(tmp_path, b"ab"))
    with pytest.raises(LocalProtocolError):
        assoc.send_message_now(3, STORE)
    assert transport.writes == []


async def test_sending_before_the_negotiation_is_refused() -> None:
    assoc = Association(Role.REQUESTOR, AssociationInfo(1, "127.0.0.1", 104))
    transport = Transport()
    assoc.connection_made(transport)
    with pytest.raises(LocalProtocolError):
        await assoc.send_message(3, STORE, b"ab")
    assert transport.writes == []


@pytest.mark.parametrize("role", [Role.REQUESTOR, Role.ACCEPTOR])
async def test_on_connected_is_called_once_connected(role: Role) -> None:
    """The callback runs at the end of ``connection_made``: for an acceptor, ARTIM is already
    waiting for the A-ASSOCIATE-RQ (AE-5, Sta2)."""
    seen: list[tuple[Association, State, bool]] = []
    assoc = Association(
        role,
        AssociationInfo(1, "", 0),
        on_connected=lambda a: seen.append((a, a.conn.state, a.transport is not None)),
    )
    assert seen == []
    assoc.connection_made(Transport())
    expected = State.STA2 if role is Role.ACCEPTOR else State.STA1
    assert seen == [(assoc, expected, True)]
