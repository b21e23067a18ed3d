"""Bad search calls in SQL name what is wrong; equality on indexed columns takes the
index path by the documented cost rule and returns what the scan returns."""

from __future__ import annotations

import uuid

import duckdb
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine, SqlPlanError
from tests.supertable.conftest import docs_schema, make_docs

DIM = 4
V = "[0.1, 0.2, 0.3, 0.4]"
V2 = "[0.4, 0.3, 0.2, 0.1]"


@pytest.fixture(scope="module")
def engine():
    uri = f"memory://rwerr{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    docs = con.create_table("docs", docs_schema(DIM), fts=["body"], vector={"emb": "l2"})
    docs.append(make_docs(80, 1, DIM))
    docs.commit()
    yield SqlEngine(con)
    con.close()
    drop_memory_store(uri)


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT title FROM docs WHERE bm25(nope, 'rust') > 0", "has no column 'nope'"),
    ("SELECT title FROM docs WHERE bm25(title, 'rust') > 0",
     "column 'title' of table 'docs' has no BM25 index"),
    ("SELECT title FROM docs WHERE bm25(year, 'rust') > 0", "is int32, not text"),
    ("SELECT title FROM docs WHERE bm25(body, 42) > 0", "the query must be a string literal"),
    ("SELECT title FROM docs WHERE bm25(body, 'rust', 'xor') > 0", "'and' or 'or'"),
    ("SELECT title FROM docs WHERE bm25(body) > 0", "bm25() takes 2 to 3 arguments"),
    ("SELECT title FROM docs WHERE knn(emb, '[0.1, 0.2]', 3)",
     "the query vector has 2 values; column 'emb' of table 'docs' holds vectors of 4"),
    ("SELECT title FROM docs WHERE knn(body, '[0.1]', 3)", "is string, not a vector column"),
    (f"SELECT title FROM docs WHERE knn(emb, '{V}', -1)", "k must be an integer"),
    ("SELECT title FROM docs WHERE knn(emb, '[0.1, x]', 3)", "malformed vector literal"),
    ("SELECT title FROM docs WHERE knn(emb, [0.1, title], 3)", "not a column of the query"),
    (f"SELECT title FROM docs WHERE knn(emb, '{V}', 3) AND knn(emb, '{V2}', 3)",
     "one nearest-neighbour search per reference"),
    (f"SELECT title FROM docs WHERE knn(emb, '{V}', 3) AND bm25(body, 'rust') < 2",
     "bm25() may appear in WHERE only as a lower bound"),
    ("SELECT bm25(x, 'rust') FROM (VALUES ('a')) AS t(x)",
     "must be a column of a table read in the same SELECT"),
    ("SELECT bm25(lower(body), 'rust') FROM docs", "the first argument must be a column"),
    ("SELECT vector_distance(emb) FROM docs", "vector_distance() takes 2 arguments"),
])
def test_bad_search_calls_raise_plan_errors_naming_the_problem(engine, sql, message):
    with pytest.raises(SqlPlanError, match=None) as info:
        engine.execute(sql)
    assert message in str(info.value)


def test_vector_distance_uses_the_column_metric(engine):
    live = engine.connection.open_table("docs").to_arrow(with_id=True)
    got = engine.execute(f"SELECT _id, vector_distance(emb, {V}) AS d FROM docs ORDER BY _id")
    db = duckdb.connect()
    db.register("live", live)
    want = db.sql(f"SELECT _id, list_distance(emb::FLOAT[], {V}::FLOAT[]) AS d FROM live "
                  "ORDER BY _id").fetchall()
    assert got.column("_id").to_pylist() == [r[0] for r in want]
    assert got.column("d").to_pylist() == pytest.approx([r[1] for r in want], abs=1e-5)


# -- equality through the index -----------------------------------------------------------------


def _many_files(con: catalog.Connection) -> None:
    docs = con.create_table("docs", docs_schema(DIM))
    for seed in range(8):
        docs.append(make_docs(40, seed, DIM))
        docs.commit()
    # Inside the titles' min/max range, so only the term blooms can rule files out.
    docs.update([("year", "=", 2011)], {"title": "json quokka"})
    docs.delete([("year", "=", 2012)])


def _oracle(con: catalog.Connection, sql: str) -> list[tuple]:
    db = duckdb.connect()
    db.register("docs", con.open_table("docs").to_arrow(with_id=True))
    return db.sql(sql).fetchall()


def _notes(engine: SqlEngine, sql: str) -> list[str]:
    plan = engine.execute("EXPLAIN " + sql)
    return [p for t, p in zip(plan.column(0).to_pylist(), plan.column(1).to_pylist(),
                              strict=True) if t == "quiver_index_path"]


EQUALITY = [
    "SELECT _id, title, year FROM docs WHERE title = 'json quokka' ORDER BY _id",
    "SELECT _id, year FROM docs WHERE title IN ('json quokka', 'no such title') "
    "AND year > 2000 ORDER BY _id",
    "SELECT count(*) FROM docs WHERE title = 'rust async'",
]


@pytest.mark.parametrize("kind", ["memory", "local", "local-decoded"])
def test_equality_reads_rows_through_exact_match_unless_the_rows_are_in_memory(kind, tmp_path):
    uri = f"memory://rweq{uuid.uuid4().hex}" if kind == "memory" else str(tmp_path / "r")
    con = catalog.connect(uri)
    _many_files(con)
    engine = SqlEngine(con, memory_cache_bytes=(64 << 20) if kind == "local-decoded" else 0)
    try:
        for sql in EQUALITY:
            got = [tuple(r.values()) for r in engine.execute(sql).to_pylist()]
            assert got == _oracle(con, sql)
        # A scan of the table is what brings its rows into memory.
        engine.execute("SELECT count(*) FROM docs WHERE year > 0")
        engine.decoded.wait()
        rare = _notes(engine, EQUALITY[0])
        common = _notes(engine, EQUALITY[2])
        if kind == "local":
            assert len(rare) == 1 and rare[0].startswith("index path: exact_match on docs.title")
            assert "from 1 of" in rare[0]
            assert len(common) == 1 and common[0].startswith("index path: exact_match")
        else:
            for notes in (rare, common):
                assert notes == [notes[0]] and notes[0].startswith("scan: docs.title")
                assert "already in memory" in notes[0]
        for sql in EQUALITY:
            got = [tuple(r.values()) for r in engine.execute(sql).to_pylist()]
            assert got == _oracle(con, sql)
    finally:
        engine.close()
        con.close()
        if kind == "memory":
            drop_memory_store(uri)


def test_equality_on_a_remote_root_reads_rows_through_exact_match(s3_server):
    con = catalog.connect(f"s3://{s3_server.new_bucket()}/quiver", **s3_server.options())
    _many_files(con)
    engine = SqlEngine(con)
    try:
        for sql in EQUALITY:
            got = [tuple(r.values()) for r in engine.execute(sql).to_pylist()]
            assert got == _oracle(con, sql)
        notes = _notes(engine, EQUALITY[1])
        assert len(notes) == 1 and notes[0].startswith("index path: exact_match on docs.title")
        assert engine.views.registered_views() == []
    finally:
        con.close()
