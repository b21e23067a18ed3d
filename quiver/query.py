"""Search query builders: ``table.search(...)`` turned into one parameterized SQL
statement over the SQL layer's search functions.

Without a ``where`` condition a search is the table function itself (``bm25_search``,
``vector_search``, ``hybrid_search``); with one, the condition filters inside the
ranking (``bm25(col, q) > 0 AND cond``, ``knn(col, v, k) AND cond``; hybrid fuses the
two filtered rankings as ``hybrid_search`` does). Texts and vectors are bound
parameters; identifiers are quoted. Results hold ``_id``, ``score`` (BM25 and fused
scores: higher is better; vector distance: smaller is nearer) and the table's columns
other than vector columns, or those named by ``select``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from quiver.errors import InvalidInput
from quiver.result import Result
from quiver.superfile.spec import is_text_type, vector_dim
from quiver.supertable.search import RRF_K, hybrid_depth

if TYPE_CHECKING:
    from quiver.superfile.spec import IndexSpec
    from quiver.table import Table

__all__ = ["Search", "quote_identifier"]



def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def _as_vector(value: Any) -> list[float]:
    try:
        vec = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a query vector must be a sequence of numbers: {exc}") from exc
    if vec.ndim != 1 or vec.size == 0:
        raise InvalidInput(f"a query vector must be a non-empty 1-d sequence of numbers, "
                           f"got shape {vec.shape}")
    return vec.tolist()


class Search:
    """A search over one table, built step by step and run by ``to_arrow()`` (or
    ``to_pandas()``, ``to_polars()``, ``to_list()``).

    ``text`` searches the full-text index (the syntax of docs/search-syntax.md), ``vector``
    the vector index; both make a hybrid search (reciprocal rank fusion).
    """

    def __init__(self, table: Table, text: str | None, vector: Any | None, *,
                 run: Callable[[str, list[Any]], pa.Table],
                 spec: Callable[[], IndexSpec]) -> None:
        # ``run`` executes a statement on the table's database; ``spec`` reads the table's
        # indexes: the search needs nothing else of the table beyond its name and schema.
        if text is None and vector is None:
            raise InvalidInput("search needs a text, a vector, or both")
        if text is not None and not isinstance(text, str):
            raise InvalidInput(f"a search text must be a str, got {type(text).__name__}")
        self._table = table
        self._run = run
        self._spec = spec
        self._text = text
        self._vector = None if vector is None else _as_vector(vector)
        self._columns: list[str] = []
        self._where: str | None = None
        self._limit = 10
        self._select: list[str] | None = None

    def column(self, name: str) -> Search:
        """Which indexed column to search (a full-text or a vector column; for a hybrid
        search, call it once for each). By default the table's only column of that kind."""
        self._columns.append(name)
        return self

    def where(self, condition: str) -> Search:
        """Keeps only rows matching the SQL ``condition`` (e.g. ``"year > 2000"``), applied
        inside the ranking: up to ``limit`` matching rows come back."""
        if not isinstance(condition, str) or not condition.strip():
            raise InvalidInput("where() needs a non-empty SQL condition")
        self._where = condition
        return self

    def limit(self, k: int) -> Search:
        """How many rows to return at most (default 10)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput(f"limit must be a positive integer, got {k!r}")
        self._limit = k
        return self

    def select(self, columns: Sequence[str]) -> Search:
        """The table columns to return besides ``_id`` and ``score`` (vector columns
        included when named; by default they are left out)."""
        if isinstance(columns, str):
            columns = [columns]
        self._select = list(columns)
        return self

    # -- running -----------------------------------------------------------------------------

    def to_arrow(self) -> pa.Table:
        """Runs the search; its rows as an Arrow table, best first."""
        text, params = self.to_sql()
        return self._run(text, params)

    def to_pandas(self) -> Any:
        """Runs the search; its rows as a pandas DataFrame."""
        return Result(self.to_arrow()).to_pandas()

    def to_polars(self) -> Any:
        """Runs the search; its rows as a polars DataFrame (needs polars installed)."""
        return Result(self.to_arrow()).to_polars()

    def to_list(self) -> list[dict[str, Any]]:
        """Runs the search; its rows as a list of dicts."""
        return self.to_arrow().to_pylist()

    # -- the statement -----------------------------------------------------------------------

    def _pick(self, kind: str, wanted: bool) -> str | None:
        if not wanted:
            return None
        schema = self._table.schema
        spec = self._spec()
        indexed = list(spec.fts) if kind == "text" else list(spec.vector)
        named = [c for c in self._columns
                 if c in schema.names and (is_text_type(schema.field(c).type) if kind == "text"
                                           else vector_dim(schema.field(c).type) is not None)]
        unknown = [c for c in self._columns if c not in schema.names]
        if unknown:
            raise InvalidInput(f"table {self._table.name!r} has no column {unknown[0]!r}")
        if named:
            if len(named) > 1:
                raise InvalidInput(f"name one {kind} column to search, got {named}")
            return named[0]
        if len(indexed) == 1:
            return indexed[0]
        what = "full-text" if kind == "text" else "vector"
        if not indexed:
            raise InvalidInput(f"table {self._table.name!r} has no {what} index")
        raise InvalidInput(f"table {self._table.name!r} has {what} indexes on {indexed}: "
                           f"name one with .column(...)")

    def _output_columns(self) -> list[str]:
        if self._select is not None:
            return self._select
        schema = self._table.schema
        return [f.name for f in schema if vector_dim(f.type) is None]

    def to_sql(self) -> tuple[str, list[Any]]:
        """The statement this search runs and its parameters."""
        text_col = self._pick("text", self._text is not None)
        vec_col = self._pick("vector", self._vector is not None)
        cols = self._output_columns()
        name = self._table.name
        k = self._limit
        schema = self._table.schema
        # The table functions leave vector columns out; a search selecting one reads the
        # table itself, as a filtered search does.
        wants_vectors = any(c in schema.names and vector_dim(schema.field(c).type) is not None
                            for c in cols)
        if self._where is None and not wants_vectors:
            return self._table_function(name, text_col, vec_col, cols, k)
        q = quote_identifier
        t = q(name)
        out = ", ".join(q(c) for c in cols)
        out = f", {out}" if out else ""
        cond = f"({self._where or 'true'})"
        if vec_col is None:
            # The constructor refuses a search with neither a text nor a vector.
            assert text_col is not None
            return (f"SELECT _id, CAST(bm25({q(text_col)}, ?) AS FLOAT) AS score{out} FROM {t} "
                    f"WHERE bm25({q(text_col)}, ?) > 0 AND {cond} "
                    f"ORDER BY score DESC, _id LIMIT ?", [self._text, self._text, k])
        if text_col is None:
            return (f"SELECT _id, CAST(vector_distance({q(vec_col)}, ?) AS FLOAT) AS score{out} "
                    f"FROM {t} WHERE knn({q(vec_col)}, ?, ?) AND {cond} "
                    f"ORDER BY score, _id LIMIT ?", [self._vector, self._vector, k, k])
        depth = hybrid_depth(k)
        joined = ", ".join(f"d.{q(c)}" for c in cols)
        joined = f", {joined}" if joined else ""
        sql = (
            f"WITH t AS (SELECT _id, bm25({q(text_col)}, ?) AS s FROM {t} "
            f"WHERE bm25({q(text_col)}, ?) > 0 AND {cond} ORDER BY s DESC, _id LIMIT ?), "
            f"tr AS (SELECT _id, row_number() OVER (ORDER BY s DESC, _id) AS r FROM t), "
            f"v AS (SELECT _id, vector_distance({q(vec_col)}, ?) AS s FROM {t} "
            f"WHERE knn({q(vec_col)}, ?, ?) AND {cond} ORDER BY s, _id LIMIT ?), "
            f"vr AS (SELECT _id, row_number() OVER (ORDER BY s, _id) AS r FROM v), "
            f"f AS (SELECT coalesce(tr._id, vr._id) AS _id, "
            f"coalesce(1.0 / ({RRF_K} + tr.r), 0.0) + coalesce(1.0 / ({RRF_K} + vr.r), 0.0)"
            f" AS s FROM tr FULL OUTER JOIN vr ON tr._id = vr._id) "
            f"SELECT f._id AS _id, CAST(f.s AS FLOAT) AS score{joined} "
            f"FROM f JOIN {t} d ON d._id = f._id ORDER BY score DESC, _id LIMIT ?")
        return sql, [self._text, self._text, depth, self._vector, self._vector, depth, depth,
                     k]

    def _table_function(self, name: str, text_col: str | None, vec_col: str | None,
                        cols: list[str], k: int) -> tuple[str, list[Any]]:
        q = quote_identifier
        out = ", ".join(q(c) for c in cols)
        out = f", {out}" if out else ""
        if vec_col is None:
            return (f"SELECT _id, score{out} FROM bm25_search(?, ?, ?, ?) "
                    "ORDER BY score DESC, _id",
                    [name, text_col, self._text, k])
        if text_col is None:
            return (f"SELECT _id, score{out} FROM vector_search(?, ?, ?, ?) "
                    "ORDER BY score, _id",
                    [name, vec_col, self._vector, k])
        return (f"SELECT _id, score{out} FROM hybrid_search(?, ?, ?, ?, ?, ?) "
                "ORDER BY score DESC, _id",
                [name, text_col, self._text, vec_col, self._vector, k])
