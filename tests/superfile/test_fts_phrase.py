"""Phrases, proximity, boosts and several columns against a brute-force oracle built here
from ``tokenize`` and token positions; the positions codec under hypothesis; old (format 1)
blobs still open and refuse phrases."""

from __future__ import annotations

import math

import crc32c
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.superfile.errors import QueryError
from quiver.superfile.fts import FtsIndexReader, build_fts_index, parse_query, tokenize
from quiver.superfile.fts import format as fmt
from quiver.superfile.fts.query import Phrase, parse_fields
from quiver.superfile.fts.scoring import FieldSearch, search_fields
from quiver.superfile.ranges import BytesRangeReader

K1, B = 1.2, 0.75
WORDS = ["web", "framework", "rust", "fast", "async", "http", "client", "the", "for", "a"]


def corpus(seed: int, n: int, vocab: int = 8, max_len: int = 16) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = []
    for _ in range(n):
        if rng.random() < 0.03:
            out.append(None)
            continue
        length = int(rng.integers(0, max_len))
        idx = np.minimum(rng.geometric(0.3, size=length) - 1, vocab - 1)
        out.append(" ".join(WORDS[i] for i in idx))
    return out


def phrase_freq(toks: list[str], phrase: tuple[str, ...], slop: int) -> int:
    """Starts of ``phrase[0]`` from which in-order later occurrences fit within the slop;
    tried exhaustively over every choice of occurrences."""
    where = [[i for i, t in enumerate(toks) if t == w] for w in phrase]

    def fits(j: int, prev: int, start: int) -> bool:
        if j == len(phrase):
            return prev - start - (len(phrase) - 1) <= slop
        return any(fits(j + 1, q, start) for q in where[j] if q > prev)

    return sum(1 for p in where[0] if fits(1, p, p))


class Oracle:
    def __init__(self, texts: list[str | None]) -> None:
        self.toks = [tokenize(t) if t is not None else [] for t in texts]
        self.n = len(texts)
        self.dl = np.array([len(t) for t in self.toks], float)
        self.avgdl = self.dl.sum() / self.n if self.dl.sum() else 1.0
        self.df: dict[str, int] = {}
        for t in self.toks:
            for w in set(t):
                self.df[w] = self.df.get(w, 0) + 1
        self.vocab = sorted(self.df)

    def idf(self, t: str) -> float:
        df = self.df.get(t, 0)
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def sat(self, f: float, d: int) -> float:
        return f * (K1 + 1) / (f + K1 * (1 - B + B * self.dl[d] / self.avgdl))

    def clause_scores(self, q, d: int) -> list[float | None]:
        """Per scored clause (group order): its score in doc d, None when it does not match."""
        toks = self.toks[d]
        out: list[float | None] = []
        for t in q.terms:
            f = toks.count(t)
            out.append(q.boost("t", t) * self.idf(t) * self.sat(f, d) if f else None)
        for p in q.prefixes:
            exp = [v for v in self.vocab if v.startswith(p)]
            s = sum(self.idf(v) * self.sat(toks.count(v), d) for v in exp if v in toks)
            out.append(q.boost("p", p) * s if any(v in toks for v in exp) else None)
        for ph in q.phrases:
            f = phrase_freq(toks, ph.tokens, ph.slop)
            w = sum(self.idf(t) for t in ph.tokens)
            out.append(q.boost("q", ph) * w * self.sat(f, d) if f else None)
        return out

    def excluded(self, q, d: int) -> bool:
        toks = self.toks[d]
        return any(t in toks for t in q.excluded) or any(
            phrase_freq(toks, p.tokens, p.slop) for p in q.excluded_phrases)

    def scores(self, text: str, mode: str = "or") -> dict[int, float]:
        q = parse_query(text)
        out = {}
        for d in range(self.n):
            if self.excluded(q, d):
                continue
            cs = self.clause_scores(q, d)
            hits = [c is not None for c in cs]
            if not (all(hits) if mode == "and" and len(cs) > 1 else any(hits)):
                continue
            out[d] = sum(c for c in cs if c is not None)
        return out


def check(docs, scores, expected: dict[int, float], k: int) -> None:
    ranked = sorted(expected.items(), key=lambda x: (-x[1], x[0]))[:k]
    assert len(docs) == len(ranked)
    np.testing.assert_allclose(scores, [s for _, s in ranked], rtol=1e-5, atol=1e-6)
    for d, s in zip(docs.tolist(), scores.tolist(), strict=True):
        assert abs(expected[d] - s) <= 1e-5 * max(1.0, abs(s))
    if len(ranked) == k:
        kth = ranked[-1][1]
        assert {d for d, s in expected.items() if s > kth + 1e-5} <= set(docs.tolist())


@pytest.fixture(scope="module", params=[(1, 300, 5), (2, 2000, 8)])
def built(request):
    seed, n, vocab = request.param
    texts = corpus(seed, n, vocab)
    blob, _ = build_fts_index(pa.array(texts, pa.string()))
    return texts, FtsIndexReader.open(BytesRangeReader(blob), verify=True), Oracle(texts)


PHRASES = [('"web framework"', 0), ('"framework web"', 0), ('"web rust fast"', 0),
           ('"web web"', 0), ('"web fast"~2', 2), ('"rust framework web"~3', 3)]


@pytest.mark.parametrize("text,slop", PHRASES)
def test_phrase_matches_equal_brute_force_frequencies(built, text, slop):
    _, r, o = built
    ph = parse_query(text).phrases[0]
    assert ph.slop == slop
    docs, freqs, lens = r.phrase_matches(ph)
    want = {d: phrase_freq(o.toks[d], ph.tokens, slop) for d in range(o.n)}
    want = {d: f for d, f in want.items() if f}
    assert dict(zip(docs.tolist(), freqs.tolist(), strict=True)) == want
    assert lens.tolist() == [len(o.toks[d]) for d in docs.tolist()]


QUERIES = ['"web framework"', '"web framework"~2', '"fast web" rust', 'rust^2 "web framework"^3',
           '"web framework" -"rust fast"', '"web framework" -async', 'fra* "rust web"~1',
           '"the web framework for rust"', '"nothing here" web', 'web^0.5 framework^4']


@pytest.mark.parametrize("mode", ["or", "and"])
@pytest.mark.parametrize("k", [1, 10, 100])
@pytest.mark.parametrize("text", QUERIES)
def test_phrase_and_boost_search_equals_oracle(built, text, mode, k):
    _, r, o = built
    docs, scores = r.search(text, k, mode=mode)
    check(docs, scores, o.scores(text, mode), k)


def test_phrase_scores_by_its_frequency_not_by_its_words(built):
    _, r, _o = built
    n = r.num_docs
    plain = dict(zip(*[a.tolist() for a in r.search("web framework", n)], strict=True))
    phrase = dict(zip(*[a.tolist() for a in r.search('"web framework"', n)], strict=True))
    assert phrase and set(phrase) < set(plain)
    assert any(abs(plain[d] - s) > 1e-3 for d, s in phrase.items())


def test_phrase_only_top_k_respects_floor_and_allow(built):
    _, r, o = built
    exp = o.scores('"web framework"')
    ranked = sorted(exp.items(), key=lambda x: (-x[1], x[0]))
    floor = ranked[len(ranked) // 2][1]
    docs, scores = r.search('"web framework"', 1000, floor=floor)
    assert set(docs.tolist()) == {d for d, s in exp.items() if s > floor + 1e-6} or all(
        s > floor for s in scores)
    allow = [d for d in exp if d % 3 == 0]
    docs, scores = r.search('"web framework"', 5, allow=allow)
    check(docs, scores, {d: s for d, s in exp.items() if d % 3 == 0}, 5)


def test_multi_field_search_is_the_weighted_sum_of_each_columns_bm25():
    a, b = corpus(7, 600, 6), corpus(8, 600, 8)
    ra = FtsIndexReader.open(BytesRangeReader(build_fts_index(pa.array(a))[0]), verify=True)
    rb = FtsIndexReader.open(BytesRangeReader(build_fts_index(pa.array(b))[0]), verify=True)
    oa, ob = Oracle(a), Oracle(b)
    for text, mode in [("title:rust^2 body:async", "or"), ('web "web framework"', "or"),
                       ("rust async", "and"), ('title:"fast web" body:fast', "and"),
                       ("web -body:rust", "or")]:
        fq = parse_fields(text, ["title", "body"])
        fields = [FieldSearch(ra, fq.per_field["title"], 2.0, None, fq.groups["title"]),
                  FieldSearch(rb, fq.per_field["body"], 0.5, None, fq.groups["body"])]
        docs, scores, _ = search_fields(fields, 20, and_mode=mode == "and",
                                        num_groups=fq.num_groups)
        exp = {}
        for d in range(600):
            qa, qb = fq.per_field["title"], fq.per_field["body"]
            if oa.excluded(qa, d) or ob.excluded(qb, d):
                continue
            ca, cb = oa.clause_scores(qa, d), ob.clause_scores(qb, d)
            covered = 0
            for cs, bits in ((ca, fq.groups["title"]), (cb, fq.groups["body"])):
                for c, g in zip(cs, bits, strict=True):
                    if c is not None:
                        covered |= g
            need = (1 << fq.num_groups) - 1
            if not (covered == need if mode == "and" and fq.num_groups > 1 else covered):
                continue
            exp[d] = 2.0 * sum(c for c in ca if c) + 0.5 * sum(c for c in cb if c)
        check(docs, scores, exp, 20)


def test_query_syntax_parses_phrases_slop_boosts_fields_and_negation():
    q = parse_query('"Web  Framework"~2^3 rust^1.5 -"a b" -x ru* title:y')
    assert q.phrases == (Phrase(("web", "framework"), 2),)
    assert q.boost("q", q.phrases[0]) == 3.0 and q.boost("t", "rust") == 1.5
    assert q.excluded == ("x",) and q.excluded_phrases == (Phrase(("a", "b")),)
    assert q.prefixes == ("ru",) and "title" in q.terms and "y" in q.terms
    fq = parse_fields("title:rust body:async web", ["title", "body"])
    assert fq.per_field["title"].terms == ("rust", "web")
    assert fq.per_field["body"].terms == ("async", "web")
    for bad in ['"unclosed', "rust^0", "a^-1"]:
        with pytest.raises(QueryError):
            parse_query(bad) if bad != "a^-1" else parse_query("^")


def _as_version_1(blob: bytes) -> bytes:
    """The same index as a format 1 writer laid it out: no positions section."""
    _, _, flags, header_len, _ = fmt.PREAMBLE.unpack_from(blob, 0)
    fixed = fmt.PREAMBLE.size + fmt.HEADER_FIXED.size
    sec = [fmt.SECTION.unpack_from(blob, fixed + i * fmt.SECTION.size) for i in range(4)]
    index = blob[fmt.fixed_end(2):header_len]
    shift = fmt.SECTION.size
    body = bytearray(blob[fmt.PREAMBLE.size:fixed])
    for off, length, crc in sec[:3]:
        body += fmt.SECTION.pack(off - shift, length, crc)
    body += index
    end = sec[2][0] + sec[2][1]
    pre = fmt.PREAMBLE.pack(fmt.MAGIC, 1, flags, header_len - shift, crc32c.crc32c(bytes(body)))
    return pre + bytes(body) + blob[header_len:end]


@pytest.mark.parametrize("verify", [True, False])
def test_format_1_blob_still_searches_and_refuses_phrases_clearly(verify):
    texts = corpus(3, 500)
    blob, _ = build_fts_index(pa.array(texts))
    new = FtsIndexReader.open(BytesRangeReader(blob), verify=True)
    old = FtsIndexReader.open(BytesRangeReader(_as_version_1(blob)), verify=verify)
    assert old.version == 1 and not old.has_positions
    for text in ["web framework", "ra* -fast", "rust^2 web"]:
        a, b = old.search(text, 20), new.search(text, 20)
        assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    with pytest.raises(QueryError, match="positions"):
        old.search('"web framework"', 10)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.sampled_from(WORDS[:4]), max_size=200)
                          .map(" ".join)), min_size=1, max_size=300),
       st.lists(st.sampled_from(WORDS[:4]), min_size=2, max_size=3),
       st.integers(0, 3))
def test_positions_codec_round_trips_through_phrase_matching(texts, words, slop):
    """Long documents (tf past the scratch rows), many blocks and repeated words."""
    r = FtsIndexReader.open(BytesRangeReader(build_fts_index(pa.array(texts, pa.string()))[0]),
                            verify=bool(len(texts) % 2))
    ph = Phrase(tuple(words), slop)
    docs, freqs, _ = r.phrase_matches(ph)
    toks = [tokenize(t) if t else [] for t in texts]
    want = {d: f for d in range(len(texts)) if (f := phrase_freq(toks[d], ph.tokens, slop))}
    assert dict(zip(docs.tolist(), freqs.tolist(), strict=True)) == want
