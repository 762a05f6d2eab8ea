"""Bad input against a server with a security policy, from a raw peer that writes the PDUs by
hand (PS3.8 §9.3, PS3.7 D.3.3.7): user identity sub-items of the largest sizes, a C-STORE on a
context the peer may only receive on, a data set over the size limit, a disk below its minimum,
more associations from one address than allowed. Each is answered the standard way, with a log
line and an audit record, nothing is written, and the server serves the next peer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.pdu import UserIdentityRQ
from dicomnet.security.audit import Auditor, AuditRecord, Node
from dicomnet.security.guard import ServerSecurity
from dicomnet.security.limits import AssociationLimiter
from dicomnet.security.permissions import load_permissions
from dicomnet.security.users import hash_password, load_users
from dicomnet.server import ServerLimits
from dicomnet.services.storage import StorageService
from tests.robustness.conftest import (
    APPLICATION_CONTEXT,
    CT_IMAGE_STORAGE,
    EXPLICIT_VR_LE,
    IMPLEMENTATION_UID,
    VERIFICATION,
    RawPeer,
    ae,
    c_store_rq,
    ct_dataset,
    item,
    p_data,
    pdu,
    pdv,
    presentation_context,
)

PASSWORD = "correct horse"


class Records:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return [r.kind for r in self.records if r.kind not in ("association", "release")]

    def text(self) -> str:
        return b"".join(r.to_line() for r in self.records).decode()


@dataclass
class Secured:
    server: DicomServer
    root: Path
    audit: Records

    @property
    def port(self) -> int:
        return self.server.port

    async def echo_works(self, ae_title: str = "MODALITY1") -> None:
        identity = UserIdentityRQ.password("alice", PASSWORD)
        async with DicomClient(
            "127.0.0.1", self.port, ae_title, "DICOMNET", user_identity=identity
        ) as client:
            assert await client.c_echo() == Status.SUCCESS

    def stored(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.dcm"))


@contextlib.asynccontextmanager
async def secured(root: Path, **policy: Any) -> AsyncIterator[Secured]:
    records = Records()
    security = ServerSecurity(
        users=load_users({"alice": hash_password(PASSWORD, ln=10)}),
        permissions=load_permissions(
            {
                "ae": {
                    "MODALITY1": {"services": ["echo", "store"]},
                    "VIEWER": {"services": ["echo", "get"]},
                }
            }
        ),
        auditor=Auditor([records], Node("DICOMNET", "node.example")),
        storage=root,
        **policy,
    )
    factory = StorageService.factory(root, fsync=False)
    limits = ServerLimits(artim_timeout=2.0, idle_timeout=5.0, dimse_timeout=10.0)
    async with DicomServer(factory, port=0, limits=limits, security=security) as server:
        yield Secured(server, root, records)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dicomnet")


def rq(calling: str, *sub_items: bytes, contexts: list[bytes] | None = None) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 Table 9-11) whose user information item holds the maximum
    length sub-item, the implementation class UID and ``sub_items``."""
    user_info = item(0x51, struct.pack(">I", 16384)) + item(0x52, IMPLEMENTATION_UID.encode())
    user_info += b"".join(sub_items)
    body = struct.pack(">HH", 1, 0) + ae("DICOMNET") + ae(calling) + b"\x00" * 32
    body += item(0x10, APPLICATION_CONTEXT.encode())
    body += b"".join(
        contexts
        or [
            presentation_context(1, VERIFICATION),
            presentation_context(3, CT_IMAGE_STORAGE, EXPLICIT_VR_LE),
        ]
    )
    return pdu(0x01, body + item(0x50, user_info))


def identity(kind: int, primary: bytes, secondary: bytes = b"") -> bytes:
    """User identity sub-item (PS3.7 Table D.3-14)."""
    value = bytes([kind, 1]) + struct.pack(">H", len(primary)) + primary
    value += struct.pack(">H", len(secondary)) + secondary
    return item(0x58, value)


def role(sop_class: str, scu: bool, scp: bool) -> bytes:
    """SCP/SCU role selection sub-item (PS3.7 Table D.3-9)."""
    uid = sop_class.encode()
    return item(0x54, struct.pack(">H", len(uid)) + uid + bytes([scu, scp]))


def password_identity() -> bytes:
    return identity(2, b"alice", PASSWORD.encode())


async def test_a_user_identity_that_fills_the_user_information_item(tmp_path: Path) -> None:
    """The largest identity a well-formed A-ASSOCIATE-RQ can carry: the user information item
    at its 65,535-byte maximum, nearly all of it a username. Unknown user: rejected permanent
    by the ACSE (D.3.3.7), the log and the audit record show the name cut to 64 characters."""
    async with secured(tmp_path / "store", require_user=True) as node:
        fixed = len(item(0x51, b"\x00" * 4) + item(0x52, IMPLEMENTATION_UID.encode()))
        # 4 (sub-item header) + 2 (type, response) + 2 + name + 2 + passcode
        name_length = 0xFFFF - fixed - 4 - 2 - 2 - 2 - 4
        sub = identity(2, b"N" * name_length, b"pass")
        assert fixed + len(sub) == 0xFFFF
        peer = await RawPeer.connect(node.port)
        await peer.send(rq("MODALITY1", sub))
        answer = await peer.read_pdu()
        assert answer.reject == (1, 2, 1)  # permanent, ACSE related function, no reason
        await peer.aclose()
        (record,) = [r for r in node.audit.records if r.kind == "authentication-failure"]
        assert record.outcome_description == f"unknown user '{'N' * 64}...'"
        assert len(record.to_line()) < 2000
        await node.echo_works()


async def test_a_user_identity_item_of_65535_bytes_that_does_not_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sub-item that says it is 65,535 bytes long inside a user information item that cannot
    hold it: an invalid PDU, aborted (PS3.8 Table 9-26: invalid PDU parameter value)."""
    async with secured(tmp_path / "store", require_user=True) as node:
        peer = await RawPeer.connect(node.port)
        lying = b"\x58\x00\xff\xff" + bytes([2, 1]) + b"\x00\x05alice" + b"\x00\x01x"
        await peer.send(rq("MODALITY1", lying))
        answer = await peer.read_pdu()
        assert answer.abort == (2, 6)  # service provider, invalid PDU parameter value
        await peer.aclose()
        await asyncio.wait_for(_until(lambda: node.audit.kinds() != []), 10)
        assert node.audit.kinds() == ["node-authentication-failure"]
        assert "no association request" in node.audit.text()
        assert "item 0x58 length 65535 runs past the end" in caplog.text
        await node.echo_works()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_a_c_store_on_a_context_the_peer_may_only_receive_on(tmp_path: Path) -> None:
    """VIEWER may use C-GET, not C-STORE: its storage context stays for C-GET with the SCP
    role only; a C-STORE-RQ sent on it anyway is refused 0x0124 before its data set is
    written."""
    async with secured(tmp_path / "store") as node:
        peer = await RawPeer.connect(node.port)
        ac = await peer.associate(rq("VIEWER", role(CT_IMAGE_STORAGE, True, True)))
        assert ac.accepted_contexts() == {1: 0, 3: 0}
        assert role(CT_IMAGE_STORAGE, False, True)[4:] in ac.body  # the SCU role refused
        await peer.send(p_data(pdv(3, c_store_rq("1.2.3.9"), command=True)))
        await peer.send(p_data(pdv(3, ct_dataset("1.2.3.9"), command=False)))
        answer = await peer.read_message()
        assert answer[0x00000900] == struct.pack("<H", 0x0124)  # Refused: Not authorized
        await peer.aclose()
        assert node.stored() == []
        assert node.audit.kinds() == ["refusal"]
        assert "'VIEWER' may not use store" in node.audit.text()
        await node.echo_works()


async def test_a_data_set_larger_than_the_limit_is_refused_and_not_kept(tmp_path: Path) -> None:
    async with secured(tmp_path / "store", max_instance_size=1000) as node:
        peer = await RawPeer.connect(node.port)
        await peer.associate(rq("MODALITY1", password_identity()))
        big = ct_dataset("1.2.3.10") + struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00"
        big += struct.pack("<I", 4000) + b"\x00" * 4000
        await peer.send(p_data(pdv(3, c_store_rq("1.2.3.10"), command=True)))
        for start in range(0, len(big), 512):
            chunk = big[start : start + 512]
            await peer.send(p_data(pdv(3, chunk, command=False, last=start + 512 >= len(big))))
        answer = await peer.read_message()
        assert answer[0x00000900] == struct.pack("<H", 0xA700)  # Refused: Out of resources
        assert b"larger than the limit of 1000 bytes" in answer[0x00000902]
        # A small one on the same association is stored.
        await peer.send(p_data(pdv(3, c_store_rq("1.2.3.11", message_id=2), command=True)))
        await peer.send(p_data(pdv(3, ct_dataset("1.2.3.11"), command=False)))
        assert (await peer.read_message())[0x00000900] == b"\x00\x00"
        await peer.aclose()
        assert [p.stem for p in node.stored()] == ["1.2.3.11"]
        assert node.audit.kinds() == ["refusal", "store"]
        incoming = tmp_path / "store" / ".incoming"
        assert [p for p in incoming.rglob("*.part") if p.stat().st_size > 0] == []


async def test_below_the_minimum_free_disk_a_c_store_is_refused_first(tmp_path: Path) -> None:
    async with secured(tmp_path / "store", min_free_disk=1 << 60) as node:
        peer = await RawPeer.connect(node.port)
        await peer.associate(rq("MODALITY1", password_identity()))
        await peer.send(p_data(pdv(3, c_store_rq("1.2.3.12"), command=True)))
        await peer.send(p_data(pdv(3, ct_dataset("1.2.3.12"), command=False)))
        answer = await peer.read_message()
        assert answer[0x00000900] == struct.pack("<H", 0xA700)
        assert answer[0x00000902].startswith(b"free disk below the minimum of")
        await peer.aclose()
        assert node.stored() == []
        assert node.audit.kinds() == ["refusal"]


async def test_more_associations_from_one_address_than_allowed(tmp_path: Path) -> None:
    limiter = AssociationLimiter(max_per_address=2)
    async with secured(tmp_path / "store", limiter=limiter) as node:
        first, second, third = [await RawPeer.connect(node.port) for _ in range(3)]
        await first.associate(rq("MODALITY1"))
        await second.associate(rq("MODALITY1"))
        await third.send(rq("MODALITY1"))
        assert (await third.read_pdu()).reject == (2, 3, 2)  # transient, local limit exceeded
        await third.aclose()
        await first.aclose()  # gives its count back
        await asyncio.wait_for(_until(lambda: limiter.count("127.0.0.1") == 1), 10)
        await node.echo_works()
        await second.aclose()
        assert node.audit.kinds() == ["refusal"]
        assert "associations from 127.0.0.1 are open" in node.audit.text()
