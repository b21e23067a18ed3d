"""Streams of record batches written into tables: Flight SQL bulk ingest and plain DoPut.

Rows are gathered into chunks of up to ``CHUNK_ROWS`` rows (or ``CHUNK_BYTES``)
and each chunk is one table append (one commit), so a stream of tiny batches
does not make a commit per batch; everything is durable when the call returns.

Bulk ingest (``CommandStatementIngest``) follows ``table_definition_options``:

==============  ===============  =========================================
ADBC mode       if_not_exist     if_exists
==============  ===============  =========================================
create          CREATE           FAIL
append          FAIL             APPEND
create_append   CREATE           APPEND
replace         CREATE           REPLACE
==============  ===============  =========================================

An unspecified option counts as FAIL. A table created here gets the default
indexes (BM25 on every string column, cosine vectors on every fixed-size float
list column). ``temporary``, a transaction, and a ``catalog`` or ``schema`` other
than the one the metadata commands report (``quiver`` / ``main``) are rejected:
one root holds one flat namespace and has no transactions.

What a failed stream leaves behind:

- a table the stream created is dropped again;
- an append keeps the chunks committed before the failure (each chunk is its
  own commit; the table layer has no multi-commit transaction);
- a replace writes into a hidden staging table and, only once the whole stream
  is in, points the table's catalog entry at it in one write; a failure drops
  the staging table and leaves the old table untouched. The swap is
  ``catalog.Connection.replace_table``: one conditional write of the catalog entry.

The ingest option ``quiver.batch_id`` makes an append idempotent: a stream sent again
with the same key adds none of the chunks that already committed.

Plain Flight ``DoPut`` with a path descriptor ``[table]`` appends to an existing
table; ``[table, "create"]`` creates it from the stream's schema first when it
does not exist (and appends when it does).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.flight as flight

from flight_server import metadata
from flight_server.errors import InvalidArgument
from flight_server.sql import SqlConnection
from supertable.errors import TableExistsError, TableNotFoundError
from supertable.table import Table

log = logging.getLogger(__name__)

CHUNK_ROWS = 131_072
CHUNK_BYTES = 64 << 20
BATCH_ID_OPTION = "quiver.batch_id"

# TableDefinitionOptions enum values (FlightSql.proto).
NOT_EXIST_UNSPECIFIED, NOT_EXIST_CREATE, NOT_EXIST_FAIL = 0, 1, 2
EXISTS_UNSPECIFIED, EXISTS_FAIL, EXISTS_APPEND, EXISTS_REPLACE = 0, 1, 2, 3


@dataclass(frozen=True)
class IngestRequest:
    """The parts of a bulk ingest command the server acts on."""

    table: str
    if_not_exist: int = NOT_EXIST_UNSPECIFIED
    if_exists: int = EXISTS_UNSPECIFIED
    temporary: bool = False
    catalog: str | None = None
    db_schema: str | None = None
    transaction_id: bytes | None = None
    # The ``quiver.batch_id`` ingest option: a key naming this stream's rows, so that a
    # retried stream (a re-run Spark task, a resumed load) does not append them twice.
    batch_id: str | None = None


def chunks(reader: Iterator[pa.RecordBatch], *, rows: int = CHUNK_ROWS,
           nbytes: int = CHUNK_BYTES) -> Iterator[pa.Table]:
    """The stream's batches gathered into tables of about ``rows`` rows (or ``nbytes``)."""
    pending: list[pa.RecordBatch] = []
    count = size = 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        size += batch.nbytes
        if count >= rows or size >= nbytes:
            yield pa.Table.from_batches(pending)
            pending, count, size = [], 0, 0
    if pending:
        yield pa.Table.from_batches(pending)


def _batches(reader: pa.RecordBatchReader | object) -> Iterator[pa.RecordBatch]:
    """The record batches of a Flight DoPut reader (or any iterable of batches)."""
    read_chunk = getattr(reader, "read_chunk", None)
    if read_chunk is None:
        yield from reader  # type: ignore[misc]
        return
    while True:
        try:
            chunk = read_chunk()
        except StopIteration:
            return
        if chunk.data is not None:
            yield chunk.data


Cancelled = Callable[[], bool]


def _never() -> bool:
    return False


def append_stream(table: Table, reader: object, cancelled: Cancelled = _never,
                  batch_id: str | None = None) -> int:
    """Appends the stream to ``table`` in bounded chunks; the number of rows the stream
    holds.

    ``cancelled`` is asked before each commit: a client that goes away mid-stream looks
    to the server's reader like the end of the stream, and its rest must not commit.
    With ``batch_id``, chunk ``i`` is appended as batch ``<batch_id>#<i>``: the same
    stream sent again (chunked alike, as the same batches are) adds only the chunks
    that did not commit the first time.
    """
    total = 0
    for i, part in enumerate(chunks(_batches(reader))):
        _check_cancelled(cancelled)
        table.append(part, batch_id=f"{batch_id}#{i}" if batch_id else None)
        total += part.num_rows
    _check_cancelled(cancelled)
    return total


def _check_cancelled(cancelled: Cancelled) -> None:
    if cancelled():
        raise flight.FlightCancelledError("the client cancelled the write or went away; "
                                          "rows after the last committed chunk were not "
                                          "written")


def _check_request(req: IngestRequest) -> None:
    if not req.table:
        raise InvalidArgument("bulk ingest needs a target table name")
    if req.temporary:
        raise InvalidArgument("temporary tables are not supported")
    if req.catalog and req.catalog != metadata.CATALOG:
        raise InvalidArgument(f"catalog {req.catalog!r} is not supported: tables live in one "
                              f"namespace per root; leave the catalog unset or use "
                              f"{metadata.CATALOG!r}")
    if req.db_schema and req.db_schema != metadata.DB_SCHEMA:
        raise InvalidArgument(f"schema {req.db_schema!r} is not supported: tables live in one "
                              f"namespace per root; leave the schema unset or use "
                              f"{metadata.DB_SCHEMA!r}")
    if req.transaction_id:
        raise InvalidArgument("transactions are not supported")


def _exists(conn: SqlConnection, name: str) -> bool:
    try:
        conn.open_table(name)
    except TableNotFoundError:
        return False
    return True


def ingest(conn: SqlConnection, req: IngestRequest, reader: object,
           schema: pa.Schema, cancelled: Cancelled = _never) -> int:
    """Runs one bulk ingest of ``reader`` (whose schema is ``schema``); rows written."""
    log.debug("ingest into %r: if_not_exist=%d if_exists=%d", req.table, req.if_not_exist,
              req.if_exists)
    _check_request(req)
    if _exists(conn, req.table):
        if req.if_exists == EXISTS_APPEND:
            return append_stream(conn.open_table(req.table), reader, cancelled, req.batch_id)
        if req.if_exists == EXISTS_REPLACE:
            return _replace(conn, req.table, reader, schema, cancelled)
        raise TableExistsError(f"table {req.table!r} already exists (ingest mode create); "
                               "use append, create_append or replace")
    if req.if_not_exist != NOT_EXIST_CREATE:
        raise TableNotFoundError(f"no table {req.table!r} to append to (ingest mode append); "
                                 "use create, create_append or replace")
    return create_and_append(conn, req.table, reader, schema,
                             exist_ok=req.if_exists == EXISTS_APPEND, cancelled=cancelled,
                             batch_id=req.batch_id)


def create_and_append(conn: SqlConnection, name: str, reader: object, schema: pa.Schema,
                      *, exist_ok: bool = False, cancelled: Cancelled = _never,
                      batch_id: str | None = None) -> int:
    """Creates ``name`` from ``schema`` and appends the stream; a failure drops the table
    again. With ``exist_ok`` a table that appeared meanwhile is appended to instead."""
    try:
        table = conn.create_table(name, schema)
    except TableExistsError:
        if not exist_ok:
            raise
        return append_stream(conn.open_table(name), reader, cancelled, batch_id)
    try:
        return append_stream(table, reader, cancelled, batch_id)
    except BaseException:
        _drop_quietly(conn, name)
        raise


def _drop_quietly(conn: SqlConnection, name: str) -> None:
    try:
        conn.drop_table(name, missing_ok=True)
    except Exception as exc:  # the original failure matters more than this one
        log.warning("could not drop table %r after a failed write: %s", name, exc)


def _replace(conn: SqlConnection, name: str, reader: object, schema: pa.Schema,
             cancelled: Cancelled) -> int:
    staging = f"_stage_{name[:100]}_{uuid.uuid4().hex[:12]}"
    rows = create_and_append(conn, staging, reader, schema, cancelled=cancelled)
    try:
        conn.catalog.replace_table(name, staging)
    except BaseException:
        _drop_quietly(conn, staging)
        raise
    return rows
