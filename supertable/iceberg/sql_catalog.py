"""Iceberg's SQL (JDBC) catalog, whatever database holds it: the tables, the statements, and
how a table is registered and moved forward. ``sqlite.py`` and ``postgres.py`` give it a
connection; everything else is here, once.

The layout is the one pyiceberg's ``SqlCatalog`` and Iceberg's ``JdbcCatalog`` create:
``iceberg_tables`` maps (catalog, namespace, table) to a metadata file,
``iceberg_namespace_properties`` holds the namespaces (a namespace exists while it has a
property row; ``exists = true`` is the one written here). A table already listed is moved
to newer metadata with a compare-and-set ``UPDATE``: it applies only while
``metadata_location`` is still the location read, and the location read becomes
``previous_metadata_location``, the way an Iceberg catalog commit moves a table. A writer
that loses the race reads again and decides again, so a table is never dropped and
registered anew (a reader never finds it missing) and never moved back to older metadata.

Statements are written with ``?`` placeholders and standard SQL that SQLite and PostgreSQL
both accept (``INSERT ... ON CONFLICT DO NOTHING``); a dialect rewrites the placeholders for
its driver.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from quiver.supertable.iceberg.catalog import DEFAULT_CATALOG_NAME, CatalogError, Outcome

log = logging.getLogger(__name__)

_VERSION = re.compile(r"/v(\d+)\.metadata\.json$")
# A compare-and-set lost to another writer is decided again from what it wrote; each loss
# means the table moved, so a handful of rounds is plenty.
CAS_ATTEMPTS = 10

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS iceberg_tables ("
    " catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL,"
    " table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000),"
    " previous_metadata_location VARCHAR(1000), iceberg_type VARCHAR(5),"
    " PRIMARY KEY (catalog_name, table_namespace, table_name))",
    "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties ("
    " catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL,"
    " property_key VARCHAR(255) NOT NULL, property_value VARCHAR(1000) NOT NULL,"
    " PRIMARY KEY (catalog_name, namespace, property_key))",
)
ADD_NAMESPACE = ("INSERT INTO iceberg_namespace_properties (catalog_name, namespace,"
                 " property_key, property_value) VALUES (?, ?, 'exists', 'true')"
                 " ON CONFLICT DO NOTHING")
SELECT_LOCATION = ("SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ?"
                   " AND table_namespace = ? AND table_name = ?")
ADD_TABLE = ("INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name,"
             " metadata_location, previous_metadata_location, iceberg_type)"
             " VALUES (?, ?, ?, ?, NULL, 'TABLE') ON CONFLICT DO NOTHING")
MOVE_TABLE = ("UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ?"
              " WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?"
              " AND metadata_location = ?")
# A row another writer left without a location (created, never committed).
MOVE_EMPTY_TABLE = ("UPDATE iceberg_tables SET metadata_location = ?,"
                    " previous_metadata_location = NULL WHERE catalog_name = ?"
                    " AND table_namespace = ? AND table_name = ? AND metadata_location IS NULL")


class Cursor(Protocol):
    """What is used of a DB-API cursor."""

    rowcount: int

    def fetchone(self) -> Any: ...


class Connection(Protocol):
    """One open connection, in autocommit mode: transactions are begun explicitly."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def close(self) -> None: ...


class Dialect(Protocol):
    """The database-specific part: opening a connection, its placeholders and errors."""

    # The URI as log lines and error messages may show it (no password).
    shown: str
    # The driver's exceptions, turned into ``CatalogError`` here.
    errors: tuple[type[BaseException], ...]

    def connect(self) -> Connection:
        """A new connection in autocommit mode, the catalog's tables created when missing."""

    def begin(self, con: Connection) -> None:
        """Begins the transaction one registration runs in."""

    def sql(self, statement: str) -> str:
        """``statement`` with ``?`` placeholders in the driver's own style."""

    def describe(self, exc: BaseException) -> str:
        """The driver's error as an error message may show it."""


def version(location: str | None) -> int:
    """The ``N`` of a ``vN.metadata.json`` location, -1 for any other name."""
    found = _VERSION.search(location or "")
    return int(found.group(1)) if found else -1


def is_older(location: str, current: str | None) -> bool:
    """Whether ``location`` is metadata the table has already moved past: only Quiver's own
    numbered files in the same folder can be compared."""
    same_folder = (current or "").rsplit("/", 1)[0] == location.rsplit("/", 1)[0]
    return same_folder and version(current) > version(location)


class SqlCatalog:
    """One Iceberg SQL catalog, under the catalog name its readers open it with."""

    def __init__(self, dialect: Dialect, name: str = DEFAULT_CATALOG_NAME) -> None:
        self.dialect = dialect
        self.uri = dialect.shown
        self.name = name

    def _run(self, action: Callable[[Connection], Any]) -> Any:
        try:
            con = self.dialect.connect()
        except CatalogError:
            raise
        except self.dialect.errors as exc:
            raise CatalogError(f"cannot open catalog {self.uri}: "
                               f"{self.dialect.describe(exc)}") from None
        try:
            return action(con)
        except self.dialect.errors as exc:
            # ``from None``: the driver's own exception is not chained into tracebacks.
            raise CatalogError(f"catalog {self.uri}: {self.dialect.describe(exc)}") from None
        finally:
            with contextlib.suppress(*self.dialect.errors):
                con.close()

    def _execute(self, con: Connection, statement: str, params: Sequence[Any]) -> Any:
        return con.execute(self.dialect.sql(statement), params)

    def register(self, namespace: str, table: str, location: str,
                 document: Callable[[], dict[str, Any]] | None = None) -> Outcome:
        """Lists ``namespace.table`` at ``location``, or moves it there when it is older
        (``document`` is not needed: the catalog holds the location only)."""
        outcome: Outcome = self._run(lambda con: self._register(con, namespace, table,
                                                                 location))
        return outcome

    def _register(self, con: Connection, namespace: str, table: str,
                  location: str) -> Outcome:
        key = (self.name, namespace, table)
        for _ in range(CAS_ATTEMPTS):
            self.dialect.begin(con)
            try:
                outcome = self._attempt(con, key, location)
            except BaseException:
                # A broken connection fails its ROLLBACK too: the first error is the one told.
                with contextlib.suppress(*self.dialect.errors):
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            if outcome is not None:
                return outcome
            log.debug("catalog %s: table %s.%s moved by another writer; deciding again",
                      self.uri, namespace, table)
        raise CatalogError(f"catalog {self.uri}: table {namespace}.{table} kept moving under "
                           f"{CAS_ATTEMPTS} attempts to update it")

    def _attempt(self, con: Connection, key: tuple[str, str, str],
                 location: str) -> Outcome | None:
        """One round in one transaction; None when another writer got in between."""
        self._execute(con, ADD_NAMESPACE, key[:2])
        row = self._execute(con, SELECT_LOCATION, key).fetchone()
        if row is None:
            added = self._execute(con, ADD_TABLE, (*key, location))
            return "registered" if added.rowcount == 1 else None
        current = row[0]
        if current == location or is_older(location, current):
            # A concurrent commit already moved it further: never point it backwards.
            return "unchanged"
        if current is None:
            moved = self._execute(con, MOVE_EMPTY_TABLE, (location, *key))
        else:
            moved = self._execute(con, MOVE_TABLE, (location, current, *key, current))
        return "updated" if moved.rowcount == 1 else None

    def location(self, namespace: str, table: str) -> str | None:
        """The metadata file the catalog lists for ``namespace.table``, if any."""
        row = self._run(lambda con: self._execute(
            con, SELECT_LOCATION, (self.name, namespace, table)).fetchone())
        return None if row is None else row[0]
