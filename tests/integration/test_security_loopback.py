"""dicomnet's client against dicomnet's server with TLS and a security policy over 127.0.0.1: what
handlers see of the peer (its verified certificate, the TLS session, the user it logged in as),
what the client sees of the server, a plain and a TLS port on one server, the client's
handshake timeout, and the audit trail of one association."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.errors import DicomNetError
from dicomnet.pdu import UserIdentityRQ
from dicomnet.security.audit import Auditor, AuditRecord, Node
from dicomnet.security.guard import ServerSecurity
from dicomnet.security.tls import client_context, server_context
from dicomnet.security.users import hash_password, load_users
from dicomnet.service import AssociationInfo, ReceivedCEcho, ReceivedCStore
from dicomnet.services.storage import StorageService
from tests.helpers import write_ct
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Records:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


class Seen(StorageService):
    """A storage service that keeps the ``AssociationInfo`` of each request it answers."""

    seen: list[AssociationInfo] = []

    def on_c_echo(self, request: ReceivedCEcho) -> int:
        self.seen.append(request.association)
        return Status.SUCCESS

    async def on_c_store(self, request: ReceivedCStore) -> int:  # type: ignore[override]
        self.seen.append(request.association)
        return int(await super().on_c_store(request) or 0)  # type: ignore[arg-type]


def client_ctx(pki: Pki, who: str = "workstation") -> ssl.SSLContext:
    issued = getattr(pki, who)
    return client_context(pki.ca, issued.cert, issued.key)


async def test_handlers_see_the_certificate_the_session_and_the_user(
    pki: Pki, tmp_path: Path
) -> None:
    records = Records()
    security = ServerSecurity(
        users=load_users({"alice": hash_password("correct horse", ln=10)}),
        auditor=Auditor([records], Node("DICOMNET", "node.example")),
    )
    factory = Seen.factory(tmp_path / "store", fsync=False, seen=[])
    src = tmp_path / "in" / "ct.dcm"
    ds = write_ct(src)
    ctx = server_context(pki.server.cert, pki.server.key, pki.ca)
    async with DicomServer(factory, port=0, ssl=ctx, security=security) as server:
        identity = UserIdentityRQ.password("alice", "correct horse", positive_response=True)
        async with DicomClient(
            "127.0.0.1",
            server.port,
            "WORKSTATION",
            "DICOMNET",
            ssl=client_ctx(pki),
            user_identity=identity,
        ) as client:
            client.add_presentation_context(CTImageStorage, [ExplicitVRLittleEndian])
            assert await client.c_echo() == Status.SUCCESS
            assert await client.c_store(src) == Status.SUCCESS  # the same association
            # What the client knows of the server.
            assert client.negotiated is not None
            assert client.negotiated.user_identity_response == b""  # asked for, D.3.3.7.2
            assert client.peer_certificate is not None
            assert client.peer_certificate.subject == "CN=dicomnet,O=Hospital"
            assert client.tls is not None and client.tls.version in ("TLSv1.2", "TLSv1.3")
    echo_info, store_info = factory.seen
    assert echo_info is store_info
    assert echo_info.username == "alice"
    assert echo_info.peer_certificate is not None
    assert echo_info.peer_certificate.subject == "CN=workstation,O=Hospital"
    assert echo_info.peer_certificate.common_name == "workstation"
    assert echo_info.tls is not None and echo_info.tls.cipher
    kinds = [r.kind for r in records.records]
    assert kinds == ["association", "store", "release"]
    login = records.records[0].to_json()
    assert login["ActiveParticipant"][0]["UserName"] == "alice"
    assert login["dicomnet"]["peer_certificate"] == "CN=workstation,O=Hospital"
    study = records.records[1].to_json()["ParticipantObjectIdentification"][0]
    assert study["ParticipantObjectID"] == ds.StudyInstanceUID


async def test_a_plain_and_a_tls_port_on_one_server(pki: Pki, tmp_path: Path) -> None:
    factory = StorageService.factory(tmp_path / "store", fsync=False)
    ctx = server_context(pki.server.cert, pki.server.key, pki.ca)
    async with DicomServer(factory, port=0, ssl=ctx, tls_port=0) as server:
        assert server.tls_port not in (None, 0, server.port)
        assert server.tls_port is not None
        async with DicomClient("127.0.0.1", server.port) as plain:
            assert await plain.c_echo() == Status.SUCCESS
            assert plain.tls is None and plain.peer_certificate is None
        async with DicomClient("127.0.0.1", server.tls_port, ssl=client_ctx(pki)) as secure:
            assert await secure.c_echo() == Status.SUCCESS
            assert secure.tls is not None
        # Each port speaks only its own: TLS to the plain one, plain to the TLS one.
        with pytest.raises(DicomNetError, match="did not answer in TLS"):
            async with DicomClient("127.0.0.1", server.port, ssl=client_ctx(pki)) as wrong:
                await wrong.c_echo()
        with pytest.raises(DicomNetError):
            async with DicomClient("127.0.0.1", server.tls_port, acse_timeout=5) as wrong:
                await wrong.c_echo()
        assert server.tls_failures == 1


async def test_the_client_gives_up_a_handshake_the_server_never_answers(pki: Pki) -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(DicomNetError, match=r"handshake"):
            async with DicomClient(
                "127.0.0.1", port, ssl=client_ctx(pki), ssl_handshake_timeout=0.5
            ) as client:
                await client.c_echo()
        assert time.monotonic() - started < 5
    finally:
        silent.close()


async def test_a_server_name_other_than_the_host(pki: Pki, tmp_path: Path) -> None:
    """``server_hostname``: the name the server's certificate must carry (here "localhost",
    which it does, and "elsewhere", which it does not)."""
    factory = StorageService.factory(tmp_path / "store", fsync=False)
    ctx = server_context(pki.server.cert, pki.server.key, pki.ca)
    async with DicomServer(factory, port=0, ssl=ctx) as server:
        async with DicomClient(
            "127.0.0.1", server.port, ssl=client_ctx(pki), server_hostname="localhost"
        ) as client:
            assert await client.c_echo() == Status.SUCCESS
        with pytest.raises(DicomNetError, match=r"did not verify|mismatch"):
            async with DicomClient(
                "127.0.0.1", server.port, ssl=client_ctx(pki), server_hostname="elsewhere"
            ) as client:
                await client.c_echo()
        await asyncio.sleep(0)
