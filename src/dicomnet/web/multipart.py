"""multipart/related (RFC 2387 over RFC 2046 §5.1) for DICOMweb: a streaming parser for STOW-RS
bodies and the framing of multipart answers.

One job: bytes in, parts out, without holding a body in memory; no I/O (the parser is fed
chunks, h11 style). Rules:

- Parser: the preamble before the first delimiter (dicomweb-client sends a CRLF there) and the
  epilogue after the close delimiter (dicomweb-client JS pads it with NUL bytes) are ignored;
  a delimiter may be followed by transport padding (spaces, tabs) before its CRLF. A body
  without its close delimiter is an error when the input ends (a truncated upload must not
  store its last part as if it were whole). Limits: boundary 1-70 characters (RFC 2046),
  bytes of one part's headers, number of parts; every violation is ``MultipartError``.
- Part data is handed out as soon as it cannot be the start of a delimiter (the last
  ``len(delimiter)`` bytes are held back), so memory stays at one chunk plus the delimiter.
- Writer: a random boundary per answer (never a fixed one), CRLF everywhere, ``Content-Type``
  spelled so on every part (cornerstone reads that exact header name).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "MultipartError",
    "MultipartLimitError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "boundary_from",
    "new_boundary",
    "part_header",
    "closing",
]


class MultipartError(ValueError):
    """The body is not a well-formed multipart body, or breaks a limit."""


class MultipartLimitError(MultipartError):
    """The body breaks a limit (parts, header bytes): too large rather than malformed."""


def new_boundary() -> str:
    """A random boundary (32 hex digits, well under RFC 2046's 70)."""
    return secrets.token_hex(16)


def part_header(
    boundary: str,
    content_type: str,
    extra: Iterable[tuple[str, str]] = (),
    *,
    first: bool = False,
) -> bytes:
    """The delimiter and headers that open a part (``first``: no CRLF before the delimiter)."""
    lines = [f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in extra]
    head = "" if first else "\r\n"
    return (head + f"--{boundary}\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    """The close delimiter after the last part."""
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


_BCHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")


def boundary_from(params: dict[str, str]) -> str:
    """The boundary of a ``multipart/related`` Content-Type's (unquoted) parameters."""
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("multipart/related without a boundary parameter")
    if not 1 <= len(boundary) <= 70 or boundary.endswith(" "):
        raise MultipartError("the boundary must be 1 to 70 characters (RFC 2046 §5.1.1)")
    if not set(boundary) <= _BCHARS:
        raise MultipartError("the boundary has characters RFC 2046 §5.1.1 does not allow")
    return boundary


@dataclass(slots=True)
class PartStart:
    """A part begins; ``headers`` maps lowercase names to values (the first of repeats)."""

    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PartData:
    data: bytes


@dataclass(slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)


class MultipartParser:
    """Feed body bytes with ``feed``; it returns events. ``close()`` at the end of the input
    checks that the close delimiter was seen."""

    def __init__(self, boundary: str, *, max_header_bytes: int = 16384,
                 max_parts: int = 10000) -> None:  # fmt: skip
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._max_header = max_header_bytes
        self._max_parts = max_parts
        self._buffer = bytearray(b"\r\n")  # the first delimiter may open the body
        self._state = _PREAMBLE
        self.parts = 0
        self.done = False

    def feed(self, data: bytes) -> list[Event]:
        if self._state == _EPILOGUE:
            return []
        self._buffer += data
        events: list[Event] = []
        buf = self._buffer
        dlen = len(self._delimiter)
        while True:
            if self._state == _PREAMBLE:
                at = buf.find(self._delimiter)
                if at < 0:
                    # keep only what could start a delimiter; bound the preamble's memory
                    keep = max(len(buf) - dlen + 1, 0)
                    del buf[:keep]
                    break
                del buf[: at + dlen]
                self._state = _AFTER_DELIMITER
            elif self._state == _AFTER_DELIMITER:
                if len(buf) < 2:
                    break
                if buf[:2] == b"--":
                    self._state = _EPILOGUE
                    self.done = True
                    buf.clear()
                    break
                end = buf.find(b"\r\n")
                if end < 0:
                    if buf.strip(b" \t\r") or len(buf) > 1024:
                        raise MultipartError(
                            "a boundary delimiter must be followed by CRLF or '--'"
                        )
                    break
                if buf[:end].strip(b" \t"):
                    raise MultipartError("a boundary delimiter must be followed by CRLF or '--'")
                del buf[: end + 2]
                self.parts += 1
                if self.parts > self._max_parts:
                    raise MultipartLimitError(f"more than {self._max_parts} parts")
                self._state = _HEADERS
            elif self._state == _HEADERS:
                if buf[:2] == b"\r\n":  # no headers at all
                    del buf[:2]
                    events.append(PartStart({}))
                    self._state = _BODY
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > self._max_header:
                        raise MultipartLimitError(
                            f"part headers longer than {self._max_header} bytes"
                        )
                    break
                if end > self._max_header:
                    raise MultipartLimitError(f"part headers longer than {self._max_header} bytes")
                events.append(PartStart(_parse_headers(bytes(buf[:end]))))
                del buf[: end + 4]
                self._state = _BODY
            else:  # _BODY
                at = buf.find(self._delimiter)
                if at < 0:
                    safe = len(buf) - dlen + 1
                    if safe > 0:
                        events.append(PartData(bytes(buf[:safe])))
                        del buf[:safe]
                    break
                if at:
                    events.append(PartData(bytes(buf[:at])))
                events.append(PartEnd())
                del buf[: at + dlen]
                self._state = _AFTER_DELIMITER
        return events

    def close(self) -> None:
        """The input ended: MultipartError unless the close delimiter was seen."""
        if not self.done:
            if self.parts == 0:
                raise MultipartError("no part delimited by the boundary in the body")
            raise MultipartError("the body ends before its close delimiter (truncated)")


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    text = raw.decode("latin-1")
    lines: list[str] = []
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:  # obsolete folding (RFC 5322 §2.2.3)
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers.setdefault(name.lower(), value.strip())
    return headers
