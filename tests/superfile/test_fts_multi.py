"""BM25 across several files' indexes (``fts.multi``) against brute force over the
concatenated corpus: the files split one collection, and the ranking must not notice."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from pyroaring import BitMap

from quiver.superfile.errors import QueryError
from quiver.superfile.fts import FtsIndexReader, build_fts_index, parse_query
from quiver.superfile.fts.engine import idf
from quiver.superfile.fts.multi import (
    FileStats,
    PlanFile,
    build_plan,
    collection_stats,
    file_terms,
    plan_topk,
    reader_stats,
    search_files,
)
from quiver.superfile.ranges import BytesRangeReader
from tests.superfile.test_fts_search import Oracle, check_topk, corpus

CUTS = [0, 90, 91, 400, 700, 1300, 1301, 2100]
PLAIN = ["rust", "python json", "fast parser http client", "data -python", "a",
         "über 数据", "json -fast -rust", "dataset tool", "missingterm rust", "httpx https"]


@pytest.fixture(scope="module")
def split() -> tuple[list[str | None], list[FtsIndexReader], Oracle]:
    texts = corpus(11, CUTS[-1], 18)
    readers = []
    for a, b in itertools.pairwise(CUTS):
        blob, _ = build_fts_index(pa.array(texts[a:b], pa.string()))
        readers.append(FtsIndexReader.open(BytesRangeReader(blob)))
    return texts, readers, Oracle(texts)


@pytest.mark.parametrize("mode", ["or", "and"])
@pytest.mark.parametrize("k", [1, 10, 128, 5000])
def test_split_files_rank_like_brute_force_over_the_concatenated_corpus(split, mode, k):
    _texts, readers, oracle = split
    for q in PLAIN:
        hits = search_files(readers, q, k, mode=mode)
        check_topk(hits.ids.astype(np.uint32), hits.scores, oracle.scores(q, mode), k)
        # Each hit's file and row name the same document as its id.
        np.testing.assert_array_equal(np.array(CUTS)[hits.file_index] + hits.local, hits.ids)


def test_allowed_rows_restrict_the_ranking_but_not_the_statistics(split):
    texts, readers, oracle = split
    rng = np.random.default_rng(5)
    keep = rng.random(len(texts)) < 0.3
    allows = [BitMap(np.flatnonzero(keep[a:b]).tolist())
              for a, b in itertools.pairwise(CUTS)]
    allowed = set(np.flatnonzero(keep).tolist())
    for q in PLAIN:
        for mode in ("or", "and"):
            hits = search_files(readers, q, 20, mode=mode, allows=allows)
            check_topk(hits.ids.astype(np.uint32), hits.scores, oracle.scores(q, mode), 20,
                       allow=allowed)


def test_collection_stats_are_the_concatenated_corpus_statistics(split):
    _texts, readers, oracle = split
    terms = [*oracle.vocab, "missingterm"]
    stats = collection_stats((reader_stats(r, terms) for r in readers), terms)
    assert stats.num_docs == oracle.n
    assert stats.avg_doc_len == pytest.approx(oracle.dl.sum() / oracle.n, rel=1e-12)
    assert dict(stats.doc_freqs) == {**oracle.df, "missingterm": 0}
    empty = collection_stats([], ["x"])
    assert (empty.num_docs, empty.avg_doc_len, dict(empty.doc_freqs)) == (1, 0.0, {"x": 0})


def test_a_plan_over_some_files_scores_with_the_whole_collections_statistics(split):
    # Two of the files searched, every file counted: scores are those of the whole corpus.
    _texts, readers, oracle = split
    for q in ("python json", "rust -data", "client tool async"):
        pq = parse_query(q)
        stats = collection_stats((reader_stats(r, pq.terms) for r in readers), pq.terms)
        chosen = [2, 5]
        parts = [PlanFile(i, file_terms(readers[i], pq, False), id_base=CUTS[i])
                 for i in chosen]
        plan = build_plan(parts, and_mode=False)
        hits = plan_topk(plan, pq.terms, stats, 30, and_mode=False)
        inside = {d for i in chosen for d in range(CUTS[i], CUTS[i + 1])}
        check_topk(hits.ids.astype(np.uint32), hits.scores, oracle.scores(q), 30, allow=inside)
        assert plan.files == chosen


def test_ids_given_per_row_rank_ties_by_those_ids():
    # Every document is the same, so every score ties: the order is the ids' order,
    # whichever file holds them.
    blob, _ = build_fts_index(pa.array(["same words"] * 300, pa.string()))
    r1 = FtsIndexReader.open(BytesRangeReader(blob))
    r2 = FtsIndexReader.open(BytesRangeReader(blob))
    q = parse_query("same")
    ids1 = np.arange(300, dtype=np.int64) * 2 + 1  # odd ids
    ids2 = np.arange(300, dtype=np.int64) * 2  # even ids
    plan = build_plan([PlanFile("a", file_terms(r1, q, False), ids=ids1),
                       PlanFile("b", file_terms(r2, q, False), ids=ids2)], and_mode=False)
    stats = collection_stats([reader_stats(r1, q.terms), reader_stats(r2, q.terms)])
    hits = plan_topk(plan, q.terms, stats, 7, and_mode=False)
    assert hits.ids.tolist() == list(range(7))
    assert hits.file_index.tolist() == [1, 0, 1, 0, 1, 0, 1]
    assert hits.local.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert len(set(hits.scores.tolist())) == 1


def test_idf_is_the_bm25_idf_and_refuses_frequencies_outside_the_collection():
    dfs = np.array([0, 1, 5, 10], np.float64)
    np.testing.assert_array_equal(idf(10.0, dfs), np.log1p((10 - dfs + 0.5) / (dfs + 0.5)))
    with pytest.raises(QueryError):
        idf(10.0, np.array([11.0]))
    with pytest.raises(QueryError):
        idf(10.0, np.array([-1.0]))


def test_statistics_missing_a_term_and_rich_queries_are_query_errors(split):
    _texts, readers, _oracle = split
    q = parse_query("rust python")
    plan = build_plan([PlanFile(0, file_terms(readers[0], q, False))], and_mode=False)
    with pytest.raises(QueryError, match="python"):
        plan_topk(plan, q.terms, collection_stats([FileStats(10, 50, {"rust": 3})]), 5, False)
    for bad in ('"rust python"', "rus*", "rust^2", "-rust"):
        with pytest.raises(QueryError):
            search_files(readers, bad, 5)
    with pytest.raises(QueryError):
        search_files(readers, "rust", 5, mode="xor")
    with pytest.raises(QueryError):
        search_files(readers, "rust", 5, allows=[None])


def test_no_file_or_k_zero_returns_nothing(split):
    _texts, readers, _oracle = split
    assert len(search_files(readers, "rust", 0).ids) == 0
    assert len(search_files([], "rust", 10).ids) == 0
    assert len(search_files(readers, "missingterm", 10).ids) == 0


def test_a_file_whose_ids_do_not_cover_its_rows_is_refused_before_ranking(split):
    _texts, readers, _oracle = split
    q = parse_query("rust")
    terms = file_terms(readers[3], q, False)
    with pytest.raises(QueryError, match="numbers 5 of its"):
        build_plan([PlanFile(3, terms, ids=np.arange(5, dtype=np.int64), name="f3")], False)


def test_a_query_of_more_terms_than_mask_bits_ranks_like_brute_force(split):
    texts, readers, oracle = split
    words = sorted({w for t in texts if t for w in t.split()})
    assert len(words) > 200
    q = " ".join(words[:150])  # more terms than an int64 has bits
    hits = search_files(readers, q, 50, mode="or")
    check_topk(hits.ids.astype(np.uint32), hits.scores, oracle.scores(q, "or"), 50)


def test_an_and_query_past_the_mask_bits_is_a_query_error_where_a_row_could_match():
    words = [f"w{i}" for i in range(100)]
    blob, _ = build_fts_index(pa.array([" ".join(words), "w1 w2"], pa.string()))
    reader = FtsIndexReader.open(BytesRangeReader(blob))
    with pytest.raises(QueryError, match="at most 62 terms, prefixes and phrases, got 100"):
        search_files([reader], " ".join(words), 10, mode="and")
    # The same terms in an OR query rank both rows.
    assert sorted(search_files([reader], " ".join(words), 10, mode="or").ids) == [0, 1]
