"""Well-formed PDUs in an order or at a pace the protocol does not allow, against a running
storage server: a second A-ASSOCIATE-RQ, release or abort in the middle of a data set, PDVs of
one message on two contexts, an oversized command set, a request trickled in byte by byte."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from dicomnet import DicomClient
from tests.helpers import make_ct
from tests.robustness.conftest import (
    ARTIM,
    VERIFICATION,
    Running,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    command_set,
    ct_dataset,
    p_data,
    pdu,
    pdv,
    release_rq,
    ui,
    us,
)
from tests.robustness.test_dimse import CT_CONTEXT, assert_nothing_stored, echo_on
from tests.robustness.test_pdu_level import logged

PROVIDER, UNEXPECTED_PDU, INVALID_PARAMETER = 2, 2, 6


def _partial_store(uid: str) -> bytes:
    """A C-STORE-RQ command and the first fragment (not the last) of its data set."""
    return p_data(pdv(CT_CONTEXT, c_store_rq(uid), command=True)) + p_data(
        pdv(CT_CONTEXT, ct_dataset(uid) + b"\x00" * 4000, command=False, last=False)
    )


async def test_second_associate_rq_when_established(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Sta6 + Evt6 (A-ASSOCIATE-RQ received) is AA-8: A-ABORT, service provider, unexpected
    PDU (PS3.8 Table 9-10, Table 9-26)."""
    peer = await server.peer()
    await peer.associate()
    await peer.send(associate_rq())
    abort = await peer.read_pdu()
    assert abort.abort == (PROVIDER, UNEXPECTED_PDU)
    assert await peer.closed_by_server()
    logged(caplog, "unexpected A_ASSOCIATE_RQ", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


async def test_peer_aborts_in_the_middle_of_a_data_set(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    peer = await server.peer()
    await peer.associate()
    await peer.send(_partial_store("1.2.3.4.5.6.20"))
    await peer.send(pdu(0x07, bytes([0, 0, 0, 0])))  # A-ABORT, service user
    # AA-3: the server closes the connection and sends nothing.
    assert await peer.closed_by_server()
    await peer.aclose()
    await server.wait_idle()
    logged(caplog, "A-ABORT received")
    assert_nothing_stored(server)
    await server.echo_works()


async def test_release_in_the_middle_of_a_data_set(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """An A-RELEASE-RQ while a message is incomplete: the message can never complete, its
    partial file goes, the release is answered (or the association aborted), and nothing is
    stored."""
    peer = await server.peer()
    await peer.associate()
    await peer.send(_partial_store("1.2.3.4.5.6.21"))
    await peer.send(release_rq())
    answer = await peer.read_pdu()
    assert answer.type in (0x06, 0x07), answer
    assert await peer.closed_by_server()
    await peer.aclose()
    await server.wait_idle()
    logged(caplog, "released" if answer.type == 0x06 else "abort")
    assert_nothing_stored(server)
    await server.echo_works()


async def test_message_split_across_two_contexts(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """The command on one presentation context and its data set on another: PS3.8 §9.3.5.1
    requires all PDVs of a message on the same context, so this cannot be used: A-ABORT."""
    peer = await server.peer()
    await peer.associate()
    await peer.send(p_data(pdv(CT_CONTEXT, c_store_rq("1.2.3.4.5.6.22"), command=True)))
    await peer.send(p_data(pdv(1, ct_dataset("1.2.3.4.5.6.22"), command=False)))
    abort = await peer.read_pdu()
    assert abort.abort[0] == PROVIDER
    assert await peer.closed_by_server()
    logged(caplog, "context", level=logging.WARNING)
    await peer.aclose()
    await server.wait_idle()
    assert_nothing_stored(server)
    await server.echo_works()


async def test_command_set_too_long(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    """A command set that never ends (many non-last command fragments) is refused once it
    passes the server's limit, without buffering without bound: A-ABORT."""
    peer = await server.peer()
    await peer.associate()
    chunk = p_data(pdv(1, b"\x00" * 16000, command=True, last=False))
    await peer.send(chunk * 5)  # 80 KB of command fragments, beyond the 64 KiB limit
    abort = await peer.read_pdu()
    assert abort.abort == (PROVIDER, INVALID_PARAMETER)
    assert await peer.closed_by_server()
    logged(caplog, "command", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


async def test_c_echo_with_a_data_set(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    """A C-ECHO-RQ announcing a data set (PS3.7 Table 9.3-12 says none): the server takes
    the data set, answers, and the association goes on."""
    command = command_set(
        {
            0x00000002: ui(VERIFICATION),
            0x00000100: us(0x0030),
            0x00000110: us(8),
            0x00000800: us(0x0001),  # a data set follows
        }
    )
    peer = await server.peer()
    await peer.associate()
    await peer.send(
        p_data(pdv(1, command, command=True)) + p_data(pdv(1, b"\x00" * 10, command=False))
    )
    rsp = await peer.read_message()
    assert rsp[0x00000120] == struct.pack("<H", 8)
    await echo_on(peer)
    await peer.aclose()
    await server.echo_works()


async def test_trickled_associate_rq_is_cut_by_artim(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that sends its A-ASSOCIATE-RQ one byte at a time cannot hold the connection past
    ARTIM: the timer runs from the connection until a whole request arrived (PS3.8 §9.1.5)."""
    peer = await server.peer()
    rq = associate_rq()
    loop = asyncio.get_running_loop()
    start = loop.time()
    closed = asyncio.ensure_future(peer.closed_by_server(timeout=ARTIM + 8))
    for byte in rq[:-1]:
        if closed.done():
            break
        try:
            await peer.send(bytes([byte]))
        except ConnectionError:
            break
        await asyncio.sleep(ARTIM / 20)  # pacing the slow peer, not waiting for the server
    assert await closed
    assert loop.time() - start < ARTIM + 8
    logged(caplog, "ARTIM")
    await peer.aclose()
    await server.echo_works()


async def test_bad_peers_do_not_disturb_a_good_one(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """While twenty peers misbehave at once (garbage, lying lengths, PDUs out of order, an
    abort mid data set), a normal client stores its instances on its own association."""
    bad_inputs = [
        b"\xff" * 100,
        struct.pack(">BBI", 0x01, 0, 0xFFFFFFFF),
        p_data(pdv(1, c_echo_rq(), command=True)),
        release_rq(),
        associate_rq()[:50],
    ]

    async def misbehave(n: int) -> None:
        peer = await server.peer()
        try:
            if n % 2:
                await peer.associate()
                await peer.send(_partial_store(f"1.2.3.4.5.7.{n}"))
                await peer.send(pdu(0x07, bytes(4)))
            else:
                await peer.send(bad_inputs[n // 2 % len(bad_inputs)])
            await peer.closed_by_server(timeout=ARTIM + 8)
        except ConnectionError:
            pass
        finally:
            await peer.aclose()

    datasets = [make_ct(rows=16, columns=16) for _ in range(5)]

    async def behave() -> list[int]:
        async with DicomClient("127.0.0.1", server.port, "GOOD", "ANY-SCP") as client:
            return [await client.c_store(ds) for ds in datasets]

    *_, statuses = await asyncio.gather(*(misbehave(n) for n in range(20)), behave())
    assert statuses == [0] * 5
    for ds in datasets:
        path = server.root / ds.StudyInstanceUID / ds.SeriesInstanceUID
        assert (path / f"{ds.SOPInstanceUID}.dcm").is_file()
    await server.wait_idle()
    instances = [p for p in server.stored_files() if server.temp_dir not in p.parents]
    assert len(instances) == len(datasets), instances
    await server.echo_works()
