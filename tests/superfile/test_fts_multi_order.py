"""The bound-ordered search across files (``plan_topk``'s ``seed`` intervals of highest
bound first, the rest in row order) against brute force: how many intervals go first
changes what is decoded, never the hits, their order or their scores."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pyarrow as pa
import pytest
from pyroaring import BitMap

from quiver.superfile.fts import FtsIndexReader, build_fts_index, parse_query
from quiver.superfile.fts.codec import BLOCK_SIZE, decode_block
from quiver.superfile.fts.engine import K1, B, idf
from quiver.superfile.fts.multi import (
    INTERVAL_WIDTH,
    PlanFile,
    build_plan,
    collection_stats,
    file_terms,
    plan_topk,
    reader_stats,
    top_order,
)
from quiver.superfile.fts.stats import CollectionStats
from quiver.superfile.ranges import BytesRangeReader
from tests.superfile.test_fts_search import Oracle, check_topk, corpus

CUTS = [0, 300, 301, 900, 1600, 2400]
QUERIES = ["rust", "python json", "fast parser http client", "data -python", "a",
           "json -fast -rust", "dataset tool", "missingterm rust"]
# 0: every interval in row order; 1 and 7: a few first; 10**9: all in bound order.
SEEDS = [0, 1, 7, None, 10**9]


def _reader(texts: list[str | None]) -> FtsIndexReader:
    blob, _ = build_fts_index(pa.array(texts, pa.string()))
    return FtsIndexReader.open(BytesRangeReader(blob))


def _search(readers, bases, q: str, k: int, and_mode: bool, seed, allows=None, ids=None):
    pq = parse_query(q)
    stats = collection_stats((reader_stats(r, pq.terms) for r in readers), pq.terms)
    parts = []
    for i, r in enumerate(readers):
        got = file_terms(r, pq, and_mode, None if allows is None else allows[i])
        if got is not None:
            parts.append(PlanFile(i, got, id_base=bases[i],
                                  ids=None if ids is None else ids[i]))
    plan = build_plan(parts, and_mode)
    return plan_topk(plan, pq.terms, stats, k, and_mode, seed=seed)


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.local, b.local)


@pytest.fixture(scope="module")
def split():
    texts = corpus(23, CUTS[-1], 18)
    readers = [_reader(texts[a:b]) for a, b in itertools.pairwise(CUTS)]
    return texts, readers, Oracle(texts)


@pytest.mark.parametrize("mode", ["or", "and"])
@pytest.mark.parametrize("k", [1, 10, 60])
def test_every_seed_ranks_like_brute_force_and_like_every_other_seed(split, mode, k):
    _texts, readers, oracle = split
    for q in QUERIES:
        first = None
        for seed in SEEDS:
            hits = _search(readers, CUTS, q, k, mode == "and", seed)
            check_topk(hits.ids.astype(np.uint32), hits.scores, oracle.scores(q, mode), k)
            if first is None:
                first = hits
            else:
                _same(first, hits)


def test_every_seed_keeps_to_the_allowed_rows(split):
    texts, readers, oracle = split
    keep = np.random.default_rng(9).random(len(texts)) < 0.25
    allows = [BitMap(np.flatnonzero(keep[a:b]).tolist()) for a, b in itertools.pairwise(CUTS)]
    allowed = set(np.flatnonzero(keep).tolist())
    for q in QUERIES:
        for mode in ("or", "and"):
            first = None
            for seed in SEEDS:
                hits = _search(readers, CUTS, q, 15, mode == "and", seed, allows=allows)
                check_topk(hits.ids.astype(np.uint32), hits.scores, oracle.scores(q, mode),
                           15, allow=allowed)
                if first is None:
                    first = hits
                else:
                    _same(first, hits)


def test_copies_scored_first_lose_their_ties_to_lower_ids_scored_later():
    # Three identical files: every document scores alike in each copy. The plan lists the
    # copy with the highest ids first, so bound order (stable) scores it first and its
    # documents set the k-th best; the tying rows of the lower-id copies must still win.
    texts = corpus(4, 700, 12)
    readers = [_reader(texts)] * 3
    n = len(texts)
    bases = [2 * n, n, 0]
    oracle = Oracle(texts * 3)
    for q in ("rust", "python json", "fast parser http client"):
        for mode in ("or", "and"):
            # Oracle row d is copy d // n, which the plan numbers from bases[d // n].
            expected = {bases[d // n] + d % n: s
                        for d, s in oracle.scores(q, mode).items()}
            want = sorted(expected.items(), key=lambda x: (-np.float32(x[1]), x[0]))[:12]
            for seed in SEEDS:
                hits = _search(readers, bases, q, 12, mode == "and", seed)
                assert hits.ids.tolist() == [d for d, _ in want], (q, mode, seed)
                np.testing.assert_allclose(hits.scores, [s for _, s in want], rtol=1e-5)


def test_a_file_below_the_early_threshold_is_skipped_and_the_result_is_unchanged():
    # The first file holds many weak matches (long documents), the last a few strong ones:
    # in row order the first file is searched in full before the strong rows raise the
    # k-th best; in bound order the strong rows come first and the weak file is never
    # decoded. The hits are the same.
    weak = [" ".join(["rust"] + [f"w{i % 50}"] * 40) for i in range(3000)]
    strong = ["rust rust"] * 5 + ["unrelated words"] * 200 + ["rust"] * 5
    readers = [_reader(weak), _reader(strong)]
    bases = [0, len(weak)]
    oracle = Oracle(weak + strong)
    row_order = _search(readers, bases, "rust", 10, False, 0)
    ordered = _search(readers, bases, "rust", 10, False, None)
    check_topk(ordered.ids.astype(np.uint32), ordered.scores, oracle.scores("rust"), 10)
    _same(row_order, ordered)
    assert set(ordered.file_index.tolist()) == {1}
    assert ordered.blocks_decoded < row_order.blocks_decoded
    # The weak file's 3000 postings are 24 blocks: none of them is decoded.
    assert ordered.blocks_decoded <= 1


def test_ids_given_per_row_and_every_seed_agree():
    texts = corpus(31, 1200, 15)
    readers = [_reader(texts[:500]), _reader(texts[500:])]
    rng = np.random.default_rng(2)
    perm = rng.permutation(len(texts)).astype(np.int64)
    ids = [perm[:500], perm[500:]]
    base = Oracle(texts)
    for q in ("python json", "rust", "fast parser http client"):
        for mode in ("or", "and"):
            expected = {int(perm[d]): s for d, s in base.scores(q, mode).items()}
            first = None
            for seed in SEEDS:
                hits = _search(readers, [0, 0], q, 20, mode == "and", seed, ids=ids)
                check_topk(hits.ids.astype(np.uint32), hits.scores, expected, 20)
                if first is None:
                    first = hits
                else:
                    _same(first, hits)


def test_a_plan_searched_with_other_statistics_ranks_with_those(split):
    # The interval bounds depend on the statistics: a plan kept for one set must not hand
    # its order to a search with another.
    _texts, readers, oracle = split
    pq = parse_query("python json")
    parts = [PlanFile(i, got, id_base=CUTS[i]) for i, r in enumerate(readers)
             if (got := file_terms(r, pq, False)) is not None]
    plan = build_plan(parts, False)
    stats = collection_stats((reader_stats(r, pq.terms) for r in readers), pq.terms)
    plan_topk(plan, pq.terms, stats, 10, False)
    other = CollectionStats(
        num_docs=stats.num_docs * 5, avg_doc_len=stats.avg_doc_len * 2,
        doc_freqs={"python": stats.doc_freqs["python"] * 4, "json": stats.doc_freqs["json"]})
    hits = plan_topk(plan, pq.terms, other, 10, False)
    fresh = plan_topk(build_plan(parts, False), pq.terms, other, 10, False)
    _same(fresh, hits)
    want = oracle.scores("python json", n=other.num_docs, avgdl=other.avg_doc_len,
                         df={**oracle.df, **other.doc_freqs})
    check_topk(hits.ids.astype(np.uint32), hits.scores, want, 10)


def _postings(plan, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Every block of the plan's term entry e, decoded.
    parts = []
    for j in range(int(plan.t_nb[e])):
        out = [np.empty(BLOCK_SIZE, np.int64) for _ in range(3)]
        c = decode_block(plan.buf, int(plan.t_base[e]), int(plan.t_nb[e]), j, *out)
        assert c > 0
        parts.append([a[:c] for a in out])
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


@pytest.mark.parametrize("mode", ["or", "and"])
def test_intervals_cover_every_posting_once_and_bound_it_by_its_best_score(split, mode):
    _texts, readers, _oracle = split
    and_mode = mode == "and"
    pq = parse_query("fast parser http client")
    parts = [PlanFile(i, got, id_base=CUTS[i]) for i, r in enumerate(readers)
             if (got := file_terms(r, pq, and_mode)) is not None]
    plan = build_plan(parts, and_mode)
    stats = collection_stats((reader_stats(r, pq.terms) for r in readers), pq.terms)
    avgdl = stats.avg_doc_len
    w = idf(float(stats.num_docs), np.array([stats.doc_freqs[t] for t in pq.terms], float))
    iv_file, iv_lo, iv_hi, iv_bound, iv_blk, iv_ub, order = plan.interval_order(
        w, avgdl, and_mode)
    assert np.all(np.diff(iv_bound[order]) <= 0)
    for f in range(len(plan.files)):
        mine = np.flatnonzero(iv_file == f)
        # In row order, apart from one another.
        assert np.all(iv_lo[mine] < iv_hi[mine])
        assert np.all(iv_hi[mine][:-1] <= iv_lo[mine][1:])
        docs_of = {}
        for e in range(int(plan.f_t0[f]), int(plan.f_t0[f + 1])):
            t = e - int(plan.f_t0[f])
            docs, tfs, dls = _postings(plan, e)
            q = int(plan.t_q[e])
            scores = w[q] * tfs * (K1 + 1) / (tfs + K1 * (1 - B + B * dls / avgdl))
            where = np.searchsorted(iv_lo[mine], docs, side="right") - 1
            inside = (where >= 0) & (docs < iv_hi[mine][np.maximum(where, 0)])
            docs_of[t] = (docs, inside)
            for j, iv in enumerate(mine.tolist()):
                held = inside & (where == j)
                assert held.sum() <= INTERVAL_WIDTH
                if held.any():
                    assert iv_blk[iv, t] >= 0
                    assert iv_ub[iv, t] >= scores[held].max()
                    assert iv_ub[iv, t] == pytest.approx(scores[held].max(), rel=1e-8)
                else:
                    assert iv_blk[iv, t] == -1
            if not and_mode:
                # Every posting of every term is in some interval.
                assert inside.all()
        np.testing.assert_allclose(iv_bound[mine], iv_ub[mine].sum(axis=1), rtol=1e-12)


def _intervals_kept(plan, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while plan._order is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return plan._order is not None


@pytest.mark.parametrize("mode", ["or", "and"])
def test_a_plan_searched_once_keeps_no_intervals_and_a_repeat_keeps_them_with_equal_hits(
        split, mode):
    # The first search of a plan goes by block bounds (nothing decoded up front, nothing
    # kept); the second with the same statistics has the per-posting intervals built in
    # the background and kept. Every one ranks exactly alike.
    _texts, readers, oracle = split
    and_mode = mode == "and"
    for q in QUERIES:
        pq = parse_query(q)
        parts = [PlanFile(i, got, id_base=CUTS[i]) for i, r in enumerate(readers)
                 if (got := file_terms(r, pq, and_mode)) is not None]
        if not parts:
            continue
        plan = build_plan(parts, and_mode)
        stats = collection_stats((reader_stats(r, pq.terms) for r in readers), pq.terms)
        first = plan_topk(plan, pq.terms, stats, 10, and_mode)
        assert plan._order is None
        second = plan_topk(plan, pq.terms, stats, 10, and_mode)
        assert _intervals_kept(plan)
        third = plan_topk(plan, pq.terms, stats, 10, and_mode)
        check_topk(first.ids.astype(np.uint32), first.scores, oracle.scores(q, mode), 10)
        _same(first, second)
        _same(first, third)


@pytest.mark.parametrize("seed", [0, 1, 3, 10, 11, 40, 64])
def test_top_order_is_the_head_of_a_stable_descending_sort(seed):
    rng = np.random.default_rng(seed)
    # Few distinct values: many ties, some of them at the cut.
    bound = rng.integers(0, 6, 50).astype(np.float64)
    want = np.argsort(-bound, kind="stable")[:seed]
    np.testing.assert_array_equal(top_order(bound, seed), want)
