"""Small writes at service rates: single-row INSERTs from many clients through a real server.

A real ``quiver serve`` on a local root; ``clients`` ADBC connections (one thread each)
send one warm-up INSERT each (all at once, timed apart), then single-row ``INSERT INTO
events VALUES (...)`` statements (literal SQL, a PyPI summary per row, run as ADBC
updates: one Flight SQL ``CommandStatementUpdate`` each) until ``inserts`` were
acknowledged or ``seconds`` ran out. Every acknowledged statement's latency is recorded.

Then the server stays idle for ``idle_s`` seconds while its background work (folding the
write log into superfiles, compaction) settles, and the table's superfiles are counted.
Last, ``bm25_search`` p50 through ADBC on that table is compared with the same rows
written in one append to a second table.

Targets: at least 500 acknowledged appends per second in total; p99 at most 100 ms;
at most 10 superfiles after the idle period; search p50 within 1.2x of the one-append
table.

    PYTHONPATH=. .venv/bin/python -m bench.write_bench [--quick]
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import report
from bench.data import BM25_QUERIES, load_summaries
from bench.flight_bench import REPO, _free_port, _process
from bench.machine import describe_machine
from bench.report import fmt

log = logging.getLogger("bench.write")

TABLE, ONE_APPEND = "events", "events_one_append"
CLIENTS = 32
RATE_TARGET = 500.0
P99_TARGET_MS = 100.0
FILES_TARGET = 10
SEARCH_RATIO_LIMIT = 1.2
SCHEMA = pa.schema([("id", pa.int64()), ("client", pa.int64()), ("summary", pa.string())])
SERVER_FLAGS = ("--log-level", "WARNING")


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"clients": CLIENTS, "inserts": 3_000, "seconds": 30.0, "idle_s": 15.0,
                "search_runs": 60}
    return {"clients": CLIENTS, "inserts": 10_000, "seconds": 60.0, "idle_s": 30.0,
            "search_runs": 200}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _connect(uri: str) -> Any:
    import adbc_driver_flightsql.dbapi as adbc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri, autocommit=True)


def _insert_load(uri: str, texts: list[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs the clients; returns latencies (s) of acknowledged inserts and failures."""
    total, clients = cfg["inserts"], cfg["clients"]
    next_id = iter(range(total))
    take = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    acked: list[list[int]] = [[] for _ in range(clients)]
    started: list[list[float]] = [[] for _ in range(clients)]
    cold: list[float | None] = [None] * clients
    warm_ids: list[int | None] = [None] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(c: int) -> None:
        try:
            conn = _connect(uri)
        except Exception as exc:  # reported, not raised: the other clients go on
            errors.append(repr(exc))
            start.wait()
            return
        with conn, conn.cursor() as cur:
            stmt = cur.adbc_statement

            def insert(i: int) -> float | None:
                sql = (f"INSERT INTO {TABLE} VALUES ({i}, {c}, "
                       f"{_quote(texts[i % len(texts)])})")
                t0 = time.perf_counter()
                try:
                    # ADBC's update call (Flight SQL CommandStatementUpdate, one round
                    # trip), as JDBC's executeUpdate; DB-API execute would add a DoGet.
                    stmt.set_sql_query(sql)
                    if stmt.execute_update() != 1:
                        raise RuntimeError("the INSERT reported no row")
                except Exception as exc:
                    errors.append(repr(exc)[:300])
                    return None
                return time.perf_counter() - t0

            # Warm-up, all clients at once: the server's first statements open the table
            # and load the tokenizer; timed apart from the measured load.
            cold_s = insert(total + c)
            if cold_s is not None:
                cold[c] = cold_s
                warm_ids[c] = total + c
            start.wait()
            while time.monotonic() < deadline[0]:
                with take:
                    i = next(next_id, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                took = insert(i)
                if took is None:
                    continue
                latencies[c].append(took)
                started[c].append(t0)
                acked[c].append(i)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + cfg["seconds"]
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(cfg["seconds"] + 30)
    wall = time.perf_counter() - t0
    flat = np.array([x for per in latencies for x in per])
    at = np.array([x for per in started for x in per]) - t0
    slow = np.argsort(flat)[-max(1, len(flat) // 100):]
    log.info("slowest 1%%: started at %s s", np.round(np.sort(at[slow]), 2).tolist()[:60])
    warm = [i for i in warm_ids if i is not None]
    ids = sorted([*warm, *(i for per in acked for i in per)])
    colds = [x for x in cold if x is not None]
    return {"wall_s": wall, "acknowledged": len(flat), "warm_up": len(warm), "ids": ids,
            "errors": errors,
            "warm_up_max_ms": max(colds) * 1e3 if colds else None,
            "rate": len(flat) / wall if wall else 0.0,
            "p50_ms": float(np.percentile(flat, 50) * 1e3) if len(flat) else None,
            "p99_ms": float(np.percentile(flat, 99) * 1e3) if len(flat) else None,
            "max_ms": float(flat.max() * 1e3) if len(flat) else None}


def _files(root: Path, name: str) -> dict[str, int]:
    from quiver.flight_server.sql import connect

    with connect(str(root)) as conn:
        table = conn.catalog.open_table(name)
        manifest = table.refresh()
        return {"files": len(manifest.files), "rows": manifest.num_rows,
                "unindexed": sum(1 for f in manifest.files if not f.indexed),
                "version": manifest.version}


def _search_p50(uri: str, runs: int) -> dict[str, float]:
    out = {}
    with _connect(uri) as conn, conn.cursor() as cur:
        for name in (TABLE, ONE_APPEND):
            sqls = [f"SELECT * FROM bm25_search('{name}', 'summary', '{q}', 10)"
                    for q in BM25_QUERIES]
            for s in sqls:  # warm-up: files opened, statistics cached
                cur.execute(s)
                cur.fetchall()
            times = []
            for i in range(runs):
                t0 = time.perf_counter()
                cur.execute(sqls[i % len(sqls)])
                cur.fetchall()
                times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times) * 1e3
    return out


def _count(uri: str) -> int:
    with _connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        return int(cur.fetchall()[0][0])


def run(quick: bool, quiet: dict[str, Any], server_flags: tuple[str, ...] = ()
        ) -> dict[str, Any]:
    cfg = _config(quick)
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    texts = load_summaries(cfg["inserts"]).column("summary").to_pylist()
    texts = [t or "" for t in texts]
    with tempfile.TemporaryDirectory(prefix="quiver-write-bench-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        from quiver.flight_server.sql import connect

        with connect(str(root)) as conn:
            conn.catalog.create_table(TABLE, SCHEMA, fts=["summary"])
            conn.catalog.create_table(ONE_APPEND, SCHEMA, fts=["summary"])
        port = _free_port()
        args = ["-m", "quiver", "serve", "--root", str(root), "--port", str(port),
                *SERVER_FLAGS, *server_flags]
        with _process(args, port, Path(tmp) / "server.log") as uri:
            load = _insert_load(uri, texts, cfg)
            counted = _count(uri) - load["warm_up"]
            time.sleep(cfg["idle_s"])
            after_idle = _files(root, TABLE)
            ids = load["ids"]
            rows = pa.table({"id": pa.array(ids, pa.int64()),
                             "client": pa.array(np.zeros(len(ids), np.int64)),
                             "summary": pa.array([texts[i % len(texts)] for i in ids])},
                            schema=SCHEMA)
            with connect(str(root)) as conn:
                conn.catalog.open_table(ONE_APPEND).append(rows)
            search = _search_p50(uri, cfg["search_runs"])
        server_log = (Path(tmp) / "server.log").read_text(errors="replace")[-3000:]
    load.pop("ids")
    ratio = search[TABLE] / search[ONE_APPEND]
    targets = [
        {"name": f"acknowledged single-row INSERTs per second ({cfg['clients']} clients)",
         "value": load["rate"], "limit": f">= {RATE_TARGET:g}",
         "pass": load["rate"] >= RATE_TARGET},
        {"name": "INSERT latency p99 (ms)", "value": load["p99_ms"],
         "limit": f"<= {P99_TARGET_MS:g}",
         "pass": load["p99_ms"] is not None and load["p99_ms"] <= P99_TARGET_MS},
        {"name": f"superfiles after {cfg['idle_s']:g} s idle", "value": after_idle["files"],
         "limit": f"<= {FILES_TARGET}", "pass": after_idle["files"] <= FILES_TARGET},
        {"name": "bm25_search p50, many appends / one append", "value": ratio,
         "limit": f"<= {SEARCH_RATIO_LIMIT}", "pass": ratio <= SEARCH_RATIO_LIMIT},
        {"name": "rows counted = acknowledged INSERTs", "value": counted - load["acknowledged"],
         "limit": "== 0", "pass": counted == load["acknowledged"]},
    ]
    head = report.result_head("write", quick, started, time.perf_counter() - t0,
                              describe_machine(REPO), quiet)
    return {**head, "config": cfg, "server_flags": [*SERVER_FLAGS, *server_flags],
            "load": load, "counted": counted, "after_idle": after_idle,
            "search_p50_ms": search, "targets": targets,
            "server_log_tail": server_log if load["errors"] else "",
            "versions": {n: report.library_version(n) for n in
                         ("datafusion", "pyarrow", "adbc-driver-flightsql", "grpcio")}}


def render(r: dict[str, Any]) -> str:
    load, cfg, idle = r["load"], r["config"], r["after_idle"]
    lines = [f"# Write benchmark ({r['started_utc']})", "", f"Machine: {r['machine']}", "",
             f"A real `quiver serve` on a local root (flags: `{' '.join(r['server_flags'])}`); "
             f"{cfg['clients']} ADBC clients send single-row INSERTs (literal SQL, ADBC "
             "`execute_update`) until "
             f"{cfg['inserts']} are acknowledged or {cfg['seconds']:g} s pass.", "",
             "| acknowledged | wall s | per second | p50 ms | p99 ms | max ms | errors |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| {load['acknowledged']} | {fmt(load['wall_s'], 1)} | {fmt(load['rate'], 1)} | "
             f"{fmt(load['p50_ms'], 1)} | {fmt(load['p99_ms'], 1)} | {fmt(load['max_ms'], 1)} | "
             f"{len(load['errors'])} |", "",
             f"Before the timed load every client sent one warm-up INSERT, all at once "
             f"({load['warm_up']} rows; the slowest took {fmt(load['warm_up_max_ms'], 1)} ms: "
             "the server's first statements open the table and load the tokenizer).", "",
             "Rows counted right after the load (warm-up rows left out): "
             f"{r['counted']}. After {cfg['idle_s']:g} s "
             f"idle: {idle['files']} superfiles ({idle['unindexed']} without indexes), "
             f"{idle['rows']} rows, version {idle['version']}.", "",
             "| bm25_search top-10 p50 ms | table |", "| --- | --- |"]
    for name, p50 in r["search_p50_ms"].items():
        lines.append(f"| {fmt(p50, 2)} | {name} |")
    lines += ["", *report.targets_section(r["targets"], value="value")]
    if load["errors"]:
        lines += ["", "First errors:", ""] + [f"- `{e}`" for e in load["errors"][:5]]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = report.benchmark_parser(__doc__ or "", quiet_load=1.5)
    parser.add_argument("--server-flag", action="append", default=[],
                        help="an extra `quiver serve` flag (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet = report.wait_for_quiet(args.quiet_load, args.quiet_wait)
    return report.publish(run(args.quick, quiet, tuple(args.server_flag)), "write", render)


if __name__ == "__main__":
    raise SystemExit(main())
