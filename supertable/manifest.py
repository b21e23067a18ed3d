"""The table manifest: one immutable, versioned description of a table's live state.

A manifest names every live superfile with what lets a query skip it unopened
(row count, ``_id`` range, per-column min/max, BM25 sizes) and what a query
must honour (its tombstones, with the tombstoned rows' token count per BM25
column so that table-wide BM25 sizes need not open the file), plus the table's
schema, index spec, the next free ``_id`` and the batch ids already applied.
Bulky per-file summaries (term blooms, vector cluster centroids) live in a
sidecar object written with the file and referenced here, so the manifest
stays small however large files are.

Manifests are stored as ``_manifests/v<version>.json`` and never rewritten:
publishing version N+1 is a create-if-absent write, so exactly one writer wins.
"""

from __future__ import annotations

import array
import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from quiver.superfile import IndexSpec, Metric
from quiver.supertable.errors import TableCorruptError

MANIFEST_FORMAT = "quiver-manifest"
MANIFEST_FORMAT_VERSION = 1
MANIFEST_DIR = "_manifests"
LATEST_HINT = f"{MANIFEST_DIR}/_latest"
ID_COLUMN = "_id"
# Applied batch ids kept for idempotent appends; older ones age out first.
MAX_REMEMBERED_BATCHES = 10_000


def manifest_path(version: int) -> str:
    return f"{MANIFEST_DIR}/v{version:020d}.json"


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def bitmap_rows(bm: BitMap) -> np.ndarray:
    """The members of a bitmap as a uint32 array, without a per-member Python loop."""
    return np.frombuffer(bm.to_array(), dtype=np.uint32)


def bitmap_of(rows: np.ndarray) -> BitMap:
    """A bitmap of row numbers filled in bulk: a numpy array handed to ``BitMap`` directly
    is read one Python integer at a time, an ``array.array`` of uint32 in one call."""
    return BitMap(array.array("I", np.ascontiguousarray(rows, dtype=np.uint32).tobytes()))


def bitmap_to_b64(bm: BitMap) -> str:
    return base64.b64encode(bm.serialize()).decode()


def bitmap_from_b64(text: str) -> BitMap:
    return BitMap.deserialize(base64.b64decode(text))


@dataclass(frozen=True)
class SidecarRef:
    """Where a file's summary sidecar is and how to check it."""

    path: str
    size: int
    crc32c: int


@dataclass(frozen=True)
class FileEntry:
    """One live superfile of a snapshot."""

    path: str
    size: int
    rows: int
    id_min: int
    id_max: int
    indexed: bool
    sidecar: SidecarRef | None
    column_ranges: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    fts_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    tombstones: BitMap = field(default_factory=BitMap)
    added_in: int = 0
    # Tokens the tombstoned rows hold, per BM25 column. None (or a column missing while
    # there are tombstones) means unknown, as in manifests written before this was kept:
    # readers then take the dead rows' lengths from the file's index.
    dead_tokens: dict[str, int] | None = field(default_factory=dict)

    @cached_property
    def live_rows(self) -> int:
        # Read per file by every search: an entry never changes, so it is counted once.
        return self.rows - len(self.tombstones)

    def dead_tokens_of(self, column: str) -> int | None:
        """Tokens of ``column`` in the tombstoned rows; None when the manifest does not say."""
        if not self.tombstones:
            return 0
        if self.dead_tokens is None:
            return None
        return self.dead_tokens.get(column)

    def with_tombstones(self, extra: BitMap,
                        dead_tokens: Mapping[str, int] | None = None) -> FileEntry:
        """The entry with ``extra`` rows tombstoned too.

        ``dead_tokens`` are the token counts of the rows of ``extra`` that are not yet
        tombstoned; without them the dead token counts become unknown.
        """
        added = extra - self.tombstones
        if not added:
            return self
        counts: dict[str, int] | None
        if dead_tokens is None:
            counts = None
        elif not self.tombstones:
            counts = {c: int(n) for c, n in dead_tokens.items()}
        elif self.dead_tokens is None:
            counts = None
        else:
            # A column the entry does not know stays unknown.
            counts = {c: self.dead_tokens[c] + int(n) for c, n in dead_tokens.items()
                      if c in self.dead_tokens}
        return replace(self, tombstones=self.tombstones | added, dead_tokens=counts)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "rows": self.rows,
            "id_min": self.id_min,
            "id_max": self.id_max,
            "indexed": self.indexed,
            "sidecar": None if self.sidecar is None else {
                "path": self.sidecar.path, "size": self.sidecar.size,
                "crc32c": self.sidecar.crc32c,
            },
            "column_ranges": {k: [lo, hi] for k, (lo, hi) in self.column_ranges.items()},
            "fts_sizes": {k: [d, t] for k, (d, t) in self.fts_sizes.items()},
            "tombstones": bitmap_to_b64(self.tombstones) if self.tombstones else None,
            "added_in": self.added_in,
            **({"dead_tokens": self.dead_tokens}
               if self.tombstones and self.dead_tokens is not None else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileEntry:
        side = d.get("sidecar")
        tombstones = bitmap_from_b64(d["tombstones"]) if d.get("tombstones") else BitMap()
        dead = d.get("dead_tokens")
        return cls(
            path=str(d["path"]),
            size=int(d["size"]),
            rows=int(d["rows"]),
            id_min=int(d["id_min"]),
            id_max=int(d["id_max"]),
            indexed=bool(d["indexed"]),
            sidecar=None if side is None else SidecarRef(
                str(side["path"]), int(side["size"]), int(side["crc32c"])),
            column_ranges={k: (v[0], v[1]) for k, v in d.get("column_ranges", {}).items()},
            fts_sizes={k: (int(v[0]), int(v[1])) for k, v in d.get("fts_sizes", {}).items()},
            tombstones=tombstones,
            added_in=int(d.get("added_in", 0)),
            dead_tokens=({str(k): int(v) for k, v in dead.items()} if dead is not None
                         else None if tombstones else {}),
        )


@dataclass(frozen=True)
class Manifest:
    """The whole state of a table at one version."""

    version: int
    table_uuid: str
    schema: pa.Schema
    spec: IndexSpec
    next_id: int
    files: tuple[FileEntry, ...]
    batches: tuple[str, ...] = ()
    created_ms: int = 0
    operation: str = "create"
    # Settings the table was created with, carried to every later version (for example
    # ``iceberg.format-version``).
    properties: dict[str, str] = field(default_factory=dict)

    @cached_property
    def num_rows(self) -> int:
        return sum(f.live_rows for f in self.files)

    @property
    def user_schema(self) -> pa.Schema:
        """The schema without the hidden ``_id`` column."""
        return self.schema.remove(self.schema.get_field_index(ID_COLUMN))

    def file(self, path: str) -> FileEntry | None:
        for f in self.files:
            if f.path == path:
                return f
        return None

    def successor(
        self,
        *,
        files: Iterable[FileEntry],
        next_id: int | None = None,
        batches: Iterable[str] = (),
        created_ms: int,
        operation: str,
    ) -> Manifest:
        remembered = (*self.batches, *batches)[-MAX_REMEMBERED_BATCHES:]
        return replace(
            self,
            version=self.version + 1,
            files=tuple(files),
            next_id=self.next_id if next_id is None else next_id,
            batches=remembered,
            created_ms=created_ms,
            operation=operation,
        )

    def to_bytes(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "version": self.version,
            "table_uuid": self.table_uuid,
            "schema": schema_to_b64(self.schema),
            "spec": {"fts": list(self.spec.fts),
                     "vector": {k: str(m) for k, m in self.spec.vector.items()},
                     **({"vector_codes": dict(self.spec.vector_codes)}
                        if self.spec.vector_codes else {})},
            "next_id": self.next_id,
            "files": [f.to_json() for f in self.files],
            "batches": list(self.batches),
            "created_ms": self.created_ms,
            "operation": self.operation,
            **({"properties": dict(self.properties)} if self.properties else {}),
        }
        return json.dumps(doc, separators=(",", ":"), default=_json_default).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "manifest") -> Manifest:
        try:
            doc = json.loads(data)
            if doc.get("format") != MANIFEST_FORMAT:
                raise TableCorruptError(f"{where} is not a Quiver manifest")
            if int(doc["format_version"]) != MANIFEST_FORMAT_VERSION:
                raise TableCorruptError(
                    f"{where} has manifest format {doc['format_version']}; this build reads "
                    f"{MANIFEST_FORMAT_VERSION}")
            spec = doc["spec"]
            return cls(
                version=int(doc["version"]),
                table_uuid=str(doc["table_uuid"]),
                schema=schema_from_b64(doc["schema"]),
                spec=IndexSpec(fts=tuple(spec["fts"]),
                               vector={k: Metric.parse(v) for k, v in spec["vector"].items()},
                               vector_codes={str(k): str(v) for k, v in
                                             spec.get("vector_codes", {}).items()}),
                next_id=int(doc["next_id"]),
                files=tuple(FileEntry.from_json(f) for f in doc["files"]),
                batches=tuple(doc.get("batches", ())),
                created_ms=int(doc.get("created_ms", 0)),
                operation=str(doc.get("operation", "")),
                properties={str(k): str(v) for k, v in doc.get("properties", {}).items()},
            )
        except TableCorruptError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, pa.ArrowException) as exc:
            raise TableCorruptError(f"{where} is unreadable: {exc}") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a manifest")
