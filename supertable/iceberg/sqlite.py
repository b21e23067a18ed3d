"""The SQLite connection of Iceberg's SQL catalog (``sql_catalog.py``): ``sqlite:///path.db``.

Written with the standard library's ``sqlite3``, so no SQL toolkit is needed. A registration
runs in a ``BEGIN IMMEDIATE`` transaction, which takes the database's write lock before it
reads, so writers on one machine take turns.
"""

from __future__ import annotations

import sqlite3
from typing import cast

from quiver.supertable.iceberg.catalog import DEFAULT_CATALOG_NAME, CatalogError
from quiver.supertable.iceberg.sql_catalog import SCHEMA, Connection, SqlCatalog

PREFIX = "sqlite:"
BUSY_TIMEOUT_S = 30.0


def sqlite_path(uri: str) -> str:
    """The database file of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    if not uri.startswith("sqlite:///"):
        raise CatalogError(f"a SQLite catalog is sqlite:///path, got {uri!r}")
    path = uri[len("sqlite:///"):]
    if not path or path == ":memory:":
        raise CatalogError(f"a catalog needs a database file, got {uri!r}")
    return path


class SqliteDialect:
    """Connections to one SQLite database file."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, uri: str) -> None:
        self.path = sqlite_path(uri)
        self.shown = uri

    def connect(self) -> Connection:
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            for statement in SCHEMA:
                con.execute(statement)
        except BaseException:
            con.close()
            raise
        return cast(Connection, con)

    def begin(self, con: Connection) -> None:
        con.execute("BEGIN IMMEDIATE")

    def sql(self, statement: str) -> str:
        return statement

    def describe(self, exc: BaseException) -> str:
        return str(exc)


class SqliteCatalog(SqlCatalog):
    """An Iceberg SQL catalog in a SQLite file."""

    def __init__(self, uri: str, name: str = DEFAULT_CATALOG_NAME) -> None:
        dialect = SqliteDialect(uri)
        super().__init__(dialect, name)
        self.path = dialect.path
