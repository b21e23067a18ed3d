"""Footer reading and Parquet metadata parsing: agreement with pyarrow, and hostile bytes."""

from __future__ import annotations

import io
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.superfile.errors import CorruptFileError, NotASuperfileError, SuperfileError
from quiver.superfile.parquet_pages.metadata import (
    PAGE_DATA_V2,
    parse_file_metadata,
    parse_offset_index,
    parse_page_header,
)
from quiver.superfile.parquet_pages.row_fetch import RowFetcher, read_footer
from quiver.superfile.ranges import BytesRangeReader, CountingRangeReader


def sample(n: int = 4000, **options: object) -> tuple[pa.Table, bytes]:
    rng = np.random.default_rng(11)
    table = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "name": pa.array([f"n{i % 97}" if i % 5 else None for i in range(n)]),
        "vec": pa.FixedSizeListArray.from_arrays(
            pa.array(rng.standard_normal(n * 3).astype(np.float32)), 3,
            mask=pa.array(rng.random(n) < 0.1),
        ),
        "tags": pa.array([[f"t{j}" for j in range(i % 4)] for i in range(n)]),
    })
    sink = io.BytesIO()
    opts = {"row_group_size": 1500, "write_page_index": True, "compression": "zstd",
            "data_page_size": 2048, "store_schema": True}
    opts.update(options)
    pq.write_table(table, sink, **opts)
    return table, sink.getvalue()


def footer_of(data: bytes) -> bytes:
    return read_footer(BytesRangeReader(data))[0]


def test_parsed_footer_agrees_with_pyarrow_metadata() -> None:
    _, data = sample()
    meta = parse_file_metadata(footer_of(data))
    ref = pq.ParquetFile(pa.py_buffer(data)).metadata
    assert meta.num_rows == ref.num_rows
    assert len(meta.row_groups) == ref.num_row_groups
    assert [f.name for f in meta.fields] == ["id", "name", "vec", "tags"]
    assert [f.leaf_range for f in meta.fields] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    for i, group in enumerate(meta.row_groups):
        rg = ref.row_group(i)
        assert group.num_rows == rg.num_rows
        for j, chunk in enumerate(group.columns):
            col = rg.column(j)
            assert ".".join(chunk.path) == col.path_in_schema
            assert chunk.data_page_offset == col.data_page_offset
            assert chunk.total_compressed_size == col.total_compressed_size
            assert chunk.num_values == col.num_values
            assert (chunk.dictionary_page_offset is not None) == col.has_dictionary_page
            assert chunk.offset_index is not None
    assert meta.row_starts.tolist() == [0, 1500, 3000, 4000]


def test_offset_index_pages_tile_the_column_chunk() -> None:
    _, data = sample()
    meta = parse_file_metadata(footer_of(data))
    for group in meta.row_groups:
        for chunk in group.columns:
            off, length = chunk.offset_index
            ix = parse_offset_index(data[off : off + length], chunk, group.num_rows)
            assert ix.first_rows[0] == 0
            assert ix.offsets[0] == chunk.data_page_offset
            assert ix.offsets[-1] + ix.sizes[-1] == chunk.start + chunk.total_compressed_size
            values = sum(parse_page_header(data[o : o + s]).num_values
                         for o, s in zip(ix.offsets, ix.sizes, strict=True))
            assert values == chunk.num_values


def test_repeated_column_pages_start_at_row_boundaries() -> None:
    # v2 page headers state their row count, which must match the offset index's rows.
    _, data = sample(data_page_version="2.0", data_page_size=256, write_batch_size=64)
    meta = parse_file_metadata(footer_of(data))
    for group in meta.row_groups:
        for chunk in group.columns[2:]:  # the vector and list leaves
            off, length = chunk.offset_index
            ix = parse_offset_index(data[off : off + length], chunk, group.num_rows)
            assert len(ix.first_rows) > 3
            headers = [parse_page_header(data[o : o + s])
                       for o, s in zip(ix.offsets, ix.sizes, strict=True)]
            assert all(h.page_type == PAGE_DATA_V2 for h in headers)
            rows = np.diff(np.append(ix.first_rows, group.num_rows))
            assert [h.num_rows for h in headers] == rows.tolist()


def test_read_footer_takes_one_read_or_two_for_a_big_footer() -> None:
    _, data = sample()
    source = CountingRangeReader(BytesRangeReader(data))
    footer, start = read_footer(source)
    assert source.reads == 1
    assert start + len(footer) + 8 == len(data)
    source.reset()
    again, _ = read_footer(source, tail=64)
    assert again == footer
    assert source.reads == 2


def test_read_footer_rejects_non_parquet_and_bad_lengths() -> None:
    with pytest.raises(NotASuperfileError):
        read_footer(BytesRangeReader(b"PAR1"))
    with pytest.raises(NotASuperfileError):
        read_footer(BytesRangeReader(b"x" * 100))
    with pytest.raises(NotASuperfileError):
        read_footer(BytesRangeReader(b"PAR1" + b"\0" * 20 + b"PARE"))
    with pytest.raises(CorruptFileError):
        read_footer(BytesRangeReader(b"PAR1" + b"\0" * 20 + struct.pack("<I", 500) + b"PAR1"))
    with pytest.raises(CorruptFileError):
        read_footer(BytesRangeReader(b"PAR1" + b"\0" * 20 + struct.pack("<I", 0) + b"PAR1"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_footer_bytes_raise_corrupt_only(data: bytes) -> None:
    with pytest.raises(CorruptFileError):
        parse_file_metadata(data)


_TABLE, _DATA = sample(1200, row_group_size=500)
_FOOTER = footer_of(_DATA)
_BODY = _DATA[: len(_DATA) - 8 - len(_FOOTER)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_FOOTER) - 1), st.integers(0, 255)),
                min_size=1, max_size=4))
def test_mutated_footers_fetch_rows_or_raise_project_errors(
    edits: list[tuple[int, int]],
) -> None:
    footer = bytearray(_FOOTER)
    for pos, byte in edits:
        footer[pos] = byte
    data = _BODY + bytes(footer) + struct.pack("<I", len(footer)) + b"PAR1"
    try:
        rows = RowFetcher(BytesRangeReader(data), bytes(footer), _TABLE.schema)
        got = rows.take(np.array([0, 499, 500, 1199]))
    except SuperfileError:
        return
    assert got.num_rows == 4
