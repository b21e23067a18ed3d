"""The SQL types ``CREATE TABLE`` accepts, described for Flight SQL ``CommandGetXdbcTypeInfo``.

Owns the result schema of that command and one row per type name the SQL layer maps
to an Arrow type. Vectors (``FLOAT[n]``) and lists (``T[]``) are left out: the XDBC
type codes have no array type, and clients see those columns' Arrow types in the
table schemas that ``CommandGetTables`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pyarrow as pa
import pyarrow.compute as pc

from quiver.proto import flight_sql_pb2 as pb

# Type codes, subcodes and the Nullable/Searchable ordinals come from the compiled
# protocol definitions.
NULLABILITY_NULLABLE = pb.NULLABILITY_NULLABLE
SEARCHABLE_BASIC = pb.SEARCHABLE_BASIC
SEARCHABLE_FULL = pb.SEARCHABLE_FULL

XDBC_TYPE_INFO_SCHEMA = pa.schema([
    pa.field("type_name", pa.utf8(), nullable=False),
    pa.field("data_type", pa.int32(), nullable=False),
    pa.field("column_size", pa.int32()),
    pa.field("literal_prefix", pa.utf8()),
    pa.field("literal_suffix", pa.utf8()),
    pa.field("create_params", pa.list_(pa.field("item", pa.utf8(), nullable=False))),
    pa.field("nullable", pa.int32(), nullable=False),
    pa.field("case_sensitive", pa.bool_(), nullable=False),
    pa.field("searchable", pa.int32(), nullable=False),
    pa.field("unsigned_attribute", pa.bool_()),
    pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
    pa.field("auto_increment", pa.bool_()),
    pa.field("local_type_name", pa.utf8()),
    pa.field("minimum_scale", pa.int32()),
    pa.field("maximum_scale", pa.int32()),
    pa.field("sql_data_type", pa.int32(), nullable=False),
    pa.field("datetime_subcode", pa.int32()),
    pa.field("num_prec_radix", pa.int32()),
    pa.field("interval_precision", pa.int32()),
])


@dataclass(frozen=True)
class _Type:
    """One row of the result; field order and names follow the result schema."""

    type_name: str
    data_type: int
    column_size: int | None = None
    literal_prefix: str | None = None
    literal_suffix: str | None = None
    create_params: list[str] | None = None
    nullable: int = NULLABILITY_NULLABLE
    case_sensitive: bool = False
    searchable: int = SEARCHABLE_BASIC
    unsigned_attribute: bool | None = None
    fixed_prec_scale: bool = False
    auto_increment: bool | None = None
    local_type_name: str | None = None
    minimum_scale: int | None = None
    maximum_scale: int | None = None
    sql_data_type: int | None = None
    datetime_subcode: int | None = None
    num_prec_radix: int | None = None
    interval_precision: int | None = None


def _integer(name: str, code: int, digits: int, unsigned: bool) -> _Type:
    return _Type(name, code, column_size=digits, unsigned_attribute=unsigned,
                 auto_increment=False, minimum_scale=0, maximum_scale=0, num_prec_radix=10)


def _binary_float(name: str, code: int, bits: int) -> _Type:
    return _Type(name, code, column_size=bits, unsigned_attribute=False,
                 auto_increment=False, num_prec_radix=2)


_X = pb
# FLOAT and REAL are both 32-bit here, so both are reported as REAL; DOUBLE is 64-bit.
_TYPES: tuple[_Type, ...] = (
    _Type("BOOLEAN", _X.XDBC_BIT, column_size=1),
    _integer("TINYINT", _X.XDBC_TINYINT, 3, False),
    _integer("UTINYINT", _X.XDBC_TINYINT, 3, True),
    _integer("SMALLINT", _X.XDBC_SMALLINT, 5, False),
    _integer("USMALLINT", _X.XDBC_SMALLINT, 5, True),
    _integer("INTEGER", _X.XDBC_INTEGER, 10, False),
    _integer("UINTEGER", _X.XDBC_INTEGER, 10, True),
    _integer("BIGINT", _X.XDBC_BIGINT, 19, False),
    _integer("UBIGINT", _X.XDBC_BIGINT, 20, True),
    _binary_float("REAL", _X.XDBC_REAL, 24),
    _binary_float("FLOAT", _X.XDBC_REAL, 24),
    _binary_float("DOUBLE", _X.XDBC_DOUBLE, 53),
    _Type("DECIMAL", _X.XDBC_DECIMAL, column_size=38, create_params=["precision", "scale"],
          unsigned_attribute=False, auto_increment=False, minimum_scale=0, maximum_scale=38,
          num_prec_radix=10),
    _Type("NUMERIC", _X.XDBC_NUMERIC, column_size=38, create_params=["precision", "scale"],
          unsigned_attribute=False, auto_increment=False, minimum_scale=0, maximum_scale=38,
          num_prec_radix=10),
    _Type("VARCHAR", _X.XDBC_VARCHAR, literal_prefix="'", literal_suffix="'",
          case_sensitive=True, searchable=SEARCHABLE_FULL),
    _Type("VARBINARY", _X.XDBC_VARBINARY),
    _Type("BLOB", _X.XDBC_LONGVARBINARY),
    # Datetime types report the generic DATETIME code plus a subcode, as the spec asks;
    # column_size is the length of the text form (YYYY-MM-DD HH:MM:SS.ffffff[+00:00]).
    _Type("DATE", _X.XDBC_DATE, column_size=10, literal_prefix="DATE '", literal_suffix="'",
          sql_data_type=_X.XDBC_DATETIME, datetime_subcode=pb.XDBC_SUBCODE_DATE),
    _Type("TIMESTAMP", _X.XDBC_TIMESTAMP, column_size=26, literal_prefix="TIMESTAMP '",
          literal_suffix="'", minimum_scale=6, maximum_scale=6,
          sql_data_type=_X.XDBC_DATETIME, datetime_subcode=pb.XDBC_SUBCODE_TIMESTAMP),
    _Type("TIMESTAMPTZ", _X.XDBC_TIMESTAMP, column_size=32, literal_prefix="TIMESTAMP '",
          literal_suffix="'", minimum_scale=6, maximum_scale=6,
          sql_data_type=_X.XDBC_DATETIME,
          datetime_subcode=pb.XDBC_SUBCODE_TIMESTAMP_WITH_TIMEZONE),
)


def _all_types() -> pa.Table:
    columns = {f.name: [getattr(t, f.name) for t in _TYPES] for f in fields(_Type)}
    columns["sql_data_type"] = [t.sql_data_type if t.sql_data_type is not None
                                else t.data_type for t in _TYPES]
    table = pa.Table.from_pydict(columns, schema=XDBC_TYPE_INFO_SCHEMA)
    return table.sort_by([("data_type", "ascending"), ("type_name", "ascending")])


_ALL = _all_types()


def type_names() -> list[str]:
    """Every type name reported, in result order."""
    return _ALL.column("type_name").to_pylist()


def xdbc_type_info(data_type: int | None = None) -> pa.Table:
    """The ``CommandGetXdbcTypeInfo`` result: all types, or those of one XDBC type code."""
    if data_type is None:
        return _ALL
    return _ALL.filter(pc.equal(_ALL.column("data_type"), pa.scalar(data_type, pa.int32())))
