"""The floors of a statement round trip on gRPC in Python, two servers that answer
``SELECT 1 AS one`` and do no other work (no statement, no admission, no ticket signing,
no statement log):

- default: Quiver's ``FlightTransport`` (grpcio) serving handlers that hand back objects
  made once. What Quiver's server costs per statement beyond this is its handlers' work.
- ``--canned``: grpcio alone, its handlers returning the answer's bytes made once, no
  Quiver code on the call path. What this costs beyond a native server (roapi, a bare
  ``pyarrow.flight`` server) is grpcio's own Python server; what the default costs beyond
  this is Quiver's transport.

The flight benchmark starts both as peers: ``python -m bench.grpc_floor --port P
[--canned]``. Prepared statements are refused (UNIMPLEMENTED), so ADBC sends each statement
as a CommandStatementQuery; any query text answers the one row.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures

import grpc
import pyarrow as pa
import pyarrow.flight as flight

from quiver.flight_server.service.errors import NotImplementedCommand
from quiver.flight_server.service.transport import SERVICE, CallContext, FlightTransport
from quiver.flight_server.service.wire import (
    Endpoint,
    Info,
    SchemaForms,
    encode_info,
    encode_message,
)

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


def canned_server(port: int) -> grpc.Server:
    """grpcio answering GetFlightInfo and DoGet with bytes made once; other calls and
    commands other than statement queries get UNIMPLEMENTED."""
    schema = SchemaForms().of(ONE.schema)
    stream = [schema.message, *(encode_message(b.serialize()) for b in ONE.to_batches())]

    def get_flight_info(request: bytes, context: grpc.ServicerContext) -> bytes:
        if b"CommandStatementQuery" not in request:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "only statement queries")
        return encode_info(Info(ONE.schema, [Endpoint(TICKET)]), schema.ipc, request)

    def do_get(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from stream

    def refuse(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served here")
        yield b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "GetFlightInfo": grpc.unary_unary_rpc_method_handler(get_flight_info),
        "DoGet": grpc.unary_stream_rpc_method_handler(do_get),
        "DoAction": grpc.unary_stream_rpc_method_handler(refuse),
    }),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--canned", action="store_true",
                        help="grpcio alone answering with bytes made once")
    args = parser.parse_args(argv)
    # Held until the process ends: a gRPC server stops once it is collected.
    server = canned_server(args.port) if args.canned else \
        FlightTransport(FloorHandlers(), f"grpc://127.0.0.1:{args.port}")
    threading.Event().wait()
    del server
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
