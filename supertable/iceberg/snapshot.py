"""One table version as an Iceberg snapshot: its delete files, manifests and manifest list.

Each manifest covers the files added in a range of versions (``FileEntry.added_in`` for
data files, the version that wrote them for delete files; the range is in its name),
data files and delete files in separate manifests. A manifest whose range holds the
same files as in the previous snapshot is listed again as it is: an append writes one
new data manifest, a delete rewrites only the delete manifests of the ranges it touched.
Past ``MAX_MANIFESTS`` manifests of a kind they are merged, so readers open few
manifests (each one a reader opens costs it about as much as a data file): the oldest
manifest stays as it is when it lists at least as many files as all the others, which
are merged into a second one; otherwise all are merged into one. A file is so rewritten
a few times over the table's life, not at every merge.

Tombstones become delete files as ``deletes`` plans them: one Parquet position delete
file per commit that changed tombstones (format version 2), or one Puffin file of
deletion vectors per such commit (format version 3).

Sequence numbers: a snapshot's is its Quiver version. A data file's data sequence
number is the version that added it; a delete file's is the version that wrote it.
Files with no live row are left out.

Format version 3 adds row lineage: the manifest list gives each data manifest written
for this snapshot a ``first_row_id`` from the table's ``next-row-id``, advanced by the
rows of its files that inherit an id (added files, and files whose id is not known);
a data file listed again in a rewritten manifest keeps the id it inherited, written
out. The snapshot records ``first-row-id`` and ``added-rows``.

Data file entries carry column statistics from the files' Parquet footers (``stats``),
taken over from the previous snapshot's manifests when a file is listed again.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from copy import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from pyiceberg.avro.file import AvroFile, AvroOutputFile
from pyiceberg.manifest import (
    MANIFEST_ENTRY_SCHEMAS,
    MANIFEST_LIST_FILE_SCHEMAS,
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    ManifestListWriterV2,
    ManifestWriterV2,
    PartitionFieldSummary,
    data_file_with_partition,
    manifest_entry_schema_with_data_file,
    write_manifest_list,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.schema import Schema
from pyiceberg.typedef import Record

from quiver.supertable.iceberg import deletes, stats
from quiver.supertable.iceberg.folder import METADATA_DIR, Folder
from quiver.supertable.iceberg.io import MemoryOutputFile, StoreFileIO
from quiver.supertable.manifest import FileEntry, Manifest

_MANIFEST_NAME = re.compile(r"m(\d+)-[0-9a-f]+-(data|deletes)-g(\d+)-(\d+)\.avro$")
_STAT_KEYS = ("column_sizes", "value_counts", "null_value_counts", "nan_value_counts",
              "lower_bounds", "upper_bounds")
# Manifests of one kind a snapshot lists at most before they are merged into one.
MAX_MANIFESTS = 4
# Positions of row-lineage fields in pyiceberg's version-3 records.
_DATA_FIRST_ROW_ID = 16
_LIST_FIRST_ROW_ID = 15
FORMAT_PROPERTY = "iceberg.format-version"
FORMATS = (2, 3)


def format_of(manifest: Manifest) -> int:
    """The Iceberg format version the table asked for when it was created (2 unless)."""
    raw = manifest.properties.get(FORMAT_PROPERTY, "2")
    return int(raw) if str(raw).isdigit() and int(raw) in FORMATS else 2


@dataclass
class Previous:
    """The snapshot a new one builds on: its version, Quiver manifest and manifest files,
    and its delete entries when this process wrote it."""

    version: int
    manifest: Manifest
    manifests: list[ManifestFile]
    deletes: list[deletes.Listed] | None = None


@dataclass
class Written:
    """A snapshot, ready to be listed in table metadata."""

    entry: dict[str, Any]
    objects: list[str] = field(default_factory=list)
    manifests: list[ManifestFile] = field(default_factory=list)
    deletes: list[deletes.Listed] = field(default_factory=list)
    next_row_id: int = 0


class _Writer(ManifestWriterV2):
    """pyiceberg's v2 manifest writer, for data or delete manifests of format 2 or 3, with
    extra key-value metadata."""

    def __init__(self, fmt: int, kind: str, extra: dict[str, str], *args: Any) -> None:
        super().__init__(*args)
        if fmt not in (2, 3):
            raise ValueError(f"Iceberg format version {fmt} is not written here")
        self._fmt: Literal[2, 3] = 2 if fmt == 2 else 3
        self._kind = kind
        self._extra = extra

    def content(self) -> ManifestContent:
        return ManifestContent.DATA if self._kind == "data" else ManifestContent.DELETES

    @property
    def version(self) -> Any:
        return self._fmt

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "data" if self._kind == "data" else "deletes",
                **self._extra}

    def new_writer(self) -> AvroOutputFile[ManifestEntry]:
        schema = manifest_entry_schema_with_data_file(
            format_version=self._fmt, data_file=data_file_with_partition(
                format_version=self._fmt,
                partition_type=self._spec.partition_type(self._schema)))
        return AvroOutputFile[ManifestEntry](
            output_file=self._output_file, file_schema=schema, record_schema=schema,
            schema_name="manifest_entry", metadata=self._meta)


class _ListWriterV3(ManifestListWriterV2):
    """A format-3 manifest list (pyiceberg 0.12 writes up to format 2)."""

    def __init__(self, output_file: Any, snapshot_id: int, parent: int | None, seq: int,
                 first_row_id: int) -> None:
        super().__init__(output_file, snapshot_id, parent, seq, "deflate")
        self._format_version = 3
        self._meta = {**self._meta, "format-version": "3", "first-row-id": str(first_row_id)}

    def __enter__(self) -> _ListWriterV3:
        self._writer = AvroOutputFile[ManifestFile](
            output_file=self._output_file, record_schema=MANIFEST_LIST_FILE_SCHEMAS[3],
            file_schema=MANIFEST_LIST_FILE_SCHEMAS[3], schema_name="manifest_file",
            metadata=self._meta)
        self._writer.__enter__()
        return self


def read_manifest_list(io: StoreFileIO, location: str) -> list[ManifestFile]:
    """The manifests a manifest list names, with their format-3 fields (``first_row_id``)."""
    with AvroFile[ManifestFile](
        io.new_input(location), MANIFEST_LIST_FILE_SCHEMAS[3],
        read_types={-1: ManifestFile, 508: PartitionFieldSummary},
        read_enums={517: ManifestContent},
    ) as reader:
        return list(reader)


def _first_row_id(mf: ManifestFile) -> int | None:
    return mf[_LIST_FIRST_ROW_ID] if len(mf) > _LIST_FIRST_ROW_ID else None


def _v3(mf: ManifestFile) -> ManifestFile:
    """``mf`` as a format-3 record (one read with the format-2 schema lacks the id)."""
    if len(mf) > _LIST_FIRST_ROW_ID:
        return mf
    return ManifestFile(*mf._data, *([None] * (len(MANIFEST_LIST_FILE_SCHEMAS[3].fields)
                                               - len(mf))))


def group_of(manifest_path: str) -> tuple[str, tuple[int, int]] | None:
    """``(kind, (first, last))``: the kind and ``added_in`` range of a manifest this module
    wrote, from its name."""
    m = _MANIFEST_NAME.search(manifest_path)
    return None if m is None else (m.group(2), (int(m.group(3)), int(m.group(4))))


def _data_file(folder: Folder, f: FileEntry, column_stats: dict[str, Any],
               first_row_id: int | None) -> DataFile:
    return DataFile.from_args(
        _table_format_version=3,
        content=DataFileContent.DATA, file_path=folder.uri(f.path),
        file_format=FileFormat.PARQUET, partition=Record(), record_count=f.rows,
        file_size_in_bytes=f.size, sort_order_id=None, spec_id=0, equality_ids=None,
        key_metadata=None, first_row_id=first_row_id, **column_stats)


@dataclass
class _Listed:
    """What the previous snapshot's rewritten data manifests say of their files."""

    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_row_ids: dict[str, int] = field(default_factory=dict)


def _listed(folder: Folder, manifests: list[ManifestFile], files: list[FileEntry],
            lineage: bool) -> _Listed:
    """Column statistics (and, with ``lineage``, inherited first row ids) of the data files
    ``manifests`` list, by file URI. Statistics are not read when this process already
    knows those of every file in ``files`` and no row ids are needed."""
    out = _Listed()
    if not manifests or (not lineage and all(
            stats.remembered(folder.uri(f.path)) is not None for f in files)):
        return out
    io = StoreFileIO(folder.store, folder.location, folder.prefix)
    for mf in manifests:
        with AvroFile[ManifestEntry](
            io.new_input(mf.manifest_path), MANIFEST_ENTRY_SCHEMAS[3],
            read_types={-1: ManifestEntry, 2: DataFile},
            read_enums={0: ManifestEntryStatus, 101: FileFormat, 134: DataFileContent},
        ) as reader:
            entries = list(reader)
        running = _first_row_id(mf)
        for entry in entries:
            if entry.status == ManifestEntryStatus.DELETED:
                continue
            df = entry.data_file
            if df.lower_bounds or df.value_counts:
                out.stats[df.file_path] = {key: dict(getattr(df, key) or {})
                                           for key in _STAT_KEYS}
            own = df[_DATA_FIRST_ROW_ID]
            if own is not None:
                out.first_row_ids[df.file_path] = int(own)
            elif running is not None:
                out.first_row_ids[df.file_path] = running
                running += int(df.record_count)
    return out


def _stats_of(folder: Folder, planner: stats.Planner, f: FileEntry,
              listed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    uri = folder.uri(f.path)
    known = stats.remembered(uri) or listed.get(uri)
    if known is None:
        known = stats.file_stats(folder.store, planner, folder.path(f.path), f.size)
    stats.remember(uri, known)
    return known


def _write_manifest(folder: Folder, schema: Schema, version: int, fmt: int, kind: str,
                    span: tuple[int, int], entries: Iterable[ManifestEntry],
                    extra: dict[str, str] | None = None) -> ManifestFile:
    name = (f"{METADATA_DIR}/m{version}-{uuid.uuid4().hex[:12]}-{kind}"
            f"-g{span[0]}-{span[1]}.avro")
    out = MemoryOutputFile(folder.uri(name))
    with _Writer(fmt, kind, extra or {}, UNPARTITIONED_PARTITION_SPEC, schema, out, version,
                 "deflate") as writer:
        for e in entries:
            writer.add_entry(e)
    manifest_file = writer.to_manifest_file()
    folder.store.put(folder.path(name), out.data, mode="create")
    return _v3(manifest_file) if fmt >= 3 else manifest_file


def _entry(status: ManifestEntryStatus, version: int, seq: int, data_file: DataFile
           ) -> ManifestEntry:
    return ManifestEntry.from_args(_table_format_version=3, status=status,
                                   snapshot_id=version, sequence_number=seq,
                                   file_sequence_number=seq, data_file=data_file)


def _ranges(manifests: list[ManifestFile], kind: str) -> dict[tuple[int, int], ManifestFile]:
    out = {}
    for mf in manifests:
        key = group_of(mf.manifest_path)
        if key is not None and key[0] == kind:
            out[key[1]] = mf
    return out


def _plan(files: Sequence[Any], before: Sequence[Any],
          previous: dict[tuple[int, int], ManifestFile], key: Callable[[Any], Any]
          ) -> tuple[list[ManifestFile], list[tuple[tuple[int, int], list[Any]]]]:
    """Which previous manifests of one kind stay, and which ranges of files to write anew.

    ``files`` are anything with an ``added_in`` version. A previous manifest stays when
    the files of its range are as they were. Files outside every kept range are written
    in one manifest per range; past ``MAX_MANIFESTS`` manifests, they are merged (see the
    module notes).
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
                   previous: Previous | None, fmt: int = 2, next_row_id: int = 0) -> Written:
    """Writes the files of ``manifest``'s snapshot (in Iceberg format ``fmt``; row ids
    from ``next_row_id`` on) and returns its metadata entry."""
    version = manifest.version
    live = [f for f in manifest.files if f.live_rows > 0]
    before = ([f for f in previous.manifest.files if f.live_rows > 0]
              if previous is not None else [])
    old_files = {f.path: f for f in before}
    prior = previous.manifests if previous is not None else []
    written = Written(entry={})
    data_manifests: list[ManifestFile] = []
    # Rows of each new data manifest that inherit a row id from it (format 3).
    inheriting: dict[str, int] = {}

    kept, fresh = _plan(live, before, _ranges(prior, "data"), lambda f: f.path)
    data_manifests += kept
    planner = stats.Planner(schema) if fresh else None
    rewritten = [mf for mf in _ranges(prior, "data").values() if mf not in kept]
    listed = (_listed(folder, rewritten, [f for _, fs in fresh for f in fs], fmt >= 3)
              if fresh else _Listed())
    for span, files in fresh:
        assert planner is not None
        entries = []
        for f in files:
            uri = folder.uri(f.path)
            existing = f.path in old_files
            first_row_id = listed.first_row_ids.get(uri) if existing and fmt >= 3 else None
            entries.append(_entry(
                ManifestEntryStatus.EXISTING if existing else ManifestEntryStatus.ADDED,
                f.added_in if existing else version, f.added_in,
                _data_file(folder, f, _stats_of(folder, planner, f, listed.stats),
                           first_row_id)))
        mf = _write_manifest(folder, schema, version, fmt, "data", span, entries)
        data_manifests.append(mf)
        inheriting[mf.manifest_path] = sum(e.data_file.record_count for e in entries
                                           if e.data_file[_DATA_FIRST_ROW_ID] is None)
        written.objects.append(folder.rel(mf.manifest_path))

    dead = [f for f in live if f.tombstones]
    prior_deletes = (previous.deletes if previous is not None and previous.deletes is not None
                     else deletes.listed_in(folder, prior) if previous is not None else None)
    planned = deletes.plan(folder, version, dead, prior_deletes, vectors=fmt >= 3)
    written.objects += planned.objects
    written.deletes = planned.listed
    delete_manifests: list[ManifestFile] = []
    kept, fresh = _plan(planned.listed, prior_deletes or [], _ranges(prior, "deletes"),
                        lambda d: d.key)
    delete_manifests += kept
    for span, items in fresh:
        entries = [_entry(ManifestEntryStatus.ADDED if d.added_in == version
                          else ManifestEntryStatus.EXISTING, d.added_in, d.added_in,
                          d.data_file) for d in items]
        mf = _write_manifest(folder, schema, version, fmt, "deletes", span, entries,
                             deletes.claims_meta(items))
        deletes.remember(mf.manifest_path, items)
        delete_manifests.append(mf)
        written.objects.append(folder.rel(mf.manifest_path))

    first_row_id = next_row_id
    if fmt >= 3:
        data_manifests, next_row_id = _assign_row_ids(data_manifests, inheriting, next_row_id)
    manifests = data_manifests + delete_manifests
    list_name = f"{METADATA_DIR}/snap-{version}-{uuid.uuid4().hex[:12]}.avro"
    out = MemoryOutputFile(folder.uri(list_name))
    parent = previous.version if previous is not None else None
    writer = (_ListWriterV3(out, version, parent, version, first_row_id) if fmt >= 3
              else write_manifest_list(2, out, version, parent, version, "deflate"))
    with writer:
        writer.add_manifests(manifests)
    folder.store.put(folder.path(list_name), out.data, mode="create")
    written.objects.append(list_name)
    written.manifests = [writer.prepare_manifest(mf) for mf in manifests]
    written.next_row_id = next_row_id

    summary = _summary(manifest, live, old_files, planned)
    written.entry = {
        "snapshot-id": version,
        **({"parent-snapshot-id": parent} if parent is not None else {}),
        "sequence-number": version,
        "timestamp-ms": manifest.created_ms,
        "manifest-list": folder.uri(list_name),
        "summary": summary,
        "schema-id": 0,
        **({"first-row-id": first_row_id, "added-rows": next_row_id - first_row_id}
           if fmt >= 3 else {}),
    }
    return written


def _assign_row_ids(manifests: list[ManifestFile], inheriting: dict[str, int],
                    next_row_id: int) -> tuple[list[ManifestFile], int]:
    """Gives every data manifest without one a ``first_row_id``, advancing ``next_row_id`` by
    the rows that will inherit an id from it (``inheriting``, for the manifests written
    now; all its rows for an older manifest that never had one)."""
    out = []
    for mf in manifests:
        mf = copy(_v3(mf))
        if _first_row_id(mf) is None:
            mf[_LIST_FIRST_ROW_ID] = next_row_id
            next_row_id += inheriting.get(
                mf.manifest_path,
                (mf.added_rows_count or 0) + (mf.existing_rows_count or 0))
        out.append(mf)
    return out, next_row_id


def _summary(manifest: Manifest, live: list[FileEntry], old_files: dict[str, FileEntry],
             planned: deletes.Plan) -> dict[str, str]:
    paths = {f.path for f in live}
    added = [f for f in live if f.path not in old_files]
    removed = [f for p, f in old_files.items() if p not in paths]
    if manifest.operation in ("optimize", "index"):
        operation = "replace"
    elif added and not (removed or planned.added_files):
        operation = "append"
    elif not added and (removed or planned.added_files):
        operation = "delete"
    elif added or removed or planned.added_files:
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
        "added-delete-files": planned.added_files,
        "removed-delete-files": planned.removed_files,
        "added-position-deletes": planned.added_positions,
        "total-records": sum(f.rows for f in live),
        "total-files-size": sum(f.size for f in live),
        "total-data-files": len(live),
        "total-delete-files": len(planned.listed),
        "total-position-deletes": sum(d.data_file.record_count for d in planned.listed),
        "total-equality-deletes": 0,
        "quiver.version": manifest.version,
        "quiver.operation": manifest.operation,
        "quiver.live-rows": manifest.num_rows,
    }
    return {k: str(v) for k, v in summary.items()}
