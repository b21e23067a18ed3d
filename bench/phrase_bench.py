"""Phrase and proximity search cost against the same words searched as OR and AND.

Run ``PYTHONPATH=. python -m bench.phrase_bench`` (``--quick`` for 100,000 rows). One
superfile of the PyPI summaries is built in memory (the build time is reported, with the
index size), then each query's top-10 p50 is measured as ``a b`` (OR), ``a b`` (AND),
``"a b"`` (phrase) and ``"a b"~3`` (proximity). The target: a phrase costs at most 2x the
same words as OR. Results go to ``bench/results/`` as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import report
from bench.data import geomean, load_summaries, p50_ms
from bench.machine import describe_machine
from bench.quiver_engine import QuiverBm25
from quiver.superfile.fts.query import parse_query

log = logging.getLogger("bench.phrase")
REPO = Path(__file__).resolve().parent.parent

K = 10
QUERIES = (
    "web framework",
    "command line tool",
    "machine learning",
    "python library",
    "http client",
    "rest api",
    "static site generator",
    "data analysis",
)
LIMIT = 2.0


def run(quick: bool) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    summaries = load_summaries(100_000 if quick else None)
    n = summaries.num_rows
    table = pa.table({"row": pa.array(np.arange(n, dtype=np.int64)),
                      "summary": summaries.column("summary")})
    qv = QuiverBm25(table)
    qv.build()  # warm the compiled kernels
    build_s = min(qv.build() for _ in range(2))
    qv.open()
    fts_bytes = qv.reader.fts("summary")._sections["positions"][1]
    runs, warm = (5, 1) if quick else (20, 2)
    rows = []
    for words in QUERIES:
        forms = {"or": (words, "or"), "and": (words, "and"), "phrase": (f'"{words}"', "or"),
                 "near3": (f'"{words}"~3', "or")}
        row: dict[str, Any] = {"query": words}
        for name, (text, mode) in forms.items():
            row[f"{name}_ms"] = p50_ms(
                lambda t=text, m=mode: qv.reader.bm25_search("summary", t, k=K, mode=m),
                runs, warm)
            row[f"{name}_hits"] = len(qv.reader.fts("summary").token_match(words, "and")) \
                if name == "and" else None
        docs, _, _ = qv.reader.fts("summary").phrase_matches(
            parse_query(f'"{words}"').phrases[0])
        row["phrase_docs"] = len(docs)
        row["phrase_over_or"] = row["phrase_ms"] / row["or_ms"]
        rows.append(row)
        log.info("%s", row)
    ratio = geomean([r["phrase_over_or"] for r in rows])
    worst = max(r["phrase_over_or"] for r in rows)
    return {
        **report.result_head("phrase", quick, started, time.perf_counter() - t0,
                             describe_machine(REPO), None),
        "docs": n, "build_s": build_s, "file_bytes": len(qv.file),
        "positions_section_bytes": int(fts_bytes), "queries": rows,
        "phrase_over_or_geomean": ratio, "phrase_over_or_worst": worst,
        "targets": [{"name": "phrase p50 <= 2x the same words as OR (worst query)",
                     "value": worst, "limit": LIMIT, "pass": worst <= LIMIT}],
    }


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    ram = (m["ram_bytes"] or 0) / 2**30
    libs = ", ".join(f"{k} {val}" for k, val in m["libraries"].items() if val)
    lines = [f"# Phrase benchmark ({r['started_utc']}{', quick' if r['quick'] else ''})", "",
             f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, {ram:.1f} GiB "
             f"RAM, {m['os']}; Python {m['python']}; {libs}; commit {m['git_commit']}; "
             f"load average at end {r['load_average_at_end']}.", "",
             f"{r['docs']:,} summaries; write_superfile {r['build_s']:.2f} s; file "
             f"{r['file_bytes']:,} bytes, of which word positions "
             f"{r['positions_section_bytes']:,}.",
             "", "| query | OR ms | AND ms | phrase ms | ~3 ms | phrase docs | phrase / OR |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for q in r["queries"]:
        lines.append(f"| {q['query']} | {q['or_ms']:.3f} | {q['and_ms']:.3f} | "
                     f"{q['phrase_ms']:.3f} | {q['near3_ms']:.3f} | {q['phrase_docs']:,} | "
                     f"{q['phrase_over_or']:.2f} |")
    lines += ["", f"Phrase / OR: geomean {r['phrase_over_or_geomean']:.2f}, worst "
              f"{r['phrase_over_or_worst']:.2f}.", ""]
    lines += report.targets_section(r["targets"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows, fewer runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return report.publish(run(args.quick), "phrase", markdown)


if __name__ == "__main__":
    raise SystemExit(main())
