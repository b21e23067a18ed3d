"""Reads Quiver tables through Spark's Iceberg source, in a child interpreter whose pyspark
matches the Iceberg runtime jar (see ``env.py``), and writes what Spark returned to files.

``python -m tests.spark_iceberg.reader job.json``. The job names the runtime jar, a
working folder, guide blocks to run first (they create the session, as a user would) and
the reads: ``{"name", "path", "options"}`` for ``spark.read.format("iceberg")`` or
``{"name", "sql"}``. Each read's rows go to ``<out>/<name>.parquet``; ``<out>/results.json``
holds each read's Spark schema or error, and the time each step took. One failing read
does not stop the others.
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

    # getOrCreate returns the session a guide block made; its settings are kept.
    spark = (SparkSession.builder.master("local[2]").appName("quiver-iceberg-tests")
             .config("spark.jars", job["jar"])
             .config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "512m")
             .config("spark.sql.shuffle.partitions", "2")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    for key, value in job.get("conf", {}).items():
        spark.conf.set(key, value)
    return spark


def _read(spark, spec: dict[str, Any]):
    if "sql" in spec:
        return spark.sql(spec["sql"])
    reader = spark.read.format("iceberg")
    for key, value in spec.get("options", {}).items():
        reader = reader.option(key, value)
    return reader.load(spec["path"])


def run(job: dict[str, Any]) -> dict[str, Any]:
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"reads": {}}
    os.chdir(job["cwd"])
    started = time.monotonic()
    if job.get("blocks"):
        namespace: dict[str, Any] = {"__name__": "__guide__"}
        try:
            for i, code in enumerate(job["blocks"], 1):
                exec(compile(code, f"<guide block {i}>", "exec"), namespace)
            results["blocks"] = {"error": None}
        except Exception:
            results["blocks"] = {"error": traceback.format_exc(limit=20)}
        results["blocks"]["seconds"] = time.monotonic() - started
    spark = _session(job)
    results["session_s"] = time.monotonic() - started
    for spec in job["reads"]:
        began = time.monotonic()
        entry: dict[str, Any] = {"error": None, "schema": None}
        try:
            df = _read(spark, spec)
            entry["schema"] = df.schema.simpleString()
            pq.write_table(df.toArrow(), out / f"{spec['name']}.parquet")
        except Exception:
            entry["error"] = traceback.format_exc(limit=20)[-4000:]
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
