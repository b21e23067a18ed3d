"""Table BM25 and the superfile-level multi-file BM25 (``fts.multi.search_files``) against
brute force over the concatenated corpus of the table's live rows.

The table layer gathers statistics from its manifest and hands the ranking to
``quiver.superfile.fts.multi``; both the table search and a direct call of the superfile
API over the snapshot's files must score every live row as brute force over the live rows
taken as one corpus does, whatever the file layout and the tombstones.
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
from quiver.superfile.fts import parse_query
from quiver.superfile.fts.multi import search_files
from quiver.supertable import search
from quiver.supertable.table import Table
from tests.superfile.test_fts_search import Oracle, check_topk
from tests.supertable.conftest import docs_schema, make_docs

QUERIES = [("rust", "or"), ("rust python", "or"), ("rust python", "and"),
           ("rust -python", "or"), ("data json -http", "and"),
           ("zebra fast engine tool", "or"), ("nothingmatches rust", "or")]


def _table(mutate: bool) -> Iterator[Table]:
    uri = f"memory://multi{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    table = con.create_table("docs", docs_schema(8))
    for i in range(7):
        table.append(make_docs(25 + 11 * i, seed=70 + i))
    if mutate:
        table.delete([("year", "<", 2006)])
        table.update([("year", "=", 2012)], {"body": "zebra rust fast"})
        table.update(pc.field("year") == 2019, {"body": "rust rust python engine data"})
    yield table
    drop_memory_store(uri)


@pytest.fixture(params=[False, True], ids=["appends", "tombstones"])
def table(request) -> Iterator[Table]:
    yield from _table(request.param)


def _brute(table: Table) -> tuple[np.ndarray, Oracle]:
    """Live ``_id`` values in order and a brute-force scorer over their bodies."""
    live = table.to_arrow(with_id=True).sort_by("_id")
    return live.column("_id").to_numpy(), Oracle(live.column("body").to_pylist())


def _file_rows(snap, files) -> np.ndarray:
    """Table ``_id`` of every row of ``files``, in file order (the concatenated corpus)."""
    return np.concatenate([snap.ids_of(f, np.arange(f.rows, dtype=np.int64)) for f in files])


@pytest.mark.parametrize("k", [1, 10, 1000])
def test_table_bm25_scores_like_brute_force_over_the_live_rows(table, k):
    ids, oracle = _brute(table)
    snap = table.snapshot()
    for query, mode in QUERIES:
        expected = oracle.scores(query, mode)
        for filter_ in (None, [("year", ">=", 0)]):  # one plan, or file by file
            hits = search.bm25(snap, "body", query, k, mode=mode, filter_=filter_)
            check_topk(np.searchsorted(ids, hits.ids).astype(np.uint32), hits.scores,
                       expected, k)


@pytest.mark.parametrize("k", [1, 10, 1000])
def test_superfile_multi_file_search_over_a_snapshot_agrees_with_the_table(table, k):
    ids, oracle = _brute(table)
    snap = table.snapshot()
    files = [f for f in snap.files if f.live_rows > 0]
    assert len(files) >= 7
    readers = [snap.fts(f, "body") for f in files]
    allows = [snap.live(f) for f in files]
    rows = _file_rows(snap, files)
    for query, mode in QUERIES:
        stats, _ = search.table_stats(snap, "body", files, parse_query(query))
        hits = search_files(readers, query, k, mode=mode, stats=stats, allows=allows)
        got = rows[hits.ids]
        check_topk(np.searchsorted(ids, got).astype(np.uint32), hits.scores,
                   oracle.scores(query, mode), k)
        table_hits = search.bm25(snap, "body", query, k, mode=mode)
        np.testing.assert_array_equal(hits.scores, table_hits.scores)


def test_without_tombstones_each_files_own_statistics_sum_to_the_tables():
    for table in _table(mutate=False):
        snap = table.snapshot()
        files = [f for f in snap.files if f.live_rows > 0]
        readers = [snap.fts(f, "body") for f in files]
        rows = _file_rows(snap, files)
        for query, mode in QUERIES:
            # Statistics from the readers alone, not the manifest: same scores, same ids.
            hits = search_files(readers, query, 50, mode=mode)
            table_hits = search.bm25(snap, "body", query, 50, mode=mode)
            np.testing.assert_array_equal(hits.scores, table_hits.scores)
            np.testing.assert_array_equal(rows[hits.ids], table_hits.ids)


def test_a_query_of_more_terms_than_mask_bits_scores_like_brute_force(tmp_path):
    # A local root: its files' indexes stay open, so the table-wide ranking runs.
    table = catalog.connect(str(tmp_path / "root")).create_table("docs", docs_schema(8))
    rng = np.random.default_rng(9)
    vocabulary = [f"word{i}" for i in range(300)]
    for i in range(3):
        rows = make_docs(40 + 13 * i, seed=90 + i)
        bodies = [" ".join(rng.choice(vocabulary, 12)) for _ in range(rows.num_rows)]
        table.append(rows.set_column(rows.schema.get_field_index("body"), "body",
                                     pa.array(bodies, pa.string())))
    ids, oracle = _brute(table)
    words = sorted({w for body in table.to_arrow().column("body").to_pylist() if body
                    for w in body.split()})
    assert len(words) > 70
    query = " ".join(words[:120] + [f"absent{i}" for i in range(30)])
    snap = table.snapshot()
    for _ in range(2):  # the first search of a plan, then the plan again
        for filter_ in (None, [("year", ">=", 0)]):
            hits = search.bm25(snap, "body", query, 20, mode="or", filter_=filter_)
            check_topk(np.searchsorted(ids, hits.ids).astype(np.uint32), hits.scores,
                       oracle.scores(query, "or"), 20)
