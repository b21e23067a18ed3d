"""A local disk cache of immutable objects (superfiles and their sidecars) from remote roots.

Superfiles and sidecars are never rewritten under the same path, so an entry,
keyed by the store URI and the object path, never goes stale. A query on a
file that is not cached yet reads it lazily through ranged GETs while
``prefetch`` copies the whole object into the cache on a small pool of
background workers; once it is there, ``open`` hands out a read-only memory
map of the local copy and queries make no remote reads.

On disk every entry is one file, ``<key>.qvc``: the object's bytes followed by
a trailer holding the object size and a CRC-32C of those bytes. A download is
written to a private temporary file and renamed into place, so a partial
download is never visible under the entry's name, and every ``open`` checks
the size and the checksum, so a truncated or damaged entry (a crash after the
rename, a disk error, a stray write) is removed and fetched again rather than
used. Entries are never modified in place: they are only created by rename and
removed by unlink. On POSIX systems a mapped file that is unlinked stays
readable through its mapping until the mapping is released, which is what lets
eviction (here, or in another process sharing the directory) remove an entry
that a running query is still reading.

The size budget covers the entries in the directory. When a new entry pushes
the total past it, the least recently used entries are unlinked and the
listeners registered with ``add_eviction_listener`` are told, so they can drop
their mapping of the file and let the disk space go; a query already holding
the mapping finishes on it. Several processes may share one directory: each
keeps its own view of recency (what it opened and touched, plus file
modification times, which ``touch`` refreshes), and all changes are renames
and unlinks, so they cannot corrupt one another's entries.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import hashlib
import logging
import mmap
import os
import queue
import shutil
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from quiver.root_error import Kind, QuiverError
from quiver.superfile.ranges import RangeReader
from quiver.supertable import stats as table_stats

log = logging.getLogger(__name__)

ENTRY_SUFFIX = ".qvc"
PART_SUFFIX = ".part"
TRAILER = struct.Struct("<8sQII")
TRAILER_MAGIC = b"QVCACHE1"
TRAILER_FORMAT = 1
DOWNLOAD_CHUNK = 8 * 1024 * 1024
# A temporary file this old belongs to a download that died with its process.
STALE_PART_S = 3600.0
# Recency is written to file modification times at most this often per entry.
TOUCH_INTERVAL_S = 60.0
# Other processes' entries are picked up by rescanning the directory at most this often.
RESCAN_INTERVAL_S = 30.0
DEFAULT_BUDGET_BYTES = 4 * 1024**3
ENV_DIR = "QUIVER_CACHE_DIR"
ENV_BYTES = "QUIVER_CACHE_BYTES"


@dataclass
class CacheStats:
    """Counters since the cache object was made (this process only)."""

    hits: int = 0
    misses: int = 0
    downloads: int = 0
    downloaded_bytes: int = 0
    download_failures: int = 0
    evictions: int = 0
    corrupt: int = 0


@dataclass
class _Entry:
    size: int
    last_used: float
    touched: float = 0.0


@dataclass
class _Job:
    key: str
    size: int
    source: RangeReader
    callbacks: list[Callable[[str], None]] = field(default_factory=list)


def cache_key(uri: str, path: str) -> str:
    """The entry name of the object ``path`` of the store at ``uri``."""
    return hashlib.sha256(f"{uri}\n{path}".encode()).hexdigest()[:40]


class SuperfileCache:
    """Whole immutable objects copied from remote storage to ``directory``.

    Safe to share between threads; use ``shared_cache`` so that every table of a
    process that names one directory uses one instance (one budget, one worker
    pool, one view of recency).
    """

    def __init__(self, directory: str | os.PathLike[str], budget_bytes: int, *,
                 workers: int = 2, verify: bool = True) -> None:
        if budget_bytes < 0:
            raise ValueError(f"cache budget must not be negative, got {budget_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.budget_bytes = int(budget_bytes)
        self.verify = verify
        self.stats = CacheStats()
        self._workers = max(1, int(workers))
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._total = 0
        self._last_scan = 0.0
        self._inflight: dict[str, _Job] = {}
        self._idle = threading.Condition(self._lock)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._listeners: list[weakref.WeakMethod | Callable[[str], None]] = []
        self._rescan()

    # -- entries -------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{ENTRY_SUFFIX}"

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()

    def used_bytes(self) -> int:
        """Bytes of the entries this process knows of (its own and those seen on a rescan)."""
        with self._lock:
            return self._total

    def open(self, key: str, size: int) -> memoryview | None:
        """A read-only mapping of the cached object ``key`` of ``size`` bytes, or None.

        An entry of the wrong size or whose checksum fails is removed (and counted in
        ``stats.corrupt``) and None is returned, so the caller reads remotely instead.
        """
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self._forget(key)
            with self._lock:
                self.stats.misses += 1
                table_stats.add("disk_cache_misses")
            return None
        except OSError as exc:
            log.warning("cannot open cache entry %s: %s", path, exc)
            return None
        try:
            st = os.fstat(fd)
            if st.st_size != size + TRAILER.size:
                self._reject(key, st, f"is {st.st_size} bytes, expected {size + TRAILER.size}")
                return None
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            log.warning("cannot map cache entry %s: %s", path, exc)
            return None
        finally:
            os.close(fd)
        view = memoryview(mapped)
        magic, stored_size, stored_crc, fmt = TRAILER.unpack(view[size:])
        if magic != TRAILER_MAGIC or fmt != TRAILER_FORMAT or stored_size != size:
            self._reject(key, st, "has no valid trailer")
            return None
        if self.verify and crc32c.crc32c(view[:size]) != stored_crc:
            self._reject(key, st, "fails its checksum")
            return None
        now = time.time()
        with self._lock:
            self.stats.hits += 1
            table_stats.add("disk_cache_hits")
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(st.st_size, now)
                self._total += st.st_size
            entry.last_used = now
        self._persist_touch(key, entry, now)
        return view[:size]

    def touch(self, key: str) -> None:
        """Marks ``key`` as just used (cheap; the file time is refreshed now and then)."""
        now = time.time()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.last_used = now
        self._persist_touch(key, entry, now)

    def _persist_touch(self, key: str, entry: _Entry, now: float) -> None:
        # File times carry recency to other processes and to the next run.
        if now - entry.touched < TOUCH_INTERVAL_S:
            return
        entry.touched = now
        with contextlib.suppress(OSError):
            os.utime(self._path(key), (now, now))

    def _reject(self, key: str, st: os.stat_result, why: str) -> None:
        path = self._path(key)
        log.warning("cache entry %s %s; removing it", path, why)
        with self._lock:
            self.stats.corrupt += 1
        try:
            # Another process may have just renamed a good copy into place; keep that one.
            current = os.stat(path)
            if (current.st_ino, current.st_dev) == (st.st_ino, st.st_dev):
                path.unlink()
        except OSError:
            pass
        self._forget(key)

    def discard(self, key: str) -> None:
        """Removes an entry whose bytes turned out to be unusable."""
        with contextlib.suppress(OSError):
            self._path(key).unlink()
        self._forget(key)

    def _forget(self, key: str) -> None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._total -= entry.size

    def put(self, key: str, data: bytes | memoryview) -> bool:
        """Stores a small object now; False when it does not fit or the disk refused."""
        size = len(data)
        if size + TRAILER.size > self.budget_bytes:
            return False
        try:
            with self._temp_file(key) as (fh, _):
                fh.write(data)
                fh.write(TRAILER.pack(TRAILER_MAGIC, size, crc32c.crc32c(data), TRAILER_FORMAT))
        except OSError as exc:
            log.warning("cannot write cache entry for %s: %s", key, exc)
            return False
        self._added(key, size + TRAILER.size)
        return True

    @contextlib.contextmanager
    def _temp_file(self, key: str):
        fd, name = tempfile.mkstemp(prefix=f"{key}.", suffix=PART_SUFFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh, name
            os.replace(name, self._path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise

    def _added(self, key: str, disk_size: int) -> None:
        now = time.time()
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self._total -= old.size
            self._entries[key] = _Entry(disk_size, now, touched=now)
            self._total += disk_size
        self._evict(keep=key)

    # -- background downloads ------------------------------------------------------------------

    def prefetch(self, key: str, size: int, source: RangeReader,
                 on_done: Callable[[str], None] | None = None) -> bool:
        """Copies the object behind ``source`` into the cache in the background.

        ``on_done(key)`` runs on a worker thread once the entry is in place (at once,
        on the caller's thread, when it already is). Returns False when the object
        will not be cached (larger than the whole budget, or the cache is closed).
        """
        if self._closed or size + TRAILER.size > self.budget_bytes:
            return False
        if self._path(key).exists():
            if on_done is not None:
                on_done(key)
            return True
        with self._lock:
            if self._closed:
                return False
            job = self._inflight.get(key)
            if job is not None:
                if on_done is not None:
                    job.callbacks.append(on_done)
                return True
            job = _Job(key, size, source, [on_done] if on_done is not None else [])
            self._inflight[key] = job
            self._start_workers()
        self._queue.put(job)
        return True

    def _start_workers(self) -> None:
        while len(self._threads) < self._workers:
            t = threading.Thread(target=self._work, name=f"quiver-cache-{len(self._threads)}",
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            ok = False
            try:
                ok = self._download(job)
            except _Cancelled:
                log.debug("caching %s stopped: the cache is closed", job.key)
            except Exception as exc:  # a failed prefetch only costs remote reads
                with self._lock:
                    self.stats.download_failures += 1
                log.warning("caching %s failed: %s", job.key, exc)
            with self._lock:
                self._inflight.pop(job.key, None)
                callbacks = list(job.callbacks)
                self._idle.notify_all()
            if ok:
                for callback in callbacks:
                    try:
                        callback(job.key)
                    except Exception:  # a listener's failure is not the cache's
                        log.exception("cache completion callback failed for %s", job.key)

    def _download(self, job: _Job) -> bool:
        if self._closed:
            return False
        if self._path(job.key).exists():
            # Another process (or an earlier job) got there first.
            return True
        crc = 0
        written = 0
        with self._temp_file(job.key) as (fh, _):
            while written < job.size:
                if self._closed:
                    raise _Cancelled
                n = min(DOWNLOAD_CHUNK, job.size - written)
                chunk = job.source.read(written, n)
                if len(chunk) != n:
                    raise OSError(f"short read at {written}: wanted {n}, got {len(chunk)}")
                fh.write(chunk)
                crc = crc32c.crc32c(chunk, crc)
                written += n
            fh.write(TRAILER.pack(TRAILER_MAGIC, job.size, crc, TRAILER_FORMAT))
            fh.flush()
            if os.fstat(fh.fileno()).st_size != job.size + TRAILER.size:
                raise OSError("the cache file did not receive every byte")
        with self._lock:
            self.stats.downloads += 1
            self.stats.downloaded_bytes += job.size
        self._added(job.key, job.size + TRAILER.size)
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no download is queued or running; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Stops the workers; a download under way is abandoned (its temp file removed)."""
        with self._lock:
            # Under the lock, so no job is queued behind the workers' stop signals.
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)

    # -- budget --------------------------------------------------------------------------------

    def add_eviction_listener(self, callback: Callable[[str], None]) -> None:
        """``callback(key)`` runs after ``key`` was evicted. Bound methods are held weakly,
        so a listener does not outlive its owner."""
        is_method = hasattr(callback, "__func__") and hasattr(callback, "__self__")
        ref = weakref.WeakMethod(callback) if is_method else callback
        with self._lock:
            self._listeners.append(ref)

    def _notify_evicted(self, keys: list[str]) -> None:
        with self._lock:
            live = []
            for ref in self._listeners:
                fn = ref() if isinstance(ref, weakref.WeakMethod) else ref
                if fn is not None:
                    live.append((ref, fn))
            self._listeners = [r for r, _ in live]
        for key in keys:
            for _, fn in live:
                try:
                    fn(key)
                except Exception:  # a listener's failure is not the cache's
                    log.exception("cache eviction listener failed for %s", key)

    def _rescan(self) -> None:
        """Merges the directory's entries (other processes', earlier runs') into the index."""
        now = time.time()
        started = now
        seen: dict[str, tuple[int, float]] = {}
        try:
            with os.scandir(self.directory) as it:
                for item in it:
                    name = item.name
                    try:
                        st = item.stat()
                    except OSError:
                        continue
                    if name.endswith(ENTRY_SUFFIX):
                        seen[name[: -len(ENTRY_SUFFIX)]] = (st.st_size, st.st_mtime)
                    elif name.endswith(PART_SUFFIX) and now - st.st_mtime > STALE_PART_S:
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)
        except OSError as exc:
            log.warning("cannot list cache directory %s: %s", self.directory, exc)
            return
        with self._lock:
            merged: dict[str, _Entry] = {}
            for key, (size, mtime) in seen.items():
                mine = self._entries.get(key)
                last = max(mtime, mine.last_used) if mine is not None else mtime
                merged[key] = _Entry(size, last, mine.touched if mine is not None else mtime)
            for key, mine in self._entries.items():
                # Added by this process while the directory was being listed.
                if key not in merged and mine.touched >= started:
                    merged[key] = mine
            self._entries = merged
            self._total = sum(e.size for e in merged.values())
            self._last_scan = time.monotonic()

    def _evict(self, keep: str | None = None) -> None:
        with self._lock:
            stale = time.monotonic() - self._last_scan > RESCAN_INTERVAL_S
            over = self._total > self.budget_bytes
        if not (stale or over):
            return
        self._rescan()
        evicted: list[str] = []
        with self._lock:
            if self._total <= self.budget_bytes:
                return
            for key, entry in sorted(self._entries.items(), key=lambda kv: kv[1].last_used):
                if self._total <= self.budget_bytes:
                    break
                if key == keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self._path(key).unlink()
                del self._entries[key]
                self._total -= entry.size
                self.stats.evictions += 1
                evicted.append(key)
        if evicted:
            log.debug("evicted %d cache entries from %s", len(evicted), self.directory)
            self._notify_evicted(evicted)


class _Cancelled(QuiverError):
    """A download stopped because the cache was closed."""

    kind = Kind.CANCELLED


_shared: dict[str, SuperfileCache] = {}
_shared_lock = threading.Lock()


def shared_cache(directory: str | os.PathLike[str], budget_bytes: int) -> SuperfileCache:
    """The process-wide cache of ``directory``; the latest budget given wins."""
    real = os.path.realpath(directory)
    shrunk = False
    with _shared_lock:
        cache = _shared.get(real)
        if cache is None or cache._closed:
            cache = _shared[real] = SuperfileCache(real, budget_bytes)
        elif cache.budget_bytes != int(budget_bytes):
            shrunk = int(budget_bytes) < cache.budget_bytes
            cache.budget_bytes = int(budget_bytes)
    if shrunk:
        cache._evict()
    return cache


def _close_shared() -> None:
    # Stops downloads at interpreter exit so no worker is mid-write while Python tears down.
    with _shared_lock:
        caches = list(_shared.values())
    for cache in caches:
        cache.close()


atexit.register(_close_shared)


def default_cache_dir() -> Path:
    """``$QUIVER_CACHE_DIR``, else ``<temp dir>/quiver-cache-<uid>``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    uid = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    return Path(tempfile.gettempdir()) / f"quiver-cache-{uid}"


def default_budget(directory: Path) -> int:
    """``$QUIVER_CACHE_BYTES``, else 4 GiB but at most half the free space of the disk."""
    env = os.environ.get(ENV_BYTES)
    if env:
        return max(0, int(env))
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return DEFAULT_BUDGET_BYTES
    return min(DEFAULT_BUDGET_BYTES, free // 2)


def _private_dir(directory: Path) -> bool:
    """Creates the default directory for this user only; refuses one someone else could
    write to, since its entries are trusted once their checksums match."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = directory.stat()
    except OSError as exc:
        log.warning("no superfile cache: cannot create %s: %s", directory, exc)
        return False
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        log.warning("no superfile cache: %s is not private to this user", directory)
        return False
    return True


def cache_for_store(store: object, cache_dir: str | None,
                    cache_bytes: int | None) -> SuperfileCache | None:
    """The cache a table on ``store`` should use, or None.

    Memory and local roots are read in place and get none. For remote roots
    ``cache_dir=None`` means ``default_cache_dir()`` and ``cache_bytes=None`` means
    ``default_budget``; ``cache_bytes=0`` turns the cache off.
    """
    if getattr(store, "kind", "remote") in ("memory", "local"):
        return None
    if getattr(store, "uri", None) is None or cache_bytes == 0:
        return None
    if cache_dir is None:
        directory = default_cache_dir()
        if not _private_dir(directory):
            return None
    else:
        directory = Path(cache_dir)
    try:
        budget = default_budget(directory) if cache_bytes is None else int(cache_bytes)
        if budget <= 0:
            return None
        return shared_cache(directory, budget)
    except (OSError, ValueError) as exc:
        log.warning("no superfile cache in %s: %s", directory, exc)
        return None
