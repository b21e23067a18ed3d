"""Deferred indexing: rows searchable at once, indexes swapped in later, nothing lost or
doubled on the way, on memory, local disk and loopback S3."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from quiver.catalog.storage import open_store
from quiver.supertable import commit
from quiver.supertable.errors import StorageUnavailableError
from quiver.supertable.indexer import build_pending_indexes, pending_files
from quiver.supertable.manifest import Manifest
from quiver.supertable.table import Table, TableOptions
from quiver.supertable.wal import WAL_DIR
from tests.supertable.conftest import docs_schema, make_docs

MANUAL = TableOptions(background_indexing=False, max_rows_per_file=150)

BM25_QUERIES = [
    ("body", "rust async", "or", None),
    ("body", "json fast parser", "and", None),
    ("body", "search -python", "or", None),
    ("title", "vec* data", "or", None),
    ("body", "http client tool", "or", [("year", ">=", 2012)]),
]


def _vector_queries(dim: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(99)
    return [rng.standard_normal(dim).astype(np.float32) for _ in range(3)]


def _results(t: Table) -> dict[str, object]:
    """Everything a caller can ask of the table, in comparable form."""
    out: dict[str, object] = {"count": t.count(),
                              "count_filtered": t.count([("year", "<", 2010)])}
    for i, (col, text, mode, flt) in enumerate(BM25_QUERIES):
        r = t.bm25_search(col, text, 25, mode=mode, filter_=flt, columns=["year"])
        out[f"bm25{i}"] = (r.column("_id").to_pylist(),
                           np.round(r.column("score").to_numpy(), 4).tolist())
    for i, q in enumerate(_vector_queries()):
        for j, flt in enumerate([None, [("year", "<", 2013)]]):
            r = t.vector_search("emb", q, 15, filter_=flt, columns=["year"])
            out[f"vec{i}.{j}"] = (r.column("_id").to_pylist(),
                                  np.round(r.column("score").to_numpy(), 4).tolist())
    r = t.hybrid_search("body", "storage engine", "emb", _vector_queries()[0], 10,
                        columns=["year"])
    out["hybrid"] = r.column("_id").to_pylist()
    out["token_or"] = t.token_match("body", "rust json").tolist()
    out["token_and"] = t.token_match("body", "rust json", "and").tolist()
    out["token_filtered"] = t.token_match("body", "query", filter_=[("year", ">", 2015)]).tolist()
    out["exact"] = t.exact_match("title", "rust async").tolist()
    out["rows"] = t.to_arrow(with_id=True).sort_by("_id")
    return out


def _assert_same(got: dict[str, object], want: dict[str, object]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        if key == "rows":
            assert got[key].equals(want[key]), key
        else:
            assert got[key] == want[key], key


def _pair(connect, options: TableOptions = MANUAL) -> tuple[Table, Table]:
    """An indexed table and a table whose second append is deferred, of the same rows."""
    conn = connect(table_options=options)
    indexed = conn.create_table("indexed", docs_schema())
    deferred = conn.create_table("deferred", docs_schema())
    first, second = make_docs(200, seed=1), make_docs(400, seed=2)
    for t in (indexed, deferred):
        t.append(first)
    indexed.append(second)
    deferred.append(second, deferred_index=True)
    return indexed, deferred


def test_deferred_rows_answer_every_search_like_an_indexed_table(connect):
    indexed, deferred = _pair(connect)
    pending = pending_files(deferred.refresh())
    assert len(pending) == 3 and all(f.rows <= 150 for f in pending)
    # Table-wide BM25 statistics count the unindexed files' tokens like any other file's.
    assert ([f.fts_sizes for f in deferred.refresh().files]
            == [f.fts_sizes for f in indexed.refresh().files])
    _assert_same(_results(deferred), _results(indexed))


def test_swapped_in_indexes_keep_rows_ids_and_results(connect):
    indexed, deferred = _pair(connect)
    before = deferred.refresh()
    want = _results(indexed)
    assert build_pending_indexes(deferred, limit=1) == 1
    assert len(pending_files(deferred.refresh())) == 2
    assert build_pending_indexes(deferred) == 2
    after = deferred.refresh()
    assert pending_files(after) == [] and all(f.indexed for f in after.files)
    assert after.version == before.version + 2
    old_paths = {f.path for f in before.files}
    for old, new in zip(before.files, after.files, strict=True):
        assert (old.rows, old.id_min, old.id_max) == (new.rows, new.id_min, new.id_max)
        if not old.indexed:
            assert new.path not in old_paths and new.fts_sizes == old.fts_sizes
    _assert_same(_results(deferred), want)
    assert build_pending_indexes(deferred) == 0


def test_reader_sees_every_row_exactly_once_through_each_swap(connect):
    options = TableOptions(background_indexing=False, max_rows_per_file=100)
    t = connect(table_options=options).create_table("docs", docs_schema())
    docs = make_docs(500, seed=5)
    t.append(docs, deferred_index=True)
    assert len(pending_files(t.refresh())) == 5
    all_ids = list(range(500))
    rust = sorted(i for i, b in enumerate(docs.column("body").to_pylist())
                  if "rust" in b.split())
    q = _vector_queries()[1]
    errors: list[str] = []
    versions: set[int] = set()
    looked = threading.Event()
    done = threading.Event()

    def reader() -> None:
        deadline = time.monotonic() + 60
        extra = 3
        while time.monotonic() < deadline and extra > 0:
            if done.is_set():
                extra -= 1
            snap = t.snapshot()
            versions.add(snap.version)
            if t.count() != 500:
                errors.append(f"count {t.count()}")
            ids = t.to_arrow(columns=["year"], with_id=True).column("_id").to_pylist()
            if sorted(ids) != all_ids:
                errors.append(f"scan saw {len(ids)} rows, {len(set(ids))} distinct")
            if t.token_match("body", "rust").tolist() != rust:
                errors.append("token match changed")
            hits = t.bm25_search("body", "rust", 1000, columns=[]).column("_id").to_pylist()
            if sorted(hits) != rust:
                errors.append(f"bm25 saw {len(hits)} hits, {len(set(hits))} distinct")
            near = t.vector_search("emb", q, 600, columns=[]).column("_id").to_pylist()
            if sorted(near) != all_ids:
                errors.append(f"vector search saw {len(near)} rows, {len(set(near))} distinct")
            looked.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(5):
            assert looked.wait(30), "the reader made no progress"
            looked.clear()
            assert build_pending_indexes(t, limit=1) == 1
    finally:
        done.set()
        thread.join(90)
    assert not thread.is_alive()
    assert errors == []
    assert pending_files(t.refresh()) == []
    # The reader ran against the versions before, between and after the swaps.
    assert len(versions) >= 3


def test_delete_before_the_swap_is_honoured_after_it(connect):
    indexed, deferred = _pair(connect)
    gone = [("year", "<", 2010)]
    assert deferred.delete(gone) == indexed.delete(gone) > 0
    deleted = set(indexed.at_version(indexed.version - 1).to_table(
        filter_=gone, with_id=True).column("_id").to_pylist())
    assert build_pending_indexes(deferred) == 3
    assert pending_files(deferred.refresh()) == []
    assert all(f.indexed for f in deferred.refresh().files)
    _assert_same(_results(deferred), _results(indexed))
    ids = set(deferred.to_arrow(with_id=True).column("_id").to_pylist())
    assert ids.isdisjoint(deleted) and len(ids) == 600 - len(deleted)


class HookedStore:
    """The real store, with a callback run once just before a chosen write goes out."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.before_put = None  # (predicate(path, data), callback) or None
        self.fail_put = None  # predicate(path) -> bool

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @property
    def uri(self) -> str:
        return self._inner.uri

    @property
    def kind(self) -> str:
        return self._inner.kind

    def put(self, path, data, mode="overwrite"):
        if self.fail_put is not None and self.fail_put(path):
            raise StorageUnavailableError(f"injected failure writing {path}")
        hook = self.before_put
        if hook is not None and hook[0](path, data):
            self.before_put = None
            hook[1]()
        return self._inner.put(path, data, mode)


def _index_intent(path: str, data: bytes) -> bool:
    return f"/{WAL_DIR}/" in f"/{path}" and json.loads(data)["operation"] == "index"


def _hooked_table(root) -> tuple[HookedStore, Table]:
    uri, options = root
    store = HookedStore(open_store(uri, **options))
    t = Table.create(store, "t", "t", docs_schema(),
                     options=TableOptions(background_indexing=False, max_rows_per_file=200))
    t.append(make_docs(300, seed=3))
    t.append(make_docs(400, seed=4), deferred_index=True)
    return store, t


def _objects(store, prefix: str) -> set[str]:
    return {m.path for m in store.list(prefix)}


def test_delete_landing_during_the_build_is_carried_into_the_swap(root):
    store, t = _hooked_table(root)
    gone = [("year", ">=", 2020)]
    deleted: list[int] = []

    def delete_now() -> None:
        deleted.append(t.delete(gone))

    # The indexer has read the rows and built the files; the delete lands before it publishes.
    store.before_put = (_index_intent, delete_now)
    want_rows = t.to_arrow(with_id=True).filter(
        pa.compute.field("year") < 2020).sort_by("_id")
    assert build_pending_indexes(t) == 2
    assert deleted and deleted[0] > 0
    latest = t.refresh()
    assert latest.operation == "index" and latest.files[-1].tombstones
    assert all(f.indexed for f in latest.files)
    assert t.count() == want_rows.num_rows == 700 - deleted[0]
    assert t.to_arrow(with_id=True).sort_by("_id").equals(want_rows)
    assert t.count(gone) == 0 and t.token_match("body", "rust", filter_=gone).size == 0
    live = set(want_rows.column("_id").to_pylist())
    hits = t.bm25_search("body", "rust data", 700, columns=[]).column("_id").to_pylist()
    assert hits and set(hits) <= live
    near = t.vector_search("emb", _vector_queries()[0], 700, columns=[])
    assert sorted(near.column("_id").to_pylist()) == sorted(live)
    t.close()


def test_swap_is_dropped_when_the_file_left_the_table_meanwhile(root):
    store, t = _hooked_table(root)
    before = t.refresh()
    target = pending_files(before)[0]

    def remove_file() -> None:
        # What a compaction or drop does: a newer version no longer names the file.
        def derive(latest: Manifest) -> Manifest:
            return latest.successor(files=[f for f in latest.files if f.path != target.path],
                                    created_ms=0, operation="optimize")
        commit.publish(store, "t", t.refresh(), derive, attempts=3, what="test")

    store.before_put = (_index_intent, remove_file)
    data_before = _objects(store, "t/data/")
    t.pool.forget([f.path for f in before.files])
    assert build_pending_indexes(t, limit=1) == 0
    latest = t.refresh()
    assert latest.file(target.path) is None
    assert pending_files(latest) == pending_files(before)[1:]
    # Nothing the abandoned swap uploaded is left behind, and no intent either.
    assert _objects(store, "t/data/") == data_before
    assert _objects(store, f"t/{WAL_DIR}/") == set()
    assert t.count() == 700 - target.rows
    t.close()


def test_failed_publish_leaves_the_table_unchanged_and_recovery_removes_the_upload(root):
    store, t = _hooked_table(root)
    before = t.refresh()
    data_before = _objects(store, "t/data/")
    store.fail_put = lambda path: "_manifests/v" in path
    with pytest.raises(StorageUnavailableError):
        build_pending_indexes(t)
    store.fail_put = None
    assert t.refresh().version == before.version
    assert len(pending_files(t.refresh())) == 2
    # The uploaded files are named by an intent on storage until recovery settles it.
    intents = _objects(store, f"t/{WAL_DIR}/")
    assert len(intents) == 1
    named = json.loads(store.get(intents.pop())[0])
    assert named["operation"] == "index" and len(named["objects"]) == 4
    assert t.recover(0.0) == 1
    assert _objects(store, "t/data/") == data_before
    assert _objects(store, f"t/{WAL_DIR}/") == set()
    assert t.count() == 700
    assert build_pending_indexes(t) == 2
    assert t.count() == 700 and pending_files(t.refresh()) == []
    t.close()


def test_background_indexer_swaps_deferred_files_then_goes_idle(connect):
    conn = connect(table_options=TableOptions(max_rows_per_file=150))
    indexed = conn.create_table("indexed", docs_schema())
    indexed.append(make_docs(400, seed=7))
    t = conn.create_table("docs", docs_schema())
    t.append(make_docs(400, seed=7), deferred_index=True)
    assert t.wait_for_indexes(60)
    assert pending_files(t.refresh()) == [] and all(f.indexed for f in t.refresh().files)
    deadline = time.monotonic() + 10
    while t._indexer.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not t._indexer.running
    _assert_same(_results(t), _results(indexed))
    # Another deferred append wakes it up again.
    t.append(make_docs(50, seed=8), deferred_index=True)
    assert t.wait_for_indexes(60) and t.count() == 450
    t.close()
    assert not t._indexer.running


def test_wait_for_indexes_reports_a_timeout_and_starts_the_indexer_when_asked(connect):
    conn = connect(table_options=MANUAL)
    t = conn.create_table("docs", docs_schema())
    t.append(make_docs(100, seed=9), deferred_index=True)
    time.sleep(0.05)
    # Background indexing is off: nothing happens until a caller asks to wait.
    assert not t._indexer.running and len(pending_files(t.refresh())) == 1
    assert t.wait_for_indexes(0) is False
    assert t.wait_for_indexes(60) is True
    t.close()


def test_close_stops_the_indexer_and_leaves_a_consistent_table(connect):
    options = TableOptions(max_rows_per_file=40, build_threads=1)
    conn = connect(table_options=options)
    t = conn.create_table("docs", docs_schema())
    t.append(make_docs(400, seed=10), deferred_index=True)
    assert t._indexer.running
    t.close()
    assert not t._indexer.running
    t._indexer.kick()
    assert not t._indexer.running
    reopened = connect(table_options=TableOptions(background_indexing=False)).open_table("docs")
    assert reopened.count() == 400
    assert list(reopened.store.list(f"{reopened.prefix}/{WAL_DIR}/")) == []
    left = len(pending_files(reopened.refresh()))
    # Closing interrupted the work: some files are still waiting for their indexes.
    assert 0 < left <= 10
    assert build_pending_indexes(reopened) == left
    assert pending_files(reopened.refresh()) == [] and reopened.count() == 400
