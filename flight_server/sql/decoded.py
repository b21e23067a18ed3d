"""Decoded live rows of superfiles, kept in memory for the SQL engine's scans.

Scanning Parquet costs its decoding every time; a table read often is better
served from memory. The first statement that reads a file of a table that fits
the budget schedules the file's live rows to be decoded in the background (that
statement itself still reads Parquet); once every file a view needs is here, the
view is an in-memory relation. A file never changes and its tombstones only grow,
so (table, file, number of tombstones) names its live rows exactly. The least
recently used files go first when the budget is exceeded; a view already
registered keeps the rows it holds until it is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from quiver.supertable import stats as table_stats

log = logging.getLogger(__name__)

Key = tuple[str, str, int]

DEFAULT_BUDGET = 1 << 30
BUDGET_ENV = "QUIVER_MEMORY_CACHE_BYTES"
# A table is decoded only when its files take at most this share of the budget, so
# one large table does not push every other table out.
TABLE_SHARE = 0.5


def default_budget() -> int:
    """The budget from ``QUIVER_MEMORY_CACHE_BYTES`` (bytes; 0 turns the cache off)."""
    text = os.environ.get(BUDGET_ENV)
    if text is None or not text.strip():
        return DEFAULT_BUDGET
    try:
        return max(0, int(text))
    except ValueError:
        log.warning("%s=%r is not a number of bytes; using %d", BUDGET_ENV, text,
                    DEFAULT_BUDGET)
        return DEFAULT_BUDGET


class DecodedRows:
    """Live rows by file, least recently used first out, within ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._rows: OrderedDict[Key, pa.Table] = OrderedDict()
        self._bytes = 0
        self._pending: set[Key] = set()
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None

    def admits(self, nbytes: int) -> bool:
        """Whether a table of about ``nbytes`` is worth keeping decoded."""
        return 0 < nbytes <= self.budget * TABLE_SHARE

    def get(self, key: Key) -> pa.Table | None:
        with self._lock:
            rows = self._rows.get(key)
            if rows is not None:
                self._rows.move_to_end(key)
        table_stats.add("decoded_misses" if rows is None else "decoded_hits")
        return rows

    def put(self, key: Key, rows: pa.Table) -> None:
        size = rows.nbytes
        if size > self.budget:
            return
        with self._lock:
            old = self._rows.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._rows[key] = rows
            self._bytes += size
            while self._bytes > self.budget and self._rows:
                _, gone = self._rows.popitem(last=False)
                self._bytes -= gone.nbytes

    def schedule(self, key: Key, load: Callable[[], pa.Table]) -> None:
        """Decodes ``load()`` into the cache in the background, once per key."""
        with self._lock:
            if key in self._rows or key in self._pending:
                return
            self._pending.add(key)
            if self._worker is None:
                # One worker: warming must not take the cores statements are using.
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="quiver-decode")
        self._worker.submit(self._load, key, load)

    def _load(self, key: Key, load: Callable[[], pa.Table]) -> None:
        try:
            self.put(key, load())
        except Exception as exc:  # a failed warm-up only means scans keep reading Parquet
            log.info("decoding %s into memory failed: %s", key[1], exc)
        finally:
            with self._lock:
                self._pending.discard(key)

    def wait(self) -> None:
        """Blocks until every scheduled decode has finished (for tests and benchmarks)."""
        with self._lock:
            worker = self._worker
        if worker is not None:
            worker.submit(lambda: None).result()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
            self._rows.clear()
            self._bytes = 0
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)
