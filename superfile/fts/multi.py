"""BM25 across the indexes of many files of one collection: global statistics, one plan,
one top-k.

A caller holding several files' indexes of the same column (a table's superfiles) ranks
them as one collection, so a row's score does not depend on how the collection is split
into files:

- ``collection_stats`` sums each file's corpus statistics (``FileStats``: documents,
  tokens, document frequencies) into the N, average length and document frequencies every
  file is scored with;
- ``file_terms`` reads what one file holds of a query's terms (validated postings and the
  mask of the rows it may return);
- ``build_plan`` copies every file's postings into one buffer with the per-file and
  per-term arrays the compiled ranking reads (a ``PostingsPlan``, reusable for as long as
  the files do not change);
- ``plan_topk`` ranks every file's rows in one compiled call (``engine.table_topk``), ties
  going to the lower id, starting from the doc-id intervals (of all files) most likely
  to hold the best rows. A plan's first call bounds the intervals by block metadata; a
  second with the same statistics decodes every posting for tighter bounds and keeps
  them with the plan for every later call.

``search_files`` chains all four for a list of readers whose rows are numbered in list
order (file ``i``'s row ``r`` is ``offset_i + r``). Plain queries only: terms and excluded
terms (phrases, prefixes and weights go file by file through ``scoring.search_fields``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quiver.superfile.errors import CorruptFileError, QueryError
from quiver.superfile.fts.codec import BLOCK_SIZE, block_count, pack_ranges
from quiver.superfile.fts.engine import (
    K1,
    B,
    idf,
    table_block_intervals,
    table_intervals,
    table_topk,
)
from quiver.superfile.fts.query import MAX_GROUPS, ParsedQuery, check_and_groups, parse_query
from quiver.superfile.fts.reader import FtsIndexReader, check_mode
from quiver.superfile.fts.stats import CollectionStats

__all__ = [
    "FileStats",
    "FileTerms",
    "PlanFile",
    "PlanHits",
    "PostingsPlan",
    "build_plan",
    "collection_stats",
    "default_seed",
    "file_terms",
    "packed_plan",
    "plan_topk",
    "reader_stats",
    "search_files",
    "top_order",
]


# -- statistics --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileStats:
    """One file's share of a collection: its documents, their tokens, and the document
    frequency of each term asked about (absent: 0)."""

    num_docs: int
    total_tokens: int
    doc_freqs: Mapping[str, int] = field(default_factory=dict)


def reader_stats(reader: FtsIndexReader, terms: Iterable[str]) -> FileStats:
    """A file's own statistics for ``terms``, as its index records them."""
    return FileStats(reader.num_docs, reader.total_tokens,
                     {t: reader.doc_freq(t) for t in dict.fromkeys(terms)})


def collection_stats(files: Iterable[FileStats], terms: Iterable[str] = ()) -> CollectionStats:
    """The statistics of the union of ``files``: N and token counts summed, each term's
    document frequency summed over the files (every one of ``terms`` present, 0 if no file
    holds it). An empty collection has N = 1 and average length 0."""
    docs = tokens = 0
    dfs: dict[str, int] = dict.fromkeys(terms, 0)
    for f in files:
        docs += int(f.num_docs)
        tokens += int(f.total_tokens)
        for t, df in f.doc_freqs.items():
            dfs[t] = dfs.get(t, 0) + int(df)
    return CollectionStats(num_docs=max(docs, 1), avg_doc_len=tokens / docs if docs else 0.0,
                           doc_freqs=dfs)


# -- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileTerms:
    """What one file holds of a query's terms: validated postings references (position in
    the query's terms, buffer, start, length, df), the uint8 mask of the rows it may return
    (None: every row), the file's average document length (the block bounds use it) and
    its document count."""

    refs: list[tuple[int, np.ndarray, int, int, int]]
    mask: np.ndarray | None
    avg_doc_len: float
    num_docs: int


def file_terms(reader: FtsIndexReader, query: ParsedQuery, and_mode: bool, allow: Any = None
               ) -> FileTerms | None:
    """The postings ``reader`` holds of ``query.terms``, or None when the file cannot match
    (no term present; in 'and' mode, some term absent). ``allow`` (doc ids, e.g. a
    ``pyroaring.BitMap`` of live rows) restricts the rows; excluded terms clear rows too."""
    refs = reader.postings_refs(list(query.terms))
    if not refs or (and_mode and len(refs) < len(query.terms)):
        return None
    mask = reader.row_mask(query, allow)
    return FileTerms(refs, mask, reader.avg_doc_len if reader.avg_doc_len > 0 else 1.0,
                     reader.num_docs)


@dataclass(frozen=True)
class PlanFile:
    """One file of a plan: the caller's handle for it (``key``), what it holds of the
    query, and how its rows are numbered in the ranking: ``ids[row]`` when ``ids`` is given,
    else ``id_base + row``. ``name`` labels it in errors."""

    key: Any
    terms: FileTerms
    id_base: int = 0
    ids: np.ndarray | None = None
    name: str = ""


@dataclass
class PostingsPlan:
    """Everything a query reads of a set of files, copied into one buffer.

    ``files`` are the callers' keys in plan order; file ``f`` owns entries
    ``f_t0[f]:f_t0[f + 1]`` of the per-term arrays (``t_base`` into ``buf``, ``t_nb`` blocks,
    ``t_q`` position in the query's terms). Its row ``r`` ranks as ``f_idbase[f] + r``, or
    ``ids[f_ioff[f] + r]`` when ``f_ioff[f]`` is not negative; ``f_moff[f]`` is the offset of
    its row mask in ``masks`` (-1: every row counts). ``nbytes`` is what the plan holds,
    counting room for its interval order.

    The interval order (every file's doc-id intervals with their score bounds, highest
    first; see ``engine.table_intervals``) depends on the query's statistics as well: it is
    computed by the second ``plan_topk`` with the same statistics and kept for later ones
    (the first goes by block bounds, see ``intervals``).
    """

    files: list[Any]
    buf: np.ndarray
    f_t0: np.ndarray
    t_base: np.ndarray
    t_nb: np.ndarray
    t_q: np.ndarray
    f_driver: np.ndarray
    masks: np.ndarray
    f_moff: np.ndarray
    f_avgdl: np.ndarray
    f_idbase: np.ndarray
    ids: np.ndarray
    f_ioff: np.ndarray
    nbytes: int
    names: tuple[str, ...] = ()
    _order: tuple[Any, tuple[np.ndarray, ...]] | None = field(default=None, repr=False)
    _searched: Any = field(default=None, repr=False)
    _building: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def name_of(self, f: int) -> str:
        """File ``f``'s label in errors."""
        return self.names[f] if f < len(self.names) and self.names[f] else f"#{f}"

    def interval_order(self, idf_q: np.ndarray, avgdl: float, and_mode: bool
                       ) -> tuple[np.ndarray, ...]:
        """The plan's intervals for these statistics (``engine.table_intervals``) and the
        order of the ``default_seed`` highest bounds (``top_order``); computed once per
        statistics and kept."""
        key = _stats_key(idf_q, avgdl, and_mode)
        got = self._order
        if got is not None and got[0] == key:
            return got[1]
        with self._lock:
            got = self._order
            if got is not None and got[0] == key:
                return got[1]
            nq = len(idf_q)
            iv_file, iv_lo, iv_hi, iv_bound, iv_blk, iv_ub, bad = table_intervals(
                self.buf, self.f_t0, self.t_base, self.t_nb, self.t_q, idf_q,
                _group_masks(nq), _required(nq), and_mode, K1, B, avgdl, INTERVAL_WIDTH)
            if bad >= 0:
                raise CorruptFileError(f"full-text postings of {self.name_of(bad)} failed to "
                                       "decode")
            ordered = (iv_file, iv_lo, iv_hi, iv_bound, iv_blk, iv_ub,
                       top_order(iv_bound, default_seed(len(iv_bound))))
            self._order = (key, ordered)
            return ordered

    def _build_quietly(self, idf_q: np.ndarray, avgdl: float, and_mode: bool) -> None:
        try:
            self.interval_order(idf_q, avgdl, and_mode)
        except CorruptFileError as exc:
            # The searches report it themselves, from their own decoding.
            log.debug("no intervals kept for a plan: %s", exc)

    def intervals(self, idf_q: np.ndarray, avgdl: float, and_mode: bool
                  ) -> tuple[np.ndarray, ...]:
        """What a search with these statistics goes by, as ``interval_order`` returns it.

        Decoding every posting for tight bounds pays off over repeated searches, not over
        one: the first search of a plan with some statistics bounds its intervals by block
        metadata (``engine.table_block_intervals``, a cost per block) and keeps nothing;
        the next with the same statistics starts building ``interval_order``'s on a
        background thread (on a very common term it decodes every posting: tens of ms that
        no search should wait for) and, like every search until they are in place, goes by
        block bounds meanwhile."""
        key = _stats_key(idf_q, avgdl, and_mode)
        got = self._order
        if got is not None and got[0] == key:
            return got[1]
        if self._searched == key:
            with self._lock:
                start = self._building != key
                self._building = key
            if start:
                _INTERVAL_BUILDS.submit(self._build_quietly, idf_q.copy(), avgdl, and_mode)
        else:
            self._searched = key
        nq = len(idf_q)
        iv = table_block_intervals(
            self.buf, self.f_t0, self.t_base, self.t_nb, self.t_q, idf_q, _group_masks(nq),
            _required(nq), and_mode, self.f_avgdl, K1, B, avgdl)
        return (*iv, top_order(iv[3], default_seed(len(iv[3]), BLOCK_SEED_MIN)))


def _stats_key(idf_q: np.ndarray, avgdl: float, and_mode: bool) -> tuple[bytes, float, bool]:
    return idf_q.tobytes(), float(avgdl), bool(and_mode)


def default_seed(n_intervals: int, least: int | None = None) -> int:
    """How many of ``n_intervals`` go first in bound order: at least ``least`` (default
    ``SEED_MIN``), else one in ``SEED_SHARE``."""
    return max(SEED_MIN if least is None else least, n_intervals // SEED_SHARE)


def top_order(bound: np.ndarray, seed: int) -> np.ndarray:
    """Indexes of the ``seed`` highest of ``bound``, highest first, equal bounds in index
    order: the first ``seed`` of a stable descending sort, without sorting the rest."""
    n = len(bound)
    if seed >= n:
        return np.argsort(-bound, kind="stable")
    if seed <= 0:
        return np.zeros(0, np.int64)
    kth = bound[np.argpartition(bound, n - seed)[n - seed]]
    above = np.flatnonzero(bound > kth)
    # Ties at the cut: the lowest indexes, as a stable sort would take them.
    chosen = np.concatenate([above, np.flatnonzero(bound == kth)[: seed - len(above)]])
    return chosen[np.argsort(-bound[chosen], kind="stable")]


def build_plan(files: Sequence[PlanFile], and_mode: bool) -> PostingsPlan:
    """One plan over ``files``, searched in the order given (put the biggest first: they set
    a high floor early for the rest)."""
    for f in files:
        # The compiled ranking reads a row's id without bounds checks.
        if f.ids is not None and len(f.ids) < f.terms.num_docs:
            raise QueryError(f"file {f.name or f.key!r} numbers {len(f.ids)} of its "
                             f"{f.terms.num_docs} rows")
    refs = [r for f in files for r in f.terms.refs]
    buf, t_base = pack_ranges([(src, start, length) for _, src, start, length, _ in refs])
    masks = [f.terms.mask for f in files if f.terms.mask is not None]
    sizes = np.array([0 if f.terms.mask is None else len(f.terms.mask) for f in files],
                     np.int64)
    f_moff = np.cumsum(sizes) - sizes
    f_moff[np.array([f.terms.mask is None for f in files], np.bool_)] = -1
    id_parts = [f.ids for f in files if f.ids is not None]
    id_sizes = np.array([0 if f.ids is None else len(f.ids) for f in files], np.int64)
    f_ioff = np.cumsum(id_sizes) - id_sizes
    f_ioff[np.array([f.ids is None for f in files], np.bool_)] = -1
    ids = (np.concatenate(id_parts).astype(np.int64, copy=False) if id_parts
           else np.zeros(1, np.int64))
    return packed_plan(
        [f.key for f in files], tuple(f.name for f in files), buf, t_base,
        np.array([r[4] for r in refs], np.int64), np.array([r[0] for r in refs], np.int64),
        np.array([len(f.terms.refs) for f in files], np.int64),
        np.array([f.terms.avg_doc_len for f in files], np.float64),
        np.array([f.id_base for f in files], np.int64), and_mode,
        masks=np.concatenate(masks) if masks else None, f_moff=f_moff, ids=ids, f_ioff=f_ioff)


def packed_plan(keys: list[Any], names: tuple[str, ...], buf: np.ndarray, t_base: np.ndarray,
                dfs: np.ndarray, t_q: np.ndarray, counts: np.ndarray, f_avgdl: np.ndarray,
                f_idbase: np.ndarray, and_mode: bool, *, masks: np.ndarray | None = None,
                f_moff: np.ndarray | None = None, ids: np.ndarray | None = None,
                f_ioff: np.ndarray | None = None) -> PostingsPlan:
    """The plan of files whose postings are packed already (what ``build_plan`` makes of
    ``PlanFile`` s, for callers that gather them as whole arrays): file ``f`` is
    ``keys[f]`` and owns ``counts[f]`` consecutive entries of the per-term arrays (``buf``
    offsets, document frequencies, positions in the query's terms, ascending). Without
    ``masks`` every row counts; without ``ids`` rows rank as ``f_idbase[f] + row``."""
    nf = len(keys)
    f_t0 = np.zeros(nf + 1, np.int64)
    np.cumsum(counts, out=f_t0[1:])
    f_driver = np.zeros(nf, np.int64)
    if and_mode and len(dfs):
        check_and_groups(int(t_q.max()) + 1)
        # Candidates come from the term with the fewest postings in the file (the first
        # such term on a tie).
        seg = np.repeat(np.arange(nf, dtype=np.int64), counts)
        first = np.lexsort((np.arange(len(dfs)), dfs, seg))[f_t0[:-1][counts > 0]]
        f_driver[counts > 0] = np.left_shift(1, t_q[first])
    if masks is None or f_moff is None:
        masks, f_moff = np.zeros(1, np.uint8), np.full(nf, -1, np.int64)
    if ids is None or f_ioff is None:
        ids, f_ioff = np.zeros(1, np.int64), np.full(nf, -1, np.int64)
    t_nb = block_count(dfs)
    max_t = int(counts.max()) if nf else 1
    # At most one interval per file, two per block and one per INTERVAL_WIDTH postings: file,
    # start, end, bound, rank, and per term a block and its bound.
    n_iv = nf + int(t_nb.sum()) * (2 + BLOCK_SIZE // INTERVAL_WIDTH)
    order_bytes = n_iv * (4 + 8 + 8 + 8 + 8 + 12 * max_t)
    return PostingsPlan(
        files=list(keys), buf=buf, f_t0=f_t0, t_base=t_base, t_nb=t_nb, t_q=t_q,
        f_driver=f_driver, masks=masks, f_moff=f_moff, f_avgdl=f_avgdl, f_idbase=f_idbase,
        ids=ids, f_ioff=f_ioff, nbytes=buf.nbytes + masks.nbytes + ids.nbytes + order_bytes,
        names=names)


log = logging.getLogger(__name__)

# Builds the per-posting intervals of repeated plans off the searching thread; one at a time,
# so that a burst of new repeated queries cannot take every core. Its kernel releases the GIL.
_INTERVAL_BUILDS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quiver-intervals")

def settle_interval_builds() -> None:
    """Waits for the interval builds started so far (the warm-up, which must leave every
    kernel compiled before it returns)."""
    _INTERVAL_BUILDS.submit(int).result()


# -- ranking -----------------------------------------------------------------------------------

# How many intervals are scored in bound order before the rest go in row order: at least
# SEED_MIN, else one in SEED_SHARE of them. Enough to bring the k-th best score near its final
# value when few intervals can beat it (then the search ends there); few enough that when
# many can, blocks shared by intervals scored apart are not decoded twice too often.
SEED_MIN = 64
# The same least count over intervals bounded by block metadata: each spans a whole block of
# every term in it (BLOCK_SIZE // INTERVAL_WIDTH times the postings of a narrow one), so
# fewer of them reach the same rows, and every one scored ahead decodes blocks the pass in
# row order decodes again.
BLOCK_SEED_MIN = 16
SEED_SHARE = 16
# Most postings of one term in an interval: narrower intervals bound their scores tighter
# (fewer are scored) at the cost of more of them to keep and to rank.
INTERVAL_WIDTH = 8

@dataclass(frozen=True)
class PlanHits:
    """A top-k over a plan's files, best first (ties to the lower id): per hit the index of
    its file in ``plan.files``, its row in that file, its ranking id and its score;
    ``blocks_decoded`` counts the postings blocks the ranking decoded."""

    file_index: np.ndarray
    local: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    blocks_decoded: int = 0

    @classmethod
    def empty(cls) -> PlanHits:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, np.zeros(0, np.float32))


def plan_topk(plan: PostingsPlan, terms: Sequence[str], stats: CollectionStats, k: int,
              and_mode: bool, *, seed: int | None = None) -> PlanHits:
    """BM25 top-``k`` of the plan's rows for the query ``terms`` the plan was built from,
    every file scored with ``stats`` (which must hold each term's document frequency).

    ``seed`` is how many intervals of highest bound are scored before the rest go in file
    order (default: see ``SEED_SHARE``, and ``BLOCK_SEED_MIN`` while the plan goes by block
    bounds); it changes how much is decoded, never the result."""
    if k <= 0 or not plan.files:
        return PlanHits.empty()
    n_docs = float(stats.num_docs)
    avgdl = float(stats.avg_doc_len) if stats.avg_doc_len > 0 else 1.0
    try:
        dfs = np.array([stats.doc_freqs[t] for t in terms], np.float64)
    except KeyError as exc:
        raise QueryError(
            f"collection statistics have no document frequency for term {exc.args[0]!r}"
        ) from None
    nq = len(terms)
    if and_mode:
        check_and_groups(nq)
    idf_q = idf(n_docs, dfs)
    iv_file, iv_lo, iv_hi, iv_bound, iv_blk, iv_ub, iv_order = plan.intervals(
        idf_q, avgdl, and_mode)
    if seed is None:
        # As many as the intervals come ranked for: their kind sets how many go first.
        seed = len(iv_order)
    if len(iv_order) < min(seed, len(iv_file)):
        iv_order = top_order(iv_bound, seed)
    n, hs, hd, hf, hl, decoded, bad = table_topk(
        plan.buf, plan.f_t0, plan.t_base, plan.t_nb, plan.t_q, idf_q, _group_masks(nq),
        np.ones(nq, np.bool_), _required(nq), and_mode, plan.f_driver, int(k), -np.inf,
        plan.masks, plan.f_moff, plan.f_idbase, plan.ids, plan.f_ioff, K1, B, avgdl, iv_file,
        iv_lo, iv_hi, iv_bound, iv_blk, iv_ub, iv_order, int(seed))
    if bad >= 0:
        raise CorruptFileError(f"full-text postings of {plan.name_of(bad)} failed to decode")
    scores, ids, fidx, local = hs[:n], hd[:n], hf[:n], hl[:n]
    order = np.lexsort((ids, -scores))
    return PlanHits(fidx[order], local[order], ids[order], scores[order].astype(np.float32),
                    int(decoded))


def _group_masks(nq: int) -> np.ndarray:
    # Plain queries: every term is its own group (see ``query.MAX_GROUPS``).
    return np.left_shift(1, np.arange(nq, dtype=np.int64) % MAX_GROUPS)


def _required(nq: int) -> int:
    """Every group's bit: what an AND query's row must cover."""
    return (1 << min(nq, MAX_GROUPS)) - 1


def search_files(readers: Sequence[FtsIndexReader], query: str | ParsedQuery, k: int, *,
                 mode: str = "or", stats: CollectionStats | None = None,
                 allows: Sequence[Any] | None = None) -> PlanHits:
    """BM25 top-``k`` over the rows of several files taken as one collection.

    File ``i``'s row ``r`` ranks as id ``sum(num_docs of files before i) + r``. ``stats``
    defaults to the files' own statistics summed (``collection_stats``); ``allows[i]``
    (doc ids, or None for every row) restricts file ``i``.
    """
    q = parse_query(query) if isinstance(query, str) else query
    and_mode = check_mode(mode)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise QueryError(f"k must be a non-negative integer, got {k!r}")
    if not q.is_plain or q.prefixes:
        raise QueryError("a search across files takes terms and excluded terms only")
    if not q.terms:
        raise QueryError("a full-text query needs at least one term that is not excluded")
    if allows is not None and len(allows) != len(readers):
        raise QueryError("allows must hold one entry per reader")
    if stats is None:
        stats = collection_stats((reader_stats(r, q.terms) for r in readers), q.terms)
    offsets = np.zeros(len(readers) + 1, np.int64)
    np.cumsum(np.array([r.num_docs for r in readers], np.int64), out=offsets[1:])
    k = min(int(k), int(offsets[-1]))
    parts = []
    for i, r in enumerate(readers):
        got = file_terms(r, q, and_mode, None if allows is None else allows[i])
        if got is not None:
            parts.append(PlanFile(i, got, id_base=int(offsets[i])))
    plan = build_plan(parts, and_mode)
    hits = plan_topk(plan, q.terms, stats, k, and_mode)
    # Plan order is the readers' order minus the files that cannot match.
    keys = np.array(plan.files, np.int64) if plan.files else np.zeros(0, np.int64)
    return PlanHits(keys[hits.file_index], hits.local, hits.ids, hits.scores,
                    hits.blocks_decoded)
