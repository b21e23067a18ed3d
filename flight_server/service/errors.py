"""The one place where exceptions become gRPC status codes and messages a client can act on.

``status_of`` picks the code for any exception raised while serving a call, a Quiver
error (``quiver.root_error.QuiverError``) by its ``kind``, another library's by
its class:

- INVALID_ARGUMENT: bad SQL or parameters, rows or schemas that do not fit, bad names;
- NOT_FOUND: a missing table or prepared statement;
- ALREADY_EXISTS: a table that is created but exists;
- ABORTED: a commit that kept losing to other writers (retry the whole write);
- UNAVAILABLE: storage that cannot be reached (retry later);
- PERMISSION_DENIED: storage refused the server's credentials;
- RESOURCE_EXHAUSTED: a limit of the server (statements at once, memory, result sizes),
  a full storage (ENOSPC, a quota), memory that ran out, or a limit of the caller (too
  many failed logins: wait and retry);
- DEADLINE_EXCEEDED: a statement that ran past its time limit;
- CANCELLED: a statement stopped by a cancel request, a client gone, or a shutdown;
- INVALID_ARGUMENT also for a request nested too deeply to parse (RecursionError);
- UNAUTHENTICATED, UNIMPLEMENTED: as raised by the server itself;
- INTERNAL for anything else (our own bugs): the traceback goes to the server log, the
  client gets a one-line message.

Every client message passes ``client_message`` last: no traceback, no object repr,
no server filesystem path, one line, at most ``MAX_MESSAGE_BYTES`` bytes of UTF-8
(gRPC sends it in a header; a longer one breaks the call itself). Sources quote what
a client sent as a short prefix (``quiver.catalog.errors.quote_short``).
"""

from __future__ import annotations

import errno
import logging
import re
import traceback

import grpc
import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import DecodeError

from quiver.root_error import Kind, QuiverError

log = logging.getLogger(__name__)

Code = grpc.StatusCode


# The server's own errors keep their Arrow bases: pyarrow.flight gives a handler's Arrow
# exception its matching status itself.
class InvalidArgument(pa.ArrowInvalid, QuiverError):
    """A request the client must change: bad SQL, bad parameters, rows that do not fit."""

    __module__ = "quiver"
    kind = Kind.INVALID_INPUT


class NotFound(pa.ArrowKeyError, QuiverError):
    """The request names something that does not exist: a table, a prepared statement."""

    __module__ = "quiver"
    kind = Kind.NOT_FOUND

    def __str__(self) -> str:
        # KeyError's own str() quotes its argument; clients should read the plain message.
        return str(self.args[0]) if self.args else ""


class NotImplementedCommand(pa.ArrowNotImplementedError, QuiverError):
    """A Flight or Flight SQL request this server does not implement."""

    __module__ = "quiver"
    kind = Kind.UNIMPLEMENTED


class Unauthenticated(QuiverError):
    """The call carries no valid credentials."""

    __module__ = "quiver"
    kind = Kind.UNAUTHENTICATED


class Cancelled(QuiverError):
    """The call was cancelled, by the client or by a cancel request."""

    __module__ = "quiver"
    kind = Kind.CANCELLED


class ResourceExhausted(QuiverError):
    """A limit was reached: statements running at once, memory, sizes, storage space;
    or of the caller: too many failed logins (retry after the wait the message gives)."""

    __module__ = "quiver"
    kind = Kind.RESOURCE_EXHAUSTED


class DeadlineExceeded(QuiverError):
    """The work ran past a time limit."""

    __module__ = "quiver"
    kind = Kind.DEADLINE_EXCEEDED


# Every Quiver error is mapped by its kind. STORAGE and CORRUPT are INTERNAL: the server
# could not do its part, though the message (ours) may be shown.
_CODE_OF_KIND: dict[Kind, grpc.StatusCode] = {
    Kind.INVALID_INPUT: Code.INVALID_ARGUMENT,
    Kind.NOT_FOUND: Code.NOT_FOUND,
    Kind.ALREADY_EXISTS: Code.ALREADY_EXISTS,
    Kind.CONFLICT: Code.ABORTED,
    Kind.STORAGE: Code.INTERNAL,
    Kind.CORRUPT: Code.INTERNAL,
    Kind.UNAVAILABLE: Code.UNAVAILABLE,
    Kind.PERMISSION_DENIED: Code.PERMISSION_DENIED,
    Kind.STORAGE_FULL: Code.RESOURCE_EXHAUSTED,
    Kind.RESOURCE_EXHAUSTED: Code.RESOURCE_EXHAUSTED,
    Kind.CANCELLED: Code.CANCELLED,
    Kind.DEADLINE_EXCEEDED: Code.DEADLINE_EXCEEDED,
    Kind.UNAUTHENTICATED: Code.UNAUTHENTICATED,
    Kind.UNIMPLEMENTED: Code.UNIMPLEMENTED,
    Kind.INTERNAL: Code.INTERNAL,
}

# Exceptions of other libraries, most specific first (the Arrow classes overlap).
_FOREIGN: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], grpc.StatusCode],
                ...] = (
    (MemoryError, Code.RESOURCE_EXHAUSTED),
    (flight.FlightCancelledError, Code.CANCELLED),
    (flight.FlightUnauthenticatedError, Code.UNAUTHENTICATED),
    (flight.FlightUnauthorizedError, Code.PERMISSION_DENIED),
    (flight.FlightUnavailableError, Code.UNAVAILABLE),
    (flight.FlightTimedOutError, Code.DEADLINE_EXCEEDED),
    (pa.ArrowNotImplementedError, Code.UNIMPLEMENTED),
    ((pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError), Code.INVALID_ARGUMENT),
    # A request's protobuf that does not parse: the client sent it.
    (DecodeError, Code.INVALID_ARGUMENT),
)


def log_internal(exc: BaseException, what: str) -> None:
    """Logs an unexpected failure with its full traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=200))
    log.error("%s failed unexpectedly:\n%s", what, text.rstrip())


def status_of(exc: BaseException, what: str = "request") -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and client message for ``exc`` raised while serving ``what``."""
    code, msg = _status_of(exc, what)
    return code, client_message(msg)


def _status_of(exc: BaseException, what: str) -> tuple[grpc.StatusCode, str]:
    special = _special(exc)
    if special is not None:
        return special
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, QuiverError):
        code = _CODE_OF_KIND[exc.kind]
        if code is Code.ABORTED:
            return code, f"{msg} (conflicting writers; retry)"
        if code is Code.PERMISSION_DENIED:
            return code, f"storage refused access: {msg}"
        if code is not Code.INTERNAL:
            return code, msg
        # Our own message, written for people, says what failed (storage, corrupt
        # metadata); the traceback goes to the log all the same.
        log_internal(exc, what)
        return Code.INTERNAL, f"{what} failed: {msg}"
    for kinds, code in _FOREIGN:
        if isinstance(exc, kinds):
            return code, msg
    log_internal(exc, what)
    return Code.INTERNAL, (f"{what} failed with an internal error ({type(exc).__name__}); "
                           "see the server log")


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _special(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """Codes whose message is ours, not the exception's: what the exception says names
    server paths or internals."""
    if (isinstance(exc, QuiverError) and exc.kind is Kind.STORAGE_FULL) or (
            isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS):
        log.warning("storage full: %s", exc)
        return Code.RESOURCE_EXHAUSTED, ("the server's storage is full (no space left on "
                                         "the storage root's device or quota); nothing was "
                                         "written by the failed step, retry once space is "
                                         "freed")
    if isinstance(exc, MemoryError):
        log.warning("out of memory: %r", exc)
        return Code.RESOURCE_EXHAUSTED, "the server ran out of memory for this request"
    if isinstance(exc, RecursionError):
        # Parsers and planners recurse once per nesting level of the statement.
        log.info("request nested too deeply: %s", exc)
        return Code.INVALID_ARGUMENT, ("the request is nested too deeply to process "
                                       "(parentheses, subqueries or expressions); "
                                       "flatten it")
    return None


# gRPC sends the message in a header; servers and proxies refuse headers of 8 KiB and more.
MAX_MESSAGE_BYTES = 1024
_ELLIPSIS = "…"
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*", re.DOTALL)
_FRAME = re.compile(r'\s*File "[^"]*", line \d+.*')
_OBJECT_REPR = re.compile(r"<[\w.]+ (?:object|at) (?:at )?0x[0-9a-fA-F]+>")
_FILE_URI = re.compile(r"file://[^\s'\"]*[^\s'\":,;.]")
# An absolute path of two or more segments not inside a URI or a word ("a/b/c").
_ABS_PATH = re.compile(r"(?<![\w/:.])(?:/[\w.\-~@+]+){2,}/?")


def client_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` as a client may see it: without tracebacks, object reprs or server
    filesystem paths, on one line, at most ``limit`` bytes once encoded as UTF-8."""
    text = _TRACEBACK.sub("", message)
    text = _FRAME.sub("", text)
    text = _OBJECT_REPR.sub("<object>", text)
    text = _FILE_URI.sub("<local path>", text)
    text = _ABS_PATH.sub("<path>", text)
    text = " ".join(text.split()) or "request failed"
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    cut = raw[:limit - len(_ELLIPSIS.encode())].decode("utf-8", errors="ignore")
    return cut + _ELLIPSIS
