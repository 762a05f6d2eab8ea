"""The asynchronous operations window (PS3.7 D.3.3.3) really runs operations at once, in both roles.

Negotiating a window is not enough: a server that performs one request at a time, or a client that
waits for each response before it sends the next request, still negotiates it. So:

- SCP role: a dicomnet ``DicomServer`` whose C-ECHO and C-STORE handlers each take 0.2 s and record
  how many run at once. With a window of 8 and 8 requests, all 8 run together (peak 8) and the
  whole batch takes about 0.2 s, not 1.6 s.
- SCU role: dicomnet's ``DicomClient`` against a raw SCP written here from PS3.8 §9.3 that answers
  nothing until the whole window's worth of requests has arrived. A client that sends one request
  at a time never gets there and fails after a bounded wait. The raw SCP also reports how many
  requests were outstanding at most, so a client that overruns a smaller window fails too.

The raw SCP does not use dicomnet's server, so the SCU test checks the client alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

import dicomnet
from dicomnet import DicomClient, DicomServer, Status
from tests.helpers import make_ct

HANDLER_TIME = 0.2  # each operation's work in the SCP-role tests
GATE_TIMEOUT = 5.0  # how long the raw SCP waits for a full window before it gives up
TEST_TIMEOUT = 30.0  # bound on each test's whole conversation

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 Annex A.2.1
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.543.98"


# --- SCP role: dicomnet's server performs the window's operations at once ------------------------


@dataclass
class Concurrency:
    """How many handler calls run at the same time, and the most that ever did."""

    now: int = 0
    peak: int = 0
    calls: int = 0

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        self.now += 1
        self.calls += 1
        self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            self.now -= 1


def timed_service(window: int) -> tuple[type[dicomnet.Service], Concurrency]:
    """A Service (default on_association_request) performing ``window`` operations at once,
    whose handlers each take HANDLER_TIME."""
    seen = Concurrency()

    class Timed(dicomnet.Service):
        max_operations_performed = window

        async def on_c_echo(self, request: object) -> int:
            async with seen.working():
                await asyncio.sleep(HANDLER_TIME)  # the handler's own work
            return Status.SUCCESS

        async def on_c_store(self, request: object) -> int:
            async with seen.working():
                await asyncio.sleep(HANDLER_TIME)
            return Status.SUCCESS

    return Timed, seen


def _requests(kind: str, count: int, statuses: list[int]) -> list[dicomnet.Request]:
    def record(rq: object, rsp: object) -> None:
        statuses.append(int(getattr(rsp, "status", -1)))

    if kind == "echo":
        return [dicomnet.CEchoRequest(on_response=record) for _ in range(count)]
    return [
        dicomnet.CStoreRequest.from_dataset(make_ct(rows=8, columns=8), on_response=record)
        for _ in range(count)
    ]


@pytest.mark.parametrize("kind", ["echo", "store"])
async def test_server_performs_a_window_of_8_at_once(kind: str) -> None:
    service, seen = timed_service(8)
    statuses: list[int] = []
    async with DicomServer(service, "127.0.0.1", 0) as server:
        async with DicomClient(
            "127.0.0.1", server.port, "SCU", "WINDOW", dimse_timeout=10
        ) as client:
            client.negotiate_async_ops(8)
            for request in _requests(kind, 8, statuses):
                await client.add_request(request)
            started = time.monotonic()
            await asyncio.wait_for(client.send(), TEST_TIMEOUT)
            elapsed = time.monotonic() - started
            assert client.negotiated is not None
            assert client.negotiated.max_operations_invoked == 8
    assert statuses == [Status.SUCCESS] * 8
    assert seen.calls == 8
    assert seen.peak == 8, f"at most {seen.peak} of 8 {kind} handlers ran at once"
    # One at a time would take 8 * 0.2 = 1.6 s; all at once about 0.2 s plus association setup.
    assert HANDLER_TIME <= elapsed < 4 * HANDLER_TIME, f"8 requests took {elapsed:.2f} s"


async def test_server_keeps_to_a_smaller_window() -> None:
    """The service performs 3 at once; the client proposes 8 and is granted 3: never more than 3
    handlers run, and the 8 requests take three rounds of the handler's time."""
    service, seen = timed_service(3)
    statuses: list[int] = []
    async with DicomServer(service, "127.0.0.1", 0) as server:
        async with DicomClient(
            "127.0.0.1", server.port, "SCU", "WINDOW", dimse_timeout=10
        ) as client:
            client.negotiate_async_ops(8)
            for request in _requests("echo", 8, statuses):
                await client.add_request(request)
            started = time.monotonic()
            await asyncio.wait_for(client.send(), TEST_TIMEOUT)
            elapsed = time.monotonic() - started
            assert client.negotiated is not None
            assert client.negotiated.max_operations_invoked == 3
    assert statuses == [Status.SUCCESS] * 8
    assert seen.peak == 3
    assert 3 * HANDLER_TIME <= elapsed < 7 * HANDLER_TIME, f"8 requests took {elapsed:.2f} s"


# --- SCU role: a raw SCP (PS3.8 §9.3, PS3.7 §9.3) that holds its answers -------------------------


def _item(item_type: int, value: bytes) -> bytes:
    """An A-ASSOCIATE item or sub-item: type, reserved, 2-byte big-endian length (PS3.8 §9.3.2)."""
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    """A PDU: type, reserved, 4-byte big-endian length (PS3.8 §9.3.1)."""
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _command(elements: dict[int, bytes]) -> bytes:
    """A command set, Implicit VR Little Endian, group length first (PS3.7 §6.3.1)."""
    body = b"".join(
        struct.pack("<HHI", 0, elem, len(value)) + value for elem, value in sorted(elements.items())
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def _parse_command(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        _group, elem, length = struct.unpack_from("<HHI", data, pos)
        out[elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


def _us(raw: bytes) -> int:
    return int(struct.unpack("<H", raw)[0])


def _associate_ac(rq_body: bytes, window: int) -> bytes:
    """Accept every proposed context with its first transfer syntax (PS3.8 §9.3.3), and grant
    ``window`` operations each way (PS3.7 D.3.3.3, sub-item 53H)."""
    items = [_item(0x10, APPLICATION_CONTEXT.encode())]
    pos = 68  # protocol version, reserved, called and calling AE, 32 reserved bytes
    while pos + 4 <= len(rq_body):
        kind, _r, length = struct.unpack_from(">BBH", rq_body, pos)
        value = rq_body[pos + 4 : pos + 4 + length]
        if kind == 0x20:
            context_id, syntaxes, sub = value[0], [], 4
            while sub + 4 <= len(value):
                sub_kind, _r, sub_len = struct.unpack_from(">BBH", value, sub)
                if sub_kind == 0x40:
                    syntaxes.append(value[sub + 4 : sub + 4 + sub_len])
                sub += 4 + sub_len
            # result 0 = acceptance (PS3.8 Table 9-18)
            items.append(_item(0x21, bytes([context_id, 0, 0, 0]) + _item(0x40, syntaxes[0])))
        pos += 4 + length
    items.append(
        _item(
            0x50,
            _item(0x51, struct.pack(">I", 16384))
            + _item(0x52, IMPLEMENTATION_UID.encode())
            + _item(0x53, struct.pack(">HH", window, window)),
        )
    )
    # Called/calling AE titles and the reserved bytes come back as received (Table 9-17).
    return _pdu(0x02, rq_body[:68] + b"".join(items))


@dataclass
class HoldingSCP:
    """Accepts one association, then answers requests only in rounds: it waits until ``window``
    requests (or all ``total`` still to come) are outstanding, holds a moment to see whether the
    client sends more than the window allows, and answers them all."""

    window: int
    total: int
    arrived: int = 0
    answered: int = 0
    peak_outstanding: int = 0
    failure: str | None = None
    released: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _outstanding: list[dict[int, bytes]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            pdu_type, body = await self._read_pdu(reader)
            assert pdu_type == 0x01, f"expected A-ASSOCIATE-RQ, got 0x{pdu_type:02X}"
            writer.write(_associate_ac(body, self.window))
            responder = asyncio.create_task(self._respond(writer))
            try:
                await self._receive(reader, writer)
            finally:
                responder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await responder
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        pdu_type, _r, length = struct.unpack(">BBI", await reader.readexactly(6))
        return pdu_type, await reader.readexactly(length)

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = b""
        waiting_for_data: dict[int, bytes] | None = None
        while True:
            pdu_type, body = await self._read_pdu(reader)
            if pdu_type == 0x05:  # A-RELEASE-RQ -> A-RELEASE-RP
                self.released = True
                writer.write(_pdu(0x06, b"\x00" * 4))
                await writer.drain()
                return
            if pdu_type != 0x04:
                return  # A-ABORT or anything else ends the conversation
            pos = 0
            while pos < len(body):  # PDVs (PS3.8 §9.3.5.1, Annex E.2)
                (length,) = struct.unpack_from(">I", body, pos)
                context_id, control = body[pos + 4], body[pos + 5]
                value = body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 0x01:
                    command += value
                    if control & 0x02:
                        elements = _parse_command(command)
                        elements[0xFFFF] = bytes([context_id])  # keep the context for the answer
                        command = b""
                        if _us(elements[0x0800]) == 0x0101:
                            await self._arrive(elements)
                        else:
                            waiting_for_data = elements
                elif control & 0x02 and waiting_for_data is not None:
                    await self._arrive(waiting_for_data)
                    waiting_for_data = None

    async def _arrive(self, elements: dict[int, bytes]) -> None:
        async with self._changed:
            self.arrived += 1
            self._outstanding.append(elements)
            self.peak_outstanding = max(self.peak_outstanding, len(self._outstanding))
            self._changed.notify_all()

    async def _respond(self, writer: asyncio.StreamWriter) -> None:
        while self.answered < self.total:
            wanted = min(self.window, self.total - self.answered)
            try:
                async with self._changed:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda n=wanted: len(self._outstanding) >= n),
                        GATE_TIMEOUT,
                    )
            except TimeoutError:
                self.failure = (
                    f"only {len(self._outstanding)} request(s) outstanding after "
                    f"{GATE_TIMEOUT} s; {wanted} expected at once"
                )
                writer.write(_pdu(0x07, bytes([0, 0, 0, 0])))  # A-ABORT, service user
                writer.close()
                return
            # Hold briefly: a client that ignores the window sends more meanwhile (it can only
            # make peak_outstanding larger, never smaller).
            await asyncio.sleep(0.1)
            async with self._changed:
                batch, self._outstanding = self._outstanding, []
            for rq in batch:
                writer.write(self._response(rq))
                self.answered += 1
            await writer.drain()

    @staticmethod
    def _response(rq: dict[int, bytes]) -> bytes:
        """C-ECHO-RSP (Table 9.3-13) or C-STORE-RSP (Table 9.3-2), Success."""
        field_value = _us(rq[0x0100]) | 0x8000
        elements = {
            0x0002: rq[0x0002],
            0x0100: struct.pack("<H", field_value),
            0x0120: rq[0x0110],
            0x0800: struct.pack("<H", 0x0101),
            0x0900: struct.pack("<H", 0x0000),
        }
        if 0x1000 in rq:
            elements[0x1000] = rq[0x1000]
        data = _command(elements)
        pdv = struct.pack(">I", len(data) + 2) + rq[0xFFFF] + b"\x03" + data
        return _pdu(0x04, pdv)


@contextlib.asynccontextmanager
async def holding_scp(window: int, total: int) -> AsyncIterator[tuple[HoldingSCP, int]]:
    scp = HoldingSCP(window, total)
    server = await asyncio.start_server(scp.handle, "127.0.0.1", 0)
    try:
        yield scp, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["echo", "store"])
async def test_client_keeps_a_window_of_8_in_flight(kind: str) -> None:
    statuses: list[int] = []
    async with holding_scp(window=8, total=8) as (scp, port):
        client = DicomClient("127.0.0.1", port, "SCU", "HOLDING", dimse_timeout=10)
        client.negotiate_async_ops(8)
        for request in _requests(kind, 8, statuses):
            await client.add_request(request)
        try:
            await asyncio.wait_for(client.send(), TEST_TIMEOUT)
        finally:
            await asyncio.wait_for(client.release(), TEST_TIMEOUT)
    assert scp.failure is None, (
        f"the client did not keep 8 {kind} requests in flight: {scp.failure}"
    )
    assert scp.peak_outstanding == 8
    assert statuses == [Status.SUCCESS] * 8
    assert scp.released


async def test_client_direct_calls_share_the_window() -> None:
    """``await client.c_echo()`` from 8 tasks at once on one association: 8 in flight."""
    async with holding_scp(window=8, total=8) as (scp, port):
        async with DicomClient("127.0.0.1", port, "SCU", "HOLDING", dimse_timeout=10) as client:
            client.negotiate_async_ops(8)
            await client.associate()
            results = await asyncio.wait_for(
                asyncio.gather(*(client.c_echo() for _ in range(8))), TEST_TIMEOUT
            )
    assert scp.failure is None, scp.failure
    assert scp.peak_outstanding == 8
    assert results == [Status.SUCCESS] * 8


async def test_client_keeps_to_the_granted_window() -> None:
    """Granted 3, the client has at most 3 requests outstanding, and still sends all 8."""
    statuses: list[int] = []
    async with holding_scp(window=3, total=8) as (scp, port):
        async with DicomClient("127.0.0.1", port, "SCU", "HOLDING", dimse_timeout=10) as client:
            client.negotiate_async_ops(8)
            for request in _requests("echo", 8, statuses):
                await client.add_request(request)
            await asyncio.wait_for(client.send(), TEST_TIMEOUT)
            assert client.negotiated is not None
            assert client.negotiated.max_operations_invoked == 3
    assert scp.failure is None, scp.failure
    assert scp.peak_outstanding == 3
    assert scp.arrived == 8
    assert statuses == [Status.SUCCESS] * 8
