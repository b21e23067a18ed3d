"""Deferred indexing: building the indexes of files committed without them, and swapping
them in.

A deferred append publishes its rows at once as superfiles without indexes
(``FileEntry.indexed`` false); searches answer from indexes the reader pool
builds in memory, so the rows are searchable immediately. This module builds
the real superfile of each such file from the very same rows in the same order
(same ``_id``, so local positions and tombstones map one to one), uploads it and
publishes, in one transaction (``quiver.supertable.transaction``), a manifest that
replaces the entry in place, carrying over the tombstones the entry has *at publish
time* (a delete may land while the index is built). One manifest swaps old for new,
so no snapshot ever sees a row missing or twice. An entry that left the table
meanwhile (compacted, deleted) is simply not swapped.

``BackgroundIndexer`` runs that loop on one daemon thread per table, started
on demand and ending by itself when nothing is pending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from quiver.supertable.errors import TableCorruptError
from quiver.supertable.manifest import FileEntry, Manifest
from quiver.supertable.snapshot import Snapshot
from quiver.supertable.transaction import (
    ONE_FILE,
    BuiltFile,
    Transaction,
    Writable,
    is_log_file,
    token_count,
)

log = logging.getLogger(__name__)

# Consecutive failed rounds after which the background thread gives up until kicked again.
MAX_FAILURES = 5
FAILURE_BACKOFF_S = 0.2

# Re-exported: callers count tokens the way files are built.
__all__ = ["BackgroundIndexer", "build_pending_indexes", "pending_files", "token_count"]


def pending_files(manifest: Manifest) -> list[FileEntry]:
    """Files still waiting for their indexes (files with no live row are left to compaction)."""
    return [f for f in manifest.files if not f.indexed and f.live_rows > 0]


def build_pending_indexes(table: Writable, *, limit: int | None = None) -> int:
    """Builds and swaps in the indexes of up to ``limit`` unindexed files of the latest
    version; returns how many files were swapped."""
    swapped, _ = _index_round(table, limit=limit, should_stop=lambda: False)
    return swapped


def _index_round(table: Writable, *, limit: int | None,
                 should_stop: Callable[[], bool]) -> tuple[int, int]:
    """One pass over the pending files in batches; returns (swapped, still pending)."""
    manifest = table.refresh()
    todo = _swappable(manifest)
    if limit is not None:
        todo = todo[: max(0, limit)]
    width = max(1, table.options.build_threads)
    swapped = 0
    for start in range(0, len(todo), width):
        if should_stop():
            break
        swapped += _swap_batch(table, manifest, todo[start:start + width], should_stop)
    return swapped, len(_swappable(table.refresh()))


def _swappable(manifest: Manifest) -> list[FileEntry]:
    # Write-log files are folded together by the table's upkeep, not indexed one by one.
    return [f for f in pending_files(manifest) if not is_log_file(f)]


def _rebuild(table: Writable, tx: Transaction, manifest: Manifest,
             entry: FileEntry) -> BuiltFile:
    """The indexed superfile holding exactly the rows of ``entry``, in its order."""
    snap = Snapshot(manifest, table.pool, table.name)
    rows = snap.conform(table.pool.reader(entry).read_table(list(manifest.schema.names)))
    rows = rows.replace_schema_metadata(manifest.schema.metadata)
    if rows.num_rows != entry.rows:
        raise TableCorruptError(
            f"{entry.path} holds {rows.num_rows} rows; the manifest says {entry.rows}")
    [built] = tx.build(rows, manifest.spec, manifest, sharding=ONE_FILE)
    if (built.entry.id_min, built.entry.id_max) != (entry.id_min, entry.id_max):
        raise TableCorruptError(f"{entry.path} does not hold the _id range its entry names")
    return built


def _swap_batch(table: Writable, manifest: Manifest, batch: list[FileEntry],
                should_stop: Callable[[], bool]) -> int:
    with table.committer.begin("index") as tx:
        return _swap_in(table, tx, manifest, batch, should_stop)


def _swap_in(table: Writable, tx: Transaction, manifest: Manifest, batch: list[FileEntry],
             should_stop: Callable[[], bool]) -> int:
    if len(batch) == 1:
        built = [_rebuild(table, tx, manifest, batch[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            built = list(pool.map(lambda e: _rebuild(table, tx, manifest, e), batch))
    if should_stop():
        return 0
    pairs = list(zip(batch, built, strict=True))
    swapped = 0

    def derive(latest: Manifest) -> Manifest | None:
        nonlocal swapped
        position = {f.path: i for i, f in enumerate(latest.files)}
        files = list(latest.files)
        swapped = 0
        for old, b in pairs:
            i = position.get(old.path)
            if i is None:
                continue
            current = files[i]
            if current.indexed or current.rows != b.entry.rows:
                continue
            # The tombstones of the entry as it is now, not as it was when the build began;
            # the same rows in the same order, so their dead token counts carry over too.
            files[i] = replace(b.entry, tombstones=current.tombstones,
                               dead_tokens=current.dead_tokens, added_in=current.added_in)
            swapped += 1
        if swapped == 0:
            return None
        return latest.successor(files=files, created_ms=int(time.time() * 1000),
                                operation="index")

    tx.upload(built)
    if should_stop():
        tx.abandon()
        return 0
    with table.committer.lock:
        published = tx.publish(table.refresh(), derive)
    if published is None:
        log.info("indexes of %d file(s) of table %r were no longer needed", len(batch),
                 table.name)
        return 0
    # The in-memory stand-in indexes of the replaced files are no longer needed; a reader
    # still pinned to an older version reopens the old file, which stays until collected.
    table.pool.forget([old.path for old, _ in pairs])
    log.debug("swapped in indexes of %d file(s) of table %r at version %d", swapped,
              table.name, published.version)
    return swapped


class BackgroundIndexer:
    """One table's indexing thread: started by ``kick``, idle-exits, stopped by ``stop``."""

    def __init__(self, table: Writable) -> None:
        self._table = table
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def kick(self) -> None:
        """Makes sure a thread will look for pending files (after this call)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"quiver-indexer-{self._table.name}", daemon=True)
                self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stops the thread after its current step; True when it has ended."""
        with self._lock:
            self._stopped.set()
            thread = self._thread
        self._notify()
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning("indexer of table %r did not stop within %s s", self._table.name,
                        timeout)
            return False
        return True

    def wait_progress(self, timeout: float) -> None:
        with self._progress:
            self._progress.wait(timeout)

    def _notify(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stopped.is_set():
                self._wake.clear()
                try:
                    swapped, remaining = _index_round(
                        self._table, limit=max(1, self._table.options.build_threads),
                        should_stop=self._stopped.is_set)
                    problem = None if swapped or not remaining else "no file could be swapped"
                except Exception as exc:  # a background thread must not die silently
                    problem, remaining = str(exc), 1
                finally:
                    self._notify()
                if problem is not None and not self._stopped.is_set():
                    failures += 1
                    log.warning("indexing table %r failed (%d in a row): %s",
                                self._table.name, failures, problem)
                    if failures >= MAX_FAILURES:
                        return
                    self._stopped.wait(FAILURE_BACKOFF_S * 2 ** failures)
                    continue
                failures = 0
                if remaining == 0:
                    with self._lock:
                        # A kick that raced with this round asks for one more.
                        if not self._wake.is_set():
                            self._thread = None
                            return
        finally:
            self._notify()
