"""SQL scans on an S3 root, for the SQL benchmark: the objects themselves against their
copies in the local disk cache.

The root is a moto S3 server on loopback in this process. Quiver's in-memory rows are
off (``memory_cache_bytes=0``), so every statement reads the superfiles: either the
objects (a connection without a disk cache) or the disk-cache copies (a connection with
one, after its first scan has copied the files and the copies have landed).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from typing import Any

import pyarrow as pa

from bench.moto_s3 import moto_bucket
from bench.table_bench import bounded_p50

log = logging.getLogger("bench.sql.remote")

BUCKET = "quiver-sql-bench"


def measure(summaries: pa.Table, table: str, commits: int, statements: dict[str, str],
            cfg: dict[str, Any]) -> dict[str, Any]:
    """p50 ms of each statement reading the S3 objects and reading the disk copies."""
    cache_dir = tempfile.mkdtemp(prefix="quiver-sql-bench-cache-")
    try:
        with moto_bucket(BUCKET) as s3:
            uri = f"s3://{BUCKET}/root"
            _write(uri, s3.store_options(), summaries, table, commits)
            return _compare(uri, s3.store_options(), cache_dir, table, statements, cfg)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _write(uri: str, options: dict[str, str], summaries: pa.Table, table: str,
           commits: int) -> None:
    from quiver import catalog
    from quiver.supertable.table import TableOptions

    writer = catalog.connect(uri, table_options=TableOptions(cache_bytes=0), **options)
    try:
        written = writer.create_table(table, summaries.schema, fts=["summary", "name"])
        step = -(-summaries.num_rows // commits)
        for start in range(0, summaries.num_rows, step):
            written.append(summaries.slice(start, step))
    finally:
        writer.close()


def _compare(uri: str, options: dict[str, str], cache_dir: str, table: str,
             statements: dict[str, str], cfg: dict[str, Any]) -> dict[str, Any]:
    from quiver.flight_server.sql import connect
    from quiver.supertable.table import TableOptions

    objects = connect(uri, table_options=TableOptions(cache_bytes=0), memory_cache_bytes=0,
                      **options)
    copies = connect(uri, table_options=TableOptions(cache_dir=cache_dir),
                     memory_cache_bytes=0, **options)
    try:
        t0 = time.perf_counter()
        for sql in statements.values():
            copies.sql(sql)  # the first scan starts copying the files
        landed = copies.catalog.open_table(table).pool.cache.wait_idle(300)
        out: dict[str, Any] = {"copy_s": time.perf_counter() - t0, "copies_landed": landed,
                               "statements": {}}
        for name, sql in statements.items():
            row: dict[str, Any] = {"sql": sql}
            for path, conn in (("objects", objects), ("disk_copies", copies)):
                row[path] = bounded_p50(lambda c=conn, s=sql: c.sql(s), cfg["runs"],
                                        cfg["warmup"], cfg["budget_s"])["p50_ms"]
            row["same_rows"] = objects.sql(sql).to_pylist() == copies.sql(sql).to_pylist()
            out["statements"][name] = row
            log.info("S3 %-22s objects %7.1f ms  disk copies %7.1f ms", name,
                     row["objects"], row["disk_copies"])
        return out
    finally:
        objects.close()
        copies.close()


def markdown_section(remote: dict[str, Any], rows: int) -> list[str]:
    lines = [
        "",
        "## S3 root: scans of the objects against their disk-cache copies (not a target)",
        "",
        f"{rows:,} summaries on a moto S3 server on loopback in this process; Quiver's "
        "in-memory rows off, so each statement reads the superfiles. The first scans "
        f"copied the files into the disk cache in {remote['copy_s']:.1f} s"
        f"{'' if remote['copies_landed'] else ' (not all had landed)'}.",
        "",
        "| statement | objects p50 ms | disk copies p50 ms | speedup | same rows |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in remote["statements"].items():
        lines.append(f"| {name} | {r['objects']:.1f} | {r['disk_copies']:.1f} | "
                     f"{r['objects'] / r['disk_copies']:.2f}x | "
                     f"{'yes' if r['same_rows'] else 'NO'} |")
    return lines
