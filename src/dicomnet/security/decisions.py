"""The answers every security decision returns: allowed, or refused with a reason and the
standard's way of saying no.

Rules: a refusal at association time carries an A-ASSOCIATE-RJ result/source/reason (PS3.8
Table 9-21); a refusal of one request carries a DIMSE status (PS3.7 Annex C, PS3.4). The reason
is a sentence for the log and the audit record; it never holds a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from dicomnet.errors import DicomNetError
from dicomnet.pdu import (
    A_ASSOCIATE_RJ,
    RejectReason,
    RejectResult,
    RejectSource,
    reject_description,
)


class SecurityConfigError(DicomNetError):
    """A security table (users, permissions, limits, TLS files) that cannot be used as given;
    the message names the table and key, what was found and what was expected."""


class RequestRefused(DicomNetError):
    """A request refused before its handler ran (a C-STORE while its data set arrives: not
    authorized, too little free disk, too large): ``status`` is the answer, ``reason`` why."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RejectAnswer(NamedTuple):
    """The three fields of an A-ASSOCIATE-RJ (PS3.8 §9.3.4)."""

    result: int
    source: int
    reason: int

    def to_pdu(self) -> A_ASSOCIATE_RJ:
        return A_ASSOCIATE_RJ(self.result, self.source, self.reason)

    def describe(self) -> str:
        return reject_description(self.result, self.source, self.reason)


# A peer this node does not know, or one that does not match its rule (address, certificate):
# the service user does not recognise the calling AE title (PS3.8 Table 9-21, source 1 reason 3).
REJECT_CALLING_AE = RejectAnswer(
    RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLING_AE_NOT_RECOGNIZED
)
# A user identity that is missing, wrong or not allowed: PS3.7 D.3.3.7 asks for "rejected
# permanent", source "DICOM UL service-provider (ACSE related function)", no reason given.
REJECT_AUTHENTICATION = RejectAnswer(
    RejectResult.PERMANENT, RejectSource.SERVICE_PROVIDER_ACSE, RejectReason.NO_REASON
)
# Too many associations (in total or from one address): transient, the presentation layer's
# "local limit exceeded" (source 3 reason 2); the peer may try again later.
REJECT_LOCAL_LIMIT = RejectAnswer(
    RejectResult.TRANSIENT,
    RejectSource.SERVICE_PROVIDER_PRESENTATION,
    RejectReason.LOCAL_LIMIT_EXCEEDED,
)


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or refused, and why. A refusal has either ``reject`` (answer the association
    with this A-ASSOCIATE-RJ) or ``status`` (answer the request with this DIMSE status)."""

    allowed: bool
    reason: str
    reject: RejectAnswer | None = None
    status: int | None = None

    @classmethod
    def allow(cls, reason: str) -> Decision:
        return cls(True, reason)

    @classmethod
    def refuse_association(cls, reason: str, answer: RejectAnswer) -> Decision:
        return cls(False, reason, reject=answer)

    @classmethod
    def refuse_request(cls, reason: str, status: int) -> Decision:
        return cls(False, reason, status=status)


def printable(value: str | bytes, limit: int = 64) -> str:
    """A peer-supplied name made safe for one log line: decoded leniently, control characters
    escaped, cut at ``limit`` characters (a user identity field may be 65,531 bytes)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    cut = len(text) > limit
    text = text[:limit]
    safe = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return safe + ("..." if cut else "")
