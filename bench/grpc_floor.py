"""The floor of a statement round trip on Quiver's gRPC transport: ``FlightTransport``
(grpcio) serving handlers that answer ``SELECT 1 AS one`` from objects made once and do
no other work (no statement, no admission, no ticket signing, no statement log).

What Quiver's server costs per statement beyond this is its handlers' own work; what this
costs beyond a native server (roapi, a bare ``pyarrow.flight`` server) is the Python gRPC
stack. The flight benchmark starts it as a peer: ``python -m bench.grpc_floor --port P``.
Prepared statements are refused (UNIMPLEMENTED), so ADBC sends each statement as a
CommandStatementQuery; any query text answers the one row.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.flight as flight

from quiver.flight_server.service.errors import NotImplementedCommand
from quiver.flight_server.service.transport import CallContext, FlightTransport
from quiver.flight_server.service.wire import Endpoint, Info

ONE = pa.table({"one": pa.array([1], pa.int64())})
TICKET = b"one"


class FloorHandlers:
    """Flight handlers with nothing to do but hand back what they were given."""

    def __init__(self) -> None:
        self._batches = ONE.to_batches()

    def get_flight_info(self, context: CallContext,
                        descriptor: flight.FlightDescriptor) -> Info:
        if b"CommandStatementQuery" not in (descriptor.command or b""):
            raise NotImplementedCommand("only statement queries")
        return Info(ONE.schema, [Endpoint(TICKET)])

    def do_get(self, context: CallContext, ticket: flight.Ticket
               ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        return ONE.schema, iter(self._batches)

    def do_action(self, context: CallContext, action: flight.Action) -> Iterator[flight.Result]:
        raise NotImplementedCommand(f"{action.type} is not served here")

    def list_actions(self, context: CallContext) -> Sequence[tuple[str, str]]:
        return []

    def list_flights(self, context: CallContext, criteria: bytes) -> Iterator[Info]:
        return iter(())

    def get_schema(self, context: CallContext,
                   descriptor: flight.FlightDescriptor) -> pa.Schema:
        raise NotImplementedCommand("GetSchema is not served here")

    def do_put(self, context: CallContext, descriptor: flight.FlightDescriptor, reader: object,
               writer: object) -> None:
        raise NotImplementedCommand("DoPut is not served here")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    FlightTransport(FloorHandlers(), f"grpc://127.0.0.1:{args.port}")
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
