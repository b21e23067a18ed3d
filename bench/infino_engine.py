"""The ``infino`` side of the superfile benchmark: build, BM25 and vector search.

API level: infino 0.11's Python package exposes only tables (``Connection`` /
``Table``); there is no public single-superfile reader. The closest level to
one superfile is used instead:

* BM25 and the "superfile level" vector numbers: a ``memory://`` table filled
  by ONE ``append`` with the commit split raised above the data size
  (``supertable.superfile_buffer_split_mb``), so the append writes exactly one
  superfile and every search reads that one in-memory file.
* Tuned vector numbers: infino's probe width and rerank budget are not call
  arguments ("engine-decided"); they are calibrated by ``optimize()`` (the
  drain into its hidden vector index) towards ``vector.target_recall``. That
  needs a storage root, so these tables live on a local root under
  ``/dev/shm`` (tmpfs: still memory). ``target_recall`` is infino's knob.

infino reads its YAML configuration (``/etc/infino/config.yaml``,
``$XDG_CONFIG_HOME/infino/config.yaml``, ``./infino.yaml``) once per process,
the first time it needs it. ``configure`` therefore writes the benchmark's
configuration to a private directory and triggers that first load from there
before anything else touches infino; a different ``target_recall`` needs a
fresh process (see ``superfile_bench --infino-vector-worker``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.data import VectorData, recall_at_10

log = logging.getLogger(__name__)

DEFAULT_TARGET_RECALL = 0.99
# Above any input of this benchmark (the 100K x 384 float32 table is ~150 MiB).
ONE_SUPERFILE_SPLIT_MB = 8192

_configured: dict[str, Any] | None = None


def config_yaml(target_recall: float, split_mb: int | None = ONE_SUPERFILE_SPLIT_MB) -> str:
    """infino's YAML; ``split_mb=None`` keeps its own commit split (the table benchmark)."""
    # The HNSW register floor only matters for search_mode hnsw_ivf (off by default);
    # keeping it at or below the target silences infino's warning about the pair.
    floor = min(0.98, target_recall)
    split = ("supertable:\n"
             f"  superfile_buffer_split_mb: {split_mb}\n") if split_mb is not None else ""
    return (
        split
        + "vector:\n"
        f"  target_recall: {target_recall}\n"
        f"  hnsw_register_floor: {floor}\n"
        f"  flat_register_floor: {min(0.8, target_recall)}\n"
    )


@contextlib.contextmanager
def _private_config_dir(text: str) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="infino-bench-cfg-"))
    (tmp / "infino.yaml").write_text(text)
    (tmp / "xdg" / "infino").mkdir(parents=True)
    (tmp / "xdg" / "infino" / "config.yaml").write_text(text)
    old_cwd = os.getcwd()
    old_xdg = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp / "xdg")
    os.chdir(tmp)
    try:
        yield tmp
    finally:
        os.chdir(old_cwd)
        if old_xdg is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = old_xdg
        shutil.rmtree(tmp, ignore_errors=True)


def configure(target_recall: float | None = None,
              split_mb: int | None = ONE_SUPERFILE_SPLIT_MB) -> dict[str, Any]:
    """Loads infino's process-wide configuration; must run before any other infino call.

    ``None`` keeps whatever this process already loaded (the default when nothing was).
    ``split_mb`` is the commit split; ``None`` leaves infino's default in place.
    """
    global _configured
    if _configured is not None:
        if target_recall is not None and _configured["target_recall"] != target_recall:
            raise RuntimeError("infino reads its configuration once per process")
        if split_mb != _configured["split_mb"]:
            raise RuntimeError("infino reads its configuration once per process")
        return _configured
    import infino

    if target_recall is None:
        target_recall = DEFAULT_TARGET_RECALL
    text = config_yaml(target_recall, split_mb)
    with _private_config_dir(text):
        # The engine loads its configuration stack lazily, on the first table it
        # creates (not on connect), so a throwaway table triggers the load here.
        db = infino.connect("memory://")
        schema = pa.schema([pa.field("v", pa.list_(pa.float32(), 16), nullable=False)])
        db.create_table("config_probe", schema, infino.IndexSpec().vector("v", 16, "cosine"))
        db.drop_table("config_probe")
    _configured = {
        "target_recall": target_recall,
        "split_mb": split_mb,
        "yaml": text,
        "system_config_present": Path("/etc/infino/config.yaml").exists(),
        "version": infino.__version__,
    }
    return _configured


def _decimal_id_map(db: Any, table: str) -> dict[Any, int]:
    """Engine ``_id`` -> our ``row`` column (built once, outside every timed section)."""
    t = db.query_sql(f"SELECT _id, row FROM {table}")
    return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))


class InfinoBm25:
    """One ``memory://`` table (row, summary) with a BM25 index on ``summary``."""

    def __init__(self, table: pa.Table) -> None:
        import infino

        configure()
        self.schema = pa.schema([
            pa.field("row", pa.int64(), nullable=False),
            pa.field("summary", pa.large_utf8(), nullable=False),
        ])
        self.data = table.cast(self.schema)
        self._infino = infino
        self.db: Any = None
        self.table: Any = None
        self._ids: dict[Any, int] | None = None

    def build(self) -> float:
        """create_table + one append; returns seconds."""
        t0 = time.perf_counter()
        self.db = self._infino.connect("memory://")
        self.table = self.db.create_table(
            "summaries", self.schema, self._infino.IndexSpec().fts("summary")
        )
        self.table.append(self.data)
        return time.perf_counter() - t0

    def search(self, query: str, k: int = 10) -> Any:
        # No projection: the engine-native (_id, score) pair, nothing decoded.
        return self.table.bm25_search("summary", query, k)

    def rows(self, result: Any) -> np.ndarray:
        if self._ids is None:
            self._ids = _decimal_id_map(self.db, "summaries")
        return np.array([self._ids[i] for i in result.column("_id").to_pylist()], np.int64)

    def scores(self, result: Any) -> np.ndarray:
        return result.column("score").to_numpy()


class InfinoVectors:
    """A (row, embedding) table with a cosine vector index, on ``memory://`` or tmpfs."""

    def __init__(self, data: VectorData, root: str = "memory://") -> None:
        import infino

        configure()
        self._infino = infino
        self.data = data
        self.schema = pa.schema([
            pa.field("row", pa.int64(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), data.dim), nullable=False),
        ])
        self.arrow = data.arrow_table().cast(self.schema)
        self.root = root
        self._tmp: str | None = None
        self.db: Any = None
        self.table: Any = None
        self._ids: dict[Any, int] | None = None
        # infino takes a sequence of floats; converting is not part of a search.
        self.query_lists = [q.tolist() for q in data.queries]

    def build(self) -> float:
        """create_table + one append (one superfile); returns seconds."""
        root = self.root
        if root == "tmpfs":
            base = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self._tmp = tempfile.mkdtemp(prefix="infino-bench-", dir=base)
            root = self._tmp
        t0 = time.perf_counter()
        self.db = self._infino.connect(root)
        self.table = self.db.create_table(
            "vectors", self.schema,
            self._infino.IndexSpec().vector("embedding", self.data.dim, "cosine"),
        )
        self.table.append(self.arrow)
        return time.perf_counter() - t0

    def optimize(self) -> float:
        """The drain into infino's calibrated hidden vector index; returns seconds."""
        t0 = time.perf_counter()
        self.table.optimize()
        self._ids = None
        return time.perf_counter() - t0

    def search(self, qi: int, k: int = 10) -> Any:
        return self.table.vector_search("embedding", self.query_lists[qi], k)

    def rows(self, result: Any) -> np.ndarray:
        if self._ids is None:
            self._ids = _decimal_id_map(self.db, "vectors")
        return np.array([self._ids[i] for i in result.column("_id").to_pylist()], np.int64)

    def measure(self, warmup: int) -> dict[str, float]:
        """Recall@10 and p50 over every query, one call per query."""
        n = len(self.query_lists)
        for qi in range(min(warmup, n)):
            self.search(qi)
        lat = np.empty(n)
        results = []
        for qi in range(n):
            t0 = time.perf_counter()
            r = self.search(qi)
            lat[qi] = time.perf_counter() - t0
            results.append(r)
        rows = [self.rows(r) for r in results]
        return {
            "recall_at_10": recall_at_10(self.data, rows),
            "p50_ms": float(np.median(lat) * 1000),
            "p90_ms": float(np.percentile(lat, 90) * 1000),
        }

    def close(self) -> None:
        self.table = None
        self.db = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def drained_vector_run(data: VectorData, warmup: int) -> dict[str, Any]:
    """Build on tmpfs, optimize, measure: infino at the process's ``target_recall``."""
    eng = InfinoVectors(data, root="tmpfs")
    try:
        append_s = eng.build()
        optimize_s = eng.optimize()
        out = eng.measure(warmup)
    finally:
        eng.close()
    assert _configured is not None
    return {
        "target_recall": _configured["target_recall"],
        "append_s": append_s,
        "optimize_s": optimize_s,
        **out,
    }


class InfinoTables:
    """infino tables under one storage root, for the table benchmark.

    Every connection has a ``cache_dir``: without one, infino re-reads superfiles for
    each search even on a local root (about 7x slower warm vector search on local
    disk). A connection made with ``fresh_cache`` gets a new, empty cache dir (a cold
    start); the others share one.
    """

    engine = "infino"

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None,
                 cache_base: str | None = None) -> None:
        self.uri = uri
        self.storage_options = dict(storage_options) if storage_options else None
        self.cache_base = cache_base
        self._shared_cache: str | None = None

    def connect(self, fresh_cache: bool = False) -> Any:
        import infino

        if fresh_cache or self._shared_cache is None:
            cache = tempfile.mkdtemp(prefix="infino-cache-", dir=self.cache_base)
            if not fresh_cache:
                self._shared_cache = cache
        else:
            cache = self._shared_cache
        if self.storage_options is None:
            return infino.connect(self.uri, cache_dir=cache)
        return infino.connect(self.uri, storage_options=self.storage_options, cache_dir=cache)

    def create(self, conn: Any, name: str, schema: pa.Schema, kind: str) -> Any:
        import infino

        if kind == "bm25":
            spec = infino.IndexSpec().fts("summary")
        else:
            spec = infino.IndexSpec().vector("embedding", schema.field("embedding").type.list_size,
                                             "cosine")
        return conn.create_table(name, self.conform_schema(schema), spec)

    @staticmethod
    def conform_schema(schema: pa.Schema) -> pa.Schema:
        fields = []
        for f in schema:
            t = pa.large_utf8() if pa.types.is_string(f.type) else f.type
            if pa.types.is_fixed_size_list(f.type):
                t = pa.list_(f.type.value_type, f.type.list_size)
            fields.append(pa.field(f.name, t, nullable=False))
        return pa.schema(fields)

    def open(self, conn: Any, name: str) -> Any:
        return conn.open_table(name)

    def append(self, table: Any, data: pa.Table) -> None:
        table.append(data.cast(self.conform_schema(data.schema)))

    def bm25(self, table: Any, query: str, k: int, filter_: Any = None) -> Any:
        if filter_ is not None:
            raise ValueError("infino's bm25_search takes no row filter")
        return table.bm25_search("summary", query, k)

    def prepare_vector(self, vector: np.ndarray) -> Any:
        # infino takes a sequence of floats; converting is not part of a search.
        return vector.tolist()

    def vector(self, table: Any, query: Any, k: int) -> Any:
        return table.vector_search("embedding", query, k)

    def ids(self, result: Any) -> list[Any]:
        return result.column("_id").to_pylist()

    def id_map(self, conn: Any, name: str) -> dict[Any, int]:
        return _decimal_id_map(conn, name)

    def superfiles(self, conn: Any, name: str) -> int:
        # Counted from its storage by the caller (infino does not report it).
        raise NotImplementedError

    def files_opened(self, table: Any) -> int | None:
        return None

    def settle(self, table: Any, timeout_s: float = 120.0) -> None:
        del table, timeout_s

    def release(self, table: Any) -> None:
        del table

    def optimize(self, table: Any) -> None:
        table.optimize()

    def after_optimize(self, table: Any) -> None:
        # Replaced superfiles go at once, so counting the files on storage counts live ones.
        table.gc(0.0)

    def close(self, conn: Any) -> None:
        del conn
