"""Search arguments may be any constant expression or scalar subquery (parameters
included): each SQL form gives exactly what the two-step equivalent gives — first
evaluate the argument, then search with its value written as a literal.
"""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql.errors import SqlPlanError
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8


@pytest.fixture(scope="module")
def engine():
    uri = f"memory://const{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    docs = con.create_table("docs", docs_schema(DIM))
    for seed in range(3):
        docs.append(make_docs(120, seed, DIM))
        docs.commit()
    docs.delete([("year", "<", 2003)])
    yield SqlEngine(con)
    con.close()
    drop_memory_store(uri)


def _vec_text(engine: SqlEngine, row_id: int) -> str:
    """Step one of the two-step form: the stored vector, as the literal a client writes."""
    emb = engine.execute(f"SELECT emb FROM docs WHERE _id = {row_id}").column(0)[0].as_py()
    return "'[" + ", ".join(repr(float(x)) for x in emb) + "]'"


def _live_id(engine: SqlEngine, n: int = 0) -> int:
    return engine.execute("SELECT _id FROM docs ORDER BY _id").column(0)[n].as_py()


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows > 0
    assert a.to_pylist() == b.to_pylist()


def test_knn_with_a_scalar_subquery_vector_equals_the_two_step_query(engine):
    rid = _live_id(engine, 5)
    got = engine.execute("SELECT _id, vector_distance(emb, (SELECT emb FROM docs WHERE "
                         f"_id = {rid})) AS d FROM docs WHERE knn(emb, (SELECT emb FROM docs "
                         f"WHERE _id = {rid}), 4) ORDER BY d, _id")
    v = _vec_text(engine, rid)
    want = engine.execute(f"SELECT _id, vector_distance(emb, {v}) AS d FROM docs "
                          f"WHERE knn(emb, {v}, 4) ORDER BY d, _id")
    _same(got, want)
    assert got.column("_id")[0].as_py() == rid  # the row itself is its own nearest


def test_vector_search_with_a_subquery_and_an_expression_for_k(engine):
    rid = _live_id(engine, 9)
    got = engine.execute("SELECT _id, score FROM vector_search('docs', 'emb', (SELECT emb "
                         f"FROM docs WHERE _id = {rid}), 1 + 2)")
    want = engine.execute(f"SELECT _id, score FROM vector_search('docs', 'emb', "
                          f"{_vec_text(engine, rid)}, 3)")
    _same(got, want)


def test_bm25_with_an_expression_query_equals_the_literal_query(engine):
    got = engine.execute("SELECT _id, bm25(body, lower('JSON')) AS s FROM docs "
                         "WHERE bm25(body, lower('JSON')) > 0 ORDER BY s DESC, _id")
    want = engine.execute("SELECT _id, bm25(body, 'json') AS s FROM docs "
                          "WHERE bm25(body, 'json') > 0 ORDER BY s DESC, _id")
    _same(got, want)


def test_bm25_search_with_concat_query_equals_the_literal_query(engine):
    got = engine.execute("SELECT _id, score FROM bm25_search('docs', 'body', "
                         "concat('rust', ' async'), 5)")
    want = engine.execute("SELECT _id, score FROM bm25_search('docs', 'body', 'rust async', 5)")
    _same(got, want)


def test_hybrid_search_with_expressions_everywhere(engine):
    rid = _live_id(engine, 2)
    got = engine.execute("SELECT _id, score FROM hybrid_search('docs', 'body', upper('rust'), "
                         f"'emb', (SELECT emb FROM docs WHERE _id = {rid}), 2 * 3, 0.25 * 2, "
                         "CAST(1 AS DOUBLE))")
    want = engine.execute("SELECT _id, score FROM hybrid_search('docs', 'body', 'RUST', 'emb', "
                          f"{_vec_text(engine, rid)}, 6, 0.5, 1.0)")
    _same(got, want)


def test_parameters_inside_constant_arguments(engine):
    rid = _live_id(engine, 7)
    got = engine.execute("SELECT _id FROM docs WHERE knn(emb, (SELECT emb FROM docs WHERE "
                         "_id = ?), ?)", [rid, 3])
    want = engine.execute(f"SELECT _id FROM docs WHERE knn(emb, {_vec_text(engine, rid)}, 3)")
    _same(got, want)
    got = engine.execute("SELECT _id, score FROM bm25_search('docs', 'body', concat(?, ?), ?)",
                         ["rust ", "json", 4])
    want = engine.execute("SELECT _id, score FROM bm25_search('docs', 'body', 'rust json', 4)")
    _same(got, want)


def test_prepared_statements_with_constant_arguments_declare_types_and_schema(engine):
    p = engine.prepare("SELECT _id FROM docs WHERE knn(emb, (SELECT emb FROM docs WHERE "
                       "_id = ?), ?)")
    assert p.parameter_schema.types == [pa.int64(), pa.int64()]
    assert p.dataset_schema.names == ["_id"]
    p = engine.prepare("SELECT _id, score FROM bm25_search('docs', 'body', lower(?), 3)")
    assert p.parameter_schema.types == [pa.string()]
    assert p.dataset_schema.names == ["_id", "score"]


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT _id FROM docs WHERE bm25(body, title) > 0", "not a column of the query"),
    ("SELECT _id FROM docs WHERE knn(emb, (SELECT emb FROM docs WHERE _id > 0), 3)",
     "more than one row"),
    ("SELECT _id FROM docs WHERE knn(emb, (SELECT emb FROM docs WHERE _id < 0), 3)",
     "must not be NULL|must be a string"),
    ("SELECT * FROM bm25_search('docs', 'body', 'rust', (SELECT 'x'))", "must be an integer"),
    ("SELECT * FROM vector_search('docs', 'emb', (SELECT [1.0, 2.0]), 3)",
     "has 2 values"),
])
def test_bad_constant_arguments_are_refused_by_name(engine, sql, message):
    with pytest.raises(SqlPlanError, match=message):
        engine.execute(sql)


def test_a_subquery_argument_reads_the_statements_pinned_snapshot(engine):
    """The argument and the search read the same table version: the row's own vector
    finds the row itself at distance 0."""
    rid = _live_id(engine, 11)
    got = engine.execute("SELECT _id, score FROM vector_search('docs', 'emb', (SELECT emb "
                         f"FROM docs WHERE _id = {rid}), 1)")
    assert got.column("_id").to_pylist() == [rid]
    assert np.isclose(got.column("score")[0].as_py(), 0.0, atol=1e-6)
