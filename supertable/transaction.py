"""The one write path of a table: build superfiles, upload them, publish one version.

Every change to a table (appends, deletes, updates, deferred index swaps, compaction,
the write log's folds, staged bulk appends, ``_id`` reservations) runs as a
``Transaction`` opened on the table's ``Committer``:

- ``build`` writes rows as superfiles in memory, split into files by a ``Sharding``
  (the table's own, or one a caller passes), and names them in the transaction's
  write-ahead intent (``quiver.supertable.wal``);
- ``upload`` records the intent durably, then puts the files (side by side);
- ``publish`` derives the next manifest from the latest one and wins the next version
  (``quiver.supertable.commit``), deriving again after a lost race, under the table's
  write lock; afterwards the uploaded files the manifest does not name are deleted;
- ``abandon`` deletes everything uploaded and the intent. Leaving a ``with`` block
  early (an exception, or no publish at all) abandons; so does a publish that failed
  while deriving or lost every race. A publish whose manifest write failed may still
  have landed, so its intent is left for recovery (``Committer.recover``) to settle.

This module knows nothing of ``quiver.supertable.table``: a table hands its committer
what it needs (storage, options, what to do after each publish), and the modules that
write on a table's behalf see it through ``Writable``.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.superfile import IndexSpec, write_superfile
from quiver.superfile.fts.tokenizer import tokenize, tokenize_column
from quiver.superfile.writer import replace_column
from quiver.supertable import commit
from quiver.supertable.errors import CommitConflictError, StorageError
from quiver.supertable.manifest import ID_COLUMN, FileEntry, Manifest, SidecarRef
from quiver.supertable.options import TableOptions
from quiver.supertable.readers import ReaderPool
from quiver.supertable.store import ObjectStore
from quiver.supertable.summaries import column_ranges, summarize
from quiver.supertable.wal import Intent, IntentLog

log = logging.getLogger(__name__)

DATA_DIR = "data"
# Write-log files are named ``data/log-<ms>-<uuid>.parquet`` (see ``quiver.supertable.maintain``).
LOG_PREFIX = "log-"
# Uploads of the objects of one commit run side by side on these threads.
_UPLOADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="quiver-upload")
# Up to this many rows, tokens are counted by the pure-Python tokenizer (the same rules):
# the column kernels cost a fixed ~0.3 ms per call, more than a few rows take.
SMALL_COUNT_ROWS = 64


def token_count(texts: pa.Array | pa.ChunkedArray) -> int:
    """How many tokens the BM25 index of ``texts`` would hold (its ``total_tokens``)."""
    if len(texts) <= SMALL_COUNT_ROWS:
        return sum(len(tokenize(t)) for t in texts.to_pylist() if t is not None)
    tokens, _ = tokenize_column(texts)
    return len(tokens)


def log_file_name() -> str:
    """A fresh log file's name (without folder or suffix), carrying its creation time."""
    return f"{LOG_PREFIX}{int(time.time() * 1000)}-{uuid.uuid4().hex}"


def is_log_file(entry: FileEntry) -> bool:
    return entry.path.rsplit("/", 1)[-1].startswith(LOG_PREFIX)


def log_file_ms(entry: FileEntry) -> int | None:
    """When the log file was written (ms since the epoch), from its name."""
    parts = entry.path.rsplit("/", 1)[-1].split("-")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Sharding:
    """How the rows of one build are split into files.

    A build becomes ``max(ceil(rows / max_rows_per_file), min(workers, rows //
    min_rows_per_shard), 1)`` balanced files: no file over ``max_rows_per_file``, and a
    large build split across the build workers. ``min_rows_per_shard`` None never splits
    for the workers' sake.
    """

    max_rows_per_file: int = 1_000_000
    min_rows_per_shard: int | None = 50_000

    @classmethod
    def of(cls, options: TableOptions) -> Sharding:
        return cls(options.max_rows_per_file, options.min_rows_per_shard)

    def bounds(self, rows: int, workers: int) -> list[tuple[int, int]]:
        """(offset, length) of each file's rows."""
        by_workers = (0 if self.min_rows_per_shard is None
                      else min(workers, rows // max(1, self.min_rows_per_shard)))
        count = max(math.ceil(rows / max(1, self.max_rows_per_file)), by_workers, 1)
        cuts = np.linspace(0, rows, count + 1).round().astype(np.int64)
        return [(int(a), int(b - a)) for a, b in itertools.pairwise(cuts) if b > a]


# One file per build, whatever its size (the indexer rebuilds files one for one).
ONE_FILE = Sharding(max_rows_per_file=2**62, min_rows_per_shard=None)


@dataclass
class BuiltFile:
    """A superfile and its summary sidecar, built and not yet (or just) uploaded."""

    entry: FileEntry
    data: bytes
    sidecar: bytes


class Committer:
    """One table's writer side: its write lock, intent log, and how it builds files.

    Writers in one process are serialized by ``lock`` (reentrant: a caller may hold it
    across a whole change, as group commit does); ``on_publish`` runs, under the lock,
    after each version this committer publishes.
    """

    def __init__(self, store: ObjectStore, prefix: str, name: str, options: TableOptions,
                 on_publish: Callable[[Manifest], None] | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.name = name
        self.options = options
        self.sharding = Sharding.of(options)
        self.lock = threading.RLock()
        self.on_publish = on_publish
        self.intents = IntentLog(store, prefix)

    def begin(self, operation: str) -> Transaction:
        """A new transaction; ``operation`` names it in its intent and in logs."""
        return Transaction(self, operation)

    def recover(self, latest: Manifest, older_than_s: float) -> int:
        """Settles intents older than ``older_than_s`` left by writers that died; how many."""
        return self.intents.recover(latest, older_than_s)

    def full_path(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path


class Transaction:
    """One change: files built and uploaded under one intent, one version published.

    Use it as a context manager: leaving the block without a publish, or by an
    exception, removes what it uploaded. Not for sharing between changes; ``build`` may
    be called from several threads at once.
    """

    def __init__(self, committer: Committer, operation: str) -> None:
        self.committer = committer
        self.intent = Intent(operation)
        self._names_lock = threading.Lock()
        self._recorded = False
        self._settled = False

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._settled:
            self.abandon()

    # -- building and uploading ---------------------------------------------------------------

    def build(self, rows: pa.Table, spec: IndexSpec, base: Manifest, *, log: bool = False,
              sharding: Sharding | None = None) -> list[BuiltFile]:
        """Builds ``rows`` (which carry ``_id``) as superfiles with the indexes of ``spec``,
        split by ``sharding`` (default the table's); ``log`` names them as write-log files.
        ``base`` is the version they are built for (its spec sets their statistics)."""
        c = self.committer
        workers = max(1, c.options.build_threads)
        shards = [rows.slice(off, n)
                  for off, n in (sharding or c.sharding).bounds(rows.num_rows, workers)]
        # A file without the table's indexes is searched by indexes built in memory and
        # rebuilt later; one is "indexed" when it has them, or the table has none.
        indexed = bool(spec.fts or spec.vector) or not (base.spec.fts or base.spec.vector)

        def one(shard: pa.Table) -> BuiltFile:
            written = write_superfile(shard, spec, options=c.options.writer)
            return _file_for(shard, written.data, summarize(written).to_bytes(),
                             indexed=indexed,
                             fts_stats={col: (s.num_docs, s.total_tokens)
                                        for col, s in written.fts_stats.items()},
                             spec=base.spec, log=log)

        if len(shards) == 1:
            built = [one(shards[0])]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                built = list(pool.map(one, shards))
        with self._names_lock:
            for b in built:
                self.intent.objects += [b.entry.path, b.entry.sidecar.path]  # type: ignore[union-attr]
        return built

    def upload(self, built: list[BuiltFile]) -> None:
        """Records the intent (durable on return), then puts every file of ``built``."""
        c = self.committer
        objects = [(c.full_path(p), d) for b in built
                   for p, d in ((b.entry.path, b.data),
                                (b.entry.sidecar.path, b.sidecar))]  # type: ignore[union-attr]
        if not objects:
            return
        self._recorded = True
        c.intents.record(self.intent)
        # Each put waits on storage (an fsync, a request), so they overlap; the first runs
        # on this thread.
        rest = [_UPLOADS.submit(c.store.put, p, d) for p, d in objects[1:]]
        try:
            c.store.put(*objects[0])
        finally:
            for f in rest:
                f.exception()
        for f in rest:
            f.result()

    def renumber(self, built: list[BuiltFile], shift: int) -> list[BuiltFile]:
        """Copies of ``built`` with every ``_id`` moved up by ``shift``, uploaded (another
        writer took the ids they were built with)."""
        out = []
        for b in built:
            e = b.entry
            ids = pa.array(np.arange(e.id_min + shift, e.id_max + shift + 1, dtype=np.int64))
            data = replace_column(b.data, ID_COLUMN, ids, self.committer.options.writer)
            entry = replace(e, size=len(data), id_min=e.id_min + shift, id_max=e.id_max + shift)
            out.append(BuiltFile(entry, data, b.sidecar))
        # Same paths: the new bytes replace the old ones, already named in the intent.
        self.upload(out)
        return out

    # -- publishing --------------------------------------------------------------------------

    def publish(self, base: Manifest, derive: Callable[[Manifest], Manifest | None],
                ) -> Manifest | None:
        """Publishes ``derive(latest)`` as the next version, starting from ``base`` and
        deriving again on each lost race; None (and nothing written) when ``derive`` finds
        nothing to change. Ends the transaction either way."""
        c = self.committer
        what = f"{self.intent.operation} on table {c.name!r}"
        in_derive = False

        def guarded(latest: Manifest) -> Manifest | None:
            nonlocal in_derive
            in_derive = True
            out = derive(latest)
            in_derive = False
            return out

        with c.lock:
            try:
                published = commit.publish(c.store, c.prefix, base, guarded,
                                           attempts=c.options.commit_attempts, what=what)
            except CommitConflictError:
                self.abandon()
                raise
            except BaseException:
                if in_derive:
                    # Failed while preparing: no manifest naming these objects was written.
                    self.abandon()
                else:
                    # A manifest write (or the read after a lost race) failed: the manifest
                    # may have landed, or still land, so recovery settles the intent.
                    self._settled = True
                    if self.intent.objects:
                        log.warning("%s: outcome unknown, intent %s left for recovery",
                                    what, self.intent.txid)
                raise
            if published is not None:
                # The files are the table's now: whatever fails below must not remove them
                # (the intent is then left for recovery).
                self._settled = True
                if c.on_publish is not None:
                    c.on_publish(published)
        keep = set() if published is None else (
            {f.path for f in published.files}
            | {f.sidecar.path for f in published.files if f.sidecar is not None})
        self.abandon(keep)
        return published

    def abandon(self, keep: set[str] | None = None) -> None:
        """Deletes the uploaded objects not in ``keep`` (a published manifest's), then the
        intent; a failure leaves the intent for recovery. Ends the transaction."""
        self._settled = True
        if not self._recorded:
            return  # nothing reached storage
        self._recorded = False
        c = self.committer
        keep = keep or set()
        try:
            for obj in self.intent.objects:
                if obj not in keep:
                    c.store.delete(c.full_path(obj))
            c.intents.clear(self.intent)
        except StorageError as exc:
            log.warning("leaving intent %s for recovery: %s", self.intent.txid, exc)


def _file_for(shard: pa.Table, data: bytes, sidecar: bytes, *, indexed: bool,
              fts_stats: dict[str, tuple[int, int]], spec: IndexSpec,
              log: bool = False) -> BuiltFile:
    name = log_file_name() if log else uuid.uuid4().hex
    ids = shard.column(ID_COLUMN)
    if not fts_stats:
        # Files without an index still count toward table-wide BM25 statistics.
        fts_stats = {c: (shard.num_rows, token_count(shard.column(c))) for c in spec.fts}
    entry = FileEntry(
        path=f"{DATA_DIR}/{name}.parquet",
        size=len(data),
        rows=shard.num_rows,
        id_min=int(pc.min(ids).as_py()),
        id_max=int(pc.max(ids).as_py()),
        indexed=indexed,
        sidecar=SidecarRef(f"{DATA_DIR}/{name}.summary", len(sidecar), crc32c.crc32c(sidecar)),
        column_ranges=column_ranges(shard.drop_columns([ID_COLUMN])),
        fts_sizes=fts_stats,
    )
    return BuiltFile(entry, data, sidecar)


class Writable(Protocol):
    """What the modules writing on a table's behalf (indexer, compaction, upkeep, gc) use
    of it; ``quiver.supertable.table.Table`` is one."""

    name: str
    store: ObjectStore
    prefix: str
    options: TableOptions

    @property
    def pool(self) -> ReaderPool: ...

    @property
    def committer(self) -> Committer: ...

    def refresh(self, max_staleness_s: float | None = None) -> Manifest: ...
