"""The Flight messages written by hand read back, through pyarrow and protobuf, as the
messages those libraries would have written."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.flight_server.service.wire import (
    Endpoint,
    Info,
    SchemaForms,
    encode_info,
    encode_put_result,
    path_descriptor,
    varint,
)
from quiver.proto import flight_pb2

_TYPES = [pa.int64(), pa.string(), pa.float32(), pa.bool_(), pa.large_binary(),
          pa.list_(pa.float32(), 4), pa.dictionary(pa.int32(), pa.string())]

schemas = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(_TYPES), st.booleans()),
    min_size=0, max_size=5,
).map(lambda cols: pa.schema([pa.field(n, t, nullable=k) for n, t, k in cols]))
uris = st.builds(lambda host, port: f"grpc://{host}:{port}",
                 st.sampled_from(["127.0.0.1", "localhost", "[::1]"]),
                 st.integers(1, 65535))
endpoints = st.lists(st.builds(Endpoint, st.binary(max_size=300),
                               st.lists(uris, max_size=3)), max_size=4)
counts = st.integers(-1, 2**63 - 1)


@settings(max_examples=150, deadline=None)
@given(schemas, endpoints, counts, counts, st.binary(max_size=200))
def test_a_hand_written_flight_info_reads_as_pyarrow_would_write_it(
        schema: pa.Schema, ends: list[Endpoint], records: int, nbytes: int,
        command: bytes) -> None:
    descriptor = flight.FlightDescriptor.for_command(command)
    info = Info(schema, ends, records, nbytes)
    wire = encode_info(info, schema.serialize().to_pybytes(), descriptor.serialize())
    theirs = flight.FlightInfo(
        schema, descriptor,
        [flight.FlightEndpoint(e.ticket, [flight.Location(u) for u in e.locations])
         for e in ends], records, nbytes)
    assert flight_pb2.FlightInfo.FromString(wire) == \
        flight_pb2.FlightInfo.FromString(theirs.serialize())
    read = flight.FlightInfo.deserialize(wire)
    assert read.schema.equals(schema, check_metadata=True)
    assert read.descriptor == descriptor
    assert [(e.ticket.ticket, [loc.uri.decode() for loc in e.locations])
            for e in read.endpoints] == [(e.ticket, list(e.locations)) for e in ends]
    assert (read.total_records, read.total_bytes) == (records, nbytes)


@given(st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_a_path_descriptor_is_the_one_pyarrow_makes(path: list[str]) -> None:
    ours = flight_pb2.FlightDescriptor.FromString(path_descriptor(*path))
    theirs = flight_pb2.FlightDescriptor.FromString(
        flight.FlightDescriptor.for_path(*path).serialize())
    assert ours == theirs


@given(st.integers(0, 2**64 - 1))
def test_varints_read_back_as_protobuf_reads_them(value: int) -> None:
    # total_records (field 4) is an int64: the top half reads back negative.
    msg = flight_pb2.FlightInfo.FromString(b"\x20" + varint(value))
    assert msg.total_records == (value - 2**64 if value >= 2**63 else value)
    assert len(varint(value)) == max(1, (value.bit_length() + 6) // 7)


@given(st.binary(max_size=300))
def test_put_results_carry_their_metadata(metadata: bytes) -> None:
    assert flight_pb2.PutResult.FromString(encode_put_result(metadata)).app_metadata == \
        metadata


def test_schema_forms_are_shared_by_equal_schemas_and_kept_apart_by_metadata() -> None:
    forms = SchemaForms(size=4)
    schema = pa.schema([("a", pa.int64())])
    first = forms.of(schema)
    assert forms.of(pa.schema([("a", pa.int64())])) is first
    tagged = forms.of(schema.with_metadata({"k": "v"}))
    assert tagged is not first
    assert pa.ipc.read_schema(pa.py_buffer(tagged.ipc)).metadata == {b"k": b"v"}
    assert first.plain is None
    sent = flight_pb2.FlightData.FromString(first.message)
    assert sent.data_header and not sent.data_body


def test_a_dictionary_column_is_sent_as_its_value_type_but_announced_as_it_is() -> None:
    schema = pa.schema([("tag", pa.dictionary(pa.int32(), pa.string())), ("n", pa.int64())])
    form = SchemaForms().of(schema)
    assert form.plain == pa.schema([("tag", pa.string()), ("n", pa.int64())])
    assert pa.ipc.read_schema(pa.py_buffer(form.ipc)).equals(schema)


def test_schema_forms_keep_only_the_latest_schemas() -> None:
    forms = SchemaForms(size=3)
    made = [forms.of(pa.schema([(f"c{i}", pa.int64())])) for i in range(5)]
    assert forms.of(pa.schema([("c4", pa.int64())])) is made[4]
    assert forms.of(pa.schema([("c0", pa.int64())])) is not made[0]
