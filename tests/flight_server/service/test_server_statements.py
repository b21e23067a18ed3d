"""Statements over Flight SQL from ADBC and plain Flight: queries, DDL/DML counts, parameters,
large streamed results, path DoPut and SQL tickets, ListFlights, GetSchema."""

from __future__ import annotations

import warnings

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.proto import flight_sql_pb2, pack


@pytest.fixture
def db(flight_uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ADBC warns that autocommit cannot be turned off
        conn = adbc.connect(flight_uri)
    try:
        yield conn
    finally:
        conn.close()


def _docs(cur) -> None:
    cur.execute("CREATE TABLE docs (id BIGINT, title VARCHAR, year BIGINT)")
    cur.execute("INSERT INTO docs VALUES (1, 'rust async', 2021), (2, 'python io', 2019), "
                "(3, 'go channels', 2023)")


def test_query_returns_rows_and_schema_through_adbc(db) -> None:
    cur = db.cursor()
    _docs(cur)
    cur.execute("SELECT id, title FROM docs WHERE year > 2020 ORDER BY id")
    table = cur.fetch_arrow_table()
    assert table.schema.names == ["id", "title"]
    assert table.column("id").to_pylist() == [1, 3]
    assert table.column("title").to_pylist() == ["rust async", "go channels"]


def test_ddl_and_dml_report_their_row_counts_as_rowcount(db) -> None:
    cur = db.cursor()
    cur.execute("CREATE TABLE t (id BIGINT, name VARCHAR)")
    assert cur.rowcount == -1
    cur.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    assert cur.rowcount == 3
    cur.execute("UPDATE t SET name = 'z' WHERE id >= 2")
    assert cur.rowcount == 2
    cur.execute("DELETE FROM t WHERE id = 1")
    assert cur.rowcount == 1
    cur.execute("SELECT id, name FROM t ORDER BY id")
    assert cur.fetchall() == [(2, "z"), (3, "z")]


def test_ddl_runs_once_even_when_its_result_is_fetched(db) -> None:
    cur = db.cursor()
    cur.execute("CREATE TABLE once (id BIGINT)")
    assert cur.fetchall() != []
    cur.execute("INSERT INTO once VALUES (1)")
    cur.fetchall()
    cur.execute("SELECT count(*) FROM once")
    assert cur.fetchall() == [(1,)]


def test_bound_parameter_filters_a_query(db) -> None:
    cur = db.cursor()
    _docs(cur)
    cur.execute("SELECT title FROM docs WHERE id = ?", (2,))
    assert cur.fetchall() == [("python io",)]
    cur.execute("SELECT title FROM docs WHERE id = ?", (3,))
    assert cur.fetchall() == [("go channels",)]


def test_executemany_insert_adds_every_parameter_row(db) -> None:
    cur = db.cursor()
    cur.execute("CREATE TABLE kv (k BIGINT, v VARCHAR)")
    cur.executemany("INSERT INTO kv VALUES (?, ?)", [(i, f"v{i}") for i in range(25)])
    assert cur.rowcount == 25
    cur.execute("SELECT count(*), min(k), max(k) FROM kv")
    assert cur.fetchall() == [(25, 0, 24)]


def test_large_result_streams_in_bounded_batches(db, quiver_server) -> None:
    n = 300_000
    conn = quiver_server.conn
    table = conn.create_table("big", pa.schema([("id", pa.int64()), ("v", pa.float64())]))
    ids = pa.array(range(n), pa.int64())
    table.append(pa.table({"id": ids, "v": pa.compute.multiply(ids, 0.5)}))
    cur = db.cursor()
    cur.execute("SELECT id, v FROM big")
    reader = cur.fetch_record_batch()
    rows = total = 0
    biggest = 0
    for batch in reader:
        rows += batch.num_rows
        total += pa.compute.sum(batch.column("id")).as_py() or 0
        biggest = max(biggest, batch.num_rows)
    assert rows == n
    assert total == n * (n - 1) // 2
    assert biggest <= 65_536


def test_plain_flight_sql_ticket_streams_the_query(flight_uri, quiver_server) -> None:
    quiver_server.conn.sql("CREATE TABLE p (id BIGINT)")
    quiver_server.conn.sql("INSERT INTO p VALUES (1), (2), (3)")
    client = flight.connect(flight_uri)
    got = client.do_get(flight.Ticket(b"SELECT sum(id) AS s FROM p")).read_all()
    assert got.to_pylist() == [{"s": 6}]


def test_plain_flight_put_to_path_appends_and_creates_only_when_asked(flight_uri,
                                                                      quiver_server) -> None:
    client = flight.connect(flight_uri)
    data = pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["a", "b"]})
    with pytest.raises(pa.ArrowKeyError, match="no table 'people'"):  # NOT_FOUND
        writer, _ = client.do_put(flight.FlightDescriptor.for_path("people"), data.schema)
        writer.write_table(data)
        writer.close()
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("people", "create"), data.schema)
    writer.write_table(data)
    writer.close()
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("people"), data.schema)
    writer.write_table(data)
    writer.close()
    assert quiver_server.conn.sql("SELECT count(*) AS n FROM people").to_pylist() == [{"n": 4}]


def test_list_flights_names_each_table_with_its_row_count(flight_uri, quiver_server) -> None:
    quiver_server.conn.sql("CREATE TABLE a (x BIGINT)")
    quiver_server.conn.sql("INSERT INTO a VALUES (1), (2)")
    quiver_server.conn.sql("CREATE TABLE b (y VARCHAR)")
    client = flight.connect(flight_uri)
    infos = {tuple(i.descriptor.path): i for i in client.list_flights()}
    assert set(infos) == {(b"a",), (b"b",)}
    assert infos[(b"a",)].total_records == 2
    assert infos[(b"a",)].schema.names == ["x"]
    # The endpoint's ticket reads the table back.
    rows = client.do_get(infos[(b"a",)].endpoints[0].ticket).read_all()
    assert sorted(rows.column("x").to_pylist()) == [1, 2]


def test_get_schema_plans_a_statement_without_running_it(flight_uri, quiver_server) -> None:
    quiver_server.conn.sql("CREATE TABLE s (id BIGINT, name VARCHAR)")
    client = flight.connect(flight_uri)
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query="SELECT name, id * 2 AS d FROM s"))
    schema = client.get_schema(flight.FlightDescriptor.for_command(cmd)).schema
    assert schema.names == ["name", "d"]
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
    assert info.schema.names == ["name", "d"] and info.total_records == -1
    update = pack(flight_sql_pb2.CommandStatementQuery(query="INSERT INTO s VALUES (1, 'x')"))
    client.get_schema(flight.FlightDescriptor.for_command(update))
    assert quiver_server.conn.sql("SELECT count(*) AS n FROM s").to_pylist() == [{"n": 0}]


def test_statement_tickets_are_answered_by_any_server_on_the_root(server_root) -> None:
    from quiver.flight_server.service.server import QuiverFlightServer
    from quiver.flight_server.sql import connect

    first = QuiverFlightServer(connect(str(server_root)))
    second = QuiverFlightServer(connect(str(server_root)))
    try:
        first.conn.sql("CREATE TABLE shared (id BIGINT)")
        first.conn.sql("INSERT INTO shared VALUES (7)")
        cmd = pack(flight_sql_pb2.CommandStatementQuery(query="SELECT id FROM shared"))
        info = flight.connect(f"grpc://127.0.0.1:{first.port}").get_flight_info(
            flight.FlightDescriptor.for_command(cmd))
        other = flight.connect(f"grpc://127.0.0.1:{second.port}")
        assert other.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"id": 7}]
    finally:
        first.shutdown()
        second.shutdown()


def test_command_statement_update_answers_its_count(flight_uri, quiver_server) -> None:
    quiver_server.conn.sql("CREATE TABLE u (id BIGINT)")
    client = flight.connect(flight_uri)
    cmd = pack(flight_sql_pb2.CommandStatementUpdate(query="INSERT INTO u VALUES (1), (2)"))
    writer, meta = client.do_put(flight.FlightDescriptor.for_command(cmd), pa.schema([]))
    writer.done_writing()
    buf = meta.read()
    writer.close()
    result = flight_sql_pb2.DoPutUpdateResult()
    result.ParseFromString(buf.to_pybytes())
    assert result.record_count == 2
