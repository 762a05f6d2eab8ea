"""Message IDs on a long association (PS3.7 §9.1.1.1, §E.1: Message ID is US, 1-65535): a C-GET
whose C-STORE sub-operations outnumber the IDs. The server's sub-operations must cycle
1..65535 (never 0, never 65,536 or more: the old allocator sent 65,537 at the wrap, which the
command encoder refused), skipping IDs still outstanding.

The requestor is a raw peer answering from hand-built bytes, so the test measures the server
and stays within seconds."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dicomnet import DicomServer, Status
from dicomnet.service import ReceivedCGet, Response, Service
from tests.helpers import write_ct
from tests.robustness.conftest import (
    CT_IMAGE_STORAGE,
    EXPLICIT_VR_LE,
    IMPLEMENTATION_UID,
    IMPLICIT_VR_LE,
    Pdu,
    RawPeer,
    ae,
    command_set,
    element,
    item,
    p_data,
    parse_command,
    pdu,
    pdv,
    presentation_context,
    release_rq,
    ui,
    us,
)

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"  # PS3.4 §C.6.2.1.1
GET_CONTEXT, CT_CONTEXT = 1, 3
TOTAL = 65_535 + 500


def _associate_rq() -> bytes:
    """C-GET in Study Root, and CT storage with the SCP role for the requestor (role selection
    sub-item 0x54, PS3.7 D.3.3.4: the server may then send C-STORE-RQs to it)."""
    role = struct.pack(">H", len(CT_IMAGE_STORAGE)) + CT_IMAGE_STORAGE.encode() + b"\x00\x01"
    info = item(
        0x50,
        item(0x51, struct.pack(">I", 1 << 20))
        + item(0x52, IMPLEMENTATION_UID.encode())
        + item(0x54, role),
    )
    body = struct.pack(">HH", 1, 0) + ae("ANY-SCP") + ae("ROBUST") + b"\x00" * 32
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    body += presentation_context(GET_CONTEXT, STUDY_ROOT_GET, IMPLICIT_VR_LE)
    body += presentation_context(CT_CONTEXT, CT_IMAGE_STORAGE, EXPLICIT_VR_LE)
    return pdu(0x01, body + info)


def _c_get_rq() -> bytes:
    """C-GET-RQ (PS3.7 Table 9.3-8) and its identifier (Implicit VR Little Endian)."""
    command = command_set(
        {
            0x00000002: ui(STUDY_ROOT_GET),
            0x00000100: us(0x0010),
            0x00000110: us(1),
            0x00000700: us(0),
            0x00000800: us(0x0001),
        }
    )
    identifier = element(0x00080052, b"STUDY ") + element(0x0020000D, ui("1.2.3"))
    return p_data(
        pdv(GET_CONTEXT, command, command=True), pdv(GET_CONTEXT, identifier, command=False)
    )


def _c_store_rsp(message_id: int, sop_class: bytes, sop_instance: bytes) -> bytes:
    """C-STORE-RSP, success (PS3.7 Table 9.3-2)."""
    command = command_set(
        {
            0x00000002: sop_class,
            0x00000100: us(0x8001),
            0x00000120: us(message_id),
            0x00000800: us(0x0101),
            0x00000900: us(0x0000),
            0x00001000: sop_instance,
        }
    )
    return p_data(pdv(CT_CONTEXT, command, command=True))


async def _answer_sub_operations(peer: RawPeer) -> tuple[list[int], dict[int, bytes]]:
    """Answer every C-STORE-RQ with success until the final C-GET-RSP; returns the message IDs
    of the C-STORE-RQs in order, and the final response's command elements. (PDUs are read
    under one deadline, not one timer per read: the loop runs 130,000 times.)"""
    ids: list[int] = []
    command = b""
    store: dict[int, bytes] | None = None  # a C-STORE-RQ whose data set is still arriving
    reader, writer = peer.reader, peer.writer
    async with asyncio.timeout(300):
        while True:
            pdu_type, _reserved, length = struct.unpack(">BBI", await reader.readexactly(6))
            p = Pdu(pdu_type, await reader.readexactly(length))
            assert p.type == 0x04, f"expected P-DATA-TF, got PDU type 0x{p.type:02X}"
            for _ctx, control, value in p.pdvs():
                if not control & 1:  # a data set fragment: answer its C-STORE-RQ after the last
                    if control & 2 and store is not None:
                        (message_id,) = struct.unpack("<H", store[0x00000110])
                        writer.write(_c_store_rsp(message_id, store[0x00000002], store[0x00001000]))
                        store = None
                    continue
                command += value
                if not control & 2:
                    continue
                elements, command = parse_command(command), b""
                (field,) = struct.unpack("<H", elements[0x00000100])
                if field == 0x0001:  # C-STORE-RQ
                    (message_id,) = struct.unpack("<H", elements[0x00000110])
                    ids.append(message_id)
                    store = elements
                elif field == 0x8010:  # C-GET-RSP
                    (status,) = struct.unpack("<H", elements[0x00000900])
                    if status != Status.PENDING:
                        return ids, elements
                else:
                    raise AssertionError(f"unexpected command field 0x{field:04X}")
            if writer.transport.get_write_buffer_size() > 1 << 16:
                await writer.drain()


@pytest.mark.slow
async def test_c_get_sub_operations_wrap_their_message_ids(tmp_path: Path) -> None:
    source = tmp_path / "one.dcm"
    write_ct(source, rows=1, columns=1)  # tiny: the test is about the IDs, not the bytes

    class ManyInstances(Service):
        abstract_syntaxes = (STUDY_ROOT_GET,)

        async def on_c_get(self, request: ReceivedCGet) -> AsyncIterator[Response]:
            failed = 0
            for i in range(TOTAL):
                if await request.store(source) != Status.SUCCESS:
                    failed += 1
                if i % 4096 == 4095:
                    yield Response(Status.PENDING)
            # No counts: they are US too, and there are more than 65,535.
            yield Response(Status.SUCCESS if not failed else 0xB000)

    async with DicomServer(ManyInstances, port=0) as server:
        peer = await RawPeer.connect(server.port)
        ac = await peer.associate(_associate_rq())
        assert ac.accepted_contexts() == {GET_CONTEXT: 0, CT_CONTEXT: 0}
        started = time.monotonic()
        await peer.send(_c_get_rq())
        ids, final = await _answer_sub_operations(peer)
        elapsed = time.monotonic() - started
        await peer.send(release_rq())
        assert (await peer.read_pdu()).type == 0x06  # A-RELEASE-RP
        await peer.aclose()
    print(f"{TOTAL} C-GET sub-operations in {elapsed:.1f} s")
    assert struct.unpack("<H", final[0x00000900]) == (Status.SUCCESS,)  # none failed
    assert len(ids) == TOTAL
    assert ids[:65_535] == list(range(1, 65_536))
    assert ids[65_535:] == list(range(1, TOTAL - 65_535 + 1))  # 65,535 then 1 again


async def test_the_allocator_skips_ids_still_outstanding() -> None:
    """At the wrap, an ID whose sub-operation still waits for its response is not reused."""
    from dicomnet.dimse.ids import MessageIds

    ids = MessageIds(0xFFFE)
    assert [ids.allocate(), ids.allocate()] == [0xFFFE, 0xFFFF]
    assert ids.allocate({1, 2}) == 3
