"""Streams of record batches written into tables: Flight SQL bulk ingest and plain DoPut.

Rows are gathered into chunks of up to ``CHUNK_ROWS`` rows (or ``CHUNK_BYTES``);
each chunk is built into superfiles and uploaded as the stream goes on (memory
stays bounded by a chunk or two), and the whole stream is published in one commit
at its end (``quiver.supertable.staged``): readers see all of it or none of it, and
everything is durable when the call returns.

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
list column, float16 and float64 ones stored as float32). ``temporary``, a
transaction, and a ``catalog`` or ``schema`` other than the one the metadata commands
report (``quiver`` / ``main``) are rejected: one root holds one flat namespace and has
no transactions.

What a failed, cancelled or killed stream leaves behind: nothing.

- a create fills a staged table that is not in the catalog yet and names it with
  one create-if-absent write once the whole stream is in
  (``catalog.Connection.create_staged`` / ``publish_staged``): before that there is
  no table, so a retried create succeeds;
- an append publishes its chunks in one commit at the end; before that they are
  uploaded objects no manifest names, removed on failure (or, after a kill, by
  recovery and ``gc`` through the write-ahead intent);
- a replace fills a staged table the same way and then points the table's
  catalog entry at it in one conditional write; the old table stays until then.

The ingest option ``quiver.batch_id`` makes an ingest idempotent: a stream sent again
with the same key, once the first one committed, adds nothing.

Plain Flight ``DoPut`` with a path descriptor ``[table]`` appends to an existing
table; ``[table, "create"]`` creates it from the stream's schema first when it
does not exist (and appends when it does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.flight as flight

from quiver.flight_server.service import metadata
from quiver.flight_server.service.errors import InvalidArgument
from quiver.flight_server.sql import SqlConnection
from quiver.supertable.errors import TableExistsError, TableNotFoundError
from quiver.supertable.staged import StagedAppend
from quiver.supertable.table import Table

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
                  batch_id: str | None = None, *, exclusive: bool = False) -> int:
    """Appends the stream to ``table`` in one commit; the number of rows the stream holds.

    ``cancelled`` is asked after each chunk and before the commit: a client that goes
    away mid-stream looks to the server's reader like the end of the stream, and then
    nothing must commit. With ``batch_id``, a stream already committed under that key
    adds nothing. ``exclusive``: nobody else can see ``table`` (a staged create).
    """
    staged = StagedAppend(table, batch_id=batch_id, exclusive=exclusive)
    with staged:
        for part in chunks(_batches(reader)):
            _check_cancelled(cancelled)
            staged.add(part)
        _check_cancelled(cancelled)
        # Asked again just before the publish: building the last chunk takes a while, and
        # a client that went away may only be known to have gone by then.
        staged.commit(check=lambda: _check_cancelled(cancelled))
    return staged.rows


def _check_cancelled(cancelled: Cancelled) -> None:
    if cancelled():
        raise flight.FlightCancelledError("the client cancelled the write or went away; "
                                          "none of its rows were written")


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
    """Creates ``name`` from ``schema`` holding the stream's rows, or nothing at all: the
    table is filled while staged and named only at the end. With ``exist_ok`` an
    existing table (or one created meanwhile) is appended to instead."""
    if exist_ok and _exists(conn, name):
        return append_stream(conn.open_table(name), reader, cancelled, batch_id)
    table = conn.catalog.create_staged(name, schema)
    try:
        rows = append_stream(table, reader, cancelled, batch_id, exclusive=True)
        try:
            conn.catalog.publish_staged(table)
        except TableExistsError:
            if not exist_ok:
                raise
            # Another writer created it meanwhile: its rows move over in one append.
            log.info("table %r appeared meanwhile; appending the staged rows to it", name)
            rows = append_stream(conn.open_table(name), table.snapshot().scan(), cancelled,
                                 batch_id)
            _discard_quietly(conn, table)
    except BaseException:
        _discard_quietly(conn, table)
        raise
    return rows


def _discard_quietly(conn: SqlConnection, table: Table) -> None:
    try:
        conn.catalog.discard_staged(table)
    except Exception as exc:  # the original failure matters more than this one
        log.warning("could not remove staged table %r (gc will): %s", table.name, exc)


def _replace(conn: SqlConnection, name: str, reader: object, schema: pa.Schema,
             cancelled: Cancelled) -> int:
    table = conn.catalog.create_staged(name, schema)
    try:
        rows = append_stream(table, reader, cancelled, exclusive=True)
        conn.catalog.publish_staged(table, replace=True)
    except BaseException:
        _discard_quietly(conn, table)
        raise
    return rows
