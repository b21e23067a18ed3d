"""The embedded entry point: a storage root's tables plus SQL over them, in one object.

``connect(uri, **options)`` gives what ``catalog.connect`` gives (create, open,
list and drop tables) and ``sql(text)``, which returns the result as an Arrow
table (``sql_stream`` streams it as record batches instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from quiver import catalog
from quiver.catalog.errors import InvalidTableNameError
from quiver.flight_server.sql import analysis
from quiver.flight_server.sql.analysis import Analysis, PlainScan, ScanSource
from quiver.flight_server.sql.engine import Prepared, SqlEngine
from quiver.flight_server.sql.params import parameter_count
from quiver.supertable.errors import TableNotFoundError
from quiver.supertable.table import Table, TableOptions


class SqlConnection:
    """Tables under one root and SQL over them. Safe to share between threads."""

    def __init__(self, connection: catalog.Connection,
                 memory_cache_bytes: int | None = None, **engine_options: Any) -> None:
        """``engine_options`` are ``SqlEngine``'s limits (``memory_limit``,
        ``spill_dir``, ``max_search_k``, ``statement_timeout_s``, ``iceberg_sources``,
        ``max_statement_length``)."""
        self.catalog = connection
        self.engine = SqlEngine(connection, memory_cache_bytes, **engine_options)

    @property
    def uri(self) -> str:
        return self.catalog.uri

    def sql(self, text: str | Analysis, params: Sequence[Any] | None = None) -> pa.Table:
        """Runs one statement (text, or as ``analyse`` read it); a query's rows, or a
        DDL/DML statement's result. ``params`` are bound to the statement's ``?`` (or
        ``$1``, ``$2`` …) placeholders."""
        return self.engine.execute(text, params)

    def sql_stream(self, text: str | Analysis, params: Sequence[Any] | None = None
                   ) -> pa.RecordBatchReader:
        """Runs one statement and streams its result batch by batch."""
        return self.engine.sql(text, params)

    def sql_many(self, text: str, params: pa.Table | pa.RecordBatch) -> pa.Table:
        """Runs one statement once per parameter row: DML counts are summed, query rows
        concatenated; an INSERT of placeholders appends all rows in one commit."""
        return self.engine.execute_many(text, params)

    def sql_files(self, text: str, table: str, version: int, files: Sequence[str],
                  params: Sequence[Any] | None = None, *, table_uuid: str | None = None
                  ) -> pa.RecordBatchReader:
        """Streams a query that reads ``table`` as of ``version`` through the superfiles
        ``files`` only (see ``SqlEngine.sql_files``)."""
        return self.engine.sql_files(text, table, version, files, params,
                                     table_uuid=table_uuid)

    def schema(self, text: str | Analysis, params: Sequence[Any] | None = None) -> pa.Schema:
        """The schema of the statement's result, without running it."""
        return self.engine.schema(text, params)

    def is_query(self, text: str) -> bool:
        """Whether the statement is a query (rows out) rather than DDL or DML."""
        return self.engine.is_query(text)

    def analyse(self, text: str, params: Sequence[Any] | None = None) -> Analysis:
        """The statement read and classified (``quiver.flight_server.sql.analysis``): its
        kind, shape and tables. Reading is shared by text with the statement's runs."""
        return self.engine.analyse(text, params)

    def scan_source(self, scan: PlainScan) -> ScanSource | None:
        """What the plain scan ``scan`` reads now: its table (named as the engine resolves
        names), a snapshot pinned for it, and the superfiles its filter may match; None
        when the name is no table of the root."""
        return analysis.scan_source(scan, self.catalog.open_table,
                                    (TableNotFoundError, InvalidTableNameError))

    def parameter_count(self, text: str) -> int:
        """How many parameters the statement's placeholders take."""
        return parameter_count(text)

    def parameter_types(self, text: str) -> list[pa.DataType | None]:
        """The type each parameter takes, read from where its placeholders stand (None
        where nothing says)."""
        return self.engine.parameter_types(text)

    def prepare(self, text: str) -> Prepared:
        """What a client preparing the statement is told: whether it is a query, its
        parameters' declared types and, for a query, its result schema."""
        return self.engine.prepare(text)

    def create_table(self, name: str, schema: pa.Schema, **kwargs: Any) -> Table:
        return self.catalog.create_table(name, schema, **kwargs)

    def open_table(self, name: str) -> Table:
        return self.catalog.open_table(name)

    def list_tables(self) -> list[str]:
        return self.catalog.list_tables()

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        self.catalog.drop_table(name, missing_ok=missing_ok)

    def close(self) -> None:
        self.engine.close()
        self.catalog.close()

    def __enter__(self) -> SqlConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(uri: str, *, validate: bool = False, table_options: TableOptions | None = None,
            memory_cache_bytes: int | None = None, memory_limit: int | None = None,
            spill_dir: str | None = None, max_search_k: int | None = None,
            statement_timeout_s: float | None = None, iceberg_sources: Any = None,
            max_statement_length: int | None = None,
            **storage_options: Any) -> SqlConnection:
    """Opens the root at ``uri`` (memory://, a path, file://, s3://, gs://, az://) for SQL.
    ``memory_cache_bytes`` bounds the decoded rows kept in memory for scans (default
    ``QUIVER_MEMORY_CACHE_BYTES`` or 1 GiB; 0 turns it off); ``memory_limit`` the memory
    DataFusion's operators share (default a quarter of the machine's), spilling to
    ``spill_dir``; ``max_search_k`` the results one search may return;
    ``statement_timeout_s`` the time limit of each statement (default none);
    ``iceberg_sources`` the Iceberg catalogs the ``iceberg_table('NAME', 'ns.table')``
    function may read, by name (``{"lake": "sqlite:////path/catalog.db"}``, or
    ``quiver.flight_server.sql.lake.IcebergSource`` values; default none);
    ``max_statement_length`` the longest statement text read, in characters."""
    return SqlConnection(catalog.connect(uri, validate=validate, table_options=table_options,
                                         **storage_options), memory_cache_bytes,
                         memory_limit=memory_limit, spill_dir=spill_dir,
                         max_search_k=max_search_k, statement_timeout_s=statement_timeout_s,
                         iceberg_sources=iceberg_sources,
                         max_statement_length=max_statement_length)
