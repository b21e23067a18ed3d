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

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# The layers live under this package too (``quiver.superfile`` ... ``quiver.flight_server``)
# and import it first: the API is loaded on first use so that ``import quiver.superfile``
# does not pull in the SQL engine and the server above it.
_PUBLIC = {
    "Database": "quiver.db",
    "connect": "quiver.db",
    "AlreadyExists": "quiver.errors",
    "Conflict": "quiver.errors",
    "InvalidInput": "quiver.errors",
    "NotFound": "quiver.errors",
    "QuiverError": "quiver.root_error",
    "StorageError": "quiver.errors",
    "Search": "quiver.query",
    "Result": "quiver.result",
    "Table": "quiver.table",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'quiver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


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
