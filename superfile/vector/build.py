"""Builds the vector (kNN) index blob of one column: IVF coarse cells plus compact codes.

The blob holds no float32 copy of the vectors (format v2): the exact rerank reads
them from the Parquet column they were written to.

Rules the reader relies on:

- Row ``i`` of the column is local id ``i``. Null rows are not indexed.
- Cosine search works on L2-normalized vectors (codes are computed from them, the
  reader normalizes what it fetches from the column the same way); a zero vector
  stays zero, so its cosine distance to any query is exactly 1.
- Below ``flat_threshold`` vectors the index is one cell without codes: search
  is exact over the column's vectors.
- Codes: ``quantizer="auto"`` picks SQ8 (4x smaller than float32) below
  ``pq_min_rows`` vectors and PQ above (``dim / PQ_SUBVECTOR_DIM`` bytes per vector,
  16x smaller at 4 dimensions per byte); PQ codes encode the residual to the cell
  centroid.
- Cells come from faiss k-means on a sample; vectors are assigned with the same
  rule the reader probes with (L2 for cosine and l2, inner product for
  inner_product).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
from numba import njit

from quiver.superfile.errors import IndexSpecError
from quiver.superfile.spec import VECTOR_CODES, VECTOR_TYPES_TEXT, Metric
from quiver.superfile.vector import format as fmt
from quiver.superfile.vector.summary import VectorSummary

log = logging.getLogger(__name__)

# Components beyond this magnitude would overflow float32 squared norms.
MAX_ABS_COMPONENT = 1e16


@dataclass(frozen=True)
class VectorIndexParams:
    """Build knobs. ``nlist=None`` picks ``round(NLIST_PER_SQRT * sqrt(count))`` cells;
    ``quantizer`` is ``auto``, ``sq8`` or ``pq``."""

    flat_threshold: int = 4096
    nlist: int | None = None
    quantizer: str = "auto"
    pq_min_rows: int = 16384
    train_sample: int = 65536
    kmeans_iters: int = 12
    seed: int = 0


# Fewer, larger cells than the usual 4 * sqrt(n): sentence-embedding neighbours spread
# over many cells, so the default probe covers a share of them, and the centroids a cold
# query must read first shrink with the cell count (100K x 384: 0.5 MB instead of 1.9 MB).
NLIST_PER_SQRT = 2.0
# Dimensions per PQ byte. 4 keeps recall@10 with an exact rerank of 64 at the level of
# SQ8 on MiniLM embeddings; 8 halves the codes but needs a shortlist about 3x longer.
PQ_SUBVECTOR_DIM = 4
CODE_CHOICES = VECTOR_CODES
# PQ k-means needs a few points per codebook entry; below this SQ8 is used instead.
PQ_MIN_TRAIN = 4 * fmt.PQ_CENTROIDS
PQ_TRAIN_SAMPLE = 32 * fmt.PQ_CENTROIDS
PQ_TRAIN_ITERS = 8
# faiss k-means wants a few dozen training points per cell.
MIN_POINTS_PER_CELL = 32


def auto_nlist(count: int) -> int:
    return max(1, min(round(NLIST_PER_SQRT * math.sqrt(count)), count // MIN_POINTS_PER_CELL))


def pq_subquantizers(dim: int) -> int | None:
    """Bytes per PQ code for ``dim``: the most sub-vectors of at least ``PQ_SUBVECTOR_DIM``
    dimensions that divide ``dim``; None when no split fits (PQ then falls back to SQ8)."""
    for sub in range(PQ_SUBVECTOR_DIM, min(dim, 4 * PQ_SUBVECTOR_DIM) + 1):
        if dim % sub == 0:
            return dim // sub
    return None


def _pq_code_bytes(dim: int) -> int:
    """``pq_subquantizers`` for a dimension PQ was chosen for (``choose_quantizer`` picks PQ
    only when a split fits)."""
    m = pq_subquantizers(dim)
    assert m is not None, f"no PQ split fits dimension {dim}"
    return m


def choose_quantizer(name: str, count: int, dim: int, pq_min_rows: int) -> int:
    """The code kind for ``count`` vectors: ``auto`` is SQ8 below ``pq_min_rows``, else PQ."""
    if name == "auto":
        name = "pq" if count >= pq_min_rows else "sq8"
    if name == "pq" and (pq_subquantizers(dim) is None or count < PQ_MIN_TRAIN):
        name = "sq8"
    return fmt.QUANTIZERS[name]


def build_vector_index(
    vectors: pa.FixedSizeListArray | pa.ChunkedArray,
    metric: Metric,
    params: VectorIndexParams | None = None,
) -> tuple[bytes, VectorSummary]:
    """Builds the blob for one vector column and the summary for the manifest."""
    params = params or VectorIndexParams()
    metric = Metric.parse(metric)
    if params.quantizer not in CODE_CHOICES:
        raise IndexSpecError(
            f"unknown vector codes {params.quantizer!r}: use one of {', '.join(CODE_CHOICES)}"
        )
    t0 = time.perf_counter()
    x, rows, nrows, dim = _matrix(vectors)
    if metric is Metric.COSINE:
        x = _normalize(x)
    count = len(x)
    if count > fmt.NO_POSITION - 1 or nrows > fmt.NO_POSITION:
        raise IndexSpecError(f"a vector index holds at most {fmt.NO_POSITION - 1} rows")

    if count == 0:
        nlist, quant, centroids = 0, fmt.QUANT_FLAT, np.zeros((0, dim), np.float32)
        assign = np.zeros(0, np.int64)
        trained = np.zeros(0, np.float32)
    elif count < max(params.flat_threshold, 1) or (params.nlist is not None and params.nlist <= 1):
        nlist, quant = 1, fmt.QUANT_FLAT
        centroids = _mean(x)[None, :]
        assign = np.zeros(count, np.int64)
        trained = np.zeros(0, np.float32)
    else:
        nlist = params.nlist if params.nlist is not None else auto_nlist(count)
        nlist = max(1, min(int(nlist), count))
        quant = choose_quantizer(params.quantizer, count, dim, params.pq_min_rows)
        rng = np.random.default_rng(params.seed)
        sample_rows = None if count <= params.train_sample else np.sort(
            rng.choice(count, params.train_sample, replace=False)
        )
        sample = x if sample_rows is None else x[sample_rows]
        centroids = _kmeans(sample, nlist, params)
        centroids = centroids[_locality_order(centroids)]
        assign = _assign(x, centroids, metric)
        if quant == fmt.QUANT_PQ:
            sample_assign = assign if sample_rows is None else assign[sample_rows]
            residuals = sample - centroids[sample_assign]
            if len(residuals) > PQ_TRAIN_SAMPLE:
                # Low-dimensional sub-spaces need few points per code; training dominates
                # the build otherwise.
                residuals = residuals[rng.choice(len(residuals), PQ_TRAIN_SAMPLE, replace=False)]
            pq = faiss.ProductQuantizer(dim, _pq_code_bytes(dim), 8)
            pq.verbose = False
            pq.cp.niter = PQ_TRAIN_ITERS
            pq.cp.seed = params.seed
            pq.train(np.ascontiguousarray(residuals))
            trained = faiss.vector_to_array(pq.centroids).astype(np.float32)
        else:
            sq = faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit)
            sq.train(sample)
            trained = faiss.vector_to_array(sq.trained).astype(np.float32)

    counts = np.bincount(assign, minlength=nlist).astype(np.int64)
    if nlist > 1:
        order = np.argsort(assign, kind="stable")
        xs = np.ascontiguousarray(x[order])
        ids = rows[order].astype(np.uint32)
    else:
        # One cell keeps row order: no permutation, no copy.
        xs = np.ascontiguousarray(x)
        ids = rows.astype(np.uint32)
    if quant == fmt.QUANT_SQ8:
        sq = faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit)
        faiss.copy_array_to_vector(trained, sq.trained)
        codes = sq.compute_codes(xs)
    elif quant == fmt.QUANT_PQ:
        pq = faiss.ProductQuantizer(dim, _pq_code_bytes(dim), 8)
        faiss.copy_array_to_vector(trained, pq.centroids)
        cell = np.repeat(np.arange(nlist), counts)
        codes = np.empty((count, pq.code_size), np.uint8)
        step = 16384  # bounds the residual temporary
        for lo in range(0, count, step):
            part = xs[lo : lo + step] - centroids[cell[lo : lo + step]]
            codes[lo : lo + step] = pq.compute_codes(np.ascontiguousarray(part))
    else:
        codes = np.zeros((count, 0), np.uint8)

    # A flat index's one cell centroid is already the mean of every vector.
    flat_mean = quant == fmt.QUANT_FLAT and nlist == 1
    centroid = centroids[0] if flat_mean else _mean(x) if count else np.zeros(dim, np.float32)
    radius = _radius(x, centroid)
    blob = _assemble(
        metric, quant, dim, nrows, centroids, counts, ids, codes, trained, centroid, radius
    )
    summary = VectorSummary(
        metric=metric, dim=dim, count=count, centroid=centroid, radius=radius,
        cluster_centroids=centroids.astype(np.float32), cluster_counts=counts,
    )
    log.debug(
        "vector index: %d/%d rows, dim %d, %d cells, %d bytes in %.2fs",
        count, nrows, dim, nlist, len(blob), time.perf_counter() - t0,
    )
    return blob, summary


def _matrix(vectors: pa.FixedSizeListArray | pa.ChunkedArray) -> tuple[
    np.ndarray, np.ndarray, int, int
]:
    """The non-null rows as a float32 matrix, their row ids, the row count and the dim."""
    if isinstance(vectors, pa.ChunkedArray):
        typ = vectors.type
        arr = vectors.combine_chunks() if vectors.num_chunks else pa.array([], typ)
    elif isinstance(vectors, pa.Array):
        typ, arr = vectors.type, vectors
    else:
        raise IndexSpecError(f"a vector index needs an Arrow array, got {type(vectors).__name__}")
    if not (pa.types.is_fixed_size_list(typ) and pa.types.is_floating(typ.value_type)):
        raise IndexSpecError(f"{VECTOR_TYPES_TEXT}; got {typ}")
    dim = typ.list_size
    if dim <= 0 or dim > 65536:
        raise IndexSpecError(f"vector dimension {dim} is outside 1..65536")
    n = len(arr)
    values = arr.values.slice(arr.offset * dim, n * dim)
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    mat = flat.reshape(n, dim)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(valid)
        x = mat[rows]
    else:
        # A read-only view of the Arrow buffer: every later step writes to new arrays.
        rows = np.arange(n)
        x = mat
    if len(x):
        bad, finite = _first_bad_row(x, MAX_ABS_COMPONENT)
        if bad >= 0 and not finite:
            raise IndexSpecError(
                f"vector at row {int(rows[bad])} has a NaN, infinite or null component"
            )
        if bad >= 0:
            raise IndexSpecError(
                f"vector at row {int(rows[bad])} has a component beyond ±{MAX_ABS_COMPONENT:g}"
            )
    return x, rows, n, dim


@njit(cache=True)
def _first_bad_row(x: np.ndarray, limit: float) -> tuple[int, bool]:
    """The first row with a non-finite component (then False) or one beyond ``limit``
    (then True), in row order; (-1, True) when every row is usable."""
    n, dim = x.shape
    for i in range(n):
        for j in range(dim):
            v = x[i, j]
            if not np.isfinite(v):
                return i, False
            if abs(v) > limit:
                return i, True
    return -1, True


def _mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0, dtype=np.float64).astype(np.float32)


@njit(cache=True)
def _normalize(x: np.ndarray) -> np.ndarray:
    """Unit rows (float64 norm, float32 result); zero rows stay zero."""
    n, dim = x.shape
    out = np.empty((n, dim), np.float32)
    for i in range(n):
        acc = 0.0
        for j in range(dim):
            v = np.float64(x[i, j])
            acc += v * v
        scale = 1.0 / np.sqrt(acc) if acc > 0.0 else 0.0
        for j in range(dim):
            out[i, j] = np.float32(np.float64(x[i, j]) * scale)
    return out


def _kmeans(sample: np.ndarray, nlist: int, params: VectorIndexParams) -> np.ndarray:
    km = faiss.Kmeans(
        sample.shape[1], nlist, niter=params.kmeans_iters, seed=params.seed, verbose=False,
        min_points_per_centroid=1, max_points_per_centroid=1 << 30,
    )
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


# Below this many cells a group is laid out as it comes: its cells are neighbours anyway.
LOCALITY_LEAF = 4


def _locality_order(centroids: np.ndarray) -> np.ndarray:
    """An order of the cells in which nearby cells sit near each other in the blob.

    A query's probed cells and its rerank shortlist then fall into fewer, closer byte
    ranges, which lazy reads merge into fewer requests. Recursive halving along each
    group's widest direction; Python work is per group, bounded by the cell count.
    """
    order: list[np.ndarray] = []
    stack = [np.arange(len(centroids))]
    while stack:
        group = stack.pop()
        if len(group) <= LOCALITY_LEAF:
            order.append(group)
            continue
        pts = centroids[group].astype(np.float64)
        # A cheap spread direction: from the point farthest from the mean to the point
        # farthest from that one.
        a = pts[np.argmax(((pts - pts.mean(axis=0)) ** 2).sum(axis=1))]
        b = pts[np.argmax(((pts - a) ** 2).sum(axis=1))]
        proj = pts @ (b - a)
        ranked = group[np.argsort(proj, kind="stable")]
        half = len(ranked) // 2
        # Pushed in reverse so the lower half is laid out first.
        stack.append(ranked[half:])
        stack.append(ranked[:half])
    return np.concatenate(order)


def coarse_index(centroids: np.ndarray, metric: Metric) -> faiss.Index:
    """The flat index over the cells: the rule both build and search use to pick cells."""
    dim = centroids.shape[1]
    q = faiss.IndexFlatIP(dim) if metric is Metric.INNER_PRODUCT else faiss.IndexFlatL2(dim)
    q.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return q


def _assign(x: np.ndarray, centroids: np.ndarray, metric: Metric) -> np.ndarray:
    _, a = coarse_index(centroids, metric).search(x, 1)
    return a[:, 0].astype(np.int64)


def _radius(x: np.ndarray, centroid: np.ndarray) -> float:
    if not len(x):
        return 0.0
    return float(_max_distance(x, centroid.astype(np.float64)))


@njit(cache=True)
def _max_distance(x: np.ndarray, c: np.ndarray) -> float:
    """Largest Euclidean distance from ``c`` to a row of ``x``, accumulated in float64."""
    n, dim = x.shape
    best = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(dim):
            d = np.float64(x[i, j]) - c[j]
            acc += d * d
        if acc > best:
            best = acc
    return np.sqrt(best)


def _assemble(
    metric: Metric, quant: int, dim: int, nrows: int, centroids: np.ndarray, counts: np.ndarray,
    ids: np.ndarray, codes: np.ndarray, trained: np.ndarray,
    centroid: np.ndarray, radius: float,
) -> bytes:
    nlist = len(counts)
    count = len(ids)
    code_size = codes.shape[1]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    meta = (
        fmt.META_FIXED.pack(radius, len(trained), 0)
        + centroid.astype("<f4").tobytes()
        + trained.astype("<f4").tobytes()
    )
    positions = np.full(nrows, fmt.NO_POSITION, dtype="<u4")
    positions[ids] = np.arange(count, dtype=np.uint32)

    rec = 4 + code_size
    blocks = np.empty(count * rec, dtype=np.uint8)
    directory = np.zeros(nlist, dtype=fmt.DIR_DTYPE)
    directory["count"] = counts
    empty_crc = fmt.crc(b"")
    # One pass per cell (bounded by nlist): lay out its block and checksum it.
    for c in range(nlist):
        s, e = int(starts[c]), int(starts[c + 1])
        base = s * rec
        n = e - s
        blocks[base : base + 4 * n] = ids[s:e].astype("<u4").view(np.uint8)
        blocks[base + 4 * n : base + rec * n] = codes[s:e].reshape(-1)
        directory["block_crc"][c] = fmt.crc(blocks[base : base + rec * n])
        directory["vec_crc"][c] = empty_crc

    parts: dict[str, bytes | np.ndarray] = {
        "meta": meta,
        "directory": directory.tobytes(),
        "centroids": centroids.astype("<f4").tobytes(),
        "positions": positions.tobytes(),
        "blocks": blocks,
        "vectors": b"",
    }
    sections: dict[str, tuple[int, int]] = {}
    off = fmt.align(fmt.HEADER.size)
    pieces: list[bytes | memoryview] = [b""]  # the header, once the CRCs are known
    edge = fmt.HEADER.size
    for name, data in parts.items():
        view = data if isinstance(data, bytes) else data.data.cast("B")
        pieces.append(bytes(off - edge))
        pieces.append(view)
        sections[name] = (off, len(view))
        edge = off + len(view)
        off = fmt.align(edge)
    pieces.append(bytes(off - edge))
    header = fmt.Header(
        metric=metric, quantizer=quant, dim=dim, nlist=nlist, code_size=code_size,
        nrows=nrows, count=count, sections=sections,
        meta_crc=fmt.crc(parts["meta"]), dir_crc=fmt.crc(parts["directory"]),
        centroids_crc=fmt.crc(parts["centroids"]), positions_crc=fmt.crc(parts["positions"]),
    )
    pieces[0] = header.pack()
    # One join: the large sections are copied once, straight into the result.
    return b"".join(pieces)
