"""The write log and the compactor: small commits land as log files that every reader sees
and searches at once, are folded into indexed superfiles by the thresholds, and small
files are merged size-tiered while writers and UPDATEs go on, keeping every ``_id`` and
every tombstone; replaced files are deleted after their grace period."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.supertable.conflicts import ReadSet
from quiver.supertable.errors import WriteConflictError
from quiver.supertable.maintain import idle_choice, is_log_file, log_files, tiered_choice
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.optimize import merge_files
from quiver.supertable.table import TableOptions
from tests.supertable.conftest import docs_schema, make_docs

LOGGED = TableOptions(write_log_rows=1000, fold_rows=10**9, fold_files=10**6,
                      fold_age_s=3600.0)


def _wait(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _ids_and_titles(table) -> list[tuple[int, str]]:
    t = table.to_arrow(["title"], with_id=True).sort_by(ID_COLUMN)
    return list(zip(t.column(ID_COLUMN).to_pylist(), t.column("title").to_pylist(),
                    strict=True))


def test_small_appends_are_log_files_seen_and_searched_by_another_connection(root):
    uri, opts = root
    with catalog.connect(uri, table_options=LOGGED, **opts) as conn:
        table = conn.create_table("docs", docs_schema())
        docs = make_docs(6, seed=3)
        for i in range(docs.num_rows):
            table.append(docs.slice(i, 1))
        manifest = table.refresh()
        assert len(log_files(manifest)) == 6 and not any(f.indexed for f in manifest.files)
        with catalog.connect(uri, **opts) as other:
            seen = other.open_table("docs")
            assert seen.count() == 6
            word = docs.column("body")[0].as_py().split()[0]
            hits = seen.bm25_search("body", word, k=10, columns=["body"])
            expected = sum(word in b.split() for b in docs.column("body").to_pylist())
            assert hits.num_rows == expected > 0


def test_large_commits_skip_the_log():
    with catalog.connect("memory://wl-large", table_options=LOGGED) as conn:
        table = conn.create_table("docs", docs_schema())
        table.append(make_docs(1001))
        (entry,) = table.refresh().files
        assert entry.indexed and not is_log_file(entry)


@pytest.mark.parametrize("threshold", ["rows", "files", "age"])
def test_the_log_is_folded_into_one_indexed_file_by_each_threshold(tmp_path, threshold):
    options = {"rows": replace(LOGGED, fold_rows=5), "files": replace(LOGGED, fold_files=5),
               "age": replace(LOGGED, fold_age_s=0.3)}[threshold]
    with catalog.connect(str(tmp_path / "root"), table_options=options) as conn:
        table = conn.create_table("docs", docs_schema())
        docs = make_docs(5, seed=4)
        for i in range(docs.num_rows):
            table.append(docs.slice(i, 1))
        before = _ids_and_titles(table)
        assert _wait(lambda: not log_files(table.refresh()))
        files = table.refresh().files
        assert len(files) == 1 and files[0].indexed
        assert _ids_and_titles(table) == before
        oracle = conn.create_table("oracle", docs_schema())
        oracle.append(docs)
        for word in ("rust", "python data", "search"):
            got = table.bm25_search("body", word, k=5, columns=["title"])
            want = oracle.bm25_search("body", word, k=5, columns=["title"])
            assert got.column("title").to_pylist() == want.column("title").to_pylist()
            assert np.allclose(got.column("score").to_numpy(), want.column("score").to_numpy())


def test_a_delete_during_a_fold_is_not_lost(tmp_path):
    with catalog.connect(str(tmp_path / "root"), table_options=LOGGED) as conn:
        table = conn.create_table("docs", docs_schema())
        docs = make_docs(8, seed=5)
        for i in range(docs.num_rows):
            table.append(docs.slice(i, 1))
        victim = table.to_arrow(["title"], with_id=True).column(ID_COLUMN)[2].as_py()

        def choose(manifest):
            chosen = log_files(manifest)
            # The fold has planned on this version; the delete commits before it publishes.
            if table.count() == 8:
                assert table.delete(pc.field(ID_COLUMN) == victim) == 1
            return chosen

        result = merge_files(table, choose, what="fold")
        assert result.version is not None and table.refresh().operation == "optimize"
        assert table.count() == 7
        ids = table.to_arrow(["title"], with_id=True).column(ID_COLUMN).to_pylist()
        assert victim not in ids and len(ids) == 7


def test_an_update_that_read_before_a_compaction_commits_after_it(tmp_path):
    with catalog.connect(str(tmp_path / "root"), table_options=LOGGED) as conn:
        table = conn.create_table("docs", docs_schema())
        docs = make_docs(6, seed=6)
        for i in range(docs.num_rows):
            table.append(docs.slice(i, 1))
        snap = table.snapshot()
        row = snap.to_table(with_id=True).slice(1, 1)
        read = ReadSet(snap.version, row.column(ID_COLUMN).to_numpy())
        assert merge_files(table, log_files, what="fold").version is not None
        changed = row.set_column(row.schema.get_field_index("title"), "title",
                                 pa.array(["changed"]))
        assert table.replace_rows(changed, read=read) == 1
        rows = table.to_arrow(["title"], with_id=True)
        assert table.count() == 6
        assert rows.filter(pc.field("title") == "changed").column(ID_COLUMN).to_pylist() == \
            row.column(ID_COLUMN).to_pylist()


def test_tiers_merge_while_appends_go_on_and_the_idle_table_ends_in_few_files(tmp_path):
    options = TableOptions(write_log_rows=1000, fold_rows=4, fold_age_s=0.2,
                           compaction=True, compact_fan_in=3, compact_idle_s=1.0)
    with catalog.connect(str(tmp_path / "root"), table_options=options) as conn:
        table = conn.create_table("docs", docs_schema())
        docs = make_docs(120, seed=7)
        most = 0
        for i in range(docs.num_rows):
            table.append(docs.slice(i, 1))
            most = max(most, len(table.refresh().files))
        # Log files (a fold's worth, plus those written while the upkeep thread merges)
        # and at most fan_in - 1 files per size tier: far fewer than the 120 commits.
        assert most <= 30
        def settled() -> bool:
            m = table.refresh()
            return not (log_files(m) or idle_choice(m, 1000, 3) or tiered_choice(m, 3, 1000))

        assert _wait(settled, timeout=30)
        # Nothing left to merge: a few files of distinct size tiers.
        files = table.refresh().files
        assert len(files) <= 6 and all(f.indexed for f in files), [f.live_rows for f in files]
        assert table.count() == 120
        ids = table.to_arrow(with_id=True).column(ID_COLUMN).to_pylist()
        assert sorted(ids) == list(range(120))


def test_tiered_choice_takes_a_full_tier_only():
    with catalog.connect("memory://wl-tiers", table_options=TableOptions()) as conn:
        table = conn.create_table("docs", docs_schema())
        for n in (3, 3, 20):
            table.append(make_docs(n))
        assert tiered_choice(table.refresh(), 3, 1000) == []
        table.append(make_docs(4))
        chosen = tiered_choice(table.refresh(), 3, 1000)
        assert sorted(f.rows for f in chosen) == [3, 3, 4]


def test_an_idle_merge_leaves_a_much_larger_file_alone():
    with catalog.connect("memory://wl-idle", table_options=TableOptions()) as conn:
        table = conn.create_table("docs", docs_schema())
        table.append(make_docs(1000))
        table.append(make_docs(3))
        assert idle_choice(table.refresh(), 10**6, 4) == []
        for n in (5, 5, 20):
            table.append(make_docs(n))
        chosen = idle_choice(table.refresh(), 10**6, 4)
        assert sorted(f.rows for f in chosen) == [3, 5, 5, 20]


def test_counter_updates_racing_the_compactor_lose_nothing(tmp_path):
    options = TableOptions(write_log_rows=1000, fold_rows=3, fold_age_s=0.05,
                           compaction=True, compact_fan_in=2, compact_idle_s=0.05)
    schema = pa.schema([("k", pa.int64()), ("n", pa.int64()), ("pad", pa.string())])
    with catalog.connect(str(tmp_path / "root"), table_options=options) as conn:
        table = conn.create_table("c", schema)
        table.append(pa.table({"k": [0], "n": [0], "pad": ["counter"]}, schema=schema))
        done = {"updates": 0, "appends": 0}
        lock = threading.Lock()
        deadline = time.monotonic() + 8.0

        def bump() -> None:
            while time.monotonic() < deadline and done["updates"] < 60:
                snap = table.snapshot()
                row = snap.to_table(filter_=pc.field("k") == 0, with_id=True)
                read = ReadSet(snap.version, row.column(ID_COLUMN).to_numpy())
                new = row.set_column(2, "n", pc.add(row.column("n"), 1))
                try:
                    table.replace_rows(new, read=read)
                except WriteConflictError:
                    continue
                with lock:
                    done["updates"] += 1

        def add() -> None:
            i = 1
            while time.monotonic() < deadline and done["appends"] < 150:
                table.append(pa.table({"k": [i], "n": [0], "pad": ["x"]}, schema=schema))
                with lock:
                    done["appends"] += 1
                i += 1

        threads = [threading.Thread(target=bump) for _ in range(2)] + [
            threading.Thread(target=add)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ops = [table.at_version(v).manifest.operation
               for v in range(1, table.refresh().version + 1)]
        assert "optimize" in ops
        counter = table.to_arrow(filter_=pc.field("k") == 0)
        assert counter.num_rows == 1
        assert counter.column("n")[0].as_py() == done["updates"] > 0
        assert table.count() == 1 + done["appends"]


def test_replaced_files_are_deleted_after_the_grace(tmp_path):
    options = TableOptions(write_log_rows=1000, fold_rows=3, retire_grace_s=0.5,
                           fold_age_s=3600.0)
    root = tmp_path / "root"
    with catalog.connect(str(root), table_options=options) as conn:
        table = conn.create_table("docs", docs_schema())
        docs = make_docs(3, seed=8)
        for i in range(3):
            table.append(docs.slice(i, 1))
        assert _wait(lambda: not log_files(table.refresh()))
        data = next(root.glob("tables/docs-*/data"))
        assert _wait(lambda: not list(data.glob("log-*")), timeout=20)
        assert table.count() == 3
