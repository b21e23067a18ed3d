"""A statement is read once per call: GetFlightInfo reads it once for its kind, schema,
scan split and DDL/DML run, and DoGet of a ticket this server issued reuses that reading."""

from __future__ import annotations

import uuid

import pyarrow.flight as flight
import pytest

from quiver.flight_server.sql import CACHED_STATEMENT_CHARS, analysis
from quiver.proto import flight_sql_pb2, pack


def _reads() -> int:
    return analysis.READS["statements"]


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(cmd))


@pytest.fixture
def client(quiver_server):
    quiver_server.conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR)")
    quiver_server.conn.sql("INSERT INTO docs VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    c = flight.connect(f"grpc://127.0.0.1:{quiver_server.port}")
    try:
        yield c
    finally:
        c.close()


def _long_in_list(prefix: str) -> str:
    """A statement too long for the reading cache, so every reading of it shows."""
    ids = ", ".join(str(i) for i in range(4000))
    text = f"{prefix} ({ids})"
    assert len(text) > CACHED_STATEMENT_CHARS
    return text


def test_get_flight_info_of_a_long_plain_scan_reads_it_once(client) -> None:
    sql = _long_in_list("SELECT id, body FROM docs WHERE id IN")
    before = _reads()
    info = _info(client, sql)
    assert _reads() - before == 1
    got = [r for e in info.endpoints for r in client.do_get(e.ticket).read_all().to_pylist()]
    assert sorted(r["id"] for r in got) == [1, 2, 3]


def test_get_flight_info_of_a_long_insert_reads_and_runs_it_once(client, quiver_server) -> None:
    rows = ", ".join(f"({i}, 'row {i}')" for i in range(10, 1010))
    sql = f"INSERT INTO docs VALUES {rows}"
    assert len(sql) > CACHED_STATEMENT_CHARS
    before = _reads()
    info = _info(client, sql)
    assert _reads() - before == 1
    assert info.total_records == 1000
    assert quiver_server.conn.sql("SELECT count(*) AS n FROM docs").to_pylist() == [{"n": 1003}]


@pytest.mark.parametrize("sql", ["SELECT 1 AS one", "SELECT id FROM docs ORDER BY id",
                                 "SELECT * FROM docs", "SELECT count(*) FROM docs"])
def test_do_get_of_a_ticket_reuses_the_reading_of_its_flight_info(client, sql) -> None:
    sql = f"{sql} -- {uuid.uuid4().hex}"  # a text nothing has read yet
    before = _reads()
    info = _info(client, sql)
    assert _reads() - before == 1
    for endpoint in info.endpoints:
        client.do_get(endpoint.ticket).read_all()
    assert _reads() - before == 1
