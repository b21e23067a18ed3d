"""The one place where exceptions become Flight (gRPC) errors a client can act on.

pyarrow's Python Flight server picks the gRPC status from the exception class:
``ArrowInvalid`` (and ``ValueError``) -> INVALID_ARGUMENT, ``ArrowKeyError`` ->
NOT_FOUND, ``ArrowNotImplementedError`` -> UNIMPLEMENTED, and the ``Flight*Error``
classes -> CANCELLED, UNAVAILABLE, UNAUTHENTICATED, PERMISSION_DENIED, INTERNAL,
DEADLINE_EXCEEDED. It has no way to send ALREADY_EXISTS, ABORTED or
FAILED_PRECONDITION, so:

- an existing table (create, ingest ``create`` mode) is INVALID_ARGUMENT whose
  message says "already exists";
- a commit that kept losing to other writers is UNAVAILABLE (retry later), the
  retryable code closest to ABORTED.

For the Arrow-status classes pyarrow appends the Python traceback to the message
the client sees; ``hide_tracebacks()`` (called when a server is built) limits
that to the exception's one-line summary, so clients never see server frames.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.flight as flight

from catalog.errors import InvalidTableNameError
from flight_server.sql import errors as sql_errors
from superfile.errors import SuperfileError
from supertable import errors as table_errors

log = logging.getLogger(__name__)

T = TypeVar("T")


class InvalidArgument(pa.ArrowInvalid):
    """A request the client must change: bad SQL, bad parameters, rows that do not fit."""

    __module__ = "quiver"


class NotFound(pa.ArrowKeyError):
    """The request names something that does not exist: a table, a prepared statement."""

    __module__ = "quiver"

    def __str__(self) -> str:
        # KeyError's own str() quotes its argument; clients should read the plain message.
        return str(self.args[0]) if self.args else ""


class NotImplementedCommand(pa.ArrowNotImplementedError):
    """A Flight or Flight SQL request this server does not implement."""

    __module__ = "quiver"


_FLIGHT_ERRORS = (
    flight.FlightCancelledError, flight.FlightUnavailableError,
    flight.FlightUnauthenticatedError, flight.FlightUnauthorizedError,
    flight.FlightInternalError, flight.FlightTimedOutError, flight.FlightServerError,
)
_PASS_THROUGH = (InvalidArgument, NotFound, NotImplementedCommand, *_FLIGHT_ERRORS)

_hidden = False


def hide_tracebacks() -> None:
    """Keeps server stack frames out of error messages sent to clients.

    pyarrow formats a Python exception for the client with the ``traceback`` module,
    which honours ``sys.tracebacklimit``; 0 leaves the one-line summary. The server logs
    unexpected errors with their full traceback itself (``log_internal``).
    """
    global _hidden
    if not _hidden:
        sys.tracebacklimit = 0
        _hidden = True


def log_internal(exc: BaseException, what: str) -> None:
    """Logs an unexpected failure with its full traceback, whatever the traceback limit."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=200))
    log.error("%s failed unexpectedly:\n%s", what, text.rstrip())


def flight_error(exc: BaseException, what: str = "request") -> BaseException:
    """The exception to raise to the client for ``exc`` raised while serving ``what``."""
    if isinstance(exc, _PASS_THROUGH):
        return exc
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, sql_errors.SqlTableNotFoundError):
        return NotFound(msg)
    if isinstance(exc, sql_errors.SqlError):
        return InvalidArgument(msg)
    if isinstance(exc, table_errors.TableNotFoundError | table_errors.ObjectNotFoundError):
        return NotFound(msg)
    if isinstance(exc, table_errors.TableExistsError):
        return InvalidArgument(msg)
    if isinstance(exc, table_errors.CommitConflictError):
        return flight.FlightUnavailableError(f"{msg} (conflicting writers; retry)")
    if isinstance(exc, table_errors.StorageUnavailableError):
        return flight.FlightUnavailableError(msg)
    if isinstance(exc, table_errors.StoragePermissionError):
        return flight.FlightUnauthorizedError(f"storage refused access: {msg}")
    if isinstance(exc, table_errors.TableSchemaError | table_errors.ObjectExistsError):
        return InvalidArgument(msg)
    if isinstance(exc, InvalidTableNameError):
        return InvalidArgument(msg)
    if isinstance(exc, SuperfileError):
        # The file layer rejects what a caller gave it (a vector of the wrong length, an
        # unknown column); its storage failures arrive as table errors above.
        return InvalidArgument(msg)
    if isinstance(exc, pa.ArrowInvalid | pa.ArrowTypeError | pa.ArrowNotImplementedError
                  | pa.ArrowKeyError):
        return InvalidArgument(msg) if not isinstance(exc, pa.ArrowNotImplementedError) \
            else NotImplementedCommand(msg)
    if isinstance(exc, table_errors.TableError):
        log_internal(exc, what)
        return flight.FlightInternalError(f"{what} failed: {msg}")
    log_internal(exc, what)
    return flight.FlightInternalError(
        f"{what} failed with an internal error ({type(exc).__name__}); see the server log")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Runs the body, re-raising any failure as the Flight error ``flight_error`` picks."""
    try:
        yield
    except Exception as exc:
        raise flight_error(exc, what) from None


def guarded(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Calls ``fn`` with ``translated(what)`` around it."""
    with translated(what):
        return fn(*args, **kwargs)
