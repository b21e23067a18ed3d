"""Search across the files of one snapshot: prune, fan out, merge one global top-k.

BM25 scores every file with table-wide statistics (document count, average
length and each term's document frequency summed over the files), so a row's
score does not depend on how the table was split into files. Files whose term
Bloom filters rule the query out are never opened; the k-th best score found
so far is handed to the next files as a floor. Vector search visits files in
order of the smallest distance their (centroid, radius) ball allows and stops
once no remaining file can beat the k-th nearest. Tombstoned and filtered-out
rows are excluded inside each file's search, so k live hits come back whenever
k live rows match.

What this module owns is the table's part: pruning by the manifest's summaries, the
statistics gathered from the manifest and the files (tombstones subtracted), fan-out over
threads, interrupt checks. Summing statistics, the multi-file postings plan and its top-k
are ``quiver.superfile.fts.multi``'s; one file's scoring is ``quiver.superfile.fts.scoring``'s.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np
import pyarrow as pa

from quiver.superfile import CollectionStats, Metric, ParsedQuery, QueryError, parse_query
from quiver.superfile.fts.multi import (
    FileStats,
    FileTerms,
    PlanFile,
    PostingsPlan,
    build_plan,
    collection_stats,
    file_terms,
    plan_topk,
)
from quiver.superfile.fts.query import parse_fields
from quiver.superfile.fts.scoring import FieldSearch, search_fields
from quiver.superfile.fts.tokenizer import tokenize
from quiver.superfile.spec import vector_dim
from quiver.supertable import interrupt
from quiver.supertable.bloom import TermBloom
from quiver.supertable.fts_lookup import forget, table_terms
from quiver.supertable.manifest import ID_COLUMN, FileEntry, bitmap_of, bitmap_rows
from quiver.supertable.readers import ReaderPool
from quiver.supertable.snapshot import Filter, Snapshot, as_dnf

RRF_K = 60


def hybrid_depth(k: int) -> int:
    """How deep each ranking a hybrid search fuses goes for ``k`` results."""
    return max(k * 4, 50)


# How many searches of each kind ("bm25", "vector", "hybrid", "token_match",
# "exact_match") this process has started: what a caller can check to know a search ran.
RUNS: Counter[str] = Counter()
_runs_lock = threading.Lock()


def _ran(kind: str) -> None:
    with _runs_lock:
        RUNS[kind] += 1


@dataclass
class Hits:
    """Search hits of one snapshot: per hit its file, local row, table ``_id`` and score."""

    files: list[FileEntry]
    file_index: np.ndarray
    local: np.ndarray
    ids: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Hits:
        return cls([], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros(0, np.float32))


def _check_k(k: int, snap: Snapshot) -> int:
    """``k`` as a count of hits: never more than the rows the snapshot holds, so what a
    search allocates is bounded by the table, whatever ``k`` asks for."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise QueryError(f"k must be a non-negative integer, got {str(k)[:40]}")
    return int(min(int(k), snap.manifest.num_rows))


def _fts_files(snap: Snapshot, column: str) -> list[FileEntry]:
    snap.check_columns([column])
    if column not in snap.manifest.spec.fts:
        raise QueryError(f"column {column!r} of table {snap.name!r} has no BM25 index")
    return [f for f in snap.files if f.live_rows > 0]


def _bloom_keeps(snap: Snapshot, entry: FileEntry, column: str, q: ParsedQuery,
                 and_mode: bool, hashes: np.ndarray) -> bool:
    """False when the file's term filter proves the query cannot match any of its rows."""
    summary = snap.pool.summary(entry)
    bloom = summary.blooms.get(column) if summary else None
    if bloom is None or not q.terms:
        return True
    present = bloom.might_contain(hashes)
    if and_mode:
        return bool(present.all())
    return bool(present.any()) or bool(q.prefixes)


def _live_size(snap: Snapshot, entry: FileEntry, column: str) -> tuple[int, int]:
    """(documents, tokens) of ``column`` over the live rows of one file."""
    if entry.live_rows == 0:
        return 0, 0
    docs, tokens = entry.fts_sizes.get(column, (entry.rows, 0))
    if not entry.tombstones:
        return docs, tokens
    dead_tokens = entry.dead_tokens_of(column)
    if dead_tokens is None:
        # A manifest that predates dead token counts: the dead rows' lengths come from the
        # index, which opens the file.
        lengths = snap.fts(entry, column).doc_lengths()
        dead_tokens = int(lengths[bitmap_rows(entry.tombstones).astype(np.int64)].sum())
    return docs - len(entry.tombstones), tokens - dead_tokens


# Per file (documents, tokens) of a column's live rows, and the table's totals.
_Sizes = tuple[tuple[tuple[int, int], ...], CollectionStats]


def table_stats(snap: Snapshot, column: str, files: list[FileEntry], q: ParsedQuery
                ) -> tuple[CollectionStats, ParsedQuery]:
    """Table-wide BM25 statistics for the query's terms (prefix expansions included).

    ``files`` are every file of the snapshot with live rows, not only those a filter or
    the query's mode leaves to search: statistics describe the table, so a row scores the
    same whatever else the query asks. Tombstoned rows are not part of the table and
    count nowhere (N, average length, document frequencies), so scores do not depend on
    how many deleted or superseded rows await compaction. A version never changes, so
    what is computed for one is kept for the next query of the same version.

    What each file opens: N and the average length come from the manifest alone (its
    sizes as written less the dead rows' token counts recorded with the tombstones), so
    no file is opened for them. A term's document frequency is read from the index of
    every file whose term filter says it may hold the term, and for such a file with
    tombstones the term's postings are intersected with them to stay exact; files the
    filter rules out are not opened. Prefix terms are expanded in every file.
    """
    cache = snap.pool.stats_cache
    version = snap.version
    # The cache holds each kind of fact under its own key tag ("sizes", "prefix", "df"),
    # so the tag says the type of what a get returns.
    sizes = cast("_Sizes | None", cache.get((version, column, "sizes")))
    if sizes is None:
        per_file_sizes = tuple(_live_size(snap, f, column) for f in files)
        sizes = cache.put((version, column, "sizes"), (per_file_sizes, collection_stats(
            FileStats(d, n) for d, n in per_file_sizes)))
    per_file_sizes, totals = sizes
    terms = set(q.terms)
    for prefix in q.prefixes:
        expansion = cast("frozenset[str] | None", cache.get((version, column, "prefix", prefix)))
        if expansion is None:
            found: set[str] = set()
            for f in files:
                found.update(snap.fts(f, column).terms_with_prefix(prefix))
            expansion = cache.put((version, column, "prefix", prefix), frozenset(found))
        terms.update(expansion)
    dfs: dict[str, int] = {}
    missing = []
    for t in sorted(terms):
        known_df = cast("int | None", cache.get((version, column, "df", t)))
        if known_df is None:
            missing.append(t)
        else:
            dfs[t] = known_df
    if missing:
        # Each file's live document frequencies of the terms not known yet.
        per_file: list[dict[str, int]] = [{} for _ in files]
        hashes = TermBloom.hash_terms(missing)
        for f, found_dfs in zip(files, per_file, strict=True):
            summary = snap.pool.summary(f)
            bloom = summary.blooms.get(column) if summary else None
            maybe = (bloom.might_contain(hashes) if bloom is not None
                     else np.ones(len(missing), bool))
            for t, present in zip(missing, maybe.tolist(), strict=True):
                if not present:
                    continue
                fts = snap.fts(f, column)
                df = fts.doc_freq(t)
                if df and f.tombstones:
                    docs_with = fts.token_match(ParsedQuery((t,)), "or")
                    df -= f.tombstones.intersection_cardinality(bitmap_of(docs_with))
                found_dfs[t] = df
        summed = collection_stats((FileStats(d, n, found_dfs) for (d, n), found_dfs
                                   in zip(per_file_sizes, per_file, strict=True)), missing)
        for t in missing:
            dfs[t] = cache.put((version, column, "df", t), summed.doc_freqs[t])
    return CollectionStats(num_docs=totals.num_docs, avg_doc_len=totals.avg_doc_len,
                           doc_freqs=dfs), q


class _TopK:
    """The best k hits seen so far; ``floor()`` is the k-th best score once k are known.

    Ties go to the lower ``_id`` so that results do not depend on file order.
    """

    def __init__(self, k: int, larger_is_better: bool) -> None:
        self.k = k
        self.sign = 1.0 if larger_is_better else -1.0
        self.key = np.zeros(0, np.float64)
        self.ids = np.zeros(0, np.int64)
        self.file_i = np.zeros(0, np.int64)
        self.local = np.zeros(0, np.int64)

    def add(self, file_i: int, local: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> None:
        if len(ids) == 0:
            return
        key = np.concatenate([self.key, -self.sign * np.asarray(scores, np.float64)])
        all_ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])
        order = np.lexsort((all_ids, key))[: self.k]
        self.key = key[order]
        self.ids = all_ids[order]
        self.file_i = np.concatenate([self.file_i, np.full(len(ids), file_i, np.int64)])[order]
        self.local = np.concatenate([self.local, np.asarray(local, np.int64)])[order]

    @property
    def full(self) -> bool:
        return len(self.ids) >= self.k

    def floor(self) -> float | None:
        return float(-self.sign * self.key[-1]) if self.full else None

    def search_floor(self) -> float | None:
        """A floor for the next files' searches that still lets a tie with the k-th through.

        Files return only scores strictly above their floor, and the k-th score here is
        rounded to float32; one float32 step below it keeps every row that ties with the
        k-th, so a tie is settled by ``_id`` and not by which file was searched first.
        """
        kth = self.floor()
        if kth is None:
            return None
        return float(np.nextafter(np.float32(kth), np.float32(-np.inf)))

    def hits(self, files: list[FileEntry]) -> Hits:
        return Hits(files, self.file_i, self.local, self.ids,
                    (-self.sign * self.key).astype(np.float32))


def parse_columns(spec: str | Sequence[str]) -> list[tuple[str, float]]:
    """``'title^2,body'`` (or a list of such names) as ``[(column, weight), ...]``."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    out: list[tuple[str, float]] = []
    for part in parts:
        for item in str(part).split(","):
            name, _, w = item.strip().partition("^")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise QueryError(f"the column weight in {item.strip()!r} is not a number"
                                 ) from None
            if not name or not (weight > 0 and np.isfinite(weight)):
                raise QueryError(f"{item.strip()!r} is not a column with a positive weight")
            if any(name == c for c, _ in out):
                raise QueryError(f"column {name!r} is listed twice")
            out.append((name, weight))
    if not out:
        raise QueryError("a search needs at least one column")
    return out


def bm25(snap: Snapshot, column: str | Sequence[str], query: str, k: int, *,
         mode: str = "or", filter_: Filter = None, pool: ThreadPoolExecutor | None = None
         ) -> Hits:
    """BM25 top-k over one column, or several (``'title^2,body'``: a weighted sum of each
    column's BM25, see ``quiver.superfile.fts.scoring``)."""
    _ran("bm25")
    k = _check_k(k, snap)
    and_mode = mode.lower() == "and"
    if mode.lower() not in ("and", "or"):
        raise QueryError(f"mode must be 'and' or 'or', not {mode!r}")
    columns = parse_columns(column)
    if len(columns) > 1 or columns[0][1] != 1.0:
        return _bm25_fields(snap, columns, query, k, and_mode, filter_, pool)
    column = columns[0][0]
    q = parse_query(query)
    if not q.is_plain:
        return _bm25_fields(snap, columns, query, k, and_mode, filter_, pool)
    files = _fts_files(snap, column)
    if filter_ is None and not q.prefixes and q.terms:
        # Without a filter or prefixes, what a query reads of each file is fixed by the
        # version and the query's words: it is gathered once and searched in one call.
        plan = _plan(snap, column, q, and_mode, files, pool)
        if k == 0 or not plan.files:
            return Hits.empty()
        stats, q = table_stats(snap, column, files, q)
        return _search_plan(plan, q, k, and_mode, stats)
    hashes = TermBloom.hash_terms(list(q.terms))
    live = {id(f) for f in files}
    candidates = [f for f in snap.candidate_files(filter_) if id(f) in live
                  and _bloom_keeps(snap, f, column, q, and_mode, hashes)]
    if k == 0 or not candidates:
        return Hits.empty()
    stats, q = table_stats(snap, column, files, q)
    top = _TopK(k, larger_is_better=True)
    # Bigger files first: they set a high floor early for the rest.
    candidates.sort(key=lambda f: -f.live_rows)

    def run(i: int, entry: FileEntry, floor: float | None) -> tuple[int, FileEntry, np.ndarray,
                                                                     np.ndarray]:
        allow = snap.allowed(entry, filter_)
        local, scores = snap.fts(entry, column).search(
            q, k, mode=mode, floor=floor, stats=stats, allow=allow)
        return i, entry, local, scores

    _fan_out(candidates, run, top, pool, snap)
    return top.hits(candidates)


def _bm25_fields(snap: Snapshot, columns: list[tuple[str, float]], query: str, k: int,
                 and_mode: bool, filter_: Filter, pool: ThreadPoolExecutor | None) -> Hits:
    """Phrases, weights or several columns: every candidate file searched with table-wide
    statistics per column, the k-th score so far handed on as a floor."""
    names = [c for c, _ in columns]
    fq = parse_fields(query, names)
    files = _fts_files(snap, names[0])
    for c in names[1:]:
        _fts_files(snap, c)
    live = {id(f) for f in files}
    parts = []
    for c, w in columns:
        q = fq.per_field[c]
        # Statistics cover phrase words too: a phrase's idf sums its words' idfs.
        words = ParsedQuery(q.all_terms(), q.prefixes)
        stats, _ = table_stats(snap, c, files, words)
        parts.append((c, w, q, stats, words, TermBloom.hash_terms(list(words.terms))))

    def keeps(f: FileEntry) -> bool:
        # Any column that may hold any scored word keeps the file ('and' included: a
        # clause may be met in another column).
        return any(_bloom_keeps(snap, f, c, words, False, h)
                   for c, _w, q, _s, words, h in parts if q.scored)

    candidates = [f for f in snap.candidate_files(filter_) if id(f) in live and keeps(f)]
    if k == 0 or not candidates:
        return Hits.empty()
    top = _TopK(k, larger_is_better=True)
    candidates.sort(key=lambda f: -f.live_rows)

    def run(i: int, entry: FileEntry, floor: float | None) -> tuple[int, FileEntry, np.ndarray,
                                                                     np.ndarray]:
        allow = snap.allowed(entry, filter_)
        fields = [FieldSearch(snap.fts(entry, c), q, w, stats, fq.groups[c])
                  for c, w, q, stats, _words, _h in parts]
        local, scores, _ = search_fields(fields, k, and_mode=and_mode, floor=floor,
                                         allow=allow, num_groups=fq.num_groups)
        return i, entry, local, scores

    _fan_out(candidates, run, top, pool, snap)
    return top.hits(candidates)


# A plan holds the FileEntry of each file it searches as that file's key.
_Plan = PostingsPlan


class _PlanCache:
    """Recently used plans of one reader pool, bounded by the bytes they hold."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.items: OrderedDict[tuple, _Plan] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> _Plan | None:
        with self.lock:
            plan = self.items.get(key)
            if plan is not None:
                self.items.move_to_end(key)
            return plan

    def put(self, key: tuple, plan: _Plan) -> None:
        with self.lock:
            old = self.items.pop(key, None)
            if old is not None:
                self.used -= old.nbytes
            self.items[key] = plan
            self.used += plan.nbytes
            while self.used > self.budget and len(self.items) > 1:
                _, dropped = self.items.popitem(last=False)
                self.used -= dropped.nbytes


PLAN_BUDGET = 128 << 20
_plans: weakref.WeakKeyDictionary[ReaderPool, _PlanCache] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


def _plan_cache(pool: ReaderPool) -> _PlanCache:
    with _plans_lock:
        cache = _plans.get(pool)
        if cache is None:
            cache = _plans[pool] = _PlanCache(PLAN_BUDGET)
        return cache


def _plan(snap: Snapshot, column: str, q: ParsedQuery, and_mode: bool,
          files: list[FileEntry], pool: ThreadPoolExecutor | None) -> _Plan:
    cache = _plan_cache(snap.pool)
    key = (snap.version, column, q.terms, q.excluded, and_mode)
    plan = cache.get(key)
    if plan is None:
        plan = _build_plan(snap, column, q, and_mode, files, pool)
        cache.put(key, plan)
    return plan


def _build_plan(snap: Snapshot, column: str, q: ParsedQuery, and_mode: bool,
                files: list[FileEntry], pool: ThreadPoolExecutor | None) -> _Plan:
    interrupt.check()
    terms = table_terms(snap.pool, snap.version, column, files)
    found = terms.lookup(q.terms)
    nt = len(q.terms)
    keep = np.asarray(found.maybe.all(axis=1) if and_mode else found.maybe.any(axis=1))
    if terms.all_loaded and not any(f.tombstones for f in files):
        # The pass read every file's entry of every term its filter allows: the table's
        # document frequencies, as ``table_stats`` would sum them.
        _keep_doc_freqs(snap, column, q.terms, found.df.sum(axis=0))
    if not q.excluded:
        # Every file covered by the pass, without tombstones: the plan in whole-array steps.
        whole = terms.plan(found, keep, and_mode)
        if whole is not None:
            return whole
    # Bigger files first: they set a high floor early for the rest.
    candidates = sorted(np.flatnonzero(keep).tolist(), key=lambda i: -files[i].live_rows)

    def gather(i: int) -> FileTerms | None:
        entry = files[i]
        fts = terms.readers[i]
        if fts is None:
            interrupt.check()
            return file_terms(snap.fts(entry, column), q, and_mode, snap.live(entry))
        df = found.df[i]
        present = np.flatnonzero(df).tolist()
        if not present or (and_mode and len(present) < nt):
            return None
        buf = terms.postings[i]
        refs = [(t, buf, int(found.off[i, t]), int(found.length[i, t]), int(df[t]))
                for t in present]
        mask = fts.row_mask(q, snap.live(entry)) if q.excluded or entry.tombstones else None
        return FileTerms(refs, mask, fts.avg_doc_len if fts.avg_doc_len > 0 else 1.0,
                         fts.num_docs)

    slow = [i for i in candidates if terms.readers[i] is None]
    if pool is not None and len(slow) > 1:
        # Files the pass does not cover yet are opened and read in parallel.
        opened = dict(zip(slow, pool.map(interrupt.carry(gather), slow), strict=True))
        gathered = [opened[i] if i in opened else gather(i) for i in candidates]
    else:
        gathered = [gather(i) for i in candidates]
    if slow and terms.would_cover(snap.pool, column, slow):
        # Those files are open now: the next query's pass takes them in.
        forget(snap.pool, snap.version, column)
    parts = []
    for i, got in zip(candidates, gathered, strict=True):
        if got is None:
            continue
        entry = files[i]
        ids = None
        if entry.id_max - entry.id_min + 1 != entry.rows:
            ids = snap.ids_of(entry, np.arange(entry.rows, dtype=np.int64))
        parts.append(PlanFile(entry, got, entry.id_min, ids, entry.path))
    return build_plan(parts, and_mode)


def _keep_doc_freqs(snap: Snapshot, column: str, terms: tuple[str, ...], dfs: np.ndarray
                    ) -> None:
    cache = snap.pool.stats_cache
    for t, df in zip(terms, dfs.tolist(), strict=True):
        key = (snap.version, column, "df", t)
        if cache.get(key) is None:
            cache.put(key, int(df))


def _search_plan(plan: _Plan, q: ParsedQuery, k: int, and_mode: bool,
                 stats: CollectionStats) -> Hits:
    got = plan_topk(plan, q.terms, stats, k, and_mode)
    return Hits(plan.files, got.file_index, got.local, got.ids, got.scores)


def _fan_out(candidates, run, top: _TopK, pool, snap: Snapshot) -> None:
    if pool is None or len(candidates) == 1:
        for i, entry in enumerate(candidates):
            interrupt.check()
            _, _, local, scores = run(i, entry, top.search_floor())
            top.add(i, local, snap.ids_of(entry, local), scores)
        return
    width = getattr(pool, "_max_workers", 2)
    pending = list(enumerate(candidates))
    run = interrupt.carry(run)
    while pending:
        interrupt.check()
        wave, pending = pending[:width], pending[width:]
        floor = top.search_floor()
        for i, entry, local, scores in pool.map(lambda p, f=floor: run(p[0], p[1], f), wave):
            top.add(i, local, snap.ids_of(entry, local), scores)


def _query_vector(snap: Snapshot, column: str, vector: Sequence[float] | np.ndarray
                  ) -> np.ndarray:
    snap.check_columns([column])
    if column not in snap.manifest.spec.vector:
        raise QueryError(f"column {column!r} of table {snap.name!r} has no vector index")
    dim = vector_dim(snap.manifest.schema.field(column).type)
    try:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"query vector for {column!r} is not a list of numbers: {exc}") from None
    if q.shape[0] != dim:
        raise QueryError(f"query vector for {column!r} has {q.shape[0]} values; "
                         f"the column holds vectors of {dim}")
    if not np.all(np.isfinite(q)):
        raise QueryError(f"query vector for {column!r} contains NaN or infinity")
    return q


def _lower_bound(metric: Metric, q: np.ndarray, centroid: np.ndarray, radius: float) -> float:
    """The smallest distance any vector inside the ball (centroid, radius) can have to q."""
    if metric is Metric.COSINE:
        n = float(np.linalg.norm(q))
        qn = q / n if n > 0 else q
        gap = max(0.0, float(np.linalg.norm(qn - centroid)) - radius)
        return gap * gap / 2.0
    if metric is Metric.L2:
        return max(0.0, float(np.linalg.norm(q - centroid)) - radius)
    return -(float(q @ centroid) + float(np.linalg.norm(q)) * radius)


def vector(snap: Snapshot, column: str, query: Sequence[float] | np.ndarray, k: int, *,
           nprobe: int | None = None, filter_: Filter = None,
           pool: ThreadPoolExecutor | None = None) -> Hits:
    _ran("vector")
    k = _check_k(k, snap)
    q = _query_vector(snap, column, query)
    metric = snap.manifest.spec.vector[column]
    files = snap.candidate_files(filter_)
    if k == 0 or not files:
        return Hits.empty()
    bounds: list[tuple[float, FileEntry]] = []
    for f in files:
        summary = snap.pool.summary(f)
        vs = summary.vectors.get(column) if summary else None
        if vs is not None and vs.count == 0:
            continue
        lb = -np.inf if vs is None else _lower_bound(metric, q, vs.centroid, vs.radius)
        bounds.append((lb, f))
    bounds.sort(key=lambda b: b[0])
    top = _TopK(k, larger_is_better=False)
    for i, (lb, entry) in enumerate(bounds):
        kth = top.floor()
        # A small tolerance keeps float rounding in the bound from skipping a true neighbour.
        if kth is not None and lb > kth + 1e-6:
            break
        interrupt.check()
        allow = snap.allowed(entry, filter_)
        if allow is not None and len(allow) == 0:
            continue
        local, dists = snap.vectors(entry, column).search(q, k, nprobe=nprobe, allow=allow)
        top.add(i, local.astype(np.int64), snap.ids_of(entry, local), dists)
    return top.hits([b[1] for b in bounds])


def hybrid(snap: Snapshot, text_column: str, text: str, vector_column: str,
           query: Sequence[float] | np.ndarray, k: int, *, filter_: Filter = None,
           pool: ThreadPoolExecutor | None = None, text_weight: float = 1.0,
           vector_weight: float = 1.0) -> Hits:
    """Weighted reciprocal-rank fusion of BM25 and vector rankings: the sum over the two
    lists of ``weight / (60 + rank)``."""
    _ran("hybrid")
    weights = (float(text_weight), float(vector_weight))
    if not all(w >= 0 and np.isfinite(w) for w in weights) or not any(weights):
        raise QueryError(f"hybrid weights must be non-negative and not both 0, got {weights}")
    k = _check_k(k, snap)
    depth = hybrid_depth(k)
    lists = [bm25(snap, text_column, text, depth, filter_=filter_, pool=pool),
             vector(snap, vector_column, query, depth, filter_=filter_, pool=pool)]
    fused: dict[int, float] = {}
    where: dict[int, tuple[FileEntry, int]] = {}
    for hits, weight in zip(lists, weights, strict=True):
        for rank, (fi, lo, i) in enumerate(zip(hits.file_index.tolist(), hits.local.tolist(),
                                               hits.ids.tolist(), strict=True)):
            fused[i] = fused.get(i, 0.0) + weight / (RRF_K + rank + 1)
            where.setdefault(i, (hits.files[fi], lo))
    best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    files: list[FileEntry] = []
    index: dict[str, int] = {}
    fidx, local = [], []
    for i, _ in best:
        entry, lo = where[i]
        if entry.path not in index:
            index[entry.path] = len(files)
            files.append(entry)
        fidx.append(index[entry.path])
        local.append(lo)
    return Hits(files, np.array(fidx, np.int64), np.array(local, np.int64),
                np.array([i for i, _ in best], np.int64),
                np.array([s for _, s in best], np.float32))


def token_match(snap: Snapshot, column: str, query: str, mode: str = "or",
                filter_: Filter = None) -> np.ndarray:
    """Table ``_id`` of every live row whose column holds any / all query tokens."""
    _ran("token_match")
    q = parse_query(query)
    and_mode = mode.lower() == "and"
    files = _fts_files(snap, column)
    hashes = TermBloom.hash_terms(list(q.terms))
    out = []
    for f in snap.candidate_files(filter_):
        if f not in files or not _bloom_keeps(snap, f, column, q, and_mode, hashes):
            continue
        local = snap.fts(f, column).token_match(q, mode)
        out.append(snap.ids_of(f, snap.restrict(f, local, filter_)))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def exact_match(snap: Snapshot, column: str, value: str, filter_: Filter = None) -> np.ndarray:
    """Table ``_id`` of every live row whose column equals ``value`` exactly."""
    _ran("exact_match")
    snap.check_columns([column])
    if not isinstance(value, str):
        raise QueryError(f"exact match needs a string value, not {type(value).__name__}")
    # The value is literal text, not a query: '-' and '*' are characters, and a value
    # without any token (punctuation only) is still a value some rows may hold.
    tokens = list(dict.fromkeys(tokenize(value)))
    # Every row found equals the value: the filter's own ``column = value`` needs no check
    # on the rows (which would read them again), only the rest of it does.
    rest = _besides_equality(filter_, column, value)
    out = []
    for f in snap.candidate_files(filter_):
        if tokens and column in snap.manifest.spec.fts:
            summary = snap.pool.summary(f)
            bloom = summary.blooms.get(column) if summary else None
            if bloom is not None and not bloom.might_contain(list(tokens)).all():
                continue
        local = snap.reader(f).exact_match(column, value)
        out.append(snap.ids_of(f, snap.restrict(f, local, rest)))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _besides_equality(filter_: Filter, column: str, value: str) -> Filter:
    dnf = as_dnf(filter_)
    if dnf is None or len(dnf) != 1:
        return filter_
    rest = [c for c in dnf[0] if not (c[0] == column and c[1] in ("=", "==") and c[2] == value)]
    return [rest] if rest else None


def materialize(snap: Snapshot, hits: Hits, columns: Sequence[str] | None,
                score_name: str = "score") -> pa.Table:
    """``_id``, score and the chosen columns of each hit, in hit order."""
    wanted = [c for c in (columns if columns is not None else snap.schema.names)
              if c != ID_COLUMN]
    snap.check_columns(wanted)
    fields = [snap.manifest.schema.field(ID_COLUMN), pa.field(score_name, pa.float32())]
    fields += [snap.manifest.schema.field(c) for c in wanted]
    if len(hits.ids) == 0:
        return pa.Table.from_pylist([], schema=pa.schema(fields))
    arrays = [pa.array(hits.ids, pa.int64()), pa.array(hits.scores, pa.float32())]
    if wanted:
        # Each file's hits read in one take, then put back in hit order.
        parts: list[pa.Table] = []
        order: list[np.ndarray] = []
        for fi in np.unique(hits.file_index):
            sel = np.nonzero(hits.file_index == fi)[0]
            entry = hits.files[int(fi)]
            parts.append(snap.conform(snap.reader(entry).take(hits.local[sel], wanted)))
            order.append(sel)
        position = np.argsort(np.concatenate(order), kind="stable")
        rows = pa.concat_tables(parts).take(pa.array(position))
        arrays += [rows.column(c).combine_chunks() for c in wanted]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
