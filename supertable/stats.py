"""Process-wide counters of the table layer, read by whoever exports metrics.

The table layer counts what only it sees (commits, lost commit races, disk cache
lookups); it knows nothing of how the numbers are exported. Names in use:

- ``commits``: table versions published;
- ``commit_conflicts``: attempts that lost the race for the next version (retried);
- ``commits_aborted``: commits that gave up after their retries (``CommitConflictError``);
- ``disk_cache_hits`` / ``disk_cache_misses``: superfile lookups in the disk cache;
- ``decoded_hits`` / ``decoded_misses``: lookups of a file's decoded rows in memory.
"""

from __future__ import annotations

import threading
from collections import Counter

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def add(name: str, amount: int = 1) -> None:
    """Adds ``amount`` to counter ``name``."""
    with _lock:
        _counts[name] += amount


def snapshot() -> dict[str, int]:
    """Every counter's value now."""
    with _lock:
        return dict(_counts)


def value(name: str) -> int:
    """One counter's value now (0 when never counted)."""
    with _lock:
        return _counts[name]
