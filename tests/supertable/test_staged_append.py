"""A bulk append staged part by part is one commit: nothing is visible before it, all of
it after; an abort, a storage failure at any write, or a SIGKILL before any write adds
nothing (or, past the publish, everything) and leaves no object behind once recovered.
A table created staged is in the catalog with all its rows or not at all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.catalog.storage import open_store
from quiver.supertable.errors import StorageError
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.staged import StagedAppend
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore, Rule
from tests.supertable.test_faults_kill import leftovers

SCRIPT = Path(__file__).parent / "procs" / "table_op.py"
REPO = Path(__file__).parents[2]
PREFIX, NAME = "tbl", "docs"
PARTS, ROWS = 3, 20


def _parts(tag: str = "s") -> list[pa.Table]:
    out = []
    for i in range(PARTS):
        docs = make_docs(ROWS, 10 + i)
        out.append(docs.set_column(0, "title", pa.array([f"{tag}-{i}-{j}" for j in range(ROWS)])))
    return out


def _data_objects(table: Table) -> list[str]:
    return sorted(m.path for m in table.store.list(f"{table.prefix}/data/"))


def _intents(table: Table) -> list[str]:
    return [m.path for m in table.store.list(f"{table.prefix}/_wal/")]


def test_parts_are_invisible_until_the_one_commit_that_publishes_them(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(5, 0))
    staged = StagedAppend(table)
    for part in _parts():
        staged.add(part)
    # Two parts are uploaded already, under reserved ids; no row is visible.
    assert len(_data_objects(table)) > 2
    assert table.count() == 5
    assert all(table.at_version(v).manifest.operation == "reserve"
               for v in range(3, table.refresh().version + 1))
    result = staged.commit()
    latest = table.refresh()
    assert result.version == latest.version and latest.operation == "append"
    assert result.rows == PARTS * ROWS and table.count() == 5 + PARTS * ROWS
    # Every staged file came in with that one version.
    assert sum(1 for f in latest.files if f.added_in == latest.version) == PARTS
    assert table.at_version(latest.version - 1).count() == 5


def test_abort_removes_every_uploaded_object(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(5, 0))
    before = _data_objects(table)
    with pytest.raises(RuntimeError), StagedAppend(table) as staged:
        for part in _parts():
            staged.add(part)
        raise RuntimeError("the stream broke")
    assert _data_objects(table) == before
    assert _intents(table) == []
    assert table.count() == 5


def test_appends_committed_meanwhile_keep_every_id_distinct(connect):
    table = connect().create_table("docs", docs_schema())
    other = connect().open_table("docs")  # another writer, its own table object
    staged = StagedAppend(table)
    for i, part in enumerate(_parts()):
        staged.add(part)
        other.append(make_docs(4, 50 + i))
    staged.commit()
    ids = table.to_arrow(with_id=True).column(ID_COLUMN)
    assert len(ids) == PARTS * ROWS + 3 * 4
    assert pc.count_distinct(ids).as_py() == len(ids)


def test_a_stream_sent_again_under_its_batch_id_adds_nothing(connect):
    table = connect().create_table("docs", docs_schema())
    first = StagedAppend(table, batch_id="load-1")
    for part in _parts():
        first.add(part)
    assert first.commit().rows == PARTS * ROWS
    again = StagedAppend(table, batch_id="load-1")
    assert again.already_applied
    for part in _parts():
        again.add(part)
    assert again.commit().version is None
    assert table.count() == PARTS * ROWS


# --------------------------------------------------------------- storage outage at each write

@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path) -> tuple[str, dict[str, str]]:
    if request.param == "local":
        return str(tmp_path / "root"), {}
    s3 = request.getfixturevalue("s3_server")
    return f"s3://{s3.new_bucket()}/quiver", s3.options()


def _staged_into(store: FaultyStore, prefix: str) -> None:
    table = Table.open(store, prefix, NAME, TableOptions(recovery_age_s=3600.0))
    with StagedAppend(table, batch_id="bulk") as staged:
        for part in _parts():
            staged.add(part)
        staged.commit()


def test_a_storage_failure_at_any_write_adds_nothing_or_everything(store_root):
    uri, options = store_root
    inner = open_store(uri, **options)
    dry = FaultyStore(inner)
    Table.create(inner, "dry", NAME, docs_schema()).append(make_docs(5, 0))
    _staged_into(dry, "dry")
    writes = len(dry.write_log())
    assert writes > 8
    for k in range(1, writes + 1):
        prefix = f"t{k}"
        Table.create(inner, prefix, NAME, docs_schema()).append(make_docs(5, 0))
        store = FaultyStore(inner)
        store.add(Rule(op="write", calls={k}))
        try:
            _staged_into(store, prefix)
            failed = False
        except StorageError:
            failed = True
        table = Table.open(inner, prefix, NAME)
        table.recover(0)
        count = table.count()
        where = f"storage failure at write #{k} {dry.write_log()[k - 1]}"
        assert count in (5, 5 + PARTS * ROWS), where
        if not failed:
            assert count == 5 + PARTS * ROWS, where
        assert not [p for p in _intents(table)], where
        referenced = {f.path for f in table.refresh().files} | \
            {f.sidecar.path for f in table.refresh().files if f.sidecar is not None}
        stray = [p for p in _data_objects(table) if p[len(prefix) + 1:] not in referenced]
        assert stray == [], where
        table.close()


# ----------------------------------------------------------------------- SIGKILL at each write

def _child(root: Path, params: dict, kill_at: int | None) -> subprocess.CompletedProcess:
    args = {"root": str(root), "prefix": PREFIX, "name": NAME, "kill_at": kill_at,
            "table_options": {"recovery_age_s": 3600.0}, **params}
    return subprocess.run([sys.executable, str(SCRIPT), json.dumps(args)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def _rows_of(root: Path) -> int:
    table = Table.open(open_store(str(root)), PREFIX, NAME)
    table.recover(0)
    try:
        return table.count()
    finally:
        table.close()


def test_a_kill_before_any_write_of_a_staged_append_leaves_none_or_all_of_it(tmp_path):
    params = {"op": "staged", "parts": PARTS, "rows": ROWS, "seed": 3, "tag": "k",
              "batch_id": "bulk"}

    def fresh(path: Path) -> Path:
        Table.create(open_store(str(path)), PREFIX, NAME, docs_schema()).append(
            make_docs(5, 0))
        return path

    dry_root = fresh(tmp_path / "dry")
    dry = _child(dry_root, params, None)
    assert dry.returncode == 0, dry.stderr
    writes = json.loads(dry.stdout.strip().splitlines()[-1])["writes"]
    version = json.loads(dry.stdout.strip().splitlines()[-1])["version"]
    publish_at = 1 + next(i for i, (op, path) in enumerate(writes)
                          if op == "put" and f"_manifests/v{version:020d}" in path)
    roots = {n: fresh(tmp_path / f"k{n}") for n in range(1, len(writes) + 1)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(roots, pool.map(lambda n: _child(roots[n], params, n), roots),
                        strict=True))
    for n, run in runs.items():
        where = f"killed before write #{n} {writes[n - 1]}"
        assert run.returncode == -signal.SIGKILL, f"{where}: {run.stderr}"
        want = 5 if n <= publish_at else 5 + PARTS * ROWS
        assert _rows_of(roots[n]) == want, where
        assert leftovers(roots[n]) == [], where


def test_a_kill_before_any_write_of_a_staged_create_leaves_no_table_or_all_of_it(tmp_path):
    params = {"op": "create_staged", "parts": PARTS, "rows": ROWS, "seed": 3, "tag": "c"}
    dry = _child(tmp_path / "dry", params, None)
    assert dry.returncode == 0, dry.stderr
    writes = json.loads(dry.stdout.strip().splitlines()[-1])["writes"]
    named_at = 1 + next(i for i, (op, path) in enumerate(writes)
                        if op == "put" and path.startswith("_catalog/"))
    roots = {n: tmp_path / f"c{n}" for n in range(1, len(writes) + 1)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(roots, pool.map(lambda n: _child(roots[n], params, n), roots),
                        strict=True))
    for n, run in runs.items():
        where = f"killed before write #{n} {writes[n - 1]}"
        assert run.returncode == -signal.SIGKILL, f"{where}: {run.stderr}"
        conn = catalog.connect(str(roots[n]))
        conn.purge_dropped(staging_grace_s=0)
        folders = {m.path.split("/")[1] for m in conn.store.list("tables/")}
        if n <= named_at:
            assert conn.list_tables() == [], where
            assert folders == set(), where
            # A retried create of the same name succeeds.
            conn.create_table(NAME, docs_schema()).append(make_docs(2, 1))
            assert conn.open_table(NAME).count() == 2, where
        else:
            assert conn.list_tables() == [NAME], where
            assert conn.open_table(NAME).count() == PARTS * ROWS, where
            assert len(folders) == 1, where
        conn.close()
