"""Answers kNN queries (optionally filtered by an allow-set) from one vector index blob.

Version-2 blobs (see ``format``) hold codes only: every exact distance is computed
from the float32 vectors of the file's Parquet column, through the ``ColumnVectors``
the superfile reader hands in (only the pages of the shortlisted rows, when lazy).
Version-1 blobs carry their own float32 copy and are read as before.

Two modes over the same blob:

- **eager** (``open(..., verify=True)``, or ``eager=True``): the blob is read in
  one call, every checksum is checked, and a faiss ``IndexIVFScalarQuantizer`` (or
  ``IndexIVFPQ``) is filled once from the stored codes. Queries then cost one faiss
  search plus an exact rerank.
- **lazy** (default): open reads header, meta and directory in one 64 KiB read.
  The coarse centroids load on the first query (once, under a lock). A query
  reads the id/code blocks of the cells it probes, scores the codes (numpy for
  SQ8, a per-query faiss list scan for PQ), and fetches only the float32 vectors
  of the rerank shortlist. Every section read is checked against its CRC; v1
  shortlist vectors against their per-row hash, v2 ones by the Parquet page CRCs.

  Lazy sources are usually object storage, where each request costs far more
  than the bytes it carries, so the ranges a query needs are merged whenever
  they lie less than ``COALESCE_GAP`` apart (``BLOCK_COALESCE_GAP`` between
  probed cells of a v2 blob, whose byte budget matters more) (one read for the probed blocks and
  one for the shortlist on a small file), and the reads that remain are issued
  as one concurrent batch when the source offers ``read_ranges``.

Search knobs (all documented constants):

- ``nprobe``: cells probed. Default ``max(DEFAULT_NPROBE, ceil(DEFAULT_PROBE_FRACTION
  * nlist), cells holding MIN_PROBE_ROWS rows on average)`` (v1 blobs:
  ``V1_PROBE_FRACTION``). Sentence embeddings queried with short texts spread their
  neighbours over many cells, so the default probes a share of the cells rather
  than a fixed number.
- ``rerank``: size of the shortlist rescored exactly from float32 vectors.
  Default ``max(DEFAULT_RERANK, RERANK_PER_K * k)``; never less than ``k``.
- Filtered search: when at most ``FILTER_EXACT_MAX`` indexed rows are allowed,
  the allowed rows are scored exactly (no index). Otherwise the allow-set is a
  faiss ``IDSelectorBitmap`` inside the IVF scan (or a mask in the lazy scan);
  when the probed cells yield fewer than ``k`` allowed rows, ``nprobe`` doubles
  until they do or every cell is probed.

Distances are exact: cosine ``1 - cos``, l2 Euclidean, inner_product ``-<a, b>``.
Ties are broken by the lower local id. The reader holds no mutable state during
a search apart from the lazily loaded, lock-protected caches, so it can be
searched from several threads at once.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import faiss
import numpy as np

from quiver.superfile.errors import CorruptFileError, QueryError, SuperfileError
from quiver.superfile.ranges import RangeReader, read_many
from quiver.superfile.spec import Metric
from quiver.superfile.vector import format as fmt
from quiver.superfile.vector.build import MAX_ABS_COMPONENT, coarse_index
from quiver.superfile.vector.column_vectors import ColumnVectors
from quiver.superfile.vector.summary import VectorSummary

if TYPE_CHECKING:
    import pyroaring

DEFAULT_NPROBE = 8
# v2 blobs. Measured on pypi-minilm, 100K x 384 (nlist 632, PQ 96 bytes, rerank 64):
# probing 0.5 of the cells gives recall@10 0.959, 0.7 gives 0.988; 0.6 keeps a cold lazy
# query near 9 MB. Small files have few rows per cell and need a larger share (20K rows,
# 283 cells: 0.6 gives 0.955, 0.75 about 0.975), so the probe also covers at least
# MIN_PROBE_ROWS rows' worth of cells; small files are cheap to probe.
DEFAULT_PROBE_FRACTION = 0.6
MIN_PROBE_ROWS = 15000
# v1 blobs keep the default they were tuned with (4 * sqrt(n) cells).
V1_PROBE_FRACTION = 0.5
DEFAULT_RERANK = 64
RERANK_PER_K = 4
FILTER_EXACT_MAX = 2048
OPEN_READ_BYTES = 64 * 1024
# A GET on object storage spends tens of milliseconds before its first byte and then
# streams at ~50-100 MB/s, so skipping less than ~1 MiB between two wanted ranges costs
# less time than issuing a second request: lazy reads merge ranges closer than this.
COALESCE_GAP = 1 << 20
# The first lazy query needs the centroids and then most of the blocks (the default probe
# covers half the cells); when centroids, positions and blocks span at most this many
# bytes they come in one read instead of two.
FRONT_READ_MAX = 4 << 20
# A v2 cell block is tens of KB; merging across a skipped cell or two saves a request
# at little cost, merging across many would read most of the unprobed cells too.
BLOCK_COALESCE_GAP = 16 << 10

_EMPTY = (np.zeros(0, np.uint32), np.zeros(0, np.float32))


class VectorIndexReader:
    """kNN search over one column's vector index blob; see the module docstring."""

    metric: Metric
    dim: int
    count: int

    def __init__(
        self, source: RangeReader, header: fmt.Header, meta: memoryview,
        directory: np.ndarray, data: memoryview | None,
        vectors: ColumnVectors | None = None,
    ) -> None:
        h = header
        self._src = source
        self._h = h
        self.metric = h.metric
        self.dim = h.dim
        self.count = h.count
        self.nlist = h.nlist
        self.nrows = h.nrows
        self._rec = h.record_size
        # Bytes in front of the codes in one cell's block, per row: id (and v1's hash).
        self._prefix = self._rec - h.code_size
        self._colvecs = vectors.for_metric(h.metric) if vectors is not None else None
        if not h.has_vectors and vectors is None and h.count:
            raise QueryError("a v2 vector index needs its column's vectors to rerank")
        self._counts = directory["count"].astype(np.int64)
        if int(self._counts.sum()) != h.count:
            raise CorruptFileError("vector index directory counts do not add up to its count")
        self._starts = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self._block_crc = directory["block_crc"].copy()
        self._vec_crc = directory["vec_crc"].copy()
        radius, ntrained, _ = fmt.META_FIXED.unpack(meta[: fmt.META_FIXED.size])
        if len(meta) != fmt.META_FIXED.size + 4 * (h.dim + ntrained):
            raise CorruptFileError("vector index meta section has the wrong length")
        if h.quantizer == fmt.QUANT_SQ8 and ntrained != 2 * h.dim:
            raise CorruptFileError("vector index quantizer parameters have the wrong length")
        if h.quantizer == fmt.QUANT_PQ and ntrained != fmt.PQ_CENTROIDS * h.dim:
            raise CorruptFileError("vector index PQ codebooks have the wrong length")
        o = fmt.META_FIXED.size
        self._radius = float(radius)
        self._centroid = np.frombuffer(meta, "<f4", h.dim, o).astype(np.float32)
        trained = np.frombuffer(meta, "<f4", ntrained, o + 4 * h.dim).astype(np.float32)
        self._sq: faiss.ScalarQuantizer | None = None
        self._pq_trained = trained if h.quantizer == fmt.QUANT_PQ else None
        self._coarse: faiss.Index | None = None
        if h.quantizer == fmt.QUANT_SQ8:
            self._sq = faiss.ScalarQuantizer(h.dim, faiss.ScalarQuantizer.QT_8bit)
            faiss.copy_array_to_vector(trained, self._sq.trained)
        self._lock = threading.Lock()
        self._centroids: np.ndarray | None = None
        self._cnorms: np.ndarray | None = None
        self._positions: np.ndarray | None = None
        self._summary: VectorSummary | None = None
        self._data = data
        self._vecs: np.ndarray | None = None
        self._ids_all: np.ndarray | None = None
        self._index: faiss.Index | None = None
        if data is not None:
            self._load_eager(data)

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls, source: RangeReader, *, verify: bool = False, eager: bool | None = None,
        vectors: ColumnVectors | None = None,
    ) -> VectorIndexReader:
        """Opens a blob. ``verify=True`` means the bytes are resident: read everything,
        check every checksum and build the in-memory faiss index (eager mode).
        ``eager`` overrides the mode without changing what is verified. ``vectors``
        serves the float32 vectors a v2 blob leaves to its column."""
        eager = verify if eager is None else eager
        try:
            size = source.size()
            if eager:
                data = memoryview(source.read(0, size)).cast("B")
                header = fmt.Header.unpack(data, size)
                meta = _section(data, header, "meta", header.meta_crc)
                directory = _directory(_section(data, header, "directory", header.dir_crc), header)
                reader = cls(source, header, meta, directory, data, vectors)
                if verify:
                    reader._verify_all()
                return reader
            # One speculative read usually covers header, meta and directory.
            head = memoryview(source.read(0, min(size, OPEN_READ_BYTES))).cast("B")
            header = fmt.Header.unpack(head, size)
            m_off, m_len = header.sections["meta"]
            d_off, d_len = header.sections["directory"]
            meta_raw: bytes | memoryview
            dir_raw: bytes | memoryview
            if max(m_off + m_len, d_off + d_len) <= len(head):
                meta_raw, dir_raw = head[m_off : m_off + m_len], head[d_off : d_off + d_len]
            else:
                meta_raw, dir_raw = read_many(
                    source, [(m_off, m_len), (d_off, d_len)], gap=1 << 16
                )
            meta = memoryview(meta_raw).cast("B")
            _check_crc(meta, header.meta_crc, "meta")
            dir_view = memoryview(dir_raw).cast("B")
            _check_crc(dir_view, header.dir_crc, "directory")
            return cls(source, header, meta, _directory(dir_view, header), None, vectors)
        except SuperfileError:
            raise
        except (ValueError, IndexError, TypeError, OverflowError, RuntimeError) as exc:
            raise CorruptFileError(f"malformed vector index blob: {exc!r}") from None

    def _load_eager(self, data: memoryview) -> None:
        h = self._h
        self._centroids = self._np_section(data, "centroids", h.centroids_crc, "<f4").reshape(
            h.nlist, h.dim
        )
        self._cnorms = np.einsum("ij,ij->i", self._centroids, self._centroids)
        self._positions = self._np_section(data, "positions", h.positions_crc, "<u4")
        if h.has_vectors:
            v_off, _ = h.sections["vectors"]
            self._vecs = np.frombuffer(data, "<f4", h.count * h.dim, v_off).reshape(
                h.count, h.dim
            )
        b_off, _ = h.sections["blocks"]
        if h.quantizer == fmt.QUANT_FLAT:
            return
        index: faiss.IndexIVF
        if h.quantizer == fmt.QUANT_PQ:
            index = self._new_ivf_pq()
        else:
            quantizer = self._coarse_index()
            faiss_metric = (
                faiss.METRIC_L2 if self.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
            )
            sq_index = faiss.IndexIVFScalarQuantizer(
                quantizer, h.dim, h.nlist, faiss.ScalarQuantizer.QT_8bit, faiss_metric, False
            )
            # Neither flat nor PQ is SQ8, whose quantizer the constructor built.
            assert self._sq is not None
            faiss.copy_array_to_vector(
                faiss.vector_to_array(self._sq.trained), sq_index.sq.trained
            )
            sq_index.is_trained = True
            index = sq_index
        invlists = index.invlists
        assert invlists is not None, "a new IVF index owns its inverted lists"
        blocks = np.frombuffer(data, np.uint8, h.count * self._rec, b_off)
        # One call per cell (bounded by nlist) hands faiss a whole inverted list.
        for c in np.flatnonzero(self._counts):
            n = int(self._counts[c])
            base = int(self._starts[c]) * self._rec
            ids = blocks[base : base + 4 * n].view("<u4").astype(np.int64)
            codes = np.ascontiguousarray(blocks[base + self._prefix * n : base + self._rec * n])
            invlists.add_entries(int(c), n, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
        index.ntotal = h.count
        self._index = index

    def _coarse_index(self) -> faiss.Index:
        """The flat index over the cells (searched read-only, so shared between threads)."""
        if self._coarse is None:
            self._coarse = coarse_index(self._load_centroids(), self.metric)
        return self._coarse

    def _new_ivf_pq(self) -> faiss.IndexIVFPQ:
        """An empty IVF-PQ index over this blob's cells and codebooks (residual codes)."""
        h = self._h
        faiss_metric = faiss.METRIC_L2 if self.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexIVFPQ(self._coarse_index(), h.dim, h.nlist, h.code_size, 8,
                                 faiss_metric)
        index.by_residual = True
        faiss.copy_array_to_vector(self._pq_trained, index.pq.centroids)
        index.is_trained = True
        return index

    def _np_section(self, data: memoryview, name: str, crc: int, dtype: str) -> np.ndarray:
        view = _section(data, self._h, name, crc)
        return np.frombuffer(view, dtype)

    def _verify_all(self) -> None:
        """Checks every cell's block and vector checksums and the id/position agreement."""
        data = self._data
        positions = self._positions
        assert data is not None and positions is not None, "eager readers only"
        h = self._h
        b_off, _ = h.sections["blocks"]
        v_off, _ = h.sections["vectors"]
        row = h.dim * 4
        for c in range(h.nlist):
            s, n = int(self._starts[c]), int(self._counts[c])
            blk = data[b_off + s * self._rec : b_off + (s + n) * self._rec]
            _check_crc(blk, int(self._block_crc[c]), f"cell {c} block")
            if h.has_vectors:
                vec = data[v_off + s * row : v_off + (s + n) * row]
                _check_crc(vec, int(self._vec_crc[c]), f"cell {c} vectors")
        covered = sorted([(0, fmt.HEADER.size), *h.sections.values()])
        edge = 0
        # Alignment padding is covered by no checksum, so it must be zeros.
        for off, length in [*covered, (len(data), 0)]:
            if off > edge and any(data[edge:off]):
                raise CorruptFileError("vector index padding bytes are not zero")
            edge = max(edge, off + length)
        ids = self._all_ids()
        if h.count and (ids.max() >= h.nrows or not np.array_equal(
            positions[ids], np.arange(h.count, dtype=np.uint32)
        )):
            raise CorruptFileError("vector index ids and positions disagree")
        if int((positions != fmt.NO_POSITION).sum()) != h.count:
            raise CorruptFileError("vector index position map has the wrong number of rows")

    def _all_ids(self) -> np.ndarray:
        """Local id of every stored position (eager only), gathered without a per-row loop."""
        h = self._h
        b_off, _ = h.sections["blocks"]
        assert self._data is not None, "eager readers only"
        blocks = np.frombuffer(self._data, np.uint8, h.count * self._rec, b_off)
        cell = np.repeat(np.arange(h.nlist), self._counts)
        pos = np.arange(h.count)
        off = self._rec * self._starts[cell] + 4 * (pos - self._starts[cell])
        return blocks[off[:, None] + np.arange(4)].copy().view("<u4").reshape(-1)

    # -- metadata ---------------------------------------------------------------------------

    @property
    def summary(self) -> VectorSummary:
        if self._summary is None:
            centroids = self._load_centroids()
            self._summary = VectorSummary(
                metric=self.metric, dim=self.dim, count=self.count,
                centroid=self._centroid.copy(), radius=self._radius,
                cluster_centroids=centroids.copy(), cluster_counts=self._counts.copy(),
            )
        return self._summary

    @property
    def is_eager(self) -> bool:
        return self._data is not None

    @property
    def codes_name(self) -> str:
        """The kind of codes the blob stores: flat (none), sq8 or pq."""
        return fmt.QUANTIZER_NAMES[self._h.quantizer]

    @property
    def is_flat(self) -> bool:
        return self._h.quantizer == fmt.QUANT_FLAT

    def default_nprobe(self) -> int:
        if self.nlist == 0:
            return 0
        if self._h.has_vectors:
            return min(self.nlist, max(DEFAULT_NPROBE, math.ceil(V1_PROBE_FRACTION * self.nlist)))
        by_rows = math.ceil(MIN_PROBE_ROWS * self.nlist / max(self.count, 1))
        share = math.ceil(DEFAULT_PROBE_FRACTION * self.nlist)
        return min(self.nlist, max(DEFAULT_NPROBE, share, by_rows))

    # -- lazy caches ------------------------------------------------------------------------

    def _load_centroids(self) -> np.ndarray:
        self._load_front()
        assert self._centroids is not None
        return self._centroids

    def _load_front(self) -> memoryview | None:
        """Loads the centroids once; see ``FRONT_READ_MAX``. Returns the blocks section to
        the caller whose read brought it along, else None."""
        if self._centroids is not None:
            return None
        with self._lock:
            if self._centroids is not None:
                return None
            h = self._h
            c_off, c_len = h.sections["centroids"]
            p_off, p_len = h.sections["positions"]
            b_off, b_len = h.sections["blocks"]
            blocks = None
            together = c_off + c_len <= p_off and p_off + p_len <= b_off
            if together and b_off + b_len - c_off <= FRONT_READ_MAX:
                front = memoryview(self._src.read(c_off, b_off + b_len - c_off)).cast("B")
                view = front[:c_len]
                positions = front[p_off - c_off : p_off - c_off + p_len]
                _check_crc(positions, h.positions_crc, "positions")
                _check_crc(view, h.centroids_crc, "centroids")
                blocks = front[b_off - c_off :]
                if self._positions is None:
                    self._positions = np.frombuffer(positions, "<u4").copy()
            else:
                view = self._read_section("centroids", h.centroids_crc)
            cent = np.frombuffer(view, "<f4").reshape(self.nlist, self.dim).copy()
            self._cnorms = np.einsum("ij,ij->i", cent, cent)
            self._centroids = cent
            return blocks

    def _load_positions(self) -> np.ndarray:
        if self._positions is None:
            with self._lock:
                if self._positions is None:
                    view = self._read_section("positions", self._h.positions_crc)
                    self._positions = np.frombuffer(view, "<u4").copy()
        return self._positions

    def _read_section(self, name: str, crc: int) -> memoryview:
        off, length = self._h.sections[name]
        view = memoryview(self._src.read(off, length)).cast("B")
        _check_crc(view, crc, name)
        return view

    def _rerank_vectors(self) -> ColumnVectors:
        """The column's vectors a v2 blob reranks with (the constructor requires them
        whenever rows are indexed)."""
        assert self._colvecs is not None
        return self._colvecs

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Eager v1: the position map and the blob's own float32 vectors."""
        assert self._positions is not None and self._vecs is not None
        return self._positions, self._vecs

    # -- search -----------------------------------------------------------------------------

    def search(
        self, query: np.ndarray, k: int, *, nprobe: int | None = None, rerank: int | None = None,
        allow: pyroaring.BitMap | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed rows: (local ids uint32, exact distances float32)."""
        q = self._query(query)
        k, nprobe, shortlist = self._knobs(k, nprobe, rerank)
        if k == 0 or self.count == 0:
            return _EMPTY
        try:
            if allow is not None:
                return self._search_filtered(q, k, nprobe, shortlist, allow)
            if self.is_flat:
                return self._exact(q, k, None)
            return self._ivf(q, k, nprobe, shortlist, None, self.count)
        except SuperfileError:
            raise
        except (ValueError, IndexError, TypeError, RuntimeError) as exc:
            raise CorruptFileError(f"malformed vector index data: {exc!r}") from None

    def search_batch(
        self, queries: np.ndarray, k: int, *, nprobe: int | None = None,
        rerank: int | None = None, allow: pyroaring.BitMap | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``search`` for each row of ``queries``: (ids int64 (q, k) padded with -1,
        distances float32 (q, k) padded with inf)."""
        qs = np.asarray(queries, dtype=np.float32)
        if qs.ndim != 2 or qs.shape[1] != self.dim:
            raise QueryError(f"expected queries of shape (q, {self.dim}), got {qs.shape}")
        if k < 0:
            raise QueryError(f"k must be >= 0, got {k}")
        ids = np.full((len(qs), k), -1, dtype=np.int64)
        dists = np.full((len(qs), k), np.inf, dtype=np.float32)
        # One query at a time: each may widen its own probe; bounded by the batch size.
        for i, q in enumerate(qs):
            got_ids, got_d = self.search(q, k, nprobe=nprobe, rerank=rerank, allow=allow)
            ids[i, : len(got_ids)] = got_ids
            dists[i, : len(got_d)] = got_d
        return ids, dists

    def _query(self, query: np.ndarray) -> np.ndarray:
        try:
            q = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise QueryError(f"query vector is not numeric: {exc}") from None
        if q.ndim == 2 and q.shape[0] == 1:
            q = q[0]
        if q.ndim != 1 or q.shape[0] != self.dim:
            raise QueryError(
                f"query vector has shape {q.shape}; expected {self.dim} components"
            )
        if not np.isfinite(q).all():
            raise QueryError("query vector has a NaN or infinite component")
        if (np.abs(q) > MAX_ABS_COMPONENT).any():
            raise QueryError(f"query vector has a component beyond ±{MAX_ABS_COMPONENT:g}")
        q = np.ascontiguousarray(q)
        if self.metric is Metric.COSINE:
            norm = float(np.sqrt(np.dot(q.astype(np.float64), q.astype(np.float64))))
            if norm == 0.0:
                raise QueryError("a zero query vector has no cosine distance")
            q = (q / norm).astype(np.float32)
        return q

    def _knobs(self, k: int, nprobe: int | None, rerank: int | None) -> tuple[int, int, int]:
        if not isinstance(k, (int, np.integer)) or k < 0:
            raise QueryError(f"k must be a non-negative integer, got {k!r}")
        if nprobe is not None and nprobe < 1:
            raise QueryError(f"nprobe must be >= 1, got {nprobe}")
        if rerank is not None and rerank < 0:
            raise QueryError(f"rerank must be >= 0, got {rerank}")
        k = int(k)
        probe = self.default_nprobe() if nprobe is None else min(int(nprobe), self.nlist)
        shortlist = max(DEFAULT_RERANK, RERANK_PER_K * k) if rerank is None else int(rerank)
        return k, probe, max(shortlist, k)

    def _allowed_positions(self, allow: pyroaring.BitMap) -> tuple[np.ndarray, np.ndarray]:
        """Allowed local ids (sorted, indexed only) and a row mask of them."""
        rows = np.frombuffer(allow.to_array(), dtype=np.uint32)
        rows = rows[rows < self.nrows]
        positions = self._load_positions()
        rows = rows[positions[rows] != fmt.NO_POSITION]
        mask = np.zeros(self.nrows, dtype=bool)
        mask[rows] = True
        return rows, mask

    def _search_filtered(
        self, q: np.ndarray, k: int, nprobe: int, shortlist: int, allow: pyroaring.BitMap
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, mask = self._allowed_positions(allow)
        if len(rows) == 0:
            return _EMPTY
        if self.is_flat or len(rows) <= FILTER_EXACT_MAX or len(rows) <= k:
            return self._exact(q, k, rows)
        return self._ivf(q, k, nprobe, shortlist, mask, len(rows))

    # -- exact path -------------------------------------------------------------------------

    def _exact(
        self, q: np.ndarray, k: int, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over all indexed rows, or over ``rows`` (sorted local ids)."""
        if not self._h.has_vectors:
            ids = rows if rows is not None else (
                self._all_ids_cached() if self.is_eager else self._read_all_ids()
            )
            return _top_exact(self.metric, self._rerank_vectors().rows(ids), ids, q, k)
        if self.is_eager:
            positions, stored = self._stored_vectors()
            if rows is None:
                pos = None
                vecs = stored
                ids = self._all_ids_cached()
            else:
                pos = positions[rows].astype(np.int64)
                vecs = stored[pos]
                ids = rows
        else:
            if rows is None:
                ids, vecs = self._read_all_vectors()
            else:
                pos = self._load_positions()[rows].astype(np.int64)
                vecs = self._fetch_vectors(pos)
                ids = rows
        return _top_exact(self.metric, vecs, ids, q, k)

    def _all_ids_cached(self) -> np.ndarray:
        ids = self._ids_all
        if ids is None:
            with self._lock:
                ids = self._ids_all
                if ids is None:
                    ids = self._all_ids()
                    self._ids_all = ids
        return ids

    def _read_all_ids(self) -> np.ndarray:
        """Lazy: the local id of every indexed row (for a flat scan of a small v2 index)."""
        cells = np.flatnonzero(self._counts)
        if not len(cells):
            return np.zeros(0, np.uint32)
        ids, _, _, _, _ = self._read_cells(cells)
        return ids

    def _read_all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Lazy flat scan: every cell's ids and vectors (used only for small flat indexes)."""
        cells = np.flatnonzero(self._counts)
        # Blocks and vectors are neighbours, so both come back in one read.
        ids, _, _, pos, (view,) = self._read_cells(cells, [self._h.sections["vectors"]])
        row = self.dim * 4
        for c in cells:
            s, n = int(self._starts[c]), int(self._counts[c])
            _check_crc(view[s * row : (s + n) * row], int(self._vec_crc[c]), f"cell {c} vectors")
        vecs = np.frombuffer(view, "<f4").reshape(self.count, self.dim)
        return ids, vecs[pos]

    # -- IVF path ---------------------------------------------------------------------------

    def _ivf(
        self, q: np.ndarray, k: int, nprobe: int, shortlist: int, mask: np.ndarray | None,
        available: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        want = min(k, available)
        if self.is_eager:
            ids = self._faiss_candidates(q, nprobe, shortlist, mask, want)
            if not self._h.has_vectors:
                return _top_exact(self.metric, self._rerank_vectors().rows(ids), ids, q, k)
            positions, stored = self._stored_vectors()
            pos = positions[ids].astype(np.int64)
            vecs = stored[pos]
        elif not self._h.has_vectors:
            ids = self._lazy_candidates(q, nprobe, shortlist, mask, want)[0]
            return _top_exact(self.metric, self._rerank_vectors().rows(ids), ids, q, k)
        else:
            ids, pos, hashes = self._lazy_candidates(q, nprobe, shortlist, mask, want)
            vecs = self._fetch_vectors(pos, hashes)
        return _top_exact(self.metric, vecs, ids, q, k)

    def _faiss_candidates(
        self, q: np.ndarray, nprobe: int, shortlist: int, mask: np.ndarray | None, want: int
    ) -> np.ndarray:
        params = faiss.SearchParametersIVF()
        bits = None
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")
            # ``bits`` must outlive the search: the selector only borrows its pointer.
            params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        qm = q[None, :]
        # Eager readers build the faiss index of every blob that has cells.
        assert self._index is not None
        while True:
            params.nprobe = nprobe
            _, labels = self._index.search(qm, shortlist, params=params)
            found = labels[0][labels[0] >= 0]
            if len(found) >= want or nprobe >= self.nlist:
                return found.astype(np.uint32)
            nprobe = min(self.nlist, nprobe * 2)

    def _probe_order(self, q: np.ndarray) -> np.ndarray:
        cent = self._load_centroids()
        if self.metric is Metric.INNER_PRODUCT:
            score = -(cent @ q)
        else:
            score = self._cnorms - 2.0 * (cent @ q)
        return np.argsort(score, kind="stable")

    def _lazy_candidates(
        self, q: np.ndarray, nprobe: int, shortlist: int, mask: np.ndarray | None, want: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        blocks = self._load_front()
        order = self._probe_order(q)
        done = 0
        parts: list[tuple[np.ndarray, ...]] = []
        found = 0
        pq = self._h.quantizer == fmt.QUANT_PQ
        pq_cells: list[np.ndarray] = []
        while True:
            cells = order[done:nprobe]
            cells = cells[self._counts[cells] > 0]
            if len(cells):
                ids, hashes, codes, pos, _ = self._read_cells(cells, blocks=blocks)
                if pq:
                    # faiss applies the mask itself; the lists stay whole.
                    pq_cells.append(cells)
                    parts.append((ids, hashes, codes, pos))
                    found += int(mask[ids].sum()) if mask is not None else len(ids)
                else:
                    if mask is not None:
                        keep = mask[ids]
                        ids, hashes, codes, pos = (ids[keep], hashes[keep], codes[keep],
                                                   pos[keep])
                    parts.append((ids, hashes, codes, pos))
                    found += len(ids)
            done = nprobe
            if found >= want or nprobe >= self.nlist:
                break
            nprobe = min(self.nlist, nprobe * 2)
        if not parts:
            z = np.zeros(0, np.int64)
            return z.astype(np.uint32), z, z.astype(np.uint32)
        if pq:
            ids = self._pq_scan(q, np.concatenate(pq_cells), parts, shortlist, mask)
            return ids, np.zeros(0, np.int64), np.zeros(0, np.uint32)
        ids = np.concatenate([p[0] for p in parts])
        hashes = np.concatenate([p[1] for p in parts])
        codes = np.concatenate([p[2] for p in parts])
        pos = np.concatenate([p[3] for p in parts])
        if len(ids) > shortlist:
            # Neither flat (no IVF path) nor PQ (returned above): SQ8 codes.
            assert self._sq is not None
            approx = _approx_scores(self.metric, self._sq.decode(codes), q)
            top = np.argpartition(approx, shortlist - 1)[:shortlist]
            ids, hashes, pos = ids[top], hashes[top], pos[top]
        return ids, pos, hashes

    def _pq_scan(
        self, q: np.ndarray, cells: np.ndarray, parts: list[tuple[np.ndarray, ...]],
        shortlist: int, mask: np.ndarray | None,
    ) -> np.ndarray:
        """The ``shortlist`` best ids by PQ distance over the loaded cells: a throwaway
        IVF-PQ index holding just those lists, searched with every cell probed (the
        lists not loaded are empty, so faiss skips them)."""
        index = self._new_ivf_pq()
        invlists = index.invlists
        assert invlists is not None, "a new IVF index owns its inverted lists"
        ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
        codes = np.ascontiguousarray(np.concatenate([p[2] for p in parts]))
        at = 0
        # One call per loaded cell, bounded by nprobe.
        for c in cells:
            n = int(self._counts[c])
            invlists.add_entries(
                int(c), n, faiss.swig_ptr(ids[at : at + n]), faiss.swig_ptr(codes[at : at + n])
            )
            at += n
        index.ntotal = at
        params = faiss.SearchParametersIVF()
        params.nprobe = self.nlist
        bits = None
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")
            # ``bits`` must outlive the search: the selector only borrows its pointer.
            params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        _, labels = index.search(q[None, :], shortlist, params=params)
        return labels[0][labels[0] >= 0].astype(np.uint32)

    def _read_cells(
        self, cells: np.ndarray, extra: list[tuple[int, int]] | None = None,
        blocks: memoryview | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[memoryview]]:
        """ids, hashes, codes and positions of the given cells, checksums verified, plus
        the bytes of ``extra`` ranges fetched in the same reads. ``blocks``, when given,
        is the whole blocks section, already read."""
        b_off, _ = self._h.sections["blocks"]
        rec = self._rec
        ranges = [
            (b_off + int(self._starts[c]) * rec, int(self._counts[c]) * rec) for c in cells
        ]
        if blocks is not None and not extra:
            bufs = [blocks[o - b_off : o - b_off + n] for o, n in ranges]
        elif not self._h.has_vectors and not extra:
            bufs = self._read_ranges(ranges, gap=BLOCK_COALESCE_GAP)
        else:
            bufs = self._read_ranges(ranges + list(extra or []))
        ids, hashes, codes, pos = [], [], [], []
        pre = self._prefix
        # One step per probed cell, bounded by nprobe.
        for c, buf in zip(cells, bufs[: len(cells)], strict=True):
            _check_crc(buf, int(self._block_crc[c]), f"cell {c} block")
            n = int(self._counts[c])
            arr = np.frombuffer(buf, np.uint8)
            ids.append(arr[: 4 * n].view("<u4"))
            # v2 blocks have no row hashes; zeros keep one return shape.
            hashes.append(arr[4 * n : 8 * n].view("<u4") if pre == 8 else np.zeros(n, np.uint32))
            codes.append(arr[pre * n :].reshape(n, rec - pre))
            s = int(self._starts[c])
            pos.append(np.arange(s, s + n, dtype=np.int64))
        ids_a = np.concatenate(ids)
        if len(ids_a) and int(ids_a.max()) >= self.nrows:
            raise CorruptFileError("vector index cell holds a row id past the end of the column")
        return (ids_a, np.concatenate(hashes), np.concatenate(codes), np.concatenate(pos),
                bufs[len(cells) :])

    def _fetch_vectors(self, pos: np.ndarray, hashes: np.ndarray | None = None) -> np.ndarray:
        """Float32 vectors at ``pos`` (and their hashes, unless given) in as few reads as
        ``COALESCE_GAP`` allows, hashes checked."""
        if len(pos) == 0:
            return np.zeros((0, self.dim), np.float32)
        v_off, _ = self._h.sections["vectors"]
        row = self.dim * 4
        wanted = [(v_off + pos * row, row)]
        if hashes is None:
            b_off, _ = self._h.sections["blocks"]
            cell = np.searchsorted(self._starts, pos, side="right") - 1
            start = self._starts[cell]
            wanted.append((b_off + self._rec * start + 4 * self._counts[cell] + 4 * (pos - start),
                           4))
        got = self._gather(wanted)
        vecs = got[0].view("<f4").reshape(len(pos), self.dim)
        if hashes is None:
            hashes = got[1].view("<u4").reshape(-1)
        if not np.array_equal(fmt.row_hashes(vecs), hashes):
            raise CorruptFileError("vector index stored vector does not match its row hash")
        return vecs

    # -- reads ------------------------------------------------------------------------------

    def _fetch(self, spans: list[tuple[int, int]]) -> list[memoryview]:
        """The given spans, one request each, concurrently when the source can batch."""
        batch = getattr(self._src, "read_ranges", None)
        if len(spans) > 1 and batch is not None:
            got = batch(spans)
        else:
            got = [self._src.read(o, n) for o, n in spans]
        out = [memoryview(b).cast("B") for b in got]
        for (_, n), b in zip(spans, out, strict=True):
            if len(b) != n:
                raise CorruptFileError(f"vector index read returned {len(b)} of {n} bytes")
        return out

    def _read_ranges(
        self, ranges: list[tuple[int, int]], gap: int = COALESCE_GAP
    ) -> list[memoryview]:
        """Bytes of each range, neighbours closer than ``gap`` merged into one read.
        Python work is per range; callers pass one range per probed cell or section."""
        if not ranges:
            return []
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        groups: list[list[int]] = []
        spans: list[tuple[int, int]] = []
        end = -1
        for i in order:
            off, n = ranges[i]
            if groups and off <= end + gap:
                groups[-1].append(i)
                end = max(end, off + n)
                spans[-1] = (spans[-1][0], end - spans[-1][0])
            else:
                groups.append([i])
                spans.append((off, n))
                end = off + n
        out: list[memoryview] = [memoryview(b"")] * len(ranges)
        for (base, _), members, buf in zip(spans, groups, self._fetch(spans), strict=True):
            for i in members:
                off, n = ranges[i]
                out[i] = buf[off - base : off - base + n]
        return out

    def _gather(self, wanted: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        """For each (offsets, length) request, an (n, length) uint8 array of those ranges.

        All requests are merged into reads by ``COALESCE_GAP`` with numpy; Python work is
        per read, not per range (shortlists and filtered sets have up to thousands of rows).
        """
        starts = np.concatenate([np.asarray(o, np.int64) for o, _ in wanted])
        lengths = np.concatenate([np.full(len(o), n, np.int64) for o, n in wanted])
        order = np.argsort(starts, kind="stable")
        s = starts[order]
        reach = np.maximum.accumulate(s + lengths[order])
        breaks = np.flatnonzero(s[1:] > reach[:-1] + COALESCE_GAP) + 1
        first = np.concatenate([[0], breaks]).astype(np.int64)
        last = np.concatenate([breaks, [len(s)]]).astype(np.int64)
        spans = [(int(s[a]), int(reach[b - 1] - s[a])) for a, b in zip(first, last, strict=True)]
        bufs = self._fetch(spans)
        if len(bufs) == 1:
            joined = np.frombuffer(bufs[0], np.uint8)
        else:
            joined = np.concatenate([np.frombuffer(b, np.uint8) for b in bufs])
        # Where each span landed in ``joined``, and each range's offset within it.
        landed = np.concatenate([[0], np.cumsum([n for _, n in spans])[:-1]]).astype(np.int64)
        group = np.empty(len(s), np.int64)
        group[order] = np.repeat(np.arange(len(spans)), last - first)
        base = np.array([o for o, _ in spans], np.int64)
        rel = starts - base[group] + landed[group]
        out: list[np.ndarray] = []
        at = 0
        for offsets, n in wanted:
            r = rel[at : at + len(offsets)]
            at += len(offsets)
            windows = np.lib.stride_tricks.sliding_window_view(joined, n)
            out.append(np.ascontiguousarray(windows[r]))
        return out


def _section(data: memoryview, header: fmt.Header, name: str, crc: int) -> memoryview:
    off, length = header.sections[name]
    view = data[off : off + length]
    _check_crc(view, crc, name)
    return view


def _directory(view: memoryview, header: fmt.Header) -> np.ndarray:
    return np.frombuffer(view, fmt.DIR_DTYPE, header.nlist)


def _check_crc(view: memoryview | bytes, expected: int, what: str) -> None:
    if fmt.crc(view) != expected:
        raise CorruptFileError(f"vector index {what} checksum mismatch")


def _approx_scores(metric: Metric, vecs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Smaller is nearer; a monotone stand-in for the distance, cheap to compute."""
    dots = vecs @ q
    if metric is Metric.L2:
        return np.einsum("ij,ij->i", vecs, vecs) - 2.0 * dots
    return -dots


def _distances(metric: Metric, vecs: np.ndarray, q: np.ndarray) -> np.ndarray:
    if metric is Metric.L2:
        diff = vecs - q
        return np.sqrt(np.einsum("ij,ij->i", diff, diff)).astype(np.float32)
    dots = (vecs @ q).astype(np.float32)
    if metric is Metric.COSINE:
        return (np.float32(1.0) - dots).astype(np.float32)
    return -dots


def _top_exact(
    metric: Metric, vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int,
    prefilter: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances for the candidates, the best ``k`` by (distance, id)."""
    if len(ids) > prefilter:
        # Large candidate sets (flat scans) are cut with a cheap score first, with slack
        # so float rounding in the cheap score cannot push a true top-k row out.
        approx = _approx_scores(metric, vecs, q)
        keep = np.argpartition(approx, min(len(approx) - 1, max(4 * k, 256)))[: max(4 * k, 256)]
        vecs, ids = vecs[keep], ids[keep]
    dist = _distances(metric, vecs, q)
    order = np.lexsort((ids, dist))[:k]
    return ids[order].astype(np.uint32), dist[order]
