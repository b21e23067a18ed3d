"""Quiver's Python API: SQL, full-text, vector and hybrid search over tables of Parquet
superfiles on a local folder or object storage, embedded in this process.

>>> import quiver
>>> db = quiver.connect("memory://example")
>>> table = db.create_table("docs", [{"title": "fast json parser"}])
>>> table.search("json").to_list()[0]["title"]
'fast json parser'
>>> db.close()

Every error the API raises is a ``QuiverError``: ``InvalidInput``, ``NotFound``,
``AlreadyExists``, ``Conflict`` or ``StorageError``, the lower layer's exception kept as
``__cause__``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from quiver.db import Database, connect
from quiver.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    QuiverError,
    StorageError,
)
from quiver.query import Search
from quiver.result import Result
from quiver.table import Table


def _version() -> str:
    try:
        return version("quiver")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


__version__: str = _version()
"""The installed distribution's version (``version`` in pyproject.toml)."""

__all__ = [
    "AlreadyExists",
    "Conflict",
    "Database",
    "InvalidInput",
    "NotFound",
    "QuiverError",
    "Result",
    "Search",
    "StorageError",
    "Table",
    "__version__",
    "connect",
]
