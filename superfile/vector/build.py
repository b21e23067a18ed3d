"""Builds the vector (kNN) index blob of one column: IVF coarse cells, SQ8 codes, float32 rerank.

Rules the reader relies on:

- Row ``i`` of the column is local id ``i``. Null rows are not indexed.
- Cosine vectors are stored L2-normalized; a zero vector stays zero, so its
  cosine distance to any query is exactly 1 (it is indexed and can be returned).
- Below ``flat_threshold`` vectors the index is one cell without codes: search
  is exact over the stored float32 vectors.
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
from quiver.superfile.spec import VECTOR_TYPES_TEXT, Metric
from quiver.superfile.vector import format as fmt
from quiver.superfile.vector.summary import VectorSummary

log = logging.getLogger(__name__)

# Components beyond this magnitude would overflow float32 squared norms.
MAX_ABS_COMPONENT = 1e16


@dataclass(frozen=True)
class VectorIndexParams:
    """Build knobs. ``nlist=None`` picks ``round(NLIST_PER_SQRT * sqrt(count))`` cells."""

    flat_threshold: int = 4096
    nlist: int | None = None
    quantizer: str = "sq8"
    train_sample: int = 65536
    kmeans_iters: int = 12
    seed: int = 0


NLIST_PER_SQRT = 4.0
# faiss k-means wants a few dozen training points per cell.
MIN_POINTS_PER_CELL = 32


def auto_nlist(count: int) -> int:
    return max(1, min(round(NLIST_PER_SQRT * math.sqrt(count)), count // MIN_POINTS_PER_CELL))


def build_vector_index(
    vectors: pa.FixedSizeListArray | pa.ChunkedArray,
    metric: Metric,
    params: VectorIndexParams | None = None,
) -> tuple[bytes, VectorSummary]:
    """Builds the blob for one vector column and the summary for the manifest."""
    params = params or VectorIndexParams()
    metric = Metric.parse(metric)
    if params.quantizer not in fmt.QUANTIZERS or params.quantizer == "flat":
        raise IndexSpecError(f"unknown vector quantizer {params.quantizer!r}: use 'sq8'")
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
        quant = fmt.QUANTIZERS[params.quantizer]
        rng = np.random.default_rng(params.seed)
        sample = x if count <= params.train_sample else x[
            np.sort(rng.choice(count, params.train_sample, replace=False))
        ]
        centroids = _kmeans(sample, nlist, params)
        centroids = centroids[_locality_order(centroids)]
        assign = _assign(x, centroids, metric)
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
    else:
        codes = np.zeros((count, 0), np.uint8)

    # A flat index's one cell centroid is already the mean of every vector.
    flat_mean = quant == fmt.QUANT_FLAT and nlist == 1
    centroid = centroids[0] if flat_mean else _mean(x) if count else np.zeros(dim, np.float32)
    radius = _radius(x, centroid)
    blob = _assemble(
        metric, quant, dim, nrows, centroids, counts, ids, xs, codes, trained, centroid, radius
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
    ids: np.ndarray, xs: np.ndarray, codes: np.ndarray, trained: np.ndarray,
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
    hashes = fmt.row_hashes(xs)
    vec_bytes = np.ascontiguousarray(xs, dtype="<f4").reshape(-1).view(np.uint8)

    rec = 8 + code_size
    blocks = np.empty(count * rec, dtype=np.uint8)
    directory = np.zeros(nlist, dtype=fmt.DIR_DTYPE)
    directory["count"] = counts
    row_bytes = dim * 4
    # One pass per cell (bounded by nlist): lay out its block and checksum both sections.
    for c in range(nlist):
        s, e = int(starts[c]), int(starts[c + 1])
        base = s * rec
        n = e - s
        blocks[base : base + 4 * n] = ids[s:e].astype("<u4").view(np.uint8)
        blocks[base + 4 * n : base + 8 * n] = hashes[s:e].astype("<u4").view(np.uint8)
        blocks[base + 8 * n : base + rec * n] = codes[s:e].reshape(-1)
        directory["block_crc"][c] = fmt.crc(blocks[base : base + rec * n])
        directory["vec_crc"][c] = fmt.crc(vec_bytes[s * row_bytes : e * row_bytes])

    parts = {
        "meta": meta,
        "directory": directory.tobytes(),
        "centroids": centroids.astype("<f4").tobytes(),
        "positions": positions.tobytes(),
        "blocks": blocks,
        "vectors": vec_bytes,
    }
    sections: dict[str, tuple[int, int]] = {}
    off = fmt.align(fmt.HEADER.size)
    pieces: list[bytes | memoryview] = [b""]  # the header, once the CRCs are known
    edge = fmt.HEADER.size
    for name, data in parts.items():
        view = data if isinstance(data, bytes) else memoryview(data).cast("B")
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
