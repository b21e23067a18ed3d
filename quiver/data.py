"""What the API accepts as rows, made Arrow: pandas and polars DataFrames, Arrow tables,
record batches and readers, and lists of dicts.

Embedding columns are made what the vector index needs, ``fixed_size_list<float32, d>``:
a column of float lists (float16, float32 or float64; from pandas, lists or NumPy arrays
per row) whose non-null rows all hold ``d`` values becomes one; float16 and float64
values are cast to float32. A float list column whose rows differ in length is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.errors import InvalidInput

__all__ = ["Data", "normalize_schema", "to_batches", "to_reader"]

Data = Any  # pandas / polars DataFrame, pa.Table, pa.RecordBatch(Reader), list[dict]

_VECTOR = pa.float32()


def _module_of(value: object) -> str:
    return type(value).__module__.split(".")[0]


def to_reader(data: Data) -> pa.RecordBatchReader:
    """``data`` as a stream of Arrow record batches, embedding columns made fixed-size
    float32 lists."""
    if isinstance(data, pa.RecordBatchReader):
        reader = data
    elif isinstance(data, pa.Table):
        reader = pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
    elif isinstance(data, pa.RecordBatch):
        reader = pa.RecordBatchReader.from_batches(data.schema, [data])
    elif _module_of(data) == "pandas" and hasattr(data, "columns"):
        table = pa.Table.from_pandas(data, preserve_index=False)
        reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    elif _module_of(data) == "polars" and hasattr(data, "to_arrow"):
        table = data.to_arrow()
        reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    elif isinstance(data, list) and all(isinstance(row, dict) for row in data):
        if not data:
            raise InvalidInput("an empty list of rows has no columns; pass schema= instead")
        table = pa.Table.from_pylist(data)
        reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    else:
        raise InvalidInput(
            f"cannot read rows from {type(data).__name__}: pass a pandas or polars "
            "DataFrame, a pyarrow Table, RecordBatch or RecordBatchReader, or a list of dicts")
    return _normalized(reader)


def to_batches(data: Data) -> Iterator[pa.RecordBatch]:
    """The record batches of ``to_reader(data)``."""
    yield from to_reader(data)


def _is_float_list(t: pa.DataType) -> bool:
    return ((pa.types.is_list(t) or pa.types.is_large_list(t)
             or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t)
             or pa.types.is_large_list_view(t))
            and pa.types.is_floating(t.value_type))


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with fixed-size float lists made float32 (a variable-length list keeps
    its type: its length is only known from its rows)."""
    fields = []
    for f in schema:
        if pa.types.is_fixed_size_list(f.type) and pa.types.is_floating(f.type.value_type):
            f = f.with_type(pa.list_(_VECTOR, f.type.list_size))
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


def _vector_column(name: str, column: pa.Array) -> pa.Array:
    """A float list column as ``fixed_size_list<float32, d>``; InvalidInput when ragged."""
    t = column.type
    if pa.types.is_fixed_size_list(t):
        return column.cast(pa.list_(_VECTOR, t.list_size))
    lengths = pc.drop_null(pc.list_value_length(column))
    sizes = np.unique(lengths.to_numpy(zero_copy_only=False))
    if len(sizes) > 1:
        raise InvalidInput(
            f"column {name!r} holds float lists of different lengths "
            f"({', '.join(str(int(s)) for s in sizes[:5])}"
            f"{', …' if len(sizes) > 5 else ''}): an embedding column needs one length "
            "in every row")
    if len(sizes) == 0 or int(sizes[0]) == 0:
        return column
    size = int(sizes[0])
    values = pc.list_flatten(column).cast(_VECTOR)
    mask = column.is_null() if column.null_count else None
    return pa.FixedSizeListArray.from_arrays(values, size, mask=mask)


def _normalize_batch(batch: pa.RecordBatch, schema: pa.Schema | None) -> pa.RecordBatch:
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if _is_float_list(column.type):
            column = _vector_column(name, column)
        arrays.append(column)
    out = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
    if schema is not None and out.schema != schema:
        # A later batch of a stream takes the first batch's types (its vector length).
        try:
            out = out.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                ValueError) as exc:
            raise InvalidInput(f"a batch of the stream does not fit its first batch's "
                               f"schema: {exc}") from exc
    return out


def _normalized(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``reader`` with its embedding columns made fixed-size float32 lists. The schema of
    the stream is that of its first non-empty batch, normalized."""
    batches = iter(reader)
    first = None
    for batch in batches:
        if batch.num_rows:
            first = _normalize_batch(batch, None)
            break
    if first is None:
        return pa.RecordBatchReader.from_batches(normalize_schema(reader.schema), [])
    schema = first.schema

    def rest() -> Iterator[pa.RecordBatch]:
        yield first
        for batch in batches:
            if batch.num_rows:
                yield _normalize_batch(batch, schema)

    return pa.RecordBatchReader.from_batches(schema, rest())
