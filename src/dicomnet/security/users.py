"""Users and passwords, and the acceptor's decision on a user identity (PS3.7 D.3.3.7).

Rules: a password is stored only as a salted scrypt hash (stdlib ``hashlib.scrypt``, RFC 7914)
in a self-describing string, ``$scrypt$ln=15,r=8,p=1$<salt>$<hash>`` (the PHC string format:
log2 of N, block size, parallelism, then salt and hash in unpadded base64), so that stronger
parameters can be used later without breaking stored hashes. Verifying compares in constant time,
and an unknown user costs the same work as a known one (no user enumeration by timing).

``decide_identity`` is pure: the identity sub-item of an A-ASSOCIATE-RQ and a users table in, an
accept/reject decision out, with the server response to send when the requestor asked for a
positive response (empty for types 1 and 2, D.3.3.7.2). A password never appears in a reason,
a log line or an audit record; a peer-supplied username is cut to 64 printable characters (an
identity sub-item can be 65,535 bytes long). scrypt is deliberately slow (tens of milliseconds
and 32 MiB at the default cost): an asyncio server runs ``decide_identity`` in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TextIO

from dicomnet.pdu import UserIdentityRQ
from dicomnet.security.decisions import (
    REJECT_AUTHENTICATION,
    RejectAnswer,
    SecurityConfigError,
    printable,
)

# RFC 7914 §2 parameters: N = 2**ln (CPU/memory cost), r (block size), p (parallelism). The
# default costs 32 MiB and some 50 ms per verification on a current server core.
DEFAULT_LN = 15
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# What a stored hash may ask for: enough range for faster or slower machines, bounded so that a
# hash in a config file cannot make every login take seconds or gigabytes.
LN_RANGE = range(10, 21)
R_RANGE = range(1, 33)
P_RANGE = range(1, 17)
MAX_MEMORY = 1 << 30

_FORMAT = re.compile(
    r"^\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,2}),p=(?P<p>\d{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<hash>[A-Za-z0-9+/]+)$"
)
FORMAT_HINT = "$scrypt$ln=<log2 N>,r=<r>,p=<p>$<base64 salt>$<base64 hash>"


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
    n = 1 << ln
    # OpenSSL's own estimate of what scrypt needs (V and B arrays), plus slack.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``$scrypt$`` string."""

    ln: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        return (
            f"$scrypt$ln={self.ln},r={self.r},p={self.p}"
            f"${_b64encode(self.salt)}${_b64encode(self.digest)}"
        )

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Parse and check a stored hash; ``SecurityConfigError`` says what is wrong with it."""
        match = _FORMAT.fullmatch(text.strip())
        if match is None:
            raise SecurityConfigError(f"not a scrypt password hash (expected {FORMAT_HINT})")
        ln, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
        if ln not in LN_RANGE or r not in R_RANGE or p not in P_RANGE:
            raise SecurityConfigError(
                f"scrypt parameters ln={ln}, r={r}, p={p} are outside the accepted ranges "
                f"(ln {LN_RANGE.start}-{LN_RANGE.stop - 1}, r {R_RANGE.start}-"
                f"{R_RANGE.stop - 1}, p {P_RANGE.start}-{P_RANGE.stop - 1})"
            )
        if 128 * r * (1 << ln) > MAX_MEMORY:
            raise SecurityConfigError(
                f"scrypt parameters ln={ln}, r={r} need more than {MAX_MEMORY >> 20} MiB"
            )
        try:
            salt, digest = _b64decode(match["salt"]), _b64decode(match["hash"])
        except (binascii.Error, ValueError) as exc:
            raise SecurityConfigError(f"bad base64 in scrypt password hash: {exc}") from exc
        if len(salt) < 8 or len(digest) < 16:
            raise SecurityConfigError(
                f"scrypt salt of {len(salt)} bytes / hash of {len(digest)} bytes is too short "
                "(at least 8 / 16)"
            )
        return cls(ln, r, p, salt, digest)

    def verify(self, password: str | bytes) -> bool:
        """True when ``password`` hashes to this digest (constant-time comparison)."""
        raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
        computed = _scrypt(raw, self.salt, self.ln, self.r, self.p, len(self.digest))
        return hmac.compare_digest(computed, self.digest)


def hash_password(
    password: str | bytes,
    *,
    ln: int = DEFAULT_LN,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
    salt: bytes | None = None,
) -> str:
    """The ``$scrypt$`` string of a password with a fresh random salt."""
    raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    if not raw:
        raise ValueError("an empty password cannot be hashed")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    result = PasswordHash(ln, r, p, salt, _scrypt(raw, salt, ln, r, p, HASH_BYTES))
    PasswordHash.parse(str(result))  # the parameters are within what a verifier accepts
    return str(result)


def verify_password(password: str | bytes, stored: str | PasswordHash) -> bool:
    """True when ``password`` matches the stored hash string (or parsed hash)."""
    parsed = stored if isinstance(stored, PasswordHash) else PasswordHash.parse(stored)
    return parsed.verify(password)


def _burn(password: bytes, like: PasswordHash | None) -> None:
    """Spend the work of one verification, with the cost parameters of the users' hashes, so
    that an unknown username takes as long to refuse as a wrong password."""
    if like is None:
        like = PasswordHash(DEFAULT_LN, DEFAULT_R, DEFAULT_P, b"", b"")
    blank = PasswordHash(like.ln, like.r, like.p, b"\x00" * SALT_BYTES, b"\x00" * HASH_BYTES)
    blank.verify(password)


# -- `dicomnet passwd` ----------------------------------------------------------------------------


def read_password(stream: TextIO | None = None, *, confirm: bool = True) -> str:
    """A password from standard input: prompted for (twice, with ``confirm``) without echo on a
    terminal, else the first line of the stream without its line ending."""
    stream = sys.stdin if stream is None else stream
    if stream.isatty():
        first = getpass.getpass("Password: ", stream=sys.stderr)
        if confirm and getpass.getpass("Password again: ", stream=sys.stderr) != first:
            raise ValueError("the two passwords differ")
        password = first
    else:
        password = stream.readline().rstrip("\r\n")
    if not password:
        raise ValueError("no password given on standard input")
    return password


def passwd_command(
    stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """What ``dicomnet passwd`` does: read a password, print its hash (for the ``[users]``
    table); exit status 0, or 2 with a message when no usable password was given."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        password = read_password(stdin)
    except ValueError as exc:
        print(f"dicomnet passwd: {exc}", file=stderr)
        return 2
    print(hash_password(password), file=stdout)
    return 0


# -- the users table ------------------------------------------------------------------------------


def load_users(table: Mapping[str, object]) -> dict[str, PasswordHash]:
    """The ``[users]`` table of the serve configuration (``name = "$scrypt$..."``), checked:
    every value must be a valid hash; a plain-text password is refused with the fix."""
    if not isinstance(table, Mapping):
        raise SecurityConfigError(
            f"[users] must be a table of name = hash, not {type(table).__name__}"
        )
    users: dict[str, PasswordHash] = {}
    for name, value in table.items():
        where = f"[users] {printable(str(name))!r}"
        if not isinstance(name, str) or not name or not name.isprintable():
            raise SecurityConfigError(f"{where}: a username must be non-empty printable text")
        if not isinstance(value, str):
            raise SecurityConfigError(
                f"{where}: expected a password hash string, not {type(value).__name__}"
            )
        if not value.startswith("$scrypt$"):
            # Never echo the value: it may be a plain-text password.
            raise SecurityConfigError(
                f"{where}: the value is not a password hash; store the output of "
                "`dicomnet passwd`, never the password itself"
            )
        try:
            users[name] = PasswordHash.parse(value)
        except SecurityConfigError as exc:
            raise SecurityConfigError(f"{where}: {exc}") from None
    return users


# -- the user identity decision (PS3.7 D.3.3.7) ---------------------------------------------------


class IdentityType(IntEnum):
    """User-Identity-Type of the A-ASSOCIATE-RQ sub-item (PS3.7 Table D.3-14)."""

    USERNAME = 1
    USERNAME_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5


@dataclass(frozen=True, slots=True)
class TokenResult:
    """What a validator of Kerberos tickets, SAML assertions or JWTs found."""

    valid: bool
    username: str | None = None
    server_response: bytes = b""  # the Kerberos server ticket / SAML response, if any
    reason: str = ""


# A validator gets the primary field (the ticket, assertion or token) and says who it is.
TokenValidator = Callable[[bytes], TokenResult]


@dataclass(frozen=True, slots=True)
class IdentityDecision:
    """Accept or reject the association on its user identity. ``response`` is what to put in
    ``AssociationRequest.user_identity_response`` (None: send no User Identity AC sub-item);
    ``reject`` is the A-ASSOCIATE-RJ when not accepted."""

    accepted: bool
    reason: str
    identity_type: int | None = None
    username: str | None = None  # printable, at most 64 characters; for logs, rules, audit
    verified: bool = False
    response: bytes | None = None
    reject: RejectAnswer | None = None


def _refuse(
    reason: str, identity_type: int | None, username: str | None = None
) -> IdentityDecision:
    return IdentityDecision(False, reason, identity_type, username, reject=REJECT_AUTHENTICATION)


def decide_identity(
    identity: UserIdentityRQ | None,
    users: Mapping[str, PasswordHash],
    *,
    require: bool = False,
    accept_username_only: bool = False,
    validators: Mapping[int, TokenValidator] | None = None,
) -> IdentityDecision:
    """The acceptor's decision on a user identity sub-item.

    - No users, no validators and not ``require``: identities are not checked (the node does
      not do user identity negotiation; PS3.7 D.3.3.7 lets it ignore the sub-item).
    - A presented credential that fails (unknown user, wrong passcode, invalid token) is
      rejected even when identities are not required: a peer that tried to log in and failed
      is not silently let in as anonymous.
    - Username only (type 1) proves nothing; it is accepted only with
      ``accept_username_only`` (the Basic User Identity profile, PS3.15 B.4), else rejected
      when ``require`` and ignored otherwise.
    - Kerberos, SAML and JWT (types 3-5) need a validator for their type; without one they are
      rejected when ``require`` and ignored otherwise.
    """
    validators = validators or {}
    enabled = bool(users) or bool(validators) or require
    if identity is None:
        if require:
            return _refuse("no user identity was sent and one is required", None)
        return IdentityDecision(True, "no user identity")
    kind = identity.identity_type
    if not enabled:
        return IdentityDecision(True, "user identities are not checked", kind)

    def accepted(username: str | None, reason: str, response: bytes = b"") -> IdentityDecision:
        # D.3.3.7.2: answer with the AC sub-item only when the requestor asked for it.
        answer = response if identity.positive_response_requested else None
        return IdentityDecision(True, reason, kind, username, True, answer)

    def ignored(reason: str) -> IdentityDecision:
        if require:
            return _refuse(reason, kind)
        return IdentityDecision(True, f"{reason}; identity ignored", kind)

    if kind in (IdentityType.USERNAME, IdentityType.USERNAME_PASSCODE):
        try:
            name = bytes(identity.primary_field).decode("utf-8")
        except UnicodeDecodeError:
            return _refuse("the username is not UTF-8", kind, printable(identity.primary_field))
        shown = printable(name)
        if kind == IdentityType.USERNAME:
            if accept_username_only and name in users:
                return accepted(shown, f"user {shown!r} (username only, not verified)")
            if accept_username_only:
                return _refuse(f"unknown user {shown!r}", kind, shown)
            return ignored(f"user {shown!r} sent no passcode, which cannot be verified")
        passcode = bytes(identity.secondary_field)
        stored = users.get(name)
        if stored is None:
            _burn(passcode, next(iter(users.values()), None))
            return _refuse(f"unknown user {shown!r}", kind, shown)
        if not stored.verify(passcode):  # an empty passcode costs the same work
            return _refuse(f"wrong passcode for user {shown!r}", kind, shown)
        return accepted(shown, f"user {shown!r} authenticated")

    validator = validators.get(kind)
    label = _TYPE_NAMES.get(kind, f"user identity type {kind}")
    if validator is None:
        return ignored(f"{label} cannot be validated here")
    try:
        result = validator(bytes(identity.primary_field))
    except Exception as exc:  # a validator's bug must not take the server down
        return _refuse(f"{label} validation failed: {type(exc).__name__}", kind)
    shown_user = printable(result.username) if result.username is not None else None
    if not result.valid:
        detail = f": {printable(result.reason, 120)}" if result.reason else ""
        return _refuse(f"{label} is not valid{detail}", kind, shown_user)
    return accepted(
        shown_user,
        f"{label} of {shown_user or 'an unnamed user'} validated",
        result.server_response,
    )


_TYPE_NAMES: dict[int, str] = {
    IdentityType.KERBEROS: "Kerberos service ticket",
    IdentityType.SAML: "SAML assertion",
    IdentityType.JWT: "JSON web token",
}
