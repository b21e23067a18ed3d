"""A table over many superfiles: appends, deletes, updates and searches, durably.

Every change is published as a new immutable manifest through the table's one write
path (``quiver.supertable.transaction``: build, upload, publish, or abandon):
appended rows become new superfiles, deleted rows become tombstones, an
updated row becomes a tombstone plus its new version (keeping its ``_id``) in
the same manifest. Readers pin one manifest and never see a change half
applied. Writers in this process are serialized per table by a lock, and concurrent
appends queued behind it share one commit (group commit); writers in other processes
are serialized by the conditional manifest write. A write computed from an older
snapshot carries what it read and is validated against the commits since
(``quiver.supertable.conflicts``); a bulk append can be staged part by part and published in
one commit (``quiver.supertable.staged``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyroaring import BitMap

from quiver.root_error import QuiverError
from quiver.superfile import IndexSpec, IndexSpecError
from quiver.supertable import commit, iceberg, search
from quiver.supertable.cache import cache_for_store
from quiver.supertable.conflicts import ReadSet, find_conflict
from quiver.supertable.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    TableExistsError,
    TableSchemaError,
    WriteConflictError,
)
from quiver.supertable.gc import GcResult, collect_garbage
from quiver.supertable.indexer import BackgroundIndexer, pending_files
from quiver.supertable.maintain import Maintainer
from quiver.supertable.manifest import (
    ID_COLUMN,
    FileEntry,
    Manifest,
    bitmap_rows,
    manifest_path,
)
from quiver.supertable.optimize import OptimizeResult, optimize
from quiver.supertable.options import TableOptions, staleness_allowed
from quiver.supertable.readers import ReaderPool
from quiver.supertable.snapshot import Filter, Snapshot
from quiver.supertable.store import ObjectStore
from quiver.supertable.transaction import BuiltFile, Committer, token_count

log = logging.getLogger(__name__)

_ADVANCE_LOCK = threading.Lock()




@dataclass(frozen=True)
class CommitResult:
    """What a write published."""

    version: int | None
    rows: int
    files_added: int = 0
    files_removed: int = 0


@dataclass
class _Waiter:
    """One caller's rows queued for the next group commit, and how it went."""

    own: list[tuple[pa.Table, str | None, bool]]
    done: bool = False
    result: CommitResult | None = None
    error: BaseException | None = None


class _PartlyApplied(QuiverError):
    """Some batch ids of a commit were committed by another writer meanwhile."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Table:
    """One table under a storage prefix. Safe to share between threads."""

    def __init__(self, store: ObjectStore, prefix: str, name: str, manifest: Manifest,
                 options: TableOptions | None = None) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.name = name
        self.options = options or TableOptions()
        self._manifest = manifest
        self._checked_at = float("-inf")
        self._check_lock = threading.Lock()
        self._pool = ReaderPool(store, self.prefix, cache=cache_for_store(
            store, self.options.cache_dir, self.options.cache_bytes))
        self._search_pool = ThreadPoolExecutor(max_workers=max(1, self.options.search_threads))
        # The one write path (shared by every writer of this table in this process); its
        # lock serializes them.
        self._committer = Committer(store, self.prefix, name, self.options,
                                    on_publish=self._published)
        self._buffer: list[tuple[pa.Table, str | None, bool]] = []
        self._buffer_lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._queue_lock = threading.Lock()
        self._indexer = BackgroundIndexer(self)
        self._maintainer = Maintainer(self)
        # Recent manifests by version, for validating writes against the commits after
        # their snapshot (manifests never change once published).
        self._history: dict[int, Manifest] = {}
        self._history_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, store: ObjectStore, prefix: str, name: str, schema: pa.Schema,
               spec: IndexSpec | None = None, options: TableOptions | None = None,
               properties: dict[str, str] | None = None) -> Table:
        """Creates an empty table; ``TableExistsError`` when one is already there.
        ``properties`` are settings kept with every version (``iceberg.format-version``)."""
        if ID_COLUMN in schema.names:
            raise TableSchemaError(f"{ID_COLUMN!r} is reserved for the hidden row id")
        version = (properties or {}).get("iceberg.format-version", "2")
        if str(version) not in ("2", "3"):
            raise TableSchemaError(f"Iceberg format version {version!r} is not one Quiver "
                                   "writes; use 2 (the default) or 3")
        spec = spec if spec is not None else IndexSpec.default_for(schema)
        try:
            spec.validate(schema)
        except IndexSpecError as exc:
            raise TableSchemaError(str(exc)) from None
        # Indexed vectors are stored as float32 whatever float width they arrive in:
        # appends cast to this schema, so stored values match what the index computes with.
        schema = spec.stored_schema(schema)
        full = pa.schema([pa.field(ID_COLUMN, pa.int64(), nullable=False), *schema],
                         metadata=schema.metadata)
        manifest = Manifest(version=1, table_uuid=uuid.uuid4().hex, schema=full, spec=spec,
                            next_id=0, files=(), created_ms=_now_ms(), operation="create",
                            properties=dict(properties or {}))
        path = f"{prefix.strip('/')}/{manifest_path(1)}" if prefix.strip("/") else manifest_path(1)
        try:
            store.put(path, manifest.to_bytes(), mode="create")
        except ObjectExistsError:
            raise TableExistsError(f"table {name!r} already exists") from None
        commit.write_hint(store, prefix.strip("/"), 1)
        iceberg.after_commit(store, prefix.strip("/"), name, manifest)
        return cls(store, prefix, name, manifest, options)

    @classmethod
    def open(cls, store: ObjectStore, prefix: str, name: str,
             options: TableOptions | None = None) -> Table:
        """Opens the latest version, resolving writes a crashed writer left behind."""
        manifest = commit.load_latest(store, prefix.strip("/"), name)
        table = cls(store, prefix, name, manifest, options)
        table.recover(table.options.recovery_age_s)
        iceberg.after_commit(store, table.prefix, name, table._manifest)
        # Log files a process left unfolded (or files left uncompacted) are taken up here.
        table._maintainer.kick()
        return table

    def close(self) -> None:
        self._maintainer.stop(timeout=120.0)
        self._indexer.stop(timeout=120.0)
        self._search_pool.shutdown(wait=False)

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recover(self, older_than_s: float = 0.0) -> int:
        """Rolls back or completes abandoned writes older than ``older_than_s`` seconds."""
        return self._committer.recover(self.refresh(), older_than_s)

    # -- reading -----------------------------------------------------------------------------

    def refresh(self, max_staleness_s: float | None = None) -> Manifest:
        """Loads the newest published version.

        Usually one request: whether the version after the current one exists. Within
        ``max_staleness_s`` (default: the table option, 0 when unset) of the last check, no
        request.
        """
        allowed = ((self.options.max_staleness_s or 0.0)
                   if max_staleness_s is None else max_staleness_s)
        if allowed > 0 and time.monotonic() - self._checked_at < allowed:
            return self._manifest
        # Statements arriving together share one check: those that waited for it find it
        # fresh and ask storage nothing. A check counts from its start, so a commit that
        # landed while it ran is seen by the next check, not missed.
        with self._check_lock:
            started = time.monotonic()
            if allowed > 0 and started - self._checked_at < allowed:
                return self._manifest
            current = self._manifest.version
            if commit.version_exists(self.store, self.prefix, current + 1):
                latest = commit.latest_version(self.store, self.prefix)
                if latest > self._manifest.version:
                    self._advance(commit.read_manifest(self.store, self.prefix, latest))
            self._checked_at = started
        return self._manifest

    def _published(self, manifest: Manifest) -> None:
        # Runs under the write lock after each version this table's committer publishes.
        self._advance(manifest)
        iceberg.after_commit(self.store, self.prefix, self.name, manifest)

    def _advance(self, manifest: Manifest) -> None:
        # Threads refresh and commit concurrently; a slower one must not put back an older
        # version than another has already installed.
        with _ADVANCE_LOCK:
            if manifest.version > self._manifest.version:
                self._manifest = manifest

    def snapshot(self, refresh: bool = True) -> Snapshot:
        """A pinned view of the table (the newest version unless ``refresh`` is False)."""
        # Reads, unlike writers' base versions, may use a recent check (see TableOptions).
        manifest = (self.refresh(staleness_allowed(self.store, self.options)) if refresh
                    else self._manifest)
        return Snapshot(manifest, self._pool, self.name)

    def at_version(self, version: int) -> Snapshot:
        return Snapshot(commit.read_manifest(self.store, self.prefix, version), self._pool,
                        self.name)

    @property
    def version(self) -> int:
        return self._manifest.version

    @property
    def schema(self) -> pa.Schema:
        """The user's columns (the hidden ``_id`` is not listed)."""
        return self._manifest.user_schema

    @property
    def spec(self) -> IndexSpec:
        return self._manifest.spec

    @property
    def files_opened(self) -> int:
        return self._pool.opened

    def count(self, filter_: Filter = None) -> int:
        return self.snapshot().count(filter_)

    def to_arrow(self, columns: Sequence[str] | None = None, filter_: Filter = None,
                 with_id: bool = False) -> pa.Table:
        return self.snapshot().to_table(columns, filter_, with_id)

    # -- search ------------------------------------------------------------------------------

    def bm25_search(self, column: str, query: str, k: int = 10, *, mode: str = "or",
                    filter_: Filter = None, columns: Sequence[str] | None = None) -> pa.Table:
        snap = self.snapshot()
        hits = search.bm25(snap, column, query, k, mode=mode, filter_=filter_,
                           pool=self._fan_out_pool)
        return search.materialize(snap, hits, columns)

    def vector_search(self, column: str, vector: Sequence[float] | np.ndarray, k: int = 10, *,
                      nprobe: int | None = None, filter_: Filter = None,
                      columns: Sequence[str] | None = None) -> pa.Table:
        snap = self.snapshot()
        hits = search.vector(snap, column, vector, k, nprobe=nprobe, filter_=filter_,
                             pool=self._search_pool)
        return search.materialize(snap, hits, self._without_vectors(snap, columns))

    def hybrid_search(self, text_column: str, text: str, vector_column: str,
                      vector: Sequence[float] | np.ndarray, k: int = 10, *,
                      filter_: Filter = None, columns: Sequence[str] | None = None) -> pa.Table:
        snap = self.snapshot()
        hits = search.hybrid(snap, text_column, text, vector_column, vector, k,
                             filter_=filter_, pool=self._search_pool)
        return search.materialize(snap, hits, self._without_vectors(snap, columns))

    def token_match(self, column: str, query: str, mode: str = "or", *,
                    filter_: Filter = None) -> np.ndarray:
        return search.token_match(self.snapshot(), column, query, mode, filter_)

    def exact_match(self, column: str, value: str, *, filter_: Filter = None) -> np.ndarray:
        return search.exact_match(self.snapshot(), column, value, filter_)

    @property
    def _fan_out_pool(self) -> ThreadPoolExecutor | None:
        # Over resident files a search is CPU-bound and threads only add hand-off costs
        # (the GIL serializes the Python between kernels); over remote files they overlap I/O.
        return None if self._pool.eager else self._search_pool

    @staticmethod
    def _without_vectors(snap: Snapshot, columns: Sequence[str] | None) -> Sequence[str] | None:
        if columns is not None:
            return columns
        return [c for c in snap.schema.names if c not in snap.manifest.spec.vector]

    # -- appends -----------------------------------------------------------------------------

    def append(self, data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch], *,
               batch_id: str | None = None, commit: bool = True,
               deferred_index: bool = False) -> CommitResult:
        """Adds rows. With ``commit`` (the default) they are durable when this returns;
        otherwise they wait in the buffer for ``commit()``. A ``batch_id`` that was
        already committed makes the append a no-op (a retried job adds nothing)."""
        entry = (self.conform(data), batch_id, deferred_index)
        if commit:
            # Committed together with any buffered rows, but never left in the buffer: a
            # caller told of a failure retries the append itself, which must not add twice.
            return self._commit_buffer([entry])
        with self._buffer_lock:
            self._buffer.append(entry)
        if self._buffer_full():
            # A buffer past its bounds is published now, as a writer flushes a full buffer.
            return self._commit_buffer([])
        return CommitResult(version=None, rows=0)

    def conform(self, data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]) -> pa.Table:
        schema = self.schema
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif not isinstance(data, pa.Table):
            batches = list(data)
            data = pa.Table.from_batches(batches) if batches else schema.empty_table()
        if ID_COLUMN in data.column_names:
            raise TableSchemaError(f"{ID_COLUMN!r} is assigned by the table; do not supply it")
        missing = [n for n in schema.names if n not in data.column_names]
        extra = [n for n in data.column_names if n not in schema.names]
        if missing or extra:
            raise TableSchemaError(
                f"rows do not fit table {self.name!r}: missing columns {missing}, "
                f"unknown columns {extra}")
        try:
            return data.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                ValueError) as exc:
            # pyarrow raises a plain ValueError for nulls cast into a non-nullable field.
            raise TableSchemaError(f"rows do not fit table {self.name!r}: {exc}") from None

    def commit(self) -> CommitResult:
        """Publishes every buffered append in one new version."""
        return self._commit_buffer([])

    def _buffer_full(self) -> bool:
        opts = self.options
        with self._buffer_lock:
            rows = sum(t.num_rows for t, _, _ in self._buffer)
            size = sum(t.nbytes for t, _, _ in self._buffer)
        return rows >= opts.buffer_max_rows or size >= opts.buffer_max_bytes

    def _commit_buffer(self, own: list[tuple[pa.Table, str | None, bool]]) -> CommitResult:
        """Group commit: every caller queues its rows; whoever holds the write lock next
        publishes all that are queued (and the buffer) in one version, so concurrent
        appends in this process share commits instead of waiting for one each."""
        waiter = _Waiter(own)
        with self._queue_lock:
            self._queue.append(waiter)
        window = self.options.group_commit_window_s
        with self._committer.lock:
            if not waiter.done:
                if window > 0:
                    time.sleep(window)  # lets appends arriving together join this commit
                self._lead()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def _lead(self) -> None:
        # The buffer is taken under the write lock: taken before it, another thread's
        # commit could publish (or fail to publish) rows whose own commit already returned.
        with self._queue_lock:
            group, self._queue = self._queue, []
        with self._buffer_lock:
            buffered, self._buffer = self._buffer, []
        entries = buffered + [e for w in group for e in w.own]
        skipped: set[str] = set()
        try:
            result = (self._commit_appends(entries, skipped) if entries
                      else CommitResult(version=None, rows=0))
        except BaseException as exc:
            # Queued rows are never put back: a caller told of a failure retries its own
            # append, which must not add twice. Buffered rows stay buffered.
            with self._buffer_lock:
                self._buffer = buffered + self._buffer
            for w in group:
                w.error, w.done = exc, True
            return
        for i, w in enumerate(group):
            if not w.own:
                w.result = result
            else:
                # Buffered rows count for the first caller, as they did when commits were
                # not shared: with one thread, its append reports all it published.
                mine = w.own + (buffered if i == 0 else [])
                rows = sum(t.num_rows for t, b, _ in mine if b is None or b not in skipped)
                applied = any(b is None or b not in skipped for _, b, _ in mine)
                w.result = (CommitResult(result.version, rows, result.files_added)
                            if applied and result.version is not None
                            else CommitResult(version=None, rows=0))
            w.done = True
        if (result.version is not None and self.options.background_indexing
                and any(deferred for _, _, deferred in entries)):
            self._indexer.kick()
        if result.version is not None:
            self._maintainer.kick()

    def wait_for_indexes(self, timeout: float | None = None) -> bool:
        """Waits until every file of the latest version has its indexes, building them on
        the background indexer (started if need be); False when ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending_files(self.refresh()):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._indexer.kick()
            self._maintainer.kick(fold_now=True)
            self._indexer.wait_progress(0.05 if left is None else min(0.05, left))
        return True

    def _commit_appends(self, buffered: list[tuple[pa.Table, str | None, bool]],
                        skipped: set[str] | None = None) -> CommitResult:
        """Publishes ``buffered`` in one version; batch ids found applied already (their
        rows left out) are added to ``skipped``."""
        skipped = set() if skipped is None else skipped
        base = self.refresh()
        seen = set(base.batches)
        fresh = []
        for t, b, d in buffered:
            if b is not None:
                if b in seen:
                    skipped.add(b)
                    continue
                seen.add(b)
            fresh.append((t, b, d))
        batch_ids = [b for _, b, _ in fresh if b is not None]
        # Rows without a batch id are committed whatever became of the batches.
        rows_without_id = sum(t.num_rows for t, b, _ in fresh if b is None)
        groups = {False: [t for t, _, d in fresh if not d], True: [t for t, _, d in fresh if d]}
        tables = {deferred: pa.concat_tables(ts) for deferred, ts in groups.items() if ts}
        rows = sum(t.num_rows for t in tables.values())
        if rows == 0 and not batch_ids:
            return CommitResult(version=None, rows=0)
        with self._committer.begin("append") as tx:
            built: list[BuiltFile] = []
            next_id = base.next_id
            # A small commit goes to the write log: no indexes now, folded later.
            logged = 0 < rows <= self.options.write_log_rows
            for deferred, table in tables.items():
                if table.num_rows == 0:
                    continue
                ids = pa.array(np.arange(next_id, next_id + table.num_rows, dtype=np.int64))
                spec = IndexSpec() if deferred or logged else base.spec
                built += tx.build(table.add_column(0, ID_COLUMN, ids), spec, base,
                                  log=logged and not deferred)
                next_id += table.num_rows
            tx.upload(built)
            assumed_next = base.next_id

            def derive(latest: Manifest) -> Manifest | None:
                nonlocal built, assumed_next
                applied = [b for b in batch_ids if b in latest.batches]
                if batch_ids and len(applied) == len(batch_ids) and rows_without_id == 0:
                    skipped.update(applied)
                    return None
                if applied:
                    # Another writer committed some of these batches: their rows are built
                    # into our files, so start over from what is still missing.
                    raise _PartlyApplied(applied)
                if latest.next_id != assumed_next:
                    built = tx.renumber(built, latest.next_id - assumed_next)
                    assumed_next = latest.next_id
                entries = [replace(b.entry, added_in=latest.version + 1) for b in built]
                return latest.successor(files=(*latest.files, *entries),
                                        next_id=latest.next_id + rows, batches=batch_ids,
                                        created_ms=_now_ms(), operation="append")

            try:
                published = tx.publish(base, derive)
            except _PartlyApplied:
                published = None
                again = True
            else:
                again = False
        if again:
            return self._commit_appends(buffered, skipped)
        if published is None:
            return CommitResult(version=None, rows=0)
        return CommitResult(published.version, rows, files_added=len(built))

    # -- deletes and updates -----------------------------------------------------------------

    def delete(self, filter_: Filter, *, read: ReadSet | None = None) -> int:
        """Deletes the live rows matching ``filter_``; returns how many.

        Without ``read`` the filter is evaluated on the version the delete commits on.
        With it (a caller that chose the rows on an older snapshot), the delete fails with
        ``WriteConflictError`` when a newer commit changed what it read (see
        ``quiver.supertable.conflicts``).
        """
        if filter_ is None:
            raise TableSchemaError("delete needs a filter; use a filter that is always true "
                                   "to delete every row")
        with self._committer.lock, self._committer.begin("delete") as tx:
            deleted = 0

            def derive(latest: Manifest) -> Manifest | None:
                nonlocal deleted
                self._validate(read, latest)
                snap = Snapshot(latest, self._pool, self.name)
                files, deleted = self._tombstone(snap, filter_)
                if deleted == 0:
                    return None
                return latest.successor(files=files, created_ms=_now_ms(), operation="delete")

            tx.publish(self._base(read), derive)
            return deleted

    def _tombstone(self, snap: Snapshot, filter_: Filter,
                   ) -> tuple[list[FileEntry], int]:
        candidates = {f.path for f in snap.candidate_files(filter_)}
        files: list[FileEntry] = []
        deleted = 0
        for f in snap.files:
            hit = snap.allowed(f, filter_) if f.path in candidates else None
            if hit:
                files.append(f.with_tombstones(hit, self._dead_tokens(snap, f, hit)))
                deleted += len(hit)
            else:
                files.append(f)
        return files, deleted

    @staticmethod
    def _dead_tokens(snap: Snapshot, entry: FileEntry, rows: BitMap) -> dict[str, int]:
        """Tokens per BM25 column of the rows of ``entry`` about to be tombstoned.

        Kept in the manifest so that table-wide BM25 sizes never open a file for its
        deletions. ``rows`` must not hold rows already tombstoned.
        """
        local = bitmap_rows(rows).astype(np.int64)
        counts: dict[str, int] = {}
        for column in snap.manifest.spec.fts:
            if entry.indexed:
                counts[column] = int(snap.fts(entry, column).doc_lengths()[local].sum())
            else:
                # No index to read lengths from: tokenizing just these rows is cheaper than
                # building the whole file's index.
                counts[column] = token_count(snap.reader(entry).take(local, [column]).column(0))
        return counts

    def update(self, filter_: Filter, values: Mapping[str, Any]) -> int:
        """Sets columns of the live rows matching ``filter_``; each keeps its ``_id``.

        A value is a constant or a pyarrow expression over the row's columns
        (``pc.field("n") + 1``). Returns how many rows changed.
        """
        if filter_ is None:
            raise TableSchemaError("update needs a filter")
        if not values:
            raise TableSchemaError("update needs at least one column to set")
        self.snapshot(refresh=False).check_columns(list(values))
        if ID_COLUMN in values:
            raise TableSchemaError(f"{ID_COLUMN!r} cannot be updated")
        for name, value in values.items():
            # A constant that cannot be stored fails now, whether or not any row matches.
            if not isinstance(value, pc.Expression):
                self._constant(name, value, self._manifest.schema)
        with self._committer.lock, self._committer.begin("update") as tx:
            changed = 0

            def derive(latest: Manifest) -> Manifest | None:
                nonlocal changed
                snap = Snapshot(latest, self._pool, self.name)
                old = snap.to_table(filter_=filter_, with_id=True)
                changed = old.num_rows
                if changed == 0:
                    return None
                new = self._apply_values(old, values, latest.schema)
                built = tx.build(new.sort_by(ID_COLUMN), latest.spec, latest)
                tx.upload(built)
                files, _ = self._tombstone(snap, filter_)
                entries = [replace(b.entry, added_in=latest.version + 1) for b in built]
                return latest.successor(files=(*files, *entries), created_ms=_now_ms(),
                                        operation="update")

            tx.publish(self._manifest, derive)
            return changed

    def replace_rows(self, rows: pa.Table, *, read_version: int | None = None,
                     read: ReadSet | None = None) -> int:
        """Writes new versions of existing rows, each keeping its ``_id``, in one commit.

        ``rows`` carries ``_id`` and every column. The live row of each ``_id`` is
        tombstoned and the new version added. Returns how many rows changed.

        ``read_version`` is the version the new values were computed from: when a commit
        after it deleted or rewrote any of these rows, nothing is written and
        ``WriteConflictError`` is raised (compute them again from the new version).
        ``read`` gives the whole read set instead (rows chosen by a predicate). Without
        either, the last writer wins and a row deleted meanwhile is left out.
        """
        if ID_COLUMN not in rows.column_names:
            raise TableSchemaError(f"replacement rows need the {ID_COLUMN!r} column")
        try:
            ids = rows.column(ID_COLUMN).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise TableSchemaError(f"{ID_COLUMN!r} of replacement rows: {exc}") from None
        if ids.null_count or pc.count_distinct(ids).as_py() != len(ids):
            raise TableSchemaError(f"replacement rows need distinct, non-null {ID_COLUMN!r}")
        new = self.conform(rows.drop_columns([ID_COLUMN])).add_column(0, ID_COLUMN, ids)
        if new.num_rows == 0:
            return 0
        lo, hi = pc.min(ids).as_py(), pc.max(ids).as_py()
        wanted = pc.field(ID_COLUMN).isin(ids.combine_chunks())
        if read is None and read_version is not None:
            read = ReadSet(read_version, ids.to_numpy())
        with self._committer.lock, self._committer.begin("update") as tx:
            changed = 0

            def derive(latest: Manifest) -> Manifest | None:
                nonlocal changed
                self._validate(read, latest)
                snap = Snapshot(latest, self._pool, self.name)
                files: list[FileEntry] = []
                live: list[np.ndarray] = []
                for f in snap.files:
                    hit = (snap.allowed(f, wanted)
                           if f.live_rows and f.id_min <= hi and f.id_max >= lo else None)
                    if hit:
                        files.append(f.with_tombstones(hit, self._dead_tokens(snap, f, hit)))
                        live.append(snap.ids_of(f, bitmap_rows(hit)))
                    else:
                        files.append(f)
                if not live:
                    changed = 0
                    return None
                kept = new.filter(pc.is_in(new.column(ID_COLUMN), pa.array(np.concatenate(live))))
                changed = kept.num_rows
                built = tx.build(kept.sort_by(ID_COLUMN), latest.spec, latest)
                tx.upload(built)
                entries = [replace(b.entry, added_in=latest.version + 1) for b in built]
                return latest.successor(files=(*files, *entries), created_ms=_now_ms(),
                                        operation="update")

            tx.publish(self._base(read), derive)
            return changed

    def _base(self, read: ReadSet | None) -> Manifest:
        # A validated write is checked against the newest version, not the one this
        # object last saw: a change with nothing to write must still see its conflicts.
        return self._manifest if read is None else self.refresh(max_staleness_s=0)

    def _validate(self, read: ReadSet | None, latest: Manifest) -> None:
        """Raises ``WriteConflictError`` when a commit after ``read`` changed what it read."""
        if read is None:
            return
        try:
            reason = find_conflict(read, latest, self._manifest_at, self._ids_of)
        except ObjectNotFoundError:
            # A version in between was expired: what it changed cannot be told apart.
            reason = "an expired version since the one this write read"
        if reason is not None:
            log.debug("write on table %r read version %d: %s", self.name, read.version, reason)
            raise WriteConflictError(f"a concurrent write to table {self.name!r} at {reason}; "
                                     "run the statement again")

    def _manifest_at(self, version: int) -> Manifest:
        if version == self._manifest.version:
            return self._manifest
        with self._history_lock:
            hit = self._history.get(version)
        if hit is not None:
            return hit
        manifest = commit.read_manifest(self.store, self.prefix, version)
        with self._history_lock:
            if len(self._history) >= 64:
                self._history.pop(min(self._history))
            self._history[version] = manifest
        return manifest

    def _ids_of(self, manifest: Manifest, entry: FileEntry, local: np.ndarray) -> np.ndarray:
        return Snapshot(manifest, self._pool, self.name).ids_of(entry, local)

    @staticmethod
    def _constant(name: str, value: Any, schema: pa.Schema) -> pc.Expression:
        try:
            return pc.scalar(pa.scalar(value, schema.field(name).type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                TypeError, ValueError) as exc:
            raise TableSchemaError(
                f"cannot set column {name!r} ({schema.field(name).type}) to {value!r}: {exc}"
            ) from None

    @staticmethod
    def _apply_values(old: pa.Table, values: Mapping[str, Any], schema: pa.Schema) -> pa.Table:
        projection: dict[str, pc.Expression] = {}
        for name in old.column_names:
            value = values.get(name, pc.field(name))
            if not isinstance(value, pc.Expression):
                value = Table._constant(name, value, schema)
            projection[name] = value
        try:
            out = ds.dataset(old).to_table(columns=projection)
            return out.cast(pa.schema([schema.field(n) for n in old.column_names]))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise TableSchemaError(f"cannot apply update {dict(values)!r}: {exc}") from None

    # -- used by maintenance -----------------------------------------------------------------

    @property
    def pool(self) -> ReaderPool:
        return self._pool

    @property
    def committer(self) -> Committer:
        """The table's one write path (``quiver.supertable.transaction``): every change,
        the table's own and its indexer's, compactor's and staged appends', commits
        through it."""
        return self._committer

    def live_rows_of(self, snap: Snapshot, entry: FileEntry) -> pa.Table:
        """Every live row of one file, ``_id`` first."""
        table = snap.conform(snap.reader(entry).read_table([ID_COLUMN, *snap.schema.names]))
        if entry.tombstones:
            keep = np.ones(entry.rows, dtype=bool)
            keep[bitmap_rows(entry.tombstones)] = False
            table = table.filter(pa.array(keep))
        return table

    def tombstones_of(self, entry: FileEntry) -> BitMap:
        return entry.tombstones

    # -- maintenance -------------------------------------------------------------------------

    def optimize(self, *, target_rows: int | None = None,
                 min_live_fraction: float = 0.8) -> OptimizeResult:
        """Merges small files and rewrites tombstone-heavy ones (``quiver.supertable.optimize``)."""
        return optimize(self, target_rows=target_rows, min_live_fraction=min_live_fraction)

    def gc(self, *, grace_seconds: float = 3600.0, expire_manifests: bool = False,
           keep_versions: int = 10) -> GcResult:
        """Deletes files no recent snapshot references (see ``quiver.supertable.gc``)."""
        return collect_garbage(self, grace_seconds=grace_seconds,
                               expire_manifests=expire_manifests, keep_versions=keep_versions)
