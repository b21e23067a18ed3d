"""The Spark connector against real Quiver servers: reads, writes, errors, partitions, auth.

One local SparkSession (two cores, no UI) serves the whole module; servers run in this
process on port 0 over tmp_path roots.
"""

from __future__ import annotations

import datetime
import decimal
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'pyspark>=4.0')")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)", allow_module_level=True)

from pyspark.sql import SparkSession
from pyspark.sql.types import ArrayType, FloatType

from quiver.flight_server.connectors.spark import (
    ConnectionOptions,
    EndpointPartition,
    QuiverDataSource,
    QuiverSparkError,
    partitions_of,
    read_endpoint,
)
from quiver.flight_server.service import auth
from quiver.flight_server.service.serve import build_server, listening_uri
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect
from quiver.proto import flight_sql_pb2, pack
from tests.flight_server.conftest import free_port
from tests.flight_server.service.test_server_tls import _self_signed

REPO = Path(__file__).resolve().parents[2]
DIM = 4


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    # Python workers start from the JVM's environment: they must find the repository.
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), path) if p)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (SparkSession.builder.master("local[2]").appName("quiver-connector-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.driver.memory", "512m")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.python.worker.reuse", "true")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    session.dataSource.register(QuiverDataSource)
    try:
        yield session
    finally:
        session.stop()


def _docs(n: int = 50) -> pa.Table:
    ids = pa.array(range(n), pa.int64())
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array([float(i) + j / 10 for i in range(n) for j in range(DIM)], pa.float32()), DIM)
    return pa.table({
        "id": ids,
        "title": pa.array([f"title {i}" for i in range(n)]),
        "year": pa.array([2000 + i % 25 for i in range(n)], pa.int32()),
        "rating": pa.array([i / 4 for i in range(n)], pa.float64()),
        "embedding": vectors,
    })


@pytest.fixture
def docs_uri(quiver_server: QuiverFlightServer, flight_uri: str) -> str:
    """A server whose root holds ``docs`` (50 rows with a 4-dim vector column)."""
    quiver_server.conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR, year INT, "
                           f"rating DOUBLE, embedding FLOAT[{DIM}]) WITH (fts = 'title', "
                           "vector = 'embedding')")
    quiver_server.conn.open_table("docs").append(_docs())
    return flight_uri


def _read(spark: SparkSession, uri: str, **options: str):
    reader = spark.read.format("quiver").option("uri", uri)
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load()


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


def _sql_rows(server: QuiverFlightServer, sql: str) -> list[tuple]:
    table = server.conn.sql(sql)
    return sorted(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)),
                      strict=True))


def test_query_read_returns_the_rows_the_sql_engine_returns(spark, quiver_server, docs_uri):
    sql = "SELECT id, title, year, rating FROM docs"
    df = _read(spark, docs_uri, query=sql)
    assert df.columns == ["id", "title", "year", "rating"]
    got = _rows(df)
    assert len(got) == 50
    assert got == _sql_rows(quiver_server, sql)


def test_table_read_gives_every_column_of_the_table(spark, quiver_server, docs_uri):
    df = _read(spark, docs_uri, table="docs")
    assert df.columns == ["id", "title", "year", "rating", "embedding"]
    assert df.count() == 50
    assert dict(df.dtypes) == {"id": "bigint", "title": "string", "year": "int",
                               "rating": "double", "embedding": "array<float>"}


def test_filtered_query_returns_only_matching_rows(spark, quiver_server, docs_uri):
    sql = "SELECT id, title FROM docs WHERE year > 2020 AND id < 40"
    got = _rows(_read(spark, docs_uri, query=sql))
    assert got == _sql_rows(quiver_server, sql)
    assert got and all(i < 40 for i, _ in got)


def test_vector_column_arrives_as_array_of_float_with_its_values(spark, docs_uri):
    df = _read(spark, docs_uri, query="SELECT id, embedding FROM docs WHERE id = 3")
    vector_type = df.schema["embedding"].dataType
    assert isinstance(vector_type, ArrayType) and vector_type.elementType == FloatType()
    (row,) = df.collect()
    assert row.id == 3
    assert row.embedding == pytest.approx([3.0, 3.1, 3.2, 3.3])


def test_search_function_results_read_through_spark(spark, quiver_server, docs_uri):
    sql = "SELECT id, score FROM bm25_search('docs', 'title', 'title 7', 5)"
    got = _rows(_read(spark, docs_uri, query=sql))
    assert got == _sql_rows(quiver_server, sql)
    assert 7 in [i for i, _ in got]


def test_append_write_then_read_back_counts_and_values(spark, quiver_server, docs_uri):
    new = [(100 + i, f"new {i}", [float(i)] * DIM) for i in range(30)]
    df = spark.createDataFrame(new, "id bigint, title string, embedding array<float>") \
        .repartition(3)
    df.write.format("quiver").option("uri", docs_uri).option("table", "docs") \
        .mode("append").save()
    count = quiver_server.conn.sql("SELECT count(*) AS n FROM docs").column(0)[0].as_py()
    assert count == 80
    back = _read(spark, docs_uri, query="SELECT id, title, year, embedding FROM docs "
                                         "WHERE id >= 100 ORDER BY id")
    rows = back.collect()
    assert [r.id for r in rows] == list(range(100, 130))
    assert rows[5].title == "new 5" and rows[5].year is None
    assert rows[5].embedding == pytest.approx([5.0] * DIM)
    # The vector column kept its fixed size, and the appended rows are in its index.
    embedding = quiver_server.conn.open_table("docs").schema.field("embedding").type
    assert embedding == pa.list_(pa.float32(), DIM)
    near = quiver_server.conn.sql(
        "SELECT id FROM vector_search('docs', 'embedding', '[5, 5, 5, 5]', 80)")
    assert {100, 105, 129} <= set(near.column("id").to_pylist())


def test_write_creates_a_missing_table_from_the_dataframe_schema(spark, quiver_server,
                                                                 flight_uri):
    df = spark.createDataFrame([(i, f"t{i}") for i in range(20)], "id bigint, name string")
    df.write.format("quiver").option("uri", flight_uri).option("table", "fresh") \
        .mode("append").save()
    got = quiver_server.conn.sql("SELECT count(*), min(id), max(id) FROM fresh")
    assert [got.column(i)[0].as_py() for i in range(3)] == [20, 0, 19]
    schema = quiver_server.conn.open_table("fresh").schema
    assert schema.field("id").type == pa.int64() and schema.field("name").type == pa.string()


def test_unknown_table_error_carries_the_server_message(spark, flight_uri):
    with pytest.raises(Exception) as err:
        _read(spark, flight_uri, table="nope").collect()
    assert "nope" in str(err.value)
    assert "unknown table" in str(err.value) or "no table" in str(err.value)


def test_bad_query_error_carries_the_server_message(spark, docs_uri):
    with pytest.raises(Exception) as err:
        _read(spark, docs_uri, query="SELECT no_such_column FROM docs").collect()
    assert "no_such_column" in str(err.value)


def test_overwrite_is_rejected_with_a_clear_message(spark, quiver_server, docs_uri):
    df = spark.createDataFrame([(1, "x")], "id bigint, title string")
    with pytest.raises(Exception) as err:
        df.write.format("quiver").option("uri", docs_uri).option("table", "docs") \
            .mode("overwrite").save()
    assert "overwrite" in str(err.value) and "not supported" in str(err.value)
    count = quiver_server.conn.sql("SELECT count(*) FROM docs").column(0)[0].as_py()
    assert count == 50


def test_writing_a_column_the_table_lacks_is_refused(spark, quiver_server, docs_uri):
    df = spark.createDataFrame([(1, "x")], "id bigint, colour string")
    with pytest.raises(Exception) as err:
        df.write.format("quiver").option("uri", docs_uri).option("table", "docs") \
            .mode("append").save()
    assert "colour" in str(err.value)
    assert quiver_server.conn.sql("SELECT count(*) FROM docs").column(0)[0].as_py() == 50


def test_spark_partitions_match_the_query_endpoints(spark, docs_uri):
    sql = "SELECT id FROM docs"
    client = flight.FlightClient(docs_uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        pack(flight_sql_pb2.CommandStatementQuery(query=sql))))
    client.close()
    df = _read(spark, docs_uri, query=sql)
    assert df.rdd.getNumPartitions() == len(info.endpoints)


def test_every_endpoint_becomes_a_partition_and_reads_its_ticket(docs_uri):
    client = flight.FlightClient(docs_uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        pack(flight_sql_pb2.CommandStatementQuery(query="SELECT id FROM docs"))))
    client.close()
    (endpoint,) = info.endpoints
    several = flight.FlightInfo(info.schema, info.descriptor,
                                [flight.FlightEndpoint(endpoint.ticket, [docs_uri])] * 3, -1, -1)
    parts = partitions_of(several)
    assert [p.locations for p in parts] == [[docs_uri]] * 3
    conn = ConnectionOptions(uri=docs_uri)
    for part in parts:
        rows = pa.Table.from_batches(list(read_endpoint(conn, part)), info.schema)
        assert sorted(rows.column("id").to_pylist()) == list(range(50))


def test_endpoint_is_read_from_its_location_not_the_original_uri(tmp_path, docs_uri):
    other_conn = connect(str(tmp_path / "other"))
    other = QuiverFlightServer(other_conn, "grpc://127.0.0.1:0")
    try:
        other_conn.sql("CREATE TABLE docs (id BIGINT)")
        other_conn.sql("INSERT INTO docs VALUES (7), (8)")
        other_uri = f"grpc://127.0.0.1:{other.port}"
        # A plain-SQL ticket means the same thing to both servers; only where it is sent
        # decides which rows come back.
        ticket = b"SELECT id FROM docs"
        conn = ConnectionOptions(uri=docs_uri)
        at_location = read_endpoint(conn, EndpointPartition(ticket, [other_uri]))
        assert sorted(pa.Table.from_batches(list(at_location)).column("id").to_pylist()) \
            == [7, 8]
        without = read_endpoint(conn, EndpointPartition(ticket, []))
        assert len(pa.Table.from_batches(list(without))) == 50
        dead = f"grpc://127.0.0.1:{free_port()}"
        past_dead = read_endpoint(conn, EndpointPartition(ticket, [dead, other_uri]))
        assert len(pa.Table.from_batches(list(past_dead))) == 2
    finally:
        other.shutdown()
        other_conn.close()


@pytest.fixture
def secured(tmp_path) -> Iterator[str]:
    """A server that requires a password or a static token."""
    config = auth.AuthConfig(users={"ann": "hunter2"}, tokens=frozenset({"tok-secret"}))
    server = build_server(str(tmp_path / "secured"), port=0, auth=config)
    try:
        server.conn.sql("CREATE TABLE t (id BIGINT)")
        server.conn.sql("INSERT INTO t VALUES (1), (2), (3)")
        yield listening_uri(server)
    finally:
        server.shutdown()
        server.conn.close()


def test_password_and_token_options_authenticate_reads_and_writes(spark, secured):
    by_password = _read(spark, secured, table="t", username="ann", password="hunter2")
    assert by_password.count() == 3
    df = spark.createDataFrame([(4,)], "id bigint")
    df.write.format("quiver").option("uri", secured).option("table", "t") \
        .option("token", "tok-secret").mode("append").save()
    by_token = _read(spark, secured, table="t", token="tok-secret")
    assert sorted(r.id for r in by_token.collect()) == [1, 2, 3, 4]


def test_missing_credentials_are_refused_with_the_server_message(spark, secured):
    with pytest.raises(Exception) as err:
        _read(spark, secured, table="t").collect()
    assert "quiver server" in str(err.value)
    with pytest.raises(Exception) as err:
        _read(spark, secured, table="t", username="ann", password="wrong").collect()
    assert "authentication" in str(err.value)


def test_options_are_checked_before_any_call(tmp_path):
    with pytest.raises(QuiverSparkError, match="uri"):
        ConnectionOptions.from_options({})
    with pytest.raises(QuiverSparkError, match="password"):
        ConnectionOptions.from_options({"uri": "grpc://127.0.0.1:1", "username": "ann"})
    with pytest.raises(QuiverSparkError, match="tls_root_certs"):
        ConnectionOptions.from_options({"uri": "grpc+tls://127.0.0.1:1",
                                        "tls_root_certs": str(tmp_path / "missing.pem")})


def test_dates_timestamps_decimals_booleans_and_binary_map_to_spark_types(spark, docs_uri):
    sql = ("SELECT CAST('2024-01-02' AS DATE) AS d, "
           "CAST('2024-01-02 03:04:05.123456' AS TIMESTAMP) AS ts, "
           "CAST(12.5 AS DECIMAL(10, 2)) AS amount, id > 1 AS big, "
           "CAST(title AS BYTEA) AS raw, CAST(id AS SMALLINT) AS small "
           "FROM docs WHERE id = 2")
    df = _read(spark, docs_uri, query=sql)
    assert dict(df.dtypes) == {"d": "date", "ts": "timestamp_ntz", "amount": "decimal(10,2)",
                               "big": "boolean", "raw": "binary", "small": "smallint"}
    (row,) = df.collect()
    assert row.d == datetime.date(2024, 1, 2)
    assert row.ts == datetime.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert row.amount == decimal.Decimal("12.50")
    assert row.big is True and bytes(row.raw) == b"title 2" and row.small == 2


def test_query_without_rows_reads_as_an_empty_dataframe(spark, docs_uri):
    df = _read(spark, docs_uri, query="SELECT id, title FROM docs WHERE id < 0")
    assert df.columns == ["id", "title"]
    assert df.collect() == []


def test_tls_root_certs_option_reads_and_writes_over_tls(spark, tmp_path):
    cert, key = _self_signed(tmp_path)
    server = build_server(str(tmp_path / "tls-root"), port=0, tls_cert=cert, tls_key=key)
    try:
        server.conn.sql("CREATE TABLE t (id BIGINT)")
        uri = listening_uri(server)
        assert uri.startswith("grpc+tls://")
        df = spark.createDataFrame([(1,), (2,)], "id bigint")
        df.write.format("quiver").option("uri", uri).option("table", "t") \
            .option("tls_root_certs", str(cert)).mode("append").save()
        back = _read(spark, uri, table="t", tls_root_certs=str(cert))
        assert sorted(r.id for r in back.collect()) == [1, 2]
        with pytest.raises(Exception) as err:
            _read(spark, uri, table="t").collect()  # the system roots do not trust it
        assert "quiver server" in str(err.value)
    finally:
        server.shutdown()
        server.conn.close()


def test_split_scan_reads_one_partition_per_endpoint_from_both_servers(spark, tmp_path):
    root = str(tmp_path / "shared")
    conns = [connect(root), connect(root)]
    second = QuiverFlightServer(conns[1], "grpc://127.0.0.1:0")
    second_uri = f"grpc://127.0.0.1:{second.port}"
    first_port = free_port()
    first_uri = f"grpc://127.0.0.1:{first_port}"
    first = QuiverFlightServer(conns[0], first_uri, advertise=[first_uri, second_uri],
                               min_endpoint_rows=1)
    try:
        conns[0].sql("CREATE TABLE parts (id BIGINT, label VARCHAR)")
        table = conns[0].open_table("parts")
        for k in range(4):  # one superfile per append
            table.append(pa.table({"id": pa.array(range(k * 10, k * 10 + 10), pa.int64()),
                                   "label": [f"part {k}"] * 10}))
        client = flight.FlightClient(first_uri)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            pack(flight_sql_pb2.CommandStatementQuery(query="SELECT * FROM parts"))))
        client.close()
        assert len(info.endpoints) == 4
        assert {loc.uri.decode() for ep in info.endpoints for loc in ep.locations} \
            == {first_uri, second_uri}
        df = _read(spark, first_uri, table="parts")
        assert df.rdd.getNumPartitions() == 4
        assert sorted(r.id for r in df.collect()) == list(range(40))
        filtered = _read(spark, first_uri, query="SELECT id FROM parts WHERE id >= 25")
        assert sorted(r.id for r in filtered.collect()) == list(range(25, 40))
    finally:
        first.shutdown()
        second.shutdown()
        for conn in conns:
            conn.close()
