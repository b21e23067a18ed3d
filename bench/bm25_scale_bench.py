"""BM25 top-10 latency at scale: Quiver against infino on N copies of the PyPI summaries.

Run ``PYTHONPATH=. python -m bench.bm25_scale_bench`` (``--scale N``, default 10, so
7.8M rows; ``--quick`` for 2 copies of 100,000 rows). Both engines build their table on
one temporary local root, copy by copy: each copy of the summaries is one ordinary
``append`` (so memory stays bounded by one copy), with a ``row`` column numbering the
rows across copies. Two measurements follow, engines alternating call by call so
machine noise falls on both alike:

- distinct queries: a fixed, seeded list of queries of two or three of the corpus's
  frequent words, each run once per engine (a search engine mostly sees queries it has
  not seen before): each engine's p50 and geomean over them, and the ratios;
- warm: each of the ten BM25 queries repeated on both engines: each engine's p50 per
  query, the geomean, the ratio, and the top-10 overlap.

Results go to ``bench/results/`` as JSON and Markdown.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import infino_engine, report
from bench.data import BM25_QUERIES, geomean, load_summaries
from bench.machine import describe_machine
from bench.report import fmt as _fmt
from bench.table_bench import BM25_TABLE, K, Root, local_root, superfiles

log = logging.getLogger("bench.bm25_scale")

REPO = Path(__file__).resolve().parent.parent
LIMIT = 1.0
# Distinct queries: words of at least three letters, among the most frequent in the first
# summaries; a few queries warm both engines up (kernels, open files) and are not timed.
DISTINCT_VOCAB = 3000
DISTINCT_SAMPLE_ROWS = 50_000
DISTINCT_SEED = 20261206
DISTINCT_WARMUP = 10


def _config(quick: bool, scale: int | None) -> dict[str, Any]:
    if quick:
        return {"copies": scale or 2, "rows_per_copy": 100_000, "runs": 9, "warmup": 1,
                "query_budget_s": 5.0, "build_budget_s": 300.0, "distinct": 40}
    return {"copies": scale or 10, "rows_per_copy": None, "runs": 101, "warmup": 5,
            "query_budget_s": 20.0, "build_budget_s": 1800.0, "distinct": 200}


def distinct_queries(summaries: pa.Array, count: int, seed: int = DISTINCT_SEED) -> list[str]:
    """``count`` different queries (after ``DISTINCT_WARMUP`` more for warming up) of two or
    three different words drawn from the ``DISTINCT_VOCAB`` most frequent words."""
    words: collections.Counter[str] = collections.Counter()
    for text in summaries.slice(0, DISTINCT_SAMPLE_ROWS).to_pylist():
        words.update(re.findall(r"[a-z]{3,}", (text or "").lower()))
    vocab = [w for w, _ in words.most_common(DISTINCT_VOCAB)]
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < count + DISTINCT_WARMUP:
        out[" ".join(rng.choice(vocab, int(rng.integers(2, 4)), replace=False))] = None
    return list(out)


def build(root: Root, summaries: pa.Array, copies: int, budget_s: float) -> dict[str, Any]:
    """Creates the table in both engines, then appends ``copies`` copies, one append each,
    alternating the engines copy by copy. Stops early (logged) past ``budget_s``."""
    n = len(summaries)
    conns = {e.engine: e.connect() for e in root.engines}
    seconds = {e.engine: 0.0 for e in root.engines}
    done = 0
    try:
        schema = pa.schema([pa.field("row", pa.int64()), pa.field("summary", summaries.type)])
        tables = {e.engine: e.create(conns[e.engine], BM25_TABLE, schema, "bm25")
                  for e in root.engines}
        deadline = time.perf_counter() + budget_s
        for c in range(copies):
            if c > 0 and time.perf_counter() > deadline:
                log.warning("build stopped by its time budget after %d copies", c)
                break
            part = pa.table({"row": pa.array(np.arange(c * n, (c + 1) * n, dtype=np.int64)),
                             "summary": summaries})
            for eng in root.engines:
                t0 = time.perf_counter()
                eng.append(tables[eng.engine], part)
                seconds[eng.engine] += time.perf_counter() - t0
            done = c + 1
            log.info("copy %d/%d appended: quiver %.1fs, infino %.1fs total", done, copies,
                     seconds["quiver"], seconds["infino"])
    finally:
        for e in root.engines:
            e.close(conns[e.engine])
    return {"copies": done, "rows": done * n,
            "append_s": seconds,
            "superfiles": {e.engine: superfiles(root, e, BM25_TABLE) for e in root.engines}}


def alternating_p50(fns: dict[str, Callable[[], object]], runs: int, warmup: int,
                    budget_s: float) -> dict[str, dict[str, Any]]:
    """Calls each function in turn, round after round, timing each call: up to ``runs``
    rounds after ``warmup``, stopping once ``budget_s`` is spent (at least three rounds).
    Returns each function's median in ms and its sample count."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < runs and (rounds < 3 or time.perf_counter() < deadline):
        # Swap the order every round: neither engine always runs right after the other.
        order = list(fns.items()) if rounds % 2 == 0 else list(reversed(fns.items()))
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {k: {"p50_ms": float(np.median(v) * 1000), "runs": len(v)}
            for k, v in samples.items()}


def measure_distinct(root: Root, queries: list[str]) -> dict[str, Any]:
    """Each query once per engine, engines alternating (the first engine swaps every
    query); the first ``DISTINCT_WARMUP`` queries are not timed."""
    conns = {e.engine: e.connect() for e in root.engines}
    samples: dict[str, list[float]] = {e.engine: [] for e in root.engines}
    try:
        tables = {e.engine: e.open(conns[e.engine], BM25_TABLE) for e in root.engines}
        for eng in root.engines:
            for query in queries[:DISTINCT_WARMUP]:
                eng.bm25(tables[eng.engine], query, K)
            eng.settle(tables[eng.engine])
        for i, query in enumerate(queries[DISTINCT_WARMUP:]):
            order = root.engines if i % 2 == 0 else list(reversed(root.engines))
            for eng in order:
                t0 = time.perf_counter()
                eng.bm25(tables[eng.engine], query, K)
                samples[eng.engine].append(time.perf_counter() - t0)
    finally:
        for e in root.engines:
            e.close(conns[e.engine])
    out: dict[str, Any] = {"queries": len(samples["quiver"]),
                           "examples": queries[DISTINCT_WARMUP:DISTINCT_WARMUP + 5]}
    for eng, v in samples.items():
        ms = np.array(v) * 1000
        out[eng] = {"p50_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
                    "geomean_ms": geomean(ms.tolist()), "mean_ms": float(ms.mean())}
    out["ratio_p50"] = out["quiver"]["p50_ms"] / out["infino"]["p50_ms"]
    out["ratio_geomean"] = out["quiver"]["geomean_ms"] / out["infino"]["geomean_ms"]
    log.info("distinct queries (%d): p50 quiver %.3f ms, infino %.3f ms (%.2fx); geomean "
             "%.2fx", out["queries"], out["quiver"]["p50_ms"], out["infino"]["p50_ms"],
             out["ratio_p50"], out["ratio_geomean"])
    return out


def measure(root: Root, cfg: dict[str, Any], n: int) -> dict[str, Any]:
    conns = {e.engine: e.connect() for e in root.engines}
    try:
        tables = {e.engine: e.open(conns[e.engine], BM25_TABLE) for e in root.engines}
        for eng in root.engines:
            for query in BM25_QUERIES:
                eng.bm25(tables[eng.engine], query, K)
            eng.settle(tables[eng.engine])
        rows: list[dict[str, Any]] = []
        for query in BM25_QUERIES:
            fns = {e.engine: (lambda e=e, q=query: e.bm25(tables[e.engine], q, K))
                   for e in root.engines}
            m = alternating_p50(fns, cfg["runs"], cfg["warmup"], cfg["query_budget_s"])
            row: dict[str, Any] = {"query": query}
            for eng, v in m.items():
                row[f"{eng}_p50_ms"] = v["p50_ms"]
                row[f"{eng}_runs"] = v["runs"]
            row["ratio"] = row["quiver_p50_ms"] / row["infino_p50_ms"]
            log.info("%-26s quiver %.3f ms infino %.3f ms (%.2fx)", query,
                     row["quiver_p50_ms"], row["infino_p50_ms"], row["ratio"])
            rows.append(row)
        maps = {e.engine: e.id_map(conns[e.engine], BM25_TABLE) for e in root.engines}
        for row in rows:
            got = {e.engine: [maps[e.engine][i] for i in
                              e.ids(e.bm25(tables[e.engine], row["query"], K))]
                   for e in root.engines}
            row["top10_overlap"] = len(set(got["quiver"]) & set(got["infino"]))
            # Every copy scores alike, so ties decide which copy of a summary is returned;
            # the overlap of the summaries themselves (row modulo one copy) ignores that.
            row["top10_overlap_summaries"] = len({r % n for r in got["quiver"]}
                                                 & {r % n for r in got["infino"]})
            row["hits"] = {k: len(v) for k, v in got.items()}
    finally:
        for e in root.engines:
            e.close(conns[e.engine])
    gq = geomean([r["quiver_p50_ms"] for r in rows])
    gi = geomean([r["infino_p50_ms"] for r in rows])
    log.info("geomean p50: quiver %.3f ms, infino %.3f ms (%.2fx)", gq, gi, gq / gi)
    return {"queries": rows, "quiver_geomean_p50_ms": gq, "infino_geomean_p50_ms": gi,
            "ratio": gq / gi}


def run(quick: bool, scale: int | None, quiet: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    cfg = _config(quick, scale)
    started = dt.datetime.now(dt.UTC)
    machine = describe_machine(REPO)
    infino_cfg = infino_engine.configure(infino_engine.DEFAULT_TARGET_RECALL, split_mb=None)
    summaries = load_summaries(cfg["rows_per_copy"]).column("summary").chunk(0)
    n = len(summaries)
    t0 = time.perf_counter()
    with local_root() as root:
        built = build(root, summaries, cfg["copies"], cfg["build_budget_s"])
        log.info("built %d rows; superfiles %s", built["rows"], built["superfiles"])
        load_before = list(os.getloadavg())
        # Distinct queries first: the warm measurement's repeats would warm their words.
        distinct = measure_distinct(root, distinct_queries(summaries, cfg["distinct"]))
        warm = measure(root, cfg, n)
        load_after = list(os.getloadavg())
        describe = root.describe
    result = {
        **report.result_head("bm25-scale", quick, started, time.perf_counter() - t0,
                             machine, quiet),
        "config": {**cfg, "k": K, "rows_per_copy": n, "infino_yaml": infino_cfg["yaml"]},
        "root": describe,
        "build": built,
        "load_average_measuring": {"start": load_before, "end": load_after},
        "distinct": distinct,
        "warm": warm,
    }
    result["targets"] = [{
        "name": f"local: warm BM25 top-{K} geomean p50 over {built['rows']:,} rows "
                f"<= {LIMIT}x infino",
        "value": warm["ratio"], "limit": LIMIT, "pass": warm["ratio"] <= LIMIT}, {
        "name": f"local: distinct BM25 top-{K} p50 over {built['rows']:,} rows "
                f"<= {LIMIT}x infino",
        "value": distinct["ratio_p50"], "limit": LIMIT,
        "pass": distinct["ratio_p50"] <= LIMIT}]
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    ram = (m["ram_bytes"] or 0) / 2**30
    libs = ", ".join(f"{k} {val}" for k, val in m["libraries"].items() if val)
    b, w = r["build"], r["warm"]
    lines = [
        f"# BM25 at scale: Quiver vs infino ({r['started_utc']}"
        f"{', quick' if r['quick'] else ''})",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, {ram:.1f} GiB RAM, "
        f"{m['os']}; Python {m['python']}; {libs}; commit {m['git_commit']}; "
        f"load average at start {m['load_average_at_start']}, while measuring "
        f"{r['load_average_measuring']['start']} -> {r['load_average_measuring']['end']}, "
        f"at end {r['load_average_at_end']}. Wall time {r['wall_s']:.0f} s.",
        "",
        f"Storage: {r['root']}. Data: {b['copies']} copies of {r['config']['rows_per_copy']:,} "
        f"PyPI summaries = {b['rows']:,} rows, one append per copy. Append time: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in b["append_s"].items())
        + "; superfiles: " + ", ".join(f"{k} {v}" for k, v in b["superfiles"].items()) + ".",
        "",
    ]
    lines += report.targets_section(r["targets"])
    d = r["distinct"]
    lines += [
        "",
        f"## BM25 top-{K}, distinct queries: each run once per engine (engines alternating)",
        "",
        f"{d['queries']} different queries of two or three of the {DISTINCT_VOCAB} most "
        f"frequent words (seeded; e.g. " + ", ".join(f"'{q}'" for q in d["examples"]) + ").",
        "",
        "| engine | p50 ms | p90 ms | geomean ms | mean ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for eng in ("infino", "quiver"):
        e = d[eng]
        lines.append(f"| {eng} | {_fmt(e['p50_ms'])} | {_fmt(e['p90_ms'])} | "
                     f"{_fmt(e['geomean_ms'])} | {_fmt(e['mean_ms'])} |")
    lines.append(f"| **Quiver/infino** | {d['ratio_p50']:.2f} | | {d['ratio_geomean']:.2f} | |")
    lines += [
        "",
        f"## BM25 top-{K}, warm p50 ms (engines alternating call by call)",
        "",
        "| query | infino | Quiver | Quiver/infino | top-10 overlap (rows / summaries) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for q in w["queries"]:
        lines.append(f"| {q['query']} | {_fmt(q['infino_p50_ms'])} | "
                     f"{_fmt(q['quiver_p50_ms'])} | {q['ratio']:.2f} | "
                     f"{q['top10_overlap']} / {q['top10_overlap_summaries']} |")
    lines.append(f"| **geomean** | {_fmt(w['infino_geomean_p50_ms'])} | "
                 f"{_fmt(w['quiver_geomean_p50_ms'])} | {w['ratio']:.2f} | |")
    lines += ["", "Notes: both engines run in this one process with their default table "
              "settings, k=10, searches return the engine-native (_id, score) pairs. Every "
              "copy of a summary scores alike, so which copies fill the top 10 is a tie-break; "
              "the second overlap number compares the summaries (row modulo one copy). The "
              "machine may be shared: compare the ratio, measured in this run, not the "
              "absolute times.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = report.benchmark_parser(__doc__, quiet_load=1.5)
    parser.add_argument("--scale", type=int, default=None,
                        help="copies of the summaries (default 10; 2 with --quick)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    quiet = report.wait_for_quiet(args.quiet_load, args.quiet_wait)
    return report.publish(run(args.quick, args.scale, quiet), "bm25-scale", markdown)


if __name__ == "__main__":
    raise SystemExit(main())
