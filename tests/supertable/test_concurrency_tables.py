"""Concurrent use of one table: two processes appending, readers during commits, threads
sharing one table object, and the clear error when a writer keeps losing the race."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store, open_store
from quiver.supertable.errors import CommitConflictError
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore, Rule

SCRIPT = Path(__file__).parent / "procs" / "table_op.py"
REPO = Path(__file__).parents[2]


def titled(n: int, seed: int, tag: str) -> pa.Table:
    docs = make_docs(n, seed)
    return docs.set_column(0, "title", pa.array([f"{tag}-{i}" for i in range(n)]))


# --------------------------------------------------------------------------- two processes

@pytest.fixture(params=["local", "s3"])
def shared_root(request, tmp_path) -> tuple[str, dict[str, str]]:
    if request.param == "local":
        return str(tmp_path / "root"), {}
    s3 = request.getfixturevalue("s3_server")
    return f"s3://{s3.new_bucket()}/quiver", s3.options()


def test_two_processes_appending_land_every_row_exactly_once(shared_root):
    uri, options = shared_root
    conn = catalog.connect(uri, **options)
    conn.create_table("docs", docs_schema())
    appends, rows = 5, 8
    children = []
    start_at = time.time() + 3.0
    for tag in ("p", "q"):
        args = {"root": uri, "options": options, "catalog": True, "name": "docs",
                "start_at": start_at,
                "op": "appends", "count": appends, "rows": rows, "seed": 0, "tag": tag,
                "pause_s": 0.2, "table_options": {"commit_attempts": 40}}
        children.append(subprocess.Popen([sys.executable, str(SCRIPT), json.dumps(args)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, cwd=REPO))
    outputs = [c.communicate(timeout=120) for c in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    acked = {tag: [int(line.split()[2]) for line in out.splitlines() if line.startswith("ACK ")]
             for tag, (out, _) in zip("pq", outputs, strict=True)}
    assert [len(v) for v in acked.values()] == [appends, appends]
    # The two writers really raced: their versions interleave.
    assert min(acked["q"]) < max(acked["p"]) and min(acked["p"]) < max(acked["q"]), acked

    table = conn.open_table("docs")
    got = table.to_arrow(with_id=True)
    want = [f"{tag}-{i}-{j}" for tag in "pq" for i in range(appends) for j in range(rows)]
    assert sorted(got.column("title").to_pylist()) == sorted(want)
    assert table.count() == len(want)
    assert pc.count_distinct(got.column(ID_COLUMN)).as_py() == len(want)
    # Every append is its own version, whatever the interleaving.
    assert table.version == 1 + 2 * appends
    assert set(table.refresh().batches) == {f"{t}-b{i}" for t in "pq" for i in range(appends)}
    conn.close()


# --------------------------------------------------------------------------- readers

@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    if request.param == "memory":
        uri = f"memory://conc{uuid.uuid4().hex}"
        yield open_store(uri)
        drop_memory_store(uri)
    else:
        yield open_store(str(tmp_path / "root"))


@pytest.mark.parametrize("shared", [False, True], ids=["own table", "writer's table"])
def test_readers_during_commits_see_only_published_counts(store, shared):
    writer = Table.create(store, "t", "docs", docs_schema())
    counts = {writer.version: 0}
    reader = writer if shared else Table.open(store, "t", "docs")
    observed: list[tuple[int, int]] = []
    mismatches: list[str] = []
    stop = threading.Event()

    def read() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            snap = reader.snapshot()
            observed.append((snap.version, reader.count()))
            observed.append((snap.version, snap.count()))
            scanned = snap.to_table(["title"]).num_rows
            if scanned != snap.count():
                mismatches.append(f"v{snap.version}: scan {scanned} != count {snap.count()}")
            ids = snap.to_table([], with_id=True).column(ID_COLUMN)
            if pc.count_distinct(ids).as_py() != len(ids):
                mismatches.append(f"v{snap.version}: duplicate _id")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(6):
            v = writer.append(titled(10 + i, i, f"w{i}"), batch_id=f"w{i}").version
            counts[v] = writer.at_version(v).count()
            if i % 2 == 1:
                writer.delete([("year", "<", 2005 + i)])
                counts[writer.version] = writer.at_version(writer.version).count()
            writer.update([("year", ">", 2020)], {"body": f"pass {i}"})
            counts[writer.version] = writer.at_version(writer.version).count()
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not mismatches, mismatches
    assert observed, "the reader never ran"
    assert len(counts) == 1 + 6 + 3 + 6, counts
    allowed = set(counts.values())
    # Every count is one a published version had; a snapshot's count is exactly its own.
    assert all(n in allowed for _, n in observed), (observed, counts)
    snap_counts = observed[1::2]
    assert all(counts[v] == n for v, n in snap_counts), (snap_counts, counts)
    if not shared:
        reader.close()
    writer.close()


def test_threads_sharing_one_table_each_get_their_rows_committed_before_return(store):
    """An append that returns is durable, even when another thread's commit ran
    concurrently on the same table object."""
    table = Table.create(store, "t", "docs", docs_schema())
    observer = Table.open(store, "t", "docs")
    problems: list[str] = []

    def work(tag: str) -> None:
        for i in range(4):
            name = f"{tag}{i}"
            result = table.append(titled(3, i, name), batch_id=name)
            seen = observer.count([("title", "=", f"{name}-0")])
            if result.version is None or seen != 1:
                problems.append(f"{name}: version {result.version}, visible {seen}")

    threads = [threading.Thread(target=work, args=(t,)) for t in "abc"]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not problems, problems
    assert table.count() == 3 * 4 * 3
    observer.close()
    table.close()


# --------------------------------------------------------------------------- contention

def test_writer_losing_its_only_attempt_gets_a_clear_conflict_error(store):
    Table.create(store, "t", "docs", docs_schema()).close()
    faulty = FaultyStore(store)
    loser = Table.open(faulty, "t", "docs", TableOptions(commit_attempts=1))
    winner = Table.open(store, "t", "docs")
    # The winner commits just as the loser is about to publish its manifest.
    faulty.add(Rule(op="put", path="t/_manifests/v*", calls={1}, action="hook",
                    hook=lambda: winner.append(titled(5, 1, "win"), batch_id="win")))
    with pytest.raises(CommitConflictError, match="lost the race"):
        loser.append(titled(4, 2, "lose"), batch_id="lose")
    assert winner.refresh().version == 2
    assert sorted(loser.to_arrow(["title"]).column(0).to_pylist()) == [
        f"win-{i}" for i in range(5)]
    # Nothing of the losing attempt is left behind.
    paths = [m.path for m in store.list("t/")]
    assert not [p for p in paths if p.startswith("t/_wal/")]
    referenced = {f.path for f in winner.refresh().files} | {
        f.sidecar.path for f in winner.refresh().files if f.sidecar}
    assert {p[2:] for p in paths if p.startswith("t/data/")} == referenced
    # Retried, the same append lands on top of the winner with fresh ids.
    assert loser.append(titled(4, 2, "lose"), batch_id="lose").version == 3
    got = loser.to_arrow(with_id=True)
    assert got.num_rows == 9
    assert pc.count_distinct(got.column(ID_COLUMN)).as_py() == 9
    loser.close()
    winner.close()


def test_writer_losing_a_race_with_attempts_left_renumbers_and_lands(store):
    Table.create(store, "t", "docs", docs_schema()).close()
    faulty = FaultyStore(store)
    slow = Table.open(faulty, "t", "docs", TableOptions(commit_attempts=3))
    fast = Table.open(store, "t", "docs")
    faulty.add(Rule(op="put", path="t/_manifests/v*", calls={1}, action="hook",
                    hook=lambda: fast.append(titled(5, 1, "fast"))))
    assert slow.append(titled(4, 2, "slow")).version == 3
    got = slow.to_arrow(["title"], with_id=True).sort_by(ID_COLUMN)
    assert got.column(ID_COLUMN).to_pylist() == list(range(9))
    assert got.column("title").to_pylist()[:5] == [f"fast-{i}" for i in range(5)]
    slow.close()
    fast.close()


def test_commit_whose_batches_another_writer_partly_committed_adds_only_the_rest(store):
    Table.create(store, "t", "docs", docs_schema()).close()
    faulty = FaultyStore(store)
    first = Table.open(faulty, "t", "docs")
    other = Table.open(store, "t", "docs")
    first.append(titled(3, 1, "b1"), batch_id="b1", commit=False)
    first.append(titled(3, 2, "b2"), batch_id="b2", commit=False)
    # Just before the buffered commit publishes, the other writer commits b1 on its own.
    faulty.add(Rule(op="put", path="t/_manifests/v*", calls={1}, action="hook",
                    hook=lambda: other.append(titled(3, 1, "b1"), batch_id="b1")))
    first.commit()
    titles = sorted(first.to_arrow(["title"]).column(0).to_pylist())
    assert titles == sorted([f"b1-{i}" for i in range(3)] + [f"b2-{i}" for i in range(3)])
    assert set(first.refresh().batches) == {"b1", "b2"}
    first.close()
    other.close()
