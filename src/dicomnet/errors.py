"""dicomnet's exceptions: one base class, one subclass family per layer.

Protocol errors say whose fault it was (h11's split): ``RemoteProtocolError`` when the peer sent
something invalid (answered with an A-ABORT), ``LocalProtocolError`` when our own code asked for
something the protocol does not allow. This module imports nothing from dicomnet: every layer,
``pdu`` included, imports it (so the A-ASSOCIATE-RJ wording lives here, with the exception that
carries it).
"""

from __future__ import annotations

from collections.abc import Mapping


class DicomNetError(Exception):
    """Base class of every exception dicomnet raises."""


class PDUError(DicomNetError):
    """Malformed or unexpected upper layer bytes (PS3.8 §9.3); ``offset`` points into the PDU."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        if offset is not None:
            message = f"{message} (at byte offset {offset})"
        super().__init__(message)
        self.offset = offset


class RemoteProtocolError(DicomNetError):
    """The peer broke the protocol; the association is aborted with ``source``/``reason``."""

    def __init__(self, message: str, source: int = 2, reason: int = 0) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason


class LocalProtocolError(DicomNetError):
    """Our side asked for something the protocol does not allow in the current state."""


class NegotiationError(DicomNetError):
    """Association negotiation failed (no usable presentation context, bad parameters)."""


class DIMSEError(DicomNetError):
    """A malformed DIMSE command set or message (PS3.7). ``elements`` holds what could be read
    of the command set, so that a server can still answer it (message ID, command field)."""

    def __init__(self, message: str, elements: Mapping[int, object] | None = None) -> None:
        super().__init__(message)
        self.elements: dict[int, object] = dict(elements or {})

    @property
    def message_id(self) -> int | None:
        value = self.elements.get(0x00000110)
        return value if isinstance(value, int) else None

    @property
    def command_field(self) -> int | None:
        value = self.elements.get(0x00000100)
        return value if isinstance(value, int) else None


# A-ASSOCIATE-RJ source and reason values (PS3.8 Table 9-21); a reason means something only
# together with its source.
_REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_REJECT_SOURCES = {
    1: "the service user",
    2: "the service provider (ACSE)",
    3: "the service provider (presentation)",
}


def reject_description(result: int, source: int, reason: int) -> str:
    """A human sentence for an A-ASSOCIATE-RJ (PS3.8 Table 9-21)."""
    kind = {1: "permanent", 2: "transient"}.get(result, f"result {result}")
    who = _REJECT_SOURCES.get(source, f"source {source}")
    why = _REJECT_REASONS.get((source, reason), f"reason {reason}")
    return f"rejected ({kind}) by {who}: {why}"


class AssociationRejected(DicomNetError):
    """The peer answered A-ASSOCIATE-RJ (PS3.8 §9.3.4)."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(reject_description(result, source, reason))
        self.result = result
        self.source = source
        self.reason = reason


class AssociationAborted(DicomNetError):
    """The association was aborted (A-ABORT or A-P-ABORT, or the connection was lost)."""

    def __init__(self, message: str, source: int | None = None, reason: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason


class DicomTimeoutError(DicomNetError, TimeoutError):
    """A network, ARTIM or DIMSE timeout expired."""
