"""Write validation: did a commit published after a write's snapshot change what it read?

A write that computed its change from one snapshot (SQL UPDATE and DELETE, ``replace_rows``
with a read version) carries a ``ReadSet``: the version it read, the ``_id`` of every row
it read (matched), and how it chose them. Before it publishes on top of a newer version,
every commit in between is examined, one manifest step at a time:

- a commit that tombstoned one of the read rows (deleted it, or wrote a new version of
  it) conflicts;
- for a write whose rows were chosen by a predicate, a commit that added rows the
  predicate matches (an insert, or a new version of another row) conflicts, since the
  write would now have to touch them too;
- for a write that read more of the table than the rows it matched (a subquery over the
  same table), every commit that added or tombstoned rows conflicts.

Compaction and index builds (``optimize``, ``index``) move rows without changing them and
never conflict. Appends carry no read set and never conflict with each other. A conflict
is reported as ``WriteConflictError``; the caller runs its statement again on the new
version, which re-evaluates its predicate there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from quiver.supertable.manifest import FileEntry, Manifest, bitmap_rows

# Operations that rewrite rows without changing any row's values.
CONTENT_PRESERVING = frozenset({"optimize", "index"})

# Tells whether any live row of the given files (as of the given manifest) matches the
# write's predicate.
AddedMatcher = Callable[[Manifest, Sequence[FileEntry]], bool]


@dataclass
class ReadSet:
    """What one write read: the snapshot version and the rows, by ``_id``."""

    version: int
    ids: np.ndarray
    # Rows added after ``version`` conflict when this says the predicate matches them;
    # None when the write's rows were named by ``_id`` and added rows cannot matter.
    matches_added: AddedMatcher | None = None
    # The write read more than its matched rows: any commit changing rows conflicts.
    any_change: bool = False
    # Versions up to this one were already checked (a lost publish race re-checks less).
    checked: int = field(default=-1)

    def __post_init__(self) -> None:
        self.ids = np.unique(np.asarray(self.ids, dtype=np.int64))
        if self.checked < self.version:
            self.checked = self.version


IdsOf = Callable[[Manifest, FileEntry, np.ndarray], np.ndarray]
LoadManifest = Callable[[int], Manifest]


def find_conflict(read: ReadSet, latest: Manifest, load: LoadManifest,
                  ids_of: IdsOf) -> str | None:
    """Why a commit after ``read.version`` up to ``latest`` conflicts with the write, or
    None. Advances ``read.checked`` over the versions that passed."""
    if latest.version <= read.checked:
        return None
    prev = load(read.checked)
    for version in range(read.checked + 1, latest.version + 1):
        cur = latest if version == latest.version else load(version)
        reason = _step_conflict(read, prev, cur, ids_of)
        if reason is not None:
            return f"version {version} ({cur.operation}) {reason}"
        read.checked = version
        prev = cur
    return None


def _step_conflict(read: ReadSet, prev: Manifest, cur: Manifest, ids_of: IdsOf) -> str | None:
    if cur.operation in CONTENT_PRESERVING:
        return None
    before = {f.path: f for f in prev.files}
    after = {f.path for f in cur.files}
    added = [f for f in cur.files if f.path not in before]
    gone: list[tuple[Manifest, FileEntry, np.ndarray]] = []
    for f in cur.files:
        old = before.get(f.path)
        if old is not None and len(f.tombstones) > len(old.tombstones):
            gone.append((cur, f, bitmap_rows(f.tombstones - old.tombstones)))
    for path, old in before.items():
        if path not in after and old.live_rows:
            live = np.setdiff1d(np.arange(old.rows, dtype=np.uint32),
                                bitmap_rows(old.tombstones))
            gone.append((prev, old, live))
    if read.any_change and (gone or added):
        return "changed rows of the table this write read"
    if read.ids.size:
        lo, hi = int(read.ids[0]), int(read.ids[-1])
        for manifest, entry, local in gone:
            if entry.id_max < lo or entry.id_min > hi or not local.size:
                continue
            hit = np.intersect1d(ids_of(manifest, entry, local), read.ids)
            if hit.size:
                return f"changed or deleted row(s) with _id {hit[:5].tolist()} this write read"
    if read.matches_added is not None and added:
        live_added = [f for f in added if f.live_rows]
        if live_added and read.matches_added(cur, live_added):
            return "added rows this write's condition matches"
    return None
