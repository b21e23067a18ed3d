"""The table benchmark: Quiver tables against infino tables, on local disk and on S3.

Run ``PYTHONPATH=. python -m bench.table_bench`` (``--quick`` for a smaller run).
Both engines run in this process, each through its own table API
(``connect`` -> ``create_table`` -> ``append``), on the same data, with the same
table shape: the data goes in by 16 appends of equal slices, one commit each.
Two storage roots: a temporary directory on local disk, and an S3 bucket on a
moto server started in this process on 127.0.0.1. Measured per root: ingest
throughput, BM25 and vector top-10 latency warm and cold, vector recall@10, and
for Quiver how many superfiles a query opens. Results go to ``bench/results/``
as JSON and Markdown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import infino_engine, report
from bench.data import (
    BM25_QUERIES,
    VectorData,
    geomean,
    load_summaries,
    load_vectors,
    recall_at_10,
)
from bench.infino_engine import InfinoTables
from bench.machine import describe_machine
from bench.moto_s3 import moto_bucket
from bench.quiver_engine import QuiverTables
from bench.report import fmt as _fmt

log = logging.getLogger("bench.table")

REPO = Path(__file__).resolve().parent.parent

K = 10
COMMITS = 16
BUCKET = "quiver-table-bench"
BM25_TABLE = "summaries"
VECTOR_TABLE = "vectors"


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"bm25_rows": 100_000, "vector_rows": 20_000, "vector_queries": 50,
                "bm25_runs": 5, "bm25_warmup": 1, "vector_warmup": 5, "vector_cold_queries": 3,
                "loop_budget_s": 10.0, "vector_budget_s": 30.0}
    return {"bm25_rows": None, "vector_rows": None, "vector_queries": None,
            "bm25_runs": 20, "bm25_warmup": 2, "vector_warmup": 20, "vector_cold_queries": 10,
            "loop_budget_s": 15.0, "vector_budget_s": 90.0}


# -- storage roots ----------------------------------------------------------------------------

@dataclass
class Root:
    """One storage root with a place for each engine, and a way to list what they wrote."""

    kind: str
    quiver: QuiverTables
    infino: InfinoTables
    describe: str
    list_keys: Callable[[str], list[str]] = field(repr=False)

    @property
    def engines(self) -> list[Any]:
        return [self.quiver, self.infino]


@contextlib.contextmanager
def local_root() -> Iterator[Root]:
    base = Path(tempfile.mkdtemp(prefix="quiver-table-bench-"))
    for sub in ("quiver", "infino", "infino-cache"):
        (base / sub).mkdir()

    def list_keys(sub: str) -> list[str]:
        top = base / sub
        return [str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()]

    try:
        yield Root("local", QuiverTables(str(base / "quiver")),
                   InfinoTables(str(base / "infino"), cache_base=str(base / "infino-cache")),
                   f"local disk, temporary directory under {base.parent}", list_keys)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def s3_root() -> Iterator[Root]:
    with moto_bucket(BUCKET) as s3:
        cache_base = tempfile.mkdtemp(prefix="table-bench-cache-")
        try:
            quiver_opts = s3.store_options()
            # infino spells the plain-HTTP switch its own way.
            infino_opts = {**{k: v for k, v in quiver_opts.items() if k != "allow_http"},
                           "aws_allow_http": "true"}

            def list_keys(sub: str) -> list[str]:
                keys: list[str] = []
                pages = s3.client.get_paginator("list_objects_v2").paginate(
                    Bucket=BUCKET, Prefix=f"{sub}/")
                for page in pages:
                    keys += [o["Key"][len(sub) + 1:] for o in page.get("Contents", [])]
                return keys

            yield Root("s3",
                       QuiverTables(f"s3://{BUCKET}/quiver", quiver_opts,
                                    cache_base=cache_base),
                       InfinoTables(f"s3://{BUCKET}/infino", infino_opts,
                                    cache_base=cache_base),
                       s3.description(), list_keys)
        finally:
            shutil.rmtree(cache_base, ignore_errors=True)


def infino_superfiles(root: Root, table: str) -> int:
    """infino writes each superfile as ``<table>-<id>/data/<name>.sf.parquet``."""
    return sum(1 for k in root.list_keys("infino")
               if k.startswith(f"{table}-") and "/data/" in k and k.endswith(".sf.parquet"))


def superfiles(root: Root, eng: Any, table: str) -> int:
    if eng.engine == "infino":
        return infino_superfiles(root, table)
    conn = eng.connect()
    try:
        return eng.superfiles(conn, table)
    finally:
        eng.close(conn)


# -- measuring helpers ------------------------------------------------------------------------

def bounded_p50(fn: Callable[[], object], runs: int, warmup: int, budget_s: float
                ) -> dict[str, Any]:
    """Median of up to ``runs`` timed calls after ``warmup``, stopping once ``budget_s``
    is spent (at least three samples)."""
    deadline = time.perf_counter() + budget_s
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while len(samples) < runs and (len(samples) < 3 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"p50_ms": float(np.median(samples) * 1000), "runs": len(samples)}


def ingest(root: Root, eng: Any, name: str, data: pa.Table, kind: str) -> dict[str, Any]:
    """create_table, then ``COMMITS`` appends of equal slices; timed from the first append."""
    conn = eng.connect()
    try:
        t0 = time.perf_counter()
        table = eng.create(conn, name, data.schema, kind)
        create_s = time.perf_counter() - t0
        bounds = np.linspace(0, data.num_rows, COMMITS + 1).round().astype(np.int64)
        commit_s = []
        t0 = time.perf_counter()
        for a, b in itertools.pairwise(bounds):
            t1 = time.perf_counter()
            eng.append(table, data.slice(int(a), int(b - a)))
            commit_s.append(time.perf_counter() - t1)
        total = time.perf_counter() - t0
    finally:
        eng.close(conn)
    out = {"rows": data.num_rows, "commits": COMMITS, "seconds": total,
           "rows_per_s": data.num_rows / total, "create_table_s": create_s,
           "commit_s_median": float(np.median(commit_s)), "commit_s_max": float(max(commit_s)),
           "superfiles": superfiles(root, eng, name)}
    log.info("%s %s ingest %s: %.2fs, %.0f rows/s, %d superfiles", root.kind, eng.engine, name,
             total, out["rows_per_s"], out["superfiles"])
    return out


def cold_query(eng: Any, name: str, fn: Callable[[Any], object]) -> dict[str, Any]:
    """A fresh connection (and, on S3, a fresh infino cache dir): open the table, one query."""
    conn = eng.connect(fresh_cache=True)
    try:
        t0 = time.perf_counter()
        table = eng.open(conn, name)
        open_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn(table)
        query_s = time.perf_counter() - t0
        opened = eng.files_opened(table)
        eng.release(table)
        return {"open_ms": open_s * 1000, "query_ms": query_s * 1000, "files_opened": opened}
    finally:
        eng.close(conn)


# -- BM25 -------------------------------------------------------------------------------------

def bench_bm25(root: Root, data: pa.Table, cfg: dict[str, Any], overlap: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"ingest": {}, "cold": {}, "warm": {}}
    for eng in root.engines:
        out["ingest"][eng.engine] = ingest(root, eng, BM25_TABLE, data, "bm25")
    q_live = out["ingest"]["quiver"]["superfiles"]

    for eng in root.engines:
        rows = []
        for query in BM25_QUERIES:
            rows.append({"query": query, **cold_query(
                eng, BM25_TABLE, lambda t, q=query, e=eng: e.bm25(t, q, K))})
        out["cold"][eng.engine] = {
            "queries": rows,
            "geomean_query_ms": geomean([r["query_ms"] for r in rows]),
            "geomean_open_plus_query_ms": geomean([r["open_ms"] + r["query_ms"] for r in rows]),
        }
    # Min/max pruning: a filter on ``row`` that only the first commit's rows pass.
    first_commit_rows = round(data.num_rows / COMMITS)
    filt = [("row", "<", first_commit_rows)]
    filtered = [{"query": q, **cold_query(root.quiver, BM25_TABLE,
                                          lambda t, q=q: root.quiver.bm25(t, q, K, filt))}
                for q in BM25_QUERIES]
    opened = [r["files_opened"] for r in out["cold"]["quiver"]["queries"]]
    out["pruning"] = {
        "live_superfiles": q_live,
        "files_opened_per_query": dict(zip(BM25_QUERIES, opened, strict=True)),
        "files_opened_mean": float(np.mean(opened)),
        "filtered": {"filter": f"row < {first_commit_rows}",
                     "files_opened_mean": float(np.mean([r["files_opened"] for r in filtered])),
                     "cold_query_ms_geomean": geomean([r["query_ms"] for r in filtered])},
    }

    conns = {e.engine: e.connect() for e in root.engines}
    try:
        tables = {e.engine: e.open(conns[e.engine], BM25_TABLE) for e in root.engines}
        for eng in root.engines:
            for query in BM25_QUERIES:
                eng.bm25(tables[eng.engine], query, K)
            eng.settle(tables[eng.engine])
        per_query = []
        for query in BM25_QUERIES:
            row: dict[str, Any] = {"query": query}
            # Alternating the engines query by query spreads machine noise over both.
            for eng in root.engines:
                t = tables[eng.engine]
                m = bounded_p50(lambda e=eng, t=t, q=query: e.bm25(t, q, K), cfg["bm25_runs"],
                                cfg["bm25_warmup"], cfg["loop_budget_s"])
                row[f"{eng.engine}_p50_ms"] = m["p50_ms"]
                row[f"{eng.engine}_runs"] = m["runs"]
            qt = tables["quiver"]
            row["quiver_pinned_p50_ms"] = bounded_p50(
                lambda t=qt, q=query: root.quiver.bm25_pinned(t, q, K), cfg["bm25_runs"],
                cfg["bm25_warmup"], cfg["loop_budget_s"])["p50_ms"]
            per_query.append(row)
        refresh = bounded_p50(tables["quiver"].refresh, 20, 2, cfg["loop_budget_s"])
        if overlap:
            maps = {e.engine: e.id_map(conns[e.engine], BM25_TABLE) for e in root.engines}
            for row in per_query:
                got = {e.engine: {maps[e.engine][i] for i in
                                  e.ids(e.bm25(tables[e.engine], row["query"], K))}
                       for e in root.engines}
                row["top10_overlap"] = len(got["quiver"] & got["infino"])
                row["hits"] = {k: len(v) for k, v in got.items()}
    finally:
        for e in root.engines:
            e.close(conns[e.engine])
    out["warm"] = {
        "queries": per_query,
        **{f"{e.engine}_geomean_p50_ms": geomean([r[f"{e.engine}_p50_ms"] for r in per_query])
           for e in root.engines},
        "quiver_pinned_geomean_p50_ms": geomean([r["quiver_pinned_p50_ms"] for r in per_query]),
        "quiver_refresh_p50_ms": refresh["p50_ms"],
    }
    log.info("%s BM25 warm geomean p50: quiver %.3f ms, infino %.3f ms", root.kind,
             out["warm"]["quiver_geomean_p50_ms"], out["warm"]["infino_geomean_p50_ms"])
    return out


# -- vectors ----------------------------------------------------------------------------------

def bench_vectors(root: Root, data: VectorData, cfg: dict[str, Any]) -> dict[str, Any]:
    arrow = data.arrow_table()
    out: dict[str, Any] = {"ingest": {}, "cold": {}, "warm": {}}
    for eng in root.engines:
        out["ingest"][eng.engine] = ingest(root, eng, VECTOR_TABLE, arrow, "vector")
    prepared = {e.engine: [e.prepare_vector(q) for q in data.queries] for e in root.engines}
    n_cold = min(cfg["vector_cold_queries"], len(data.queries))

    for eng in root.engines:
        qs = prepared[eng.engine]
        rows = [cold_query(eng, VECTOR_TABLE, lambda t, v=qs[qi], e=eng: e.vector(t, v, K))
                for qi in range(n_cold)]
        out["cold"][eng.engine] = {
            "queries": n_cold,
            "p50_query_ms": float(np.median([r["query_ms"] for r in rows])),
            "p50_open_plus_query_ms": float(np.median([r["open_ms"] + r["query_ms"]
                                                       for r in rows])),
            "files_opened": [r["files_opened"] for r in rows],
        }
    opened = out["cold"]["quiver"]["files_opened"]
    out["pruning"] = {"live_superfiles": out["ingest"]["quiver"]["superfiles"],
                      "files_opened_mean": float(np.mean(opened))}

    conns = {e.engine: e.connect() for e in root.engines}
    try:
        tables = {e.engine: e.open(conns[e.engine], VECTOR_TABLE) for e in root.engines}
        nq = len(data.queries)
        for eng in root.engines:
            for qi in range(min(cfg["vector_warmup"], nq)):
                eng.vector(tables[eng.engine], prepared[eng.engine][qi], K)
            eng.settle(tables[eng.engine])
        lat: dict[str, list[float]] = {e.engine: [] for e in root.engines}
        results: dict[str, list[Any]] = {e.engine: [] for e in root.engines}
        pinned: list[float] = []
        deadline = time.perf_counter() + cfg["vector_budget_s"]
        for qi in range(nq):
            if qi >= 10 and time.perf_counter() > deadline:
                log.warning("%s vector loop stopped by its time budget after %d queries",
                            root.kind, qi)
                break
            for eng in root.engines:
                t0 = time.perf_counter()
                r = eng.vector(tables[eng.engine], prepared[eng.engine][qi], K)
                lat[eng.engine].append(time.perf_counter() - t0)
                results[eng.engine].append(r)
            t0 = time.perf_counter()
            root.quiver.vector_pinned(tables["quiver"], prepared["quiver"][qi], K)
            pinned.append(time.perf_counter() - t0)
        for eng in root.engines:
            id_map = eng.id_map(conns[eng.engine], VECTOR_TABLE)
            found = [np.array([id_map[i] for i in eng.ids(r)], np.int64)
                     for r in results[eng.engine]]
            done = len(found)
            sub = VectorData(data.corpus, data.queries[:done], data.threshold10[:done])
            samples = np.asarray(lat[eng.engine])
            out["warm"][eng.engine] = {
                "queries": done,
                "recall_at_10": recall_at_10(sub, found),
                "p50_ms": float(np.median(samples) * 1000),
                "p90_ms": float(np.percentile(samples, 90) * 1000),
            }
            if eng.engine == "quiver":
                out["warm"][eng.engine]["pinned_p50_ms"] = float(np.median(pinned) * 1000)
            log.info("%s %s vectors warm: recall %.4f p50 %.3f ms", root.kind, eng.engine,
                     out["warm"][eng.engine]["recall_at_10"], out["warm"][eng.engine]["p50_ms"])
    finally:
        for e in root.engines:
            e.close(conns[e.engine])
    return out


# -- after optimize (diagnostic) --------------------------------------------------------------

def bench_optimized(root: Root, data: VectorData, cfg: dict[str, Any]) -> dict[str, Any]:
    """Each engine's ``optimize()`` on both tables, then the warm searches again: how much
    of the latency is owed to the 16-file shape."""
    out: dict[str, Any] = {}
    for eng in root.engines:
        res: dict[str, Any] = {}
        conn = eng.connect()
        try:
            for name in (BM25_TABLE, VECTOR_TABLE):
                table = eng.open(conn, name)
                t0 = time.perf_counter()
                eng.optimize(table)
                res[f"{name}_optimize_s"] = time.perf_counter() - t0
                eng.after_optimize(table)
        finally:
            eng.close(conn)
        res["bm25_superfiles"] = superfiles(root, eng, BM25_TABLE)
        res["vector_superfiles"] = superfiles(root, eng, VECTOR_TABLE)
        conn = eng.connect()
        try:
            table = eng.open(conn, BM25_TABLE)
            for query in BM25_QUERIES:
                eng.bm25(table, query, K)
            eng.settle(table)
            res["bm25_geomean_p50_ms"] = geomean([bounded_p50(
                lambda t=table, q=query, e=eng: e.bm25(t, q, K), cfg["bm25_runs"],
                cfg["bm25_warmup"], cfg["loop_budget_s"])["p50_ms"] for query in BM25_QUERIES])
            table = eng.open(conn, VECTOR_TABLE)
            queries = [eng.prepare_vector(q) for q in data.queries]
            for q in queries[: cfg["vector_warmup"]]:
                eng.vector(table, q, K)
            eng.settle(table)
            lat, results = [], []
            deadline = time.perf_counter() + cfg["vector_budget_s"] / 2
            for q in queries:
                if len(lat) >= 10 and time.perf_counter() > deadline:
                    break
                t0 = time.perf_counter()
                results.append(eng.vector(table, q, K))
                lat.append(time.perf_counter() - t0)
            id_map = eng.id_map(conn, VECTOR_TABLE)
            found = [np.array([id_map[i] for i in eng.ids(r)], np.int64) for r in results]
            sub = VectorData(data.corpus, data.queries[: len(found)],
                             data.threshold10[: len(found)])
            res["vector_queries"] = len(found)
            res["vector_recall_at_10"] = recall_at_10(sub, found)
            res["vector_p50_ms"] = float(np.median(lat) * 1000)
        finally:
            eng.close(conn)
        log.info("%s %s after optimize: %d/%d superfiles, BM25 %.3f ms, vector %.3f ms "
                 "recall %.4f", root.kind, eng.engine, res["bm25_superfiles"],
                 res["vector_superfiles"], res["bm25_geomean_p50_ms"], res["vector_p50_ms"],
                 res["vector_recall_at_10"])
        out[eng.engine] = res
    return out


# -- targets and report -----------------------------------------------------------------------

def evaluate_targets(roots: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for kind, r in roots.items():
        ing = r["bm25"]["ingest"]
        ratio = ing["quiver"]["rows_per_s"] / ing["infino"]["rows_per_s"]
        targets.append({"name": f"{kind}: summaries ingest rows/s >= 0.5x infino",
                        "value": ratio, "limit": 0.5, "pass": ratio >= 0.5})
        warm = r["bm25"]["warm"]
        ratio = warm["quiver_geomean_p50_ms"] / warm["infino_geomean_p50_ms"]
        targets.append({"name": f"{kind}: warm BM25 geomean p50 <= 2x infino",
                        "value": ratio, "limit": 2.0, "pass": ratio <= 2.0})
        vw = r["vectors"]["warm"]
        ratio = vw["quiver"]["p50_ms"] / vw["infino"]["p50_ms"]
        targets.append({"name": f"{kind}: warm vector p50 <= 2x infino (recall "
                                f"{vw['quiver']['recall_at_10']:.3f} vs "
                                f"{vw['infino']['recall_at_10']:.3f})",
                        "value": ratio, "limit": 2.0, "pass": ratio <= 2.0})
    return targets


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    ram = (m["ram_bytes"] or 0) / 2**30
    libs = ", ".join(f"{k} {val}" for k, val in m["libraries"].items() if val)
    lines = [
        f"# Table benchmark: Quiver vs infino ({result['started_utc']}"
        f"{', quick' if result['quick'] else ''})",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, {ram:.1f} GiB RAM, "
        f"{m['os']}; Python {m['python']}; {libs}; commit {m['git_commit']}; "
        f"load average at start {m['load_average_at_start']}, "
        f"at end {result['load_average_at_end']}. Wall time {result['wall_s']:.0f} s.",
        "",
        "Storage roots: " + "; ".join(f"**{k}**: {v['describe']}"
                                      for k, v in result["roots"].items()) + ".",
        "",
    ]
    lines += report.targets_section(result["targets"])
    lines += [
        "",
        f"## Ingest ({COMMITS} appends of equal slices, one commit each)",
        "",
        "| root | data | engine | seconds | rows/s | median commit s | superfiles |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in result["roots"].items():
        for part, label in (("bm25", "summaries"), ("vectors", "vectors")):
            for eng, g in r[part]["ingest"].items():
                lines.append(f"| {kind} | {g['rows']:,} {label} | {eng} | {_fmt(g['seconds'], 2)} "
                             f"| {g['rows_per_s']:,.0f} | {_fmt(g['commit_s_median'], 3)} | "
                             f"{g['superfiles']} |")
    for kind, r in result["roots"].items():
        w = r["bm25"]["warm"]
        lines += [
            "",
            f"## BM25 top-{K}, warm p50 ms — {kind}",
            "",
            "| query | infino | Quiver | Quiver/infino | top-10 overlap |",
            "| --- | --- | --- | --- | --- |",
        ]
        for q in w["queries"]:
            lines.append(f"| {q['query']} | {_fmt(q['infino_p50_ms'])} | "
                         f"{_fmt(q['quiver_p50_ms'])} | "
                         f"{q['quiver_p50_ms'] / q['infino_p50_ms']:.2f} | "
                         f"{q.get('top10_overlap', '-')} |")
        gi, gq = w["infino_geomean_p50_ms"], w["quiver_geomean_p50_ms"]
        lines.append(f"| **geomean** | {_fmt(gi)} | {_fmt(gq)} | {gq / gi:.2f} | |")
        lines += ["", f"Quiver diagnostics ({kind}): the same searches on the already pinned "
                  f"snapshot (no per-query check for a newer manifest) take "
                  f"{_fmt(w['quiver_pinned_geomean_p50_ms'])} ms geomean p50; the check "
                  f"itself (`Table.refresh`) takes {_fmt(w['quiver_refresh_p50_ms'])} ms p50."]
    lines += [
        "",
        "## Cold queries (fresh connection and table object; geomean over the ten BM25 "
        "queries, median over the first vector queries)",
        "",
        "| root | search | engine | open ms | first query ms | open + query ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in result["roots"].items():
        for eng, c in r["bm25"]["cold"].items():
            opens = geomean([q["open_ms"] for q in c["queries"]])
            lines.append(f"| {kind} | BM25 | {eng} | {_fmt(opens, 1)} | "
                         f"{_fmt(c['geomean_query_ms'], 1)} | "
                         f"{_fmt(c['geomean_open_plus_query_ms'], 1)} |")
        for eng, c in r["vectors"]["cold"].items():
            opens = c["p50_open_plus_query_ms"] - c["p50_query_ms"]
            lines.append(f"| {kind} | vector ({c['queries']} queries) | {eng} | "
                         f"~{_fmt(opens, 1)} | {_fmt(c['p50_query_ms'], 1)} | "
                         f"{_fmt(c['p50_open_plus_query_ms'], 1)} |")
    lines += [
        "",
        f"## Vector top-{K}, warm (single-query calls)",
        "",
        "| root | engine | queries | recall@10 | p50 ms | p90 ms | p50 ms, pinned snapshot |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in result["roots"].items():
        for eng, v in r["vectors"]["warm"].items():
            lines.append(f"| {kind} | {eng} | {v['queries']} | {_fmt(v['recall_at_10'], 4)} | "
                         f"{_fmt(v['p50_ms'])} | {_fmt(v['p90_ms'])} | "
                         f"{_fmt(v.get('pinned_p50_ms'))} |")
    lines += [
        "",
        "## Superfiles opened per query (Quiver, fresh table object)",
        "",
        "| root | search | live superfiles (no pruning) | opened, mean |",
        "| --- | --- | --- | --- |",
    ]
    for kind, r in result["roots"].items():
        p = r["bm25"]["pruning"]
        lines.append(f"| {kind} | BM25, ten queries | {p['live_superfiles']} | "
                     f"{_fmt(p['files_opened_mean'], 1)} |")
        lines.append(f"| {kind} | BM25 with filter {p['filtered']['filter']} | "
                     f"{p['live_superfiles']} | {_fmt(p['filtered']['files_opened_mean'], 1)} |")
        p = r["vectors"]["pruning"]
        lines.append(f"| {kind} | vector | {p['live_superfiles']} | "
                     f"{_fmt(p['files_opened_mean'], 1)} |")
    for kind, r in result["roots"].items():
        opt = r.get("optimized")
        if not opt:
            continue
        lines += [
            "",
            f"## After each engine's optimize() — {kind} (diagnostic, not a target)",
            "",
            "| engine | optimize s (summaries / vectors) | superfiles (summaries / vectors) | "
            "BM25 warm geomean p50 ms | vector warm p50 ms | vector recall@10 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for eng, o in opt.items():
            lines.append(
                f"| {eng} | {_fmt(o[f'{BM25_TABLE}_optimize_s'], 2)} / "
                f"{_fmt(o[f'{VECTOR_TABLE}_optimize_s'], 2)} | {o['bm25_superfiles']} / "
                f"{o['vector_superfiles']} | {_fmt(o['bm25_geomean_p50_ms'])} | "
                f"{_fmt(o['vector_p50_ms'])} | {_fmt(o['vector_recall_at_10'], 4)} |")
    lines += ["", "Notes: " + " ".join(result["notes"]), ""]
    return "\n".join(lines)


NOTES = [
    "Both engines run in this one process with their default table settings (infino's own",
    "commit split; Quiver's TableOptions defaults), k=10, on the same Arrow data.",
    "Ingest time runs from the first of the 16 appends to the return of the last (each",
    "append commits and is durable when it returns); create_table is not included.",
    "Searches return each engine's native (_id, score) pairs (Quiver: columns=[]);",
    "mapping _id to rows for recall and overlap is not timed. infino's vector tables are",
    "measured as appended, without optimize(), like Quiver's (the same table shape).",
    "Cold = a new Connection and table object, so every in-process cache is empty;",
    "infino always gets a cache_dir (a fresh, empty one for each cold connection).",
    "The OS page cache is not dropped, so local-disk cold reads come from memory.",
    "The moto S3 server runs in this process: its request handling shares the GIL with",
    "the engines' Python code. Recall@10 is tie-aware (see bench/data.py).",
    "Superfiles opened = Table.files_opened of a fresh table after one query: every file",
    "opened for any reason, including to read term document frequencies for the table-wide",
    "BM25 statistics (which cover every live file, filtered or not); infino does not report",
    "this number.",
]


def _quiver_cache_note() -> str:
    if QuiverTables.has_disk_cache():
        return ("Quiver on S3 uses its local disk cache (TableOptions.cache_dir): warm runs "
                "start after the background copies finish; each cold connection gets a fresh, "
                "empty cache directory.")
    return "Quiver has no local disk cache at this commit: S3 queries read through ranged GETs."


def run(quick: bool, quiet: dict[str, Any] | None = None, optimized: bool = True
        ) -> dict[str, Any]:
    cfg = _config(quick)
    started = dt.datetime.now(dt.UTC)
    machine = describe_machine(REPO)
    infino_cfg = infino_engine.configure(infino_engine.DEFAULT_TARGET_RECALL, split_mb=None)
    summaries = load_summaries(cfg["bm25_rows"])
    n = summaries.num_rows
    bm25_data = pa.table({"row": pa.array(np.arange(n, dtype=np.int64)),
                          "summary": summaries.column("summary")})
    vectors = load_vectors(cfg["vector_rows"], cfg["vector_queries"])
    log.info("data: %d summaries, %d x %d vectors, %d queries", n, len(vectors.corpus),
             vectors.dim, len(vectors.queries))
    t0 = time.perf_counter()
    roots: dict[str, Any] = {}
    for make in (local_root, s3_root):
        with make() as root:
            log.info("root %s: %s", root.kind, root.describe)
            roots[root.kind] = {
                "describe": root.describe,
                "bm25": bench_bm25(root, bm25_data, cfg, overlap=root.kind == "local"),
                "vectors": bench_vectors(root, vectors, cfg),
            }
            if optimized and root.kind == "local":
                roots[root.kind]["optimized"] = bench_optimized(root, vectors, cfg)
    result = {
        **report.result_head("table", quick, started, time.perf_counter() - t0, machine,
                             quiet),
        "config": {**cfg, "k": K, "commits": COMMITS, "bm25_docs": n,
                   "vector_docs": len(vectors.corpus), "vector_queries_total":
                   len(vectors.queries), "infino_yaml": infino_cfg["yaml"]},
        "roots": roots,
        "notes": [*NOTES, _quiver_cache_note()],
    }
    result["targets"] = evaluate_targets(roots)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = report.benchmark_parser(__doc__, quiet_load=1.5)
    parser.add_argument("--no-optimize", action="store_true",
                        help="skip the after-optimize measurements on local disk")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    # moto's request log and werkzeug's access log would drown the benchmark's own.
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet = report.wait_for_quiet(args.quiet_load, args.quiet_wait)
    result = run(args.quick, quiet, optimized=not args.no_optimize)
    return report.publish(result, "table", markdown)


if __name__ == "__main__":
    raise SystemExit(main())
