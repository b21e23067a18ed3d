"""Prepared statements belong to the session (user and connection) that made them: one
client cannot push out, run or close another client's statements.

The attack: 1,024 prepared statements from one client evicted every other client's (one
global least-recently-used registry). Now each session holds at most its quota and past
it drops only its own least recently used statement; a handle used by another session
is NOT_FOUND, and a made-up handle INVALID_ARGUMENT.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import auth
from quiver.flight_server.service.handles import PreparedRegistry
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.proto import flight_sql_pb2, pack, unpack
from tests.flight_server.conftest import stop_on_memory, two_docs

FLOOD = 1_100


@pytest.fixture
def server(quiver_server) -> QuiverFlightServer:
    quiver_server.conn.sql("CREATE TABLE people (id BIGINT, name VARCHAR)")
    quiver_server.conn.sql("INSERT INTO people VALUES (1, 'ann'), (2, 'bob')")
    return quiver_server


@pytest.fixture
def clients(server) -> Iterator[tuple[flight.FlightClient, flight.FlightClient]]:
    uri = f"grpc://127.0.0.1:{server.port}"
    with flight.connect(uri) as a, flight.connect(uri) as b:
        yield a, b


def _prepare(client: flight.FlightClient, sql: str, options=None) -> bytes:
    body = pack(flight_sql_pb2.ActionCreatePreparedStatementRequest(query=sql))
    [result] = client.do_action(flight.Action("CreatePreparedStatement", body), options)
    return bytes(unpack(result.body.to_pybytes()).prepared_statement_handle)


def _run(client: flight.FlightClient, handle: bytes, options=None) -> pa.Table:
    cmd = pack(flight_sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd), options)
    return pa.concat_tables(client.do_get(e.ticket, options).read_all() for e in info.endpoints)


def _close(client: flight.FlightClient, handle: bytes, options=None) -> None:
    body = pack(flight_sql_pb2.ActionClosePreparedStatementRequest(
        prepared_statement_handle=handle))
    list(client.do_action(flight.Action("ClosePreparedStatement", body), options))


def test_a_flood_of_prepares_from_one_client_leaves_another_client_s_statement(
        server, clients) -> None:
    a, b = clients
    theirs = _prepare(b, "SELECT name FROM people WHERE id = 1")
    mine = [_prepare(a, f"SELECT {i} AS n") for i in range(FLOOD)]
    assert _run(b, theirs).to_pydict() == {"name": ["ann"]}
    # The flooding client pushed out only its own oldest statements.
    assert len(server.prepared) <= server.prepared.per_session + 1
    assert _run(a, mine[-1]).to_pydict() == {"n": [FLOOD - 1]}
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        _run(a, mine[0])


def test_another_client_can_neither_run_nor_close_a_statement(clients) -> None:
    a, b = clients
    theirs = _prepare(b, "SELECT name FROM people WHERE id = 2")
    with pytest.raises(pa.ArrowKeyError, match="not found") as info:
        _run(a, theirs)
    assert "bob" not in str(info.value)
    _close(a, theirs)
    assert _run(b, theirs).to_pydict() == {"name": ["bob"]}
    _close(b, theirs)
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        _run(b, theirs)


def test_a_made_up_or_edited_prepared_handle_is_an_invalid_argument(clients) -> None:
    a, _ = clients
    real = _prepare(a, "SELECT 1 AS one")
    for forged in (b"qvp" + os.urandom(16), real[:-1] + bytes([real[-1] ^ 1]),
                   real[:3] + os.urandom(16) + real[19:]):
        with pytest.raises(pa.ArrowInvalid, match="prepared statement handle is damaged"):
            _run(a, forged)
    assert _run(a, real).to_pydict() == {"one": [1]}


def test_with_authentication_a_user_cannot_use_another_user_s_statement() -> None:
    config = auth.AuthConfig(users={"ann": "ann's", "eve": "eve's"})
    srv = QuiverFlightServer(two_docs("sessions"), "grpc://127.0.0.1:0",
                             middleware=auth.middleware(config))
    uri = f"grpc://127.0.0.1:{srv.port}"
    try:
        with flight.connect(uri) as ann, flight.connect(uri) as eve:
            as_ann = flight.FlightCallOptions(
                headers=[ann.authenticate_basic_token("ann", "ann's")])
            as_eve = flight.FlightCallOptions(
                headers=[eve.authenticate_basic_token("eve", "eve's")])
            handle = _prepare(ann, "SELECT title FROM docs WHERE id = 1", as_ann)
            with pytest.raises(pa.ArrowKeyError, match="not found"):
                _run(eve, handle, as_eve)
            assert _run(ann, handle, as_ann).to_pydict() == {"title": ["alpha"]}
    finally:
        stop_on_memory(srv)


def test_the_registry_keeps_each_session_within_its_quota_and_the_whole_within_its_size(
        ) -> None:
    reg = PreparedRegistry(max_size=10, per_session=4)
    schema = pa.schema([])

    def add(session: str, i: int) -> bytes:
        return reg.add(f"SELECT {i}", is_query=True, dataset_schema=None,
                       parameter_schema=schema, session=session).handle

    victim = [add("victim", i) for i in range(2)]
    flood = [add(f"flood{k}", i) for k in range(5) for i in range(6)]
    assert reg.count("victim") == 2
    assert all(reg.count(f"flood{k}") <= 4 for k in range(5))
    assert len(reg) <= 10
    for handle in victim:
        assert reg.get(handle, "victim").sql.startswith("SELECT")
    with pytest.raises(KeyError):
        reg.get(flood[0], "flood0")


def test_each_call_knows_its_user_and_peer() -> None:
    seen: list[tuple[str | None, str]] = []

    class Recording(QuiverFlightServer):
        def list_actions(self, context):
            seen.append((context.user, context.peer))
            return super().list_actions(context)

    static = "static-token-0123456789abcdef"
    config = auth.AuthConfig(users={"ann": "ann's"}, tokens=frozenset({static}))
    srv = Recording(two_docs("identity"), "grpc://127.0.0.1:0",
                    middleware=auth.middleware(config))
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as client:
            login = client.authenticate_basic_token("ann", "ann's")
            list(client.list_actions(flight.FlightCallOptions(headers=[login])))
            bearer = (b"authorization", f"Bearer {static}".encode())
            list(client.list_actions(flight.FlightCallOptions(headers=[bearer])))
    finally:
        stop_on_memory(srv)
    (ann, ann_peer), (token, token_peer) = seen
    assert ann == "ann" and token.startswith("token:") and static not in token
    assert ann_peer == token_peer and ann_peer.startswith("ipv4:127.0.0.1:")


# -- bound parameters ----------------------------------------------------------------------------

MIB = 1 << 20


@pytest.fixture
def small(tmp_path) -> Iterator[QuiverFlightServer]:
    """A server taking 1 MiB per message and per bind, keeping 3 MiB of bound rows."""
    from quiver.flight_server.sql import connect
    srv = QuiverFlightServer(connect(str(tmp_path / "root")), "grpc://127.0.0.1:0",
                             max_message_bytes=MIB,
                             prepared=PreparedRegistry(params_budget=3 * MIB))
    try:
        yield srv
    finally:
        srv.shutdown(0)


def _bind(client: flight.FlightClient, handle: bytes, rows: int, batch_rows: int = 16_384
          ) -> None:
    """Binds ``rows`` BIGINT parameter rows (8 bytes each) in batches under 1 MiB."""
    cmd = pack(flight_sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    schema = pa.schema([("v", pa.int64())])
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(cmd), schema)
    for start in range(0, rows, batch_rows):
        n = min(batch_rows, rows - start)
        writer.write_batch(pa.record_batch([pa.array(range(start, start + n), pa.int64())],
                                           schema=schema))
    writer.done_writing()
    reader.read()
    writer.close()


def test_parameters_past_what_one_call_may_bind_are_refused(small) -> None:
    with flight.connect(f"grpc://127.0.0.1:{small.port}") as client:
        handle = _prepare(client, "SELECT count(*) AS n FROM (SELECT ? AS v)")
        # 2 MiB of rows, each message well under the 1 MiB message limit.
        with pytest.raises(pa.ArrowException, match="most one call may bind"):
            _bind(client, handle, 2 * MIB // 8)
        assert small.prepared._params_bytes == 0
        # The statement still takes a bind within the limit.
        _bind(client, handle, 1000)
        assert small.prepared._params_bytes == 8000


def test_bound_parameters_of_all_statements_share_one_budget(small) -> None:
    rows = 110_000  # 0.84 MiB each: three fit in 3 MiB, a fourth does not
    with flight.connect(f"grpc://127.0.0.1:{small.port}") as client:
        handles = [_prepare(client, f"SELECT ? + {i} AS v") for i in range(4)]
        for handle in handles[:3]:
            _bind(client, handle, rows)
        assert small.prepared._params_bytes == 3 * rows * 8
        with pytest.raises(pa.ArrowException, match="prepared statements would take"):
            _bind(client, handles[3], rows)
        # Binding again replaces a statement's rows (it does not count them twice), and
        # closing a statement gives its rows' share back.
        _bind(client, handles[0], rows)
        _close(client, handles[1])
        _bind(client, handles[3], rows)
        assert small.prepared._params_bytes == 3 * rows * 8


def test_quiver_serve_holds_each_session_to_its_prepared_per_session_quota(tmp_path) -> None:
    from tests.flight_server.conftest import start_server
    root = tmp_path / "root"
    root.mkdir()
    served = start_server(root, "--prepared-per-session", "2")
    try:
        with flight.connect(served.uri) as client:
            handles = [_prepare(client, f"SELECT {i} AS n") for i in range(3)]
            assert _run(client, handles[2]).to_pydict() == {"n": [2]}
            assert _run(client, handles[1]).to_pydict() == {"n": [1]}
            # The quota of 2 pushed out the session's oldest statement.
            with pytest.raises(pa.ArrowKeyError, match="not found"):
                _run(client, handles[0])
    finally:
        assert served.stop() == 0, served.log()
