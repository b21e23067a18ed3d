"""The Python API's exceptions: ``QuiverError``, the root of every exception Quiver raises,
and the five kinds the API promises, with the translation of a lower layer's error (SQL,
table, catalog, file) into one of them.

``QuiverError`` is defined in the lowest layer (``quiver.root_error``) so that
every layer's errors derive from it; this module gives it its public name. The API catches
a lower layer's exception at its edge and raises the subclass here its ``kind`` maps to,
the original kept as ``__cause__``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyarrow as pa

from quiver.root_error import Kind, QuiverError

__all__ = ["AlreadyExists", "Conflict", "InvalidInput", "NotFound", "QuiverError",
           "StorageError", "translate", "translated"]


class InvalidInput(QuiverError, ValueError):
    """The request itself is wrong: bad SQL, an unknown column, rows that do not fit the
    table's schema, a vector of the wrong length, ragged embeddings."""

    kind = Kind.INVALID_INPUT


class NotFound(QuiverError, LookupError):
    """The named table (or an object it needs) does not exist."""

    kind = Kind.NOT_FOUND


class AlreadyExists(QuiverError):
    """A table of that name already exists."""

    kind = Kind.ALREADY_EXISTS


class Conflict(QuiverError):
    """Concurrent writers kept changing the rows this write read; nothing was changed and
    the write may be retried."""

    kind = Kind.CONFLICT


class StorageError(QuiverError, OSError):
    """Object storage failed or holds something unreadable: unreachable, permission
    refused, full, or corrupt table metadata."""

    kind = Kind.STORAGE


_API_CLASSES = (InvalidInput, NotFound, AlreadyExists, Conflict, StorageError)

# A limit of the engine (SqlResourceError) is the caller's to change; the kinds with no
# class of their own here (cancelled, a deadline, internal) are raised as QuiverError.
_CLASS_OF_KIND: dict[Kind, type[QuiverError]] = {
    Kind.INVALID_INPUT: InvalidInput,
    Kind.RESOURCE_EXHAUSTED: InvalidInput,
    Kind.UNIMPLEMENTED: InvalidInput,
    Kind.NOT_FOUND: NotFound,
    Kind.ALREADY_EXISTS: AlreadyExists,
    Kind.CONFLICT: Conflict,
    Kind.STORAGE: StorageError,
    Kind.CORRUPT: StorageError,
    Kind.UNAVAILABLE: StorageError,
    Kind.PERMISSION_DENIED: StorageError,
    Kind.STORAGE_FULL: StorageError,
}

# Arrow rejects values (a ragged list, a type that does not cast) with its own classes.
_ARROW_INPUT = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def translate(exc: BaseException) -> QuiverError | None:
    """The API's exception for a lower layer's ``exc`` (its cause set), or None when
    ``exc`` is not one the API translates."""
    if isinstance(exc, QuiverError):
        if isinstance(exc, _API_CLASSES) or type(exc) is QuiverError:
            return exc
        ours: type[QuiverError] = _CLASS_OF_KIND.get(exc.kind, QuiverError)
    elif isinstance(exc, _ARROW_INPUT):
        ours = InvalidInput
    else:
        return None
    err = ours(str(exc) or type(exc).__name__)
    err.__cause__ = exc
    return err


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Runs the body, re-raising a lower layer's exception as one of the API's."""
    try:
        yield
    except Exception as exc:
        ours = translate(exc)
        if ours is None or ours is exc:
            raise
        raise ours from exc
