"""Search over a table of many superfiles equals search over one superfile of its live rows.

The table is built from many small appends, then deletes and updates leave
tombstones and extra files behind. The oracle is a single superfile written
from exactly the live rows (ordered by ``_id``, so its local row order is the
``_id`` order) and queried with its own statistics, plus numpy brute force
for vectors. Files stay below the flat threshold, so vector search is exact
on both sides and must agree exactly.

Statistics: a deleted or superseded row is not part of the table, so it must
not count toward BM25's N, average length or document frequencies either;
otherwise a row's score would depend on how much garbage the table carries
before compaction. The table therefore has to match the live-row oracle
exactly after deletes and updates, not only after optimize.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.superfile import SuperfileReader, WriterOptions, write_superfile
from quiver.superfile.vector.build import VectorIndexParams
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8
TOL = 1e-5

BM25_QUERIES = [
    ("body", "rust", "or"),
    ("body", "rust python", "or"),
    ("body", "rust python", "and"),
    ("body", "rust -python", "or"),
    ("body", "data json -http", "and"),
    ("body", "pars*", "or"),
    ("body", "s* query", "and"),
    ("body", "zebra", "or"),
    ("body", "zebra fast engine tool", "or"),
    ("title", "vector index -search", "or"),
    ("title", "eng* cl*", "or"),
]


def _with_nulls(table: pa.Table, every: int) -> pa.Table:
    mask = pa.array(np.arange(table.num_rows) % every == 0)
    body = pc.if_else(mask, pa.scalar(None, pa.string()), table.column("body"))
    return table.set_column(table.schema.get_field_index("body"), "body", body)


def _build(con) -> Table:
    """Eight appends, one with null bodies, then deletes and updates of several kinds."""
    table = con.create_table("docs", docs_schema(DIM))
    for i in range(8):
        batch = make_docs(40, seed=100 + i, dim=DIM)
        table.append(_with_nulls(batch, 7) if i == 3 else batch)
    table.delete([("year", "<", 2004)])
    table.delete(pc.match_substring(pc.field("title"), "json"))
    table.update([("year", "=", 2010)], {"body": "zebra rust fast"})
    table.update(pc.field("year") == 2020,
                 {"emb": [1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]})
    table.update([[("year", ">=", 2023), ("year", "<=", 2024)]],
                 {"title": pc.binary_join_element_wise(pc.field("title"), "zebra", " ")})
    return table


class Oracle:
    """One superfile over the table's live rows."""

    def __init__(self, table: Table) -> None:
        live = table.to_arrow(with_id=True).sort_by("_id")
        self.rows = live
        self.ids = live.column("_id").to_numpy()
        written = write_superfile(live.drop_columns(["_id"]), table.spec)
        self.reader = SuperfileReader.open(written.data)
        vecs = live.column("emb").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
        self.unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)

    def bm25(self, column: str, query: str, mode: str) -> dict[int, float]:
        local, scores = self.reader.bm25_search(column, query, len(self.ids), mode=mode)
        return dict(zip(self.ids[local].tolist(), scores.tolist(), strict=True))

    def bm25_ranked(self, column: str, query: str, mode: str, k: int) -> list[int]:
        local, _ = self.reader.bm25_search(column, query, k, mode=mode)
        return self.ids[local].tolist()

    def vector(self, q: np.ndarray, k: int, keep: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        dist = (1.0 - self.unit @ (q / np.linalg.norm(q))).astype(np.float32)
        ids = self.ids
        if keep is not None:
            dist, ids = dist[keep], ids[keep]
        order = np.lexsort((ids, dist))[:k]
        return ids[order], dist[order]


@pytest.fixture(scope="module", params=["memory", "local", "s3"])
def built(request, tmp_path_factory, s3_server) -> Iterator[tuple[Table, Oracle]]:
    """One table per backend, shared by the read-only tests of this module."""
    if request.param == "memory":
        uri, options = f"memory://oracle{uuid.uuid4().hex}", {}
    elif request.param == "local":
        uri, options = str(tmp_path_factory.mktemp("oracle") / "root"), {}
    else:
        uri, options = f"s3://{s3_server.new_bucket()}/oracle", s3_server.options()
    con = catalog.connect(uri, **options)
    table = _build(con)
    assert len(table.snapshot().files) >= 10
    assert any(f.tombstones for f in table.snapshot().files)
    yield table, Oracle(table)
    con.close()
    if request.param == "memory":
        drop_memory_store(uri)


def _assert_topk_equal(got: pa.Table, expected: dict[int, float], k: int, what: str) -> None:
    """``got`` is a best-first top-k of ``expected`` (scores within TOL; ties broken freely)."""
    ids = got.column("_id").to_pylist()
    scores = np.array(got.column("score").to_pylist(), np.float64)
    want = np.sort(np.array(list(expected.values()), np.float64))[::-1][:k]
    assert len(ids) == len(want), what
    assert len(set(ids)) == len(ids), what
    np.testing.assert_allclose(scores, want, rtol=TOL, atol=TOL, err_msg=what)
    for i, s in zip(ids, scores, strict=True):
        assert i in expected, f"{what}: {i} is not a live match"
        assert abs(expected[i] - s) <= TOL * max(1.0, abs(s)), f"{what}: score of {i}"


def test_bm25_across_files_scores_like_one_file_of_the_live_rows(built):
    table, oracle = built
    for column, query, mode in BM25_QUERIES:
        expected = oracle.bm25(column, query, mode)
        assert expected, f"{query!r} should match something"
        for k in (1, 5, 23, 1000):
            got = table.bm25_search(column, query, k, mode=mode, columns=[])
            _assert_topk_equal(got, expected, k, f"{column}:{query!r}/{mode} k={k}")


def test_bm25_ties_at_the_kth_score_go_to_the_lower_id_on_any_file_layout(built):
    table, oracle = built
    # Every updated row has the same body, so they tie; which files they live in must not
    # decide which of them make the cut.
    for k in (1, 3, 7):
        got = table.bm25_search("body", "zebra", k, columns=[]).column("_id").to_pylist()
        assert got == oracle.bm25_ranked("body", "zebra", "or", k)


def test_vector_search_across_files_equals_brute_force_over_live_rows(built):
    table, oracle = built
    rng = np.random.default_rng(7)
    queries = [rng.standard_normal(DIM).astype(np.float32) for _ in range(6)]
    queries.append(np.array([1.0, 0.5, 0, 0, 0, 0, 0, -1.0], np.float32))
    for q in queries:
        for k in (1, 10, 50):
            got = table.vector_search("emb", q, k, columns=[])
            want_ids, want_d = oracle.vector(q, k)
            assert got.column("_id").to_pylist() == want_ids.tolist()
            np.testing.assert_allclose(got.column("score").to_numpy(), want_d, atol=TOL)


def test_updated_vector_is_found_and_its_old_version_is_not(built):
    table, _ = built
    q = np.array([1.0, 0.5, 0, 0, 0, 0, 0, -1.0], np.float32)
    n_updated = table.count([("year", "=", 2020)])
    assert n_updated > 0
    got = table.vector_search("emb", q, n_updated + 5, columns=["year"])
    years = got.column("year").to_pylist()
    assert years[:n_updated] == [2020] * n_updated
    assert np.allclose(got.column("score").to_numpy()[:n_updated], 0.0, atol=1e-5)
    assert 2020 not in years[n_updated:]


@pytest.mark.parametrize("filter_", [
    [("year", ">=", 2015), ("year", "<", 2018)],
    pc.field("year") == 2011,
    [[("year", "=", 2005)], [("year", "=", 2021)]],
], ids=["dnf-and", "expression", "dnf-or"])
def test_filtered_vector_search_returns_k_live_rows_that_pass(built, filter_):
    table, oracle = built
    passing = table.to_arrow(with_id=True, filter_=filter_).column("_id").to_numpy()
    keep = np.isin(oracle.ids, passing)
    assert 0 < keep.sum() < len(oracle.ids)
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    for k in (1, 3, int(keep.sum()), int(keep.sum()) + 10):
        got = table.vector_search("emb", q, k, filter_=filter_, columns=[])
        want_ids, want_d = oracle.vector(q, k, keep)
        assert len(want_ids) == min(k, keep.sum())
        assert got.column("_id").to_pylist() == want_ids.tolist()
        np.testing.assert_allclose(got.column("score").to_numpy(), want_d, atol=TOL)


def test_filtered_bm25_ranks_only_live_rows_that_pass(built):
    table, oracle = built
    filter_ = [("year", ">", 2012)]
    passing = set(table.to_arrow(with_id=True, filter_=filter_).column("_id").to_pylist())
    for column, query, mode in BM25_QUERIES:
        expected = {i: s for i, s in oracle.bm25(column, query, mode).items() if i in passing}
        got = table.bm25_search(column, query, 15, mode=mode, filter_=filter_, columns=[])
        _assert_topk_equal(got, expected, 15, f"{query!r} filtered")


def test_hybrid_search_equals_reciprocal_rank_fusion_of_the_oracle_rankings(built):
    table, oracle = built
    rng = np.random.default_rng(11)
    for text in ("rust python", "zebra", "pars* -json"):
        q = rng.standard_normal(DIM).astype(np.float32)
        k = 10
        depth = max(4 * k, 50)
        fused: dict[int, float] = {}
        ranked = [oracle.bm25_ranked("body", text, "or", depth),
                  oracle.vector(q, depth)[0].tolist()]
        for ranking in ranked:
            for rank, i in enumerate(ranking):
                fused[i] = fused.get(i, 0.0) + 1.0 / (60 + rank + 1)
        want = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        got = table.hybrid_search("body", text, "emb", q, k, columns=[])
        assert got.column("_id").to_pylist() == [i for i, _ in want], text
        np.testing.assert_allclose(got.column("score").to_numpy(), [s for _, s in want],
                                   rtol=1e-6)


def test_token_and_exact_match_return_exactly_the_live_matching_ids(built):
    table, oracle = built
    for column, query, mode in BM25_QUERIES:
        local = oracle.reader.token_match(column, query, mode)
        want = np.sort(oracle.ids[local])
        np.testing.assert_array_equal(table.token_match(column, query, mode), want)
    for column in ("title", "body"):
        values = oracle.rows.column(column).drop_null().unique().to_pylist()[:12]
        values += ["zebra rust fast", "no such value", ""]
        for value in values:
            want = np.sort(oracle.ids[oracle.reader.exact_match(column, value)])
            np.testing.assert_array_equal(table.exact_match(column, value), want,
                                          err_msg=f"{column}={value!r}")


def test_filtered_token_and_exact_match_respect_the_filter(built):
    table, oracle = built
    filter_ = pc.field("year") < 2015
    passing = table.to_arrow(with_id=True, filter_=filter_).column("_id").to_numpy()
    want = oracle.ids[oracle.reader.token_match("body", "rust", "or")]
    np.testing.assert_array_equal(table.token_match("body", "rust", filter_=filter_),
                                  np.sort(want[np.isin(want, passing)]))
    want = oracle.ids[oracle.reader.exact_match("body", "zebra rust fast")]
    got = table.exact_match("body", "zebra rust fast", filter_=[("year", "=", 2010)])
    np.testing.assert_array_equal(got, np.sort(want))
    assert len(got) > 0
    # The filter's own equality on the matched column is satisfied by every match; the
    # rest of the filter still applies.
    same = [("body", "=", "zebra rust fast"), ("year", "=", 2010)]
    np.testing.assert_array_equal(table.exact_match("body", "zebra rust fast", filter_=same),
                                  got)
    none = [("body", "=", "zebra rust fast"), ("year", "=", 1)]
    assert len(table.exact_match("body", "zebra rust fast", filter_=none)) == 0


def test_search_results_carry_the_rows_current_values(built):
    table, oracle = built
    got = table.bm25_search("body", "zebra", 100, columns=["title", "body", "year"])
    by_id = {i: r for i, r in zip(oracle.ids.tolist(), oracle.rows.to_pylist(), strict=True)}
    assert got.num_rows > 0
    for row in got.to_pylist():
        live = by_id[row["_id"]]
        assert (row["title"], row["body"], row["year"]) == (
            live["title"], live["body"], live["year"])


def test_bm25_ties_across_files_go_to_the_lower_id_whatever_the_search_order(connect):
    # Small files holding the lowest ids are searched after the big ones have set a floor
    # equal to the tied score; the tied rows of the small files must still win on _id.
    # Each group has its own term, so each query's top is one group of equal scores;
    # several groups give several float32 roundings of the shared floor.
    table = connect().create_table("ties", docs_schema(DIM))
    bodies = ["tiea", "tieb tieb breaker", "tiec x y z", "tied tied", "tiee x y",
              "tief breaker tief tief", "tieg a", "tieh b c d e"]
    for n in (3, 4, 40, 40, 40):
        docs = make_docs(len(bodies) * n * 2, seed=n, dim=DIM)
        body = docs.column("body").to_pylist()
        body[: len(bodies) * n] = [b for b in bodies for _ in range(n)]
        table.append(docs.set_column(1, "body", pa.array(body)))
    oracle = Oracle(table)
    for text in [b.split()[0] for b in bodies] + ["tiea x", "tiec tiee"]:
        for k in (1, 3, 5, 8):
            got = table.bm25_search("body", text, k, columns=[]).column("_id").to_pylist()
            assert got == oracle.bm25_ranked("body", text, "or", k), (text, k)


def test_ivf_files_keep_recall_and_filtered_search_still_returns_k(connect):
    # A low flat threshold makes every file an IVF index, so results are approximate.
    params = VectorIndexParams(flat_threshold=64)
    options = TableOptions(writer=WriterOptions(vector_params=params))
    table = connect(table_options=options).create_table("ivf", docs_schema(DIM))
    for i in range(3):
        table.append(make_docs(300, seed=200 + i, dim=DIM))
    table.delete([("year", "<", 2005)])
    oracle = Oracle(table)
    rng = np.random.default_rng(5)
    found = wanted = 0
    for _ in range(20):
        q = rng.standard_normal(DIM).astype(np.float32)
        got = table.vector_search("emb", q, 10, columns=[]).column("_id").to_numpy()
        want, _ = oracle.vector(q, 10)
        assert len(got) == 10 and np.isin(got, oracle.ids).all()
        found += len(np.intersect1d(got, want))
        wanted += 10
    assert found / wanted >= 0.8
    filter_ = [("year", "=", 2013)]
    passing = table.count(filter_)
    assert 10 < passing < 100
    q = rng.standard_normal(DIM).astype(np.float32)
    got = table.vector_search("emb", q, 10, filter_=filter_, columns=["year"])
    assert got.num_rows == 10 and set(got.column("year").to_pylist()) == {2013}
    got = table.vector_search("emb", q, passing + 5, filter_=filter_, columns=[])
    assert got.num_rows == passing


def test_rows_appended_without_indexes_search_like_the_oracle_before_and_after_indexing(
        connect):
    options = TableOptions(background_indexing=False)
    table = connect(table_options=options).create_table("late", docs_schema(DIM))
    table.append(make_docs(60, seed=300, dim=DIM))
    table.append(make_docs(60, seed=301, dim=DIM), deferred_index=True)
    table.append(make_docs(60, seed=302, dim=DIM), deferred_index=True)
    table.delete([("year", "<", 2006)])
    table.update([("year", "=", 2015)], {"body": "zebra late"})
    q = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)

    def check() -> None:
        oracle = Oracle(table)
        for column, query, mode in BM25_QUERIES[:9]:
            expected = oracle.bm25(column, query, mode)
            got = table.bm25_search(column, query, 1000, mode=mode, columns=[])
            _assert_topk_equal(got, expected, 1000, f"{query!r}/{mode}")
        got = table.vector_search("emb", q, 25, columns=[])
        assert got.column("_id").to_pylist() == oracle.vector(q, 25)[0].tolist()
        for query in ("rust", "zebra"):
            np.testing.assert_array_equal(
                table.token_match("body", query),
                np.sort(oracle.ids[oracle.reader.token_match("body", query)]))

    assert any(not f.indexed for f in table.snapshot().files)
    check()
    assert table.wait_for_indexes(timeout=60)
    assert all(f.indexed for f in table.snapshot().files)
    check()


@pytest.mark.parametrize("take_max", [0, 1 << 30], ids=["file-wide", "candidates-only"])
def test_dnf_filtered_token_match_is_the_same_whichever_way_the_filter_is_checked(
        built, monkeypatch, take_max):
    import quiver.supertable.snapshot as snapshot_module

    monkeypatch.setattr(snapshot_module, "RESTRICT_BY_TAKE_MAX", take_max)
    table, oracle = built
    filter_ = [[("year", ">=", 2012), ("year", "<", 2020)], [("title", "=", "rust")]]
    passing = table.to_arrow(with_id=True, filter_=filter_).column("_id").to_numpy()
    for query, mode in (("rust", "or"), ("rust fast", "and")):
        want = oracle.ids[oracle.reader.token_match("body", query, mode)]
        got = table.token_match("body", query, mode, filter_=filter_)
        np.testing.assert_array_equal(got, np.sort(want[np.isin(want, passing)]))


RICH_QUERIES = [
    ("body", '"rust python"', "or"),
    ("body", '"rust python"~2 json', "or"),
    ("body", '"fast parser" -"http client"', "or"),
    ("body", 'rust^3 "data tool"^2', "and"),
    ("title^2,body", "rust python", "or"),
    ("title,body^0.5", 'title:rust^2 body:"fast json"', "or"),
    ("title^1.5,body", "rust python", "and"),
    ("body,title", '"search engine" -body:zebra', "or"),
]


def _oracle_fields(oracle: Oracle, columns: str, query: str, mode: str) -> dict[int, float]:
    from quiver.superfile.fts.query import parse_fields
    from quiver.superfile.fts.scoring import FieldSearch, search_fields
    from quiver.supertable.search import parse_columns

    cols = parse_columns(columns)
    fq = parse_fields(query, [c for c, _ in cols])
    fields = [FieldSearch(oracle.reader.fts(c), fq.per_field[c], w, None, fq.groups[c])
              for c, w in cols]
    local, scores, _ = search_fields(fields, len(oracle.ids), and_mode=mode == "and",
                                     num_groups=fq.num_groups)
    return dict(zip(oracle.ids[local].tolist(), scores.tolist(), strict=True))


def test_phrase_boost_and_multi_column_bm25_across_files_scores_like_one_file(built):
    """The one-file scorer is checked against brute force in tests/superfile; here the
    table's statistics and fan-out must reproduce it over the live rows."""
    table, oracle = built
    for columns, query, mode in RICH_QUERIES:
        expected = _oracle_fields(oracle, columns, query, mode)
        assert expected, f"{query!r} should match something"
        for k in (1, 5, 1000):
            got = table.bm25_search(columns, query, k, mode=mode, columns=[])
            _assert_topk_equal(got, expected, k, f"{columns}:{query!r}/{mode} k={k}")


def test_weighted_hybrid_fuses_ranks_by_weight(built):
    table, _oracle = built
    q = np.ones(DIM, np.float32)
    text_only = table.hybrid_search("body", "rust python", "emb", q, 10, columns=[])
    weighted = table.snapshot()
    from quiver.supertable import search as s

    hits = s.hybrid(weighted, "body", "rust python", "emb", q, 10, vector_weight=0.0)
    bm = s.bm25(weighted, "body", "rust python", 10)
    assert hits.ids.tolist() == bm.ids.tolist()
    assert len(text_only) == 10
    with pytest.raises(Exception, match="weights"):
        s.hybrid(weighted, "body", "rust", "emb", q, 10, text_weight=0, vector_weight=0)
