"""Shared builders for superfile tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from quiver.superfile.spec import Metric
from quiver.superfile.vector import VectorIndexParams, build_vector_index
from quiver.superfile.vector.column_vectors import ColumnVectors

# The column each test blob was built from: a v2 blob reranks from its column's vectors.
_COLUMNS: dict[bytes, ColumnVectors] = {}


def vectors(arr: np.ndarray, nulls: np.ndarray | None = None) -> pa.FixedSizeListArray:
    """A fixed_size_list<float32, d> column from a (n, d) array, optionally with null rows."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    mask = None if nulls is None else pa.array(nulls, pa.bool_())
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), arr.shape[1], mask=mask)


@pytest.fixture
def small_corpus() -> pa.Table:
    rng = np.random.default_rng(3)
    words = ["rust", "async", "python", "json", "fast", "parser", "http", "client", "data",
             "tool", "Über", "naïve", "数据", "ĳssel"]
    n = 600
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 8))) for _ in range(n)]
    texts[5] = ""
    texts[7] = None
    texts[9] = "Exact Title: Rust, async!"
    texts[11] = "exact title rust async"
    emb = rng.standard_normal((n, 16)).astype(np.float32)
    return pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "body": pa.array(texts, pa.string()),
        "year": pa.array(rng.integers(2000, 2025, size=n).astype(np.int32)),
        "embedding": vectors(emb),
    })


def build_index(col: pa.Array | pa.ChunkedArray, metric: Metric | str,
                params: VectorIndexParams | None = None) -> tuple[bytes, object]:
    """``build_vector_index``, remembering the column the blob's rerank reads from."""
    blob, summary = build_vector_index(col, metric, params)
    _COLUMNS[blob] = ColumnVectors.of_array(Metric.parse(metric), col)
    return blob, summary


def column_vectors(blob: bytes) -> ColumnVectors:
    """The column source of a blob made by ``build_index``."""
    return _COLUMNS[blob]
