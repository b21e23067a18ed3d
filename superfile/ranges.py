"""Byte sources that serve ranges of a file: the reader's only view of storage.

A superfile can be opened from resident bytes or lazily through any object
with ``size()`` and ``read(offset, length)``; object storage, a local file and
an in-memory buffer all fit behind this protocol. Short or out-of-bounds
reads raise ``CorruptFileError`` (a file shorter than its metadata claims is
truncated) rather than returning fewer bytes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from quiver.superfile.errors import CorruptFileError, RangeReadError

Buffer = bytes | memoryview


@runtime_checkable
class RangeReader(Protocol):
    """Anything that returns the bytes of ``(offset, length)`` of one file."""

    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> Buffer: ...


def _check_bounds(offset: int, length: int, size: int) -> None:
    if offset < 0 or length < 0:
        raise RangeReadError(f"invalid range offset={offset} length={length}")
    if offset + length > size:
        raise CorruptFileError(
            f"range [{offset}, {offset + length}) lies past the end of a {size}-byte file "
            "(the file is truncated or its metadata is corrupt)"
        )


class BytesRangeReader:
    """Serves ranges of resident bytes without copying them."""

    def __init__(self, data: Buffer) -> None:
        self._view = memoryview(data).cast("B")

    def size(self) -> int:
        return len(self._view)

    def read(self, offset: int, length: int) -> memoryview:
        _check_bounds(offset, length, len(self._view))
        return self._view[offset : offset + length]


class FileRangeReader:
    """Serves ranges of a local file with positioned reads (safe across threads)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(os.fspath(path), os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        _check_bounds(offset, length, self._size)
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise CorruptFileError(f"short read at {offset}: wanted {length}, got {len(data)}")
        return data

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> FileRangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_batch(reader: RangeReader, spans: Sequence[tuple[int, int]]) -> list[Buffer]:
    """The given spans, as one concurrent batch when the reader offers ``read_ranges``
    (object storage), else one read after another."""
    batch = getattr(reader, "read_ranges", None)
    if batch is not None and len(spans) > 1:
        return list(batch(list(spans)))
    return [reader.read(o, n) for o, n in spans]


class SubRangeReader:
    """A window ``[base, base + length)`` of another reader, addressed from 0."""

    def __init__(self, parent: RangeReader, base: int, length: int) -> None:
        _check_bounds(base, length, parent.size())
        self._parent = parent
        self._base = base
        self._length = length

    def size(self) -> int:
        return self._length

    def read(self, offset: int, length: int) -> Buffer:
        _check_bounds(offset, length, self._length)
        return self._parent.read(self._base + offset, length)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[Buffer]:
        for offset, length in ranges:
            _check_bounds(offset, length, self._length)
        return read_batch(self._parent, [(self._base + o, n) for o, n in ranges])


class CountingRangeReader:
    """Wraps a reader and records every range it serves (for I/O accounting)."""

    def __init__(self, inner: RangeReader) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.ranges: list[tuple[int, int]] = []

    @property
    def reads(self) -> int:
        return len(self.ranges)

    @property
    def bytes_read(self) -> int:
        return sum(length for _, length in self.ranges)

    def reset(self) -> None:
        with self._lock:
            self.ranges.clear()

    def size(self) -> int:
        return self._inner.size()

    def read(self, offset: int, length: int) -> Buffer:
        data = self._inner.read(offset, length)
        with self._lock:
            self.ranges.append((offset, length))
        return data

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[Buffer]:
        data = read_batch(self._inner, ranges)
        with self._lock:
            self.ranges.extend((o, n) for o, n in ranges)
        return data


def read_many(
    reader: RangeReader, ranges: Sequence[tuple[int, int]], gap: int = 4096
) -> list[Buffer]:
    """Reads several ranges, merging neighbours closer than ``gap`` bytes into one read.

    Returns one buffer per requested range, in the order asked.
    """
    if not ranges:
        return []
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    out: list[Buffer] = [b""] * len(ranges)
    groups: list[list[int]] = []
    spans: list[tuple[int, int]] = []
    end = 0
    for i in order:
        off, length = ranges[i]
        if groups and off <= end + gap:
            end = max(end, off + length)
            groups[-1].append(i)
            spans[-1] = (spans[-1][0], end - spans[-1][0])
            continue
        groups.append([i])
        spans.append((off, length))
        end = off + length
    # The merged spans go out as one batch: on object storage, concurrently.
    for (start, _), group, data in zip(spans, groups, read_batch(reader, spans), strict=True):
        blob = memoryview(data).cast("B")
        for i in group:
            off, length = ranges[i]
            out[i] = blob[off - start : off - start + length]
    return out
