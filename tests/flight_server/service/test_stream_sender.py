"""Streamed calls sent ahead (``stream_sender``): every message arrives, in order, with
the right status; a client that stops reading stops the producer; a cancel closes it;
an error after some messages reaches the client with its code. Each test runs on the
sender, on grpcio's own one-at-a-time path, and on the transport's path for a call the
sender cannot take: all must behave the same."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import stream_sender
from quiver.flight_server.service.errors import NotImplementedCommand, ResourceExhausted
from quiver.flight_server.service.transport import CallContext, FlightTransport
from quiver.flight_server.service.wire import Info

SCHEMA = pa.schema([("i", pa.int64()), ("pad", pa.binary())])


def _batch(i: int, pad_bytes: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array([i], pa.int64()), pa.array([b"x" * pad_bytes])],
                           schema=SCHEMA)


class _Producer:
    """DoGet handlers whose ticket says how many batches, how large, and when to fail:
    ``b"<count>/<pad bytes>/<fail after>"``; counts what they made and whether their
    stream was closed."""

    def __init__(self) -> None:
        self.made = 0
        self.closed = threading.Event()

    def do_get(self, context: CallContext, ticket: flight.Ticket
               ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        count, pad, fail = (int(x) for x in ticket.ticket.decode().split("/"))
        self.made = 0
        self.closed.clear()

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for i in range(count):
                    if i == fail:
                        raise ResourceExhausted(f"stopped after {i} batches")
                    self.made += 1
                    yield _batch(i, pad)
            finally:
                self.closed.set()
        return SCHEMA, batches()

    def get_flight_info(self, context: CallContext,
                        descriptor: flight.FlightDescriptor) -> Info:
        raise NotImplementedCommand("not served")

    def get_schema(self, context: CallContext,
                   descriptor: flight.FlightDescriptor) -> pa.Schema:
        raise NotImplementedCommand("not served")

    def list_flights(self, context: CallContext, criteria: bytes) -> Iterator[Info]:
        return iter(())

    def do_put(self, *args: object) -> None:
        raise NotImplementedCommand("not served")

    def do_action(self, context: CallContext, action: flight.Action) -> Iterator[flight.Result]:
        yield from (flight.Result(pa.py_buffer(str(i).encode()))
                    for i in range(int(action.type)))

    def list_actions(self, context: CallContext) -> Sequence[tuple[str, str]]:
        return []


@pytest.fixture(params=["sent-ahead", "grpcio-path", "call-without-internals"])
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[_Producer, flight.FlightClient]]:
    ahead = request.param != "grpcio-path"
    if ahead and not stream_sender.AVAILABLE:
        pytest.skip("the installed grpcio lacks what the sender needs")
    if request.param == "call-without-internals":
        monkeypatch.setattr(stream_sender, "available", lambda context: False)
    producer = _Producer()
    transport = FlightTransport(producer, "grpc://127.0.0.1:0",
                                send_ahead=ahead)
    client = flight.connect(f"grpc://127.0.0.1:{transport.port}")
    try:
        yield producer, client
    finally:
        client.close()
        transport.stop(0)


@pytest.mark.parametrize(("count", "pad"), [(0, 0), (1, 0), (2, 10), (9, 1000),
                                            (3, stream_sender.PIPELINED_BYTES + 1)])
def test_every_batch_arrives_in_order_and_the_stream_ends_ok(served, count, pad) -> None:
    producer, client = served
    table = client.do_get(flight.Ticket(f"{count}/{pad}/-1".encode())).read_all()
    assert table.column("i").to_pylist() == list(range(count))
    assert all(len(v) == pad for v in table.column("pad").to_pylist())
    assert producer.closed.wait(5)


def test_streamed_action_results_arrive_in_order(served) -> None:
    _, client = served
    got = [r.body.to_pybytes() for r in client.do_action(flight.Action("25", b""))]
    assert got == [str(i).encode() for i in range(25)]


# Batches of 1 MiB are still on their way when the error comes: each must arrive first.
@pytest.mark.parametrize("pad", [100, 1 << 20])
def test_an_error_after_some_batches_reaches_the_client_with_its_code_after_them(
        served, pad) -> None:
    producer, client = served
    reader = client.do_get(flight.Ticket(f"10/{pad}/4".encode()))
    got = []
    # pyarrow reads RESOURCE_EXHAUSTED as ArrowInvalid, its text naming the code.
    with pytest.raises(pa.ArrowException,
                       match="resource exhausted error, with message: stopped after 4"):
        for chunk in reader:
            got.append(chunk.data.column(0)[0].as_py())
    assert got == [0, 1, 2, 3]
    assert producer.closed.wait(5)


def test_a_client_that_stops_reading_stops_the_producer(served) -> None:
    producer, client = served
    # 400 batches of 1 MiB: far more than HTTP/2 flow control lets through unread.
    reader = client.do_get(flight.Ticket(b"400/1048576/-1"))
    first = reader.read_chunk()
    assert first.data.column(0)[0].as_py() == 0
    time.sleep(1.0)
    held = producer.made
    assert held < 30, f"the producer ran {held} batches ahead of a client that stopped"
    rest = reader.read_all()
    assert rest.num_rows == 399
    assert producer.made == 400


def test_a_cancelled_stream_closes_its_producer_and_frees_the_thread(served) -> None:
    producer, client = served
    reader = client.do_get(flight.Ticket(b"400/1048576/-1"))
    reader.read_chunk()
    reader.cancel()
    assert producer.closed.wait(10), "the producer was never closed"
    assert producer.made < 400
    # The server still answers, so no handler thread is stuck on the cancelled call.
    table = client.do_get(flight.Ticket(b"3/1/-1")).read_all()
    assert table.num_rows == 3


def test_a_stream_of_many_mid_sized_batches_arrives_whole(served) -> None:
    _, client = served
    table = client.do_get(flight.Ticket(b"64/65536/-1")).read_all()
    assert table.num_rows == 64
    assert np.array_equal(table.column("i").to_numpy(), np.arange(64))


def test_stopping_the_server_ends_a_stream_whose_client_stopped_reading() -> None:
    producer = _Producer()
    transport = FlightTransport(producer, "grpc://127.0.0.1:0")
    client = flight.connect(f"grpc://127.0.0.1:{transport.port}")
    try:
        reader = client.do_get(flight.Ticket(b"400/1048576/-1"))
        reader.read_chunk()
        time.sleep(0.3)  # the handler is now waiting for the client to read
        started = time.monotonic()
        transport.stop(grace=0.5)
        assert time.monotonic() - started < 10
        assert producer.closed.wait(10), "the producer outlived the server's stop"
        assert producer.made < 400
    finally:
        client.close()
