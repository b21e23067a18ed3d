"""What keeps an Iceberg catalog current, and ``open_catalog``, which opens the one a URI
names: Iceberg's SQL catalog in SQLite (``sqlite.py``) or PostgreSQL (``postgres.py``), both
run by ``sql_catalog.py``, or a REST catalog (``rest.py``).

A catalog lists each table at its newest metadata file and moves it forward the way an
Iceberg commit does, never back to older metadata. ``follower`` keeps one current after each
commit made in this process; its failures are logged and never fail the commit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Literal, Protocol

from quiver.root_error import Kind, QuiverError

log = logging.getLogger(__name__)

Outcome = Literal["registered", "updated", "unchanged"]
DEFAULT_NAMESPACE = "quiver"
DEFAULT_CATALOG_NAME = "default"


class CatalogError(QuiverError):
    """The catalog URI names no catalog, or the catalog could not be read or written."""

    kind = Kind.INVALID_INPUT


class Catalog(Protocol):
    """What keeps a catalog current: a SQL catalog (``sql_catalog.py``) or a REST one."""

    uri: str

    def register(self, namespace: str, table: str, location: str,
                 document: Callable[[], dict[str, Any]] | None = None) -> Outcome:
        """``document`` reads the metadata file's JSON, for a catalog that needs it."""

    def location(self, namespace: str, table: str) -> str | None: ...


TOKEN_ENV = "QUIVER_ICEBERG_CATALOG_TOKEN"
CREDENTIAL_ENV = "QUIVER_ICEBERG_CATALOG_CREDENTIAL"


def open_catalog(uri: str, name: str = DEFAULT_CATALOG_NAME, *, token: str | None = None,
                 credential: str | None = None, warehouse: str | None = None) -> Catalog:
    """The catalog ``uri`` names: ``sqlite:///path.db``,
    ``postgresql[+driver]://user:password@host:port/db`` or ``rest+http(s)://host/path``.

    A REST catalog's bearer ``token`` or OAuth2 ``credential`` (``id:secret``) default to
    the environment variables ``QUIVER_ICEBERG_CATALOG_TOKEN`` and
    ``QUIVER_ICEBERG_CATALOG_CREDENTIAL``. ``name`` is a SQL catalog's catalog name.
    """
    from quiver.supertable.iceberg import postgres, rest

    if rest.is_rest(uri):
        return rest.RestCatalog(uri, token=token or os.environ.get(TOKEN_ENV),
                                credential=credential or os.environ.get(CREDENTIAL_ENV),
                                warehouse=warehouse)
    if postgres.is_postgres(uri):
        return postgres.PostgresCatalog(uri, name)
    if uri.startswith("sqlite:"):
        from quiver.supertable.iceberg.sqlite import SqliteCatalog

        return SqliteCatalog(uri, name)
    raise CatalogError(f"unknown catalog URI {rest.redacted(uri)!r}: give sqlite:///path.db, "
                       "postgresql://user@host:port/db or rest+http://host:port/path")


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
