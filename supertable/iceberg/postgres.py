"""The PostgreSQL connection of Iceberg's SQL catalog (``sql_catalog.py``).

URIs are spelled as pyiceberg's ``SqlCatalog`` (SQLAlchemy) takes them:
``postgresql://user:password@host:port/db``, ``postgresql+psycopg://...`` or with another
driver name after the ``+``; the driver here is always psycopg 3 (the ``postgres`` extra).
The password may instead come from libpq's own sources (``PGPASSWORD``, ``~/.pgpass``),
which keeps it out of the process list.

Credentials never reach a log line or an error message: the catalog is shown as
``postgresql://user@host:port/db`` and the driver's messages are shown with the password
masked. The catalog's tables are created once per process under a transaction-scoped
advisory lock, so servers starting together do not trip over each other's ``CREATE``.
A registration runs in one transaction at read committed; the compare-and-set ``UPDATE``
of ``sql_catalog.py`` is what keeps concurrent writers from moving a table backwards.
"""

from __future__ import annotations

import re
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from quiver.supertable.iceberg.catalog import DEFAULT_CATALOG_NAME, CatalogError
from quiver.supertable.iceberg.sql_catalog import SCHEMA, Connection, SqlCatalog

_URI = re.compile(r"^postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)
CONNECT_TIMEOUT_S = 10
# pg_advisory_xact_lock key of the catalog's table creation (an arbitrary fixed number).
SCHEMA_LOCK = 0x5155_4956_4552
MASK = "***"


def is_postgres(uri: str) -> bool:
    return bool(_URI.match(uri))


def redacted(uri: str) -> str:
    """``uri`` without password or query, as ``postgresql://user@host:port/db``."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit(("postgresql", host, parts.path, "", ""))


def _secrets(uri: str) -> list[str]:
    """The password as written in ``uri`` and decoded, and any ``password=`` query value."""
    parts = urlsplit(uri)
    found = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if key.lower() == "password" and value:
            found += [value, unquote(value)]
    return sorted({s for s in found if s}, key=len, reverse=True)


class PostgresDialect:
    """Connections to one PostgreSQL database, with psycopg 3."""

    def __init__(self, uri: str) -> None:
        if not is_postgres(uri):
            raise CatalogError(f"not a PostgreSQL catalog URI (postgresql://user@host:port/db):"
                               f" {redacted(uri)!r}")
        self.shown = redacted(uri)
        self._conninfo = "postgresql://" + _URI.sub("", uri, count=1)
        self._secrets = _secrets(uri)
        self._ready = False
        try:
            import psycopg
        except ImportError:
            self.errors: tuple[type[BaseException], ...] = ()
            self._psycopg: Any = None
        else:
            self.errors = (psycopg.Error,)
            self._psycopg = psycopg

    def connect(self) -> Connection:
        if self._psycopg is None:
            raise CatalogError("a PostgreSQL catalog needs psycopg 3: pip install "
                               "'quiver[postgres]'")
        con = self._psycopg.connect(self._conninfo, autocommit=True,
                                    connect_timeout=CONNECT_TIMEOUT_S,
                                    application_name="quiver")
        try:
            if not self._ready:
                with con.transaction():
                    con.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    for statement in SCHEMA:
                        con.execute(statement)
                self._ready = True
        except BaseException:
            con.close()
            raise
        return cast(Connection, con)

    def begin(self, con: Connection) -> None:
        con.execute("BEGIN")

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def describe(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


class PostgresCatalog(SqlCatalog):
    """An Iceberg SQL catalog in a PostgreSQL database."""

    def __init__(self, uri: str, name: str = DEFAULT_CATALOG_NAME) -> None:
        super().__init__(PostgresDialect(uri), name)
