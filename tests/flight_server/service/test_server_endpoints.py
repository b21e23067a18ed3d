"""Plain scans split into one endpoint per group of superfiles: what is split and what is
not, exact rows per part, pinned versions, dealt locations, and the clients reading them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import handles
from quiver.flight_server.service.server import (
    MAX_ENDPOINTS,
    QuiverFlightServer,
    group_files,
)
from quiver.flight_server.sql import SqlConnection, analyse, connect
from quiver.proto import flight_pb2, flight_sql_pb2, pack, unpack
from quiver.supertable.gc import collect_garbage

FILES = 6
ROWS_PER_FILE = 5


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[SqlConnection]:
    c = connect(str(tmp_path / "root"))
    c.sql("CREATE TABLE docs (id BIGINT, body VARCHAR, rank DOUBLE)")
    for f in range(FILES):
        # One INSERT per file: each commit writes one superfile.
        values = ", ".join(f"({f * 100 + i}, 'word{f} text{i}', {f + i / 10})"
                           for i in range(ROWS_PER_FILE))
        c.sql(f"INSERT INTO docs VALUES {values}")
    try:
        yield c
    finally:
        c.close()


def _server(conn: SqlConnection, **kwargs) -> QuiverFlightServer:
    return QuiverFlightServer(conn, "grpc://127.0.0.1:0", min_endpoint_rows=1, **kwargs)


@pytest.fixture
def server(conn: SqlConnection) -> Iterator[QuiverFlightServer]:
    srv = _server(conn)
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture
def client(server: QuiverFlightServer) -> Iterator[flight.FlightClient]:
    c = flight.connect(f"grpc://127.0.0.1:{server.port}")
    try:
        yield c
    finally:
        c.close()


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(cmd))


def _read_all(client: flight.FlightClient, info: flight.FlightInfo) -> pa.Table:
    parts = [client.do_get(e.ticket).read_all() for e in info.endpoints]
    return pa.concat_tables(parts)


def _sorted(table: pa.Table, key: str = "id") -> list[dict]:
    return table.sort_by(key).to_pylist()


def _scan_part(endpoint: flight.FlightEndpoint) -> handles.ScanPart:
    ticket = unpack(endpoint.ticket.ticket)
    part = handles.inspect(ticket.statement_handle).scan
    assert part is not None
    return part


def test_select_star_has_one_endpoint_per_file_group_whose_rows_add_up_to_the_table(
        client, conn) -> None:
    info = _info(client, "SELECT * FROM docs")
    # One server, no advertised locations: two parts, read over the same connection.
    assert len(info.endpoints) == 2
    assert all(list(e.locations) == [] for e in info.endpoints)
    assert info.total_records == FILES * ROWS_PER_FILE
    parts = [client.do_get(e.ticket).read_all() for e in info.endpoints]
    assert [p.num_rows for p in parts] == [FILES * ROWS_PER_FILE // 2] * 2
    assert _sorted(pa.concat_tables(parts)) == _sorted(conn.sql("SELECT * FROM docs"))
    # The parts name disjoint files of one version, together every live file.
    named = [_scan_part(e) for e in info.endpoints]
    assert len({p.version for p in named}) == 1
    files = [f for p in named for f in p.files]
    assert len(files) == len(set(files)) == FILES


def test_parts_hide_deleted_rows_and_total_records_counts_live_rows(client, conn) -> None:
    conn.sql("DELETE FROM docs WHERE id IN (1, 2, 301)")
    info = _info(client, "SELECT id, body FROM docs")
    assert info.total_records == FILES * ROWS_PER_FILE - 3
    got = _read_all(client, info)
    assert got.schema.names == ["id", "body"]
    assert _sorted(got) == _sorted(conn.sql("SELECT id, body FROM docs"))
    assert not {1, 2, 301} & set(got.column("id").to_pylist())


@pytest.mark.parametrize("sql", [
    "SELECT id, rank FROM docs WHERE rank > 2.15",
    "SELECT * FROM docs WHERE id >= 200 AND id < 400 OR body LIKE 'word5%'",
    "SELECT d.id AS ident, d.body FROM docs AS d WHERE NOT (d.id BETWEEN 100 AND 500)",
    "SELECT * FROM DOCS WHERE id IN (3, 104, 205) OR body IS NULL",
])
def test_filtered_scans_split_and_each_part_applies_the_filter(client, conn, sql) -> None:
    info = _info(client, sql)
    assert info.total_records == -1
    assert len(info.endpoints) >= 1
    assert all(_scan_part(e).files for e in info.endpoints)
    expected = conn.sql(sql)
    key = expected.schema.names[0]
    assert _sorted(_read_all(client, info), key) == _sorted(expected, key)


def test_a_filter_the_manifest_can_rule_files_out_with_reads_only_the_remaining_files(
        client) -> None:
    info = _info(client, "SELECT id FROM docs WHERE id >= 400")
    files = [f for e in info.endpoints for f in _scan_part(e).files]
    assert len(files) == 2
    assert sorted(_read_all(client, info).column("id").to_pylist()) == \
        [400 + i for i in range(ROWS_PER_FILE)] + [500 + i for i in range(ROWS_PER_FILE)]


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM docs",
    "SELECT id FROM docs ORDER BY id",
    "SELECT id FROM docs LIMIT 7",
    "SELECT DISTINCT body FROM docs",
    "SELECT body, count(*) AS n FROM docs GROUP BY body",
    "SELECT id, row_number() OVER (ORDER BY id) AS r FROM docs",
    "SELECT a.id FROM docs a JOIN docs b ON a.id = b.id",
    "SELECT id + 1 AS next FROM docs",
    "SELECT id FROM docs WHERE id > (SELECT min(id) FROM docs)",
    "SELECT id FROM docs WHERE lower(body) = 'x'",
    "WITH x AS (SELECT * FROM docs) SELECT * FROM x",
    "SELECT * FROM bm25_search('docs', 'body', 'word3', 5)",
    "SELECT id FROM docs UNION ALL SELECT id FROM docs",
    "SELECT 1 AS one",
    "EXPLAIN SELECT * FROM docs",
])
def test_anything_but_a_plain_scan_keeps_one_endpoint_without_locations(client, sql) -> None:
    assert analyse(sql).scan is None
    info = _info(client, sql)
    assert len(info.endpoints) == 1
    assert list(info.endpoints[0].locations) == []
    client.do_get(info.endpoints[0].ticket).read_all()


def test_parts_read_the_version_pinned_when_the_flight_info_was_made(client, conn) -> None:
    info = _info(client, "SELECT id FROM docs")
    conn.sql("INSERT INTO docs VALUES (9999, 'late', 0.0)")
    conn.sql("DELETE FROM docs WHERE id = 0")
    got = sorted(_read_all(client, info).column("id").to_pylist())
    assert len(got) == FILES * ROWS_PER_FILE and 0 in got and 9999 not in got
    # A new query sees the changes.
    fresh = _read_all(client, _info(client, "SELECT id FROM docs")).column("id").to_pylist()
    assert 9999 in fresh and 0 not in fresh


def test_a_part_of_a_table_dropped_and_created_again_is_not_found(client, conn) -> None:
    info = _info(client, "SELECT * FROM docs")
    conn.sql("DROP TABLE docs")
    conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR, rank DOUBLE)")
    conn.sql("INSERT INTO docs VALUES (1, 'new', 1.0)")
    with pytest.raises(pa.ArrowKeyError, match="dropped or replaced"):
        client.do_get(info.endpoints[0].ticket).read_all()


def test_a_part_of_a_version_removed_by_garbage_collection_is_not_found(client, conn) -> None:
    info = _info(client, "SELECT * FROM docs")
    for i in range(3):
        conn.sql(f"INSERT INTO docs VALUES ({10_000 + i}, 'more', 0.5)")
    collect_garbage(conn.open_table("docs"), grace_seconds=0, expire_manifests=True,
                    keep_versions=1)
    with pytest.raises(pa.ArrowKeyError, match="no longer stored"):
        client.do_get(info.endpoints[0].ticket).read_all()


def test_a_damaged_scan_ticket_is_an_invalid_argument(client) -> None:
    info = _info(client, "SELECT * FROM docs")
    handle = bytes(unpack(info.endpoints[0].ticket.ticket).statement_handle)
    broken = handle[:4 + handles.NONCE + 4] + b"{not json"
    ticket = flight.Ticket(pack(flight_sql_pb2.TicketStatementQuery(statement_handle=broken)))
    with pytest.raises(pa.ArrowInvalid, match="damaged"):
        client.do_get(ticket).read_all()


def test_advertised_locations_are_dealt_round_robin_one_per_endpoint(conn) -> None:
    here = ["grpc://127.0.0.1:1", "grpc://127.0.0.1:2", "grpc://127.0.0.1:3"]
    srv = _server(conn, advertise=here)
    try:
        client = flight.connect(f"grpc://127.0.0.1:{srv.port}")
        info = _info(client, "SELECT * FROM docs")
        # min(files, 2 x locations, 16) parts.
        assert len(info.endpoints) == FILES
        dealt = [[loc.uri.decode() for loc in e.locations] for e in info.endpoints]
        assert all(len(d) == 1 for d in dealt)
        firsts = [d[0] for d in dealt]
        start = here.index(firsts[0])
        assert firsts == [here[(start + i) % 3] for i in range(FILES)]
        # A single-endpoint result names no location: the client reuses its connection.
        single = _info(client, "SELECT count(*) FROM docs")
        assert [list(e.locations) for e in single.endpoints] == [[]]
        client.close()
    finally:
        srv.shutdown()


def test_group_files_balances_rows_never_leaves_a_group_empty_and_keeps_file_order() -> None:
    assert group_files([], 4) == [[]]
    assert group_files([5, 5, 5], 1) == [[0, 1, 2]]
    assert group_files([10, 10, 10, 10], 2) == [[0, 1], [2, 3]]
    assert group_files([100, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    assert group_files([1, 1], 5) == [[0], [1]]
    for rows, groups in [([7] * 40, 16), ([1, 50, 3, 900, 2, 2, 60], 3), ([0, 0, 5], 2)]:
        out = group_files(rows, groups)
        assert [k for g in out for k in g] == list(range(len(rows)))
        assert all(out) and len(out) <= groups
    assert [len(g) for g in group_files([7] * 40, 16)].count(0) == 0


def test_at_most_max_endpoints_and_none_smaller_than_the_row_floor(conn) -> None:
    many = [f"grpc://127.0.0.1:{p}" for p in range(1, 21)]
    conn.sql("CREATE TABLE many (x BIGINT)")
    for i in range(MAX_ENDPOINTS + 4):
        conn.sql(f"INSERT INTO many VALUES ({i})")
    srv = _server(conn, advertise=many)
    floor = QuiverFlightServer(conn, "grpc://127.0.0.1:0", advertise=many,
                               min_endpoint_rows=5)
    try:
        client = flight.connect(f"grpc://127.0.0.1:{srv.port}")
        info = _info(client, "SELECT x FROM many")
        assert len(info.endpoints) == MAX_ENDPOINTS
        assert sorted(_read_all(client, info).column("x").to_pylist()) == \
            list(range(MAX_ENDPOINTS + 4))
        client.close()
        client = flight.connect(f"grpc://127.0.0.1:{floor.port}")
        assert len(_info(client, "SELECT x FROM many").endpoints) == (MAX_ENDPOINTS + 4) // 5
        client.close()
    finally:
        srv.shutdown()
        floor.shutdown()


def test_adbc_reads_every_part_of_a_split_query_and_of_a_prepared_one(server, conn) -> None:
    with adbc.connect(f"grpc://127.0.0.1:{server.port}", autocommit=True) as db, \
            db.cursor() as cur:
        cur.execute("SELECT * FROM docs")
        assert _sorted(cur.fetch_arrow_table()) == _sorted(conn.sql("SELECT * FROM docs"))
        cur.execute("SELECT id FROM docs WHERE id < ?", parameters=(250,))
        got = cur.fetch_arrow_table().column("id").to_pylist()
        assert sorted(got) == sorted(conn.sql(
            "SELECT id FROM docs WHERE id < 250").column("id").to_pylist())


def test_list_flights_and_path_descriptors_split_a_table_too(client, conn) -> None:
    [listed] = list(client.list_flights())
    by_path = client.get_flight_info(flight.FlightDescriptor.for_path("docs"))
    for info in (listed, by_path):
        assert len(info.endpoints) == 2
        assert info.total_records == FILES * ROWS_PER_FILE
        assert _sorted(_read_all(client, info)) == _sorted(conn.sql("SELECT * FROM docs"))


def test_cancel_flight_info_cancels_every_part(client) -> None:
    info = _info(client, "SELECT * FROM docs")
    msg = flight_pb2.FlightInfo()
    msg.ParseFromString(info.serialize())
    body = flight_pb2.CancelFlightInfoRequest(info=msg).SerializeToString()
    [result] = list(client.do_action(flight.Action("CancelFlightInfo", body)))
    out = flight_pb2.CancelFlightInfoResult()
    out.ParseFromString(result.body.to_pybytes())
    assert out.status == flight_pb2.CANCEL_STATUS_CANCELLED
    for endpoint in info.endpoints:
        with pytest.raises(flight.FlightCancelledError):
            client.do_get(endpoint.ticket).read_all()
