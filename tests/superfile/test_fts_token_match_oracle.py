"""Unranked token match (AND / OR, prefixes, excluded terms) against a brute-force set oracle,
the match kernels against numpy, and the block skipping that keeps AND cheap."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.superfile.fts import FtsIndexReader, build_fts_index, parse_query, tokenize
from quiver.superfile.fts.codec import encode_postings, validate_term
from quiver.superfile.fts.match import kway_union, mark_term, probe_term, term_docs
from quiver.superfile.fts.query import ParsedQuery
from quiver.superfile.ranges import BytesRangeReader

# Word i of the vocabulary is drawn with weight ~ 1 / (i + 1): a few words sit in most
# documents (many postings blocks), most in a handful. "w1" prefixes w1, w10..w19, w100...
VOCAB = [f"w{i}" for i in range(160)]
WEIGHTS = 1.0 / np.arange(1, len(VOCAB) + 1)
WEIGHTS /= WEIGHTS.sum()


def make_texts(seed: int, n: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = []
    for _ in range(n):
        if rng.random() < 0.02:
            out.append(None)
            continue
        words = rng.choice(VOCAB, size=int(rng.integers(0, 12)), p=WEIGHTS)
        out.append(" ".join(words))
    return out


def oracle(texts: list[str | None], q: ParsedQuery, and_mode: bool) -> list[int]:
    docs = [set(tokenize(t)) if t is not None else set() for t in texts]
    vocab = set().union(*docs)
    groups = [{t} for t in q.terms] + [{v for v in vocab if v.startswith(p)} for p in q.prefixes]
    out = []
    for i, d in enumerate(docs):
        sat = [bool(g & d) for g in groups]
        if (all(sat) if and_mode else any(sat)) and not (d & set(q.excluded)):
            out.append(i)
    return out


_BUILT: dict[tuple[int, int], tuple[list[str | None], bytes]] = {}


def built(seed: int, n: int) -> tuple[list[str | None], bytes]:
    key = (seed, n)
    if key not in _BUILT:
        texts = make_texts(seed, n)
        _BUILT[key] = (texts, build_fts_index(pa.array(texts, pa.string()))[0])
    return _BUILT[key]


words = st.sampled_from([*VOCAB[:40], "w7", "w0", "nope", "w159"])
queries = st.builds(
    ParsedQuery,
    st.lists(words, max_size=5, unique=True).map(tuple),
    st.lists(st.sampled_from(["w1", "w2", "w3", "w9", "w15", "zz"]), max_size=2,
             unique=True).map(tuple),
    st.lists(words, max_size=3, unique=True).map(tuple),
).filter(lambda q: q.terms or q.prefixes)


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 3), n=st.sampled_from([40, 700, 3000]), q=queries,
       mode=st.sampled_from(["and", "or"]), lazy=st.booleans())
def test_token_match_equals_brute_force_set_oracle(seed, n, q, mode, lazy):
    texts, blob = built(seed, n)
    reader = FtsIndexReader.open(BytesRangeReader(blob), verify=not lazy)
    got = reader.token_match(q, mode)
    assert got.dtype == np.uint32
    assert got.tolist() == oracle(texts, q, mode == "and")


def test_token_match_query_strings_parse_prefixes_and_exclusions():
    texts, blob = built(1, 3000)
    reader = FtsIndexReader.open(BytesRangeReader(blob))
    for text in ["w0 w5", "w1* -w0", "w3 w1* -w2 -w4", "w2* w3*", "nope w0", "w0 -w0", "w9*"]:
        for mode in ("and", "or"):
            got = reader.token_match(text, mode)
            assert got.tolist() == oracle(texts, parse_query(text), mode == "and"), (text, mode)


def test_and_with_a_rare_term_decodes_only_blocks_that_can_hold_its_documents():
    rare_docs = [100, 2500, 2501, 4900]
    texts = [f"common w{i % 7}" + (" rare" if i in rare_docs else "") for i in range(5000)]
    blob = build_fts_index(pa.array(texts))[0]
    reader = FtsIndexReader.open(BytesRangeReader(blob), verify=True)
    blocks_common = (reader.doc_freq("common") + 127) // 128
    assert blocks_common == 40
    for q in ["common rare", "rare common", "common rare w3*", "rare -w2"]:
        got = reader.token_match(q, "and")
        assert got.tolist() == oracle(texts, parse_query(q), True)
    got = reader.token_match("common rare", "and")
    assert got.tolist() == rare_docs
    # One block of "rare", then one block of "common" per distinct block a candidate sits in.
    assert reader.last_match_blocks_decoded == 1 + 3
    reader.token_match("common w1", "or")
    assert reader.last_match_blocks_decoded == blocks_common + (reader.doc_freq("w1") + 127) // 128


def _encoded(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=starts[1:])
    docs = np.concatenate(lists).astype(np.uint32)
    ones = np.ones(len(docs), np.uint32)
    buf, offs, _ = encode_postings(starts, docs, ones, ones)
    return buf, offs


sorted_ids = st.lists(st.integers(0, 5000), min_size=1, max_size=700, unique=True).map(
    lambda xs: np.array(sorted(xs), np.int64))


@settings(max_examples=60, deadline=None)
@given(lists=st.lists(sorted_ids, min_size=1, max_size=6),
       cands=st.lists(st.integers(0, 5100), max_size=400, unique=True))
def test_kernels_equal_numpy_set_operations(lists, cands):
    buf, offs = _encoded(lists)
    cands = np.array(sorted(cands), np.int64)
    mask = np.zeros(5001, np.uint8)
    for t, want in enumerate(lists):
        nb = (len(want) + 127) // 128
        assert validate_term(buf, offs[t], offs[t + 1], nb, len(want), 5001) == 0
        docs, ok = term_docs(buf, offs[t], nb, len(want))
        assert ok and docs.tolist() == want.tolist()
        hit = np.zeros(len(cands), np.uint8)
        decoded = probe_term(buf, offs[t], nb, cands, len(cands), hit)
        assert 0 <= decoded <= nb
        assert hit.astype(bool).tolist() == np.isin(cands, want).tolist()
        assert mark_term(buf, offs[t], nb, mask, 1) == 0
    union = np.unique(np.concatenate(lists))
    starts = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=starts[1:])
    assert kway_union(np.concatenate(lists), starts).tolist() == union.tolist()
    assert np.flatnonzero(mask).tolist() == union.tolist()


def test_kway_union_handles_empty_runs():
    runs = [np.array([], np.int64), np.array([3, 9], np.int64), np.array([], np.int64),
            np.array([1, 3, 4], np.int64)]
    starts = np.zeros(len(runs) + 1, np.int64)
    np.cumsum([len(x) for x in runs], out=starts[1:])
    assert kway_union(np.concatenate(runs), starts).tolist() == [1, 3, 4, 9]


@pytest.mark.parametrize("mode", ["and", "or"])
def test_token_match_of_absent_terms_is_empty(mode):
    _texts, blob = built(0, 700)
    reader = FtsIndexReader.open(BytesRangeReader(blob))
    assert reader.token_match("nope zz*", mode).tolist() == []
    assert reader.token_match("nope -w0", mode).tolist() == []
