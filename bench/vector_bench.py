"""The vector benchmark: what one superfile of MiniLM embeddings costs to store and to search.

Run ``PYTHONPATH=. python -m bench.vector_bench`` (``--quick`` for 20K vectors and 50
queries). It writes one superfile of (row, embedding) with the default cosine index and
reports: the file's size split (the float32 column, the index blob, the rest), recall@10
against exact brute force (tie-aware) and warm p50 latency at the default probe and a few
others, and what a *cold* lazy query costs: a fresh ``open_lazy`` plus one search, counted
through the ``CountingRangeReader`` the reader reads through. The infino reference is the
infino p50 at its recall>=0.95 setting from the newest full superfile benchmark result
(infino's vector index is calibrated per process; ``bench.superfile_bench`` runs it).
Results go to ``bench/results/vector-*.{json,md}``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench.data import load_vectors, recall_at_10
from bench.machine import describe_machine
from bench.report import fmt
from quiver.superfile import IndexSpec, SuperfileReader, write_superfile
from quiver.superfile.ranges import CountingRangeReader, FileRangeReader

log = logging.getLogger("bench.vector")

K = 10
RECALL_BAR = 0.95
COLD_BYTES_BAR = 10 * 1024 * 1024
NPROBE_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
REPO = Path(__file__).resolve().parent.parent


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"rows": 20_000, "queries": 50, "cold_queries": 10, "warmup": 5}
    return {"rows": None, "queries": None, "cold_queries": 20, "warmup": 20}


def size_split(data: bytes, column: str) -> dict[str, int]:
    """Bytes of the vector column's chunks, of the index blob, and of the whole file."""
    reader = SuperfileReader.open(data)
    meta = reader.metadata
    col_bytes = 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            chunk = rg.column(c)
            if chunk.path_in_schema.split(".")[0] == column:
                col_bytes += chunk.total_compressed_size
    entry = reader.directory.find("vector", column)
    return {"file_bytes": len(data), "column_bytes": col_bytes,
            "index_blob_bytes": entry.length if entry else 0}


def measure(reader: SuperfileReader, data: Any, nprobe: int | None, warmup: int
            ) -> dict[str, float]:
    n = len(data.queries)
    for qi in range(min(warmup, n)):
        reader.vector_search("embedding", data.queries[qi], K, nprobe=nprobe)
    lat = np.empty(n)
    rows = []
    for qi in range(n):
        t0 = time.perf_counter()
        ids, _ = reader.vector_search("embedding", data.queries[qi], K, nprobe=nprobe)
        lat[qi] = time.perf_counter() - t0
        rows.append(ids)
    return {"recall_at_10": recall_at_10(data, rows), "p50_ms": float(np.median(lat) * 1000),
            "p90_ms": float(np.percentile(lat, 90) * 1000)}


def cold_queries(path: str, data: Any, count: int) -> dict[str, Any]:
    """A fresh lazy open plus one default search per query: bytes and reads counted."""
    step = max(1, len(data.queries) // count)
    picks = list(range(0, len(data.queries), step))[:count]
    per_bytes, per_reads, per_ms, rows = [], [], [], []
    for qi in picks:
        src = FileRangeReader(path)
        counter = CountingRangeReader(src)
        try:
            t0 = time.perf_counter()
            reader = SuperfileReader.open_lazy(counter)
            ids, _ = reader.vector_search("embedding", data.queries[qi], K)
            per_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            src.close()
        per_bytes.append(counter.bytes_read)
        per_reads.append(counter.reads)
        rows.append(ids)
    sub = type(data)(corpus=data.corpus, queries=data.queries[picks],
                     threshold10=data.threshold10[picks])
    return {"queries": len(picks), "mean_bytes": float(np.mean(per_bytes)),
            "max_bytes": int(np.max(per_bytes)), "mean_reads": float(np.mean(per_reads)),
            "p50_ms": float(np.median(per_ms)), "recall_at_10": recall_at_10(sub, rows)}


def infino_reference() -> dict[str, Any] | None:
    """infino's fastest setting at recall@10 >= 0.95 in the newest full superfile result."""
    files = sorted(p for p in report.RESULTS.glob("superfile-*.json") if "quick" not in p.name)
    for path in reversed(files):
        settings = json.loads(path.read_text())["vectors"]["infino"]["settings"]
        ok = [s for s in settings if s["recall_at_10"] >= RECALL_BAR]
        if ok:
            best = min(ok, key=lambda s: s["p50_ms"])
            return {"source": path.name, "recall_at_10": best["recall_at_10"],
                    "p50_ms": best["p50_ms"], "target_recall": best["target_recall"]}
    return None


def run(quick: bool) -> dict[str, Any]:
    cfg = _config(quick)
    started = dt.datetime.now(dt.UTC)
    wall0 = time.perf_counter()
    data = load_vectors(cfg["rows"], cfg["queries"])
    n, dim = data.corpus.shape
    log.info("vectors: %d x %d, %d queries", n, dim, len(data.queries))
    t0 = time.perf_counter()
    written = write_superfile(data.arrow_table(), IndexSpec.of(vector={"embedding": "cosine"}))
    build_s = time.perf_counter() - t0
    sizes = size_split(written.data, "embedding")
    log.info("write %.1fs, sizes %s", build_s, sizes)
    reader = SuperfileReader.open(written.data)
    vec = reader.vector("embedding")
    shape = {"nlist": int(vec.nlist), "default_nprobe": int(vec.default_nprobe()),
             "codes": vec.codes_name}
    settings = [{"nprobe": None, "nprobe_used": shape["default_nprobe"],
                 **measure(reader, data, None, cfg["warmup"])}]
    for frac in NPROBE_FRACTIONS:
        probe = max(1, round(frac * vec.nlist))
        settings.append({"nprobe": probe, **measure(reader, data, probe, 2)})
    del reader
    fd, path = tempfile.mkstemp(suffix=".parquet", prefix="quiver-vbench-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(written.data)
        cold = cold_queries(path, data, cfg["cold_queries"])
    finally:
        os.unlink(path)
    log.info("cold: %s", cold)
    inf = infino_reference()
    default = settings[0]
    ratio = default["p50_ms"] / inf["p50_ms"] if inf else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    targets = [
        {"name": "recall@10 >= 0.95 at the default probe", "value": default["recall_at_10"],
         "limit": ">= 0.95", "pass": default["recall_at_10"] >= RECALL_BAR},
        {"name": "cold lazy query reads <= 10 MiB (max over queries, MiB)",
         "value": cold["max_bytes"] / 2**20, "limit": "<= 10",
         "pass": cold["max_bytes"] <= COLD_BYTES_BAR},
        {"name": "index blob < 0.3x the float32 column",
         "value": sizes["index_blob_bytes"] / max(1, sizes["column_bytes"]),
         "limit": "< 0.3", "pass": sizes["index_blob_bytes"] < 0.3 * sizes["column_bytes"]},
        {"name": "warm p50 at the default probe / infino p50 at recall>=0.95",
         "value": ratio, "limit": "<= 2", "pass": None if ratio is None else ratio <= 2.0},
    ]
    return {**report.result_head("vector", quick, started, time.perf_counter() - wall0,
                                 describe_machine(REPO)), "commit": commit,
            "docs": n, "dim": dim, "queries": len(data.queries),
            "build_s": build_s, "sizes": sizes, "index": shape, "settings": settings,
            "cold": cold, "infino": inf, "targets": targets}


def markdown(r: dict[str, Any]) -> str:
    s, c = r["sizes"], r["cold"]
    lines = [
        f"# Vector benchmark ({r['started_utc']}, commit {r['commit']})", "",
        f"{r['docs']:,} x {r['dim']} MiniLM vectors (pypi-minilm), {r['queries']} queries, "
        f"k={K}; index: {r['index']['codes']} codes, nlist {r['index']['nlist']}, "
        f"default nprobe {r['index']['default_nprobe']}; write {r['build_s']:.1f}s.", "",
        "## File size", "",
        "| part | bytes | MB |", "| --- | ---: | ---: |",
        f"| float32 column | {s['column_bytes']:,} | {s['column_bytes'] / 1e6:.1f} |",
        f"| index blob | {s['index_blob_bytes']:,} | {s['index_blob_bytes'] / 1e6:.1f} |",
        f"| whole file | {s['file_bytes']:,} | {s['file_bytes'] / 1e6:.1f} |", "",
        "## Warm search (resident file)", "",
        "| nprobe | recall@10 | p50 ms | p90 ms |", "| --- | ---: | ---: | ---: |",
    ]
    for st in r["settings"]:
        probe = f"default ({st['nprobe_used']})" if st["nprobe"] is None else str(st["nprobe"])
        lines.append(f"| {probe} | {st['recall_at_10']:.3f} | {fmt(st['p50_ms'])} | "
                     f"{fmt(st['p90_ms'])} |")
    lines += [
        "", "## Cold lazy query (fresh open_lazy + one default search)", "",
        f"{c['queries']} queries: mean {c['mean_bytes'] / 2**20:.2f} MiB, max "
        f"{c['max_bytes'] / 2**20:.2f} MiB in {c['mean_reads']:.1f} reads on average; "
        f"p50 {c['p50_ms']:.1f} ms (local file); recall@10 {c['recall_at_10']:.3f}.", "",
    ]
    inf = r["infino"]
    if inf:
        lines += [f"infino reference ({inf['source']}, target_recall {inf['target_recall']}): "
                  f"recall@10 {inf['recall_at_10']:.3f}, p50 {inf['p50_ms']:.2f} ms.", ""]
    lines += report.targets_section(r["targets"], "value")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = report.benchmark_parser(__doc__ or "", quiet_load=3.0)
    args = parser.parse_args(argv)
    report.wait_for_quiet(args.quiet_load, args.quiet_wait)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return report.publish(run(args.quick), "vector", markdown)


if __name__ == "__main__":
    raise SystemExit(main())
