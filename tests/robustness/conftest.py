"""Robustness fixtures: a dicomnet storage server in the test's event loop with short timeouts, and
a raw peer that writes hand-built PDU bytes (PS3.8 §9.3) and reads back what the server says.

The bytes are built here from the standard's tables, not with dicomnet's encoder, so a test does
not share a bug with the code it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.server import ServerLimits
from dicomnet.services.storage import StorageService

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 Annex A.2.1
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.543.99"

# Short limits so the ARTIM/idle cases finish quickly.
ARTIM = 1.0
IDLE = 3.0
READ_TIMEOUT = 10.0


# --- PS3.8 §9.3 PDUs and PS3.7 §6.3 command sets, by hand -----------------------------------------


def item(item_type: int, value: bytes) -> bytes:
    """An A-ASSOCIATE item or sub-item: type, reserved, 2-byte big-endian length, value."""
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def pdu(pdu_type: int, body: bytes) -> bytes:
    """A PDU: type, reserved, 4-byte big-endian length, body."""
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16, b" ")


def presentation_context(context_id: int, abstract: str, *syntaxes: str) -> bytes:
    """Presentation context item (0x20, PS3.8 §9.3.2.2)."""
    value = bytes([context_id, 0, 0, 0]) + item(0x30, abstract.encode())
    value += b"".join(item(0x40, ts.encode()) for ts in syntaxes or (IMPLICIT_VR_LE,))
    return item(0x20, value)


def user_information(max_pdu: int = 16384) -> bytes:
    """User information item (0x50) with maximum length (0x51) and implementation class UID
    (0x52) sub-items (PS3.8 Annex D.1, PS3.7 Annex D.3.3.2)."""
    return item(
        0x50,
        item(0x51, struct.pack(">I", max_pdu)) + item(0x52, IMPLEMENTATION_UID.encode()),
    )


def associate_rq(
    contexts: Iterable[bytes] | None = None,
    *,
    called: bytes = ae("ANY-SCP"),
    calling: bytes = ae("ROBUST"),
    version: int = 1,
    max_pdu: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 §9.3.2, Table 9-11)."""
    if contexts is None:
        contexts = [
            presentation_context(1, VERIFICATION),
            presentation_context(3, CT_IMAGE_STORAGE, EXPLICIT_VR_LE),
        ]
    body = struct.pack(">HH", version, 0) + called + calling + b"\x00" * 32
    body += item(0x10, APPLICATION_CONTEXT.encode())
    body += b"".join(contexts)
    body += user_information(max_pdu)
    return pdu(0x01, body)


def pdv(context_id: int, data: bytes, *, command: bool, last: bool = True) -> bytes:
    """One presentation data value item (PS3.8 §9.3.5.1, Annex E.2 message control header)."""
    header = int(command) | (int(last) << 1)
    return struct.pack(">I", len(data) + 2) + bytes([context_id, header]) + data


def p_data(*pdvs: bytes) -> bytes:
    return pdu(0x04, b"".join(pdvs))


def release_rq() -> bytes:
    return pdu(0x05, b"\x00" * 4)


def element(tag: int, value: bytes) -> bytes:
    """An Implicit VR Little Endian element (PS3.5 §7.1.3) of group 0000."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def command_set(elements: dict[int, bytes]) -> bytes:
    """A command set with (0000,0000) CommandGroupLength first (PS3.7 §6.3.1)."""
    body = b"".join(element(tag, elements[tag]) for tag in sorted(elements))
    return element(0x00000000, struct.pack("<I", len(body))) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    """C-ECHO-RQ (PS3.7 Table 9.3-12)."""
    return command_set(
        {
            0x00000002: ui(VERIFICATION),
            0x00000100: us(0x0030),
            0x00000110: us(message_id),
            0x00000800: us(0x0101),
        }
    )


def c_store_rq(
    sop_instance_uid: str | None,
    message_id: int = 1,
    sop_class_uid: str = CT_IMAGE_STORAGE,
) -> bytes:
    """C-STORE-RQ (PS3.7 Table 9.3-1); ``sop_instance_uid=None`` leaves out the mandatory
    (0000,1000) AffectedSOPInstanceUID."""
    elements = {
        0x00000002: ui(sop_class_uid),
        0x00000100: us(0x0001),
        0x00000110: us(message_id),
        0x00000700: us(0x0000),
        0x00000800: us(0x0001),  # anything but 0x0101: a data set follows
    }
    if sop_instance_uid is not None:
        elements[0x00001000] = ui(sop_instance_uid)
    return command_set(elements)


def explicit_element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """An Explicit VR Little Endian element with a 2-byte length (PS3.5 §7.1.2)."""
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def ct_dataset(sop_instance_uid: str, study: str = "1.2.3.4", series: str = "1.2.3.4.5") -> bytes:
    """A small CT data set in Explicit VR Little Endian, with the layout's UIDs."""
    return b"".join(
        [
            explicit_element(0x0008, 0x0016, b"UI", ui(CT_IMAGE_STORAGE)),
            explicit_element(0x0008, 0x0018, b"UI", ui(sop_instance_uid)),
            explicit_element(0x0008, 0x0060, b"CS", b"CT"),
            explicit_element(0x0010, 0x0020, b"LO", b"ROBUST"),
            explicit_element(0x0020, 0x000D, b"UI", ui(study)),
            explicit_element(0x0020, 0x000E, b"UI", ui(series)),
        ]
    )


def parse_command(data: bytes) -> dict[int, bytes]:
    """Group 0000 elements of an Implicit VR Little Endian command set, raw values by tag."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        out[(group << 16) | elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


# --- the raw peer ----------------------------------------------------------------------------------


@dataclass
class Pdu:
    type: int
    body: bytes

    @property
    def abort(self) -> tuple[int, int]:
        """(source, reason) of an A-ABORT (PS3.8 Table 9-26)."""
        assert self.type == 0x07, f"expected A-ABORT, got PDU type 0x{self.type:02X}"
        return self.body[2], self.body[3]

    @property
    def reject(self) -> tuple[int, int, int]:
        """(result, source, reason) of an A-ASSOCIATE-RJ (PS3.8 Table 9-21)."""
        assert self.type == 0x03, f"expected A-ASSOCIATE-RJ, got PDU type 0x{self.type:02X}"
        return self.body[1], self.body[2], self.body[3]

    def accepted_contexts(self) -> dict[int, int]:
        """Presentation context ID -> result of an A-ASSOCIATE-AC (PS3.8 §9.3.3.2)."""
        assert self.type == 0x02, f"expected A-ASSOCIATE-AC, got PDU type 0x{self.type:02X}"
        out: dict[int, int] = {}
        pos = 68
        while pos + 4 <= len(self.body):
            kind, _r, length = struct.unpack_from(">BBH", self.body, pos)
            if kind == 0x21:
                out[self.body[pos + 4]] = self.body[pos + 6]
            pos += 4 + length
        return out

    def pdvs(self) -> list[tuple[int, int, bytes]]:
        """(context ID, message control header, data) of each PDV of a P-DATA-TF."""
        assert self.type == 0x04, f"expected P-DATA-TF, got PDU type 0x{self.type:02X}"
        out = []
        pos = 0
        while pos < len(self.body):
            (length,) = struct.unpack_from(">I", self.body, pos)
            out.append(
                (self.body[pos + 4], self.body[pos + 5], self.body[pos + 6 : pos + 4 + length])
            )
            pos += 4 + length
        return out


class RawPeer:
    """A TCP connection to the server that sends raw bytes and reads whole PDUs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_pdu(self, timeout: float = READ_TIMEOUT) -> Pdu:
        header = await asyncio.wait_for(self.reader.readexactly(6), timeout)
        pdu_type, _r, length = struct.unpack(">BBI", header)
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return Pdu(pdu_type, body)

    async def read_message(self, timeout: float = READ_TIMEOUT) -> dict[int, bytes]:
        """Read P-DATA-TF PDUs until a whole command set arrived; its elements by tag."""
        data = b""
        while True:
            p = await self.read_pdu(timeout)
            for _ctx, mch, value in p.pdvs():
                assert mch & 1, "a data set PDV where a command was expected"
                data += value
                if mch & 2:
                    return parse_command(data)

    async def closed_by_server(self, timeout: float = READ_TIMEOUT) -> bool:
        """True when the server closes the connection (EOF) within ``timeout``; bytes that still
        arrive before the EOF are read and dropped."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except (TimeoutError, ConnectionError):
            return False
        return True

    async def associate(self, rq: bytes | None = None) -> Pdu:
        """Send an A-ASSOCIATE-RQ (default: Verification and CT storage) and expect the AC."""
        await self.send(rq if rq is not None else associate_rq())
        ac = await self.read_pdu()
        assert ac.type == 0x02, f"association not accepted: PDU type 0x{ac.type:02X} {ac.body!r}"
        return ac

    def close(self) -> None:
        self.writer.close()

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


# --- the server ------------------------------------------------------------------------------------


@dataclass
class Running:
    server: DicomServer
    root: Path

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def temp_dir(self) -> Path:
        return self.root / ".incoming"

    async def peer(self) -> RawPeer:
        return await RawPeer.connect(self.port)

    async def echo_works(self) -> None:
        """A normal association with dicomnet's client still gets a successful C-ECHO."""
        async with DicomClient("127.0.0.1", self.port, "ROBUST", "ANY-SCP") as client:
            assert await client.c_echo() == Status.SUCCESS

    def stored_files(self) -> list[Path]:
        """Every file under the storage root, the temporary folder included."""
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    async def wait_idle(self, timeout: float = READ_TIMEOUT) -> None:
        """Wait until the server has finished every association it started (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.server.active and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert self.server.active == 0, f"{self.server.active} association(s) still running"


@contextlib.asynccontextmanager
async def running_server(root: Path, **limits: float | int | None) -> AsyncIterator[Running]:
    """A storage server writing into ``root``, with the short test limits unless overridden."""
    factory = StorageService.factory(root, fsync=False)
    settings: dict[str, float | int | None] = {
        "artim_timeout": ARTIM,
        "idle_timeout": IDLE,
        "dimse_timeout": 10.0,
    }
    settings.update(limits)
    async with DicomServer(factory, port=0, limits=ServerLimits(**settings)) as server:  # type: ignore[arg-type]
        running = Running(server, root)
        yield running
        # Associations the test left open end by ARTIM/idle timeouts or the peer's close.
        await running.wait_idle(timeout=15)
    # Closed: not even the pool's empty pre-created files stay in the temporary folder.
    left = [p for p in (root / ".incoming").rglob("*") if p.is_file()]
    assert left == [], f"temporary files left after the server closed: {left}"


@pytest.fixture
async def server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Running]:
    caplog.set_level(logging.DEBUG, logger="dicomnet")
    async with running_server(tmp_path / "store") as running:
        yield running
