"""The superfile cache's disk behaviour: entry format and checks, LRU budget, downloads
that never expose partial files, restarts, and processes sharing one directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.superfile.ranges import BytesRangeReader
from quiver.supertable import cache as cache_mod
from quiver.supertable.cache import (
    ENTRY_SUFFIX,
    PART_SUFFIX,
    TRAILER,
    SuperfileCache,
    cache_key,
    shared_cache,
)

WAIT_S = 10.0
REPO = Path(__file__).resolve().parents[2]


def payload(i: int, size: int) -> bytes:
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


def entry_path(cache: SuperfileCache, key: str) -> Path:
    return cache.directory / f"{key}{ENTRY_SUFFIX}"


class FlakySource:
    """A byte source over real bytes that fails, or waits, at a chosen read."""

    def __init__(self, data: bytes, fail_at_read: int | None = None,
                 gate: threading.Event | None = None) -> None:
        self._inner = BytesRangeReader(data)
        self._fail_at = fail_at_read
        self._gate = gate
        self.reads = 0

    def size(self) -> int:
        return self._inner.size()

    def read(self, offset: int, length: int):
        self.reads += 1
        if self._gate is not None:
            assert self._gate.wait(WAIT_S)
        if self.reads == self._fail_at:
            raise OSError("connection reset")
        return self._inner.read(offset, length)


@pytest.fixture
def make_cache(tmp_path):
    made: list[SuperfileCache] = []

    def _make(budget: int = 1 << 20, directory: Path | None = None) -> SuperfileCache:
        c = SuperfileCache(directory or tmp_path / "cache", budget)
        made.append(c)
        return c

    yield _make
    for c in made:
        c.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=4096), damage=st.data())
def test_entry_round_trips_and_any_damage_is_rejected_and_removed(make_cache, tmp_path, data,
                                                                  damage):
    cache = make_cache(directory=tmp_path / f"c{os.urandom(4).hex()}")
    assert cache.put("k", data)
    view = cache.open("k", len(data))
    assert view is not None and bytes(view) == data
    del view
    path = entry_path(cache, "k")
    raw = bytearray(path.read_bytes())
    assert len(raw) == len(data) + TRAILER.size
    if damage.draw(st.booleans(), label="truncate"):
        cut = damage.draw(st.integers(0, len(raw) - 1), label="cut")
        path.write_bytes(bytes(raw[:cut]))
    else:
        at = damage.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= damage.draw(st.integers(1, 255), label="xor")
        path.write_bytes(bytes(raw))
    assert cache.open("k", len(data)) is None
    assert not path.exists()
    assert cache.stats.corrupt == 1


def test_entry_of_another_size_than_expected_is_not_used(make_cache):
    cache = make_cache()
    assert cache.put("k", b"x" * 100)
    assert cache.open("k", 99) is None
    assert cache.open("k", 100) is None  # removed by the failed check


def test_least_recently_used_entry_is_evicted_and_listeners_told(make_cache):
    size = 1000
    cache = make_cache(budget=2 * (size + TRAILER.size))
    evicted: list[str] = []
    cache.add_eviction_listener(evicted.append)
    assert cache.put("a", payload(1, size))
    time.sleep(0.01)
    assert cache.put("b", payload(2, size))
    time.sleep(0.01)
    assert cache.open("a", size) is not None  # a is now more recent than b
    time.sleep(0.01)
    assert cache.put("c", payload(3, size))
    assert evicted == ["b"]
    assert not entry_path(cache, "b").exists()
    assert cache.open("a", size) is not None and cache.open("c", size) is not None
    assert cache.used_bytes() == 2 * (size + TRAILER.size) and cache.stats.evictions == 1


def test_bound_method_listener_does_not_keep_its_owner_alive(make_cache):
    cache = make_cache(budget=1100)

    class Owner:
        calls = 0

        def on_evict(self, key: str) -> None:
            Owner.calls += 1

    owner = Owner()
    cache.add_eviction_listener(owner.on_evict)
    del owner
    cache.put("a", b"1" * 1000)
    cache.put("b", b"2" * 1000)
    assert cache.stats.evictions == 1 and Owner.calls == 0


def test_mapping_of_an_evicted_entry_stays_readable(make_cache):
    size = 50_000
    cache = make_cache(budget=size + TRAILER.size)
    data = payload(7, size)
    cache.put("a", data)
    view = cache.open("a", size)
    assert view is not None
    cache.put("b", payload(8, size))
    assert not entry_path(cache, "a").exists()
    assert bytes(view) == data


def test_object_larger_than_the_budget_is_not_cached(make_cache):
    cache = make_cache(budget=1000)
    assert not cache.put("big", b"x" * 1000)
    assert not cache.prefetch("big", 5000, BytesRangeReader(b"y" * 5000))
    assert list(cache.directory.iterdir()) == []


def test_failed_download_leaves_no_entry_and_no_partial_file(make_cache, monkeypatch):
    monkeypatch.setattr(cache_mod, "DOWNLOAD_CHUNK", 1000)
    cache = make_cache()
    data = payload(3, 10_000)
    done: list[str] = []
    assert cache.prefetch("k", len(data), FlakySource(data, fail_at_read=4), done.append)
    assert cache.wait_idle(WAIT_S)
    assert done == [] and cache.stats.download_failures == 1
    assert list(cache.directory.iterdir()) == []
    assert cache.open("k", len(data)) is None

    source = FlakySource(data)
    assert cache.prefetch("k", len(data), source, done.append)
    assert cache.wait_idle(WAIT_S)
    assert done == ["k"] and source.reads == 10
    view = cache.open("k", len(data))
    assert view is not None and bytes(view) == data


def test_concurrent_prefetches_of_one_object_download_it_once(make_cache):
    cache = make_cache()
    data = payload(5, 4096)
    gate = threading.Event()
    first = FlakySource(data, gate=gate)
    second = FlakySource(data)
    done: list[int] = []
    assert cache.prefetch("k", len(data), first, lambda _k: done.append(1))
    assert cache.prefetch("k", len(data), second, lambda _k: done.append(2))
    gate.set()
    assert cache.wait_idle(WAIT_S)
    assert sorted(done) == [1, 2]
    assert second.reads == 0 and cache.stats.downloads == 1
    # Once it is there, a prefetch calls back at once and downloads nothing.
    assert cache.prefetch("k", len(data), second, lambda _k: done.append(3))
    assert done[-1] == 3 and second.reads == 0


def test_close_abandons_a_download_under_way(make_cache, monkeypatch):
    monkeypatch.setattr(cache_mod, "DOWNLOAD_CHUNK", 100)
    cache = make_cache()
    gate = threading.Event()
    data = payload(9, 1000)
    source = FlakySource(data, gate=gate)
    cache.prefetch("k", len(data), source)
    deadline = time.monotonic() + WAIT_S
    while not any(p.name.endswith(PART_SUFFIX) for p in cache.directory.iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    cache.close()
    gate.set()
    assert cache.wait_idle(WAIT_S)
    assert list(cache.directory.iterdir()) == []
    assert source.reads < 10
    assert not cache.prefetch("other", 10, BytesRangeReader(b"0123456789"))


def test_restart_sees_entries_on_disk_and_evicts_by_file_time(make_cache, tmp_path):
    size = 1000
    first = make_cache(budget=10 * size)
    for i, key in enumerate(["old", "mid", "new"]):
        first.put(key, payload(i, size))
        past = time.time() - 1000 + 100 * i
        os.utime(entry_path(first, key), (past, past))
    first.close()

    # A stale partial download from a process that died, and a fresh one still being written.
    stale = first.directory / f"x.{os.getpid()}{PART_SUFFIX}"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * cache_mod.STALE_PART_S,) * 2)
    fresh = first.directory / f"y.{os.getpid()}{PART_SUFFIX}"
    fresh.write_bytes(b"in progress")

    second = make_cache(budget=3 * (size + TRAILER.size), directory=first.directory)
    assert second.used_bytes() == 3 * (size + TRAILER.size)
    assert not stale.exists() and fresh.exists()
    second.put("newest", payload(9, size))
    assert not entry_path(second, "old").exists()
    assert all(second.open(k, size) is not None for k in ("mid", "new", "newest"))


def test_cache_key_depends_on_store_and_path():
    keys = {cache_key("s3://a/p", "t/data/x.parquet"), cache_key("s3://b/p", "t/data/x.parquet"),
            cache_key("s3://a/p", "t/data/y.parquet"), cache_key("s3://a/p\nt", "data/x.parquet")}
    assert len(keys) == 4


SHARER = textwrap.dedent("""
    import sys, time
    from quiver.superfile.ranges import BytesRangeReader
    from quiver.supertable.cache import SuperfileCache

    directory, seed, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def payload(i, size):
        return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]
    cache = SuperfileCache(directory, budget, workers=2)
    deadline = time.monotonic() + 20
    checked = 0
    for round_ in range(40):
        if time.monotonic() > deadline:
            break
        for i in range(12):
            key, size = f"k{i}", 3000 + 1000 * i
            if (i + round_ + seed) % 3 == 0:
                cache.put(key, payload(i, size))
            else:
                cache.prefetch(key, size, BytesRangeReader(payload(i, size)))
            view = cache.open(key, size)
            if view is not None:
                assert bytes(view) == payload(i, size), key
                checked += 1
        assert cache.wait_idle(10)
    cache.close()
    print(checked, cache.stats.corrupt)
""")


def test_two_processes_sharing_a_directory_never_see_a_bad_entry(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    budget = 40_000  # well below the 102 kB of all entries, so both processes evict
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", SHARER, str(directory), str(seed),
                               str(budget)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        checked, corrupt = map(int, out.split())
        assert checked > 0 and corrupt == 0, (checked, corrupt)
    leftovers = [p.name for p in directory.iterdir() if not p.name.endswith(ENTRY_SUFFIX)]
    assert leftovers == []
    cache = SuperfileCache(directory, budget)
    try:
        assert cache.stats.corrupt == 0
        for i in range(12):
            view = cache.open(f"k{i}", 3000 + 1000 * i)
            assert view is None or bytes(view) == payload(i, 3000 + 1000 * i)
        assert cache.stats.corrupt == 0
    finally:
        cache.close()


def test_shared_cache_is_one_per_directory_and_a_smaller_budget_evicts_at_once(tmp_path):
    directory = tmp_path / "shared-one"
    first = shared_cache(directory, 10_000)
    try:
        assert shared_cache(str(directory) + "/", 10_000) is first
        first.put("a", b"a" * 3000)
        time.sleep(0.01)
        first.put("b", b"b" * 3000)
        again = shared_cache(directory, 4000)
        assert again is first and again.budget_bytes == 4000
        assert not entry_path(first, "a").exists() and entry_path(first, "b").exists()
    finally:
        first.close()
    assert shared_cache(directory, 4000) is not first
    shared_cache(directory, 4000).close()
