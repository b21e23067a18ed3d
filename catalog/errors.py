"""The catalog layer's errors: the table layer's, re-exported, plus naming errors."""

from __future__ import annotations

from supertable.errors import TableError, TableExistsError, TableNotFoundError


class InvalidTableNameError(TableError):
    """A table name that is empty, too long, or has characters other than letters,
    digits and underscores."""


__all__ = ["InvalidTableNameError", "TableError", "TableExistsError", "TableNotFoundError"]
