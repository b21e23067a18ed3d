"""The one write path (``quiver.supertable.transaction``): a transaction that fails leaves no
file and no version behind, one that succeeds publishes exactly one version, its sharding
parameter sets how many files a build makes, and a commit that loses a race to another
writer is derived again or refused as before."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from quiver.catalog.storage import open_store
from quiver.supertable.errors import CommitConflictError
from quiver.supertable.manifest import ID_COLUMN, Manifest
from quiver.supertable.table import Table, TableOptions
from quiver.supertable.transaction import ONE_FILE, BuiltFile, Sharding, Transaction
from tests.supertable.conftest import docs_schema, make_docs


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "root")


def _table(root: str, **options) -> Table:
    table = Table.create(open_store(root), "t", "docs", docs_schema(),
                         options=TableOptions(**options))
    table.append(make_docs(5, seed=1))
    return table


def _objects(table: Table, folder: str) -> set[str]:
    return {m.path for m in table.store.list(f"t/{folder}/")}


def _with_ids(rows: pa.Table, start: int) -> pa.Table:
    ids = pa.array(np.arange(start, start + rows.num_rows, dtype=np.int64))
    return rows.add_column(0, ID_COLUMN, ids)


def _appended(tx: Transaction, built: list[BuiltFile], rows: int):
    def derive(latest: Manifest) -> Manifest:
        entries = [replace(b.entry, added_in=latest.version + 1) for b in built]
        return latest.successor(files=(*latest.files, *entries),
                                next_id=latest.next_id + rows, operation="append",
                                created_ms=int(time.time() * 1000))

    return derive


def test_exception_after_upload_leaves_no_new_file_and_no_new_version(root):
    table = _table(root)
    before_files, version = _objects(table, "data"), table.refresh().version
    base = table.refresh()
    with pytest.raises(RuntimeError, match="mid-way"), table.committer.begin("append") as tx:
        built = tx.build(_with_ids(make_docs(7, seed=2), base.next_id), base.spec, base)
        tx.upload(built)
        assert _objects(table, "data") > before_files  # the files did reach storage
        raise RuntimeError("mid-way")
    assert _objects(table, "data") == before_files
    assert _objects(table, "_wal") == set()
    assert table.refresh(max_staleness_s=0).version == version
    assert table.count() == 5


def test_exception_while_deriving_leaves_no_new_file_and_no_new_version(root):
    table = _table(root)
    before_files, version = _objects(table, "data"), table.refresh().version
    base = table.refresh()

    def derive(latest: Manifest) -> Manifest:
        raise ValueError("refused while deriving")

    with table.committer.begin("append") as tx:
        tx.upload(tx.build(_with_ids(make_docs(3), base.next_id), base.spec, base))
        with pytest.raises(ValueError, match="refused"):
            tx.publish(base, derive)
    assert _objects(table, "data") == before_files
    assert _objects(table, "_wal") == set()
    assert table.refresh(max_staleness_s=0).version == version


def test_transaction_left_without_publish_removes_its_uploads(root):
    table = _table(root)
    before_files = _objects(table, "data")
    base = table.refresh()
    with table.committer.begin("append") as tx:
        tx.upload(tx.build(_with_ids(make_docs(3), base.next_id), base.spec, base))
    assert _objects(table, "data") == before_files
    assert _objects(table, "_wal") == set()


def test_successful_publish_adds_exactly_one_version_with_the_rows(root):
    table = _table(root)
    base = table.refresh()
    before_files = _objects(table, "data")
    with table.committer.begin("append") as tx:
        built = tx.build(_with_ids(make_docs(4, seed=3), base.next_id), base.spec, base)
        tx.upload(built)
        published = tx.publish(base, _appended(tx, built, 4))
    assert published is not None and published.version == base.version + 1
    assert table.version == published.version  # the table saw its own commit at once
    assert table.refresh(max_staleness_s=0).version == base.version + 1
    assert table.count() == 9
    # Exactly the built file and its sidecar were added, and the intent is gone.
    added = _objects(table, "data") - before_files
    assert added == {f"t/{b.entry.path}" for b in built} | {
        f"t/{b.entry.sidecar.path}" for b in built}
    assert _objects(table, "_wal") == set()


def test_publish_with_nothing_to_change_writes_no_version_and_removes_uploads(root):
    table = _table(root)
    base = table.refresh()
    before_files = _objects(table, "data")
    with table.committer.begin("append") as tx:
        tx.upload(tx.build(_with_ids(make_docs(2), base.next_id), base.spec, base))
        assert tx.publish(base, lambda latest: None) is None
    assert table.refresh(max_staleness_s=0).version == base.version
    assert _objects(table, "data") == before_files


@pytest.mark.parametrize(("sharding", "build_threads", "files"), [
    (Sharding(max_rows_per_file=10, min_rows_per_shard=None), 2, 4),   # 35 rows / 10
    (Sharding(max_rows_per_file=1000, min_rows_per_shard=10), 2, 2),   # split for 2 workers
    (Sharding(max_rows_per_file=1000, min_rows_per_shard=None), 2, 1),
    (ONE_FILE, 4, 1),
])
def test_sharding_parameter_sets_the_file_count(root, sharding, build_threads, files):
    table = _table(root, build_threads=build_threads)
    base = table.refresh()
    rows = _with_ids(make_docs(35, seed=4), base.next_id)
    with table.committer.begin("append") as tx:
        built = tx.build(rows, base.spec, base, sharding=sharding)
        assert len(built) == files
        assert sum(b.entry.rows for b in built) == 35
        # Balanced, in ``_id`` order, covering every row once.
        assert max(b.entry.rows for b in built) - min(b.entry.rows for b in built) <= 1
        assert [b.entry.id_min for b in built] == sorted(b.entry.id_min for b in built)
        tx.upload(built)
        tx.publish(base, _appended(tx, built, 35))
    assert len(table.refresh().files) == len(base.files) + files
    assert table.count() == 40


def test_default_sharding_follows_table_options(root):
    table = _table(root, max_rows_per_file=8, min_rows_per_shard=1_000)
    base = table.refresh()
    with table.committer.begin("append") as tx:
        built = tx.build(_with_ids(make_docs(20), base.next_id), base.spec, base)
    assert [b.entry.rows for b in built] == [7, 6, 7]


def _race(root: str, attempts: int):
    """A transaction on one table object whose first derive sees another writer (a second
    table object on the same root) win the version it is about to publish."""
    table = _table(root, commit_attempts=attempts)
    other = Table.open(open_store(root), "t", "docs")
    base = table.refresh()
    calls: list[int] = []
    tx = table.committer.begin("append")
    built = tx.build(_with_ids(make_docs(3, seed=5), base.next_id), base.spec, base)
    tx.upload(built)
    # ``_id`` values are left to the other writer's next_id by deriving from ``latest``.
    inner = _appended(tx, built, 3)

    def derive(latest: Manifest) -> Manifest:
        calls.append(latest.version)
        if len(calls) == 1:
            other.append(make_docs(2, seed=6))  # wins latest.version + 1
        if latest.next_id != base.next_id:
            built[:] = tx.renumber(built, latest.next_id - base.next_id)
        return inner(latest)

    return table, other, tx, base, calls, derive


def test_conflicting_commit_is_derived_again_on_the_new_version(root):
    table, other, tx, base, calls, derive = _race(root, attempts=5)
    with tx:
        published = tx.publish(base, derive)
    assert calls == [base.version, base.version + 1]
    assert published is not None and published.version == base.version + 2
    assert table.count() == 10
    ids = table.to_arrow(with_id=True).column(ID_COLUMN).to_pylist()
    assert sorted(ids) == list(range(10))
    assert _objects(table, "_wal") == set()
    other.close()


def test_conflicting_commit_out_of_attempts_is_refused_and_cleaned_up(root):
    table, other, tx, base, calls, derive = _race(root, attempts=1)
    ours = {f"t/{p}" for p in tx.intent.objects}
    assert ours <= _objects(table, "data")
    with pytest.raises(CommitConflictError, match="lost the race"), tx:
        tx.publish(base, derive)
    assert calls == [base.version]
    latest = table.refresh(max_staleness_s=0)
    assert latest.version == base.version + 1  # only the other writer's version
    assert table.count() == 7
    # The refused transaction's files are gone; exactly the published ones stay.
    named = {f"t/{f.path}" for f in latest.files} | {f"t/{f.sidecar.path}" for f in latest.files}
    assert _objects(table, "data") == named
    assert not ours & named
    assert _objects(table, "_wal") == set()
    other.close()


def test_commit_path_modules_do_not_import_the_table():
    code = ("import sys\n"
            "import quiver.supertable.transaction, quiver.supertable.optimize\n"
            "import quiver.supertable.indexer, quiver.supertable.maintain\n"
            "import quiver.supertable.gc\n"
            "print('quiver.supertable.table' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"
