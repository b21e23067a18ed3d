"""Results of the Flight SQL metadata commands, as Arrow tables in the protocol's schemas.

Owns catalogs, database schemas, tables (with their Arrow schemas), table types, key
relations, the name-pattern matching those commands use, and ``SCHEMAS`` (the result
schema of every metadata command). SqlInfo and XDBC type info live in
``quiver.flight_server.service.sql_info`` and ``quiver.flight_server.service.xdbc_types``
and are re-exported here.

A storage root is one catalog (``CATALOG``) holding one database schema
(``DB_SCHEMA``); every table of the root is in it, with table type ``TABLE``.

Keys: no primary or foreign keys are reported. Every table has a unique hidden
``_id``, but it is not among the table's columns as ``SELECT *`` and the table schema
show them, and a key on a column that column listings do not show misleads clients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from quiver.flight_server.service.sql_info import SQL_INFO_SCHEMA, SqlInfo, sql_info
from quiver.flight_server.service.xdbc_types import XDBC_TYPE_INFO_SCHEMA, xdbc_type_info
from quiver.flight_server.sql.information import CATALOG, DB_SCHEMA, TABLE_TYPE
from quiver.flight_server.sql.statements import sql_type
from quiver.supertable.errors import TableNotFoundError

if TYPE_CHECKING:
    from quiver.flight_server.sql.connection import SqlConnection

log = logging.getLogger(__name__)


__all__ = [
    "CATALOG",
    "DB_SCHEMA",
    "SCHEMAS",
    "TABLE_TYPE",
    "SqlInfo",
    "catalogs",
    "cross_reference",
    "db_schemas",
    "exported_keys",
    "imported_keys",
    "like_regex",
    "primary_keys",
    "sql_info",
    "table_types",
    "tables",
    "xdbc_type_info",
]

_utf8 = pa.utf8()

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", _utf8, nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema([
    pa.field("catalog_name", _utf8),
    pa.field("db_schema_name", _utf8, nullable=False),
])
TABLES_SCHEMA = pa.schema([
    pa.field("catalog_name", _utf8),
    pa.field("db_schema_name", _utf8),
    pa.field("table_name", _utf8, nullable=False),
    pa.field("table_type", _utf8, nullable=False),
])
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(
    pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", _utf8, nullable=False)])
# The proto's comment lists key_name before key_sequence; the C++, Go and Java
# reference implementations all put key_sequence first, and clients check against them.
PRIMARY_KEYS_SCHEMA = pa.schema([
    pa.field("catalog_name", _utf8),
    pa.field("db_schema_name", _utf8),
    pa.field("table_name", _utf8, nullable=False),
    pa.field("column_name", _utf8, nullable=False),
    pa.field("key_sequence", pa.int32(), nullable=False),
    pa.field("key_name", _utf8),
])
FOREIGN_KEYS_SCHEMA = pa.schema([
    pa.field("pk_catalog_name", _utf8),
    pa.field("pk_db_schema_name", _utf8),
    pa.field("pk_table_name", _utf8, nullable=False),
    pa.field("pk_column_name", _utf8, nullable=False),
    pa.field("fk_catalog_name", _utf8),
    pa.field("fk_db_schema_name", _utf8),
    pa.field("fk_table_name", _utf8, nullable=False),
    pa.field("fk_column_name", _utf8, nullable=False),
    pa.field("key_sequence", pa.int32(), nullable=False),
    pa.field("fk_key_name", _utf8),
    pa.field("pk_key_name", _utf8),
    pa.field("update_rule", pa.uint8(), nullable=False),
    pa.field("delete_rule", pa.uint8(), nullable=False),
])

SCHEMAS: dict[str, pa.Schema] = {
    "CommandGetCatalogs": CATALOGS_SCHEMA,
    "CommandGetDbSchemas": DB_SCHEMAS_SCHEMA,
    "CommandGetTables": TABLES_SCHEMA,
    "CommandGetTablesWithSchema": TABLES_WITH_SCHEMA_SCHEMA,
    "CommandGetTableTypes": TABLE_TYPES_SCHEMA,
    "CommandGetSqlInfo": SQL_INFO_SCHEMA,
    "CommandGetXdbcTypeInfo": XDBC_TYPE_INFO_SCHEMA,
    "CommandGetPrimaryKeys": PRIMARY_KEYS_SCHEMA,
    "CommandGetImportedKeys": FOREIGN_KEYS_SCHEMA,
    "CommandGetExportedKeys": FOREIGN_KEYS_SCHEMA,
    "CommandGetCrossReference": FOREIGN_KEYS_SCHEMA,
}

# Column metadata keys the protocol defines for the fields of a returned table schema.
_MD = "ARROW:FLIGHT:SQL:"


# -- patterns ----------------------------------------------------------------------------


def like_regex(pattern: str) -> str:
    """An anchored RE2/Python regex equivalent to a metadata filter pattern.

    ``%`` matches any run of characters, ``_`` any one character, and a backslash makes
    the next character literal (a trailing lone backslash is itself literal). Matching
    is case-sensitive, like ``LIKE``.
    """
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(_literal(pattern[i]))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(_literal(ch))
        i += 1
    out.append("$")
    return "(?s)" + "".join(out)


def _literal(ch: str) -> str:
    # A backslash before ASCII punctuation makes it literal in both RE2 (Arrow's regex
    # engine) and Python's re; every other character is literal as it stands.
    if ch.isascii() and not ch.isalnum() and ch.isprintable() and ch != " ":
        return "\\" + ch
    return ch


def _matching(names: pa.Array, pattern: str | None) -> pa.Array:
    """The names a filter pattern keeps (all of them when the pattern is None)."""
    if pattern is None or len(names) == 0:
        return names
    return names.filter(pc.match_substring_regex(names, like_regex(pattern)))


def _catalog_matches(catalog: str | None) -> bool:
    # An exact name, not a pattern; "" asks for objects without a catalog (none here).
    return catalog is None or catalog == CATALOG


def _schema_matches(pattern: str | None) -> bool:
    return len(_matching(pa.array([DB_SCHEMA], _utf8), pattern)) == 1


# -- commands ----------------------------------------------------------------------------


def catalogs(conn: SqlConnection) -> pa.Table:
    """``CommandGetCatalogs``: the one catalog of the root."""
    return pa.Table.from_pydict({"catalog_name": [CATALOG]}, schema=CATALOGS_SCHEMA)


def db_schemas(conn: SqlConnection, catalog: str | None, schema_pattern: str | None) -> pa.Table:
    """``CommandGetDbSchemas``: the one database schema, if the filters keep it."""
    keep = _catalog_matches(catalog) and _schema_matches(schema_pattern)
    rows = 1 if keep else 0
    return pa.Table.from_pydict(
        {"catalog_name": [CATALOG] * rows, "db_schema_name": [DB_SCHEMA] * rows},
        schema=DB_SCHEMAS_SCHEMA)


def tables(conn: SqlConnection, catalog: str | None, schema_pattern: str | None,
           table_pattern: str | None, table_types: Sequence[str] | None,
           include_schema: bool) -> pa.Table:
    """``CommandGetTables``: the root's tables the filters keep, sorted by name.

    With ``include_schema`` each row carries the table's Arrow schema (the columns
    ``SELECT *`` returns, without the hidden ``_id``) as an IPC-serialized message.
    """
    out_schema = TABLES_WITH_SCHEMA_SCHEMA if include_schema else TABLES_SCHEMA
    wanted_types = set(table_types or ())
    if (not _catalog_matches(catalog) or not _schema_matches(schema_pattern)
            or (wanted_types and TABLE_TYPE not in wanted_types)):
        return out_schema.empty_table()
    names = _matching(pa.array(conn.list_tables(), _utf8), table_pattern)
    names = pc.take(names, pc.sort_indices(names)).to_pylist()
    blobs: list[bytes] = []
    if include_schema:
        kept = []
        for name in names:
            try:
                schema = conn.open_table(name).schema
            except TableNotFoundError:
                log.debug("table %r dropped while listing tables", name)
                continue
            kept.append(name)
            blobs.append(table_schema_bytes(name, schema))
        names = kept
    n = len(names)
    columns = {"catalog_name": [CATALOG] * n, "db_schema_name": [DB_SCHEMA] * n,
               "table_name": names, "table_type": [TABLE_TYPE] * n}
    if include_schema:
        columns["table_schema"] = blobs
    return pa.Table.from_pydict(columns, schema=out_schema)


def table_schema_bytes(name: str, schema: pa.Schema) -> bytes:
    """A table's schema as an IPC message, its fields annotated with the protocol's keys."""
    annotated = [_annotated(f, name) for f in schema]
    return pa.schema(annotated, metadata=schema.metadata).serialize().to_pybytes()


def _annotated(field: pa.Field, table: str) -> pa.Field:
    t = field.type
    md = {
        _MD + "CATALOG_NAME": CATALOG,
        _MD + "DB_SCHEMA_NAME": DB_SCHEMA,
        _MD + "TABLE_NAME": table,
        _MD + "TYPE_NAME": sql_type(t),
        _MD + "IS_AUTO_INCREMENT": "0",
        _MD + "IS_CASE_SENSITIVE": "1" if pa.types.is_string(t) else "0",
        _MD + "IS_READ_ONLY": "0",
        _MD + "IS_SEARCHABLE": "1",
    }
    if pa.types.is_decimal(t):
        md[_MD + "PRECISION"] = str(t.precision)
        md[_MD + "SCALE"] = str(t.scale)
    merged = {**{k.decode(): v.decode() for k, v in (field.metadata or {}).items()}, **md}
    return field.with_metadata(merged)


def table_types() -> pa.Table:
    """``CommandGetTableTypes``: every table is a ``TABLE``."""
    return pa.Table.from_pydict({"table_type": [TABLE_TYPE]}, schema=TABLE_TYPES_SCHEMA)


def primary_keys(conn: SqlConnection, catalog: str | None, schema: str | None,
                 table: str) -> pa.Table:
    """``CommandGetPrimaryKeys``: none (see the module docstring)."""
    return PRIMARY_KEYS_SCHEMA.empty_table()


def imported_keys(conn: SqlConnection, catalog: str | None, schema: str | None,
                  table: str) -> pa.Table:
    """``CommandGetImportedKeys``: tables have no foreign keys."""
    return FOREIGN_KEYS_SCHEMA.empty_table()


def exported_keys(conn: SqlConnection, catalog: str | None, schema: str | None,
                  table: str) -> pa.Table:
    """``CommandGetExportedKeys``: tables have no foreign keys."""
    return FOREIGN_KEYS_SCHEMA.empty_table()


def cross_reference(conn: SqlConnection, pk_catalog: str | None, pk_schema: str | None,
                    pk_table: str,
                    fk_catalog: str | None, fk_schema: str | None,
                    fk_table: str) -> pa.Table:
    """``CommandGetCrossReference``: tables have no foreign keys."""
    return FOREIGN_KEYS_SCHEMA.empty_table()
