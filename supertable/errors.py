"""The table layer's exception hierarchy, storage failures included."""

from __future__ import annotations

from quiver.root_error import Kind, QuiverError


class TableError(QuiverError):
    """Base class of every error raised by the table and storage layers."""


class StorageError(TableError):
    """Object storage failed in a way that is not one of the cases below."""

    kind = Kind.STORAGE


class ObjectNotFoundError(StorageError):
    """The object (or table, or root) does not exist."""

    kind = Kind.NOT_FOUND


class ObjectExistsError(StorageError):
    """A create-only write found the object already there."""

    kind = Kind.INVALID_INPUT


class PreconditionFailedError(StorageError):
    """A conditional write lost: the object changed since it was read."""


class StorageUnavailableError(StorageError):
    """The storage endpoint cannot be reached or keeps failing."""

    kind = Kind.UNAVAILABLE


class StoragePermissionError(StorageError):
    """The credentials are missing, wrong, or not allowed to do this."""

    kind = Kind.PERMISSION_DENIED


class StorageFullError(StorageError):
    """The storage has no room left for a write (a full disk or an exhausted quota)."""

    kind = Kind.STORAGE_FULL


class CommitConflictError(TableError):
    """Other writers kept winning: the commit gave up after its bounded retries."""

    kind = Kind.CONFLICT


class WriteConflictError(CommitConflictError):
    """A commit published after the write's snapshot changed rows the write read; the
    write must be computed again on the newer version."""


class TableCorruptError(TableError):
    """Table metadata on storage is unreadable or inconsistent."""

    kind = Kind.CORRUPT


class TableSchemaError(TableError):
    """Rows do not fit the table's schema, or a predicate names an unknown column."""

    kind = Kind.INVALID_INPUT


class TableNotFoundError(TableError):
    """No table of that name exists under the root."""

    kind = Kind.NOT_FOUND


class TableExistsError(TableError):
    """A table of that name already exists under the root."""

    kind = Kind.ALREADY_EXISTS


class WorkCancelledError(TableError):
    """The caller cancelled the work (a cancel request, a client that went away)."""

    kind = Kind.CANCELLED


class WorkTimeoutError(TableError):
    """The work ran past the deadline its caller set."""

    kind = Kind.DEADLINE_EXCEEDED
