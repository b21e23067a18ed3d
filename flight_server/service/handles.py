"""Statement handles carried in tickets, prepared statements, and running-stream tokens.

A statement handle is self-contained, so any server on the same root can answer
the ticket and nothing is kept between GetFlightInfo and DoGet. Its body is

    b"qv1" + kind + 16-byte nonce + payload

with kind ``q`` (payload: UTF-8 SQL), ``p`` (4-byte SQL length, SQL, then the
bound parameter rows as an Arrow IPC stream), ``r`` (a result already computed,
as an Arrow IPC stream: DDL/DML asked for through a query command runs once, when
its FlightInfo is made) or ``s`` (one part of a scan: 4-byte length of a JSON
object naming the table, its uuid, the pinned version and the part's superfiles,
then the UTF-8 SQL). The nonce makes each FlightInfo's ticket unique, so a
cancel names one execution.

Clients only ever see bodies sealed by ``TicketSigner``:

    b"qv2" + 8-byte issue time (seconds) + body + HMAC-SHA256(key, everything before)

with the ticket key every server on the root derives from the shared secret
(``quiver.flight_server.service.keys``). A ticket that was altered, cut short, made up, or issued
more than ``ttl`` seconds ago is refused (INVALID_ARGUMENT) before anything in it is
read, so a client cannot point a scan at another table version or other files.

Prepared statements live in ``PreparedRegistry``, in the memory of the server that
prepared them. Their handles are signed too, and each belongs to the session that
made it (the authenticated user and the connection's peer address): another session
gets NOT_FOUND. A session holds at most ``per_session`` statements, past which its own
least recently used one is dropped; the whole registry holds at most ``max_size``,
past which the least recently used statement of the session holding the most goes
(of several as large, the most recently active one's); any statement is dropped after
``idle_seconds`` without use.
"""

from __future__ import annotations

import hmac
import itertools
import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

import pyarrow as pa

from quiver.flight_server.service import keys
from quiver.flight_server.service.errors import InvalidArgument, NotFound, ResourceExhausted

MAGIC = b"qv1"
SEALED = b"qv2"
PREPARED = b"qvp"
NONCE = 16
DEFAULT_TICKET_TTL = 24 * 3600.0
# Bytes of parameter rows all prepared statements of a server may keep bound at once.
PARAMS_BUDGET = 1 << 30
# A server whose clock runs behind another's still takes that server's fresh tickets.
CLOCK_SKEW_S = 300
_STAMP = struct.Struct("<Q")


@dataclass(frozen=True)
class StatementHandle:
    """What a ticket asks for: SQL with optional parameter rows, or a stored result."""

    sql: str | None = None
    params: pa.Table | None = None
    result: pa.Table | None = None
    nonce: bytes = b""
    # One part of a scan: the table read, at which version, through which superfiles.
    scan: ScanPart | None = None


@dataclass(frozen=True)
class ScanPart:
    """The superfiles of one table version that one endpoint of a scan reads."""

    table: str
    table_uuid: str
    version: int
    files: tuple[str, ...]


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _read_ipc(data: bytes | memoryview) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def encode_sql(sql: str, params: pa.Table | None = None) -> bytes:
    """A handle that runs ``sql`` (with ``params`` rows bound, if any) when redeemed."""
    nonce = new_nonce()
    text = sql.encode()
    if params is None:
        return MAGIC + b"q" + nonce + text
    return MAGIC + b"p" + nonce + struct.pack("<I", len(text)) + text + _ipc(params)


def encode_scan(sql: str, part: ScanPart, nonce: bytes | None = None) -> bytes:
    """A handle that runs ``sql`` over the superfiles of ``part`` only. The endpoints of
    one scan share ``nonce``, so cancelling the FlightInfo names all of them."""
    head = json.dumps({"table": part.table, "uuid": part.table_uuid,
                       "version": part.version, "files": list(part.files)},
                      separators=(",", ":")).encode()
    return (MAGIC + b"s" + (nonce or new_nonce()) + struct.pack("<I", len(head)) + head
            + sql.encode())


# Nonces tell this process's tickets apart (they are signed, so they need not be secret):
# a random prefix for the process and a counter, with no system call per ticket.
_NONCE_PREFIX = os.urandom(NONCE - 8)
_nonce_counter = itertools.count()


def new_nonce() -> bytes:
    """A nonce no other ticket of this process has."""
    return _NONCE_PREFIX + next(_nonce_counter).to_bytes(8, "little")


def encode_result(result: pa.Table) -> bytes:
    """A handle that returns ``result`` as it is."""
    return MAGIC + b"r" + new_nonce() + _ipc(result)


def decode(handle: bytes) -> StatementHandle:
    """The statement a handle names; ``InvalidArgument`` when it is not one of ours."""
    if len(handle) < len(MAGIC) + 1 + NONCE or not handle.startswith(MAGIC):
        raise InvalidArgument("statement handle is not one this server issued")
    kind = handle[3:4]
    nonce = handle[4:4 + NONCE]
    body = memoryview(handle)[4 + NONCE:]
    try:
        if kind == b"q":
            return StatementHandle(sql=bytes(body).decode(), nonce=nonce)
        if kind == b"p":
            (n,) = struct.unpack_from("<I", body)
            sql = bytes(body[4:4 + n]).decode()
            return StatementHandle(sql=sql, params=_read_ipc(body[4 + n:]), nonce=nonce)
        if kind == b"r":
            return StatementHandle(result=_read_ipc(body), nonce=nonce)
        if kind == b"s":
            (n,) = struct.unpack_from("<I", body)
            head = json.loads(bytes(body[4:4 + n]))
            part = ScanPart(table=str(head["table"]), table_uuid=str(head["uuid"]),
                            version=int(head["version"]),
                            files=tuple(str(f) for f in head["files"]))
            return StatementHandle(sql=bytes(body[4 + n:]).decode(), nonce=nonce, scan=part)
    except (UnicodeDecodeError, struct.error, pa.ArrowInvalid, ValueError, KeyError,
            TypeError) as exc:
        raise InvalidArgument(f"statement handle is damaged: {exc}") from None
    raise InvalidArgument("statement handle is not one this server issued")


_REFUSED = ("statement handle is damaged or was not issued by a server of this root "
            "(its signature does not match); get a new one from GetFlightInfo")


class TicketSigner:
    """Seals statement handles (see the module docstring) and opens sealed ones."""

    def __init__(self, key: bytes, ttl: float = DEFAULT_TICKET_TTL) -> None:
        if not ttl > 0:
            raise ValueError("the ticket lifetime must be positive")
        self._key = key
        self.ttl = float(ttl)

    def seal(self, body: bytes) -> bytes:
        head = SEALED + _STAMP.pack(int(time.time())) + body
        return head + keys.mac(self._key, head)

    def open(self, handle: bytes) -> bytes:
        """The body of a sealed handle; ``InvalidArgument`` unless it is intact and fresh."""
        handle = bytes(handle)
        if len(handle) < len(SEALED) + _STAMP.size + keys.MAC_BYTES:
            raise InvalidArgument(_REFUSED)
        head, tag = handle[:-keys.MAC_BYTES], handle[-keys.MAC_BYTES:]
        if not hmac.compare_digest(keys.mac(self._key, head), tag) or \
                not head.startswith(SEALED):
            raise InvalidArgument(_REFUSED)
        (issued,) = _STAMP.unpack_from(head, len(SEALED))
        now = time.time()
        if now - issued > self.ttl or issued - now > CLOCK_SKEW_S:
            raise InvalidArgument(f"the ticket expired (tickets are valid for {self.ttl:.0f}s "
                                  "after GetFlightInfo); run the statement again")
        return head[len(SEALED) + _STAMP.size:]

    def decode(self, handle: bytes) -> StatementHandle:
        """The statement a sealed handle names, once its signature and age are checked."""
        return decode(self.open(handle))


def inspect(handle: bytes) -> StatementHandle:
    """What a sealed handle names WITHOUT checking its signature: for diagnostics and
    tests only, never to serve a request."""
    handle = bytes(handle)
    return decode(handle[len(SEALED) + _STAMP.size:-keys.MAC_BYTES])


# Who a prepared statement belongs to: (user or None, peer address).
Session = Hashable


@dataclass
class PreparedStatement:
    """One prepared statement: its text, what it returns, and its bound parameters."""

    handle: bytes
    sql: str
    is_query: bool
    dataset_schema: pa.Schema | None
    parameter_schema: pa.Schema
    params: pa.Table | None = None
    last_used: float = field(default_factory=time.monotonic)
    session: Session = None
    # What ``params`` counts against the registry's budget.
    params_bytes: int = 0


class PreparedRegistry:
    """Prepared statements by handle, per session (see the module docstring). Safe to
    share between threads."""

    def __init__(self, max_size: int = 16_384, idle_seconds: float = 1800.0,
                 per_session: int = 256, key: bytes | None = None,
                 params_budget: int = PARAMS_BUDGET) -> None:
        """``params_budget`` bounds the bytes of the parameters bound to all statements
        together (they are kept until the statement is closed or expires)."""
        if max_size < 1 or per_session < 1:
            raise ValueError("max_size and per_session must be at least 1")
        self.max_size = max_size
        self.params_budget = params_budget
        self._params_bytes = 0
        self.idle_seconds = idle_seconds
        self.per_session = per_session
        self._key = key if key is not None else os.urandom(32)
        # Every statement, least recently used first (what idle expiry walks).
        self._items: OrderedDict[bytes, PreparedStatement] = OrderedDict()
        # The handles of each session, least recently used first; the sessions least
        # recently active first.
        self._sessions: OrderedDict[Session, OrderedDict[bytes, None]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def count(self, session: Session) -> int:
        """How many statements ``session`` holds."""
        with self._lock:
            return len(self._sessions.get(session, ()))

    def add(self, sql: str, *, is_query: bool, dataset_schema: pa.Schema | None,
            parameter_schema: pa.Schema, session: Session = None) -> PreparedStatement:
        nonce = PREPARED + os.urandom(NONCE)
        stmt = PreparedStatement(handle=nonce + keys.mac(self._key, nonce), sql=sql,
                                 is_query=is_query, dataset_schema=dataset_schema,
                                 parameter_schema=parameter_schema, session=session)
        with self._lock:
            self._expire(time.monotonic())
            own = self._sessions.get(session)
            if own is not None and len(own) >= self.per_session:
                self._drop(next(iter(own)))
            while len(self._items) >= self.max_size:
                # The most recently active of the largest sessions gives one up: a busy
                # flood of sessions pushes out its own before a quiet session's.
                largest = max(reversed(self._sessions.values()), key=len)
                self._drop(next(iter(largest)))
            self._items[stmt.handle] = stmt
            self._sessions.setdefault(session, OrderedDict())[stmt.handle] = None
            self._sessions.move_to_end(session)
        return stmt

    def get(self, handle: bytes, session: Session = None) -> PreparedStatement:
        """The statement ``session`` prepared under ``handle``: INVALID_ARGUMENT for a
        handle no server of this root made, NOT_FOUND for one that is gone or is another
        session's."""
        handle = bytes(handle)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            stmt = self._items.get(handle)
            # A handle found is one this server made, so its MAC is checked only when
            # it is not, to tell a damaged or made-up handle from one that is gone.
            if stmt is None or stmt.session != session:
                self._checked(handle)
                raise NotFound("prepared statement not found: it was closed, expired after "
                               f"{self.idle_seconds:.0f}s idle, dropped to stay within "
                               f"{self.per_session} per connection, or made on another "
                               "connection or server")
            stmt.last_used = now
            self._items.move_to_end(handle)
            self._sessions[session].move_to_end(handle)
            self._sessions.move_to_end(session)
            return stmt

    def bind(self, stmt: PreparedStatement, params: pa.Table | None) -> None:
        """Keeps ``params`` as the statement's bound rows (replacing any), within the
        budget of all statements' bound rows: RESOURCE_EXHAUSTED past it."""
        size = params.nbytes if params is not None else 0
        with self._lock:
            if self._items.get(stmt.handle) is not stmt:
                raise NotFound("prepared statement not found: it was closed or expired "
                               "while its parameters were being sent")
            total = self._params_bytes - stmt.params_bytes + size
            if size > stmt.params_bytes and total > self.params_budget:
                raise ResourceExhausted(
                    f"the parameters bound to this server's prepared statements would take "
                    f"{total:,} bytes, past its {self.params_budget:,}: close prepared "
                    "statements no longer needed, or bind fewer rows")
            self._params_bytes = total
            stmt.params_bytes = size
            stmt.params = params

    def close(self, handle: bytes, session: Session = None) -> bool:
        """Drops ``session``'s statement ``handle``; False when it holds no such one."""
        handle = self._checked(handle)
        with self._lock:
            stmt = self._items.get(handle)
            if stmt is None or stmt.session != session:
                return False
            self._drop(handle)
            return True

    def _checked(self, handle: bytes) -> bytes:
        handle = bytes(handle)
        head, tag = handle[:-keys.MAC_BYTES], handle[-keys.MAC_BYTES:]
        if (len(handle) != len(PREPARED) + NONCE + keys.MAC_BYTES
                or not hmac.compare_digest(keys.mac(self._key, head), tag)):
            raise InvalidArgument("prepared statement handle is damaged or was not issued "
                                  "by a server of this root")
        return handle

    def _drop(self, handle: bytes) -> None:
        stmt = self._items.pop(handle)
        self._params_bytes -= stmt.params_bytes
        stmt.params_bytes = 0
        own = self._sessions[stmt.session]
        del own[handle]
        if not own:
            del self._sessions[stmt.session]

    def _expire(self, now: float) -> None:
        limit = now - self.idle_seconds
        while self._items:
            handle, first = next(iter(self._items.items()))
            if first.last_used >= limit:
                break
            self._drop(handle)


class CancelFlag:
    """A stream's cancel flag: set from any thread, read between batches. Nothing ever
    waits on it, so it is a plain attribute rather than a ``threading.Event`` (whose
    condition and locks cost more than the DoGet of a one-row result does otherwise)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class RunningStreams:
    """Cancel flags of the DoGet streams in flight, by ticket.

    A cancel that arrives before its stream starts is remembered for ``remember_s``
    (bounded to ``max_pending`` tickets), so the stream fails as soon as it begins.
    """

    def __init__(self, remember_s: float = 600.0, max_pending: int = 4096) -> None:
        self.remember_s = remember_s
        self.max_pending = max_pending
        self._running: dict[bytes, list[CancelFlag]] = {}
        self._pending: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, ticket: bytes) -> CancelFlag:
        event = CancelFlag()
        with self._lock:
            self._running.setdefault(ticket, []).append(event)
            if self._pending.pop(ticket, None) is not None:
                event.set()
        return event

    def finish(self, ticket: bytes, event: CancelFlag) -> None:
        with self._lock:
            events = self._running.get(ticket)
            if events is None:
                return
            if event in events:
                events.remove(event)
            if not events:
                del self._running[ticket]

    def cancel(self, ticket: bytes) -> bool:
        """Flags every stream of ``ticket``; True when at least one was running."""
        now = time.monotonic()
        with self._lock:
            events = self._running.get(ticket, [])
            for event in events:
                event.set()
            if not events:
                while self._pending and (len(self._pending) >= self.max_pending or
                                         next(iter(self._pending.values())) < now
                                         - self.remember_s):
                    self._pending.popitem(last=False)
                self._pending[ticket] = now
            return bool(events)

    def cancel_all(self) -> int:
        """Flags every running stream (a server shutting down); how many there were."""
        with self._lock:
            events = [e for group in self._running.values() for e in group]
        for event in events:
            event.set()
        return len(events)

    def running(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._running.values())
