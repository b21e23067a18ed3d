"""Writes computed from a snapshot are validated at commit: a newer commit that changed
or deleted the rows they read makes them fail with ``WriteConflictError`` (nothing
written), while appends, compaction and writes to other rows do not. Two processes
incrementing one counter through ``replace_rows(read_version=…)`` lose no increment, and
an increment racing a delete never brings the deleted row back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.supertable.conflicts import ReadSet
from quiver.supertable.errors import CommitConflictError, WriteConflictError
from quiver.supertable.manifest import ID_COLUMN
from tests.supertable.conftest import docs_schema, make_docs

SCRIPT = Path(__file__).parent / "procs" / "table_op.py"
REPO = Path(__file__).parents[2]


@pytest.fixture(params=["local", "s3"])
def shared_root(request, tmp_path) -> tuple[str, dict[str, str]]:
    if request.param == "local":
        return str(tmp_path / "root"), {}
    s3 = request.getfixturevalue("s3_server")
    return f"s3://{s3.new_bucket()}/quiver", s3.options()


def _bumped(table, row_id: int) -> tuple[int, pa.Table]:
    """The snapshot version and the row ``row_id`` with ``year`` one higher."""
    snap = table.snapshot()
    rows = snap.to_table(filter_=[(ID_COLUMN, "=", row_id)], with_id=True)
    year = rows.column("year")[0].as_py()
    idx = rows.schema.get_field_index("year")
    return snap.version, rows.set_column(idx, "year", pa.array([year + 1], pa.int32()))


def _year(table, row_id: int) -> int | None:
    rows = table.to_arrow(filter_=[(ID_COLUMN, "=", row_id)], with_id=True)
    return rows.column("year")[0].as_py() if rows.num_rows else None


# ------------------------------------------------------------------------- one process

def test_replace_rows_conflicts_when_a_newer_commit_updated_the_row(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(4, 0))
    before = _year(table, 1)
    version, new = _bumped(table, 1)
    table.update([(ID_COLUMN, "=", 1)], {"year": 1999})
    at = table.version
    with pytest.raises(WriteConflictError):
        table.replace_rows(new, read_version=version)
    assert table.refresh().version == at  # nothing published
    assert _year(table, 1) == 1999 and before != 1999


def test_replace_rows_racing_a_delete_does_not_resurrect_the_row(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(4, 0))
    version, new = _bumped(table, 2)
    assert table.delete([(ID_COLUMN, "=", 2)]) == 1
    with pytest.raises(WriteConflictError):
        table.replace_rows(new, read_version=version)
    assert _year(table, 2) is None
    assert table.count() == 3


def test_delete_with_a_read_set_conflicts_when_its_row_was_rewritten(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(4, 0))
    version = table.version
    table.update([(ID_COLUMN, "=", 3)], {"year": 1990})
    with pytest.raises(WriteConflictError):
        table.delete([(ID_COLUMN, "=", 3)], read=ReadSet(version, [3]))
    assert _year(table, 3) == 1990


def test_appends_other_rows_and_compaction_do_not_conflict(connect):
    table = connect().create_table("docs", docs_schema())
    for seed in range(3):
        table.append(make_docs(4, seed))
    version, new = _bumped(table, 0)
    table.append(make_docs(2, 9))                          # an append
    table.update([(ID_COLUMN, "=", 5)], {"year": 1980})    # another row
    table.delete([(ID_COLUMN, "=", 6)])                    # another row
    assert table.optimize().version is not None            # rows move, unchanged
    assert table.replace_rows(new, read_version=version) == 1
    assert _year(table, 0) == new.column("year")[0].as_py()
    assert _year(table, 5) == 1980 and _year(table, 6) is None


def test_predicate_write_conflicts_with_an_added_row_it_matches(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(4, 0))
    version = table.version
    docs = make_docs(1, 5)
    table.append(docs.set_column(2, "year", pa.array([2500], pa.int32())))
    table.append(docs.set_column(2, "year", pa.array([1500], pa.int32())))

    def matcher(limit):
        def matches(manifest, files):
            snap = table.at_version(manifest.version)
            return any(pc.any(pc.greater(snap.reader(f).read_table(["year"]).column(0),
                                         limit)).as_py() for f in files)
        return matches

    # ``year > 2400`` now also matches the first added row: the write must be run again.
    with pytest.raises(WriteConflictError):
        table.delete([(ID_COLUMN, "=", 0)], read=ReadSet(version, [0],
                                                         matches_added=matcher(2400)))
    # ``year > 3000`` matches neither added row: no conflict.
    assert table.delete([(ID_COLUMN, "=", 0)],
                        read=ReadSet(version, [0], matches_added=matcher(3000))) == 1


def test_write_conflict_is_a_commit_conflict():
    assert issubclass(WriteConflictError, CommitConflictError)


# ------------------------------------------------------------------------ two processes

def _children(uri: str, options: dict, jobs: list[dict]) -> list[tuple[str, str]]:
    start_at = time.time() + 3.0
    procs = []
    for job in jobs:
        args = {"root": uri, "options": options, "catalog": True, "name": "docs",
                "start_at": start_at + job.pop("delay", 0.0),
                "table_options": {"commit_attempts": 40}, **job}
        procs.append(subprocess.Popen([sys.executable, str(SCRIPT), json.dumps(args)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=REPO))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    return outs


def test_two_processes_incrementing_one_row_lose_no_increment(shared_root):
    uri, options = shared_root
    conn = catalog.connect(uri, **options)
    table = conn.create_table("docs", docs_schema())
    table.append(make_docs(3, 0).set_column(2, "year", pa.array([0, 0, 0], pa.int32())))
    job = {"op": "counter", "id": 1, "seconds": 5.0, "count": 60}
    outs = _children(uri, options, [dict(job), dict(job)])
    acked = [json.loads(out.splitlines()[-1])["acked"] for out, _ in outs]
    conflicts = [json.loads(out.splitlines()[-1])["conflicts"] for out, _ in outs]
    assert all(a > 0 for a in acked), acked
    assert _year(conn.open_table("docs"), 1) == sum(acked), (acked, conflicts)
    # Each acknowledged write saw the value before it: no two share one.
    seen = [int(line.split()[1]) for out, _ in outs for line in out.splitlines()
            if line.startswith("ACK ")]
    assert sorted(seen) == list(range(1, sum(acked) + 1))
    conn.close()


def test_increments_racing_a_delete_never_bring_the_row_back(shared_root):
    uri, options = shared_root
    conn = catalog.connect(uri, **options)
    table = conn.create_table("docs", docs_schema())
    table.append(make_docs(3, 0).set_column(2, "year", pa.array([0, 0, 0], pa.int32())))
    outs = _children(uri, options, [
        {"op": "counter", "id": 1, "seconds": 4.0, "count": 200},
        {"op": "delete", "filter": [[ID_COLUMN, "=", 1]], "delay": 1.0},
    ])
    assert json.loads(outs[1][0].splitlines()[-1])["deleted"] == 1
    table = conn.open_table("docs")
    assert _year(table, 1) is None
    assert table.count() == 2
    conn.close()
