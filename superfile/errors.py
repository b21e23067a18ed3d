"""The superfile layer's exception hierarchy.

Every failure the superfile layer reports is a ``SuperfileError``, a ``QuiverError``;
the subclasses say which failure, so the layers above can map them once (for
example to gRPC status codes at the server edge) without string matching.
"""

from __future__ import annotations

from quiver.root_error import Kind, QuiverError


class SuperfileError(QuiverError):
    """Base class of every error raised by the superfile layer. The file layer rejects
    what a caller gave it (a vector of the wrong length, an unknown column, bytes that are
    not a superfile): its storage failures arrive as the table layer's errors."""

    kind = Kind.INVALID_INPUT


class NotASuperfileError(SuperfileError):
    """The bytes are not a superfile: not Parquet, or Parquet without our metadata."""


class UnsupportedVersionError(SuperfileError):
    """The file was written by an incompatible version of the format."""


class CorruptFileError(SuperfileError):
    """The file is truncated, a checksum does not match, or a structure is malformed."""


class RangeReadError(SuperfileError):
    """The byte source could not serve a requested range."""


class IndexSpecError(SuperfileError):
    """The index specification does not fit the data (missing column, wrong type, ...)."""


class QueryError(SuperfileError):
    """A query is malformed or asks for something the file cannot answer.

    Examples: a vector of the wrong length, an unknown column, a column that
    has no index of the needed kind.
    """
