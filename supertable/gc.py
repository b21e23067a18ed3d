"""Garbage collection of a table: removing objects that no reader can still need.

Compaction, deferred index swaps and abandoned commits leave superfiles and
sidecars under ``data/`` that the latest manifest no longer names. They are
kept for a grace period so that a reader that pinned an older snapshot can
finish: a snapshot may be in use for ``grace_seconds`` after it stopped being
the latest one. So an object under ``data/`` is deleted only when all of this
holds:

- no *protected* manifest names it. Protected are the latest manifest and
  every manifest that was still the latest at some moment within the grace
  period (its successor was written less than ``grace_seconds`` ago). This is
  stricter than "created within the grace period": a version created long ago
  and replaced a minute ago is still protected, because a reader may have
  pinned it a minute ago;
- no live write-ahead intent names it (a commit in flight uploads its files
  before publishing the manifest naming them). An intent is live until it is
  older than both the grace period and the table's ``recovery_age_s`` (the
  age at which opening the table treats it as abandoned), counted from its
  last write, so even a grace of 0 leaves commits in flight alone;
- the object itself was last written more than ``grace_seconds`` ago.

Intent records that are no longer live are removed after their objects were
dealt with (the objects by the rules above). Ages are measured against
storage timestamps (``last_modified``) and this machine's clock, so the grace
period should comfortably exceed any clock skew between the two; a grace of
0 is only safe when nobody else reads or writes the table.

Iceberg metadata (``quiver.supertable.iceberg``) follows the same rules: before any
data file is deleted, a new Iceberg metadata file drops the snapshots of versions
that are not protected, and afterwards Iceberg files (manifest lists, manifests,
position delete files, older metadata files) that the newest metadata does not
use are deleted once older than the grace period.

Old manifests are kept unless ``expire_manifests`` is set. Then versions that
are neither protected nor among the newest ``keep_versions`` are deleted,
which ends time travel to them. The newest versions stay because a manifest
slot that is deleted can be written again by a create-if-absent publish: a
writer stalled longer than the grace period on a base older than the kept
versions could otherwise publish into a freed slot instead of losing the race.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from quiver.supertable import commit, interrupt
from quiver.supertable.errors import ObjectNotFoundError, StorageError
from quiver.supertable.iceberg import sync as iceberg_sync
from quiver.supertable.manifest import MANIFEST_DIR
from quiver.supertable.store import ObjectMeta
from quiver.supertable.transaction import DATA_DIR, Writable
from quiver.supertable.wal import WAL_DIR

log = logging.getLogger(__name__)

DELETE_THREADS = 8


@dataclass(frozen=True)
class GcResult:
    """What one collection removed (``objects_deleted`` and ``bytes_deleted`` count all)."""

    objects_deleted: int
    bytes_deleted: int
    manifests_deleted: int = 0
    intents_deleted: int = 0
    # Iceberg files under ``metadata/`` no retained Iceberg snapshot uses (not in the above).
    iceberg_deleted: int = 0


def _join(prefix: str, path: str) -> str:
    return f"{prefix}/{path}" if prefix else path


def _older_than(meta: ObjectMeta, cutoff: float) -> bool:
    """True only when storage says the object was last written before ``cutoff``."""
    return meta.last_modified is not None and meta.last_modified.timestamp() < cutoff


def _version_of(name: str) -> int | None:
    base = name.rsplit("/", 1)[-1]
    if base.startswith("v") and base.endswith(".json") and base[1:-5].isdigit():
        return int(base[1:-5])
    return None


def collect_garbage(table: Writable, *, grace_seconds: float = 3600.0,
                    expire_manifests: bool = False, keep_versions: int = 10) -> GcResult:
    """Deletes unreferenced objects of ``table`` older than ``grace_seconds``; see module notes."""
    if grace_seconds < 0:
        raise ValueError(f"grace_seconds must not be negative, got {grace_seconds!r}")
    if keep_versions < 1:
        raise ValueError(f"keep_versions must be at least 1, got {keep_versions!r}")
    store, prefix = table.store, table.prefix
    now = time.time()
    cutoff = now - grace_seconds
    intent_cutoff = now - max(grace_seconds, table.options.recovery_age_s)
    full_prefix = _join(prefix, "")

    # Order matters: data first, then intents, then the latest version. An object listed
    # here was uploaded under an intent that is either still listed below, or was cleared
    # after its manifest was published, and that manifest is then at most the latest.
    data = list(store.list(_join(prefix, f"{DATA_DIR}/")))
    intents = list(store.list(_join(prefix, f"{WAL_DIR}/")))
    protected: set[str] = set()
    stale_intents: list[ObjectMeta] = []
    for meta in intents:
        if _older_than(meta, intent_cutoff):
            stale_intents.append(meta)
            continue
        try:
            raw, _ = store.get(meta.path)
            protected.update(str(o) for o in json.loads(raw)["objects"])
        except ObjectNotFoundError:
            continue
        except (ValueError, KeyError, TypeError):
            # Its objects cannot be known; they still age past the grace period first.
            log.warning("ignoring unreadable intent record %s", meta.path)

    listed = {}
    for meta in store.list(_join(prefix, f"{MANIFEST_DIR}/v")):
        v = _version_of(meta.path)
        if v is not None:
            listed[v] = meta
    latest = commit.latest_version(store, prefix)
    keep_manifests = {v for v in listed if v >= latest or _still_current(listed, v, cutoff)}
    keep_manifests.add(latest)
    for v in sorted(keep_manifests):
        try:
            manifest = commit.read_manifest(store, prefix, v)
        except ObjectNotFoundError:
            if v == latest:
                raise
            continue
        for f in manifest.files:
            protected.add(f.path)
            if f.sidecar is not None:
                protected.add(f.sidecar.path)

    # Iceberg snapshots of versions about to lose their files are expired first, so the
    # Iceberg metadata never names a deleted file.
    iceberg_sync.retain_for_gc(store, prefix, table.name, keep_manifests, latest)

    doomed = [m for m in data
              if m.path[len(full_prefix):] not in protected and _older_than(m, cutoff)]
    deleted = _delete(store, doomed)
    table.pool.forget([m.path[len(full_prefix):] for m in deleted])
    gone_intents = _delete(store, stale_intents)
    gone_iceberg = _delete(store, iceberg_sync.clean_for_gc(store, prefix, cutoff))

    gone_manifests: list[ObjectMeta] = []
    if expire_manifests:
        newest_kept = latest - keep_versions + 1
        old = [m for v, m in sorted(listed.items())
               if v < newest_kept and v not in keep_manifests]
        gone_manifests = _delete(store, old)

    everything = [*deleted, *gone_intents, *gone_manifests]
    result = GcResult(objects_deleted=len(everything),
                      bytes_deleted=sum(m.size for m in everything),
                      manifests_deleted=len(gone_manifests),
                      intents_deleted=len(gone_intents),
                      iceberg_deleted=len(gone_iceberg))
    log.info("gc of %r: removed %d objects (%d bytes), %d manifests, %d intents",
             table.name, result.objects_deleted, result.bytes_deleted,
             result.manifests_deleted, result.intents_deleted)
    return result


def _still_current(listed: dict[int, ObjectMeta], version: int, cutoff: float) -> bool:
    """Whether ``version`` was the latest at some moment after ``cutoff``."""
    successor = listed.get(version + 1)
    # An unknown successor time counts as recent: protecting too much is harmless.
    return successor is None or not _older_than(successor, cutoff)


def _delete(store, metas: list[ObjectMeta]) -> list[ObjectMeta]:
    """Deletes the objects; returns the ones actually removed."""
    if not metas:
        return []

    def one(meta: ObjectMeta) -> ObjectMeta | None:
        try:
            store.delete(meta.path)
            return meta
        except StorageError as exc:
            log.warning("gc could not remove %s: %s", meta.path, exc)
            return None

    # A cancelled collection stops deleting (what it removed was unreferenced anyway).
    interrupt.check()
    if len(metas) == 1:
        done = [one(metas[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(DELETE_THREADS, len(metas))) as pool:
            done = list(pool.map(interrupt.carry(one), metas))
    return [m for m in done if m is not None]
