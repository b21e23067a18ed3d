"""How a table writes and searches: ``TableOptions``, shared by the table and its writers.

Kept apart from ``quiver.supertable.table`` so that the modules the table drives (the
commit path, the indexer, compaction, upkeep, garbage collection) can read a table's
options without importing the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quiver.superfile import WriterOptions


@dataclass(frozen=True)
class TableOptions:
    """How a table writes and searches."""

    max_rows_per_file: int = 1_000_000
    # Commits of at least this many rows per worker are split across the build workers.
    min_rows_per_shard: int = 50_000
    build_threads: int = 2
    search_threads: int = 2
    commit_attempts: int = 12
    # Intents older than this are treated as abandoned by a crashed writer on open.
    recovery_age_s: float = 3600.0
    writer: WriterOptions = field(default_factory=WriterOptions)
    # Local disk cache of superfiles on remote roots (see ``quiver.supertable.cache``): None picks
    # ``$QUIVER_CACHE_DIR`` or a per-user temp dir; ``cache_bytes`` None means up to 4 GiB
    # (at most half the free disk), 0 turns the cache off.
    cache_dir: str | None = None
    cache_bytes: int | None = None
    # Build the indexes of deferred appends on a background thread after they commit.
    background_indexing: bool = True
    # Rows buffered by ``append(commit=False)`` are published once they reach either bound.
    buffer_max_rows: int = 1_000_000
    buffer_max_bytes: int = 256 << 20
    # Appends arriving together in this process share one commit; the one that commits
    # first waits this long for others to join (0: only those queued meanwhile join).
    group_commit_window_s: float = 0.0
    # Reads may use a version checked this recently instead of asking storage again;
    # 0 checks on every read. This table's own commits are always seen at once. None:
    # ``REMOTE_MAX_STALENESS_S`` on object storage, where each check is a round trip
    # that costs more than a warm search, and 0 on memory and local roots.
    max_staleness_s: float | None = None
    # The write log (see ``quiver.supertable.maintain``): a commit of at most this many rows is
    # written as a log file without indexes (searchable at once by exact scan) and later
    # folded into an indexed superfile; 0 turns the write log off.
    write_log_rows: int = 0
    # Log files are folded once any of these is reached: their live rows, their bytes,
    # their number, or the age of the oldest (seconds).
    fold_rows: int = 50_000
    fold_bytes: int = 64 << 20
    fold_files: int = 64
    fold_age_s: float = 1.0
    # The background compactor: size-tiered merges of small superfiles while writes go
    # on, and one merge of all small files once the table had no commit for
    # ``compact_idle_s``; replaced files are deleted ``retire_grace_s`` after.
    compaction: bool = False
    compact_fan_in: int = 4
    compact_idle_s: float = 5.0
    retire_grace_s: float = 300.0


# How old a checked version may be on object storage unless a table says otherwise: short
# enough that another server's commit shows within a blink, long enough that a busy server
# asks storage a few times a second per table instead of once per statement.
REMOTE_MAX_STALENESS_S = 0.2


def staleness_allowed(store: object, options: TableOptions) -> float:
    """Seconds a read may rely on the last check for a newer version (see ``TableOptions``)."""
    if options.max_staleness_s is not None:
        return options.max_staleness_s
    local = getattr(store, "kind", "remote") in ("memory", "local")
    return 0.0 if local else REMOTE_MAX_STALENESS_S
