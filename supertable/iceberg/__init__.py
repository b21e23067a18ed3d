"""Every table is also an Iceberg table: format-version 2 (or 3) metadata in ``metadata/``.

For each published version the table's folder gets a snapshot (manifest list,
Avro manifests, one Parquet position delete file per deleting commit, or with format
version 3, asked for when the table is created, deletion vectors in a Puffin file) and a new
``v<N>.metadata.json`` named by ``version-hint.text``, describing exactly the live
rows of that version, so DuckDB's ``iceberg_scan``, pyiceberg, Spark or Trino read
what ``SELECT *`` returns. Snapshot ids are Quiver versions. The hidden ``_id``
column is not in the Iceberg schema.

The table layer calls the functions here; pyiceberg is imported only when they run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quiver.supertable.manifest import Manifest
    from quiver.supertable.store import ObjectStore

log = logging.getLogger(__name__)

# The content of a metadata file, read through the table's own store when called.
Document = Callable[[], dict[str, Any]]
# Called as listener(table name, metadata location, document) once a commit's metadata is
# written.
Listener = Callable[[str, str, Document], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Calls ``listener(name, metadata_location, document)`` after each commit's Iceberg
    metadata is written in this process (a server keeping a catalog current uses this);
    ``document()`` reads that metadata file's JSON through the table's store."""
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def after_commit(store: ObjectStore, prefix: str, name: str, manifest: Manifest) -> None:
    """Writes the Iceberg metadata of a version just published; never raises."""
    from quiver.supertable.iceberg import sync

    if sync.enabled(store):
        sync.after_commit(store, prefix, name, manifest)
        if _listeners:
            _notify(store, prefix, name)


def _notify(store: ObjectStore, prefix: str, name: str) -> None:
    try:
        location = metadata_location(store, prefix)
    except Exception as exc:
        log.warning("Iceberg metadata location of table %r not read: %s", name, exc)
        return
    if location is None:
        return
    for listener in list(_listeners):
        try:
            listener(name, location, lambda: document(store, prefix, location))
        except Exception as exc:
            log.warning("Iceberg listener failed for table %r: %s", name, exc)


def metadata_location(store: ObjectStore, prefix: str) -> str | None:
    """The newest Iceberg metadata file of the table under ``prefix``, if any."""
    from quiver.supertable.iceberg import sync

    return sync.metadata_location(store, prefix)


def document(store: ObjectStore, prefix: str, location: str) -> dict[str, Any]:
    """The JSON of the table's metadata file at ``location``, read through ``store``."""
    import json

    from quiver.supertable.iceberg import sync

    folder = sync.folder_for(store, prefix)
    data, _ = store.get(folder.path(folder.rel(location)))
    return json.loads(data)
