"""Search table functions in SQL give what the table API gives, and compose with SQL.

Each root kind (memory, local disk) holds one table built from several appends, a
delete and an update, so it has many files, tombstones and a row that moved to a new
file keeping its ``_id``. The functions are registered on a plain DataFusion context
with a ``pin`` that hands out the table's current snapshot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import datafusion
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql.functions import register_search_functions
from quiver.supertable.table import Table
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8
USER_COLUMNS = ["title", "body", "year"]


def _root(kind: str, tmp_path_factory, s3_server=None) -> Iterator[tuple[str, dict[str, str]]]:
    if kind == "memory":
        uri = f"memory://f{uuid.uuid4().hex}"
        yield uri, {}
        drop_memory_store(uri)
    elif kind == "local":
        yield str(tmp_path_factory.mktemp("sqlfn") / "root"), {}
    else:
        yield f"s3://{s3_server.new_bucket()}/quiver", s3_server.options()


@pytest.fixture(scope="module", params=["memory", "local", "s3"])
def docs(request, tmp_path_factory, s3_server
         ) -> Iterator[tuple[Table, datafusion.SessionContext]]:
    """A table with several files, tombstones and a moved row; a context searching it.

    On S3 the files are opened lazily and searched through the fan-out thread pool."""
    for uri, options in _root(request.param, tmp_path_factory, s3_server):
        con = catalog.connect(uri, **options)
        table = con.create_table("docs", docs_schema(DIM))
        for seed in range(4):
            table.append(make_docs(150, seed, DIM))
        table.delete([("year", "<", 2004)])
        table.update([("year", "=", 2010)], {"title": "zanzibar quokka"})
        ctx = datafusion.SessionContext()
        register_search_functions(ctx, lambda name, c=con: c.open_table(name).snapshot())
        yield table, ctx
        con.close()


def _sql(ctx: datafusion.SessionContext, sql: str) -> pa.Table:
    return ctx.sql(sql).to_arrow_table()


def _vec_text(v: np.ndarray) -> str:
    return "[" + ", ".join(repr(float(x)) for x in v) + "]"


def _same_hits(got: pa.Table, want: pa.Table) -> None:
    assert got.column_names == ["_id", "score", *USER_COLUMNS]
    assert got.column("_id").to_pylist() == want.column("_id").to_pylist()
    assert got.column("score").to_pylist() == want.column("score").to_pylist()
    for c in USER_COLUMNS:
        assert got.column(c).to_pylist() == want.column(c).to_pylist()


@pytest.mark.parametrize(("column", "query", "mode"), [
    ("body", "rust", None), ("body", "rust async -python", "or"),
    ("body", "rust python", "and"), ("title", "zanzibar", "or"), ("body", "pars*", "OR"),
    ("body", '"rust python"', "or"), ("body", '"rust python"~2 -json', "or"),
    ("title^2,body", "rust python", "or"), ("title,body^0.5", 'title:rust "json http"', "or"),
    ("title,body", "rust python", "and"),
])
def test_bm25_search_equals_table_api(docs, column, query, mode) -> None:
    table, ctx = docs
    extra = f", '{mode}'" if mode else ""
    got = _sql(ctx, f"SELECT * FROM bm25_search('docs', '{column}', '{query}', 15{extra})")
    want = table.bm25_search(column, query, 15, mode=(mode or "or").lower())
    assert want.num_rows > 0
    _same_hits(got, want)
    assert got.schema.field("score").type == pa.float32()
    assert got.schema.field("_id").type == pa.int64()


def test_vector_search_equals_table_api_for_every_literal_form(docs) -> None:
    table, ctx = docs
    q = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
    want = table.vector_search("emb", q, 12)
    assert want.num_rows == 12
    forms = [f"'{_vec_text(q)}'", f"'{_vec_text(q)[1:-1]}'", _vec_text(q),
             "make_array(" + ", ".join(repr(float(x)) for x in q) + ")"]
    for form in forms:
        got = _sql(ctx, f"SELECT * FROM vector_search('docs', 'emb', {form}, 12)")
        _same_hits(got, want)
    scores = got.column("score").to_numpy()
    assert np.all(np.diff(scores) >= 0), "distances come nearest first"
    probed = _sql(ctx, f"SELECT _id, score FROM vector_search('docs', 'emb', {forms[0]}, 12, 4)")
    want_probed = table.vector_search("emb", q, 12, nprobe=4)
    assert probed.column("_id").to_pylist() == want_probed.column("_id").to_pylist()


def test_hybrid_search_equals_table_api(docs) -> None:
    table, ctx = docs
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    got = _sql(ctx, f"SELECT * FROM hybrid_search('docs', 'body', 'json parser', 'emb', "
                    f"'{_vec_text(q)}', 10)")
    want = table.hybrid_search("body", "json parser", "emb", q, 10)
    assert want.num_rows == 10
    _same_hits(got, want)
    scores = got.column("score").to_numpy()
    assert np.all(np.diff(scores) <= 0), "fused scores come best first"


def test_weighted_hybrid_search_equals_the_weighted_fusion(docs) -> None:
    from quiver.supertable import search

    table, ctx = docs
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    snap = table.snapshot()
    for tw, vw in ((1.0, 0.0), (2.0, 0.5)):
        got = _sql(ctx, f"SELECT * FROM hybrid_search('docs', 'body', 'json parser', 'emb', "
                        f"'{_vec_text(q)}', 10, {tw}, {vw})")
        hits = search.hybrid(snap, "body", "json parser", "emb", q, 10, text_weight=tw,
                             vector_weight=vw)
        assert got.column("_id").to_pylist() == hits.ids.tolist()
    text_only = _sql(ctx, f"SELECT _id FROM hybrid_search('docs', 'body', 'json parser', "
                          f"'emb', '{_vec_text(q)}', 10, 1, 0)")
    bm = table.bm25_search("body", "json parser", 10)
    assert text_only.column("_id").to_pylist() == bm.column("_id").to_pylist()


@pytest.mark.parametrize(("query", "mode"), [("rust async", "and"), ("json http", "or"),
                                             ("quokka", None)])
def test_token_match_returns_every_live_match_unranked(docs, query, mode) -> None:
    table, ctx = docs
    extra = f", '{mode}'" if mode else ""
    column = "title" if query == "quokka" else "body"
    got = _sql(ctx, f"SELECT * FROM token_match('docs', '{column}', '{query}'{extra})")
    ids = table.token_match(column, query, mode or "or")
    assert len(ids) > 0
    assert got.column("_id").to_pylist() == ids.tolist()
    assert got.column("score").null_count == got.num_rows
    rows = table.to_arrow(with_id=True)
    rows = rows.filter(pc.is_in(rows.column("_id"), pa.array(ids))).sort_by("_id")
    for c in USER_COLUMNS:
        assert got.column(c).to_pylist() == rows.column(c).to_pylist()


def test_exact_match_finds_updated_rows_under_their_ids(docs) -> None:
    table, ctx = docs
    got = _sql(ctx, "SELECT * FROM exact_match('docs', 'title', 'zanzibar quokka')")
    live = table.to_arrow(with_id=True)
    updated = live.filter(pc.equal(live.column("year"), 2010)).sort_by("_id")
    assert updated.num_rows > 0
    assert got.column("_id").to_pylist() == updated.column("_id").to_pylist()
    assert set(got.column("title").to_pylist()) == {"zanzibar quokka"}
    assert got.column("_id").to_pylist() == table.exact_match("title", "zanzibar quokka").tolist()
    none = _sql(ctx, "SELECT * FROM exact_match('docs', 'title', 'zanzibar')")
    assert none.num_rows == 0


def test_search_relation_filters_and_orders_like_duckdb(docs) -> None:
    table, ctx = docs
    got = _sql(ctx, "SELECT title, score FROM bm25_search('docs', 'body', 'rust json', 60) "
                    "WHERE score > 1 AND year >= 2010 ORDER BY score DESC, _id")
    hits = table.bm25_search("body", "rust json", 60)
    want = duckdb.connect().from_arrow(hits).query(
        "hits", "SELECT title, score FROM hits WHERE score > 1 AND year >= 2010 "
                "ORDER BY score DESC, _id").to_arrow_table()
    assert got.num_rows > 0
    assert got.column("title").to_pylist() == want.column("title").to_pylist()
    assert got.column("score").to_pylist() == want.column("score").to_pylist()


def test_search_relation_joins_and_aggregates_like_duckdb(docs) -> None:
    table, ctx = docs
    live = table.to_arrow(with_id=True).drop_columns(["emb"])
    ctx.register_record_batches("live_rows", [live.to_batches()])
    sql = ("SELECT l.year, count(*) AS n, max(s.score) AS best "
           "FROM {fn} s JOIN live_rows l ON l._id = s._id "
           "WHERE l.year > 2005 GROUP BY l.year ORDER BY l.year")
    try:
        got = _sql(ctx, sql.format(fn="bm25_search('docs', 'body', 'data tool', 80)"))
    finally:
        ctx.deregister_table("live_rows")
    db = duckdb.connect()
    db.register("live_rows", live)
    db.register("hits", table.bm25_search("body", "data tool", 80))
    want = db.sql(sql.format(fn="hits")).to_arrow_table()
    assert got.num_rows > 0
    assert got.column("year").to_pylist() == want.column("year").to_pylist()
    assert got.column("n").to_pylist() == want.column("n").to_pylist()
    assert got.column("best").to_pylist() == want.column("best").to_pylist()


def test_empty_results_carry_the_full_schema(docs) -> None:
    _, ctx = docs
    for sql in ["SELECT * FROM bm25_search('docs', 'body', 'zebra', 10)",
                "SELECT * FROM bm25_search('docs', 'body', 'rust', 0)",
                "SELECT * FROM token_match('docs', 'body', 'rust zebra', 'and')",
                "SELECT * FROM exact_match('docs', 'title', 'no such title')"]:
        got = _sql(ctx, sql)
        assert got.num_rows == 0
        assert got.column_names == ["_id", "score", *USER_COLUMNS]
        assert got.schema.field("year").type == pa.int32()


@pytest.fixture(params=["memory", "local"])
def fresh(request, tmp_path_factory) -> Iterator[catalog.Connection]:
    for uri, _ in _root(request.param, tmp_path_factory):
        con = catalog.connect(uri)
        yield con
        con.close()


def test_deleted_rows_never_returned_and_k_live_hits_come_back(fresh) -> None:
    table = fresh.create_table("docs", docs_schema(DIM))
    for seed in range(3):
        table.append(make_docs(120, seed + 10, DIM))
    before = table.bm25_search("body", "rust", 1000)
    doomed = before.column("_id").to_numpy()[::2]
    table.delete([("_id", "in", doomed.tolist())])
    ctx = datafusion.SessionContext()
    register_search_functions(ctx, lambda name: fresh.open_table(name).snapshot())
    live_matches = before.num_rows - len(doomed)
    k = live_matches - 3
    got = _sql(ctx, f"SELECT _id FROM bm25_search('docs', 'body', 'rust', {k})")
    assert got.num_rows == k
    assert not np.isin(got.column("_id").to_numpy(), doomed).any()
    q = _vec_text(np.ones(DIM, np.float32))
    for sql in [f"SELECT _id FROM vector_search('docs', 'emb', '{q}', 400)",
                f"SELECT _id FROM hybrid_search('docs', 'body', 'rust', 'emb', '{q}', 400)",
                "SELECT _id FROM token_match('docs', 'body', 'rust')"]:
        ids = _sql(ctx, sql).column("_id").to_numpy()
        assert len(ids) > 0
        assert not np.isin(ids, doomed).any(), sql
    assert _sql(ctx, "SELECT _id FROM token_match('docs', 'body', 'rust')").num_rows \
        == live_matches


def test_functions_search_the_snapshot_pin_hands_out(fresh) -> None:
    table = fresh.create_table("docs", docs_schema(DIM))
    table.append(make_docs(200, 5, DIM))
    old_version = table.version
    ids = table.token_match("body", "json")
    table.delete([("_id", "in", ids.tolist())])
    ctx = datafusion.SessionContext()
    register_search_functions(ctx, lambda name: fresh.open_table(name).at_version(old_version))
    got = _sql(ctx, "SELECT _id FROM token_match('docs', 'body', 'json')")
    assert got.column("_id").to_pylist() == ids.tolist()
    current = datafusion.SessionContext()
    register_search_functions(current, lambda name: fresh.open_table(name).snapshot())
    assert _sql(current, "SELECT _id FROM bm25_search('docs', 'body', 'json', 10)").num_rows == 0
