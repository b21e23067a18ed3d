"""pyiceberg's file interface over a table's object store.

pyiceberg writes manifests and manifest lists through an ``OutputFile``; here it
writes into memory, and the bytes are then stored with the table's own
``ObjectStore`` (create-if-absent, same retries and errors as every other write).
Reading goes the same way, so the table layer never opens a second client.
"""

from __future__ import annotations

import io
from typing import Any

from pyiceberg.io import FileIO, InputFile, InputStream, OutputFile, OutputStream

from quiver.supertable.store import ObjectStore


class _Buffer(io.BytesIO):
    """A BytesIO that keeps its bytes after close (pyiceberg closes it when done)."""

    def close(self) -> None:
        self.final = self.getvalue()
        super().close()


class MemoryOutputFile(OutputFile):
    """An output file whose bytes stay in memory until the caller stores them."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self._buffer: _Buffer | None = None

    def create(self, overwrite: bool = False) -> OutputStream:
        self._buffer = _Buffer()
        return self._buffer

    @property
    def data(self) -> bytes:
        if self._buffer is None:
            return b""
        return getattr(self._buffer, "final", None) or self._buffer.getvalue()

    def __len__(self) -> int:
        if self._buffer is None:
            return 0
        return len(self.data) if self._buffer.closed else self._buffer.tell()

    def exists(self) -> bool:
        return False

    def to_input_file(self) -> InputFile:
        raise NotImplementedError("an in-memory output file is not readable as input")


class _StoreInput(InputFile):
    def __init__(self, location: str, store: ObjectStore, path: str) -> None:
        super().__init__(location)
        self._store = store
        self._path = path
        self._data: bytes | None = None

    def _load(self) -> bytes:
        if self._data is None:
            self._data, _ = self._store.get(self._path)
        return self._data

    def __len__(self) -> int:
        return len(self._load())

    def exists(self) -> bool:
        return True

    def open(self, seekable: bool = True) -> InputStream:
        return io.BytesIO(self._load())


class StoreFileIO(FileIO):
    """Reads locations under a table's folder from its object store."""

    def __init__(self, store: ObjectStore, location: str, prefix: str) -> None:
        super().__init__({})
        self._store = store
        self._location = location.rstrip("/")
        self._prefix = prefix

    def path_of(self, location: str) -> str:
        if not location.startswith(self._location + "/"):
            raise ValueError(f"{location!r} is not under the table's folder {self._location!r}")
        rel = location[len(self._location) + 1:]
        return f"{self._prefix}/{rel}" if self._prefix else rel

    def new_input(self, location: str) -> InputFile:
        return _StoreInput(location, self._store, self.path_of(location))

    def new_output(self, location: str) -> OutputFile:
        return MemoryOutputFile(location)

    def delete(self, location: Any) -> None:
        self._store.delete(self.path_of(str(getattr(location, "location", location))))
