"""bm25(), knn() and vector_distance() inside ordinary SQL give what the explicit search
functions and brute-force oracles give, answered from the indexes.

Each root kind (memory, local disk) holds a table of many superfiles with a delete and
an update (so tombstones, and rows that moved to a new file keeping their ``_id``).
"""

from __future__ import annotations

import uuid

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8


def _build(con: catalog.Connection) -> None:
    docs = con.create_table("docs", docs_schema(DIM))
    for seed in range(6):
        docs.append(make_docs(150, seed, DIM))
        docs.commit()
    docs.delete([("year", "<", 2003)])
    docs.update([("year", "=", 2011)], {"title": "zanzibar quokka"})
    other = con.create_table("plain", docs_schema(DIM), fts=["title"], vector={})
    other.append(make_docs(50, 99, DIM))
    other.commit()


@pytest.fixture(scope="module", params=["memory", "local"])
def engine(request, tmp_path_factory):
    uri = (f"memory://rw{uuid.uuid4().hex}" if request.param == "memory"
           else str(tmp_path_factory.mktemp("rewrite") / "root"))
    con = catalog.connect(uri)
    _build(con)
    yield SqlEngine(con)
    con.close()
    if request.param == "memory":
        drop_memory_store(uri)


@pytest.fixture(scope="module")
def live(engine) -> pa.Table:
    return engine.connection.open_table("docs").to_arrow(with_id=True)


def _vec(seed: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).standard_normal(DIM).astype(np.float32)


def _text(v: np.ndarray) -> str:
    return "[" + ", ".join(repr(float(x)) for x in v) + "]"


def _cosine(live: pa.Table, q: np.ndarray) -> np.ndarray:
    m = live.column("emb").combine_chunks().values.to_numpy().reshape(-1, DIM).astype(np.float64)
    q = q.astype(np.float64)
    return 1.0 - (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))


def _notes(engine: SqlEngine, sql: str) -> list[str]:
    plan = engine.execute("EXPLAIN " + sql)
    return [p for t, p in zip(plan.column(0).to_pylist(), plan.column(1).to_pylist(),
                              strict=True) if t == "quiver_index_path"]


# -- bm25 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["", "AND year > 2015", "AND year BETWEEN 2005 AND 2012",
                                   "AND (year < 2008 OR title = 'zanzibar quokka')"])
@pytest.mark.parametrize("query", ["rust", "json parser"])
def test_bm25_top_k_equals_explicit_search_with_the_same_filter(engine, query, where):
    got = engine.execute(
        f"SELECT _id, title, bm25(body, '{query}') AS s FROM docs "
        f"WHERE bm25(body, '{query}') > 0 {where} ORDER BY s DESC LIMIT 10")
    want = engine.execute(
        f"SELECT _id, title, score AS s FROM bm25_search('docs', 'body', '{query}', 100000) "
        f"WHERE TRUE {where} ORDER BY s DESC, _id LIMIT 10")
    assert got.num_rows == want.num_rows == 10
    assert got.column("s").to_pylist() == want.column("s").to_pylist()
    every = engine.execute(
        f"SELECT _id, score FROM bm25_search('docs', 'body', '{query}', 100000) WHERE TRUE "
        f"{where}").to_pylist()
    scores = {r["_id"]: r["score"] for r in every}
    assert all(scores[r["_id"]] == r["s"] for r in got.to_pylist())


def test_bm25_top_k_asks_the_index_for_limit_plus_offset_and_pushes_the_filter(engine):
    notes = _notes(engine, "SELECT title, bm25(body, 'rust') AS s FROM docs WHERE "
                           "bm25(body, 'rust') > 0 AND year > 2020 ORDER BY s DESC "
                           "LIMIT 10 OFFSET 5")
    assert len(notes) == 1
    assert notes[0].startswith("index path: bm25 on docs.body k=15 filter=[year > 2020]")
    assert "'body'" not in notes[0]


def test_bm25_with_a_filter_the_index_cannot_take_ranks_every_match_then_filters(engine):
    sql = ("SELECT _id, bm25(body, 'rust') AS s FROM docs WHERE bm25(body, 'rust') > 0 "
           "AND lower(title) LIKE '%json%' ORDER BY s DESC LIMIT 7")
    got = engine.execute(sql)
    want = engine.execute(
        "SELECT _id, score AS s FROM bm25_search('docs', 'body', 'rust', 100000) "
        "WHERE lower(title) LIKE '%json%' ORDER BY s DESC, _id LIMIT 7")
    assert got.column("s").to_pylist() == want.column("s").to_pylist()
    note = _notes(engine, sql)[0]
    assert "k=all" in note and "after the search=[LOWER(title) LIKE '%json%']" in note


def test_bm25_without_a_match_condition_scores_every_row_with_zero_for_non_matches(engine, live):
    got = engine.execute("SELECT _id, year, bm25(body, 'rust') AS s FROM docs "
                         "WHERE year > 2010 ORDER BY _id")
    hits = engine.execute("SELECT _id, score FROM bm25_search('docs', 'body', 'rust', 100000)")
    db = duckdb.connect()
    db.register("live", live.select(["_id", "year"]))
    db.register("hits", hits)
    want = db.sql("SELECT l._id, l.year, COALESCE(h.score, 0) AS s FROM live l LEFT JOIN "
                  "hits h USING (_id) WHERE l.year > 2010 ORDER BY l._id").to_arrow_table()
    assert got.column("_id").to_pylist() == want.column("_id").to_pylist()
    assert got.column("s").to_pylist() == pytest.approx(want.column("s").to_pylist())
    assert 0 < sum(s > 0 for s in got.column("s").to_pylist()) < got.num_rows


def test_bm25_in_aggregates_and_bare_projection_keep_readable_names(engine):
    got = engine.execute("SELECT title, bm25(body, 'rust') FROM docs WHERE "
                         "bm25(body, 'rust') >= 1.5 ORDER BY 2 DESC, title LIMIT 3")
    assert got.column_names == ["title", "bm25(body, 'rust')"]
    assert all(s >= 1.5 for s in got.column(1).to_pylist())
    n = engine.execute("SELECT count(*) AS n FROM docs WHERE bm25(body, 'rust') > 0")
    m = engine.execute("SELECT count(*) AS n FROM token_match('docs', 'body', 'rust')")
    assert n.to_pylist() == m.to_pylist()


def test_bm25_on_a_qualified_column_in_a_join(engine):
    got = engine.execute(
        "SELECT d._id, d.bm25_s FROM (SELECT x._id, bm25(x.body, 'rust') AS bm25_s "
        "FROM docs x JOIN docs y ON x._id = y._id WHERE bm25(x.body, 'rust') > 0 "
        "AND y.year > 2015) d ORDER BY d._id")
    want = engine.execute(
        "SELECT _id, score FROM bm25_search('docs', 'body', 'rust', 100000) "
        "WHERE year > 2015 ORDER BY _id")
    assert got.column(0).to_pylist() == want.column(0).to_pylist()
    assert got.column(1).to_pylist() == want.column(1).to_pylist()


def test_select_star_with_bm25_returns_every_visible_column(engine):
    got = engine.execute("SELECT * FROM docs WHERE bm25(title, 'quokka') > 0 ORDER BY body")
    assert got.column_names == ["title", "body", "year", "emb"]
    assert got.num_rows > 0
    assert set(got.column("year").to_pylist()) == {2011}


# -- knn / vector_distance ----------------------------------------------------------------------


@pytest.mark.parametrize(("where", "keep"), [
    ("", lambda t: np.ones(t.num_rows, bool)),
    ("AND year = 2015", lambda t: t.column("year").to_numpy() == 2015),
    ("AND year IN (2004, 2024) AND title != 'zanzibar quokka'",
     lambda t: np.isin(t.column("year").to_numpy(), [2004, 2024])
     & (np.array(t.column("title").to_pylist()) != "zanzibar quokka")),
    ("AND lower(title) LIKE '%rust%'",
     lambda t: np.array(["rust" in s.lower() for s in t.column("title").to_pylist()])),
])
@pytest.mark.parametrize("k", [1, 10])
def test_filtered_knn_returns_the_k_nearest_rows_passing_the_filter(engine, live, where, keep,
                                                                    k):
    q = _vec(k)
    v = _text(q)
    got = engine.execute(
        f"SELECT _id, vector_distance(emb, '{v}') AS d FROM docs WHERE knn(emb, '{v}', {k}) "
        f"{where} ORDER BY d")
    mask = keep(live)
    ids = live.column("_id").to_numpy()[mask]
    dist = _cosine(live, q)[mask]
    order = np.argsort(dist, kind="stable")[:k]
    assert got.num_rows == k
    assert got.column("_id").to_pylist() == ids[order].tolist()
    assert got.column("d").to_pylist() == pytest.approx(dist[order].tolist(), abs=1e-5)


@pytest.mark.parametrize("floor", ["> 0", "> 1.5"])
def test_knn_with_a_bm25_floor_returns_the_k_nearest_matching_rows_with_their_scores(
        engine, live, floor):
    q = _vec(7)
    v = _text(q)
    got = engine.execute(
        f"SELECT _id, bm25(title, 'rust') AS s, vector_distance(emb, '{v}') AS d FROM docs "
        f"WHERE knn(emb, '{v}', 5) AND bm25(title, 'rust') {floor} AND year > 2004 "
        "ORDER BY d")
    scored = engine.execute("SELECT _id, score FROM bm25_search('docs', 'title', 'rust', 100000)")
    score_of = dict(zip(scored.column("_id").to_pylist(), scored.column("score").to_pylist(),
                        strict=True))
    bound = float(floor.split()[1])
    ids = live.column("_id").to_numpy()
    keep = np.array([score_of.get(i, 0.0) > bound for i in ids.tolist()]) \
        & (live.column("year").to_numpy() > 2004)
    dist = _cosine(live, q)[keep]
    order = np.argsort(dist, kind="stable")[:5]
    assert got.num_rows == min(5, int(keep.sum())) > 0
    assert got.column("_id").to_pylist() == ids[keep][order].tolist()
    assert got.column("s").to_pylist() == pytest.approx(
        [score_of[i] for i in got.column("_id").to_pylist()], rel=1e-5)
    notes = _notes(engine, f"SELECT _id FROM docs WHERE knn(emb, '{v}', 5) "
                           f"AND bm25(title, 'rust') {floor}")
    assert len(notes) == 1 and "limits the kNN to them" in notes[0]


def test_knn_beside_a_projected_bm25_score_gives_zero_to_non_matching_rows(engine):
    v = _text(_vec(8))
    got = engine.execute(f"SELECT _id, bm25(title, 'rust') AS s FROM docs "
                         f"WHERE knn(emb, '{v}', 20) ORDER BY _id")
    knn_ids = engine.execute(f"SELECT _id FROM docs WHERE knn(emb, '{v}', 20) ORDER BY _id")
    assert got.column("_id").to_pylist() == knn_ids.column("_id").to_pylist()
    scored = engine.execute("SELECT _id, score FROM bm25_search('docs', 'title', 'rust', 100000)")
    score_of = dict(zip(scored.column("_id").to_pylist(), scored.column("score").to_pylist(),
                        strict=True))
    assert got.column("s").to_pylist() == pytest.approx(
        [score_of.get(i, 0.0) for i in got.column("_id").to_pylist()], rel=1e-5)


def test_knn_equals_vector_search_without_a_filter(engine):
    v = _text(_vec(3))
    got = engine.execute(f"SELECT _id, vector_distance(emb, {v}) AS d FROM docs "
                         f"WHERE knn(emb, {v}, 12) ORDER BY d, _id")
    want = engine.execute(f"SELECT _id, score AS d FROM vector_search('docs', 'emb', '{v}', 12) "
                          "ORDER BY d, _id")
    assert got.to_pylist() == want.to_pylist()


def test_knn_filter_is_pushed_into_the_index_search(engine):
    v = _text(_vec(4))
    notes = _notes(engine, f"SELECT title FROM docs WHERE knn(emb, '{v}', 5) AND year > 2020")
    assert notes[0].startswith("index path: knn on docs.emb k=5 filter=[year > 2020]")
    notes = _notes(engine, f"SELECT title FROM docs WHERE knn(emb, '{v}', 5) "
                           "AND title LIKE 'rust%'")
    assert "filter=[title LIKE 'rust%'] (by _id of rows passing it)" in notes[0]


def test_vector_distance_without_knn_is_computed_per_row(engine, live):
    q = _vec(5)
    v = ",".join(repr(float(x)) for x in q)
    got = engine.execute(f"SELECT _id, vector_distance(emb, '{v}') AS d FROM docs ORDER BY _id")
    order = np.argsort(live.column("_id").to_numpy())
    want = _cosine(live, q)[order]
    assert got.column("_id").to_pylist() == live.column("_id").to_numpy()[order].tolist()
    assert got.column("d").to_pylist() == pytest.approx(want.tolist(), abs=1e-5)


def test_vector_distance_to_another_vector_than_knn_is_computed(engine, live):
    a, b = _vec(6), _vec(7)
    got = engine.execute(
        f"SELECT _id, vector_distance(emb, '{_text(b)}') AS d FROM docs "
        f"WHERE knn(emb, '{_text(a)}', 4) ORDER BY _id")
    ids = live.column("_id").to_numpy()
    near = np.argsort(_cosine(live, a), kind="stable")[:4]
    pick = near[np.argsort(ids[near])]
    assert got.column("_id").to_pylist() == ids[pick].tolist()
    assert got.column("d").to_pylist() == pytest.approx(_cosine(live, b)[pick].tolist(),
                                                        abs=1e-5)


def test_knn_in_a_subquery_composes_with_an_outer_query(engine):
    v = _text(_vec(8))
    got = engine.execute(
        f"SELECT count(*) AS n, max(year) AS y FROM (SELECT year FROM docs "
        f"WHERE knn(emb, '{v}', 9) AND year >= 2010)")
    assert got.column("n").to_pylist() == [9]
    assert got.column("y").to_pylist()[0] >= 2010


# -- pushdown -----------------------------------------------------------------------------------


def test_bm25_top_k_opens_only_files_the_blooms_keep_and_never_scans_the_text(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    docs = con.create_table("docs", docs_schema(DIM))
    for seed in range(8):
        batch = make_docs(60, seed, DIM)
        if seed in (2, 5):
            body = batch.column("body").to_pylist()
            body[::7] = ["zanzibar quokka " + b for b in body[::7]]
            batch = batch.set_column(1, "body", pa.array(body, pa.string()))
        docs.append(batch)
        docs.commit()
    # No tombstones here: table-wide BM25 statistics open every file that has some.
    con.close()
    con = catalog.connect(str(tmp_path / "root"))
    engine = SqlEngine(con)
    table = con.open_table("docs")
    snap = table.snapshot()
    assert table.files_opened == 0
    got = engine.execute("SELECT title, year, bm25(body, 'zanzibar') AS s FROM docs WHERE "
                         "bm25(body, 'zanzibar') > 0 AND year > 2005 ORDER BY s DESC LIMIT 4")
    assert got.num_rows == 4
    assert 0 < table.files_opened <= 2 < len(snap.files)
    # The table was never registered with DataFusion: no scan of any of its columns.
    assert engine.views.registered_views() == []
    notes = _notes(engine, "SELECT title, year, bm25(body, 'zanzibar') AS s FROM docs WHERE "
                           "bm25(body, 'zanzibar') > 0 AND year > 2005 ORDER BY s DESC LIMIT 4")
    assert "columns=['title', 'year']" in notes[0]
    con.close()


def test_queries_without_search_calls_are_not_rewritten(engine):
    assert _notes(engine, "SELECT title FROM docs WHERE year > 2020") == []
    plan = engine.execute("EXPLAIN SELECT title FROM docs WHERE year > 2020")
    assert "quiver_index_path" not in plan.column(0).to_pylist()
