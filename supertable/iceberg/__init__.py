"""Every table is also an Iceberg table: format-version 2 metadata in its folder's ``metadata/``.

For each published version the table's folder gets a snapshot (manifest list,
Avro manifests, Parquet position delete files for tombstones) and a new
``v<N>.metadata.json`` named by ``version-hint.text``, describing exactly the live
rows of that version, so DuckDB's ``iceberg_scan``, pyiceberg, Spark or Trino read
what ``SELECT *`` returns. Snapshot ids are Quiver versions. The hidden ``_id``
column is not in the Iceberg schema.

The table layer calls the functions here; pyiceberg is imported only when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supertable.manifest import Manifest
    from supertable.store import ObjectStore


def after_commit(store: ObjectStore, prefix: str, name: str, manifest: Manifest) -> None:
    """Writes the Iceberg metadata of a version just published; never raises."""
    from supertable.iceberg import sync

    if sync.enabled(store):
        sync.after_commit(store, prefix, name, manifest)


def metadata_location(store: ObjectStore, prefix: str) -> str | None:
    """The newest Iceberg metadata file of the table under ``prefix``, if any."""
    from supertable.iceberg import sync

    return sync.metadata_location(store, prefix)
