"""Bearer tokens are signed, not stored: every server of a root accepts them, none can be
pushed out by other logins, and none can be edited or brought from another root.

The attacks and failures: with ``--advertise A,B`` and ``--user``, an ADBC client that
logged in on A was refused by B (tokens lived in A's memory); a flood of logins by one
user pushed other users' tokens out of that memory.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import auth
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect
from quiver.proto import flight_sql_pb2, pack
from tests.flight_server.conftest import ServerProcess, free_port, start_server, two_docs

USER, PASSWORD = "ann", "an:n's pass"
STATIC = "static-token-for-both-0123456789"
AUTH_HEADER = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
# A scan splits when each part has at least this many rows (server.MIN_ENDPOINT_ROWS).
PART_ROWS = 70_000


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two ``quiver serve`` processes on one root, each advertising both, with a user and
    a static token; the table ``big`` has two superfiles of ``PART_ROWS`` rows."""
    base = tmp_path_factory.mktemp("shared")
    root = base / "root"
    conn = connect(str(root))
    conn.sql("CREATE TABLE big (id BIGINT)")
    table = conn.catalog.open_table("big")
    for start in (0, PART_ROWS):
        table.append(pa.table({"id": np.arange(start, start + PART_ROWS, dtype=np.int64)}))
    conn.close()
    tokens = base / "tokens"
    tokens.write_text(STATIC + "\n")
    ports = [free_port(), free_port()]
    advertise = [a for p in ports for a in ("--advertise", f"grpc://127.0.0.1:{p}")]
    started: list[ServerProcess] = []
    try:
        for i, port in enumerate(ports):
            # No compaction: merging the two parts into one file would leave one endpoint.
            started.append(start_server(root, "--user", f"{USER}:{PASSWORD}", "--token-file",
                                        str(tokens), *advertise, "--no-compaction", port=port,
                                        log_path=base / f"server-{i}.log"))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def _info(client: flight.FlightClient, sql: str, options=None) -> flight.FlightInfo:
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(cmd), options)


def test_adbc_logged_in_on_one_server_reads_a_scan_split_over_both(pair) -> None:
    first, second = pair
    login = {"username": USER, "password": PASSWORD}
    with adbc.connect(first.uri, db_kwargs=login, autocommit=True) as conn, \
            conn.cursor() as cur:
        # Both endpoints point at servers: the driver reads one part from each.
        cur.execute("SELECT id FROM big")
        ids = cur.fetch_arrow_table().column("id").to_numpy()
    assert np.array_equal(np.sort(ids), np.arange(2 * PART_ROWS))
    assert "UNAUTHENTICATED" not in second.log()


def test_a_token_issued_by_one_server_is_taken_by_the_other(pair) -> None:
    first, second = pair
    with flight.connect(first.uri) as a, flight.connect(second.uri) as b:
        header = a.authenticate_basic_token(USER, PASSWORD)
        options = flight.FlightCallOptions(headers=[header])
        info = _info(a, "SELECT id FROM big", options)
        where = sorted(loc.uri.decode() for e in info.endpoints for loc in e.locations)
        assert where == sorted([first.uri, second.uri])
        rows = 0
        for endpoint in info.endpoints:
            [location] = endpoint.locations
            reader = b if location.uri.decode() == second.uri else a
            rows += reader.do_get(endpoint.ticket, options).read_all().num_rows
        assert rows == 2 * PART_ROWS


def test_static_tokens_still_work_on_every_server(pair) -> None:
    for server in pair:
        with adbc.connect(server.uri, db_kwargs={AUTH_HEADER: f"Bearer {STATIC}"},
                          autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM big")
            assert cur.fetchall() == [(2 * PART_ROWS,)]


def _start(conn, config: auth.AuthConfig, **options) -> QuiverFlightServer:
    return QuiverFlightServer(conn, "grpc://127.0.0.1:0",
                              middleware=auth.middleware(config, **options))


def _count(client: flight.FlightClient, header) -> int:
    options = flight.FlightCallOptions(headers=[header])
    ticket = flight.Ticket(b"SELECT count(*) AS n FROM docs")
    return client.do_get(ticket, options).read_all().column("n")[0].as_py()


@pytest.fixture
def docs() -> Iterator:
    conn = two_docs("tokens")
    try:
        yield conn
    finally:
        conn.close()


def test_a_flood_of_logins_by_one_user_never_ends_another_user_s_token(docs) -> None:
    # The old server kept at most max_tokens issued tokens and dropped the least recently
    # used: a small bound here stands for the default 10,000.
    config = auth.AuthConfig(users={USER: PASSWORD, "eve": "eve's own"})
    srv = _start(docs, config, max_tokens=100)
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as client:
            ann = client.authenticate_basic_token(USER, PASSWORD)
            for _ in range(300):
                client.authenticate_basic_token("eve", "eve's own")
            assert _count(client, ann) == 2
    finally:
        srv.shutdown()


def _edited(header: tuple[bytes, bytes], change) -> tuple[bytes, bytes]:
    name, value = header
    token = value.split(b" ", 1)[1]
    body, _, tag = token.partition(b".")
    raw = bytearray(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    change(raw)
    new_body = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=")
    return name, b"Bearer " + new_body + b"." + tag


def test_an_edited_token_is_refused(docs) -> None:
    config = auth.AuthConfig(users={USER: PASSWORD, "bob": "bob's"})
    srv = _start(docs, config)
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as client:
            bob = client.authenticate_basic_token("bob", "bob's")
            assert _count(client, bob) == 2

            def later_expiry(raw: bytearray) -> None:
                raw[1:9] = (int.from_bytes(raw[1:9], "little") + 10**6).to_bytes(8, "little")

            def other_user(raw: bytearray) -> None:
                raw[-3:] = b"ann"[:3]

            for change in (later_expiry, other_user):
                with pytest.raises(flight.FlightUnauthenticatedError, match="invalid"):
                    _count(client, _edited(bob, change))
            name, value = bob
            with pytest.raises(flight.FlightUnauthenticatedError):
                _count(client, (name, value[:-2]))
    finally:
        srv.shutdown()


def test_a_token_from_another_root_or_for_a_changed_password_is_refused(
        docs, tmp_path: Path) -> None:
    config = auth.AuthConfig(users={USER: PASSWORD})
    here = _start(docs, config)
    twin = _start(docs, config)
    changed = _start(docs, auth.AuthConfig(users={USER: "a new password"}))
    other_conn = two_docs("elsewhere")
    elsewhere = _start(other_conn, config)
    servers = [here, twin, changed, elsewhere]
    try:
        clients = [flight.connect(f"grpc://127.0.0.1:{s.port}") for s in servers]
        header = clients[0].authenticate_basic_token(USER, PASSWORD)
        assert _count(clients[1], header) == 2
        for refusing in clients[2:]:
            with pytest.raises(flight.FlightUnauthenticatedError, match="invalid"):
                _count(refusing, header)
        for c in clients:
            c.close()
    finally:
        for s in servers:
            s.shutdown()
        other_conn.close()


class _Headers(flight.ClientMiddlewareFactory):
    """Keeps the ``authorization`` headers the server sends back."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def start_call(self, info):
        factory = self

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                factory.seen.extend(headers.get("authorization", []))

        return Middleware()


def test_a_token_used_in_the_second_half_of_its_life_is_renewed(docs) -> None:
    srv = _start(docs, auth.AuthConfig(users={USER: PASSWORD}), token_ttl=4.0)
    headers = _Headers()
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}", middleware=[headers]) as client:
            header = client.authenticate_basic_token(USER, PASSWORD)
            headers.seen.clear()
            assert _count(client, header) == 2
            assert headers.seen == []
            time.sleep(2.5)
            assert _count(client, header) == 2
            [renewed] = headers.seen
            time.sleep(2.0)  # the first token is past its lifetime now
            with pytest.raises(flight.FlightUnauthenticatedError, match="expired"):
                _count(client, header)
            assert _count(client, (b"authorization", renewed.encode())) == 2
    finally:
        srv.shutdown()
