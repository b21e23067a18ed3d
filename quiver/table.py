"""One table of a ``quiver`` database: appends, counts, deletes and updates, searches.

Deletes and updates run as SQL statements on the database's connection, so they are
serializable as the server's are (a statement conflicting with a concurrent commit runs
again on the new version). Appends go through the bulk-ingest path: one commit, all or
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quiver.data import Data, to_reader
from quiver.errors import InvalidInput, translated
from quiver.flight_server.service import ingest
from quiver.query import Search, quote_identifier
from quiver.superfile.spec import IndexSpec
from quiver.supertable.table import Table as _Table

if TYPE_CHECKING:
    from quiver.db import Database

__all__ = ["Table"]


class Table:
    """A handle on the table ``name``; get one from ``Database.open_table`` or
    ``Database.create_table``."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self.name = name

    def __repr__(self) -> str:
        return f"quiver.Table({self.name!r})"

    def _inner(self) -> _Table:
        with translated():
            return self._db._conn.open_table(self.name)

    def _spec(self) -> IndexSpec:
        return self._inner().spec

    @property
    def schema(self) -> pa.Schema:
        """The table's columns (the hidden ``_id`` row id is not listed)."""
        return self._inner().schema

    @property
    def version(self) -> int:
        """The table's current version number."""
        with translated():
            return self._inner().snapshot().version

    def count(self) -> int:
        """The number of live rows."""
        with translated():
            return self._inner().count()

    def add(self, data: Data) -> int:
        """Appends ``data`` (a pandas or polars DataFrame, a pyarrow Table, RecordBatch or
        RecordBatchReader, or a list of dicts) in one commit; the number of rows added.
        Float list columns become ``fixed_size_list<float32, d>`` as in ``create_table``."""
        with translated():
            return ingest.append_stream(self._inner(), to_reader(data))

    def delete(self, where: str) -> int:
        """Deletes the rows matching the SQL condition ``where``; the number deleted."""
        _check_condition(where)
        result = self._db.sql(f"DELETE FROM {quote_identifier(self.name)} WHERE ({where})")
        return _count(result.to_arrow())

    def update(self, where: str, values: Mapping[str, Any]) -> int:
        """Sets ``values`` (column name to new value, bound as parameters) on the rows
        matching the SQL condition ``where``; the number of rows updated."""
        _check_condition(where)
        if not values:
            raise InvalidInput("update() needs at least one column to set")
        sets = ", ".join(f"{quote_identifier(col)} = ?" for col in values)
        params = [_param(v) for v in values.values()]
        result = self._db.sql(
            f"UPDATE {quote_identifier(self.name)} SET {sets} WHERE ({where})", params)
        return _count(result.to_arrow())

    def search(self, query: Any = None, vector: Any = None) -> Search:
        """A search of this table: ``search("text")`` full-text (BM25),
        ``search([0.1, …])`` vector, ``search("text", [0.1, …])`` hybrid. Refine it with
        ``.column()``, ``.where()``, ``.limit()``, ``.select()``; run it with
        ``.to_arrow()``, ``.to_pandas()``, ``.to_polars()`` or ``.to_list()``."""
        if query is not None and not isinstance(query, str) and vector is None:
            query, vector = None, query
        return Search(self, query, vector, spec=self._spec,
                      run=lambda text, params: self._db.sql(text, params).to_arrow())

    def to_arrow(self) -> pa.Table:
        """Every live row as an Arrow table."""
        return self._db.sql(f"SELECT * FROM {quote_identifier(self.name)}").to_arrow()

    def to_pandas(self) -> Any:
        """Every live row as a pandas DataFrame."""
        return self.to_arrow().to_pandas()


def _check_condition(where: str) -> None:
    if not isinstance(where, str) or not where.strip():
        raise InvalidInput("a non-empty SQL condition is needed (use 'true' for every row)")


def _param(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # a NumPy array or scalar
    return tolist() if callable(tolist) else value


def _count(result: pa.Table) -> int:
    if result.num_columns and result.num_rows:
        return int(result.column(0)[0].as_py() or 0)
    return 0
