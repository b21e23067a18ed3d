"""Reads Quiver tables through Spark's Iceberg source, in a child interpreter whose pyspark
matches the Iceberg runtime jar (see ``env.py``), and writes what Spark returned to files.

``python -m tests.spark_iceberg.reader job.json``. The job names the jars and session
settings, a working folder, guide blocks to run in that session and the reads, in order:
``{"name", "path", "options"}`` for ``spark.read.format("iceberg")``, ``{"name", "sql"}``,
or ``{"name", "sql", "statement": true}`` for a statement whose result is not kept. Each
read's rows go to ``<out>/<name>.parquet``; ``<out>/results.json`` holds each read's Spark
schema or error, and the time each step took. One failing read does not stop the others.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def _session(job: dict[str, Any]):
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local[2]").appName("quiver-iceberg-tests")
               .config("spark.jars", ",".join(job["jars"]))
               .config("spark.ui.enabled", "false")
               .config("spark.driver.memory", "512m")
               .config("spark.sql.shuffle.partitions", "2"))
    for key, value in job.get("conf", {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _read(spark, spec: dict[str, Any]):
    if "sql" in spec:
        return spark.sql(spec["sql"])
    reader = spark.read.format("iceberg")
    for key, value in spec.get("options", {}).items():
        reader = reader.option(key, value)
    return reader.load(spec["path"])


def _short(trace: str) -> str:
    """A traceback without the JVM's stack frames (the causes' messages stay)."""
    lines = [ln for ln in trace.splitlines() if not ln.strip().startswith(("at ", "... "))]
    return "\n".join(lines)[-6000:]


def run(job: dict[str, Any]) -> dict[str, Any]:
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"reads": {}}
    os.chdir(job["cwd"])
    started = time.monotonic()
    # The session the guide blocks' getOrCreate then returns, their catalog settings
    # applied: static settings (the SQL extensions for CALL) must be in place first.
    spark = _session(job)
    results["session_s"] = time.monotonic() - started
    if job.get("blocks"):
        began = time.monotonic()
        namespace: dict[str, Any] = {"__name__": "__guide__"}
        try:
            for i, code in enumerate(job["blocks"], 1):
                exec(compile(code, f"<guide block {i}>", "exec"), namespace)
            results["blocks"] = {"error": None}
        except Exception:
            results["blocks"] = {"error": traceback.format_exc(limit=20)}
        results["blocks"]["seconds"] = time.monotonic() - began
    for spec in job["reads"]:
        began = time.monotonic()
        entry: dict[str, Any] = {"error": None, "schema": None}
        try:
            df = _read(spark, spec)
            entry["schema"] = df.schema.simpleString()
            if spec.get("statement"):
                df.collect()
            else:
                pq.write_table(df.toArrow(), out / f"{spec['name']}.parquet")
        except Exception:
            entry["error"] = _short(traceback.format_exc(limit=20))
        entry["seconds"] = time.monotonic() - began
        results["reads"][spec["name"]] = entry
    results["total_s"] = time.monotonic() - started
    spark.stop()
    return results


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    results = run(job)
    (Path(job["out"]) / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
