"""One reading of a statement: the classifier's kinds, shapes and tables, the scan parts
a plain scan offers, and the reading shared by text with the parse cache."""

from __future__ import annotations

import pyarrow as pa
import pytest

from quiver.flight_server.sql import (
    Kind,
    Shape,
    SqlPlanError,
    SqlSyntaxError,
    analyse,
    analysis,
    connect,
    hide_literals,
    looks_like_append,
)
from quiver.flight_server.sql import parse as sqlparse
from quiver.flight_server.sql.statements import is_statement


@pytest.mark.parametrize(("sql", "kind", "shape", "reads", "writes"), [
    ("SELECT 1 AS one", Kind.QUERY, Shape.QUERY, (), ()),
    ("SELECT * FROM docs", Kind.QUERY, Shape.SCAN, ("docs",), ()),
    ("SELECT id FROM docs WHERE id > 3", Kind.QUERY, Shape.SCAN, ("docs",), ()),
    ("SELECT count(*) FROM docs", Kind.QUERY, Shape.COUNT, ("docs",), ()),
    ("SELECT count(1) AS n FROM docs", Kind.QUERY, Shape.COUNT, ("docs",), ()),
    ("SELECT * FROM bm25_search('docs', 'body', 'word', 5)", Kind.QUERY, Shape.SEARCH,
     ("docs",), ()),
    ("SELECT a.id FROM docs a JOIN other b ON a.id = b.id", Kind.QUERY, Shape.QUERY,
     ("docs", "other"), ()),
    ("WITH x AS (SELECT * FROM docs) SELECT * FROM x", Kind.QUERY, Shape.QUERY,
     ("docs",), ()),
    ("VALUES (1), (2)", Kind.QUERY, Shape.QUERY, (), ()),
    ("EXPLAIN SELECT * FROM docs", Kind.EXPLAIN, Shape.EXPLAIN, ("docs",), ()),
    ("EXPLAIN DROP TABLE docs", Kind.EXPLAIN, Shape.UNSUPPORTED, ("docs",), ()),
    ("CREATE TABLE t (a INT)", Kind.DDL, Shape.CREATE, (), ("t",)),
    ("CREATE TABLE t AS SELECT * FROM docs", Kind.DDL, Shape.CREATE, ("docs",), ("t",)),
    ("DROP TABLE IF EXISTS t, u", Kind.DDL, Shape.DROP, (), ("t", "u")),
    ("INSERT INTO t VALUES (1, 'a')", Kind.DML, Shape.APPEND, (), ("t",)),
    ("INSERT INTO t VALUES ((SELECT 1), 'a')", Kind.DML, Shape.INSERT, (), ("t",)),
    ("INSERT INTO t SELECT * FROM docs", Kind.DML, Shape.INSERT, ("docs",), ("t",)),
    ("UPDATE t SET a = 1 WHERE b IN (SELECT id FROM docs)", Kind.DML, Shape.UPDATE,
     ("docs",), ("t",)),
    ("DELETE FROM t WHERE a = 1", Kind.DML, Shape.DELETE, (), ("t",)),
    ("SHOW TABLES", Kind.SHOW, Shape.SHOW_TABLES, (), ()),
    ("DESCRIBE docs", Kind.DESCRIBE, Shape.DESCRIBE_TABLE, ("docs",), ()),
    ("SET datafusion.execution.batch_size = 1", Kind.OTHER, Shape.UNSUPPORTED, (), ()),
    ("SELEC 1", Kind.UNREADABLE, Shape.UNREADABLE, (), ()),
])
def test_the_classifier_names_kind_shape_and_tables(sql, kind, shape, reads, writes) -> None:
    a = analyse(sql)
    assert (a.kind, a.shape, a.reads, a.writes) == (kind, shape, reads, writes)


@pytest.mark.parametrize(("sql", "is_query", "carried_out"), [
    ("SELECT 1", True, False),
    ("EXPLAIN SELECT 1", True, False),
    ("SHOW TABLES", True, True),
    ("DESCRIBE docs", True, True),
    ("SELEC 1", True, False),
    ("INSERT INTO t VALUES (1)", False, True),
    ("CREATE TABLE z (a INT)", False, True),
    ("SET x = 1", False, False),
])
def test_rows_out_and_carried_out_follow_the_kind(sql, is_query, carried_out) -> None:
    a = analyse(sql)
    assert (a.is_query, a.carried_out) == (is_query, carried_out)
    if a.statement.expr is not None and not a.explain:
        assert is_statement(a.statement.expr) is carried_out


def test_a_plain_scan_offers_its_table_columns_and_filter() -> None:
    scan = analyse('SELECT d.id AS ident, body FROM "Docs" AS d WHERE d.id > 3').scan
    assert (scan.table, scan.quoted, scan.columns, scan.filtered) == \
        ("Docs", True, ("ident", "body"), True)
    assert scan.names() == ["Docs"]
    assert analyse("SELECT * FROM Docs").scan.names() == ["docs", "Docs"]
    schema = pa.schema([("id", pa.int64()), ("body", pa.string())])
    assert scan.pruning_filter(schema) == [[("id", ">", 3)]]
    assert analyse("SELECT * FROM docs").scan.pruning_filter(schema) is None


@pytest.mark.parametrize("sql", [
    "SELECT id FROM docs ORDER BY id", "SELECT id FROM docs LIMIT 7",
    "SELECT DISTINCT body FROM docs", "SELECT id + 1 AS n FROM docs",
    "SELECT id FROM docs WHERE lower(body) = 'x'", "EXPLAIN SELECT * FROM docs",
    "SELECT id FROM docs WHERE id > (SELECT min(id) FROM docs)",
])
def test_anything_that_combines_or_computes_is_no_plain_scan(sql) -> None:
    assert analyse(sql).scan is None


def test_a_count_under_explain_is_still_recognised_for_the_plan_note() -> None:
    a = analyse("EXPLAIN SELECT count(*) AS n FROM docs")
    assert a.shape is Shape.EXPLAIN
    assert (a.count.table, a.count.form, a.count.column) == ("docs", "star", "n")


def test_a_search_call_carries_its_literal_values_and_a_computed_argument_does_not() -> None:
    a = analyse("SELECT * FROM bm25_search('docs', 'body', 'word', 5)")
    assert (a.search.function, a.search.values) == ("bm25_search", ("docs", "body", "word", 5))
    assert analyse("SELECT * FROM bm25_search('docs', 'body', lower('W'), 5)").search is None


def test_the_same_text_is_read_once_and_shares_the_parse_cache_tree() -> None:
    text = "SELECT id, body FROM analysed_once WHERE id = 7"
    before = analysis.READS["statements"]
    first, again = analyse(text), analyse(text)
    assert first is again
    assert analysis.READS["statements"] - before == 1
    assert first.statement.expr is sqlparse.parse(text).expr


def test_parameters_are_bound_before_reading() -> None:
    a = analyse("SELECT id FROM docs WHERE id = ? AND body = ?", [4, "it's"])
    assert a.text == "SELECT id FROM docs WHERE id = 4 AND body = 'it''s'"
    assert a.scan is not None and a.scan.filtered


def test_empty_or_several_statements_are_refused_as_syntax_errors() -> None:
    with pytest.raises(SqlSyntaxError):
        analyse("  ;")
    with pytest.raises(SqlSyntaxError, match="one statement at a time"):
        analyse("SELECT 1; SELECT 2")


def test_literals_are_hidden_for_the_log_and_unreadable_text_is_a_question_mark() -> None:
    assert hide_literals("SELECT * FROM docs WHERE id > 3 AND body = 'secret'") == \
        "SELECT * FROM docs WHERE id > ? AND body = ?"
    assert hide_literals("SELEC 'secret'") == "?"
    assert hide_literals("") == "?"


@pytest.mark.parametrize(("sql", "append"), [
    ("INSERT INTO t VALUES (1)", True), ("  insert into t (a) values (1), (2)", True),
    ("INSERT INTO t SELECT 1", False), ("UPDATE t SET a = 1", False),
    ("SELECT 1", False),
])
def test_the_lexical_append_test_agrees_with_the_append_shape(sql, append) -> None:
    assert looks_like_append(sql) is append
    assert (analyse(sql).shape is Shape.APPEND) is append


def test_the_gate_still_refuses_what_the_classifier_calls_unsupported(tmp_path) -> None:
    conn = connect(str(tmp_path / "root"))
    try:
        with pytest.raises(SqlPlanError, match="EXPLAIN explains a query"):
            conn.sql("EXPLAIN DROP TABLE docs")
        with pytest.raises(SqlPlanError, match="not allowed"):
            conn.sql("SET datafusion.execution.batch_size = 1")
        with pytest.raises(SqlSyntaxError, match="cannot read the statement"):
            conn.sql("SELEC 1")
        # A statement already read runs as its text does.
        conn.sql("CREATE TABLE docs (id BIGINT)")
        conn.sql(analyse("INSERT INTO docs VALUES (1), (2)"))
        assert conn.sql(analyse("SELECT count(*) AS n FROM docs")).to_pylist() == [{"n": 2}]
    finally:
        conn.close()
