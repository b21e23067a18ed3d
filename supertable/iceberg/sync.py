"""Keeping a table's Iceberg metadata at its newest version, and expiring it for gc.

``after_commit`` runs after every published version. It loads the newest
Iceberg metadata and writes a snapshot for each Quiver version it lacks, up to
the one just published (at most ``MAX_CATCH_UP`` of them; further behind, only
the newest), each as the next metadata file. A failure is logged and never
undoes or fails the Quiver commit: the next commit, or opening the table, finds
the metadata behind and writes what is missing. Iceberg metadata is written only
after the Quiver version is published, so an Iceberg reader never sees a state
Quiver's readers cannot.

``retain_for_gc`` writes metadata that keeps only the snapshots whose files gc
keeps, before gc deletes anything; ``clean_for_gc`` then removes Iceberg files no
retained snapshot refers to, except the newest metadata file a REST catalog wrote
there. Tables on ``memory://`` roots (nothing outside the process can read them) and
tables with a column Iceberg cannot describe get no Iceberg metadata;
``QUIVER_ICEBERG=off`` turns it off everywhere.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from quiver.supertable import commit
from quiver.supertable.errors import ObjectNotFoundError, StorageError
from quiver.supertable.iceberg import metadata
from quiver.supertable.iceberg.folder import METADATA_DIR, Folder
from quiver.supertable.iceberg.schema import UnsupportedTypeError, iceberg_schema
from quiver.supertable.manifest import Manifest
from quiver.supertable.store import ObjectMeta, ObjectStore

# pyiceberg (a second to import) is loaded only when metadata is written or read whole:
# opening a table whose metadata is current needs none of it.
if TYPE_CHECKING:
    from pyiceberg.manifest import ManifestFile

    from quiver.supertable.iceberg.io import StoreFileIO
    from quiver.supertable.iceberg.snapshot import Previous

log = logging.getLogger(__name__)

ENV = "QUIVER_ICEBERG"
_OURS = re.compile(r"/v\d+\.metadata\.json$")
MAX_CATCH_UP = 20
PUBLISH_ATTEMPTS = 8


def enabled(store: ObjectStore) -> bool:
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return False
    return not store.uri.startswith("memory://")


def folder_for(store: ObjectStore, prefix: str) -> Folder:
    prefix = prefix.strip("/")
    base = store.uri.rstrip("/")
    return Folder(store, prefix, f"{base}/{prefix}" if prefix else base)


def metadata_location(store: ObjectStore, prefix: str) -> str | None:
    """The newest Iceberg metadata file of the table, or None when it has none."""
    if not enabled(store):
        return None
    folder = folder_for(store, prefix)
    number = metadata.latest_number(folder)
    return folder.uri(metadata.metadata_name(number)) if number else None


def after_commit(store: ObjectStore, prefix: str, name: str, manifest: Manifest) -> None:
    """Brings the Iceberg metadata up to ``manifest``'s version; logs instead of raising."""
    if not enabled(store):
        return
    try:
        sync(store, prefix, name, manifest)
    except UnsupportedTypeError as exc:
        log.debug("table %r has no Iceberg metadata: %s", name, exc)
    except Exception as exc:
        log.warning("Iceberg metadata of table %r not written for version %d (written with a "
                    "later commit or when the table is next opened): %s",
                    name, manifest.version, exc)


def _current(state: tuple[int, dict[str, Any]] | None) -> int:
    if state is None:
        return 0
    current = state[1].get("current-snapshot-id")
    return int(current) if current is not None and current >= 0 else 0


def _io(folder: Folder) -> StoreFileIO:
    from quiver.supertable.iceberg.io import StoreFileIO

    return StoreFileIO(folder.store, folder.location, folder.prefix)


def _manifest_files(folder: Folder, doc: dict[str, Any], snapshot_id: int) -> list[ManifestFile]:
    from quiver.supertable.iceberg.snapshot import read_manifest_list

    for s in doc.get("snapshots", []):
        if s["snapshot-id"] == snapshot_id:
            return read_manifest_list(_io(folder), s["manifest-list"])
    raise ObjectNotFoundError(f"snapshot {snapshot_id} is not in the table metadata")


def _previous(folder: Folder, state: tuple[int, dict[str, Any]] | None, fmt: int
              ) -> Previous | None:
    current = _current(state)
    if state is None or current == 0 or state[1].get("location") != folder.location:
        # No snapshot, or the folder was copied or moved: every path in it is elsewhere.
        return None
    if state[1].get("format-version", 2) != fmt:
        return None
    try:
        from quiver.supertable.iceberg.snapshot import Previous

        quiver = commit.read_manifest(folder.store, folder.prefix, current)
        return Previous(current, quiver, _manifest_files(folder, state[1], current))
    except ObjectNotFoundError:
        # Its Quiver manifest or manifest list is gone: the next snapshot is written whole.
        return None


def sync(store: ObjectStore, prefix: str, name: str, target: Manifest) -> None:
    """Writes Iceberg snapshots for the versions after the newest one up to ``target``."""
    folder = folder_for(store, prefix)
    if _current(metadata.load(folder)) >= target.version:
        return
    schema_json = iceberg_schema(target.schema)
    from pyiceberg.schema import Schema

    from quiver.supertable.iceberg.snapshot import Previous, format_of, write_snapshot

    schema = Schema.model_validate(schema_json)
    fmt = format_of(target)
    for _ in range(PUBLISH_ATTEMPTS):
        state = metadata.load(folder)
        current = _current(state)
        if current >= target.version:
            return
        start = current + 1 if target.version - current <= MAX_CATCH_UP else target.version
        previous = _previous(folder, state, fmt) if start == current + 1 else None
        for version in range(start, target.version + 1):
            try:
                manifest = (target if version == target.version
                            else commit.read_manifest(store, folder.prefix, version))
            except ObjectNotFoundError:
                continue
            written = write_snapshot(folder, schema, manifest, previous, fmt,
                                     metadata.next_row_id(state))
            number = state[0] + 1 if state else 1
            doc = metadata.build(folder, manifest, state, written.entry, name,
                                 int(time.time() * 1000), fmt, written.next_row_id)
            if not metadata.publish(folder, number, doc):
                break  # another writer published this number: start again from it
            state = (number, doc)
            previous = Previous(version, manifest, written.manifests, written.deletes)
        else:
            return
    log.warning("Iceberg metadata of table %r: lost the race for the next metadata file %d "
                "times", name, PUBLISH_ATTEMPTS)


# -- gc ------------------------------------------------------------------------------------


def retain_for_gc(store: ObjectStore, prefix: str, name: str, keep: set[int],
                  latest: int) -> None:
    """Publishes metadata listing only snapshots of versions in ``keep`` or after ``latest``.

    Runs before gc deletes data files, so no retained snapshot names a deleted file.
    """
    if not enabled(store):
        return
    folder = folder_for(store, prefix)
    for _ in range(PUBLISH_ATTEMPTS):
        state = metadata.load(folder)
        if state is None:
            return
        number, doc = state
        snapshots = doc.get("snapshots", [])
        retained = [s for s in snapshots if s["snapshot-id"] in keep or s["snapshot-id"] > latest]
        if len(retained) == len(snapshots):
            return
        if not retained:
            # Nothing Iceberg lists survives (it is behind): bring it to the latest version.
            sync(store, prefix, name, commit.read_manifest(store, folder.prefix, latest))
            continue
        manifest = commit.read_manifest(store, folder.prefix, retained[-1]["snapshot-id"])
        new = metadata.document(folder, manifest, doc["schemas"][-1], retained, state, name,
                                max(int(time.time() * 1000), doc["last-updated-ms"]),
                                doc.get("format-version", 2), doc.get("next-row-id"))
        if metadata.publish(folder, number + 1, new):
            return
    raise StorageError(f"could not expire the Iceberg snapshots of table {name!r}: other "
                       "writers kept publishing metadata")


def referenced(folder: Folder, doc: dict[str, Any]) -> set[str]:
    """Paths (relative to the table folder) of the Iceberg files ``doc``'s snapshots use."""
    from pyiceberg.manifest import ManifestContent, read_manifest_list

    io = _io(folder)
    out: set[str] = set()
    for s in doc.get("snapshots", []):
        out.add(folder.rel(s["manifest-list"]))
        for mf in read_manifest_list(io.new_input(s["manifest-list"])):
            out.add(folder.rel(mf.manifest_path))
            if mf.content == ManifestContent.DELETES:
                for entry in mf.fetch_manifest_entry(io, discard_deleted=True):
                    out.add(folder.rel(entry.data_file.file_path))
    return out


def _newest_catalog_file(folder: Folder, listed: list[ObjectMeta]) -> set[str]:
    """The newest metadata file a catalog wrote in the folder (a REST catalog commit writes
    its own, and points at it until the table's next commit), as a path to keep."""
    theirs = [(m, modified) for m in listed if m.path.endswith(".metadata.json")
              and not _OURS.search(m.path) and (modified := m.last_modified) is not None]
    if not theirs:
        return set()
    newest, _ = max(theirs, key=lambda pair: pair[1])
    return {newest.path[len(folder.path("")):]}


def clean_for_gc(store: ObjectStore, prefix: str, cutoff: float) -> list[ObjectMeta]:
    """Iceberg files under ``metadata/`` that the newest metadata does not use and that were
    written before ``cutoff``: these are the ones to delete. Older metadata files go too."""
    if not enabled(store):
        return []
    folder = folder_for(store, prefix)
    state = metadata.load(folder)
    if state is None:
        return []
    number, doc = state
    keep = referenced(folder, doc) | {metadata.HINT, metadata.metadata_name(number)}
    keep |= {folder.rel(e["metadata-file"]) for e in doc.get("metadata-log", [])
             if e["timestamp-ms"] / 1000 >= cutoff}
    listed = list(store.list(folder.path(f"{METADATA_DIR}/")))
    keep |= _newest_catalog_file(folder, listed)
    doomed = []
    for meta in listed:
        rel = meta.path[len(folder.path("")):]
        if rel in keep:
            continue
        if meta.last_modified is not None and meta.last_modified.timestamp() < cutoff:
            doomed.append(meta)
    return doomed
