"""DICOM over TLS (PS3.15 Annex B) with dicomnet's contexts from ``dicomnet.security.tls``,
through the ``ssl=`` parameters of DicomServer and DicomClient, against DCMTK (``echoscu`` /
``storescu`` / ``storescp`` with ``+tls``) and pynetdicom (``ssl_context`` / ``tls_args``), both
directions; and what must fail: plain DICOM to the TLS port, TLS to the plain port, a client
certificate from another CA, an expired certificate, a handshake that never finishes. Each failure
is refused before any association reaches the service, and the server keeps serving.

Certificates are made here with ``trustme``; no private key is checked in.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.errors import DicomNetError
from dicomnet.negotiation import AssociationDecision, AssociationRequest
from dicomnet.security.guard import ServerSecurity
from dicomnet.security.tls import (
    BCP195_TLS12_CIPHERS,
    PeerCertificate,
    TLSHandshakeError,
    TLSSettings,
    client_context,
    peer_certificate,
    server_context,
    tls_session,
)
from dicomnet.security.users import (
    IdentityDecision,
    PasswordHash,
    decide_identity,
    hash_password,
    load_users,
)
from dicomnet.service import AssociationInfo, Service
from dicomnet.services.storage import StorageService
from tests.helpers import require_pynetdicom, require_tool, run, write_ct
from tests.interop.conftest import DcmtkStorescp, ThreadedServer

pytestmark = pytest.mark.interop

trustme = pytest.importorskip("trustme")


@dataclass
class Pki:
    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_cert: Path
    other_key: Path
    expired_cert: Path
    expired_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server and a client certificate, a second CA with its own client, and an
    expired client certificate of the first CA. RSA keys: the common case at DICOM sites."""
    folder = tmp_path_factory.mktemp("tls")
    rsa = trustme.KeyType.RSA
    ca = trustme.CA(key_type=rsa)
    other = trustme.CA(key_type=rsa)
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="dicomnet", key_type=rsa)
    client = ca.issue_cert("modality1", common_name="modality1", key_type=rsa)
    stranger = other.issue_cert("modality1", common_name="modality1", key_type=rsa)
    expired = ca.issue_cert(
        "modality1",
        common_name="modality1",
        not_before=datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2002, 1, 1, tzinfo=datetime.UTC),
        key_type=rsa,
    )

    def put(blob: Any, name: str) -> Path:
        path = folder / name
        blob.write_to_path(str(path))
        return path

    return Pki(
        folder,
        put(ca.cert_pem, "ca.pem"),
        put(server.cert_chain_pems[0], "server.pem"),
        put(server.private_key_pem, "server.key"),
        put(client.cert_chain_pems[0], "client.pem"),
        put(client.private_key_pem, "client.key"),
        put(other.cert_pem, "other-ca.pem"),
        put(stranger.cert_chain_pems[0], "other.pem"),
        put(stranger.private_key_pem, "other.key"),
        put(expired.cert_chain_pems[0], "expired.pem"),
        put(expired.private_key_pem, "expired.key"),
    )


class RecordingSecurity(ServerSecurity):
    """A security policy with nothing to enforce that records every failed TLS handshake."""

    def __init__(self, failures: list[TLSHandshakeError]) -> None:
        super().__init__()
        self.failures = failures

    def tls_failure(self, failure: TLSHandshakeError) -> None:
        self.failures.append(failure)
        super().tls_failure(failure)


class TLSServer(ThreadedServer):
    """A DicomServer with a TLS context on its own loop in a thread. Every association that
    reaches the service is recorded with the peer's verified certificate and TLS session."""

    def __init__(
        self,
        root: Path,
        ctx: ssl.SSLContext | None,
        handshake_timeout: float,
        service: Callable[[AssociationInfo], Service] | None = None,
    ) -> None:
        self.root = root
        self.ctx = ctx
        self.handshake_timeout = handshake_timeout
        self.failures: list[TLSHandshakeError] = []
        self.reached: list[tuple[AssociationInfo, PeerCertificate | None, Any]] = []
        storage = service or StorageService.factory(root, fsync=False)

        def factory(info: AssociationInfo) -> Service:
            assoc = next(a for a in self.server._associations if a.info is info)
            transport = assoc.transport
            assert transport is not None
            self.reached.append((info, peer_certificate(transport), tls_session(transport)))
            return storage(info)

        super().__init__(factory)

    async def _main(self) -> None:
        """DicomServer with ``ssl=``: each connection is upgraded by a ``TLSListener`` (the
        handshake timeout, every failed handshake reported to the security policy)."""
        self._stop = asyncio.Event()
        security = RecordingSecurity(self.failures)
        server = DicomServer(
            self.factory,
            "127.0.0.1",
            0,
            ssl=self.ctx,
            ssl_handshake_timeout=self.handshake_timeout,
            security=security,
        )
        async with server:
            self.server = server
            self.port = server.port
            self._ready.set()
            await self._stop.wait()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Callable[..., TLSServer]]:
    started: list[TLSServer] = []

    def start(
        ctx: ssl.SSLContext | None,
        handshake_timeout: float = 30.0,
        service: Callable[[AssociationInfo], Service] | None = None,
    ) -> TLSServer:
        root = tmp_path / f"store-{len(started)}"
        server = TLSServer(root, ctx, handshake_timeout, service)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def mutual(pki: Pki) -> ssl.SSLContext:
    return server_context(pki.server_cert, pki.server_key, pki.ca)


def tls_args(pki: Pki, cert: Path | None = None, key: Path | None = None) -> list[str]:
    """DCMTK's options: our key and certificate, the CA to verify the peer with, no key
    password (trustme keys are not encrypted), the default BCP 195 non-downgrading profile."""
    return [
        "+tls",
        str(key or pki.client_key),
        str(cert or pki.client_cert),
        "-pw",
        "+cf",
        str(pki.ca),
        "+py",
    ]


async def tls_echo(port: int, ctx: ssl.SSLContext) -> int:
    async with DicomClient("127.0.0.1", port, "MODALITY1", "DICOMNET", ssl=ctx) as client:
        return int(await client.c_echo())


def good_client(pki: Pki) -> ssl.SSLContext:
    return client_context(pki.ca, pki.client_cert, pki.client_key)


# -- DCMTK into dicomnet --------------------------------------------------------------------------


def test_echoscu_tls_into_dicomnet_with_client_certificate(pki: Pki, tls_server: Any) -> None:
    echoscu = require_tool("echoscu")
    server = tls_server(mutual(pki))
    result = run([echoscu, "-v", *tls_args(pki), "-aec", "DICOMNET", "127.0.0.1", str(server.port)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Received Echo Response (Success)" in output
    (info, cert, session) = server.reached[0]
    assert info.calling_ae_title == "ECHOSCU"
    assert cert is not None and cert.common_name == "modality1"
    assert cert.subject.startswith("CN=modality1,")
    assert session.version in ("TLSv1.2", "TLSv1.3")


def test_storescu_tls_into_dicomnet(pki: Pki, tls_server: Any, tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    server = tls_server(mutual(pki))
    src = tmp_path / "in"
    datasets = [write_ct(src / f"{i}.dcm", rows=256, columns=256) for i in range(5)]
    result = run(
        [
            storescu,
            "-v",
            *tls_args(pki),
            "-aec",
            "DICOMNET",
            "+sd",
            "127.0.0.1",
            str(server.port),
            str(src),
        ],
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for ds in datasets:
        out = server.root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert dcmread(out).PixelData == ds.PixelData


def test_tls12_only_peer_gets_a_bcp195_suite(pki: Pki, tls_server: Any, tmp_path: Path) -> None:
    """A peer that stops at TLS 1.2 (an older modality; DCMTK itself negotiates 1.3 here)
    still gets in, with one of the BCP 195 suites. pynetdicom with a TLS 1.2 context plays it."""
    require_pynetdicom()
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    server = tls_server(mutual(pki))
    ctx = good_client(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ae = AE(ae_title="OLDMODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMNET", tls_args=(ctx, "localhost"))
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    session = server.reached[0][2]
    assert session.version == "TLSv1.2"
    assert session.cipher in BCP195_TLS12_CIPHERS


def test_echoscu_with_certificate_of_another_ca_is_refused(pki: Pki, tls_server: Any) -> None:
    echoscu = require_tool("echoscu")
    server = tls_server(mutual(pki))
    bad = run(
        [
            echoscu,
            *tls_args(pki, pki.other_cert, pki.other_key),
            "-aec",
            "DICOMNET",
            "127.0.0.1",
            str(server.port),
        ]
    )
    assert bad.returncode != 0, bad.stdout + bad.stderr
    assert server.reached == []  # never reached the association
    assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS


def test_plain_echoscu_to_the_tls_port_is_refused(pki: Pki, tls_server: Any) -> None:
    echoscu = require_tool("echoscu")
    server = tls_server(mutual(pki))
    plain = run([echoscu, "-to", "5", "-aec", "DICOMNET", "127.0.0.1", str(server.port)])
    assert plain.returncode != 0, plain.stdout + plain.stderr
    assert server.reached == []
    assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS


# -- dicomnet into DCMTK --------------------------------------------------------------------------


@pytest.fixture
def storescp_tls(pki: Pki, tmp_path: Path) -> Iterator[DcmtkStorescp]:
    """DCMTK's storescp with TLS, requiring and verifying client certificates (its default)."""
    scp = DcmtkStorescp(
        tmp_path / "dcmtk-in",
        extra=["+tls", str(pki.server_key), str(pki.server_cert), "-pw", "+cf", str(pki.ca)],
    )
    yield scp
    scp.stop()


def test_dicomnet_client_tls_into_storescp(
    pki: Pki, storescp_tls: DcmtkStorescp, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    datasets = [write_ct(src / f"{i}.dcm", rows=256, columns=256) for i in range(5)]
    settings = TLSSettings(pki.client_cert, pki.client_key, pki.ca)

    async def go() -> list[int]:
        async with DicomClient(
            "127.0.0.1", storescp_tls.port, "DICOMNET", "STORESCP", ssl=settings.client_context()
        ) as client:
            assert await client.c_echo() == Status.SUCCESS
            return [int(await client.c_store(src / f"{i}.dcm")) for i in range(5)]

    assert asyncio.run(go()) == [0] * 5
    received = {dcmread(p).SOPInstanceUID: dcmread(p) for p in storescp_tls.folder.iterdir()}
    for ds in datasets:
        assert received[ds.SOPInstanceUID].PixelData == ds.PixelData


def test_dicomnet_client_without_certificate_is_refused_by_storescp(
    pki: Pki, storescp_tls: DcmtkStorescp
) -> None:
    with pytest.raises((DicomNetError, ssl.SSLError, ConnectionError)):
        asyncio.run(tls_echo(storescp_tls.port, client_context(pki.ca)))


def test_dicomnet_client_refuses_server_of_unknown_ca(
    pki: Pki, storescp_tls: DcmtkStorescp
) -> None:
    ctx = client_context(pki.other_ca, pki.client_cert, pki.client_key)
    with pytest.raises(DicomNetError, match="certificate verify failed"):
        asyncio.run(tls_echo(storescp_tls.port, ctx))


# -- pynetdicom, both ways ------------------------------------------------------------------------


def test_pynetdicom_scu_with_ssl_context_into_dicomnet(
    pki: Pki, tls_server: Any, tmp_path: Path
) -> None:
    require_pynetdicom()
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification

    server = tls_server(mutual(pki))
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ctx = good_client(pki)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMNET", tls_args=(ctx, "localhost"))
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        ds = write_ct(tmp_path / "a.dcm")
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    out = server.root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert dcmread(out).PixelData == ds.PixelData
    assert server.reached[0][1] is not None


def test_dicomnet_client_into_pynetdicom_scp_with_ssl_context(pki: Pki, tmp_path: Path) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, Verification

    received: list[Any] = []
    peers: list[Any] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        peers.append(event.assoc.requestor.address)
        return 0

    ae = AE(ae_title="PYNETDICOM")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    scp = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        ssl_context=mutual(pki),
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    try:
        port = scp.server_address[1]
        ds = write_ct(tmp_path / "a.dcm")

        async def go() -> tuple[int, int]:
            async with DicomClient(
                "127.0.0.1", port, "DICOMNET", "PYNETDICOM", ssl=good_client(pki)
            ) as client:
                return int(await client.c_echo()), int(await client.c_store(tmp_path / "a.dcm"))

        assert asyncio.run(go()) == (0, 0)
        assert received[0].PixelData == ds.PixelData
    finally:
        scp.shutdown()


# -- what must fail, against a running dicomnet server --------------------------------------------


def test_plain_client_to_tls_port(pki: Pki, tls_server: Any) -> None:
    server = tls_server(mutual(pki))

    async def plain() -> None:
        async with DicomClient(
            "127.0.0.1", server.port, "MODALITY1", "DICOMNET", acse_timeout=5
        ) as client:
            await client.c_echo()

    with pytest.raises(DicomNetError):
        asyncio.run(plain())
    assert server.reached == []
    assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS


def test_tls_client_to_plain_port(pki: Pki, tls_server: Any) -> None:
    server = tls_server(None)
    with pytest.raises(DicomNetError):
        asyncio.run(tls_echo(server.port, good_client(pki)))
    assert server.reached == []

    async def plain() -> int:
        async with DicomClient("127.0.0.1", server.port, "MODALITY1", "DICOMNET") as client:
            return int(await client.c_echo())

    assert asyncio.run(plain()) == Status.SUCCESS


@pytest.mark.parametrize("which", ["other-ca", "expired", "none"])
def test_bad_client_certificates(pki: Pki, tls_server: Any, which: str) -> None:
    server = tls_server(mutual(pki))
    cert, key = {
        "other-ca": (pki.other_cert, pki.other_key),
        "expired": (pki.expired_cert, pki.expired_key),
        "none": (None, None),
    }[which]
    ctx = client_context(pki.ca, cert, key)
    with pytest.raises((DicomNetError, ssl.SSLError, ConnectionError)):
        asyncio.run(tls_echo(server.port, ctx))
    assert server.reached == []
    assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS


def test_expired_server_certificate_is_refused_by_the_client(pki: Pki, tls_server: Any) -> None:
    server = tls_server(server_context(pki.expired_cert, pki.expired_key))
    ctx = client_context(pki.ca, check_hostname=False)
    with pytest.raises(DicomNetError, match="expired"):
        asyncio.run(tls_echo(server.port, ctx))


def test_handshake_that_never_finishes_is_dropped(pki: Pki, tls_server: Any) -> None:
    """A peer that connects and then sends a TLS record header and nothing more is dropped after
    the handshake timeout; meanwhile and afterwards the server serves everyone else."""
    timeout = 1.0
    server = tls_server(mutual(pki), handshake_timeout=timeout)
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello's first bytes, then silence
        started = time.monotonic()
        # Another client is served while the stalled handshake is pending.
        assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS
        try:
            data = stalled.recv(1024)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
        assert data == b"", data  # closed without an answer
        assert timeout * 0.5 <= elapsed < timeout + 5, elapsed
    finally:
        stalled.close()
    assert len(server.reached) == 1  # only the good client
    assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS


def test_many_stalled_handshakes_do_not_stop_the_server(pki: Pki, tls_server: Any) -> None:
    server = tls_server(mutual(pki), handshake_timeout=1.0)
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    try:
        assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS
        deadline = time.monotonic() + 10
        for sock in stalled:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in stalled:
            sock.close()


# -- TLSListener: every failed handshake reported --------------------------------------------------


def test_acceptor_serves_dcmtk(pki: Pki, tls_server: Any, tmp_path: Path) -> None:
    """DCMTK sends its A-ASSOCIATE-RQ right after the handshake; the listener hands the TLS
    transport (and anything read already) to the association."""
    storescu = require_tool("storescu")
    server = tls_server(mutual(pki))
    src = tmp_path / "in"
    datasets = [write_ct(src / f"{i}.dcm", rows=256, columns=256) for i in range(3)]
    for _ in range(3):
        result = run(
            [
                storescu,
                *tls_args(pki),
                "-aec",
                "DICOMNET",
                "+sd",
                "127.0.0.1",
                str(server.port),
                str(src),
            ]
        )
        assert result.returncode == 0, result.stdout + result.stderr
    for ds in datasets:
        out = server.root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert dcmread(out).PixelData == ds.PixelData
    assert len(server.reached) == 3
    assert all(
        cert is not None and cert.common_name == "modality1" for _i, cert, _s in server.reached
    )
    assert server.failures == []


def test_acceptor_serves_dicomnet_and_pynetdicom_clients(pki: Pki, tls_server: Any) -> None:
    require_pynetdicom()
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    server = tls_server(mutual(pki))
    assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", server.port, ae_title="DICOMNET", tls_args=(good_client(pki), "localhost")
    )
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert len(server.reached) == 2 and server.failures == []


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("other-ca", "certificate did not verify: unable to get local issuer certificate"),
        ("expired", "certificate did not verify: certificate has expired"),
        ("none", "sent no certificate"),
        ("plain", "did not speak TLS"),
        ("slow", "not finished within 1 s"),
    ],
)
def test_acceptor_reports_failed_handshakes(
    pki: Pki, tls_server: Any, case: str, expected: str
) -> None:
    server = tls_server(mutual(pki), handshake_timeout=1.0)
    if case == "plain":

        async def plain() -> None:
            async with DicomClient(
                "127.0.0.1", server.port, "MODALITY1", "DICOMNET", acse_timeout=5
            ) as client:
                await client.c_echo()

        with pytest.raises(DicomNetError):
            asyncio.run(plain())
    elif case == "slow":
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stalled:
            stalled.sendall(b"\x16\x03\x01")
            try:
                assert stalled.recv(1024) == b""
            except ConnectionResetError:
                pass
    else:
        cert, key = {
            "other-ca": (pki.other_cert, pki.other_key),
            "expired": (pki.expired_cert, pki.expired_key),
            "none": (None, None),
        }[case]
        with pytest.raises((DicomNetError, ssl.SSLError, ConnectionError)):
            asyncio.run(tls_echo(server.port, client_context(pki.ca, cert, key)))
    _wait_for(lambda: len(server.failures) == 1)
    (failure,) = server.failures
    assert expected in failure.reason, failure.reason
    assert failure.peer[0] == "127.0.0.1"
    assert server.reached == []
    assert asyncio.run(tls_echo(server.port, good_client(pki))) == Status.SUCCESS
    assert len(server.failures) == 1


# -- user identity over TLS (PS3.7 D.3.3.7), decided by security.users ----------------------------


class IdentityStorage(StorageService):
    """A storage service that decides user identities with ``decide_identity`` (what phase 2
    wires into the server) and records the decisions."""

    users: dict[str, PasswordHash] = {}
    decisions: list[IdentityDecision] = []

    async def on_association_request(self, request: AssociationRequest) -> AssociationDecision:
        decision = await asyncio.to_thread(
            decide_identity, request.user_identity, self.users, require=True
        )
        self.decisions.append(decision)
        if not decision.accepted:
            assert decision.reject is not None
            return request.reject(*decision.reject)
        request.user_identity_response = decision.response
        return await super().on_association_request(request)


@pytest.fixture
def identity_service(tmp_path: Path) -> type[IdentityStorage]:
    users = load_users({"alice": hash_password("correct horse", ln=12)})
    return IdentityStorage.factory(  # type: ignore[return-value]
        tmp_path / "identity-store", fsync=False, users=users, decisions=[]
    )


def test_storescu_user_and_password_over_tls(
    pki: Pki, tls_server: Any, identity_service: type[IdentityStorage], tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    server = tls_server(mutual(pki), service=identity_service)
    ds = write_ct(tmp_path / "in" / "a.dcm")
    base = [storescu, "-v", *tls_args(pki), "-aec", "DICOMNET"]
    target = ["127.0.0.1", str(server.port), str(tmp_path / "in" / "a.dcm")]

    wrong = run([*base, "-usr", "alice", "-pwd", "battery staple", *target])
    output = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0, output
    assert "Association Rejected" in output, output
    assert "Rejected Permanent" in output and "ACSE" in output, output
    assert "battery staple" not in repr(identity_service.decisions)

    missing = run([*base, *target])
    assert missing.returncode != 0

    right = run([*base, "-usr", "alice", "-pwd", "correct horse", *target])
    assert right.returncode == 0, right.stdout + right.stderr
    out = server.root.parent / "identity-store" / ds.StudyInstanceUID / ds.SeriesInstanceUID
    assert (out / f"{ds.SOPInstanceUID}.dcm").exists()
    reasons = [d.reason for d in identity_service.decisions]
    assert reasons == [
        "wrong passcode for user 'alice'",
        "no user identity was sent and one is required",
        "user 'alice' authenticated",
    ]


def test_pynetdicom_user_identity_positive_response_over_tls(
    pki: Pki, tls_server: Any, identity_service: type[IdentityStorage]
) -> None:
    require_pynetdicom()
    from pynetdicom import AE
    from pynetdicom.pdu_primitives import UserIdentityNegotiation
    from pynetdicom.sop_class import Verification

    server = tls_server(mutual(pki), service=identity_service)

    def identity(password: bytes) -> UserIdentityNegotiation:
        item = UserIdentityNegotiation()
        item.user_identity_type = 2
        item.positive_response_requested = True
        item.primary_field = b"alice"
        item.secondary_field = password
        return item

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    tls = (good_client(pki), "localhost")
    assoc = ae.associate(
        "127.0.0.1",
        server.port,
        ae_title="DICOMNET",
        ext_neg=[identity(b"correct horse")],
        tls_args=tls,
    )
    assert assoc.is_established
    try:
        response = assoc.acceptor.user_identity
        assert response is not None and response.server_response == b""  # D.3.3.7.2
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    refused = ae.associate(
        "127.0.0.1", server.port, ae_title="DICOMNET", ext_neg=[identity(b"nope")], tls_args=tls
    )
    assert refused.is_rejected
    assert refused.acceptor.primitive.result == 1  # rejected permanent
    assert refused.acceptor.primitive.result_source == 2  # ACSE related function
    assert refused.acceptor.primitive.diagnostic == 1  # no reason given
