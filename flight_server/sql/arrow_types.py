"""Plain Arrow types: what view types (as DataFusion scans produce them) become in a
result, a stored table or a printed answer."""

from __future__ import annotations

import pyarrow as pa


def plain_type(t: pa.DataType, *, fold_large: bool = True) -> pa.DataType:
    """``t`` with string and binary views (and, with ``fold_large``, large strings,
    binaries and lists) as their plain forms, nested types included."""
    if pa.types.is_string_view(t) or (fold_large and pa.types.is_large_string(t)):
        return pa.string()
    if pa.types.is_binary_view(t) or (fold_large and pa.types.is_large_binary(t)):
        return pa.binary()
    if pa.types.is_fixed_size_list(t):
        item = t.value_field.with_type(plain_type(t.value_type, fold_large=fold_large))
        return pa.list_(item, t.list_size)
    if pa.types.is_large_list(t) and not fold_large:
        return pa.large_list(t.value_field.with_type(plain_type(t.value_type, fold_large=False)))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(t.value_field.with_type(plain_type(t.value_type,
                                                           fold_large=fold_large)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(plain_type(f.type, fold_large=fold_large)) for f in t])
    return t


def plain_schema(schema: pa.Schema, *, fold_large: bool = True) -> pa.Schema:
    """``schema`` with every field's type made plain (``plain_type``)."""
    return pa.schema([f.with_type(plain_type(f.type, fold_large=fold_large)) for f in schema],
                     schema.metadata)
