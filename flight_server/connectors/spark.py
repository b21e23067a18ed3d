"""Spark connector: Quiver tables and queries as a pyspark Python data source ("quiver").

Reading plans the query once on the driver (Flight SQL ``GetFlightInfo`` of a
``CommandStatementQuery``) and makes one Spark partition per endpoint of the
answer; each task connects to its endpoint's location (or the original ``uri``
when the endpoint names none) and streams the ticket with ``DoGet``. Batches are
cast as whole arrays to the Arrow layout Spark expects, never row by row.

Writing (``mode("append")``): each Spark task sends its rows in one Flight SQL
bulk ingest (``CommandStatementIngest``, append) and checks the row count the
server reports. The table is created on the driver from the DataFrame's schema
when it does not exist yet. The server commits an ingest in chunks of about 131k
rows. Each ingest carries a per-task key (job id + partition id, the same for
every attempt of that task) in the command's ``options`` under
``quiver.batch_id``; the server appends chunk ``i`` of the stream as batch
``<key>#<i>`` and skips batches already committed, so a retried task that sends
the same rows in the same order (a deterministic input) adds only what the failed
attempt did not commit. ``mode("overwrite")`` is rejected: the rows of a job arrive
through many independent streams and the server has no way to swap a table for
the union of them in one step.

Options: ``uri`` (``grpc://`` or ``grpc+tls://``), ``query`` or ``table``;
authentication by ``username`` + ``password`` (Basic, exchanged for a bearer
token) or ``token``; TLS by ``tls_root_certs`` (a PEM file path),
``tls_override_hostname`` and ``tls_skip_verify``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    ByteType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    NullType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from quiver.flight_server.clients.flight_client import (
    SERVER_ERRORS,
    ConnectionOptions,
    QuiverClientError,
    ingest,
    option,
    server_errors,
    server_message,
    table_schema,
)
from quiver.proto import flight_sql_pb2, pack

# The connector's errors are the client's: one class, whichever side raised it.
QuiverSparkError = QuiverClientError

log = logging.getLogger(__name__)

FORMAT = "quiver"
# Flight's way for an endpoint to say "use the connection you already have".
_REUSE_SCHEME = "arrow-flight-reuse-connection"


# -- connections ---------------------------------------------------------------------------


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _query_of(options: Any) -> str:
    query, table = option(options, "query"), option(options, "table")
    if (query is None) == (table is None):
        raise QuiverSparkError('give exactly one of the options "query" and "table"')
    return query if query is not None else f"SELECT * FROM {_quoted(table or '')}"


def _statement(query: str) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(
        pack(flight_sql_pb2.CommandStatementQuery(query=query)))


# -- types ---------------------------------------------------------------------------------


def spark_type(t: pa.DataType, column: str = "?") -> DataType:
    """The Spark type that holds values of Arrow type ``t`` (a vector becomes array<float>)."""
    if pa.types.is_boolean(t):
        return BooleanType()
    if pa.types.is_int8(t):
        return ByteType()
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return ShortType()
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return IntegerType()
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return LongType()
    if pa.types.is_uint64(t):
        return DecimalType(20, 0)
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return FloatType()
    if pa.types.is_float64(t):
        return DoubleType()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return StringType()
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t)):
        return BinaryType()
    if pa.types.is_date(t):
        return DateType()
    if pa.types.is_timestamp(t):
        return TimestampType() if t.tz else TimestampNTZType()
    if pa.types.is_decimal(t):
        if t.precision > 38:
            raise QuiverSparkError(f"column {column!r}: decimal precision {t.precision} is "
                                   "more than Spark's 38; cast it in the query")
        return DecimalType(t.precision, t.scale)
    if pa.types.is_null(t):
        return NullType()
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)):
        return ArrayType(spark_type(t.value_type, column), t.value_field.nullable)
    if pa.types.is_struct(t):
        return StructType([StructField(f.name, spark_type(f.type, f"{column}.{f.name}"),
                                       f.nullable) for f in t])
    if pa.types.is_map(t):
        return MapType(spark_type(t.key_type, column), spark_type(t.item_type, column),
                       t.item_field.nullable)
    if pa.types.is_dictionary(t):
        return spark_type(t.value_type, column)
    raise QuiverSparkError(f"column {column!r} has Arrow type {t}, which Spark cannot hold; "
                           "cast it in the query (for example to VARCHAR)")


def spark_schema(schema: pa.Schema) -> StructType:
    """The Spark schema of rows with Arrow schema ``schema``."""
    return StructType([StructField(f.name, spark_type(f.type, f.name), f.nullable)
                       for f in schema])


def _spark_arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema Spark requires of batches a reader yields for ``schema``."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def _cast_batch(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(target):
        return batch
    columns = [_cast_array(batch.column(i), f.type) for i, f in enumerate(target)]
    return pa.RecordBatch.from_arrays(columns, schema=target)


def _cast_array(values: pa.Array, to: pa.DataType) -> pa.Array:
    if values.type.equals(to):
        return values
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values.cast(to)


# -- reading -------------------------------------------------------------------------------


class EndpointPartition(InputPartition):
    """One Flight endpoint of the query: its ticket and where it may be fetched."""

    def __init__(self, ticket: bytes, locations: Sequence[str] = ()) -> None:
        super().__init__(ticket)
        self.ticket = ticket
        self.locations = list(locations)


def partitions_of(info: flight.FlightInfo) -> list[EndpointPartition]:
    """One partition per endpoint of ``info``, in the endpoints' order."""
    return [EndpointPartition(ep.ticket.ticket, [loc.uri.decode() if isinstance(loc.uri, bytes)
                                                 else str(loc.uri) for loc in ep.locations])
            for ep in info.endpoints]


def _targets(conn: ConnectionOptions, locations: Sequence[str]) -> list[str]:
    """The addresses to try for an endpoint, in order; the original ``uri`` when it names
    none (or asks for the connection already in use)."""
    found = [loc for loc in locations if loc and not loc.startswith(_REUSE_SCHEME)]
    return found or [conn.uri]


def read_endpoint(conn: ConnectionOptions, partition: EndpointPartition,
                  target_schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of one endpoint, cast to ``target_schema`` when given.

    Locations are tried in order; one that cannot be reached (UNAVAILABLE) passes the
    endpoint on to the next, any other server error is final.
    """
    targets = _targets(conn, partition.locations)
    for i, target in enumerate(targets):
        client, call = conn.connect(target)
        try:
            try:
                stream = client.do_get(flight.Ticket(partition.ticket), call).to_reader()
            except flight.FlightUnavailableError as exc:
                if i + 1 < len(targets):
                    log.warning("endpoint location %s unavailable (%s); trying the next",
                                target, server_message(exc))
                    continue
                raise QuiverSparkError(f"quiver server {target}, DoGet: "
                                       f"{server_message(exc)}") from None
            except SERVER_ERRORS as exc:
                raise QuiverSparkError(f"quiver server {target}, DoGet: "
                                       f"{server_message(exc)}") from None
            with server_errors(target, "DoGet"):
                for batch in stream:
                    yield batch if target_schema is None else _cast_batch(batch,
                                                                          target_schema)
            return
        finally:
            client.close()


class QuiverReader(DataSourceReader):
    """Reads a query's result: one partition per Flight endpoint."""

    def __init__(self, conn: ConnectionOptions, query: str, schema: StructType) -> None:
        self.conn = conn
        self.query = query
        self.schema = schema

    def partitions(self) -> Sequence[InputPartition]:
        client, call = self.conn.connect()
        try:
            with server_errors(self.conn.uri, "GetFlightInfo"):
                info = client.get_flight_info(_statement(self.query), call)
        finally:
            client.close()
        parts = partitions_of(info)
        log.debug("query %r: %d endpoint(s)", self.query, len(parts))
        # Spark needs at least one partition; an endpoint-less answer has no rows.
        return parts or [EndpointPartition(b"", [])]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, EndpointPartition)
        if not partition.ticket:
            return iter(())
        return read_endpoint(self.conn, partition, _spark_arrow_schema(self.schema))


# -- writing -------------------------------------------------------------------------------


@dataclass
class TaskWritten(WriterCommitMessage):
    """What one task wrote: its partition and the rows the server acknowledged."""

    partition: int
    rows: int


def _write_schema(incoming: pa.Schema, table: pa.Schema, name: str) -> pa.Schema:
    """The table's schema, checked against the DataFrame's: a DataFrame column the table
    lacks is an error, and so is leaving out a column that cannot hold nulls."""
    extra = [n for n in incoming.names if n not in table.names]
    if extra:
        raise QuiverSparkError(f"table {name!r} has no column(s) {extra}; its columns are "
                               f"{table.names}")
    required = [f.name for f in table if f.name not in incoming.names and not f.nullable]
    if required:
        raise QuiverSparkError(f"table {name!r} needs the column(s) {required}, which the "
                               "DataFrame does not have")
    return table


def conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """``batch`` with the columns of ``target`` in its order and types; a column the batch
    lacks is all nulls (Spark's array<float> becomes the table's fixed-size vector)."""
    names = batch.schema.names
    columns = [_cast_array(batch.column(f.name), f.type) if f.name in names
               else pa.nulls(batch.num_rows, f.type) for f in target]
    return pa.RecordBatch.from_arrays(columns, schema=target)


class QuiverWriter(DataSourceArrowWriter):
    """Appends a DataFrame: one bulk-ingest DoPut per Spark task."""

    def __init__(self, conn: ConnectionOptions, table: str, schema: pa.Schema) -> None:
        self.conn = conn
        self.table = table
        self.schema = schema
        # Made on the driver, so every attempt of a task derives the same key.
        self.job_id = uuid.uuid4().hex

    def write(self, iterator: Iterator[pa.RecordBatch]) -> TaskWritten:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx is not None else 0
        target = self.schema
        batches = (conform(b, target) for b in iterator)
        rows = ingest(self.conn, self.table, target, batches,
                      batch_id=f"spark-{self.job_id}-{part}")
        return TaskWritten(part, rows)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        rows = sum(m.rows for m in messages if isinstance(m, TaskWritten))
        log.info("appended %d rows to %r from %d task(s)", rows, self.table, len(messages))

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        done = [m for m in messages if isinstance(m, TaskWritten)]
        log.warning("write to %r failed; %d task(s) had already appended %d rows", self.table,
                    len(done), sum(m.rows for m in done))


# -- the data source -----------------------------------------------------------------------


class QuiverDataSource(DataSource):
    """``spark.read.format("quiver")`` / ``df.write.format("quiver")`` over a Quiver server."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def _conn(self) -> ConnectionOptions:
        return ConnectionOptions.from_options(self.options)

    def schema(self) -> StructType:
        conn = self._conn()
        client, call = conn.connect()
        try:
            with server_errors(conn.uri, "GetSchema"):
                result = client.get_schema(_statement(_query_of(self.options)), call)
        finally:
            client.close()
        return spark_schema(result.schema)

    def reader(self, schema: StructType) -> DataSourceReader:
        return QuiverReader(self._conn(), _query_of(self.options), schema)

    def writer(self, schema: StructType, overwrite: bool) -> QuiverWriter:
        if overwrite:
            raise QuiverSparkError('mode("overwrite") is not supported: Quiver cannot swap a '
                                   'table for the rows of many Spark tasks in one step; use '
                                   'mode("append") (after DELETE FROM or DROP TABLE if needed)')
        if option(self.options, "query") is not None:
            raise QuiverSparkError('writes name a "table", not a "query"')
        table = option(self.options, "table")
        if not table:
            raise QuiverSparkError('writes need the option "table"')
        conn = self._conn()
        incoming = _spark_arrow_schema(schema)
        existing = table_schema(conn, table)
        if existing is None:
            # Created here, once, rather than by racing tasks: a task that created the table
            # and then failed would drop it along with rows other tasks had appended.
            ingest(conn, table, incoming, iter(()), create=True)
            existing = table_schema(conn, table) or incoming
        return QuiverWriter(conn, table, _write_schema(incoming, existing, table))
