"""What the table layer needs from object storage, as a protocol.

The catalog layer provides the implementation (one client for memory, local
disk, S3, GCS and Azure); the table layer only speaks this protocol, so it
never depends on how a root was opened. Paths are relative to the root,
``/``-separated, without a leading slash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True)
class ObjectVersion:
    """Identifies one version of an object, for conditional overwrites."""

    e_tag: str | None
    version: str | None = None


@dataclass(frozen=True)
class ObjectMeta:
    path: str
    size: int
    last_modified: datetime | None
    version: ObjectVersion


PutMode = Literal["overwrite", "create"] | ObjectVersion


class ObjectStore(Protocol):
    """Object storage under one root."""

    @property
    def uri(self) -> str: ...

    def get(self, path: str) -> tuple[bytes, ObjectMeta]:
        """The whole object and its metadata; ``ObjectNotFoundError`` when absent."""
        ...

    def get_range(self, path: str, offset: int, length: int) -> bytes: ...

    def get_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several ``(offset, length)`` ranges of one object, fetched concurrently."""
        ...

    def head(self, path: str) -> ObjectMeta: ...

    def put(self, path: str, data: bytes, mode: PutMode = "overwrite") -> ObjectVersion:
        """Writes an object. ``create`` fails with ``ObjectExistsError`` when it exists;
        an ``ObjectVersion`` writes only if the object is still at that version, else
        ``PreconditionFailedError``. Durable when it returns."""
        ...

    def delete(self, path: str) -> None:
        """Removes an object; removing an absent object is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]: ...
