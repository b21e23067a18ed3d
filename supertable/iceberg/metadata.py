"""Iceberg table metadata files: building ``v<N>.metadata.json``, finding the newest, publishing.

Metadata files are numbered 1, 2, … independently of Quiver versions (expiring
snapshots writes one without a new version); snapshot ids are Quiver versions.
``v<N+1>`` is published by a create-if-absent write, so of two writers racing for
it exactly one wins and the other builds again on the winner. ``version-hint.text``
names the newest number; like Quiver's ``_latest`` it may lag, and is walked past.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from quiver.supertable.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from quiver.supertable.iceberg.folder import METADATA_DIR, Folder
from quiver.supertable.iceberg.schema import iceberg_schema, last_column_id, name_mapping
from quiver.supertable.manifest import Manifest

log = logging.getLogger(__name__)

HINT = f"{METADATA_DIR}/version-hint.text"
# Snapshots (and metadata-log entries) one metadata file lists at most; older ones drop
# out of Iceberg's history but their files stay until Quiver's gc removes them.
MAX_SNAPSHOTS = 100
MAX_METADATA_LOG = 100


def metadata_name(number: int) -> str:
    return f"{METADATA_DIR}/v{number}.metadata.json"


def _exists(folder: Folder, rel: str) -> bool:
    try:
        folder.store.head(folder.path(rel))
        return True
    except ObjectNotFoundError:
        return False


def latest_number(folder: Folder) -> int:
    """The newest metadata file's number (0 when there is none)."""
    number = 0
    try:
        data, _ = folder.store.get(folder.path(HINT))
        number = int(data.decode().strip() or 0)
    except (ObjectNotFoundError, ValueError, UnicodeDecodeError):
        number = 0
    if number and not _exists(folder, metadata_name(number)):
        number = 0
    if number == 0:
        names = [m.path.rsplit("/", 1)[-1]
                 for m in folder.store.list(folder.path(f"{METADATA_DIR}/v"))]
        numbers = [int(n[1:-len(".metadata.json")]) for n in names
                   if n.startswith("v") and n.endswith(".metadata.json")
                   and n[1:-len(".metadata.json")].isdigit()]
        number = max(numbers, default=0)
    while _exists(folder, metadata_name(number + 1)):
        number += 1
    return number


def load(folder: Folder) -> tuple[int, dict[str, Any]] | None:
    """The newest metadata file's number and document, or None when there is none."""
    number = latest_number(folder)
    if number == 0:
        return None
    data, _ = folder.store.get(folder.path(metadata_name(number)))
    return number, json.loads(data)


def publish(folder: Folder, number: int, doc: dict[str, Any]) -> bool:
    """Writes ``doc`` as metadata file ``number`` unless one exists; True when this won."""
    try:
        folder.store.put(folder.path(metadata_name(number)),
                         json.dumps(doc, indent=1).encode(), mode="create")
    except ObjectExistsError:
        return False
    try:
        folder.store.put(folder.path(HINT), str(number).encode())
    except StorageError as exc:
        log.warning("could not update the Iceberg version hint: %s", exc)
    return True


def next_row_id(state: tuple[int, dict[str, Any]] | None) -> int:
    """The row id the next snapshot of a format-3 table starts from (0 before any)."""
    if state is None:
        return 0
    return int(state[1].get("next-row-id") or 0)


def build(folder: Folder, manifest: Manifest, previous: tuple[int, dict[str, Any]] | None,
          snapshot: dict[str, Any], name: str, now_ms: int, fmt: int = 2,
          next_row: int | None = None) -> dict[str, Any]:
    """The metadata document whose current snapshot is ``snapshot`` (of ``manifest``), in
    Iceberg format ``fmt``; ``next_row`` is a format-3 table's next row id."""
    schema = iceberg_schema(manifest.schema)
    prev_doc = previous[1] if previous else {}
    snapshots = [s for s in prev_doc.get("snapshots", [])
                 if s["snapshot-id"] < snapshot["snapshot-id"]]
    if prev_doc.get("format-version", fmt) != fmt:
        # Snapshots of another format version are not carried into this one.
        snapshots = []
    snapshots = [*snapshots, snapshot][-MAX_SNAPSHOTS:]
    return document(folder, manifest, schema, snapshots, previous, name,
                    max(now_ms, snapshot["timestamp-ms"], prev_doc.get("last-updated-ms", 0)),
                    fmt, next_row)


def document(folder: Folder, manifest: Manifest, schema: dict[str, Any],
             snapshots: list[dict[str, Any]], previous: tuple[int, dict[str, Any]] | None,
             name: str, updated_ms: int, fmt: int = 2, next_row: int | None = None
             ) -> dict[str, Any]:
    current = snapshots[-1]
    prev_doc = previous[1] if previous else {}
    metadata_log = list(prev_doc.get("metadata-log", []))
    if previous is not None:
        metadata_log.append({"timestamp-ms": prev_doc["last-updated-ms"],
                             "metadata-file": folder.uri(metadata_name(previous[0]))})
    properties = {
        "schema.name-mapping.default": name_mapping(schema),
        "quiver.table": name,
        "quiver.version": str(current["snapshot-id"]),
        "quiver.hidden-columns": "_id",
    }
    doc = {
        "format-version": fmt,
        "table-uuid": str(uuid.UUID(hex=manifest.table_uuid)),
        "location": folder.location,
        "last-sequence-number": max(s["sequence-number"] for s in snapshots),
        "last-updated-ms": updated_ms,
        "last-column-id": last_column_id(schema),
        "current-schema-id": 0,
        "schemas": [schema],
        "default-spec-id": 0,
        "partition-specs": [{"spec-id": 0, "fields": []}],
        "last-partition-id": 999,
        "default-sort-order-id": 0,
        "sort-orders": [{"order-id": 0, "fields": []}],
        "properties": properties,
        "current-snapshot-id": current["snapshot-id"],
        "refs": {"main": {"snapshot-id": current["snapshot-id"], "type": "branch"}},
        "snapshots": snapshots,
        "snapshot-log": [{"timestamp-ms": s["timestamp-ms"], "snapshot-id": s["snapshot-id"]}
                         for s in snapshots],
        "metadata-log": metadata_log[-MAX_METADATA_LOG:],
    }
    if fmt >= 3:
        doc["next-row-id"] = int(next_row or 0)
    return doc
