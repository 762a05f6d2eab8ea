"""Index values to the DICOM JSON model (PS3.18 Annex F), for QIDO-RS results and STOW answers.

One job: one attribute (keyword and the value the index returns: ``str`` with ``\\`` between
values, ``int``, ``list[str]`` or None) to ``{"vr": ..., "Value": [...]}`` under its 8-digit tag.
Rules (PS3.18 §F.2.2-F.2.5): an empty value has no "Value" member; PN values are objects with an
"Alphabetic" (and "Ideographic", "Phonetic") member; IS, DS, US, UL... are JSON numbers when
they parse as finite numbers (IS within 2^53), otherwise they keep their text rather than fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

__all__ = ["attribute", "dataset_json", "tag_of", "vr_of"]

_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_MAX_SAFE = 2**53


@cache
def tag_of(keyword: str) -> int | None:
    tag = tag_for_keyword(keyword)
    return None if tag is None else int(tag)


@cache
def vr_of(keyword: str) -> str:
    tag = tag_of(keyword)
    if tag is None:
        return "UN"
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]  # "US or SS" -> US


def _number(vr: str, text: str) -> int | float | str:
    text = text.strip()
    if vr in _INT_VRS:
        try:
            n = int(text)
        except ValueError:
            return text
        return n if abs(n) <= _MAX_SAFE else text
    try:
        f = float(text)
    except ValueError:
        return text
    if not math.isfinite(f):
        return text
    return int(f) if f.is_integer() and abs(f) <= _MAX_SAFE and "." not in text else f


def _values(vr: str, value: object) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int | float):
        return [value]
    items: Iterable[str]
    if isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        text = str(value)
        items = [text] if vr in _SINGLE_VALUED else text.split("\\")
    out: list[Any] = []
    for item in items:
        if vr == "PN":
            groups = item.split("=")
            pn = {"Alphabetic": groups[0]}
            if len(groups) > 1 and groups[1]:
                pn["Ideographic"] = groups[1]
            if len(groups) > 2 and groups[2]:
                pn["Phonetic"] = groups[2]
            out.append(pn)
        elif vr in _INT_VRS or vr in _FLOAT_VRS:
            out.append(_number(vr, item) if item.strip() else None)
        else:
            out.append(item)
    if all(v is None or v == "" for v in out):
        return []
    return out


def attribute(keyword: str, value: object, vr: str | None = None) -> tuple[str, dict[str, Any]]:
    """``("00100010", {"vr": "PN", "Value": [...]})`` for a keyword and an index value."""
    tag = tag_of(keyword)
    if tag is None:
        raise KeyError(keyword)
    vr = vr or vr_of(keyword)
    element: dict[str, Any] = {"vr": vr}
    values = _values(vr, value)
    if values:
        element["Value"] = values
    return f"{tag:08X}", element


def dataset_json(values: Mapping[str, object]) -> dict[str, Any]:
    """A DICOM JSON object from keyword -> index value, in tag order."""
    items = [attribute(k, v) for k, v in values.items() if tag_of(k) is not None]
    items.sort(key=lambda kv: kv[0])
    return dict(items)
