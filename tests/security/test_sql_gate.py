"""SQL reaches nothing outside the root's tables: no file is read or written, no other
object-store prefix is listed, no setting or internal relation is reachable, on a local
root and an S3 root, through the embedded engine and through Flight SQL."""

from __future__ import annotations

import string
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pytest
from adbc_driver_manager import ProgrammingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect
from quiver.flight_server.sql.errors import SqlError
from quiver.supertable.errors import TableError

SECRET = "quiver-sentinel-secret"


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A file outside the root that no statement may read, and a folder beside it in
    which no statement may create anything."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "secret.csv"
    path.write_text(f"{SECRET}\n{SECRET}-2\n")
    return path


def _untouched(sentinel: Path) -> None:
    assert sentinel.read_text() == f"{SECRET}\n{SECRET}-2\n"
    assert sorted(p.name for p in sentinel.parent.iterdir()) == ["secret.csv"]


@pytest.fixture(params=["local", "s3"])
def conn(request, tmp_path: Path) -> Iterator:
    if request.param == "local":
        root = tmp_path / "root"
        root.mkdir()
        c = connect(str(root))
    else:
        s3 = request.getfixturevalue("s3_server")
        bucket = s3.new_bucket("gate")
        c = connect(f"s3://{bucket}/root", **s3.options())
    c.sql("CREATE TABLE docs (id BIGINT, body VARCHAR) WITH (fts = 'body')")
    c.sql("INSERT INTO docs VALUES (1, 'rust async'), (2, 'python web')")
    try:
        yield c
    finally:
        c.close()


def _refused(conn, sql: str) -> str:
    with pytest.raises((SqlError, TableError)) as err:
        conn.sql(sql)
    return str(err.value)


def _file_attacks(path: Path) -> list[str]:
    out = str(path.parent / f"written-{uuid.uuid4().hex}.csv")
    return [
        f"EXPLAIN ANALYZE COPY (SELECT 'x' AS a) TO '{out}' STORED AS CSV",
        f"COPY (SELECT 'x' AS a) TO '{out}' STORED AS CSV",
        f"COPY docs TO '{out}'",
        f"EXPLAIN COPY (SELECT 1) TO '{out}'",
        f"CREATE EXTERNAL TABLE sh (line VARCHAR) STORED AS CSV LOCATION '{path}'",
        f"CREATE EXTERNAL TABLE sh (line VARCHAR) STORED AS CSV WITH ORDER (line ASC) "
        f"LOCATION '{path}' OPTIONS ('format.has_header' 'false')",
        f"SELECT * FROM '{path}'",
        f"SELECT * FROM \"{path}\"",
        f"INSERT INTO '{out}' VALUES (1)",
        "SELECT 1 INTO stolen",
    ]


def test_statements_reaching_files_are_refused_and_touch_nothing(conn, sentinel: Path) -> None:
    for sql in _file_attacks(sentinel):
        message = _refused(conn, sql)
        assert SECRET not in message, sql
    # Nothing was registered by the attempts: the usual follow-up reads no file.
    message = _refused(conn, "WITH sh AS (SELECT * FROM sh) SELECT * FROM sh")
    assert "unknown table 'sh'" in message
    _untouched(sentinel)
    assert conn.sql("SELECT count(*) AS n FROM docs").column("n")[0].as_py() == 2


def test_other_prefixes_of_the_bucket_are_unreachable(s3_server) -> None:
    bucket = s3_server.new_bucket("gate-prefix")
    s3_server._client.put_object(Bucket=bucket, Key="other/secret.csv",
                                 Body=f"{SECRET}\n".encode())
    conn = connect(f"s3://{bucket}/root", **s3_server.options())
    try:
        conn.sql("CREATE TABLE docs (id BIGINT)")
        for sql in [f"CREATE EXTERNAL TABLE o (line VARCHAR) STORED AS CSV "
                    f"LOCATION 's3://{bucket}/other/'",
                    f"SELECT * FROM 's3://{bucket}/other/secret.csv'",
                    f"COPY (SELECT 1) TO 's3://{bucket}/other/written.csv'",
                    f"EXPLAIN ANALYZE COPY (SELECT 1) TO 's3://{bucket}/root/_catalog/x'"]:
            assert SECRET not in _refused(conn, sql)
    finally:
        conn.close()
    listed = s3_server._client.list_objects_v2(Bucket=bucket, Prefix="other/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["other/secret.csv"]
    listed = s3_server._client.list_objects_v2(Bucket=bucket, Prefix="root/_catalog/x")
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.parametrize("sql", [
    "SET datafusion.execution.batch_size = 1",
    "SHOW ALL",
    "SHOW datafusion.execution.batch_size",
    "SELECT * FROM information_schema.df_settings",
    "SELECT * FROM datafusion.information_schema.df_settings",
    "SELECT * FROM information_schema.schemata",
    "SELECT * FROM datafusion.public.docs",
    "SELECT * FROM other_catalog.public.docs",
    "PREPARE p AS SELECT 1",
    "DEALLOCATE p",
    "CREATE VIEW v AS SELECT 1",
    "DROP VIEW v",
    "BEGIN",
    "EXPLAIN INSERT INTO docs VALUES (3, 'x')",
    "EXPLAIN DELETE FROM docs",
    "SELECT * FROM read_parquet('x.parquet')",
    "this is not sql at all",
])
def test_settings_and_other_statement_kinds_are_refused(conn, sql: str) -> None:
    message = _refused(conn, sql)
    assert "Traceback" not in message


def test_internal_view_names_cannot_be_named_or_shadowed(conn) -> None:
    # What a scan ticket would reveal: "<table>@<uuid8>@v<N>" (and its in-memory twin).
    conn.sql("SELECT * FROM docs")
    uuid8 = conn.open_table("docs").snapshot().manifest.table_uuid.replace("-", "")[:8]
    version = conn.open_table("docs").snapshot().version
    internal = f"docs@{uuid8}@v{version}"
    for sql in [f'SELECT * FROM "{internal}"',
                f'SELECT * FROM "{internal}@mem"',
                f'WITH "{internal}" AS (SELECT 1 AS x) SELECT * FROM "{internal}"',
                f'WITH "{internal}" AS (SELECT * FROM "{internal}") SELECT * FROM "{internal}"',
                f'SELECT * FROM docs AS "{internal}"',
                "SELECT * FROM __quiver_information_tables_0"]:
        _refused(conn, sql)
    assert conn.sql("SELECT id FROM docs ORDER BY id").column("id").to_pylist() == [1, 2]


def test_a_cte_reading_its_own_name_reads_the_table_not_itself(conn) -> None:
    out = conn.sql("WITH docs AS (SELECT * FROM docs WHERE id = 1) SELECT id FROM docs")
    assert out.column("id").to_pylist() == [1]
    out = conn.sql("WITH a AS (SELECT id FROM docs), b AS (SELECT id FROM a WHERE id = 2) "
                   "SELECT id FROM b")
    assert out.column("id").to_pylist() == [2]
    _refused(conn, "WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a")


def test_allowed_statements_still_run(conn) -> None:
    assert conn.sql("SELECT * FROM generate_series(1, 3)").num_rows == 3
    assert conn.sql("SELECT unnest(range(1, 4)) AS v").num_rows == 3
    assert conn.sql("SELECT repeat('ab', 3) AS r").column("r")[0].as_py() == "ababab"
    assert conn.sql("SELECT lpad('7', 3, '0') AS r").column("r")[0].as_py() == "007"
    assert conn.sql("EXPLAIN SELECT * FROM docs").num_rows >= 1
    assert conn.sql("EXPLAIN ANALYZE SELECT count(*) FROM docs").num_rows >= 1
    assert conn.sql("SHOW TABLES").column(0).to_pylist() == ["docs"]
    assert conn.sql("DESCRIBE docs").num_rows == 2
    assert conn.sql("SELECT table_name FROM information_schema.tables").num_rows == 1
    rows = conn.sql("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t "
                    "WHERE n < 5) SELECT n FROM t")
    assert rows.num_rows == 5


def test_the_gate_answers_through_flight_with_invalid_argument(sentinel: Path,
                                                             tmp_path: Path) -> None:
    root = tmp_path / "served"
    root.mkdir()
    conn = connect(str(root))
    server = QuiverFlightServer(conn, "grpc://127.0.0.1:0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = adbc.connect(f"grpc://127.0.0.1:{server.port}")
        with client, client.cursor() as cur:
            for sql in _file_attacks(sentinel):
                with pytest.raises(ProgrammingError) as err:
                    cur.execute(sql)
                # Paths read as table names are no table of the root: NOT_FOUND.
                assert str(err.value).startswith(("INVALID_ARGUMENT", "NOT_FOUND")), sql
                assert SECRET not in str(err.value)
    finally:
        server.shutdown()
        conn.close()
    _untouched(sentinel)


_PIECES = [
    "SELECT", "*", "FROM", "COPY", "TO", "STORED AS CSV", "CREATE", "EXTERNAL", "TABLE",
    "LOCATION", "WITH", "AS", "(", ")", ",", ";", "EXPLAIN", "ANALYZE", "INSERT", "INTO",
    "VALUES", "1", "'x'", "docs", "sh", "SET", "SHOW", "ALL", "information_schema.df_settings",
    "generate_series(1, 3)", "repeat('x', 5)", "'{path}'", "'{out}'", "\"{path}\"",
    "datafusion.public.docs", "UNION", "ALL", "WHERE", "id", "=", "DROP", "VIEW", "UPDATE",
    "DELETE", "bm25_search('docs', 'body', 'rust', 5)", "OPTIONS ('format.has_header' 'true')",
]


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(pieces=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=14),
       noise=st.text(alphabet=string.printable, max_size=12))
def test_random_statements_never_fail_internally_nor_touch_files(pieces, noise,
                                                                 tmp_path_factory) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    sentinel = base / "outside" / "secret.csv"
    sentinel.parent.mkdir()
    sentinel.write_text(f"{SECRET}\n{SECRET}-2\n")
    root = base / "root"
    root.mkdir()
    conn = _fuzz_conn(root)
    out = sentinel.parent / "written.csv"
    sql = " ".join(pieces).replace("{path}", str(sentinel)).replace("{out}", str(out)) + noise
    try:
        result = conn.sql(sql)
        assert SECRET not in str(result.to_pylist())
    except (SqlError, TableError) as exc:
        assert SECRET not in str(exc)
    finally:
        conn.close()
    _untouched(sentinel)


def _fuzz_conn(root: Path):
    conn = connect(str(root))
    conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR) WITH (fts = 'body')")
    conn.sql("INSERT INTO docs VALUES (1, 'rust async')")
    return conn
