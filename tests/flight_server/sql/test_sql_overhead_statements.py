"""The fixed cost of a SQL statement: bare counts from the manifest, one scan source per
view, open tables reused without rereading the catalog, and the answers unchanged."""

from __future__ import annotations

import os
import re
import time
import uuid

import duckdb
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store, open_store
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql import engine as engine_module
from quiver.flight_server.sql.views import KEEP_VERSIONS
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore

FILES = 6


def _build(con: catalog.Connection) -> None:
    docs = con.create_table("docs", docs_schema())
    for i in range(FILES):
        docs.append(make_docs(120, seed=i))
        docs.commit()
    docs.delete([("year", "<", 2004)])
    # An updated row keeps its _id in a new file; the old copy is tombstoned.
    docs.update([("year", "=", 2011)], {"title": "updated title"})


@pytest.fixture(scope="module", params=["memory", "local", "s3"])
def engine(request, tmp_path_factory, s3_server):
    opts: dict[str, str] = {}
    if request.param == "memory":
        uri = f"memory://ovh{uuid.uuid4().hex}"
    elif request.param == "local":
        uri = str(tmp_path_factory.mktemp("ovh"))
    else:
        uri = f"s3://{s3_server.new_bucket()}/ovh"
        opts = s3_server.options()
    con = catalog.connect(uri, **opts)
    _build(con)
    yield SqlEngine(con)
    con.close()
    if request.param == "memory":
        drop_memory_store(uri)


@pytest.fixture(scope="module")
def oracle(engine):
    db = duckdb.connect()
    live = engine.connection.open_table("docs").to_arrow(with_id=True)
    db.register("docs_arrow", live)
    db.execute("CREATE TABLE docs AS SELECT * FROM docs_arrow")
    yield db
    db.close()


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(*(c.to_pylist() for c in table.columns), strict=True), key=repr)


def _same(engine: SqlEngine, oracle: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    got = engine.execute(sql)
    want = oracle.sql(sql).to_arrow_table()
    assert _rows(got) == _rows(want), sql
    return got


def test_bare_count_is_the_live_row_count_with_datafusions_column(engine, oracle):
    live = oracle.sql("SELECT count(*) FROM docs").fetchall()[0][0]
    for bare, planned in (("SELECT count(*) FROM docs", "SELECT count(*) FROM docs WHERE true"),
                          ("SELECT count(1) FROM docs", "SELECT count(1) FROM docs WHERE true"),
                          ("SELECT COUNT(*) AS N FROM docs AS d",
                           "SELECT COUNT(*) AS N FROM docs AS d WHERE 1 = 1"),
                          ('select count(*) as "Rows" from docs;',
                           'select count(*) as "Rows" from docs where true')):
        got, want = engine.execute(bare), engine.execute(planned)
        assert got.schema == want.schema, bare
        assert got.column(0).to_pylist() == want.column(0).to_pylist() == [live], bare


def test_bare_count_plans_no_scan_and_explain_says_so(engine):
    fresh = SqlEngine(engine.connection)
    assert fresh.execute("SELECT count(*) FROM docs").num_rows == 1
    assert fresh.views.registered_views() == []
    plan = fresh.execute("EXPLAIN SELECT count(*) FROM docs")
    notes = [p for p in plan.column(1).to_pylist() if p.startswith("count:")]
    assert len(notes) == 1 and "manifest" in notes[0] and "no scan" in notes[0]


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM docs WHERE year > 2010",
    "SELECT year, count(*) FROM docs GROUP BY year",
    "SELECT count(*) FROM docs GROUP BY year",
    "SELECT count(DISTINCT year) FROM docs",
    "SELECT count(title) FROM docs",
    "SELECT count(2) FROM docs",
    "SELECT count(*) FROM docs LIMIT 0",
    "SELECT count(*) FROM docs OFFSET 1",
    "SELECT count(*) FROM docs HAVING count(*) > 1000000",
    "SELECT count(*) FROM docs AS a JOIN docs AS b ON a._id = b._id",
    "SELECT count(*) FROM docs, docs AS b",
    "SELECT count(*), min(year) FROM docs",
    "SELECT DISTINCT count(*) FROM docs",
    "WITH docs AS (SELECT 1 AS x) SELECT count(*) FROM docs",
    "SELECT count(*) FROM (SELECT * FROM docs WHERE year = 2011) AS s",
])
def test_counts_that_are_not_bare_are_computed_by_the_scan(engine, oracle, sql):
    _same(engine, oracle, sql)


def test_count_follows_each_new_version(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    try:
        table = con.create_table("t", docs_schema())
        engine = SqlEngine(con)
        assert engine.execute("SELECT count(*) AS n FROM t").column(0).to_pylist() == [0]
        table.append(make_docs(50, seed=1))
        table.commit()
        assert engine.execute("SELECT count(*) AS n FROM t").column(0).to_pylist() == [50]
        gone = table.delete([("year", ">=", 2015)])
        assert gone > 0
        want = 50 - gone
        assert engine.execute("SELECT count(*) AS n FROM t").column(0).to_pylist() == [want]
        assert engine.execute("SELECT count(*) FROM t WHERE true").column(0).to_pylist() == [want]
    finally:
        con.close()


def test_views_with_tombstones_and_updates_equal_the_live_rows(engine, oracle):
    for sql in ("SELECT _id, title, year FROM docs",
                "SELECT _id, title FROM docs WHERE year = 2011",
                "SELECT year, count(*) AS n FROM docs GROUP BY year",
                "SELECT count(*) FROM docs WHERE title = 'updated title'",
                "SELECT a._id FROM docs AS a JOIN docs AS b ON a._id = b._id WHERE a.year > 2008"):
        _same(engine, oracle, sql)


def _scan_sources(engine: SqlEngine, sql: str) -> int:
    plan = engine.execute("EXPLAIN " + sql).column(1)[1].as_py()
    # Parquet and in-memory sources, and datasets over disk-cache copies (remote roots).
    return plan.count("DataSourceExec") + plan.count("DatasetExec")


def test_a_view_over_many_files_is_planned_as_a_few_scans(engine):
    snap = engine.connection.open_table("docs").snapshot()
    files = sum(1 for f in snap.files if f.live_rows > 0)
    assert files > FILES
    sources = _scan_sources(engine, "SELECT title FROM docs")
    if engine.connection.store.kind == "s3":
        assert sources >= files  # one source per file there
    else:
        # Clean files, files with tombstones, and the tombstone list.
        assert sources <= 3


def test_link_directories_of_evicted_versions_are_removed(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    try:
        table = con.create_table("t", docs_schema())
        engine = SqlEngine(con)
        for i in range(KEEP_VERSIONS + 4):
            table.append(make_docs(20, seed=i))
            table.commit()
            got = engine.execute("SELECT count(*) FROM t WHERE true").column(0).to_pylist()
            assert got == [20 * (i + 1)]
        links = engine.views._links
        assert links is not None
        assert 0 < len(os.listdir(links)) <= KEEP_VERSIONS
        assert len(engine.views.registered_views()) <= KEEP_VERSIONS
    finally:
        con.close()


def _catalog_reads(store: FaultyStore) -> int:
    return sum(1 for op, path in store.log if op == "get" and path.startswith("_catalog/"))


def test_open_tables_are_not_reread_from_the_catalog_each_statement(tmp_path):
    store = FaultyStore(open_store(str(tmp_path / "root")))
    con = catalog.Connection(store)
    try:
        table = con.create_table("t", docs_schema())
        table.append(make_docs(30, seed=3))
        table.commit()
        engine = SqlEngine(con)
        engine.execute("SELECT count(*) FROM t WHERE true")
        before = _catalog_reads(store)
        started = time.monotonic()
        for _ in range(20):
            engine.execute("SELECT title FROM t WHERE year > 2010")
        elapsed = time.monotonic() - started
        rereads = _catalog_reads(store) - before
        assert rereads <= 1 + int(elapsed / engine_module.CATALOG_RECHECK_S)
        # A commit after the table was opened is still seen by the next statement.
        table.append(make_docs(5, seed=4))
        table.commit()
        assert engine.execute("SELECT count(*) FROM t WHERE true").column(0).to_pylist() == [35]
    finally:
        con.close()


def test_a_table_dropped_and_recreated_through_the_connection_is_seen_at_once(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    try:
        old = con.create_table("t", docs_schema())
        old.append(make_docs(30, seed=3))
        old.commit()
        engine = SqlEngine(con)
        assert engine.execute("SELECT count(*) FROM t WHERE true").column(0).to_pylist() == [30]
        con.drop_table("t")
        with pytest.raises(Exception, match=re.escape("unknown table 't'")):
            engine.execute("SELECT count(*) FROM t")
        new = con.create_table("t", docs_schema())
        new.append(make_docs(7, seed=5))
        new.commit()
        assert engine.execute("SELECT count(*) FROM t WHERE true").column(0).to_pylist() == [7]
        assert engine.execute("SELECT count(*) FROM t").column(0).to_pylist() == [7]
    finally:
        con.close()


def test_a_table_recreated_by_another_connection_is_seen_after_the_recheck_time(tmp_path):
    root = str(tmp_path / "root")
    con, other = catalog.connect(root), catalog.connect(root)
    try:
        old = con.create_table("t", docs_schema())
        old.append(make_docs(30, seed=3))
        old.commit()
        engine = SqlEngine(con)
        assert engine.execute("SELECT count(*) FROM t").column(0).to_pylist() == [30]
        other.drop_table("t")
        new = other.create_table("t", docs_schema())
        new.append(make_docs(9, seed=6))
        new.commit()
        deadline = time.monotonic() + engine_module.CATALOG_RECHECK_S + 2.0
        seen = None
        while time.monotonic() < deadline:
            seen = engine.execute("SELECT count(*) FROM t").column(0).to_pylist()
            if seen == [9]:
                break
            time.sleep(0.05)
        assert seen == [9]
        assert _rows(engine.execute("SELECT count(*) FROM t WHERE true")) == [(9,)]
    finally:
        other.close()
        con.close()


@pytest.mark.parametrize("call", [
    "bm25_search('docs', 'body', 'rust async', 7)",
    "bm25_search('docs', 'title', 'rust', 5, 'and')",
    "token_match('docs', 'body', 'rust')",
    "exact_match('docs', 'title', 'updated title')",
])
def test_bare_search_answers_as_the_planned_statement_does(engine, call):
    bare = engine.execute(f"SELECT * FROM {call}")
    planned = engine.execute(f"SELECT * FROM {call} AS s WHERE true")
    assert bare.schema == planned.schema
    assert bare.to_pylist() == planned.to_pylist()


def test_bare_search_errors_name_the_problem_as_the_planned_statement_does(engine):
    for call in ("bm25_search('docs', 'nope', 'rust', 5)", "bm25_search('gone', 'b', 'x', 5)",
                 "bm25_search('docs', 'body', 'rust')", "bm25_search('docs', 'body', 'x', -1)"):
        with pytest.raises(Exception) as bare:
            engine.execute(f"SELECT * FROM {call}")
        with pytest.raises(Exception) as planned:
            engine.execute(f"SELECT * FROM {call} AS s WHERE true")
        assert type(bare.value) is type(planned.value), call
        assert str(planned.value) in str(bare.value) or str(bare.value) in str(planned.value)


def test_search_after_schema_reuses_rows_only_for_the_same_table_version(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    try:
        table = con.create_table("t", docs_schema())
        table.append(make_docs(60, seed=3))
        table.commit()
        engine = SqlEngine(con)
        sql = "SELECT _id FROM bm25_search('t', 'body', 'rust', 1000)"
        assert engine.schema(sql).names[0] == "_id"
        first = engine.execute(sql)
        assert first.to_pylist() == engine.execute(sql).to_pylist()
        table.append(make_docs(60, seed=4))
        table.commit()
        after = engine.execute(sql)
        want = table.bm25_search("body", "rust", 1000)
        assert sorted(after.column("_id").to_pylist()) == sorted(want.column("_id").to_pylist())
        assert after.num_rows > first.num_rows
    finally:
        con.close()
