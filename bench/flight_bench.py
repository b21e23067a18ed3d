"""The Flight SQL server benchmark: a ``quiver serve`` process through the ADBC driver.

Run ``PYTHONPATH=. python -m bench.flight_bench`` (``--quick`` for a smoke run).
One run starts a real ``quiver serve`` subprocess on a local temporary root
(loopback only) and a bare ``pyarrow.flight`` server subprocess (this module with
``--bare-server``), and measures through ``adbc_driver_flightsql.dbapi``:

1. Streaming: ``SELECT *`` of a 1,000,000-row table (the 778,196 PyPI summaries
   followed by their first 221,804 rows again) with ``fetch_arrow_table`` and with
   a ``fetch_record_batch`` loop, against the bare server streaming the very same
   rows from memory with ``RecordBatchStream`` (the transport limit). Plain
   ``pyarrow.flight`` DoGet on both servers and the engine alone in this process
   split the time between client decoding, transport and the server.
2. Search: BM25 table-function statements round trip through ADBC against the
   same statements run in this process with ``quiver.flight_server.sql.connect(root)``;
   ``SELECT 1`` against roapi, the bare server and ``bench.grpc_floor`` (Quiver's gRPC
   transport with handlers that do no work, and grpcio alone replaying bytes), which
   split a statement's fixed cost between grpcio, Quiver's transport and its handlers;
   and the context switches one statement costs in each server process and the client.
3. Bulk ingest: ``adbc_ingest(..., mode="create")`` of the summaries against the
   embedded ``create_table`` + ``append`` with the indexes the server's ingest
   creates (BM25 on every string column); a bare-server ingest is the transport
   limit.

Timed runs alternate between the compared paths so machine noise hits both;
figures are medians after warm-up. Results go to ``bench/results/flight-*``.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import itertools
import logging
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from bench import report
from bench.data import BM25_QUERIES, SUMMARIES
from bench.machine import describe_machine
from bench.report import fmt as _fmt

log = logging.getLogger("bench.flight")

REPO = Path(__file__).resolve().parent.parent

TABLE = "summaries"
STREAM_SQL = f"SELECT * FROM {TABLE}"
COUNT_SQL = f"SELECT count(*) AS n FROM {TABLE}"
TRIVIAL_SQL = "SELECT 1 AS one"
# A statement text the bare server answers with its whole table as one endpoint.
SINGLE_STREAM = "single_stream"
SINGLE_SQL = f"SELECT * FROM {SINGLE_STREAM}"
SEARCH_FIRST = "python web framework"
K = 10
# The server's batch grain (quiver.flight_server.service.server.MAX_BATCH_ROWS); the bare
# server slices its table the same way, so both send batches well under gRPC's 16 MiB message cap.
BARE_BATCH_ROWS = 65_536
START_TIMEOUT_S = 60.0

STREAM_LIMIT = 0.7
SEARCH_OVERHEAD_MS = 1.0
INGEST_LIMIT = 0.8
# A search through ADBC may cost the server's own SELECT 1 round trip plus the in-process
# search plus this much; SELECT 1 within ROAPI_LIMIT of roapi's (a Rust Flight SQL server).
SEARCH_OVER_FLOOR_MS = 0.3
ROAPI_LIMIT = 1.2


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"stream_rows": 100_000, "ingest_rows": 50_000, "stream_runs": 3,
                "stream_budget_s": 10.0, "search_runs": 5, "search_budget_s": 6.0,
                "count_runs": 10, "ingest_runs": 1, "warmup": 1, "floor_runs": 100,
                "switch_statements": 100}
    return {"stream_rows": 1_000_000, "ingest_rows": None, "stream_runs": 7,
            "stream_budget_s": 45.0, "search_runs": 25, "search_budget_s": 40.0,
            "count_runs": 40, "ingest_runs": 3, "warmup": 2, "floor_runs": 300,
            "switch_statements": 1000}


# -- data -------------------------------------------------------------------------------------

def load_data(cfg: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    """The streaming table (summaries, repeated from the top up to ``stream_rows``) and the
    ingest table (the summaries, or their first ``ingest_rows``)."""
    summaries = pq.read_table(SUMMARIES).combine_chunks()
    n = cfg["stream_rows"]
    parts = []
    left = n
    while left > 0:
        take = min(left, summaries.num_rows)
        parts.append(summaries.slice(0, take))
        left -= take
    stream = pa.concat_tables(parts).combine_chunks()
    ingest = summaries
    if cfg["ingest_rows"] is not None:
        ingest = summaries.slice(0, cfg["ingest_rows"])
    return stream, ingest


def search_statements() -> list[tuple[str, str]]:
    """(query text, statement): the named query first, then the BM25 query set."""
    texts = [SEARCH_FIRST, *(q for q in BM25_QUERIES if q != SEARCH_FIRST)]
    return [(q, f"SELECT * FROM bm25_search('{TABLE}', 'summary', '{q}', {K})") for q in texts]


# -- processes --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {START_TIMEOUT_S}s")


# The process id of each server started, by its URI.
SERVER_PIDS: dict[str, int] = {}


@contextmanager
def _listening(command: list[str], port: int, log_path: Path, **popen: Any) -> Iterator[str]:
    """Runs ``command`` until the block ends; yields ``grpc://127.0.0.1:<port>`` once it
    listens there."""
    with log_path.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        _wait_listening(port, proc, log_path)
        uri = f"grpc://127.0.0.1:{port}"
        SERVER_PIDS[uri] = proc.pid
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _process(args: list[str], port: int, log_path: Path) -> Any:
    """``python <args>`` from the repository (see ``_listening``)."""
    return _listening([sys.executable, *args], port, log_path, cwd=str(REPO),
                      env=dict(os.environ, PYTHONPATH=str(REPO)))


def quiver_server(root: Path, log_path: Path) -> Any:
    port = _free_port()
    return _process(["-m", "quiver", "serve", "--root", str(root), "--port",
                     str(port)], port, log_path)


@contextmanager
def roapi_server(data: Path, log_path: Path) -> Iterator[str | None]:
    """roapi (installed with the bench extra) serving ``data`` as table ``t`` over Flight SQL
    on loopback; None when it is not installed. Its HTTP and Postgres listeners are bound to
    loopback ports too, so nothing listens beyond this machine."""
    binary = shutil.which("roapi", path=str(Path(sys.executable).parent)) or shutil.which("roapi")
    if binary is None:
        log.warning("roapi is not installed: the Flight benchmark runs without that peer")
        yield None
        return
    port = _free_port()
    args = [binary, "--addr-flight-sql", f"127.0.0.1:{port}", "-a", f"127.0.0.1:{_free_port()}",
            "-p", f"127.0.0.1:{_free_port()}", "-t", f"t={data}"]
    with _listening(args, port, log_path) as uri:
        yield uri


def grpc_floor_server(log_path: Path, canned: bool = False) -> Any:
    """``bench.grpc_floor``: Quiver's transport with handlers that do no work, or
    (``canned``) grpcio alone answering with bytes made once."""
    port = _free_port()
    return _process(["-m", "bench.grpc_floor", "--port", str(port),
                     *(["--canned"] if canned else [])], port, log_path)


def context_switches(pid: int) -> int | None:
    """Context switches (voluntary and not) of every thread of process ``pid`` so far;
    None where ``/proc`` does not tell."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                status = (task / "status").read_text()
            except OSError:
                continue  # a thread that ended meanwhile
            total += sum(int(line.split()[1]) for line in status.splitlines()
                         if line.partition(":")[0].endswith("ctxt_switches"))
    except OSError:
        return None
    return total


def switches_per_statement(servers: dict[str, str], statements: int) -> dict[str, Any]:
    """Context switches per ADBC ``SELECT 1`` in each server's process and in this one
    (the client), each server in turn for ``statements`` statements: thread hand-offs are
    what a statement's fixed cost is mostly made of on a small machine."""
    out: dict[str, Any] = {}
    for name, uri in servers.items():
        pid = SERVER_PIDS.get(uri)
        conn = adbc_connect(uri)
        try:
            cur = conn.cursor()
            for _ in range(20):
                adbc_table(cur, TRIVIAL_SQL)
            server0, client0 = context_switches(pid) if pid else None, \
                context_switches(os.getpid())
            t0 = time.perf_counter()
            for _ in range(statements):
                adbc_table(cur, TRIVIAL_SQL)
            seconds = time.perf_counter() - t0
            server1, client1 = context_switches(pid) if pid else None, \
                context_switches(os.getpid())
            cur.close()
        finally:
            conn.close()
        out[name] = {
            "server": None if server0 is None or server1 is None
            else (server1 - server0) / statements,
            "client": None if client0 is None or client1 is None
            else (client1 - client0) / statements,
            "ms": seconds * 1000 / statements}
    log.info("context switches per statement: %s", out)
    return out


def bare_server(data: Path, endpoints: int, log_path: Path) -> Any:
    port = _free_port()
    return _process(["-m", "bench.flight_bench", "--bare-server", str(data), "--port",
                     str(port), "--endpoints", str(endpoints)], port, log_path)


# -- the bare server (runs in its own process) ------------------------------------------------

def _update_result(count: int) -> bytes:
    """A serialized ``DoPutUpdateResult`` (field 1, int64 ``record_count``)."""
    out = bytearray(b"\x08")
    value = count & 0xFFFFFFFFFFFFFFFF
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class BareServer(flight.FlightServerBase):
    """Streams one in-memory table for any query and drains any upload: no engine at all.

    It answers just enough Flight SQL for the ADBC driver: a statement query gets its
    endpoints (the table in ``endpoints`` parts of about equal rows, read in parallel by
    the driver like Quiver's split scans; one endpoint when the text names
    ``SINGLE_STREAM``; a one-row table for ``TRIVIAL_SQL``), a bulk ingest is read and
    dropped with an update count, everything else (the driver's SqlInfo probe, prepared
    statements, which the driver then does without) is unimplemented."""

    def __init__(self, location: str, table: pa.Table, endpoints: int = 1) -> None:
        # Everything is ready before the base class starts listening: a client may call
        # as soon as the port accepts connections.
        one = pa.table({"one": pa.array([1], pa.int64())})
        table = table.combine_chunks()
        self.tables: dict[bytes, tuple[pa.Schema, list[pa.RecordBatch]]] = {
            b"table": (table.schema, table.to_batches(max_chunksize=BARE_BATCH_ROWS)),
            b"one": (one.schema, one.to_batches()),
        }
        bounds = np.linspace(0, table.num_rows, endpoints + 1).round().astype(np.int64)
        self.parts = [f"part/{i}".encode() for i in range(endpoints)]
        for key, (a, b) in zip(self.parts, itertools.pairwise(bounds), strict=True):
            part = table.slice(int(a), int(b - a))
            self.tables[key] = (table.schema, part.to_batches(max_chunksize=BARE_BATCH_ROWS))
        super().__init__(location)

    def get_flight_info(self, context: flight.ServerCallContext,
                        descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        command = descriptor.command or b""
        if b"CommandStatementQuery" not in command:
            raise flight.FlightUnimplementedError("only statement queries")
        # The packed query text is in the command bytes.
        if TRIVIAL_SQL.encode() in command:
            keys = [b"one"]
        elif SINGLE_STREAM.encode() in command:
            keys = [b"table"]
        else:
            keys = self.parts
        schema = self.tables[keys[0]][0]
        return flight.FlightInfo(schema, descriptor,
                                 [flight.FlightEndpoint(k, []) for k in keys], -1, -1)

    def do_get(self, context: flight.ServerCallContext,
               ticket: flight.Ticket) -> flight.FlightDataStream:
        schema, batches = self.tables[ticket.ticket]
        return flight.RecordBatchStream(pa.RecordBatchReader.from_batches(schema, batches))

    def do_put(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
               reader: flight.MetadataRecordBatchReader,
               writer: flight.FlightMetadataWriter) -> None:
        rows = 0
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is not None:
                rows += chunk.data.num_rows
        writer.write(pa.py_buffer(_update_result(rows)))


def run_bare_server(data: Path, port: int, endpoints: int) -> int:
    table = pq.read_table(data)
    server = BareServer(f"grpc://127.0.0.1:{port}", table, endpoints)
    log.info("bare server on port %d: %d rows, %d endpoints", server.port, table.num_rows,
             endpoints)
    server.serve()
    return 0


# -- clients ----------------------------------------------------------------------------------

def adbc_connect(uri: str) -> Any:
    import adbc_driver_flightsql.dbapi as adbc

    with warnings.catch_warnings():
        # The driver cannot turn autocommit off; every statement commits on its own anyway.
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


def _received(table: pa.Table) -> dict[str, Any]:
    return {"rows": table.num_rows, "bytes": table.nbytes}


def adbc_table(cur: Any, sql: str) -> dict[str, Any]:
    cur.execute(sql)
    return _received(cur.fetch_arrow_table())


def adbc_batches(cur: Any, sql: str) -> dict[str, Any]:
    cur.execute(sql)
    reader = cur.fetch_record_batch()
    rows = nbytes = batches = 0
    for batch in reader:
        rows += batch.num_rows
        nbytes += batch.nbytes
        batches += 1
    return {"rows": rows, "bytes": nbytes, "batches": batches}


def endpoint_count(uri: str, sql: str) -> int:
    """How many endpoints the server's FlightInfo for ``sql`` has."""
    from quiver.proto import flight_sql_pb2, pack

    client = flight.connect(uri)
    try:
        descriptor = flight.FlightDescriptor.for_command(
            pack(flight_sql_pb2.CommandStatementQuery(query=sql)))
        return len(client.get_flight_info(descriptor).endpoints)
    finally:
        client.close()


def flight_doget(client: flight.FlightClient, ticket: bytes) -> dict[str, Any]:
    table = client.do_get(flight.Ticket(ticket)).read_all()
    return {**_received(table), "batches": table.column(0).num_chunks}


# -- measuring --------------------------------------------------------------------------------

def alternate(fns: dict[str, Callable[[], Any]], runs: int, warmup: int, budget_s: float
              ) -> dict[str, dict[str, Any]]:
    """Times each function in turn, round after round: ``warmup`` untimed rounds, then up to
    ``runs`` timed rounds while ``budget_s`` lasts (at least three)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    last: dict[str, Any] = {}
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < runs and (rounds < 3 or time.perf_counter() < deadline):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            last[name] = fn()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: {"p50_ms": float(np.median(s) * 1000), "min_ms": float(min(s) * 1000),
                   "runs": len(s), "result": last[name]} for name, s in samples.items()}


def _rates(m: dict[str, Any]) -> dict[str, Any]:
    seconds = m["p50_ms"] / 1000
    res = m["result"]
    return {**m, "rows_per_s": res["rows"] / seconds, "mb_per_s": res["bytes"] / 1e6 / seconds}


def engine_stream(conn: Any, sql: str) -> dict[str, Any]:
    """Drains the engine's stream in this process, with and without the server's rechunking:
    what the server does for one DoGet before any byte reaches gRPC."""
    from quiver.flight_server.service.server import rechunk

    t0 = time.perf_counter()
    reader = conn.sql_stream(sql)
    opened = time.perf_counter() - t0
    sizes = [b.num_rows for b in reader]
    drained = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [b.num_rows for b in rechunk(iter(conn.sql_stream(sql)))]
    rechunked = time.perf_counter() - t0
    return {"open_ms": opened * 1000, "drain_ms": drained * 1000,
            "drain_rechunk_ms": rechunked * 1000, "engine_batches": len(sizes),
            "engine_batch_rows_median": float(np.median(sizes)) if sizes else 0.0,
            "sent_batches": len(out)}


def _datafusion_drain(data_dir: Path, columns: list[str], batch_rows: int | None,
                      cast_to: pa.Schema | None) -> float:
    """Seconds to stream the table's superfiles through a fresh DataFusion context with the
    engine's scan settings (strings as views), optionally casting each batch like the
    engine's output step."""
    import datafusion

    config = (datafusion.SessionConfig()
              .with_target_partitions(max(1, os.cpu_count() or 1))
              .set("datafusion.execution.parquet.pushdown_filters", "false")
              .set("datafusion.execution.parquet.schema_force_view_types", "true"))
    if batch_rows is not None:
        config = config.with_batch_size(batch_rows)
    ctx = datafusion.SessionContext(config)
    ctx.register_parquet("t", str(data_dir), file_extension=".parquet")
    cols = ", ".join(f'"{c}"' for c in columns)
    t0 = time.perf_counter()
    for batch in ctx.sql(f"SELECT {cols} FROM t").execute_stream():
        out = batch.to_pyarrow()
        if cast_to is not None:
            out.cast(cast_to)
    return time.perf_counter() - t0


def engine_profile(root: Path, schema: pa.Schema, repeats: int = 3) -> dict[str, Any]:
    """Where the engine's SELECT * time goes, in this process over the table's own files:
    pyarrow's Parquet decode, DataFusion's scan (view types), the cast to plain types, and
    the same with 65,536-row batches instead of DataFusion's default grain."""
    data_dir = next((root / "tables").glob(f"{TABLE}-*")) / "data"
    files = sorted(str(p) for p in data_dir.glob("*.parquet"))
    columns = schema.names
    runs: dict[str, list[float]] = {"pyarrow_read_table": [], "datafusion_scan": [],
                                    "datafusion_scan_cast": [],
                                    "datafusion_scan_cast_65536": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        pq.read_table(files, columns=columns)
        runs["pyarrow_read_table"].append(time.perf_counter() - t0)
        runs["datafusion_scan"].append(_datafusion_drain(data_dir, columns, None, None))
        runs["datafusion_scan_cast"].append(_datafusion_drain(data_dir, columns, None, schema))
        runs["datafusion_scan_cast_65536"].append(
            _datafusion_drain(data_dir, columns, BARE_BATCH_ROWS, schema))
    out: dict[str, Any] = {k: float(np.median(v) * 1000) for k, v in runs.items()}
    out["files"] = len(files)
    return out


def bench_stream(quiver: str, bare: str, conn: Any, root: Path, schema: pa.Schema,
                 cfg: dict[str, Any]) -> dict[str, Any]:
    qa, ba = adbc_connect(quiver), adbc_connect(bare)
    qc, bc = flight.connect(quiver), flight.connect(bare)
    try:
        qcur, bcur = qa.cursor(), ba.cursor()
        fns = {
            "quiver_adbc_table": lambda: adbc_table(qcur, STREAM_SQL),
            "bare_adbc_table": lambda: adbc_table(bcur, STREAM_SQL),
            "bare_adbc_single_table": lambda: adbc_table(bcur, SINGLE_SQL),
            "quiver_adbc_batches": lambda: adbc_batches(qcur, STREAM_SQL),
            "bare_adbc_batches": lambda: adbc_batches(bcur, STREAM_SQL),
            "quiver_flight_doget": lambda: flight_doget(qc, STREAM_SQL.encode()),
            "bare_flight_doget": lambda: flight_doget(bc, b"table"),
        }
        timed = alternate(fns, cfg["stream_runs"], 1, cfg["stream_budget_s"])
        out: dict[str, Any] = {name: _rates(m) for name, m in timed.items()}
        for name, m in out.items():
            log.info("stream %-20s p50 %8.1f ms  %6.0f MB/s  %5.2fM rows/s", name,
                     m["p50_ms"], m["mb_per_s"], m["rows_per_s"] / 1e6)
        engine = [engine_stream(conn, STREAM_SQL) for _ in range(3)]
        out["engine_in_process"] = {
            key: float(np.median([e[key] for e in engine])) for key in engine[0]}
        log.info("stream engine in process: %s", out["engine_in_process"])
        out["engine_profile_ms"] = engine_profile(root, schema)
        log.info("stream engine profile (ms): %s", out["engine_profile_ms"])
        counts = alternate({"adbc": lambda: adbc_table(qcur, COUNT_SQL),
                            "in_process": lambda: _received(conn.sql(COUNT_SQL))},
                           cfg["count_runs"], cfg["warmup"], 10.0)
        out["count_star"] = counts
        log.info("count(*) p50: ADBC %.2f ms, in process %.2f ms", counts["adbc"]["p50_ms"],
                 counts["in_process"]["p50_ms"])
        qcur.close()
        bcur.close()
    finally:
        qa.close()
        ba.close()
        qc.close()
        bc.close()
    return out


def round_trip_floors(quiver: str, bare: str, roapi: str | None, floor: str, canned: str,
                      conn: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """The fixed cost of one statement, by layer, for a one-row result: ADBC (GetFlightInfo
    then DoGet) against both servers, roapi, Quiver's transport with idle handlers
    (``floor``) and grpcio replaying bytes (``canned``), each RPC alone through
    pyarrow.flight, in process."""
    from quiver.proto import flight_sql_pb2, pack

    qa, ba, fa = adbc_connect(quiver), adbc_connect(bare), adbc_connect(floor)
    ca = adbc_connect(canned)
    ra = adbc_connect(roapi) if roapi else None
    qc, bc = flight.connect(quiver), flight.connect(bare)
    command = flight.FlightDescriptor.for_command(
        pack(flight_sql_pb2.CommandStatementQuery(query=TRIVIAL_SQL)))
    try:
        qcur, bcur, fcur, ccur = qa.cursor(), ba.cursor(), fa.cursor(), ca.cursor()
        rcur = ra.cursor() if ra else None
        peers = {"roapi_adbc": lambda: adbc_table(rcur, TRIVIAL_SQL)} if rcur else {}
        out = alternate({
            **peers,
            "quiver_adbc": lambda: adbc_table(qcur, TRIVIAL_SQL),
            "bare_adbc": lambda: adbc_table(bcur, TRIVIAL_SQL),
            "grpc_floor_adbc": lambda: adbc_table(fcur, TRIVIAL_SQL),
            "grpc_canned_adbc": lambda: adbc_table(ccur, TRIVIAL_SQL),
            "quiver_getflightinfo": lambda: {"rows": 0, "bytes": 0,
                                             "info": qc.get_flight_info(command).total_records},
            "bare_getflightinfo": lambda: {"rows": 0, "bytes": 0,
                                           "info": bc.get_flight_info(command).total_records},
            "quiver_doget": lambda: flight_doget(qc, TRIVIAL_SQL.encode()),
            "bare_doget": lambda: flight_doget(bc, b"one"),
            "in_process": lambda: _received(conn.sql(TRIVIAL_SQL)),
        # A few milliseconds each: enough rounds that a noisy machine moves the medians
        # (and the roapi ratio read from them) little.
        }, cfg["floor_runs"], cfg["warmup"], 20.0)
        for cur in (qcur, bcur, fcur, ccur, rcur):
            if cur is not None:
                cur.close()
    finally:
        for c in (qa, ba, fa, ca, ra, qc, bc):
            if c is not None:
                c.close()
    log.info("round trip floors p50 ms: %s", {k: round(v["p50_ms"], 2) for k, v in out.items()})
    return out


def bench_search(quiver: str, bare: str, roapi: str | None, floor: str, canned: str,
                 conn: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    floors = round_trip_floors(quiver, bare, roapi, floor, canned, conn, cfg)
    servers = {"quiver": quiver, "grpc_floor": floor, "grpc_canned": canned, "bare": bare,
               **({"roapi": roapi} if roapi else {})}
    switches = switches_per_statement(servers, cfg["switch_statements"])
    # The server's own SELECT 1 is timed in the same rounds as each search, on a connection
    # of its own (a cursor prepares its statement text once): the floor a search is held
    # to is then measured under the same conditions as the search.
    qa, qs = adbc_connect(quiver), adbc_connect(quiver)
    try:
        cur, floor_cur = qa.cursor(), qs.cursor()
        cases: list[dict[str, Any]] = []
        statements = search_statements()
        budget = cfg["search_budget_s"] / (len(statements) + 2)
        for text, sql in statements:
            m = alternate({"adbc": lambda s=sql: adbc_table(cur, s),
                           "in_process": lambda s=sql: _received(conn.sql(s)),
                           "select_1": lambda: adbc_table(floor_cur, TRIVIAL_SQL)},
                          cfg["search_runs"], cfg["warmup"], budget)
            overhead = m["adbc"]["p50_ms"] - m["in_process"]["p50_ms"]
            cases.append({"query": text, "sql": sql, "adbc": m["adbc"],
                          "in_process": m["in_process"], "overhead_ms": overhead,
                          "select_1": m["select_1"],
                          "over_floor_ms": overhead - m["select_1"]["p50_ms"],
                          "rows": m["adbc"]["result"]["rows"]})
            log.info("search %-26s ADBC %7.2f ms  in process %7.2f ms  overhead %6.2f ms  "
                     "SELECT 1 %6.2f ms", text, m["adbc"]["p50_ms"], m["in_process"]["p50_ms"],
                     overhead, m["select_1"]["p50_ms"])
        # A new text on every call: the driver prepares each new statement text (and closes
        # the previous one), so this is the round trip of ad-hoc searches.
        texts = [sql for _, sql in statements]
        ring = {"adbc": itertools.cycle(texts), "in_process": itertools.cycle(texts)}
        m = alternate({"adbc": lambda: adbc_table(cur, next(ring["adbc"])),
                       "in_process": lambda: _received(conn.sql(next(ring["in_process"])))},
                      cfg["search_runs"] * 2, cfg["warmup"], 2 * budget)
        rotating = {"adbc": m["adbc"], "in_process": m["in_process"],
                    "overhead_ms": m["adbc"]["p50_ms"] - m["in_process"]["p50_ms"]}
        log.info("search, a new text each call: ADBC %.2f ms, in process %.2f ms",
                 m["adbc"]["p50_ms"], m["in_process"]["p50_ms"])
        cur.close()
        floor_cur.close()
    finally:
        qa.close()
        qs.close()
    return {"cases": cases, "floors": floors, "rotating": rotating, "switches": switches,
            "overhead_median_ms": float(np.median([c["overhead_ms"] for c in cases])),
            "over_floor_median_ms": float(np.median([c["over_floor_ms"] for c in cases])),
            "overhead_max_ms": float(max(c["overhead_ms"] for c in cases))}


def _timed_server_class() -> type:
    """A ``QuiverFlightServer`` that records the calls it gets and the time its Python
    handlers take (GetFlightInfo, actions, opening a DoGet, producing its batches); with
    ``profiling`` set, each handler also runs under its own ``cProfile`` profiler (handlers
    run on gRPC's threads, and a profiler sees only the thread that enabled it)."""
    from quiver.flight_server.service.server import QuiverFlightServer

    class TimedServer(QuiverFlightServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.calls: list[str] = []
            self.seconds: dict[str, float] = {}
            self.profiling = False
            self.profiles: list[cProfile.Profile] = []

        @contextmanager
        def _timed(self, key: str, record: bool = True) -> Iterator[None]:
            prof = cProfile.Profile() if self.profiling else None
            t0 = time.perf_counter()
            if prof is not None:
                prof.enable()
            try:
                yield
            finally:
                if prof is not None:
                    prof.disable()
                    self.profiles.append(prof)
                if record:
                    self.calls.append(key)
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0

        def get_flight_info(self, context: Any, descriptor: Any) -> Any:
            with self._timed("GetFlightInfo"):
                return super().get_flight_info(context, descriptor)

        def do_action(self, context: Any, action: Any) -> Any:
            with self._timed(f"DoAction {action.type}"):
                return super().do_action(context, action)

        def do_get(self, context: Any, ticket: Any) -> Any:
            with self._timed("DoGet"):
                schema, batches = super().do_get(context, ticket)
            return schema, self._timed_batches(batches)

        def _timed_batches(self, it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    with self._timed("DoGet batches", record=False):
                        batch = next(it, None)
                    if batch is None:
                        return
                    yield batch
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()

    return TimedServer


# Where profiled server time is spent: the first matching rule names a function's owner.
_OWNERS = (
    ("sqlglot (parsing, SQL generation)", ("/sqlglot/",)),
    ("DataFusion (planning, execution)", ("datafusion",)),
    ("pyarrow", ("pyarrow",)),
    ("protobuf", ("protobuf", "_pb2")),
    ("Quiver's own Python code", (str(REPO) + "/",)),
)


def profile_shares(profiles: list[cProfile.Profile], statements: int) -> dict[str, float]:
    """Milliseconds per statement of the profiled handlers' own time, by owner."""
    if not profiles:
        return {}
    stats = pstats.Stats(profiles[0])
    for prof in profiles[1:]:
        stats.add(prof)
    out: dict[str, float] = {}
    for (filename, _, func), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename} {func}"
        owner = next((name for name, keys in _OWNERS if any(k in where for k in keys)),
                     "other (standard library, builtins)")
        out[owner] = out.get(owner, 0.0) + own * 1000 / statements
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile_round_trip(conn: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """One ADBC statement split into client and server time, against a server in this
    process whose handlers are timed: which calls the driver makes, and how much of a
    round trip is the server's Python handlers (our engine and dispatch) rather than gRPC,
    the transport and the driver."""
    server = _timed_server_class()(conn, "grpc://127.0.0.1:0")
    client = adbc_connect(f"grpc://127.0.0.1:{server.port}")
    out: dict[str, Any] = {}
    statements = search_statements()
    try:
        cur = client.cursor()
        named = statements[0][1]
        server.calls.clear()
        adbc_table(cur, named)
        out["calls_first"] = list(server.calls)
        server.calls.clear()
        adbc_table(cur, named)
        out["calls_repeat"] = list(server.calls)
        cases = {"same text": [named], "a new text each call": [s for _, s in statements]}
        n = max(20, cfg["search_runs"] * 2)
        for label, texts in cases.items():
            ring = itertools.cycle(texts)
            for _ in range(cfg["warmup"] * len(texts)):
                adbc_table(cur, next(ring))
            server.seconds.clear()
            execute, fetch = [], []
            for _ in range(n):
                sql = next(ring)
                t0 = time.perf_counter()
                cur.execute(sql)
                t1 = time.perf_counter()
                cur.fetch_arrow_table()
                execute.append(t1 - t0)
                fetch.append(time.perf_counter() - t1)
            total = [a + b for a, b in zip(execute, fetch, strict=True)]
            out[label] = {
                "client_total_ms": float(np.mean(total) * 1000),
                "client_total_p50_ms": float(np.median(total) * 1000),
                "client_execute_ms": float(np.mean(execute) * 1000),
                "client_fetch_ms": float(np.mean(fetch) * 1000),
                "server_ms": {k: v / n * 1000 for k, v in server.seconds.items()},
            }
            log.info("round trip profile (%s): %s", label, out[label])
        # The same again under cProfile (slower: it inflates Python code the most), for the
        # split of the handlers' time by library.
        for label, texts in cases.items():
            ring = itertools.cycle(texts)
            server.profiles.clear()
            server.profiling = True
            for _ in range(n):
                adbc_table(cur, next(ring))
            server.profiling = False
            out[label]["profile_ms"] = profile_shares(server.profiles, n)
            log.info("handler profile (%s): %s", label, out[label]["profile_ms"])
        cur.close()
    finally:
        client.close()
        server.shutdown()
    return out


def bench_ingest(quiver: str, bare: str, conn: Any, data: pa.Table, cfg: dict[str, Any]
                 ) -> dict[str, Any]:
    from quiver.flight_server.service.ingest import CHUNK_ROWS

    # The ADBC driver refuses to send a message over 16 MiB: a batch has to be smaller.
    data = pa.Table.from_batches(data.combine_chunks().to_batches(max_chunksize=BARE_BATCH_ROWS))
    fts = [f.name for f in data.schema if pa.types.is_string(f.type)
           or pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type)]
    qa, ba = adbc_connect(quiver), adbc_connect(bare)
    counter = iter(range(1_000_000))
    samples: dict[str, list[float]] = {"adbc": [], "embedded": [], "embedded_chunked": [],
                                       "bare_adbc": []}

    def via_adbc(a: Any, name: str) -> None:
        cur = a.cursor()
        try:
            rows = cur.adbc_ingest(name, data, mode="create")
        finally:
            cur.close()
        if rows not in (-1, data.num_rows):
            raise RuntimeError(f"ingest into {name} reported {rows} rows")

    def embedded(name: str, chunk: int | None) -> None:
        table = conn.create_table(name, data.schema, fts=fts)
        if chunk is None:
            table.append(data)
            return
        for start in range(0, data.num_rows, chunk):
            table.append(data.slice(start, chunk))

    try:
        for _ in range(cfg["ingest_runs"]):
            for kind in samples:
                name = f"{TABLE}_{kind}_{next(counter)}"
                t0 = time.perf_counter()
                if kind == "adbc":
                    via_adbc(qa, name)
                elif kind == "bare_adbc":
                    via_adbc(ba, name)
                elif kind == "embedded":
                    embedded(name, None)
                else:
                    embedded(name, CHUNK_ROWS)
                samples[kind].append(time.perf_counter() - t0)
                log.info("ingest %-17s %.2f s", kind, samples[kind][-1])
        check = conn.sql(f"SELECT count(*) AS n FROM {TABLE}_adbc_0").column(0)[0].as_py()
    finally:
        qa.close()
        ba.close()
    out: dict[str, Any] = {"rows": data.num_rows, "fts": fts, "server_chunk_rows": CHUNK_ROWS,
                           "adbc_table_rows": check}
    for kind, s in samples.items():
        seconds = float(np.median(s))
        out[kind] = {"seconds": seconds, "rows_per_s": data.num_rows / seconds,
                     "samples_s": s}
    return out


# -- running ----------------------------------------------------------------------------------

def evaluate_targets(stream: dict[str, Any], search: dict[str, Any], ingest: dict[str, Any]
                     ) -> list[dict[str, Any]]:
    ratio_s = stream["quiver_adbc_table"]["rows_per_s"] / stream["bare_adbc_table"]["rows_per_s"]
    ratio_i = ingest["adbc"]["rows_per_s"] / ingest["embedded"]["rows_per_s"]
    over = search["overhead_median_ms"]
    over_floor = search["over_floor_median_ms"]
    floor = search["floors"]["quiver_adbc"]["p50_ms"]
    roapi = search["floors"].get("roapi_adbc")
    peer = []
    if roapi is not None:
        ratio_r = floor / roapi["p50_ms"]
        peer = [{"name": f"{TRIVIAL_SQL} through ADBC: Quiver <= {ROAPI_LIMIT}x roapi "
                         "(p50 ratio)", "value": ratio_r, "limit": ROAPI_LIMIT,
                 "pass": ratio_r <= ROAPI_LIMIT}]
    return [*peer,
        {"name": f"bm25_search round trip: ADBC p50 - in-process p50 <= the server's own "
                 f"{TRIVIAL_SQL} ADBC p50 (timed in the same rounds) + {SEARCH_OVER_FLOOR_MS} "
                 "ms (median over queries, ms over that floor)", "value": over_floor,
         "limit": SEARCH_OVER_FLOOR_MS, "pass": over_floor <= SEARCH_OVER_FLOOR_MS},
        {"name": f"SELECT * streaming, ADBC fetch_arrow_table: Quiver >= {STREAM_LIMIT}x bare "
                 "pyarrow.flight server with the same endpoints (rows/s ratio)", "value": ratio_s,
         "limit": STREAM_LIMIT, "pass": ratio_s >= STREAM_LIMIT},
        {"name": f"bm25_search round trip: ADBC p50 - in-process p50 <= {SEARCH_OVERHEAD_MS} ms "
                 "(median over queries, ms)", "value": over,
         "limit": SEARCH_OVERHEAD_MS, "pass": over <= SEARCH_OVERHEAD_MS},
        {"name": f"bulk ingest: ADBC adbc_ingest >= {INGEST_LIMIT}x embedded create_table + "
                 "append (rows/s ratio)", "value": ratio_i,
         "limit": INGEST_LIMIT, "pass": ratio_i >= INGEST_LIMIT},
    ]


def run(quick: bool, quiet: dict[str, Any] | None = None) -> dict[str, Any]:
    from quiver.flight_server.sql import connect

    cfg = _config(quick)
    started = dt.datetime.now(dt.UTC)
    machine = describe_machine(REPO)
    stream_data, ingest_data = load_data(cfg)
    log.info("data: %d streaming rows, %d ingest rows", stream_data.num_rows,
             ingest_data.num_rows)
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="quiver-flight-bench-"))
    try:
        root = base / "root"
        root.mkdir()
        conn = connect(str(root))
        try:
            tb = time.perf_counter()
            conn.create_table(TABLE, stream_data.schema, fts=["summary"]).append(stream_data)
            build_s = time.perf_counter() - tb
            log.info("built %s (%d rows) in %.1f s", TABLE, stream_data.num_rows, build_s)
            # The bare server streams exactly what a client gets from Quiver's server.
            served = conn.sql(STREAM_SQL)
            bare_file = base / "bare.parquet"
            pq.write_table(served, bare_file)
            result_bytes = served.nbytes
            served_schema = served.schema
            del served
            with quiver_server(root, base / "quiver.log") as quri:
                endpoints = endpoint_count(quri, STREAM_SQL)
                log.info("Quiver answers %s with %d endpoints", STREAM_SQL, endpoints)
                with bare_server(bare_file, endpoints, base / "bare.log") as buri, \
                        roapi_server(bare_file, base / "roapi.log") as ruri, \
                        grpc_floor_server(base / "floor.log") as furi, \
                        grpc_floor_server(base / "canned.log", canned=True) as curi:
                    stream = bench_stream(quri, buri, conn, root, served_schema, cfg)
                    search = bench_search(quri, buri, ruri, furi, curi, conn, cfg)
                    ingest = bench_ingest(quri, buri, conn, ingest_data, cfg)
            search["profile"] = profile_round_trip(conn, cfg)
        finally:
            conn.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {
        **report.result_head("flight", quick, started, time.perf_counter() - t0, machine,
                             quiet),
        "uncommitted": _uncommitted(),
        "config": {**cfg, "table": TABLE, "summary_rows": ingest_data.num_rows,
                   "stream_result_bytes": result_bytes, "stream_endpoints": endpoints,
                   "bare_batch_rows": BARE_BATCH_ROWS,
                   "build_s": build_s,
                   "adbc_driver_flightsql": report.library_version("adbc-driver-flightsql"),
                   "roapi": report.library_version("roapi")},
        "stream": stream,
        "search": search,
        "ingest": ingest,
        "notes": NOTES,
    }
    result["targets"] = evaluate_targets(stream, search, ingest)
    return result


NOTES = [
    "Both servers are subprocesses on 127.0.0.1 of the same machine as the client (2 cores",
    "shared by client, servers and whatever else runs). The Quiver server (default options)",
    "reads a local temporary root; the OS page cache is warm, and the engine's own caches",
    "are warm after the warm-up runs. The bare server is a pyarrow.flight FlightServerBase",
    "holding the Quiver result (read from a Parquet copy of it) in memory in",
    f"{BARE_BATCH_ROWS:,}-row batches, split into as many endpoints as Quiver's FlightInfo",
    "has (and as one endpoint for comparison); it answers just enough Flight SQL for the",
    "ADBC driver (a statement's FlightInfo, DoGet, and a DoPut that reads and drops the",
    "stream); the driver's prepared-statement attempt fails there and it falls back to",
    "plain statements, so against the bare server every statement is GetFlightInfo + DoGet.",
    "Against Quiver the driver prepares each new statement text (CreatePreparedStatement,",
    "closing the previous one) and runs it as GetFlightInfo + DoGet of the prepared",
    "statement; the search cases repeat one text per case, the rotating case does not.",
    "MB/s counts the Arrow in-memory size of the received result (Table.nbytes), rows/s the",
    "rows; both use the median time of the timed runs, paths taking turns run by run.",
    "Search overhead is ADBC p50 minus in-process p50 of the same statement on the same",
    "root; the SELECT 1 it is held to runs in the same rounds, on a connection of its own.",
    "The round-trip profile runs a QuiverFlightServer in the benchmark process with",
    "its handlers timed (and, in a second pass, under cProfile); 'rest' is the client's time",
    "minus the handlers': gRPC, the server's transport and the Go driver.",
    "Ingest: ADBC adbc_ingest mode=create (the server creates the table with BM25 on every",
    "string column and appends in chunks of its CHUNK_ROWS, one commit each) against the",
    "embedded create_table(fts=<every string column>) + one append of the whole table; the",
    "embedded run with the server's chunking and the ingest into the bare server (transport",
    f"only, nothing stored) split the difference. The data goes in {BARE_BATCH_ROWS:,}-row",
    "batches: the driver refuses to send a message over 16 MiB.",
    "roapi (a Rust Flight SQL server on DataFusion, from its PyPI wheel) serves the bare",
    "server's Parquet copy as table t; only its SELECT 1 round trip is measured, through the",
    "same ADBC driver, taking turns with Quiver's.",
]


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    cfg = result["config"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    s, se, ing = result["stream"], result["search"], result["ingest"]
    lines = [
        f"# Flight SQL server benchmark: quiver serve through ADBC ({result['started_utc']})",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, "
        f"{(m['ram_bytes'] or 0) / 2**30:.1f} GiB RAM, {m['os']}; Python {m['python']}; "
        f"{libs}; adbc-driver-flightsql {cfg['adbc_driver_flightsql']}; commit "
        f"{m['git_commit']}; load average at start {m['load_average_at_start']}, at end "
        f"{result['load_average_at_end']}. Wall time {result['wall_s']:.0f} s. Uncommitted "
        f"changes in the code measured: {', '.join(result['uncommitted']) or 'none'}.",
        "",
        f"Data: streaming table `{cfg['table']}` of {cfg['stream_rows']:,} rows (the PyPI "
        "summaries: name, version, month, summary, followed by their first rows again up to "
        f"that count; BM25 on summary; built in {cfg['build_s']:.1f} s); the result is "
        f"{cfg['stream_result_bytes'] / 1e6:.1f} MB as Arrow; Quiver's FlightInfo for it has "
        f"{cfg['stream_endpoints']} endpoint(s), the driver reads them in parallel. Ingest: "
        f"{ing['rows']:,} summaries.",
        "",
    ]
    lines += report.targets_section(result["targets"], value="value")
    lines += [
        "",
        f"## Streaming `{STREAM_SQL}`",
        "",
        "| path | p50 ms | min ms | MB/s | M rows/s | batches received | runs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    labels = {
        "quiver_adbc_table": "Quiver, ADBC fetch_arrow_table",
        "bare_adbc_table": "bare server, same endpoints, ADBC fetch_arrow_table",
        "bare_adbc_single_table": "bare server, one endpoint, ADBC fetch_arrow_table",
        "quiver_adbc_batches": "Quiver, ADBC fetch_record_batch loop",
        "bare_adbc_batches": "bare server, same endpoints, ADBC fetch_record_batch loop",
        "quiver_flight_doget": "Quiver, pyarrow.flight DoGet of a SQL ticket (one stream)",
        "bare_flight_doget": "bare server, pyarrow.flight DoGet (one stream)",
    }
    for key, label in labels.items():
        r = s[key]
        lines.append(f"| {label} | {_fmt(r['p50_ms'], 1)} | {_fmt(r['min_ms'], 1)} | "
                     f"{r['mb_per_s']:.0f} | {r['rows_per_s'] / 1e6:.2f} | "
                     f"{r['result'].get('batches', '-')} | {r['runs']} |")
    e = s["engine_in_process"]
    pr = s["engine_profile_ms"]
    c = s["count_star"]
    lines += [
        "",
        f"Engine alone in the benchmark process: opening the stream {_fmt(e['open_ms'], 1)} ms, "
        f"draining it {_fmt(e['drain_ms'], 1)} ms ({e['engine_batches']:.0f} batches, median "
        f"{e['engine_batch_rows_median']:.0f} rows), with the server's rechunking "
        f"{_fmt(e['drain_rechunk_ms'], 1)} ms ({e['sent_batches']:.0f} batches sent).",
        "",
        f"The same scan outside the engine, over the table's {pr['files']} superfiles in this "
        f"process (ms): pyarrow `read_table` {_fmt(pr['pyarrow_read_table'], 1)}; DataFusion "
        f"scan with string views {_fmt(pr['datafusion_scan'], 1)}; the same plus the cast to "
        f"plain strings per batch {_fmt(pr['datafusion_scan_cast'], 1)}; the same with "
        f"{BARE_BATCH_ROWS:,}-row batches {_fmt(pr['datafusion_scan_cast_65536'], 1)}.",
        "",
        f"`{COUNT_SQL}` round trip p50: ADBC {_fmt(c['adbc']['p50_ms'], 2)} ms, in process "
        f"{_fmt(c['in_process']['p50_ms'], 2)} ms.",
        "",
        "## Search round trip (p50 ms)",
        "",
        f"| query | rows | ADBC | in process | overhead | {TRIVIAL_SQL}, same rounds | "
        "overhead over it |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in se["cases"]:
        lines.append(f"| {case['query']} | {case['rows']} | {_fmt(case['adbc']['p50_ms'], 2)} | "
                     f"{_fmt(case['in_process']['p50_ms'], 2)} | {_fmt(case['overhead_ms'], 2)} | "
                     f"{_fmt(case['select_1']['p50_ms'], 2)} | "
                     f"{_fmt(case['over_floor_ms'], 2)} |")
    rot = se["rotating"]
    lines.append(f"| (a new query text on every call, all of the above in turn) | {K} | "
                 f"{_fmt(rot['adbc']['p50_ms'], 2)} | {_fmt(rot['in_process']['p50_ms'], 2)} | "
                 f"{_fmt(rot['overhead_ms'], 2)} | - | - |")
    fl = se["floors"]
    flabels = {"quiver_adbc": "Quiver, ADBC (GetFlightInfo + DoGet)",
               "roapi_adbc": f"roapi {cfg.get('roapi') or ''}, ADBC (a Rust Flight SQL server)",
               "bare_adbc": "bare server, ADBC (GetFlightInfo + DoGet)",
               "grpc_floor_adbc": "Quiver's gRPC transport with handlers that do no work "
                                  "(bench.grpc_floor), ADBC",
               "grpc_canned_adbc": "grpcio alone answering with bytes made once "
                                   "(bench.grpc_floor --canned), ADBC",
               "quiver_getflightinfo": "Quiver, pyarrow.flight GetFlightInfo alone",
               "bare_getflightinfo": "bare server, pyarrow.flight GetFlightInfo alone",
               "quiver_doget": "Quiver, pyarrow.flight DoGet alone (SQL ticket)",
               "bare_doget": "bare server, pyarrow.flight DoGet alone",
               "in_process": "in process, connect(root).sql"}
    lines += ["", f"Round trip of `{TRIVIAL_SQL}` by layer (p50 ms):", "",
              "| path | p50 ms | min ms |", "| --- | --- | --- |"]
    for key, label in flabels.items():
        if key not in fl:
            continue
        lines.append(f"| {label} | {_fmt(fl[key]['p50_ms'], 2)} | "
                     f"{_fmt(fl[key]['min_ms'], 2)} |")
    sw = se.get("switches")
    if sw:
        lines += ["", f"Context switches per `{TRIVIAL_SQL}` through ADBC, each server alone in "
                  "turn (all threads of its process; the client is this process):", "",
                  "| server | server switches | client switches | ms per statement |",
                  "| --- | --- | --- | --- |"]
        for name, m in sw.items():
            lines.append(f"| {name} | {_fmt(m['server'], 1)} | {_fmt(m['client'], 1)} | "
                         f"{_fmt(m['ms'], 2)} |")
    prof = se.get("profile")
    if prof:
        lines += ["", "Where one ADBC round trip goes (a server in the benchmark process with its "
                  "handlers timed; means per statement, ms):", "",
                  "| statement text | client total | client execute / fetch | server handlers "
                  "| rest: gRPC, transport, driver |", "| --- | --- | --- | --- | --- |"]
        for label in ("same text", "a new text each call"):
            r = prof[label]
            handlers = "; ".join(f"{k} {_fmt(v, 2)}" for k, v in r["server_ms"].items())
            rest = r["client_total_ms"] - sum(r["server_ms"].values())
            lines.append(f"| {label} | {_fmt(r['client_total_ms'], 2)} | "
                         f"{_fmt(r['client_execute_ms'], 2)} / {_fmt(r['client_fetch_ms'], 2)} | "
                         f"{handlers} | {_fmt(rest, 2)} |")
        lines += ["", "The handlers' own time under cProfile by library, ms per statement "
                  "(cProfile inflates Python code, so read these as shares):", ""]
        for label in ("same text", "a new text each call"):
            shares = prof[label].get("profile_ms", {})
            total = sum(shares.values()) or 1.0
            lines.append(f"- {label}: " + "; ".join(
                f"{k} {_fmt(v, 2)} ({100 * v / total:.0f}%)" for k, v in shares.items()))
        lines += ["", f"Calls the driver makes for a new statement text: "
                  f"{', '.join(prof['calls_first'])}; for the same text again: "
                  f"{', '.join(prof['calls_repeat'])}."]
    lines += [
        "",
        f"Overhead over the search queries: median {_fmt(se['overhead_median_ms'], 2)} ms, "
        f"max {_fmt(se['overhead_max_ms'], 2)} ms; over the server's own {TRIVIAL_SQL} timed "
        f"in the same rounds: median {_fmt(se['over_floor_median_ms'], 2)} ms. Statements: "
        f"`{se['cases'][0]['sql']}` and the same with the other query texts.",
        "",
        "## Bulk ingest",
        "",
        f"BM25 on {', '.join(ing['fts'])}; the server appends in chunks of "
        f"{ing['server_chunk_rows']:,} rows.",
        "",
        "| path | seconds (median) | rows/s | samples s |",
        "| --- | --- | --- | --- |",
    ]
    ilabels = {"adbc": "ADBC adbc_ingest into Quiver", "embedded": "embedded, one append",
               "embedded_chunked": "embedded, server's chunking",
               "bare_adbc": "ADBC adbc_ingest into the bare server (transport only)"}
    for key, label in ilabels.items():
        r = ing[key]
        lines.append(f"| {label} | {_fmt(r['seconds'], 2)} | {r['rows_per_s']:,.0f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['samples_s'])} |")
    lines += ["", "Notes: " + " ".join(result["notes"]), ""]
    return "\n".join(lines)


def _uncommitted() -> list[str]:
    """Files of the engine's packages that differ from the recorded commit: the working tree
    is measured, and it may hold changes not yet committed."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "superfile",
                              "supertable", "catalog", "flight_server", "proto", "quiver"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ["(git status failed)"]
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = report.benchmark_parser(__doc__, quiet_load=3.0)
    parser.add_argument("--bare-server", type=Path, default=None, metavar="PARQUET",
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    if args.bare_server is not None:
        return run_bare_server(args.bare_server, args.port, args.endpoints)
    quiet = report.wait_for_quiet(args.quiet_load, args.quiet_wait)
    result = run(args.quick, quiet)
    return report.publish(result, "flight", markdown)


if __name__ == "__main__":
    raise SystemExit(main())
