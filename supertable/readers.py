"""Opened superfiles and their summaries, shared by every snapshot of one table.

Superfiles and sidecars are immutable, so an opened reader stays valid for as
long as its file exists; the pool keeps the most recently used ones. Files on
memory or local roots are opened eagerly (whole bytes, every checksum
verified, fastest search paths); files on remote roots are opened lazily
through ranged reads, so a cold query fetches only what it touches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import crc32c

from superfile import Metric, SuperfileReader
from superfile.fts.build import build_fts_index
from superfile.fts.reader import FtsIndexReader
from superfile.ranges import BytesRangeReader
from superfile.vector.build import VectorIndexParams, build_vector_index
from superfile.vector.reader import VectorIndexReader
from supertable.errors import TableCorruptError
from supertable.manifest import FileEntry
from supertable.store import ObjectStore, StoreRangeReader
from supertable.summaries import FileSummary

LOCAL_KINDS = frozenset({"memory", "local"})


class ReaderPool:
    """Opens each superfile once and keeps up to ``capacity`` of them open."""

    def __init__(self, store: ObjectStore, prefix: str, capacity: int = 512) -> None:
        self._store = store
        self._prefix = prefix
        self._capacity = capacity
        self._readers: OrderedDict[str, SuperfileReader] = OrderedDict()
        self._summaries: OrderedDict[str, FileSummary] = OrderedDict()
        # Indexes built in memory for files committed without them (deferred indexing).
        self._scan_indexes: dict[tuple[str, str, str], object] = {}
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}
        self.opened = 0
        self.eager = getattr(store, "kind", "remote") in LOCAL_KINDS

    def full_path(self, path: str) -> str:
        return f"{self._prefix}/{path}" if self._prefix else path

    def _path_lock(self, path: str) -> threading.Lock:
        with self._lock:
            return self._opening.setdefault(path, threading.Lock())

    def reader(self, entry: FileEntry) -> SuperfileReader:
        with self._lock:
            found = self._readers.get(entry.path)
            if found is not None:
                self._readers.move_to_end(entry.path)
                return found
        with self._path_lock(entry.path):
            with self._lock:
                found = self._readers.get(entry.path)
            if found is not None:
                return found
            reader = self._open(entry)
            with self._lock:
                self.opened += 1
                self._readers[entry.path] = reader
                while len(self._readers) > self._capacity:
                    self._readers.popitem(last=False)
            return reader

    def _open(self, entry: FileEntry) -> SuperfileReader:
        path = self.full_path(entry.path)
        if self.eager:
            data, _ = self._store.get(path)
            return SuperfileReader.open(data)
        return SuperfileReader.open_lazy(StoreRangeReader(self._store, path, entry.size))

    def fts(self, entry: FileEntry, column: str) -> FtsIndexReader:
        if entry.indexed:
            return self.reader(entry).fts(column)
        key = ("fts", entry.path, column)
        with self._lock:
            found = self._scan_indexes.get(key)
        if found is None:
            texts = self.reader(entry).read_table([column]).column(0)
            blob, _ = build_fts_index(texts)
            found = FtsIndexReader.open(BytesRangeReader(blob), verify=False)
            with self._lock:
                self._scan_indexes[key] = found
        return found  # type: ignore[return-value]

    def vectors(self, entry: FileEntry, column: str, metric: Metric) -> VectorIndexReader:
        if entry.indexed:
            return self.reader(entry).vector(column)
        key = ("vec", entry.path, column)
        with self._lock:
            found = self._scan_indexes.get(key)
        if found is None:
            vecs = self.reader(entry).read_table([column]).column(0)
            # An exact index: every vector in one cell, searched by brute force.
            params = VectorIndexParams(flat_threshold=max(len(vecs), 1) + 1)
            blob, _ = build_vector_index(vecs, metric, params)
            found = VectorIndexReader.open(BytesRangeReader(blob), verify=False, eager=True)
            with self._lock:
                self._scan_indexes[key] = found
        return found  # type: ignore[return-value]

    def summary(self, entry: FileEntry) -> FileSummary | None:
        if entry.sidecar is None:
            return None
        with self._lock:
            found = self._summaries.get(entry.path)
            if found is not None:
                return found
        ref = entry.sidecar
        data, _ = self._store.get(self.full_path(ref.path))
        if len(data) != ref.size or crc32c.crc32c(data) != ref.crc32c:
            raise TableCorruptError(f"summary {ref.path} does not match its checksum")
        summary = FileSummary.from_bytes(data, ref.path)
        with self._lock:
            self._summaries[entry.path] = summary
            while len(self._summaries) > self._capacity * 4:
                self._summaries.popitem(last=False)
        return summary

    def forget(self, paths: list[str]) -> None:
        with self._lock:
            for p in paths:
                self._readers.pop(p, None)
                self._summaries.pop(p, None)
                for key in [k for k in self._scan_indexes if k[1] == p]:
                    del self._scan_indexes[key]
