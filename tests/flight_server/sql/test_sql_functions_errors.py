"""Search table functions reject bad calls with a SqlPlanError naming what is wrong, and
parse vector literals strictly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import datafusion
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql.errors import SqlPlanError
from quiver.flight_server.sql.functions import (
    parse_vector_literal,
    register_search_functions,
    search_errors,
)
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8
VEC = "'" + ",".join(["0.5"] * DIM) + "'"


@pytest.fixture(scope="module")
def ctx() -> Iterator[datafusion.SessionContext]:
    uri = f"memory://e{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    con.create_table("docs", docs_schema(DIM)).append(make_docs(50, 1, DIM))
    scored = pa.schema([("body", pa.string()), ("score", pa.float64())])
    con.create_table("scored", scored).append(pa.table({"body": ["a b"], "score": [1.0]},
                                                       schema=scored))
    context = datafusion.SessionContext()
    register_search_functions(context, lambda name: con.open_table(name).snapshot())
    yield context
    con.close()
    drop_memory_store(uri)


@pytest.mark.parametrize(("sql", "words"), [
    ("bm25_search('docs', 'body', 'rust')", ["bm25_search takes 4 to 5", "got 3"]),
    ("bm25_search('docs', 'body', 'rust', 5, 'or', 1)", ["bm25_search takes", "got 6"]),
    ("exact_match('docs')", ["exact_match takes 3 arguments", "got 1"]),
    ("bm25_search('docs', 'body', 'rust', '5')", ["'k'", "integer"]),
    ("bm25_search('docs', 'body', 'rust', 2.5)", ["'k'", "integer"]),
    ("bm25_search('docs', 'body', 'rust', -1)", ["'k'", "non-negative"]),
    ("bm25_search('docs', 'body', 'rust', 5, 'xor')", ["'mode'", "'and' or 'or'"]),
    ("bm25_search('docs', 'body', NULL, 5)", ["'query'", "NULL"]),
    ("bm25_search('docs', body, 'rust', 5)", ["'column'", "literal"]),
    ("bm25_search('docs', 7, 'rust', 5)", ["'column'", "string"]),
    ("bm25_search('nodocs', 'body', 'rust', 5)", ["no table 'nodocs'"]),
    ("bm25_search('bad name', 'body', 'rust', 5)", ["invalid table name"]),
    ("bm25_search('docs', 'nope', 'rust', 5)", ["no column 'nope'", "title"]),
    ("bm25_search('docs', 'year', 'rust', 5)", ["'year'", "no BM25 index"]),
    ("bm25_search('docs', 'body', '-- ...', 5)", ["no searchable token"]),
    ("token_match('docs', 'emb', 'rust')", ["'emb'", "no BM25 index"]),
    ("vector_search('docs', 'body', " + VEC + ", 5)", ["'body'", "no vector index"]),
    ("vector_search('docs', 'emb', '[1, 2, 3]', 5)", ["3 values", "vectors of 8"]),
    ("vector_search('docs', 'emb', [1, 2], 5)", ["2 values", "vectors of 8"]),
    ("vector_search('docs', 'emb', '[1, 2', 5)", ["'vector'", "unbalanced"]),
    ("vector_search('docs', 'emb', '1;2', 5)", ["'vector'", "malformed"]),
    ("vector_search('docs', 'emb', '[]', 5)", ["'vector'", "empty"]),
    ("vector_search('docs', 'emb', 'nan,1', 5)", ["'vector'", "malformed"]),
    ("vector_search('docs', 'emb', 42, 5)", ["'vector'", "array literal"]),
    ("vector_search('docs', 'emb', " + VEC + ", 5, 0)", ["'nprobe'", "positive"]),
    ("hybrid_search('docs', 'body', 'rust', 'title', " + VEC + ", 5)",
     ["'title'", "no vector index"]),
    ("exact_match('docs', 'year', '2020')", ["'year'", "int32, not text"]),
    ("exact_match('docs', 'missing', 'x')", ["no column 'missing'"]),
    ("bm25_search('scored', 'body', 'a', 5)", ["'scored'", "'score'"]),
])
def test_bad_calls_raise_sql_plan_error_naming_the_problem(ctx, sql, words) -> None:
    with pytest.raises(SqlPlanError) as info, search_errors():
        ctx.sql(f"SELECT * FROM {sql}").to_arrow_table()
    for word in words:
        assert word in str(info.value)


def test_without_search_errors_the_message_still_reaches_the_caller(ctx) -> None:
    with pytest.raises(Exception, match="no BM25 index") as info:
        ctx.sql("SELECT * FROM bm25_search('docs', 'year', 'rust', 5)").to_arrow_table()
    assert not isinstance(info.value, SqlPlanError)


def test_search_errors_leaves_other_failures_alone(ctx) -> None:
    with pytest.raises(Exception, match=r"(?i)table.*not found|no_such") as info, search_errors():
        ctx.sql("SELECT * FROM no_such_relation").to_arrow_table()
    assert not isinstance(info.value, SqlPlanError)
    # A search error recorded earlier is not blamed for an unrelated later failure.
    with pytest.raises(SqlPlanError), search_errors():
        ctx.sql("SELECT * FROM bm25_search('docs', 'year', 'rust', 5)").to_arrow_table()
    with pytest.raises(Exception) as later, search_errors():
        ctx.sql("SELECT * FROM no_such_relation").to_arrow_table()
    assert not isinstance(later.value, SqlPlanError)


# -- vector literals ------------------------------------------------------------------------

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(finite32, min_size=1, max_size=40), brackets=st.booleans(),
       sep=st.sampled_from([",", ", ", " ,  ", ",\n"]))
def test_text_vector_round_trips(values, brackets, sep) -> None:
    text = sep.join(repr(v) for v in values)
    if brackets:
        text = f" [ {text} ] "
    got = parse_vector_literal(text)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(values, np.float32))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(finite32, min_size=1, max_size=40),
       arrow_type=st.sampled_from([pa.list_(pa.float64()), pa.list_(pa.float32()),
                                   pa.large_list(pa.float64())]))
def test_array_literal_round_trips(values, arrow_type) -> None:
    got = parse_vector_literal(pa.scalar(values, arrow_type))
    np.testing.assert_array_equal(got, np.array(values, np.float32))


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.,-+eE[] naifx_")), max_size=30))
def test_any_text_parses_to_finite_floats_or_raises_sql_plan_error(text) -> None:
    try:
        got = parse_vector_literal(text)
    except SqlPlanError:
        return
    assert got.ndim == 1 and len(got) > 0 and np.all(np.isfinite(got))
    assert got.dtype == np.float32


@pytest.mark.parametrize("bad", [
    "", "[]", "  ", "[1, 2", "1, 2]", "1,,2", "1,2,", "[[1,2]]", "1 2", "inf,1", "1e39",
    "0x10", "1_000", None, 3.5, pa.scalar(None, pa.list_(pa.float64())),
    pa.scalar([1.0, None], pa.list_(pa.float64())), pa.scalar([], pa.list_(pa.float64())),
    pa.scalar(["a"], pa.list_(pa.string())), pa.scalar([[1.0]], pa.list_(pa.list_(pa.float64()))),
    [[1.0, 2.0]], [float("nan")],
])
def test_malformed_vectors_are_rejected(bad) -> None:
    with pytest.raises(SqlPlanError):
        parse_vector_literal(bad)


def test_accepted_vector_forms() -> None:
    want = np.array([0.5, -2.0, 3e-3], np.float32)
    for value in ["[0.5, -2, 3e-3]", "0.5,-2.0,.003", "+0.5 , -2. , 3E-3",
                  pa.scalar([0.5, -2, 0.003]), pa.scalar([1, 2], pa.list_(pa.int32())),
                  pa.scalar("[0.5,-2,0.003]"), [0.5, -2, 0.003], np.array([0.5, -2, 0.003])]:
        got = parse_vector_literal(value)
        if len(got) == 2:
            np.testing.assert_array_equal(got, [1, 2])
        else:
            np.testing.assert_array_equal(got, want)
