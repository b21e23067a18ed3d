"""The commands a server keeps as read (descriptor commands sent again and again): a client
sending ever new ones cannot grow them past their bound, and a long one is never kept."""

from __future__ import annotations

import pyarrow.flight as flight

from quiver.flight_server.service import server as server_module
from quiver.proto import flight_sql_pb2, pack


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    return client.get_flight_info(flight.FlightDescriptor.for_command(
        pack(flight_sql_pb2.CommandStatementQuery(query=sql))))


def test_ever_new_commands_keep_the_remembered_ones_within_their_bound(flight_uri) -> None:
    client = flight.connect(flight_uri)
    try:
        limit = server_module._REMEMBERED_COMMANDS
        for i in range(limit + 200):
            _info(client, f"SELECT {i} AS n")
            assert len(server_module._remembered) <= limit
        # Read again after the bound cleared the kept ones, a command still answers.
        info = _info(client, "SELECT 7 AS n")
        assert client.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"n": 7}]
    finally:
        client.close()


def test_a_long_command_is_answered_but_not_kept(flight_uri) -> None:
    client = flight.connect(flight_uri)
    try:
        sql = "SELECT 1 AS n -- " + "x" * server_module._REMEMBERED_COMMAND_BYTES
        command = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
        info = _info(client, sql)
        assert client.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"n": 1}]
        assert command not in server_module._remembered
    finally:
        client.close()
