"""C-FIND key matching (PS3.4 §C.2.2.2), as a Python predicate and as an SQLite WHERE fragment.

One job: decide whether a stored attribute value matches a query key value. ``matches`` answers
in Python; ``to_sql`` writes the same decision as an SQL fragment over a column that holds
``column_value(vr, stored)``. Both are built from one parsed form of the query (``compile_query``),
so they cannot disagree.

Rules (the first that applies wins):

- Universal Matching (§C.2.2.2.3): a zero-length (or all-space) key matches every entity, so does
  a key made only of ``*`` (§C.2.2.2.4 note: ``*`` is equivalent to Universal Matching; accepted
  for every VR, because SCUs send ``*`` for UIDs too).
- Unknown values (§C.2.2.1.1): an entity whose value is zero length matches every key
  (``match_unknown=True``, the default; pass ``False`` for the stricter answer). The index applies
  it to every key it stores, required or optional.
- Lists: a key with several values (backslash-delimited) matches when any value matches (empty
  items are ignored). For UI
  this is List of UID Matching (§C.2.2.2.2) and becomes ``IN (...)``; for the other VRs
  (where PS3.4 leaves multiple values undefined without Extended Negotiation) it is the same OR.
  LT, ST, UT and UR are single-valued: a backslash in them is text.
- Range Matching (§C.2.2.2.5) for DA, TM, DT: ``a-b``, ``a-``, ``-b``, inclusive. Partial precision
  counts as the whole interval it names: the TM key ``1030-`` starts at 10:30:00.000000 and
  ``-1030`` ends at 10:30:59.999999; a single TM or DT value is that interval too (a single DA is
  one day). TM allows fractions; stored partial TM values compare as their first instant. Ranges
  that cross midnight match nothing (§C.2.2.2.5.2). DT with a UTC offset is compared in UTC; DT
  without one is taken as UTC (the SCP's local zone is not consulted).
- Wild Card Matching (§C.2.2.2.4) for AE, CS, LO, LT, PN, SH, ST, UC, UR, UT: ``*`` is any sequence,
  ``?`` any one character; ``*`` and ``?`` are always wild cards there. SQL uses GLOB with
  ``[`` ``*`` ``?`` escaped as ``[[]`` ``[*]`` ``[?]``.
- Single Value Matching (§C.2.2.2.1) otherwise: exact and case-sensitive after the insignificant
  padding of the VR (PS3.5 §6.2) is removed. IS compares as integers, DS as numbers.
- PN (§C.2.2.2.1, §C.2.2.2.4 leave PN to the implementation): case- and accent-insensitive
  (NFKD, diacritics U+0300-U+036F dropped, casefold), trailing empty components and groups ignored
  (``Doe^John^^`` equals ``Doe^John``), and a key matches the stored value or the stored value with
  trailing component groups removed, so ``Yamada^Tarou`` matches ``Yamada^Tarou=山田^太郎``.
  The index keeps this folded form in a separate column and returns the original.

Not covered: Sequence Matching (§C.2.2.2.6), Empty Value Matching with ``""`` (§C.2.2.2.7),
Multiple Value Matching by Extended Negotiation (§C.2.2.2.8), combined DA+TM datetime matching
(§C.2.2.2.5.4, Extended Negotiation), fuzzy semantic PN matching, Timezone Offset From UTC
(0008,0201) in the key. A backslash inside a stored value splits it into values for ``matches``;
``to_sql`` expects single-valued columns.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from dicomnet.errors import DicomNetError

__all__ = [
    "QueryError",
    "WILDCARD_VRS",
    "RANGE_VRS",
    "Exact",
    "Pattern",
    "Range",
    "CompiledKey",
    "compile_query",
    "column_value",
    "key_matches",
    "matches",
    "to_sql",
]


class QueryError(DicomNetError, ValueError):
    """A C-FIND/C-MOVE/C-GET key or identifier that cannot be matched (bad value, bad level)."""


#: VRs on which ``*`` and ``?`` are wild cards (PS3.4 §C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: VRs with Range Matching (PS3.4 §C.2.2.2.5).
RANGE_VRS = frozenset({"DA", "TM", "DT"})
# Single-valued VRs: a backslash is an ordinary character (PS3.5 §6.4).
_SINGLE_VALUED_VRS = frozenset({"LT", "ST", "UT", "UR"})
# VRs whose leading spaces are insignificant too (PS3.5 Table 6.2-1); the others lose trailing only.
_STRIP_BOTH_VRS = frozenset({"AE", "AS", "CS", "DS", "IS", "LO", "SH"})

_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_DA_RE = re.compile(r"^\d{8}$")
_TM_RE = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_DT_RE = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$"
)


# --- the parsed form of a key --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exact:
    """Single Value Matching against ``value`` (already in ``column_value`` form).

    ``group_prefix`` (PN): the stored value may also have trailing component groups.
    """

    value: str
    group_prefix: bool = False


@dataclass(frozen=True, slots=True)
class Pattern:
    """Wild Card Matching: ``parts`` are literal text (``column_value`` form), ``*`` and ``?``."""

    parts: tuple[str, ...]
    group_prefix: bool = False

    def regex(self) -> re.Pattern[str]:
        out = []
        for part in self.parts:
            if part == "*":
                out.append(".*")
            elif part == "?":
                out.append(".")
            else:
                out.append(re.escape(part))
        tail = "(?:=.*)?" if self.group_prefix else ""
        return re.compile("".join(out) + tail, re.DOTALL)

    def glob(self) -> str:
        out = []
        for part in self.parts:
            if part in ("*", "?"):
                out.append(part)
            else:
                out.append(_glob_escape(part))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Range:
    """Range Matching: ``low <= stored <= high``; ``None`` is an open end (strings compare)."""

    low: str | None
    high: str | None


Alternative = Exact | Pattern | Range


@dataclass(frozen=True, slots=True)
class CompiledKey:
    """A parsed key: ``universal`` or any of ``alternatives`` (OR)."""

    vr: str
    universal: bool
    alternatives: tuple[Alternative, ...]


# --- public API ----------------------------------------------------------------------------------


def matches(
    vr: str, query_value: str, stored_value: str | None, *, match_unknown: bool = True
) -> bool:
    """Whether ``stored_value`` (as in the data set) matches the C-FIND key ``query_value``."""
    return key_matches(compile_query(vr, query_value), stored_value, match_unknown=match_unknown)


def key_matches(key: CompiledKey, stored_value: str | None, *, match_unknown: bool = True) -> bool:
    """``matches`` with a key compiled once by ``compile_query``, for many stored values."""
    if key.universal:
        return True
    stored = _stored_values(key.vr, stored_value)
    if not stored:
        return match_unknown
    return any(_alternative_matches(alt, s) for alt in key.alternatives for s in stored)


def to_sql(
    column: str, vr: str, query_value: str, *, match_unknown: bool = True
) -> tuple[str, list[object]]:
    """An SQLite WHERE fragment (with ``?`` parameters) giving ``matches``'s answer.

    ``column`` must hold ``column_value(vr, stored)`` (NULL for zero length) of a single-valued
    attribute. Universal Matching gives ``("1", [])``.
    """
    if not _COLUMN_RE.match(column):
        raise ValueError(f"not an SQL column name: {column!r}")
    key = compile_query(vr, query_value)
    if key.universal:
        return "1", []
    terms: list[str] = []
    params: list[object] = []
    plain: list[str] = []
    for alt in key.alternatives:
        if isinstance(alt, Exact) and not alt.group_prefix:
            plain.append(alt.value)
        elif isinstance(alt, Exact):
            terms.append(f"{column} = ? OR {column} GLOB ?")
            params += [alt.value, _glob_escape(alt.value) + "=*"]
        elif isinstance(alt, Pattern):
            glob = alt.glob()
            if alt.group_prefix:
                terms.append(f"{column} GLOB ? OR {column} GLOB ?")
                params += [glob, glob + "=*"]
            else:
                terms.append(f"{column} GLOB ?")
                params.append(glob)
        else:
            conds = []
            if alt.low is not None:
                conds.append(f"{column} >= ?")
                params.append(alt.low)
            if alt.high is not None:
                conds.append(f"{column} <= ?")
                params.append(alt.high)
            terms.append(" AND ".join(conds) if conds else f"{column} IS NOT NULL")
    if plain:
        unique = list(dict.fromkeys(plain))
        if len(unique) == 1:
            terms.insert(0, f"{column} = ?")
        else:
            terms.insert(0, f"{column} IN ({', '.join('?' * len(unique))})")
        params[0:0] = unique
    body = " OR ".join(f"({t})" if " OR " in t or " AND " in t else t for t in terms)
    if match_unknown:
        return f"({column} IS NULL OR {body})", params
    return f"({body})", params


def column_value(vr: str, value: str | None) -> str | None:
    """The form a stored single value takes for comparison (and in the SQL column); None if empty.

    Padding is removed; PN is folded (case, accents, trailing empty components); TM becomes
    ``HHMMSS.FFFFFF``; DT becomes ``YYYYMMDDHHMMSS.FFFFFF`` in UTC; IS and DS are canonical numbers.
    Values that do not parse keep their text, and then compare as text.
    """
    if value is None:
        return None
    vr = vr.upper()
    text = _strip(vr, value)
    if not text:
        return None
    if vr == "PN":
        return _fold(_pn_trim(text)) or None
    if vr == "DA":
        return text.replace(".", "") if len(text) == 10 and text[4] == "." else text
    if vr == "TM":
        return _tm_bound(text.replace(":", ""), high=False) or text
    if vr == "DT":
        return _dt_bound(text, high=False) or text
    if vr == "IS":
        try:
            return str(int(text))
        except ValueError:
            return text
    if vr == "DS":
        return _ds_canonical(text)
    return text


def compile_query(vr: str, query_value: str) -> CompiledKey:
    """Parse a key value into the form ``matches`` and ``to_sql`` share; QueryError if invalid."""
    vr = vr.upper()
    if vr == "SQ":
        raise QueryError("Sequence Matching (PS3.4 §C.2.2.2.6) is not supported")
    raw_values = [query_value] if vr in _SINGLE_VALUED_VRS else query_value.split("\\")
    alternatives: list[Alternative] = []
    for raw in raw_values:
        text = _strip(vr, raw)
        if not text or (vr == "PN" and not _pn_trim(text)):
            continue  # an empty item of a list adds nothing; an empty key is universal (below)
        if set(text) == {"*"}:
            return CompiledKey(vr, True, ())
        alternatives.append(_compile_one(vr, text))
    return CompiledKey(vr, not alternatives, tuple(alternatives))


# --- parsing one value ---------------------------------------------------------------------------


def _compile_one(vr: str, text: str) -> Alternative:
    if vr in RANGE_VRS:
        return _compile_range(vr, text)
    pn = vr == "PN"
    if vr in WILDCARD_VRS and ("*" in text or "?" in text):
        if pn:
            text = _pn_trim(text)
        parts: list[str] = []
        for token in re.split(r"([*?])", text):
            if token in ("*", "?"):
                if not (token == "*" and parts and parts[-1] == "*"):
                    parts.append(token)
            elif token:
                parts.append(_fold(token) if pn else token)
        return Pattern(tuple(parts), group_prefix=pn)
    value = column_value(vr, text)
    assert value is not None  # ``text`` is not empty after stripping
    return Exact(value, group_prefix=pn)


def _compile_range(vr: str, text: str) -> Alternative:
    if vr == "DA":
        if "-" not in text:
            return Exact(_da_key(text))
        low, _, high = text.partition("-")
        if "-" in high:
            raise QueryError(f"DA range {text!r} has more than one '-'")
        return Range(_da_key(low) if low else None, _da_key(high) if high else None)
    if vr == "TM":
        if "-" not in text:
            return Range(_tm_key(text, high=False), _tm_key(text, high=True))
        low, _, high = text.partition("-")
        if "-" in high:
            raise QueryError(f"TM range {text!r} has more than one '-'")
        return Range(
            _tm_key(low, high=False) if low else None, _tm_key(high, high=True) if high else None
        )
    # DT: '-' is also the sign of a UTC offset; a whole value that parses is a single value,
    # otherwise the first '-' that leaves two valid (or empty) ends splits the range.
    if _DT_RE.match(text):
        return Range(_dt_key(text, high=False), _dt_key(text, high=True))
    for i, char in enumerate(text):
        if char != "-":
            continue
        low, high = text[:i], text[i + 1 :]
        if (not low or _DT_RE.match(low)) and (not high or _DT_RE.match(high)):
            return Range(
                _dt_key(low, high=False) if low else None,
                _dt_key(high, high=True) if high else None,
            )
    raise QueryError(f"not a DT value or range: {text!r}")


def _da_key(text: str) -> str:
    if len(text) == 10 and text[4] == "." and text[7] == ".":  # ACR-NEMA yyyy.mm.dd
        text = text.replace(".", "")
    if not _DA_RE.match(text):
        raise QueryError(f"not a DA value: {text!r} (expected YYYYMMDD)")
    return text


def _tm_key(text: str, *, high: bool) -> str:
    key = _tm_bound(text.replace(":", ""), high=high)
    if key is None:
        raise QueryError(f"not a TM value: {text!r} (expected HH[MM[SS[.F{{1,6}}]]])")
    return key


def _dt_key(text: str, *, high: bool) -> str:
    key = _dt_bound(text, high=high)
    if key is None:
        raise QueryError(f"not a DT value: {text!r}")
    return key


def _tm_bound(text: str, *, high: bool) -> str | None:
    """``HHMMSS.FFFFFF`` for a partial TM: its first instant, or with ``high`` its last."""
    m = _TM_RE.match(text)
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    fill = "9" if high else "0"
    if mm is None:
        mm, ss = ("59", "59") if high else ("00", "00")
    elif ss is None:
        ss = "59" if high else "00"
    frac = (frac or "").ljust(6, fill) if (frac or high) else "000000"
    return f"{hh}{mm}{ss}.{frac}"


def _dt_bound(text: str, *, high: bool) -> str | None:
    """``YYYYMMDDHHMMSS.FFFFFF`` (UTC when an offset is given) for the first/last instant of DT."""
    m = _DT_RE.match(text)
    if m is None:
        return None
    year_s, month_s, day_s, hour_s, minute_s, second_s, frac_s, offset_s = m.groups()
    try:
        year = int(year_s)
        month = int(month_s or ("12" if high else "01"))
        last_day = calendar.monthrange(year, month)[1]
        day = int(day_s) if day_s else (last_day if high else 1)
        hour = int(hour_s or ("23" if high else "00"))
        minute = int(minute_s or ("59" if high else "00"))
        second = min(int(second_s or ("59" if high else "00")), 59)  # a leap second counts as :59
        micro = int((frac_s or "").ljust(6, "9" if high else "0"))
        moment = _dt.datetime(year, month, day, hour, minute, second, micro)
        if offset_s:
            offset = _dt.timedelta(hours=int(offset_s[1:3]), minutes=int(offset_s[3:5]))
            moment = moment + offset if offset_s[0] == "-" else moment - offset
    except (ValueError, OverflowError):
        return None
    return moment.strftime("%Y%m%d%H%M%S.%f").rjust(21, "0")


def _ds_canonical(text: str) -> str:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    if not number.is_finite():
        return text
    normal = number.normalize()
    if normal == 0:
        return "0"
    return format(normal, "f")


# --- PN and padding ------------------------------------------------------------------------------


def _strip(vr: str, text: str) -> str:
    if vr == "UI":
        return text.strip("\x00 ")
    if vr in _STRIP_BOTH_VRS:
        return text.strip(" ")
    return text.rstrip(" \x00")


def _pn_trim(text: str) -> str:
    """Drop trailing empty components of each group and trailing empty groups (PS3.5 §6.2.1)."""
    groups = [g.rstrip(" ").rstrip("^") for g in text.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _fold(text: str) -> str:
    """Case- and accent-insensitive form for PN comparison.

    Compatibility forms are unified (NFKD: half-width kana, ligatures), Latin/Greek/Cyrillic
    diacritics (U+0300-U+036F) dropped, other marks recomposed (kana voicing stays), then casefold.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not "\u0300" <= c <= "\u036f")
    return unicodedata.normalize("NFC", bare).casefold()


def _glob_escape(text: str) -> str:
    return re.sub(r"([\[*?])", r"[\1]", text)


# --- Python matching -----------------------------------------------------------------------------


def _stored_values(vr: str, stored: str | None) -> list[str]:
    if stored is None:
        return []
    pieces = [stored] if vr in _SINGLE_VALUED_VRS else stored.split("\\")
    out = []
    for piece in pieces:
        value = column_value(vr, piece)
        if value is not None:
            out.append(value)
    return out


def _alternative_matches(alt: Alternative, stored: str) -> bool:
    if isinstance(alt, Exact):
        return stored == alt.value or (alt.group_prefix and stored.startswith(alt.value + "="))
    if isinstance(alt, Pattern):
        return alt.regex().fullmatch(stored) is not None
    if alt.low is not None and stored < alt.low:
        return False
    return not (alt.high is not None and stored > alt.high)
