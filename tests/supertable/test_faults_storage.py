"""Storage failing or slow under table writes: a failed write raises a storage error and
leaves the table as it was (nothing that recovery would not clean up), a retry succeeds
and lands once; an ambiguous failure never corrupts the table; delays change nothing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver.catalog.storage import drop_memory_store, open_store
from quiver.supertable.commit import latest_version, read_manifest
from quiver.supertable.errors import StorageError, StorageUnavailableError
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore, Rule

PREFIX = "t"


def titled(n: int, seed: int, tag: str) -> pa.Table:
    docs = make_docs(n, seed)
    return docs.set_column(0, "title", pa.array([f"{tag}-{i}" for i in range(n)]))


@pytest.fixture(params=["memory", "local"])
def real_store(request, tmp_path) -> Iterator:
    if request.param == "memory":
        uri = f"memory://faults{uuid.uuid4().hex}"
        yield open_store(uri)
        drop_memory_store(uri)
    else:
        yield open_store(str(tmp_path / "root"))


@pytest.fixture
def faulty(real_store) -> tuple[FaultyStore, Table]:
    """A table with two committed files, opened through a faulty store."""
    seed_table = Table.create(real_store, PREFIX, "docs", docs_schema())
    seed_table.append(titled(20, 1, "a"), batch_id="a")
    seed_table.append(titled(20, 2, "b"), batch_id="b")
    seed_table.close()
    store = FaultyStore(real_store)
    table = Table.open(store, PREFIX, "docs", TableOptions(commit_attempts=3))
    yield store, table
    table.close()


def snapshot_state(table: Table) -> tuple[int, pa.Table]:
    table.refresh()
    return table.version, table.to_arrow(with_id=True).sort_by(ID_COLUMN)


def unaccounted(store) -> list[str]:
    """Intents, and data objects that no version of the table references."""
    referenced: set[str] = set()
    for v in range(1, latest_version(store, PREFIX) + 1):
        for f in read_manifest(store, PREFIX, v).files:
            referenced |= {f.path} | ({f.sidecar.path} if f.sidecar else set())
    out = []
    for meta in store.list(f"{PREFIX}/"):
        rel = meta.path[len(PREFIX) + 1:]
        if rel.startswith("_wal/") or (rel.startswith("data/") and rel not in referenced):
            out.append(rel)
    return out


def titles(table: Table) -> list[str]:
    return sorted(table.to_arrow(["title"]).column(0).to_pylist())


# --------------------------------------------------------------------------- appends

APPEND_FAULTS = {
    "intent record": Rule(op="put", path="t/_wal/*"),
    "data file": Rule(op="put", path="t/data/*.parquet"),
    "summary sidecar": Rule(op="put", path="t/data/*.summary"),
    "manifest": Rule(op="put", path="t/_manifests/v*"),
    "latest manifest lookup": Rule(op="head", path="t/_manifests/v*"),
}


@pytest.mark.parametrize("fault", list(APPEND_FAULTS))
@pytest.mark.parametrize("with_batch_id", [True, False])
def test_failed_append_raises_leaves_table_unchanged_and_retry_lands_once(
        faulty, fault, with_batch_id):
    store, table = faulty
    version, rows = snapshot_state(table)
    rule = APPEND_FAULTS[fault]
    store.add(Rule(op=rule.op, path=rule.path, calls={1}))
    batch = "c" if with_batch_id else None
    new = titled(15, 3, "c")
    with pytest.raises(StorageUnavailableError, match="injected"):
        table.append(new, batch_id=batch)
    now_version, now_rows = snapshot_state(table)
    assert now_version == version
    assert now_rows.equals(rows)
    table.recover(0)
    assert unaccounted(store.inner) == []
    # The caller retries the same append: it lands, once.
    result = table.append(new, batch_id=batch)
    assert result.version == version + 1
    assert table.count() == rows.num_rows + 15
    assert titles(table) == sorted(rows.column("title").to_pylist()
                                   + [f"c-{i}" for i in range(15)])
    assert unaccounted(store.inner) == []


def test_failed_explicit_commit_keeps_the_buffer_for_a_retried_commit(faulty):
    store, table = faulty
    before = table.count()
    table.append(titled(5, 3, "x"), commit=False)
    table.append(titled(6, 4, "y"), commit=False)
    store.add(Rule(op="put", path="t/data/*", calls={1}))
    with pytest.raises(StorageError):
        table.commit()
    assert table.count() == before
    assert table.commit().rows == 11
    assert table.count() == before + 11
    assert table.commit().version is None


def test_buffered_appends_with_one_batch_id_apply_once(faulty):
    _, table = faulty
    before = table.count()
    table.append(titled(5, 3, "x"), batch_id="same", commit=False)
    table.append(titled(5, 3, "x"), batch_id="same", commit=False)
    assert table.commit().rows == 5
    assert table.count() == before + 5


def test_manifest_write_that_lands_but_reports_failure_never_loses_files(faulty):
    """A write whose request applied but whose answer was lost (a timeout after the fact):
    the table must stay readable and hold the rows exactly once, whatever the call said."""
    store, table = faulty
    version, rows = snapshot_state(table)
    store.add(Rule(op="put", path="t/_manifests/v*", calls={1}, action="fail_after"))
    new = titled(10, 5, "amb")
    # The writer checks what it wrote and reports the append as done.
    assert table.append(new, batch_id="amb").version == version + 1
    store.clear()
    fresh = Table.open(store.inner, PREFIX, "docs")
    fresh.recover(0)
    # Readable end to end: every file the latest manifest names is present.
    got = fresh.to_arrow(with_id=True)
    assert fresh.version == version + 1
    assert got.num_rows == rows.num_rows + 10
    # A retry with the same batch id adds nothing.
    table.append(new, batch_id="amb")
    assert fresh.count() == rows.num_rows + 10
    assert unaccounted(store.inner) == []
    fresh.close()


def test_lost_hint_write_still_commits_and_readers_find_the_version(faulty):
    store, table = faulty
    version, rows = snapshot_state(table)
    store.add(Rule(op="put", path="t/_manifests/_latest", calls={1}))
    result = table.append(titled(4, 6, "h"))
    assert result.version == version + 1
    other = Table.open(store.inner, PREFIX, "docs")
    assert other.version == version + 1
    assert other.count() == rows.num_rows + 4
    other.close()


def test_failed_intent_cleanup_leaves_a_committed_append_that_recovery_keeps(faulty):
    store, table = faulty
    _, rows = snapshot_state(table)
    store.add(Rule(op="delete", path="t/_wal/*"))
    table.append(titled(4, 7, "w"))
    assert any(p.startswith("_wal/") for p in unaccounted(store.inner))
    store.clear()
    assert table.recover(0) == 1
    assert unaccounted(store.inner) == []
    assert table.count() == rows.num_rows + 4
    assert len(table.to_arrow()) == rows.num_rows + 4


# --------------------------------------------------------------------------- deletes, updates

@pytest.mark.parametrize("fault", [
    Rule(op="put", path="t/_manifests/v*"),
    Rule(op="get", path="t/data/*.parquet"),
], ids=["manifest write", "data read"])
def test_failed_delete_raises_and_leaves_table_unchanged(faulty, fault):
    store, table = faulty
    version, rows = snapshot_state(table)
    table.pool.forget([f.path for f in table.refresh().files])
    store.add(fault)
    with pytest.raises(StorageError, match="injected"):
        table.delete([("year", "<", 2012)])
    store.clear()
    now_version, now_rows = snapshot_state(table)
    assert now_version == version
    assert now_rows.equals(rows)
    expected = rows.filter(pc.field("year") >= 2012)
    assert table.delete([("year", "<", 2012)]) == rows.num_rows - expected.num_rows
    assert table.to_arrow(with_id=True).sort_by(ID_COLUMN).equals(expected)
    assert unaccounted(store.inner) == []


@pytest.mark.parametrize("fault", [
    Rule(op="put", path="t/_wal/*"),
    Rule(op="put", path="t/data/*.parquet"),
    Rule(op="put", path="t/data/*.summary"),
    Rule(op="put", path="t/_manifests/v*"),
], ids=["intent record", "data file", "summary sidecar", "manifest"])
def test_failed_update_raises_leaves_table_unchanged_and_retry_applies(faulty, fault):
    store, table = faulty
    version, rows = snapshot_state(table)
    store.add(fault)
    with pytest.raises(StorageError, match="injected"):
        table.update([("year", ">=", 2015)], {"body": "changed"})
    store.clear()
    now_version, now_rows = snapshot_state(table)
    assert now_version == version
    assert now_rows.equals(rows)
    table.recover(0)
    assert unaccounted(store.inner) == []
    n = table.update([("year", ">=", 2015)], {"body": "changed"})
    assert n == rows.filter(pc.field("year") >= 2015).num_rows > 0
    after = table.to_arrow(with_id=True).sort_by(ID_COLUMN)
    assert after.column(ID_COLUMN).equals(rows.column(ID_COLUMN))
    assert after.filter(pc.field("year") >= 2015).column("body").unique().to_pylist() == [
        "changed"]
    assert unaccounted(store.inner) == []


def test_failing_reads_surface_as_storage_errors(faulty):
    store, table = faulty
    table.pool.forget([f.path for f in table.refresh().files])
    store.add(Rule(op="get", path="t/data/*"))
    with pytest.raises(StorageError, match="injected"):
        table.to_arrow()
    with pytest.raises(StorageError, match="injected"):
        table.bm25_search("body", "rust", k=3)
    store.clear()
    assert table.to_arrow().num_rows == 40


# --------------------------------------------------------------------------- delays

def test_delayed_storage_under_two_concurrent_writers_keeps_every_row_once(faulty):
    store, _ = faulty
    table = Table.open(store, PREFIX, "docs", TableOptions(commit_attempts=30))
    _, rows = snapshot_state(table)
    store.add(Rule(op="put", path="t/_manifests/v*", action="delay", delay_s=0.03))
    store.add(Rule(op="put", path="t/data/*", action="delay", delay_s=0.01))
    store.add(Rule(op="get", action="delay", delay_s=0.002))
    other = Table.open(store, PREFIX, "docs", TableOptions(commit_attempts=30))
    errors: list[BaseException] = []

    def writer(t: Table, tag: str) -> Callable[[], None]:
        def run() -> None:
            try:
                for i in range(4):
                    t.append(titled(5, i, f"{tag}{i}"), batch_id=f"{tag}{i}")
            except BaseException as exc:
                errors.append(exc)
        return run

    threads = [threading.Thread(target=writer(table, "p")),
               threading.Thread(target=writer(other, "q"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    got = table.to_arrow(with_id=True)
    want = rows.column("title").to_pylist() + [
        f"{tag}{i}-{j}" for tag in "pq" for i in range(4) for j in range(5)]
    assert sorted(got.column("title").to_pylist()) == sorted(want)
    assert pc.count_distinct(got.column(ID_COLUMN)).as_py() == got.num_rows
    assert table.version == 3 + 8
    other.close()
    table.close()


def test_recovery_never_deletes_a_committed_file_that_compaction_replaced(faulty):
    """A committed append whose intent outlived it (the cleanup failed), then compaction
    replacing its file: recovery must not delete a file an older version still names."""
    store, table = faulty
    store.add(Rule(op="delete", path="t/_wal/*"))
    appended = table.append(titled(6, 8, "kept")).version
    store.clear()
    assert table.optimize().version == appended + 1
    table.recover(0)
    old = table.at_version(appended)
    table.pool.forget([f.path for f in old.files])
    assert old.to_table().num_rows == 46
    assert unaccounted(store.inner) == []
