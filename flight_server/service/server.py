"""The Flight SQL server: handlers whose calls dispatch on the packed command, served over gRPC.

``FlightHandlers`` holds the logic of every call (pyarrow.flight objects in and out);
``QuiverFlightServer`` serves them with ``quiver.flight_server.service.transport`` (grpcio), which
does the wire formats, authentication and error status codes.

Flight SQL commands arrive packed in ``google.protobuf.Any``: in descriptors
(GetFlightInfo, GetSchema, DoPut), in tickets (DoGet) and in action bodies.

Statements are read by the SQL layer only (``quiver.flight_server.sql.analyse``): its
reading says whether a statement is a query, DDL or DML and whether it is a plain scan,
and that one reading serves the schema, the split and the run.

- Queries: GetFlightInfo plans the statement (the schema, not the rows) and hands
  back one endpoint whose ticket is a self-contained statement handle
  (``quiver.flight_server.service.handles``); DoGet runs it and streams the rows. A plain
  scan of one table (``SELECT <columns or *> FROM t [WHERE <row filters>]``, nothing that combines
  rows) is pinned to the table's current version and split instead: one endpoint
  per group of its live superfiles (groups of about equal rows, at least
  ``min_endpoint_rows`` each, at most ``MAX_ENDPOINTS``), so a client reads the parts
  in parallel; ``total_records`` is then the table's live rows when there is no
  WHERE. Several servers can share one root: the endpoints of a split result are
  dealt round-robin over the ``advertise`` locations (one each; without advertised
  locations, and for single-endpoint results, the location list is empty and the
  client reads over the connection it has). Tickets are signed with the root's key
  (``handles.TicketSigner``), so a client can neither edit nor make one. DDL or DML sent
  as a query runs once, when its FlightInfo is made, and the ticket carries its
  one-row result. ``total_records`` is -1 for queries (not known before running);
  for DML it is the statement's row count (what ADBC reports as ``rowcount``), -1
  for DDL.
- Updates: DoPut of ``CommandStatementUpdate`` / ``CommandPreparedStatementUpdate``
  answers ``DoPutUpdateResult`` in the put result's metadata. A prepared update
  runs once per parameter row and reports the summed count.
- Prepared statements belong to the session (user and connection) that made them
  (``handles.PreparedRegistry``); another session gets NOT_FOUND.
- Prepared queries: DoPut binds the parameter rows (the last bound set is kept)
  and answers ``DoPutPreparedStatementResult`` with the same handle. Several
  parameter rows run the query once per row and the results are concatenated in
  row order.
- Bulk ingest and plain DoPut: ``quiver.flight_server.service.ingest``.
- Metadata commands: ``quiver.flight_server.service.metadata``; their ticket is the command itself.
- Plain Flight: a ticket that is not a packed command is UTF-8 SQL; ListFlights
  lists the tables, each with a ticket that reads the whole table.
- Cancellation: ``CancelFlightInfo`` and the older ``CancelQuery`` action flag
  the tickets of the FlightInfo; a running DoGet stops with CANCELLED at its
  next batch, and a stream not yet started fails as soon as it starts.

Results stream in batches of at most ``MAX_BATCH_ROWS`` rows / ``MAX_BATCH_BYTES``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from quiver.flight_server.service import handles, ingest, keys, maintenance, metadata
from quiver.flight_server.service import statement_log as stmtlog
from quiver.flight_server.service.auth import Authenticator
from quiver.flight_server.service.errors import (
    InvalidArgument,
    NotFound,
    NotImplementedCommand,
    ResourceExhausted,
)
from quiver.flight_server.service.limits import Admission, Limits, Slot
from quiver.flight_server.service.transport import (
    DEFAULT_THREADS,
    MAX_MESSAGE_BYTES,
    CallContext,
    FlightTransport,
    PutReader,
)
from quiver.flight_server.service.transport import PutWriter as MetadataWriter
from quiver.flight_server.service.wire import Endpoint, Info, path_descriptor
from quiver.flight_server.sql import Analysis, SqlConnection, hide_literals, looks_like_append
from quiver.proto import MESSAGES, PACKAGE, flight_pb2, flight_sql_pb2, pack, unpack
from quiver.supertable import interrupt as interrupts
from quiver.supertable.errors import TableNotFoundError

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 65_536
MAX_BATCH_BYTES = 8 << 20
# Most endpoints one scan is split into, and the fewest live rows worth an endpoint.
MAX_ENDPOINTS = 16
MIN_ENDPOINT_ROWS = 65_536

ACTIONS: dict[str, str] = {
    "CreatePreparedStatement": "Prepare a SQL statement; returns its handle and schemas.",
    "ClosePreparedStatement": "Release a prepared statement.",
    "CancelFlightInfo": "Cancel the execution a FlightInfo describes.",
    "CancelQuery": "Cancel a query (older Flight SQL form of CancelFlightInfo).",
    **maintenance.ACTIONS,
}
# Actions that free what others hold: they must get through a busy server.
_NEVER_QUEUED = frozenset({"action CancelFlightInfo", "action CancelQuery",
                           "action ClosePreparedStatement"})
_TRANSACTION_ACTIONS = ("BeginTransaction", "EndTransaction", "BeginSavepoint",
                        "EndSavepoint")
_METADATA_COMMANDS = (
    "CommandGetCatalogs", "CommandGetDbSchemas", "CommandGetTables", "CommandGetTableTypes",
    "CommandGetSqlInfo", "CommandGetXdbcTypeInfo", "CommandGetPrimaryKeys",
    "CommandGetImportedKeys", "CommandGetExportedKeys", "CommandGetCrossReference",
)
_SQL_PREFIX = f"type.googleapis.com/{PACKAGE}."


def _command_name(msg: Message) -> str:
    return msg.DESCRIPTOR.name


def _opt(msg: Message, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


# Descriptor commands come again and again (a prepared statement's, each time it runs):
# short ones are kept as read, at most this many. Messages read are never changed.
_REMEMBERED_COMMANDS = 1024
_REMEMBERED_COMMAND_BYTES = 512
_remembered: dict[bytes, Message | None] = {}
_UNREAD = object()


def _remembered_command(data: bytes) -> Message | None:
    """``_parse_command(data)``, read once for a short command sent again."""
    if len(data) > _REMEMBERED_COMMAND_BYTES:
        return _parse_command(data)
    msg = _remembered.get(data, _UNREAD)
    if msg is _UNREAD:
        msg = _parse_command(data)
        if len(_remembered) >= _REMEMBERED_COMMANDS:
            _remembered.clear()
        _remembered[data] = msg
    return msg


def _parse_command(data: bytes) -> Message | None:
    """The Flight SQL message in ``data``; None when the bytes are not a packed Flight SQL
    command (plain SQL tickets); NOT_IMPLEMENTED for a packed message of another kind."""
    envelope = any_pb2.Any()
    try:
        envelope.ParseFromString(bytes(data))
    except DecodeError:
        return None
    url = envelope.type_url
    if not url:
        return None
    if not url.startswith(_SQL_PREFIX) and "/" not in url:
        return None
    cls = MESSAGES.get(url.rpartition("/")[2])
    if cls is not None:
        # The envelope is read once; the body parses as its class (as ``unpack`` does).
        msg = cls()
        try:
            msg.ParseFromString(envelope.value)
            return msg
        except DecodeError:
            pass
    try:
        return unpack(data)
    except ValueError:
        name = url.rpartition("/")[2]
        raise NotImplementedCommand(f"unsupported command {name}") from None


def _split(batch: pa.RecordBatch, rows: int = MAX_BATCH_ROWS,
           nbytes: int = MAX_BATCH_BYTES) -> list[pa.RecordBatch]:
    """``batch`` as batches of at most ``rows`` rows and about ``nbytes`` bytes (none
    for an empty batch)."""
    n = batch.num_rows
    if n == 0:
        return []
    # The buffers' whole size is read without leaving the interpreter lock; the exact
    # size (of the ranges a slice references) only when it may matter.
    size = batch.get_total_buffer_size()
    if size > nbytes:
        size = batch.nbytes
    step = rows
    if size > nbytes:
        step = max(1, min(rows, n * nbytes // size))
    if n <= step:
        return [batch]
    return [batch.slice(start, step) for start in range(0, n, step)]


def rechunk(batches: Iterator[pa.RecordBatch], rows: int = MAX_BATCH_ROWS,
            nbytes: int = MAX_BATCH_BYTES) -> Iterator[pa.RecordBatch]:
    """The same rows in batches of at most ``rows`` rows and about ``nbytes`` bytes."""
    for batch in batches:
        yield from _split(batch, rows, nbytes)


class _BatchStream:
    """The batches of one running query; checks for cancellation before each batch and
    releases the query when exhausted, failed or closed (even if never started)."""

    def __init__(self, owner: FlightHandlers, key: bytes, reader: pa.RecordBatchReader,
                 cancel: handles.CancelFlag, context: CallContext) -> None:
        self._owner = owner
        self._key = key
        self._reader = reader
        # Slices of the last batch read still to send, last one first.
        self._pending: list[pa.RecordBatch] = []
        self._cancel = cancel
        self._context = context
        self._closed = False
        self._slot: Slot | None = None
        owner._calls.add(context)

    def hold(self, slot: Slot) -> None:
        """Keeps the statement's admission slot until the stream ends."""
        self._slot = slot
        if self._closed:
            slot.release()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._closed:
            raise StopIteration
        try:
            # The reader is read here, not through generators: a stream of one small
            # batch costs a few calls.
            pending = self._pending
            if pending:
                batch = pending.pop()
            else:
                while True:
                    parts = _split(self._reader.read_next_batch())  # StopIteration at end
                    if parts:
                        break
                batch = parts[0]
                if len(parts) > 1:
                    parts.reverse()
                    batch = parts.pop()
                    self._pending = parts
            if self._cancel.is_set():
                raise flight.FlightCancelledError("the query was cancelled")
            if self._context.is_cancelled():
                raise StopIteration
        except BaseException:
            self.close()
            raise
        return batch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending = []
        self._owner._calls.discard(self._context)
        try:
            self._reader.close()
        finally:
            self._owner.streams.finish(self._key, self._cancel)
            if self._slot is not None:
                self._slot.release()


class FlightHandlers:
    """Flight SQL (and plain Flight) over the tables of one storage root: the logic of
    every call, independent of how calls arrive."""

    def __init__(self, conn: SqlConnection, *, workers: int | None = None,
                 prepared: handles.PreparedRegistry | None = None,
                 advertise: Sequence[str] | None = None,
                 min_endpoint_rows: int = MIN_ENDPOINT_ROWS,
                 limits: Limits | None = None,
                 key: keys.ServerKey | None = None,
                 ticket_ttl: float = handles.DEFAULT_TICKET_TTL) -> None:
        """``limits`` bounds each statement's time and how many run at once
        (``workers``, when given, is the number at once); ``key`` signs tickets and
        prepared handles (the root's stored secret when not given)."""
        self.conn = conn
        # Tickets and prepared handles are signed with the key of the root (the secret
        # stored in it unless one is given), so any server on the root takes them.
        self.key = key or keys.root_secret(conn.catalog.store)
        self.tickets = handles.TicketSigner(self.key.derive("tickets"), ticket_ttl)
        self.advertise = [flight.Location(uri).uri.decode() for uri in (advertise or [])]
        self.min_endpoint_rows = max(1, min_endpoint_rows)
        self._deal = itertools.count()
        self.prepared = prepared if prepared is not None else handles.PreparedRegistry(
            key=self.key.derive("prepared statements"))
        self.streams = handles.RunningStreams()
        # The calls of running DoGet streams (set operations are atomic under the GIL).
        self._calls: set[CallContext] = set()
        limits = limits or Limits()
        if workers:
            limits = dataclasses.replace(limits, max_concurrent=workers)
        self.limits = limits
        # The most parameter bytes one DoPut may bind (they are held whole).
        self.max_bind_bytes = MAX_MESSAGE_BYTES
        self.admission = Admission(limits)
        self.append_admission = Admission(limits, capacity=limits.max_concurrent_appends)

    def cancel_streams(self) -> int:
        """Cancels every running statement and DoGet, also those waiting for their client
        to read (a flag alone is seen only at the next batch); how many were cancelled."""
        cancelled = sum(a.cancel_all("stopped: the server is shutting down")
                        for a in (self.admission, self.append_admission))
        cancelled = max(cancelled, self.streams.cancel_all())
        for call in list(self._calls):
            call.cancel()
        return cancelled

    # -- plumbing ----------------------------------------------------------------------------

    def _run(self, what: str, context: CallContext | None, fn: Callable[..., Any],
             *args: Any) -> Any:
        """Runs one unit of work once admitted, under an interrupt carrying the statement
        time limit (shortened by the client's deadline) and the client's presence. A
        DoGet stream keeps its slot until it ends. Requests that free resources (cancels,
        closing a prepared statement) never wait for a slot."""
        if what in _NEVER_QUEUED:
            return fn(*args)
        interrupt = interrupts.Interrupt(self.limits.statement_timeout_s,
                                         also=context.is_cancelled if context else None)
        deadline = context.deadline() if context is not None else None
        if deadline is not None:
            interrupt.shorten(deadline)
        slot = self._admission_of(what, args).enter(interrupt)
        handed = False
        try:
            with interrupts.scope(interrupt):
                result = fn(*args)
            if isinstance(result, tuple) and len(result) == 2 and \
                    isinstance(result[1], _BatchStream):
                result[1].hold(slot)
                handed = True
            return result
        finally:
            if not handed:
                slot.release()

    def _admission_of(self, what: str, args: tuple[Any, ...]) -> Admission:
        """The appends class for an ``INSERT … VALUES`` statement, else the common one."""
        descriptor = args[0] if what == "GetFlightInfo" else (
            args[1] if what == "DoPut" else None)
        if (not isinstance(descriptor, flight.FlightDescriptor)
                or descriptor.descriptor_type != flight.DescriptorType.CMD):
            return self.admission
        msg = _remembered_command(descriptor.command)
        if (msg is not None
                and _command_name(msg) in ("CommandStatementUpdate", "CommandStatementQuery")
                and looks_like_append(msg.query)):
            return self.append_admission
        return self.admission

    def _command(self, descriptor: flight.FlightDescriptor) -> Message:
        msg = _remembered_command(descriptor.command)
        if msg is None:
            raise InvalidArgument("the descriptor's command is not a packed Flight SQL "
                                  "command (google.protobuf.Any)")
        return msg

    # -- GetFlightInfo / GetSchema -------------------------------------------------------------

    def get_flight_info(self, context: CallContext,
                        descriptor: flight.FlightDescriptor) -> Info:
        return self._run("GetFlightInfo", context, self._flight_info, descriptor,
                         context.session)

    def _flight_info(self, descriptor: flight.FlightDescriptor,
                     session: handles.Session = None) -> Info:
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            return self._table_info(self._path_table(descriptor))
        msg = self._command(descriptor)
        name = _command_name(msg)
        if name == "CommandStatementQuery":
            stmtlog.label("query", msg.query, deferred=True)
            self._no_transaction(msg)
            return self._statement_info(msg.query, None)
        if name == "CommandPreparedStatementQuery":
            stmt = self.prepared.get(msg.prepared_statement_handle, session)
            stmtlog.label("query", stmt.sql, deferred=True)
            return self._statement_info(stmt.sql, stmt.params, stmt)
        if name in _METADATA_COMMANDS:
            return Info(self._metadata_schema(msg), [Endpoint(pack(msg))])
        raise NotImplementedCommand(f"{name} is not supported by GetFlightInfo")

    def _statement_info(self, sql: str, params: pa.Table | None,
                        stmt: handles.PreparedStatement | None = None) -> Info:
        # Read once here; the schema, the scan split and a DDL/DML run reuse the reading.
        statement: str | Analysis
        if stmt is not None:
            statement, is_query = sql, stmt.is_query
        else:
            analysed = self.conn.analyse(sql)
            statement, is_query = analysed, analysed.is_query
        if is_query:
            schema = self._query_schema(statement, params, stmt)
            split = self._scan_info(schema, statement, params)
            if split is not None:
                return split
            handle = self.tickets.seal(handles.encode_sql(sql, params))
            records = -1
        else:
            stmtlog.label("update" if stmt is None else "prepared_update", sql, replace=True)
            result = self._execute(statement, params)
            schema = result.schema
            handle = self.tickets.seal(handles.encode_result(result))
            # DB-API drivers (ADBC) report total_records as the cursor's rowcount: the
            # statement's count for DML, unknown (-1) for DDL.
            records = _count_of(result) if result.column_names == ["count"] else -1
            stmtlog.set_rows(max(records, 0))
        ticket = pack(flight_sql_pb2.TicketStatementQuery(statement_handle=handle))
        return Info(schema, [Endpoint(ticket)], records)

    def _scan_info(self, schema: pa.Schema, statement: str | Analysis,
                   params: pa.Table | None) -> Info | None:
        """The FlightInfo of a plain scan of one table, one endpoint per group of the
        pinned version's superfiles; None for any other query."""
        if params is not None and params.num_columns:
            if params.num_rows != 1:
                return None
            # The parts' text has the parameter values written in as literals.
            a = self.conn.analyse(_text_of(statement), _first_row(params))
        elif isinstance(statement, Analysis):
            a = statement
        else:
            a = self.conn.analyse(statement)
        if a.scan is None:
            return None
        source = self.conn.scan_source(a.scan)
        if source is None:
            return None
        return self._split_info(None, schema, a.text, source.table.name,
                                source.snapshot, source.files, source.records)

    def _split_info(self, descriptor: bytes | None, schema: pa.Schema, sql: str,
                    table: str, snap: Any, files: Sequence[Any], records: int) -> Info:
        """``descriptor``: the serialized descriptor to echo, None for the request's."""
        groups = group_files([f.live_rows for f in files], self._endpoint_count(files))
        nonce = handles.new_nonce()
        locations = self.advertise if len(groups) > 1 else []
        start = next(self._deal) if locations else 0
        endpoints = []
        for i, members in enumerate(groups):
            part = handles.ScanPart(table=table, table_uuid=snap.manifest.table_uuid,
                                    version=snap.version,
                                    files=tuple(files[k].path for k in members))
            ticket = pack(flight_sql_pb2.TicketStatementQuery(
                statement_handle=self.tickets.seal(handles.encode_scan(sql, part, nonce))))
            where = [locations[(start + i) % len(locations)]] if locations else []
            endpoints.append(Endpoint(ticket, where))
        return Info(schema, endpoints, records, descriptor=descriptor)

    def _endpoint_count(self, files: Sequence[Any]) -> int:
        rows = sum(f.live_rows for f in files)
        by_rows = max(1, rows // self.min_endpoint_rows)
        return max(1, min(len(files), 2 * max(1, len(self.advertise)), MAX_ENDPOINTS, by_rows))

    def _query_schema(self, statement: str | Analysis, params: pa.Table | None,
                      stmt: handles.PreparedStatement | None) -> pa.Schema:
        if params is None or params.num_rows == 0:
            if stmt is not None and stmt.dataset_schema is not None:
                return stmt.dataset_schema
            return self.conn.schema(statement)
        return self.conn.schema(statement, _first_row(params))

    def _execute(self, statement: str | Analysis, params: pa.Table | None) -> pa.Table:
        """Runs a statement once, or once per parameter row."""
        if params is None or params.num_columns == 0:
            return self.conn.sql(statement)
        if params.num_rows == 0:
            raise InvalidArgument("no parameter rows are bound to the statement")
        if params.num_rows == 1:
            return self.conn.sql(statement, _first_row(params))
        return self.conn.sql_many(_text_of(statement), params)

    def get_schema(self, context: CallContext,
                   descriptor: flight.FlightDescriptor) -> pa.Schema:
        return self._run("GetSchema", context, self._schema_of, descriptor, context.session)

    def _schema_of(self, descriptor: flight.FlightDescriptor,
                   session: handles.Session = None) -> pa.Schema:
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            return self.conn.open_table(self._path_table(descriptor)).schema
        msg = self._command(descriptor)
        name = _command_name(msg)
        if name in ("CommandStatementQuery", "CommandStatementUpdate"):
            self._no_transaction(msg)
            return self.conn.schema(msg.query)
        if name in ("CommandPreparedStatementQuery", "CommandPreparedStatementUpdate"):
            stmt = self.prepared.get(msg.prepared_statement_handle, session)
            if stmt.params is not None and stmt.params.num_rows:
                return self.conn.schema(stmt.sql, _first_row(stmt.params))
            if stmt.dataset_schema is not None:
                return stmt.dataset_schema
            return self.conn.schema(stmt.sql)
        if name in _METADATA_COMMANDS:
            return self._metadata_schema(msg)
        raise NotImplementedCommand(f"{name} is not supported by GetSchema")

    @staticmethod
    def _no_transaction(msg: Message) -> None:
        if msg.HasField("transaction_id") and msg.transaction_id:
            raise InvalidArgument("transactions are not supported")

    # -- tables as plain Flight ---------------------------------------------------------------

    @staticmethod
    def _path_table(descriptor: flight.FlightDescriptor) -> str:
        path = [p.decode() if isinstance(p, bytes) else p for p in descriptor.path]
        if not path:
            raise InvalidArgument("a path descriptor names a table: [\"<table>\"]")
        return path[0]

    def _table_info(self, name: str) -> Info:
        table = self.conn.open_table(name)
        snap = table.snapshot()
        files = snap.candidate_files()
        sql = 'SELECT * FROM "' + name.replace('"', '""') + '"'
        return self._split_info(path_descriptor(name), snap.schema, sql, table.name, snap,
                                files, _snapshot_rows(snap))

    def list_flights(self, context: CallContext, criteria: bytes) -> Iterator[Info]:
        names = self._run("ListFlights", context, self.conn.list_tables)
        for name in names:
            try:
                info = self._run("ListFlights", context, self._table_info, name)
            except (TableNotFoundError, NotFound):
                continue  # dropped while listing
            yield info

    # -- DoGet ---------------------------------------------------------------------------------

    def do_get(self, context: CallContext,
               ticket: flight.Ticket) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The schema and batches of the ticket's rows."""
        return self._run("DoGet", context, self._do_get, context, ticket.ticket)

    def _do_get(self, context: CallContext,
                raw: bytes) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        msg = _parse_command(raw)
        if msg is None:
            try:
                sql = bytes(raw).decode()
            except UnicodeDecodeError:
                raise InvalidArgument("the ticket is neither a Flight SQL ticket nor UTF-8 "
                                      "SQL text") from None
            stmtlog.label("query", sql)
            return self._stream(raw, lambda: self.conn.sql_stream(sql), context)
        name = _command_name(msg)
        if name == "TicketStatementQuery":
            h = self.tickets.decode(msg.statement_handle)
            if h.result is not None:
                return _table_stream(h.result)
            if h.scan is not None:
                part, text = h.scan, h.sql or ""
                # A split scan's text has any bound parameters written in as literals.
                stmtlog.label("query", hide_literals(text))
                return self._stream(raw, lambda: self.conn.sql_files(
                    text, part.table, part.version, part.files, table_uuid=part.table_uuid),
                    context)
            sql, params = h.sql or "", h.params
            stmtlog.label("query", sql)
            return self._stream(raw, lambda: self._query_reader(sql, params), context)
        if name in _METADATA_COMMANDS:
            stmtlog.label("metadata", name, level=logging.DEBUG)
            return _table_stream(self._metadata_table(msg))
        raise NotImplementedCommand(f"{name} is not supported by DoGet")

    def _query_reader(self, sql: str, params: pa.Table | None) -> pa.RecordBatchReader:
        if params is None or params.num_rows == 0:
            return self.conn.sql_stream(sql)
        if params.num_rows == 1:
            return self.conn.sql_stream(sql, _first_row(params))
        result = self.conn.sql_many(sql, params)
        return pa.RecordBatchReader.from_batches(result.schema, result.to_batches())

    def _stream(self, ticket: bytes, open_reader: Callable[[], pa.RecordBatchReader],
                context: CallContext) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        key = bytes(ticket)
        cancel = self.streams.start(key)
        running = interrupts.current()
        if running is not None:
            running.watch(cancel.is_set)
        try:
            if cancel.is_set():
                raise flight.FlightCancelledError("the query was cancelled")
            reader = open_reader()
        except BaseException:
            self.streams.finish(key, cancel)
            raise
        return reader.schema, _BatchStream(self, key, reader, cancel, context)

    # -- DoPut ---------------------------------------------------------------------------------

    def do_put(self, context: CallContext, descriptor: flight.FlightDescriptor,
               reader: PutReader,
               writer: MetadataWriter) -> None:
        self._run("DoPut", context, self._do_put, context, descriptor, reader, writer)

    def _do_put(self, context: CallContext, descriptor: flight.FlightDescriptor,
                reader: PutReader,
                writer: MetadataWriter) -> None:
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            self._put_path(descriptor, reader, context.is_cancelled)
            return
        msg = self._command(descriptor)
        name = _command_name(msg)
        if name == "CommandStatementUpdate":
            stmtlog.label("update", msg.query)
            self._no_transaction(msg)
            _drain(reader)
            self._update_result(writer, _count_of(self.conn.sql(msg.query)))
        elif name == "CommandStatementIngest":
            stmtlog.label("ingest", msg.table)
            req = ingest.IngestRequest(
                table=msg.table,
                if_not_exist=msg.table_definition_options.if_not_exist,
                if_exists=msg.table_definition_options.if_exists,
                temporary=msg.temporary, catalog=_opt(msg, "catalog"),
                db_schema=_opt(msg, "schema"), transaction_id=_opt(msg, "transaction_id"),
                batch_id=msg.options.get(ingest.BATCH_ID_OPTION) or None)
            rows = ingest.ingest(self.conn, req, reader, reader.schema, context.is_cancelled)
            self._update_result(writer, rows)
        elif name == "CommandPreparedStatementQuery":
            stmt = self.prepared.get(msg.prepared_statement_handle, context.session)
            self.prepared.bind(stmt, _read_params(reader, self.max_bind_bytes))
            out = flight_sql_pb2.DoPutPreparedStatementResult(
                prepared_statement_handle=stmt.handle)
            writer.write(pa.py_buffer(out.SerializeToString()))
        elif name == "CommandPreparedStatementUpdate":
            stmt = self.prepared.get(msg.prepared_statement_handle, context.session)
            stmtlog.label("prepared_update", stmt.sql)
            params = _read_params(reader, self.max_bind_bytes)
            if context.is_cancelled():
                raise flight.FlightCancelledError("the client went away while sending "
                                                  "parameters; the statement did not run")
            if params is None:
                params = stmt.params
            self._update_result(writer, _count_of(self._execute(stmt.sql, params)))
        else:
            raise NotImplementedCommand(f"{name} is not supported by DoPut")

    @staticmethod
    def _update_result(writer: MetadataWriter, count: int) -> None:
        stmtlog.set_rows(count)
        out = flight_sql_pb2.DoPutUpdateResult(record_count=count)
        writer.write(pa.py_buffer(out.SerializeToString()))

    def _put_path(self, descriptor: flight.FlightDescriptor,
                  reader: PutReader,
                  cancelled: Callable[[], bool]) -> None:
        path = [p.decode() if isinstance(p, bytes) else p for p in descriptor.path]
        if not path or len(path) > 2 or (len(path) == 2 and path[1] != "create"):
            raise InvalidArgument('DoPut path is ["<table>"] (append) or ["<table>", "create"] '
                                  "(create from the stream's schema when missing, then append)")
        name = path[0]
        stmtlog.label("ingest", name)
        if len(path) == 2:
            ingest.create_and_append(self.conn, name, reader, reader.schema, exist_ok=True,
                                     cancelled=cancelled)
        else:
            ingest.append_stream(self.conn.open_table(name), reader, cancelled)

    # -- actions -------------------------------------------------------------------------------

    def list_actions(self, context: CallContext) -> list[tuple[str, str]]:
        return list(ACTIONS.items())

    def do_action(self, context: CallContext,
                  action: flight.Action) -> Iterator[flight.Result]:
        results = self._run(f"action {action.type}", context, self._action, action.type,
                            action.body.to_pybytes() if action.body is not None else b"",
                            context.session)
        return iter(results)

    def _action(self, kind: str, body: bytes,
                session: handles.Session = None) -> list[flight.Result]:
        if kind == "CreatePreparedStatement":
            req = self._body(body, "ActionCreatePreparedStatementRequest")
            if req.HasField("transaction_id") and req.transaction_id:
                raise InvalidArgument("transactions are not supported")
            return [flight.Result(pack(self._prepare(req.query, session)))]
        if kind == "ClosePreparedStatement":
            req = self._body(body, "ActionClosePreparedStatementRequest")
            self.prepared.close(req.prepared_statement_handle, session)
            return []
        if kind == "CancelFlightInfo":
            req = flight_pb2.CancelFlightInfoRequest()
            try:
                req.ParseFromString(body)
            except DecodeError:
                raise InvalidArgument("CancelFlightInfo body is not a CancelFlightInfoRequest") \
                    from None
            status = self._cancel(req.info)
            out = flight_pb2.CancelFlightInfoResult(status=status)
            return [flight.Result(out.SerializeToString())]
        if kind == "CancelQuery":
            req = self._body(body, "ActionCancelQueryRequest")
            info = flight_pb2.FlightInfo()
            try:
                info.ParseFromString(req.info)
            except DecodeError:
                raise InvalidArgument("CancelQuery info is not a serialized FlightInfo") from None
            status = self._cancel(info)
            result = flight_sql_pb2.ActionCancelQueryResult
            mapped = (result.CANCEL_RESULT_CANCELLED
                      if status == flight_pb2.CANCEL_STATUS_CANCELLED
                      else result.CANCEL_RESULT_NOT_CANCELLABLE)
            return [flight.Result(pack(result(result=mapped)))]
        if kind in maintenance.ACTIONS:
            return [flight.Result(maintenance.run_action(self.conn, kind, body))]
        if kind in _TRANSACTION_ACTIONS:
            raise NotImplementedCommand(f"{kind}: transactions are not supported; every "
                                        "statement commits on its own")
        raise NotImplementedCommand(f"unknown action {kind!r}; supported: "
                                    + ", ".join(ACTIONS))

    @staticmethod
    def _body(body: bytes, expected: str) -> Any:
        msg = _parse_command(body)
        if msg is None or _command_name(msg) != expected:
            got = "nothing" if msg is None else _command_name(msg)
            raise InvalidArgument(f"expected a packed {expected}, got {got}")
        return msg

    def _prepare(self, sql: str, session: handles.Session = None) -> Message:
        stmtlog.label("prepare", sql, level=logging.DEBUG)
        # Parameter types are inferred and a query's schema planned with stand-ins for its
        # parameters; a statement that cannot run (bad SQL, unknown table) fails here.
        shape = self.conn.prepare(sql)
        dataset_schema = shape.dataset_schema
        stmt = self.prepared.add(sql, is_query=shape.is_query, dataset_schema=dataset_schema,
                                 parameter_schema=shape.parameter_schema, session=session)
        return flight_sql_pb2.ActionCreatePreparedStatementResult(
            prepared_statement_handle=stmt.handle,
            dataset_schema=(dataset_schema.serialize().to_pybytes()
                            if dataset_schema is not None else b""),
            parameter_schema=shape.parameter_schema.serialize().to_pybytes())

    def _cancel(self, info: Message) -> flight_pb2.CancelStatus:
        """Flags the tickets of ``info``. A stream not started yet counts as cancelled: it
        fails as soon as it starts."""
        if not info.endpoint:
            return flight_pb2.CANCEL_STATUS_NOT_CANCELLABLE
        for endpoint in info.endpoint:
            self.streams.cancel(bytes(endpoint.ticket.ticket))
        return flight_pb2.CANCEL_STATUS_CANCELLED

    # -- metadata ------------------------------------------------------------------------------

    def _metadata_schema(self, msg: Message) -> pa.Schema:
        name = _command_name(msg)
        md = metadata
        key = name
        if name == "CommandGetTables" and msg.include_schema:
            key = "CommandGetTablesWithSchema"
        schema = md.SCHEMAS.get(key)
        return schema if schema is not None else self._metadata_table(msg).schema

    def _metadata_table(self, msg: Message) -> pa.Table:
        name = _command_name(msg)
        md = metadata
        conn = self.conn
        if name == "CommandGetCatalogs":
            return md.catalogs(conn)
        if name == "CommandGetDbSchemas":
            return md.db_schemas(conn, _opt(msg, "catalog"), _opt(msg, "db_schema_filter_pattern"))
        if name == "CommandGetTables":
            return md.tables(conn, _opt(msg, "catalog"), _opt(msg, "db_schema_filter_pattern"),
                             _opt(msg, "table_name_filter_pattern"), list(msg.table_types),
                             bool(msg.include_schema))
        if name == "CommandGetTableTypes":
            return md.table_types()
        if name == "CommandGetSqlInfo":
            return md.sql_info(list(msg.info))
        if name == "CommandGetXdbcTypeInfo":
            return md.xdbc_type_info(_opt(msg, "data_type"))
        if name in ("CommandGetPrimaryKeys", "CommandGetImportedKeys", "CommandGetExportedKeys"):
            fn = {"CommandGetPrimaryKeys": md.primary_keys,
                  "CommandGetImportedKeys": md.imported_keys,
                  "CommandGetExportedKeys": md.exported_keys}[name]
            return fn(conn, _opt(msg, "catalog"), _opt(msg, "db_schema"), msg.table)
        return md.cross_reference(conn, _opt(msg, "pk_catalog"), _opt(msg, "pk_db_schema"),
                                  msg.pk_table, _opt(msg, "fk_catalog"),
                                  _opt(msg, "fk_db_schema"), msg.fk_table)


class QuiverFlightServer(FlightHandlers):
    """``FlightHandlers`` served over gRPC at ``location`` (port 0 picks a free port).

    ``middleware`` is ``auth.middleware(config)`` (an ``Authenticator`` under any key)
    when calls must authenticate; ``auth_handler`` is accepted and unused (Handshake is
    answered whenever calls authenticate). ``threads`` bounds the calls served at once;
    ``limits`` (or ``workers``) how many of them plan or run statements at once and for
    how long; ``max_message_bytes`` the size of one message a client may send;
    ``max_put_bytes`` what one DoPut stream may carry (its rows as they decode).
    """

    def __init__(self, conn: SqlConnection, location: str = "grpc://127.0.0.1:0", *,
                 auth_handler: Any = None,
                 tls_certificates: list[Any] | None = None,
                 middleware: dict[str, Any] | None = None,
                 workers: int | None = None,
                 prepared: handles.PreparedRegistry | None = None,
                 advertise: Sequence[str] | None = None,
                 min_endpoint_rows: int = MIN_ENDPOINT_ROWS,
                 threads: int | None = None,
                 limits: Limits | None = None,
                 max_message_bytes: int | None = None,
                 max_put_bytes: int | None = None,
                 key: keys.ServerKey | None = None,
                 ticket_ttl: float = handles.DEFAULT_TICKET_TTL) -> None:
        super().__init__(conn, workers=workers, prepared=prepared, advertise=advertise,
                         min_endpoint_rows=min_endpoint_rows, limits=limits, key=key,
                         ticket_ttl=ticket_ttl)
        self.location = location
        self.max_bind_bytes = max_message_bytes or MAX_MESSAGE_BYTES
        authenticators = [m for m in (middleware or {}).values()
                          if isinstance(m, Authenticator)]
        for authenticator in authenticators:
            authenticator.use_key(self.key)
        if threads is None:
            # Streams hold a thread while they send; leave room beyond the statement limit.
            threads = max(DEFAULT_THREADS, 2 * self.limits.max_concurrent + 4)
        self._transport = FlightTransport(
            self, location, tls_certificates=tls_certificates,
            authenticator=authenticators[0] if authenticators else None, threads=threads,
            max_message_bytes=max_message_bytes, max_put_bytes=max_put_bytes)
        self.port = self._transport.port

    def shutdown(self, grace: float | None = 5.0) -> None:
        """Stops serving: calls in flight get ``grace`` seconds to finish, then are
        cancelled."""
        self._transport.stop(grace)


def _text_of(statement: str | Analysis) -> str:
    return statement.text if isinstance(statement, Analysis) else statement


def group_files(rows: Sequence[int], groups: int) -> list[list[int]]:
    """Indexes of consecutive files in at most ``groups`` groups of about equal ``rows``
    (never an empty group; one empty group when there are no files)."""
    if not rows or groups <= 1:
        return [list(range(len(rows)))]
    cum = np.cumsum(np.asarray(rows, dtype=np.int64))
    targets = cum[-1] * np.arange(1, groups, dtype=np.float64) / groups
    cuts = np.unique(np.clip(np.searchsorted(cum, targets, side="left") + 1, 1, len(rows) - 1))
    return [part.tolist() for part in np.split(np.arange(len(rows)), cuts)]


def _table_stream(table: pa.Table) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    return table.schema, rechunk(iter(table.to_batches()))


def _first_row(params: pa.Table) -> list[Any]:
    return [params.column(i)[0].as_py() for i in range(params.num_columns)]


def _read_params(reader: PutReader, limit: int) -> pa.Table | None:
    """The bound parameter rows of a DoPut, or None when the client sent no columns;
    RESOURCE_EXHAUSTED once they pass ``limit`` bytes (they are held whole)."""
    batches = []
    size = 0
    for batch in reader:
        size += batch.get_total_buffer_size()
        if size > limit:
            raise ResourceExhausted(
                f"the parameter rows sent pass {limit:,} bytes, the most one call may bind "
                "(--max-message-bytes): bind fewer rows per call, or load rows with a bulk "
                "ingest (ADBC adbc_ingest, DoPut)")
        batches.append(batch)
    if not reader.schema.names:
        return None
    return pa.Table.from_batches(batches, schema=reader.schema).combine_chunks()


def _drain(reader: PutReader) -> None:
    try:
        while True:
            reader.read_chunk()
    except StopIteration:
        return


def _count_of(result: pa.Table) -> int:
    if result.num_columns and result.column_names[0] == "count" and result.num_rows == 1:
        value = result.column(0)[0].as_py()
        return int(value) if value is not None else -1
    return 0 if result.column_names == ["result"] else result.num_rows


def _snapshot_rows(snap: Any) -> int:
    return int(snap.count())
