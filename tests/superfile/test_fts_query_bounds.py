"""What one full-text query may cost is bounded where it is read: at most ``MAX_CLAUSES``
distinct clauses, and its prefixes share that many expanded terms (each keeping its most
frequent ones), so a query's ranking work stays within a known number of terms whatever
the text; within the bounds it ranks like brute force."""

from __future__ import annotations

import math
import string
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from quiver.superfile.errors import QueryError
from quiver.superfile.fts import FtsIndexReader, build_fts_index, parse_query
from quiver.superfile.fts.query import MAX_CLAUSES, MAX_PREFIX_EXPANSION, parse_fields
from quiver.superfile.fts.scoring import K1, B
from quiver.superfile.fts.tokenizer import tokenize
from quiver.superfile.ranges import BytesRangeReader
from tests.superfile.test_fts_search import check_topk


def test_a_query_past_the_clause_limit_is_refused_and_duplicates_count_once() -> None:
    words = [f"w{i}" for i in range(MAX_CLAUSES)]
    assert len(parse_query(" ".join(words + words)).terms) == MAX_CLAUSES
    for extra in ("more", "-more", "more*", '"more words"'):
        with pytest.raises(QueryError, match=f"at most {MAX_CLAUSES:,} distinct"):
            parse_query(" ".join(words) + " " + extra)
    with pytest.raises(QueryError, match="at most"):
        parse_fields(" ".join(words) + " title:more", ["title", "body"])


@pytest.mark.parametrize(("text", "limit"), [
    ("a*", MAX_PREFIX_EXPANSION),
    ("a* b* c* d*", MAX_PREFIX_EXPANSION),
    (" ".join(f"{c}*" for c in string.ascii_lowercase), MAX_CLAUSES // 26),
    (" ".join([f"w{i}" for i in range(1000)] + ["a*", "b*"]), (MAX_CLAUSES - 1000) // 2),
    (" ".join([f"w{i}" for i in range(1023)] + ["a*"]), 1),
    ("rust", MAX_PREFIX_EXPANSION),
])
def test_prefixes_share_what_the_clause_limit_leaves(text, limit) -> None:
    assert parse_query(text).expansion_limit() == limit


def _reader(texts: list[str]) -> FtsIndexReader:
    blob, _ = build_fts_index(pa.array(texts, pa.string()))
    return FtsIndexReader.open(BytesRangeReader(blob))


def test_many_prefixes_rank_their_most_frequent_expansions_like_brute_force() -> None:
    # 60 words per letter, word j of a letter in rows j..: frequent words are low j.
    rng = np.random.default_rng(3)
    letters = string.ascii_lowercase
    texts = [" ".join(f"{c}{int(j)}" for c in letters for j in rng.geometric(0.05, 3) % 60)
             for _ in range(400)]
    reader = _reader(texts)
    query = " ".join(f"{c}*" for c in letters)
    limit = parse_query(query).expansion_limit()
    assert limit < 60
    counts = [Counter(tokenize(t)) for t in texts]
    df = Counter(t for c in counts for t in c)
    kept = set()
    for c in letters:
        expansions = sorted((t for t in df if t.startswith(c)), key=lambda t: (-df[t], t))
        kept |= set(expansions[:limit])
    dl = np.array([sum(c.values()) for c in counts], float)
    avgdl = dl.mean()
    expected = {}
    for d, c in enumerate(counts):
        s = 0.0
        for t in kept & set(c):
            idf = math.log(1 + (len(texts) - df[t] + 0.5) / (df[t] + 0.5))
            s += idf * c[t] * (K1 + 1) / (c[t] + K1 * (1 - B + B * dl[d] / avgdl))
        if s:
            expected[d] = s
    docs, scores = reader.search(query, 25)
    check_topk(docs, scores, expected, 25)
