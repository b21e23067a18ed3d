"""The benchmark data sets, the timing helpers and the tie-aware recall measure."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# The project data folder sits beside the repository (../shared/data); QUIVER_DATA overrides.
DATA_DIR = Path(
    os.environ.get("QUIVER_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SUMMARIES = DATA_DIR / "pypi-summaries.parquet"
MINILM = DATA_DIR / "pypi-minilm"

BM25_QUERIES = (
    "python library",
    "fast json parser",
    "django rest framework",
    "machine learning",
    "async http client",
    "aws s3 storage",
    "command line tool",
    "data",
    "kubernetes operator helm",
    "pdf text extraction",
)


# Rows whose float64 score is this close to the 10th best count as tied with it.
TIE_EPS = 1e-9


def load_summaries(limit: int | None = None) -> pa.Table:
    """The ``summary`` column of the PyPI package list as a one-column table."""
    table = pq.read_table(SUMMARIES, columns=["summary"])
    if limit is not None:
        table = table.slice(0, limit)
    return table.combine_chunks()


@dataclass
class VectorData:
    """Corpus embeddings, query embeddings and the 10th-best true score of each query."""

    corpus: np.ndarray  # float32 (n, d), L2-normalised (stored as float16, upcast)
    queries: np.ndarray  # float32 (q, d)
    threshold10: np.ndarray  # float64 (q,): a row is a hit when its true score >= this

    @property
    def dim(self) -> int:
        return int(self.corpus.shape[1])

    def arrow_table(self) -> pa.Table:
        """``row`` int64 and ``embedding`` fixed_size_list<float32, d>."""
        n, d = self.corpus.shape
        flat = pa.array(self.corpus.reshape(-1), type=pa.float32())
        return pa.table({
            "row": pa.array(np.arange(n, dtype=np.int64)),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
        })


def load_vectors(limit: int | None = None, num_queries: int | None = None) -> VectorData:
    """The MiniLM embeddings; with ``limit`` the true top-10 is recomputed on the prefix."""
    corpus = np.load(MINILM / "embeddings.f16.npy").astype(np.float32)
    queries = np.load(MINILM / "query_embeddings.f32.npy").astype(np.float32)
    if num_queries is not None:
        queries = queries[:num_queries]
    if limit is None or limit >= len(corpus):
        gt = np.load(MINILM / "groundtruth_top100.npy")[: len(queries)]
        thr = true_scores(corpus, queries, np.arange(len(queries)), gt[:, 9])
    else:
        corpus = np.ascontiguousarray(corpus[:limit])
        thr = exact_threshold10(corpus, queries)
    return VectorData(corpus=corpus, queries=queries, threshold10=thr)


def true_scores(corpus: np.ndarray, queries: np.ndarray, qi: np.ndarray, rows: np.ndarray
                ) -> np.ndarray:
    """Inner products of query ``qi[j]`` with row ``rows[j]`` in float64.

    Thresholds and the scores compared with them go through this one function, so
    rounding cannot make a row tied with the 10th best fall below it.
    """
    a = corpus[rows].astype(np.float64)
    b = queries[qi].astype(np.float64)
    return np.einsum("nd,nd->n", a, b)


def exact_threshold10(corpus: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The 10th-best inner product of each query over ``corpus`` (brute force)."""
    scores = queries @ corpus.T
    # float32 picks a generous candidate set; float64 rescoring decides the 10th.
    cand = np.argpartition(-scores, 32, axis=1)[:, :32]
    qi = np.repeat(np.arange(len(queries)), cand.shape[1])
    exact = true_scores(corpus, queries, qi, cand.reshape(-1)).reshape(cand.shape)
    return -np.sort(-exact, axis=1)[:, 9]


def recall_at_10(data: VectorData, results: list[np.ndarray]) -> float:
    """Tie-aware recall@10: a returned row is a hit when its true score reaches the 10th."""
    hits = 0
    for i, rows in enumerate(results):
        rows = np.asarray(rows, dtype=np.int64)[:10]
        rows = rows[rows >= 0]
        if len(rows):
            scores = true_scores(data.corpus, data.queries, np.full(len(rows), i), rows)
            hits += int(np.count_nonzero(scores >= data.threshold10[i] - TIE_EPS))
    return hits / (10 * len(results))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def p50_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    """Median wall time of ``runs`` calls after ``warmup`` untimed ones, in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - t0
    return float(np.median(samples) * 1000.0)


def geomean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.exp(np.log(arr).mean()))
