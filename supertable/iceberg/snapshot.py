"""One table version as an Iceberg snapshot: its delete files, manifests and manifest list.

Each manifest covers the files added in a range of versions (``FileEntry.added_in``;
the range is in its name), data files and delete files in separate manifests. A
manifest whose range holds the same files (and tombstone counts) as in the previous
snapshot is listed again as it is: an append writes one new data manifest, a delete
rewrites only the delete manifests of the ranges it touched. Past ``MAX_MANIFESTS``
manifests of a kind they are merged, so readers open few manifests (each one a reader
opens costs it about as much as a data file): the oldest manifest stays as it is when it
lists at least as many files as all the others, which are merged into a second one;
otherwise all are merged into one. A file is so rewritten a few times over the table's
life, not at every merge.

Tombstones become position delete files (Parquet), one per data file and
tombstone set, named after the data file and the number of rows it has
tombstoned. A file's tombstones only ever grow, so that name fixes the content:
a delete file is written once, when its set first appears, and reused by every
later snapshot until the file gains more tombstones or leaves the table.

Sequence numbers: a snapshot's is its Quiver version. A data file's data
sequence number is the version that added it; its delete file carries the same
number, which is all a position delete needs to apply (data sequence number not
greater than the delete's), and keeps rewritten manifests from needing to know
when each delete file was first written. Files with no live row are left out.

Data file entries carry column statistics from the files' Parquet footers (``stats``),
taken over from the previous snapshot's manifests when a file is listed again.
"""

from __future__ import annotations

import io
import re
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    ManifestWriterV2,
    write_manifest_list,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.schema import Schema
from pyiceberg.typedef import Record

from quiver.supertable.errors import ObjectExistsError, ObjectNotFoundError
from quiver.supertable.iceberg import stats
from quiver.supertable.iceberg.folder import METADATA_DIR, Folder
from quiver.supertable.iceberg.io import MemoryOutputFile, StoreFileIO
from quiver.supertable.manifest import FileEntry, Manifest, bitmap_rows

DELETES_DIR = f"{METADATA_DIR}/deletes"
# Field ids the Iceberg spec reserves for the columns of position delete files.
FILE_PATH_ID = 2147483546
POS_ID = 2147483545
_MANIFEST_NAME = re.compile(r"m(\d+)-[0-9a-f]+-(data|deletes)-g(\d+)-(\d+)\.avro$")
_STAT_KEYS = ("column_sizes", "value_counts", "null_value_counts", "nan_value_counts",
              "lower_bounds", "upper_bounds")
# Manifests of one kind a snapshot lists at most before they are merged into one.
MAX_MANIFESTS = 4
_DELETE_SCHEMA = pa.schema([
    pa.field("file_path", pa.string(), nullable=False,
             metadata={b"PARQUET:field_id": str(FILE_PATH_ID).encode()}),
    pa.field("pos", pa.int64(), nullable=False,
             metadata={b"PARQUET:field_id": str(POS_ID).encode()}),
])


@dataclass
class Previous:
    """The snapshot a new one builds on: its version, Quiver manifest and manifest files."""

    version: int
    manifest: Manifest
    manifests: list[ManifestFile]


@dataclass
class Written:
    """A snapshot, ready to be listed in table metadata."""

    entry: dict[str, Any]
    objects: list[str] = field(default_factory=list)
    manifests: list[ManifestFile] = field(default_factory=list)


class _DeleteManifestWriter(ManifestWriterV2):
    """pyiceberg's v2 manifest writer, for a manifest of delete files."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


def group_of(manifest_path: str) -> tuple[str, tuple[int, int]] | None:
    """``(kind, (first, last))``: the kind and ``added_in`` range of a manifest this module
    wrote, from its name."""
    m = _MANIFEST_NAME.search(manifest_path)
    return None if m is None else (m.group(2), (int(m.group(3)), int(m.group(4))))


def delete_file_name(entry: FileEntry) -> str:
    stem = entry.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{DELETES_DIR}/{stem}-{len(entry.tombstones)}.parquet"


def delete_file_bytes(data_uri: str, entry: FileEntry) -> bytes:
    positions = bitmap_rows(entry.tombstones).astype(np.int64)
    table = pa.table([pa.repeat(pa.scalar(data_uri), len(positions)).cast(pa.string()),
                      pa.array(positions)], schema=_DELETE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _data_file(folder: Folder, f: FileEntry, column_stats: dict[str, Any]) -> DataFile:
    return DataFile.from_args(
        content=DataFileContent.DATA, file_path=folder.uri(f.path),
        file_format=FileFormat.PARQUET, partition=Record(), record_count=f.rows,
        file_size_in_bytes=f.size, sort_order_id=None, spec_id=0, equality_ids=None,
        key_metadata=None, **column_stats)


def _listed_stats(folder: Folder, manifests: list[ManifestFile], files: list[FileEntry]
                  ) -> dict[str, dict[str, Any]]:
    """Column statistics of the data files ``manifests`` list, by file URI (none are read
    when this process already knows those of every file in ``files``)."""
    if all(stats.remembered(folder.uri(f.path)) is not None for f in files):
        return {}
    io = StoreFileIO(folder.store, folder.location, folder.prefix)
    out: dict[str, dict[str, Any]] = {}
    for mf in manifests:
        for entry in mf.fetch_manifest_entry(io, discard_deleted=True):
            df = entry.data_file
            if df.lower_bounds or df.value_counts:
                out[df.file_path] = {key: dict(getattr(df, key) or {}) for key in _STAT_KEYS}
    return out


def _stats_of(folder: Folder, planner: stats.Planner, f: FileEntry,
              listed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    uri = folder.uri(f.path)
    known = stats.remembered(uri) or listed.get(uri)
    if known is None:
        known = stats.file_stats(folder.store, planner, folder.path(f.path), f.size)
    stats.remember(uri, known)
    return known


def _delete_file(folder: Folder, f: FileEntry, size: int) -> DataFile:
    data_uri = folder.uri(f.path).encode()
    positions = bitmap_rows(f.tombstones)
    return DataFile.from_args(
        content=DataFileContent.POSITION_DELETES, file_path=folder.uri(delete_file_name(f)),
        file_format=FileFormat.PARQUET, partition=Record(), record_count=len(positions),
        file_size_in_bytes=size, sort_order_id=None, spec_id=0, equality_ids=None,
        key_metadata=None,
        lower_bounds={FILE_PATH_ID: data_uri, POS_ID: struct.pack("<q", int(positions[0]))},
        upper_bounds={FILE_PATH_ID: data_uri, POS_ID: struct.pack("<q", int(positions[-1]))})


def _store_delete_file(folder: Folder, f: FileEntry, known: bool) -> int:
    """Size of the delete file of ``f``'s tombstones, writing it unless it is there."""
    path = folder.path(delete_file_name(f))
    if known:
        try:
            return folder.store.head(path).size
        except ObjectNotFoundError:
            pass
    data = delete_file_bytes(folder.uri(f.path), f)
    try:
        folder.store.put(path, data, mode="create")
    except ObjectExistsError:
        return folder.store.head(path).size
    return len(data)


def _write_manifest(folder: Folder, schema: Schema, version: int, kind: str,
                    span: tuple[int, int], entries: Iterable[ManifestEntry]) -> ManifestFile:
    name = (f"{METADATA_DIR}/m{version}-{uuid.uuid4().hex[:12]}-{kind}"
            f"-g{span[0]}-{span[1]}.avro")
    out = MemoryOutputFile(folder.uri(name))
    cls = ManifestWriterV2 if kind == "data" else _DeleteManifestWriter
    with cls(UNPARTITIONED_PARTITION_SPEC, schema, out, version, "deflate") as writer:
        for e in entries:
            writer.add_entry(e)
    manifest_file = writer.to_manifest_file()
    folder.store.put(folder.path(name), out.data, mode="create")
    return manifest_file


def _entry(status: ManifestEntryStatus, version: int, seq: int, data_file: DataFile
           ) -> ManifestEntry:
    return ManifestEntry.from_args(status=status, snapshot_id=version, sequence_number=seq,
                                   file_sequence_number=seq, data_file=data_file)


def _ranges(manifests: list[ManifestFile], kind: str) -> dict[tuple[int, int], ManifestFile]:
    out = {}
    for mf in manifests:
        key = group_of(mf.manifest_path)
        if key is not None and key[0] == kind:
            out[key[1]] = mf
    return out


def _plan(files: list[FileEntry], before: list[FileEntry],
          previous: dict[tuple[int, int], ManifestFile], key
          ) -> tuple[list[ManifestFile], list[tuple[tuple[int, int], list[FileEntry]]]]:
    """Which previous manifests of one kind stay, and which ranges of files to write anew.

    A previous manifest stays when the files of its ``added_in`` range are as they were.
    Files outside every kept range are written in one manifest per range; past
    ``MAX_MANIFESTS`` manifests, they are merged (see the module notes).
    """
    kept: list[ManifestFile] = []
    kept_ranges: list[tuple[int, int]] = []
    for (lo, hi), mf in sorted(previous.items()):
        now = sorted(key(f) for f in files if lo <= f.added_in <= hi)
        then = sorted(key(f) for f in before if lo <= f.added_in <= hi)
        if now and now == then:
            kept.append(mf)
            kept_ranges.append((lo, hi))
    rest = [f for f in files if not any(lo <= f.added_in <= hi for lo, hi in kept_ranges)]
    fresh: list[tuple[tuple[int, int], list[FileEntry]]] = []
    if rest:
        # Files of previous ranges that changed are rewritten with their whole old range.
        spans = [(lo, hi) for lo, hi in previous
                 if (lo, hi) not in kept_ranges and any(lo <= f.added_in <= hi for f in rest)]
        for f in rest:
            if not any(lo <= f.added_in <= hi for lo, hi in spans):
                spans.append((f.added_in, f.added_in))
        for lo, hi in sorted(set(spans)):
            fresh.append(((lo, hi), [f for f in rest if lo <= f.added_in <= hi]))
    if len(kept) + len(fresh) > MAX_MANIFESTS:
        if kept:
            # The oldest manifest stays when it is the bigger part: only newer files merge.
            base_lo, base_hi = kept_ranges[0]
            others = [f for f in files if not base_lo <= f.added_in <= base_hi]
            if (others and min(f.added_in for f in others) > base_hi
                    and len(files) - len(others) >= len(others)):
                span = (min(f.added_in for f in others), max(f.added_in for f in others))
                return [kept[0]], [(span, others)]
        lo = min(f.added_in for f in files)
        hi = max(f.added_in for f in files)
        return [], [((lo, hi), list(files))]
    return kept, fresh


def write_snapshot(folder: Folder, schema: Schema, manifest: Manifest,
                   previous: Previous | None) -> Written:
    """Writes the files of ``manifest``'s snapshot and returns its metadata entry."""
    version = manifest.version
    live = [f for f in manifest.files if f.live_rows > 0]
    before = ([f for f in previous.manifest.files if f.live_rows > 0]
              if previous is not None else [])
    old_files = {f.path: f for f in before}
    prior = previous.manifests if previous is not None else []
    written = Written(entry={})
    manifests: list[ManifestFile] = []

    kept, fresh = _plan(live, before, _ranges(prior, "data"), lambda f: f.path)
    manifests += kept
    planner = stats.Planner(schema) if fresh else None
    rewritten = [mf for mf in _ranges(prior, "data").values() if mf not in kept]
    listed = (_listed_stats(folder, rewritten, [f for _, fs in fresh for f in fs])
              if fresh and rewritten else {})
    for span, files in fresh:
        assert planner is not None
        entries = [_entry(ManifestEntryStatus.EXISTING if f.path in old_files
                          else ManifestEntryStatus.ADDED,
                          f.added_in if f.path in old_files else version,
                          f.added_in, _data_file(folder, f, _stats_of(folder, planner, f, listed)))
                   for f in files]
        mf = _write_manifest(folder, schema, version, "data", span, entries)
        manifests.append(mf)
        written.objects.append(folder.rel(mf.manifest_path))

    added_delete_files = added_position_deletes = 0
    dead = [f for f in live if f.tombstones]
    kept, fresh = _plan(dead, [f for f in before if f.tombstones], _ranges(prior, "deletes"),
                        lambda f: (f.path, len(f.tombstones)))
    manifests += kept
    for span, files in fresh:
        entries = []
        for f in files:
            was = old_files.get(f.path)
            known = was is not None and len(was.tombstones) == len(f.tombstones)
            size = _store_delete_file(folder, f, known)
            if not known:
                added_delete_files += 1
                added_position_deletes += len(f.tombstones) - (
                    len(was.tombstones) if was is not None else 0)
                written.objects.append(delete_file_name(f))
            entries.append(_entry(ManifestEntryStatus.EXISTING if known
                                  else ManifestEntryStatus.ADDED,
                                  f.added_in if known else version, f.added_in,
                                  _delete_file(folder, f, size)))
        mf = _write_manifest(folder, schema, version, "deletes", span, entries)
        manifests.append(mf)
        written.objects.append(folder.rel(mf.manifest_path))
    list_name = f"{METADATA_DIR}/snap-{version}-{uuid.uuid4().hex[:12]}.avro"
    out = MemoryOutputFile(folder.uri(list_name))
    parent = previous.version if previous is not None else None
    with write_manifest_list(2, out, version, parent, version, "deflate") as writer:
        writer.add_manifests(manifests)
    folder.store.put(folder.path(list_name), out.data, mode="create")
    written.objects.append(list_name)
    written.manifests = [writer.prepare_manifest(mf) for mf in manifests]

    summary = _summary(manifest, live, old_files, added_delete_files, added_position_deletes,
                       previous)
    written.entry = {
        "snapshot-id": version,
        **({"parent-snapshot-id": parent} if parent is not None else {}),
        "sequence-number": version,
        "timestamp-ms": manifest.created_ms,
        "manifest-list": folder.uri(list_name),
        "summary": summary,
        "schema-id": 0,
    }
    return written


def _summary(manifest: Manifest, live: list[FileEntry],
             old_files: dict[str, FileEntry], added_delete_files: int,
             added_position_deletes: int, previous: Previous | None) -> dict[str, str]:
    paths = {f.path for f in live}
    added = [f for f in live if f.path not in old_files]
    removed = [f for p, f in old_files.items() if p not in paths]
    removed_deletes = sum(1 for f in removed if f.tombstones) + sum(
        1 for f in live if f.tombstones and f.path in old_files
        and old_files[f.path].tombstones
        and len(old_files[f.path].tombstones) != len(f.tombstones))
    if manifest.operation in ("optimize", "index"):
        operation = "replace"
    elif added and not (removed or added_delete_files):
        operation = "append"
    elif not added and (removed or added_delete_files):
        operation = "delete"
    elif added or removed or added_delete_files:
        operation = "overwrite"
    else:
        operation = "append"
    summary = {
        "operation": operation,
        "added-data-files": len(added),
        "deleted-data-files": len(removed),
        "added-records": sum(f.rows for f in added),
        "deleted-records": sum(f.rows for f in removed),
        "added-files-size": sum(f.size for f in added),
        "removed-files-size": sum(f.size for f in removed),
        "added-delete-files": added_delete_files,
        "removed-delete-files": removed_deletes,
        "added-position-deletes": added_position_deletes,
        "total-records": sum(f.rows for f in live),
        "total-files-size": sum(f.size for f in live),
        "total-data-files": len(live),
        "total-delete-files": sum(1 for f in live if f.tombstones),
        "total-position-deletes": sum(len(f.tombstones) for f in live),
        "total-equality-deletes": 0,
        "quiver.version": manifest.version,
        "quiver.operation": manifest.operation,
        "quiver.live-rows": manifest.num_rows,
    }
    return {k: str(v) for k, v in summary.items()}
