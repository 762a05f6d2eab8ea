"""Accept header parsing and DICOMweb media type negotiation (PS3.18 §8.7, RFC 9110 §12.5.1).

One job: turn an ``Accept`` value (or the ``accept`` query parameter) into an ordered list of
what the client takes, and say which media types and transfer syntaxes go together (PS3.18
Table 8.7.3-2 and -5). Pure functions, no I/O.

Rules:

- Ranges are ordered by q-value (stable: equal q keeps the client's order); ``q=0`` means "not
  acceptable" and drops the range. At most ``MAX_RANGES`` ranges are read; a range that does not
  parse is ignored (the answer is then 406 if nothing else is acceptable, never a 500).
- Parameters may be quoted or not (OHIF sends ``type=application/octet-stream`` unquoted); a
  quoted ``type`` that carries its own ``transfer-syntax`` (Orthanc's
  ``type="application/octet-stream; transfer-syntax=*"``) is split into two parameters.
- No Accept at all is ``*/*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DICOM_JSON",
    "EXPLICIT_VR_LE",
    "MAX_RANGES",
    "MediaRange",
    "Want",
    "media_type_for",
    "parse_accept",
    "syntaxes_for",
    "wants",
]

DICOM_JSON = "application/dicom+json"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
MAX_RANGES = 200

#: The media type of a frame or bulk value in each transfer syntax (PS3.18 Table 8.7.3-5).
_NATIVE_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2": "application/octet-stream",
    "1.2.840.10008.1.2.1": "application/octet-stream",
    "1.2.840.10008.1.2.2": "application/octet-stream",
    "1.2.840.10008.1.2.1.99": "application/octet-stream",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
#: The transfer syntax a media type means when the request names none (PS3.18 Table 8.7.3-5).
_DEFAULT_SYNTAX: dict[str, str] = {
    "application/octet-stream": EXPLICIT_VR_LE,
    "application/dicom": EXPLICIT_VR_LE,
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "video/mpeg": "1.2.840.10008.1.2.4.100",
    "video/mp4": "1.2.840.10008.1.2.4.102",
    "video/h265": "1.2.840.10008.1.2.4.107",
}
_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


def media_type_for(transfer_syntax: str) -> str:
    """The media type of a frame/bulk value in ``transfer_syntax`` (octet-stream if unknown)."""
    return _NATIVE_TYPES.get(transfer_syntax, "application/octet-stream")


def syntaxes_for(media_type: str) -> frozenset[str]:
    """Transfer syntaxes whose frames are of ``media_type`` (empty for unknown types)."""
    media_type = _ALIASES.get(media_type.lower(), media_type.lower())
    return frozenset(ts for ts, mt in _NATIVE_TYPES.items() if mt.lower() == media_type)


def default_syntax(media_type: str) -> str | None:
    return _DEFAULT_SYNTAX.get(media_type.lower())


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One ``type/subtype; params`` of an Accept value; names and parameter keys lowercase."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        """Whether this range (maybe ``*/*`` or ``image/*``) admits ``media_type``."""
        main, _, sub = self.type.partition("/")
        other_main, _, other_sub = media_type.lower().partition("/")
        return (main == "*" or main == other_main) and (sub == "*" or sub == other_sub)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (a backslash escapes inside quotes)."""
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for ch in inner:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return value


def _token_ok(text: str) -> bool:
    return bool(text) and all(c.isascii() and (c.isalnum() or c in "!#$&-^_.+*") for c in text)


def parse_media_type(text: str) -> MediaRange | None:
    """Parse ``type/subtype; a=b; c="d"`` (q is read too); None if it does not parse."""
    pieces = _split(text, ";")
    kind = pieces[0].strip().lower()
    main, slash, sub = kind.partition("/")
    if not slash or not _token_ok(main) or not _token_ok(sub):
        return None
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        if not piece.strip():
            continue
        key, eq, value = piece.partition("=")
        key = key.strip().lower()
        if not eq or not _token_ok(key):
            return None
        value = _unquote(value)
        if key == "q":
            try:
                q = float(value)
            except ValueError:
                return None
            if not 0.0 <= q <= 1.0:
                return None
            continue
        params.setdefault(key, value)
    inner_type = params.get("type")
    if inner_type is not None and ";" in inner_type:
        # Orthanc's form: type="application/octet-stream; transfer-syntax=*"
        inner = parse_media_type(inner_type)
        if inner is None:
            return None
        params["type"] = inner.type
        for key, value in inner.params.items():
            params.setdefault(key, value)
    elif inner_type is not None:
        params["type"] = inner_type.strip().lower()
    return MediaRange(kind, params, q)


def parse_accept(value: str | None) -> list[MediaRange]:
    """The acceptable ranges of an Accept value, best first; ``*/*`` when there is none."""
    if value is None or not value.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for piece in _split(value, ",")[:MAX_RANGES]:
        if not piece.strip():
            continue
        parsed = parse_media_type(piece)
        if parsed is not None and parsed.q > 0:
            ranges.append(parsed)
    ranges.sort(key=lambda r: -r.q)  # stable
    return ranges


def accepts(ranges: list[MediaRange], *media_types: str) -> str | None:
    """The first of ``media_types`` (the server's preference order among equals) that the best
    matching range admits, or None."""
    for rng in ranges:
        for media_type in media_types:
            if rng.matches(media_type):
                return media_type
    return None


@dataclass(frozen=True, slots=True)
class Want:
    """One acceptable form of a retrieve answer: multipart or a single part, the part's media
    type (may be a wildcard such as ``*/*``), and the transfer syntax (a UID, ``*`` for as
    stored, None for the media type's default)."""

    multipart: bool
    part_type: str
    transfer_syntax: str | None


def wants(ranges: list[MediaRange], part_types: tuple[str, ...]) -> list[Want]:
    """What the client takes for a resource whose parts may be any of ``part_types`` (the first
    is the default ``type`` of a ``multipart/related`` without one), best first."""
    out: list[Want] = []
    default = part_types[0]
    for rng in ranges:
        ts = rng.params.get("transfer-syntax")
        if rng.type in ("multipart/related", "multipart/*"):
            part = rng.params.get("type", default)
            part = _ALIASES.get(part, part)
            if any(MediaRange(part).matches(t) or MediaRange(t).matches(part) for t in part_types):
                out.append(Want(True, part, ts))
        elif rng.type == "*/*":
            out.append(Want(True, "*/*", ts or "*"))
            out.append(Want(False, "*/*", ts or "*"))
        else:
            part = _ALIASES.get(rng.type, rng.type)
            if any(rng.matches(t) or MediaRange(t).matches(part) for t in part_types):
                out.append(Want(False, part, ts))
    return out
