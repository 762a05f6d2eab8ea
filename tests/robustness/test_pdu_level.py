"""Bad bytes at the upper layer (PS3.8 §9.2, §9.3) against a running server: truncated PDUs,
lying length fields, unknown PDU types, PDUs in the wrong state, silent connections, too many
connections. Each case checks the answer the standard prescribes, a log record naming the fault,
and that the server then serves a normal association."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import psutil
import pytest

from tests.robustness.conftest import (
    ARTIM,
    IDLE,
    Running,
    associate_rq,
    c_echo_rq,
    p_data,
    pdu,
    pdv,
    running_server,
)

# A-ABORT source/reason (PS3.8 Table 9-26) and A-ASSOCIATE-RJ fields (Table 9-21).
PROVIDER = 2
NOT_SPECIFIED, UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0, 1, 2, 6


def logged(caplog: pytest.LogCaptureFixture, *words: str, level: int = logging.INFO) -> str:
    """The first dicomnet record at ``level`` or above whose message contains every word."""
    for record in caplog.records:
        text = record.getMessage()
        if (
            record.name.startswith("dicomnet")
            and record.levelno >= level
            and all(w.lower() in text.lower() for w in words)
        ):
            return text
    seen = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)
    raise AssertionError(f"no dicomnet log record with {words!r}; records:\n{seen}")


async def test_truncated_pdu_then_close(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    peer = await server.peer()
    rq = associate_rq()
    await peer.send(rq[: len(rq) // 2])
    await peer.aclose()
    await server.wait_idle()
    # Evt17 in Sta2 is AA-5: nothing to answer, the connection is just gone.
    logged(caplog, "incomplete PDU")
    await server.echo_works()


async def test_length_beyond_data_before_association_artim(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A header announcing more bytes than ever come: ARTIM (Sta2, Evt18 -> AA-2) closes."""
    peer = await server.peer()
    await peer.send(struct.pack(">BBI", 0x01, 0, 1000) + b"\x00" * 10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await peer.closed_by_server(timeout=ARTIM + 8)
    assert loop.time() - start < ARTIM + 8
    logged(caplog, "ARTIM")
    await peer.aclose()
    await server.echo_works()


async def test_length_beyond_data_when_established_idle_abort(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """In Sta6 a P-DATA-TF that never completes: the idle timeout aborts the association
    (A-ABORT, service provider) and closes the connection."""
    peer = await server.peer()
    await peer.associate()
    await peer.send(struct.pack(">BBI", 0x04, 0, 5000) + b"\x00" * 100)
    abort = await peer.read_pdu(timeout=IDLE + 8)
    assert abort.abort[0] == PROVIDER
    assert await peer.closed_by_server()
    logged(caplog, "idle", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


async def test_length_beyond_data_when_established_peer_closes(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    peer = await server.peer()
    await peer.associate()
    await peer.send(struct.pack(">BBI", 0x04, 0, 5000) + b"\x00" * 100)
    await peer.aclose()
    await server.wait_idle()
    logged(caplog, "incomplete PDU")
    await server.echo_works()


@pytest.mark.parametrize("established", [False, True], ids=["sta2", "sta6"])
@pytest.mark.parametrize("pdu_type", [0x01, 0x04], ids=["associate-rq", "p-data-tf"])
async def test_length_0xffffffff_aborts_without_allocating(
    server: Running, caplog: pytest.LogCaptureFixture, established: bool, pdu_type: int
) -> None:
    peer = await server.peer()
    if established:
        await peer.associate()
    process = psutil.Process()
    before = process.memory_info().rss
    await peer.send(struct.pack(">BBI", pdu_type, 0, 0xFFFFFFFF) + b"\x00" * 1024)
    abort = await peer.read_pdu()
    after = process.memory_info().rss
    source, reason = abort.abort
    assert source == PROVIDER
    # The length is a parameter of a recognized PDU whose value we cannot accept.
    assert reason == INVALID_PARAMETER
    assert after - before < 32 << 20, f"RSS grew by {(after - before) >> 20} MiB"
    assert await peer.closed_by_server()
    logged(caplog, "exceeds", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


@pytest.mark.parametrize("established", [False, True], ids=["sta2", "sta6"])
@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0x41, 0xFF])
async def test_unknown_pdu_type(
    server: Running, caplog: pytest.LogCaptureFixture, established: bool, pdu_type: int
) -> None:
    """PS3.8 §9.3.8, Table 9-26: source 2 (service provider), reason 1 (unrecognized PDU)."""
    peer = await server.peer()
    if established:
        await peer.associate()
    await peer.send(pdu(pdu_type, b"\x00" * 8))
    abort = await peer.read_pdu()
    assert abort.abort == (PROVIDER, UNRECOGNIZED_PDU)
    assert await peer.closed_by_server()
    logged(caplog, f"unknown PDU type 0x{pdu_type:02X}", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


async def test_p_data_before_association(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    """Sta2 + Evt10 (P-DATA-TF received) is AA-1: A-ABORT, source service provider, reason
    unexpected PDU, then the connection closes."""
    peer = await server.peer()
    await peer.send(p_data(pdv(1, c_echo_rq(), command=True)))
    abort = await peer.read_pdu()
    assert abort.abort == (PROVIDER, UNEXPECTED_PDU)
    assert await peer.closed_by_server()
    logged(caplog, "P_DATA_TF", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


@pytest.mark.parametrize("pdu_type", [0x02, 0x03, 0x05, 0x06], ids=["ac", "rj", "rel-rq", "rel-rp"])
async def test_other_pdus_before_association(
    server: Running, caplog: pytest.LogCaptureFixture, pdu_type: int
) -> None:
    """Sta2 + Evt3/4/12/14's received counterparts (AC, RJ, RELEASE-RQ/RP) are AA-1."""
    body = (
        associate_rq()[6:]
        if pdu_type == 0x02
        else (b"\x00\x01\x01\x01" if pdu_type == 0x03 else b"\x00" * 4)
    )
    peer = await server.peer()
    await peer.send(pdu(pdu_type, body))
    abort = await peer.read_pdu()
    assert abort.abort == (PROVIDER, UNEXPECTED_PDU)
    assert await peer.closed_by_server()
    logged(caplog, "unexpected", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


async def test_silent_connections_released_by_artim(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomnet")
    async with running_server(tmp_path / "store", max_associations=64) as server:
        peers = [await server.peer() for _ in range(20)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        closed = await asyncio.gather(*(p.closed_by_server(timeout=ARTIM + 10) for p in peers))
        assert all(closed)
        assert loop.time() - start < ARTIM + 10
        await server.wait_idle()
        assert sum("ARTIM" in r.getMessage() for r in caplog.records) >= 20
        for p in peers:
            await p.aclose()
        await server.echo_works()


async def test_max_associations_rejected_transient_local_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Beyond the limit: A-ASSOCIATE-RJ result 2 (transient), source 3 (service provider,
    presentation), reason 2 (local limit exceeded) (PS3.8 Table 9-21)."""
    caplog.set_level(logging.DEBUG, logger="dicomnet")
    async with running_server(tmp_path / "store", max_associations=2, artim_timeout=4.0) as server:
        silent = [await server.peer() for _ in range(2)]
        extra = await server.peer()
        await extra.send(associate_rq())
        rj = await extra.read_pdu()
        assert rj.reject == (2, 3, 2)
        assert await extra.closed_by_server()
        logged(caplog, "local limit exceeded", level=logging.WARNING)
        await extra.aclose()
        # The silent ones end by ARTIM; then there is room again.
        assert all(await asyncio.gather(*(p.closed_by_server(timeout=15) for p in silent)))
        for p in silent:
            await p.aclose()
        await server.wait_idle()
        await server.echo_works()


async def test_trickling_one_byte_at_a_time_still_reaches_the_idle_limit(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that keeps an unfinished P-DATA-TF alive by sending one byte now and then does not
    hold its association slot for ever: idle time counts from the last complete PDU."""
    peer = await server.peer()
    await peer.associate()
    await peer.send(struct.pack(">BBI", 0x04, 0, 5000))
    loop = asyncio.get_running_loop()
    start = loop.time()
    aborted = False
    for _ in range(int((IDLE + 8) / 0.25)):  # bounded: the abort must come before IDLE + 8 s
        try:
            abort = await peer.read_pdu(timeout=0.25)
        except TimeoutError:
            await peer.send(b"\x00")  # the trickle: one byte, never a complete PDU
            continue
        assert abort.abort[0] == PROVIDER
        aborted = True
        break
    assert aborted
    assert loop.time() - start < IDLE + 8
    logged(caplog, "idle", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()
