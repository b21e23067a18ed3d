"""Status codes and messages a hostile or careless client gets back: never INTERNAL for
its own mistakes, never a traceback, an object repr or a server path, never its own
10,000-character input echoed back whole, never a message longer than 1 KiB.

Every case goes through a real client (ADBC, pyarrow.flight or a raw gRPC channel)
against an in-process server."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from quiver.flight_server.service.errors import MAX_MESSAGE_BYTES, client_message, status_of
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.service.wire import encode_message
from quiver.flight_server.sql import connect
from quiver.proto import flight_pb2, flight_sql_pb2, pack
from tests.security.wire import field

SERVICE = "/arrow.flight.protocol.FlightService"
LONG_NAME = "t" * 10_000


@pytest.fixture
def docs(quiver_server) -> str:
    quiver_server.conn.sql("CREATE TABLE docs (id BIGINT NOT NULL, title VARCHAR)")
    return f"grpc://127.0.0.1:{quiver_server.port}"


def _adbc(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


def _raw_query(uri: str, sql: str) -> grpc.RpcError:
    with grpc.insecure_channel(uri.removeprefix("grpc://")) as channel:
        call = channel.unary_unary(f"{SERVICE}/GetFlightInfo",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
        desc = flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.CMD, cmd=cmd)
        with pytest.raises(grpc.RpcError) as err:
            call(desc.SerializeToString(), timeout=30)
    return err.value


def _raw_put(uri: str, messages: list[bytes]) -> grpc.RpcError:
    with grpc.insecure_channel(uri.removeprefix("grpc://")) as channel:
        call = channel.stream_stream(f"{SERVICE}/DoPut", request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            list(call(iter(messages), timeout=30))
    return err.value


def _first(descriptor: bytes, message: bytes = b"") -> bytes:
    """A FlightData carrying ``descriptor`` (field 1) and then ``message``'s fields."""
    return field(1, descriptor) + message


def _path(name: str) -> bytes:
    return flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.PATH,
                                       path=[name]).SerializeToString()


def _clean(details: str) -> None:
    """What no client message may carry."""
    assert len(details.encode()) <= MAX_MESSAGE_BYTES
    assert "Traceback" not in details and 'File "' not in details
    assert " object at 0x" not in details
    assert "\n" not in details


# -- nesting -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "hint"), [
    ("SELECT " + "(" * 50 + "1" + ")" * 50 + " AS x", ""),
    ("SELECT " + "(" * 500 + "1" + ")" * 500 + " AS x", ""),
    # Planned in time growing with the square of the chain: seconds of work per
    # statement that no time limit or cancel could stop.
    ("SELECT " + "+".join(["1"] * 3000) + " AS x", "IN (...)"),
    # Ran out of stack while its WHERE was read for file pruning (INTERNAL before).
    ("SELECT * FROM docs WHERE " + " OR ".join(f"id = {i}" for i in range(1000)), "IN (...)"),
    ("DELETE FROM docs WHERE " + " AND ".join(f"id <> {i}" for i in range(1000)), "IN (...)"),
], ids=["parens-50", "parens-500", "plus-chain", "or-chain", "and-chain-delete"])
def test_a_statement_nested_too_deeply_is_invalid_argument_before_it_runs(docs, sql,
                                                                          hint) -> None:
    err = _raw_query(docs, sql)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "nested too deeply" in err.details() and hint in err.details()
    _clean(err.details())
    conn = _adbc(docs)
    try:
        with pytest.raises(adbc.Error) as raised:
            conn.cursor().execute(sql)
        assert raised.value.status_code == AdbcStatusCode.INVALID_ARGUMENT
        # The server is still serving.
        cur = conn.cursor()
        cur.execute("SELECT count(*) AS n FROM docs")
        assert cur.fetchall() == [(0,)]
    finally:
        conn.close()


def test_a_long_chain_within_the_limit_answers_like_the_same_values_in_a_list(docs) -> None:
    ids = range(0, 900, 2)
    chained = "SELECT id FROM docs WHERE " + " OR ".join(f"id = {i}" for i in ids) + \
        " ORDER BY id"
    listed = f"SELECT id FROM docs WHERE id IN ({', '.join(map(str, ids))}) ORDER BY id"
    conn = _adbc(docs)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO docs SELECT i AS id, 't' || i AS title "
                    "FROM generate_series(0, 9) AS g(i)")
        cur.execute(chained)
        got = cur.fetchall()
        cur.execute(listed)
        assert got == cur.fetchall() == [(i,) for i in range(0, 10, 2)]
    finally:
        conn.close()


# -- DoPut ---------------------------------------------------------------------------------------

def test_null_into_not_null_column_through_doput_is_invalid_argument(docs) -> None:
    client = flight.connect(docs)
    rows = pa.table({"id": pa.array([1, None], pa.int64()), "title": ["a", "b"]})
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("docs"), rows.schema)
    with pytest.raises(pa.ArrowInvalid, match="non-nullable") as err:
        writer.write_table(rows)
        writer.done_writing()
        reader.read()
        writer.close()
    assert "internal" not in str(err.value).lower()
    # Nothing was written and the table still takes good rows.
    good = pa.table({"id": pa.array([3], pa.int64()), "title": ["c"]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("docs"), good.schema)
    writer.write_table(good)
    writer.close()
    assert client.do_get(flight.Ticket(b"SELECT id FROM docs")).read_all().to_pylist() == [
        {"id": 3}]


def test_garbage_ipc_header_in_doput_is_invalid_argument(docs) -> None:
    garbage = b"\x12\x10" + bytes(range(7, 23))  # data_header: 16 bytes of nonsense
    err = _raw_put(docs, [_first(_path("docs"), garbage)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "malformed" in err.details()
    _clean(err.details())


def test_truncated_ipc_body_in_doput_is_invalid_argument(docs) -> None:
    schema = pa.schema([("id", pa.int64()), ("title", pa.string())])
    batch = pa.record_batch([pa.array([1, 2, 3]), pa.array(["a", "bb", "ccc"])], schema=schema)
    whole = batch.serialize().to_pybytes()
    cut = encode_message(pa.py_buffer(whole[:-16]))  # the header promises 16 more bytes
    err = _raw_put(docs, [_first(_path("docs"), encode_message(schema.serialize())), cut])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    _clean(err.details())


def test_batch_with_corrupt_offsets_in_doput_is_invalid_argument(docs) -> None:
    schema = pa.schema([("id", pa.int64()), ("title", pa.string())])
    batch = pa.record_batch([pa.array([1, 2, 3]), pa.array(["a", "bb", "ccc"])], schema=schema)
    raw = bytearray(batch.serialize().to_pybytes())
    raw[-40:-8] = b"\xff" * 32  # the string column's offsets and data
    err = _raw_put(docs, [_first(_path("docs"), encode_message(schema.serialize())),
                          encode_message(pa.py_buffer(bytes(raw)))])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    _clean(err.details())


# -- long names ----------------------------------------------------------------------------------

def _short_and_invalid(details: str) -> None:
    _clean(details)
    assert "invalid table name" in details
    assert LONG_NAME not in details and "t" * 65 not in details
    assert len(details) < 300


def test_10000_character_table_name_in_doput_path_is_short_invalid_argument(docs) -> None:
    rows = pa.table({"id": pa.array([1], pa.int64())})
    message = encode_message(rows.schema.serialize())
    err = _raw_put(docs, [_first(_path(LONG_NAME), message)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    _short_and_invalid(err.details())


def test_10000_character_table_name_in_bulk_ingest_is_short_invalid_argument(docs) -> None:
    conn = _adbc(docs)
    try:
        with pytest.raises(adbc.Error) as err:
            conn.cursor().adbc_ingest(LONG_NAME, pa.table({"id": [1]}), mode="create")
        assert err.value.status_code == AdbcStatusCode.INVALID_ARGUMENT
        _short_and_invalid(str(err.value).split("\n")[0])
    finally:
        conn.close()
    cmd = pack(flight_sql_pb2.CommandStatementIngest(
        table=LONG_NAME, table_definition_options=flight_sql_pb2.CommandStatementIngest
        .TableDefinitionOptions(if_not_exist=1, if_exists=2)))
    desc = flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.CMD, cmd=cmd)
    message = encode_message(pa.schema([("id", pa.int64())]).serialize())
    raw = _raw_put(docs, [_first(desc.SerializeToString(), message)])
    assert raw.code() == grpc.StatusCode.INVALID_ARGUMENT
    _short_and_invalid(raw.details())


@pytest.mark.parametrize("sql", [f"SELECT * FROM {LONG_NAME}",
                                 f"INSERT INTO {LONG_NAME} VALUES (1)",
                                 f"DROP TABLE {LONG_NAME}"])
def test_10000_character_table_name_in_sql_is_short_invalid_argument(docs, sql) -> None:
    err = _raw_query(docs, sql)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()[:200]
    _short_and_invalid(err.details())


def test_a_huge_bad_statement_gets_a_message_under_1_kib(docs) -> None:
    sql = "SELECT " + ", ".join(f"nosuchcolumn_{i}" for i in range(20_000)) + " FROM docs"
    err = _raw_query(docs, sql)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    _clean(err.details())


# -- server paths --------------------------------------------------------------------------------

def test_corrupt_table_metadata_message_names_no_server_path(docs, quiver_server,
                                                             server_root) -> None:
    (server_root / "_catalog").mkdir(exist_ok=True)
    (server_root / "_catalog" / "broken.json").write_text("{not json")
    err = _raw_query(docs, "SELECT * FROM broken")
    _clean(err.details())
    assert str(server_root) not in err.details()
    assert str(server_root.parent) not in err.details()


def test_client_message_scrubs_paths_reprs_and_tracebacks() -> None:
    text = ("put 'a/b' in file:///srv/quiver/root: failed at /var/lib/quiver/x.parquet "
            "by <quiver.supertable.table.Table object at 0x7f00deadbeef>\n"
            "Traceback (most recent call last):\n  File \"/srv/app.py\", line 3, in f\n")
    out = client_message(text)
    for leak in ("/srv/quiver", "/var/lib", "0x7f00", "Traceback", "app.py"):
        assert leak not in out
    assert out.startswith("put 'a/b' in <local path>: failed at <path>")
    # URIs and relative names stay readable.
    assert client_message("at grpc://127.0.0.1:5000 a/b/c") == "at grpc://127.0.0.1:5000 a/b/c"
    assert len(client_message("é" * 5000).encode()) <= MAX_MESSAGE_BYTES


def test_raw_enospc_maps_to_resource_exhausted_without_its_path() -> None:
    exc = OSError(28, "No space left on device", "/var/lib/quiver/tmp/x")
    code, message = status_of(exc)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "storage is full" in message and "/var/lib" not in message


# -- full disk -----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs; skipped where this process may not mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30,
                       check=False)


def test_full_local_disk_is_resource_exhausted_naming_the_storage(small_disk) -> None:
    root = small_disk / f"root-{uuid.uuid4().hex[:8]}"
    conn = connect(str(root))
    server = QuiverFlightServer(conn, "grpc://127.0.0.1:0")
    try:
        conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR)")
        client = flight.connect(f"grpc://127.0.0.1:{server.port}")
        # Incompressible rows, well past the 2 MiB the disk holds.
        bodies = [os.urandom(2048).hex() for _ in range(2048)]
        rows = pa.table({"id": pa.array(range(len(bodies)), pa.int64()), "body": bodies})
        writer, reader = client.do_put(flight.FlightDescriptor.for_path("docs"), rows.schema)
        with pytest.raises(pa.ArrowException) as err:
            writer.write_table(rows)
            writer.done_writing()
            reader.read()
            writer.close()
        text = str(err.value)
        assert "resource exhausted" in text.lower() or "RESOURCE_EXHAUSTED" in text, text
        assert "storage is full" in text
        assert str(small_disk) not in text
        # Still serving reads.
        assert client.do_get(flight.Ticket(b"SELECT 1 AS one")).read_all().num_rows == 1
    finally:
        server.shutdown()
        conn.close()
