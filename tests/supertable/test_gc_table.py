"""Garbage collection: unreferenced files go after their grace period, referenced ones
never, and a reader of a recently replaced snapshot keeps every file it needs."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.supertable.errors import StorageError, TableError
from quiver.supertable.gc import GcResult
from quiver.supertable.manifest import ID_COLUMN, manifest_path
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs

OPTS = TableOptions(max_rows_per_file=200, build_threads=2)


def _table(connect, appends: int = 5, rows: int = 20) -> Table:
    t = connect(table_options=OPTS).create_table("docs", docs_schema())
    for i in range(appends):
        t.append(make_docs(rows, seed=i))
    return t


def _reopen(root, t: Table) -> Table:
    """The same table through a new connection: nothing opened or cached yet."""
    uri, options = root
    conn = catalog.connect(uri, table_options=OPTS, **options)
    return Table.open(conn.store, t.prefix, t.name, OPTS)


def _data_objects(t: Table) -> dict[str, int]:
    return {m.path[len(t.prefix) + 1:]: m.size for m in t.store.list(f"{t.prefix}/data/")}


def _referenced(t: Table, version: int) -> set[str]:
    out = set()
    for f in t.at_version(version).files:
        out |= {f.path, f.sidecar.path}
    return out


def _ids(table) -> list[int]:
    return sorted(table.column(ID_COLUMN).to_pylist())


def test_reader_of_old_snapshot_survives_gc_with_grace_and_grace_zero_removes_the_rest(root,
                                                                                     connect):
    t = _table(connect)
    old_version = t.version
    old_files = _referenced(t, old_version)
    expected = _ids(t.to_arrow(with_id=True))
    # A reader in another process pinned the old version and has not opened its files yet.
    reader = _reopen(root, t).at_version(old_version)

    assert t.optimize().version is not None
    kept = t.gc(grace_seconds=3600)

    assert kept == GcResult(0, 0, 0, 0)
    assert old_files <= set(_data_objects(t))
    assert _ids(reader.to_table(with_id=True)) == expected
    assert len(reader.files) == 5

    before = _data_objects(t)
    removed = t.gc(grace_seconds=0)

    live = _referenced(t, t.version)
    assert set(_data_objects(t)) == live
    assert removed.objects_deleted == len(old_files) == 10
    assert removed.bytes_deleted == sum(size for p, size in before.items() if p not in live)
    assert _ids(t.to_arrow(with_id=True)) == expected
    assert _ids(_reopen(root, t).to_arrow(with_id=True)) == expected
    # Past the grace period a reader of the old version has lost its files (a remote
    # root may still serve them from the local disk cache).
    if getattr(t.store, "kind", "remote") in ("memory", "local"):
        late = _reopen(root, t).at_version(old_version)
        with pytest.raises(TableError):
            late.to_table(with_id=True)


def test_gc_never_removes_files_the_latest_version_references(root, connect):
    t = _table(connect, appends=4)
    t.delete(pc.field("year") < 2006)
    t.update(pc.field("year") > 2020, {"title": "new"})
    t.optimize(target_rows=50)
    t.append(make_docs(15, seed=99))
    t.delete(pc.field("title") == "new")
    expected = _ids(t.to_arrow(with_id=True))
    referenced = _referenced(t, t.version)
    assert t.gc(grace_seconds=0).objects_deleted > 0

    assert referenced <= set(_data_objects(t))
    assert set(_data_objects(t)) == referenced
    fresh = _reopen(root, t)
    assert _ids(fresh.to_arrow(with_id=True)) == expected
    assert fresh.bm25_search("body", "rust", k=5).num_rows == 5
    # A second collection finds nothing and still removes nothing referenced.
    # (Iceberg metadata files of older versions may go; they are counted apart.)
    assert replace(t.gc(grace_seconds=0), iceberg_deleted=0) == GcResult(0, 0, 0, 0)
    assert t.gc(grace_seconds=0, expire_manifests=True, keep_versions=1).objects_deleted > 0
    assert set(_data_objects(t)) == referenced
    assert _ids(_reopen(root, t).to_arrow(with_id=True)) == expected


def test_young_unreferenced_files_and_files_of_pending_intents_are_kept(connect):
    t = _table(connect, appends=1)
    orphan = "data/0000-in-flight.parquet"
    t.store.put(f"{t.prefix}/{orphan}", b"x" * 100)
    # Not referenced, but written within the grace period.
    assert t.gc(grace_seconds=3600).objects_deleted == 0
    assert orphan in _data_objects(t)
    # An in-flight commit names it in a young intent: kept even with no grace at all.
    intent = f"{t.prefix}/_wal/pending.json"
    t.store.put(intent, json.dumps({"operation": "append", "txid": "pending",
                                    "created_ms": int(time.time() * 1000),
                                    "objects": [orphan]}).encode())
    # (Iceberg metadata files of older versions may go; they are counted apart.)
    assert replace(t.gc(grace_seconds=0), iceberg_deleted=0) == GcResult(0, 0, 0, 0)
    assert orphan in _data_objects(t)
    # Once the intent is gone the file is garbage.
    t.store.delete(intent)
    assert replace(t.gc(grace_seconds=0), iceberg_deleted=0) == GcResult(1, 100, 0, 0)
    assert orphan not in _data_objects(t)


def test_stale_intent_records_are_removed_and_their_orphans_with_them(root, connect):
    t = _table(connect, appends=1)
    orphan = "data/abandoned.parquet"
    t.store.put(f"{t.prefix}/{orphan}", b"y" * 10)
    t.store.put(f"{t.prefix}/_wal/crashed.json", json.dumps(
        {"operation": "append", "txid": "crashed", "created_ms": int(time.time() * 1000),
         "objects": [orphan]}).encode())
    # Both are younger than an hour: nothing goes.
    assert t.gc(grace_seconds=3600) == GcResult(0, 0, 0, 0)
    # The intent is live until it outlives the table's recovery age as well.
    # (Iceberg metadata files of older versions may go; they are counted apart.)
    assert replace(t.gc(grace_seconds=0), iceberg_deleted=0) == GcResult(0, 0, 0, 0)
    uri, options = root
    impatient = replace(OPTS, recovery_age_s=0.3)
    t = Table.open(catalog.connect(uri, **options).store, t.prefix, t.name, impatient)
    time.sleep(0.4)
    result = t.gc(grace_seconds=0)
    assert (result.objects_deleted, result.intents_deleted) == (2, 1)
    assert not list(t.store.list(f"{t.prefix}/_wal/"))
    assert orphan not in _data_objects(t)
    assert t.count() == 20


def test_a_version_replaced_recently_is_protected_however_old_it_is(root, connect):
    grace = 1.5
    t = _table(connect, appends=3)
    old_version = t.version
    old_files = _referenced(t, old_version)
    reader = _reopen(root, t).at_version(old_version)
    # The old version is older than the grace period, but it was the latest until now.
    time.sleep(grace + 0.1)
    t.optimize()
    assert t.gc(grace_seconds=grace).objects_deleted == 0
    assert old_files <= set(_data_objects(t))
    assert len(reader.to_table()) == 60
    time.sleep(grace + 0.1)
    assert t.gc(grace_seconds=grace).objects_deleted == len(old_files)
    assert set(_data_objects(t)) == _referenced(t, t.version)


def test_expiring_manifests_keeps_the_newest_and_the_protected_ones(root, connect):
    t = _table(connect, appends=6, rows=5)
    latest = t.version
    assert latest == 7
    result = t.gc(grace_seconds=0, expire_manifests=True, keep_versions=3)
    assert result.manifests_deleted == 4
    names = {m.path.rsplit("/", 1)[-1] for m in t.store.list(f"{t.prefix}/_manifests/v")}
    assert names == {manifest_path(v).rsplit("/", 1)[-1] for v in (5, 6, 7)}
    with pytest.raises(StorageError):
        t.at_version(2)
    fresh = _reopen(root, t)
    assert fresh.version == latest and fresh.count() == 30
    # The next commit still finds the head and publishes after it.
    assert fresh.append(make_docs(5, seed=50)).version == latest + 1
    # With a grace period, versions replaced within it are kept whatever keep_versions says.
    assert t.gc(grace_seconds=3600, expire_manifests=True, keep_versions=1).manifests_deleted == 0


def test_gc_checks_its_arguments(connect):
    t = _table(connect, appends=1)
    with pytest.raises(ValueError):
        t.gc(grace_seconds=-1)
    with pytest.raises(ValueError):
        t.gc(keep_versions=0)
