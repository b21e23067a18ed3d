"""Cancelling a running query (CancelFlightInfo, CancelQuery) and releasing abandoned streams."""

from __future__ import annotations

import time

import pyarrow.flight as flight
import pytest

from quiver.proto import flight_pb2, flight_sql_pb2, pack, unpack

LONG = "SELECT value AS v FROM range(1000000000)"


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(cmd))


def _info_message(info: flight.FlightInfo) -> flight_pb2.FlightInfo:
    msg = flight_pb2.FlightInfo()
    msg.ParseFromString(info.serialize())
    return msg


def _cancel_flight_info(client: flight.FlightClient, info: flight.FlightInfo) -> int:
    body = flight_pb2.CancelFlightInfoRequest(info=_info_message(info)).SerializeToString()
    results = list(client.do_action(flight.Action("CancelFlightInfo", body)))
    out = flight_pb2.CancelFlightInfoResult()
    out.ParseFromString(results[0].body.to_pybytes())
    return out.status


def _read_until_cancelled(reader: flight.FlightStreamReader, limit: int = 100_000) -> int:
    batches = 0
    with pytest.raises(flight.FlightCancelledError, match="cancelled"):
        for _ in range(limit):
            reader.read_chunk()
            batches += 1
    return batches


def test_cancel_flight_info_stops_a_running_query(flight_uri, quiver_server) -> None:
    client = flight.connect(flight_uri)
    info = _info(client, LONG)
    reader = client.do_get(info.endpoints[0].ticket)
    reader.read_chunk()
    assert quiver_server.streams.running() == 1
    assert _cancel_flight_info(client, info) == flight_pb2.CANCEL_STATUS_CANCELLED
    _read_until_cancelled(reader)
    deadline = time.monotonic() + 10
    while quiver_server.streams.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert quiver_server.streams.running() == 0


def test_cancel_query_action_stops_a_running_query(flight_uri) -> None:
    client = flight.connect(flight_uri)
    info = _info(client, LONG)
    reader = client.do_get(info.endpoints[0].ticket)
    reader.read_chunk()
    body = pack(flight_sql_pb2.ActionCancelQueryRequest(info=info.serialize()))
    results = list(client.do_action(flight.Action("CancelQuery", body)))
    answer = unpack(results[0].body.to_pybytes())
    assert answer.result == flight_sql_pb2.ActionCancelQueryResult.CANCEL_RESULT_CANCELLED
    _read_until_cancelled(reader)


def test_cancel_before_the_stream_starts_fails_it_at_once(flight_uri) -> None:
    client = flight.connect(flight_uri)
    info = _info(client, LONG)
    _cancel_flight_info(client, info)
    with pytest.raises(flight.FlightCancelledError):
        client.do_get(info.endpoints[0].ticket).read_all()


def test_cancel_names_one_execution_not_every_run_of_the_same_sql(flight_uri) -> None:
    client = flight.connect(flight_uri)
    first = _info(client, "SELECT value AS v FROM range(100000)")
    second = _info(client, "SELECT value AS v FROM range(100000)")
    _cancel_flight_info(client, first)
    assert client.do_get(second.endpoints[0].ticket).read_all().num_rows == 100_000


def test_abandoned_stream_releases_its_reader(flight_uri, quiver_server) -> None:
    client = flight.connect(flight_uri)
    info = _info(client, LONG)
    reader = client.do_get(info.endpoints[0].ticket)
    reader.read_chunk()
    assert quiver_server.streams.running() == 1
    reader.cancel()
    del reader
    client.close()
    deadline = time.monotonic() + 20
    while quiver_server.streams.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert quiver_server.streams.running() == 0
