"""A statement's result as the API hands it out: Arrow, pandas or polars."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["Result"]


class Result:
    """The rows a statement returned (for DDL and DML, its one-row summary, e.g. the
    ``count`` of rows an UPDATE changed)."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        """The rows as an Arrow table."""
        return self._table

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame."""
        return self._table.to_pandas()

    def to_polars(self) -> Any:
        """The rows as a polars DataFrame; polars must be installed."""
        try:
            import polars
        except ImportError as exc:
            raise ImportError("to_polars() needs polars, which is not installed: "
                              "pip install polars (or use to_arrow() / to_pandas())") from exc
        return polars.from_arrow(self._table)

    def to_list(self) -> list[dict[str, Any]]:
        """The rows as a list of dicts."""
        return self._table.to_pylist()

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return f"Result({self._table.num_rows} rows: {', '.join(self._table.column_names)})"
