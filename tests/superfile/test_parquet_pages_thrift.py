"""The schema-less Thrift compact codec: round trips, known encodings, hostile input."""

from __future__ import annotations

import io
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.superfile.errors import CorruptFileError
from quiver.superfile.parquet_pages.thrift_compact import (
    MAX_DEPTH,
    TList,
    TMap,
    TType,
    decode_struct,
    encode_struct,
)

I64 = st.integers(-(1 << 63), (1 << 63) - 1)
SCALARS = {
    TType.BOOL: st.booleans(),
    TType.I8: st.integers(-128, 127),
    TType.I16: st.integers(-(1 << 15), (1 << 15) - 1),
    TType.I32: st.integers(-(1 << 31), (1 << 31) - 1),
    TType.I64: I64,
    TType.DOUBLE: st.floats(allow_nan=False),
    TType.BINARY: st.binary(max_size=40),
    TType.UUID: st.binary(min_size=16, max_size=16),
}
SCALAR_TYPES = st.sampled_from(list(SCALARS))


def typed_value(depth: int) -> st.SearchStrategy[tuple[TType, object]]:
    scalar = SCALAR_TYPES.flatmap(lambda t: SCALARS[t].map(lambda v: (t, v)))
    if depth <= 0:
        return scalar
    inner = typed_value(depth - 1)

    def collection(kind: TType) -> st.SearchStrategy[tuple[TType, object]]:
        def build(elem: tuple[TType, object]) -> st.SearchStrategy[tuple[TType, object]]:
            etype = elem[0]
            items = st.lists(element_of(etype, depth - 1), max_size=20)
            return items.map(lambda xs: (kind, TList(etype, [elem[1], *xs], kind == TType.SET)))
        return inner.flatmap(build)

    def mapping() -> st.SearchStrategy[tuple[TType, object]]:
        def build(kt: TType, vt: TType) -> st.SearchStrategy[tuple[TType, object]]:
            pairs = st.lists(st.tuples(SCALARS[kt], element_of(vt, depth - 1)), min_size=1,
                             max_size=5)
            return pairs.map(lambda ps: (TType.MAP, TMap(kt, vt, ps)))
        empty = st.just((TType.MAP, TMap(TType.STOP, TType.STOP, [])))
        typed = st.tuples(SCALAR_TYPES, SCALAR_TYPES).flatmap(lambda kv: build(*kv))
        return st.one_of(empty, typed)

    return st.one_of(
        scalar,
        collection(TType.LIST),
        collection(TType.SET),
        mapping(),
        structs(depth - 1).map(lambda s: (TType.STRUCT, s)),
    )


def element_of(etype: TType, depth: int) -> st.SearchStrategy[object]:
    if etype in SCALARS:
        return SCALARS[etype]
    return typed_value(depth).filter(lambda tv: tv[0] == etype).map(lambda tv: tv[1])


def structs(depth: int = 2) -> st.SearchStrategy[dict]:
    ids = st.integers(-(1 << 15), (1 << 15) - 1)
    value = SCALAR_TYPES.flatmap(lambda t: SCALARS[t].map(lambda v: (t, v))) if depth <= 0 \
        else typed_value(depth)
    return st.dictionaries(ids, value, max_size=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structs(2))
def test_decode_inverts_encode_for_any_struct(value: dict) -> None:
    data = encode_struct(value)
    decoded, end = decode_struct(data)
    assert end == len(data)
    assert decoded == value
    assert list(decoded) == list(value)  # field order survives too


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_corrupt_only(data: bytes) -> None:
    try:
        value, end = decode_struct(data)
    except CorruptFileError:
        return
    assert 0 < end <= len(data)
    # Whatever decoded must re-encode stably (bytes compared: a NaN never equals itself).
    again = encode_struct(value)
    assert encode_struct(decode_struct(again)[0]) == again


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structs(2), st.data())
def test_truncated_encodings_raise_corrupt(value: dict, data: st.DataObject) -> None:
    encoded = encode_struct(value)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CorruptFileError):
        decode_struct(encoded[:cut])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structs(2), st.data())
def test_mutated_encodings_decode_or_raise_corrupt_only(value: dict, data: st.DataObject) -> None:
    encoded = bytearray(encode_struct(value))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    try:
        decoded, _ = decode_struct(bytes(encoded))
    except CorruptFileError:
        return
    again = encode_struct(decoded)
    assert encode_struct(decode_struct(again)[0]) == again


def test_known_bytes_short_and_long_field_headers() -> None:
    # field 1 i32 5 -> delta 1, type 5, zigzag(5)=10; field 20 (delta > 15) uses the long form.
    assert encode_struct({1: (TType.I32, 5)}) == bytes([0x15, 0x0A, 0x00])
    assert encode_struct({20: (TType.I64, -1)}) == bytes([0x06, 0x28, 0x01, 0x00])
    assert decode_struct(bytes([0x06, 0x28, 0x01, 0x00]))[0] == {20: (TType.I64, -1)}


def test_booleans_live_in_the_field_type_nibble() -> None:
    assert encode_struct({1: (TType.BOOL, True), 2: (TType.BOOL, False)}) == bytes(
        [0x11, 0x12, 0x00]
    )


def test_list_header_switches_to_varint_size_at_fifteen() -> None:
    short = encode_struct({1: (TType.LIST, TList(TType.I8, [0] * 14))})
    long = encode_struct({1: (TType.LIST, TList(TType.I8, [0] * 15))})
    assert short[1] == 0xE3
    assert long[1:3] == bytes([0xF3, 15])


def test_nesting_deeper_than_the_bound_is_corrupt() -> None:
    value: dict = {}
    for _ in range(MAX_DEPTH + 5):
        value = {1: (TType.STRUCT, value)}
    with pytest.raises(CorruptFileError):
        decode_struct(encode_struct(value))


def test_huge_declared_lengths_are_corrupt_not_allocated() -> None:
    # A binary field claiming 2**62 bytes, and a list claiming 2**40 elements.
    with pytest.raises(CorruptFileError):
        decode_struct(bytes([0x18]) + bytes([0xFF] * 8) + bytes([0x3F]))
    with pytest.raises(CorruptFileError):
        decode_struct(bytes([0x19, 0xF5]) + bytes([0x80] * 5) + bytes([0x20]))


def test_overlong_varint_is_corrupt() -> None:
    with pytest.raises(CorruptFileError):
        decode_struct(bytes([0x16]) + bytes([0xFF] * 11) + bytes([0x01, 0x00]))


def test_out_of_range_values_cannot_be_encoded() -> None:
    with pytest.raises(CorruptFileError):
        encode_struct({1: (TType.I32, 1 << 31)})
    with pytest.raises(CorruptFileError):
        encode_struct({1 << 15: (TType.I32, 0)})


def test_a_pyarrow_footer_round_trips_byte_for_byte() -> None:
    table = pa.table({
        "id": pa.array(range(5000), pa.int64()),
        "text": pa.array([f"row {i}" if i % 3 else None for i in range(5000)]),
        "vec": pa.FixedSizeListArray.from_arrays(pa.array([0.5] * 20000, pa.float32()), 4),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=1000, write_page_index=True,
                   compression="zstd", write_statistics=True, store_schema=True)
    data = sink.getvalue()
    (n,) = struct.unpack("<I", data[-8:-4])
    footer = data[-8 - n : -8]
    decoded, end = decode_struct(footer)
    assert end == n
    assert encode_struct(decoded) == footer
