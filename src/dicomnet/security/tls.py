"""TLS for the DICOM upper layer (PS3.15 Annex B, "Secure Transport Connection Profiles"):
``ssl.SSLContext`` builders for servers and clients, and what a transport says about its peer.

Rules: the contexts follow the Non-Downgrading BCP 195 TLS profile (PS3.15 B.9/B.10 in the
editions that number it so, B.12 in the newest): TLS 1.2 or newer only (RFC 8996), the BCP 195
AEAD cipher suites with forward secrecy for TLS 1.2 (RFC 7525 §4.2, RFC 9325 §4.2; TLS 1.3 has
only such suites), no TLS compression (CRIME, RFC 7525 §3.3) and no renegotiation. A server
given a CA requires a client certificate and verifies it against that CA (mutual
authentication); a client verifies the server against its CA, or the system's trust store when
no CA is given, and skips verification only when told ``no_verify=True``. A peer certificate is
reported only when it was verified: an unverified one names nobody.

The handshake timeout is asyncio's ``ssl_handshake_timeout``; ``TLSSettings.server_kwargs()``
hands it to ``loop.create_server`` with the context. asyncio keeps a failed server-side handshake
to itself (not even a log line), so a server that must log and audit them accepts the TCP
connections itself and upgrades each with ``TLSListener``, which reports every failure with its
cause (``describe_tls_error``) and the peer's address. The registered port for DICOM over TLS is 2762
(PS3.15 B.1 note).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from dicomnet.errors import DicomNetError
from dicomnet.security.decisions import SecurityConfigError

log = logging.getLogger("dicomnet.tls")

DICOM_TLS_PORT = 2762
DEFAULT_HANDSHAKE_TIMEOUT = 30.0  # seconds; the same as the default ARTIM timeout

# TLS 1.2 cipher suites (OpenSSL names) of BCP 195: ephemeral (EC)DH key exchange and AES-GCM,
# ECDSA and RSA certificates. RFC 7525 §4.2 names the four DHE/ECDHE-RSA suites; RFC 9325 §4.2
# adds the ECDSA ones. DHE needs explicit parameters on a server, so OpenSSL uses it only when
# they are loaded; ECDHE covers every peer that follows the profile.
BCP195_TLS12_CIPHERS: tuple[str, ...] = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
)

PathLike = str | os.PathLike[str]


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Apply the non-downgrading BCP 195 profile to a fresh context."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(":".join(BCP195_TLS12_CIPHERS))
    return ctx


def _load_chain(
    ctx: ssl.SSLContext, cert: PathLike, key: PathLike | None, password: str | None
) -> None:
    for what, path in (("certificate", cert), ("private key", key)):
        if path is not None and not Path(path).is_file():
            raise SecurityConfigError(f"TLS {what} file {os.fspath(path)!r} does not exist")
    try:
        ctx.load_cert_chain(cert, key, password)
    except (ssl.SSLError, OSError) as exc:
        raise SecurityConfigError(
            f"cannot use TLS certificate {os.fspath(cert)!r} with key "
            f"{os.fspath(key) if key is not None else '(in the certificate file)'!r}: {exc} "
            "(expected PEM files, the key matching the certificate)"
        ) from exc


def _load_ca(ctx: ssl.SSLContext, ca: PathLike) -> None:
    path = Path(ca)
    if not path.exists():
        raise SecurityConfigError(f"TLS CA file or folder {os.fspath(ca)!r} does not exist")
    try:
        if path.is_dir():
            ctx.load_verify_locations(capath=os.fspath(path))
        else:
            ctx.load_verify_locations(cafile=os.fspath(path))
    except (ssl.SSLError, OSError) as exc:
        raise SecurityConfigError(
            f"cannot read TLS CA certificates from {os.fspath(ca)!r}: {exc} (expected PEM)"
        ) from exc


def server_context(
    cert: PathLike,
    key: PathLike | None = None,
    ca: PathLike | None = None,
    *,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """A server context with our certificate and key. With ``ca``, every client must present
    a certificate that verifies against it, or the handshake fails before any DICOM byte."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(ctx, cert, key, key_password)
    if ca is not None:
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    ca: PathLike | None = None,
    cert: PathLike | None = None,
    key: PathLike | None = None,
    *,
    key_password: str | None = None,
    no_verify: bool = False,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context. The server's certificate is verified against ``ca`` (the system's
    trust store without it) and, with ``check_hostname``, against the host name or address we
    connect to (RFC 6125). ``cert``/``key`` are our own certificate for servers that require
    one. ``no_verify=True`` accepts any server certificate: encryption without
    authentication, only by explicit choice, and not together with ``ca``."""
    if no_verify and ca is not None:
        raise SecurityConfigError(
            "a TLS CA was given together with no_verify: either verify the peer against the "
            "CA or explicitly skip verification, not both"
        )
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if no_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = check_hostname
        if ca is not None:
            _load_ca(ctx, ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        _load_chain(ctx, cert, key, key_password)
    elif key is not None:
        raise SecurityConfigError("a TLS private key was given without its certificate")
    return ctx


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """TLS as a node is configured with it (the CLI options and the TOML table feed this):
    file paths, the verification choice and the handshake timeout."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    no_verify: bool = False
    check_hostname: bool = True
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    key_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.handshake_timeout > 0:
            raise SecurityConfigError(
                f"TLS handshake timeout must be a positive number of seconds, "
                f"not {self.handshake_timeout!r}"
            )

    def server_context(self) -> ssl.SSLContext:
        """The listening side; needs ``cert`` (and ``key`` unless the certificate file holds
        it). ``no_verify`` means "do not ask clients for certificates" and excludes ``ca``."""
        if self.cert is None:
            raise SecurityConfigError("a TLS server needs a certificate (--tls-cert) and key")
        if self.no_verify and self.ca is not None:
            raise SecurityConfigError(
                "a TLS CA (client certificates required) was given together with no_verify"
            )
        return server_context(self.cert, self.key, self.ca, key_password=self.key_password)

    def client_context(self) -> ssl.SSLContext:
        return client_context(
            self.ca,
            self.cert,
            self.key,
            key_password=self.key_password,
            no_verify=self.no_verify,
            check_hostname=self.check_hostname,
        )

    def server_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``loop.create_server``: the context and the handshake
        timeout (a peer that never finishes the handshake is dropped after it)."""
        return {"ssl": self.server_context(), "ssl_handshake_timeout": self.handshake_timeout}

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``loop.create_connection``."""
        return {"ssl": self.client_context(), "ssl_handshake_timeout": self.handshake_timeout}


# -- the peer, as the transport reports it --------------------------------------------------------

# OpenSSL long names (what ``getpeercert()`` uses) -> RFC 4514 §3 short names.
_SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_SHORT_UPPER = {long.upper(): short for long, short in _SHORT_NAMES.items()}

RDN = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    """RFC 4514 §2.4 escaping of an attribute value."""
    out = []
    for i, ch in enumerate(value):
        if ch in '"+,;<>\\' or (i == 0 and ch in "# ") or (i == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


def distinguished_name(rdns: Sequence[RDN]) -> str:
    """The RFC 4514 string of a name given in certificate order (as ``getpeercert()`` gives
    it): the most specific RDN first, e.g. ``CN=modality1,O=Hospital,C=DE``."""
    parts = []
    for rdn in reversed(rdns):
        parts.append(
            "+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
        )
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The verified certificate of the peer (for ``association.peer_certificate``, the
    permission rules and the audit trail)."""

    subject: str  # RFC 4514, most specific first
    issuer: str
    common_name: str | None
    serial_number: str
    not_before: str
    not_after: str
    subject_alt_names: tuple[tuple[str, str], ...] = ()


def certificate_from_dict(cert: Mapping[str, Any]) -> PeerCertificate | None:
    """A ``PeerCertificate`` from ``SSLObject.getpeercert()``; None for the empty dict that
    an unverified certificate gives."""
    if not cert:
        return None
    subject: list[RDN] = [
        tuple((str(k), str(v)) for k, v in rdn) for rdn in cert.get("subject", ())
    ]
    issuer: list[RDN] = [tuple((str(k), str(v)) for k, v in rdn) for rdn in cert.get("issuer", ())]
    common_names = [v for rdn in subject for k, v in rdn if k == "commonName"]
    return PeerCertificate(
        subject=distinguished_name(subject),
        issuer=distinguished_name(issuer),
        common_name=common_names[-1] if common_names else None,
        serial_number=str(cert.get("serialNumber", "")),
        not_before=str(cert.get("notBefore", "")),
        not_after=str(cert.get("notAfter", "")),
        subject_alt_names=tuple((str(k), str(v)) for k, v in cert.get("subjectAltName", ())),
    )


def peer_certificate(transport: asyncio.BaseTransport) -> PeerCertificate | None:
    """The peer's verified certificate on a TLS transport; None on a plain transport, when the
    peer sent none, or when it was not verified (a server without a CA, ``no_verify``)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    try:
        cert = ssl_object.getpeercert()
    except ValueError:  # the handshake did not finish, or the connection is gone already
        return None
    return certificate_from_dict(cert) if cert else None


@dataclass(frozen=True, slots=True)
class TLSSession:
    """What was negotiated, for logs and the audit trail."""

    version: str
    cipher: str
    bits: int


def tls_session(transport: asyncio.BaseTransport) -> TLSSession | None:
    """The protocol version and cipher of a TLS transport; None on a plain one."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    try:
        cipher = ssl_object.cipher()
    except ValueError:
        return None
    if cipher is None:
        return None
    name, _protocol, bits = cipher
    return TLSSession(str(ssl_object.version()), str(name), int(bits or 0))


# -- comparing a configured subject with a certificate's ------------------------------------------

_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")


def _split_unescaped(text: str, separators: str) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch in separators:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out, i = bytearray(), 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            if _HEX_PAIR.fullmatch(value[i + 1 : i + 3]):
                out.append(int(value[i + 1 : i + 3], 16))
                i += 3
                continue
            out.extend(value[i + 1].encode())
            i += 2
            continue
        out.extend(ch.encode())
        i += 1
    return out.decode("utf-8", "replace")


def parse_dn(text: str) -> tuple[frozenset[tuple[str, str]], ...]:
    """A distinguished name string as a tuple of RDNs, each a set of (TYPE, value) with the type
    in RFC 4514 short form and the value case-folded (X.520 names match case-insensitively).
    Accepts RFC 4514 (``CN=a,O=b``) and OpenSSL's display form (``C = DE, O = b, CN = a``)."""
    rdns = []
    for part in _split_unescaped(text.strip(), ",;"):
        if not part.strip():
            raise SecurityConfigError(f"certificate subject {text!r} has an empty component")
        attributes = []
        for ava in _split_unescaped(part, "+"):
            name, sep, value = ava.partition("=")
            if not sep or not name.strip():
                raise SecurityConfigError(
                    f"certificate subject {text!r}: {ava.strip()!r} is not TYPE=value"
                )
            kind = name.strip().upper()
            kind = _SHORT_UPPER.get(kind, kind)
            attributes.append((kind, _unescape(value.strip()).casefold()))
        rdns.append(frozenset(attributes))
    return tuple(rdns)


def subject_matches(configured: str, actual: str) -> bool:
    """True when a configured subject names the same RDNs as a certificate's subject, written
    most specific first (RFC 4514) or in certificate order (how ``openssl x509 -subject``
    prints it)."""
    want, have = parse_dn(configured), parse_dn(actual)
    return want == have or want == tuple(reversed(have))


# -- failed handshakes, said plainly ---------------------------------------------------------------

_REASONS = {
    "WRONG_VERSION_NUMBER": "the peer did not speak TLS (plain DICOM to the TLS port?)",
    # A client reading a server's answer that is no TLS record.
    "CLIENT:WRONG_VERSION_NUMBER": "the server did not answer in TLS (a port without TLS?)",
    "HTTP_REQUEST": "the peer sent HTTP, not TLS",
    "PACKET_LENGTH_TOO_LONG": "the peer did not speak TLS",
    "RECORD_LAYER_FAILURE": "the peer did not speak TLS",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no certificate, and one is required",
    "NO_SHARED_CIPHER": "no cipher suite in common (the peer offers no BCP 195 suite)",
    "UNSUPPORTED_PROTOCOL": "the peer offers only TLS versions older than 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (1.2 or newer is required)",
    "UNEXPECTED_EOF_WHILE_READING": "the peer closed the connection during the handshake",
}


def describe_tls_error(
    exc: BaseException, handshake_timeout: float | None = None, *, client: bool = False
) -> str:
    """Why a TLS handshake failed, in a sentence for the log and the audit record (``client``:
    seen from the client's side)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the peer's certificate did not verify: {exc.verify_message or exc.reason}"
    # asyncio (and uvloop) end a handshake that outlives ssl_handshake_timeout with a
    # ConnectionAbortedError that says so.
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc)
    ):
        within = f" within {handshake_timeout:g} s" if handshake_timeout else " in time"
        return f"the TLS handshake was not finished{within}"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        if client and f"CLIENT:{reason}" in _REASONS:
            return _REASONS[f"CLIENT:{reason}"]
        if reason in _REASONS:
            return _REASONS[reason]
        for prefix in ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_"):
            if reason.startswith(prefix):
                alert = reason[len(prefix) :].lower().replace("_", " ")
                return f"the peer ended the handshake with the alert {alert!r}"
        return f"TLS handshake failed: {reason.lower().replace('_', ' ') or exc}"
    if isinstance(exc, ConnectionError | EOFError):
        return "the peer closed the connection during the handshake"
    return f"TLS handshake failed: {type(exc).__name__}: {exc}"


class TLSHandshakeError(DicomNetError):
    """A TLS handshake that failed; ``reason`` says why (``describe_tls_error``)."""

    def __init__(self, reason: str, peer: tuple[str, int]) -> None:
        super().__init__(f"TLS handshake with {peer[0]}:{peer[1]} failed: {reason}")
        self.reason = reason
        self.peer = peer


class TLSListener:
    """Accepts TCP connections on a listening socket and upgrades each to TLS before any DICOM
    byte is read (``loop.connect_accepted_socket`` with the context and the handshake timeout);
    only then is the real protocol created, with ``protocol_factory``, and handed the TLS
    transport. asyncio and uvloop alike: the TLS protocol is in place before the socket is read
    (an upgrade of an already-connected transport with ``start_tls`` can lose the ClientHello
    on uvloop, which starts reading as soon as the connection is made).

    ``on_connect(host, port)`` may refuse a connection before any TLS byte (return False: it is
    closed), e.g. too many connections from one address; ``on_failure(TLSHandshakeError)``
    hears every failed handshake, for the audit trail (the listener logs it);
    ``on_dropped(host, port)`` hears of every connection ``on_connect`` let in that ends before
    the real protocol has it (a failed handshake, the server closing), so that what
    ``on_connect`` counted can be given back. The real protocol is never created for a peer that
    did not authenticate."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        context: ssl.SSLContext,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        *,
        on_connect: Callable[[str, int], bool] | None = None,
        on_failure: Callable[[TLSHandshakeError], None] | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.on_connect = on_connect
        self.on_failure = on_failure
        self.on_dropped = on_dropped
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        if self._accepting is None:
            self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self.sock)
            except OSError as exc:  # out of file descriptors and the like: wait, go on
                log.warning("accepting a TLS connection failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            host, port = str(address[0]), int(address[1])
            if self.on_connect is not None and not self.on_connect(host, port):
                conn.close()
                continue
            task = loop.create_task(self._upgrade(conn, host, port))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _upgrade(self, conn: socket.socket, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                partial(_Deferred, self.protocol_factory),
                conn,
                ssl=self.context,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (OSError, TimeoutError, EOFError, ssl.SSLError) as exc:
            failure = TLSHandshakeError(
                describe_tls_error(exc, self.handshake_timeout), (host, port)
            )
            log.warning("%s", failure)
            conn.close()
            if self.on_failure is not None:
                self.on_failure(failure)
            self._dropped(host, port)
        except asyncio.CancelledError:  # the server is closing
            conn.close()
            self._dropped(host, port)
            raise

    def _dropped(self, host: str, port: int) -> None:
        if self.on_dropped is not None:
            self.on_dropped(host, port)

    def close(self) -> None:
        """Stop accepting and give up the handshakes still running."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._handshakes):
            task.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._accepting, *self._handshakes) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _Deferred(asyncio.Protocol):
    """Stands in for the real protocol while the handshake runs, so that a connection that
    never authenticates costs no more than this (an association allocates its receive buffer);
    the TLS transport calls ``connection_made`` once the handshake is done, before any data."""

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self.factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real = self.factory()
        transport.set_protocol(real)
        real.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only before the hand-over; the handshake's failure is reported by the listener
