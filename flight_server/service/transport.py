"""The Flight RPC service on grpcio: wire formats, authentication and status codes of every call.

``FlightTransport`` serves ``arrow.flight.protocol.FlightService`` for a handler object
(``quiver.flight_server.service.server.FlightHandlers``) whose methods take pyarrow.flight objects:

- requests (descriptors, tickets, actions) are read with pyarrow's ``deserialize()`` or
  protobuf;
- FlightInfo and DoGet's ``FlightData`` are written by hand (``wire``): a FlightInfo
  from the handler's ``wire.Info``, the schema's bytes made once per schema
  (``wire.SchemaForms``), each batch as one ``bytes`` from its IPC message, so the rows
  are copied once on the way out;
- DoPut's ``FlightData`` is read back into record batches with ``pa.ipc.read_message``.

Every call is authenticated here (``auth.Authenticator``, when configured), and every
failure becomes its gRPC status in one place (``errors.status_of``): unlike pyarrow's
server, any code can be sent, ALREADY_EXISTS and ABORTED included.

Streamed responses (DoGet, DoAction, ListFlights, ...) go out through
``stream_sender.StreamSender``: the handler thread produces the next message while the last
is on its way, and the final one leaves with the status.

Put results are sent when the handler returns (the handlers write them at the end).

Every call has a ``statement_log.StatementRecord`` (``CallContext.record``): the transport
counts the rows and bytes DoGet sends and DoPut receives, and closes the record with the
call's status when the call ends (for DoGet, when its stream ends).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent import futures
from typing import Any, Protocol

import grpc
import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import DecodeError

from quiver.flight_server.service import statement_log, stream_sender
from quiver.flight_server.service.auth import Authenticator
from quiver.flight_server.service.errors import (
    Cancelled,
    InvalidArgument,
    NotImplementedCommand,
    ResourceExhausted,
    status_of,
)
from quiver.flight_server.service.ipc_size import MalformedBatch, decoded_bytes
from quiver.flight_server.service.wire import (
    Info,
    SchemaForms,
    decode_flight_data,
    encode_info,
    encode_message,
    encode_put_result,
    ipc_message,
)
from quiver.proto import flight_pb2

log = logging.getLogger(__name__)

SERVICE = "arrow.flight.protocol.FlightService"
DEFAULT_THREADS = 32
# The largest message a client may send (one DoPut batch, one ticket): gRPC's default is
# 4 MiB, too small for ingest batches; a bigger one is refused with RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 256 << 20
# The most one DoPut stream may carry, counted as its batches decode: what one ingest or
# bulk append may add to storage (a bigger one is refused and commits nothing).
MAX_PUT_BYTES = 64 << 30
SCHEMES = ("grpc", "grpc+tcp", "grpc+tls")
# A streamed call's messages, as its handler produces them.
Messages = Generator[bytes, None, None]
# gRPC gives a call without a deadline about 2**63 seconds to run.
_NO_DEADLINE_S = 1e9

class CallContext:
    """What a handler may ask about the call it serves: the method, who called (``user``:
    the authenticated user name, ``token:<hash prefix>`` for a static token, None
    without authentication) and from where (``peer``, as gRPC names it)."""

    __slots__ = ("_deadline", "_deadline_read", "_grpc", "method", "peer", "record", "user")

    def __init__(self, context: grpc.ServicerContext, method: str,
                 user: str | None = None) -> None:
        self._grpc = context
        self.method = method
        self.user = user
        # "ipv4:127.0.0.1:53211", "ipv6:[::1]:53211" or "unix:..." as gRPC names it.
        self.peer: str = _peer(context)
        self.record: statement_log.StatementRecord | None = None
        self._deadline: float | None = None
        self._deadline_read = False

    @property
    def session(self) -> tuple[str | None, str]:
        """Who owns what this call prepares: the user on one connection."""
        return (self.user, self.peer)

    def is_cancelled(self) -> bool:
        """Whether the client went away, cancelled the call or let its deadline pass.

        The deadline is checked apart: when it passes mid-stream, gRPC may end the
        request stream as if the client had finished it while the call still reads as
        active.
        """
        if not self._grpc.is_active():
            return True
        deadline = self.deadline()
        return deadline is not None and time.monotonic() >= deadline

    def deadline(self) -> float | None:
        """The client's deadline as ``time.monotonic`` seconds, or None without one."""
        if not self._deadline_read:
            # A call's deadline does not move: it is read from gRPC once.
            remaining = self._grpc.time_remaining()
            self._deadline = None if remaining is None or remaining > _NO_DEADLINE_S else \
                time.monotonic() + remaining
            self._deadline_read = True
        return self._deadline

    def cancel(self) -> None:
        """Ends the call with CANCELLED now, even while it waits for the client to read."""
        self._grpc.cancel()


class PutChunk:
    """One DoPut message: a record batch (or None) and its app_metadata (or None)."""

    __slots__ = ("app_metadata", "data")

    def __init__(self, data: pa.RecordBatch | None, app_metadata: pa.Buffer | None) -> None:
        self.data = data
        self.app_metadata = app_metadata


class PutReader:
    """The record batches a client sends in DoPut, read from its FlightData messages.

    The first message carries the descriptor (and usually the schema); a stream without
    any schema (an update with no parameters) reads as an empty schema and no rows.
    """

    def __init__(self, messages: Iterator[bytes], context: CallContext,
                 max_batch_bytes: int = MAX_MESSAGE_BYTES,
                 max_stream_bytes: int = MAX_PUT_BYTES) -> None:
        """``max_batch_bytes`` bounds what one record batch may decode to (what its
        buffers declare, compressed or not), as the message size bounds what is sent;
        ``max_stream_bytes`` what all of them may decode to together."""
        self._messages = messages
        self._context = context
        self._max_batch_bytes = max_batch_bytes
        self._max_stream_bytes = max_stream_bytes
        self._stream_bytes = 0
        self._pending: list[PutChunk] = []
        self._done = False
        self.descriptor: flight.FlightDescriptor | None = None
        self.schema: pa.Schema = pa.schema([])
        self._has_schema = False
        first = self._next_fields()
        if first is None:
            raise InvalidArgument("DoPut sent no message; the first one carries the "
                                  "FlightDescriptor")
        raw = first.get(1)
        if raw is None:
            raise InvalidArgument("the first DoPut message carries no FlightDescriptor")
        self.descriptor = _descriptor(bytes(raw))
        self._take(first)
        # The schema may come in its own message after the descriptor.
        while not self._has_schema and not self._pending and not self._done:
            fields = self._next_fields()
            if fields is None:
                break
            self._take(fields)

    def _next_fields(self) -> dict[int, memoryview] | None:
        if self._done:
            return None
        try:
            data = next(self._messages)
        except StopIteration:
            self._done = True
            if self._context.is_cancelled():
                raise Cancelled("the client stopped sending before the end of its "
                                "stream (cancelled, or its deadline passed)") from None
            return None
        except Exception as exc:
            # The client cancelled or the connection broke mid-stream.
            self._done = True
            raise Cancelled(f"the client stopped sending: {exc}") from None
        record = self._context.record
        if record is not None:
            record.bytes_in += len(data)
        return decode_flight_data(data)

    def _take(self, fields: dict[int, memoryview]) -> None:
        header = fields.get(2)
        meta = fields.get(3)
        app_metadata = pa.py_buffer(bytes(meta)) if meta is not None and len(meta) else None
        batch = None
        if header is not None and len(header):
            msg = ipc_message(header, fields.get(1000))
            kind = msg.type
            if kind == "schema":
                if self._has_schema:
                    raise InvalidArgument("DoPut sent a second schema")
                self.schema = _read_schema(msg)
                self._has_schema = True
            elif kind == "record batch":
                if not self._has_schema:
                    raise InvalidArgument("DoPut sent a record batch before its schema")
                self._count(header, msg)
                batch = _read_batch(msg, self.schema)
                if self._context.record is not None:
                    self._context.record.rows += batch.num_rows
            elif kind in ("dictionary", "dictionary batch"):
                raise InvalidArgument("dictionary-encoded columns are not accepted; send "
                                      "the column decoded (its value type)")
            else:
                raise InvalidArgument(f"unexpected IPC message {kind!r} in DoPut")
        if batch is not None or app_metadata is not None:
            self._pending.append(PutChunk(batch, app_metadata))

    def _count(self, header: memoryview, msg: pa.ipc.Message) -> None:
        """Refuses a batch that would decode to more than the batch limit, or take the
        stream past its limit, before decoding it."""
        try:
            size = decoded_bytes(header, msg.body if msg.body is not None else b"")
        except MalformedBatch as exc:
            raise InvalidArgument(f"DoPut sent a malformed record batch: {exc}") from None
        if size > self._max_batch_bytes:
            raise ResourceExhausted(
                f"DoPut sent a record batch that decodes to {size:,} bytes; this server "
                f"takes at most {self._max_batch_bytes:,} per batch (--max-message-bytes): "
                "send smaller batches")
        self._stream_bytes += size
        if self._stream_bytes > self._max_stream_bytes:
            raise ResourceExhausted(
                f"DoPut sent more than {self._max_stream_bytes:,} bytes of rows (as they "
                "decode) in one stream, the most this server takes (--max-put-bytes); "
                "nothing of it was stored: split the load into several streams")

    def read_chunk(self) -> PutChunk:
        """The next batch and/or app_metadata; StopIteration at the end of the stream."""
        while not self._pending:
            fields = self._next_fields()
            if fields is None:
                raise StopIteration
            self._take(fields)
        return self._pending.pop(0)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                chunk = self.read_chunk()
            except StopIteration:
                return
            if chunk.data is not None:
                yield chunk.data

    def read_all(self) -> pa.Table:
        """Every remaining batch as one table of the stream's schema."""
        return pa.Table.from_batches(list(self), schema=self.schema)


def _read_schema(msg: pa.ipc.Message) -> pa.Schema:
    try:
        return pa.ipc.read_schema(msg)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidArgument(f"DoPut sent a malformed schema message: {exc}") from None


def _read_batch(msg: pa.ipc.Message, schema: pa.Schema) -> pa.RecordBatch:
    try:
        batch = pa.ipc.read_record_batch(msg, schema)
        # Offsets and lengths in the message are the client's: check them before use.
        batch.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidArgument(f"DoPut sent a malformed record batch: {exc}") from None
    return batch


class PutWriter:
    """Collects the put results (app_metadata) a DoPut handler writes."""

    def __init__(self) -> None:
        self.results: list[bytes] = []

    def write(self, buf: pa.Buffer | bytes) -> None:
        data = buf.to_pybytes() if isinstance(buf, pa.Buffer) else bytes(buf)
        self.results.append(encode_put_result(data))


class FlightHandlers(Protocol):
    """What the transport calls: pyarrow.flight objects in; schemas, batches, ``Info``
    and pyarrow.flight results out."""

    def list_flights(self, context: CallContext, criteria: bytes) -> Iterable[Info]: ...

    def get_flight_info(self, context: CallContext,
                        descriptor: flight.FlightDescriptor) -> Info: ...

    def get_schema(self, context: CallContext,
                   descriptor: flight.FlightDescriptor) -> pa.Schema: ...

    def do_get(self, context: CallContext,
               ticket: flight.Ticket) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]: ...

    def do_put(self, context: CallContext, descriptor: flight.FlightDescriptor,
               reader: PutReader, writer: PutWriter) -> None: ...

    def do_action(self, context: CallContext,
                  action: flight.Action) -> Iterable[flight.Result]: ...

    def list_actions(self, context: CallContext) -> Sequence[tuple[str, str]]: ...


def parse_location(location: str) -> tuple[str, int, bool]:
    """Host, port and whether TLS is wanted, from ``grpc[+tcp|+tls]://host:port``."""
    scheme, sep, rest = location.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or scheme not in SCHEMES or not host or not port.isdigit():
        raise ValueError(f"expected a location like grpc://host:port, got {location!r}")
    return host, int(port), scheme == "grpc+tls"


class FlightTransport:
    """A running gRPC server for ``handlers`` at ``location`` (port 0 picks a free one)."""

    def __init__(self, handlers: FlightHandlers, location: str, *,
                 tls_certificates: Sequence[Any] | None = None,
                 authenticator: Authenticator | None = None,
                 threads: int = DEFAULT_THREADS,
                 max_message_bytes: int | None = None,
                 max_put_bytes: int | None = None,
                 send_ahead: bool = True) -> None:
        """``max_put_bytes``: what one DoPut stream may carry (``PutReader``);
        ``send_ahead``: stream messages through ``stream_sender`` (grpcio's own
        one-at-a-time path when False)."""
        host, port, tls = parse_location(location)
        if tls and not tls_certificates:
            raise ValueError(f"{location} needs TLS certificates")
        self._handlers = handlers
        self._auth = authenticator
        self._max_message_bytes = max_message_bytes or MAX_MESSAGE_BYTES
        self._max_put_bytes = max_put_bytes or MAX_PUT_BYTES
        self._send_ahead = send_ahead and stream_sender.AVAILABLE
        self._schemas = SchemaForms()
        self._pool = futures.ThreadPoolExecutor(max_workers=threads,
                                                thread_name_prefix="flight")
        self._server = grpc.server(self._pool, options=[
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.max_send_message_length", 2**31 - 1),
            # Two servers must not share a port silently.
            ("grpc.so_reuseport", 0),
        ])
        self._server.add_generic_rpc_handlers((self._generic_handler(),))
        address = f"{host}:{port}"
        try:
            if tls_certificates:
                creds = grpc.ssl_server_credentials(
                    [(pair.key, pair.cert) for pair in tls_certificates])
                self.port = self._server.add_secure_port(address, creds)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            self._pool.shutdown(wait=False)
            raise OSError(f"cannot listen on {address}: {exc}") from None
        self._server.start()
        self._stopped = threading.Event()

    def stop(self, grace: float | None = 5.0) -> None:
        """Stops taking calls; calls in flight get ``grace`` seconds, then are cancelled."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._server.stop(grace).wait()
        self._pool.shutdown(wait=False)

    # -- plumbing --------------------------------------------------------------------------

    def _generic_handler(self) -> grpc.GenericRpcHandler:
        h = grpc
        sent = self._sent_ahead
        methods = {
            "Handshake": h.stream_stream_rpc_method_handler(sent(self._handshake)),
            "ListFlights": h.unary_stream_rpc_method_handler(sent(self._list_flights)),
            "GetFlightInfo": h.unary_unary_rpc_method_handler(self._get_flight_info),
            "PollFlightInfo": h.unary_unary_rpc_method_handler(
                self._unimplemented("PollFlightInfo")),
            "GetSchema": h.unary_unary_rpc_method_handler(self._get_schema),
            "DoGet": h.unary_stream_rpc_method_handler(sent(self._do_get)),
            "DoPut": h.stream_stream_rpc_method_handler(sent(self._do_put)),
            "DoExchange": h.stream_stream_rpc_method_handler(
                sent(self._unimplemented_stream("DoExchange"))),
            "DoAction": h.unary_stream_rpc_method_handler(sent(self._do_action)),
            "ListActions": h.unary_stream_rpc_method_handler(sent(self._list_actions)),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _sent_ahead(self, behavior: Callable[[Any, grpc.ServicerContext], Messages]
                    ) -> Callable[..., Any]:
        """``behavior``'s messages sent through a ``StreamSender``: the handler thread
        goes on producing while a message is on its way (grpcio's own path, a generator
        it iterates, where the installed grpcio lacks what the sender needs)."""
        if not self._send_ahead:
            return behavior

        def handle(request: Any, context: grpc.ServicerContext,
                   send_response: Callable[[Any], None]) -> None:
            messages = behavior(request, context)
            if not stream_sender.available(context):
                for message in messages:
                    send_response(message)
                    if not context.is_active():
                        messages.close()
                        return
                send_response(None)
                return
            sender = stream_sender.StreamSender(context)
            try:
                for message in messages:
                    if not sender.send(message):
                        # The call is over: the stream's own clean-up runs now, and a
                        # call gRPC still counts as open (a refused send) is ended.
                        messages.close()
                        if context.is_active():
                            context.cancel()
                        return
            except BaseException:
                sender.settle()
                raise
            sender.finish()

        # grpcio passes ``send_response`` and leaves the sending to ``handle``.
        handle.experimental_non_blocking = True  # type: ignore[attr-defined]
        return handle

    def _start(self, method: str, context: grpc.ServicerContext) -> CallContext:
        """Authenticates the call (sending any issued token back first)."""
        user = None
        if self._auth is not None:
            values = [v for k, v in context.invocation_metadata() if k == "authorization"]
            identity = self._auth.authenticate(method, values, context.peer() or "")
            if identity.headers:
                context.send_initial_metadata(identity.headers)
            user = identity.user
        call = CallContext(context, method, user)
        statement_log.begin(call, method, call.peer)
        return call

    @staticmethod
    def _abort(context: grpc.ServicerContext, exc: BaseException, what: str,
               call: CallContext | None) -> None:
        code, message = status_of(exc, what)
        if code is not grpc.StatusCode.INTERNAL:
            log.debug("%s: %s %s", what, code.name, message)
        _finish(call, code.name)
        context.abort(code, message)

    def _unary(self, method: str, request: bytes, context: grpc.ServicerContext,
               fn: Callable[[CallContext, bytes], bytes]) -> bytes:
        call = None
        try:
            call = self._start(method, context)
            out = fn(call, request)
        except Exception as exc:
            failure = exc
        else:
            _finish(call, "OK")
            return out
        self._abort(context, failure, method, call)
        raise AssertionError("unreachable")  # abort raises

    def _stream(self, method: str, context: grpc.ServicerContext,
                produce: Callable[[CallContext], Iterator[bytes]]) -> Messages:
        call = None
        try:
            call = self._start(method, context)
            yield from produce(call)
        except GeneratorExit:
            # gRPC closes the generator when the client cancels or goes away.
            _finish(call, "CANCELLED")
            raise
        except Exception as exc:
            failure = exc
        else:
            status = "CANCELLED" if call.is_cancelled() else "OK"
            if method == "DoGet":
                _finish_after(call, context, status)
            else:
                _finish(call, status)
            return
        self._abort(context, failure, method, call)

    def _unimplemented(self, method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            def fail(call: CallContext, request: bytes) -> bytes:
                raise NotImplementedCommand(f"{method} is not supported by this server")
            return self._unary(method, request, context, fail)
        return handle

    def _unimplemented_stream(self, method: str) -> Callable[..., Messages]:
        def handle(requests: Iterator[bytes],
                   context: grpc.ServicerContext) -> Messages:
            def fail(call: CallContext) -> Iterator[bytes]:
                raise NotImplementedCommand(f"{method} is not supported by this server")
            return self._stream(method, context, fail)
        return handle

    # -- methods ---------------------------------------------------------------------------

    def _handshake(self, requests: Iterator[bytes],
                   context: grpc.ServicerContext) -> Messages:
        def run(call: CallContext) -> Iterator[bytes]:
            if self._auth is None:
                raise NotImplementedCommand("this server does not authenticate; call it "
                                            "without a handshake")
            # Answered without waiting for the client's messages: the headers checked in
            # _start are the credentials, and some clients read the answer before closing.
            return iter(())
        return self._stream("Handshake", context, run)

    def _list_flights(self, request: bytes,
                      context: grpc.ServicerContext) -> Messages:
        def run(call: CallContext) -> Iterator[bytes]:
            criteria = _parse(flight_pb2.Criteria, request).expression
            for info in self._handlers.list_flights(call, criteria):
                yield self._info(info, request)
        return self._stream("ListFlights", context, run)

    def _get_flight_info(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        def run(call: CallContext, request: bytes) -> bytes:
            info = self._handlers.get_flight_info(call, _descriptor(request))
            return self._info(info, request)
        return self._unary("GetFlightInfo", request, context, run)

    def _get_schema(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        def run(call: CallContext, request: bytes) -> bytes:
            schema = self._handlers.get_schema(call, _descriptor(request))
            return flight_pb2.SchemaResult(
                schema=self._schemas.of(schema).ipc).SerializeToString()
        return self._unary("GetSchema", request, context, run)

    def _info(self, info: Info, request: bytes) -> bytes:
        return encode_info(info, self._schemas.of(info.schema).ipc,
                           request if info.descriptor is None else info.descriptor)

    def _do_get(self, request: bytes, context: grpc.ServicerContext) -> Messages:
        def run(call: CallContext) -> Iterator[bytes]:
            ticket = _parse(flight_pb2.Ticket, request).ticket
            schema, batches = self._handlers.do_get(call, flight.Ticket(ticket))
            record = call.record
            try:
                form = self._schemas.of(schema)
                plain = form.plain
                yield form.message
                for batch in batches:
                    if plain is not None:
                        batch = batch.cast(plain)
                    data = encode_message(batch.serialize())
                    if record is not None:
                        record.rows += batch.num_rows
                        record.bytes_out += len(data)
                    yield data
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()
        return self._stream("DoGet", context, run)

    def _do_put(self, requests: Iterator[bytes],
                context: grpc.ServicerContext) -> Messages:
        def run(call: CallContext) -> Iterator[bytes]:
            reader = PutReader(requests, call, self._max_message_bytes, self._max_put_bytes)
            writer = PutWriter()
            assert reader.descriptor is not None
            self._handlers.do_put(call, reader.descriptor, reader, writer)
            yield from writer.results
        return self._stream("DoPut", context, run)

    def _do_action(self, request: bytes, context: grpc.ServicerContext) -> Messages:
        def run(call: CallContext) -> Iterator[bytes]:
            msg = _parse(flight_pb2.Action, request)
            action = flight.Action(msg.type, msg.body)
            for result in self._handlers.do_action(call, action):
                body = result.body.to_pybytes() if result.body is not None else b""
                yield flight_pb2.Result(body=body).SerializeToString()
        return self._stream("DoAction", context, run)

    def _list_actions(self, request: bytes,
                      context: grpc.ServicerContext) -> Messages:
        def run(call: CallContext) -> Iterator[bytes]:
            for kind, description in self._handlers.list_actions(call):
                yield flight_pb2.ActionType(type=kind,
                                            description=description).SerializeToString()
        return self._stream("ListActions", context, run)


def _parse(cls: Any, request: bytes) -> Any:
    try:
        return cls.FromString(request)
    except DecodeError:
        raise InvalidArgument(f"the request is not a serialized {cls.DESCRIPTOR.name}") \
            from None


def _peer(context: grpc.ServicerContext) -> str:
    try:
        return str(context.peer() or "")
    except Exception:  # a call torn down before it is served has no peer left
        return ""


def _finish(call: CallContext | None, status: str) -> None:
    """Closes the call's statement record with its gRPC status name."""
    if call is None or call.record is None:
        return
    statement_log.finish(call.record, status, getattr(call, "user", None))


def _finish_after(call: CallContext, context: grpc.ServicerContext, status: str) -> None:
    """Closes the call's record once gRPC has sent its status: a stream that ended well
    is logged and counted off the client's wait (the record stops being this thread's
    now)."""
    record = call.record
    if record is None:
        return
    statement_log.detach(record)
    if not context.add_callback(lambda: _finish(call, status)):
        _finish(call, status)


def _descriptor(request: bytes) -> flight.FlightDescriptor:
    try:
        return flight.FlightDescriptor.deserialize(request)
    except Exception:
        raise InvalidArgument("the request is not a serialized FlightDescriptor") from None
