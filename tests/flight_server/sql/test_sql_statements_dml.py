"""INSERT, DELETE and UPDATE through the SQL engine on memory and local roots, checked
statement by statement against DuckDB running the same SQL; rejected statements write
nothing; rows keep their ``_id`` through updates."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql.errors import SqlError, SqlPlanError
from quiver.flight_server.sql.statements import coerce

CREATE = ("CREATE TABLE docs (id BIGINT, title VARCHAR, body VARCHAR, year INT, "
          "score DOUBLE, emb FLOAT[3])")
COLUMNS = "id, title, body, year, score, emb"


@pytest.fixture(params=["memory", "local"])
def root(request, tmp_path) -> Iterator[str]:
    uri = f"memory://m{uuid.uuid4().hex}" if request.param == "memory" else str(tmp_path / "r")
    yield uri
    if request.param == "memory":
        drop_memory_store(uri)


@pytest.fixture
def engine(root) -> Iterator[SqlEngine]:
    con = catalog.connect(root)
    yield SqlEngine(con)
    con.close()


@pytest.fixture
def pair(engine) -> tuple[SqlEngine, duckdb.DuckDBPyConnection]:
    oracle = duckdb.connect()
    engine.execute(CREATE)
    oracle.execute(CREATE)
    return engine, oracle


def ours(engine: SqlEngine, table: str = "docs") -> list[tuple]:
    got = engine.execute(f"SELECT {COLUMNS} FROM {table} ORDER BY id")
    return [tuple(r.values()) for r in got.to_pylist()]


def theirs(oracle: duckdb.DuckDBPyConnection, table: str = "docs") -> list[tuple]:
    return [tuple(list(v) if isinstance(v, tuple) else v for v in r)
            for r in oracle.execute(f"SELECT {COLUMNS} FROM {table} ORDER BY id").fetchall()]


def both(engine: SqlEngine, oracle: duckdb.DuckDBPyConnection, sql: str) -> int:
    got = engine.execute(sql).to_pylist()
    want = oracle.execute(sql).fetchall()
    assert got == [{"count": want[0][0]}], sql
    assert ours(engine) == theirs(oracle), sql
    return got[0]["count"]


STEPS = [
    "INSERT INTO docs VALUES (1, 'rust parser', 'fast json parser', 2001, 1.5, [1, 0, 0]), "
    "(2, 'http client', 'async http', 2005, NULL, [0, 1, 0]), "
    "(3, 'vector index', NULL, 2010, 3.25, '[0.5, 0.5, -1]')",
    "INSERT INTO docs (id, title, year) VALUES (4, 'just a title', 2020), (5, 'x', NULL)",
    "INSERT INTO docs SELECT id + 10, upper(title), body, year + 1, score * 2, emb "
    "FROM docs WHERE year < 2015",
    "UPDATE docs SET body = 'updated ' || title, score = coalesce(score, 0) + 1 "
    "WHERE year BETWEEN 2002 AND 2012",
    "DELETE FROM docs WHERE title LIKE '%CLIENT%' OR year IS NULL",
    "UPDATE docs SET emb = [0, 0, 1], year = 1999 WHERE id IN (1, 11)",
    "UPDATE docs SET title = 'nothing matches' WHERE id > 1000",
    "DELETE FROM docs WHERE id > 1000",
    "INSERT INTO docs SELECT id + 100, title, body, year, score, emb FROM docs",
    "UPDATE docs SET year = year + 100",
    "DELETE FROM docs WHERE id % 2 = 0",
    "DELETE FROM docs",
    "INSERT INTO docs (emb, id) VALUES ('[1, 2, 3]', 7), ([3, 2, 1], 8)",
]


def test_every_statement_matches_duckdb_running_the_same_sql(pair):
    engine, oracle = pair
    counts = [both(engine, oracle, sql) for sql in STEPS]
    assert counts == [3, 2, 3, 5, 2, 2, 0, 0, 6, 12, 4, 8, 2]


def test_an_updated_row_keeps_its_id_and_an_inserted_row_gets_a_new_one(pair):
    engine, _ = pair
    engine.execute(STEPS[0])
    before = {r["id"]: r["_id"] for r in engine.execute("SELECT _id, id FROM docs").to_pylist()}
    engine.execute("UPDATE docs SET title = 'renamed', id = id * 10 WHERE id >= 2")
    engine.execute("INSERT INTO docs (id) VALUES (99)")
    after = {r["id"]: r["_id"] for r in engine.execute("SELECT _id, id FROM docs").to_pylist()}
    assert after[1] == before[1] and after[20] == before[2] and after[30] == before[3]
    assert after[99] not in before.values()
    table = engine.connection.open_table("docs")
    assert table.bm25_search("title", "renamed", 5, columns=["id"]).column("id").to_pylist() \
        in ([20, 30], [30, 20])


def test_rows_written_are_durable_and_seen_by_another_connection(pair, root):
    engine, _ = pair
    engine.execute(STEPS[0])
    engine.execute("UPDATE docs SET score = 9 WHERE id = 2")
    engine.execute("DELETE FROM docs WHERE id = 3")
    with catalog.connect(root) as other:
        got = other.open_table("docs").to_arrow(["id", "score"]).sort_by("id").to_pylist()
    assert got == [{"id": 1, "score": 1.5}, {"id": 2, "score": 9.0}]


def test_insert_select_of_a_table_into_itself_reads_one_snapshot(pair):
    engine, _ = pair
    engine.execute(STEPS[0])
    for expected in (3, 6, 12):
        assert engine.execute("INSERT INTO docs SELECT * FROM docs").to_pylist() == [
            {"count": expected}]
    assert engine.execute("SELECT count(*) AS n FROM docs").to_pylist() == [{"n": 24}]


def test_delete_using_another_table_deletes_each_matching_row_once(pair):
    engine, oracle = pair
    both(engine, oracle, STEPS[0])
    for db in (engine, oracle):
        db.execute("CREATE TABLE gone (ref BIGINT)")
        db.execute("INSERT INTO gone VALUES (1), (1), (3), (42)")
    assert both(engine, oracle, "DELETE FROM docs USING gone WHERE docs.id = gone.ref") == 2


def test_update_of_a_vector_moves_the_row_in_vector_search(pair):
    engine, _ = pair
    engine.execute(STEPS[0])
    engine.execute("UPDATE docs SET emb = '[-3, -3, 9]' WHERE id = 2")
    table = engine.connection.open_table("docs")
    hits = table.vector_search("emb", [-1.0, -1.0, 3.0], 1, columns=["id"])
    assert hits.column("id").to_pylist() == [2]


def _state(engine: SqlEngine) -> tuple[int, list[tuple]]:
    table = engine.connection.open_table("docs")
    return table.refresh().version, ours(engine)


@pytest.mark.parametrize(("sql", "error", "words"), [
    ("INSERT INTO nodocs VALUES (1)", SqlPlanError, ["unknown table 'nodocs'", "docs"]),
    ("INSERT INTO docs (id, colour) VALUES (1, 'red')", SqlPlanError,
     ["no column 'colour'", "title"]),
    ("INSERT INTO docs (id, _id) VALUES (1, 2)", SqlPlanError, ["'_id' is assigned"]),
    ("INSERT INTO docs (id, id) VALUES (1, 2)", SqlPlanError, ["named more than once"]),
    ("INSERT INTO docs (id, title) VALUES (1, 'a', 'b')", SqlPlanError,
     ["names 2 column(s)", "has 3"]),
    ("INSERT INTO docs VALUES (1, 'a')", SqlPlanError, ["names 6 column(s)", "has 2"]),
    ("INSERT INTO docs (id, title) SELECT id FROM docs", SqlPlanError,
     ["names 2 column(s)", "gives 1"]),
    ("INSERT INTO docs (id, year) VALUES (1, 'nineteen')", SqlPlanError,
     ["column 'year'", "INT"]),
    ("INSERT INTO docs (id, year) VALUES (1, 2.5)", SqlPlanError, ["column 'year'"]),
    ("INSERT INTO docs (id, emb) VALUES (1, [1, 2])", SqlPlanError,
     ["'emb'", "FLOAT[3]", "2 values"]),
    ("INSERT INTO docs (id, emb) VALUES (1, '[1, 2, 3, 4]')", SqlPlanError,
     ["'emb'", "4 values"]),
    ("INSERT INTO docs (id, emb) VALUES (1, 'one two three')", SqlPlanError,
     ["'emb'", "vector"]),
    ("INSERT INTO docs (id, emb) VALUES (1, 7)", SqlPlanError, ["cannot store BIGINT"]),
    ("INSERT OR REPLACE INTO docs (id) VALUES (1)", SqlPlanError, ["ALTERNATIVE"]),
    ("INSERT INTO docs (id) VALUES (1) RETURNING id", SqlPlanError, ["RETURNING"]),
    ("DELETE FROM nodocs WHERE id = 1", SqlPlanError, ["unknown table 'nodocs'"]),
    ("DELETE FROM docs WHERE colour = 'red'", SqlError, ["colour"]),
    ("UPDATE docs SET colour = 'red'", SqlPlanError, ["no column 'colour'"]),
    ("UPDATE docs SET _id = 7", SqlPlanError, ["'_id' is assigned"]),
    ("UPDATE docs SET year = 1, year = 2", SqlPlanError, ["set more than once"]),
    ("UPDATE docs SET year = 'soon' WHERE id = 1", SqlPlanError, ["column 'year'"]),
    ("UPDATE docs SET emb = [1, 2] WHERE id = 1", SqlPlanError, ["2 values"]),
    ("UPDATE docs SET year = nothing + 1", SqlError, ["nothing"]),
    ("UPDATE docs SET year = 1 FROM docs AS d2 WHERE d2.id = docs.id", SqlPlanError,
     ["UPDATE with FROM"]),
])
def test_rejected_statements_name_the_problem_and_write_nothing(pair, sql, error, words):
    engine, oracle = pair
    both(engine, oracle, STEPS[0])
    before = _state(engine)
    with pytest.raises(error) as err:
        engine.execute(sql)
    for w in words:
        assert w in str(err.value), str(err.value)
    assert _state(engine) == before


def test_not_null_columns_reject_missing_values(engine):
    engine.execute("CREATE TABLE strict (id BIGINT NOT NULL, note VARCHAR)")
    with pytest.raises(SqlPlanError, match=r"'id'.*NOT NULL"):
        engine.execute("INSERT INTO strict (note) VALUES ('no id')")
    engine.execute("INSERT INTO strict VALUES (1, 'ok')")
    with pytest.raises(SqlPlanError, match="NOT NULL"):
        engine.execute("UPDATE strict SET id = NULL")
    assert engine.execute("SELECT * FROM strict").to_pylist() == [{"id": 1, "note": "ok"}]


def test_dates_and_timestamps_are_written_from_text(engine):
    engine.execute("CREATE TABLE ev (d DATE, t TIMESTAMP)")
    engine.execute("INSERT INTO ev VALUES ('2024-02-29', '2024-02-29 12:30:00')")
    got = engine.connection.open_table("ev").to_arrow()
    assert got.column("d")[0].as_py().isoformat() == "2024-02-29"
    assert got.column("t")[0].as_py().isoformat() == "2024-02-29T12:30:00"


def test_coerce_keeps_values_that_fit_and_parses_text_vectors():
    field = pa.field("v", pa.list_(pa.float32(), 2))
    got = coerce(pa.array([" [1, -2.5] ", None, "[3,4]"]), field, "t")
    assert got.type == field.type
    assert got.to_pylist() == [[1.0, -2.5], None, [3.0, 4.0]]
    got = coerce(pa.chunked_array([pa.array(["x", None], pa.string_view())]),
                 pa.field("s", pa.string()), "t")
    assert got.type == pa.string() and got.to_pylist() == ["x", None]
