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
hands it to ``loop.create_server`` with the context. The registered port for DICOM over TLS is
2762 (PS3.15 B.1 note).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomnet.security.decisions import SecurityConfigError

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
    cert = ssl_object.getpeercert()
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
    cipher = ssl_object.cipher()
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
