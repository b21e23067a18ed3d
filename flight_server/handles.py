"""Statement handles carried in tickets, prepared statements, and running-stream tokens.

A statement handle is self-contained, so any server on the same root can answer
the ticket and nothing is kept between GetFlightInfo and DoGet:

    b"qv1" + kind + 16-byte nonce + payload

with kind ``q`` (payload: UTF-8 SQL), ``p`` (4-byte SQL length, SQL, then the
bound parameter rows as an Arrow IPC stream), ``r`` (a result already computed,
as an Arrow IPC stream: DDL/DML asked for through a query command runs once, when
its FlightInfo is made) or ``s`` (one part of a scan: 4-byte length of a JSON
object naming the table, its uuid, the pinned version and the part's superfiles,
then the UTF-8 SQL). The nonce makes each FlightInfo's ticket unique, so a
cancel names one execution.

Prepared statements live in ``PreparedRegistry``: bounded in size (the least
recently used is dropped first) and expired after an idle time.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import pyarrow as pa

from flight_server.errors import InvalidArgument, NotFound

MAGIC = b"qv1"
NONCE = 16


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
    nonce = os.urandom(NONCE)
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
    return (MAGIC + b"s" + (nonce or os.urandom(NONCE)) + struct.pack("<I", len(head)) + head
            + sql.encode())


def new_nonce() -> bytes:
    return os.urandom(NONCE)


def encode_result(result: pa.Table) -> bytes:
    """A handle that returns ``result`` as it is."""
    return MAGIC + b"r" + os.urandom(NONCE) + _ipc(result)


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


class PreparedRegistry:
    """Prepared statements by handle, at most ``max_size``, each dropped after
    ``idle_seconds`` without use. Safe to share between threads."""

    def __init__(self, max_size: int = 1024, idle_seconds: float = 1800.0) -> None:
        self.max_size = max_size
        self.idle_seconds = idle_seconds
        self._items: OrderedDict[bytes, PreparedStatement] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, sql: str, *, is_query: bool, dataset_schema: pa.Schema | None,
            parameter_schema: pa.Schema) -> PreparedStatement:
        stmt = PreparedStatement(handle=b"qvp" + os.urandom(NONCE), sql=sql,
                                 is_query=is_query, dataset_schema=dataset_schema,
                                 parameter_schema=parameter_schema)
        with self._lock:
            self._expire(time.monotonic())
            while len(self._items) >= self.max_size:
                self._items.popitem(last=False)
            self._items[stmt.handle] = stmt
        return stmt

    def get(self, handle: bytes) -> PreparedStatement:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            stmt = self._items.get(bytes(handle))
            if stmt is None:
                raise NotFound("prepared statement not found: it was closed, expired after "
                               f"{self.idle_seconds:.0f}s idle, or made by another server")
            stmt.last_used = now
            self._items.move_to_end(stmt.handle)
            return stmt

    def close(self, handle: bytes) -> bool:
        with self._lock:
            return self._items.pop(bytes(handle), None) is not None

    def _expire(self, now: float) -> None:
        limit = now - self.idle_seconds
        while self._items:
            handle, first = next(iter(self._items.items()))
            if first.last_used >= limit:
                break
            del self._items[handle]


class RunningStreams:
    """Cancel flags of the DoGet streams in flight, by ticket.

    A cancel that arrives before its stream starts is remembered for ``remember_s``
    (bounded to ``max_pending`` tickets), so the stream fails as soon as it begins.
    """

    def __init__(self, remember_s: float = 600.0, max_pending: int = 4096) -> None:
        self.remember_s = remember_s
        self.max_pending = max_pending
        self._running: dict[bytes, list[threading.Event]] = {}
        self._pending: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, ticket: bytes) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._running.setdefault(ticket, []).append(event)
            if self._pending.pop(ticket, None) is not None:
                event.set()
        return event

    def finish(self, ticket: bytes, event: threading.Event) -> None:
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
