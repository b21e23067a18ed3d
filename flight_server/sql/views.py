"""Versioned views: one DataFusion relation per (table, manifest version, set of files).

A manifest version never changes, so the relation built for it is registered
once and shared by every statement pinned to that version. Each view reads
the live superfiles with the hidden ``_id`` exposed. DataFusion's planning cost
grows with the number of sources a statement scans, so a view has as few as the
storage allows: on a local root one listing source over a private directory of
links to the view's files (files with tombstones in a second one, whose
partition column carries the file number); in memory, one in-memory source with
a partition per file; on S3 one source per file: the file in the root's local
disk cache (read from its memory map) once it is there, else the object itself.
Building a view over S3 files starts copying them into that cache, and a view
that still reads some of them remotely is built again once they have arrived
(the statements already planned on the old one finish on it). Tombstoned rows are
hidden by an anti-join on (file number, ``_id``): per file, because an updated
row keeps its ``_id`` in a newer file. Files without tombstones skip the join.
A statement whose filters let the manifest rule out files gets a view over the
remaining files only, so those files are never opened.

Views of old versions are dropped once a table has more than a few newer ones
and no statement is planning against them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datafusion
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from quiver.flight_server.sql.decoded import DecodedRows
from quiver.supertable.manifest import ID_COLUMN, FileEntry, bitmap_rows
from quiver.supertable.snapshot import Snapshot
from quiver.supertable.table import Table

log = logging.getLogger(__name__)

FILE_COLUMN = "__quiver_file"
# A view's in-memory twin, over decoded rows, is named after it with this suffix.
MEMORY_SUFFIX = "@mem"
# Versions per table whose views stay registered; older ones go once unused.
KEEP_VERSIONS = 4
# Sources reading a remote file's local disk-cache copy are named with this suffix.
DISK_SUFFIX = "@disk"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Version:
    """What one table version registered."""

    key: tuple[str, str, int]
    base: str
    views: set[str] = field(default_factory=set)
    # The view registered for each view name asked for (the newest build of it), and
    # the files it still reads remotely.
    current: dict[str, str] = field(default_factory=dict)
    remote: dict[str, list[int]] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)
    # Sources replaced by their disk-cache twins, still read by older builds of views.
    retired: list[str] = field(default_factory=list)
    # Relations and link directories registered for single views of this version.
    own: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    # Keys of the in-memory live rows of each file (memory roots).
    rows: dict[int, str] = field(default_factory=dict)
    dead: str | None = None
    in_use: int = 0


class _Access:
    """How DataFusion reaches a table's superfiles."""

    def __init__(self, ctx: datafusion.SessionContext, table: Table) -> None:
        store = table.store
        self.kind = getattr(store, "kind", "other")
        self.base_url: str | None = None
        if self.kind == "local":
            root = getattr(store, "local_root", None)
            if root is not None:
                self.base_url = str(root)
        elif self.kind == "s3":
            self.base_url = _register_s3(ctx, store)
        if self.base_url is None:
            self.kind = "memory"
        self.prefix = table.prefix

    def url(self, entry: FileEntry) -> str:
        parts = [p for p in (self.base_url, self.prefix, entry.path) if p]
        return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


_S3_LOCK = threading.Lock()


def _register_s3(ctx: datafusion.SessionContext, store: Any) -> str | None:
    """Gives DataFusion an S3 client with the root's settings; the root's URL, or None
    when the store cannot say what they are."""
    settings = store.s3_settings() if hasattr(store, "s3_settings") else None
    if settings is None:
        log.warning("S3 root %s: settings unavailable; SQL reads rows through the table layer",
                    getattr(store, "uri", "?"))
        return None
    bucket = settings["bucket"]
    s3 = datafusion.object_store.AmazonS3(
        bucket_name=bucket,
        region=settings["region"],
        access_key_id=settings["access_key_id"],
        secret_access_key=settings["secret_access_key"],
        session_token=settings["session_token"],
        endpoint=settings["endpoint"],
        allow_http=settings["allow_http"],
    )
    with _S3_LOCK:
        ctx.register_object_store("s3://", s3, bucket)
    prefix = settings["prefix"]
    return f"s3://{bucket}" + (f"/{prefix}" if prefix else "")


def _digest(parts: Sequence[Any]) -> str:
    return hashlib.sha1(repr(tuple(parts)).encode()).hexdigest()[:12]


class ViewRegistry:
    """The versioned views registered in one SessionContext. Thread-safe."""

    def __init__(self, ctx: datafusion.SessionContext, decoded: DecodedRows | None = None
                 ) -> None:
        self.ctx = ctx
        self.decoded = decoded
        self._lock = threading.RLock()
        self._versions: dict[tuple[str, str, int], _Version] = {}
        self._access: dict[tuple[str, str], _Access] = {}
        # Source tables by identity, shared by the versions that still hold the file.
        self._source_refs: dict[str, int] = {}
        # Live rows of files on memory roots, shared the same way.
        self._rows: dict[str, pa.Table] = {}
        self._row_refs: dict[str, int] = {}
        self._links: str | None = None
        self._links_ok = True

    # -- public --------------------------------------------------------------------------

    def acquire(self, table: Table, snap: Snapshot,
                files: Sequence[FileEntry] | None = None) -> str:
        """The name of a view over ``files`` (default: every live file) of ``snap``; the
        version stays registered until ``release`` is called with the same snapshot."""
        with self._lock:
            ver = self._version(table, snap)
            ver.in_use += 1
            try:
                live = [k for k, f in enumerate(snap.files) if f.live_rows > 0]
                if files is None:
                    chosen = live
                else:
                    wanted = {f.path for f in files}
                    chosen = [k for k in live if snap.files[k].path in wanted]
                name = ver.base if chosen == live else f"{ver.base}@{_digest(chosen)}"
                in_memory = self._decoded_view(table, snap, ver, name, chosen)
                if in_memory is not None:
                    return in_memory
                built = ver.current.get(name)
                if built is None or self._arrived(snap, ver.remote.get(name, ())):
                    built = self._create_view(table, snap, ver, name, chosen)
                return built
            except BaseException:
                ver.in_use -= 1
                raise

    def release(self, table: Table, snap: Snapshot) -> None:
        with self._lock:
            ver = self._versions.get(self._key(table, snap))
            if ver is not None:
                ver.in_use -= 1
            self._evict(table.name)

    def resident(self, table: Table, snap: Snapshot) -> bool:
        """Whether a scan of every live file of ``snap`` reads rows held in memory."""
        if self._access_for(table, snap).kind == "memory":
            return True
        if self.decoded is None:
            return False
        uuid = snap.manifest.table_uuid
        return all(self.decoded.get((uuid, f.path, len(f.tombstones))) is not None
                   for f in snap.files if f.live_rows > 0)

    def registered_views(self) -> list[str]:
        with self._lock:
            return sorted(v for ver in self._versions.values() for v in ver.views)

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _key(table: Table, snap: Snapshot) -> tuple[str, str, int]:
        return (table.name, snap.manifest.table_uuid, snap.version)

    def _version(self, table: Table, snap: Snapshot) -> _Version:
        key = self._key(table, snap)
        ver = self._versions.get(key)
        if ver is None:
            # DataFusion folds registered names to lower case; the uuid keeps them apart.
            ver = _Version(key, f"{table.name.lower()}@{key[1][:8]}@v{snap.version}")
            self._versions[key] = ver
        return ver

    def _access_for(self, table: Table, snap: Snapshot) -> _Access:
        akey = (table.name, snap.manifest.table_uuid)
        acc = self._access.get(akey)
        if acc is None or acc.prefix != table.prefix:
            acc = _Access(self.ctx, table)
            self._access[akey] = acc
        return acc

    @staticmethod
    def _arrived(snap: Snapshot, remote: Sequence[int]) -> bool:
        """Whether any of the files ``remote`` now has a local disk-cache copy."""
        return any(snap.pool.local_copy(snap.files[k]) is not None for k in remote)

    def _source(self, table: Table, snap: Snapshot, ver: _Version, k: int) -> str:
        """A source over the one file ``k``, shared by the versions that hold it: the
        file's disk-cache copy when it has one, else the file where it is stored."""
        current = ver.sources.get(k)
        if current is not None and current.endswith(DISK_SUFFIX):
            return current
        entry = snap.files[k]
        acc = self._access_for(table, snap)
        local = snap.pool.local_copy(entry) if acc.kind == "s3" else None
        if current is not None and local is None:
            return current
        stem = entry.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        name = f"{table.name.lower()}@{ver.key[1][:8]}#{stem}"
        if local is not None:
            name += DISK_SUFFIX
        if name not in self._source_refs:
            if local is not None:
                self.ctx.register_dataset(name, _mapped_dataset(local, snap.manifest.schema))
            else:
                self.ctx.register_parquet(name, acc.url(entry),
                                          schema=_scan_schema(snap.manifest.schema),
                                          file_extension="")
            self._source_refs[name] = 0
        self._source_refs[name] += 1
        if current is not None:
            ver.retired.append(current)
        ver.sources[k] = name
        return name

    def _dead(self, snap: Snapshot, ver: _Version) -> str:
        if ver.dead is not None:
            return ver.dead
        nums, ids = [], []
        for k, f in enumerate(snap.files):
            if f.tombstones and f.live_rows > 0:
                gone = snap.ids_of(f, bitmap_rows(f.tombstones).astype(np.int64))
                ids.append(gone)
                nums.append(np.full(len(gone), k, dtype=np.int32))
        data = pa.table({
            FILE_COLUMN: pa.array(np.concatenate(nums) if nums else [], pa.int32()),
            ID_COLUMN: pa.array(np.concatenate(ids) if ids else [], pa.int64()),
        })
        name = f"{ver.base}#dead"
        self.ctx.register_record_batches(name, [data.to_batches() or [
            pa.RecordBatch.from_pylist([], schema=data.schema)]])
        ver.dead = name
        return name

    def _decoded_view(self, table: Table, snap: Snapshot, ver: _Version, name: str,
                      chosen: Sequence[int]) -> str | None:
        """The in-memory twin of view ``name`` once the decoded rows of all its files are
        at hand (registering it on first use); None until then, having asked for the
        missing files to be decoded when the table fits the memory budget."""
        if self.decoded is None or self._access_for(table, snap).kind == "memory":
            return None
        twin = f"{name}{MEMORY_SUFFIX}"
        if twin in ver.views:
            return twin
        if not self.decoded.admits(sum(f.size for f in snap.files if f.live_rows > 0)):
            return None
        visible = pa.schema([*snap.schema, snap.manifest.schema.field(ID_COLUMN)])
        uuid = snap.manifest.table_uuid
        parts, missing = [], False
        for k in chosen:
            entry = snap.files[k]
            key = (uuid, entry.path, len(entry.tombstones))
            rows = self.decoded.get(key)
            if rows is None:
                missing = True
                self.decoded.schedule(key, functools.partial(_visible_rows, snap, entry,
                                                             visible))
            elif rows.num_rows:
                parts.append(rows.to_batches())
        if missing:
            return None
        short = _short_strings(parts, visible)
        if short:
            parts = [[b.cast(short) for b in batches] for batches in parts]
            visible = short
        self.ctx.register_record_batches(
            twin, parts or [[pa.RecordBatch.from_pylist([], schema=visible)]])
        ver.views.add(twin)
        log.debug("registered in-memory view %s over %d file(s)", twin, len(chosen))
        return twin

    def _create_view(self, table: Table, snap: Snapshot, ver: _Version, name: str,
                     chosen: Sequence[int]) -> str:
        """Registers (a new build of) view ``name``; the name it is registered under."""
        built = name if name not in ver.current else f"{name}@{len(ver.views)}"
        ver.current[name] = built
        ver.remote.pop(name, None)
        self._register_view(table, snap, ver, built, chosen)
        ver.views.add(built)
        acc = self._access_for(table, snap)
        if acc.kind == "s3":
            remote = [k for k in chosen if not ver.sources[k].endswith(DISK_SUFFIX)]
            if remote:
                ver.remote[name] = remote
        log.debug("registered view %s over %d file(s)", built, len(chosen))
        return built

    def _register_view(self, table: Table, snap: Snapshot, ver: _Version, name: str,
                       chosen: Sequence[int]) -> None:
        schema = snap.manifest.schema
        visible = pa.schema([*snap.schema, schema.field(ID_COLUMN)])
        if not chosen:
            self.ctx.register_record_batches(name, [[pa.RecordBatch.from_pylist(
                [], schema=visible)]])
            return
        acc = self._access_for(table, snap)
        if acc.kind == "memory":
            self._memory_view(snap, ver, name, chosen, visible)
            return
        cols = ", ".join(quote(c) for c in visible.names)
        clean = [k for k in chosen if not snap.files[k].tombstones]
        dirty = [k for k in chosen if snap.files[k].tombstones]
        parts: list[str] = []
        linked = None
        if acc.kind == "local":
            linked = self._linked_parts(table, snap, ver, name, clean, dirty, cols)
        if linked is not None:
            parts = linked
        else:
            dirty_parts = []
            for k in chosen:
                src = quote(self._source(table, snap, ver, k))
                if snap.files[k].tombstones:
                    dirty_parts.append(
                        f"SELECT {cols}, CAST({k} AS INT) AS {FILE_COLUMN} FROM {src}")
                else:
                    parts.append(f"SELECT {cols} FROM {src}")
            if dirty_parts:
                parts.append(self._anti_join(snap, ver, cols,
                                             f"({' UNION ALL '.join(dirty_parts)})"))
        self.ctx.register_view(name, self.ctx.sql(" UNION ALL ".join(parts)))

    def _anti_join(self, snap: Snapshot, ver: _Version, cols: str, rows: str) -> str:
        dead = quote(self._dead(snap, ver))
        return (f"SELECT {cols} FROM {rows} AS x WHERE NOT EXISTS "
                f"(SELECT 1 FROM {dead} AS d WHERE d.{FILE_COLUMN} = x.{FILE_COLUMN} "
                f"AND d.{ID_COLUMN} = x.{ID_COLUMN})")

    def _link_root(self) -> str | None:
        if self._links is None and self._links_ok:
            try:
                self._links = tempfile.mkdtemp(prefix="quiver-sql-")
            except OSError as exc:
                log.info("no directory for file links (%s); one source per file", exc)
                self._links_ok = False
                return None
            self._remove_links = weakref.finalize(self, shutil.rmtree, self._links, True)
        return self._links

    def close(self) -> None:
        """Removes the folder of file links now (it is also removed when the registry is
        collected or the process ends normally)."""
        remove = getattr(self, "_remove_links", None)
        if remove is not None:
            remove()

    def _linked_parts(self, table: Table, snap: Snapshot, ver: _Version, name: str,
                      clean: Sequence[int], dirty: Sequence[int], cols: str
                      ) -> list[str] | None:
        """The view's parts over at most two listing sources (clean files; files with
        tombstones, numbered by a partition column), or None where links cannot be made.
        A listing source is planned as one scan however many files it holds."""
        root = self._link_root()
        if root is None:
            return None
        acc = self._access_for(table, snap)
        folder = os.path.join(root, hashlib.sha1(name.encode()).hexdigest()[:20])
        # A view evicted earlier under the same name had the same files.
        shutil.rmtree(folder, ignore_errors=True)
        try:
            for part, ks in (("clean", clean), ("dirty", dirty)):
                for k in ks:
                    sub = os.path.join(folder, part)
                    if part == "dirty":
                        sub = os.path.join(sub, f"{FILE_COLUMN}={k:06d}")
                    os.makedirs(sub, exist_ok=True)
                    os.symlink(os.path.abspath(acc.url(snap.files[k])),
                               os.path.join(sub, f"f{k:06d}.parquet"))
        except OSError as exc:
            log.info("cannot link superfiles (%s); one source per file", exc)
            self._links_ok = False
            shutil.rmtree(folder, ignore_errors=True)
            return None
        ver.dirs.append(folder)
        parts = []
        for part, ks in (("clean", clean), ("dirty", dirty)):
            if not ks:
                continue
            src = f"{name}#{part}"
            self.ctx.register_parquet(
                src, os.path.join(folder, part), schema=_scan_schema(snap.manifest.schema),
                file_extension=".parquet",
                table_partition_cols=[(FILE_COLUMN, pa.int32())] if part == "dirty" else None)
            ver.own.append(src)
            if part == "clean":
                parts.append(f"SELECT {cols} FROM {quote(src)}")
            else:
                parts.append(self._anti_join(snap, ver, cols, quote(src)))
        return parts

    def _memory_view(self, snap: Snapshot, ver: _Version, name: str, chosen: Sequence[int],
                     visible: pa.Schema) -> None:
        """One in-memory source, a partition per file, over the files' live rows (kept
        once however many versions and views share the file)."""
        partitions = []
        for k in chosen:
            key = ver.rows.get(k)
            if key is None:
                entry = snap.files[k]
                stem = entry.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                key = f"{ver.key[1]}#{stem}#{len(entry.tombstones)}"
                if key not in self._rows:
                    self._rows[key] = _visible_rows(snap, entry, visible)
                    self._row_refs[key] = 0
                self._row_refs[key] += 1
                ver.rows[k] = key
            batches = self._rows[key].to_batches()
            if batches:
                partitions.append(batches)
        self.ctx.register_record_batches(
            name, partitions or [[pa.RecordBatch.from_pylist([], schema=visible)]])

    def _evict(self, table_name: str) -> None:
        # Insertion order: the versions first pinned longest ago go first.
        mine = [k for k in self._versions if k[0] == table_name]
        for key in mine[:-KEEP_VERSIONS]:
            ver = self._versions[key]
            if ver.in_use > 0:
                continue
            for view in ver.views:
                self.ctx.deregister_table(view)
            for src in ver.own:
                self.ctx.deregister_table(src)
            for folder in ver.dirs:
                shutil.rmtree(folder, ignore_errors=True)
            if ver.dead is not None:
                self.ctx.deregister_table(ver.dead)
            for src in [*ver.sources.values(), *ver.retired]:
                self._source_refs[src] -= 1
                if self._source_refs[src] == 0:
                    del self._source_refs[src]
                    self.ctx.deregister_table(src)
            for rows in ver.rows.values():
                self._row_refs[rows] -= 1
                if self._row_refs[rows] == 0:
                    del self._row_refs[rows]
                    del self._rows[rows]
            del self._versions[key]


def _mapped_dataset(data: memoryview, schema: pa.Schema) -> pads.Dataset:
    """A dataset over one superfile's bytes in memory (here, a disk-cache copy's memory
    map, which the dataset keeps alive). Read with the plain types: pyarrow's scanner
    cannot filter view-typed columns."""
    fmt = pads.ParquetFileFormat()
    return pads.FileSystemDataset([fmt.make_fragment(pa.py_buffer(data))], schema, fmt)


def _scan_schema(schema: pa.Schema) -> pa.Schema:
    """The schema Parquet sources are read with: strings and binaries as view types,
    which DataFusion filters, groups and joins faster (the engine casts results back)."""
    # Large strings stay as declared: the engine casts views back to the plain types.
    views = {pa.string(): pa.string_view(), pa.binary(): pa.binary_view()}
    return pa.schema([f.with_type(views.get(f.type, f.type)) for f in schema], schema.metadata)


# String columns whose values average at most this many bytes are held as views in an
# in-memory twin: a view that short is stored inline, so grouping and comparing run on
# fixed-width values (measured 30% faster GROUP BY), while longer text stays plain, which
# results are sent as without a copy.
SHORT_STRING_BYTES = 12


def _short_strings(parts: list[list[pa.RecordBatch]], schema: pa.Schema) -> pa.Schema | None:
    """``schema`` with its short string columns as views; None when it has none."""
    fields = list(schema)
    changed = False
    for i, f in enumerate(fields):
        if f.type != pa.string():
            continue
        rows = sum(b.num_rows for batches in parts for b in batches)
        chars = sum(b.column(i).buffers()[2].size if b.column(i).buffers()[2] else 0
                    for batches in parts for b in batches)
        if rows and chars <= SHORT_STRING_BYTES * rows:
            fields[i] = f.with_type(pa.string_view())
            changed = True
    return pa.schema(fields, schema.metadata) if changed else None


def _visible_rows(snap: Snapshot, entry: FileEntry, visible: pa.Schema) -> pa.Table:
    """A file's live rows as a view shows them, in one schema for every file (nested field
    names included, which ``Schema.equals`` does not compare)."""
    return _live_rows(snap, entry).select(visible.names).cast(visible).combine_chunks()


def _live_rows(snap: Snapshot, entry: FileEntry) -> pa.Table:
    names = [ID_COLUMN, *snap.schema.names]
    data = snap.conform(snap.reader(entry).read_table(names))
    if entry.tombstones:
        keep = np.ones(entry.rows, dtype=bool)
        keep[bitmap_rows(entry.tombstones)] = False
        data = data.filter(pa.array(keep))
    return data
