"""Where the command line's statements go: a storage root opened in this process, or a server.

``open_client`` turns the data options of a ``quiver`` command (``--root`` with
``--storage-option``, or ``--server`` with its credentials and TLS roots) into a
``Client``: ``LocalClient`` runs SQL through ``quiver.flight_server.sql.connect`` on the
root, ``ServerClient`` sends it over Flight SQL with the ADBC driver. Both stream
query results as Arrow record batches and answer the few catalog questions the
commands ask (tables, a table's schema and description, bulk appends).

``one_line`` (from ``messages``) turns whatever a command raised into the line it prints.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from quiver.flight_server.cli.credentials import (
    CredentialError,
    add_credential_arguments,
    credentials_of,
    given_flags,
)
from quiver.flight_server.cli.messages import one_line
from quiver.flight_server.cli.roots import DEFAULT_ROOT, is_default_root, require_root
from quiver.flight_server.clients.flight_client import ConnectionOptions, QuiverClientError, ingest
from quiver.flight_server.sql import SqlConnection, connect
from quiver.root_error import Kind, QuiverError
from quiver.supertable import interrupt as interrupts

log = logging.getLogger(__name__)

__all__ = [
    "Client",
    "ClientError",
    "LocalClient",
    "ServerClient",
    "TableDescription",
    "add_data_arguments",
    "one_line",
    "open_client",
    "quote_ident",
]

class ClientError(QuiverError):
    """The command's data options, or what the root or server answered, do not allow it."""

    kind = Kind.INVALID_INPUT


@dataclass
class TableDescription:
    """What ``quiver describe`` shows; ``files`` and ``version`` are known on a local root only."""

    name: str
    columns: pa.Table  # column_name, data_type, is_nullable, index (as SQL DESCRIBE gives them)
    rows: int
    files: int | None = None
    version: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (keeps its case and any odd characters)."""
    return '"' + name.replace('"', '""') + '"'


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options that say where a command's data lives."""
    group = parser.add_argument_group(
        "where the data lives (a storage root, or a server; not both)")
    group.add_argument("--root", default=None, metavar="URI",
                       help="storage root opened in this process, as for quiver serve: a local "
                       f"folder, file://, memory://, s3://bucket/prefix, gs://… or az://… "
                       f"(default ./{DEFAULT_ROOT})")
    group.add_argument("--create-root", action="store_true",
                       help="create the --root folder when it does not exist (a missing local "
                       "root is refused otherwise)")
    group.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                       help="object store setting for --root, repeatable: aws_endpoint, "
                       "aws_access_key_id, aws_secret_access_key, aws_region, allow_http, …")
    group.add_argument("--server", default=None, metavar="URI",
                       help="send statements to a running server instead: grpc://host:port or "
                       "grpc+tls://host:port")
    add_credential_arguments(group)


def storage_options(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict; a malformed one is a ``ClientError``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ClientError(f"--storage-option wants KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


# -- clients --------------------------------------------------------------------------------


class Client:
    """A place statements run: results stream as Arrow record batches."""

    where: str = ""
    local: bool = False

    def stream(self, text: str) -> pa.RecordBatchReader:
        """Runs one statement; its result (rows, or a DDL/DML result row) batch by batch."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Cancels the statement running now (from another thread), if any."""

    def abandon(self) -> None:
        """Gives up on a statement that did not stop when cancelled: what it holds is
        left alone (never closed under it), and later statements use fresh resources."""

    def tables(self) -> list[str]:
        raise NotImplementedError

    def table_schema(self, name: str) -> pa.Schema | None:
        """The columns of table ``name`` (without the hidden row id), or None if there is none."""
        raise NotImplementedError

    def columns(self, limit: int) -> dict[str, list[str]]:
        """The column names of at most ``limit`` tables (for completion)."""
        out: dict[str, list[str]] = {}
        for name in self.tables()[:limit]:
            schema = self.table_schema(name)
            if schema is not None:
                out[name] = [f.name for f in schema if f.name != "_id"]
        return out

    def describe(self, name: str) -> TableDescription:
        columns = self.stream(f"DESCRIBE {quote_ident(name)}").read_all()
        count = self.stream(f"SELECT count(*) AS n FROM {quote_ident(name)}").read_all()
        return TableDescription(name, columns, int(count.column(0)[0].as_py()))

    def close(self) -> None:
        pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalClient(Client):
    """A storage root opened in this process."""

    local = True

    def __init__(self, connection: SqlConnection) -> None:
        self.connection = connection
        self.where = connection.uri
        self._running: interrupts.Interrupt | None = None

    def stream(self, text: str) -> pa.RecordBatchReader:
        # The statement plans and streams under an interrupt that ``cancel`` fires.
        running = self._running = interrupts.Interrupt()
        with interrupts.scope(running):
            return self.connection.sql_stream(text)

    def cancel(self) -> None:
        running = self._running
        if running is not None:
            running.cancel()

    def tables(self) -> list[str]:
        return self.connection.list_tables()

    def table_schema(self, name: str) -> pa.Schema | None:
        from quiver.supertable.errors import TableNotFoundError

        try:
            return self.connection.open_table(name).schema
        except TableNotFoundError:
            return None

    def describe(self, name: str) -> TableDescription:
        # The table layer knows files and versions, which SQL does not show.
        table = self.connection.open_table(name)
        snap = table.snapshot()
        columns = self.connection.sql(f"DESCRIBE {quote_ident(name)}")
        pending = sum(1 for f in snap.files if not f.indexed and f.live_rows > 0)
        extra = {"files without indexes yet": str(pending)} if pending else {}
        from quiver.supertable.iceberg import metadata_location

        iceberg = metadata_location(table.store, table.prefix)
        if iceberg is not None:
            extra["iceberg metadata"] = iceberg
        return TableDescription(name, columns, snap.count(), files=len(snap.files),
                                version=snap.version, extra=extra)

    def close(self) -> None:
        self.connection.close()


class ServerClient(Client):
    """A Quiver server reached over Flight SQL through the ADBC driver."""

    def __init__(self, uri: str, db_kwargs: dict[str, str],
                 flight: ConnectionOptions | None = None) -> None:
        import adbc_driver_flightsql.dbapi as dbapi

        self.where = uri
        self.flight = flight or ConnectionOptions(uri=uri)
        try:
            self.connection = dbapi.connect(uri, db_kwargs=db_kwargs, autocommit=True)
        except Exception as exc:
            raise ClientError(f"cannot connect to {uri}: {one_line(exc)}") from None
        self._cursor: Any = None
        self._action_client: Any = None
        self._db_kwargs = db_kwargs
        # Connections still in use by abandoned statements: kept referenced, never closed.
        self._abandoned: list[Any] = []

    def abandon(self) -> None:
        import adbc_driver_flightsql.dbapi as dbapi

        self._abandoned.append(self.connection)
        self._cursor = None
        self.connection = dbapi.connect(self.where, db_kwargs=self._db_kwargs,
                                        autocommit=True)

    def cancel(self) -> None:
        action = self._action_client
        if action is not None:
            # Closing the channel cancels the call; the server sees it and stops the work.
            try:
                action.close()
            except Exception as exc:  # it may have ended meanwhile
                log.debug("cancel: %s", exc)
        cursor = self._cursor
        if cursor is not None:
            try:
                cursor.adbc_cancel()
            except Exception as exc:  # the statement may have ended meanwhile
                log.debug("cancel: %s", exc)

    def stream(self, text: str) -> pa.RecordBatchReader:
        cursor = self._cursor = self.connection.cursor()
        try:
            cursor.execute(text)
            reader = cursor.fetch_record_batch()
        except BaseException:
            cursor.close()
            raise
        return _closing_reader(reader, cursor)

    def tables(self) -> list[str]:
        result = self.stream("SHOW TABLES").read_all()
        return sorted(str(v) for v in result.column(0).to_pylist())

    def columns(self, limit: int) -> dict[str, list[str]]:
        # One GetTables call with schemas instead of one per table.
        objects = self.connection.adbc_get_objects(depth="columns").read_all().to_pylist()
        out: dict[str, list[str]] = {}
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    if len(out) >= limit:
                        return out
                    out[table["table_name"]] = [c["column_name"]
                                                for c in table["table_columns"] or []
                                                if c["column_name"] != "_id"]
        return out

    def table_schema(self, name: str) -> pa.Schema | None:
        if name not in self.tables():
            return None
        schema = self.connection.adbc_get_table_schema(name)
        return pa.schema([f for f in schema if f.name != "_id"])

    def ingest(self, name: str, data: pa.RecordBatchReader, *, create: bool,
               batch_id: str | None = None, sent: Any = None) -> int:
        """Streams ``data`` into table ``name`` with Flight SQL bulk ingest; the rows the
        stream holds. With ``batch_id``, the same stream sent again adds no row twice.
        ``sent()`` is called once every row is sent and the server indexes and commits."""
        try:
            return ingest(self.flight, name, data.schema, iter(data), create=create,
                          batch_id=batch_id, on_sent=sent)
        except QuiverClientError as exc:
            raise ClientError(str(exc)) from None

    def action(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        """Runs the server's Flight action ``kind`` with a JSON body; its JSON answer.
        ``cancel`` from another thread ends the call (the server stops the work)."""
        import json

        import pyarrow.flight as flight

        try:
            client, call = self.flight.connect()
        except QuiverClientError as exc:
            raise ClientError(str(exc)) from None
        self._action_client = client
        try:
            results = list(client.do_action(
                flight.Action(kind, json.dumps(request).encode()), call))
        except (flight.FlightError, pa.ArrowException, OSError) as exc:
            raise ClientError(one_line(exc)) from None
        finally:
            self._action_client = None
            client.close()
        if len(results) != 1:
            raise ClientError(f"{kind}: the server answered {len(results)} results, not one")
        try:
            answer = json.loads(results[0].body.to_pybytes())
        except ValueError:
            raise ClientError(f"{kind}: the server's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise ClientError(f"{kind}: the server's answer is not a JSON object")
        return answer

    def close(self) -> None:
        self.connection.close()


def _closing_reader(reader: pa.RecordBatchReader, cursor: Any) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            cursor.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _server_kwargs(args: argparse.Namespace) -> dict[str, str]:
    import adbc_driver_flightsql as flightsql

    try:
        creds = credentials_of(args)
    except CredentialError as exc:
        raise ClientError(str(exc)) from None
    kwargs: dict[str, str] = {}
    if creds.token:
        kwargs[flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {creds.token}"
    if creds.username is not None:
        kwargs["username"], kwargs["password"] = creds.username, creds.password or ""
    if args.tls_root_certs is not None:
        if not args.server.startswith("grpc+tls://"):
            raise ClientError("--tls-root-certs needs a grpc+tls:// --server address")
        try:
            pem = args.tls_root_certs.read_text()
        except OSError as exc:
            raise ClientError(f"cannot read --tls-root-certs {str(args.tls_root_certs)!r}: "
                              f"{exc.strerror or exc}") from None
        kwargs[flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = pem
    return kwargs


def _flight_options(uri: str, kwargs: dict[str, str]) -> ConnectionOptions:
    """The same server, credentials and trusted certificates for plain Flight calls."""
    import adbc_driver_flightsql as flightsql

    header = kwargs.get(flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value, "")
    pem = kwargs.get(flightsql.DatabaseOptions.TLS_ROOT_CERTS.value)
    return ConnectionOptions(
        uri=uri, username=kwargs.get("username"), password=kwargs.get("password"),
        token=header.removeprefix("Bearer ") or None,
        tls_root_certs=pem.encode() if pem is not None else None)


def open_client(args: argparse.Namespace) -> Client:
    """The client the data options in ``args`` (see ``add_data_arguments``) describe."""
    if args.server:
        if args.root is not None or args.storage_option or args.create_root:
            raise ClientError("give either --root (with --storage-option) or --server, not both")
        if not args.server.startswith(("grpc://", "grpc+tcp://", "grpc+tls://")):
            raise ClientError(f"--server wants grpc://host:port or grpc+tls://host:port, "
                              f"got {args.server!r}")
        kwargs = _server_kwargs(args)
        return ServerClient(args.server, kwargs, _flight_options(args.server, kwargs))
    flags = given_flags(args)
    if flags:
        raise ClientError(f"{flags[0]} goes with --server")
    # Passed on as connect's storage options, none of its named parameters.
    options: dict[str, Any] = storage_options(args.storage_option)
    root = args.root or DEFAULT_ROOT
    require_root(root, create=args.create_root or is_default_root(args.root))
    return LocalClient(connect(root, **options))
