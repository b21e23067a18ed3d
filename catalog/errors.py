"""The catalog layer's errors: the table layer's, re-exported, plus naming errors, and
``quote_short``, how a name a client sent is quoted back in a message."""

from __future__ import annotations

from quiver.root_error import Kind
from quiver.supertable.errors import TableError, TableExistsError, TableNotFoundError


class InvalidTableNameError(TableError):
    """A table name that is empty, too long, or has characters other than letters,
    digits and underscores."""

    kind = Kind.INVALID_INPUT


QUOTE_LIMIT = 64


def quote_short(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``text`` quoted for an error message, cut to its first ``limit`` characters and
    "…" when longer: a client's 10,000-character name must not come back whole."""
    value = str(text)
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit])[:-1] + "…" + repr(value[:limit])[-1]


__all__ = ["QUOTE_LIMIT", "InvalidTableNameError", "TableError", "TableExistsError",
           "TableNotFoundError", "quote_short"]
