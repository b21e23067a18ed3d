"""Every statement is bounded and stops when told: a time limit ends it with
DEADLINE_EXCEEDED, a cancel request, a client deadline or a client that goes away stop
its work (the server's CPU time stops growing), memory-hungry statements fail with
RESOURCE_EXHAUSTED while the server's memory stays bounded, searches cannot ask for
more results than the table or the server's maximum, and SIGTERM ends a busy server
within its grace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service.limits import Limits
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect
from quiver.proto import flight_pb2, flight_sql_pb2, pack
from quiver.supertable.errors import WorkTimeoutError
from tests.flight_server.conftest import ServerProcess, start_server

# Minutes of work for one core, cancellable at any batch: an aggregate over generated rows.
HEAVY = "SELECT count(DISTINCT value % 1000003) AS n FROM generate_series(1, 20000000000)"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_idle(pid: int, settle: float = 1.0, window: float = 1.5) -> None:
    """The server's CPU time stops growing once its work has been stopped."""
    time.sleep(settle)
    before = cpu_seconds(pid)
    time.sleep(window)
    used = cpu_seconds(pid) - before
    assert used < 0.25 * window, f"server still used {used:.2f} s of CPU in {window} s"


def _adbc(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


def _drain(reader: flight.FlightStreamReader) -> None:
    # read_chunk, not read_all: read_all turns a CANCELLED status into a KeyboardInterrupt
    # of the main thread.
    while True:
        try:
            reader.read_chunk()
        except StopIteration:
            return


def _read_in_background(client: flight.FlightClient, info: flight.FlightInfo
                        ) -> tuple[threading.Thread, list[BaseException]]:
    """Reads the first endpoint of ``info`` in a thread; what it raised lands in the list."""
    failure: list[BaseException] = []

    def read() -> None:
        try:
            _drain(client.do_get(info.endpoints[0].ticket))
        except BaseException as exc:
            failure.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    return reader, failure


def _cancel(client: flight.FlightClient, info: flight.FlightInfo) -> int:
    """Sends CancelFlightInfo for ``info``; the status it answers."""
    msg = flight_pb2.FlightInfo()
    msg.ParseFromString(info.serialize())
    body = flight_pb2.CancelFlightInfoRequest(info=msg).SerializeToString()
    out = flight_pb2.CancelFlightInfoResult()
    out.ParseFromString(next(iter(client.do_action(flight.Action("CancelFlightInfo", body))))
                        .body.to_pybytes())
    return out.status


def _ticket_info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(cmd))


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[ServerProcess]:
    """A server with a small memory pool, a small search maximum and a long time limit."""
    root = tmp_path_factory.mktemp("limited") / "root"
    root.mkdir()
    server = start_server(root, "--statement-timeout", "60", "--memory-limit",
                          str(256 << 20), "--max-search-k", "1000",
                          "--max-statement-length", "20000")
    with _adbc(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE docs (id BIGINT, body VARCHAR, emb FLOAT[3]) "
                    "WITH (fts = 'body', vector = 'emb')")
        cur.execute("INSERT INTO docs SELECT value, 'rust async ' || CAST(value AS VARCHAR), "
                    "[CAST(value AS FLOAT), 1.0, 0.5] FROM generate_series(1, 50)")
        conn.commit()
    try:
        yield server
    finally:
        server.stop()


def test_a_statement_past_the_time_limit_is_deadline_exceeded_and_stops(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, "--statement-timeout", "2")
    try:
        started = time.monotonic()
        with _adbc(server.uri) as conn, conn.cursor() as cur, \
                pytest.raises(Exception, match=r"DEADLINE_EXCEEDED|TIMEOUT|time limit") as err:
            cur.execute(HEAVY)
            cur.fetchall()
        assert time.monotonic() - started < 15
        assert "Traceback" not in str(err.value)
        assert_idle(server.proc.pid)
    finally:
        server.stop()


def test_cancel_flight_info_stops_the_running_statement(limited: ServerProcess) -> None:
    client = flight.connect(limited.uri)
    info = _ticket_info(client, HEAVY)
    reader, failure = _read_in_background(client, info)
    time.sleep(1.5)
    assert _cancel(client, info) == flight_pb2.CANCEL_STATUS_CANCELLED
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert failure and isinstance(failure[0], flight.FlightCancelledError)
    assert_idle(limited.proc.pid)


def test_a_client_deadline_stops_the_statement(limited: ServerProcess) -> None:
    client = flight.connect(limited.uri)
    info = _ticket_info(client, HEAVY)
    with pytest.raises(flight.FlightTimedOutError):
        _drain(client.do_get(info.endpoints[0].ticket,
                             options=flight.FlightCallOptions(timeout=1.5)))
    assert_idle(limited.proc.pid)


def test_a_client_that_goes_away_stops_the_statement(limited: ServerProcess) -> None:
    script = textwrap.dedent(f"""
        import pyarrow.flight as flight
        from quiver.proto import flight_pb2, flight_sql_pb2, pack
        c = flight.connect({limited.uri!r})
        cmd = pack(flight_sql_pb2.CommandStatementQuery(query={HEAVY!r}))
        info = c.get_flight_info(flight.FlightDescriptor.for_command(cmd))
        print("started", flush=True)
        c.do_get(info.endpoints[0].ticket).read_all()
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        time.sleep(1.5)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert_idle(limited.proc.pid)


@pytest.mark.parametrize("sql", [
    "SELECT length(repeat('x', 1000000000)) AS n",
    "SELECT array_agg(value) AS a FROM generate_series(1, 2000000000)",
    "SELECT count(*) FROM generate_series(1, 200000000) a JOIN generate_series(1, 200000000) b "
    "ON a.value = b.value",
])
def test_memory_hungry_statements_are_refused_and_memory_stays_bounded(
        limited: ServerProcess, sql: str) -> None:
    pid = limited.proc.pid
    before = rss_bytes(pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_bytes(pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with _adbc(limited.uri) as conn, conn.cursor() as cur, \
                pytest.raises(Exception, match=r"RESOURCE_EXHAUSTED|ResourceExhausted") as err:
            cur.execute(sql)
            cur.fetchall()
    finally:
        done.set()
        watcher.join()
    assert "Traceback" not in str(err.value)
    # The pool is 256 MiB; what the server holds besides it stays well under a GiB.
    assert peak[0] - before < 1 << 30, f"RSS grew by {(peak[0] - before) >> 20} MiB"
    with _adbc(limited.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM docs")
        assert cur.fetchall() == [(50,)]


def test_search_sizes_are_bounded_by_the_table_and_the_server(limited: ServerProcess) -> None:
    with _adbc(limited.uri) as conn, conn.cursor() as cur:
        started = time.monotonic()
        with pytest.raises(Exception, match=r"1000 results.*(RESOURCE_EXH|ResourceExh)"):
            cur.execute("SELECT * FROM vector_search('docs', 'emb', '[1, 1, 1]', 100000000)")
        with pytest.raises(Exception, match=r"RESOURCE_EXHAUSTED|ResourceExhausted") as err:
            cur.execute(f"SELECT * FROM bm25_search('docs', 'body', 'rust', {2**63 - 1})")
        assert "Traceback" not in str(err.value) and "/" not in str(err.value).split(":")[-1]
        assert time.monotonic() - started < 10
        # Within the maximum, a search returns at most the table's rows.
        cur.execute("SELECT count(*) FROM vector_search('docs', 'emb', '[1, 1, 1]', 900)")
        assert cur.fetchall() == [(50,)]
        cur.execute("SELECT count(*) FROM docs WHERE knn(emb, '[1, 1, 1]', 900)")
        assert cur.fetchall() == [(50,)]


def test_a_statement_text_past_the_length_limit_is_refused_unread(limited: ServerProcess
                                                                  ) -> None:
    def in_list(count: int) -> str:
        return (f"SELECT count(*) FROM docs WHERE id IN "
                f"({', '.join(str(i) for i in range(count))})")
    too_long, fits = in_list(4000), in_list(3000)
    assert len(too_long) > 20000 > len(fits)
    with _adbc(limited.uri) as conn, conn.cursor() as cur:
        with pytest.raises(Exception, match=r"RESOURCE_EXHAUSTED|ResourceExhausted") as err:
            cur.execute(too_long)
        assert "--max-statement-length" in str(err.value) and "20,000" in str(err.value)
        cur.execute(fits)
        assert cur.fetchall() == [(50,)]


def test_the_engine_reads_texts_up_to_its_length_limit(tmp_path) -> None:
    from quiver.flight_server.sql.engine import MAX_STATEMENT_LENGTH
    from quiver.flight_server.sql.errors import SqlResourceError
    conn = connect(str(tmp_path / "root"))
    assert conn.engine.max_statement_length == MAX_STATEMENT_LENGTH
    padded = "SELECT 1 AS one" + " " * (MAX_STATEMENT_LENGTH - 15)
    assert conn.sql(padded).to_pylist() == [{"one": 1}]
    for refused in (conn.sql, conn.analyse, conn.is_query, conn.schema):
        with pytest.raises(SqlResourceError, match="characters long"):
            refused(padded + " ")
    short = connect(str(tmp_path / "root"), max_statement_length=2048)
    with pytest.raises(SqlResourceError, match="2,048"):
        short.sql("SELECT 1 AS one" + " " * 2048)


def test_statements_beyond_the_concurrency_limit_queue_then_are_refused(tmp_path) -> None:
    conn = connect(f"memory://limits-{os.getpid()}-{time.monotonic_ns()}")
    server = QuiverFlightServer(conn, "grpc://127.0.0.1:0", limits=Limits(
        statement_timeout_s=30, max_concurrent=1, queue_timeout_s=0.5))
    client = flight.connect(f"grpc://127.0.0.1:{server.port}")
    try:
        info = _ticket_info(client, HEAVY)
        reader, failure = _read_in_background(client, info)
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(pa.ArrowException, match="busy") as err:
            _ticket_info(client, "SELECT 1")
        assert "RESOURCE_EXHAUSTED" in str(err.value) or "busy" in str(err.value)
        assert time.monotonic() - started < 5
        _cancel(client, info)
        reader.join(timeout=10)
        assert failure and isinstance(failure[0], flight.FlightCancelledError)
        # The slot is free again.
        schema = _ticket_info(client, "SELECT 1 AS one").schema
        assert schema.names == ["one"]
    finally:
        client.close()
        server.shutdown()
        conn.close()


def test_sigterm_during_a_running_statement_exits_within_the_grace(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, "--shutdown-grace", "2")
    client = flight.connect(server.uri)
    info = _ticket_info(client, HEAVY)
    reader, failure = _read_in_background(client, info)
    time.sleep(1.0)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=15)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    assert time.monotonic() - started < 2 + 3 + 2
    assert code == 0
    reader.join(timeout=10)
    assert failure and isinstance(failure[0], flight.FlightError)


def test_an_s3_root_statement_stops_at_its_time_limit(s3_server) -> None:
    conn = connect(f"s3://{s3_server.new_bucket('limits')}/root", statement_timeout_s=1.0,
                   **s3_server.options())
    try:
        conn.sql("CREATE TABLE docs (id BIGINT)")
        started = time.monotonic()
        with pytest.raises(WorkTimeoutError, match="time limit of 1 s"):
            conn.sql(HEAVY)
        assert time.monotonic() - started < 5
        assert conn.sql("SELECT count(*) AS n FROM docs").column("n").to_pylist() == [0]
        assert isinstance(conn.sql("SELECT 1 AS one"), pa.Table)
    finally:
        conn.close()
