"""Prepared statements: creation results, binding, several parameter rows, closing, and the
registry's size bound and idle expiry."""

from __future__ import annotations

import time
import warnings

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service.handles import PreparedRegistry
from quiver.proto import flight_sql_pb2, pack, unpack


@pytest.fixture
def people(quiver_server):
    quiver_server.conn.sql("CREATE TABLE people (id BIGINT, name VARCHAR)")
    quiver_server.conn.sql("INSERT INTO people VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')")
    return quiver_server


def _prepare(client: flight.FlightClient, sql: str):
    body = pack(flight_sql_pb2.ActionCreatePreparedStatementRequest(query=sql))
    results = list(client.do_action(flight.Action("CreatePreparedStatement", body)))
    assert len(results) == 1
    return unpack(results[0].body.to_pybytes())


def _bind(client: flight.FlightClient, command, params: pa.Table) -> bytes:
    writer, meta = client.do_put(flight.FlightDescriptor.for_command(pack(command)),
                                 params.schema)
    writer.write_table(params)
    writer.done_writing()
    buf = meta.read()
    writer.close()
    return buf.to_pybytes() if buf is not None else b""


def test_create_prepared_statement_returns_dataset_and_parameter_schemas(flight_uri,
                                                                        people) -> None:
    client = flight.connect(flight_uri)
    result = _prepare(client, "SELECT id, name FROM people WHERE id = ? OR id = ?")
    assert type(result).__name__ == "ActionCreatePreparedStatementResult"
    assert result.prepared_statement_handle
    dataset = pa.ipc.read_schema(pa.py_buffer(result.dataset_schema))
    assert dataset.names == ["id", "name"]
    params = pa.ipc.read_schema(pa.py_buffer(result.parameter_schema))
    assert len(params) == 2


def test_bound_rows_run_the_query_once_each_and_concatenate(flight_uri, people) -> None:
    client = flight.connect(flight_uri)
    prepared = _prepare(client, "SELECT name FROM people WHERE id = ?")
    handle = prepared.prepared_statement_handle
    query = flight_sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle)
    answer = flight_sql_pb2.DoPutPreparedStatementResult()
    answer.ParseFromString(_bind(client, query, pa.table({"p": pa.array([3, 1], pa.int64())})))
    assert answer.prepared_statement_handle == handle
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(query)))
    got = client.do_get(info.endpoints[0].ticket).read_all()
    assert got.column("name").to_pylist() == ["cy", "ann"]


def test_prepared_update_runs_per_row_and_sums_counts(flight_uri, people) -> None:
    client = flight.connect(flight_uri)
    prepared = _prepare(client, "DELETE FROM people WHERE id = ?")
    assert prepared.dataset_schema == b""
    update = flight_sql_pb2.CommandPreparedStatementUpdate(
        prepared_statement_handle=prepared.prepared_statement_handle)
    out = flight_sql_pb2.DoPutUpdateResult()
    out.ParseFromString(_bind(client, update, pa.table({"p": pa.array([1, 3, 99])})))
    assert out.record_count == 2
    assert people.conn.sql("SELECT name FROM people").to_pylist() == [{"name": "bob"}]


def test_closed_prepared_statement_is_not_found(flight_uri, people) -> None:
    client = flight.connect(flight_uri)
    prepared = _prepare(client, "SELECT name FROM people")
    handle = prepared.prepared_statement_handle
    close = pack(flight_sql_pb2.ActionClosePreparedStatementRequest(
        prepared_statement_handle=handle))
    assert list(client.do_action(flight.Action("ClosePreparedStatement", close))) == []
    query = pack(flight_sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    with pytest.raises(pa.ArrowKeyError, match="prepared statement not found"):
        client.get_flight_info(flight.FlightDescriptor.for_command(query))


def test_adbc_prepare_reports_parameters_and_binds_arrow_rows(flight_uri, people) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(flight_uri)
    try:
        cur = conn.cursor()
        schema = cur.adbc_prepare("SELECT name FROM people WHERE id = ?")
        assert schema is not None and len(schema) == 1
        cur.execute("SELECT name FROM people WHERE id = ?",
                    pa.record_batch({"p": pa.array([2, 3], pa.int64())}))
        assert cur.fetchall() == [("bob",), ("cy",)]
        cur.execute("SELECT name FROM people WHERE id = ?", (1,))
        assert cur.fetchall() == [("ann",)]
    finally:
        conn.close()


def test_registry_drops_least_recently_used_beyond_its_size() -> None:
    reg = PreparedRegistry(max_size=3, idle_seconds=60)
    made = [reg.add(f"SELECT {i}", is_query=True, dataset_schema=None,
                    parameter_schema=pa.schema([])) for i in range(3)]
    reg.get(made[0].handle)  # now the most recent
    reg.add("SELECT 9", is_query=True, dataset_schema=None, parameter_schema=pa.schema([]))
    assert len(reg) == 3
    assert reg.get(made[0].handle).sql == "SELECT 0"
    with pytest.raises(KeyError):
        reg.get(made[1].handle)


def test_registry_expires_idle_statements() -> None:
    reg = PreparedRegistry(max_size=10, idle_seconds=0.5)
    stmt = reg.add("SELECT 1", is_query=True, dataset_schema=None,
                   parameter_schema=pa.schema([]))
    assert reg.get(stmt.handle) is stmt
    time.sleep(1.0)
    with pytest.raises(KeyError, match="expired"):
        reg.get(stmt.handle)
    assert len(reg) == 0
