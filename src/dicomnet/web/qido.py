"""QIDO-RS (PS3.18 §10.6): query parameters to an index query, results to DICOM JSON.

One job: check a search's parameters and run it on the archive's index (``archive.index``,
whose matching is ``archive.matching``: PS3.4 §C.2.2.2 as parameterised SQL, so no value ever
becomes SQL text). Called in a worker thread; no HTTP here.

Rules:

- Keys are keywords (``PatientName``) or 8-digit tags (``00100010``); unknown names, private
  tags, sequence paths (``00081111.00081150``, Sequence Matching is not supported) and keys given
  twice are errors (400). ``includefield`` may repeat and hold comma lists; ``all`` returns
  every attribute the archive keeps for the level. ``limit`` (1.. , capped at the configured
  maximum with a warning), ``offset`` (0..) and ``fuzzymatching`` (true/false) appear once.
- UID lists may be separated by ``,`` or ``\\`` (List of UID Matching, PS3.4 §C.2.2.2.2).
- ``fuzzymatching=true`` turns a PN key without wild cards into word-prefix matching (any name
  component starting with the value, case- and accent-insensitive as all PN matching here).
- Keys the index does not keep are not matched; the answer says so in a ``Warning: 299``.
  Attributes asked for that the index does not keep are read from the instances' cached
  metadata (``archive.metadata``): the instance itself at instance level, the first instance
  of the series or study above (Rows, Columns, NumberOfFrames, SeriesDate, ...).
- Results come in the index's order (insertion order), so ``offset`` pages are stable; a
  result set larger than the limit adds a ``Warning: 299`` saying more can be requested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from pydicom.datadict import keyword_for_tag

from dicomnet.archive import index as _index_module
from dicomnet.archive.index import Index, QueryError
from dicomnet.archive.metadata import MetadataStore, with_base
from dicomnet.web.dicomjson import attribute, tag_of, vr_of

__all__ = ["QidoError", "QidoSearch", "parse_search", "run_search", "LEVEL_NAMES"]

#: The QIDO resource levels and the index's Query/Retrieve levels.
LEVEL_NAMES = {1: "STUDY", 2: "SERIES", 3: "IMAGE"}
_UNIQUE = {1: "StudyInstanceUID", 2: "SeriesInstanceUID", 3: "SOPInstanceUID"}
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_MAX_PARAMETERS = 500

# What the index keeps (its catalogue of keys, computed ones included) and at which level.
_INDEX_KEYS: dict[str, int] = {
    name: key.level for name, key in getattr(_index_module, "_KEYS", {}).items()
}
_INDEX_KEYS.update(
    {name: comp.level for name, comp in getattr(_index_module, "_COMPUTED", {}).items()}
)
_INDEX_KEYS.pop("AvailableTransferSyntaxUID", None)  # an index column, not an attribute to show

#: Attributes returned by default per level (PS3.18 Tables 10.6.3-3, -4, -5), as kept here.
DEFAULTS: dict[int, tuple[str, ...]] = {
    1: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    2: (
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    ),
    3: (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}
# Instance attributes the metadata table keeps as columns (no JSON parse needed).
_FRAGMENT_COLUMNS = {
    "Rows": "rows",
    "Columns": "columns",
    "BitsAllocated": "bits_allocated",
    "NumberOfFrames": "number_of_frames",
}


class QidoError(ValueError):
    """A search that cannot be answered as asked (HTTP 400)."""


@dataclass(slots=True)
class QidoSearch:
    """A checked search: level (1 study, 2 series, 3 instance), matching keys, what to return."""

    level: int
    relational: bool
    keys: dict[str, tuple[str, str]]
    include: list[str]
    include_all: bool = False
    limit: int = 1000
    offset: int = 0
    fuzzy: bool = False
    warnings: list[str] = field(default_factory=list)


def _keyword(name: str) -> str:
    """The keyword of a key given as keyword or tag; QidoError if it names no attribute."""
    if "." in name:
        raise QidoError(
            f"{name[:80]!r}: Sequence Matching (PS3.4 §C.2.2.2.6) is not supported by this server"
        )
    if _TAG_RE.match(name):
        tag = int(name, 16)
        if (tag >> 16) % 2 == 1:
            raise QidoError(f"{name}: private attributes cannot be searched or included")
        keyword = keyword_for_tag(tag)
        if not keyword:
            raise QidoError(f"{name}: not an attribute of the DICOM dictionary")
        return str(keyword)
    if tag_of(name) is None:
        raise QidoError(f"{name[:80]!r} is not an attribute keyword or tag")
    return name


def _fuzzy_pn(value: str) -> str:
    """Word-prefix alternatives for a PN value without wild cards (a ``\\`` list)."""
    if "*" in value or "?" in value or "\\" in value or not value.strip():
        return value
    v = value.strip()
    return "\\".join((f"{v}*", f"*^{v}*", f"* {v}*", f"*={v}*"))


_INT_RE = re.compile(r"^-?[0-9]{1,18}$")


def _integer(name: str, text: str, low: int) -> int:
    if not _INT_RE.match(text.strip()):
        raise QidoError(f"{name}={text[:40]!r} is not an integer of at most 18 digits")
    value = int(text.strip())
    if value < low:
        raise QidoError(f"{name} must be at least {low}, not {value}")
    return value


def parse_search(
    level: int,
    relational: bool,
    path_uids: dict[str, str],
    parameters: Sequence[tuple[str, str]],
    *,
    default_limit: int = 1000,
    max_limit: int = 10000,
) -> QidoSearch:
    """Check the query parameters (already percent-decoded) of a search at ``level``."""
    if len(parameters) > _MAX_PARAMETERS:
        raise QidoError(f"more than {_MAX_PARAMETERS} query parameters")
    search = QidoSearch(level, relational, {}, [], limit=default_limit)
    seen: set[str] = set()
    for name, value in parameters:
        lowered = name.lower()
        if lowered == "includefield":
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                if item.lower() == "all":
                    search.include_all = True
                else:
                    search.include.append(_keyword(item))
            continue
        if lowered in ("limit", "offset", "fuzzymatching"):
            if lowered in seen:
                raise QidoError(f"{name} is given more than once")
            seen.add(lowered)
            if lowered == "limit":
                limit = _integer("limit", value, 1)
                if limit > max_limit:
                    search.warnings.append(
                        f"limit {limit} is above this server's maximum; {max_limit} applied"
                    )
                    limit = max_limit
                search.limit = limit
            elif lowered == "offset":
                search.offset = _integer("offset", value, 0)
            else:
                if value.lower() not in ("true", "false"):
                    raise QidoError(f"fuzzymatching={value[:20]!r}: expected true or false")
                search.fuzzy = value.lower() == "true"
            continue
        keyword = _keyword(name)
        if keyword in search.keys:
            raise QidoError(f"{name} is given more than once")
        vr = vr_of(keyword)
        if vr == "SQ":
            raise QidoError(f"{keyword}: Sequence Matching (PS3.4 §C.2.2.2.6) is not supported")
        if vr == "UI":
            value = value.replace(",", "\\")
        search.keys[keyword] = (vr, value)
    if search.fuzzy:
        for keyword, (vr, value) in search.keys.items():
            if vr == "PN":
                search.keys[keyword] = (vr, _fuzzy_pn(value))
    for keyword, uid in path_uids.items():
        search.keys[keyword] = ("UI", uid)
    ignored = [
        k
        for k, (_vr, v) in search.keys.items()
        if v and (k not in _INDEX_KEYS or _INDEX_KEYS[k] > level)
    ]
    if ignored:
        search.warnings.append(
            "the following attributes were not matched (not kept for this level): "
            + ", ".join(sorted(ignored))
        )
    return search


def _levels(search: QidoSearch) -> range:
    """The levels whose default attributes are returned: the search's own, and for relational
    searches the levels above it that no study UID fixes (PS3.18 Table 10.6.3-3 notes)."""
    top = search.level
    if search.relational:
        top = 2 if search.level == 3 and "StudyInstanceUID" in search.keys else 1
    return range(top, search.level + 1)


def _returned(search: QidoSearch) -> list[str]:
    wanted: list[str] = []
    for level in _levels(search):
        wanted += DEFAULTS[level]
    if search.include_all:
        wanted += [k for k, lv in _INDEX_KEYS.items() if max(lv, 1) <= search.level]
        if search.level == 3:
            wanted += list(_FRAGMENT_COLUMNS)
    wanted += search.include
    for level in range(1, search.level + 1):
        wanted.append(_UNIQUE[level])
    return list(dict.fromkeys(wanted))


def _retrieve_url(base: str, row: dict[str, object], level: int) -> str:
    url = f"{base}/studies/{row.get('StudyInstanceUID')}"
    if level >= 2:
        url += f"/series/{row.get('SeriesInstanceUID')}"
    if level >= 3:
        url += f"/instances/{row.get('SOPInstanceUID')}"
    return url


def run_search(
    search: QidoSearch,
    index: Index,
    store: MetadataStore | None,
    root: Path,
    base: str,
) -> tuple[list[dict[str, Any]], bool]:
    """Run a checked search: (DICOM JSON objects, whether more results exist past the limit).
    QidoError for a value the matching cannot parse (a date that is no date, ...)."""
    wanted = _returned(search)
    in_index = [k for k in wanted if k in _INDEX_KEYS and max(_INDEX_KEYS[k], 1) <= search.level]
    # keys the index keeps below the query level are not returned (PS3.4 §C.4.1.1.3.1:
    # OHIF asks Modality of studies); the others come from the cached metadata
    from_metadata = [k for k in wanted if k not in _INDEX_KEYS]
    query: dict[str, tuple[str, str]] = {k: (vr_of(k), "") for k in in_index}
    query.update(search.keys)
    level_name = LEVEL_NAMES[search.level]
    try:
        paged = getattr(index, "query_page", None)  # SQLiteIndex: the page chosen by SQLite
        if paged is not None:
            page = list(paged(level_name, query, model="STUDY", relational=search.relational,
                              offset=search.offset, limit=search.limit + 1))  # fmt: skip
        else:
            rows: Iterator[dict[str, object]] = index.query(
                level_name, query, model="STUDY", relational=search.relational
            )
            page = list(islice(rows, search.offset, search.offset + search.limit + 1))
    except QueryError as exc:
        raise QidoError(str(exc)) from None
    more = len(page) > search.limit
    page = page[: search.limit]
    extra: list[dict[str, object]] = [{} for _ in page]
    if from_metadata and store is not None and page:
        extra = _from_metadata(search.level, page, from_metadata, index, store, root, base)
    results: list[dict[str, Any]] = []
    for row, more_values in zip(page, extra, strict=True):
        document: dict[str, Any] = {}
        for keyword in wanted:
            if keyword in more_values:
                value = more_values[keyword]
                if isinstance(value, dict):  # a JSON element straight from a fragment
                    tag = tag_of(keyword)
                    if tag is not None:
                        document[f"{tag:08X}"] = value
                    continue
            elif keyword not in row:
                continue
            else:
                value = row[keyword]
            try:
                key, element = attribute(keyword, value)
            except KeyError:
                continue
            document[key] = element
        if row.get("SpecificCharacterSet"):
            key, element = attribute("SpecificCharacterSet", row["SpecificCharacterSet"])
            document[key] = element
        key, element = attribute("RetrieveURL", _retrieve_url(base, row, search.level))
        document[key] = element
        key, element = attribute("InstanceAvailability", "ONLINE")
        document[key] = element
        results.append(dict(sorted(document.items())))
    return results, more


def _from_metadata(
    level: int,
    page: list[dict[str, object]],
    keywords: list[str],
    index: Index,
    store: MetadataStore,
    root: Path,
    base: str,
) -> list[dict[str, object]]:
    """Values of ``keywords`` for each result row, from the cached metadata of the row's
    instance (level 3) or of the first instance under it (levels 1 and 2)."""
    uids: list[str | None] = []
    paths: dict[str, str] = {}
    if level == 3:
        uids = [str(row.get("SOPInstanceUID")) for row in page]
    else:
        keyword = _UNIQUE[level]
        entities = [str(row.get(keyword)) for row in page]
        firsts = store.representatives(level, entities)
        if firsts is None:  # not the SQLite index: ask the index, one entity at a time
            firsts = {}
            for uid in entities:
                records = index.instances(
                    LEVEL_NAMES[level], {keyword: ("UI", uid)}, relational=True
                )
                first = next(iter(records), None)
                if first is not None:
                    firsts[uid] = (first.sop_instance_uid, first.path)
        for uid in entities:
            found = firsts.get(uid)
            uids.append(found[0] if found else None)
            if found:
                paths[found[0]] = found[1]
    known = [u for u in uids if u]
    cached = store.cached(known)
    missing = [u for u in known if u not in cached]
    if missing and all(u in paths for u in missing):
        pairs = [(u, root / paths[u]) for u in missing]
        for (uid, _path), fragment in zip(pairs, store.get_many(pairs), strict=True):
            if fragment is not None:
                cached[uid] = fragment
    elif missing:
        records = index.instances(
            "IMAGE", {"SOPInstanceUID": ("UI", "\\".join(missing))}, relational=True
        )
        pairs = [(r.sop_instance_uid, root / r.path) for r in records]
        for (uid, _path), fragment in zip(pairs, store.get_many(pairs), strict=True):
            if fragment is not None:
                cached[uid] = fragment
    needs_json = [k for k in keywords if k not in _FRAGMENT_COLUMNS]
    base_bytes = base.encode()
    out: list[dict[str, object]] = []
    for maybe_uid in uids:
        values: dict[str, object] = {}
        fragment = cached.get(maybe_uid) if maybe_uid else None
        if fragment is not None:
            for keyword in keywords:
                column = _FRAGMENT_COLUMNS.get(keyword)
                if column is not None:
                    values[keyword] = getattr(fragment, column)
            if needs_json:
                document = orjson.loads(with_base(fragment.json, base_bytes))
                for keyword in needs_json:
                    tag = tag_of(keyword)
                    element = document.get(f"{tag:08X}") if tag is not None else None
                    if element is not None:
                        values[keyword] = element
        out.append(values)
    return out
