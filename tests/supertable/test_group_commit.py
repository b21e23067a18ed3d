"""Concurrent appends to one table in one process share commits: many single-row appends
make few versions, each caller still gets its own outcome (rows, a skipped batch id, a
failure that committed nothing); ``append(commit=False)`` buffers are published once
they reach their row or byte bound."""

from __future__ import annotations

import threading

import pyarrow.compute as pc
import pytest

from quiver.catalog.storage import open_store
from quiver.supertable.errors import StorageError
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.table import CommitResult, Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore, Rule

WRITERS = 16


@pytest.fixture
def slow_table(tmp_path) -> tuple[Table, FaultyStore]:
    """A table whose manifest writes take a while, so appends pile up behind one."""
    store = FaultyStore(open_store(str(tmp_path / "root")))
    table = Table.create(store, "t", "docs", docs_schema())
    store.add(Rule(op="put", path="t/_manifests/v*", action="delay", delay_s=0.2))
    return table, store


def _together(n: int, fn) -> list[object]:
    out: list[object] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = fn(i)
        except BaseException as exc:  # returned for the test to look at
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def test_concurrent_single_row_appends_share_few_commits(slow_table):
    table, _ = slow_table
    before = table.version
    results = _together(WRITERS, lambda i: table.append(make_docs(1, i), batch_id=f"b{i}"))
    assert all(isinstance(r, CommitResult) and r.rows == 1 and r.version for r in results), \
        results
    versions = table.refresh().version - before
    assert versions <= 4, versions  # one leader commits, the rest join the next one or two
    ids = table.to_arrow(with_id=True).column(ID_COLUMN)
    assert len(ids) == WRITERS and pc.count_distinct(ids).as_py() == WRITERS
    assert set(table.refresh().batches) == {f"b{i}" for i in range(WRITERS)}


def test_a_batch_id_applied_already_adds_nothing_inside_a_group(slow_table):
    table, _ = slow_table
    table.append(make_docs(1, 0), batch_id="b0")
    results = _together(6, lambda i: table.append(make_docs(1, i), batch_id=f"b{i}"))
    assert results[0] == CommitResult(version=None, rows=0)
    assert all(r.rows == 1 and r.version for r in results[1:]), results
    assert table.count() == 6


def test_a_failed_group_commit_fails_every_caller_and_adds_nothing(slow_table):
    table, store = slow_table
    store.add(Rule(op="put", path="t/data/*"))
    results = _together(8, lambda i: table.append(make_docs(1, i), batch_id=f"b{i}"))
    assert all(isinstance(r, StorageError) for r in results), results
    assert table.count() == 0
    store.clear()
    assert table.append(make_docs(1, 0), batch_id="b0").rows == 1
    assert table.count() == 1


def test_a_buffer_is_published_once_it_reaches_its_row_bound(tmp_path):
    store = open_store(str(tmp_path / "root"))
    table = Table.create(store, "t", "docs", docs_schema(),
                         options=TableOptions(buffer_max_rows=10))
    assert table.append(make_docs(4, 1), commit=False).version is None
    assert table.append(make_docs(4, 2), commit=False).version is None
    assert table.count() == 0
    flushed = table.append(make_docs(4, 3), commit=False)
    assert flushed.version is not None and flushed.rows == 12
    assert table.count() == 12
    assert table.commit().version is None  # nothing left buffered


def test_a_buffer_is_published_once_it_reaches_its_byte_bound(tmp_path):
    store = open_store(str(tmp_path / "root"))
    docs = make_docs(50, 1)
    table = Table.create(store, "t", "docs", docs_schema(),
                         options=TableOptions(buffer_max_bytes=docs.nbytes * 2))
    assert table.append(docs, commit=False).version is None
    assert table.append(docs, commit=False).version is not None
    assert table.count() == 100
