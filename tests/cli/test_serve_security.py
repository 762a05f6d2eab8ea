"""``dicomnet serve`` secured with the README's "Securing a node" file, as a user runs it: the
bad input of issue 11 against the running server (plain DICOM to the TLS port and TLS to the
plain port, a client certificate from another CA, an expired one, a handshake that never
finishes, a wrong password, a 65,535-byte user identity, more associations from one address
than allowed, a C-MOVE to a destination the peer may not name, a data set over the size limit,
a disk below its minimum), each refused the standard way with a log line and an audit line
while the server goes on serving; and TLS and user identities both ways with DCMTK (storescu,
findscu, echoscu, storescp with ``+tls``; storescu ``-usr``/``-pwd``), pynetdicom and
dicomnet's own commands.

The README block is used as written; the test only points its paths at the test's certificates,
storage and audit file (command-line options, which win over the file), replaces the modality's
address with 127.0.0.1, and shortens the handshake timeout and the size limits.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from dicomnet.security.users import verify_password
from tests.cli.conftest import DICOMNET, Serve, dicomnet
from tests.helpers import free_port, require_pynetdicom, require_tool, run, write_ct
from tests.interop.conftest import DcmtkStorescp
from tests.pki import Pki, make_pki
from tests.robustness.conftest import (
    APPLICATION_CONTEXT,
    IMPLEMENTATION_UID,
    VERIFICATION,
    ae,
    item,
    pdu,
    presentation_context,
)

README = Path(__file__).resolve().parents[2] / "README.md"
PASSWORD = "example only"  # what the README says alice's example hash is of


def readme_config() -> str:
    """The TOML block of the README's "Securing a node" section."""
    text = README.read_text()
    section = text.split("## Securing a node", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None, "no TOML block in the README's Securing a node section"
    return block.group(1)


def test_the_readme_example_is_complete() -> None:
    config = tomllib.loads(readme_config())
    serve = config["serve"]
    for key in ("tls_cert", "tls_key", "tls_ca", "tls_port", "audit"):
        assert key in serve, key
    assert set(config) == {"serve", "users", "permissions", "peers"}
    assert verify_password(PASSWORD, config["users"]["alice"])
    assert set(config["permissions"]["ae"]) == {"CT1", "WORKSTATION", "REPORTING"}


class Node:
    """The README's node, started with ``dicomnet serve --config``."""

    def __init__(self, folder: Path, pki: Pki) -> None:
        self.folder = folder
        self.pki = pki
        text = readme_config()
        assert 'hosts = ["10.0.1.21"]' in text
        config = folder / "secure.toml"
        config.write_text(text.replace('hosts = ["10.0.1.21"]', 'hosts = ["127.0.0.1"]'))
        self.storage = folder / "store"
        self.audit = folder / "audit.jsonl"
        self.port, self.tls_port = free_port(), free_port()
        self.serve = Serve(
            self.storage,
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--tls-port",
            str(self.tls_port),
            "--storage",
            str(self.storage),
            "--tls-cert",
            str(pki.server.cert),
            "--tls-key",
            str(pki.server.key),
            "--tls-ca",
            str(pki.ca),
            "--audit",
            str(self.audit),
            "--tls-handshake-timeout",
            "1",
            "--max-instance-size",
            "100kB",
            "--min-free-disk",
            "1MB",
            "--no-fsync",
            port=self.port,
        )
        self.mark()

    # -- the audit trail and the log, since the last mark ----------------------------------------

    def mark(self) -> None:
        self._audit_seen = len(self.records())
        self._log_seen = len(self.serve.log)

    def records(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def new_records(self, *events: str, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait (bounded) until records of each of ``events`` were written since the mark;
        every record written since then."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()[self._audit_seen :]
            seen = [r["dicomnet"]["event"] for r in records]
            if all(e in seen for e in events) or time.monotonic() > deadline:
                assert all(e in seen for e in events), f"{events} not in {seen}"
                return records
            time.sleep(0.02)

    def refusals(self, *events: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.new_records(*events)
            if r["dicomnet"]["event"] not in ("association", "release", "store")
        ]

    def new_log(self) -> str:
        return self.serve.log[self._log_seen :]

    # -- clients ------------------------------------------------------------------------------

    def tls(self, who: str = "workstation") -> list[str]:
        issued = getattr(self.pki, who)
        return [
            "--tls-ca",
            str(self.pki.ca),
            "--tls-cert",
            str(issued.cert),
            "--tls-key",
            str(issued.key),
        ]

    def echo(self, *args: str, port: int | None = None) -> Any:
        return dicomnet("echo", "127.0.0.1", str(port or self.port), "--aec", "ARCHIVE", *args)

    def still_serves(self) -> None:
        """Everyone else is still served: a modality on the plain port, a workstation on the
        TLS port."""
        plain = self.echo("--aet", "CT1")
        assert plain.returncode == 0, plain.stdout + plain.stderr
        tls = self.echo("--aet", "WORKSTATION", *self.tls(), port=self.tls_port)
        assert tls.returncode == 0, tls.stdout + tls.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Node]:
    running = Node(tmp_path_factory.mktemp("node"), pki)
    yield running
    assert running.serve.stop() == 0, running.serve.log
    events = [r["dicomnet"]["event"] for r in running.records()]
    assert events[0] == "start" and events[-1] == "stop"


@pytest.fixture
def fresh(node: Node) -> Node:
    node.mark()
    return node


# -- what must be refused (issue 11, "Bad input") -----------------------------------------------


def raw_rq(calling: str, *sub_items: bytes) -> bytes:
    """An A-ASSOCIATE-RQ by hand (PS3.8 Table 9-11) for Verification, with ``sub_items`` in its
    user information item."""
    user_info = item(0x51, struct.pack(">I", 16384)) + item(0x52, IMPLEMENTATION_UID.encode())
    body = struct.pack(">HH", 1, 0) + ae("ARCHIVE") + ae(calling) + b"\x00" * 32
    body += item(0x10, APPLICATION_CONTEXT.encode()) + presentation_context(1, VERIFICATION)
    return pdu(0x01, body + item(0x50, user_info + b"".join(sub_items)))


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = _exactly(sock, 6)
    kind, _reserved, length = struct.unpack(">BBI", header)
    return kind, _exactly(sock, length)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def test_more_associations_from_one_address_than_allowed(fresh: Node) -> None:
    """max_associations_per_host = 8: the ninth association from 127.0.0.1 is rejected
    transient, local limit exceeded (PS3.8 Table 9-21: 2, 3, 2)."""
    held: list[socket.socket] = []
    try:
        answer: tuple[int, bytes] = (0, b"")
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", fresh.port), timeout=10)
            held.append(sock)
            sock.sendall(raw_rq("CT1"))
            answer = read_pdu(sock)
            if answer[0] != 0x02:
                break
        assert len(held) == 9, f"rejected after {len(held)}"
        kind, body = answer
        assert (kind, body[1], body[2], body[3]) == (0x03, 2, 3, 2)
    finally:
        for sock in held:
            sock.close()
    (refusal,) = fresh.refusals("refusal")
    assert "8 associations from 127.0.0.1 are open" in refusal["dicomnet"]["reason"]
    assert "associations from 127.0.0.1 are open" in fresh.new_log()
    fresh.still_serves()


def test_plain_dicom_to_the_tls_port(fresh: Node) -> None:
    result = fresh.echo("--aet", "CT1", "--timeout", "10", port=fresh.tls_port)
    assert result.returncode == 2, result.stdout + result.stderr
    (record,) = fresh.refusals("node-authentication-failure")
    assert (
        record["dicomnet"]["reason"] == "the peer did not speak TLS (plain DICOM to the TLS port?)"
    )
    assert record["EventIdentification"]["EventID"]["csd-code"] == "110113"  # Security Alert
    assert "failed: the peer did not speak TLS" in fresh.new_log()
    fresh.still_serves()


def test_tls_to_the_plain_port(fresh: Node) -> None:
    result = fresh.echo("--aet", "WORKSTATION", *fresh.tls())
    assert result.returncode == 2
    assert "the server did not answer in TLS (a port without TLS?)" in result.stderr
    (record,) = fresh.refusals("node-authentication-failure")
    assert "unknown PDU type 0x16" in record["dicomnet"]["reason"]
    assert "0x16 starts a TLS handshake record" in fresh.new_log()
    fresh.still_serves()


@pytest.mark.parametrize(
    ("who", "why"),
    [
        ("stranger", "certificate did not verify: unable to get local issuer certificate"),
        ("expired", "certificate did not verify: certificate has expired"),
    ],
)
def test_client_certificates_that_do_not_verify(fresh: Node, who: str, why: str) -> None:
    result = fresh.echo("--aet", "WORKSTATION", *fresh.tls(who), port=fresh.tls_port)
    assert result.returncode == 2, result.stdout + result.stderr
    (record,) = fresh.refusals("node-authentication-failure")
    assert why in record["dicomnet"]["reason"]
    assert why in fresh.new_log()
    fresh.still_serves()


def test_a_handshake_that_never_finishes(fresh: Node) -> None:
    with socket.create_connection(("127.0.0.1", fresh.tls_port), timeout=10) as stalled:
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello's first bytes, then nothing
        started = time.monotonic()
        fresh.still_serves()  # served meanwhile
        try:
            assert stalled.recv(1024) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 10
    (record,) = fresh.refusals("node-authentication-failure")
    assert record["dicomnet"]["reason"] == "the TLS handshake was not finished within 1 s"
    assert "not finished within 1 s" in fresh.new_log()


def test_a_wrong_password(fresh: Node) -> None:
    result = fresh.echo("--aet", "REPORTING", "--user", "alice", "--password", "not it")
    assert result.returncode == 2
    assert "rejected (permanent) by the service provider (ACSE)" in result.stderr
    (record,) = fresh.refusals("authentication-failure")
    assert record["dicomnet"]["reason"] == "wrong passcode for user 'alice'"
    assert record["ActiveParticipant"][0]["UserName"] == "alice"
    assert "not it" not in fresh.audit.read_text() and "not it" not in fresh.serve.log
    assert "authentication failed: wrong passcode for user 'alice'" in fresh.new_log()
    # REPORTING names its users: without one it is rejected too; with the right one it is in.
    assert fresh.echo("--aet", "REPORTING").returncode == 2
    right = fresh.echo("--aet", "REPORTING", "--user", "alice", "--password", PASSWORD)
    assert right.returncode == 0, right.stderr


def test_a_user_identity_item_of_65535_bytes(fresh: Node) -> None:
    """The user information item at its 65,535-byte maximum, nearly all of it a username: an
    unknown user, rejected permanent by the ACSE; the log and the audit show 64 characters."""
    fixed = len(item(0x51, b"\x00" * 4) + item(0x52, IMPLEMENTATION_UID.encode()))
    name = b"N" * (0xFFFF - fixed - 4 - 2 - 2 - 2 - 1)
    value = bytes([2, 0]) + struct.pack(">H", len(name)) + name + b"\x00\x01x"
    identity = item(0x58, value)
    assert fixed + len(identity) == 0xFFFF
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=10) as sock:
        sock.sendall(raw_rq("CT1", identity))
        kind, body = read_pdu(sock)
    assert (kind, body[1], body[2], body[3]) == (0x03, 1, 2, 1)
    (record,) = fresh.refusals("authentication-failure")
    assert record["dicomnet"]["reason"] == f"unknown user '{'N' * 64}...'"
    assert f"unknown user '{'N' * 64}...'" in fresh.new_log()
    assert "N" * 65 not in fresh.new_log()
    fresh.still_serves()


def test_a_c_move_to_a_destination_the_peer_may_not_name(fresh: Node) -> None:
    result = dicomnet(
        "move", "127.0.0.1", str(fresh.tls_port), "--aet", "WORKSTATION", "--aec", "ARCHIVE",
        "--dest", "ELSEWHERE", "-k", "StudyInstanceUID=1.2.3", *fresh.tls(),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0xA801" in result.stderr
    (record,) = fresh.refusals("refusal")
    assert record["dicomnet"]["reason"] == "'WORKSTATION' may not move to 'ELSEWHERE'"
    assert record["dicomnet"]["answer"] == "status 0xA801"
    assert "request refused (0xA801)" in fresh.new_log()
    fresh.still_serves()


def test_a_data_set_larger_than_the_limit(fresh: Node, tmp_path: Path) -> None:
    big = write_ct(tmp_path / "big.dcm", rows=256, columns=256)  # 128 KiB of pixels
    result = dicomnet(
        "store", "127.0.0.1", str(fresh.port), "--aet", "CT1", "--aec", "ARCHIVE",
        str(tmp_path / "big.dcm"),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0xA700" in result.stdout + result.stderr
    (record,) = fresh.refusals("refusal")
    assert record["dicomnet"]["reason"] == "the data set is larger than the limit of 100000 bytes"
    assert "larger than the limit" in fresh.new_log()
    assert not [p for p in fresh.storage.rglob(f"{big.SOPInstanceUID}*")]
    assert [p for p in fresh.storage.rglob("*.part") if p.stat().st_size] == []
    fresh.still_serves()


def test_a_disk_below_its_minimum(tmp_path: Path, pki: Pki) -> None:
    """--min-free-disk above what the disk has: C-STOREs are refused 0xA700 before their data
    set arrives; echo still works."""
    storage, audit = tmp_path / "store", tmp_path / "audit.jsonl"
    server = Serve(storage, "--min-free-disk", "1000TB", "--audit", str(audit), "--no-fsync")
    try:
        ct = write_ct(tmp_path / "in" / "ct.dcm")
        result = dicomnet("store", "127.0.0.1", str(server.port), str(tmp_path / "in"))
        assert result.returncode == 1
        assert "free disk below the minimum" in result.stdout + result.stderr
        echo = dicomnet("echo", "127.0.0.1", str(server.port))
        assert echo.returncode == 0
    finally:
        assert server.stop() == 0
    assert not list(storage.rglob(f"{ct.SOPInstanceUID}*"))
    events = [json.loads(line)["dicomnet"] for line in audit.read_text().splitlines()]
    refusals = [e for e in events if e["event"] == "refusal"]
    assert len(refusals) == 1 and refusals[0]["answer"] == "status 0xA700"
    assert "cannot receive the data set of CStoreRQ: free disk below the minimum" in server.log


# -- interop over TLS and with user identities, through the command line ------------------------


def dcmtk_tls(pki: Pki, who: str) -> list[str]:
    issued = getattr(pki, who)
    return ["+tls", str(issued.key), str(issued.cert), "-pw", "+cf", str(pki.ca)]


@pytest.mark.interop
def test_storescu_over_tls_with_a_password_then_findscu_and_dicomnet(
    fresh: Node, tmp_path: Path
) -> None:
    storescu, findscu, echoscu = (require_tool(t) for t in ("storescu", "findscu", "echoscu"))
    src = tmp_path / "in"
    datasets = [
        write_ct(src / f"{i}.dcm", rows=64, columns=64, study_uid="1.2.826.0.1.3680043.2.1143.7")
        for i in range(3)
    ]
    stored = run(
        [storescu, "-v", *dcmtk_tls(fresh.pki, "ct1"), "-aet", "CT1", "-aec", "ARCHIVE",
         "-usr", "alice", "-pwd", PASSWORD, "+sd", "127.0.0.1", str(fresh.tls_port), str(src)]
    )  # fmt: skip
    assert stored.returncode == 0, stored.stdout + stored.stderr
    for ds in datasets:
        path = (
            fresh.storage / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        )
        assert dcmread(path).PixelData == ds.PixelData
    records = fresh.new_records("store")
    login = next(r for r in records if r["dicomnet"]["event"] == "association")
    assert login["ActiveParticipant"][0]["UserName"] == "alice"
    assert login["dicomnet"]["peer_certificate"] == "CN=ct1,O=Hospital"
    assert login["dicomnet"]["tls"].startswith("TLSv1.")
    stores = [r for r in fresh.new_records("store") if r["dicomnet"]["event"] == "store"]
    assert {
        o["ParticipantObjectID"] for r in stores for o in r["ParticipantObjectIdentification"]
    } >= {"1.2.826.0.1.3680043.2.1143.7", "PAT001"}
    assert "PixelData" not in fresh.audit.read_text()

    # findscu over TLS as the workstation (its certificate is what its rule names).
    found = run(
        [findscu, "-v", *dcmtk_tls(fresh.pki, "workstation"), "-aet", "WORKSTATION",
         "-aec", "ARCHIVE", "-S", "-k", "QueryRetrieveLevel=STUDY",
         "-k", "StudyInstanceUID=1.2.826.0.1.3680043.2.1143.7", "127.0.0.1", str(fresh.tls_port)]
    )  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr + fresh.new_log()
    assert found.stdout.count("Find Response") + found.stderr.count("Find Response") >= 1
    assert "1.2.826.0.1.3680043.2.1143.7" in found.stdout + found.stderr
    # The same peer name with the wrong certificate (CT1's) is rejected: the rule names one.
    wrong = run(
        [echoscu, *dcmtk_tls(fresh.pki, "ct1"), "-aet", "WORKSTATION", "-aec", "ARCHIVE",
         "127.0.0.1", str(fresh.tls_port)]
    )  # fmt: skip
    assert wrong.returncode != 0 or "Rejected" in wrong.stdout + wrong.stderr
    assert "presented the certificate of 'CN=ct1,O=Hospital', not its own" in fresh.new_log()

    # dicomnet find over TLS as REPORTING, logged in as alice; dicomnet get as the workstation.
    query = dicomnet(
        "find", "127.0.0.1", str(fresh.tls_port), "--aet", "REPORTING", "--aec", "ARCHIVE",
        "--user", "alice", "--password", PASSWORD, *fresh.tls(), "--csv",
        "-k", "StudyInstanceUID=1.2.826.0.1.3680043.2.1143.7",
    )  # fmt: skip
    assert query.returncode == 0, query.stderr + fresh.new_log()[-3000:]
    assert "1.2.826.0.1.3680043.2.1143.7" in query.stdout
    out = tmp_path / "got"
    got = dicomnet(
        "get", "127.0.0.1", str(fresh.tls_port), "--aet", "WORKSTATION", "--aec", "ARCHIVE",
        *fresh.tls(), "--out", str(out), "-k", "StudyInstanceUID=1.2.826.0.1.3680043.2.1143.7",
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert sorted(p.stem for p in out.glob("*.dcm")) == sorted(d.SOPInstanceUID for d in datasets)
    retrieve = [r for r in fresh.new_records("retrieve") if r["dicomnet"]["event"] == "retrieve"]
    assert retrieve[-1]["dicomnet"]["operation"] == "get"


@pytest.mark.interop
def test_dicomnet_store_and_echo_over_tls_into_storescp(pki: Pki, tmp_path: Path) -> None:
    scp = DcmtkStorescp(
        tmp_path / "dcmtk-in",
        extra=["+tls", str(pki.server.key), str(pki.server.cert), "-pw", "+cf", str(pki.ca)],
    )
    try:
        src = tmp_path / "in"
        datasets = [write_ct(src / f"{i}.dcm", rows=128, columns=128) for i in range(4)]
        tls = [
            "--tls-ca",
            str(pki.ca),
            "--tls-cert",
            str(pki.ct1.cert),
            "--tls-key",
            str(pki.ct1.key),
        ]
        echo = dicomnet("echo", "127.0.0.1", str(scp.port), "--aec", "STORESCP", *tls)
        assert echo.returncode == 0, echo.stderr
        stored = dicomnet(
            "store", "127.0.0.1", str(scp.port), "--aec", "STORESCP", "--user", "alice",
            "--password", PASSWORD, *tls, str(src),
        )  # fmt: skip
        assert stored.returncode == 0, stored.stdout + stored.stderr
        # Without a client certificate storescp ends the handshake.
        refused = dicomnet(
            "echo", "127.0.0.1", str(scp.port), "--aec", "STORESCP", "--tls-ca", str(pki.ca)
        )
        assert refused.returncode == 2
    finally:
        scp.stop()
    received = {dcmread(p).SOPInstanceUID: dcmread(p) for p in scp.folder.iterdir()}
    for ds in datasets:
        assert received[ds.SOPInstanceUID].PixelData == ds.PixelData


@pytest.mark.interop
def test_dicomnet_echo_sends_the_user_identity_pynetdicom_receives(tmp_path: Path) -> None:
    """The other direction of user identity: dicomnet's --user/--password reach a pynetdicom
    SCP's identity handler, which answers with a positive response."""
    require_pynetdicom()
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification

    seen: list[tuple[int, bytes, bytes]] = []

    def on_identity(event: Any) -> tuple[bool, bytes | None]:
        seen.append((event.user_id_type, event.primary_field, event.secondary_field))
        return event.primary_field == b"alice" and event.secondary_field == b"s3cret", None

    ae_ = AE(ae_title="PYNETDICOM")
    ae_.add_supported_context(Verification)
    scp = ae_.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_USER_ID, on_identity)]
    )
    try:
        port = str(scp.server_address[1])
        ok = dicomnet("echo", "127.0.0.1", port, "--user", "alice", "--password", "s3cret")
        assert ok.returncode == 0, ok.stderr
        bad = dicomnet("echo", "127.0.0.1", port, "--user", "alice", "--password", "nope")
        assert bad.returncode == 2 and "rejected" in bad.stderr
    finally:
        scp.shutdown()
    assert seen == [(2, b"alice", b"s3cret"), (2, b"alice", b"nope")]


# -- dicomnet passwd ------------------------------------------------------------------------------


def test_passwd_prints_a_hash_of_standard_input() -> None:
    import subprocess

    done = subprocess.run(
        [*DICOMNET, "passwd"], input="correct horse\n", capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    stored = done.stdout.strip()
    assert stored.startswith("$scrypt$ln=15,r=8,p=1$")
    assert verify_password("correct horse", stored) and not verify_password("correct", stored)
    empty = subprocess.run(
        [*DICOMNET, "passwd"], input="", capture_output=True, text=True, check=False
    )
    assert empty.returncode == 2 and "no password" in empty.stderr
