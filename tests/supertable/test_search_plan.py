"""Table BM25 through one gathered plan per version and query words.

A query without filter or prefix is answered by one compiled call over the postings of
every candidate file. These tests pin that this path returns exactly what the file by
file search returns (the latter is forced with a filter every row passes), across
tombstones, updated rows whose ``_id`` values are no longer one range per file, AND/OR
and excluded terms, and that ties across files go to the lower ``_id``; and that the plan
made in whole-array steps (appends only, every index open) is the very plan the files give
one by one, ranking as a brute-force scoring does.
"""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.superfile import parse_query
from quiver.superfile.fts import multi
from quiver.superfile.fts.engine import K1, B
from quiver.superfile.fts.tokenizer import tokenize
from quiver.supertable import fts_lookup, search
from quiver.supertable.table import Table
from tests.supertable.conftest import docs_schema, make_docs

EVERY_ROW = [("year", ">=", 0)]

QUERIES = [
    ("rust", "or"), ("rust python", "or"), ("rust python", "and"), ("rust -python", "or"),
    ("data json -http", "and"), ("zebra fast engine tool", "or"), ("fast parser", "and"),
    ("query", "or"), ("nothingmatches", "or"), ("rust nothingmatches", "and"),
]


@pytest.fixture
def mutated() -> Table:
    uri = f"memory://plan{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    table = con.create_table("docs", docs_schema(8))
    for i in range(6):
        table.append(make_docs(30 + 7 * i, seed=40 + i))
    table.delete([("year", "<", 2005)])
    table.update([("year", "=", 2010)], {"body": "zebra rust fast"})
    table.update(pc.field("year") == 2021, {"body": "rust rust python engine"})
    yield table
    drop_memory_store(uri)


def _pair(table: Table, query: str, mode: str, k: int) -> tuple[search.Hits, search.Hits]:
    snap = table.snapshot()
    fast = search.bm25(snap, "body", query, k, mode=mode)
    slow = search.bm25(snap, "body", query, k, mode=mode, filter_=EVERY_ROW)
    return fast, slow


@pytest.mark.parametrize("k", [1, 5, 40, 1000])
@pytest.mark.parametrize(("query", "mode"), QUERIES)
def test_plan_path_equals_file_by_file_search(mutated, query, mode, k):
    snap = mutated.snapshot()
    assert any(f.id_max - f.id_min + 1 != f.rows for f in snap.files if f.live_rows)
    assert any(f.tombstones for f in snap.files if f.live_rows)
    fast, slow = _pair(mutated, query, mode, k)
    np.testing.assert_array_equal(fast.ids, slow.ids)
    np.testing.assert_array_equal(fast.scores, slow.scores)
    for hits in (fast, slow):
        # Each hit's file and local row name the row its _id says.
        for fi, lo, rid in zip(hits.file_index, hits.local, hits.ids, strict=True):
            assert snap.ids_of(hits.files[int(fi)], np.array([lo]))[0] == rid


def test_tombstoned_rows_never_come_back(mutated):
    snap = mutated.snapshot()
    hits = search.bm25(snap, "body", "rust python zebra", 10_000)
    assert hits.ids.size > 0
    for fi, lo in zip(hits.file_index.tolist(), hits.local.tolist(), strict=True):
        assert lo not in hits.files[fi].tombstones
    live = set(mutated.token_match("body", "rust python zebra").tolist())
    assert set(hits.ids.tolist()) == live
    assert len(live) == hits.ids.size


def test_ties_across_files_go_to_the_lower_id():
    uri = f"memory://plan{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    schema = pa.schema([("body", pa.string())])
    table = con.create_table("t", schema, fts=["body"])
    # The later, bigger file is searched first; every matching row scores the same.
    table.append(pa.table({"body": ["same words"] * 5 + ["other"] * 5}, schema=schema))
    table.append(pa.table({"body": ["same words"] * 20 + ["other"] * 40}, schema=schema))
    hits = search.bm25(table.snapshot(), "body", "same words", 7)
    all_ids = np.sort(table.to_arrow(with_id=True).filter(
        pc.field("body") == "same words").column("_id").to_numpy())
    np.testing.assert_array_equal(hits.ids, all_ids[:7])
    assert len(set(hits.scores.tolist())) == 1
    drop_memory_store(uri)


def test_a_new_version_is_searched_with_a_new_plan(mutated):
    before = mutated.bm25_search("body", "quixotic", 10, columns=[])
    assert before.num_rows == 0
    mutated.append(pa.table({"title": ["t"], "body": ["quixotic rust"], "year": [2030],
                             "emb": pa.FixedSizeListArray.from_arrays(
                                 pa.array(np.zeros(8, np.float32)), 8)},
                            schema=docs_schema(8)))
    after = mutated.bm25_search("body", "quixotic", 10, columns=["body"])
    assert after.column("body").to_pylist() == ["quixotic rust"]


def test_plan_cache_keeps_within_its_byte_budget():
    cache = search._PlanCache(budget=100)
    plans = []
    for i in range(5):
        plan = search._Plan([], np.zeros(40, np.uint8), *[np.zeros(1, np.int64)] * 11,
                            nbytes=40)
        plans.append(plan)
        cache.put(("k", i), plan)
        assert cache.used <= 100
    assert cache.get(("k", 4)) is plans[4]
    assert cache.get(("k", 0)) is None


@pytest.fixture
def appended() -> Table:
    """Appends only (every row live, ids one range per file), sizes with a tie, and every
    file's index open: the plan is made in whole-array steps."""
    uri = f"memory://plan{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    table = con.create_table("docs", docs_schema(8))
    for i, n in enumerate([40, 90, 40, 65, 12]):
        table.append(make_docs(n, seed=70 + i))
    snap = table.snapshot()
    for f in snap.files:
        snap.fts(f, "body")
    yield table
    drop_memory_store(uri)


def _file_by_file_plan(snap, q, and_mode: bool) -> multi.PostingsPlan:
    files = [f for f in snap.files if f.live_rows > 0]
    parts = []
    for entry in sorted(files, key=lambda f: -f.live_rows):
        got = multi.file_terms(snap.fts(entry, "body"), q, and_mode)
        if got is not None:
            parts.append(multi.PlanFile(entry, got, entry.id_min, None, entry.path))
    return multi.build_plan(parts, and_mode)


PLAN_ARRAYS = ("buf", "f_t0", "t_base", "t_nb", "t_q", "f_driver", "masks", "f_moff",
               "f_avgdl", "f_idbase", "ids", "f_ioff")


@pytest.mark.parametrize(("query", "mode"), [
    (q, m) for q, m in QUERIES if "-" not in q] + [("engine query vector index", "and")])
def test_whole_array_plan_equals_the_plan_built_file_by_file(appended, query, mode):
    snap = appended.snapshot()
    and_mode = mode == "and"
    q = parse_query(query)
    files = [f for f in snap.files if f.live_rows > 0]
    terms = fts_lookup.table_terms(snap.pool, snap.version, "body", files)
    assert terms.all_loaded
    found = terms.lookup(q.terms)
    # Every index is resident: the dictionaries answer, exactly.
    np.testing.assert_array_equal(found.maybe.astype(bool), found.df > 0)
    keep = found.maybe.all(axis=1) if and_mode else found.maybe.any(axis=1)
    whole = terms.plan(found, keep, and_mode)
    assert whole is not None
    slow = _file_by_file_plan(snap, q, and_mode)
    assert [f.path for f in whole.files] == [f.path for f in slow.files]
    assert whole.names == slow.names and whole.nbytes == slow.nbytes
    for name in PLAN_ARRAYS:
        a, b = getattr(whole, name), getattr(slow, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    # In 'and' mode a file's candidates come from its term of fewest postings (the first
    # such on a tie).
    dfs = [[f.doc_freq(t) for t in q.terms] for f in (snap.fts(e, "body") for e in slow.files)]
    want = [1 << int(np.argmin(d)) if and_mode else 0 for d in dfs]
    assert whole.f_driver.tolist() == want


@pytest.mark.parametrize("k", [1, 7, 1000])
@pytest.mark.parametrize(("query", "mode"), QUERIES)
def test_whole_array_plan_ranks_as_the_file_by_file_search_and_brute_force(appended, query,
                                                                           mode, k):
    snap = appended.snapshot()
    fast, slow = _pair(appended, query, mode, k)
    np.testing.assert_array_equal(fast.ids, slow.ids)
    np.testing.assert_array_equal(fast.scores, slow.scores)
    # Brute force: every live row scored with the table's statistics, ties to the lower id.
    q = parse_query(query)
    stats, _ = search.table_stats(snap, "body", [f for f in snap.files if f.live_rows], q)
    rows = appended.to_arrow(["body"], with_id=True)
    scored = []
    for rid, body in zip(rows.column("_id").to_pylist(), rows.column("body").to_pylist(),
                         strict=True):
        toks = tokenize(body)
        if any(t in toks for t in q.excluded):
            continue
        present = [t for t in q.terms if t in toks]
        if not present or (mode == "and" and len(present) < len(q.terms)):
            continue
        score = 0.0
        for t in present:
            tf = toks.count(t)
            w = np.log(1 + (stats.num_docs - stats.doc_freqs[t] + 0.5)
                       / (stats.doc_freqs[t] + 0.5))
            score += w * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(toks) / stats.avg_doc_len))
        scored.append((-np.float32(score), rid))
    scored.sort()
    want = [rid for _, rid in scored[:k]]
    assert fast.ids.tolist() == want
    np.testing.assert_allclose(fast.scores, [-s for s, _ in scored[:k]], rtol=1e-5)
