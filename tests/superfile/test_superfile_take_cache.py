"""Taking rows of resident files from whole decoded columns: equal to the page path,
bounded by the cache budget, safe from many threads."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.superfile import CorruptFileError, SuperfileReader, write_superfile
from quiver.superfile.parquet_pages.row_fetch import (
    ADMIT_FRACTION,
    COLUMN_CACHE,
    ColumnCache,
    RowFetcher,
    read_footer,
)
from quiver.superfile.ranges import BytesRangeReader
from quiver.superfile.spec import IndexSpec
from tests.superfile.test_parquet_pages_rows import assert_same, random_table, write

# Index building is not what these tests are about; they only read the Parquet body.
NO_INDEX = IndexSpec()
NAMES = ["i64", "i32", "f64", "s", "b", "ts", "vec", "lst", "st"]


def pair(data: bytes, cache: ColumnCache) -> tuple[RowFetcher, RowFetcher]:
    """A fetcher over resident bytes with ``cache``, and one that only reads pages."""
    source = BytesRangeReader(data)
    footer, _ = read_footer(source)
    schema = pq.ParquetFile(pa.py_buffer(data)).schema_arrow
    resident = RowFetcher(source, footer, schema, resident=data, cache=cache)
    return resident, RowFetcher(BytesRangeReader(data), footer, schema)


@pytest.fixture
def shared_cache():
    """The process-wide cache, emptied before and after, its budget restored."""
    budget = COLUMN_CACHE.budget
    COLUMN_CACHE.clear()
    yield COLUMN_CACHE
    COLUMN_CACHE.set_budget(budget)
    COLUMN_CACHE.clear()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    n=st.integers(1, 1500),
    seed=st.integers(0, 2**32 - 1),
    row_group_size=st.integers(1, 1000),
    max_rows_per_page=st.integers(1, 400),
    compression=st.sampled_from(["zstd", "snappy", "none"]),
    data=st.data(),
)
def test_cached_columns_give_exactly_what_the_pages_give(
    n: int, seed: int, row_group_size: int, max_rows_per_page: int, compression: str,
    data: st.DataObject,
) -> None:
    table = random_table(n, seed, 3)
    raw = write(table, row_group_size=row_group_size, max_rows_per_page=max_rows_per_page,
                compression=compression)
    cache = ColumnCache()
    resident, paged = pair(raw, cache)
    columns = data.draw(st.none() | st.lists(st.sampled_from(NAMES), min_size=1, max_size=4,
                                             unique=True))
    for _ in range(2):
        ids = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=30)), np.int64)
        want = paged.take(ids, columns)
        # The second take of a column is served from its whole decode.
        for _ in range(2):
            got = resident.take(ids, columns)
            assert got.schema.equals(want.schema)
            assert got.equals(want)
        oracle = table.take(ids) if columns is None else table.select(columns).take(ids)
        assert_same(got, oracle)
    if len(ids):
        assert len(cache) == len(set(columns or NAMES))


def test_a_first_small_take_reads_pages_and_the_second_decodes_the_column():
    table = random_table(2000, 4, 2)
    cache = ColumnCache()
    resident, _ = pair(write(table, max_rows_per_page=100), cache)
    ids = np.array([5, 1999, 5], np.int64)
    assert_same(resident.take(ids, ["s"]), table.select(["s"]).take(ids))
    assert len(cache) == 0
    assert_same(resident.take(ids, ["s"]), table.select(["s"]).take(ids))
    assert len(cache) == 1
    assert_same(resident.take(ids, ["s"]), table.select(["s"]).take(ids))
    assert cache.hits == 1


def test_a_take_of_many_rows_decodes_the_column_at_once():
    n = 2000
    table = random_table(n, 5, 2)
    cache = ColumnCache()
    resident, _ = pair(write(table), cache)
    ids = np.arange(0, n, ADMIT_FRACTION // 2, dtype=np.int64)[::-1]
    assert_same(resident.take(ids, ["s", "st"]), table.select(["s", "st"]).take(ids))
    assert len(cache) == 2


def test_the_budget_evicts_least_recently_used_columns_whole():
    n = 3000
    table = random_table(n, 6, 4)
    biggest = max(table.column(c).nbytes for c in NAMES)
    # Any column fits, but only a few at a time.
    cache = ColumnCache(budget=3 * biggest, max_column=2 * biggest)
    files = [pair(write(table), cache)[0] for _ in range(3)]
    ids = np.arange(n, dtype=np.int64)[::7]
    for fetcher in files:
        for name in NAMES:
            assert_same(fetcher.take(ids, [name]), table.select([name]).take(ids))
            assert cache.used <= cache.budget
    assert cache.evictions > 0
    assert 0 < len(cache) < len(files) * len(NAMES)
    # The first file's first column went first; asking again decodes it anew, unchanged.
    first_key = (files[0]._owner, NAMES[0])
    assert first_key not in cache
    assert_same(files[0].take(ids, [NAMES[0]]), table.select([NAMES[0]]).take(ids))
    assert first_key in cache
    cache.set_budget(biggest // 2)
    assert cache.used <= biggest // 2
    with pytest.raises(ValueError):
        cache.set_budget(-1)


def test_a_column_bigger_than_its_budget_share_keeps_using_pages():
    table = random_table(3000, 7, 8)
    cache = ColumnCache(budget=table.column("vec").nbytes)
    resident, _ = pair(write(table), cache)
    ids = np.arange(3000, dtype=np.int64)[::3]
    for _ in range(3):
        assert_same(resident.take(ids, ["vec"]), table.select(["vec"]).take(ids))
    assert len(cache) == 0
    assert cache.used == 0


def test_concurrent_put_of_one_column_keeps_the_first_copy():
    cache = ColumnCache()
    first = pa.array([1, 2, 3])
    assert cache.put(7, "a", first, first.nbytes) is first
    assert cache.put(7, "a", pa.array([1, 2, 3]), first.nbytes) is first
    assert cache.used == first.nbytes


def test_a_dropped_reader_frees_its_columns(shared_cache):
    table = random_table(1000, 8, 2).select(["i64", "s", "f64"])
    data = write_superfile(table, NO_INDEX).data
    reader = SuperfileReader.open(data)
    ids = np.arange(1000, dtype=np.int64)[::5]
    reader.take(ids, ["i64", "s"])
    assert len(shared_cache) == 2 and shared_cache.used > 0
    del reader
    gc.collect()
    assert len(shared_cache) == 0
    assert shared_cache.used == 0


def test_resident_and_lazy_readers_take_the_same_rows(shared_cache):
    table = random_table(1500, 9, 4).select(["i64", "s", "vec", "lst", "st"])
    data = write_superfile(table, NO_INDEX).data
    eager = SuperfileReader.open(data)
    lazy = SuperfileReader.open_lazy(BytesRangeReader(data))
    rng = np.random.default_rng(1)
    for size in (3, 10, 3, 700):
        ids = rng.integers(0, 1500, size)
        want = lazy.take(ids)
        assert eager.take(ids).equals(want)
        assert eager.take(ids).equals(want)
    assert len(shared_cache) == len(table.column_names)
    assert shared_cache.hits > 0


def test_a_damaged_data_page_fails_the_whole_decode_with_a_corrupt_file_error(shared_cache):
    table = pa.table({"s": [f"value number {i}" for i in range(4000)]})
    data = bytearray(write_superfile(table, NO_INDEX).data)
    meta = pq.ParquetFile(pa.py_buffer(bytes(data))).metadata.row_group(0).column(0)
    data[meta.data_page_offset + meta.total_compressed_size // 2] ^= 0x5A
    reader = SuperfileReader.open(bytes(data))
    with pytest.raises(CorruptFileError):
        reader.take(np.arange(4000, dtype=np.int64), ["s"])


def test_takes_from_many_threads_under_eviction_pressure_are_correct():
    n = 2000
    table = random_table(n, 10, 3).select(["i64", "s", "lst", "st", "f64"])
    sizes = [table.column(c).nbytes for c in table.column_names]
    # Room for a few columns only, so threads decode, evict and re-decode all along.
    cache = ColumnCache(budget=3 * max(sizes), max_column=2 * max(sizes))
    raws = [write(table, max_rows_per_page=200) for _ in range(3)]
    fetchers = [pair(raw, cache)[0] for raw in raws]
    errors: list[BaseException] = []
    deadline = time.monotonic() + 10

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(40):
                if time.monotonic() > deadline:
                    return
                fetcher = fetchers[int(rng.integers(len(fetchers)))]
                columns = list(rng.choice(table.column_names, size=2, replace=False))
                ids = rng.integers(0, n, int(rng.choice([1, 5, 200])))
                got = fetcher.take(ids, columns)
                want = table.select(columns).take(ids)
                assert got.num_rows == want.num_rows
                for c in columns:
                    assert got.column(c).to_pylist() == want.column(c).to_pylist()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]
    assert cache.used <= cache.budget
    assert cache.evictions > 0
