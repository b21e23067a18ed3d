"""GetDbSchemas / GetTables: filters with the specification's pattern rules, order, schemas."""

from __future__ import annotations

import functools
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.flight_server.service import metadata
from quiver.flight_server.sql import connect


def _root() -> str:
    """A fresh in-memory root (memory roots are shared by name within the process)."""
    return f"memory://metadata-{uuid.uuid4().hex}"

NAMES = ["docs", "Docs2", "a_b", "axb", "ab", "a__b", "_x", "x_", "abc_def", "zeta",
         "A1", "a1", "users_2024", "users22024"]


def like_oracle(pattern: str, name: str) -> bool:
    """Pattern semantics spelled out directly: tokens, then matching by memoized recursion."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            tokens.append(("lit", pattern[i + 1]))
            i += 2
            continue
        tokens.append(("any", "") if c == "%" else ("one", "") if c == "_" else ("lit", c))
        i += 1

    @functools.cache
    def match(t: int, n: int) -> bool:
        if t == len(tokens):
            return n == len(name)
        kind, ch = tokens[t]
        if kind == "any":
            return match(t + 1, n) or (n < len(name) and match(t, n + 1))
        if n == len(name):
            return False
        if kind == "one" or name[n] == ch:
            return match(t + 1, n + 1)
        return False

    return match(0, 0)


@pytest.fixture(scope="module")
def conn():
    c = connect(_root())
    for name in NAMES:
        c.sql(f'CREATE TABLE "{name}" (id BIGINT, title VARCHAR)')
    yield c
    c.close()


def _names(table: pa.Table) -> list[str]:
    return table.column("table_name").to_pylist()


def test_tables_without_filters_lists_every_table_sorted(conn):
    t = metadata.tables(conn, None, None, None, [], False)
    assert _names(t) == sorted(NAMES)
    assert set(t.column("catalog_name").to_pylist()) == {metadata.CATALOG}
    assert set(t.column("db_schema_name").to_pylist()) == {metadata.DB_SCHEMA}
    assert set(t.column("table_type").to_pylist()) == {"TABLE"}


def test_sorting_is_by_code_point_so_upper_case_sorts_first(conn):
    names = _names(metadata.tables(conn, None, None, None, [], False))
    assert names.index("A1") < names.index("a1")
    assert names.index("Docs2") < names.index("a_b")


@pytest.mark.parametrize(("pattern", "expected"), [
    ("a_b", ["a_b", "axb"]),
    ("a\\_b", ["a_b"]),
    ("a%b", ["a__b", "a_b", "ab", "axb"]),
    ("a\\_\\_b", ["a__b"]),
    ("users_2024", ["users22024", "users_2024"]),
    ("users\\_2024", ["users_2024"]),
    ("%\\_", ["x_"]),
    ("\\_%", ["_x"]),
    ("", []),
    ("%", sorted(NAMES)),
    ("DOCS", []),
    ("docs", ["docs"]),
])
def test_table_pattern_keeps_the_names_it_matches(conn, pattern, expected):
    assert _names(metadata.tables(conn, None, None, pattern, [], False)) == expected


pattern_chars = st.sampled_from(list("ab_%\\xAB1.*[]()^$?+|{}"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(pattern=st.text(pattern_chars, max_size=8))
def test_table_pattern_agrees_with_the_pattern_oracle(conn, pattern):
    got = _names(metadata.tables(conn, None, None, pattern, [], False))
    assert got == sorted(n for n in NAMES if like_oracle(pattern, n))


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(pattern_chars, max_size=8),
       names=st.lists(st.text(st.sampled_from(list("ab_%\\x.*\n é")), max_size=6),
                      max_size=8))
def test_pattern_regex_agrees_with_the_oracle_on_arbitrary_text(pattern, names):
    # Names with regex metacharacters, newlines and non-ASCII letters: the pattern
    # must still treat them as ordinary characters.
    arr = pa.array(names, pa.string())
    got = arr.filter(pc.match_substring_regex(arr, metadata.like_regex(pattern))).to_pylist()
    assert got == [n for n in names if like_oracle(pattern, n)]


def test_catalog_filter_is_an_exact_name_and_empty_means_no_catalog(conn):
    assert len(_names(metadata.tables(conn, metadata.CATALOG, None, None, [], False))) == len(
        NAMES)
    assert _names(metadata.tables(conn, "", None, None, [], False)) == []
    assert _names(metadata.tables(conn, "other", None, None, [], False)) == []
    assert _names(metadata.tables(conn, "quiv%", None, None, [], False)) == []


def test_schema_pattern_filters_tables(conn):
    assert len(_names(metadata.tables(conn, None, "ma_n", None, [], False))) == len(NAMES)
    assert len(_names(metadata.tables(conn, None, "%", None, [], False))) == len(NAMES)
    assert _names(metadata.tables(conn, None, "public", None, [], False)) == []
    assert _names(metadata.tables(conn, None, "", None, [], False)) == []


def test_table_types_filter_keeps_tables_only_when_asked_for_table(conn):
    assert len(_names(metadata.tables(conn, None, None, None, ["TABLE"], False))) == len(NAMES)
    assert len(_names(metadata.tables(conn, None, None, None, ["VIEW", "TABLE"], False))) == len(
        NAMES)
    assert _names(metadata.tables(conn, None, None, None, ["VIEW"], False)) == []
    assert _names(metadata.tables(conn, None, None, None, ["table"], False)) == []


def test_db_schemas_filters_by_catalog_and_pattern(conn):
    def rows(catalog, pattern):
        return metadata.db_schemas(conn, catalog, pattern).to_pylist()

    one = [{"catalog_name": metadata.CATALOG, "db_schema_name": metadata.DB_SCHEMA}]
    assert rows(None, None) == one
    assert rows(metadata.CATALOG, "m%") == one
    assert rows(None, metadata.DB_SCHEMA) == one
    assert rows("", None) == []
    assert rows("other", None) == []
    assert rows(None, "x%") == []
    assert rows(None, "") == []
    assert rows(None, "MAIN") == []


def test_included_schema_is_the_schema_select_star_returns(tmp_path):
    c = connect(str(tmp_path / "root"))
    try:
        c.sql("CREATE TABLE docs (id BIGINT NOT NULL, title VARCHAR, embedding FLOAT[3], "
              "price DECIMAL(10,2), day DATE, at TIMESTAMP, ok BOOLEAN, raw BLOB, tags INT[]) "
              "WITH (fts = 'title', vector = 'embedding')")
        c.sql("INSERT INTO docs VALUES (1, 'a', [1.0, 2.0, 3.0], 1.50, DATE '2024-01-02', "
              "TIMESTAMP '2024-01-02 03:04:05', true, '\\x00', [1, 2])")
        t = metadata.tables(c, None, None, "docs", [], True)
        assert _names(t) == ["docs"]
        schema = pa.ipc.read_schema(pa.py_buffer(t.column("table_schema")[0].as_py()))
        star = c.sql("SELECT * FROM docs").schema
        assert schema.remove_metadata().equals(star.remove_metadata())
        assert "_id" not in schema.names
        md = {k.decode(): v.decode() for k, v in schema.field("price").metadata.items()}
        assert md["ARROW:FLIGHT:SQL:TABLE_NAME"] == "docs"
        assert md["ARROW:FLIGHT:SQL:TYPE_NAME"] == "DECIMAL(10,2)"
        assert (md["ARROW:FLIGHT:SQL:PRECISION"], md["ARROW:FLIGHT:SQL:SCALE"]) == ("10", "2")
    finally:
        c.close()


def test_included_schemas_belong_to_their_own_rows(conn):
    c = connect(_root())
    try:
        c.sql("CREATE TABLE one (a BIGINT)")
        c.sql("CREATE TABLE two (b VARCHAR, c DOUBLE)")
        t = metadata.tables(c, None, None, None, [], True)
        got = {row["table_name"]: pa.ipc.read_schema(pa.py_buffer(row["table_schema"])).names
               for row in t.to_pylist()}
        assert got == {"one": ["a"], "two": ["b", "c"]}
    finally:
        c.close()


def test_a_dropped_table_disappears_from_the_listing():
    c = connect(_root())
    try:
        c.sql("CREATE TABLE keep (a BIGINT)")
        c.sql("CREATE TABLE gone (a BIGINT)")
        c.sql("DROP TABLE gone")
        assert _names(metadata.tables(c, None, None, None, [], True)) == ["keep"]
        assert _names(metadata.tables(c, None, None, None, [], False)) == ["keep"]
    finally:
        c.close()


def test_empty_root_lists_no_tables_in_the_declared_schema():
    c = connect(_root())
    try:
        t = metadata.tables(c, None, None, None, [], True)
        assert t.num_rows == 0
        assert t.schema.equals(metadata.SCHEMAS["CommandGetTablesWithSchema"])
    finally:
        c.close()
