"""The gRPC transport's own wire handling: FlightData written by hand, DoPut streams with
app_metadata, messages over gRPC's default size limit, and what it refuses."""

from __future__ import annotations

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service.wire import decode_flight_data, encode_message, ipc_message
from quiver.proto import flight_pb2


def _batch(rows: int) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array(np.arange(rows, dtype=np.int64)),
                            "name": pa.array([f"n{i}" for i in range(rows)])})


def test_hand_written_flight_data_parses_as_protobuf_and_back_into_the_batch() -> None:
    batch = _batch(1000)
    wire = encode_message(batch.serialize())
    msg = flight_pb2.FlightData.FromString(wire)
    assert msg.data_header and len(msg.data_body) > 0 and not msg.app_metadata
    fields = decode_flight_data(wire)
    back = pa.ipc.read_record_batch(ipc_message(fields[2], fields.get(1000)), batch.schema)
    assert back.equals(batch)
    schema_wire = flight_pb2.FlightData.FromString(encode_message(batch.schema.serialize()))
    assert not schema_wire.data_body
    assert pa.ipc.read_schema(ipc_message(memoryview(schema_wire.data_header), None)).equals(
        batch.schema)


def test_do_put_with_app_metadata_appends_every_batch(quiver_server, flight_uri) -> None:
    quiver_server.conn.sql("CREATE TABLE t (id BIGINT, name VARCHAR)")
    client = flight.connect(flight_uri)
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("t"), _batch(1).schema)
    writer.write_with_metadata(_batch(10), pa.py_buffer(b"first"))
    writer.write_metadata(pa.py_buffer(b"just metadata"))
    writer.write_batch(_batch(5))
    writer.close()
    client.close()
    got = quiver_server.conn.sql("SELECT count(*) AS n FROM t").column(0)[0].as_py()
    assert got == 15


def test_a_batch_over_grpc_default_message_limit_is_accepted(quiver_server,
                                                             flight_uri) -> None:
    quiver_server.conn.sql("CREATE TABLE big (id BIGINT, name VARCHAR)")
    batch = _batch(400_000)
    assert batch.nbytes > 6 << 20  # gRPC refuses messages over 4 MiB by default
    client = flight.connect(flight_uri)
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("big"), batch.schema)
    writer.write_batch(batch)
    writer.close()
    table = client.do_get(flight.Ticket(b"SELECT * FROM big")).read_all()
    client.close()
    assert table.num_rows == 400_000
    assert table.column("id").to_numpy().sum() == batch.column(0).to_numpy().sum()


def test_dictionary_columns_in_do_put_are_refused_as_invalid_argument(quiver_server,
                                                                     flight_uri) -> None:
    quiver_server.conn.sql("CREATE TABLE t (label VARCHAR)")
    labels = pa.array(["a", "b", "a"]).dictionary_encode()
    batch = pa.record_batch({"label": labels})
    client = flight.connect(flight_uri)
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("t"), batch.schema)
    with pytest.raises(pa.ArrowInvalid, match="dictionary-encoded"):
        writer.write_batch(batch)
        writer.close()
    client.close()
    assert quiver_server.conn.sql("SELECT count(*) FROM t").column(0)[0].as_py() == 0


def test_do_put_without_a_descriptor_is_invalid_argument(flight_uri) -> None:
    with grpc.insecure_channel(flight_uri.removeprefix("grpc://")) as channel:
        put = channel.stream_stream("/arrow.flight.protocol.FlightService/DoPut",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            list(put(iter([encode_message(_batch(1).schema.serialize())]), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FlightDescriptor" in err.value.details()


def test_dictionary_results_stream_decoded(flight_uri) -> None:
    client = flight.connect(flight_uri)
    sql = b"SELECT arrow_cast('a', 'Dictionary(Int32, Utf8)') AS label"
    table = client.do_get(flight.Ticket(sql)).read_all()
    client.close()
    assert table.schema.field("label").type == pa.string()
    assert table.to_pylist() == [{"label": "a"}]
