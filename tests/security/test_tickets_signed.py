"""Tickets cannot be forged or edited: every statement handle is signed with the root's key.

The attacks: change the pinned version of a scan ticket to read rows deleted since, make
up tickets of every kind (SQL, SQL with parameters, a stored result, a scan part), cut
one short, bring one from another root, or keep one past its lifetime. Each must be
refused with INVALID_ARGUMENT and nothing in it may run. Servers of one root (one key)
take each other's tickets; the key is made once in the root even by servers starting
together, and a table can never be stored where the key is.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import handles, keys
from quiver.flight_server.service.serve import ServeError, build_server
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import SqlConnection, connect
from quiver.proto import flight_sql_pb2, pack, unpack

FILES = 4


def _fill(conn: SqlConnection) -> None:
    conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR)")
    for f in range(FILES):
        # One INSERT per superfile, so a scan splits into parts.
        conn.sql(f"INSERT INTO docs VALUES ({2 * f}, 'even {f}'), ({2 * f + 1}, 'odd {f}')")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def conn(root: Path) -> Iterator[SqlConnection]:
    c = connect(str(root))
    _fill(c)
    try:
        yield c
    finally:
        c.close()


def _server(conn: SqlConnection, **options) -> QuiverFlightServer:
    return QuiverFlightServer(conn, "grpc://127.0.0.1:0", min_endpoint_rows=1, **options)


@pytest.fixture
def server(conn: SqlConnection) -> Iterator[QuiverFlightServer]:
    srv = _server(conn)
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture
def client(server: QuiverFlightServer) -> Iterator[flight.FlightClient]:
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as c:
        yield c


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(cmd))


def _handle(endpoint: flight.FlightEndpoint) -> bytes:
    return bytes(unpack(endpoint.ticket.ticket).statement_handle)


def _ticket(handle: bytes) -> flight.Ticket:
    return flight.Ticket(pack(flight_sql_pb2.TicketStatementQuery(statement_handle=handle)))


def _read(client: flight.FlightClient, handle: bytes) -> pa.Table:
    return client.do_get(_ticket(handle)).read_all()


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _ids(tables: list[pa.Table]) -> list[int]:
    return sorted(pa.concat_tables(tables).column("id").to_pylist())


def test_a_scan_ticket_edited_to_an_older_version_is_refused_and_returns_no_deleted_row(
        conn, client) -> None:
    old_version = conn.catalog.open_table("docs").snapshot().version
    conn.sql("DELETE FROM docs WHERE id % 2 = 1")
    info = _info(client, "SELECT id, body FROM docs")
    assert len(info.endpoints) > 1
    new_version = conn.catalog.open_table("docs").snapshot().version
    assert _ids([client.do_get(e.ticket).read_all() for e in info.endpoints]) == [0, 2, 4, 6]
    for endpoint in info.endpoints:
        handle = _handle(endpoint)
        pinned = f'"version":{new_version}'.encode()
        assert handle.count(pinned) == 1
        edited = handle.replace(pinned, f'"version":{old_version}'.encode())
        assert len(edited) == len(handle)
        with pytest.raises(pa.ArrowInvalid, match="signature does not match") as refused:
            rows = _read(client, edited)
            assert not {1, 3, 5, 7} & set(rows.column("id").to_pylist())
        assert "odd" not in str(refused.value)


def test_a_scan_ticket_edited_to_name_other_files_is_refused(conn, client) -> None:
    info = _info(client, "SELECT id FROM docs")
    first, second = (_handle(e) for e in info.endpoints[:2])
    part_a = handles.inspect(first).scan
    part_b = handles.inspect(second).scan
    assert part_a is not None and part_b is not None and part_a.files != part_b.files
    # Point the first part at the second part's files: both parts would read them.
    edited = first
    for old, new in zip(part_a.files, part_b.files, strict=False):
        edited = edited.replace(old.encode(), new.encode())
    assert edited != first
    with pytest.raises(pa.ArrowInvalid, match="signature does not match"):
        _read(client, edited)


def _forged_bodies() -> dict[str, bytes]:
    nonce = os.urandom(handles.NONCE)
    sql = b"SELECT id, body FROM docs"
    params = pa.table({"p": [1]})
    head = (b'{"table":"docs","uuid":"00000000-0000-0000-0000-000000000000",'
            b'"version":1,"files":[]}')
    return {
        "q": b"qv1q" + nonce + sql,
        "p": b"qv1p" + nonce + struct.pack("<I", len(sql)) + sql + _ipc(params),
        "r": b"qv1r" + nonce + _ipc(pa.table({"id": [42], "body": ["made up"]})),
        "s": b"qv1s" + nonce + struct.pack("<I", len(head)) + head + sql,
    }


@pytest.mark.parametrize("kind", ["q", "p", "r", "s"])
def test_a_made_up_ticket_of_any_kind_is_refused(client, kind) -> None:
    body = _forged_bodies()[kind]
    stamp = struct.pack("<Q", int(time.time()))
    # The old unsigned form, and the signed form with a signature the forger guessed.
    for forged in (body, b"qv2" + stamp + body + os.urandom(32)):
        with pytest.raises(pa.ArrowInvalid, match="signature does not match"):
            _read(client, forged)


def test_a_truncated_ticket_is_refused(client) -> None:
    handle = _handle(_info(client, "SELECT count(*) AS n FROM docs").endpoints[0])
    for cut in (1, 8, 31, 32, len(handle) - 4):
        with pytest.raises(pa.ArrowInvalid, match="damaged"):
            _read(client, handle[:-cut])
    assert _read(client, handle).to_pydict() == {"n": [2 * FILES]}


def test_a_ticket_of_one_root_is_refused_by_a_server_of_another(client, tmp_path) -> None:
    other = connect(str(tmp_path / "other"))
    _fill(other)
    srv = _server(other)
    try:
        handle = _handle(_info(client, "SELECT id FROM docs").endpoints[0])
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as there, \
                pytest.raises(pa.ArrowInvalid, match="signature does not match"):
            _read(there, handle)
    finally:
        srv.shutdown()
        other.close()


def test_servers_of_one_root_take_each_other_s_tickets(conn, client) -> None:
    twin = _server(conn)
    try:
        info = _info(client, "SELECT id FROM docs")
        with flight.connect(f"grpc://127.0.0.1:{twin.port}") as there:
            parts = [there.do_get(e.ticket).read_all() for e in info.endpoints]
        assert _ids(parts) == list(range(2 * FILES))
    finally:
        twin.shutdown()


def test_a_ticket_past_its_lifetime_is_refused(conn) -> None:
    srv = _server(conn, ticket_ttl=1.0)
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
            handle = _handle(_info(c, "SELECT count(*) AS n FROM docs").endpoints[0])
            assert _read(c, handle).to_pydict() == {"n": [2 * FILES]}
            time.sleep(2.2)
            with pytest.raises(pa.ArrowInvalid, match="expired"):
                _read(c, handle)
    finally:
        srv.shutdown()


def test_servers_starting_together_make_one_root_key(tmp_path) -> None:
    stores = [connect(str(tmp_path / "fresh")) for _ in range(4)]
    found: list[bytes] = []
    gate = threading.Barrier(len(stores))

    def start(c: SqlConnection) -> None:
        gate.wait()
        found.append(keys.root_secret(c.catalog.store).secret)

    threads = [threading.Thread(target=start, args=(c,)) for c in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(found) == len(stores) and len(set(found)) == 1
    assert len(found[0]) >= keys.MIN_SECRET_BYTES
    for c in stores:
        c.close()


def test_a_table_can_never_be_stored_at_the_key(conn, server) -> None:
    key = keys.root_secret(conn.catalog.store).secret
    conn.sql("CREATE TABLE _system (id BIGINT)")
    conn.sql("INSERT INTO _system VALUES (1)")
    conn.sql("DROP TABLE _system")
    assert conn.catalog.store.get(keys.SECRET_PATH)[0].strip() == key
    assert not any(m.path.startswith(keys.SECRET_PATH.split("/")[0] + "/")
                   for m in conn.catalog.store.list("tables/"))
    assert "_system" not in conn.catalog.list_tables()


def test_a_secret_file_keys_the_servers_given_it_and_stays_out_of_the_root(
        tmp_path, conn, root) -> None:
    conn.close()
    shared, other = tmp_path / "shared.key", tmp_path / "other.key"
    shared.write_text(os.urandom(32).hex())
    other.write_text(os.urandom(32).hex())
    for f in (shared, other):
        f.chmod(0o600)
    servers = [build_server(str(root), port=0, secret_file=f) for f in (shared, shared, other)]
    try:
        one, two, three = (flight.connect(f"grpc://127.0.0.1:{s.port}") for s in servers)
        info = _info(one, "SELECT id FROM docs")
        handle = _handle(info.endpoints[0])
        assert _read(two, handle).num_rows == 2 * FILES
        with pytest.raises(pa.ArrowInvalid, match="signature does not match"):
            _read(three, handle)
        for c in (one, two, three):
            c.close()
    finally:
        for s in servers:
            s.shutdown()
            s.conn.close()
    assert not (root / keys.SECRET_PATH).exists()


def test_a_short_or_missing_secret_file_stops_the_server_from_starting(tmp_path, root) -> None:
    short = tmp_path / "short.key"
    short.write_text("too short")
    with pytest.raises(ServeError, match="fewer than 32 bytes"):
        build_server(str(root), port=0, secret_file=short)
    with pytest.raises(ServeError, match="cannot read the secret file"):
        build_server(str(root), port=0, secret_file=tmp_path / "absent.key")


def test_quiver_serve_takes_the_security_options(tmp_path, root, conn) -> None:
    from tests.flight_server.conftest import start_server

    conn.close()
    secret = tmp_path / "serve.key"
    secret.write_text(os.urandom(32).hex())
    secret.chmod(0o600)
    served = start_server(root, "--secret-file", str(secret), "--ticket-ttl", "60",
                          "--token-ttl", "120", "--login-free-failures", "3",
                          "--login-max-delay", "10", "--prepared-per-session", "8",
                          "--user", "ann:ann's")
    try:
        with flight.connect(served.uri) as c:
            options = flight.FlightCallOptions(
                headers=[c.authenticate_basic_token("ann", "ann's")])
            cmd = pack(flight_sql_pb2.CommandStatementQuery(query="SELECT count(*) FROM docs"))
            info = c.get_flight_info(flight.FlightDescriptor.for_command(cmd), options)
            assert c.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 1
    finally:
        assert served.stop() == 0, served.log()
    assert not (root / keys.SECRET_PATH).exists()


def test_the_secret_file_can_come_from_the_environment(tmp_path, root, conn,
                                                       monkeypatch) -> None:
    conn.close()
    secret = tmp_path / "env.key"
    secret.write_text(os.urandom(32).hex())
    secret.chmod(0o600)
    monkeypatch.setenv(keys.SECRET_FILE_ENV, str(secret))
    srv = build_server(str(root), port=0)
    try:
        assert srv.key.secret == secret.read_bytes().strip()
    finally:
        srv.shutdown()
        srv.conn.close()
    assert not (root / keys.SECRET_PATH).exists()
