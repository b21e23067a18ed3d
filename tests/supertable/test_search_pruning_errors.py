"""Search opens only the files it needs, and bad searches fail with errors that say why."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver.superfile import QueryError
from quiver.supertable.errors import TableSchemaError
from quiver.supertable.table import Table
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8
# One word per file, found in no other file.
MARKERS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def _file_batch(i: int) -> pa.Table:
    """Rows of file ``i``: years 2000+2i and 2001+2i only, its marker in a third of the
    bodies, and vectors clustered far from the other files' (so their balls are apart)."""
    docs = make_docs(60, seed=i, dim=DIM)
    body = docs.column("body").to_pylist()
    body = [f"{b} {MARKERS[i]}" if j % 3 == 0 else b for j, b in enumerate(body)]
    years = (2000 + 2 * i + np.arange(60) % 2).astype(np.int32)
    center = np.zeros(DIM, np.float32)
    center[i % DIM] = 10.0 if i < DIM else -10.0
    emb = center + np.random.default_rng(i).standard_normal((60, DIM)).astype(np.float32)
    return docs.set_column(1, "body", pa.array(body)).set_column(
        2, "year", pa.array(years)).set_column(
        3, "emb", pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM))


@pytest.fixture
def fresh(connect):
    """A table of eight files; each call of the returned function opens it anew, with no
    file opened yet."""
    table = connect().create_table("docs", docs_schema(DIM))
    for i in range(len(MARKERS)):
        table.append(_file_batch(i))
    assert len(table.snapshot().files) == len(MARKERS)

    def reopen() -> Table:
        t = connect().open_table("docs")
        assert t.files_opened == 0
        return t

    return reopen


def test_a_term_found_in_one_file_opens_only_that_file(fresh):
    for marker in ("charlie", "hotel"):
        t = fresh()
        got = t.bm25_search("body", marker, 100, columns=["body"])
        assert got.num_rows == 20
        assert all(marker in b for b in got.column("body").to_pylist())
        assert t.files_opened == 1
    t = fresh()
    assert len(t.token_match("body", "delta")) == 20
    assert t.files_opened == 1
    t = fresh()
    assert t.bm25_search("body", "alpha echo", 100, columns=[]).num_rows == 40
    assert t.files_opened == 2


def test_terms_that_no_file_holds_together_open_nothing_in_and_mode(fresh):
    t = fresh()
    assert t.bm25_search("body", "alpha bravo", 10, mode="and").num_rows == 0
    assert len(t.token_match("body", "alpha bravo", "and")) == 0
    assert t.bm25_search("body", "zzzunknown", 10).num_rows == 0
    assert t.files_opened == 0


def test_a_dnf_filter_on_year_skips_files_by_their_min_max(fresh):
    t = fresh()
    assert t.count([("year", "=", 2007)]) == 30
    assert t.files_opened == 1
    t = fresh()
    got = t.to_arrow(filter_=[("year", ">=", 2012)])
    assert got.num_rows == 120 and pc.min(got.column("year")).as_py() == 2012
    assert t.files_opened == 2
    t = fresh()
    q = np.zeros(DIM, np.float32)
    q[0] = 1.0
    hits = t.vector_search("emb", q, 5, filter_=[("year", "in", [2004, 2005])],
                           columns=["year"])
    assert set(hits.column("year").to_pylist()) <= {2004, 2005} and hits.num_rows == 5
    assert t.files_opened == 1
    t = fresh()
    assert t.bm25_search("body", "golf", 50, filter_=[("year", "=", 2012)]).num_rows == 10
    assert t.files_opened == 1
    t = fresh()
    assert t.count([[("year", "<", 2002)], [("year", ">", 2013)]]) == 120
    assert t.files_opened == 2


def test_vector_search_stops_at_files_whose_bounds_cannot_compete(fresh):
    t = fresh()
    q = np.zeros(DIM, np.float32)
    q[2] = 1.0
    hits = t.vector_search("emb", q, 5, columns=["year"])
    assert set(hits.column("year").to_pylist()) <= {2004, 2005}
    assert t.files_opened < len(MARKERS)


@pytest.fixture
def table(connect) -> Table:
    t = connect().create_table("docs", docs_schema(DIM), fts=["body"], vector={"emb": "cosine"})
    t.append(make_docs(50, seed=1, dim=DIM))
    return t


def test_unknown_columns_are_schema_errors_naming_the_column(table):
    v = np.ones(DIM)
    calls = {
        "bm25": lambda: table.bm25_search("nope", "rust"),
        "vector": lambda: table.vector_search("nope", v),
        "hybrid text": lambda: table.hybrid_search("nope", "rust", "emb", v),
        "hybrid vector": lambda: table.hybrid_search("body", "rust", "nope", v),
        "token": lambda: table.token_match("nope", "rust"),
        "exact": lambda: table.exact_match("nope", "rust"),
        "result columns": lambda: table.bm25_search("body", "rust", columns=["nope"]),
        "scan columns": lambda: table.to_arrow(columns=["nope"]),
        "dnf filter": lambda: table.bm25_search("body", "rust", filter_=[("nope", "=", 1)]),
        "expression filter": lambda: table.vector_search(
            "emb", v, filter_=pc.field("nope") > 1),
        "count filter": lambda: table.count([("nope", ">", 1)]),
        "token filter": lambda: table.token_match("body", "rust", filter_=[("nope", "=", 1)]),
    }
    for what, call in calls.items():
        with pytest.raises(TableSchemaError, match="nope"):
            call()
            pytest.fail(what)


def test_columns_without_the_needed_index_are_query_errors(table):
    with pytest.raises(QueryError, match=r"'title'.*BM25"):
        table.bm25_search("title", "rust")
    with pytest.raises(QueryError, match=r"'year'.*BM25"):
        table.bm25_search("year", "2010")
    with pytest.raises(QueryError, match=r"'title'.*BM25"):
        table.token_match("title", "rust")
    with pytest.raises(QueryError, match=r"'body'.*vector"):
        table.vector_search("body", np.ones(DIM))
    with pytest.raises(QueryError, match=r"'title'.*BM25"):
        table.hybrid_search("title", "rust", "emb", np.ones(DIM))


def test_exact_match_works_on_unindexed_text_columns(table):
    rows = table.to_arrow(with_id=True)
    value = rows.column("title")[0].as_py()
    want = sorted(i for i, t in zip(rows.column("_id").to_pylist(),
                                    rows.column("title").to_pylist(), strict=True)
                  if t == value)
    assert table.exact_match("title", value).tolist() == want


def test_bad_query_vectors_are_query_errors_saying_what_is_wrong(table):
    with pytest.raises(QueryError, match=r"7 values.*8"):
        table.vector_search("emb", np.ones(7))
    with pytest.raises(QueryError, match=r"9 values.*8"):
        table.hybrid_search("body", "rust", "emb", np.ones(9))
    with pytest.raises(QueryError, match="NaN"):
        table.vector_search("emb", [np.nan] + [1.0] * 7)
    with pytest.raises(QueryError, match="not a list of numbers"):
        table.vector_search("emb", ["a"] * 8)
    with pytest.raises(QueryError, match="zero"):
        table.vector_search("emb", np.zeros(DIM))


def test_empty_or_malformed_text_queries_are_query_errors(table):
    for text in ("", "   ", "-rust", "-rust -python", "!!! ???"):
        with pytest.raises(QueryError):
            table.bm25_search("body", text)
        with pytest.raises(QueryError):
            table.token_match("body", text)
        with pytest.raises(QueryError):
            table.hybrid_search("body", text, "emb", np.ones(DIM))
    with pytest.raises(QueryError):
        table.bm25_search("body", None)  # type: ignore[arg-type]


def test_bad_k_and_mode_are_query_errors_and_k_zero_is_empty(table):
    with pytest.raises(QueryError, match="k must be"):
        table.bm25_search("body", "rust", -1)
    with pytest.raises(QueryError, match="k must be"):
        table.vector_search("emb", np.ones(DIM), 2.5)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="mode"):
        table.bm25_search("body", "rust", mode="xor")
    with pytest.raises(QueryError, match="mode"):
        table.token_match("body", "rust", mode="xor")
    assert table.bm25_search("body", "rust", 0).num_rows == 0
    assert table.vector_search("emb", np.ones(DIM), 0).num_rows == 0
    assert table.hybrid_search("body", "rust", "emb", np.ones(DIM), 0).num_rows == 0


def test_exact_match_takes_the_value_literally_not_as_a_query(connect):
    t = connect().create_table("lit", pa.schema([("s", pa.string())]))
    values = ["!!!", "-rust", "pars*", "rust", "a-b", "rust -python", None, "", "rust"]
    t.append(pa.table({"s": values}))
    for value in ["!!!", "-rust", "pars*", "rust", "a-b", "rust -python", "", "***", "python"]:
        want = [i for i, v in enumerate(values) if v == value]
        assert t.exact_match("s", value).tolist() == want, value
    with pytest.raises(QueryError, match="string"):
        t.exact_match("s", 5)  # type: ignore[arg-type]
