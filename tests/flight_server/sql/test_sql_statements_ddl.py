"""CREATE TABLE, CREATE TABLE AS SELECT, DROP TABLE, SHOW TABLES and DESCRIBE through the
SQL engine, on memory and local roots: what they create, what they return, and that a
rejected statement creates or drops nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest
import sqlglot

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql.errors import SqlPlanError
from quiver.flight_server.sql.statements import arrow_type, is_statement, sql_type
from quiver.superfile import IndexSpec, Metric
from quiver.supertable.errors import TableExistsError


@pytest.fixture(params=["memory", "local"])
def engine(request, tmp_path) -> Iterator[SqlEngine]:
    uri = f"memory://d{uuid.uuid4().hex}" if request.param == "memory" else str(tmp_path / "r")
    con = catalog.connect(uri)
    yield SqlEngine(con)
    con.close()
    if request.param == "memory":
        drop_memory_store(uri)


def rows(engine: SqlEngine, sql: str) -> list[dict]:
    return engine.execute(sql).to_pylist()


DOCS = ("CREATE TABLE docs (id BIGINT, title VARCHAR, body VARCHAR, embedding FLOAT[4])")


# -- types -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "arrow"), [
    ("BIGINT", pa.int64()), ("INT", pa.int32()), ("INTEGER", pa.int32()),
    ("SMALLINT", pa.int16()), ("TINYINT", pa.int8()), ("DOUBLE", pa.float64()),
    ("FLOAT", pa.float32()), ("REAL", pa.float32()), ("VARCHAR", pa.string()),
    ("VARCHAR(20)", pa.string()), ("TEXT", pa.string()), ("STRING", pa.string()),
    ("BOOLEAN", pa.bool_()), ("DATE", pa.date32()), ("TIMESTAMP", pa.timestamp("us")),
    ("TIMESTAMPTZ", pa.timestamp("us", tz="UTC")), ("BLOB", pa.binary()),
    ("DECIMAL(10,2)", pa.decimal128(10, 2)), ("FLOAT[384]", pa.list_(pa.float32(), 384)),
    ("REAL[3]", pa.list_(pa.float32(), 3)), ("DOUBLE[2]", pa.list_(pa.float64(), 2)),
    ("VARCHAR[]", pa.list_(pa.string())),
])
def test_sql_types_map_to_arrow_types_and_back(sql, arrow):
    kind = sqlglot.parse_one(f"CREATE TABLE t (c {sql})", read="duckdb").find(
        sqlglot.exp.ColumnDef).args["kind"]
    assert arrow_type(kind) == arrow
    again = sqlglot.parse_one(f"CREATE TABLE t (c {sql_type(arrow)})", read="duckdb").find(
        sqlglot.exp.ColumnDef).args["kind"]
    assert arrow_type(again) == arrow


def test_create_table_declares_every_supported_type(engine):
    engine.execute("CREATE TABLE t (a BIGINT NOT NULL, b INT, c SMALLINT, d DOUBLE, e FLOAT, "
                   "f VARCHAR, g BOOLEAN, h DATE, i TIMESTAMP, j FLOAT[8])")
    schema = engine.connection.open_table("t").schema
    assert schema == pa.schema([
        pa.field("a", pa.int64(), nullable=False), ("b", pa.int32()), ("c", pa.int16()),
        ("d", pa.float64()), ("e", pa.float32()), ("f", pa.string()), ("g", pa.bool_()),
        ("h", pa.date32()), ("i", pa.timestamp("us")), ("j", pa.list_(pa.float32(), 8))])


# -- CREATE TABLE ------------------------------------------------------------------------------


def test_create_with_options_builds_the_named_indexes_and_describe_shows_them(engine):
    got = rows(engine, DOCS + " WITH (fts = 'title,body', vector = 'embedding', "
                              "metric = 'l2')")
    assert got == [{"result": "created"}]
    table = engine.connection.open_table("docs")
    assert table.spec == IndexSpec.of(fts=["title", "body"], vector={"embedding": Metric.L2})
    assert rows(engine, "DESCRIBE docs") == [
        {"column_name": "id", "data_type": "BIGINT", "is_nullable": "YES", "index": None},
        {"column_name": "title", "data_type": "VARCHAR", "is_nullable": "YES",
         "index": "bm25"},
        {"column_name": "body", "data_type": "VARCHAR", "is_nullable": "YES", "index": "bm25"},
        {"column_name": "embedding", "data_type": "FLOAT[4]", "is_nullable": "YES",
         "index": "vector(l2)"},
    ]


def test_create_without_options_indexes_every_string_and_float_vector_column(engine):
    engine.execute(DOCS)
    assert engine.connection.open_table("docs").spec == IndexSpec.of(
        fts=["title", "body"], vector={"embedding": Metric.COSINE})


@pytest.mark.parametrize(("options", "spec"), [
    ("fts = ''", IndexSpec.of(fts=[], vector={"embedding": "cosine"})),
    ("vector = ''", IndexSpec.of(fts=["title", "body"], vector={})),
    ("fts = 'body', vector = 'embedding:inner_product'",
     IndexSpec.of(fts=["body"], vector={"embedding": "inner_product"})),
    ("metric = 'l2'", IndexSpec.of(fts=["title", "body"], vector={"embedding": "l2"})),
    ("fts = ('TITLE', 'body')", IndexSpec.of(fts=["title", "body"],
                                             vector={"embedding": "cosine"})),
    ("vector_codes = 'pq'", IndexSpec.of(fts=["title", "body"], vector={"embedding": "cosine"},
                                         vector_codes={"embedding": "pq"})),
    ("vector_codes = 'embedding:SQ8'",
     IndexSpec.of(fts=["title", "body"], vector={"embedding": "cosine"},
                  vector_codes={"embedding": "sq8"})),
])
def test_an_option_left_out_keeps_its_default_and_an_empty_one_means_none(
        engine, options, spec):
    engine.execute(f"{DOCS} WITH ({options})")
    assert engine.connection.open_table("docs").spec == spec


def test_if_not_exists_leaves_the_existing_table_alone(engine):
    engine.execute(DOCS)
    engine.execute("INSERT INTO docs (id) VALUES (1)")
    assert rows(engine, "CREATE TABLE IF NOT EXISTS docs (other INT)") == [{"result": "exists"}]
    assert rows(engine, "SELECT id FROM docs") == [{"id": 1}]
    assert engine.connection.open_table("docs").schema.names == ["id", "title", "body",
                                                                 "embedding"]
    with pytest.raises(TableExistsError):
        engine.execute("CREATE TABLE docs (other INT)")


def test_unquoted_names_fold_to_lower_case_and_quoted_names_keep_theirs(engine):
    engine.execute("CREATE TABLE Docs (Title VARCHAR, \"Body\" VARCHAR)")
    engine.execute("CREATE TABLE \"Mixed\" (a INT)")
    assert rows(engine, "SHOW TABLES") == [{"table_name": "Mixed"}, {"table_name": "docs"}]
    assert engine.connection.open_table("docs").schema.names == ["title", "Body"]
    engine.execute("INSERT INTO DOCS (TITLE, \"Body\") VALUES ('x', 'y')")
    assert rows(engine, "SELECT title, \"Body\" FROM docs") == [{"title": "x", "Body": "y"}]


@pytest.mark.parametrize(("sql", "words"), [
    ("CREATE TABLE bad (_id BIGINT, a INT)", ["'_id' is reserved"]),
    ("CREATE TABLE bad (a INT, A BIGINT)", ["duplicate column", "'a'"]),
    ("CREATE TABLE bad (a JSON)", ["unsupported column type JSON"]),
    ("CREATE TABLE bad (a INT PRIMARY KEY)", ["only NOT NULL"]),
    ("CREATE TABLE bad (a VARCHAR) WITH (fts = 'b')", ["'b'", "not among"]),
    ("CREATE TABLE bad (a INT) WITH (fts = 'a')", ["'a'", "BM25 index needs a string"]),
    ("CREATE TABLE bad (v TINYINT[4]) WITH (vector = 'v')", ["fixed-size list of float16"]),
    ("CREATE TABLE bad (v FLOAT[4]) WITH (metric = 'hamming')", ["unknown metric"]),
    ("CREATE TABLE bad (v FLOAT[4]) WITH (colour = 'blue')", ["unknown table option",
                                                              "'colour'"]),
    ("CREATE TABLE bad (v VARCHAR) WITH (fts = 'v', vector = 'v')",
     ["vector column 'v' has type string"]),
    ("CREATE VIEW bad AS SELECT 1 AS a", ["CREATE VIEW is not supported"]),
    ("CREATE OR REPLACE TABLE bad (a INT)", ["OR REPLACE"]),
    ("CREATE TEMP TABLE bad (a INT)", ["unsupported table property"]),
    ("CREATE TABLE other.bad (a INT)", ["qualified table names"]),
    ("CREATE TABLE bad (a INT) AS SELECT 1 AS a", ["leave out the column list"]),
    ("CREATE TABLE bad AS SELECT 1 AS _id", ["'_id' is reserved"]),
    ("CREATE TABLE bad AS SELECT * FROM missing", ["unknown table 'missing'"]),
])
def test_malformed_creates_say_what_is_wrong_and_create_nothing(engine, sql, words):
    with pytest.raises(SqlPlanError) as err:
        engine.execute(sql)
    for w in words:
        assert w in str(err.value)
    assert engine.connection.list_tables() == []


# -- CREATE TABLE AS SELECT --------------------------------------------------------------------


def _source(engine: SqlEngine) -> None:
    engine.execute(DOCS + " WITH (fts = 'body')")
    engine.execute("INSERT INTO docs VALUES (1, 'a', 'rust fast', [1, 0, 0, 0]), "
                   "(2, 'b', 'python slow', [0, 1, 0, 0]), (3, 'c', NULL, NULL)")
    engine.execute("DELETE FROM docs WHERE id = 2")


def test_create_as_select_copies_the_live_rows_with_plain_types(engine):
    _source(engine)
    assert rows(engine, "CREATE TABLE copy AS SELECT * FROM docs") == [{"count": 2}]
    copy = engine.connection.open_table("copy")
    assert copy.schema == engine.connection.open_table("docs").schema
    assert copy.spec == IndexSpec.of(fts=["title", "body"], vector={"embedding": "cosine"})
    got = copy.to_arrow().sort_by("id").to_pylist()
    assert got == [{"id": 1, "title": "a", "body": "rust fast", "embedding": [1, 0, 0, 0]},
                   {"id": 3, "title": "c", "body": None, "embedding": None}]
    assert copy.bm25_search("body", "rust", 5).column("id").to_pylist() == [1]


def test_create_as_select_takes_options_and_computed_columns(engine):
    _source(engine)
    got = rows(engine, "CREATE TABLE summary WITH (fts = '') AS "
                       "SELECT upper(title) AS t, id * 2.5 AS score FROM docs WHERE id < 3")
    assert got == [{"count": 1}]
    summary = engine.connection.open_table("summary")
    assert summary.schema == pa.schema([("t", pa.string()), ("score", pa.float64())])
    assert summary.spec == IndexSpec()
    assert summary.to_arrow().to_pylist() == [{"t": "A", "score": 2.5}]


def test_create_as_select_if_not_exists_does_not_run_the_query(engine):
    _source(engine)
    got = rows(engine, "CREATE TABLE IF NOT EXISTS docs AS SELECT * FROM missing")
    assert got == [{"result": "exists"}]


def test_create_as_select_of_no_rows_creates_an_empty_table(engine):
    _source(engine)
    assert rows(engine, "CREATE TABLE none AS SELECT id, body FROM docs WHERE id > 100") == [
        {"count": 0}]
    assert engine.connection.open_table("none").count() == 0


# -- DROP, SHOW, DESCRIBE ----------------------------------------------------------------------


def test_drop_removes_tables_and_if_exists_tolerates_missing_ones(engine):
    for name in ("a", "b", "c"):
        engine.execute(f"CREATE TABLE {name} (x INT)")
    assert rows(engine, "SHOW TABLES") == [{"table_name": n} for n in "abc"]
    assert rows(engine, "DROP TABLE b") == [{"result": "dropped"}]
    assert rows(engine, "DROP TABLE IF EXISTS b") == [{"result": "not found"}]
    assert rows(engine, "DROP TABLE IF EXISTS a, nothere") == [{"result": "dropped"}]
    assert rows(engine, "SHOW TABLES") == [{"table_name": "c"}]
    engine.execute("CREATE TABLE b (y VARCHAR)")
    assert rows(engine, "SELECT * FROM b") == []


def test_drop_of_an_unknown_table_drops_none_of_the_others(engine):
    engine.execute("CREATE TABLE a (x INT)")
    with pytest.raises(SqlPlanError, match="unknown table 'nothere'"):
        engine.execute("DROP TABLE a, nothere")
    assert engine.connection.list_tables() == ["a"]


def test_show_tables_of_an_empty_root_is_an_empty_listing(engine):
    got = engine.execute("SHOW TABLES")
    assert got.num_rows == 0 and got.column_names == ["table_name"]


def test_describe_of_an_unknown_table_names_it(engine):
    with pytest.raises(SqlPlanError, match="unknown table 'ghost'"):
        engine.execute("DESCRIBE ghost")


def test_describe_shows_not_null_columns(engine):
    engine.execute("CREATE TABLE t (a BIGINT NOT NULL, b DECIMAL(10,2), c TIMESTAMPTZ)")
    assert [(r["data_type"], r["is_nullable"]) for r in rows(engine, "DESCRIBE t")] == [
        ("BIGINT", "NO"), ("DECIMAL(10,2)", "YES"), ("TIMESTAMPTZ", "YES")]


@pytest.mark.parametrize(("sql", "expected"), [
    ("CREATE TABLE t (a INT)", True), ("CREATE TABLE t AS SELECT 1", True),
    ("CREATE VIEW v AS SELECT 1", True), ("DROP TABLE t", True), ("SHOW TABLES", True),
    ("DESCRIBE t", True), ("INSERT INTO t VALUES (1)", True), ("DELETE FROM t", True),
    ("UPDATE t SET a = 1", True), ("SELECT * FROM t", False), ("VALUES (1)", False),
    ("DESCRIBE SELECT 1", False), ("WITH x AS (SELECT 1) SELECT * FROM x", False),
])
def test_statements_are_told_from_queries(sql, expected):
    assert is_statement(sqlglot.parse_one(sql, read="duckdb")) is expected
