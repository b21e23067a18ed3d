"""Behaviour of the vector kNN index: recall, exactness, filtering, errors, lazy I/O, summary."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pyroaring import BitMap

from quiver.superfile.errors import IndexSpecError, QueryError
from quiver.superfile.ranges import BytesRangeReader, CountingRangeReader
from quiver.superfile.spec import Metric
from quiver.superfile.vector import (
    VectorIndexParams,
    VectorIndexReader,
    VectorSummary,
)
from quiver.superfile.vector.column_vectors import ColumnVectors
from quiver.superfile.vector.reader import FILTER_EXACT_MAX
from tests.superfile.conftest import build_index, column_vectors, vectors

# The project data folder sits beside the repository (../shared/data).
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "pypi-minilm"
METRICS = [Metric.COSINE, Metric.L2, Metric.INNER_PRODUCT]


def brute_force(x: np.ndarray, q: np.ndarray, metric: Metric, k: int,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric is Metric.COSINE:
        d = 1 - (x64 @ q64) / (np.linalg.norm(x64, axis=1) * np.linalg.norm(q64))
    elif metric is Metric.L2:
        d = np.linalg.norm(x64 - q64, axis=1)
    else:
        d = -(x64 @ q64)
    ids = np.arange(len(x)) if rows is None else rows
    d = d[ids]
    order = np.lexsort((ids, d))[:k]
    return ids[order], d[order]


def open_index(blob: bytes, **kw: object) -> VectorIndexReader:
    return VectorIndexReader.open(BytesRangeReader(blob), vectors=column_vectors(blob), **kw)


def open_both(blob: bytes) -> list[VectorIndexReader]:
    return [open_index(blob, verify=True), open_index(blob)]


def clustered(n: int, dim: int, centers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32) * 4
    return (c[rng.integers(0, centers, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def recall_at_10(found: list[np.ndarray], x: np.ndarray, qs: np.ndarray, gt_score: np.ndarray,
                 similarity: bool) -> float:
    hits = 0
    for i, ids in enumerate(found):
        s = x[ids] @ qs[i] if similarity else -np.linalg.norm(x[ids] - qs[i], axis=1)
        hits += min(10, int((s >= gt_score[i] - 1e-5).sum()))
    return hits / (10 * len(found))


@pytest.fixture(scope="module")
def minilm_20k() -> tuple[np.ndarray, np.ndarray, bytes]:
    if not (DATA / "embeddings.f16.npy").exists():
        pytest.skip("real embeddings not available")
    x = np.load(DATA / "embeddings.f16.npy", mmap_mode="r")[:20000].astype(np.float32)
    qs = np.load(DATA / "query_embeddings.f32.npy")
    blob, _ = build_index(vectors(x), Metric.COSINE)
    return x, qs, blob


def test_default_knobs_reach_recall_095_on_real_minilm_subset(minilm_20k):
    x, qs, blob = minilm_20k
    sims = qs @ x.T
    tenth = -np.sort(-sims, axis=1)[:, 9]
    eager, lazy = open_both(blob)
    assert not eager.is_flat and eager.nlist > 1
    found = [eager.search(q, 10)[0] for q in qs]
    assert recall_at_10(found, x, qs, tenth, similarity=True) >= 0.95
    few = slice(0, 40)
    lazy_found = [lazy.search(q, 10)[0] for q in qs[few]]
    assert recall_at_10(lazy_found, x, qs[few], tenth[few], similarity=True) >= 0.95


def test_default_knobs_reach_recall_095_on_clustered_synthetic_data():
    x = clustered(20000, 48, 60, seed=1)
    qs = clustered(100, 48, 60, seed=2)
    blob, _ = build_index(vectors(x), Metric.L2)
    reader = open_index(blob, verify=True)
    d2 = (x * x).sum(1)[None, :] - 2 * qs @ x.T + (qs * qs).sum(1)[:, None]
    d = np.sqrt(np.maximum(d2, 0))
    tenth = -np.sort(d, axis=1)[:, 9]
    found = [reader.search(q, 10)[0] for q in qs]
    assert recall_at_10(found, x, qs, tenth, similarity=False) >= 0.95


@pytest.mark.parametrize("metric", METRICS)
def test_flat_index_below_threshold_returns_exact_neighbours_and_distances(metric):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1500, 24)).astype(np.float32)
    blob, _ = build_index(vectors(x), metric)
    for reader in open_both(blob):
        assert reader.is_flat
        for _ in range(5):
            q = rng.standard_normal(24).astype(np.float32)
            ids, dist = reader.search(q, 15)
            want_ids, want_d = brute_force(x, q, metric, 15)
            assert ids.dtype == np.uint32 and dist.dtype == np.float32
            assert ids.tolist() == want_ids.tolist()
            np.testing.assert_allclose(dist, want_d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_ivf_distances_are_exact_not_quantized(metric):
    rng = np.random.default_rng(6)
    x = clustered(6000, 32, 20, seed=6)
    blob, _ = build_index(vectors(x), metric, VectorIndexParams(flat_threshold=512))
    for reader in open_both(blob):
        assert not reader.is_flat
        q = x[17] + rng.standard_normal(32).astype(np.float32) * 0.1
        ids, dist = reader.search(q, 20, nprobe=reader.nlist, rerank=6000)
        want_ids, want_d = brute_force(x, q, metric, 20)
        assert ids.tolist() == want_ids.tolist()
        np.testing.assert_allclose(dist, want_d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("share", [0.01, 0.3, 0.9])
@pytest.mark.parametrize("flat_threshold", [4096, 256])
def test_filtered_knn_equals_exact_filtered_search(metric, share, flat_threshold):
    rng = np.random.default_rng(int(share * 100) + flat_threshold)
    n = 3000
    x = clustered(n, 16, 12, seed=7)
    params = VectorIndexParams(flat_threshold=flat_threshold)
    blob, _ = build_index(vectors(x), metric, params)
    allowed = np.flatnonzero(rng.random(n) < share)
    allow = BitMap(allowed.tolist())
    for reader in open_both(blob):
        for _ in range(3):
            q = rng.standard_normal(16).astype(np.float32) * 3
            ids, dist = reader.search(q, 10, nprobe=reader.nlist, rerank=n, allow=allow)
            want_ids, want_d = brute_force(x, q, metric, 10, rows=allowed)
            assert ids.tolist() == want_ids.tolist()
            np.testing.assert_allclose(dist, want_d, rtol=1e-5, atol=1e-5)


def test_filtered_search_with_default_knobs_widens_probe_until_k_allowed_rows():
    x = clustered(12000, 16, 30, seed=8)
    blob, _ = build_index(vectors(x), Metric.L2, VectorIndexParams(flat_threshold=256))
    # Allowed rows all sit far from the query, in cells the default probe would skip.
    far = np.argsort(np.linalg.norm(x - x[0], axis=1))[-(FILTER_EXACT_MAX + 500):]
    allow = BitMap(far.tolist())
    for reader in open_both(blob):
        ids, _ = reader.search(x[0], 10, nprobe=1, allow=allow)
        assert len(ids) == 10
        assert set(ids.tolist()) <= set(far.tolist())


def test_allow_set_ids_outside_the_column_or_null_are_ignored():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    nulls = np.zeros(50, bool)
    nulls[[3, 4]] = True
    blob, _ = build_index(vectors(x, nulls), Metric.L2)
    for reader in open_both(blob):
        ids, _ = reader.search(x[3], 10, allow=BitMap([3, 4, 5, 10_000]))
        assert ids.tolist() == [5]
        assert len(reader.search(x[3], 10, allow=BitMap())[0]) == 0


def test_null_vectors_are_never_returned_and_not_counted():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((5000, 8)).astype(np.float32)
    nulls = rng.random(5000) < 0.2
    blob, summary = build_index(
        vectors(x, nulls), Metric.COSINE, VectorIndexParams(flat_threshold=1000)
    )
    assert summary.count == int((~nulls).sum())
    for reader in open_both(blob):
        assert reader.count == summary.count
        ids, _ = reader.search(x[0], 5000, nprobe=reader.nlist)
        assert len(ids) == summary.count
        assert not nulls[ids].any()


def test_fewer_than_k_rows_returns_all_rows():
    x = np.eye(3, dtype=np.float32)
    blob, _ = build_index(pa.chunked_array([vectors(x[:2]), vectors(x[2:])]), Metric.L2)
    for reader in open_both(blob):
        ids, dist = reader.search([1, 0, 0], 10)
        assert ids.tolist() == [0, 1, 2]
        np.testing.assert_allclose(dist, [0, np.sqrt(2), np.sqrt(2)], rtol=1e-6)


def test_zero_vector_under_cosine_is_indexed_at_distance_one():
    x = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32)
    blob, summary = build_index(vectors(x), Metric.COSINE)
    assert summary.count == 3
    for reader in open_both(blob):
        ids, dist = reader.search([1, 0], 3)
        assert ids.tolist() == [1, 0, 2]
        np.testing.assert_allclose(dist, [0, 1, 1], atol=1e-6)


def test_empty_or_all_null_column_builds_an_index_that_returns_nothing():
    empty = pa.chunked_array([], pa.list_(pa.float32(), 4))
    nulls = vectors(np.ones((3, 4)), np.array([True, True, True]))
    for col in (empty, nulls):
        blob, summary = build_index(col, Metric.L2)
        assert summary.count == 0
        for reader in open_both(blob):
            ids, dist = reader.search(np.ones(4), 5)
            assert len(ids) == 0 and len(dist) == 0


def test_wrong_dimension_or_non_finite_query_is_a_query_error():
    x = np.random.default_rng(11).standard_normal((100, 8)).astype(np.float32)
    blob, _ = build_index(vectors(x), Metric.COSINE)
    for reader in open_both(blob):
        with pytest.raises(QueryError, match="expected 8"):
            reader.search(np.ones(7), 3)
        with pytest.raises(QueryError, match="NaN"):
            reader.search(np.array([np.nan] + [1.0] * 7), 3)
        with pytest.raises(QueryError, match="NaN or infinite"):
            reader.search(np.array([np.inf] + [1.0] * 7), 3)
        with pytest.raises(QueryError, match="zero query"):
            reader.search(np.zeros(8), 3)
        with pytest.raises(QueryError):
            reader.search(np.ones(8), -1)


def test_nan_in_build_input_is_an_index_spec_error_naming_the_row():
    x = np.ones((20, 4), dtype=np.float32)
    x[13, 2] = np.nan
    with pytest.raises(IndexSpecError, match="row 13"):
        build_index(vectors(x), Metric.L2)
    x[13, 2] = np.inf
    with pytest.raises(IndexSpecError, match="row 13"):
        build_index(vectors(x), Metric.L2)


def test_nan_in_a_null_row_is_ignored_by_build():
    x = np.ones((5, 4), dtype=np.float32)
    x[2] = np.nan
    _, summary = build_index(vectors(x, np.array([0, 0, 1, 0, 0], bool)), Metric.L2)
    assert summary.count == 4


def test_non_vector_column_is_an_index_spec_error():
    with pytest.raises(IndexSpecError, match="fixed-size list"):
        build_index(pa.array([1, 2, 3]), Metric.L2)


def test_lazy_open_is_one_read_and_a_query_makes_few_reads_of_what_it_needs():
    x = clustered(40000, 32, 40, seed=12)
    blob, _ = build_index(vectors(x), Metric.COSINE)
    counting = CountingRangeReader(BytesRangeReader(blob))
    reader = VectorIndexReader.open(counting, vectors=column_vectors(blob))
    assert counting.reads == 1
    assert counting.bytes_read <= 64 * 1024
    counting.reset()
    # First query: coarse centroids with the (small) blocks section; the shortlist's
    # vectors come from the column, not the blob.
    ids, _ = reader.search(x[5], 10)
    c_off, _ = reader._h.sections["centroids"]
    b_off, b_len = reader._h.sections["blocks"]
    assert counting.ranges[0] == (c_off, b_off + b_len - c_off)
    assert counting.reads <= 3, counting.ranges
    assert 5 in ids.tolist()
    counting.reset()
    reader.search(x[6], 10)
    # Probed cells only: close neighbours merge, longer runs of unprobed cells are skipped.
    assert counting.reads <= 8, counting.ranges
    assert counting.bytes_read < b_len
    counting.reset()
    reader.search(x[6], 10, nprobe=2)
    small = counting.bytes_read
    # Two probed cells: their blocks, not the section.
    in_blocks = sum(
        max(0, min(o + n, b_off + b_len) - max(o, b_off)) for o, n in counting.ranges
    )
    assert in_blocks < 0.1 * b_len
    counting.reset()
    reader.search(x[6], 10, nprobe=reader.nlist)
    assert small < counting.bytes_read / 2


class BatchingReader(CountingRangeReader):
    """A source that also serves several ranges per call, recording each batch."""

    def __init__(self, inner: BytesRangeReader) -> None:
        super().__init__(inner)
        self.batches: list[list[tuple[int, int]]] = []

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[memoryview]:
        self.batches.append(list(ranges))
        return [self.read(o, n) for o, n in ranges]


class CountingColumn:
    """A lazy column source that records which rows each rerank fetch asked for."""

    def __init__(self, col: pa.Array, metric: Metric) -> None:
        self.calls: list[list[int]] = []
        self._col = col
        self.source = ColumnVectors(metric, col.type.list_size, take=self._take)

    def _take(self, ids: np.ndarray) -> pa.Array:
        self.calls.append(np.asarray(ids).tolist())
        return self._col.take(pa.array(ids))


def test_lazy_reads_of_a_large_blob_skip_far_gaps_and_batch_the_rest():
    x = clustered(60000, 64, 60, seed=15)
    col = vectors(x)
    blob, _ = build_index(col, Metric.L2)
    source = BatchingReader(BytesRangeReader(blob))
    column = CountingColumn(col, Metric.L2)
    lazy = VectorIndexReader.open(source, vectors=column.source)
    eager = open_index(blob, verify=True)
    assert lazy.codes_name == "pq"
    lazy.search(x[0], 10)  # loads the centroids
    for i in (1, 2, 3):
        source.reset()
        column.calls.clear()
        got = lazy.search(x[i], 10, nprobe=1, rerank=200)
        # One probed cell: one block read; the rerank reads the column, not the blob.
        assert source.reads == 1, source.ranges
        assert source.bytes_read < 0.1 * len(blob)
        assert len(column.calls) == 1 and len(column.calls[0]) <= 200
        source.reset()
        source.batches.clear()
        got_all = lazy.search(x[i] + 0.5, 10, rerank=400)
        assert source.bytes_read < len(blob)
        assert all(len(b) > 1 for b in source.batches)
        want_all = eager.search(x[i] + 0.5, 10, rerank=400)
        assert len(set(got_all[0].tolist()) & set(want_all[0].tolist())) >= 9
        assert got[0][0] == i


def test_lazy_filtered_exact_search_reads_only_the_allowed_rows_from_the_column():
    x = clustered(20000, 16, 20, seed=16)
    col = vectors(x)
    blob, _ = build_index(col, Metric.L2)
    counting = CountingRangeReader(BytesRangeReader(blob))
    column = CountingColumn(col, Metric.L2)
    lazy = VectorIndexReader.open(counting, vectors=column.source)
    allow = BitMap(range(0, 20000, 23))
    lazy.search(x[0], 5, allow=allow)  # loads the position map
    counting.reset()
    column.calls.clear()
    ids, dist = lazy.search(x[46], 5, allow=allow)
    assert counting.reads == 0, counting.ranges
    assert column.calls == [sorted(allow)]
    want_ids, want_d = brute_force(x, x[46], Metric.L2, 5, np.array(sorted(allow)))
    assert ids.tolist() == want_ids.tolist()
    assert np.allclose(dist, want_d, atol=1e-4)


def test_eager_and_lazy_readers_agree():
    x = clustered(10000, 16, 25, seed=13)
    blob, _ = build_index(vectors(x), Metric.INNER_PRODUCT)
    eager, lazy = open_both(blob)
    rng = np.random.default_rng(13)
    for _ in range(5):
        q = rng.standard_normal(16).astype(np.float32)
        a, b = eager.search(q, 10), lazy.search(q, 10)
        # Both rank the same probed cells; SQ8 shortlists may differ only at the margin.
        assert len(set(a[0].tolist()) & set(b[0].tolist())) >= 9


def test_concurrent_searches_on_one_lazy_reader_match_sequential_results():
    x = clustered(8000, 16, 20, seed=14)
    blob, _ = build_index(vectors(x), Metric.L2)
    reader = open_index(blob)
    qs = x[:32] + 0.05
    expected = [open_index(blob).search(q, 5)[0].tolist() for q in qs]
    got: dict[int, list[int]] = {}

    def work(i: int) -> None:
        got[i] = reader.search(qs[i], 5)[0].tolist()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(qs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(qs))] == expected


def test_search_batch_pads_missing_results():
    x = np.random.default_rng(15).standard_normal((7, 4)).astype(np.float32)
    blob, _ = build_index(vectors(x), Metric.L2)
    reader = open_index(blob, verify=True)
    ids, dist = reader.search_batch(x[:3], 10)
    assert ids.shape == (3, 10) and dist.shape == (3, 10)
    assert (ids[:, 7:] == -1).all() and np.isinf(dist[:, 7:]).all()
    assert ids[:, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("metric", METRICS)
def test_summary_centroid_and_radius_match_numpy(metric):
    x = clustered(6000, 12, 10, seed=16)
    nulls = np.zeros(6000, bool)
    nulls[::7] = True
    blob, summary = build_index(
        vectors(x, nulls), metric, VectorIndexParams(flat_threshold=1000)
    )
    kept = x[~nulls].astype(np.float64)
    if metric is Metric.COSINE:
        kept /= np.linalg.norm(kept, axis=1, keepdims=True)
    centroid = kept.mean(axis=0)
    np.testing.assert_allclose(summary.centroid, centroid, rtol=1e-5, atol=1e-6)
    radius = np.linalg.norm(kept - summary.centroid, axis=1).max()
    assert summary.radius == pytest.approx(radius, rel=1e-6)
    assert summary.count == len(kept) == int(summary.cluster_counts.sum())
    assert summary.cluster_centroids.shape == (len(summary.cluster_counts), 12)
    reader = open_index(blob)
    assert reader.summary == summary


def test_summary_json_round_trip_is_exact():
    x = clustered(5000, 8, 6, seed=17)
    params = VectorIndexParams(flat_threshold=100)
    _, summary = build_index(vectors(x), Metric.COSINE, params)
    text = json.dumps(summary.to_json())
    back = VectorSummary.from_json(json.loads(text))
    assert back == summary
    assert back.metric is Metric.COSINE


def test_cells_are_laid_out_with_neighbouring_cells_close_together():
    x = clustered(20000, 16, 30, seed=17)
    _, summary = build_index(vectors(x), Metric.L2)
    cent = summary.cluster_centroids.astype(np.float64)
    step = np.linalg.norm(np.diff(cent, axis=0), axis=1).mean()
    shuffled = cent[np.random.default_rng(17).permutation(len(cent))]
    random_step = np.linalg.norm(np.diff(shuffled, axis=0), axis=1).mean()
    assert step < 0.6 * random_step, (step, random_step)
