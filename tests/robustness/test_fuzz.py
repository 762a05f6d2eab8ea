"""Fuzzing a running server with hypothesis: random bytes, mutated A-ASSOCIATE-RQs, and random
bytes after a valid association. Whatever arrives, the server answers only with well-formed PDUs
of the types the state it is in allows, and answers an invalid PDU with an A-ABORT (PS3.8 §9.2.3,
AA-1 in Sta2, AA-8 in Sta6) unless the input ends inside a PDU.

After every example (not once per test, so a failure is tied to its input and shrunk): the server
has no association of the example left running, has logged no ERROR record or exception, and
still answers a C-ECHO (on an association the test keeps open; a new association is checked at
the end of each test).

The tests are synchronous (hypothesis drives them) and run the server on their own event loop:
each example runs the loop until its connection is over, which also runs the server. The number
of examples and whether they are random come from the profile (tests/conftest.py).
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

from dicomnet import DicomClient, Status
from tests.robustness.conftest import (
    Running,
    associate_rq,
    c_echo_rq,
    p_data,
    pdv,
    running_server,
)

FUZZ = settings(
    deadline=None,  # the loop is shared with a server; time is bounded per example below
    # One server for all examples of a test: that is the point (it must survive them all).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EXAMPLE_TIMEOUT = 10.0
VALID_RQ = associate_rq()


class Problems(logging.Handler):
    """Collects dicomnet's log records that mean something went wrong: ERROR and above, or any
    record carrying an exception."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


class LoopServer:
    """A storage server on a private event loop; ``run(coro)`` runs the loop for one example."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self.problems = Problems()
        logging.getLogger("dicomnet").addHandler(self.problems)
        self._cm = running_server(root, artim_timeout=2.0, idle_timeout=5.0)
        self.server: Running = self.run(self._cm.__aenter__())
        # The C-ECHO after each example goes over one association kept open for the whole test
        # (a new one per example would double the test's time); it re-associates by itself if
        # the server ends it (idle limit), and a new association is checked once at the end.
        self.health = DicomClient("127.0.0.1", self.server.port, "HEALTH", "ANY-SCP")

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, EXAMPLE_TIMEOUT * 2))

    def check_health(self) -> None:
        """After one example: its association is over, nothing was logged as an error or crashed,
        and the server answers a C-ECHO."""
        self.run(self._wait_idle())
        problems, self.problems.records = self.problems.records, []
        errors, self.errors = self.errors, []
        assert problems == [], [r.getMessage() for r in problems]
        assert errors == [], errors
        assert self.run(self.health.c_echo()) == Status.SUCCESS

    async def _wait_idle(self) -> None:
        """No association left but the health client's own (Running.wait_idle, which expects
        none at all, with a 1 ms step: this runs once per example)."""
        deadline = self.loop.time() + EXAMPLE_TIMEOUT
        while self.loop.time() < deadline and self._extra():
            await asyncio.sleep(0.001)
        assert not self._extra(), (
            f"{self._extra()} association(s) of the example still running after it ended"
        )

    def _extra(self) -> int:
        return self.server.server.active - int(self.health.is_associated)

    def close(self) -> None:
        try:
            self.run(self.health.release())
            self.run(self._cm.__aexit__(None, None, None))
        finally:
            logging.getLogger("dicomnet").removeHandler(self.problems)
            self.loop.close()


@pytest.fixture
def loop_server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[LoopServer]:
    caplog.set_level(logging.INFO, logger="dicomnet")
    server = LoopServer(tmp_path / "store")
    try:
        yield server
        # At the end: the health association releases cleanly, and a new association is served.
        server.run(server.health.release())
        server.run(server.server.echo_works())
        server.run(server.server.wait_idle())
        assert [r.getMessage() for r in server.problems.records] == []
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


def first_pdu(data: bytes) -> tuple[int | None, bool]:
    """Type of the first PDU in what we sent, and whether it was sent whole (PS3.8 §9.3.1:
    type, reserved, 4-byte big-endian length). An input that ends inside its first PDU is
    followed by our half-close, so the server may see only a closed transport (Evt17, AA-5: no
    answer), or reject the header at once (an A-ABORT); both are fine."""
    if len(data) < 6:
        return (data[0] if data else None), False
    pdu_type, _r, length = struct.unpack_from(">BBI", data)
    return pdu_type, 6 + length <= len(data)


def check_abort(body: bytes) -> None:
    """An A-ABORT from the service provider with a reason of PS3.8 Table 9-26."""
    assert len(body) == 4 and body[2] == 2 and body[3] in (0, 1, 2, 4, 5, 6), body


def check_before_association(sent: bytes, data: bytes) -> None:
    """In Sta2 the server may answer with A-ASSOCIATE-AC, -RJ or A-ABORT only, and must answer
    every whole PDU but an A-ABORT: an A-ASSOCIATE-RQ with AC or RJ (AE-6), or an A-ABORT when
    it cannot accept the request; any other PDU, or an unrecognized one, with an A-ABORT (AA-1;
    Evt3, 4, 10, 12, 13, 19). A well-formed A-ABORT is never answered (Evt16, AA-2). What follows
    the first PDU in the input can only earn an A-ABORT (AA-8 in Sta6, AA-7 in Sta13)."""
    answers = pdus(data)
    event(f"answer: {[hex(t) for t, _ in answers]}")  # see --hypothesis-show-statistics
    assert len(answers) <= 2, answers
    for pdu_type, body in answers:
        assert pdu_type in (0x02, 0x03, 0x07), pdu_type
        if pdu_type == 0x07:
            check_abort(body)
        if pdu_type == 0x03:
            assert len(body) == 4 and body[1] in (1, 2) and body[2] in (1, 2, 3), body
    if len(answers) == 2:
        assert answers[1][0] == 0x07, answers
    sent_type, whole = first_pdu(sent)
    event(f"sent: {'whole' if whole else 'cut'} PDU")
    if not whole:
        return
    if sent_type == 0x07:
        # A well-formed A-ABORT (PS3.8 Table 9-26: 4 bytes, source 0 or 2) ends the
        # connection without an answer; a malformed one may be treated as invalid (Evt19).
        body = sent[6 : 6 + struct.unpack_from(">I", sent, 2)[0]]
        if len(body) == 4 and body[2] in (0, 2):
            assert answers == [], f"an A-ABORT was answered with {answers}"
    elif sent_type == 0x01:
        assert answers, "an A-ASSOCIATE-RQ got no answer (AE-6 or AA-1)"
    else:
        assert answers and answers[0][0] == 0x07, (
            f"a whole PDU of type 0x{sent_type:02X} in Sta2 got {answers}, not an A-ABORT (AA-1)"
        )


@st.composite
def framed_pdu(draw: st.DrawFn) -> bytes:
    """A whole PDU of any type with a random body and the right length, sometimes followed by
    more bytes: the framing is right, so the decoder (not the reader) must reject it."""
    pdu_type = draw(st.one_of(st.integers(1, 7), st.integers(0, 255)))
    body = draw(st.binary(max_size=300))
    tail = draw(st.one_of(st.just(b""), st.binary(max_size=40)))
    return (
        struct.pack(">BBI", pdu_type, draw(st.sampled_from([0, 0, 0xFF])), len(body)) + body + tail
    )


@st.composite
def well_formed_pdu(draw: st.DrawFn) -> bytes:
    """A well-formed PDU of a type other than A-ASSOCIATE-RQ (PS3.8 §9.3.3 - §9.3.8), which
    Sta2 does not expect: each one must meet its own event (Evt3, 4, 10, 12, 13, 16), not the
    decoder's rejection (Evt19)."""
    kind = draw(st.sampled_from(["ac", "rj", "p-data", "release-rq", "release-rp", "abort"]))
    if kind == "ac":  # the valid request's items with the AC's type: Evt3
        return b"\x02" + VALID_RQ[1:]
    if kind == "rj":
        reason = bytes([0, draw(st.sampled_from([1, 2])), draw(st.integers(1, 3)), 1])
        return struct.pack(">BBI", 0x03, 0, 4) + reason
    if kind == "p-data":
        value = draw(st.binary(max_size=64))
        return p_data(pdv(draw(st.integers(1, 255)), value, command=draw(st.booleans())))
    if kind == "abort":
        source = draw(st.sampled_from([0, 2]))
        return struct.pack(">BBI", 0x07, 0, 4) + bytes([0, 0, source, draw(st.integers(0, 6))])
    return struct.pack(">BBI", 0x05 if kind == "release-rq" else 0x06, 0, 4) + b"\x00" * 4


@FUZZ
@given(data=st.one_of(st.binary(min_size=1, max_size=600), framed_pdu(), well_formed_pdu()))
def test_random_bytes(loop_server: LoopServer, data: bytes) -> None:
    check_before_association(data, loop_server.run(exchange(loop_server.server.port, data)))
    loop_server.check_health()


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
    check_before_association(data, loop_server.run(exchange(loop_server.server.port, data)))
    loop_server.check_health()


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
        # Responses (P-DATA-TF), an A-RELEASE-RP to a release we sent, or an A-ABORT from the
        # provider; never an association PDU.
        assert pdu_type in (0x04, 0x06, 0x07), pdu_type
        if pdu_type == 0x07:
            check_abort(body)
    sent_type, whole = first_pdu(data)
    if whole and sent_type not in (0x04, 0x05, 0x07):
        # Sta6: A-ASSOCIATE-RQ/AC/RJ, A-RELEASE-RP or an unrecognized PDU is answered with an
        # A-ABORT (AA-8; Evt3, 4, 6, 13, 19).
        assert answers and answers[-1][0] == 0x07, (
            f"a whole PDU of type 0x{sent_type:02X} in Sta6 got {answers}, not an A-ABORT (AA-8)"
        )
    loop_server.check_health()


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x39\x00\x00\x00\x00\x00", id="unknown-pdu"),
        pytest.param(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00", id="a-release-rq"),
    ],
)
def test_associate_rq_followed_by_another_pdu(loop_server: LoopServer, tail: bytes) -> None:
    """An A-ASSOCIATE-RQ and, in the same write, another PDU: the second one arrives in Sta3
    (awaiting our answer), where anything but our own answer is Evt12/Evt19 -> AA-8: an A-ABORT,
    no AC afterwards, and nothing logged as an error."""
    answers = pdus(loop_server.run(exchange(loop_server.server.port, VALID_RQ + tail)))
    assert answers and answers[-1][0] == 0x07, answers
    check_abort(answers[-1][1])
    loop_server.check_health()
