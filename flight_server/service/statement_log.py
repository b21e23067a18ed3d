"""The statement log: one structured line per call that runs work, and hooks for metrics.

The transport opens a ``StatementRecord`` for every call (``begin``) and closes it with
the call's gRPC status (``finish``); the handlers say what the call runs (``label``):
its kind and text. Only labelled calls are logged, once, when they end; a DoGet's line
is written when its stream ends (finished, failed, cancelled or its client gone), with
the rows and bytes it sent; one that finished well is written once gRPC has sent its
status, so the client does not wait for the line. Kinds:

- ``query``: rows streamed by DoGet (a statement or a prepared statement, or plain SQL);
  planning it in GetFlightInfo is logged only when planning fails, so a query makes
  one line, not two;
- ``update``: DDL or DML (DoPut of CommandStatementUpdate, or sent as a query);
- ``prepared_update``: a prepared DDL/DML run by DoPut;
- ``ingest``: bulk ingest or a plain DoPut into a table (``bytes`` counts bytes in);
- ``prepare`` and ``metadata`` (catalog commands): at DEBUG.

A line carries: time, user, peer, kind, ``sha`` (sha256 of the whole text, 16 hex
characters), ``text`` (its first 200 characters), ``ms``, ``rows``, ``bytes``,
``status`` (gRPC code name). Parameter values, passwords and tokens are never part of
it: the text is the statement as sent, placeholders and all.

Observers (``add_observer``, e.g. ``quiver.flight_server.service.metrics``) see every labelled call
start and end.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("quiver.statements")

TEXT_CHARS = 200
HASH_CHARS = 16
KINDS = ("query", "update", "prepared_update", "ingest", "prepare", "metadata")


@dataclass
class StatementRecord:
    """What one call ran and how it went; filled in by the transport and the handlers."""

    method: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    kind: str | None = None
    text: str = ""
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    level: int = logging.INFO
    # Planning whose rows another call (DoGet) streams: logged only if it fails.
    deferred: bool = False
    finished: bool = False

    @property
    def bytes(self) -> int:
        """The bytes the statement moved: in for an ingest, out for everything else."""
        return self.bytes_in if self.kind == "ingest" else self.bytes_out


class Observer(Protocol):
    """Sees labelled calls start and end (metrics)."""

    def started(self, record: StatementRecord) -> None: ...

    def finished(self, record: StatementRecord, status: str, seconds: float) -> None: ...


_observers: list[Observer] = []
_current = threading.local()


def add_observer(observer: Observer) -> None:
    """Adds ``observer`` (once) to those told about every labelled call."""
    if observer not in _observers:
        _observers.append(observer)


def begin(call: Any, method: str, peer: str) -> StatementRecord:
    """Opens the record of ``call`` and makes it this thread's current one."""
    record = StatementRecord(method=method, peer=peer)
    call.record = record
    _current.record = record
    return record


def current() -> StatementRecord | None:
    """The record of the call this thread is serving, if any."""
    return getattr(_current, "record", None)


def label(kind: str, text: str, *, level: int = logging.INFO, deferred: bool = False,
          replace: bool = False) -> StatementRecord | None:
    """Says what the current call runs; the first label of a call counts unless
    ``replace`` (a statement found to be DDL/DML once parsed)."""
    record = current()
    if record is None or (record.kind is not None and not replace):
        return record
    first = record.kind is None
    record.kind = kind
    record.text = text
    record.level = level
    record.deferred = deferred
    if first:
        for observer in _observers:
            _safely(observer.started, record)
    return record


def set_rows(rows: int) -> None:
    """The row count of the current call (an update's count, an ingest's rows)."""
    record = current()
    if record is not None:
        record.rows = rows


def text_hash(text: str) -> str:
    """The statement's sha256 in hex, cut to ``HASH_CHARS`` characters."""
    if len(text) <= _HASHED_CHARS:
        return _text_hash_cached(text)
    return _text_hash(text)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()[:HASH_CHARS]


# The same statements come again and again: short texts keep their hash.
_HASHED_CHARS = 4096
_text_hash_cached = functools.lru_cache(maxsize=512)(_text_hash)


def detach(record: StatementRecord) -> None:
    """Stops ``record`` being this thread's current one (it is finished elsewhere)."""
    if getattr(_current, "record", None) is record:
        _current.record = None


def finish(record: StatementRecord, status: str, user: str | None = None) -> None:
    """Closes ``record`` with the call's gRPC status name: logs its line (once) and tells
    the observers."""
    detach(record)
    if record.finished or record.kind is None:
        return
    record.finished = True
    seconds = time.monotonic() - record.started
    for observer in _observers:
        _safely(observer.finished, record, status, seconds)
    if record.deferred and status == "OK":
        level = logging.DEBUG
    else:
        level = record.level if status == "OK" else max(record.level, logging.INFO)
    if not log.isEnabledFor(level):
        return
    fields = {
        "user": user,
        "peer": record.peer,
        "kind": record.kind,
        "sha": text_hash(record.text),
        "text": record.text[:TEXT_CHARS],
        "ms": round(seconds * 1000, 3),
        "rows": record.rows,
        "bytes": record.bytes,
        "status": status,
    }
    if record.deferred and status == "OK":
        fields["kind"] = f"{record.kind}_plan"
    log.log(level, "statement %s", _Line(fields), extra={"statement": fields})


class _Line:
    """The text of a statement line, made when the log's writer formats it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return _as_text(self.fields)


def _as_text(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if key == "text":
            continue
        parts.append(f"{key}={'-' if value is None else value}")
    # The text last and quoted, so a line splits on its first "text=".
    text = fields["text"].replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    parts.append(f'text="{text}"')
    return " ".join(parts)


def _safely(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # an observer's failure must not fail the call it watches
        log.exception("statement observer failed")
