"""Table-wide BM25 sizes come from the manifest: deletions never force a file open.

Each tombstone write records, per BM25 column, how many tokens the newly dead
rows hold, so N and the average length of the live rows are known from the
manifest alone. A query whose terms only one file's term filter admits then
opens only that file, whatever the other files have deleted. The counts must
equal the dead rows' index lengths (else scores drift from the live-row
oracle), survive the manifest round trip, the deferred-index swap and
compaction, and a manifest written before they existed still reads (and
scores the same) by falling back to the files' indexes.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from quiver import catalog
from quiver.superfile import SuperfileReader, write_superfile
from quiver.supertable import search
from quiver.supertable.indexer import build_pending_indexes
from quiver.supertable.manifest import FileEntry, Manifest, bitmap_rows
from quiver.supertable.readers import ReaderPool
from quiver.supertable.snapshot import Snapshot
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs

TOL = 1e-5
FRESH = TableOptions(cache_bytes=0)


def _entry(rows: int = 10, **kwargs) -> FileEntry:
    return FileEntry(path="data/x.parquet", size=1, rows=rows, id_min=0, id_max=rows - 1,
                     indexed=True, sidecar=None, fts_sizes={"body": (rows, 100)}, **kwargs)


def _with_body(table: pa.Table, text: str) -> pa.Table:
    return table.set_column(table.schema.get_field_index("body"), "body",
                            pa.array([text] * table.num_rows, pa.string()))


def _build(con) -> Table:
    """Four files of the shared vocabulary with deletions, and one file that alone holds
    the words ``zebra`` and ``okapi`` (plus shared words) with no deletion."""
    table = con.create_table("docs", docs_schema())
    for i in range(4):
        table.append(make_docs(60, seed=300 + i))
    rare = make_docs(30, seed=399)
    words = pc.binary_join_element_wise(rare.column("body"), pa.array(
        ["zebra okapi" if i % 3 else "zebra" for i in range(rare.num_rows)]), " ")
    table.append(rare.set_column(rare.schema.get_field_index("body"), "body", words))
    table.delete([("year", "<", 2006)])
    table.delete(pc.match_substring(pc.field("title"), "json")
                 & ~pc.match_substring(pc.field("body"), "zebra"))
    table.update([("year", "=", 2012)], {"body": "rust fast engine"})
    return table


def _dead_lengths(snap: Snapshot, entry: FileEntry, column: str) -> int:
    return int(snap.fts(entry, column).doc_lengths()[bitmap_rows(entry.tombstones)].sum())


def _oracle(table: Table, column: str, query: str) -> dict[int, float]:
    live = table.to_arrow(with_id=True).sort_by("_id")
    ids = live.column("_id").to_numpy()
    reader = SuperfileReader.open(write_superfile(live.drop_columns(["_id"]), table.spec).data)
    local, scores = reader.bm25_search(column, query, len(ids))
    return dict(zip(ids[local].tolist(), scores.tolist(), strict=True))


def _assert_scores(got: pa.Table, expected: dict[int, float]) -> None:
    assert got.num_rows == len(expected) > 0
    for i, s in zip(got.column("_id").to_pylist(), got.column("score").to_pylist(),
                    strict=True):
        assert abs(expected[i] - s) <= TOL * max(1.0, abs(s)), i


def _strip_dead_tokens(manifest: Manifest) -> Manifest:
    """The manifest as a build that did not record dead token counts would have written it."""
    doc = json.loads(manifest.to_bytes())
    for f in doc["files"]:
        f.pop("dead_tokens", None)
    return Manifest.from_bytes(json.dumps(doc).encode())


def test_deletes_and_updates_record_the_dead_rows_index_lengths(connect):
    table = _build(connect())
    snap = table.snapshot()
    with_deletes = [f for f in snap.files if f.tombstones]
    assert len(with_deletes) >= 4
    for f in with_deletes:
        assert set(f.dead_tokens) == {"title", "body"}
        for column in ("title", "body"):
            assert f.dead_tokens_of(column) == _dead_lengths(snap, f, column) > 0


def test_a_term_held_by_one_file_opens_only_that_file_despite_deletions_elsewhere(connect):
    table = _build(connect())
    files = table.snapshot().files
    assert sum(1 for f in files if f.tombstones and f.live_rows) >= 4
    fresh = connect(table_options=FRESH).open_table("docs")
    for query in ("zebra", "okapi", "zebra okapi"):
        got = fresh.bm25_search("body", query, k=100, columns=["_id"])
        _assert_scores(got, _oracle(table, "body", query))
    assert fresh.files_opened == 1


def test_a_manifest_without_dead_token_counts_opens_files_with_deletions_and_scores_the_same(
        connect):
    table = _build(connect())
    old = _strip_dead_tokens(table.snapshot().manifest)
    assert all(f.dead_tokens is None for f in old.files if f.tombstones)
    pool = ReaderPool(table.store, table.prefix)
    snap = Snapshot(old, pool, "docs")
    hits = search.bm25(snap, "body", "zebra", 100)
    got = search.materialize(snap, hits, ["_id"])
    _assert_scores(got, _oracle(table, "body", "zebra"))
    rare = old.files[4].path
    assert pool.opened == len({f.path for f in old.files if f.tombstones and f.live_rows}
                              | {rare}) >= 5


def test_shared_terms_still_score_like_the_live_row_oracle(connect):
    table = _build(connect())
    fresh = connect(table_options=FRESH).open_table("docs")
    for column, query in (("body", "rust python"), ("title", "search engine"),
                          ("body", "json -http")):
        got = fresh.bm25_search(column, query, k=1000, columns=["_id"])
        _assert_scores(got, _oracle(table, column, query))


def test_replace_rows_records_dead_token_counts(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    table = con.create_table("docs", docs_schema())
    table.append(make_docs(50, seed=7))
    rows = table.to_arrow(with_id=True).slice(5, 10)
    assert table.replace_rows(_with_body(rows, "okapi okapi okapi")) == 10
    snap = table.snapshot()
    old = next(f for f in snap.files if f.tombstones)
    assert old.dead_tokens_of("body") == _dead_lengths(snap, old, "body") > 0
    assert old.dead_tokens_of("title") == _dead_lengths(snap, old, "title")


def test_deferred_index_swap_keeps_the_dead_token_counts(tmp_path):
    con = catalog.connect(str(tmp_path / "root"),
                          table_options=TableOptions(background_indexing=False))
    table = con.create_table("docs", docs_schema())
    table.append(make_docs(80, seed=11), deferred_index=True)
    table.delete([("year", "<", 2010)])
    before = table.snapshot()
    (unindexed,) = before.files
    assert not unindexed.indexed and unindexed.tombstones
    # Counted by tokenizing the dead rows, there being no index yet.
    assert unindexed.dead_tokens_of("body") == _dead_lengths(before, unindexed, "body")
    assert build_pending_indexes(table) == 1
    after = table.snapshot()
    (indexed,) = after.files
    assert indexed.indexed and indexed.tombstones == unindexed.tombstones
    assert indexed.dead_tokens == unindexed.dead_tokens
    assert indexed.dead_tokens_of("body") == _dead_lengths(after, indexed, "body")
    got = table.bm25_search("body", "rust data", k=1000, columns=["_id"])
    _assert_scores(got, _oracle(table, "body", "rust data"))


def test_optimized_files_carry_no_dead_tokens(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    table = _build(con)
    table.optimize(target_rows=1000, min_live_fraction=1.0)
    files = table.snapshot().files
    assert not any(f.tombstones for f in files)
    assert all(f.dead_tokens_of("body") == 0 for f in files)
    got = table.bm25_search("body", "rust zebra", k=1000, columns=["_id"])
    _assert_scores(got, _oracle(table, "body", "rust zebra"))


def test_dead_tokens_round_trip_and_old_entries_read_as_unknown_only_with_tombstones():
    entry = _entry().with_tombstones(BitMap([1, 4]), {"body": 9})
    back = FileEntry.from_json(json.loads(json.dumps(entry.to_json())))
    assert back.dead_tokens == {"body": 9} and back.dead_tokens_of("body") == 9
    legacy = entry.to_json()
    del legacy["dead_tokens"]
    assert FileEntry.from_json(legacy).dead_tokens_of("body") is None
    clean = _entry().to_json()
    assert "dead_tokens" not in clean
    assert FileEntry.from_json(clean).dead_tokens_of("body") == 0


def test_tombstones_added_without_counts_make_the_counts_unknown():
    entry = _entry().with_tombstones(BitMap([1]), {"body": 3})
    assert entry.with_tombstones(BitMap([2])).dead_tokens_of("body") is None
    # Rows already tombstoned add nothing, so nothing becomes unknown.
    assert entry.with_tombstones(BitMap([1])).dead_tokens_of("body") == 3
    unknown = _entry(tombstones=BitMap([0]), dead_tokens=None)
    assert unknown.with_tombstones(BitMap([5]), {"body": 2}).dead_tokens_of("body") is None


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 50), min_size=1, max_size=40),
       steps=st.lists(st.lists(st.integers(0, 39), max_size=10), max_size=8))
def test_dead_tokens_accumulate_to_the_sum_over_tombstoned_rows(lengths, steps):
    lengths_np = np.array(lengths, np.int64)
    entry = _entry(rows=len(lengths))
    for step in steps:
        extra = BitMap([r for r in step if r < len(lengths)])
        new = bitmap_rows(extra - entry.tombstones).astype(np.int64)
        entry = entry.with_tombstones(extra, {"body": int(lengths_np[new].sum())})
    dead = bitmap_rows(entry.tombstones).astype(np.int64)
    assert entry.dead_tokens_of("body") == int(lengths_np[dead].sum())


@pytest.mark.parametrize("column", ["title", "body"])
def test_live_sizes_match_the_index_lengths_of_live_rows(tmp_path, column):
    con = catalog.connect(str(tmp_path / "root"))
    table = _build(con)
    snap = table.snapshot()
    for f in snap.files:
        if not f.live_rows:
            continue
        lengths = snap.fts(f, column).doc_lengths()
        keep = np.ones(f.rows, bool)
        keep[bitmap_rows(f.tombstones)] = False
        assert search._live_size(snap, f, column) == (f.live_rows, int(lengths[keep].sum()))
