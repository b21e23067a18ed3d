"""Background upkeep of one table: folding the write log and compacting small files.

The write log. A commit of few rows (``TableOptions.write_log_rows``) is written as a
*log file*: a superfile without indexes, named ``data/log-<ms>-<uuid>.parquet`` (its
creation time in milliseconds), published by the ordinary manifest commit. So an
append is acknowledged once its rows and the manifest naming them are on the root's
storage, and every reader in any process sees them; searches answer from indexes built
in memory over the (small) log files, so the rows are searchable at once. The log is
*folded*: its files are merged into one indexed superfile, by the same rewrite
``optimize`` does (rows keep their ``_id``, tombstones that land meanwhile are carried
over), once their live rows reach ``fold_rows``, their bytes ``fold_bytes``, their
number ``fold_files``, or the oldest is ``fold_age_s`` old.

The compactor (``TableOptions.compaction``). While writes go on, indexed files smaller
than half of ``max_rows_per_file`` are grouped into size tiers (tier *k* holds files of
``fan_in**k`` to ``fan_in**(k+1)`` live rows); once a tier has ``fan_in`` files they are
merged into one, so the number of files stays logarithmic in the table's rows. Once the
table had no commit for ``compact_idle_s``, its small files are merged too, smallest
first, as long as each next file is at most ``fan_in`` times the rows gathered so far (a
few new rows are not rewritten into a much larger file). Files that lost at least half
their rows to tombstones are rewritten too. Every merge commits optimistically like any
writer and is published as an ``optimize`` version, which never conflicts with an UPDATE
or DELETE (``quiver.supertable.conflicts``); a merge that loses its sources to another merge
plans again.
Replaced files are deleted by ``gc`` ``retire_grace_s`` after the merge, so readers of
older snapshots finish first.

Each table has at most one upkeep thread per process, started on demand by a commit (or
when a table with pending log files is opened) and ending by itself when nothing is left
to do. Several processes may keep one table at once: their merges race like any commits.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from quiver.supertable.gc import collect_garbage
from quiver.supertable.manifest import FileEntry, Manifest
from quiver.supertable.optimize import merge_files

# Log files are named where files are built (``quiver.supertable.transaction``).
from quiver.supertable.transaction import Writable, is_log_file, log_file_ms

log = logging.getLogger(__name__)

MAX_FAILURES = 5
FAILURE_BACKOFF_S = 0.2
# A file with less than this share of live rows is rewritten by the compactor.
SPARSE_FRACTION = 0.5
# Most files one tiered merge takes (a backlog is worked off in several merges).
MAX_MERGE_FILES = 64


def log_files(manifest: Manifest) -> list[FileEntry]:
    return [f for f in manifest.files if is_log_file(f) and not f.indexed]


def fold_due(manifest: Manifest, rows: int, size: int, files: int, age_s: float,
             now_ms: float) -> tuple[bool, float | None]:
    """Whether the log should be folded now; else seconds until its age says so (None
    when there is no log)."""
    pending = log_files(manifest)
    if not pending:
        return False, None
    oldest = min((log_file_ms(f) or now_ms) for f in pending)
    age = (now_ms - oldest) / 1000.0
    if (sum(f.live_rows for f in pending) >= rows or sum(f.size for f in pending) >= size
            or len(pending) >= files or age >= age_s):
        return True, None
    return False, max(0.0, age_s - age)


def _compactable(manifest: Manifest, target_rows: int) -> list[FileEntry]:
    """Indexed files the compactor may merge: small, or mostly tombstoned."""
    out = []
    for f in manifest.files:
        if not f.indexed or is_log_file(f):
            continue
        sparse = f.rows > 0 and f.live_rows < f.rows * SPARSE_FRACTION
        if sparse or f.live_rows < target_rows:
            out.append(f)
    return out


def tiered_choice(manifest: Manifest, fan_in: int, target_rows: int) -> list[FileEntry]:
    """The files of the smallest size tier holding ``fan_in`` files or more (plus any
    mostly tombstoned file); empty when no tier is full."""
    fan_in = max(2, fan_in)
    files = _compactable(manifest, target_rows)
    sparse = [f for f in files if f.rows and f.live_rows < f.rows * SPARSE_FRACTION]
    tiers: dict[int, list[FileEntry]] = {}
    for f in files:
        if f in sparse:
            continue
        tiers.setdefault(int(math.log(max(1, f.live_rows), fan_in)), []).append(f)
    for tier in sorted(tiers):
        if len(tiers[tier]) >= fan_in:
            chosen = sorted(tiers[tier], key=lambda f: f.live_rows)[:MAX_MERGE_FILES]
            return chosen + sparse
    return sparse


def idle_choice(manifest: Manifest, target_rows: int, fan_in: int) -> list[FileEntry]:
    """The small indexed files worth merging once the table is idle: smallest first, each
    next file taken while it holds at most ``fan_in`` times the rows taken so far, so a
    few new rows are not merged into a file many times their size (they wait until
    enough of them gather)."""
    files = sorted(_compactable(manifest, target_rows), key=lambda f: f.live_rows)
    sparse = [f for f in files if f.rows and f.live_rows < f.rows * SPARSE_FRACTION]
    chosen: list[FileEntry] = []
    rows = 0
    for f in files:
        if chosen and f.live_rows > max(2, fan_in) * rows:
            break
        chosen.append(f)
        rows += f.live_rows
    if len(chosen) < 2:
        chosen = []
    chosen += [f for f in sparse if f not in chosen]
    return chosen[:MAX_MERGE_FILES]


class Maintainer:
    """One table's upkeep thread: started by ``kick``, idle-exits, stopped by ``stop``."""

    def __init__(self, table: Writable) -> None:
        self._table = table
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._fold_now = False
        self._last_merge: float | None = None
        self._gc_after: float | None = None

    @property
    def enabled(self) -> bool:
        opts = self._table.options
        return opts.write_log_rows > 0 or opts.compaction

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def kick(self, fold_now: bool = False) -> None:
        """Makes sure a thread will look for work (after this call); ``fold_now`` folds
        the write log whatever its thresholds say."""
        if not self.enabled and not fold_now:
            return
        with self._lock:
            if self._stopped.is_set():
                return
            self._fold_now = self._fold_now or fold_now
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"quiver-upkeep-{self._table.name}", daemon=True)
                self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stops the thread after its current step; True when it has ended."""
        with self._lock:
            self._stopped.set()
            thread = self._thread
        self._wake.set()
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning("upkeep of table %r did not stop within %s s", self._table.name,
                        timeout)
            return False
        return True

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                worked, wait_s = self.step()
            except Exception as exc:  # a background thread must not die silently
                failures += 1
                log.warning("upkeep of table %r failed (%d in a row): %s", self._table.name,
                            failures, exc)
                if failures >= MAX_FAILURES:
                    with self._lock:
                        self._thread = None
                    return
                self._stopped.wait(FAILURE_BACKOFF_S * 2 ** failures)
                continue
            failures = 0
            if worked:
                continue
            if wait_s is None:
                with self._lock:
                    # A kick that raced with this step asks for one more.
                    if not self._wake.is_set():
                        self._thread = None
                        return
                continue
            self._wake.wait(wait_s)

    def step(self) -> tuple[bool, float | None]:
        """Does the most urgent piece of work: (whether it did any, seconds until work is
        due, None for none)."""
        table, opts = self._table, self._table.options
        manifest = table.refresh()
        now_s = time.time()
        target = max(1, opts.max_rows_per_file // 2)
        with self._lock:
            force, self._fold_now = self._fold_now, False
        due, wait = fold_due(manifest, opts.fold_rows, opts.fold_bytes, opts.fold_files,
                             opts.fold_age_s, now_s * 1000)
        if (due or force) and log_files(manifest):
            done = merge_files(table, log_files, what="write-log fold")
            self._merged(done.version)
            return done.version is not None, None
        waits = [] if wait is None else [wait]
        if opts.compaction:
            fan_in = opts.compact_fan_in
            if tiered_choice(manifest, fan_in, target):
                done = merge_files(table, lambda m: tiered_choice(m, fan_in, target),
                                   what="compaction")
                self._merged(done.version)
                return done.version is not None, None
            idle = now_s - manifest.created_ms / 1000.0
            if idle_choice(manifest, target, fan_in):
                if idle >= opts.compact_idle_s:
                    done = merge_files(table, lambda m: idle_choice(m, target, fan_in),
                                       what="idle compaction")
                    self._merged(done.version)
                    return done.version is not None, None
                waits.append(opts.compact_idle_s - idle)
        if self._gc_after is not None:
            left = self._gc_after - time.monotonic()
            if left <= 0:
                self._gc_after = None
                collect_garbage(table, grace_seconds=opts.retire_grace_s)
                if self._last_merge is not None and (
                        time.monotonic() - self._last_merge < opts.retire_grace_s):
                    self._gc_after = self._last_merge + opts.retire_grace_s
                return True, None
            waits.append(left)
        return False, (min(waits) if waits else None)

    def _merged(self, version: int | None) -> None:
        if version is None:
            return
        self._last_merge = time.monotonic()
        if self._gc_after is None:
            self._gc_after = self._last_merge + self._table.options.retire_grace_s
