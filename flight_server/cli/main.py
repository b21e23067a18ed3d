"""The ``quiver`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

import pyarrow as pa

from quiver.flight_server.cli.messages import one_line
from quiver.root_error import QuiverError


def _version() -> str:
    """The installed distribution's version (pyproject's ``version``), as ``quiver.__version__``
    reports it."""
    try:
        return metadata.version("quiver")
    except metadata.PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quiver",
        description="Quiver: SQL, BM25 and vector search over Parquet superfiles.",
    )
    parser.add_argument("--version", action="version", version=f"quiver {_version()}",
                        help="print the installed Quiver version and exit")
    parser.add_argument("--log-level", default=None,
                        help="logging level: DEBUG, INFO, WARNING or ERROR (default WARNING; "
                        "INFO for serve)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="write one superfile, reopen it lazily and run searches on it",
        description="Write one superfile from the project's data (or generated data when the "
        "data folder is absent), reopen it lazily from disk and run BM25, vector, filtered "
        "vector and exact-match queries, reporting the reads each one costs.",
    )
    demo.add_argument("--out", type=Path, default=Path("data"),
                      help="folder to write the demo superfile into (default ./data)")
    demo.add_argument("--rows", type=int, default=20000,
                      help="number of rows to write (default 20000)")
    _serve_parser(sub)
    _data_parsers(sub)
    return parser


def _data_parsers(sub: argparse._SubParsersAction) -> None:
    from quiver.flight_server.cli import admin as cli_admin
    from quiver.flight_server.cli import ingest as cli_ingest
    from quiver.flight_server.cli import sql_shell as cli_sql
    from quiver.flight_server.cli.client import add_data_arguments

    commands = [
        ("ingest", cli_ingest.add_arguments,
         "stream Parquet, CSV or JSON-lines files into a table",
         "Append files to a table, streaming each in record batches with a progress bar on "
         "a terminal and a summary line at the end. On a storage root a rerun skips the files "
         "already ingested (each file is known by its path relative to the argument that "
         "named it, its size and modification time) and resumes a file it stopped in. "
         "Through --server each file carries the same identity to the server, so a rerun "
         "sends the files again but adds no row twice."),
        ("sql", cli_sql.add_arguments,
         "run SQL: one statement, statements from stdin, or an interactive prompt",
         "Run SQL statements and print their results. With a query argument, run it; "
         "otherwise read ';'-separated statements from stdin, or, when stdin is a "
         "terminal, prompt for them (history in ~/.quiver_history; a statement ends at ';'; "
         "Tab completes keywords, tables and columns; Ctrl-C cancels the running statement; "
         "\\d, \\d NAME, \\dt, \\timing, \\? and \\q are meta-commands). "
         "An error prints one line and exits 1."),
        ("tables", cli_admin.add_tables_arguments, "list the tables, one name per line",
         "List the tables under the root or on the server, one name per line."),
        ("describe", cli_admin.add_describe_arguments,
         "show a table's columns, types, indexes and size",
         "Show a table's columns with their types and indexes, its row count and, on a "
         "storage root, its file count and version."),
        ("optimize", cli_admin.add_optimize_arguments,
         "compact a table's small and mostly-deleted files",
         "Rewrite a table's small files and files with many deleted rows into fewer, "
         "larger ones, then report the files before and after. Runs on a storage root "
         "(--root) or on a server (--server), as its quiver.optimize action."),
        ("gc", cli_admin.add_gc_arguments,
         "delete files no table version needs any more",
         "Delete the files of tables that no recent version references (left by optimize, "
         "deletes, updates and interrupted writes), and, when no table is named, the files "
         "of dropped or replaced tables past their grace period; report what was removed. "
         "Runs on a storage root (--root) or on a server (--server), as its quiver.gc "
         "action; a server keeps files younger than 60 s whatever --grace-seconds says."),
    ]
    for name, add, short, long in commands:
        parser = sub.add_parser(name, help=short, description=long)
        add(parser)
        add_data_arguments(parser)
    from quiver.flight_server.cli import iceberg as cli_iceberg

    iceberg = sub.add_parser(
        "iceberg", help="list the tables in an Iceberg catalog (storage root only)",
        description="Work with Iceberg catalogs. Every table already carries Iceberg metadata "
        "in its folder; these commands name it in a catalog.")
    actions = iceberg.add_subparsers(dest="iceberg_command", required=True)
    register = actions.add_parser(
        "register", help="register tables in an Iceberg catalog (SQLite, PostgreSQL or "
        "REST), or update them",
        description="Register each table (every table under the root by default) in an "
        "Iceberg catalog, a SQL catalog kept in SQLite or PostgreSQL or a REST catalog, at its "
        "newest "
        "Iceberg metadata; a table the catalog already lists is moved forward to it in one "
        "update. Rerunning it is harmless. Runs on a storage root (--root).")
    cli_iceberg.add_register_arguments(register)
    add_data_arguments(register)
    sub.add_parser("health", add_help=False,
                   help="check that a server answers Flight SQL (quiver health --help)")


_DATA_COMMANDS = ("ingest", "sql", "tables", "describe", "optimize", "gc", "iceberg")


def _run_data_command(args: argparse.Namespace) -> int:
    from quiver.flight_server.cli import admin as cli_admin
    from quiver.flight_server.cli import iceberg as cli_iceberg
    from quiver.flight_server.cli import ingest as cli_ingest
    from quiver.flight_server.cli import sql_shell as cli_sql
    from quiver.flight_server.cli.client import open_client
    from quiver.flight_server.cli.roots import RootMissingError

    runners = {"ingest": cli_ingest.run, "sql": cli_sql.run, "tables": cli_admin.run_tables,
               "describe": cli_admin.run_describe, "optimize": cli_admin.run_optimize,
               "gc": cli_admin.run_gc, "iceberg": cli_iceberg.run_register}
    try:
        import adbc_driver_manager

        remote_errors: tuple[type[BaseException], ...] = (adbc_driver_manager.Error,)
    except ImportError:
        remote_errors = ()
    # Every error of Quiver's own is a QuiverError; the rest come from the libraries below.
    known = (QuiverError, pa.ArrowException, OSError, ValueError, *remote_errors)
    try:
        with open_client(args) as client:
            return runners[args.command](client, args)
    except RootMissingError as exc:
        print(f"quiver: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): nothing left to say to it.
        sys.stderr.close()
        return 1
    except KeyboardInterrupt:
        print("quiver: interrupted", file=sys.stderr)
        # The cancelled statement's native threads may still be winding down; leaving
        # without the interpreter's teardown keeps them from touching it (every write is
        # one atomic commit, so nothing is left half done).
        from quiver.flight_server.service import log_setup
        log_setup.stop()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except known as exc:
        print(f"quiver: error: {one_line(exc)}", file=sys.stderr)
        return 1


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the Flight SQL server over a storage root",
        description="Serve the tables under a storage root over Arrow Flight SQL (ADBC, JDBC, "
        "pyarrow.flight clients) until SIGTERM or Ctrl-C. Listening on a non-loopback address "
        "needs authentication (--user, --users-file, --token-file or --token-env) unless "
        "--allow-unauthenticated is given.",
    )
    serve.add_argument("--root", default=None,
                       help="storage root: a local folder, file://, memory://, s3://bucket/prefix,"
                       " gs://… or az://… (default ./data, created when missing)")
    serve.add_argument("--create-root", action="store_true",
                       help="create the --root folder when it does not exist (a missing local "
                       "root is refused otherwise)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=50051,
                       help="port to listen on; 0 picks a free one (default 50051)")
    serve.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                       help="object store setting, repeatable: aws_endpoint, aws_access_key_id, "
                       "aws_secret_access_key, aws_region, allow_http, …")
    serve.add_argument("--max-concurrent-statements", "--workers", type=int, default=None,
                       dest="max_concurrent_statements", metavar="N",
                       help="most statements planning or running at once; others wait in "
                       "line up to 10 s, then get RESOURCE_EXHAUSTED (default 16)")
    serve.add_argument("--statement-timeout", type=float, default=None, metavar="SECONDS",
                       help="time limit of a statement, DoGet streaming included; a client's "
                       "shorter deadline wins; 0 for none (default 300)")
    serve.add_argument("--memory-limit", type=int, default=None, metavar="BYTES",
                       help="memory that the statements' sorts, joins and aggregates share; "
                       "past it they spill to disk or fail with RESOURCE_EXHAUSTED (default: "
                       "$QUIVER_MEMORY_LIMIT or a quarter of the machine's memory)")
    serve.add_argument("--spill-dir", default=None, metavar="DIR",
                       help="where statements spill (default: the system's temporary folder)")
    serve.add_argument("--max-search-k", type=int, default=None, metavar="K",
                       help="most results one search function call may return (default "
                       "100000; a search never returns more than its table's rows)")
    serve.add_argument("--max-statement-length", type=int, default=None, metavar="CHARS",
                       help="longest statement text read, in characters (default 4194304); "
                       "longer ones get RESOURCE_EXHAUSTED (bulk rows go through an ingest)")
    serve.add_argument("--max-message-bytes", type=int, default=None, metavar="BYTES",
                       help="largest message a client may send, e.g. one DoPut batch "
                       "(default 256 MiB); bigger ones get RESOURCE_EXHAUSTED")
    serve.add_argument("--max-put-bytes", type=int, default=None, metavar="BYTES",
                       help="most one DoPut stream (an ingest, a bulk append) may carry, "
                       "its rows counted as they decode (default 64 GiB); a bigger stream "
                       "gets RESOURCE_EXHAUSTED and stores nothing")
    serve.add_argument("--shutdown-grace", type=float, default=None, metavar="SECONDS",
                       help="on SIGTERM or Ctrl-C: running statements are cancelled at once, "
                       "other calls get this long to finish, then the process exits "
                       "(default 10)")
    serve.add_argument("--memory-cache", type=int, default=None, metavar="BYTES",
                       help="decoded rows of tables kept in memory for scans, at most this "
                       "many bytes; 0 reads Parquet every time (default: "
                       "$QUIVER_MEMORY_CACHE_BYTES or 1 GiB)")
    serve.add_argument("--max-staleness", type=float, default=None, metavar="SECONDS",
                       help="a statement may read a table version checked this many seconds "
                       "ago instead of asking storage again; writes through this server "
                       "are seen at once either way (default: 0.2 on object storage, where "
                       "each check is a request, 0 on local disk; 0 always asks)")
    serve.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="local disk cache of superfiles read from a remote root "
                       "(default: $QUIVER_CACHE_DIR or a per-user temporary folder)")
    serve.add_argument("--cache-bytes", type=int, default=None, metavar="BYTES",
                       help="most bytes the disk cache holds; 0 turns it off (default: "
                       "up to 4 GiB, at most half the free disk)")
    serve.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                       help="a user allowed to log in with basic authentication, repeatable")
    serve.add_argument("--users-file", type=Path, default=None,
                       help="file of users, one NAME:PASSWORD per line")
    serve.add_argument("--token-file", type=Path, default=None,
                       help="file of static bearer tokens, one per line")
    serve.add_argument("--token-env", default=None, metavar="VAR",
                       help="environment variable holding a static bearer token")
    serve.add_argument("--tls-cert", type=Path, default=None,
                       help="PEM certificate chain for TLS (needs --tls-key)")
    serve.add_argument("--tls-key", type=Path, default=None,
                       help="PEM private key for TLS (needs --tls-cert)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="allow a non-loopback --host without any authentication")
    serve.add_argument("--advertise", action="append", default=[], metavar="URI",
                       help="location of a server sharing this root (this one included), "
                       "repeatable, e.g. grpc://host:port; a query's endpoints are spread "
                       "over them (default: this server's own address)")
    serve.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics, on the "
                       "same host as the server (default 0: off)")
    serve.add_argument("--log-level", dest="serve_log_level", default=None,
                       metavar="LEVEL",
                       help="logging level: DEBUG, INFO, WARNING or ERROR (default INFO: one "
                       "line per statement; DEBUG adds metadata calls and query planning)")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="log lines as text, or one JSON object per line (default text)")
    serve.add_argument("--iceberg-catalog", default=None, metavar="URI",
                       help="Iceberg catalog in which every table this server commits to is "
                       "registered at its newest metadata: a SQL catalog in SQLite "
                       "(sqlite:////path.db) or PostgreSQL (postgresql://user@host:port/db; "
                       "the password from $PGPASSWORD or ~/.pgpass) or a REST catalog "
                       "(rest+http://host:port/path) "
                       "(a failure is logged; the write still succeeds)")
    serve.add_argument("--iceberg-namespace", default="quiver", metavar="NS",
                       help="namespace of the tables in --iceberg-catalog (default quiver)")
    serve.add_argument("--iceberg-catalog-name", default="default", metavar="NAME",
                       help="name of --iceberg-catalog as its readers open it (default default)")
    serve.add_argument("--iceberg-catalog-warehouse", default=None, metavar="NAME",
                       help="REST --iceberg-catalog: the warehouse sent with GET /v1/config")
    serve.add_argument("--iceberg-catalog-token", default=None, metavar="TOKEN",
                       help="REST --iceberg-catalog: bearer token (default "
                       "$QUIVER_ICEBERG_CATALOG_TOKEN; prefer the variable: a flag shows in the "
                       "process list)")
    serve.add_argument("--iceberg-catalog-credential", default=None, metavar="ID:SECRET",
                       help="REST --iceberg-catalog: OAuth2 client credential exchanged for a "
                       "token (default $QUIVER_ICEBERG_CATALOG_CREDENTIAL)")
    serve.add_argument("--iceberg-source", action="append", default=[],
                       metavar="NAME=CATALOG_URI",
                       help="let statements read the tables of this Iceberg catalog with "
                       "iceberg_table('NAME', 'namespace.table'), e.g. to CREATE TABLE ... AS "
                       "SELECT from a lake table (repeatable; a catalog URI as for "
                       "--iceberg-catalog; only files under each table's own location are "
                       "read; default: none)")
    serve.add_argument("--iceberg-source-option", action="append", default=[],
                       metavar="NAME.SETTING=VALUE",
                       help="a setting of --iceberg-source NAME: catalog-name (default "
                       "default), warehouse, token or credential (REST; prefer "
                       "$QUIVER_ICEBERG_SOURCE_<NAME>_TOKEN / _CREDENTIAL: a flag shows in "
                       "the process list)")
    _security_arguments(serve)
    _write_arguments(serve)


def _write_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--write-log-rows", type=int, default=1000, metavar="N",
                       help="a commit of at most N rows is acknowledged once written to the "
                       "table's write log (a small file without indexes, searchable at once) "
                       "and folded into an indexed superfile later; 0 indexes every commit "
                       "at once (default 1000)")
    serve.add_argument("--fold-age", type=float, default=1.0, metavar="SECONDS",
                       help="the write log is folded at the latest when its oldest file is "
                       "this old (also at 50000 rows, 64 MiB or 64 files; default 1)")
    serve.add_argument("--compaction", action=argparse.BooleanOptionalAction, default=True,
                       help="merge small superfiles in the background, size-tiered while "
                       "writes go on and into one once a table is idle (default on)")
    serve.add_argument("--max-concurrent-appends", type=int, default=None, metavar="N",
                       help="INSERT ... VALUES statements running at once, apart from "
                       "--max-concurrent-statements: they mostly wait for a shared commit "
                       "(default 64)")
    serve.add_argument("--group-commit-window", type=float, default=0.0, metavar="SECONDS",
                       help="an append waits this long for others to share its commit "
                       "(default 0: those queued meanwhile join)")


def _security_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--secret-file", type=Path, default=None, metavar="PATH",
                       help="file holding the secret (32 bytes or more) that signs tickets "
                       "and bearer tokens; give every server of a root the same one "
                       "(default: $QUIVER_SECRET_FILE, else a secret kept in the root at "
                       "_system/server.key: whoever can read the root can then forge them)")
    serve.add_argument("--ticket-ttl", type=float, default=24 * 3600.0, metavar="SECONDS",
                       help="how long a query's tickets stay valid (default 86400)")
    serve.add_argument("--token-ttl", type=float, default=8 * 3600.0, metavar="SECONDS",
                       help="how long a bearer token issued for a password stays valid; "
                       "calls in its second half get a fresh one (default 28800)")
    serve.add_argument("--login-free-failures", type=int, default=5, metavar="N",
                       help="failed logins from one address before each further one blocks "
                       "it for a doubling delay (default 5)")
    serve.add_argument("--login-max-delay", type=float, default=60.0, metavar="SECONDS",
                       help="longest wait after failed logins (default 60)")
    serve.add_argument("--prepared-per-session", type=int, default=256, metavar="N",
                       help="most prepared statements one connection keeps; past it, its "
                       "own least recently used one is dropped (default 256)")


def _storage_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option wants KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def _follow_catalog(args: argparse.Namespace) -> None:
    from quiver.supertable import iceberg
    from quiver.supertable.iceberg.catalog import CatalogError, follower, open_catalog

    try:
        catalog = open_catalog(args.iceberg_catalog, args.iceberg_catalog_name,
                               token=args.iceberg_catalog_token,
                               credential=args.iceberg_catalog_credential,
                               warehouse=args.iceberg_catalog_warehouse)
    except CatalogError as exc:
        raise ValueError(str(exc)) from None
    iceberg.add_listener(follower(catalog, args.iceberg_namespace))


def _run_serve(args: argparse.Namespace) -> int:
    from quiver.flight_server.service.log_setup import configure
    from quiver.flight_server.service.serve import ServeError, serve

    level = (args.serve_log_level or args.log_level or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        print(f"quiver: error: unknown log level {level!r}", file=sys.stderr)
        return 2
    configure(level, args.log_format)
    if args.metrics_port < 0 or args.metrics_port > 65535:
        print("quiver: error: --metrics-port must be 0-65535", file=sys.stderr)
        return 2
    from quiver.flight_server.cli.roots import (
        DEFAULT_ROOT,
        RootMissingError,
        is_default_root,
        require_root,
    )

    try:
        # The default ./data may be made, so that a fresh clone's first command works.
        require_root(args.root or DEFAULT_ROOT,
                     create=args.create_root or is_default_root(args.root))
    except (RootMissingError, OSError) as exc:
        print(f"quiver: error: {exc}", file=sys.stderr)
        return 2
    args.root = args.root or DEFAULT_ROOT
    try:
        storage = _storage_options(args.storage_option)
        from quiver.flight_server.sql.lake import parse_sources

        sources = parse_sources(args.iceberg_source, args.iceberg_source_option)
        if args.iceberg_catalog:
            _follow_catalog(args)
        auth = None
        if args.user or args.users_file or args.token_file or args.token_env:
            from quiver.flight_server.service.auth import load_auth

            auth = load_auth(users=tuple(args.user), users_file=args.users_file,
                             token_file=args.token_file, token_env=args.token_env)
        serve(args.root, host=args.host, port=args.port, storage_options=storage, auth=auth,
              tls_cert=args.tls_cert, tls_key=args.tls_key,
              allow_unauthenticated=args.allow_unauthenticated,
              workers=args.max_concurrent_statements,
              advertise=args.advertise or None, memory_cache_bytes=args.memory_cache,
              max_staleness_s=args.max_staleness, cache_dir=args.cache_dir,
              cache_bytes=args.cache_bytes, statement_timeout_s=args.statement_timeout,
              memory_limit=args.memory_limit, spill_dir=args.spill_dir,
              max_search_k=args.max_search_k, max_message_bytes=args.max_message_bytes,
              max_put_bytes=args.max_put_bytes,
              max_statement_length=args.max_statement_length,
              shutdown_grace_s=args.shutdown_grace, metrics_port=args.metrics_port or None,
              secret_file=args.secret_file,
              ticket_ttl=args.ticket_ttl, token_ttl=args.token_ttl,
              login_free_failures=args.login_free_failures,
              login_max_delay=args.login_max_delay,
              prepared_per_session=args.prepared_per_session,
              write_options={"write_log_rows": args.write_log_rows,
                             "fold_age_s": args.fold_age, "compaction": args.compaction,
                             "group_commit_window_s": args.group_commit_window},
              max_concurrent_appends=args.max_concurrent_appends,
              iceberg_sources=sources)
    except (ServeError, ValueError) as exc:
        print(f"quiver: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (QuiverError, OSError, pa.ArrowException) as exc:
        print(f"quiver: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C before a command took charge of it (while starting up, say).
        print("quiver: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = _parser().parse_known_args(argv)
    if args.command == "health":
        from quiver.flight_server.cli.health import main as health_main

        return health_main(argv[argv.index("health") + 1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=(args.log_level or "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            from quiver.flight_server.cli.demo import run_demo

            run_demo(args.out, rows=args.rows)
        elif args.command == "serve":
            return _run_serve(args)
        elif args.command in _DATA_COMMANDS:
            return _run_data_command(args)
    except QuiverError as exc:
        print(f"quiver: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
