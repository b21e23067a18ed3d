"""What the statement gate, signed tickets and signed tokens add to a round trip.

A real ``quiver serve`` (with a user, so every call carries a signed bearer token) over
the first rows of the PyPI summaries answers ``SELECT 1`` and ``bm25_search`` top-10
through ADBC; their p50 round trips are the base. In this process, with the same
statements and the server's own code, the per-statement cost of the gate
(``gate.check`` on the parsed statement), of sealing and opening the statement's
ticket, and of checking the bearer token on each of the statement's two calls
(GetFlightInfo and DoGet) is timed; their sum over the round trip is what the gate and
signing add. Target: at most 5%.

Also shown, not a target: what the statement limits cost in the engine itself (a
statement run under an interrupt, its batches awaited while the interrupt is polled,
against the same statement without one).

    PYTHONPATH=. .venv/bin/python -m bench.security_bench [--quick]
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench import report
from bench.data import BM25_QUERIES, SUMMARIES
from bench.flight_bench import REPO, _free_port, _process
from bench.machine import describe_machine
from bench.report import fmt

log = logging.getLogger("bench.security")

TABLE = "summaries"
USER, PASSWORD = "bench", "bench-password-for-the-round-trips"
OVERHEAD_LIMIT = 0.05


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"rows": 20_000, "round_trips": 60, "micro": 2_000}
    return {"rows": 200_000, "round_trips": 400, "micro": 20_000}


def _p50_ms(fn: Callable[[], Any], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _statements() -> dict[str, list[str]]:
    searches = [f"SELECT * FROM bm25_search('{TABLE}', 'summary', '{q}', 10)"
                for q in BM25_QUERIES]
    return {"SELECT 1": ["SELECT 1 AS one"], "bm25_search top-10": searches}


def _round_trips(uri: str, statements: dict[str, list[str]], runs: int) -> dict[str, float]:
    import adbc_driver_flightsql.dbapi as adbc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(uri, db_kwargs={"username": USER, "password": PASSWORD})
    out = {}
    with conn, conn.cursor() as cur:
        for name, texts in statements.items():
            i = 0

            def run(texts: list[str] = texts) -> None:
                nonlocal i
                cur.execute(texts[i % len(texts)])
                cur.fetch_arrow_table()
                i += 1

            out[name] = _p50_ms(run, runs)
    return out


def _costs(statements: dict[str, list[str]], n: int) -> dict[str, dict[str, float]]:
    """Microseconds per statement of the gate, the ticket and the token checks."""
    from quiver.flight_server.service import handles
    from quiver.flight_server.service.auth import AuthConfig, Authenticator
    from quiver.flight_server.service.keys import ServerKey
    from quiver.flight_server.sql import analyse, functions, gate

    key = ServerKey.random()
    signer = handles.TicketSigner(key.derive("tickets"))
    auth = Authenticator(AuthConfig(users={USER: PASSWORD}), key=key)
    basic = "Basic " + __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    token = auth.authenticate("Handshake", [basic], "ipv4:127.0.0.1:1").headers[0][1]
    out = {}
    for name, texts in statements.items():
        parsed = [analyse(t) for t in texts]
        tickets = [signer.seal(handles.encode_sql(t)) for t in texts]
        i = 0

        def gate_once(parsed: list[Any] = parsed) -> None:
            nonlocal i
            gate.check(parsed[i % len(parsed)], functions.NAMES)
            i += 1

        def ticket_once(texts: list[str] = texts) -> None:
            nonlocal i
            signer.open(signer.seal(handles.encode_sql(texts[i % len(texts)])))
            i += 1

        def token_once() -> None:
            auth.authenticate("DoGet", [token], "ipv4:127.0.0.1:1")

        assert all(signer.open(t) for t in tickets)
        out[name] = {"gate_us": _per_call_us(gate_once, n),
                     "ticket_us": _per_call_us(ticket_once, n),
                     # ADBC makes two calls per statement, each carrying the token.
                     "tokens_us": 2 * _per_call_us(token_once, n)}
    return out


def _limits_cost(root: Path, n: int) -> dict[str, float]:
    """In-process engine: ``SELECT 1`` with and without an interrupt (µs each)."""
    from quiver.flight_server.sql import connect
    from quiver.supertable import interrupt

    conn = connect(str(root))
    try:
        def bare() -> None:
            conn.sql("SELECT 1 AS one")

        def bounded() -> None:
            with interrupt.scope(interrupt.Interrupt(300.0)):
                conn.sql("SELECT 1 AS one")

        runs = max(200, n // 20)
        results = {"bare_us": [], "bounded_us": []}
        for _ in range(3):  # interleaved, so drift hits both alike
            results["bare_us"].append(_p50_ms(bare, runs) * 1e3)
            results["bounded_us"].append(_p50_ms(bounded, runs) * 1e3)
        return {k: min(v) for k, v in results.items()}
    finally:
        conn.close()


def run(quick: bool, quiet: dict[str, Any]) -> dict[str, Any]:
    cfg = _config(quick)
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    statements = _statements()
    with tempfile.TemporaryDirectory(prefix="quiver-security-bench-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        from quiver.flight_server.sql import connect

        rows = pq.read_table(SUMMARIES).slice(0, cfg["rows"])
        with connect(str(root)) as conn:
            conn.create_table(TABLE, rows.schema).append(rows)
        port = _free_port()
        args = ["-m", "quiver", "serve", "--root", str(root), "--port", str(port),
                "--user", f"{USER}:{PASSWORD}", "--log-level", "WARNING"]
        with _process(args, port, Path(tmp) / "server.log") as uri:
            trips = _round_trips(uri, statements, cfg["round_trips"])
        costs = _costs(statements, cfg["micro"])
        limits = _limits_cost(root, cfg["micro"])
    targets = []
    for name, p50 in trips.items():
        added_ms = sum(costs[name].values()) / 1e3
        share = added_ms / p50
        targets.append({"name": f"gate + signing share of the {name} round trip",
                        "value": share, "limit": f"<= {OVERHEAD_LIMIT}",
                        "pass": share <= OVERHEAD_LIMIT})
    head = report.result_head("security", quick, started, time.perf_counter() - t0,
                              describe_machine(REPO), quiet)
    return {**head, "config": cfg, "rows": cfg["rows"], "round_trip_p50_ms": trips,
            "costs_us": costs, "limits_us": limits, "targets": targets,
            "versions": {n: report.library_version(n) for n in
                         ("datafusion", "pyarrow", "adbc-driver-flightsql", "grpcio")}}


def render(r: dict[str, Any]) -> str:
    lines = [f"# Security overhead benchmark ({r['started_utc']})", "",
             f"Machine: {r['machine']}", "",
             f"Table: first {r['rows']} PyPI summaries; a real `quiver serve` with a user "
             "(signed bearer token on every call), ADBC client.", "",
             "| statement | round trip p50 ms | gate µs | ticket seal+open µs | "
             "token checks µs | added share |", "| --- | --- | --- | --- | --- | --- |"]
    for name, p50 in r["round_trip_p50_ms"].items():
        c = r["costs_us"][name]
        share = sum(c.values()) / 1e3 / p50
        lines.append(f"| {name} | {fmt(p50)} | {fmt(c['gate_us'], 1)} | "
                     f"{fmt(c['ticket_us'], 1)} | {fmt(c['tokens_us'], 1)} | {fmt(share, 4)} |")
    lim = r["limits_us"]
    lines += ["", "Statement limits in the engine (not a target): `SELECT 1` in-process "
              f"{fmt(lim['bare_us'], 1)} µs without an interrupt, "
              f"{fmt(lim['bounded_us'], 1)} µs under one "
              f"(+{fmt(lim['bounded_us'] - lim['bare_us'], 1)} µs).", ""]
    lines += report.targets_section(r["targets"], value="share")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = report.benchmark_parser(__doc__ or "", quiet_load=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet = report.wait_for_quiet(args.quiet_load, args.quiet_wait)
    return report.publish(run(args.quick, quiet), "security", render)


if __name__ == "__main__":
    raise SystemExit(main())
