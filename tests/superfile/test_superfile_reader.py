"""The superfile reader: searches, row fetches and lazy I/O through the whole file."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyroaring import BitMap

from quiver.superfile import (
    CountingRangeReader,
    FileRangeReader,
    IndexSpec,
    NotASuperfileError,
    QueryError,
    SuperfileReader,
    write_superfile,
)
from quiver.superfile.fts.tokenizer import tokenize
from quiver.superfile.ranges import BytesRangeReader
from tests.superfile.conftest import vectors


@pytest.fixture
def corpus_file(small_corpus) -> bytes:
    return write_superfile(small_corpus).data


def test_exact_match_returns_only_rows_equal_byte_for_byte(small_corpus, corpus_file):
    reader = SuperfileReader.open(corpus_file)
    assert reader.exact_match("body", "Exact Title: Rust, async!").tolist() == [9]
    # Same tokens, different raw string: the stored string rules it out.
    assert reader.exact_match("body", "exact title rust async").tolist() == [11]
    assert reader.exact_match("body", "no such text").tolist() == []


NAMES = ["requests", "requests-oauthlib", "Requests", "requests requests", "oauthlib requests",
         "requests_toolbelt", None, "requests!", "réquests", "requests"]


@pytest.mark.parametrize("value", ["requests", "Requests", "requests requests",
                                   "requests-oauthlib", "requests!", "réquests", "toolbelt"])
def test_exact_match_narrowed_by_token_count_still_finds_every_equal_row(value):
    # Rows holding the value's words among others are dropped by their token count before
    # their text is compared; repeated words count ("requests requests" has two).
    table = pa.table({"name": pa.array(NAMES, pa.string())})
    reader = SuperfileReader.open(write_superfile(table, IndexSpec.of(fts=["name"])).data)
    expected = [i for i, name in enumerate(NAMES) if name == value]
    assert reader.exact_match("name", value).tolist() == expected


def test_exact_match_on_empty_string_scans_and_finds_empty_rows(small_corpus, corpus_file):
    reader = SuperfileReader.open(corpus_file)
    expected = [i for i, t in enumerate(small_corpus.column("body").to_pylist()) if t == ""]
    assert reader.exact_match("body", "").tolist() == expected


def test_token_match_and_requires_every_token(small_corpus, corpus_file):
    reader = SuperfileReader.open(corpus_file)
    texts = small_corpus.column("body").to_pylist()
    want = [i for i, t in enumerate(texts) if t and {"rust", "json"} <= set(tokenize(t))]
    assert reader.token_match("body", "rust json", "and").tolist() == want


def test_bm25_search_hits_contain_a_query_term(small_corpus, corpus_file):
    reader = SuperfileReader.open(corpus_file)
    ids, scores = reader.bm25_search("body", "rust parser", k=20)
    assert len(ids) == 20
    assert np.all(np.diff(scores) <= 1e-6)
    for text in reader.take(ids, ["body"]).column("body").to_pylist():
        assert {"rust", "parser"} & set(tokenize(text))


def test_vector_search_with_allow_set_returns_only_allowed_rows(corpus_file):
    reader = SuperfileReader.open(corpus_file)
    allow = BitMap(range(0, reader.num_rows, 3))
    ids, _ = reader.vector_search("embedding", np.ones(16), k=10, allow=allow)
    assert len(ids) == 10
    assert all(int(i) in allow for i in ids)


def test_take_returns_rows_in_the_order_asked(small_corpus, corpus_file):
    reader = SuperfileReader.open(corpus_file)
    ids = [599, 0, 17, 17, 300]
    assert reader.take(ids).equals(small_corpus.take(ids))
    assert reader.take([], ["id"]).num_rows == 0


def test_search_on_a_column_without_that_index_names_the_problem(corpus_file):
    reader = SuperfileReader.open(corpus_file)
    with pytest.raises(QueryError, match="no BM25 index"):
        reader.bm25_search("year", "x")
    with pytest.raises(QueryError, match="no column 'nope'"):
        reader.vector_search("nope", [1.0])
    with pytest.raises(QueryError, match="no vector index"):
        reader.vector_search("body", [1.0])


def test_vector_of_wrong_length_is_a_query_error(corpus_file):
    reader = SuperfileReader.open(corpus_file)
    with pytest.raises(QueryError, match="16"):
        reader.vector_search("embedding", np.ones(15), k=3)


def test_lazy_open_costs_one_read_and_a_query_touches_a_fraction(tmp_path):
    rng = np.random.default_rng(1)
    n = 60_000
    words = np.array([f"w{i}" for i in range(5000)])
    texts = [" ".join(words[rng.integers(0, 5000, size=8)]) for _ in range(n)]
    table = pa.table({"body": texts, "embedding": vectors(rng.standard_normal((n, 32)))})
    path = tmp_path / "big.parquet"
    path.write_bytes(write_superfile(table).data)
    size = path.stat().st_size

    counter = CountingRangeReader(FileRangeReader(path))
    reader = SuperfileReader.open_lazy(counter)
    assert counter.reads <= 3, counter.ranges

    counter.reset()
    ids, _ = reader.bm25_search("body", "w42", k=10)
    assert len(ids) > 0
    assert counter.bytes_read < size // 20, (counter.bytes_read, size)

    counter.reset()
    ids, _ = reader.vector_search("embedding", rng.standard_normal(32), k=10)
    assert len(ids) == 10
    # The probed cells' codes (nearby cells merged) and the pages of the shortlisted rows
    # of the vector column (one batch): a fraction of the file, in a bounded request count.
    assert counter.reads <= 100, counter.ranges
    assert counter.bytes_read < size // 4, (counter.bytes_read, size)

    counter.reset()
    rows = reader.take(ids, ["body"])
    assert rows.column("body").to_pylist() == [texts[i] for i in ids]
    assert counter.bytes_read < size // 10, (counter.bytes_read, size)


def test_lazy_and_eager_readers_give_the_same_answers(corpus_file):
    eager = SuperfileReader.open(corpus_file)
    lazy = SuperfileReader.open_lazy(BytesRangeReader(corpus_file), tail=1024)
    for q in ["rust", "json -fast", "pars*", "über"]:
        a = eager.bm25_search("body", q, k=15)
        b = lazy.bm25_search("body", q, k=15)
        assert a[0].tolist() == b[0].tolist()
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    q = np.linspace(-1, 1, 16)
    assert (eager.vector_search("embedding", q, k=10)[0].tolist()
            == lazy.vector_search("embedding", q, k=10)[0].tolist())


def test_plain_parquet_file_is_not_a_superfile():
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2]}), sink)
    with pytest.raises(NotASuperfileError, match=r"quiver\.format"):
        SuperfileReader.open(sink.getvalue())


def test_random_bytes_are_not_a_superfile():
    with pytest.raises(NotASuperfileError):
        SuperfileReader.open(b"hello world, this is not parquet at all")


def test_write_with_explicit_spec_indexes_only_the_named_columns(small_corpus):
    spec = IndexSpec.of(fts=["body"])
    reader = SuperfileReader.open(write_superfile(small_corpus, spec).data)
    assert reader.vector_columns == []
    assert reader.fts_columns == ["body"]
