"""BM25 search against a brute-force oracle written here from tokenize + counts."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from pyroaring import BitMap

from quiver.superfile.errors import QueryError
from quiver.superfile.fts import (
    CollectionStats,
    FtsIndexReader,
    build_fts_index,
    parse_query,
    tokenize,
)
from quiver.superfile.ranges import BytesRangeReader

K1, B = 1.2, 0.75
VOCAB = ["rust", "async", "python", "json", "fast", "parser", "http", "httpx", "https", "client",
         "data", "dataset", "tool", "über", "数据", "a", "ab", "abc"]


def corpus(seed: int, n: int, vocab_size: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    words = VOCAB[:vocab_size]
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            out.append(None)
        elif r < 0.05:
            out.append("")
        else:
            length = int(rng.integers(1, 14))
            # Skewed choice so some terms are frequent and tf > 1 is common.
            idx = np.minimum(rng.geometric(0.25, size=length) - 1, len(words) - 1)
            sep = rng.choice([" ", ", ", "-", " ! "])
            out.append(sep.join(words[i].upper() if rng.random() < 0.1 else words[i]
                                for i in idx))
    return out


class Oracle:
    def __init__(self, texts):
        self.counts = [Counter(tokenize(t)) if t is not None else Counter() for t in texts]
        self.dl = np.array([sum(c.values()) for c in self.counts], float)
        self.n = len(texts)
        self.vocab = sorted({t for c in self.counts for t in c})
        self.df = {t: sum(1 for c in self.counts if t in c) for t in self.vocab}

    def scores(self, query, mode="or", n=None, avgdl=None, df=None):
        q = parse_query(query)
        n = self.n if n is None else n
        avgdl = (self.dl.sum() / self.n if self.n else 1.0) if avgdl is None else avgdl
        df = self.df if df is None else df
        groups = [[t] for t in q.terms] + [
            [v for v in self.vocab if v.startswith(p)] for p in q.prefixes
        ]
        terms = sorted({t for g in groups for t in g if t in self.df})
        out = {}
        for d, c in enumerate(self.counts):
            if any(x in c for x in q.excluded):
                continue
            hits = [any(t in c for t in g) for g in groups]
            if not (all(hits) if mode == "and" else any(hits)):
                continue
            s = 0.0
            for t in terms:
                tf = c.get(t, 0)
                if tf:
                    idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    s += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * self.dl[d] / avgdl))
            out[d] = s
        return out


def check_topk(docs, scores, expected: dict, k: int, floor=None, allow=None):
    cand = {d: s for d, s in expected.items()
            if (floor is None or s > floor + 1e-6) and (allow is None or d in allow)}
    ranked = sorted(cand.items(), key=lambda x: (-x[1], x[0]))[:k]
    assert docs.dtype == np.uint32 and scores.dtype == np.float32
    assert len(docs) == len(ranked) or floor is not None
    if floor is not None:
        assert all(s > floor for s in scores)
        loose = [s for s in expected.values() if s > floor - 1e-6
                 and (allow is None)]
        assert len(docs) <= min(k, len(loose)) or allow is not None
    np.testing.assert_allclose(scores, [s for _, s in ranked][: len(docs)], rtol=1e-5, atol=1e-5)
    for d, s in zip(docs.tolist(), scores.tolist(), strict=True):
        assert d in expected
        assert abs(expected[d] - s) <= 1e-5 * max(1.0, abs(s))
        if allow is not None:
            assert d in allow
    if len(ranked) == k and len(docs) == k:
        kth = ranked[-1][1]
        must = {d for d, s in cand.items() if s > kth + 1e-5}
        assert must <= set(docs.tolist())
    assert list(scores) == sorted(scores, reverse=True)


QUERIES = ["rust", "python json", "fast parser http client", "data -python", "http*",
           "ab* rust", "a", "über 数据", "json -fast -rust", "dat* tool", "missingterm rust"]


@pytest.fixture(scope="module", params=[(1, 400, 6), (2, 1500, 12), (3, 3000, 18)])
def built(request):
    seed, n, vocab = request.param
    texts = corpus(seed, n, vocab)
    blob, stats = build_fts_index(pa.array(texts, pa.string()))
    return texts, FtsIndexReader.open(BytesRangeReader(blob), verify=True), Oracle(texts), stats


@pytest.mark.parametrize("mode", ["or", "and"])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_search_matches_oracle(built, mode, k):
    _texts, reader, oracle, _ = built
    for q in QUERIES:
        docs, scores = reader.search(q, k, mode=mode)
        check_topk(docs, scores, oracle.scores(q, mode), k)


def test_search_with_floor_returns_only_scores_above_it(built):
    _texts, reader, oracle, _ = built
    for q in QUERIES:
        expected = oracle.scores(q)
        if not expected:
            continue
        vals = sorted(expected.values())
        for floor in (vals[len(vals) // 2], vals[-1] * 0.9, vals[-1] + 1.0):
            docs, scores = reader.search(q, 20, floor=floor)
            check_topk(docs, scores, expected, 20, floor=floor)


def test_floor_above_every_score_decodes_no_block(built):
    _texts, reader, oracle, _ = built
    best = max(oracle.scores("python json").values())
    docs, _ = reader.search("python json", 10, floor=best * 1.5)
    assert len(docs) == 0
    assert reader.last_search_blocks_decoded == 0


def test_search_with_allow_bitmap_returns_k_allowed_hits(built):
    texts, reader, oracle, _ = built
    rng = np.random.default_rng(7)
    allow = BitMap(np.nonzero(rng.random(len(texts)) < 0.2)[0].tolist())
    for q in QUERIES:
        for mode in ("or", "and"):
            docs, scores = reader.search(q, 10, mode=mode, allow=allow)
            check_topk(docs, scores, oracle.scores(q, mode), 10, allow=allow)


def test_token_match_equals_oracle_match_set(built):
    _texts, reader, oracle, _ = built
    for q in QUERIES:
        for mode in ("or", "and"):
            got = reader.token_match(q, mode)
            assert got.dtype == np.uint32
            assert got.tolist() == sorted(oracle.scores(q, mode))


def test_column_stats_and_doc_freq_match_oracle(built):
    texts, reader, oracle, stats = built
    assert stats.num_docs == reader.num_docs == len(texts)
    assert stats.total_tokens == reader.total_tokens == int(oracle.dl.sum())
    assert stats.terms.to_pylist() == oracle.vocab
    assert stats.doc_freqs.tolist() == [oracle.df[t] for t in oracle.vocab]
    for t in oracle.vocab:
        assert reader.doc_freq(t) == oracle.df[t]
    assert reader.doc_freq("nope") == 0
    assert reader.doc_lengths().tolist() == oracle.dl.astype(int).tolist()
    assert reader.terms_with_prefix("a") == [v for v in oracle.vocab if v.startswith("a")]
    assert reader.terms_with_prefix("", limit=2) == oracle.vocab[:2]


def test_table_wide_stats_make_split_files_rank_like_one_file():
    texts = corpus(11, 2100, 14)
    whole = FtsIndexReader.open(BytesRangeReader(build_fts_index(pa.array(texts))[0]))
    cuts = [0, 100, 350, 700, 1000, 1500, 1800, 2100]
    parts = []
    for a, b in itertools.pairwise(cuts):
        blob, _ = build_fts_index(pa.array(texts[a:b], pa.string()))
        parts.append((a, FtsIndexReader.open(BytesRangeReader(blob))))
    for q in ["python json", "rust -data", "http* fast", "client tool async"]:
        pq = parse_query(q)
        terms = set(pq.terms)
        for p in pq.prefixes:
            for _, r in parts:
                terms |= set(r.terms_with_prefix(p))
        stats = CollectionStats(
            num_docs=sum(r.num_docs for _, r in parts),
            avg_doc_len=sum(r.total_tokens for _, r in parts) / sum(r.num_docs for _, r in parts),
            doc_freqs={t: sum(r.doc_freq(t) for _, r in parts) for t in terms},
        )
        for mode in ("or", "and"):
            ref_docs, ref_scores = whole.search(q, 15, mode=mode)
            merged = []
            for base, r in parts:
                d, s = r.search(q, 15, mode=mode, stats=stats)
                merged += [(float(x), int(y) + base) for y, x in zip(d, s, strict=True)]
            merged.sort(key=lambda x: (-x[0], x[1]))
            merged = merged[:15]
            np.testing.assert_allclose([m[0] for m in merged], ref_scores, rtol=1e-5)
            strict = {int(d) for d, s in zip(ref_docs, ref_scores, strict=True)
                      if s > ref_scores[-1] + 1e-5}
            assert strict <= {m[1] for m in merged}


def test_stats_missing_a_scored_term_is_a_query_error(built):
    _texts, reader, _oracle, _ = built
    stats = CollectionStats(num_docs=10_000, avg_doc_len=5.0, doc_freqs={"rust": 10})
    with pytest.raises(QueryError, match="python"):
        reader.search("rust python", 5, stats=stats)


def test_bad_queries_raise_query_error(built):
    _texts, reader, _oracle, _ = built
    for bad in ["", "   ", "-rust", "!!!"]:
        with pytest.raises(QueryError):
            reader.search(bad, 5)
    with pytest.raises(QueryError):
        reader.search("rust", 5, mode="xor")
    with pytest.raises(QueryError):
        reader.search("rust", -1)


def test_repeated_query_term_counts_once(built):
    _texts, reader, _oracle, _ = built
    d1, s1 = reader.search("rust", 10)
    d2, s2 = reader.search("rust rust RUST", 10)
    assert d1.tolist() == d2.tolist()
    np.testing.assert_array_equal(s1, s2)


def test_empty_and_all_null_columns_build_and_search():
    for texts in ([], [None, None], ["", "  !! "]):
        blob, stats = build_fts_index(pa.array(texts, pa.string()))
        r = FtsIndexReader.open(BytesRangeReader(blob), verify=True)
        assert r.num_docs == len(texts) and stats.total_tokens == 0
        docs, scores = r.search("anything", 10)
        assert len(docs) == 0 and len(scores) == 0
        assert r.token_match("anything").tolist() == []
