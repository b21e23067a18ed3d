"""One bulk append published as one commit: parts are built and uploaded as they stream
in (memory stays bounded by one part), and ``commit`` publishes them all in one new
version, or ``abort`` removes them; nothing is visible before the commit.

Row ids must be fixed when a file is built, but other writers may commit while the
stream is still coming. So every part but the last has its ``_id`` range reserved by a
small commit that only advances the table's next free ``_id`` (a ``reserve`` version:
no rows change, nothing conflicts with it); the last part is kept in memory and takes
its ids at publish time, as an ordinary append does, so a one-part stream costs what
an ordinary append does. A table nobody else can see yet (one being created) needs no
reservations at all (``exclusive``).

The stream is one transaction on the table's committer (``quiver.supertable.transaction``):
every uploaded object is named in its write-ahead intent before it is written, and the
intent is rewritten with each part, so garbage collection leaves a stream in
progress alone; a writer killed mid-stream leaves an intent that recovery and ``gc``
resolve by deleting the objects, since no manifest names them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pyarrow as pa

from quiver.supertable.manifest import ID_COLUMN, FileEntry, Manifest
from quiver.supertable.table import CommitResult, Table
from quiver.supertable.transaction import BuiltFile

log = logging.getLogger(__name__)


class StagedAppend:
    """Rows added in parts and published together. Not thread-safe; one per stream."""

    def __init__(self, table: Table, *, batch_id: str | None = None,
                 exclusive: bool = False) -> None:
        self._table = table
        self._batch_id = batch_id
        self._exclusive = exclusive
        self._tx = table.committer.begin("append")
        self._entries: list[FileEntry] = []
        self._last: pa.Table | None = None
        latest = table.refresh()
        self._next_id = latest.next_id
        self._rows = 0
        self._closed = False
        # A stream already applied under this batch id adds nothing (a retried job).
        self.already_applied = batch_id is not None and batch_id in latest.batches

    @property
    def rows(self) -> int:
        """Rows added so far."""
        return self._rows

    def add(self, data: pa.Table | pa.RecordBatch) -> None:
        """Adds one part. The part before it, if any, is built and uploaded now; the
        newest part waits in memory for the next one or for ``commit``."""
        if self._closed:
            raise ValueError("this staged append is already committed or aborted")
        part = self._table.conform(data)
        self._rows += part.num_rows
        if part.num_rows == 0 or self.already_applied:
            return
        if self._last is not None:
            previous, self._last = self._last, None
            self._stage(previous)
        self._last = part

    def _stage(self, part: pa.Table) -> None:
        start = self._reserve(part.num_rows)
        self._entries += [b.entry for b in self._build(part, start)]

    def _build(self, part: pa.Table, start: int) -> list[BuiltFile]:
        ids = pa.array(np.arange(start, start + part.num_rows, dtype=np.int64))
        base = self._table.snapshot(refresh=False).manifest
        built = self._tx.build(part.add_column(0, ID_COLUMN, ids), base.spec, base)
        self._tx.upload(built)
        return built

    def _reserve(self, rows: int) -> int:
        """The first ``_id`` of ``rows`` ids no other writer will use."""
        if self._exclusive:
            start = self._next_id
            self._next_id += rows
            return start
        table = self._table
        got: dict[str, int] = {}

        def derive(latest: Manifest) -> Manifest:
            got["start"] = latest.next_id
            return latest.successor(files=latest.files, next_id=latest.next_id + rows,
                                    created_ms=_now_ms(), operation="reserve")

        committer = table.committer
        with committer.lock, committer.begin("reserve") as tx:
            tx.publish(table.refresh(), derive)
        return got["start"]

    def commit(self, check: Callable[[], None] | None = None) -> CommitResult:
        """Publishes every part in one new version (none when the batch id was applied
        already, by this stream sent before or by another writer meanwhile). ``check``
        runs just before each publish attempt; what it raises aborts the append."""
        if self._closed:
            raise ValueError("this staged append is already committed or aborted")
        self._closed = True
        table = self._table
        if self.already_applied:
            return CommitResult(version=None, rows=0)
        last, self._last = self._last, None
        tx, batch, exclusive = self._tx, self._batch_id, self._exclusive
        staged = self._entries
        self._entries = []
        if last is None and not staged and batch is None:
            return CommitResult(version=None, rows=0)
        if not staged and check is None and not exclusive:
            # One part: an ordinary append, which shares commits with concurrent ones.
            return table.append(last if last is not None else table.schema.empty_table(),
                                batch_id=batch)
        # The last part takes the ids after the newest version's; moved up at publish
        # time if another writer took them meanwhile (its bytes are still in memory).
        assumed = self._next_id if exclusive else table.refresh().next_id
        try:
            tail = self._build(last, assumed) if last is not None else []
        except BaseException:
            tx.abandon()
            raise
        tail_rows = sum(b.entry.rows for b in tail)
        top = max((e.id_max + 1 for e in staged), default=0)

        def derive(latest: Manifest) -> Manifest | None:
            nonlocal tail, assumed
            if check is not None:
                check()
            if batch is not None and batch in latest.batches:
                return None
            if tail and not exclusive and latest.next_id != assumed:
                tail = tx.renumber(tail, latest.next_id - assumed)
                assumed = latest.next_id
            added = [replace(e, added_in=latest.version + 1)
                     for e in (*staged, *(b.entry for b in tail))]
            return latest.successor(files=(*latest.files, *added),
                                    next_id=max(latest.next_id, top, assumed + tail_rows),
                                    batches=[batch] if batch is not None else [],
                                    created_ms=_now_ms(), operation="append")

        with table.committer.lock:
            published = tx.publish(table.refresh(), derive)
        if published is None:
            return CommitResult(version=None, rows=0)
        return CommitResult(published.version, self._rows, files_added=len(staged) + len(tail))

    def abort(self) -> None:
        """Removes whatever was uploaded; the table is left as if nothing was added."""
        if self._closed:
            return
        self._closed = True
        self._last = None
        if self._entries or self._tx.intent.objects:
            self._tx.abandon()
        self._entries = []

    def __enter__(self) -> StagedAppend:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()


def _now_ms() -> int:
    return int(time.time() * 1000)
