"""``quiver iceberg register``: listing a root's tables in an Iceberg SQL catalog (SQLite).

Each table is registered at its newest Iceberg metadata file; a table the catalog
already lists is moved to it (see ``quiver.supertable.iceberg.catalog``), so a rerun is
harmless and brings the catalog up to date. Runs on a storage root (``--root``).
"""

from __future__ import annotations

import argparse
import sys

from quiver.flight_server.cli.admin import _local
from quiver.flight_server.cli.client import Client, ClientError
from quiver.supertable.iceberg.catalog import (
    DEFAULT_CATALOG_NAME,
    DEFAULT_NAMESPACE,
    CatalogError,
    SqliteCatalog,
)


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog-uri", required=True, metavar="URI",
                        help="the SQLite catalog: sqlite:////absolute/path.db or "
                        "sqlite:///relative/path.db (its tables are created when missing)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help=f"namespace the tables are registered in (default "
                        f"{DEFAULT_NAMESPACE})")
    parser.add_argument("--catalog-name", default=DEFAULT_CATALOG_NAME,
                        help="the catalog's name as its readers open it (pyiceberg's "
                        f"SqlCatalog name; default {DEFAULT_CATALOG_NAME})")


def add_register_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tables", nargs="*", metavar="TABLE",
                        help="tables to register (default: every table under the root)")
    add_catalog_arguments(parser)


def run_register(client: Client, args: argparse.Namespace) -> int:
    from quiver.supertable.iceberg import metadata_location

    local = _local(client, "iceberg register")
    try:
        catalog = SqliteCatalog(args.catalog_uri, args.catalog_name)
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
            outcome = catalog.register(args.namespace, name, location)
        except CatalogError as exc:
            raise ClientError(str(exc)) from exc
        print(f"{args.namespace}.{name}\t{outcome}\t{location}")
    return 1 if failed else 0
