"""The embedded entry point: a storage root's tables plus SQL over them, in one object.

``connect(uri, **options)`` gives what ``catalog.connect`` gives (create, open,
list and drop tables) and ``sql(text)``, which returns the result as an Arrow
table (``sql_stream`` streams it as record batches instead).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

import catalog
from flight_server.sql.engine import SqlEngine
from supertable.table import Table, TableOptions


class SqlConnection:
    """Tables under one root and SQL over them. Safe to share between threads."""

    def __init__(self, connection: catalog.Connection) -> None:
        self.catalog = connection
        self.engine = SqlEngine(connection)

    @property
    def uri(self) -> str:
        return self.catalog.uri

    def sql(self, text: str) -> pa.Table:
        """Runs one statement; a query's rows, or a DDL/DML statement's result."""
        return self.engine.execute(text)

    def sql_stream(self, text: str) -> pa.RecordBatchReader:
        """Runs one statement and streams its result batch by batch."""
        return self.engine.sql(text)

    def create_table(self, name: str, schema: pa.Schema, **kwargs: Any) -> Table:
        return self.catalog.create_table(name, schema, **kwargs)

    def open_table(self, name: str) -> Table:
        return self.catalog.open_table(name)

    def list_tables(self) -> list[str]:
        return self.catalog.list_tables()

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        self.catalog.drop_table(name, missing_ok=missing_ok)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> SqlConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(uri: str, *, validate: bool = False, table_options: TableOptions | None = None,
            **storage_options: Any) -> SqlConnection:
    """Opens the root at ``uri`` (memory://, a path, file://, s3://, gs://, az://) for SQL."""
    return SqlConnection(catalog.connect(uri, validate=validate, table_options=table_options,
                                         **storage_options))
