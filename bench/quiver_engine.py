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


class _QuiverSuperfile:
    """One superfile of ``arrow`` with the indexes of ``spec``, built and opened in memory."""

    def __init__(self, arrow: pa.Table, spec: Any) -> None:
        self.arrow = arrow
        self.spec = spec
        self.file: bytes = b""
        self.reader: Any = None
        self.open_s = 0.0

    def build(self) -> float:
        from quiver.superfile import write_superfile

        t0 = time.perf_counter()
        written = write_superfile(self.arrow, self.spec)
        elapsed = time.perf_counter() - t0
        self.file = written.data
        return elapsed

    def open(self) -> float:
        from quiver.superfile import SuperfileReader

        t0 = time.perf_counter()
        self.reader = SuperfileReader.open(self.file)
        self.open_s = time.perf_counter() - t0
        return self.open_s


class QuiverBm25(_QuiverSuperfile):
    """A superfile of (row, summary) with a BM25 index on ``summary``."""

    def __init__(self, table: pa.Table) -> None:
        from quiver.superfile import IndexSpec

        super().__init__(table, IndexSpec.of(fts=["summary"]))

    def search(self, query: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.reader.bm25_search("summary", query, k=k)


class QuiverVectors(_QuiverSuperfile):
    """A superfile of (row, embedding) with a cosine vector index."""

    def __init__(self, data: VectorData) -> None:
        from quiver.superfile import IndexSpec

        super().__init__(data.arrow_table(), IndexSpec.of(vector={"embedding": "cosine"}))
        self.data = data

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


class QuiverTables:
    """Quiver tables under one storage root (``catalog.connect``), for the table benchmark.

    Searches ask for no columns, so a hit is the engine-native ``(_id, score)`` pair and
    nothing is decoded from the Parquet body, the same unit as infino's searches.
    """

    engine = "quiver"

    def __init__(self, uri: str, options: dict[str, str] | None = None,
                 cache_base: str | None = None) -> None:
        self.uri = uri
        self.options = dict(options or {})
        self.cache_base = cache_base
        self._shared_cache: str | None = None

    @staticmethod
    def has_disk_cache() -> bool:
        """Whether this Quiver's tables take a local disk cache for remote roots."""
        import dataclasses

        from quiver.supertable.table import TableOptions

        return "cache_dir" in {f.name for f in dataclasses.fields(TableOptions)}

    def connect(self, fresh_cache: bool = False) -> Any:
        """A new Connection: empty in-process reader pools, so a fresh one is a cold start.

        With a disk cache (remote roots only) a ``fresh_cache`` connection gets a new,
        empty cache directory; the others share one."""
        from quiver import catalog
        from quiver.supertable.table import TableOptions

        if self.cache_base is None or not self.has_disk_cache():
            return catalog.connect(self.uri, **self.options)
        if fresh_cache or self._shared_cache is None:
            cache = tempfile.mkdtemp(prefix="quiver-cache-", dir=self.cache_base)
            if not fresh_cache:
                self._shared_cache = cache
        else:
            cache = self._shared_cache
        options = TableOptions(cache_dir=cache)  # type: ignore[call-arg]
        return catalog.connect(self.uri, table_options=options, **self.options)

    @staticmethod
    def _cache_of(table: Any) -> Any:
        return getattr(table.pool, "cache", None)

    def settle(self, table: Any, timeout_s: float = 120.0) -> None:
        """Waits for background copies into the disk cache and for the whole-index checks
        of the files opened so far, so later queries are warm (as a server is once its
        warm-up returns): until a file is checked, each query checks the dictionary blocks
        it is first to reach, while the check competes for the cores."""
        from quiver.supertable.fts_lookup import settle_checks

        cache = self._cache_of(table)
        if cache is not None:
            cache.wait_idle(timeout_s)
        settle_checks()

    def release(self, table: Any) -> None:
        """Stops a cold connection's background copies so they do not load what follows."""
        cache = self._cache_of(table)
        if cache is not None and self._shared_cache is not None and \
                os.path.realpath(cache.directory) != os.path.realpath(self._shared_cache):
            cache.close()

    def create(self, conn: Any, name: str, schema: pa.Schema, kind: str) -> Any:
        if kind == "bm25":
            return conn.create_table(name, schema, fts=["summary"])
        return conn.create_table(name, schema, vector={"embedding": "cosine"})

    def open(self, conn: Any, name: str) -> Any:
        return conn.open_table(name)

    def append(self, table: Any, data: pa.Table) -> None:
        table.append(data)

    def bm25(self, table: Any, query: str, k: int, filter_: Any = None) -> Any:
        return table.bm25_search("summary", query, k, columns=[], filter_=filter_)

    def prepare_vector(self, vector: np.ndarray) -> Any:
        return vector

    def vector(self, table: Any, query: Any, k: int) -> Any:
        return table.vector_search("embedding", query, k, columns=[])

    def ids(self, result: Any) -> list[Any]:
        return result.column("_id").to_pylist()

    def id_map(self, conn: Any, name: str) -> dict[Any, int]:
        t = conn.open_table(name).to_arrow(["row"], with_id=True)
        return dict(zip(t.column("_id").to_pylist(), t.column("row").to_pylist(), strict=True))

    def superfiles(self, conn: Any, name: str) -> int:
        return sum(1 for f in conn.open_table(name).snapshot().files if f.live_rows > 0)

    def files_opened(self, table: Any) -> int | None:
        return int(table.files_opened)

    def optimize(self, table: Any) -> None:
        table.optimize()

    def after_optimize(self, table: Any) -> None:
        del table  # the manifest already lists only the merged files

    def close(self, conn: Any) -> None:
        conn.close()

    # Diagnostics: the same searches on the table's current pinned snapshot, skipping the
    # per-query check for a newer manifest that ``Table.*_search`` makes on storage.

    def bm25_pinned(self, table: Any, query: str, k: int) -> Any:
        from quiver.supertable import search

        snap = table.snapshot(refresh=False)
        hits = search.bm25(snap, "summary", query, k, pool=getattr(table, "_search_pool", None))
        return search.materialize(snap, hits, [])

    def vector_pinned(self, table: Any, query: Any, k: int) -> Any:
        from quiver.supertable import search

        snap = table.snapshot(refresh=False)
        hits = search.vector(snap, "embedding", query, k,
                             pool=getattr(table, "_search_pool", None))
        return search.materialize(snap, hits, [])
