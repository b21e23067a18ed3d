"""Queries that read no relation are planned once per text and run collected: their
results match DataFusion planning the text afresh (NULLs, types, parameters), time and
random functions still read each run, errors stay errors on every run, and the gate's
verdicts and the plans kept stay bounded."""

from __future__ import annotations

import time

import datafusion
import pyarrow as pa
import pytest

from quiver.flight_server.sql import analysis, connect, engine
from quiver.flight_server.sql.arrow_types import plain_schema
from quiver.flight_server.sql.errors import SqlError, SqlPlanError


@pytest.fixture
def conn(tmp_path):
    c = connect(str(tmp_path / "root"))
    yield c
    c.close()


def _fresh(text: str) -> pa.Table:
    """The text planned and run by a DataFusion session of its own."""
    table = datafusion.SessionContext().sql(text).to_arrow_table()
    return table.cast(plain_schema(table.schema, fold_large=False))


@pytest.mark.parametrize("text", [
    "SELECT 1 AS one",
    "SELECT NULL AS n",
    "SELECT CAST(NULL AS INT) AS i, 'x' || 'y' AS s, 2.5 * 2 AS f",
    "SELECT * FROM (VALUES (1, 'a'), (NULL, NULL), (3, 'c')) AS t(x, y)",
    "VALUES (1, NULL), (2, 'b')",
    "SELECT x FROM (SELECT 1 AS x UNION ALL SELECT 2) AS u ORDER BY x DESC",
])
def test_table_free_results_match_a_fresh_plan_on_every_run(conn, text) -> None:
    expected = _fresh(text)
    first = conn.sql(text)
    again = conn.sql(text)
    assert first.equals(expected)
    assert again.equals(expected)
    assert conn.schema(text) == expected.schema


def test_table_free_plans_are_kept_by_text(conn) -> None:
    conn.sql("SELECT 41 + 1 AS answer")
    kept = conn.engine._tableless["SELECT 41 + 1 AS answer"]
    assert kept is not None
    conn.sql("SELECT 41 + 1 AS answer")
    assert conn.engine._tableless["SELECT 41 + 1 AS answer"] is kept


def test_statements_reading_a_table_are_not_planned_as_table_free(conn) -> None:
    conn.sql("CREATE TABLE t (x BIGINT)")
    conn.sql("INSERT INTO t VALUES (1), (NULL)")
    assert conn.sql("SELECT x FROM t ORDER BY x").column("x").to_pylist() == [1, None]
    assert conn.sql("WITH c AS (SELECT 1 AS x) SELECT x FROM c").num_rows == 1
    assert conn.engine._tableless.get("SELECT x FROM t ORDER BY x") is None
    assert conn.engine._tableless.get("WITH c AS (SELECT 1 AS x) SELECT x FROM c") is None


def test_time_and_random_functions_read_each_run(conn) -> None:
    text = "SELECT now() AS t, random() AS r"
    first = conn.sql(text).to_pylist()[0]
    time.sleep(0.01)
    second = conn.sql(text).to_pylist()[0]
    assert second["t"] > first["t"]
    assert second["r"] != first["r"]


def test_parameters_bind_into_table_free_statements(conn) -> None:
    assert conn.sql("SELECT ? AS v", [5]).column("v").to_pylist() == [5]
    assert conn.sql("SELECT ? AS v", [6]).column("v").to_pylist() == [6]
    assert conn.sql("SELECT $1 AS v, $2 AS w", [None, "x"]).to_pylist() == \
        [{"v": None, "w": "x"}]


@pytest.mark.parametrize(("text", "kind", "planned"), [
    # Refused when planned: nothing is kept.
    ("SELECT no_such_function(1) AS x", SqlPlanError, False),
    # Planned, and fails when it runs: the plan is kept and fails on every run.
    ("SELECT 1 / 0 AS x", SqlError, True),
])
def test_errors_of_table_free_statements_are_raised_on_every_run(conn, text, kind,
                                                                 planned) -> None:
    for _ in range(2):
        with pytest.raises(kind):
            conn.sql(text)
    assert (conn.engine._tableless.get(text) is not None) is planned


def test_a_statement_the_gate_refuses_is_refused_every_time(conn) -> None:
    for _ in range(2):
        with pytest.raises(SqlPlanError, match=r"reserved|unknown table"):
            conn.sql('SELECT 1 FROM "__quiver_x"')


def test_kept_verdicts_and_plans_stay_bounded(conn, monkeypatch) -> None:
    monkeypatch.setattr(engine, "MEMO_STATEMENTS", 8)
    for i in range(30):
        assert conn.sql(f"SELECT {i} AS i").column("i").to_pylist() == [i]
    assert len(conn.engine._tableless) <= 8
    assert len(conn.engine._gated) <= 8


def test_long_statements_are_not_kept(conn) -> None:
    values = ", ".join(f"({i})" for i in range(3000))
    text = f"SELECT count(*) AS n FROM (VALUES {values}) AS t(x)"
    assert len(text) > analysis.CACHED_STATEMENT_CHARS
    assert conn.sql(text).column("n").to_pylist() == [3000]
    assert text not in conn.engine._gated
    assert text not in conn.engine._tableless


def _kept(conn, text: str) -> pa.Table | None:
    planned = conn.engine._tableless[analysis.analyse(text).text]
    assert planned is not None
    return planned.rows


def test_a_literals_only_query_keeps_its_rows_and_answers_from_them(conn) -> None:
    text = "SELECT 1 AS one, 'a' || 'b' AS s, NULL AS n"
    first = conn.sql(text)
    rows = _kept(conn, text)
    assert rows is not None and rows.equals(_fresh(text))
    assert conn.sql(text).equals(first)


@pytest.mark.parametrize("text", [
    "SELECT now() AS t",                                   # a function: computed per run
    "SELECT CAST(1 AS BIGINT) AS c",
    "SELECT * FROM (VALUES (1), (2)) a(x), (VALUES (3), (4)) b(y)",  # a join: not bounded
])
def test_queries_with_calls_or_joins_keep_no_rows(conn, text) -> None:
    conn.sql(text)
    assert _kept(conn, text) is None


def test_a_literals_only_query_that_fails_fails_on_every_run(conn) -> None:
    for _ in range(2):
        with pytest.raises(SqlError):
            conn.sql("SELECT 1 / 0 AS boom")


def test_a_literals_only_result_past_the_bound_is_not_kept(conn) -> None:
    text = "VALUES " + ",".join(["(1,2)"] * 1300)   # 1,300 rows of two BIGINTs: 20.8 KB
    assert len(text) <= analysis.CACHED_STATEMENT_CHARS
    assert conn.sql(text).num_rows == 1300
    assert _kept(conn, text) is None
    assert engine.CONSTANT_RESULT_BYTES < 1300 * 16
