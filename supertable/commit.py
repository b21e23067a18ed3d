"""Publishing manifests: find the latest version, and win the next one or retry.

Version N+1 is published by a create-if-absent write of its manifest object;
of several writers racing for it exactly one wins. A loser reloads the latest
manifest, re-derives its change on top of it, and tries again after a jittered
backoff, for a bounded number of attempts. A ``_latest`` hint object (written
after each win, never trusted blindly) saves readers from listing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from quiver.supertable import stats as table_stats
from quiver.supertable.errors import (
    CommitConflictError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    TableCorruptError,
    TableNotFoundError,
)
from quiver.supertable.manifest import LATEST_HINT, MANIFEST_DIR, Manifest, manifest_path
from quiver.supertable.store import ObjectStore

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.01
BACKOFF_CAP_S = 1.0


def _join(prefix: str, path: str) -> str:
    return f"{prefix}/{path}" if prefix else path


def version_exists(store: ObjectStore, prefix: str, version: int) -> bool:
    return _exists(store, _join(prefix, manifest_path(version)))


def _exists(store: ObjectStore, path: str) -> bool:
    try:
        store.head(path)
        return True
    except ObjectNotFoundError:
        return False


def read_manifest(store: ObjectStore, prefix: str, version: int) -> Manifest:
    path = _join(prefix, manifest_path(version))
    data, _ = store.get(path)
    manifest = Manifest.from_bytes(data, path)
    if manifest.version != version:
        raise TableCorruptError(f"{path} claims to be version {manifest.version}")
    return manifest


def latest_version(store: ObjectStore, prefix: str) -> int:
    """The newest published version (0 when the table has none)."""
    version = 0
    try:
        data, _ = store.get(_join(prefix, LATEST_HINT))
        version = int(data.decode().strip() or 0)
    except (ObjectNotFoundError, ValueError, UnicodeDecodeError):
        version = 0
    if version and not _exists(store, _join(prefix, manifest_path(version))):
        version = 0
    if version == 0:
        names = [m.path.rsplit("/", 1)[-1] for m in
                 store.list(_join(prefix, f"{MANIFEST_DIR}/v"))]
        versions = [int(n[1:-5]) for n in names if n.startswith("v") and n.endswith(".json")]
        version = max(versions, default=0)
    # The hint may lag behind; walk forward to the true head.
    while _exists(store, _join(prefix, manifest_path(version + 1))):
        version += 1
    return version


def load_latest(store: ObjectStore, prefix: str, table: str) -> Manifest:
    version = latest_version(store, prefix)
    if version == 0:
        raise TableNotFoundError(f"table {table!r} has no manifest under {store.uri}/{prefix}")
    return read_manifest(store, prefix, version)


def write_hint(store: ObjectStore, prefix: str, version: int) -> None:
    try:
        store.put(_join(prefix, LATEST_HINT), str(version).encode())
    except StorageError as exc:
        # Only an optimisation for readers: a stale hint is walked past.
        log.warning("could not update the latest-version hint: %s", exc)


def try_publish(store: ObjectStore, prefix: str, manifest: Manifest) -> bool:
    """Writes ``manifest`` as its version if nobody else has; True when this write won."""
    path = _join(prefix, manifest_path(manifest.version))
    payload = manifest.to_bytes()
    try:
        store.put(path, payload, mode="create")
    except ObjectExistsError:
        # A retried create can report "exists" for our own first attempt.
        try:
            existing, _ = store.get(path)
        except ObjectNotFoundError:
            return False
        if existing != payload:
            return False
    except StorageError as exc:
        # The request may have been applied although its answer was lost (a timeout, a
        # dropped connection): when our manifest is there, the write won.
        try:
            existing, _ = store.get(path)
        except StorageError:
            raise exc from None
        if existing != payload:
            return False  # another writer holds the version; ours never landed
    write_hint(store, prefix, manifest.version)
    return True


def publish(
    store: ObjectStore,
    prefix: str,
    base: Manifest,
    derive: Callable[[Manifest], Manifest | None],
    *,
    attempts: int,
    what: str,
) -> Manifest | None:
    """Publishes ``derive(latest)`` as the next version, retrying on lost races.

    ``derive`` gets the manifest to build on and returns the successor, or None
    when the change turns out to be unnecessary (then nothing is written).
    """
    current = base
    for attempt in range(1, attempts + 1):
        successor = derive(current)
        if successor is None:
            return None
        if successor.version != current.version + 1:
            raise ValueError("a successor manifest must be exactly one version ahead")
        if try_publish(store, prefix, successor):
            log.debug("%s published version %d (attempt %d)", what, successor.version, attempt)
            table_stats.add("commits")
            return successor
        table_stats.add("commit_conflicts")
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 8))
        time.sleep(delay * random.uniform(0.5, 1.5))
        current = read_manifest(store, prefix, latest_version(store, prefix))
    table_stats.add("commits_aborted")
    raise CommitConflictError(
        f"{what} lost the race for the next table version {attempts} times in a row; "
        "other writers are committing to this table continuously, retry later"
    )
