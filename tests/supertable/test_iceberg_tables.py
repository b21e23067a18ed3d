"""Every table is an Iceberg table: pyiceberg and DuckDB read exactly its live rows, at
every version, after appends, deletes, updates, optimize and gc, on local disk and S3."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import StaticTable

from quiver import catalog
from quiver.supertable import iceberg
from quiver.supertable.iceberg import metadata as ice_metadata
from quiver.supertable.iceberg.sync import folder_for, referenced
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore, Rule
from tests.supertable.iceberg_readers import (
    duck,
    duckdb_scan,
    pyiceberg_properties,
    pyiceberg_scan,
    rows,
)

OPTS = TableOptions(max_rows_per_file=300, build_threads=2, background_indexing=False)


def _quiver(t: Table, version: int) -> list[tuple]:
    return rows(t.at_version(version).to_table())


def _assert_every_version_reads_the_same(t: Table, s3, versions: list[int]) -> None:
    location = iceberg.metadata_location(t.store, t.prefix)
    assert location is not None
    folder = location.rsplit("/metadata/", 1)[0]
    con = duck(s3)
    for v in versions:
        want = _quiver(t, v)
        assert rows(pyiceberg_scan(folder, v, s3)) == want, f"pyiceberg at version {v}"
        assert rows(duckdb_scan(con, location, v)) == want, f"duckdb at version {v}"


def _snapshot_ids(t: Table) -> list[int]:
    state = ice_metadata.load(folder_for(t.store, t.prefix))
    assert state is not None
    return [s["snapshot-id"] for s in state[1]["snapshots"]]


def test_pyiceberg_and_duckdb_read_the_live_rows_of_every_version(where):
    uri, options, s3 = where
    t = catalog.connect(uri, table_options=OPTS, **options).create_table("docs", docs_schema())
    t.append(make_docs(500, seed=1))                  # two files
    t.append(make_docs(120, seed=2))
    t.delete([("year", "<", 2006)])                    # tombstones in three files
    t.update([("year", "=", 2010)], {"title": "rewritten"})
    t.delete([("year", ">", 2020)])                    # more tombstones: new delete files
    t.append(make_docs(40, seed=3))
    assert _snapshot_ids(t) == list(range(1, t.version + 1))
    _assert_every_version_reads_the_same(t, s3, list(range(1, t.version + 1)))


def test_optimize_then_gc_keeps_iceberg_metadata_valid_and_exact(where):
    uri, options, s3 = where
    t = catalog.connect(uri, table_options=OPTS, **options).create_table("docs", docs_schema())
    for i in range(4):
        t.append(make_docs(90, seed=10 + i))
    t.delete([("year", "<", 2010)])
    before = t.version
    assert t.optimize(target_rows=300).version == before + 1
    t.update([("year", "=", 2015)], {"body": "after optimize"})
    _assert_every_version_reads_the_same(t, s3, list(range(1, t.version + 1)))

    t.gc(grace_seconds=0)
    # Only the snapshots whose files gc kept are left, and every file they name exists.
    assert _snapshot_ids(t) == [t.version]
    folder = folder_for(t.store, t.prefix)
    state = ice_metadata.load(folder)
    tasks = StaticTable.from_metadata(folder.location, pyiceberg_properties(s3)).scan().plan_files()
    used = referenced(folder, state[1]) | {
        folder.rel(f.file_path) for task in tasks for f in (task.file, *task.delete_files)}
    present = {m.path[len(t.prefix) + 1:] for m in t.store.list(f"{t.prefix}/")}
    assert used <= present
    _assert_every_version_reads_the_same(t, s3, [t.version])


def test_schema_has_field_ids_and_name_mapping_and_hides_id(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema(4))
    t.append(make_docs(5, dim=4))
    state = ice_metadata.load(folder_for(t.store, t.prefix))
    doc = state[1]
    fields = doc["schemas"][0]["fields"]
    assert [(f["id"], f["name"]) for f in fields] == [
        (1, "title"), (2, "body"), (3, "year"), (4, "emb")]
    assert fields[3]["type"] == {"type": "list", "element-id": 5, "element": "float",
                                 "element-required": False}
    mapping = json.loads(doc["properties"]["schema.name-mapping.default"])
    assert mapping[-1] == {"field-id": 6, "names": ["_id"]}
    assert doc["last-column-id"] == 6
    assert pyiceberg_scan(t.prefix and str(tmp_path / t.prefix), t.version).column_names == [
        "title", "body", "year", "emb"]


def _data_files(t: Table) -> list:
    location = iceberg.metadata_location(t.store, t.prefix)
    return [task.file for task in StaticTable.from_metadata(location).scan().plan_files()]


def test_data_files_carry_column_statistics_from_their_footers_without_the_row_id(tmp_path):
    import struct

    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema(4))
    data = make_docs(50, dim=4)
    titles = data.column("title").to_pylist()
    titles[7] = None
    t.append(data.set_column(0, "title", pa.array(titles, pa.string())))
    (df,) = _data_files(t)
    years = data.column("year")
    assert struct.unpack("<i", df.lower_bounds[3])[0] == pc.min(years).as_py()
    assert struct.unpack("<i", df.upper_bounds[3])[0] == pc.max(years).as_py()
    assert df.lower_bounds[1].decode() == min(x for x in titles if x is not None)
    assert df.null_value_counts[1] == 1 and df.null_value_counts[3] == 0
    assert df.value_counts[3] == 50
    assert all(df.column_sizes[i] > 0 for i in (1, 2, 3))
    # The hidden row id (field 6 in the name mapping) is not described.
    for stats in (df.lower_bounds, df.upper_bounds, df.value_counts, df.column_sizes):
        assert 6 not in stats


def test_column_statistics_survive_manifests_being_merged(tmp_path):
    from quiver.supertable.iceberg.snapshot import MAX_MANIFESTS

    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    for seed in range(MAX_MANIFESTS):
        t.append(make_docs(20, seed=seed))
    before = {df.file_path: dict(df.upper_bounds) for df in _data_files(t)}
    t.append(make_docs(20, seed=99))  # one manifest too many: all are merged into one
    location = iceberg.metadata_location(t.store, t.prefix)
    data_manifests = [m for m in StaticTable.from_metadata(location).current_snapshot()
                      .manifests(StaticTable.from_metadata(location).io) if m.content == 0]
    assert len(data_manifests) == 1
    after = {df.file_path: dict(df.upper_bounds) for df in _data_files(t)}
    assert len(after) == MAX_MANIFESTS + 1 and all(after.values())
    assert {p: after[p] for p in before} == before


def test_snapshot_summaries_count_added_and_deleted_rows_and_files(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    t.append(make_docs(100))
    t.delete([("year", "<", 2010)])
    dead = 100 - t.count()
    snaps = {s["snapshot-id"]: s for s in
             ice_metadata.load(folder_for(t.store, t.prefix))[1]["snapshots"]}
    append, delete = snaps[2]["summary"], snaps[3]["summary"]
    assert (append["operation"], append["added-records"], append["added-data-files"]) == (
        "append", "100", "1")
    assert (delete["operation"], delete["added-position-deletes"],
            delete["added-delete-files"]) == ("delete", str(dead), "1")
    assert delete["quiver.version"] == "3" and snaps[3]["parent-snapshot-id"] == 2


def test_a_delete_file_is_written_once_and_reused_by_later_snapshots(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    t.append(make_docs(100, seed=1))
    t.append(make_docs(100, seed=2))
    t.delete([("year", "<", 2010)])
    deletes = f"{t.prefix}/metadata/deletes/"
    first = {m.path: m.last_modified for m in t.store.list(deletes)}
    t.append(make_docs(10, seed=3))
    t.append(make_docs(10, seed=4))
    assert {m.path: m.last_modified for m in t.store.list(deletes)} == first


def test_a_failed_iceberg_write_keeps_the_commit_and_the_next_commit_repairs_it(tmp_path):
    conn = catalog.connect(str(tmp_path), table_options=OPTS)
    t = conn.create_table("docs", docs_schema())
    faulty = FaultyStore(t.store)
    broken = Table.open(faulty, t.prefix, "docs", OPTS)
    faulty.add(Rule("put", path="*/metadata/*"))
    broken.append(make_docs(50, seed=1))              # Quiver commits, Iceberg write fails
    assert broken.count() == 50
    assert _snapshot_ids(t) == [1]
    faulty.rules.clear()
    broken.delete([("year", "<", 2010)])
    assert _snapshot_ids(t) == [1, 2, 3]
    _assert_every_version_reads_the_same(t, None, [1, 2, 3])


def test_opening_a_table_writes_the_iceberg_metadata_it_lacks(tmp_path):
    conn = catalog.connect(str(tmp_path), table_options=OPTS)
    t = conn.create_table("docs", docs_schema())
    faulty = FaultyStore(t.store)
    faulty.add(Rule("put", path="*/metadata/*"))
    broken = Table.open(faulty, t.prefix, "docs", OPTS)
    broken.append(make_docs(30, seed=1))
    assert _snapshot_ids(t) == [1]
    reopened = Table.open(t.store, t.prefix, "docs", OPTS)
    assert _snapshot_ids(reopened) == [1, 2]
    _assert_every_version_reads_the_same(reopened, None, [2])


def test_memory_roots_get_no_iceberg_metadata():
    conn = catalog.connect("memory://iceberg-none", table_options=OPTS)
    t = conn.create_table("docs", docs_schema())
    t.append(make_docs(5))
    assert iceberg.metadata_location(t.store, t.prefix) is None
    assert not list(t.store.list(f"{t.prefix}/metadata/"))


def test_rows_deleted_everywhere_leave_an_empty_iceberg_table(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    t.append(make_docs(20))
    t.delete(pc.field("year") >= 0)
    assert t.count() == 0
    got = pyiceberg_scan(str(tmp_path / t.prefix), t.version)
    assert got.num_rows == 0 and isinstance(got, pa.Table)


def test_many_appends_are_merged_into_few_manifests_and_read_the_same(tmp_path):
    from quiver.supertable.iceberg.snapshot import MAX_MANIFESTS
    from quiver.supertable.iceberg.sync import _manifest_files

    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    for i in range(MAX_MANIFESTS + 3):
        t.append(make_docs(10, seed=i))
        t.delete([("year", "=", 2000 + i)])
    folder = folder_for(t.store, t.prefix)
    for v in range(2, t.version + 1):
        listed = _manifest_files(folder, ice_metadata.load(folder)[1], v)
        assert len(listed) <= 2 * MAX_MANIFESTS
    _assert_every_version_reads_the_same(t, None, list(range(1, t.version + 1)))


def test_a_big_oldest_manifest_is_kept_while_newer_ones_merge(tmp_path):
    from quiver.supertable.iceberg.snapshot import MAX_MANIFESTS
    from quiver.supertable.iceberg.sync import _manifest_files

    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    # One manifest of more files than the appends below add: it is never the smaller part.
    t.append(make_docs(300 * 3 * MAX_MANIFESTS, seed=0))
    folder = folder_for(t.store, t.prefix)
    big = _manifest_files(folder, ice_metadata.load(folder)[1], t.version)[0].manifest_path
    for i in range(2 * MAX_MANIFESTS):
        t.append(make_docs(10, seed=i + 1))
        listed = [m.manifest_path for m in
                  _manifest_files(folder, ice_metadata.load(folder)[1], t.version)]
        assert len(listed) <= MAX_MANIFESTS
        assert big in listed, f"the big manifest was rewritten at version {t.version}"
    _assert_every_version_reads_the_same(t, None, [t.version])


def test_filtered_reads_that_prune_by_column_statistics_find_every_matching_row(tmp_path):
    import datetime as dt

    from pyiceberg.expressions import EqualTo, GreaterThanOrEqual

    schema = pa.schema([("i", pa.int32()), ("l", pa.int64()), ("d", pa.float64()),
                        ("s", pa.string()), ("b", pa.bool_()), ("day", pa.date32()),
                        ("ts", pa.timestamp("us"))])
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("typed", schema)
    for k in range(4):  # four files with disjoint value ranges
        base = k * 100
        t.append(pa.table({
            "i": pa.array([base + j for j in range(10)], pa.int32()),
            "l": pa.array([(base + j) * 10**10 for j in range(10)], pa.int64()),
            "d": [base + j + 0.5 for j in range(10)],
            "s": [f"k{k}-{j}" for j in range(10)],
            "b": [k % 2 == 0] * 10,
            "day": [dt.date(2020, 1, 1) + dt.timedelta(days=base + j) for j in range(10)],
            "ts": [dt.datetime(2021, 1, 1) + dt.timedelta(hours=base + j) for j in range(10)],
        }, schema=schema))
    location = iceberg.metadata_location(t.store, t.prefix)
    table = StaticTable.from_metadata(location)
    con = duck()
    probes = {"i": 203, "l": 203 * 10**10, "d": 203.5, "s": "k2-3",
              "day": dt.date(2020, 1, 1) + dt.timedelta(days=203),
              "ts": dt.datetime(2021, 1, 1) + dt.timedelta(hours=203)}
    for column, value in probes.items():
        got = table.scan(row_filter=EqualTo(column, value)).to_arrow()
        assert got.column("i").to_pylist() == [203], column
        duck_rows = con.execute(f"SELECT i FROM iceberg_scan(?) WHERE {column} = ?",
                                [location, value]).fetchall()
        assert duck_rows == [(203,)], column
    assert table.scan(row_filter=GreaterThanOrEqual("s", "k3")).to_arrow().num_rows == 10
    assert con.execute("SELECT count(*) FROM iceberg_scan(?) WHERE b",
                       [location]).fetchone() == (20,)
