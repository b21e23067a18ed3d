"""knn() outside the AND conditions of WHERE (under OR / NOT, in the SELECT list) and
several different bm25() searches on one table reference give what the two-step
equivalents give: each search run on its own, then combined by hand."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8


@pytest.fixture(scope="module")
def engine():
    uri = f"memory://comb{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    docs = con.create_table("docs", docs_schema(DIM))
    for seed in range(4):
        docs.append(make_docs(120, 20 + seed, DIM))
        docs.commit()
    docs.delete([("year", "<", 2003)])
    docs.update([("year", "=", 2011)], {"title": "zanzibar quokka"})
    yield SqlEngine(con)
    con.close()
    drop_memory_store(uri)


def _v(seed: int) -> str:
    q = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return "[" + ", ".join(repr(float(x)) for x in q) + "]"


def _ids(engine: SqlEngine, sql: str) -> list[int]:
    return engine.execute(sql).column("_id").to_pylist()


def _scores(engine: SqlEngine, column: str, query: str) -> dict[int, float]:
    t = engine.execute(f"SELECT _id, score FROM bm25_search('docs', '{column}', '{query}', "
                       "100000)")
    return dict(zip(t.column("_id").to_pylist(), t.column("score").to_pylist(), strict=True))


def test_knn_or_a_condition_is_the_union_of_the_two(engine):
    v = _v(1)
    got = _ids(engine, f"SELECT _id FROM docs WHERE knn(emb, '{v}', 5) OR year = 2010 "
                       "ORDER BY _id")
    near = set(_ids(engine, f"SELECT _id FROM vector_search('docs', 'emb', '{v}', 5)"))
    year = set(_ids(engine, "SELECT _id FROM docs WHERE year = 2010"))
    assert got == sorted(near | year) and len(near - year) > 0


def test_knn_under_or_is_narrowed_by_the_top_level_comparisons(engine):
    v = _v(2)
    got = _ids(engine, f"SELECT _id FROM docs WHERE year > 2010 AND (knn(emb, '{v}', 4) "
                       "OR title = 'zanzibar quokka') ORDER BY _id")
    near = set(_ids(engine, f"SELECT _id FROM docs WHERE knn(emb, '{v}', 4) AND year > 2010"))
    named = set(_ids(engine, "SELECT _id FROM docs WHERE title = 'zanzibar quokka' "
                             "AND year > 2010"))
    assert len(near) == 4
    assert got == sorted(near | named)


def test_knn_in_the_select_list_marks_the_k_nearest_rows(engine):
    v = _v(3)
    got = engine.execute(f"SELECT _id, knn(emb, '{v}', 6) AS near FROM docs ORDER BY _id")
    near = set(_ids(engine, f"SELECT _id FROM vector_search('docs', 'emb', '{v}', 6)"))
    assert {i for i, n in zip(got.column("_id").to_pylist(), got.column("near").to_pylist(),
                              strict=True) if n} == near
    assert got.num_rows == engine.execute("SELECT count(*) FROM docs").column(0)[0].as_py()
    not_near = _ids(engine, f"SELECT _id FROM docs WHERE NOT knn(emb, '{v}', 6) ORDER BY _id")
    assert set(not_near) == set(got.column("_id").to_pylist()) - near


def test_two_bm25_searches_score_every_row_like_each_search_alone(engine):
    got = engine.execute("SELECT _id, bm25(body, 'rust') AS a, bm25(title, 'json') AS b "
                         "FROM docs ORDER BY _id")
    rust, json = _scores(engine, "body", "rust"), _scores(engine, "title", "json")
    ids = got.column("_id").to_pylist()
    assert got.column("a").to_pylist() == pytest.approx([rust.get(i, 0.0) for i in ids])
    assert got.column("b").to_pylist() == pytest.approx([json.get(i, 0.0) for i in ids])
    assert any(i in rust and i in json for i in ids)


def test_two_required_bm25_searches_give_the_rows_matching_both(engine):
    got = engine.execute("SELECT _id, bm25(body, 'rust') AS a, bm25(body, 'json') AS b "
                         "FROM docs WHERE bm25(body, 'rust') > 0 AND bm25(body, 'json') > 1 "
                         "ORDER BY _id")
    rust, json = _scores(engine, "body", "rust"), _scores(engine, "body", "json")
    want = sorted(i for i in rust if json.get(i, 0.0) > 1)
    assert got.column("_id").to_pylist() == want and want
    assert got.column("a").to_pylist() == pytest.approx([rust[i] for i in want])
    assert got.column("b").to_pylist() == pytest.approx([json[i] for i in want])


def test_a_second_bm25_may_be_compared_in_any_way_beside_a_required_one(engine):
    got = _ids(engine, "SELECT _id FROM docs WHERE bm25(body, 'rust') > 0 AND "
                       "bm25(body, 'json') < 1 ORDER BY _id")
    rust, json = _scores(engine, "body", "rust"), _scores(engine, "body", "json")
    want = sorted(i for i in rust if json.get(i, 0.0) < 1)
    assert got == want and any(i not in json for i in want)


def test_top_k_by_one_score_among_rows_matching_another(engine):
    got = engine.execute("SELECT _id, bm25(body, 'parser') AS a FROM docs WHERE "
                         "bm25(body, 'parser') > 0 AND bm25(title, 'data') > 0 "
                         "ORDER BY bm25(body, 'parser') DESC LIMIT 5")
    parser, data = _scores(engine, "body", "parser"), _scores(engine, "title", "data")
    both = sorted((parser[i] for i in parser if i in data), reverse=True)
    assert got.column("a").to_pylist() == pytest.approx(both[:5])
    assert all(i in data for i in got.column("_id").to_pylist())


def test_knn_beside_two_bm25_floors_is_the_k_nearest_matching_both(engine):
    v = _v(4)
    got = _ids(engine, f"SELECT _id FROM docs WHERE knn(emb, '{v}', 5) AND "
                       "bm25(body, 'rust') > 0 AND bm25(title, 'json') > 0 ORDER BY _id")
    rust, json = _scores(engine, "body", "rust"), _scores(engine, "title", "json")
    allowed = sorted(set(rust) & set(json))
    assert len(allowed) >= 5
    want = _ids(engine, f"SELECT _id FROM docs WHERE knn(emb, '{v}', 5) AND _id IN "
                        f"({', '.join(map(str, allowed))}) ORDER BY _id")
    assert got == want and len(got) == 5


def test_knn_with_a_condition_on_id_returns_the_k_nearest_passing_it(engine):
    """A condition on ``_id`` narrows the kNN like any condition on the table's columns
    (it used to apply after the search, leaving fewer than k rows)."""
    v = _v(5)
    live = engine.connection.open_table("docs").to_arrow(with_id=True)
    ids = live.column("_id").to_numpy()
    emb = np.stack(live.column("emb").to_numpy(zero_copy_only=False)).astype(np.float64)
    q = np.array(json.loads(v), np.float64)
    dist = 1 - emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    cut = int(np.median(ids))
    keep = ids < cut
    want = ids[keep][np.argsort(dist[keep], kind="stable")[:4]]
    got = _ids(engine, f"SELECT _id FROM docs WHERE knn(emb, '{v}', 4) AND _id < {cut} "
                       "ORDER BY vector_distance(emb, '" + v + "')")
    assert got == want.tolist()
