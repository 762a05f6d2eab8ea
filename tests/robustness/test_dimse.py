"""Bad DIMSE traffic on an established association (PS3.7 §9, PS3.4 Annex B) against a running
storage server: incomplete command sets, unaccepted presentation contexts, garbage data sets,
UIDs that would escape the storage folder, a peer that vanishes mid data set, a full disk.

Each case checks the status (or A-ABORT) the standard prescribes, a log record, that nothing is
left in the storage folder, and that the server goes on serving."""

from __future__ import annotations

import errno
import io
import logging
import os
import struct
from pathlib import Path

import pytest

import dicomnet.sinks
from tests.robustness.conftest import (
    VERIFICATION,
    RawPeer,
    Running,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    ct_dataset,
    p_data,
    pdv,
    presentation_context,
)
from tests.robustness.test_pdu_level import logged

CT_CONTEXT = 3  # CT Image Storage, Explicit VR Little Endian (see associate_rq)
ECHO_CONTEXT = 1


def status_of(rsp: dict[int, bytes]) -> int:
    (status,) = struct.unpack("<H", rsp[0x00000900])
    return int(status)


def responded_to(rsp: dict[int, bytes]) -> int:
    (message_id,) = struct.unpack("<H", rsp[0x00000120])
    return int(message_id)


async def echo_on(peer: RawPeer, message_id: int = 99) -> None:
    """The association still works: a C-ECHO on it gets a success response."""
    await peer.send(p_data(pdv(ECHO_CONTEXT, c_echo_rq(message_id), command=True)))
    rsp = await peer.read_message()
    assert responded_to(rsp) == message_id
    assert status_of(rsp) == 0x0000


async def store(peer: RawPeer, command: bytes, dataset: bytes, context: int = CT_CONTEXT) -> None:
    await peer.send(
        p_data(pdv(context, command, command=True)) + p_data(pdv(context, dataset, command=False))
    )


def assert_nothing_stored(server: Running) -> None:
    """No instance in the storage folder, and no partial temporary file: what the temporary
    folder may hold are the empty files the pool creates ahead of time."""
    leftovers = [
        p for p in server.stored_files() if server.temp_dir not in p.parents or p.stat().st_size
    ]
    assert leftovers == [], f"left behind: {leftovers}"


def assert_tree_unchanged(tmp_path: Path, before: set[Path]) -> None:
    """Nothing written anywhere under the test's folder outside the (empty) storage."""
    after = {p for p in tmp_path.rglob("*") if p.is_file() and ".incoming" not in p.parts}
    assert after == before


async def test_c_store_without_affected_sop_instance_uid(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """(0000,1000) is mandatory in a C-STORE-RQ (PS3.7 Table 9.3-1): a failure status
    (0xC000 family, "cannot understand"), the data set that follows is dropped, and the
    association goes on."""
    peer = await server.peer()
    await peer.associate()
    await store(peer, c_store_rq(None, message_id=7), ct_dataset("1.2.3.4.5.6"))
    rsp = await peer.read_message()
    assert responded_to(rsp) == 7
    assert status_of(rsp) & 0xF000 == 0xC000
    logged(caplog, "AffectedSOPInstanceUID", level=logging.WARNING)
    await echo_on(peer)
    assert_nothing_stored(server)
    await peer.aclose()
    await server.echo_works()


async def test_command_without_message_id_aborts(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Without (0000,0110) MessageID there is no way to answer: A-ABORT from the service
    provider, invalid PDU parameter value."""
    peer = await server.peer()
    await peer.associate()
    command = bytearray(c_echo_rq())
    at = command.index(struct.pack("<HH", 0x0000, 0x0110))
    del command[at : at + 10]
    command[8:12] = struct.pack("<I", len(command) - 12)  # fix (0000,0000)
    await peer.send(p_data(pdv(ECHO_CONTEXT, bytes(command), command=True)))
    abort = await peer.read_pdu()
    assert abort.abort == (2, 6)
    assert await peer.closed_by_server()
    logged(caplog, "MessageID", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


async def test_garbage_command_set_aborts(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    peer = await server.peer()
    await peer.associate()
    await peer.send(p_data(pdv(ECHO_CONTEXT, b"\x01\x02\x03", command=True)))
    abort = await peer.read_pdu()
    assert abort.abort == (2, 6)
    assert await peer.closed_by_server()
    logged(caplog, "DIMSE", level=logging.WARNING)
    await peer.aclose()
    await server.echo_works()


@pytest.mark.parametrize("context_id", [5, 7, 255], ids=["rejected", "never-proposed", "255"])
async def test_data_on_unaccepted_context(
    server: Running, caplog: pytest.LogCaptureFixture, context_id: int
) -> None:
    """A PDV on a presentation context that was not accepted (context 5 is proposed with an
    unknown abstract syntax and rejected; 7 and 255 were never proposed): A-ABORT, service
    provider, invalid PDU parameter value (PS3.8 Table 9-26)."""
    rq = associate_rq(
        [
            presentation_context(1, VERIFICATION),
            presentation_context(3, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"),
            presentation_context(5, "1.2.3.4.5.6.7.8.9"),
        ]
    )
    peer = await server.peer()
    ac = await peer.associate(rq)
    assert ac.accepted_contexts()[5] != 0
    await store(
        peer, c_store_rq("1.2.3.4.5.6.7", message_id=3), ct_dataset("1.2.3.4.5.6.7"), context_id
    )
    abort = await peer.read_pdu()
    assert abort.abort == (2, 6)
    assert await peer.closed_by_server()
    logged(caplog, f"presentation context {context_id}", "not accepted", level=logging.WARNING)
    assert_nothing_stored(server)
    await peer.aclose()
    await server.echo_works()


async def test_data_set_pdv_while_command_expected(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A data set fragment with no command before it cannot be used: A-ABORT."""
    peer = await server.peer()
    await peer.associate()
    await peer.send(p_data(pdv(CT_CONTEXT, ct_dataset("1.2.3"), command=False)))
    abort = await peer.read_pdu()
    assert abort.abort[0] == 2
    assert await peer.closed_by_server()
    logged(caplog, "aborting", level=logging.WARNING)
    assert_nothing_stored(server)
    await peer.aclose()
    await server.echo_works()


@pytest.mark.parametrize(
    "dataset",
    [
        b"\x08\x00\x18\x00UI\x05\x00",  # a header whose value never comes, odd length
        b"\xff" * 33,
        b"\x08\x00",
    ],
    ids=["truncated-element", "garbage-odd", "half-tag"],
)
async def test_garbage_data_set(
    server: Running, caplog: pytest.LogCaptureFixture, tmp_path: Path, dataset: bytes
) -> None:
    """A data set that cannot be parsed: the storage SCP cannot read the attributes it files
    the instance by, so it answers a failure (PS3.4 B.2.3: 0xA900 does not match the SOP class,
    or 0xCxxx cannot understand) and stores nothing; the association continues."""
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    peer = await server.peer()
    await peer.associate()
    await store(peer, c_store_rq("1.2.3.4.5.6.8", message_id=11), dataset)
    rsp = await peer.read_message()
    assert responded_to(rsp) == 11
    status = status_of(rsp)
    assert status & 0xF000 == 0xC000 or status & 0xFF00 == 0xA900, hex(status)
    logged(caplog, "C-STORE", "failed", level=logging.WARNING)
    await echo_on(peer)
    assert_nothing_stored(server)
    assert_tree_unchanged(tmp_path, before)
    await peer.aclose()
    await server.echo_works()


@pytest.mark.parametrize(
    ("sop_uid", "study_uid"),
    [
        ("../../x", "1.2.3"),
        ("a/b", "1.2.3"),
        ("..", "1.2.3"),
        ("not a uid", "1.2.3"),
        (".", "1.2.3"),
        ("1." * 40 + "1", "1.2.3"),  # 81 characters: over the 64 of PS3.5 §9.1
        ("1.2.3.7", "1.2.3\\..\\.."),
        ("1.2.3.4", "../../escape"),
        ("1.2.3.5", "/etc"),
        ("1.2.3.6", "1.2/../../.."),
    ],
)
async def test_uids_that_escape_the_storage_folder(
    server: Running, caplog: pytest.LogCaptureFixture, tmp_path: Path, sop_uid: str, study_uid: str
) -> None:
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    peer = await server.peer()
    await peer.associate()
    await store(peer, c_store_rq(sop_uid, message_id=5), ct_dataset(sop_uid, study=study_uid))
    rsp = await peer.read_message()
    assert responded_to(rsp) == 5
    status = status_of(rsp)
    assert status & 0xF000 == 0xC000 or status & 0xFF00 == 0xA900, hex(status)
    logged(caplog, "not a valid UID", level=logging.WARNING)
    await echo_on(peer)
    assert_nothing_stored(server)
    assert_tree_unchanged(tmp_path, before)
    assert not (tmp_path.parent / "x").exists()
    await peer.aclose()
    await server.echo_works()


async def test_valid_store_after_bad_ones(server: Running) -> None:
    """Sanity check of the raw peer: a well-formed C-STORE is stored."""
    peer = await server.peer()
    await peer.associate()
    await store(peer, c_store_rq("1.2.3.4.5.6.9", message_id=2), ct_dataset("1.2.3.4.5.6.9"))
    rsp = await peer.read_message()
    assert status_of(rsp) == 0x0000
    await peer.aclose()
    assert (server.root / "1.2.3.4" / "1.2.3.4.5" / "1.2.3.4.5.6.9.dcm").is_file()


async def test_peer_disconnects_in_the_middle_of_a_data_set(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    peer = await server.peer()
    await peer.associate()
    dataset = (
        ct_dataset("1.2.3.4.5.6.10") + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", 1 << 20)
    )
    await peer.send(p_data(pdv(CT_CONTEXT, c_store_rq("1.2.3.4.5.6.10"), command=True)))
    await peer.send(p_data(pdv(CT_CONTEXT, dataset + b"\x00" * 8000, command=False, last=False)))
    # A P-DATA-TF that is itself cut short, then the connection goes.
    await peer.send(struct.pack(">BBI", 0x04, 0, 9000) + b"\x00" * 100)
    await peer.aclose()
    await server.wait_idle()
    # The server read up to the cut PDU (so the data set had started streaming to a file).
    logged(caplog, "incomplete PDU", level=logging.WARNING)
    logged(caplog, "aborted", level=logging.INFO)
    assert_nothing_stored(server)
    await server.echo_works()
    assert_nothing_stored(server)


class _FullDisk(io.FileIO):
    """A raw file whose writes fail with ENOSPC once ``quota`` bytes are written."""

    quota = 4096

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        if self.tell() + len(view) > self.quota:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(view)


@pytest.mark.parametrize("quota", [0, 4096], ids=["at-meta", "mid-data-set"])
async def test_full_disk_answers_out_of_resources(
    server: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, quota: int
) -> None:
    """Writes to the temporary folder fail with ENOSPC: the C-STORE gets 0xA7xx (PS3.4 B.2.3,
    refused: out of resources), never success, and no partial file stays."""
    real_fdopen = os.fdopen
    temp_dir = str(server.temp_dir)

    def fdopen(
        fd: int, mode: str = "r", buffering: int = -1, *args: object, **kw: object
    ) -> object:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(temp_dir) and "w" in mode:
            raw = _FullDisk(fd, "wb", closefd=True)
            raw.quota = quota
            return io.BufferedWriter(raw, buffer_size=max(buffering, 1))
        return real_fdopen(fd, mode, buffering, *args, **kw)  # type: ignore[call-overload]

    # The sinks module opens its temporary files with os.fdopen.
    monkeypatch.setattr(os, "fdopen", fdopen)
    # Pixel data larger than the sink's write buffer, in several PDVs, so that writes fail
    # while the data set streams in (and, with quota 0, already for the file meta header).
    payload = (
        ct_dataset("1.2.3.4.5.6.11")
        + b"\xe0\x7f\x10\x00OW\x00\x00"
        + struct.pack("<I", 200_000)
        + bytes(range(256)) * 781
        + b"\x00" * 64
    )
    chunks = [payload[i : i + 50_000] for i in range(0, len(payload), 50_000)]
    peer = await server.peer()
    await peer.associate()
    await peer.send(
        p_data(pdv(CT_CONTEXT, c_store_rq("1.2.3.4.5.6.11", message_id=21), command=True))
    )
    for n, chunk in enumerate(chunks):
        await peer.send(p_data(pdv(CT_CONTEXT, chunk, command=False, last=n == len(chunks) - 1)))
    rsp = await peer.read_message()
    assert responded_to(rsp) == 21
    assert status_of(rsp) & 0xFF00 == 0xA700, hex(status_of(rsp))
    logged(caplog, "No space left", level=logging.WARNING)
    logged(caplog, "0xA700", level=logging.WARNING)
    monkeypatch.undo()
    await echo_on(peer)
    assert_nothing_stored(server)
    await peer.aclose()
    await server.echo_works()


async def test_no_temporary_file_can_be_created(
    server: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(directory: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dicomnet.sinks, "temp_file", full)
    peer = await server.peer()
    await peer.associate()
    await store(peer, c_store_rq("1.2.3.4.5.6.12", message_id=22), ct_dataset("1.2.3.4.5.6.12"))
    rsp = await peer.read_message()
    assert responded_to(rsp) == 22
    assert status_of(rsp) & 0xFF00 == 0xA700, hex(status_of(rsp))
    logged(caplog, "No space left", level=logging.WARNING)
    monkeypatch.undo()
    await echo_on(peer)
    assert_nothing_stored(server)
    await peer.aclose()
    await server.echo_works()
