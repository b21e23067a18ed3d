"""Sends a server stream's messages without the handler thread waiting for each send.

grpcio's synchronous server sends a streamed response one message at a time: the
handler thread hands a message to gRPC, then sleeps until gRPC's poller thread reports
it sent and wakes it; a DoGet of one batch pays that twice (schema, batch), and sends
its status apart. ``StreamSender`` lets the handler go on while a message is on its way:
the send's completion, on the poller thread, starts the message that waited for it, and
the last message leaves with the status when it can.

What a stream may hold is still bounded:

- one message in flight and one waiting, no more; a third waits for the first;
- a message larger than ``PIPELINED_BYTES`` is not held beside the next one: ``send``
  returns only once it is sent, as grpcio's own path does for every message;
- a client that stops reading stops the sends (HTTP/2 flow control), and with them the
  handler.

This is the one module that reaches into grpcio's server internals (``grpc._server``:
the call's state, its condition and the operations it starts), the same functions
grpcio's own send path calls. ``available`` says whether the installed grpcio has them;
without them the transport keeps grpcio's own path.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

log = logging.getLogger(__name__)

try:
    from grpc import _server as _grpc_server
    from grpc._cython import cygrpc as _cygrpc
except ImportError:  # pragma: no cover - grpcio always ships both today
    _grpc_server = None
    _cygrpc = None

# A message up to this size may wait beside the one in flight; a larger one is sent
# before ``send`` returns, so a stream never holds two large messages.
PIPELINED_BYTES = 4 << 20

_NEEDED = ("_is_rpc_state_active", "_status", "_get_initial_metadata_operation",
           "_get_send_message_op_flags_from_state", "_possibly_finish_call")
# The token this module's sends are known by in the call's set of due operations.
_SEND = "quiver_send_message"


def _has_internals() -> bool:
    return (_grpc_server is not None and _cygrpc is not None
            and all(hasattr(_grpc_server, name) for name in _NEEDED)
            and hasattr(_cygrpc, "SendMessageOperation"))


AVAILABLE = _has_internals()
if not AVAILABLE:  # pragma: no cover - depends on the grpcio installed
    log.warning("grpcio %s lacks the server internals streams are sent with; "
                "each streamed message waits for its send", grpc.__version__)


def available(context: grpc.ServicerContext) -> bool:
    """Whether ``context`` (a call of grpcio's synchronous server) can be sent on."""
    return AVAILABLE and hasattr(context, "_state") and hasattr(context, "_rpc_event")


class StreamSender:
    """The sending side of one streamed call. ``send`` each message in order, then
    ``finish`` (status OK) or, before the call is aborted, ``settle``."""

    __slots__ = ("_broken", "_busy", "_call", "_ended", "_event", "_limit", "_state",
                 "_waiting")

    def __init__(self, context: grpc.ServicerContext,
                 pipelined_bytes: int = PIPELINED_BYTES) -> None:
        self._state: Any = context._state
        self._event: Any = context._rpc_event
        self._call: Any = self._event.call
        self._limit = pipelined_bytes
        self._busy = False  # a message is in flight
        self._waiting: bytes | None = None  # the message to send after it
        self._ended = False
        self._broken = False  # a send failed: the stream is gone

    def _open(self) -> bool:
        return not self._broken and _grpc_server._is_rpc_state_active(self._state)

    def send(self, message: bytes) -> bool:
        """Sends ``message`` after those before it; False once the call is over
        (cancelled, past its deadline, or its connection gone): stop producing."""
        state = self._state
        with state.condition:
            while self._waiting is not None and self._open():
                state.condition.wait()
            if not self._open():
                return False
            if self._busy:
                self._waiting = message
            else:
                self._start(message)
            if len(message) > self._limit:
                while (self._busy or self._waiting is not None) and self._open():
                    state.condition.wait()
            return self._open()

    def finish(self) -> None:
        """Ends the stream with status OK once every message is sent; does not wait."""
        state = self._state
        with state.condition:
            self._ended = True
            if not self._busy and self._open():
                self._status(None)

    def settle(self) -> None:
        """Waits until every message given to ``send`` is sent (or the call is over), so
        the call can be ended with another status (an abort) after all of them, as
        grpcio's own path does."""
        state = self._state
        with state.condition:
            while (self._busy or self._waiting is not None) and self._open():
                state.condition.wait()

    # -- under the call's condition ----------------------------------------------------

    def _start(self, message: bytes) -> None:
        state = self._state
        flags = _grpc_server._get_send_message_op_flags_from_state(state)
        send = _cygrpc.SendMessageOperation(message, flags)
        if state.initial_metadata_allowed:
            operations: tuple[Any, ...] = (
                _grpc_server._get_initial_metadata_operation(state, None), send)
            state.initial_metadata_allowed = False
        else:
            operations = (send,)
        if self._call.start_server_batch(operations, self._sent):
            # Refused by gRPC (its call error code): no completion will come.
            self._broken = True
            return
        state.due.add(_SEND)
        self._busy = True

    def _status(self, message: bytes | None) -> None:
        """Status OK, with the stream's last message when it still waits."""
        _grpc_server._status(self._event, self._state, message)

    def _sent(self, event: Any) -> Any:
        """gRPC's poller thread: a send completed (or failed)."""
        state = self._state
        with state.condition:
            self._busy = False
            if not event.success:
                self._broken = True
            finished = _grpc_server._possibly_finish_call(state, _SEND)
            if self._open():
                waiting, self._waiting = self._waiting, None
                if self._ended:
                    self._status(waiting)
                elif waiting is not None:
                    self._start(waiting)
            else:
                self._waiting = None
            state.condition.notify_all()
            return finished

