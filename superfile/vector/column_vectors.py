"""Where a vector index's exact rerank gets its float32 vectors: the one stored copy.

A version-2 index blob holds codes only, so the exact distances of a shortlist (and
the brute-force scan of a small flat index) are computed from the vectors of the
file's own Parquet column. ``ColumnVectors`` hands them out by local row id, already
normalized for cosine exactly as the builder normalized them:

- over a lazy source, each call fetches only the Parquet pages that hold the rows
  (``RowFetcher.take``), unless it asks for most of the column (a flat scan of a small
  file): then the column is decoded whole once and kept;
- over resident bytes, the column is decoded whole on first use and kept;
- ``ColumnVectors.of_array`` wraps vectors already in memory (an index built on the fly).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from quiver.superfile.errors import CorruptFileError
from quiver.superfile.spec import Metric
from quiver.superfile.vector.build import _normalize


def _matrix(values: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """An (n, dim) float32 matrix of a fixed-size-list column, null rows left as they are."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not (pa.types.is_fixed_size_list(arr.type) and arr.type.list_size == dim):
        raise CorruptFileError(f"vector column has type {arr.type}; its index expects dim {dim}")
    n = len(arr)
    flat = arr.values.slice(arr.offset * dim, n * dim).to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(n, dim)


class ColumnVectors:
    """Float32 vectors of one column by local row id; thread-safe."""

    def __init__(
        self, metric: Metric, dim: int, *,
        take: Callable[[np.ndarray], pa.Array | pa.ChunkedArray] | None = None,
        whole: Callable[[], pa.Array | pa.ChunkedArray] | None = None,
        rows_total: int = 0,
    ) -> None:
        if take is None and whole is None:
            raise ValueError("give take (lazy), whole (resident) or both")
        self.metric = Metric.parse(metric)
        self.dim = dim
        self._take = take
        self._whole = whole
        self._rows_total = rows_total
        self._all: np.ndarray | None = None
        self._lock = threading.Lock()

    @classmethod
    def of_array(cls, metric: Metric, values: pa.Array | pa.ChunkedArray) -> ColumnVectors:
        typ = values.type
        dim = typ.list_size if pa.types.is_fixed_size_list(typ) else 0
        return cls(metric, dim, whole=lambda: values)

    def for_metric(self, metric: Metric) -> ColumnVectors:
        """This source, prepared for ``metric`` (the index's own metric decides)."""
        if Metric.parse(metric) is self.metric:
            return self
        return ColumnVectors(metric, self.dim, take=self._take, whole=self._whole,
                             rows_total=self._rows_total)

    def _prepare(self, mat: np.ndarray) -> np.ndarray:
        if self.metric is Metric.COSINE:
            return _normalize(mat)
        return np.ascontiguousarray(mat, dtype=np.float32)

    def _resident(self) -> np.ndarray:
        if self._all is None:
            with self._lock:
                if self._all is None:
                    # Without a take function the constructor required whole.
                    assert self._whole is not None
                    self._all = self._prepare(_matrix(self._whole(), self.dim))
        return self._all

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) float32 vectors of the given local row ids, in that order."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self._take is None or (self._whole is not None and (
                self._all is not None or 2 * len(ids) >= self._rows_total)):
            mat = self._resident()
            if int(ids.max()) >= len(mat):
                raise CorruptFileError("vector index names a row past the end of its column")
            if len(ids) == len(mat) and np.array_equal(ids, np.arange(len(mat))):
                return mat  # a flat scan of every row: no copy (callers only read it)
            return mat[ids]
        got = _matrix(self._take(ids), self.dim)
        if len(got) != len(ids):
            raise CorruptFileError(f"column returned {len(got)} of {len(ids)} vectors")
        return self._prepare(got)
