"""The object store contract, pinned identically on memory, local disk and S3 (moto)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from quiver.catalog.storage import ObjectStoreRangeReader, drop_memory_store, open_store
from quiver.superfile.errors import CorruptFileError
from quiver.superfile.ranges import read_many
from quiver.supertable.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from quiver.supertable.store import ObjectStore, ObjectVersion

BACKENDS = ["memory", "local", "s3"]


@pytest.fixture
def make_store(request, tmp_path) -> Iterator[Callable[[str], ObjectStore]]:
    """Opens a root on the backend under test; the same ``sub`` gives the same root."""
    backend = request.param
    names: list[str] = []
    token = uuid.uuid4().hex[:12]
    bucket: list[str] = []

    def make(sub: str = "root") -> ObjectStore:
        if backend == "memory":
            names.append(f"memory://t{token}/{sub}")
            return open_store(names[-1])
        if backend == "local":
            return open_store(str(tmp_path / sub))
        server = request.getfixturevalue("s3_server")
        if not bucket:
            bucket.append(server.new_bucket())
        return open_store(f"s3://{bucket[0]}/{sub}", **server.options())

    yield make
    for name in names:
        drop_memory_store(name)


@pytest.fixture
def store(make_store) -> ObjectStore:
    return make_store()


def pytest_generate_tests(metafunc):
    if "make_store" in metafunc.fixturenames:
        metafunc.parametrize("make_store", BACKENDS, indirect=True)


def _payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ------------------------------------------------------------------ plain reads and writes


def test_put_then_get_returns_the_bytes_and_matching_metadata(store):
    data = _payload(10_000)
    version = store.put("t/a.bin", data)
    got, meta = store.get("t/a.bin")
    assert got == data
    assert isinstance(got, bytes)
    assert meta.path == "t/a.bin"
    assert meta.size == len(data)
    assert meta.version.e_tag is not None
    assert meta.version == version
    assert store.head("t/a.bin") == meta


def test_overwrite_replaces_content_and_changes_the_version(store):
    v1 = store.put("k", b"first")
    v2 = store.put("k", b"second, longer")
    assert v1.e_tag != v2.e_tag
    assert store.get("k")[0] == b"second, longer"
    assert store.head("k").version == v2


def test_empty_object_round_trips(store):
    store.put("empty", b"")
    assert store.get("empty")[0] == b""
    assert store.head("empty").size == 0


def test_get_range_and_get_ranges_equal_slices_of_the_object(store):
    data = _payload(200_000, seed=1)
    store.put("obj", data)
    rng = np.random.default_rng(2)
    ranges = []
    for _ in range(40):
        off = int(rng.integers(0, len(data)))
        ranges.append((off, int(rng.integers(0, len(data) - off + 1))))
    ranges += [(0, len(data)), (len(data), 0), (5, 0), (len(data) - 1, 1)]
    for off, length in ranges[:8]:
        assert store.get_range("obj", off, length) == data[off : off + length]
    got = store.get_ranges("obj", ranges)
    assert got == [data[o : o + n] for o, n in ranges]
    assert store.get_ranges("obj", []) == []


def test_missing_objects_raise_object_not_found(store):
    with pytest.raises(ObjectNotFoundError):
        store.get("nope")
    with pytest.raises(ObjectNotFoundError):
        store.head("nope")
    with pytest.raises(ObjectNotFoundError):
        store.get_range("nope", 0, 4)
    with pytest.raises(ObjectNotFoundError):
        store.get_ranges("nope", [(0, 4), (10, 2)])
    with pytest.raises(ObjectNotFoundError):
        ObjectStoreRangeReader(store, "nope")


def test_head_finds_only_objects_not_their_folders_nor_what_was_deleted(store):
    # Local roots answer a miss from the file system without a client request: what
    # exists there but is no object (a folder) must still be "not found", and an object
    # written or deleted a moment ago must be seen as it now is.
    store.put("f/g/1", b"x")
    for folder in ("f", "f/g"):
        with pytest.raises(ObjectNotFoundError):
            store.head(folder)
    assert store.head("f/g/1").size == 1
    store.delete("f/g/1")
    with pytest.raises(ObjectNotFoundError):
        store.head("f/g/1")
    store.put("f/g/1", b"yz")
    assert store.head("f/g/1").size == 2


@pytest.mark.parametrize("offset,length", [(90, 20), (100, 1), (500, 10), (0, 101)])
def test_ranges_past_the_end_raise_a_storage_error_naming_the_size(store, offset, length):
    store.put("short", _payload(100))
    with pytest.raises(StorageError, match="past the end of the 100-byte object"):
        store.get_range("short", offset, length)
    with pytest.raises(StorageError, match="past the end"):
        store.get_ranges("short", [(0, 10), (offset, length)])


def test_negative_ranges_and_malformed_paths_are_rejected(store):
    store.put("x", b"abc")
    with pytest.raises(StorageError):
        store.get_range("x", -1, 2)
    with pytest.raises(StorageError):
        store.get_ranges("x", [(0, -2)])
    for bad in ["", "/abs", "a//b", "a/../b", "dir/"]:
        with pytest.raises(StorageError):
            store.put(bad, b"1")


def test_delete_removes_and_deleting_an_absent_object_is_not_an_error(store):
    store.put("d/1", b"x")
    store.delete("d/1")
    with pytest.raises(ObjectNotFoundError):
        store.head("d/1")
    store.delete("d/1")
    store.delete("never/was")


def test_list_matches_by_string_prefix_in_path_order(store):
    for path in ["t/b/2", "t/a", "t/b/1", "t/ab", "u/z", "t2/x"]:
        store.put(path, path.encode())
    paths = lambda prefix: [m.path for m in store.list(prefix)]  # noqa: E731
    assert paths("") == ["t/a", "t/ab", "t/b/1", "t/b/2", "t2/x", "u/z"]
    assert paths("t/") == ["t/a", "t/ab", "t/b/1", "t/b/2"]
    assert paths("t") == ["t/a", "t/ab", "t/b/1", "t/b/2", "t2/x"]
    assert paths("t/a") == ["t/a", "t/ab"]
    assert paths("t/b/") == ["t/b/1", "t/b/2"]
    assert paths("none/") == []
    metas = {m.path: m for m in store.list("t/b")}
    assert metas["t/b/1"].size == 5
    assert metas["t/b/1"].version == store.head("t/b/1").version


def test_roots_with_different_prefixes_do_not_see_each_other(make_store):
    one, two = make_store("one"), make_store("two")
    one.put("k", b"1")
    two.put("k", b"2")
    assert one.get("k")[0] == b"1"
    assert [m.path for m in one.list()] == ["k"]
    assert make_store("one").get("k")[0] == b"1"


def test_large_objects_round_trip(store):
    data = _payload(6 * 1024 * 1024 + 17, seed=5)
    store.put("big", data)
    assert store.head("big").size == len(data)
    assert store.get_range("big", 5 * 1024 * 1024 - 3, 100) == data[5 * 1024 * 1024 - 3 :][:100]


# ------------------------------------------------------------------ conditional writes


def test_create_succeeds_once_then_fails_with_object_exists(store):
    v = store.put("m/00001.json", b"first", mode="create")
    with pytest.raises(ObjectExistsError):
        store.put("m/00001.json", b"second", mode="create")
    assert store.get("m/00001.json")[0] == b"first"
    assert store.head("m/00001.json").version == v


def test_racing_creates_have_exactly_one_winner(store):
    writers = 8
    for round_ in range(3):
        key = f"race/{round_}"
        barrier = threading.Barrier(writers)
        outcome: dict[int, str] = {}

        def attempt(i: int, key: str = key, barrier: threading.Barrier = barrier,
                    outcome: dict[int, str] = outcome) -> None:
            barrier.wait()
            try:
                store.put(key, f"writer-{i}".encode(), mode="create")
                outcome[i] = "won"
            except ObjectExistsError:
                outcome[i] = "lost"

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, o in outcome.items() if o == "won"]
        assert len(outcome) == writers
        assert len(winners) == 1
        assert store.get(key)[0] == f"writer-{winners[0]}".encode()


def test_update_if_match_writes_only_against_the_current_version(store):
    v1 = store.put("ptr", b"v1")
    v2 = store.put("ptr", b"v2", mode=v1)
    assert v2 != v1
    assert store.get("ptr")[0] == b"v2"
    with pytest.raises(PreconditionFailedError):
        store.put("ptr", b"stale", mode=v1)
    assert store.get("ptr")[0] == b"v2"
    v3 = store.put("ptr", b"v3", mode=store.head("ptr").version)
    assert store.head("ptr").version == v3


def test_update_if_match_on_a_missing_object_fails_the_precondition(store):
    with pytest.raises(PreconditionFailedError):
        store.put("absent", b"x", mode=ObjectVersion(e_tag='"0123"'))
    with pytest.raises(ObjectNotFoundError):
        store.head("absent")


def test_update_after_a_foreign_overwrite_fails_the_precondition(store):
    v1 = store.put("ptr", b"one")
    store.put("ptr", b"two")  # an unconditional writer slipped in
    with pytest.raises(PreconditionFailedError):
        store.put("ptr", b"three", mode=v1)


def test_concurrent_read_modify_write_loses_no_update(store):
    store.put("counter", b"0")
    workers, increments = 4, 5
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(increments):
                while True:
                    data, meta = store.get("counter")
                    try:
                        store.put("counter", str(int(data) + 1).encode(), mode=meta.version)
                        break
                    except PreconditionFailedError:
                        continue
        except BaseException as exc:  # surfaced in the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert int(store.get("counter")[0]) == workers * increments


# ------------------------------------------------------------------ range reader


def test_range_reader_serves_ranges_equal_to_the_bytes(store):
    data = _payload(50_000, seed=9)
    store.put("sf/file.parquet", data)
    reader = ObjectStoreRangeReader(store, "sf/file.parquet")
    assert reader.size() == len(data)
    rng = np.random.default_rng(4)
    for _ in range(20):
        off = int(rng.integers(0, len(data)))
        length = int(rng.integers(0, len(data) - off + 1))
        assert bytes(reader.read(off, length)) == data[off : off + length]
    ranges = [(0, 10), (100, 50), (49_990, 10), (20_000, 0)]
    assert [bytes(b) for b in read_many(reader, ranges)] == [data[o : o + n] for o, n in ranges]
    assert [bytes(b) for b in reader.read_ranges(ranges)] == [data[o : o + n] for o, n in ranges]


def test_range_reader_rejects_out_of_bounds_reads_as_corrupt(store):
    store.put("f", b"0123456789")
    reader = ObjectStoreRangeReader(store, "f")
    with pytest.raises(CorruptFileError):
        reader.read(5, 6)
    with pytest.raises(CorruptFileError):
        reader.read_ranges([(0, 1), (10, 1)])


def test_range_reader_with_a_larger_claimed_size_reports_a_short_object(store):
    store.put("f", b"0123456789")
    reader = ObjectStoreRangeReader(store, "f", size=20)
    assert reader.size() == 20
    assert bytes(reader.read(2, 3)) == b"234"
    with pytest.raises((CorruptFileError, StorageError)):
        reader.read(8, 10)
