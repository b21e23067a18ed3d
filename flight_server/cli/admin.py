"""``quiver tables``, ``describe``, ``optimize`` and ``gc``: looking at and tidying a root's tables.

``tables`` and ``describe`` work on a local root and through a server (there by SQL:
``SHOW TABLES``, ``DESCRIBE`` and a row count; file counts and versions are known
only on a root). ``optimize`` and ``gc`` run on a local root in this process, or
through a server as its ``quiver.optimize`` / ``quiver.gc`` Flight actions
(``quiver.flight_server.service.maintenance``), which report the same figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterator

from quiver.flight_server.cli.client import Client, ClientError, LocalClient, ServerClient

log = logging.getLogger(__name__)


def _console(stderr: bool = False):
    from rich.console import Console

    out = sys.stderr if stderr else sys.stdout
    return Console(file=out, width=None if out.isatty() else 160, highlight=False)


@contextlib.contextmanager
def _working(message: str) -> Iterator[None]:
    """A spinner on stderr while a step without progress reports runs (terminals only)."""
    if not sys.stderr.isatty():
        yield
        return
    with _console(stderr=True).status(message):
        yield


def _local(client: Client, command: str) -> LocalClient:
    if not isinstance(client, LocalClient):
        raise ClientError(f"quiver {command} works on a storage root (--root), not through "
                          "--server")
    return client


# -- tables / describe ----------------------------------------------------------------------


def add_tables_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # only the data options, added by the caller


def run_tables(client: Client, args: argparse.Namespace) -> int:
    for name in client.tables():
        sys.stdout.write(name + "\n")
    return 0


def add_describe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table to describe")


def run_describe(client: Client, args: argparse.Namespace) -> int:
    from rich.table import Table

    info = client.describe(args.table)
    console = _console()
    console.print(f"table {info.name} at {client.where}")
    facts = [("rows", f"{info.rows:,}")]
    if info.files is not None:
        facts.append(("files", f"{info.files:,}"))
    if info.version is not None:
        facts.append(("version", str(info.version)))
    facts += list(info.extra.items())
    for key, value in facts:
        console.print(f"  {key}: {value}")
    table = Table(highlight=False)
    for name in ("column", "type", "nullable", "index"):
        table.add_column(name)
    cols = info.columns
    for name, type_, nullable, index in zip(*(cols.column(i).to_pylist() for i in range(4)),
                                            strict=True):
        table.add_row(str(name), str(type_), str(nullable), index or "")
    console.print(table)
    return 0


# -- optimize / gc --------------------------------------------------------------------------


def add_optimize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table whose files to compact")
    parser.add_argument("--target-rows", type=int, default=None, metavar="N",
                        help="rows to aim for per rewritten file (default half the most rows a "
                        "file may hold: 500,000)")
    parser.add_argument("--min-live-fraction", type=float, default=0.8, metavar="F",
                        help="rewrite files whose share of live (not deleted) rows is below F, "
                        "0 to 1 (default 0.8)")


def _on_server(client: ServerClient, kind: str, request: dict) -> dict:
    from quiver.flight_server.cli.sql_shell import cancellable

    # Ctrl-C closes the call; the server sees the client leave and stops the work.
    return cancellable(client, lambda: client.action(kind, request))


def _optimize_remote(client: ServerClient, args: argparse.Namespace) -> int:
    options = {"target_rows": args.target_rows, "min_live_fraction": args.min_live_fraction}
    with _working(f"optimizing {args.table} on {client.where}"):
        r = _on_server(client, "quiver.optimize", {"table": args.table, "options": options})
    if r.get("version") is None:
        sys.stdout.write(f"optimize {args.table}: nothing to rewrite; {r['files_after']} files, "
                         f"version {r['version_after']}\n")
        return 0
    sys.stdout.write(
        f"optimize {args.table}: files {r['files_before']} -> {r['files_after']} "
        f"(rewrote {r['files_removed']} into {r['files_added']}, "
        f"{r['rows_rewritten']:,} rows; dropped {r['tombstones_dropped']:,} deleted rows); "
        f"version {r['version_before']} -> {r['version']}\n")
    return 0


def run_optimize(client: Client, args: argparse.Namespace) -> int:
    if isinstance(client, ServerClient):
        return _optimize_remote(client, args)
    conn = _local(client, "optimize").connection
    table = conn.open_table(args.table)
    before = table.snapshot()
    with _working(f"optimizing {args.table} ({len(before.files)} files)"):
        result = table.optimize(target_rows=args.target_rows,
                                min_live_fraction=args.min_live_fraction)
    after = table.snapshot()
    if result.version is None:
        sys.stdout.write(f"optimize {args.table}: nothing to rewrite; {len(after.files)} files, "
                         f"version {after.version}\n")
        return 0
    sys.stdout.write(
        f"optimize {args.table}: files {len(before.files)} -> {len(after.files)} "
        f"(rewrote {result.files_removed} into {result.files_added}, "
        f"{result.rows_rewritten:,} rows; dropped {result.tombstones_dropped:,} deleted rows); "
        f"version {before.version} -> {result.version}\n")
    return 0


def add_gc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tables", nargs="*", metavar="TABLE",
                        help="tables to collect (default every table under the root)")
    parser.add_argument("--grace-seconds", type=float, default=3600.0, metavar="N",
                        help="leave files younger than N seconds alone, since a reader or "
                        "writer may still be about to use them (default 3600)")
    parser.add_argument("--expire-manifests", action="store_true",
                        help="also delete old table versions beyond --keep-versions (older "
                        "snapshots can then no longer be read)")
    parser.add_argument("--keep-versions", type=int, default=10, metavar="N",
                        help="with --expire-manifests: newest versions to keep (default 10)")


def _gc_line(name: str, r: dict) -> tuple[int, int]:
    removed = r["objects_deleted"] + r["iceberg_deleted"]
    sys.stdout.write(
        f"gc {name}: removed {removed} objects "
        f"({r['bytes_deleted'] / 1e6:,.1f} MB of data; {r['manifests_deleted']} old "
        f"versions, {r['intents_deleted']} abandoned write records, "
        f"{r['iceberg_deleted']} Iceberg metadata files)\n")
    return removed, r["bytes_deleted"]


def _gc_reports(client: Client, args: argparse.Namespace
                ) -> Iterator[tuple[str, dict]]:
    """(table, report) for each table collected; a report is a dict of GcResult's fields."""
    options = {"grace_seconds": args.grace_seconds, "expire_manifests": args.expire_manifests,
               "keep_versions": args.keep_versions}
    if isinstance(client, ServerClient):
        for name in args.tables or [None]:
            with _working(f"collecting garbage of {name or 'every table'} on {client.where}"):
                answer = _on_server(client, "quiver.gc", {"table": name, "options": options})
            for report in answer["tables"]:
                yield report["table"], report
            if answer.get("dropped_purged") is not None:
                yield "", {"dropped_purged": answer["dropped_purged"]}
        return
    conn = _local(client, "gc").connection
    for name in args.tables or conn.list_tables():
        with _working(f"collecting garbage of {name}"):
            result = conn.open_table(name).gc(**options)
        yield name, dataclasses.asdict(result)
    if not args.tables:
        yield "", {"dropped_purged": conn.catalog.purge_dropped()}


def run_gc(client: Client, args: argparse.Namespace) -> int:
    objects = size = tables = 0
    folders = None
    for name, report in _gc_reports(client, args):
        if "dropped_purged" in report:
            folders = report["dropped_purged"]
            continue
        removed, nbytes = _gc_line(name, report)
        objects, size, tables = objects + removed, size + nbytes, tables + 1
    sys.stdout.write(f"gc: removed {objects} objects ({size / 1e6:,.1f} MB) from "
                     f"{tables} table{'s' if tables != 1 else ''}\n")
    if folders is not None:
        sys.stdout.write(f"gc: removed the files of {folders} dropped or replaced "
                         f"table{'s' if folders != 1 else ''}\n")
    return 0
