"""Deleted rows in a table's Iceberg metadata: one position delete file per commit (format
version 2) and deletion vectors in Puffin files (format version 3), read back by pyiceberg
and DuckDB at every version, through optimize and gc, on local disk and S3."""

from __future__ import annotations

import itertools
import json
import struct
import zlib

import pyarrow.parquet as pq
import pytest
from pyiceberg.avro.file import AvroFile
from pyiceberg.manifest import MANIFEST_ENTRY_SCHEMAS, DataFile, ManifestEntry
from pyiceberg.table import StaticTable
from pyroaring import BitMap, BitMap64

from quiver import catalog
from quiver.supertable import iceberg
from quiver.supertable.errors import TableSchemaError
from quiver.supertable.iceberg import deletes, puffin
from quiver.supertable.iceberg import metadata as ice_metadata
from quiver.supertable.iceberg.snapshot import read_manifest_list
from quiver.supertable.iceberg.sync import _io, folder_for, referenced
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

OPTS = TableOptions(max_rows_per_file=100, build_threads=2, background_indexing=False)


def _state(t: Table) -> dict:
    state = ice_metadata.load(folder_for(t.store, t.prefix))
    assert state is not None
    return state[1]


def _every_version_reads_the_same(t: Table, s3) -> None:
    location = iceberg.metadata_location(t.store, t.prefix)
    folder = location.rsplit("/metadata/", 1)[0]
    con = duck(s3)
    for s in _state(t)["snapshots"]:
        v = s["snapshot-id"]
        want = rows(t.at_version(v).to_table())
        assert rows(pyiceberg_scan(folder, v, s3)) == want, f"pyiceberg at version {v}"
        assert rows(duckdb_scan(con, location, v)) == want, f"duckdb at version {v}"


def _delete_entries(t: Table, snapshot_id: int | None = None) -> list[DataFile]:
    """The live delete entries of a snapshot (the current one by default), as written."""
    folder = folder_for(t.store, t.prefix)
    doc = _state(t)
    snap = next(s for s in doc["snapshots"]
                if s["snapshot-id"] == (snapshot_id or doc["current-snapshot-id"]))
    out = []
    for mf in read_manifest_list(_io(folder), snap["manifest-list"]):
        if mf.content != 1:
            continue
        with AvroFile[ManifestEntry](_io(folder).new_input(mf.manifest_path),
                                     MANIFEST_ENTRY_SCHEMAS[3],
                                     read_types={-1: ManifestEntry, 2: DataFile}) as reader:
            out += [e.data_file for e in reader if e.status != 2]
    return out


def _objects(t: Table, under: str) -> set[str]:
    return {m.path for m in t.store.list(f"{t.prefix}/{under}")}


def _fill(t: Table) -> None:
    for seed in range(4):                   # four commits of 150 rows: eight data files
        t.append(make_docs(150, seed=seed))


# -- format version 2: one position delete file per commit ----------------------------------


def test_a_delete_across_many_files_writes_one_position_delete_file_sorted_by_path(where):
    uri, options, s3 = where
    t = catalog.connect(uri, table_options=OPTS, **options).create_table("docs", docs_schema())
    _fill(t)
    t.delete([("year", "<", 2008)])
    touched = [f for f in t.snapshot().files if f.tombstones]
    assert len(touched) >= 6
    (written,) = _objects(t, "metadata/deletes/")
    (entry,) = _delete_entries(t)
    assert entry.file_path.endswith(written.rsplit("/", 1)[-1])
    data, _ = t.store.get(written)
    import pyarrow as pa

    table = pq.read_table(pa.BufferReader(data))
    pairs = list(zip(table.column("file_path").to_pylist(), table.column("pos").to_pylist(),
                     strict=True))
    assert pairs == sorted(pairs)
    folder = folder_for(t.store, t.prefix)
    expected = sorted((folder.uri(f.path), int(p)) for f in touched for p in f.tombstones)
    assert pairs == expected
    assert entry.record_count == len(pairs)
    _every_version_reads_the_same(t, s3)


def test_a_position_delete_file_keeps_paths_as_a_dictionary_and_positions_as_deltas(tmp_path):
    """DuckDB loads delete files on one thread before it reads any data: nothing to
    decompress, and positions stored as deltas, a fraction of their plain size."""
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    _fill(t)
    t.delete([("year", "<", 2015)])
    (written,) = _objects(t, "metadata/deletes/")
    import pyarrow as pa

    data, _ = t.store.get(written)
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    positions = meta.num_rows
    assert positions >= 300
    pos_bytes = 0
    for g in range(meta.num_row_groups):
        path, pos = meta.row_group(g).column(0), meta.row_group(g).column(1)
        assert (path.path_in_schema, pos.path_in_schema) == ("file_path", "pos")
        assert path.compression == pos.compression == "UNCOMPRESSED"
        assert path.has_dictionary_page and "RLE_DICTIONARY" in path.encodings
        assert not pos.has_dictionary_page and "DELTA_BINARY_PACKED" in pos.encodings
        pos_bytes += pos.total_compressed_size
    assert pos_bytes < 2 * positions  # plain int64 positions would take 8 bytes each
    _every_version_reads_the_same(t, None)


def test_later_commits_reuse_earlier_delete_files_until_their_files_are_gone(where):
    uri, options, s3 = where
    t = catalog.connect(uri, table_options=OPTS, **options).create_table("docs", docs_schema())
    _fill(t)
    t.delete([("year", "<", 2008)])
    first = {m.path: m.last_modified for m in t.store.list(f"{t.prefix}/metadata/deletes/")}
    t.append(make_docs(40, seed=9))                 # no tombstone changes: nothing written
    assert {m.path: m.last_modified
            for m in t.store.list(f"{t.prefix}/metadata/deletes/")} == first
    one = next(f for f in t.snapshot().files if f.tombstones)
    t.delete([("_id", "=", one.id_max)] if one.id_max not in one.tombstones
             else [("_id", "=", one.id_min)])
    # The new file claims one data file; the first still holds the others and stays listed.
    listed = {e.file_path.rsplit("/", 1)[-1] for e in _delete_entries(t)}
    assert len(listed) == 2 and {p.rsplit("/", 1)[-1] for p in first} <= listed
    assert {m.path: m.last_modified for m in t.store.list(f"{t.prefix}/metadata/deletes/")
            if m.path in first} == first
    t.update([("year", "=", 2015)], {"title": "updated"})
    t.optimize(target_rows=10_000)
    # Optimize replaced every data file: no delete file is listed any more.
    assert _delete_entries(t) == []
    summary = _state(t)["snapshots"][-1]["summary"]
    assert summary["total-delete-files"] == "0" and int(summary["removed-delete-files"]) >= 2
    _every_version_reads_the_same(t, s3)
    t.gc(grace_seconds=0)
    folder = folder_for(t.store, t.prefix)
    present = {m.path[len(t.prefix) + 1:] for m in t.store.list(f"{t.prefix}/")}
    assert referenced(folder, _state(t)) <= present
    assert not _objects(t, "metadata/deletes/")
    _every_version_reads_the_same(t, s3)


def test_many_deleting_commits_keep_few_delete_files_listed(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    _fill(t)
    for i in range(deletes.MAX_DELETE_FILES + 4):
        files = [f for f in t.snapshot().files if f.live_rows > 1]
        f = files[i % len(files)]
        alive = next(r for r in range(f.id_min, f.id_max + 1) if r - f.id_min
                     not in f.tombstones)
        t.delete([("_id", "=", alive)])
        listed = {e.file_path for e in _delete_entries(t)}
        assert len(listed) <= deletes.MAX_DELETE_FILES
    _every_version_reads_the_same(t, None)


def test_files_appended_after_a_delete_keep_all_their_rows(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table("docs", docs_schema())
    t.append(make_docs(150, seed=1))
    t.delete([("year", "<", 2010)])
    t.append(make_docs(150, seed=2))        # newer data files, same positions, no deletes
    for e in _delete_entries(t):
        assert e.lower_bounds[deletes.FILE_PATH_ID] <= e.upper_bounds[deletes.FILE_PATH_ID]
    _every_version_reads_the_same(t, None)


# -- format version 3: deletion vectors -----------------------------------------------------


def test_format_3_tables_read_the_same_at_every_version_through_optimize_and_gc(where):
    uri, options, s3 = where
    t = catalog.connect(uri, table_options=OPTS, **options).create_table(
        "docs", docs_schema(), iceberg_version=3)
    _fill(t)
    t.delete([("year", "<", 2006)])                   # vectors for many files, one Puffin file
    t.update([("year", "=", 2010)], {"title": "rewritten"})
    t.append(make_docs(60, seed=7))
    t.delete([("year", ">", 2022)])
    assert _state(t)["format-version"] == 3
    _every_version_reads_the_same(t, s3)
    t.optimize(target_rows=300)
    t.delete([("year", "=", 2015)])
    _every_version_reads_the_same(t, s3)
    t.gc(grace_seconds=0)
    folder = folder_for(t.store, t.prefix)
    present = {m.path[len(t.prefix) + 1:] for m in t.store.list(f"{t.prefix}/")}
    tasks = StaticTable.from_metadata(folder.location, pyiceberg_properties(s3)).scan().plan_files()
    used = referenced(folder, _state(t)) | {
        folder.rel(f.file_path) for task in tasks for f in (task.file, *task.delete_files)}
    assert used <= present
    _every_version_reads_the_same(t, s3)


def test_format_3_lists_one_vector_per_data_file_matching_its_puffin_blob(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table(
        "docs", docs_schema(), iceberg_version=3)
    _fill(t)
    t.delete([("year", "<", 2008)])
    t.update([("year", "=", 2012)], {"body": "changed"})
    folder = folder_for(t.store, t.prefix)
    tombstones = {folder.uri(f.path): f.tombstones for f in t.snapshot().files if f.tombstones}
    entries = _delete_entries(t)
    assert sorted(e[deletes.REFERENCED_DATA_FILE] for e in entries) == sorted(tombstones)
    assert len({e.file_path for e in entries}) == 1       # one Puffin file per snapshot
    data, _ = t.store.get(folder.path(folder.rel(entries[0].file_path)))
    (size,) = struct.unpack("<i", data[-12:-8])
    footer = json.loads(data[-12 - size:-12])
    blobs = {b["properties"]["referenced-data-file"]: b for b in footer["blobs"]}
    for e in entries:
        target = e[deletes.REFERENCED_DATA_FILE]
        assert e.content == 1 and e.file_format == "PUFFIN"
        assert e.file_size_in_bytes == len(data)
        blob = blobs[target]
        assert (blob["type"], blob["snapshot-id"], blob["sequence-number"]) == (
            "deletion-vector-v1", -1, -1)
        assert (e[deletes.CONTENT_OFFSET], e[deletes.CONTENT_SIZE]) == (
            blob["offset"], blob["length"])
        raw = data[blob["offset"]:blob["offset"] + blob["length"]]
        assert puffin.read_vector(raw) == tombstones[target]
        assert e.record_count == len(tombstones[target]) == int(
            blob["properties"]["cardinality"])
        # The vector is the portable 64-bit roaring format pyroaring's BitMap64 reads.
        assert set(BitMap64.deserialize(raw[8:-4])) == set(tombstones[target])


def test_format_3_metadata_carries_row_lineage_that_stays_with_each_data_file(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table(
        "docs", docs_schema(), iceberg_version=3)
    from quiver.supertable.iceberg.snapshot import MAX_MANIFESTS

    seen: dict[str, int] = {}
    for seed in range(MAX_MANIFESTS + 3):         # enough appends to merge manifests
        t.append(make_docs(120, seed=seed))
        t.delete([("year", "=", 2000 + seed)])
        doc = _state(t)
        snap = doc["snapshots"][-1]
        folder = folder_for(t.store, t.prefix)
        ids = {}
        for mf in read_manifest_list(_io(folder), snap["manifest-list"]):
            if mf.content != 0:
                continue
            running = mf[15]
            assert running is not None, "every data manifest has a first row id"
            with AvroFile[ManifestEntry](_io(folder).new_input(mf.manifest_path),
                                         MANIFEST_ENTRY_SCHEMAS[3],
                                         read_types={-1: ManifestEntry, 2: DataFile}) as r:
                for e in r:
                    own = e.data_file[16]
                    if own is None:
                        ids[e.data_file.file_path] = (running, e.data_file.record_count)
                        running += e.data_file.record_count
                    else:
                        assert e.status == 0
                        ids[e.data_file.file_path] = (own, e.data_file.record_count)
        # A data file keeps its first row id across snapshots; ranges never overlap.
        for path, (first, _) in ids.items():
            assert seen.setdefault(path, first) == first
        spans = sorted(ids.values())
        assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(spans))
        assert doc["next-row-id"] >= max(a + n for a, n in spans)
        assert snap["first-row-id"] + snap["added-rows"] == doc["next-row-id"]
    _every_version_reads_the_same(t, None)


def test_a_failed_format_3_write_keeps_the_commit_and_the_next_commit_repairs_it(tmp_path):
    t = catalog.connect(str(tmp_path), table_options=OPTS).create_table(
        "docs", docs_schema(), iceberg_version=3)
    _fill(t)
    faulty = FaultyStore(t.store)
    broken = Table.open(faulty, t.prefix, "docs", OPTS)
    faulty.add(Rule("put", path="*/metadata/*"))
    before = broken.count()
    broken.delete([("year", "<", 2010)])                # Quiver commits, Iceberg fails
    assert broken.count() < before
    assert _state(t)["current-snapshot-id"] == broken.version - 1
    faulty.rules.clear()
    broken.delete([("year", ">", 2020)])
    assert _state(t)["current-snapshot-id"] == broken.version
    _every_version_reads_the_same(t, None)


def test_the_iceberg_version_is_kept_with_the_table_and_checked(tmp_path):
    conn = catalog.connect(str(tmp_path), table_options=OPTS)
    t = conn.create_table("docs", docs_schema(), iceberg_version=3)
    t.append(make_docs(5))
    reopened = catalog.connect(str(tmp_path), table_options=OPTS).open_table("docs")
    reopened.append(make_docs(5, seed=1))
    assert _state(reopened)["format-version"] == 3
    assert conn.create_table("plain", docs_schema()).snapshot() is not None
    assert _state(conn.open_table("plain"))["format-version"] == 2
    with pytest.raises(TableSchemaError, match="format version"):
        conn.create_table("bad", docs_schema(), iceberg_version=4)


# -- the deletion vector blob ---------------------------------------------------------------


def test_a_vector_blob_is_length_magic_portable_bitmap_and_crc():
    bm = BitMap([0, 3, 70_000, 2**31 + 5])
    blob = puffin.vector_blob(bm)
    (length,) = struct.unpack(">I", blob[:4])
    assert length == len(blob) - 8 and blob[4:8] == bytes([0xD1, 0xD3, 0x39, 0x64])
    assert struct.unpack(">I", blob[-4:])[0] == zlib.crc32(blob[4:-4])
    assert blob[8:-4] == BitMap64(bm).serialize()
    assert puffin.read_vector(blob) == bm
    assert puffin.read_vector(puffin.vector_blob(BitMap())) == BitMap()
    damaged = blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:]
    with pytest.raises(ValueError, match="checksum"):
        puffin.read_vector(damaged)


def test_a_puffin_file_has_magic_blobs_and_an_uncompressed_footer():
    data, blobs = puffin.write([("s3://b/a.parquet", BitMap([1, 2])),
                                ("s3://b/c.parquet", BitMap(range(0, 10_000, 3)))])
    assert data[:4] == b"PFA1" and data[-4:] == b"PFA1" and data[-8:-4] == bytes(4)
    assert [b.offset for b in blobs] == [4, 4 + blobs[0].length]
    assert puffin.read(data) == {"s3://b/a.parquet": BitMap([1, 2]),
                                 "s3://b/c.parquet": BitMap(range(0, 10_000, 3))}
