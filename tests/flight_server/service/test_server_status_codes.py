"""Status codes pyarrow's own Flight server could not send: an existing table is
ALREADY_EXISTS and a commit that kept losing to other writers is ABORTED, as a raw gRPC
client, pyarrow.flight and ADBC see them; and the transport's other statuses."""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Iterator

import adbc_driver_flightsql.dbapi as adbc
import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect
from quiver.proto import flight_pb2, flight_sql_pb2, pack
from quiver.supertable.table import TableOptions

SERVICE = "/arrow.flight.protocol.FlightService"


def _statement(channel: grpc.Channel, sql: str) -> None:
    """Runs ``sql`` through GetFlightInfo from a plain gRPC client."""
    call = channel.unary_unary(f"{SERVICE}/GetFlightInfo",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=lambda b: b)
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    call(flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.CMD, cmd=cmd),
         timeout=30)


def _adbc(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


@pytest.fixture
def docs(quiver_server) -> str:
    quiver_server.conn.sql("CREATE TABLE docs (id BIGINT)")
    return f"grpc://127.0.0.1:{quiver_server.port}"


def test_creating_an_existing_table_is_already_exists_for_every_client(docs) -> None:
    with (grpc.insecure_channel(docs.removeprefix("grpc://")) as channel,
          pytest.raises(grpc.RpcError) as raw):
        _statement(channel, "CREATE TABLE docs (x BIGINT)")
    assert raw.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "docs" in raw.value.details() and "already exists" in raw.value.details()

    client = flight.connect(docs)
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query="CREATE TABLE docs (x BIGINT)"))
    with pytest.raises(pa.ArrowException, match=r"already exists error.*'docs' already exists"):
        client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
    client.close()

    conn = _adbc(docs)
    try:
        with pytest.raises(adbc.ProgrammingError, match="already exists") as err:
            conn.cursor().execute("CREATE TABLE docs (x BIGINT)")
        assert err.value.status_code == AdbcStatusCode.ALREADY_EXISTS
        # IF NOT EXISTS is not an error.
        conn.cursor().execute("CREATE TABLE IF NOT EXISTS docs (x BIGINT)")
    finally:
        conn.close()


def test_unimplemented_methods_and_missing_handshake_are_unimplemented(docs) -> None:
    with grpc.insecure_channel(docs.removeprefix("grpc://")) as channel:
        poll = channel.unary_unary(f"{SERVICE}/PollFlightInfo",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            poll(b"", timeout=30)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "PollFlightInfo" in err.value.details()
        exchange = channel.stream_stream(f"{SERVICE}/DoExchange",
                                         request_serializer=lambda b: b,
                                         response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            list(exchange(iter([b""]), timeout=30))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Without authentication configured there is nothing to hand shake about.
        shake = channel.stream_stream(f"{SERVICE}/Handshake",
                                      request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            list(shake(iter([]), timeout=30))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_garbled_descriptor_is_invalid_argument(docs) -> None:
    with grpc.insecure_channel(docs.removeprefix("grpc://")) as channel:
        info = channel.unary_unary(f"{SERVICE}/GetFlightInfo",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            info(b"\xff\xff\xff", timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in err.value.details()


# ---------------------------------------------------------------- commit contention


@pytest.fixture
def contended() -> Iterator[list[QuiverFlightServer]]:
    """Two servers over one root (each table object serializes its own writes, so the
    race is between servers) whose writes give up after one lost race for the next
    version."""
    root = f"memory://aborted-{uuid.uuid4().hex}"
    options = TableOptions(commit_attempts=1, background_indexing=False)
    conns = [connect(root, table_options=options) for _ in range(2)]
    conns[0].sql("CREATE TABLE hits (id BIGINT)")
    servers = [QuiverFlightServer(c, "grpc://127.0.0.1:0") for c in conns]
    try:
        yield servers
    finally:
        for srv in servers:
            srv.shutdown()
            srv.conn.close()
        drop_memory_store(root)


WRITERS = 4
INSERTS_EACH = 60


def test_writers_racing_past_the_commit_retries_get_aborted(contended) -> None:
    uris = [f"127.0.0.1:{srv.port}" for srv in contended]
    codes: list[grpc.StatusCode] = []
    details: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write(worker: int) -> None:
        with grpc.insecure_channel(uris[worker % len(uris)]) as channel:
            for i in range(INSERTS_EACH):
                if stop.is_set():
                    return
                try:
                    _statement(channel, f"INSERT INTO hits VALUES ({worker * 1000 + i})")
                except grpc.RpcError as exc:
                    with lock:
                        codes.append(exc.code())
                        details.append(exc.details())
                    if exc.code() == grpc.StatusCode.ABORTED:
                        stop.set()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert grpc.StatusCode.ABORTED in codes, "no write lost its race; no contention seen"
    assert set(codes) == {grpc.StatusCode.ABORTED}, details
    message = details[codes.index(grpc.StatusCode.ABORTED)]
    assert "retry" in message and "Traceback" not in message


@pytest.fixture
def no_commit_attempts() -> Iterator[str]:
    """A server whose table writes have no commit attempt: every write gives up at once
    with the error of a writer that kept losing the race."""
    root = f"memory://aborted-{uuid.uuid4().hex}"
    conn = connect(root, table_options=TableOptions(commit_attempts=0))
    conn.sql("CREATE TABLE hits (id BIGINT)")
    srv = QuiverFlightServer(conn, "grpc://127.0.0.1:0")
    try:
        yield f"grpc://127.0.0.1:{srv.port}"
    finally:
        srv.shutdown()
        conn.close()
        drop_memory_store(root)


def test_pyarrow_and_adbc_see_a_lost_commit_race_as_aborted(no_commit_attempts) -> None:
    client = flight.connect(no_commit_attempts)
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query="INSERT INTO hits VALUES (1)"))
    # pyarrow has no class of its own for ABORTED; its message names the code.
    with pytest.raises(flight.FlightError, match=r"aborted error.*lost the race"):
        client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
    client.close()
    conn = _adbc(no_commit_attempts)
    try:
        with pytest.raises(adbc.OperationalError, match=r"\(Aborted; ") as stmt:
            conn.cursor().execute("INSERT INTO hits VALUES (1)")
        assert stmt.value.vendor_code == grpc.StatusCode.ABORTED.value[0]
        with pytest.raises(adbc.OperationalError, match=r"\(Aborted; ") as ingest:
            conn.cursor().adbc_ingest("hits", pa.table({"id": [1, 2]}), mode="append")
        assert ingest.value.vendor_code == grpc.StatusCode.ABORTED.value[0]
        assert "retry" in str(ingest.value)
    finally:
        conn.close()
