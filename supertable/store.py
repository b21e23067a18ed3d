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

from quiver.superfile.errors import CorruptFileError, RangeReadError


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


class StoreRangeReader:
    """``quiver.superfile.ranges.RangeReader`` over one stored object.

    The size comes from a ``head`` unless given. Out-of-bounds reads raise
    ``CorruptFileError`` before any request, like the other readers; storage failures
    surface as ``quiver.supertable.errors`` exceptions.
    """

    def __init__(self, store: ObjectStore, path: str, size: int | None = None) -> None:
        self._store = store
        self._path = path
        self._size = store.head(path).size if size is None else int(size)
        self._buffered = hasattr(store, "get_range_buffer")

    @property
    def path(self) -> str:
        return self._path

    def size(self) -> int:
        return self._size

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise RangeReadError(f"invalid range offset={offset} length={length}")
        if offset + length > self._size:
            raise CorruptFileError(
                f"range [{offset}, {offset + length}) lies past the end of the "
                f"{self._size}-byte object {self._path!r}")

    def read(self, offset: int, length: int) -> bytes | memoryview:
        self._check(offset, length)
        if self._buffered:
            data: bytes | memoryview = self._store.get_range_buffer(  # type: ignore[attr-defined]
                self._path, offset, length)
        else:
            data = self._store.get_range(self._path, offset, length)
        if len(data) != length:
            raise CorruptFileError(
                f"short read of {self._path!r} at {offset}: wanted {length}, got {len(data)}")
        return data

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        """Several ranges in one concurrent request batch (coalesced by the client)."""
        for offset, length in ranges:
            self._check(offset, length)
        if self._buffered:
            return list(self._store.get_ranges_buffers(  # type: ignore[attr-defined]
                self._path, ranges))
        return list(self._store.get_ranges(self._path, ranges))
