"""PS3.4 §C.2.2.2 attribute matching: one table of cases, checked in Python and in SQLite."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomnet.archive.matching import (
    QueryError,
    column_value,
    compile_query,
    matches,
    to_sql,
)

# (vr, query value, stored value, expected), each from a sentence of PS3.4 §C.2.2.2 (or §C.2.2.1.1
# for zero-length stored values) or a choice the module docstring documents.
CASES: list[tuple[str, str, str | None, bool]] = [
    # §C.2.2.2.3 Universal Matching: a zero-length key matches every entity.
    ("PN", "", "Doe^John", True),
    ("DA", "", "20200101", True),
    ("UI", "", "1.2.3", True),
    ("LO", "", None, True),
    # §C.2.2.2.4 note: wild card matching on "*" is equivalent to Universal Matching.
    ("LO", "*", "anything", True),
    ("LO", "*", None, True),
    ("PN", "**", "Doe^John", True),
    # §C.2.2.1.1: a Required Key of zero length is unknown, and every match against it succeeds.
    ("LO", "ABC", None, True),
    ("LO", "ABC", "", True),
    ("DA", "20200101-20200131", None, True),
    ("UI", "1.2.3", "", True),
    # §C.2.2.2.1 Single Value Matching: exact, case-sensitive; padding is not significant.
    ("LO", "ABC", "ABC", True),
    ("LO", "ABC", "abc", False),
    ("LO", "ABC", "ABCD", False),
    ("SH", "ABC ", "ABC", True),
    ("LO", " ABC", "ABC", True),  # LO: leading spaces are padding too (PS3.5)
    ("ST", "Hello ", "Hello", True),
    ("ST", " Hello", "Hello", False),  # ST: leading spaces are significant
    ("CS", "CT", "CT", True),
    ("CS", "CT", "MR", False),
    ("UI", "1.2.3", "1.2.3\x00", True),
    ("UI", "1.2.3", "1.2.30", False),
    ("IS", "7", "007", True),
    ("IS", "7", "70", False),
    ("DS", "1.50", "1.5", True),
    ("LO", "10-20", "10-20", True),  # '-' is a range only for DA, TM, DT
    ("LO", "10-20", "15", False),
    # §C.2.2.2.1 / §C.2.2.2.4: PN matching is implementation-defined; ours ignores case and
    # accents and trailing empty components, and lets a key match leading component groups.
    ("PN", "Doe^John", "DOE^JOHN", True),
    ("PN", "doe^john", "Doe^John^^", True),
    ("PN", "Muller^Hans", "Müller^Hans", True),
    ("PN", "Doe^John", "Doe^Johnny", False),
    ("PN", "Doe", "Doe^John", False),
    ("PN", "Yamada^Tarou", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
    ("PN", "Yamada^Tarou=山田^太郎", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
    ("PN", "山田^太郎", "Yamada^Tarou=山田^太郎", False),
    ("PN", "*=山田*", "Yamada^Tarou=山田^太郎", True),
    ("PN", "がく", "かく", False),  # kana voicing is not an accent
    ("PN", "ﾔﾏﾀﾞ", "ヤマダ", True),  # half-width katakana
    # §C.2.2.2.4 Wild Card Matching: '*' any sequence (also empty), '?' any one character.
    ("LO", "AB*", "ABC", True),
    ("LO", "AB*", "AB", True),
    ("LO", "AB*", "XAB", False),
    ("LO", "*B*", "ABC", True),
    ("LO", "A?C", "ABC", True),
    ("LO", "A?C", "AC", False),
    ("LO", "A?C", "ABBC", False),
    ("LO", "a*", "ABC", False),  # case-sensitive ...
    ("PN", "doe*", "DOE^JOHN", True),  # ... except PN
    ("PN", "Y*U", "Yamada^Tarou=山田^太郎", True),
    ("CS", "C?", "CT", True),
    ("CS", "C?", "CTA", False),
    ("SH", "[a]*", "[a]bc", True),  # GLOB's '[' is escaped
    ("SH", "[a]*", "abc", False),
    ("LO", "50%*", "50%_x", True),
    ("LO", "a_c", "abc", False),  # no LIKE semantics
    ("LO", "Ä?", "Äb", True),  # '?' is one character, not one byte
    ("UI", "1.2.*", "1.2.3", False),  # no wild cards for UI
    ("LT", "a\\b*", "a\\bc", True),  # LT is single-valued: '\' is text
    # §C.2.2.2.2 List of UID Matching, and lists of other values (any value may match).
    ("UI", "1.2.3\\1.2.4", "1.2.4", True),
    ("UI", "1.2.3\\1.2.4", "1.2.5", False),
    ("CS", "CT\\MR", "MR", True),
    ("CS", "CT\\MR", "US", False),
    ("CS", "CT\\M*", "MG", True),
    ("CS", "CT\\", "US", False),  # an empty item in a list is ignored
    # §C.2.2.2.5.1 DA ranges, inclusive.
    ("DA", "20200101-20200131", "20200115", True),
    ("DA", "20200101-20200131", "20200101", True),
    ("DA", "20200101-20200131", "20200131", True),
    ("DA", "20200101-20200131", "20200201", False),
    ("DA", "20200101-20200131", "20191231", False),
    ("DA", "20200101-", "20991231", True),
    ("DA", "20200101-", "20191231", False),
    ("DA", "-20200101", "19000101", True),
    ("DA", "-20200101", "20200102", False),
    ("DA", "20200101", "20200101", True),
    ("DA", "20200101", "20200102", False),
    ("DA", "20200131-20200101", "20200115", False),  # <date1> must not be after <date2>
    ("DA", "2020.01.01", "20200101", True),  # ACR-NEMA form
    # §C.2.2.2.5.2 TM ranges; partial precision names the whole interval.
    ("TM", "1030-", "103000", True),
    ("TM", "1030-", "1029", False),
    ("TM", "1030-", "102959.999999", False),
    ("TM", "-1030", "103059", True),
    ("TM", "-1030", "1031", False),
    ("TM", "1000-1200", "1100", True),
    ("TM", "1000-1200", "120059.5", True),
    ("TM", "1000-1200", "1201", False),
    ("TM", "103000.5-103001", "103000.4", False),
    ("TM", "103000.5-103001", "103000.5", True),
    ("TM", "2200-0200", "2300", False),  # ranges crossing midnight are not supported
    ("TM", "1030", "103015", True),
    ("TM", "103015", "1030", False),
    ("TM", "10", "1059", True),
    ("TM", "10:30-", "10:45:00", True),  # ACR-NEMA form
    # §C.2.2.2.5.3 DT ranges; the UTC offset is taken into account.
    ("DT", "2006-2007", "20061231235959", True),
    ("DT", "2006-2007", "20080101", False),
    ("DT", "2006", "20060615120000", True),
    ("DT", "20060101-", "20051231235959.999999", False),
    ("DT", "-20060101", "20060101235959", True),
    ("DT", "20060101-20060102", "20060101120000", True),
    ("DT", "20060101120000+0000-", "20060101130000+0200", False),
    ("DT", "20060101120000+0000-", "20060101130000-0200", True),
    ("DT", "20060101-0500", "20060101050000", True),  # a single value with an offset
]


def _ids() -> Iterator[str]:
    for vr, query, stored, expected in CASES:
        yield f"{vr}:{query!r}~{stored!r}={expected}"


@pytest.fixture(scope="module")
def table() -> Iterator[sqlite3.Connection]:
    """Every stored value of CASES in an indexed TEXT column, as the index stores them."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.execute("CREATE INDEX t_v ON t(v)")
    db.executemany(
        "INSERT INTO t (id, v) VALUES (?, ?)",
        [(i, column_value(vr, stored)) for i, (vr, _q, stored, _e) in enumerate(CASES)],
    )
    yield db
    db.close()


def _sql_matches(db: sqlite3.Connection, row: int, vr: str, query: str, **kw: bool) -> bool:
    fragment, params = to_sql("v", vr, query, **kw)
    sql = f"SELECT count(*) FROM t WHERE id = ? AND {fragment}"
    return bool(db.execute(sql, [row, *params]).fetchone()[0])


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), CASES, ids=list(_ids()))
def test_matches(vr: str, query: str, stored: str | None, expected: bool) -> None:
    assert matches(vr, query, stored) is expected


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), CASES, ids=list(_ids()))
def test_sql_agrees(
    table: sqlite3.Connection, vr: str, query: str, stored: str | None, expected: bool
) -> None:
    row = CASES.index((vr, query, stored, expected))
    assert _sql_matches(table, row, vr, query) is expected


@pytest.mark.parametrize("match_unknown", [True, False])
def test_every_query_against_every_stored_value_of_its_vr(
    table: sqlite3.Connection, match_unknown: bool
) -> None:
    """Beyond the table's expectations: Python and SQL agree on every (query, stored) pair."""
    by_vr: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for i, (vr, _q, stored, _e) in enumerate(CASES):
        by_vr[vr].append((i, stored))
    checked = 0
    for vr, query, _s, _e in CASES:
        for row, stored in by_vr[vr]:
            python = matches(vr, query, stored, match_unknown=match_unknown)
            sql = _sql_matches(table, row, vr, query, match_unknown=match_unknown)
            assert python == sql, (vr, query, stored)
            checked += 1
    assert checked > 1000


@given(
    query=st.text(alphabet="ab*?[]\\", max_size=6),
    stored=st.text(alphabet="ab*?[]", min_size=1, max_size=6),
    vr=st.sampled_from(["LO", "PN", "LT"]),
)
def test_wildcards_agree_on_generated_strings(query: str, stored: str, vr: str) -> None:
    with sqlite3.connect(":memory:") as db:
        fragment, params = to_sql("v", vr, query)
        value = column_value(vr, stored)
        found = db.execute(
            f"SELECT count(*) FROM (SELECT ? AS v) WHERE {fragment}", [value, *params]
        )
        assert bool(found.fetchone()[0]) == matches(vr, query, stored)


def test_multiple_stored_values_match_if_any_does() -> None:
    # PS3.4 §C.2.2.3: if any value of a multi-valued attribute matches, the entity matches.
    assert matches("CS", "MR", "CT\\MR")
    assert not matches("CS", "US", "CT\\MR")
    assert matches("CS", "M?", "CT\\MR")


def test_match_unknown_can_be_turned_off() -> None:
    assert not matches("LO", "ABC", None, match_unknown=False)
    assert not matches("DA", "20200101-", "", match_unknown=False)
    assert matches("LO", "", None, match_unknown=False)  # Universal Matching still matches
    assert to_sql("c", "LO", "ABC", match_unknown=False) == ("(c = ?)", ["ABC"])


def test_sql_shapes() -> None:
    assert to_sql("c", "UI", "") == ("1", [])
    assert to_sql("c", "UI", "1.2\\1.3", match_unknown=False) == ("(c IN (?, ?))", ["1.2", "1.3"])
    assert to_sql("c", "DA", "20200101-20200131", match_unknown=False) == (
        "((c >= ? AND c <= ?))",
        ["20200101", "20200131"],
    )
    assert to_sql("c", "LO", "A*", match_unknown=False) == ("(c GLOB ?)", ["A*"])
    assert to_sql("c", "LO", "[*", match_unknown=False) == ("(c GLOB ?)", ["[[]*"])
    with pytest.raises(ValueError):
        to_sql("c; DROP TABLE t", "LO", "A")


@pytest.mark.parametrize(
    ("vr", "query"),
    [
        ("DA", "2020*"),
        ("DA", "202001"),
        ("DA", "20200101-20200102-20200103"),
        ("TM", "1x"),
        ("TM", "10-11-12"),
        ("DT", "abc"),
        ("DT", "2006-13"),
        ("SQ", "x"),
    ],
)
def test_invalid_keys_raise(vr: str, query: str) -> None:
    with pytest.raises(QueryError):
        compile_query(vr, query)


def test_column_value_forms() -> None:
    assert column_value("TM", "1030") == "103000.000000"
    assert column_value("DT", "20060101120000+0100") == "20060101110000.000000"
    assert column_value("PN", "Müller^Hans^^=") == "muller^hans"
    assert column_value("IS", " 007 ") == "7"
    assert column_value("DS", "1.50") == "1.5"
    assert column_value("LO", "   ") is None
    assert column_value("UI", "1.2.3\x00") == "1.2.3"
    assert column_value("TM", "not a time") == "not a time"  # compared as text
