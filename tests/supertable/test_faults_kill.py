"""A writer process killed (SIGKILL) before each storage write of append, delete, update
and optimize: reopening and recovering gives the state before or after the operation,
never one in between, with no intent or unreferenced file left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest

from quiver.catalog.storage import open_store
from quiver.supertable.commit import latest_version, read_manifest
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs

SCRIPT = Path(__file__).parent / "procs" / "table_op.py"
PREFIX = "tbl"
NAME = "docs"
CHILD_TIMEOUT_S = 60

OPS = {
    "append": {"op": "append", "rows": 30, "seed": 7, "tag": "new", "batch_id": "late"},
    "append_deferred": {"op": "append", "rows": 30, "seed": 8, "tag": "lazy",
                        "batch_id": "lazy", "deferred": True},
    "delete": {"op": "delete", "filter": [["year", "<", 2008]]},
    "update": {"op": "update", "filter": [["year", ">", 2017]],
               "values": {"body": "rewritten after the crash test"}},
    "optimize": {"op": "optimize"},
}


def run_child(root: Path, params: dict, kill_at: int | None) -> subprocess.CompletedProcess:
    args = {"root": str(root), "prefix": PREFIX, "name": NAME, "kill_at": kill_at,
            "table_options": {"recovery_age_s": 3600.0}, **params}
    return subprocess.run([sys.executable, str(SCRIPT), json.dumps(args)],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                          cwd=Path(__file__).parents[2])


def build_base(root: Path) -> None:
    """Three files, one with tombstones, so every operation meets several files."""
    store = open_store(str(root))
    table = Table.create(store, PREFIX, NAME, docs_schema(), options=TableOptions())
    for i in range(3):
        docs = make_docs(25, seed=i)
        titles = pa.array([f"base{i}-{j}" for j in range(25)])
        table.append(docs.set_column(0, "title", titles), batch_id=f"base{i}")
    table.delete([("year", "=", 2003)])
    table.close()


def state(root: Path) -> tuple[pa.Table, int, int]:
    """Recovered live rows (sorted by ``_id``), the latest version and its file count."""
    store = open_store(str(root))
    table = Table.open(store, PREFIX, NAME)
    table.recover(0)
    rows = table.to_arrow(with_id=True).sort_by(ID_COLUMN)
    version, files = table.version, len(table.refresh().files)
    table.close()
    return rows, version, files


def leftovers(root: Path) -> list[str]:
    """Objects under the table no manifest accounts for: intents, or files no version of
    the table references (anything an older version references is for GC to take)."""
    store = open_store(str(root))
    referenced: set[str] = set()
    for v in range(1, latest_version(store, PREFIX) + 1):
        for f in read_manifest(store, PREFIX, v).files:
            referenced.add(f.path)
            if f.sidecar is not None:
                referenced.add(f.sidecar.path)
    out = []
    for meta in store.list(f"{PREFIX}/"):
        rel = meta.path[len(PREFIX) + 1:]
        if rel.startswith(("_manifests/", "metadata/")):
            # Iceberg metadata is written after the publish; what a killed writer left there
            # is named by no Iceberg snapshot and goes with gc.
            continue
        if rel.startswith("_wal/") or rel not in referenced:
            out.append(rel)
    return out


def copy_table(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, pa.Table, int]:
    root = tmp_path_factory.mktemp("kill") / "base"
    build_base(root)
    return root, *state(root)


@pytest.mark.parametrize("name", list(OPS))
def test_kill_before_each_write_leaves_state_before_or_after(name, base, tmp_path):
    base_root, before, before_version, before_files = base
    params = OPS[name]
    if params["op"] == "optimize" and not hasattr(Table, "optimize"):
        pytest.skip("Table.optimize does not exist yet")

    # A dry run on a copy counts the writes and gives the state after the operation.
    dry_root = copy_table(base_root, tmp_path / "dry")
    dry = run_child(dry_root, params, kill_at=None)
    assert dry.returncode == 0, dry.stderr
    writes = json.loads(dry.stdout.strip().splitlines()[-1])["writes"]
    after, after_version, after_files = state(dry_root)
    assert after_version == before_version + 1
    # Compaction changes the files but keeps every row and _id; the others change rows.
    if params["op"] == "optimize":
        assert after.equals(before)
        assert after_files < before_files
    else:
        assert not after.equals(before), "the operation must change the table"
    assert leftovers(dry_root) == []
    publish_at = 1 + next(i for i, (op, path) in enumerate(writes)
                          if op == "put" and f"_manifests/v{after_version:020d}" in path)

    roots = {n: copy_table(base_root, tmp_path / f"kill{n}") for n in range(1, len(writes) + 1)}
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = dict(zip(roots, pool.map(lambda n: run_child(roots[n], params, n), roots),
                        strict=True))

    for n, run in runs.items():
        where = f"{name} killed before write #{n} {writes[n - 1]}"
        assert run.returncode == -signal.SIGKILL, f"{where}: {run.returncode} {run.stderr}"
        rows, version, files = state(roots[n])
        if n <= publish_at:
            # Killed before (or instead of) the manifest write: nothing happened.
            assert (version, files) == (before_version, before_files), where
            assert rows.equals(before), where
        else:
            assert (version, files) == (after_version, after_files), where
            assert rows.equals(after), where
        assert leftovers(roots[n]) == [], where
        # The recovered table takes writes again.
        table = Table.open(open_store(str(roots[n])), PREFIX, NAME)
        table.append(make_docs(3, seed=99), batch_id="after-crash")
        assert table.count() == rows.num_rows + 3, where
        table.close()


def test_recovery_on_open_leaves_a_young_intent_of_a_live_writer_alone(base, tmp_path):
    """An intent younger than the recovery age may belong to a writer still running:
    opening the table must not delete its files."""
    root = copy_table(base[0], tmp_path / "young")
    params = OPS["append"]
    dry = run_child(copy_table(base[0], tmp_path / "dry"), params, kill_at=None)
    writes = json.loads(dry.stdout.strip().splitlines()[-1])["writes"]
    data_put = next(i for i, (op, path) in enumerate(writes) if path.endswith(".summary"))
    run = run_child(root, params, kill_at=data_put + 2)  # both data objects are written
    assert run.returncode == -signal.SIGKILL
    store = open_store(str(root))
    pending = [m.path for m in store.list(f"{PREFIX}/data/")]
    table = Table.open(store, PREFIX, NAME)  # recovery age is an hour: the intent stays
    assert [m.path for m in store.list(f"{PREFIX}/data/")] == pending
    assert any(True for _ in store.list(f"{PREFIX}/_wal/"))
    assert table.recover(0) == 1
    assert leftovers(root) == []
    assert os.path.isdir(root)
    table.close()
