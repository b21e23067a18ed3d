"""Existing Iceberg tables as ``quiver ingest`` sources: finding them, and their rows.

A table is named by its metadata file (``*.metadata.json``), by its folder (the one
holding ``metadata/``; its newest metadata file is taken, by ``version-hint.text`` when
there is one), or by a catalog and an identifier (``--iceberg-catalog`` with
``--iceberg-table``, any catalog ``quiver iceberg register`` writes to). Its current
snapshot is read by the same reader as ``iceberg_table(...)`` in SQL
(``quiver.supertable.iceberg.confined``): one data file after the other and one Arrow record
batch at a time, position deletes and deletion vectors applied, so no more than one file's
batch is held at once however large the table. The table is the operator's own choice, so
its files are not confined to its location (``load(..., confine=False)``).

The source's identity is the table's UUID and the snapshot read: a rerun on the same
snapshot adds nothing; once the table has a newer snapshot, its rows are read again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from quiver.root_error import Kind, QuiverError

if TYPE_CHECKING:
    from quiver.supertable.iceberg.confined import LakeTable

_NUMBERED = re.compile(r"(?:^v|^)(\d+)(?:-[^/]*)?\.metadata\.json$")


class IcebergSourceError(QuiverError):
    """The Iceberg table cannot be found or read."""

    kind = Kind.INVALID_INPUT


def metadata_in(folder: Path) -> str | None:
    """The newest metadata file of the Iceberg table in ``folder``, or None when the folder
    holds no Iceberg table."""
    meta = folder / "metadata"
    if not meta.is_dir():
        return None
    hint = meta / "version-hint.text"
    if hint.is_file():
        text = hint.read_text().strip()
        for name in (f"v{text}.metadata.json", text, f"{text}.metadata.json"):
            if name and (meta / name).is_file():
                return (meta / name).resolve().as_uri()
    numbered = []
    for p in meta.glob("*.metadata.json"):
        found = _NUMBERED.match(p.name)
        if found:
            numbered.append((int(found.group(1)), p.stat().st_mtime_ns, p))
    if not numbered:
        return None
    return max(numbered)[2].resolve().as_uri()


def is_metadata_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(".metadata.json")


def from_catalog(uri: str, identifier: str, *, name: str, token: str | None,
                 credential: str | None, warehouse: str | None) -> str:
    """The metadata file a catalog lists for ``identifier`` (``namespace.table``)."""
    from quiver.supertable.iceberg.catalog import CatalogError, open_catalog

    namespace, sep, table = identifier.rpartition(".")
    if not sep or not namespace or not table:
        raise IcebergSourceError(f"--iceberg-table wants NAMESPACE.TABLE, got {identifier!r}")
    try:
        catalog = open_catalog(uri, name, token=token, credential=credential,
                               warehouse=warehouse)
        location = catalog.location(namespace, table)
    except CatalogError as exc:
        raise IcebergSourceError(str(exc)) from None
    if location is None:
        raise IcebergSourceError(f"the catalog lists no table {identifier!r}")
    return location


@dataclass(frozen=True)
class IcebergTable:
    """One Iceberg table's current snapshot, as an ingest source."""

    metadata_location: str
    table_uuid: str
    snapshot_id: int
    data_bytes: int
    rows: int

    @property
    def identity(self) -> str:
        key = f"iceberg\0{self.table_uuid}\0{self.snapshot_id}".encode()
        return "ingest:" + hashlib.sha256(key).hexdigest()[:32]


def _load(location: str) -> LakeTable:
    # pyiceberg is imported only when an Iceberg table is ingested.
    from quiver.supertable.iceberg.confined import LakeTableError, load

    try:
        return load(location, location, confine=False)
    except LakeTableError as exc:
        raise IcebergSourceError(str(exc)) from None


def describe(location: str) -> IcebergTable:
    """The table at ``location`` and the size of its current snapshot."""
    table = _load(location).table
    snapshot = table.current_snapshot()
    summary = snapshot.summary if snapshot is not None else None
    records = size = 0
    if summary is not None:
        records = int(summary.get("total-records", 0) or 0)
        size = int(summary.get("total-files-size", 0) or 0)
    return IcebergTable(location, str(table.metadata.table_uuid),
                        snapshot.snapshot_id if snapshot is not None else -1, size, records)


def batches(source: IcebergTable) -> tuple[pa.Schema, Iterator[pa.RecordBatch],
                                           Callable[[], int]]:
    """The schema, the record batches of the current snapshot (read file by file, batch by
    batch), and how many bytes of its data files the batches read so far stand for
    (estimated from rows)."""
    from quiver.supertable.iceberg.confined import LakeTableError

    lake = _load(source.metadata_location)
    try:
        schema = lake.arrow_schema()
        tasks = lake.plan()
    except LakeTableError as exc:
        raise IcebergSourceError(str(exc)) from None
    done = [0]
    total = max(1, source.rows)

    def read() -> Iterator[pa.RecordBatch]:
        try:
            for batch in lake.batches(tasks, schema=schema):
                done[0] += batch.num_rows
                yield batch
        except LakeTableError as exc:
            raise IcebergSourceError(str(exc)) from None

    return schema, read(), lambda: source.data_bytes * min(done[0], total) // total
