"""Errors of the SQL layer: what a statement did wrong, in words a person can act on.

Errors of the table and file layers (``quiver.supertable.errors.TableError``,
``quiver.superfile.errors.SuperfileError``) are not wrapped: they pass through as raised.
"""

from __future__ import annotations

from collections.abc import Sequence

from quiver.catalog.connection import is_valid_table_name
from quiver.catalog.errors import quote_short
from quiver.root_error import Kind, QuiverError


class SqlError(QuiverError):
    """Base class of every error the SQL layer raises about a statement."""

    kind = Kind.INVALID_INPUT


class SqlSyntaxError(SqlError):
    """The statement text does not parse."""


class SqlPlanError(SqlError):
    """The statement parses but cannot be planned: an unknown table or column, a type
    mismatch, an unsupported construct."""


class SqlTableNotFoundError(SqlPlanError):
    """The statement names a table that does not exist under the root."""

    kind = Kind.NOT_FOUND


class SqlParameterError(SqlError):
    """Bound parameters that do not fit the statement: the wrong count, or a value of a
    type that cannot be written as a literal."""


class SqlResourceError(SqlError):
    """The statement needs more than a configured limit allows: memory, the size of a
    search, the output of a function."""

    kind = Kind.RESOURCE_EXHAUSTED


# Tables listed in an "unknown table" message; the rest are counted.
LISTED_TABLES = 20


def unknown_table(name: str, tables: Sequence[str]) -> SqlError:
    """The error for a statement naming ``name``, which is not one of ``tables``: an
    invalid name (INVALID_ARGUMENT) or a missing table (NOT_FOUND), the name quoted
    short and the listing bounded."""
    if not is_valid_table_name(name):
        return SqlPlanError(f"invalid table name {quote_short(name)}: use 1-128 letters, "
                            "digits or underscores, not starting with a digit")
    shown = ", ".join(tables[:LISTED_TABLES]) if tables else "none"
    if len(tables) > LISTED_TABLES:
        shown += f", … ({len(tables)} in all)"
    return SqlTableNotFoundError(f"unknown table {quote_short(name)}; tables are: {shown}")
