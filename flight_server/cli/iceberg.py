"""``quiver iceberg register``: listing a root's tables in an Iceberg catalog, a SQL catalog
in SQLite or PostgreSQL, or a REST catalog.

Each table is registered at its newest Iceberg metadata file; a table the catalog
already lists is moved to it (see ``quiver.supertable.iceberg.sql_catalog`` and ``.rest``), so
a rerun is harmless and brings the catalog up to date. Runs on a storage root (``--root``).
"""

from __future__ import annotations

import argparse
import functools
import sys

from quiver.flight_server.cli.admin import _local
from quiver.flight_server.cli.client import Client, ClientError
from quiver.supertable.iceberg.catalog import (
    CREDENTIAL_ENV,
    DEFAULT_CATALOG_NAME,
    DEFAULT_NAMESPACE,
    TOKEN_ENV,
    CatalogError,
    open_catalog,
)

REST_HELP = ("or a REST catalog: rest+http://host:port/path (rest+https:// too), the URL "
             "under which its /v1/ routes are")


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog-uri", required=True, metavar="URI",
                        help="a SQL catalog in SQLite: sqlite:////absolute/path.db or "
                        "sqlite:///relative/path.db, or in PostgreSQL: "
                        "postgresql://user:password@host:port/db (postgresql+psycopg:// "
                        "too; the password may come from $PGPASSWORD or ~/.pgpass instead); "
                        "their tables are created when missing; " + REST_HELP)
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help=f"namespace the tables are registered in (default "
                        f"{DEFAULT_NAMESPACE})")
    parser.add_argument("--catalog-name", default=DEFAULT_CATALOG_NAME,
                        help="the catalog's name as its readers open it (pyiceberg's "
                        f"SqlCatalog name; default {DEFAULT_CATALOG_NAME})")
    parser.add_argument("--catalog-warehouse", default=None, metavar="NAME",
                        help="REST catalog: the warehouse sent with GET /v1/config")
    parser.add_argument("--catalog-token", default=None, metavar="TOKEN",
                        help=f"REST catalog: bearer token (default ${TOKEN_ENV}; prefer the "
                        "variable: a flag shows in the process list)")
    parser.add_argument("--catalog-credential", default=None, metavar="ID:SECRET",
                        help="REST catalog: OAuth2 client credential exchanged for a token "
                        f"(default ${CREDENTIAL_ENV})")


def add_register_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tables", nargs="*", metavar="TABLE",
                        help="tables to register (default: every table under the root)")
    add_catalog_arguments(parser)


def run_register(client: Client, args: argparse.Namespace) -> int:
    from quiver.supertable.iceberg import document, metadata_location

    local = _local(client, "iceberg register")
    try:
        catalog = open_catalog(args.catalog_uri, args.catalog_name, token=args.catalog_token,
                               credential=args.catalog_credential,
                               warehouse=args.catalog_warehouse)
    except CatalogError as exc:
        raise ClientError(str(exc)) from exc
    names = args.tables or local.tables()
    failed = 0
    for name in names:
        table = local.connection.open_table(name)
        location = metadata_location(table.store, table.prefix)
        if location is None:
            print(f"quiver: error: table {name!r} has no Iceberg metadata", file=sys.stderr)
            failed += 1
            continue
        try:
            outcome = catalog.register(
                args.namespace, name, location,
                functools.partial(document, table.store, table.prefix, location))
        except CatalogError as exc:
            raise ClientError(str(exc)) from exc
        print(f"{args.namespace}.{name}\t{outcome}\t{location}")
    return 1 if failed else 0
