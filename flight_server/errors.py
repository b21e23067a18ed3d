"""The one place where exceptions become gRPC status codes and messages a client can act on.

``status_of`` picks the code for any exception raised while serving a call:

- INVALID_ARGUMENT: bad SQL or parameters, rows or schemas that do not fit, bad names;
- NOT_FOUND: a missing table or prepared statement;
- ALREADY_EXISTS: a table that is created but exists;
- ABORTED: a commit that kept losing to other writers (retry the whole write);
- UNAVAILABLE: storage that cannot be reached (retry later);
- PERMISSION_DENIED: storage refused the server's credentials;
- RESOURCE_EXHAUSTED: a limit of the server (statements at once, memory, result sizes)
  or of the caller (too many failed logins: wait and retry);
- DEADLINE_EXCEEDED: a statement that ran past its time limit;
- CANCELLED: a statement stopped by a cancel request, a client gone, or a shutdown;
- UNAUTHENTICATED, UNIMPLEMENTED: as raised by the server itself;
- INTERNAL for anything else: the traceback goes to the server log, the client gets
  a one-line message.

Messages never carry server stack frames: they are the exception's own text.
"""

from __future__ import annotations

import logging
import traceback

import grpc
import pyarrow as pa
import pyarrow.flight as flight

from catalog.errors import InvalidTableNameError
from flight_server.sql import errors as sql_errors
from superfile.errors import SuperfileError
from supertable import errors as table_errors

log = logging.getLogger(__name__)

Code = grpc.StatusCode


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


class Unauthenticated(Exception):
    """The call carries no valid credentials."""

    __module__ = "quiver"


class Cancelled(Exception):
    """The call was cancelled, by the client or by a cancel request."""

    __module__ = "quiver"


class ResourceExhausted(Exception):
    """A limit of the server is reached: statements running at once, memory, sizes; or
    of the caller: too many failed logins (retry after the wait the message gives)."""

    __module__ = "quiver"


# Most specific first: SqlTableNotFoundError is an SqlError, the Arrow classes overlap.
_CODES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], grpc.StatusCode],
              ...] = (
    (InvalidArgument, Code.INVALID_ARGUMENT),
    (NotFound, Code.NOT_FOUND),
    (NotImplementedCommand, Code.UNIMPLEMENTED),
    (Unauthenticated, Code.UNAUTHENTICATED),
    ((Cancelled, flight.FlightCancelledError, table_errors.WorkCancelledError),
     Code.CANCELLED),
    ((ResourceExhausted, sql_errors.SqlResourceError), Code.RESOURCE_EXHAUSTED),
    (table_errors.WorkTimeoutError, Code.DEADLINE_EXCEEDED),
    (flight.FlightUnauthenticatedError, Code.UNAUTHENTICATED),
    (flight.FlightUnauthorizedError, Code.PERMISSION_DENIED),
    (flight.FlightUnavailableError, Code.UNAVAILABLE),
    (flight.FlightTimedOutError, Code.DEADLINE_EXCEEDED),
    (sql_errors.SqlTableNotFoundError, Code.NOT_FOUND),
    (sql_errors.SqlError, Code.INVALID_ARGUMENT),
    ((table_errors.TableNotFoundError, table_errors.ObjectNotFoundError), Code.NOT_FOUND),
    (table_errors.TableExistsError, Code.ALREADY_EXISTS),
    (table_errors.CommitConflictError, Code.ABORTED),
    (table_errors.StorageUnavailableError, Code.UNAVAILABLE),
    (table_errors.StoragePermissionError, Code.PERMISSION_DENIED),
    ((table_errors.TableSchemaError, table_errors.ObjectExistsError), Code.INVALID_ARGUMENT),
    (InvalidTableNameError, Code.INVALID_ARGUMENT),
    # The file layer rejects what a caller gave it (a vector of the wrong length, an
    # unknown column); its storage failures arrive as table errors above.
    (SuperfileError, Code.INVALID_ARGUMENT),
    (pa.ArrowNotImplementedError, Code.UNIMPLEMENTED),
    ((pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError), Code.INVALID_ARGUMENT),
)


def log_internal(exc: BaseException, what: str) -> None:
    """Logs an unexpected failure with its full traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=200))
    log.error("%s failed unexpectedly:\n%s", what, text.rstrip())


def status_of(exc: BaseException, what: str = "request") -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and client message for ``exc`` raised while serving ``what``."""
    msg = str(exc) or type(exc).__name__
    for kinds, code in _CODES:
        if isinstance(exc, kinds):
            if code is Code.ABORTED:
                msg = f"{msg} (conflicting writers; retry)"
            elif code is Code.PERMISSION_DENIED and isinstance(
                    exc, table_errors.StoragePermissionError):
                msg = f"storage refused access: {msg}"
            return code, msg
    log_internal(exc, what)
    if isinstance(exc, table_errors.TableError):
        return Code.INTERNAL, f"{what} failed: {msg}"
    return Code.INTERNAL, (f"{what} failed with an internal error ({type(exc).__name__}); "
                           "see the server log")
