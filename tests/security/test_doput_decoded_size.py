"""A DoPut batch may not decode to more than the server's message limit: a compressed
batch of a few kilobytes that expands to megabytes, or columns whose buffers all point
at the same bytes of a small body, is refused with RESOURCE_EXHAUSTED before anything is
decompressed or written; compressed batches within the limit are taken as before."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.service.transport import SERVICE, encode_message
from quiver.flight_server.sql import connect
from quiver.proto import flight_pb2
from tests.security.wire import field

LIMIT = 4 << 20


@pytest.fixture
def server(tmp_path) -> Iterator[QuiverFlightServer]:
    conn = connect(str(tmp_path / "root"))
    conn.sql("CREATE TABLE wide (" + ", ".join(f"c{i} BIGINT" for i in range(64)) + ")")
    conn.sql("CREATE TABLE narrow (x BIGINT, s VARCHAR)")
    srv = QuiverFlightServer(conn, "grpc://127.0.0.1:0", max_message_bytes=LIMIT)
    try:
        yield srv
    finally:
        srv.shutdown(0)


def _put(srv: QuiverFlightServer, table: str, batch: pa.RecordBatch,
         compression: str | None) -> None:
    client = flight.connect(f"grpc://127.0.0.1:{srv.port}")
    options = flight.FlightCallOptions(
        write_options=pa.ipc.IpcWriteOptions(compression=compression))
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), batch.schema,
                                   options=options)
    writer.write_batch(batch)
    writer.done_writing()
    reader.read()
    writer.close()


def _count(srv: QuiverFlightServer, table: str) -> int:
    return srv.conn.sql(f"SELECT count(*) AS n FROM {table}").to_pylist()[0]["n"]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_a_compressed_batch_expanding_past_the_limit_is_refused_unread(server, compression
                                                                       ) -> None:
    zeros = np.zeros(2_000_000, np.int64)  # 16 MB decoded, a few KB compressed
    bomb = pa.record_batch([pa.array(zeros), pa.array([""] * len(zeros))], names=["x", "s"])
    with pytest.raises(pa.ArrowException, match="decodes to 24,000,004 bytes") as err:
        _put(server, "narrow", bomb, compression)
    assert "resource exhausted" in str(err.value).lower()
    assert _count(server, "narrow") == 0
    # Compression as such is welcome: the same columns, small enough, are taken.
    small = bomb.slice(0, 1000)
    _put(server, "narrow", pa.record_batch([pa.array(small[0].to_numpy()),
                                            pa.array(small[1].to_pylist())],
                                           names=["x", "s"]), compression)
    assert _count(server, "narrow") == 1000


def _aliased_message(rows: int, columns: int) -> tuple[bytes, bytes]:
    """A record batch message of ``columns`` BIGINT columns whose data buffers all point
    at the first column's bytes, with a body holding that one column: small to send,
    ``columns`` times larger once read."""
    batch = pa.record_batch([pa.array(np.arange(rows, dtype=np.int64))] * columns,
                            names=[f"c{i}" for i in range(columns)])
    msg = pa.ipc.read_message(batch.serialize())
    meta = bytearray(msg.metadata.to_pybytes())
    body = msg.body.to_pybytes()
    # Each column has a validity buffer (empty) and a data buffer: (offset, length) pairs,
    # 16 bytes each, stored together; find them by the first data buffer's pair.
    first = struct.pack("<qq", 0, rows * 8)
    start = bytes(meta).index(first) - 16
    for i in range(columns):
        validity, data = start + 32 * i, start + 32 * i + 16
        assert struct.unpack_from("<qq", meta, validity)[1] == 0
        assert struct.unpack_from("<q", meta, data + 8)[0] == rows * 8
        struct.pack_into("<q", meta, validity, 0)
        struct.pack_into("<q", meta, data, 0)
    # The message's bodyLength: the one column now sent.
    whole = struct.pack("<q", len(body))
    assert bytes(meta).count(whole) == 1
    at = bytes(meta).index(whole)
    struct.pack_into("<q", meta, at, rows * 8)
    return bytes(meta), body[:rows * 8]


def test_columns_sharing_one_buffer_cannot_multiply_a_batch_past_the_limit(server) -> None:
    rows, columns = 20_000, 64  # 160 KB sent, 10 MB once every column reads it
    header, body = _aliased_message(rows, columns)
    schema = pa.schema([(f"c{i}", pa.int64()) for i in range(columns)])
    descriptor = flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.PATH,
                                             path=["wide"]).SerializeToString()
    first = field(1, descriptor) + encode_message(schema.serialize())
    data = field(2, header) + field(1000, body)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.stream_stream(f"/{SERVICE}/DoPut", request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            list(call(iter([first, data]), timeout=30))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert "10,240,000 bytes" in err.value.details()
    assert _count(server, "wide") == 0
