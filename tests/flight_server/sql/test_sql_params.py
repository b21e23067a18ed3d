"""Bound parameters: placeholders found in text, values written as literals, and the
statement forms that take them (queries, search functions, INSERT of many rows)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.flight_server.sql import SqlParameterError, connect
from quiver.flight_server.sql.params import bind, parameter_count, placeholders


@pytest.fixture(scope="module")
def conn():
    c = connect("memory://")
    c.sql("CREATE TABLE docs (id BIGINT, title VARCHAR, emb FLOAT[3]) "
          "WITH (fts = 'title', vector = 'emb')")
    c.sql_many("INSERT INTO docs VALUES (?, ?, ?)", pa.table({
        "a": [1, 2, 3, 4],
        "b": ["rust async", "python async", "it's rust", None],
        "c": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]],
    }))
    yield c
    c.close()


def test_placeholders_skip_strings_comments_and_quoted_names():
    text = "SELECT \"?\", '?' FROM t WHERE a = ? -- ?\n AND b = ?"
    assert [p.index for p in placeholders(text)] == [0, 1]
    assert parameter_count(text) == 2


def test_numbered_placeholders_may_repeat_and_reorder():
    assert bind("SELECT $2, $1, $2", [1, "x"]) == "SELECT 'x', 1, 'x'"
    assert parameter_count("SELECT $3") == 3


def test_mixing_placeholder_styles_is_rejected():
    with pytest.raises(SqlParameterError, match="either"):
        bind("SELECT ?, $1", [1])


def test_wrong_parameter_count_names_both_counts():
    with pytest.raises(SqlParameterError, match=r"takes 2 parameter.*1 given"):
        bind("SELECT ? + ?", [1])


def test_unbindable_value_is_a_parameter_error():
    with pytest.raises(SqlParameterError, match="parameter 1"):
        bind("SELECT ?", [object()])
    with pytest.raises(SqlParameterError, match="numbers"):
        bind("SELECT ?", [["a", "b"]])


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=40),
    st.binary(max_size=20),
    st.dates(min_value=dt.date(1, 1, 1)),
)


@settings(max_examples=60, deadline=None)
@given(value=_scalars)
def test_bound_value_reads_back_unchanged(conn, value):
    out = conn.sql("SELECT ? AS v", [value]).column("v")[0].as_py()
    assert out == value


def test_query_filter_takes_parameters(conn):
    out = conn.sql("SELECT id FROM docs WHERE id >= ? AND title <> ? ORDER BY id", [2, "x"])
    assert out.column("id").to_pylist() == [2, 3]


def test_string_parameter_with_quote_matches_exactly(conn):
    out = conn.sql("SELECT id FROM docs WHERE title = ?", ["it's rust"])
    assert out.column("id").to_pylist() == [3]


def test_vector_parameter_drives_vector_search(conn):
    query = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    out = conn.sql("SELECT id FROM vector_search('docs', 'emb', ?, 1)", [query])
    assert out.column("id").to_pylist() == [2]


def test_vector_parameter_of_wrong_length_names_the_lengths(conn):
    with pytest.raises(Exception, match="3"):
        conn.sql("SELECT id FROM vector_search('docs', 'emb', ?, 1)", [[1.0, 2.0]])


def test_bm25_search_takes_query_text_parameter(conn):
    out = conn.sql("SELECT id FROM bm25_search('docs', 'title', ?, 10) ORDER BY id", ["rust"])
    assert out.column("id").to_pylist() == [1, 3]


def test_insert_of_many_parameter_rows_is_one_append(conn):
    table = conn.open_table("docs")
    before = table.snapshot().version
    rows = pa.table({"a": [10, 11, 12], "b": ["x", "y", "z"],
                     "c": [[0.5, 0.5, 0.0]] * 3})
    out = conn.sql_many("INSERT INTO docs (id, title, emb) VALUES ($1, $2, $3)", rows)
    assert out.column("count").to_pylist() == [3]
    assert table.snapshot().version == before + 1
    got = conn.sql("SELECT id, title FROM docs WHERE id >= 10 ORDER BY id")
    assert got.column("title").to_pylist() == ["x", "y", "z"]
    conn.sql("DELETE FROM docs WHERE id >= 10")


def test_dml_over_many_parameter_rows_sums_counts(conn):
    conn.sql_many("INSERT INTO docs (id, title) VALUES (?, ?)",
                  pa.table({"a": [20, 21], "b": ["p", "q"]}))
    out = conn.sql_many("DELETE FROM docs WHERE id = ?", pa.table({"a": [20, 21, 99]}))
    assert out.column("count").to_pylist() == [2]


def test_query_over_many_parameter_rows_concatenates_in_order(conn):
    out = conn.sql_many("SELECT id FROM docs WHERE id = ?", pa.table({"a": [3, 1]}))
    assert out.column("id").to_pylist() == [3, 1]


def test_schema_plans_without_running_dml(conn):
    before = conn.sql("SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert conn.schema("DELETE FROM docs WHERE id = ?", [1]).names == ["count"]
    assert conn.sql("SELECT count(*) AS n FROM docs").column("n")[0].as_py() == before
    schema = conn.schema("SELECT id, title FROM docs WHERE id = ?", [1])
    assert schema.names == ["id", "title"]
    assert schema.field("id").type == pa.int64()


def test_is_query_tells_queries_from_ddl_and_dml(conn):
    assert conn.is_query("SELECT 1")
    assert conn.is_query("WITH x AS (SELECT 1) SELECT * FROM x")
    assert conn.is_query("SHOW TABLES")
    assert not conn.is_query("DELETE FROM docs WHERE id = 1")
    assert not conn.is_query("CREATE TABLE z (a INT)")


def test_a_placeholder_cast_with_double_colon_is_a_parameter(conn):
    # "?::" reads as one token in sqlglot's tokenizer; it is still a placeholder.
    assert parameter_count("SELECT ?::INT, ?::DATE") == 2
    assert bind("SELECT ?::INT AS a", [5]) == "SELECT 5::INT AS a"
    assert conn.sql("SELECT ?::BIGINT + 1 AS a", ["41"]).column("a").to_pylist() == [42]


def test_binary_parameters_insert_update_and_read_back(conn):
    conn.sql("CREATE TABLE blobs (n BIGINT, bl BLOB)")
    try:
        conn.sql("INSERT INTO blobs VALUES (?, ?)", [1, b"\x00\xff'"])
        conn.sql_many("INSERT INTO blobs VALUES (?, ?)",
                      pa.table({"a": [2, 3], "b": pa.array([b"x", None], pa.binary())}))
        conn.sql("UPDATE blobs SET bl = ? WHERE n = ?", [b"\x01", 3])
        got = conn.sql("SELECT bl FROM blobs ORDER BY n").column("bl").to_pylist()
        assert got == [b"\x00\xff'", b"x", b"\x01"]
        assert conn.sql("SELECT n FROM blobs WHERE bl = ?", [b"x"]).column("n").to_pylist() \
            == [2]
    finally:
        conn.sql("DROP TABLE blobs")
