"""Tokenizer agreement between column and query paths, and the postings codec round trip."""

from __future__ import annotations

import crc32c
import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.superfile.fts.codec import crc32c_nb, decode_term, encode_postings, validate_term
from quiver.superfile.fts.query import parse_query
from quiver.superfile.fts.tokenizer import tokenize, tokenize_column

texts = st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(texts)
def test_tokenize_column_equals_tokenize_per_row(rows):
    tokens, doc_ids = tokenize_column(pa.array(rows, pa.string()))
    tokens = tokens.to_pylist()
    for i, text in enumerate(rows):
        got = [t for t, d in zip(tokens, doc_ids, strict=True) if d == i]
        assert got == ([] if text is None else tokenize(text))


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_tokenize_matches_arrow_on_arbitrary_code_points(text):
    tokens, _ = tokenize_column(pa.chunked_array([pa.array([text])]))
    assert tokens.to_pylist() == tokenize(text)


def test_tokenizer_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("Fast-JSON parser, v2.0! Über_naïve 数据") == [
        "fast", "json", "parser", "v2", "0", "über", "naïve", "数据"
    ]
    assert tokenize("  --  ") == []


def test_tokenize_column_gives_no_tokens_for_null_and_empty_rows():
    tokens, docs = tokenize_column(pa.array([None, "", "a b", None, "c"]))
    assert tokens.to_pylist() == ["a", "b", "c"]
    assert docs.tolist() == [2, 2, 4]


def test_parse_query_splits_terms_prefixes_and_exclusions():
    q = parse_query("Rust async -python http* -foo-bar rust")
    assert q.terms == ("rust", "async")
    assert q.prefixes == ("http",)
    assert q.excluded == ("python", "foo", "bar")


posting_lists = st.lists(
    st.lists(
        st.tuples(st.integers(0, 5000), st.integers(1, 70000), st.integers(0, 2**20)),
        min_size=1, max_size=400,
    ),
    min_size=1, max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(posting_lists)
def test_postings_codec_round_trips(terms):
    starts, docs, tfs, dls = [0], [], [], []
    expected = []
    for plist in terms:
        by_doc = {d: (tf, dl) for d, tf, dl in plist}
        ds = sorted(by_doc)
        expected.append((ds, [by_doc[d][0] for d in ds], [by_doc[d][1] for d in ds]))
        docs += ds
        tfs += [by_doc[d][0] for d in ds]
        dls += [by_doc[d][1] for d in ds]
        starts.append(len(docs))
    buf, offs, crcs = encode_postings(
        np.array(starts), np.array(docs), np.array(tfs), np.array(dls), avgdl=7.5
    )
    for t, (ds, ts, ls) in enumerate(expected):
        nb = (len(ds) + 127) // 128
        assert validate_term(buf, offs[t], offs[t + 1], nb, len(ds), 5001) == 0
        got_d, got_t, got_l, ok = decode_term(buf, offs[t], nb, len(ds))
        assert ok
        assert got_d.tolist() == ds and got_t.tolist() == ts and got_l.tolist() == ls
        assert int(crcs[t]) == crc32c.crc32c(buf[offs[t] : offs[t + 1]].tobytes())


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_compiled_crc32c_matches_the_crc32c_package(data):
    assert crc32c_nb(np.frombuffer(data, np.uint8)) == crc32c.crc32c(data)
