"""A DoGet's batch stream (``server._BatchStream``) over a real server's handlers: rows are
sent in order in batches of at most ``MAX_BATCH_ROWS`` (a larger batch is sliced, empty
ones are skipped), a cancel flag stops it at the next batch, and however it ends its
stream registration and admission slot are given back."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import server as server_module
from quiver.flight_server.service.transport import CallContext
from quiver.supertable.interrupt import Interrupt


class _GrpcCall:
    """What gRPC's servicer context answers for a call whose client is still there."""

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def cancel(self) -> None:
        pass


def _stream(srv, batches: list[pa.RecordBatch], key: bytes = b"ticket"):
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
    context = CallContext(_GrpcCall(), "DoGet")
    stream = server_module._BatchStream(srv, key, reader, srv.streams.start(key), context)
    slot = srv.admission.enter(Interrupt(None))
    stream.hold(slot)
    return stream


def _ints(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"v": pa.array(range(start, start + n), pa.int64())})


def test_large_batches_are_sliced_empty_ones_skipped_and_rows_kept_in_order(
        quiver_server) -> None:
    limit = server_module.MAX_BATCH_ROWS
    big = 2 * limit + 123
    batches = [_ints(0, 0), _ints(0, big), _ints(big, 0), _ints(big, 5)]
    stream = _stream(quiver_server, batches)
    assert quiver_server.streams.running() == 1
    assert quiver_server.admission.running == 1
    out = list(stream)
    assert [b.num_rows for b in out] == [limit, limit, 123, 5]
    assert pa.Table.from_batches(out).column("v").to_pylist() == list(range(big + 5))
    assert quiver_server.streams.running() == 0
    assert quiver_server.admission.running == 0


def test_a_cancel_flag_stops_the_stream_at_its_next_batch_and_frees_it(quiver_server) -> None:
    limit = server_module.MAX_BATCH_ROWS
    stream = _stream(quiver_server, [_ints(0, 3 * limit)], key=b"cancel me")
    assert next(stream).num_rows == limit
    assert quiver_server.streams.cancel(b"cancel me")
    with pytest.raises(flight.FlightCancelledError):
        next(stream)
    with pytest.raises(StopIteration):
        next(stream)
    assert quiver_server.streams.running() == 0
    assert quiver_server.admission.running == 0


def test_a_stream_closed_before_its_end_frees_its_registration_and_slot(quiver_server) -> None:
    stream = _stream(quiver_server, [_ints(0, 10), _ints(10, 10)])
    assert next(stream).num_rows == 10
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
    assert quiver_server.streams.running() == 0
    assert quiver_server.admission.running == 0
