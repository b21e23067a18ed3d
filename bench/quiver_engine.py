"""The Quiver side of the superfile benchmark: one superfile written and read in memory.

Build time is ``write_superfile`` end to end (the Parquet body plus every embedded
index), the same unit as infino's one-superfile append; searches go through
``SuperfileReader.open(bytes)``, the eager in-memory reader.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

from bench.data import VectorData, recall_at_10


class QuiverBm25:
    """A superfile of (row, summary) with a BM25 index on ``summary``."""

    def __init__(self, table: pa.Table) -> None:
        self.data = table
        self.file: bytes = b""
        self.reader: Any = None
        self.open_s = 0.0

    def build(self) -> float:
        from superfile import IndexSpec, write_superfile

        t0 = time.perf_counter()
        written = write_superfile(self.data, IndexSpec.of(fts=["summary"]))
        elapsed = time.perf_counter() - t0
        self.file = written.data
        return elapsed

    def open(self) -> float:
        from superfile import SuperfileReader

        t0 = time.perf_counter()
        self.reader = SuperfileReader.open(self.file)
        self.open_s = time.perf_counter() - t0
        return self.open_s

    def search(self, query: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.reader.bm25_search("summary", query, k=k)


class QuiverVectors:
    """A superfile of (row, embedding) with a cosine vector index."""

    def __init__(self, data: VectorData) -> None:
        self.data = data
        self.arrow = data.arrow_table()
        self.file: bytes = b""
        self.reader: Any = None
        self.open_s = 0.0

    def build(self) -> float:
        from superfile import IndexSpec, write_superfile

        t0 = time.perf_counter()
        written = write_superfile(self.arrow, IndexSpec.of(vector={"embedding": "cosine"}))
        elapsed = time.perf_counter() - t0
        self.file = written.data
        return elapsed

    def open(self) -> float:
        from superfile import SuperfileReader

        t0 = time.perf_counter()
        self.reader = SuperfileReader.open(self.file)
        self.open_s = time.perf_counter() - t0
        return self.open_s

    def index_shape(self) -> dict[str, Any]:
        vec = self.reader.vector("embedding")
        return {"nlist": int(vec.nlist), "default_nprobe": int(vec.default_nprobe())}

    def search(self, qi: int, nprobe: int | None, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.reader.vector_search("embedding", self.data.queries[qi], k, nprobe=nprobe)

    def measure(self, nprobe: int | None, warmup: int) -> dict[str, float]:
        """Recall@10 and p50 over every query, one call per query."""
        n = len(self.data.queries)
        for qi in range(min(warmup, n)):
            self.search(qi, nprobe)
        lat = np.empty(n)
        rows = []
        for qi in range(n):
            t0 = time.perf_counter()
            ids, _ = self.search(qi, nprobe)
            lat[qi] = time.perf_counter() - t0
            rows.append(ids)
        return {
            "recall_at_10": recall_at_10(self.data, rows),
            "p50_ms": float(np.median(lat) * 1000),
            "p90_ms": float(np.percentile(lat, 90) * 1000),
        }


def duckdb_row_count(file: bytes) -> dict[str, Any]:
    """Opens the superfile with DuckDB's ``read_parquet``: proof that it is plain Parquet."""
    import duckdb

    fd, path = tempfile.mkstemp(suffix=".parquet", prefix="quiver-bench-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(file)
        con = duckdb.connect()
        try:
            t0 = time.perf_counter()
            count = con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0]
            elapsed = time.perf_counter() - t0
        finally:
            con.close()
    finally:
        os.unlink(path)
    return {"rows": int(count), "seconds": elapsed}
