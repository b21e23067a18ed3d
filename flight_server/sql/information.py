"""``information_schema.tables`` and ``information_schema.columns`` of a storage root.

DataFusion's own information schema lists the relations registered on the session,
which are the engine's internal versioned views; a statement that reads either of
these two instead gets relations built from the catalog: the root's tables and their
visible columns, under the catalog and schema names clients see over Flight SQL.
"""

from __future__ import annotations

import pyarrow as pa

from quiver.catalog import Connection
from quiver.flight_server.sql.statements import sql_type
from quiver.supertable.errors import TableNotFoundError

CATALOG = "quiver"
DB_SCHEMA = "main"
TABLE_TYPE = "TABLE"
RELATIONS = ("tables", "columns")


def relation(connection: Connection, name: str) -> pa.Table:
    """The rows of ``information_schema.<name>`` (one of ``RELATIONS``)."""
    names = sorted(connection.list_tables())
    if name == "tables":
        n = len(names)
        return pa.table({
            "table_catalog": pa.array([CATALOG] * n, pa.string()),
            "table_schema": pa.array([DB_SCHEMA] * n, pa.string()),
            "table_name": pa.array(names, pa.string()),
            "table_type": pa.array([TABLE_TYPE] * n, pa.string()),
        })
    tables: list[str] = []
    columns: list[str] = []
    positions: list[int] = []
    nullable: list[str] = []
    types: list[str] = []
    for table_name in names:
        try:
            schema = connection.open_table(table_name).schema
        except TableNotFoundError:
            continue  # dropped while listing
        tables += [table_name] * len(schema)
        columns += schema.names
        positions += range(1, len(schema) + 1)
        nullable += ["YES" if f.nullable else "NO" for f in schema]
        types += [sql_type(f.type) for f in schema]
    n = len(tables)
    return pa.table({
        "table_catalog": pa.array([CATALOG] * n, pa.string()),
        "table_schema": pa.array([DB_SCHEMA] * n, pa.string()),
        "table_name": pa.array(tables, pa.string()),
        "column_name": pa.array(columns, pa.string()),
        "ordinal_position": pa.array(positions, pa.int64()),
        "is_nullable": pa.array(nullable, pa.string()),
        "data_type": pa.array(types, pa.string()),
    })
