"""``SELECT <columns or *> FROM exact_match('t', 'col', 'v') [LIMIT n]`` answered by the
point lookup gives exactly what the function gives through DataFusion: the same schema
(``_id``, a NULL ``score``, the columns), rows, ``_id`` order and errors.

Oracle: the same engine with point lookups off (the function's relation through
DataFusion, or the function alone for ``SELECT *``). The tables are the point-lookup
tests' own: several superfiles with deletes and updates, write-log files without
indexes, NULL and wordless values, on memory and local roots.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from quiver.flight_server.sql import SqlEngine, analysis, point
from quiver.flight_server.sql.errors import SqlError
from tests.flight_server.sql import test_sql_point_lookup as base
from tests.flight_server.sql.test_sql_point_lookup import ABSENT, NAMES, _lit, _taken

# The point-lookup tests' tables and engines (fast, and point lookups off).
engines = base.engines

PROJECTIONS = ["*", "_id, name", "name AS n, score, year", "m.*", "score", "kind, _id, note",
               "m.name, m.score AS s"]
VALUES = sorted(set(NAMES) | set(ABSENT) | {"updated name"})


def _call(table: str, value: str, column: str = "name") -> str:
    return f"exact_match({_lit(table)}, {_lit(column)}, {_lit(value)})"


def _same(fast: SqlEngine, general: SqlEngine, sql: str, params=None) -> tuple[pa.Table, int]:
    """The fast engine's result, checked equal to the general path's in schema, rows and
    row order; and how many point lookups it ran."""
    got, runs = _taken(fast, sql, params)
    want = general.execute(sql, params)
    assert got.schema.equals(want.schema), (sql, got.schema, want.schema)
    assert got.to_pylist() == want.to_pylist(), sql
    assert fast.schema(sql, params).equals(want.schema), sql
    return got, runs


@pytest.mark.parametrize("table", ["items", "logged"])
def test_exact_match_through_the_lookup_equals_the_function_for_every_value(engines, table):
    fast, general = engines
    found = 0
    for value in VALUES:
        for proj in PROJECTIONS:
            sql = f"SELECT {proj} FROM {_call(table, value)} AS m"
            got, runs = _same(fast, general, sql)
            # Values without a word ('', '   ', '--') are left to the function.
            assert runs == (1 if value.strip(" -") else 0), sql
            found += got.num_rows
        bare, runs = _same(fast, general, f"SELECT * FROM {_call(table, value)}")
        assert runs == (1 if value.strip(" -") else 0)
        ids = bare.column("_id").to_pylist()
        assert ids == sorted(ids)
        assert bare.schema.names[:2] == ["_id", "score"]
        assert bare.column("score").null_count == bare.num_rows
        assert set(bare.column("name").to_pylist()) <= {value}
    assert found > 0


def test_deleted_and_updated_rows_are_not_found(engines):
    fast, general = engines
    for table in ("items", "logged"):
        got, runs = _same(fast, general, f"SELECT * FROM {_call(table, 'requests')}")
        assert runs == 1 and got.num_rows > 3
        # Rows of year 2003 (items) and 2002 (logged) were deleted.
        assert not {2003 if table == "items" else 2002} & set(got.column("year").to_pylist())
    got, runs = _same(fast, general, f"SELECT _id, year FROM {_call('items', 'updated name')}")
    assert runs == 1 and set(got.column("year").to_pylist()) == {2005}
    assert len(fast.connection.open_table("items").snapshot().files) > 1


def test_limit_keeps_the_first_rows_by_id(engines):
    fast, general = engines
    every = fast.execute(f"SELECT _id, name, score FROM {_call('items', 'requests')}")
    assert every.num_rows > 3
    for n in (0, 1, 2, every.num_rows, every.num_rows + 5):
        sql = f"SELECT _id, name, score FROM {_call('items', 'requests')} LIMIT {n}"
        got, runs = _same(fast, general, sql)
        assert runs == 1
        assert got.to_pylist() == every.slice(0, n).to_pylist()


def test_null_wordless_and_unindexed_go_the_function(engines):
    fast, general = engines
    for sql in [f"SELECT * FROM {_call('items', '')}",
                f"SELECT name FROM {_call('items', '   ')}",
                f"SELECT _id FROM {_call('logged', '--')}",
                # kind has no BM25 index: the function compares every row.
                f"SELECT _id, kind FROM {_call('items', 'lib', 'kind')}"]:
        got, runs = _same(fast, general, sql)
        assert runs == 0, sql
        assert got.num_rows > 0, sql


def test_bound_parameters_take_the_lookup(engines):
    fast, general = engines
    for value in ("requests", "it's", "日本語 テキスト", "nothing at all"):
        got, runs = _same(fast, general, "SELECT _id, name FROM exact_match(?, ?, ?)",
                          ["items", "name", value])
        assert runs == 1
        assert set(got.column("name").to_pylist()) <= {value}


@pytest.mark.parametrize("sql", [
    "SELECT * FROM exact_match('nosuch', 'name', 'requests')",
    "SELECT name FROM exact_match('nosuch', 'name', 'requests')",
    "SELECT name FROM exact_match('ITEMS', 'name', 'requests')",
    "SELECT name FROM exact_match('items', 'missing', 'requests')",
    "SELECT name FROM exact_match('items', 'year', 'requests')",
    "SELECT missing FROM exact_match('items', 'name', 'requests')",
    "SELECT name FROM exact_match('items', 'name', 5)",
    "SELECT name FROM exact_match('items', 'name', NULL)",
    "SELECT * FROM exact_match('items', 'name', NULL)",
    "SELECT name FROM exact_match('items', 'name')",
    "SELECT name FROM exact_match('items', 'name', 'requests', 'x')",
    "SELECT name, name FROM exact_match('items', 'name', 'requests')",
    "SELECT items.name FROM exact_match('items', 'name', 'requests')",
    "SELECT x.name FROM exact_match('items', 'name', 'requests') AS m",
])
def test_errors_are_the_functions(engines, sql):
    base.assert_same_error(*engines, sql)


def test_a_table_with_its_own_score_column_is_refused_as_before(engines):
    fast, general = engines
    con = fast.connection
    con.create_table("scored", pa.schema([("name", pa.string()), ("score", pa.float64())]),
                     fts=["name"], vector={})
    try:
        t = con.open_table("scored")
        t.append(pa.table({"name": ["a b"], "score": [1.0]}))
        t.commit()
        sql = "SELECT name FROM exact_match('scored', 'name', 'a b')"
        messages = []
        for engine in (fast, general):
            with pytest.raises(SqlError) as error:
                engine.execute(sql)
            messages.append(str(error.value))
        assert messages[0] == messages[1] and "score" in messages[0]
    finally:
        con.drop_table("scored")


def test_explain_notes_the_lookup(engines):
    fast, general = engines
    sql = f"EXPLAIN SELECT name FROM {_call('items', 'requests')}"
    notes = [p for k, p in zip(*(c.to_pylist() for c in fast.execute(sql).columns),
                               strict=True) if k == "quiver_index_path"]
    assert any(n.startswith("point lookup: items.name = 'requests'") for n in notes)
    assert not any("point lookup" in str(p) for p in general.execute(sql).column(1).to_pylist())


def test_other_shapes_go_the_general_path(engines):
    fast, general = engines
    for sql in ["SELECT name FROM exact_match('items', 'name', 'requests') WHERE year > 2001",
                "SELECT name FROM exact_match('items', 'name', 'requests') ORDER BY year",
                "SELECT upper(name) FROM exact_match('items', 'name', 'requests')",
                "SELECT name FROM exact_match('items', 'name', 'req' || 'uests')",
                "SELECT count(*) FROM exact_match('items', 'name', 'requests')",
                "SELECT _id FROM token_match('items', 'name', 'requests')"]:
        got, runs = _taken(fast, sql)
        assert runs == 0, sql
        assert got.equals(general.execute(sql)), sql


@pytest.mark.parametrize("sql, table, projections, equality, limit", [
    ("SELECT * FROM exact_match('t', 'name', 'a')", "t", ((None, None),), ("name", "a"), None),
    ("SELECT m.name AS N, score, m.* FROM EXACT_MATCH('My T', 'Big', 'it''s') m LIMIT 3",
     "My T", (("name", "n"), ("score", "score"), (None, None)), ("Big", "it's"), 3),
])
def test_analysis_reads_the_exact_match_shape(sql, table, projections, equality, limit):
    found = analysis.analyse(sql).point
    assert found is not None and found.function and found.quoted
    assert (found.table, found.projections, found.equalities, found.limit) == \
        (table, projections, (equality,), limit)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM exact_match('t', 'name', 'a') WHERE name = 'a'",
    "SELECT * FROM exact_match('t', 'name', E'a')",
    "SELECT * FROM exact_match('t', 'name', 5)",
    "SELECT * FROM exact_match('t', 'name')",
    "SELECT * FROM exact_match('t', 'name', 'a', 'b')",
    "SELECT t.name FROM exact_match('t', 'name', 'a')",
    "SELECT * FROM token_match('t', 'name', 'a')",
    "SELECT * FROM exact_match('t', 'name', 'a') LIMIT 2 OFFSET 1",
    "SELECT * FROM exact_match('t', 'name', 'a'), u",
    "SELECT name AS x, kind AS x FROM exact_match('t', 'name', 'a')",
])
def test_analysis_leaves_other_exact_match_shapes_alone(sql):
    found = analysis.analyse(sql).point
    assert found is None


def test_the_lookup_counter_moves_only_on_the_fast_engine(engines):
    fast, general = engines
    sql = f"SELECT name FROM {_call('items', 'requests')}"
    before = point.RUNS["statements"]
    general.execute(sql)
    assert point.RUNS["statements"] == before
    fast.execute(sql)
    assert point.RUNS["statements"] == before + 1
