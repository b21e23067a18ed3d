"""SELECT through the SQL engine equals DuckDB over the same live rows.

Tables of many superfiles (with deletes and updates) and of one superfile, on
memory and local roots; one smoke test on loopback S3.
"""

from __future__ import annotations

import re
import uuid

import duckdb
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine
from tests.supertable.conftest import docs_schema, make_docs

TAGS = pa.table({"year": pa.array(range(2000, 2026), pa.int32()),
                 "era": [("old" if y < 2010 else "mid" if y < 2020 else "new")
                         for y in range(2000, 2026)]})


def _build(con: catalog.Connection) -> None:
    docs = con.create_table("docs", docs_schema())
    for i in range(3):
        docs.append(make_docs(300, seed=i))
        docs.commit()
    docs.delete([("year", "<", 2004)])
    docs.update([("year", "=", 2011)], {"title": "updated title"})
    one = con.create_table("one", docs_schema())
    one.append(make_docs(250, seed=7))
    one.commit()
    one.delete([("year", "=", 2020)])
    tags = con.create_table("tags", TAGS.schema)
    tags.append(TAGS)
    tags.commit()


@pytest.fixture(scope="module", params=["memory", "local"])
def engine(request, tmp_path_factory):
    if request.param == "memory":
        uri = f"memory://sql{uuid.uuid4().hex}"
    else:
        uri = str(tmp_path_factory.mktemp("sqlroot"))
    con = catalog.connect(uri)
    _build(con)
    yield SqlEngine(con)
    con.close()
    if request.param == "memory":
        drop_memory_store(uri)


@pytest.fixture(scope="module")
def oracle(engine):
    db = duckdb.connect()
    for name in ("docs", "one", "tags"):
        live = engine.connection.open_table(name).to_arrow(with_id=True)
        db.register(f"{name}_arrow", live)
        db.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_arrow")
    yield db
    db.close()


def _rows(table: pa.Table) -> list[tuple]:
    cols = [c.to_pylist() for c in table.columns]
    return sorted(zip(*cols, strict=True), key=repr)


def _same(engine: SqlEngine, oracle: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    got = engine.execute(sql)
    want = oracle.sql(sql).to_arrow_table()
    assert got.num_rows == want.num_rows, sql
    assert _rows(got) == _rows(want), sql
    return got


QUERIES = [
    "SELECT count(*) AS n FROM {t}",
    "SELECT year, count(*) AS n, min(title) AS lo FROM {t} GROUP BY year",
    "SELECT _id, title FROM {t} WHERE body LIKE '%json%' AND title NOT LIKE 'rust%'",
    "SELECT _id, year FROM {t} WHERE year BETWEEN 2008 AND 2012 OR year IN (2020, 2025)",
    "SELECT _id FROM {t} WHERE title = 'updated title'",
    "SELECT d.title, g.era FROM {t} d JOIN tags g ON d.year = g.year WHERE g.era = 'old'",
    "SELECT _id, year, row_number() OVER (PARTITION BY year ORDER BY _id) AS rn FROM {t}",
    "WITH recent AS (SELECT _id, year FROM {t} WHERE year >= 2015) "
    "SELECT year, count(*) AS n FROM recent GROUP BY year HAVING count(*) > 3",
    "SELECT year FROM {t} WHERE year > 2020 UNION SELECT year FROM tags WHERE year < 2002",
    "SELECT count(*) AS n FROM {t} a JOIN {t} b ON a._id = b._id AND a.year = b.year",
    "SELECT _id FROM {t} WHERE _id IN (SELECT _id FROM {t} WHERE year = 2015)",
]


@pytest.mark.parametrize("table", ["docs", "one"])
@pytest.mark.parametrize("query", QUERIES)
def test_select_equals_duckdb_over_live_rows(engine, oracle, table, query):
    _same(engine, oracle, query.format(t=table))


def test_deleted_rows_never_appear_and_updated_rows_keep_their_id(engine, oracle):
    got = _same(engine, oracle, "SELECT _id, title, year FROM docs WHERE year = 2011")
    assert got.num_rows > 0
    assert set(got.column("title").to_pylist()) == {"updated title"}
    assert engine.execute("SELECT count(*) FROM docs WHERE year < 2004").column(0)[0].as_py() == 0
    ids = engine.execute("SELECT _id FROM docs").column(0).to_pylist()
    assert len(ids) == len(set(ids)) == engine.connection.open_table("docs").count()


def test_select_star_hides_the_row_id_and_named_id_is_returned(engine):
    star = engine.execute("SELECT * FROM docs LIMIT 3")
    assert star.column_names == ["title", "body", "year", "emb"]
    qualified = engine.execute("SELECT d.*, d._id FROM docs AS d LIMIT 3")
    assert qualified.column_names == ["title", "body", "year", "emb", "_id"]
    joined = engine.execute("SELECT * FROM docs JOIN tags ON docs.year = tags.year LIMIT 2")
    assert "_id" not in joined.column_names
    assert joined.column_names == ["title", "body", "year", "emb", "year", "era"]
    excluded = engine.execute("SELECT * EXCLUDE (emb) FROM docs LIMIT 1")
    assert excluded.column_names == ["title", "body", "year"]
    inner = engine.execute("SELECT * FROM (SELECT _id, title FROM docs) AS s LIMIT 1")
    assert inner.column_names == ["_id", "title"]


def test_results_keep_the_declared_column_types(engine):
    got = engine.execute("SELECT * FROM docs LIMIT 5")
    assert got.schema.field("title").type == pa.string()
    assert got.schema.field("year").type == pa.int32()
    assert got.schema.field("emb").type.list_size == 8


def test_explain_shows_datafusion_plan_without_internal_view_names_of_other_tables(engine):
    plan = engine.execute("EXPLAIN SELECT title FROM docs WHERE year = 2015")
    text = "\n".join(plan.column(1).to_pylist())
    assert "TableScan" in text or "DataSourceExec" in text


def _files_scanned(engine, sql):
    """Files (or in-memory file partitions) the physical plan reads."""
    plan = engine.execute("EXPLAIN " + sql).column(1)[1].as_py()
    return plan.count(".parquet") + sum(int(n) for n in re.findall(r"partitions=(\d+)", plan))


def test_where_on_manifest_ranges_skips_files_and_keeps_answers(engine, oracle):
    # The update wrote one file holding only year 2011; a filter outside it skips that file.
    assert _files_scanned(engine, "SELECT title FROM docs WHERE year = 2015") < \
        _files_scanned(engine, "SELECT title FROM docs")
    for q in ("SELECT _id FROM docs WHERE year = 2015",
              "SELECT _id FROM docs WHERE 2011 = year",
              "SELECT _id FROM docs WHERE year IN (2011, 2015) AND title <> 'x'",
              "SELECT _id FROM docs WHERE year > 2010 AND year < 2012",
              "SELECT _id FROM docs WHERE year = 2011 OR title = 'updated title'",
              "SELECT _id FROM docs WHERE year = -1 OR year >= 2011"):
        _same(engine, oracle, q)


def test_large_result_streams_in_several_batches(tmp_path):
    con = catalog.connect(str(tmp_path / "big"))
    t = con.create_table("big", pa.schema([("k", pa.int64()), ("v", pa.string())]))
    n = 200_000  # past three batches of the engine (65,536 rows)
    t.append(pa.table({"k": pa.array(range(n), pa.int64()), "v": ["x"] * n}))
    t.commit()
    engine = SqlEngine(con)
    reader = engine.sql("SELECT k, v FROM big")
    assert isinstance(reader, pa.RecordBatchReader)
    sizes, total = 0, 0
    for batch in reader:
        sizes += 1
        total += batch.num_rows
    assert total == n and sizes > 1
    con.close()


def test_a_commit_between_statements_is_seen_by_the_next_statement(tmp_path):
    con = catalog.connect(str(tmp_path / "fresh"))
    t = con.create_table("docs", docs_schema())
    engine = SqlEngine(con)
    assert engine.execute("SELECT count(*) FROM docs").column(0)[0].as_py() == 0
    for i in range(6):
        t.append(make_docs(10, seed=i))
        t.commit()
        assert engine.execute("SELECT count(*) FROM docs").column(0)[0].as_py() == 10 * (i + 1)
    # Old versions' views are dropped once unused.
    assert len({v.split("@")[2] for v in engine.views.registered_views()}) <= 4
    con.close()


def test_streamed_result_reads_the_snapshot_pinned_at_planning(tmp_path):
    con = catalog.connect(str(tmp_path / "pinned"))
    t = con.create_table("docs", docs_schema())
    t.append(make_docs(50, seed=1))
    t.commit()
    engine = SqlEngine(con)
    reader = engine.sql("SELECT a._id FROM docs a JOIN docs b ON a._id = b._id")
    t.delete([("year", ">", 0)])
    assert reader.read_all().num_rows == 50
    assert engine.execute("SELECT count(*) FROM docs").column(0)[0].as_py() == 0
    assert engine.execute("SELECT * FROM docs").column_names == ["title", "body", "year", "emb"]
    con.close()


def test_select_over_s3_root_equals_table_rows(s3_server):
    uri = f"s3://{s3_server.new_bucket()}/sql"
    con = catalog.connect(uri, **s3_server.options())
    t = con.create_table("docs", docs_schema())
    for i in range(2):
        t.append(make_docs(100, seed=i))
        t.commit()
    t.delete([("year", "<", 2010)])
    engine = SqlEngine(con)
    got = engine.execute("SELECT _id, title, year FROM docs WHERE year >= 2015")
    want = t.to_arrow(["title", "year"], [("year", ">=", 2015)], with_id=True)
    assert _rows(got) == _rows(want.select(["_id", "title", "year"]))
    assert engine.execute("SELECT count(*) FROM docs").column(0)[0].as_py() == t.count()
    con.close()
