"""What the server says about itself through Flight SQL ``CommandGetSqlInfo``.

Owns which SqlInfo ids this server answers, the values it reports for them (ids and
enum ordinals come from ``quiver.proto.flight_sql_pb2``), and the Arrow result of a
``CommandGetSqlInfo`` request (one row per known id, each value in the dense union the
protocol defines).
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable
from enum import IntEnum
from typing import Any

import numpy as np
import pyarrow as pa

from quiver.proto import flight_sql_pb2 as pb

log = logging.getLogger(__name__)


def _protocol_enum(name: str, members: dict[str, int]) -> Any:
    # The members are known only at run time, from the compiled protocol: a type checker
    # cannot list them, so the enum is typed Any.
    return IntEnum(name, members)


# Ids and ordinals come from the compiled protocol definitions.
SqlInfo = _protocol_enum("SqlInfo", dict(pb.SqlInfo.items()))
SqlInfo.__doc__ = "The protocol's ``SqlInfo`` ids."
SqlSupportsConvert = _protocol_enum(
    "SqlSupportsConvert",
    {name.removeprefix("SQL_CONVERT_"): n for name, n in pb.SqlSupportsConvert.items()})
SqlSupportsConvert.__doc__ = "The protocol's ``SqlSupportsConvert`` ordinals, prefix dropped."


# Type codes of the value union, in the order the protocol lists its members.
STRING_VALUE = 0
BOOL_VALUE = 1
BIGINT_VALUE = 2
INT32_BITMASK = 3
STRING_LIST = 4
INT32_TO_INT32_LIST_MAP = 5

# The members and the union itself are declared non-nullable, as the reference
# implementations (C++ SqlSchema, Go schema_ref) declare them: a union has no validity
# of its own, and every row here carries a value.
VALUE_TYPE = pa.dense_union(
    [
        pa.field("string_value", pa.utf8(), nullable=False),
        pa.field("bool_value", pa.bool_(), nullable=False),
        pa.field("bigint_value", pa.int64(), nullable=False),
        pa.field("int32_bitmask", pa.int32(), nullable=False),
        pa.field("string_list", pa.list_(pa.utf8()), nullable=False),
        pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())),
                 nullable=False),
    ],
    type_codes=[STRING_VALUE, BOOL_VALUE, BIGINT_VALUE, INT32_BITMASK, STRING_LIST,
                INT32_TO_INT32_LIST_MAP],
)

SQL_INFO_SCHEMA = pa.schema([
    pa.field("info_name", pa.uint32(), nullable=False),
    pa.field("value", VALUE_TYPE, nullable=False),
])


class Bitmask(int):
    """An int32 bitmask answer (kept apart from plain ints, which are int32 ordinals)."""


class Bigint(int):
    """An int64 answer."""


def _bits(*ordinals: int) -> Bitmask:
    return Bitmask(sum(1 << o for o in ordinals))


def server_version() -> str:
    try:
        return importlib.metadata.version("quiver")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


# Function lists name what the engine (DataFusion) resolves by these names; the
# search functions of the SQL contract are listed as system functions.
NUMERIC_FUNCTIONS = (
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "cot", "degrees", "exp",
    "factorial", "floor", "gcd", "lcm", "ln", "log", "log10", "log2", "nanvl", "pi", "power",
    "radians", "random", "round", "signum", "sin", "sqrt", "tan", "trunc",
)
STRING_FUNCTIONS = (
    "ascii", "bit_length", "btrim", "char_length", "chr", "concat", "concat_ws", "initcap",
    "left", "length", "lower", "lpad", "ltrim", "md5", "octet_length", "overlay", "position",
    "regexp_like", "regexp_match", "regexp_replace", "repeat", "replace", "reverse", "right",
    "rpad", "rtrim", "split_part", "starts_with", "strpos", "substr", "substring", "to_hex",
    "translate", "trim", "upper",
)
DATETIME_FUNCTIONS = (
    "current_date", "current_time", "current_timestamp", "date_bin", "date_part",
    "date_trunc", "from_unixtime", "make_date", "now", "to_char", "to_date", "to_timestamp",
    "to_unixtime",
)
SYSTEM_FUNCTIONS = (
    "arrow_cast", "arrow_typeof", "coalesce", "nullif", "version",
    "bm25", "knn", "vector_distance",
    "bm25_search", "vector_search", "hybrid_search", "token_match", "exact_match",
)
# Keywords of the dialect beyond SQL:2003 (what JDBC's getSQLKeywords asks for).
KEYWORDS = (
    "DESCRIBE", "EXPLAIN", "ILIKE", "LIMIT", "OFFSET", "SHOW", "TABLES",
)

_NUMERIC_CONVERT = (SqlSupportsConvert.BIGINT, SqlSupportsConvert.DECIMAL,
                    SqlSupportsConvert.FLOAT, SqlSupportsConvert.INTEGER,
                    SqlSupportsConvert.REAL, SqlSupportsConvert.SMALLINT,
                    SqlSupportsConvert.TINYINT)
_TEXT_CONVERT = (SqlSupportsConvert.CHAR, SqlSupportsConvert.VARCHAR)


def _convert_map() -> dict[int, list[int]]:
    """CAST conversions the engine performs, between the protocol's type groups."""
    c = SqlSupportsConvert
    numeric = list(_NUMERIC_CONVERT)
    text = list(_TEXT_CONVERT)
    out: dict[int, list[int]] = {}
    for n in numeric:
        out[n] = [*numeric, c.BIT, *text]
    # Decimal and boolean do not cast into each other in the engine.
    out[c.DECIMAL].remove(c.BIT)
    out[c.BIT] = [*(n for n in numeric if n != c.DECIMAL), c.BIT, *text]
    for t in text:
        out[t] = [*numeric, c.BIT, *text, c.DATE, c.TIMESTAMP, c.BINARY, c.VARBINARY]
    out[c.DATE] = [c.DATE, c.TIMESTAMP, *text]
    out[c.TIMESTAMP] = [c.DATE, c.TIMESTAMP, *text]
    for b in (c.BINARY, c.VARBINARY):
        out[b] = [c.BINARY, c.VARBINARY, *text]
    return {int(k): sorted(int(x) for x in v) for k, v in sorted(out.items())}


def _answers() -> dict[int, Any]:
    """Every id this server answers, with its value; Python types pick the union member."""
    i = SqlInfo
    unlimited = Bigint(0)
    return {
        i.FLIGHT_SQL_SERVER_NAME: "Quiver",
        i.FLIGHT_SQL_SERVER_VERSION: server_version(),
        i.FLIGHT_SQL_SERVER_ARROW_VERSION: pa.__version__,
        i.FLIGHT_SQL_SERVER_READ_ONLY: False,
        i.FLIGHT_SQL_SERVER_SQL: True,
        i.FLIGHT_SQL_SERVER_SUBSTRAIT: False,
        i.FLIGHT_SQL_SERVER_TRANSACTION: pb.SQL_SUPPORTED_TRANSACTION_NONE,
        i.FLIGHT_SQL_SERVER_CANCEL: True,
        i.FLIGHT_SQL_SERVER_BULK_INGESTION: True,
        i.FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED: False,
        i.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: 0,
        i.FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT: 0,
        i.SQL_DDL_CATALOG: False,
        i.SQL_DDL_SCHEMA: False,
        i.SQL_DDL_TABLE: True,
        # Unquoted identifiers fold to lower case. Quoted ones keep their case and
        # compare exactly, which no member of SqlSupportedCaseSensitivity describes.
        i.SQL_IDENTIFIER_CASE: pb.SQL_CASE_SENSITIVITY_LOWERCASE,
        i.SQL_IDENTIFIER_QUOTE_CHAR: '"',
        i.SQL_QUOTED_IDENTIFIER_CASE: pb.SQL_CASE_SENSITIVITY_UNKNOWN,
        i.SQL_ALL_TABLES_ARE_SELECTABLE: True,
        # Ascending puts nulls last and descending first: nulls sort as the largest.
        i.SQL_NULL_ORDERING: pb.SQL_NULLS_SORTED_HIGH,
        i.SQL_KEYWORDS: list(KEYWORDS),
        i.SQL_NUMERIC_FUNCTIONS: list(NUMERIC_FUNCTIONS),
        i.SQL_STRING_FUNCTIONS: list(STRING_FUNCTIONS),
        i.SQL_SYSTEM_FUNCTIONS: list(SYSTEM_FUNCTIONS),
        i.SQL_DATETIME_FUNCTIONS: list(DATETIME_FUNCTIONS),
        i.SQL_SEARCH_STRING_ESCAPE: "\\",
        i.SQL_EXTRA_NAME_CHARACTERS: "",
        i.SQL_SUPPORTS_COLUMN_ALIASING: True,
        i.SQL_NULL_PLUS_NULL_IS_NULL: True,
        i.SQL_SUPPORTS_CONVERT: _convert_map(),
        i.SQL_SUPPORTS_TABLE_CORRELATION_NAMES: True,
        i.SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES: False,
        i.SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY: True,
        i.SQL_SUPPORTS_ORDER_BY_UNRELATED: True,
        i.SQL_SUPPORTED_GROUP_BY: _bits(pb.SQL_GROUP_BY_UNRELATED, pb.SQL_GROUP_BY_BEYOND_SELECT),
        i.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE: True,
        i.SQL_SUPPORTS_NON_NULLABLE_COLUMNS: True,
        # Core grammar, which includes the minimum grammar.
        i.SQL_SUPPORTED_GRAMMAR: _bits(pb.SQL_MINIMUM_GRAMMAR, pb.SQL_CORE_GRAMMAR),
        i.SQL_ANSI92_SUPPORTED_LEVEL: _bits(pb.ANSI92_ENTRY_SQL),
        i.SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY: False,
        i.SQL_OUTER_JOINS_SUPPORT_LEVEL: pb.SQL_FULL_OUTER_JOINS,
        i.SQL_SCHEMA_TERM: "schema",
        i.SQL_CATALOG_TERM: "catalog",
        i.SQL_CATALOG_AT_START: True,
        i.SQL_SCHEMAS_SUPPORTED_ACTIONS: _bits(),
        i.SQL_CATALOGS_SUPPORTED_ACTIONS: _bits(),
        i.SQL_SUPPORTED_POSITIONED_COMMANDS: _bits(),
        i.SQL_SELECT_FOR_UPDATE_SUPPORTED: False,
        i.SQL_STORED_PROCEDURES_SUPPORTED: False,
        # Quantified comparisons (> ALL (subquery)) are not claimed: the engine does
        # not answer them correctly.
        i.SQL_SUPPORTED_SUBQUERIES: _bits(pb.SQL_SUBQUERIES_IN_COMPARISONS,
                                          pb.SQL_SUBQUERIES_IN_EXISTS, pb.SQL_SUBQUERIES_IN_INS),
        i.SQL_CORRELATED_SUBQUERIES_SUPPORTED: True,
        i.SQL_SUPPORTED_UNIONS: _bits(pb.SQL_UNION, pb.SQL_UNION_ALL),
        i.SQL_MAX_BINARY_LITERAL_LENGTH: unlimited,
        i.SQL_MAX_CHAR_LITERAL_LENGTH: unlimited,
        i.SQL_MAX_COLUMN_NAME_LENGTH: unlimited,
        i.SQL_MAX_COLUMNS_IN_GROUP_BY: unlimited,
        i.SQL_MAX_COLUMNS_IN_INDEX: unlimited,
        i.SQL_MAX_COLUMNS_IN_ORDER_BY: unlimited,
        i.SQL_MAX_COLUMNS_IN_SELECT: unlimited,
        i.SQL_MAX_COLUMNS_IN_TABLE: unlimited,
        i.SQL_MAX_CONNECTIONS: unlimited,
        i.SQL_MAX_CURSOR_NAME_LENGTH: unlimited,
        i.SQL_MAX_INDEX_LENGTH: unlimited,
        i.SQL_DB_SCHEMA_NAME_LENGTH: unlimited,
        i.SQL_MAX_PROCEDURE_NAME_LENGTH: unlimited,
        i.SQL_MAX_CATALOG_NAME_LENGTH: unlimited,
        i.SQL_MAX_ROW_SIZE: unlimited,
        i.SQL_MAX_ROW_SIZE_INCLUDES_BLOBS: False,
        i.SQL_MAX_STATEMENT_LENGTH: unlimited,
        i.SQL_MAX_STATEMENTS: unlimited,
        # The catalog accepts table names of 1 to 128 letters, digits and underscores.
        i.SQL_MAX_TABLE_NAME_LENGTH: Bigint(128),
        i.SQL_MAX_TABLES_IN_SELECT: unlimited,
        i.SQL_MAX_USERNAME_LENGTH: unlimited,
        i.SQL_DEFAULT_TRANSACTION_ISOLATION: pb.SQL_TRANSACTION_NONE,
        i.SQL_TRANSACTIONS_SUPPORTED: False,
        i.SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS: _bits(pb.SQL_TRANSACTION_NONE),
        i.SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT: False,
        i.SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED: False,
        i.SQL_SUPPORTED_RESULT_SET_TYPES: _bits(pb.SQL_RESULT_SET_TYPE_FORWARD_ONLY),
        i.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_UNSPECIFIED: _bits(),
        i.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_FORWARD_ONLY:
            _bits(pb.SQL_RESULT_SET_CONCURRENCY_READ_ONLY),
        i.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_SENSITIVE: _bits(),
        i.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_INSENSITIVE: _bits(),
        i.SQL_SAVEPOINTS_SUPPORTED: False,
        i.SQL_NAMED_PARAMETERS_SUPPORTED: False,
        i.SQL_LOCATORS_UPDATE_COPY: False,
        i.SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED: False,
    }


def _type_code(value: Any) -> int:
    # bool before int (bool is an int); Bitmask and Bigint before plain int.
    if isinstance(value, str):
        return STRING_VALUE
    if isinstance(value, bool):
        return BOOL_VALUE
    if isinstance(value, Bigint):
        return BIGINT_VALUE
    if isinstance(value, int):
        return INT32_BITMASK
    if isinstance(value, list):
        return STRING_LIST
    if isinstance(value, dict):
        return INT32_TO_INT32_LIST_MAP
    raise TypeError(f"no SqlInfo union member for {type(value).__name__}")


def known_ids() -> list[int]:
    """Every SqlInfo id this server answers, ascending."""
    return sorted(int(k) for k in _answers())


def sql_info(ids: Iterable[int] = ()) -> pa.Table:
    """The ``CommandGetSqlInfo`` result for ``ids`` (all known ids when empty).

    Rows follow the order of ``ids``; ids this server does not answer are left out.
    """
    answers = _answers()
    wanted = [int(x) for x in ids] or sorted(answers)
    unknown = [x for x in wanted if x not in answers]
    if unknown:
        log.debug("SqlInfo ids not answered: %s", unknown)
    rows = [(x, answers[x]) for x in wanted if x in answers]
    codes = np.array([_type_code(v) for _, v in rows], dtype=np.int8)
    members: list[list[Any]] = [[] for _ in range(len(VALUE_TYPE))]
    offsets = np.empty(len(rows), dtype=np.int32)
    for n, (_, value) in enumerate(rows):
        member = members[codes[n]]
        offsets[n] = len(member)
        member.append(list(value.items()) if isinstance(value, dict) else value)
    children = [pa.array(values, type=VALUE_TYPE.field(k).type)
                for k, values in enumerate(members)]
    value = pa.Array.from_buffers(VALUE_TYPE, len(rows),
                                  [None, pa.py_buffer(codes), pa.py_buffer(offsets)],
                                  children=children)
    names = pa.array([x for x, _ in rows], type=pa.uint32())
    return pa.Table.from_arrays([names, value], schema=SQL_INFO_SCHEMA)
