"""A table's columns as an Iceberg schema, with field ids and the name mapping for files.

Superfiles are written without Parquet field ids, so every Iceberg reader resolves
their columns by name through ``schema.name-mapping.default``. Field ids are
assigned from the column order: top-level columns get ``1..n`` in order, nested
fields (list elements, struct members, map keys and values) the ids after them,
depth first. The hidden ``_id`` column is not part of the Iceberg schema, so an
Iceberg reader sees exactly the columns of ``SELECT *``.

Fixed-size lists (vector columns) are Parquet LIST columns, so they are Iceberg
``list`` columns: readers return them as variable-length lists of floats.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from quiver.root_error import Kind, QuiverError
from quiver.supertable.manifest import ID_COLUMN


class UnsupportedTypeError(ValueError, QuiverError):
    """A column whose type Iceberg has no counterpart for."""

    kind = Kind.INVALID_INPUT


def _primitive(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_int32(t) \
            or pa.types.is_uint8(t) or pa.types.is_uint16(t):
        return "int"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "long"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_decimal(t) and t.precision <= 38:
        return f"decimal({t.precision}, {t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_fixed_size_binary(t):
        return f"fixed[{t.byte_width}]"
    if pa.types.is_date32(t):
        return "date"
    if pa.types.is_time64(t) and t.unit == "us":
        return "time"
    if pa.types.is_timestamp(t) and t.unit in ("us", "ms", "s"):
        return "timestamptz" if t.tz else "timestamp"
    raise UnsupportedTypeError(f"no Iceberg type for {t}")


class _Ids:
    """Hands out nested field ids after the top-level ones."""

    def __init__(self, first: int) -> None:
        self._next = itertools.count(first)

    def __call__(self) -> int:
        return next(self._next)


def _type(t: pa.DataType, ids: _Ids) -> Any:
    if pa.types.is_dictionary(t):
        return _type(t.value_type, ids)
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t)):
        element_id = ids()
        return {"type": "list", "element-id": element_id,
                "element": _type(t.value_type, ids),
                "element-required": not t.value_field.nullable}
    if pa.types.is_map(t):
        key_id, value_id = ids(), ids()
        return {"type": "map", "key-id": key_id, "key": _type(t.key_type, ids),
                "value-id": value_id, "value": _type(t.item_type, ids),
                "value-required": not t.item_field.nullable}
    if pa.types.is_struct(t):
        fields = [(ids(), t.field(i)) for i in range(t.num_fields)]
        return {"type": "struct",
                "fields": [_field(fid, f, ids) for fid, f in fields]}
    return _primitive(t)


def _field(fid: int, f: pa.Field, ids: _Ids) -> dict[str, Any]:
    return {"id": fid, "name": f.name, "required": not f.nullable, "type": _type(f.type, ids)}


def user_fields(schema: pa.Schema) -> list[pa.Field]:
    return [f for f in schema if f.name != ID_COLUMN]


def iceberg_schema(schema: pa.Schema) -> dict[str, Any]:
    """The Iceberg schema (JSON form, schema id 0) of a table's Arrow schema."""
    fields = user_fields(schema)
    ids = _Ids(len(fields) + 1)
    return {"type": "struct", "schema-id": 0,
            "fields": [_field(i + 1, f, ids) for i, f in enumerate(fields)]}


def _walk(node: Any) -> Iterator[int]:
    if isinstance(node, dict):
        for key in ("id", "element-id", "key-id", "value-id"):
            if key in node:
                yield int(node[key])
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _mapping_of(node: Any) -> list[dict[str, Any]] | None:
    """Name-mapping entries for the children of a nested type (None for a primitive)."""
    if not isinstance(node, dict):
        return None
    kind = node["type"]
    if kind == "struct":
        return [_mapped(f["id"], f["name"], f["type"]) for f in node["fields"]]
    if kind == "list":
        # Parquet writers name the element "element" (or "item", older pyarrow).
        return [_mapped(node["element-id"], "element", node["element"], "item")]
    if kind == "map":
        return [_mapped(node["key-id"], "key", node["key"]),
                _mapped(node["value-id"], "value", node["value"])]
    return None


def _mapped(fid: int, name: str, node: Any, *aliases: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"field-id": fid, "names": [name, *aliases]}
    children = _mapping_of(node)
    if children:
        entry["fields"] = children
    return entry


def hidden_id_field(schema_json: dict[str, Any]) -> int:
    """The field id the hidden ``_id`` column is mapped to: one past the schema's columns,
    so readers can resolve every column of a file, but not in the schema, so none shows."""
    return max(_walk(schema_json["fields"]), default=0) + 1


def last_column_id(schema_json: dict[str, Any]) -> int:
    return hidden_id_field(schema_json)


def name_mapping(schema_json: dict[str, Any]) -> str:
    """``schema.name-mapping.default``: how columns of files without field ids are found."""
    mapping = _mapping_of(schema_json) or []
    mapping.append({"field-id": hidden_id_field(schema_json), "names": [ID_COLUMN]})
    return json.dumps(mapping, separators=(",", ":"))
