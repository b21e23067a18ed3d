"""Write-ahead intent records: what a commit in flight has put on storage.

Before a writer uploads anything it records an intent (``_wal/<txid>.json``)
naming the objects it will create; after its manifest is published (or the
change turns out to be unnecessary) it removes the record. A record left
behind by a crashed writer is resolved on a later open: objects the latest
manifest references were committed and stay; the rest are removed, so a
crash at any step leaves either the whole change or none of it, and no
garbage.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from quiver.supertable.errors import ObjectNotFoundError, StorageError
from quiver.supertable.manifest import Manifest, manifest_path
from quiver.supertable.store import ObjectStore

log = logging.getLogger(__name__)

WAL_DIR = "_wal"
# Versions are searched back to this long before an intent was written, for clock skew
# between the writers whose manifests lie in between.
CLOCK_SLACK_MS = 10 * 60 * 1000


def _join(prefix: str, path: str) -> str:
    return f"{prefix}/{path}" if prefix else path


@dataclass
class Intent:
    """One writer's in-flight change."""

    operation: str
    txid: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    objects: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{WAL_DIR}/{self.txid}.json"

    def to_bytes(self) -> bytes:
        return json.dumps({"operation": self.operation, "txid": self.txid,
                           "created_ms": self.created_ms, "objects": self.objects}).encode()


class IntentLog:
    """Records, clears and recovers intents of one table."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def record(self, intent: Intent) -> None:
        """Writes (or rewrites, as objects are added) the intent; durable on return."""
        self._store.put(_join(self._prefix, intent.path), intent.to_bytes())

    def clear(self, intent: Intent) -> None:
        self._store.delete(_join(self._prefix, intent.path))

    def recover(self, latest: Manifest, older_than_s: float) -> int:
        """Resolves intents older than ``older_than_s``; returns how many were resolved."""
        live = {f.path for f in latest.files}
        live |= {f.sidecar.path for f in latest.files if f.sidecar is not None}
        now_ms = time.time() * 1000
        resolved = 0
        for meta in list(self._store.list(_join(self._prefix, f"{WAL_DIR}/"))):
            try:
                data, _ = self._store.get(meta.path)
                doc = json.loads(data)
                created, objects = float(doc["created_ms"]), list(doc["objects"])
            except ObjectNotFoundError:
                continue
            except (ValueError, KeyError, TypeError):
                log.warning("removing unreadable intent record %s", meta.path)
                self._store.delete(meta.path)
                continue
            if now_ms - created < older_than_s * 1000:
                continue
            published = self._published_since(latest, set(objects) - live, created)
            for obj in objects:
                if obj not in live and obj not in published:
                    try:
                        self._store.delete(_join(self._prefix, obj))
                    except StorageError as exc:
                        log.warning("could not remove %s of an abandoned commit: %s", obj, exc)
            self._store.delete(meta.path)
            resolved += 1
        return resolved

    def _published_since(self, latest: Manifest, objects: set[str],
                         created_ms: float) -> set[str]:
        """Which of ``objects`` a version older than ``latest`` names: a commit that was
        published and then compacted away is garbage for GC (older snapshots may still read
        it), not an abandoned write. When that history is gone, all of them are kept."""
        found: set[str] = set()
        version = latest.version - 1
        while version >= 1 and objects - found:
            path = _join(self._prefix, manifest_path(version))
            try:
                data, _ = self._store.get(path)
                older = Manifest.from_bytes(data, path)
            except ObjectNotFoundError:
                return set(objects)
            if older.created_ms and older.created_ms < created_ms - CLOCK_SLACK_MS:
                break
            for f in older.files:
                found.add(f.path)
                if f.sidecar is not None:
                    found.add(f.sidecar.path)
            version -= 1
        return found & objects
