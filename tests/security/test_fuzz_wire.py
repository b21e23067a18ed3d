"""Random bytes on the wire: DoGet tickets and DoPut FlightData that are noise, or
noise dressed as Flight SQL. The server must answer each with a status the client can
act on (never INTERNAL or UNKNOWN) and keep serving."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.service import handles
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.service.wire import encode_message
from quiver.flight_server.sql import connect
from quiver.proto import flight_pb2, flight_sql_pb2, pack
from tests.security.wire import field

SERVICE = "/arrow.flight.protocol.FlightService"
BAD = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

_TYPE_URLS = ["type.googleapis.com/arrow.flight.protocol.sql." + name for name in (
    "TicketStatementQuery", "CommandStatementQuery", "CommandGetTables",
    "CommandGetSqlInfo", "CommandPreparedStatementQuery", "CommandStatementIngest",
    "CommandStatementUpdate", "CommandGetXdbcTypeInfo", "Nonsense")]


@contextmanager
def _server() -> Iterator[str]:
    conn = connect(f"memory://fuzz-{uuid.uuid4().hex}")
    conn.sql("CREATE TABLE docs (id BIGINT NOT NULL, title VARCHAR)")
    conn.sql("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta')")
    server = QuiverFlightServer(conn, "grpc://127.0.0.1:0")
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        conn.close()
        drop_memory_store(conn.uri)


def _any(type_url: str, value: bytes) -> bytes:
    from google.protobuf import any_pb2

    return any_pb2.Any(type_url=type_url, value=value).SerializeToString()


tickets = st.one_of(
    st.binary(max_size=300),
    st.builds(_any, st.sampled_from(_TYPE_URLS), st.binary(max_size=200)),
    st.builds(lambda b: pack(flight_sql_pb2.TicketStatementQuery(statement_handle=b)),
              st.binary(max_size=200)),
    st.builds(lambda b: pack(flight_sql_pb2.TicketStatementQuery(
        statement_handle=handles.MAGIC + b)), st.binary(max_size=200)),
    st.text(max_size=120).map(str.encode),
)

_SCHEMA = pa.schema([("id", pa.int64()), ("title", pa.string())])
_BATCH = pa.record_batch([pa.array([1, 2, 3]), pa.array(["a", "bb", "ccc"])], schema=_SCHEMA)
_GOOD_SCHEMA = encode_message(_SCHEMA.serialize())
_GOOD_BATCH = encode_message(_BATCH.serialize())


def _flip(data: bytes, positions: list[int], values: bytes) -> bytes:
    out = bytearray(data)
    for pos, value in zip(positions, values, strict=False):
        out[pos % len(out)] = value
    return bytes(out)


descriptors = st.one_of(
    st.just(flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.PATH,
                                        path=["docs"]).SerializeToString()),
    st.builds(lambda cmd: flight_pb2.FlightDescriptor(
        type=flight_pb2.FlightDescriptor.CMD, cmd=cmd).SerializeToString(),
        st.one_of(st.binary(max_size=100),
                  st.builds(_any, st.sampled_from(_TYPE_URLS), st.binary(max_size=100)))),
    st.binary(max_size=60),
)
messages = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda h, b: field(2, h) + field(1000, b), st.binary(max_size=200),
              st.binary(max_size=200)),
    st.builds(_flip, st.just(_GOOD_BATCH), st.lists(st.integers(0, 10_000), max_size=8),
              st.binary(min_size=1, max_size=8)),
    st.builds(lambda n: _GOOD_BATCH[:n], st.integers(0, len(_GOOD_BATCH))),
    st.just(_GOOD_BATCH),
)
streams = st.tuples(
    descriptors,
    st.one_of(st.just(_GOOD_SCHEMA), st.binary(max_size=200),
              st.builds(_flip, st.just(_GOOD_SCHEMA),
                        st.lists(st.integers(0, 10_000), max_size=4),
                        st.binary(min_size=1, max_size=4))),
    st.lists(messages, max_size=4),
)


def _check(err: grpc.RpcError) -> None:
    assert err.code() not in BAD, (err.code(), err.details())
    assert len(err.details().encode()) <= 1024


def _alive(channel: grpc.Channel) -> None:
    call = channel.unary_stream(f"{SERVICE}/DoGet", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    ticket = flight_pb2.Ticket(ticket=b"SELECT count(*) AS n FROM docs").SerializeToString()
    assert len(list(call(ticket, timeout=30))) == 2  # schema and one batch


def test_random_doget_tickets_never_internal_and_server_stays_up() -> None:
    with _server() as address, grpc.insecure_channel(address) as channel:
        call = channel.unary_stream(f"{SERVICE}/DoGet", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)

        @FUZZ
        @given(tickets)
        def one(ticket: bytes) -> None:
            request = flight_pb2.Ticket(ticket=ticket).SerializeToString()
            try:
                list(call(request, timeout=30))
            except grpc.RpcError as err:
                _check(err)

        one()
        _alive(channel)


def test_random_doget_request_bytes_never_internal() -> None:
    with _server() as address, grpc.insecure_channel(address) as channel:
        call = channel.unary_stream(f"{SERVICE}/DoGet", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)

        @FUZZ
        @given(st.binary(max_size=300))
        def one(request: bytes) -> None:
            try:
                list(call(request, timeout=30))
            except grpc.RpcError as err:
                _check(err)

        one()
        _alive(channel)


def test_random_doput_flight_data_never_internal_and_server_stays_up() -> None:
    with _server() as address, grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(f"{SERVICE}/DoPut", request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)

        @FUZZ
        @given(streams)
        def one(stream: tuple[bytes, bytes, list[bytes]]) -> None:
            descriptor, schema, rest = stream
            first = field(1, descriptor) + schema
            try:
                list(call(iter([first, *rest]), timeout=30))
            except grpc.RpcError as err:
                _check(err)

        one()
        _alive(channel)
