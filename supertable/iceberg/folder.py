"""Where a table's Iceberg files go: its folder, as store paths and as the URIs metadata holds.

Kept apart from the writers (``snapshot``, ``sync``) so that reading a table's metadata
state does not load pyiceberg.
"""

from __future__ import annotations

from dataclasses import dataclass

from quiver.supertable.store import ObjectStore

METADATA_DIR = "metadata"


@dataclass(frozen=True)
class Folder:
    """Where a table's files are, as store paths and as the URIs Iceberg metadata holds."""

    store: ObjectStore
    prefix: str
    location: str

    def path(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri(self, rel: str) -> str:
        return f"{self.location}/{rel}"

    def rel(self, uri: str) -> str:
        return uri[len(self.location) + 1:]
