"""RowFetcher: chosen rows through the page index equal pyarrow's own reading, lazily."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.superfile.errors import QueryError
from quiver.superfile.parquet_pages.metadata import parse_file_metadata, parse_offset_index
from quiver.superfile.parquet_pages.row_fetch import RangeFile, RowFetcher, read_footer
from quiver.superfile.ranges import BytesRangeReader, CountingRangeReader

WORDS = ["", "a", "rust", "Über", "naïve", "数据", "emoji 🦀", "x" * 300, "tab\tnew\nline"]


def random_table(n: int, seed: int, dim: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    nulls = rng.random(n) < 0.2
    ints = rng.integers(-(1 << 40), 1 << 40, n)
    low_card = rng.integers(0, 5, n).astype(np.int32)
    floats = rng.standard_normal(n)
    floats[rng.random(n) < 0.05] = np.inf
    strings = [None if nulls[i] else WORDS[k] + str(k * i % 11)
               for i, k in enumerate(rng.integers(0, len(WORDS), n))]
    vec_nulls = rng.random(n) < 0.1
    vecs = pa.FixedSizeListArray.from_arrays(
        pa.array(rng.standard_normal(n * dim).astype(np.float32)), dim,
        mask=pa.array(vec_nulls),
    )
    lengths = rng.integers(0, 4, n)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    lists = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(rng.integers(0, 100, int(offsets[-1])).astype(np.int32)),
        mask=pa.array(rng.random(n) < 0.1),
    )
    struct = pa.StructArray.from_arrays(
        [pa.array(ints // 7), pa.array(strings[::-1])], names=["x", "y"],
        mask=pa.array(rng.random(n) < 0.1),
    )
    return pa.table({
        "i64": pa.array(ints, mask=nulls),
        "i32": pa.array(low_card),
        "f64": pa.array(floats),
        "s": pa.array(strings, pa.string()),
        "b": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1),
        "ts": pa.array(ints // 1000, pa.timestamp("us", tz="UTC")),
        "vec": vecs,
        "lst": lists,
        "st": struct,
    })


def write(table: pa.Table, **options: object) -> bytes:
    sink = io.BytesIO()
    settings_ = {
        "row_group_size": 65536,
        "write_page_index": True,
        "compression": "zstd",
        "use_dictionary": True,
        "write_statistics": True,
        "data_page_size": 64 * 1024,
        "store_schema": True,
    }
    settings_.update(options)
    pq.write_table(table, sink, **settings_)
    return sink.getvalue()


def with_junk_before_footer(data: bytes, junk: bytes) -> bytes:
    """The superfile layout: extra bytes between the page indexes and the footer."""
    n = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - n
    return data[:start] + junk + data[start:]


def fetcher(data: bytes) -> tuple[RowFetcher, CountingRangeReader]:
    source = CountingRangeReader(BytesRangeReader(data))
    footer, _ = read_footer(source)
    schema = pq.ParquetFile(pa.py_buffer(data)).schema_arrow
    return RowFetcher(source, footer, schema), source


def assert_same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.equals(want.schema)
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    n=st.integers(1, 2000),
    seed=st.integers(0, 2**32 - 1),
    dim=st.integers(1, 9),
    row_group_size=st.integers(1, 1500),
    page_size=st.sampled_from([64, 512, 4096, 64 * 1024]),
    max_rows_per_page=st.integers(1, 700),
    dict_limit=st.sampled_from([64, 1024, 1 << 20]),
    version=st.sampled_from(["1.0", "2.0"]),
    compression=st.sampled_from(["zstd", "snappy", "none"]),
    junk=st.binary(max_size=64),
    data=st.data(),
)
def test_take_equals_pyarrow_take_for_random_tables_and_ids(
    n: int, seed: int, dim: int, row_group_size: int, page_size: int, max_rows_per_page: int,
    dict_limit: int, version: str, compression: str, junk: bytes, data: st.DataObject,
) -> None:
    table = random_table(n, seed, dim)
    raw = write(table, row_group_size=row_group_size, data_page_size=page_size,
                max_rows_per_page=max_rows_per_page, dictionary_pagesize_limit=dict_limit,
                data_page_version=version, compression=compression)
    raw = with_junk_before_footer(raw, junk)
    rows, _ = fetcher(raw)
    ids = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=40)), dtype=np.int64)
    columns = data.draw(st.none() | st.lists(st.sampled_from(table.column_names), min_size=1,
                                             max_size=4, unique=True))
    want = table.take(ids) if columns is None else table.select(columns).take(ids)
    assert_same(rows.take(ids, columns), want)


def test_duplicates_and_order_are_kept() -> None:
    table = random_table(5000, 1, 4)
    rows, _ = fetcher(write(table, row_group_size=1000, max_rows_per_page=100))
    ids = np.array([4999, 0, 17, 17, 4999, 2500, 0], dtype=np.int64)
    assert_same(rows.take(ids), table.take(ids))


def test_empty_selection_gives_empty_table_with_schema() -> None:
    table = random_table(100, 2, 3)
    rows, source = fetcher(write(table))
    source.reset()
    got = rows.take(np.array([], dtype=np.int64), ["s", "vec"])
    assert got.num_rows == 0
    assert got.schema.equals(table.select(["s", "vec"]).schema)
    assert source.reads == 0


def test_an_empty_file_gives_empty_tables() -> None:
    table = random_table(0, 9, 2)
    rows, _ = fetcher(write(table))
    assert rows.take(np.array([], dtype=np.int64)).num_rows == 0
    with pytest.raises(QueryError):
        rows.take(np.array([0]))


def test_bad_ids_and_unknown_columns_are_query_errors() -> None:
    table = random_table(100, 3, 3)
    rows, _ = fetcher(write(table))
    for bad in ([100], [-1], [0, 1000]):
        with pytest.raises(QueryError):
            rows.take(np.array(bad))
    with pytest.raises(QueryError):
        rows.take(np.array([1.5]))
    with pytest.raises(QueryError):
        rows.take(np.array([[1, 2]]))
    with pytest.raises(QueryError):
        rows.take(np.array([1]), ["nope"])


def test_empty_pages_sharing_a_first_row_are_tolerated() -> None:
    # With one row per page pyarrow writes an empty page into repeated columns whose
    # offset index entry repeats the next page's first row.
    table = random_table(2, 0, 1)
    rows, _ = fetcher(write(table, row_group_size=2, data_page_size=64, max_rows_per_page=1,
                            dictionary_pagesize_limit=64))
    ids = np.array([1, 0, 1], dtype=np.int64)
    assert_same(rows.take(ids), table.take(ids))


def test_files_without_page_index_fall_back_to_whole_chunks() -> None:
    table = random_table(3000, 4, 5)
    raw = with_junk_before_footer(write(table, row_group_size=700, write_page_index=False),
                                  b"junk" * 10)
    rows, _ = fetcher(raw)
    ids = np.array([2999, 5, 1400, 5, 701], dtype=np.int64)
    assert_same(rows.take(ids), table.take(ids))


def test_nested_leaves_are_cut_at_common_page_boundaries() -> None:
    # A struct whose two leaves page at different rows: the int leaf packs far more rows
    # into a page than the long-string leaf.
    n = 20000
    struct = pa.StructArray.from_arrays(
        [pa.array(np.arange(n)), pa.array([f"{i:08d}" * 40 for i in range(n)])],
        names=["x", "y"],
    )
    table = pa.table({"st": struct})
    raw = write(table, data_page_size=4096, write_batch_size=128, use_dictionary=False,
                compression="none")
    rows, _ = fetcher(raw)
    meta = parse_file_metadata(read_footer(BytesRangeReader(raw))[0])
    firsts = []
    for leaf in (0, 1):
        chunk = meta.row_groups[0].columns[leaf]
        off, length = chunk.offset_index
        firsts.append(parse_offset_index(raw[off : off + length], chunk, n).first_rows)
    assert not np.array_equal(firsts[0], firsts[1])
    ids = np.random.default_rng(5).integers(0, n, 50)
    assert_same(rows.take(ids), table.take(ids))


def big_table(n: int = 200_000, dim: int = 64) -> pa.Table:
    rng = np.random.default_rng(7)
    vecs = pa.FixedSizeListArray.from_arrays(
        pa.array(rng.standard_normal(n * dim).astype(np.float32)), dim
    )
    return pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "text": pa.array([f"summary number {i} of {rng.integers(1 << 30)}" for i in range(n)]),
        "vec": vecs,
    })


@pytest.fixture(scope="module")
def big() -> tuple[pa.Table, bytes]:
    table = big_table()
    # The container writer's choices: no dictionary and no compression for vectors.
    raw = write(table, use_dictionary=["id", "text"],
                compression={"id": "zstd", "text": "zstd", "vec": "none"})
    return table, with_junk_before_footer(raw, b"\0" * 4096)


def test_ten_rows_of_a_big_file_read_only_their_pages(big: tuple[pa.Table, bytes]) -> None:
    table, raw = big
    rows, source = fetcher(raw)
    meta = parse_file_metadata(read_footer(BytesRangeReader(raw))[0])
    assert len(meta.row_groups) >= 3
    ids = np.random.default_rng(8).integers(0, table.num_rows, 10)
    source.reset()
    assert_same(rows.take(ids), table.take(ids))
    # One coalesced read of the offset indexes, then at most one per (column, row) page and
    # one dictionary page per column chunk.
    assert source.reads <= 1 + 3 * len(ids) + 3 * len(meta.row_groups)
    assert source.bytes_read < len(raw) * 0.05
    for group in meta.row_groups:
        vec = group.columns[2]
        end = vec.start + vec.total_compressed_size
        assert not any(off <= vec.start and off + n >= end for off, n in source.ranges)
    assert max(n for _, n in source.ranges) < 300_000
    # Offset indexes are cached: a second fetch of the same rows reads pages only.
    first = source.reads
    source.reset()
    rows.take(ids)
    assert source.reads < first


def test_dictionary_page_is_skipped_when_chosen_pages_are_plain(
    big: tuple[pa.Table, bytes],
) -> None:
    table, raw = big
    rows, source = fetcher(raw)
    meta = parse_file_metadata(read_footer(BytesRangeReader(raw))[0])
    text = meta.row_groups[0].columns[1]
    assert text.dictionary_page_offset is not None
    assert text.dict_encoded_pages is not None
    # The last row of the first row group lies in a page written after the dictionary
    # overflowed (unique strings), so it must be readable without the dictionary page.
    row = meta.row_groups[0].num_rows - 1
    rows.take(np.array([row]), ["text"])  # warm the offset index cache
    source.reset()
    assert_same(rows.take(np.array([row]), ["text"]), table.select(["text"]).take([row]))
    dict_start = text.dictionary_page_offset
    assert all(not (off <= dict_start < off + n) for off, n in source.ranges)


def test_range_file_lets_pyarrow_read_the_whole_file(big: tuple[pa.Table, bytes]) -> None:
    table, raw = big
    source = CountingRangeReader(BytesRangeReader(raw))
    got = pq.ParquetFile(RangeFile(source)).read()
    assert got.equals(table)
    source.reset()
    one = pq.ParquetFile(RangeFile(source)).read_row_group(1, columns=["id"])
    assert one.column(0).to_pylist()[:3] == [65536, 65537, 65538]
    assert source.bytes_read < len(raw) * 0.05


def test_range_file_seek_and_read_semantics() -> None:
    f = RangeFile(BytesRangeReader(b"0123456789"))
    assert f.seekable() and f.readable()
    assert f.read(3) == b"012"
    assert f.seek(-2, io.SEEK_END) == 8
    assert f.read() == b"89"
    assert f.read(5) == b""
    f.seek(4)
    buf = bytearray(3)
    assert f.readinto(buf) == 3 and bytes(buf) == b"456"
    assert f.tell() == 7
