"""Errors of the SQL layer: what a statement did wrong, in words a person can act on.

Errors of the table and file layers (``supertable.errors.TableError``,
``superfile.errors.SuperfileError``) are not wrapped: they pass through as raised.
"""

from __future__ import annotations


class SqlError(Exception):
    """Base class of every error the SQL layer raises about a statement."""


class SqlSyntaxError(SqlError):
    """The statement text does not parse."""


class SqlPlanError(SqlError):
    """The statement parses but cannot be planned: an unknown table or column, a type
    mismatch, an unsupported construct."""


class SqlTableNotFoundError(SqlPlanError):
    """The statement names a table that does not exist under the root."""


class SqlParameterError(SqlError):
    """Bound parameters that do not fit the statement: the wrong count, or a value of a
    type that cannot be written as a literal."""


class SqlResourceError(SqlError):
    """The statement needs more than a configured limit allows: memory, the size of a
    search, the output of a function."""
