"""Bulk ingest (CommandStatementIngest) as ADBC's ``adbc_ingest`` sends it, in every mode."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from quiver.proto import flight_sql_pb2, pack

Opts = flight_sql_pb2.CommandStatementIngest.TableDefinitionOptions


@pytest.fixture
def db(flight_uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(flight_uri)
    try:
        yield conn
    finally:
        conn.close()


def _rows(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table({"id": ids, "name": pa.array([f"n{i}" for i in range(start, start + n)])})


def _count(server, table: str) -> int:
    return server.conn.sql(f"SELECT count(*) AS n FROM {table}").column(0)[0].as_py()


def test_create_mode_makes_the_table_and_reports_rows(db, quiver_server) -> None:
    assert db.cursor().adbc_ingest("t", _rows(0, 10), mode="create") == 10
    assert _count(quiver_server, "t") == 10


def test_create_mode_on_an_existing_table_fails_already_exists_and_adds_nothing(
        db, quiver_server) -> None:
    db.cursor().adbc_ingest("t", _rows(0, 3), mode="create")
    with pytest.raises(adbc.ProgrammingError, match="already exists") as err:
        db.cursor().adbc_ingest("t", _rows(3, 3), mode="create")
    assert err.value.status_code == AdbcStatusCode.ALREADY_EXISTS
    assert _count(quiver_server, "t") == 3


def test_append_mode_adds_rows_and_fails_not_found_on_a_missing_table(db,
                                                                      quiver_server) -> None:
    with pytest.raises(adbc.ProgrammingError, match="no table 'missing'") as err:
        db.cursor().adbc_ingest("missing", _rows(0, 3), mode="append")
    assert "NOT_FOUND" in str(err.value)
    assert "missing" not in quiver_server.conn.list_tables()
    db.cursor().adbc_ingest("t", _rows(0, 3), mode="create")
    assert db.cursor().adbc_ingest("t", _rows(3, 4), mode="append") == 4
    assert _count(quiver_server, "t") == 7


def test_create_append_mode_creates_then_appends(db, quiver_server) -> None:
    assert db.cursor().adbc_ingest("t", _rows(0, 2), mode="create_append") == 2
    assert db.cursor().adbc_ingest("t", _rows(2, 2), mode="create_append") == 2
    assert _count(quiver_server, "t") == 4


def test_replace_mode_swaps_in_the_new_rows_and_schema(db, quiver_server) -> None:
    db.cursor().adbc_ingest("t", _rows(0, 5), mode="create")
    fresh = pa.table({"k": pa.array([1.5, 2.5]), "label": ["x", "y"]})
    assert db.cursor().adbc_ingest("t", fresh, mode="replace") == 2
    got = quiver_server.conn.sql("SELECT k, label FROM t ORDER BY k")
    assert got.to_pylist() == [{"k": 1.5, "label": "x"}, {"k": 2.5, "label": "y"}]
    assert db.cursor().adbc_ingest("new_one", _rows(0, 1), mode="replace") == 1
    assert sorted(quiver_server.conn.list_tables()) == ["new_one", "t"]


def test_unsupported_ingest_options_are_rejected_by_name(db, quiver_server) -> None:
    with pytest.raises(adbc.ProgrammingError, match="temporary tables are not supported"):
        db.cursor().adbc_ingest("t", _rows(0, 1), mode="create", temporary=True)
    with pytest.raises(adbc.ProgrammingError, match="catalog 'c' is not supported"):
        db.cursor().adbc_ingest("t", _rows(0, 1), mode="create", catalog_name="c")
    with pytest.raises(adbc.ProgrammingError, match="schema 's' is not supported"):
        db.cursor().adbc_ingest("t", _rows(0, 1), mode="create", db_schema_name="s")
    assert quiver_server.conn.list_tables() == []


def test_created_table_gets_default_indexes(db, quiver_server) -> None:
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(np.random.default_rng(1).random(40, dtype=np.float32)), 4)
    data = pa.table({"id": np.arange(10), "body": [f"word{i} common" for i in range(10)],
                     "emb": vectors})
    db.cursor().adbc_ingest("docs", data, mode="create")
    spec = quiver_server.conn.open_table("docs").spec
    assert spec.fts == ("body",)
    assert list(spec.vector) == ["emb"]
    hits = quiver_server.conn.sql("SELECT id FROM bm25_search('docs', 'body', 'word3', 5)")
    assert hits.column("id").to_pylist() == [3]


def test_many_small_batches_are_committed_in_few_large_appends(db, quiver_server) -> None:
    db.cursor().adbc_ingest("t", _rows(0, 1), mode="create")
    before = quiver_server.conn.open_table("t").version
    batches = _rows(1, 200_000).to_batches(max_chunksize=1_000)
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
    assert db.cursor().adbc_ingest("t", reader, mode="append") == 200_000
    commits = quiver_server.conn.open_table("t").version - before
    assert 1 <= commits <= 2
    assert _count(quiver_server, "t") == 200_001


def _ingest_descriptor(table: str, if_not_exist: int, if_exists: int) -> flight.FlightDescriptor:
    cmd = flight_sql_pb2.CommandStatementIngest(
        table=table, table_definition_options=Opts(if_not_exist=if_not_exist,
                                                   if_exists=if_exists))
    return flight.FlightDescriptor.for_command(pack(cmd))


def test_replace_that_fails_mid_stream_leaves_the_old_table(flight_uri, quiver_server) -> None:
    conn = quiver_server.conn
    table = conn.create_table("keep", pa.schema([("id", pa.int64()), ("name", pa.string())]))
    table.append(_rows(0, 3))
    client = flight.connect(flight_uri)
    big = _rows(0, 140_000)
    desc = _ingest_descriptor("keep", Opts.TABLE_NOT_EXIST_OPTION_CREATE,
                              Opts.TABLE_EXISTS_OPTION_REPLACE)
    options = flight.FlightCallOptions(timeout=1.5)
    with pytest.raises((flight.FlightError, pa.ArrowException)):
        writer, _ = client.do_put(desc, big.schema, options=options)
        writer.write_table(big)  # one whole chunk reaches the staging table
        time.sleep(2.5)  # the call's deadline passes mid-stream
        writer.write_table(big)
        writer.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and conn.list_tables() != ["keep"]:
        time.sleep(0.1)
    assert conn.list_tables() == ["keep"]
    assert _count(quiver_server, "keep") == 3


def test_create_that_fails_mid_stream_leaves_no_table(flight_uri, quiver_server) -> None:
    client = flight.connect(flight_uri)
    big = _rows(0, 140_000)
    desc = _ingest_descriptor("half", Opts.TABLE_NOT_EXIST_OPTION_CREATE,
                              Opts.TABLE_EXISTS_OPTION_FAIL)
    with pytest.raises((flight.FlightError, pa.ArrowException)):
        writer, _ = client.do_put(desc, big.schema,
                                  options=flight.FlightCallOptions(timeout=1.5))
        writer.write_table(big)
        time.sleep(2.5)
        writer.write_table(big)
        writer.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and quiver_server.conn.list_tables():
        time.sleep(0.1)
    assert quiver_server.conn.list_tables() == []


_DYING_CLIENT = """
import os, sys
import pyarrow as pa, pyarrow.flight as flight
desc = flight.FlightDescriptor.deserialize(bytes.fromhex(sys.argv[2]))
rows = pa.table({"id": pa.array(range(140_000), pa.int64()),
                 "name": pa.array([f"n{i}" for i in range(140_000)])})
writer, _ = flight.connect(sys.argv[1]).do_put(desc, rows.schema)
writer.write_table(rows)
os._exit(0)  # the process dies mid-stream: no end of stream is ever sent
"""


def test_replace_from_a_client_that_dies_mid_stream_leaves_the_old_table(
        flight_uri, quiver_server) -> None:
    conn = quiver_server.conn
    conn.create_table("keep", pa.schema([("id", pa.int64()), ("name", pa.string())])).append(
        _rows(0, 3))
    desc = _ingest_descriptor("keep", Opts.TABLE_NOT_EXIST_OPTION_CREATE,
                              Opts.TABLE_EXISTS_OPTION_REPLACE)
    subprocess.run([sys.executable, "-c", _DYING_CLIENT, flight_uri,
                    desc.serialize().hex()], check=True, timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and conn.list_tables() != ["keep"]:
        time.sleep(0.1)
    time.sleep(0.5)  # a wrongful swap would land after the staging table is written
    assert conn.list_tables() == ["keep"]
    assert _count(quiver_server, "keep") == 3


def _put(client: flight.FlightClient, desc: flight.FlightDescriptor, data: pa.Table) -> None:
    writer, result = client.do_put(desc, data.schema)
    writer.write_table(data, max_chunksize=10_000)
    writer.done_writing()
    result.read()
    writer.close()


def test_an_append_sent_again_with_its_batch_id_adds_nothing(flight_uri, quiver_server) -> None:
    client = flight.connect(flight_uri)
    data = _rows(0, 300_000)  # several chunks, each its own commit
    cmd = flight_sql_pb2.CommandStatementIngest(
        table="once", table_definition_options=Opts(
            if_not_exist=Opts.TABLE_NOT_EXIST_OPTION_CREATE,
            if_exists=Opts.TABLE_EXISTS_OPTION_APPEND))
    cmd.options["quiver.batch_id"] = "load-7"
    desc = flight.FlightDescriptor.for_command(pack(cmd))
    _put(client, desc, data)
    _put(client, desc, data)
    assert _count(quiver_server, "once") == 300_000
    del cmd.options["quiver.batch_id"]
    _put(client, flight.FlightDescriptor.for_command(pack(cmd)), _rows(0, 5))
    assert _count(quiver_server, "once") == 300_005
