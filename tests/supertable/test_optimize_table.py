"""Compaction: fewer files, the same rows and ``_id`` values, the same search answers,
tombstones dropped, and no deleted row brought back by a rewrite racing a delete."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.superfile import SuperfileReader, write_superfile
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.optimize import OptimizeResult, choose_files
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore, Rule

OPTS = TableOptions(max_rows_per_file=200, build_threads=2, search_threads=2)
QUERIES = ["rust async", "python json parser", "vector", "fast http client -tool", "engine"]


def _table(connect, appends: int = 8, rows: int = 30) -> Table:
    t = connect(table_options=OPTS).create_table("docs", docs_schema())
    for i in range(appends):
        t.append(make_docs(rows, seed=i))
    return t


def _rows(t: Table) -> pa.Table:
    return t.to_arrow(with_id=True).sort_by(ID_COLUMN)


def _data_objects(t: Table) -> set[str]:
    return {m.path[len(t.prefix) + 1:] for m in t.store.list(f"{t.prefix}/data/")}


def _referenced(t: Table, versions) -> set[str]:
    out = set()
    for v in versions:
        for f in t.at_version(v).files:
            out |= {f.path, f.sidecar.path}
    return out


def _search_answers(t: Table) -> dict[str, object]:
    rng = np.random.default_rng(7)
    out: dict[str, object] = {}
    for q in QUERIES:
        hits = t.bm25_search("body", q, k=10, columns=["title"])
        out[f"bm25 {q}"] = (hits.column(ID_COLUMN).to_pylist(),
                            hits.column("score").to_numpy())
        out[f"and {q}"] = t.bm25_search("body", q, k=10, mode="and").column(ID_COLUMN).to_pylist()
        out[f"token {q}"] = t.token_match("body", q).tolist()
    for i in range(3):
        vec = rng.standard_normal(8).astype(np.float32)
        hits = t.vector_search("emb", vec, k=10)
        out[f"vec {i}"] = (hits.column(ID_COLUMN).to_pylist(), hits.column("score").to_numpy())
        hyb = t.hybrid_search("body", QUERIES[i], "emb", vec, k=10)
        out[f"hybrid {i}"] = hyb.column(ID_COLUMN).to_pylist()
        filtered = t.vector_search("emb", vec, k=5, filter_=[("year", ">=", 2015)])
        out[f"filtered vec {i}"] = filtered.column(ID_COLUMN).to_pylist()
    title = _rows(t).column("title")[3].as_py()
    out["exact"] = t.exact_match("title", title).tolist()
    return out


def _assert_same_answers(before: dict[str, object], after: dict[str, object]) -> None:
    assert before.keys() == after.keys()
    for key, want in before.items():
        got = after[key]
        if isinstance(want, tuple):
            assert got[0] == want[0], key
            np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert got == want, key


def test_optimize_merges_small_files_keeping_rows_ids_and_search_answers(connect):
    t = _table(connect)
    before_files = len(t.snapshot().files)
    rows, answers = _rows(t), _search_answers(t)

    result = t.optimize()

    assert isinstance(result, OptimizeResult)
    assert result.version == t.version
    assert result.files_removed == before_files == 8
    # 240 live rows at a target of 100 rows per file: two balanced files.
    assert result.files_added == len(t.snapshot().files) == 2
    assert result.rows_rewritten == 240 and result.tombstones_dropped == 0
    assert _rows(t).equals(rows)
    _assert_same_answers(answers, _search_answers(t))
    for f in t.snapshot().files:
        ids = t.snapshot().reader(f).read_table([ID_COLUMN]).column(0).to_numpy()
        assert np.all(np.diff(ids) > 0), "rows of a rewritten file are sorted by _id"
        assert 100 <= f.rows <= 200


def test_optimize_twice_finds_nothing_left_to_do(connect):
    t = _table(connect, appends=5)
    assert t.optimize().version is not None
    version = t.version
    again = t.optimize()
    assert again == OptimizeResult(None, 0, 0, 0, 0)
    assert t.version == version


def test_optimize_drops_tombstones_and_scores_match_a_single_file_of_the_live_rows(connect):
    t = _table(connect)
    deleted = t.delete(pc.field("year") < 2008)
    assert deleted > 0
    live = _rows(t)
    spec = t.spec
    oracle = SuperfileReader.open(write_superfile(live, spec).data)
    oracle_ids = live.column(ID_COLUMN).to_numpy()

    def scores(table_or_none) -> dict[str, dict[int, float]]:
        out = {}
        for q in QUERIES:
            if table_or_none is None:
                local, s = oracle.bm25_search("body", q, k=live.num_rows)
                out[q] = dict(zip(oracle_ids[local].tolist(), s.tolist(), strict=True))
            else:
                hits = table_or_none.bm25_search("body", q, k=live.num_rows, columns=[])
                out[q] = dict(zip(hits.column(ID_COLUMN).to_pylist(),
                                  hits.column("score").to_pylist(), strict=True))
        return out

    want = scores(None)

    result = t.optimize()

    assert result.tombstones_dropped == deleted
    assert all(not f.tombstones for f in t.snapshot().files)
    assert _rows(t).equals(live)
    got = scores(t)
    for q in QUERIES:
        assert got[q].keys() == want[q].keys(), q
        np.testing.assert_allclose([got[q][i] for i in want[q]], list(want[q].values()),
                                   rtol=1e-5, err_msg=q)


def test_optimize_rewrites_a_large_file_that_is_mostly_deleted(connect):
    t = connect(table_options=OPTS).create_table("docs", docs_schema())
    t.append(make_docs(180, seed=1))
    t.append(make_docs(180, seed=2))
    big = t.snapshot().files[0]
    # Both files are above the size target: only liveness can select one.
    assert choose_files(t.snapshot().manifest, 100, 0.8) == []
    t.delete(pc.field(ID_COLUMN) < 90)
    assert [f.path for f in choose_files(t.snapshot().manifest, 100, 0.8)] == [big.path]
    live = _rows(t)

    result = t.optimize()

    assert (result.files_removed, result.files_added, result.rows_rewritten) == (1, 1, 90)
    assert result.tombstones_dropped == 90
    paths = [f.path for f in t.snapshot().files]
    assert big.path not in paths and len(paths) == 2
    assert _rows(t).equals(live)


def test_optimize_drops_files_whose_rows_are_all_deleted(connect):
    t = _table(connect, appends=3, rows=20)
    first = t.snapshot().files[0]
    t.delete(pc.field(ID_COLUMN) < 20)
    result = t.optimize()
    assert result.rows_rewritten == 40 and result.files_added == 1
    assert first.path not in {f.path for f in t.snapshot().files}
    assert t.count() == 40
    assert sorted(t.to_arrow(with_id=True).column(ID_COLUMN).to_pylist()) == list(range(20, 60))


def test_optimize_keeps_ids_of_updated_rows_and_filters_still_resolve(connect):
    t = _table(connect, appends=4)
    changed = t.update(pc.field("year") >= 2020, {"title": "changed title", "year": 1999})
    assert changed > 0
    rows = _rows(t)
    answers = _search_answers(t)

    t.optimize()

    # Updated rows came back in their own file with scattered ids; merged, they are sorted
    # among the others and both id lookups and filters find them by position.
    assert _rows(t).equals(rows)
    _assert_same_answers(answers, _search_answers(t))
    assert t.count([("year", "=", 1999)]) == changed
    assert t.count(pc.field("title") == "changed title") == changed
    ids = set(t.exact_match("title", "changed title").tolist())
    assert len(ids) == changed
    assert t.delete(pc.field("title") == "changed title") == changed
    assert not ids & set(t.to_arrow(with_id=True).column(ID_COLUMN).to_pylist())
    assert t.count() == rows.num_rows - changed


def _second_table(root, t: Table, store=None) -> Table:
    uri, options = root
    conn = catalog.connect(uri, table_options=OPTS, **options)
    return Table.open(store or conn.store, t.prefix, t.name, OPTS)


def test_delete_landing_while_optimize_rewrites_is_not_undone(connect, root):
    t = _table(connect)
    t.delete(pc.field("year") == 2001)
    deleter = _second_table(root, t)
    faulty = FaultyStore(t.store)
    optimizer = _second_table(root, t, faulty)
    outcome: dict[str, object] = {}

    def delete_in_another_thread() -> None:
        # Runs after the optimizer read its rows and before it publishes.
        worker = threading.Thread(target=lambda: outcome.update(
            deleted=deleter.delete(pc.field("year") < 2010),
            ids=None))
        worker.start()
        worker.join(30)

    before_ids = set(_rows(t).column(ID_COLUMN).to_pylist())
    doomed = set(t.to_arrow(filter_=pc.field("year") < 2010, with_id=True)
                 .column(ID_COLUMN).to_pylist())
    faulty.add(Rule("put", path="*/data/*.parquet", calls={1}, action="hook",
                    hook=delete_in_another_thread))

    result = optimizer.optimize()

    assert outcome["deleted"] == len(doomed) > 0
    assert result.version is not None and result.version == t.refresh().version
    assert t.snapshot().manifest.operation == "optimize"
    live = set(_rows(t).column(ID_COLUMN).to_pylist())
    assert live == before_ids - doomed
    assert t.count(pc.field("year") < 2010) == 0
    # The rows deleted meanwhile are tombstones in the new files, not dropped rows.
    carried = sum(len(f.tombstones) for f in t.snapshot().files)
    assert carried == len(doomed)
    assert result.rows_rewritten == len(before_ids)
    fresh = _second_table(root, t)
    assert set(fresh.to_arrow(with_id=True).column(ID_COLUMN).to_pylist()) == live


def test_optimize_racing_deletes_on_threads_never_resurrects_rows(connect, root):
    t = _table(connect, appends=6)
    deleter = _second_table(root, t)
    years = list(range(2000, 2026, 3))
    deleted_ids: set[int] = set()
    lock = threading.Lock()

    def deletes() -> None:
        for y in years:
            ids = set(deleter.to_arrow(filter_=pc.field("year") == y, with_id=True)
                      .column(ID_COLUMN).to_pylist())
            n = deleter.delete(pc.field("year") == y)
            assert n <= len(ids)
            with lock:
                deleted_ids.update(ids)

    def optimizes() -> None:
        for _ in range(3):
            t.optimize(target_rows=150, min_live_fraction=0.95)

    threads = [threading.Thread(target=deletes), threading.Thread(target=optimizes)]
    all_ids = set(_rows(t).column(ID_COLUMN).to_pylist())
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    t.optimize(target_rows=150, min_live_fraction=0.95)
    live = set(_rows(t).column(ID_COLUMN).to_pylist())
    assert live == all_ids - deleted_ids
    assert t.count(pc.field("year").isin(years)) == 0
    assert t.count() == len(live)


def test_optimize_losing_to_another_optimize_leaves_no_orphaned_files(connect, root):
    t = _table(connect, appends=6)
    rows = _rows(t)
    rival = _second_table(root, t)
    faulty = FaultyStore(t.store)
    optimizer = _second_table(root, t, faulty)
    won: list[OptimizeResult] = []
    faulty.add(Rule("put", path="*/data/*.parquet", calls={1}, action="hook",
                    hook=lambda: won.append(rival.optimize())))

    result = optimizer.optimize()

    assert won and won[0].version is not None
    # Its sources were replaced by the rival: planned again, found nothing left to do.
    assert result.version is None
    assert t.refresh().version == won[0].version
    assert _rows(t).equals(rows)
    # Only files some manifest references remain: the rewrite that lost was removed.
    assert _data_objects(t) == _referenced(t, range(1, t.version + 1))
    assert not list(t.store.list(f"{t.prefix}/_wal/"))


def test_optimize_checks_its_arguments(connect):
    t = _table(connect, appends=1)
    with pytest.raises(ValueError):
        t.optimize(min_live_fraction=1.5)
