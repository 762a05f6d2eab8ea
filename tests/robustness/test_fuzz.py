"""Fuzzing a running server with hypothesis: random bytes, mutated A-ASSOCIATE-RQs, and random
bytes after a valid association. Whatever arrives, the server answers only with well-formed PDUs
of the types the state it is in allows, logs no unexpected exception, leaves no association
running, and still serves a C-ECHO afterwards.

The tests are synchronous (hypothesis drives them) and run the server on their own event loop:
each example runs the loop until its connection is over, which also runs the server.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.robustness.conftest import (
    Running,
    associate_rq,
    c_echo_rq,
    p_data,
    pdv,
    running_server,
)

FUZZ = settings(
    max_examples=100,
    deadline=None,  # the loop is shared with a server; time is bounded per example below
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EXAMPLE_TIMEOUT = 10.0
VALID_RQ = associate_rq()


class LoopServer:
    """A storage server on a private event loop; ``run(coro)`` runs the loop for one example."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self._cm = running_server(root, artim_timeout=2.0, idle_timeout=5.0)
        self.server: Running = self.run(self._cm.__aenter__())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, EXAMPLE_TIMEOUT * 2))

    def close(self) -> None:
        try:
            self.run(self._cm.__aexit__(None, None, None))
        finally:
            self.loop.close()


@pytest.fixture
def loop_server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[LoopServer]:
    caplog.set_level(logging.INFO, logger="dicomnet")
    server = LoopServer(tmp_path / "store")
    try:
        yield server
        # Afterwards: a normal association works, nothing is left running, nothing crashed.
        server.run(server.server.echo_works())
        server.run(server.server.wait_idle())
        crashes = [
            r
            for r in caplog.records
            if r.name.startswith("dicomnet") and (r.levelno >= logging.ERROR or r.exc_info)
        ]
        assert crashes == [], [r.getMessage() for r in crashes]
        assert server.errors == []
    finally:
        server.close()


async def exchange(port: int, data: bytes, after_associate: bool = False) -> bytes:
    """Connect, (optionally associate,) send ``data``, half-close, and return everything the
    server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        if after_associate:
            writer.write(VALID_RQ)
            header = await asyncio.wait_for(reader.readexactly(6), EXAMPLE_TIMEOUT)
            assert header[0] == 0x02, header
            await reader.readexactly(struct.unpack(">I", header[2:])[0])
        try:
            writer.write(data)
            await writer.drain()
            writer.write_eof()
        except ConnectionError:
            pass  # the server may already have aborted and closed
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), EXAMPLE_TIMEOUT)
            except ConnectionError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return received


def pdus(data: bytes) -> list[tuple[int, bytes]]:
    """Split what the server sent into PDUs; fails if it is not a sequence of whole PDUs."""
    out = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 6, f"trailing bytes {data[pos:]!r}"
        pdu_type, _r, length = struct.unpack_from(">BBI", data, pos)
        assert pos + 6 + length <= len(data), "a PDU cut short"
        out.append((pdu_type, data[pos + 6 : pos + 6 + length]))
        pos += 6 + length
    return out


def check_before_association(data: bytes) -> None:
    """In Sta2 the server may answer with A-ASSOCIATE-AC, -RJ or A-ABORT only (and after an
    AC, P-DATA and release/abort of that association are not possible: we never sent any)."""
    answers = pdus(data)
    assert len(answers) <= 1, answers
    event(f"answer: {[hex(t) for t, _ in answers]}")  # see --hypothesis-show-statistics
    for pdu_type, body in answers:
        assert pdu_type in (0x02, 0x03, 0x07), pdu_type
        if pdu_type == 0x07:
            assert len(body) == 4 and body[2] == 2 and body[3] in (0, 1, 2, 4, 5, 6), body
        if pdu_type == 0x03:
            assert len(body) == 4 and body[1] in (1, 2) and body[2] in (1, 2, 3), body


@FUZZ
@given(data=st.binary(min_size=1, max_size=600))
def test_random_bytes(loop_server: LoopServer, data: bytes) -> None:
    check_before_association(loop_server.run(exchange(loop_server.server.port, data)))


@st.composite
def mutated_rq(draw: st.DrawFn) -> bytes:
    rq = bytearray(VALID_RQ)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(rq) - 1)) if rq else 0
        if kind == "flip" and rq:
            rq[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and rq:
            rq[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x2E]))
        elif kind == "insert":
            rq[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and rq:
            del rq[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del rq[at:]
    keep_length = draw(st.booleans())
    if keep_length and len(rq) >= 6:
        # Fix the PDU length so the mutation reaches the decoder instead of the framing.
        rq[2:6] = struct.pack(">I", len(rq) - 6)
    return bytes(rq)


@FUZZ
@given(data=mutated_rq())
def test_mutated_associate_rq(loop_server: LoopServer, data: bytes) -> None:
    check_before_association(loop_server.run(exchange(loop_server.server.port, data)))


@st.composite
def traffic_after_association(draw: st.DrawFn) -> bytes:
    """P-DATA-TF PDUs carrying random or slightly broken command sets, or raw random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=400))
    command = bytearray(c_echo_rq(draw(st.integers(0, 0xFFFF))))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(command) - 1))
        command[at] = draw(st.integers(0, 255))
    context = draw(st.sampled_from([1, 1, 3, 5, 255]))
    control = draw(st.booleans())
    return p_data(pdv(context, bytes(command), command=control, last=draw(st.booleans())))


@FUZZ
@given(data=traffic_after_association())
def test_random_traffic_after_association(loop_server: LoopServer, data: bytes) -> None:
    answers = pdus(loop_server.run(exchange(loop_server.server.port, data, after_associate=True)))
    event(f"answer: {sorted({hex(t) for t, _ in answers})}")
    for pdu_type, body in answers:
        # Responses (P-DATA-TF) or an A-ABORT from the provider; never an association PDU.
        assert pdu_type in (0x04, 0x07), pdu_type
        if pdu_type == 0x07:
            assert len(body) == 4 and body[2] == 2, body
