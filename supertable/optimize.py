"""Compaction of a table: small and tombstone-heavy superfiles rewritten into balanced ones.

``optimize`` picks the files worth rewriting (too few live rows, or too many
tombstoned ones), reads their live rows, and writes them again as new
superfiles sorted by ``_id`` with the tombstoned rows gone and every ``_id``
kept. The new files replace the old ones in one manifest published through
the table's ordinary commit path (one ``quiver.supertable.transaction``), so a crash at
any step leaves the table as it was before or after, never in between. The
replaced files stay on storage until ``gc`` removes them after its grace
period, so readers of older snapshots keep working.

Which files are rewritten:

- *small*: fewer live rows than ``target_rows`` (default half of the table's
  ``max_rows_per_file``), when at least two such files exist, or one of them
  also has tombstones;
- *sparse*: a live fraction below ``min_live_fraction``, whatever their size
  (a file with no live rows at all is simply dropped).

Chosen files are merged in ``_id`` order, in groups of about
``max_rows_per_file`` live rows read into memory at a time; each group is
written as ``max(1, rows // target_rows)`` balanced files (more if that would
exceed ``max_rows_per_file``), so every output file holds at least
``target_rows`` rows unless the group itself is smaller, and a second
``optimize`` right after the first finds nothing to do.

Concurrent writers: the commit re-derives its manifest from the latest
version. Every source file must still be there; a source file that gained
tombstones meanwhile (a concurrent delete or update) has them carried over to
the new files by ``_id``, so a row deleted during the rewrite is never brought
back. If a source file has disappeared (another optimize replaced it), the
rewrite is discarded and planned again from the latest version, a bounded
number of times.

What stays identical: ``to_arrow`` (same rows, same ``_id`` values) and the
set of live rows every search can return. BM25 scores: a rewritten file holds
only live rows, so afterwards every score equals that of one file built from
the table's live rows (the single-file oracle), to float rounding (1e-5
relative). When nothing was tombstoned the scores before were the same; when
rows were dropped, scores before equal the oracle only as far as the table's
statistics already left tombstoned rows out, and ranks move with any
difference. Vector distances are exact per row; which rows an approximate
(IVF) search visits depends on how rows are grouped into files, so
approximate vector results can differ within the index's recall, while
exhaustive ones (small files, or enough probes) do not.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from quiver.root_error import QuiverError
from quiver.supertable import interrupt
from quiver.supertable.manifest import ID_COLUMN, FileEntry, Manifest
from quiver.supertable.snapshot import Snapshot
from quiver.supertable.transaction import Sharding, Transaction, Writable

log = logging.getLogger(__name__)

# Re-planning rounds when another compaction replaced our source files first.
MAX_PLAN_ROUNDS = 3


@dataclass(frozen=True)
class OptimizeResult:
    """What one ``optimize`` published; ``version`` is None when nothing was rewritten."""

    version: int | None
    files_removed: int
    files_added: int
    rows_rewritten: int
    tombstones_dropped: int


@dataclass
class _Source:
    """One file being rewritten, as it was when its rows were read."""

    entry: FileEntry
    # ``_id`` of every local row of the file (tombstoned ones too), to carry new tombstones.
    ids: np.ndarray | None = None


class _SourcesChanged(QuiverError):
    """A source file is no longer in the latest manifest: plan again."""


def _live_fraction(entry: FileEntry) -> float:
    return entry.live_rows / entry.rows if entry.rows else 0.0


def choose_files(manifest: Manifest, target_rows: int, min_live_fraction: float
                 ) -> list[FileEntry]:
    """The files ``optimize`` would rewrite, in ``_id`` order."""
    sparse = [f for f in manifest.files if _live_fraction(f) < min_live_fraction]
    sparse_paths = {f.path for f in sparse}
    small = [f for f in manifest.files
             if f.path not in sparse_paths and f.live_rows < target_rows]
    # A lone small clean file would be rewritten into an identical one.
    if len(small) == 1 and not small[0].tombstones and not sparse:
        small = []
    return sorted([*sparse, *small], key=lambda f: (f.id_min, f.path))


def _groups(files: list[FileEntry], group_rows: int) -> list[list[FileEntry]]:
    """Consecutive runs of files holding about ``group_rows`` live rows each."""
    groups: list[list[FileEntry]] = []
    current: list[FileEntry] = []
    rows = 0
    for f in files:
        current.append(f)
        rows += f.live_rows
        if rows >= group_rows:
            groups.append(current)
            current, rows = [], 0
    if current:
        lone_clean = len(current) == 1 and not current[0].tombstones
        if groups and (lone_clean or rows < group_rows // 4):
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def _output_cap(rows: int, target_rows: int, max_rows_per_file: int) -> int:
    """The most rows one output file of a group may hold, for balanced outputs."""
    count = max(1, rows // max(1, target_rows), math.ceil(rows / max(1, max_rows_per_file)))
    return max(1, math.ceil(rows / count))


def _read_live(table: Writable, snap: Snapshot, sources: list[_Source]) -> pa.Table:
    """The group's live rows, ``_id`` first, sorted by ``_id``."""
    parts = []
    for src in sources:
        if src.entry.live_rows == 0:
            continue
        full = snap.conform(snap.reader(src.entry).read_table([ID_COLUMN, *snap.schema.names]))
        src.ids = full.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if src.entry.tombstones:
            keep = np.ones(src.entry.rows, dtype=bool)
            keep[np.asarray(src.entry.tombstones.to_array(), dtype=np.int64)] = False
            full = full.filter(pa.array(keep))
        parts.append(full)
    if not parts:
        return pa.Table.from_batches([], schema=snap.manifest.schema)
    return pa.concat_tables(parts).sort_by(ID_COLUMN)


def optimize(table: Writable, *, target_rows: int | None = None,
             min_live_fraction: float = 0.8) -> OptimizeResult:
    """Rewrites small and tombstone-heavy files of ``table``; see the module notes."""
    opts = table.options
    target = max(1, opts.max_rows_per_file // 2 if target_rows is None else int(target_rows))
    if not 0.0 <= min_live_fraction <= 1.0:
        raise ValueError(f"min_live_fraction must lie in [0, 1], got {min_live_fraction!r}")
    return merge_files(table, lambda m: choose_files(m, target, min_live_fraction),
                       target_rows=target)


def _stop_point(what: str) -> None:
    """A point where an ``optimize`` asked for by someone (the command line, a server's
    action) stops when its interrupt fired. Folds and background compactions run on
    regardless: they finish work that writes already committed."""
    if what == "optimize":
        interrupt.check()


def merge_files(table: Writable, choose: Callable[[Manifest], list[FileEntry]], *,
                target_rows: int | None = None, what: str = "optimize") -> OptimizeResult:
    """Rewrites the files ``choose`` picks from the latest version (as ``optimize`` does
    its own choice), planning again when another compaction replaced one of them first.
    ``what`` names the work in logs (the write log's fold, the background compactor)."""
    opts = table.options
    target = max(1, opts.max_rows_per_file // 2 if target_rows is None else int(target_rows))
    for round_ in range(1, MAX_PLAN_ROUNDS + 1):
        try:
            return _merge_once(table, target, choose, what)
        except _SourcesChanged as exc:
            log.info("%s of %r: source %s changed under it (round %d); planning again",
                     what, table.name, exc, round_)
    return OptimizeResult(None, 0, 0, 0, 0)


def _merge_once(table: Writable, target: int, choose: Callable[[Manifest], list[FileEntry]],
                what: str) -> OptimizeResult:
    base = table.refresh()
    chosen = sorted(choose(base), key=lambda f: (f.id_min, f.path))
    if not chosen:
        return OptimizeResult(None, 0, 0, 0, 0)
    with table.committer.begin("optimize") as tx:
        return _rewrite(table, tx, base, chosen, target, what)


def _rewrite(table: Writable, tx: Transaction, base: Manifest, chosen: list[FileEntry],
             target: int, what: str) -> OptimizeResult:
    snap = Snapshot(base, table.pool, table.name)
    opts = table.options
    sources: list[_Source] = []
    built_entries: list[FileEntry] = []
    built_ids: list[np.ndarray] = []
    started = time.monotonic()
    for group in _groups(chosen, max(1, opts.max_rows_per_file)):
        _stop_point(what)
        group_sources = [_Source(f) for f in group]
        sources += group_sources
        rows = _read_live(table, snap, group_sources)
        if rows.num_rows == 0:
            continue
        cap = _output_cap(rows.num_rows, target, opts.max_rows_per_file)
        # Exactly the balanced outputs above: no extra split for the build workers.
        built = tx.build(rows, base.spec, base,
                         sharding=Sharding(max_rows_per_file=cap, min_rows_per_shard=None))
        tx.upload(built)
        built_entries += [b.entry for b in built]
        built_ids.append(rows.column(0).to_numpy(zero_copy_only=False).astype(np.int64))
        del built, rows
    # Nothing is published when the work was cancelled while the files were built (the
    # transaction abandons what it uploaded).
    _stop_point(what)
    all_ids = np.concatenate(built_ids) if built_ids else np.zeros(0, np.int64)
    # Each output file is sorted by ``_id``, but id ranges of groups may overlap (rows of
    # updates keep old ids), so lookups go through one global sort.
    order = np.argsort(all_ids, kind="stable")
    sorted_ids = all_ids[order]
    source_paths = {s.entry.path for s in sources}
    outcome: dict[str, int] = {}

    def derive(latest: Manifest) -> Manifest | None:
        entries, dropped = _carry_tombstones(latest, sources, built_entries, all_ids,
                                                     order, sorted_ids)
        outcome["dropped"] = dropped - sum(len(e.tombstones) for e in entries)
        entries = [replace(e, added_in=latest.version + 1) for e in entries]
        kept = [f for f in latest.files if f.path not in source_paths]
        return latest.successor(files=(*kept, *entries), created_ms=int(time.time() * 1000),
                                operation="optimize")

    published = tx.publish(base, derive)
    if published is None:
        return OptimizeResult(None, 0, 0, 0, 0)
    table.pool.forget(sorted(source_paths))
    rewritten = sum(e.rows for e in built_entries)
    log.info("%s of %r: %d files -> %d, %d rows rewritten in %.2fs (version %d)",
             what, table.name, len(sources), len(built_entries), rewritten,
             time.monotonic() - started, published.version)
    return OptimizeResult(published.version, len(sources), len(built_entries), rewritten,
                          max(0, outcome.get("dropped", 0)))


def _carry_tombstones(latest: Manifest, sources: list[_Source],
                              built_entries: list[FileEntry], all_ids: np.ndarray,
                              order: np.ndarray, sorted_ids: np.ndarray,
                              ) -> tuple[list[FileEntry], int]:
    """New entries carrying the tombstones sources gained since they were read, by ``_id``.

    Returns the entries and how many tombstones the sources have in ``latest``.
    """
    gained_ids: list[np.ndarray] = []
    dropped = 0
    for src in sources:
        now = latest.file(src.entry.path)
        if now is None or not now.tombstones.issuperset(src.entry.tombstones):
            raise _SourcesChanged(src.entry.path)
        dropped += len(now.tombstones)
        gained = now.tombstones - src.entry.tombstones
        if gained and src.ids is not None:
            local = np.asarray(gained.to_array(), dtype=np.int64)
            gained_ids.append(src.ids[local])
    entries = list(built_entries)
    if not gained_ids or not entries:
        return entries, dropped
    ids = np.concatenate(gained_ids)
    at = np.searchsorted(sorted_ids, ids)
    found = at < len(sorted_ids)
    found[found] = sorted_ids[at[found]] == ids[found]
    # Positions in the concatenated outputs, then the output file and its local row.
    pos = order[at[found]]
    starts = np.cumsum([0, *[e.rows for e in entries]])
    which = np.searchsorted(starts, pos, side="right") - 1
    for i in np.unique(which):
        local = (pos[which == i] - starts[i]).astype(np.uint32)
        entries[int(i)] = entries[int(i)].with_tombstones(BitMap(local))
    return entries, dropped
