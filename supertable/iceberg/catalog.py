"""Naming tables in an Iceberg SQL catalog kept in SQLite, and keeping them current there;
``open_catalog`` opens it or a REST catalog (``rest.py``) from a URI.

The catalog is the table layout of Iceberg's SQL (JDBC) catalog as pyiceberg's
``SqlCatalog`` and Spark's ``JdbcCatalog`` use it: ``iceberg_tables`` maps
(catalog, namespace, table) to a metadata file, ``iceberg_namespace_properties``
holds the namespaces. It is written with the standard library's ``sqlite3`` so no
SQL toolkit is needed here. A table already listed is moved to its newest metadata
file with one compare-and-swap ``UPDATE`` (the previous location becomes
``previous_metadata_location``), the way a catalog commit moves it: readers never see
it missing, and a location never goes backwards.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any, Literal, Protocol

from quiver.root_error import Kind, QuiverError

log = logging.getLogger(__name__)

Outcome = Literal["registered", "updated", "unchanged"]
DEFAULT_NAMESPACE = "quiver"
DEFAULT_CATALOG_NAME = "default"
_VERSION = re.compile(r"/v(\d+)\.metadata\.json$")

_SCHEMA = (
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


class CatalogError(QuiverError):
    """The catalog URI is not a SQLite catalog, or the catalog could not be written."""

    kind = Kind.INVALID_INPUT


def sqlite_path(uri: str) -> str:
    """The database file of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    if not uri.startswith("sqlite:///"):
        raise CatalogError(f"only SQLite catalogs (sqlite:///path) are supported, got {uri!r}")
    path = uri[len("sqlite:///"):]
    if not path or path == ":memory:":
        raise CatalogError(f"a catalog needs a database file, got {uri!r}")
    return path


def _version(location: str | None) -> int:
    found = _VERSION.search(location or "")
    return int(found.group(1)) if found else -1


class SqliteCatalog:
    """One SQLite Iceberg catalog, under the catalog name its readers open it with."""

    def __init__(self, uri: str, name: str = DEFAULT_CATALOG_NAME) -> None:
        self.uri = uri
        self.path = sqlite_path(uri)
        self.name = name

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open catalog {self.uri}: {exc}") from exc
        for statement in _SCHEMA:
            con.execute(statement)
        return con

    def register(self, namespace: str, table: str, location: str,
                 document: Callable[[], dict[str, Any]] | None = None) -> Outcome:
        """Lists ``namespace.table`` at ``location``, or moves it there when it is older
        (``document`` is not needed: the catalog holds the location only)."""
        try:
            with closing(self._connect()) as con:
                con.execute("BEGIN IMMEDIATE")
                try:
                    outcome = self._register(con, namespace, table, location)
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
                return outcome
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.uri}: {exc}") from exc

    def _register(self, con: sqlite3.Connection, namespace: str, table: str,
                  location: str) -> Outcome:
        con.execute("INSERT OR IGNORE INTO iceberg_namespace_properties VALUES (?, ?, ?, ?)",
                    (self.name, namespace, "exists", "true"))
        row = con.execute("SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ?"
                          " AND table_namespace = ? AND table_name = ?",
                          (self.name, namespace, table)).fetchone()
        if row is None:
            con.execute("INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name,"
                        " metadata_location, previous_metadata_location, iceberg_type)"
                        " VALUES (?, ?, ?, ?, NULL, 'TABLE')",
                        (self.name, namespace, table, location))
            return "registered"
        current = row[0]
        same_folder = (current or "").rsplit("/", 1)[0] == location.rsplit("/", 1)[0]
        if current == location or (same_folder and _version(current) > _version(location)):
            # A concurrent commit already moved it further: never point it backwards.
            return "unchanged"
        con.execute("UPDATE iceberg_tables SET metadata_location = ?,"
                    " previous_metadata_location = ? WHERE catalog_name = ?"
                    " AND table_namespace = ? AND table_name = ? AND metadata_location IS ?",
                    (location, current, self.name, namespace, table, current))
        return "updated"

    def location(self, namespace: str, table: str) -> str | None:
        """The metadata file the catalog lists for ``namespace.table``, if any."""
        with closing(self._connect()) as con:
            row = con.execute("SELECT metadata_location FROM iceberg_tables WHERE catalog_name"
                              " = ? AND table_namespace = ? AND table_name = ?",
                              (self.name, namespace, table)).fetchone()
        return None if row is None else row[0]


class Catalog(Protocol):
    """What keeps a catalog current: a SQLite catalog here, or a REST one (``rest.py``)."""

    uri: str

    def register(self, namespace: str, table: str, location: str,
                 document: Callable[[], dict[str, Any]] | None = None) -> Outcome:
        """``document`` reads the metadata file's JSON, for a catalog that needs it."""

    def location(self, namespace: str, table: str) -> str | None: ...


TOKEN_ENV = "QUIVER_ICEBERG_CATALOG_TOKEN"
CREDENTIAL_ENV = "QUIVER_ICEBERG_CATALOG_CREDENTIAL"


def open_catalog(uri: str, name: str = DEFAULT_CATALOG_NAME, *, token: str | None = None,
                 credential: str | None = None, warehouse: str | None = None) -> Catalog:
    """The catalog ``uri`` names: ``sqlite:///path.db`` or ``rest+http(s)://host/path``.

    A REST catalog's bearer ``token`` or OAuth2 ``credential`` (``id:secret``) default to
    the environment variables ``QUIVER_ICEBERG_CATALOG_TOKEN`` and
    ``QUIVER_ICEBERG_CATALOG_CREDENTIAL``.
    """
    from quiver.supertable.iceberg import rest

    if rest.is_rest(uri):
        return rest.RestCatalog(uri, token=token or os.environ.get(TOKEN_ENV),
                                credential=credential or os.environ.get(CREDENTIAL_ENV),
                                warehouse=warehouse)
    if uri.startswith("sqlite:"):
        return SqliteCatalog(uri, name)
    raise CatalogError(f"unknown catalog URI {rest.redacted(uri)!r}: give sqlite:///path.db or "
                       "rest+http://host:port/path")


def follower(catalog: Catalog, namespace: str
             ) -> Callable[[str, str, Callable[[], dict[str, Any]]], None]:
    """A listener for ``quiver.supertable.iceberg.add_listener`` that keeps ``catalog`` current;
    it logs a failure and never raises, so a write never fails for the catalog's sake."""

    def follow(name: str, location: str, document: Callable[[], dict[str, Any]]) -> None:
        try:
            outcome = catalog.register(namespace, name, location, document)
            log.debug("Iceberg catalog %s: table %s.%s %s (%s)", catalog.uri, namespace, name,
                      outcome, location)
        except Exception as exc:
            log.warning("Iceberg catalog %s not updated for table %r (updated again with its "
                        "next commit or by quiver iceberg register): %s",
                        catalog.uri, name, exc)

    return follow
