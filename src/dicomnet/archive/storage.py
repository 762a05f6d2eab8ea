"""Where a received instance goes: a layout of UIDs under a root, checked so that nothing a peer
sends can name a path outside the root.

Rules: every path component comes from a value that is a valid UID (PS3.5 §9.1: digits and dots,
at most 64 characters), which cannot contain a separator or be ``..``; anything else is refused
with ``UnsafePathError``. The file itself is moved into place by the caller (a rename).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path

from dicomnet.errors import DicomNetError
from dicomnet.uids import is_valid_uid

DEFAULT_LAYOUT = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"


class UnsafePathError(DicomNetError):
    """A value that would not make a safe path component (not a valid UID)."""


def layout_keys(layout: str) -> list[str]:
    """The attribute keywords a layout uses, e.g. ``["StudyInstanceUID", ...]``."""
    keys = [name for _, name, _, _ in string.Formatter().parse(layout) if name]
    if not keys:
        raise ValueError(f"storage layout {layout!r} names no attribute")
    return keys


def instance_path(root: Path, layout: str, values: Mapping[str, object]) -> Path:
    """The path of an instance under ``root`` for ``layout``, refusing any value that is not a
    valid UID and any result outside ``root``."""
    clean: dict[str, str] = {}
    for key in layout_keys(layout):
        value = values.get(key)
        text = "" if value is None else str(value).strip().rstrip("\x00")
        if not is_valid_uid(text):
            raise UnsafePathError(f"{key} {text!r} is not a valid UID; not stored")
        clean[key] = text
    relative = Path(layout.format(**clean))
    # Every substituted value is a UID (digits and dots, never "..", no separator), so the
    # layout's own text decides whether the path can leave the root: check that.
    if relative.is_absolute() or ".." in relative.parts:
        raise UnsafePathError(f"layout {layout!r} gives a path outside the storage folder")
    return root / relative
