"""security.tls: the contexts follow the non-downgrading BCP 195 profile, refuse what it
forbids, and report only verified peer certificates. Handshakes run through memory BIOs (no
socket); certificates are made by ``trustme`` in the test, never checked in."""

from __future__ import annotations

import contextlib
import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicomnet.security.decisions import SecurityConfigError
from dicomnet.security.tls import (
    BCP195_TLS12_CIPHERS,
    DEFAULT_HANDSHAKE_TIMEOUT,
    TLSSettings,
    certificate_from_dict,
    client_context,
    describe_tls_error,
    distinguished_name,
    parse_dn,
    server_context,
    subject_matches,
)

trustme = pytest.importorskip("trustme")


@dataclass
class Pki:
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
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    other = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="dicomnet-server")
    client = ca.issue_cert("modality1", common_name="modality1", organization_name="Hospital")
    stranger = other.issue_cert("modality1", common_name="modality1")
    expired = ca.issue_cert(
        "modality1",
        common_name="modality1",
        not_before=datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2002, 1, 1, tzinfo=datetime.UTC),
    )

    def put(blob: object, name: str) -> Path:
        path = folder / name
        blob.write_to_path(str(path))  # type: ignore[attr-defined]
        return path

    return Pki(
        ca=put(ca.cert_pem, "ca.pem"),
        server_cert=put(server.cert_chain_pems[0], "server.pem"),
        server_key=put(server.private_key_pem, "server.key"),
        client_cert=put(client.cert_chain_pems[0], "client.pem"),
        client_key=put(client.private_key_pem, "client.key"),
        other_ca=put(other.cert_pem, "other-ca.pem"),
        other_cert=put(stranger.cert_chain_pems[0], "other.pem"),
        other_key=put(stranger.private_key_pem, "other.key"),
        expired_cert=put(expired.cert_chain_pems[0], "expired.pem"),
        expired_key=put(expired.private_key_pem, "expired.key"),
    )


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost"
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two contexts through memory BIOs; raise what either side
    raises."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        if c_out.pending:
            s_in.write(c_out.read())
        if s_out.pending:
            c_in.write(s_out.read())
        if all(done.values()) and not c_out.pending and not s_out.pending:
            # TLS 1.3: the server verifies the client's certificate after the client thinks it
            # is done; one read on the server side surfaces its verdict.
            try:
                server.read(1)
            except ssl.SSLWantReadError:
                pass
            if s_out.pending:
                c_in.write(s_out.read())
                try:
                    client.read(1)
                except ssl.SSLWantReadError:
                    pass
            return server, client
    raise AssertionError("handshake did not finish in 20 rounds")


# -- the profile ----------------------------------------------------------------------------------


def test_server_context_profile(pki: Pki) -> None:
    ctx = server_context(pki.server_cert, pki.server_key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.verify_mode == ssl.CERT_NONE  # no CA: clients are not asked for certificates
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and tls12 <= set(BCP195_TLS12_CIPHERS)
    # every TLS 1.2 suite is an AEAD suite with ephemeral key exchange
    assert all(("ECDHE" in n or "DHE" in n) and "GCM" in n for n in tls12)


def test_server_context_with_ca_requires_client_certificates(pki: Pki) -> None:
    ctx = server_context(pki.server_cert, pki.server_key, pki.ca)
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_client_context_verifies_by_default(pki: Pki) -> None:
    ctx = client_context(pki.ca)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    system = client_context()  # no CA: the system trust store, still verifying
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname


def test_client_no_verify_is_explicit_and_exclusive(pki: Pki) -> None:
    ctx = client_context(no_verify=True)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    with pytest.raises(SecurityConfigError, match="either verify"):
        client_context(pki.ca, no_verify=True)


def test_configuration_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(SecurityConfigError, match=r"nope\.pem.*does not exist"):
        server_context(missing, pki.server_key)
    with pytest.raises(SecurityConfigError, match="CA file or folder"):
        server_context(pki.server_cert, pki.server_key, missing)
    with pytest.raises(SecurityConfigError, match="key matching the certificate"):
        server_context(pki.server_cert, pki.client_key)  # a key of another certificate
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SecurityConfigError, match="expected PEM"):
        client_context(garbage)
    with pytest.raises(SecurityConfigError, match="without its certificate"):
        client_context(pki.ca, key=pki.client_key)


def test_settings(pki: Pki) -> None:
    settings = TLSSettings(pki.server_cert, pki.server_key, pki.ca, handshake_timeout=5)
    kwargs = settings.server_kwargs()
    assert kwargs["ssl_handshake_timeout"] == 5
    assert kwargs["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert TLSSettings().handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT
    with pytest.raises(SecurityConfigError, match="needs a certificate"):
        TLSSettings().server_context()
    with pytest.raises(SecurityConfigError, match="positive"):
        TLSSettings(handshake_timeout=0)
    with pytest.raises(SecurityConfigError, match="no_verify"):
        TLSSettings(pki.server_cert, pki.server_key, pki.ca, no_verify=True).server_context()
    # the key password never shows in a repr (logs, tracebacks)
    assert "secret" not in repr(TLSSettings(key_password="secret"))


# -- handshakes -----------------------------------------------------------------------------------


def test_mutual_authentication(pki: Pki) -> None:
    server, _client = handshake(
        server_context(pki.server_cert, pki.server_key, pki.ca),
        client_context(pki.ca, pki.client_cert, pki.client_key),
    )
    assert server.version() in ("TLSv1.2", "TLSv1.3")
    cert = certificate_from_dict(server.getpeercert())
    assert cert is not None
    assert cert.common_name == "modality1"
    assert cert.subject.startswith("CN=modality1,")
    assert "O=Hospital" in cert.subject
    assert ("DNS", "modality1") in cert.subject_alt_names


def test_client_certificate_from_another_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(
            server_context(pki.server_cert, pki.server_key, pki.ca),
            client_context(pki.ca, pki.other_cert, pki.other_key),
        )


def test_missing_client_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(server_context(pki.server_cert, pki.server_key, pki.ca), client_context(pki.ca))


def test_expired_client_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(ssl.SSLError, match="expired"):
        handshake(
            server_context(pki.server_cert, pki.server_key, pki.ca),
            client_context(pki.ca, pki.expired_cert, pki.expired_key),
        )


def test_expired_server_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        handshake(
            server_context(pki.expired_cert, pki.expired_key), client_context(pki.ca), "modality1"
        )


def test_server_from_unknown_ca_and_wrong_name(pki: Pki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context(pki.server_cert, pki.server_key), client_context(pki.other_ca))
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(
            server_context(pki.server_cert, pki.server_key), client_context(pki.ca), "pacs.example"
        )
    # the name check can be left out; the chain is still verified
    handshake(
        server_context(pki.server_cert, pki.server_key),
        client_context(pki.ca, check_hostname=False),
        "pacs.example",
    )


def test_no_verify_client_accepts_unknown_server(pki: Pki) -> None:
    _server, client = handshake(
        server_context(pki.server_cert, pki.server_key), client_context(no_verify=True)
    )
    assert client.getpeercert() == {}  # unverified: nothing to report
    assert certificate_from_dict(client.getpeercert()) is None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1:DeprecationWarning")
def test_old_protocols_are_refused(pki: Pki) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(server_context(pki.server_cert, pki.server_key), old)


def test_non_bcp195_cipher_is_refused(pki: Pki) -> None:
    # TLS 1.2 with a CBC/SHA-1 suite only: the server offers none of it.
    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.check_hostname = False
    weak.verify_mode = ssl.CERT_NONE
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
    with pytest.raises(ssl.SSLError):
        handshake(server_context(pki.server_cert, pki.server_key), weak)


def test_tls12_peer_negotiates_a_bcp195_suite(pki: Pki) -> None:
    only12 = client_context(pki.ca)
    only12.maximum_version = ssl.TLSVersion.TLSv1_2
    server, _client = handshake(server_context(pki.server_cert, pki.server_key), only12)
    assert server.version() == "TLSv1.2"
    cipher = server.cipher()
    assert cipher is not None and cipher[0] in BCP195_TLS12_CIPHERS


# -- names ----------------------------------------------------------------------------------------


def test_distinguished_name_rfc4514() -> None:
    rdns = [
        (("countryName", "DE"),),
        (("organizationName", "Hospital, Inc."),),
        (("commonName", " lead+space"),),
    ]
    assert distinguished_name(rdns) == "CN=\\ lead\\+space,O=Hospital\\, Inc.,C=DE"


def test_certificate_from_dict_empty_is_none() -> None:
    assert certificate_from_dict({}) is None


def test_parse_dn_forms_agree() -> None:
    rfc = parse_dn("CN=modality1,O=Hospital\\, Inc.,C=DE")
    assert rfc == (
        frozenset({("CN", "modality1")}),
        frozenset({("O", "hospital, inc.")}),
        frozenset({("C", "de")}),
    )
    assert parse_dn("commonName = Modality1 , o=Hospital\\2C Inc., C=de") == rfc


def test_subject_matches_either_order() -> None:
    actual = "CN=modality1,OU=CT,O=Hospital"
    assert subject_matches("CN=modality1,OU=CT,O=Hospital", actual)
    assert subject_matches("O = Hospital, OU = CT, CN = modality1", actual)  # openssl's order
    assert not subject_matches("CN=modality1,O=Hospital", actual)
    assert not subject_matches("CN=modality2,OU=CT,O=Hospital", actual)
    assert not subject_matches("CN=modality1,OU=CT,O=Hospital", "CN=modality1+OU=CT,O=Hospital")


def test_parse_dn_rejects_garbage() -> None:
    with pytest.raises(SecurityConfigError, match="TYPE=value"):
        parse_dn("modality1")
    with pytest.raises(SecurityConfigError, match="empty component"):
        parse_dn("CN=a,,O=b")


# -- failed handshakes, described -----------------------------------------------------------------


def _server_side_error(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> BaseException:
    """The exception the server side of a failed handshake raises."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            client.do_handshake()
        if c_out.pending:
            s_in.write(c_out.read())
        try:
            server.do_handshake()
            server.read(1)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc
        if s_out.pending:
            c_in.write(s_out.read())
    raise AssertionError("the server side did not fail")


def test_describe_real_server_side_failures(pki: Pki) -> None:
    mutual = server_context(pki.server_cert, pki.server_key, pki.ca)
    other = _server_side_error(mutual, client_context(pki.ca, pki.other_cert, pki.other_key))
    assert describe_tls_error(other) == (
        "the peer's certificate did not verify: unable to get local issuer certificate"
    )
    expired = _server_side_error(mutual, client_context(pki.ca, pki.expired_cert, pki.expired_key))
    assert describe_tls_error(expired) == (
        "the peer's certificate did not verify: certificate has expired"
    )
    missing = _server_side_error(mutual, client_context(pki.ca))
    assert describe_tls_error(missing) == "the peer sent no certificate, and one is required"


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, reason)
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (_ssl_error("WRONG_VERSION_NUMBER"), "did not speak TLS (plain DICOM to the TLS port?)"),
        (_ssl_error("NO_SHARED_CIPHER"), "no cipher suite in common"),
        (_ssl_error("UNSUPPORTED_PROTOCOL"), "older than 1.2"),
        (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "the alert 'unknown ca'"),
        (_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"), "the alert 'bad certificate'"),
        (_ssl_error("SOMETHING_NEW"), "TLS handshake failed: something new"),
        (TimeoutError(), "not finished within 2.5 s"),
        (
            ConnectionAbortedError("SSL handshake is taking longer than 2.5 seconds: aborting"),
            "not finished within 2.5 s",
        ),
        (ConnectionResetError(), "closed the connection during the handshake"),
        (ValueError("odd"), "TLS handshake failed: ValueError: odd"),
    ],
)
def test_describe_tls_error(exc: BaseException, text: str) -> None:
    assert text in describe_tls_error(exc, 2.5)
