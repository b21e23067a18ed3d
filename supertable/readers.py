"""Opened superfiles and their summaries, shared by every snapshot of one table.

Superfiles and sidecars are immutable, so an opened reader stays valid for as
long as its file exists; the pool keeps the most recently used ones. Files on
memory or local roots are opened eagerly (whole bytes, every checksum
verified, fastest search paths); files on remote roots are opened lazily
through ranged reads, so a cold query fetches only what it touches. With a
``SuperfileCache``, a remote file opened lazily is also copied to local disk in
the background; when the copy is complete the pooled lazy reader is replaced by
an eager one over the local copy, and later opens (in this process or the next)
start from the local copy, so warm queries make no remote reads. Summary
sidecars are kept in the same cache.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import TypeVar

import crc32c

from quiver.superfile import Metric, SuperfileReader
from quiver.superfile.errors import SuperfileError
from quiver.superfile.fts.build import build_fts_index
from quiver.superfile.fts.reader import FtsIndexReader
from quiver.superfile.ranges import BytesRangeReader
from quiver.superfile.vector.build import VectorIndexParams, build_vector_index
from quiver.superfile.vector.column_vectors import ColumnVectors
from quiver.superfile.vector.reader import VectorIndexReader
from quiver.supertable.cache import SuperfileCache, cache_key
from quiver.supertable.errors import TableCorruptError
from quiver.supertable.manifest import FileEntry
from quiver.supertable.store import ObjectStore, StoreRangeReader
from quiver.supertable.summaries import FileSummary

log = logging.getLogger(__name__)

LOCAL_KINDS = frozenset({"memory", "local"})


_V = TypeVar("_V")


class VersionCache:
    """A bounded map for facts derived from one immutable table version (BM25 statistics).

    Values of several types share it; the caller's key says which type is stored under it.
    """

    def __init__(self, capacity: int = 65536) -> None:
        self._items: OrderedDict[object, object] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: object) -> object | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: object, value: _V) -> _V:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value


class ReaderPool:
    """Opens each superfile once and keeps up to ``capacity`` of them open."""

    def __init__(self, store: ObjectStore, prefix: str, capacity: int = 512,
                 cache: SuperfileCache | None = None) -> None:
        self._store = store
        self._prefix = prefix
        self._capacity = capacity
        self._readers: OrderedDict[str, SuperfileReader] = OrderedDict()
        self._summaries: OrderedDict[str, FileSummary] = OrderedDict()
        # Indexes built in memory for files committed without them (deferred indexing).
        self._scan_indexes: dict[tuple[str, str, str], object] = {}
        self._lock = threading.Lock()
        self.stats_cache = VersionCache()
        self._opening: dict[str, threading.Lock] = {}
        self.opened = 0
        self.eager = getattr(store, "kind", "remote") in LOCAL_KINDS
        self.cache = None if self.eager else cache
        # Pooled readers that still read remotely, by path, until their local copy lands.
        self._lazy: set[str] = set()
        self._cache_keys: dict[str, str] = {}
        self._key_paths: dict[str, str] = {}
        if self.cache is not None:
            self.cache.add_eviction_listener(self._cache_evicted)

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
        if found is not None:
            if self.cache is not None and entry.path not in self._lazy:
                self.cache.touch(self._cache_key(entry.path))
            return found
        with self._path_lock(entry.path):
            with self._lock:
                found = self._readers.get(entry.path)
            if found is not None:
                return found
            reader, lazy = self._open(entry)
            with self._lock:
                self.opened += 1
                self._readers[entry.path] = reader
                if lazy:
                    self._lazy.add(entry.path)
                else:
                    self._lazy.discard(entry.path)
                while len(self._readers) > self._capacity:
                    old, _ = self._readers.popitem(last=False)
                    self._lazy.discard(old)
            if not lazy and self.cache is not None:
                self._drop_if_evicted(entry.path, reader)
            if lazy and self.cache is not None:
                # Only once the lazy reader is pooled, so the swap on completion finds it.
                path = self.full_path(entry.path)
                self.cache.prefetch(self._cache_key(entry.path), entry.size,
                                    StoreRangeReader(self._store, path, entry.size),
                                    lambda _key: self._cache_filled(entry))
            return reader

    def _cache_key(self, path: str) -> str:
        key = self._cache_keys.get(path)
        if key is None:
            key = cache_key(self._store.uri, self.full_path(path))
            with self._lock:
                self._cache_keys[path] = key
                self._key_paths[key] = path
        return key

    def _open(self, entry: FileEntry) -> tuple[SuperfileReader, bool]:
        """The reader of ``entry`` and whether it reads remotely."""
        path = self.full_path(entry.path)
        if self.eager:
            data, _ = self._store.get(path)
            return SuperfileReader.open(data), False
        if self.cache is not None:
            local = self._open_cached(entry)
            if local is not None:
                return local, False
        return SuperfileReader.open_lazy(StoreRangeReader(self._store, path, entry.size)), True

    def _open_cached(self, entry: FileEntry) -> SuperfileReader | None:
        assert self.cache is not None
        key = self._cache_key(entry.path)
        view = self.cache.open(key, entry.size)
        if view is None:
            return None
        try:
            return SuperfileReader.open(view)
        except SuperfileError as exc:
            # The copy matched its own checksum, so the object itself is bad; the remote
            # read that follows reports it properly.
            log.warning("cached copy of %s is unusable: %s", entry.path, exc)
            self.cache.discard(key)
            return None

    def _cache_filled(self, entry: FileEntry) -> None:
        """Swaps a pooled lazy reader for one over the fresh local copy."""
        with self._lock:
            current = self._readers.get(entry.path)
            if current is None or entry.path not in self._lazy:
                return
        local = self._open_cached(entry)
        if local is None:
            return
        with self._lock:
            if self._readers.get(entry.path) is current:
                self._readers[entry.path] = local
                self._lazy.discard(entry.path)
        self._drop_if_evicted(entry.path, local)

    def _drop_if_evicted(self, path: str, reader: SuperfileReader) -> None:
        # An eviction between mapping the copy and pooling the reader found nothing to
        # drop; without this the pool would pin an unlinked file's disk space.
        assert self.cache is not None
        if self._cache_key(path) in self.cache:
            return
        with self._lock:
            if self._readers.get(path) is reader:
                del self._readers[path]

    def _cache_evicted(self, key: str) -> None:
        """Drops the reader mapping an evicted copy, so its disk space is released once
        the queries still reading it finish; the next open reads remotely again."""
        with self._lock:
            path = self._key_paths.get(key)
            if path is not None and path in self._readers and path not in self._lazy:
                del self._readers[path]

    def local_copy(self, entry: FileEntry) -> memoryview | None:
        """The bytes of a remote root's ``entry`` as mapped from its disk-cache copy, or
        None while there is none (or the root has no disk cache), in which case a
        background copy is started. Makes no remote read itself."""
        if self.cache is None:
            return None
        key = self._cache_key(entry.path)
        with self._lock:
            pooled = self._readers.get(entry.path) is not None
            lazy = entry.path in self._lazy
        if not lazy and (pooled or key in self.cache):
            # Pooled from its copy, or opening it maps the copy: local either way.
            reader = self.reader(entry)
            with self._lock:
                lazy = entry.path in self._lazy
            if not lazy:
                source = reader.source
                return memoryview(source.read(0, source.size()))
        self.cache.prefetch(key, entry.size,
                            StoreRangeReader(self._store, self.full_path(entry.path), entry.size),
                            lambda _key: self._cache_filled(entry))
        return None

    def open_fts(self, entry: FileEntry, column: str) -> FtsIndexReader | None:
        """The file's BM25 index of ``column`` when its reader is open already; None
        otherwise (this never opens a file)."""
        if not entry.indexed:
            return None
        with self._lock:
            found = self._readers.get(entry.path)
        if found is None or column not in found.fts_columns:
            return None
        return found.fts(column)

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
            found = VectorIndexReader.open(BytesRangeReader(blob), verify=False, eager=True,
                                           vectors=ColumnVectors.of_array(metric, vecs))
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
        data = self._cached_sidecar(ref.path, ref.size, ref.crc32c)
        if data is None:
            data, _ = self._store.get(self.full_path(ref.path))
            if len(data) != ref.size or crc32c.crc32c(data) != ref.crc32c:
                raise TableCorruptError(f"summary {ref.path} does not match its checksum")
            if self.cache is not None:
                self.cache.put(self._cache_key(ref.path), data)
        summary = FileSummary.from_bytes(data, ref.path)
        with self._lock:
            self._summaries[entry.path] = summary
            while len(self._summaries) > self._capacity * 4:
                self._summaries.popitem(last=False)
        return summary

    def _cached_sidecar(self, path: str, size: int, crc: int) -> bytes | None:
        if self.cache is None:
            return None
        key = self._cache_key(path)
        view = self.cache.open(key, size)
        if view is None:
            return None
        data = bytes(view)
        if crc32c.crc32c(data) != crc:
            self.cache.discard(key)
            return None
        return data

    def forget(self, paths: list[str]) -> None:
        with self._lock:
            for p in paths:
                self._readers.pop(p, None)
                self._lazy.discard(p)
                self._summaries.pop(p, None)
                for key in [k for k in self._scan_indexes if k[1] == p]:
                    del self._scan_indexes[key]
