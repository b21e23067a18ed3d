"""What the SQL engine says when a statement is wrong, and how it reads names."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine, SqlError, SqlPlanError, SqlSyntaxError
from quiver.flight_server.sql import parse as sqlparse
from quiver.supertable.errors import TableError
from tests.supertable.conftest import docs_schema, make_docs


@pytest.fixture(scope="module")
def engine():
    uri = f"memory://sqlerr{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    t = con.create_table("docs", docs_schema())
    t.append(make_docs(40, seed=3))
    t.commit()
    con.create_table("Mixed", pa.schema([("k", pa.int64())]))
    yield SqlEngine(con)
    con.close()
    drop_memory_store(uri)


def test_unknown_table_names_it_and_lists_the_tables(engine):
    with pytest.raises(SqlPlanError) as info:
        engine.execute("SELECT * FROM nope")
    assert "'nope'" in str(info.value) and "docs" in str(info.value)


def test_unknown_column_is_a_plan_error_naming_it_without_internal_names(engine):
    with pytest.raises(SqlPlanError) as info:
        engine.execute("SELECT missing_col FROM docs")
    message = str(info.value)
    assert "missing_col" in message
    assert "@v" not in message and "#" not in message


def test_type_error_is_a_plan_error(engine):
    with pytest.raises(SqlPlanError):
        engine.execute("SELECT year + 'abc' FROM docs")


@pytest.mark.parametrize("text", ["SELEC 1", "SELECT * FROM docs WHERE", "SELECT (1"])
def test_syntax_errors_are_syntax_errors(engine, text):
    with pytest.raises(SqlSyntaxError):
        engine.execute(text)


def test_several_statements_at_once_are_refused(engine):
    with pytest.raises(SqlSyntaxError, match="one statement"):
        engine.execute("SELECT 1; SELECT 2")


def test_errors_of_search_functions_keep_their_type(engine):
    with pytest.raises(SqlPlanError, match="nope"):
        engine.execute("SELECT * FROM bm25_search('nope', 'body', 'rust', 3)")


def test_sql_errors_are_not_table_errors_and_table_errors_are_not_sql_errors():
    assert not issubclass(SqlError, TableError)
    assert issubclass(SqlPlanError, SqlError) and issubclass(SqlSyntaxError, SqlError)


def test_unquoted_names_fold_to_lower_case_and_quoted_names_are_exact(engine):
    assert engine.execute("SELECT count(*) FROM DOCS").column(0)[0].as_py() == 40
    assert engine.execute('SELECT count(*) FROM "Mixed"').column(0)[0].as_py() == 0
    with pytest.raises(SqlPlanError):
        engine.execute('SELECT count(*) FROM "DOCS"')


def test_cte_named_like_a_table_shadows_it(engine):
    got = engine.execute("WITH docs AS (SELECT 1 AS x) SELECT * FROM docs")
    assert got.column_names == ["x"] and got.num_rows == 1


def test_queries_without_tables_and_values_run(engine):
    assert engine.execute("SELECT 1 + 1 AS two").column(0)[0].as_py() == 2
    assert engine.execute("VALUES (1), (2)").num_rows == 2


def test_empty_table_answers_with_its_schema(engine):
    got = engine.execute("SELECT * FROM \"Mixed\"")
    assert got.num_rows == 0 and got.schema.names == ["k"]


def test_pin_gives_one_snapshot_per_table_per_statement(engine):
    snaps = []
    with engine._statement():
        snaps.append(engine.pin("docs"))
        snaps.append(engine.pin("docs"))
    assert snaps[0] is snaps[1]
    assert engine.pin("docs").version == snaps[0].version


def test_pruning_filter_reads_only_literal_bounds_of_the_tables_own_columns():
    schema = pa.schema([("year", pa.int32()), ("title", pa.string()), ("score", pa.float64())])

    def dnf(sql):
        expr = sqlparse.parse(sql).expr
        ref = sqlparse.table_refs(expr)[0]
        return sqlparse.pruning_filter(ref, schema)

    assert dnf("SELECT 1 FROM t WHERE year = 5") == [[("year", "=", 5)]]
    assert dnf("SELECT 1 FROM t WHERE 5 < year AND title IN ('a', 'b')") == [
        [("year", ">", 5), ("title", "in", ["a", "b"])]]
    assert dnf("SELECT 1 FROM t WHERE year BETWEEN -2 AND 3") == [
        [("year", ">=", -2), ("year", "<=", 3)]]
    assert dnf("SELECT 1 FROM t WHERE year = 1 OR year = 2") == [
        [("year", "=", 1)], [("year", "=", 2)]]
    # Nothing provable: an OR with an unknown side, NOT, floats, strings against numbers.
    assert dnf("SELECT 1 FROM t WHERE year = 1 OR title LIKE 'a%'") is None
    assert dnf("SELECT 1 FROM t WHERE NOT year = 1") is None
    assert dnf("SELECT 1 FROM t WHERE score > 1.5") is None
    assert dnf("SELECT 1 FROM t WHERE year = '5'") is None
    # With two sources only qualified columns of this table count.
    assert dnf("SELECT 1 FROM t JOIN u ON t.k = u.k WHERE year = 1") is None
    assert dnf("SELECT 1 FROM t AS a JOIN u ON a.k = u.k WHERE a.year = 1") == [
        [("year", "=", 1)]]
