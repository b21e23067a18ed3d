"""The Python API's exceptions: one root, ``QuiverError``, and the translation of every
lower layer's exception (SQL, table, catalog, file) into one of its subclasses.

The layers keep their own hierarchies; the API catches their exceptions at its edge and
raises the matching subclass here, with the original kept as ``__cause__``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyarrow as pa

from quiver.catalog.errors import InvalidTableNameError
from quiver.flight_server.sql import errors as sql_errors
from quiver.superfile.errors import SuperfileError
from quiver.supertable import errors as table_errors

__all__ = ["AlreadyExists", "Conflict", "InvalidInput", "NotFound", "QuiverError",
           "StorageError", "translated"]


class QuiverError(Exception):
    """Base class of every error the ``quiver`` API raises."""


class InvalidInput(QuiverError, ValueError):
    """The request itself is wrong: bad SQL, an unknown column, rows that do not fit the
    table's schema, a vector of the wrong length, ragged embeddings."""


class NotFound(QuiverError, LookupError):
    """The named table (or an object it needs) does not exist."""


class AlreadyExists(QuiverError):
    """A table of that name already exists."""


class Conflict(QuiverError):
    """Concurrent writers kept changing the rows this write read; nothing was changed and
    the write may be retried."""


class StorageError(QuiverError, OSError):
    """Object storage failed or holds something unreadable: unreachable, permission
    refused, full, or corrupt table metadata."""


# Most specific first: SqlTableNotFoundError is an SqlError, ObjectExistsError a storage
# error that means the caller's write collided.
_MAP: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...],
                  type[QuiverError]], ...] = (
    ((sql_errors.SqlTableNotFoundError, table_errors.TableNotFoundError,
      table_errors.ObjectNotFoundError), NotFound),
    (table_errors.TableExistsError, AlreadyExists),
    (table_errors.CommitConflictError, Conflict),
    ((sql_errors.SqlError, table_errors.TableSchemaError, InvalidTableNameError,
      SuperfileError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError),
     InvalidInput),
    ((table_errors.StorageError, table_errors.TableCorruptError), StorageError),
    (table_errors.TableError, QuiverError),
)


def translate(exc: BaseException) -> QuiverError | None:
    """The API's exception for a lower layer's ``exc`` (its cause set), or None when
    ``exc`` is not one the API translates."""
    if isinstance(exc, QuiverError):
        return exc
    for kinds, ours in _MAP:
        if isinstance(exc, kinds):
            err = ours(str(exc) or type(exc).__name__)
            err.__cause__ = exc
            return err
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Runs the body, re-raising a lower layer's exception as a ``QuiverError``."""
    try:
        yield
    except QuiverError:
        raise
    except Exception as exc:
        ours = translate(exc)
        if ours is None:
            raise
        raise ours from exc
