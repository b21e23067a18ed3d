"""One pinned version of a table: its live files, rows, filters and scans.

A snapshot never changes: it reads the files its manifest names and honours
that manifest's tombstones, however many commits land meanwhile. Filters are
pyarrow expressions, or DNF lists of ``(column, op, value)`` tuples, which
additionally let whole files be skipped by the manifest's min/max ranges.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap

from quiver.superfile import SuperfileReader
from quiver.superfile.fts.reader import FtsIndexReader
from quiver.superfile.parquet_pages.row_fetch import RangeFile
from quiver.superfile.vector.reader import VectorIndexReader
from quiver.supertable.errors import TableSchemaError
from quiver.supertable.manifest import ID_COLUMN, FileEntry, Manifest, bitmap_of, bitmap_rows
from quiver.supertable.readers import ReaderPool

Filter: TypeAlias = pc.Expression | Sequence[Any] | None

# Up to this many candidate rows, a filter is checked on the candidates' own values.
RESTRICT_BY_TAKE_MAX = 4096


def as_dnf(filter_: Filter) -> list[list[tuple[str, str, Any]]] | None:
    """A tuple filter as a list of conjunctions; None for no filter or an expression."""
    if filter_ is None or isinstance(filter_, pc.Expression):
        return None
    items = list(filter_)
    if items and isinstance(items[0], tuple):
        return [list(items)]
    return [list(conj) for conj in items]


def to_expression(filter_: Filter) -> pc.Expression | None:
    if filter_ is None or isinstance(filter_, pc.Expression):
        return filter_
    try:
        return pq.filters_to_expression(as_dnf(filter_))
    except (ValueError, TypeError) as exc:
        raise TableSchemaError(f"malformed filter {filter_!r}: {exc}") from None


_OPS = {
    "=": lambda lo, hi, v: lo <= v <= hi,
    "==": lambda lo, hi, v: lo <= v <= hi,
    "<": lambda lo, hi, v: lo < v,
    "<=": lambda lo, hi, v: lo <= v,
    ">": lambda lo, hi, v: hi > v,
    ">=": lambda lo, hi, v: hi >= v,
    "in": lambda lo, hi, vs: any(lo <= v <= hi for v in vs),
}


def _may_match(entry: FileEntry, dnf: list[list[tuple[str, str, Any]]]) -> bool:
    """False only when the manifest's ranges prove no row of the file can match."""
    for conj in dnf:
        possible = True
        for col, op, value in conj:
            rng = entry.column_ranges.get(col)
            check = _OPS.get(op)
            if rng is None or check is None:
                continue
            try:
                if not check(rng[0], rng[1], value):
                    possible = False
                    break
            except TypeError:
                continue
        if possible:
            return True
    return False


class Snapshot:
    """A table as of one manifest version."""

    def __init__(self, manifest: Manifest, pool: ReaderPool, name: str) -> None:
        self.manifest = manifest
        self.pool = pool
        self.name = name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def schema(self) -> pa.Schema:
        """The user's columns, without ``_id``."""
        return self.manifest.user_schema

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.manifest.files

    def reader(self, entry: FileEntry) -> SuperfileReader:
        return self.pool.reader(entry)

    def fts(self, entry: FileEntry, column: str) -> FtsIndexReader:
        """The file's BM25 index of ``column`` (built in memory for a not-yet-indexed file)."""
        return self.pool.fts(entry, column)

    def vectors(self, entry: FileEntry, column: str) -> VectorIndexReader:
        """The file's vector index of ``column`` (exact, in memory, for a not-yet-indexed file)."""
        return self.pool.vectors(entry, column, self.manifest.spec.vector[column])

    def check_columns(self, columns: Sequence[str]) -> None:
        names = set(self.manifest.schema.names)
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise TableSchemaError(
                f"table {self.name!r} has no column(s) {unknown}; columns are "
                f"{self.manifest.schema.names}")

    def candidate_files(self, filter_: Filter = None) -> list[FileEntry]:
        """Files with live rows that the manifest cannot rule out for ``filter_``."""
        dnf = as_dnf(filter_)
        return [f for f in self.files
                if f.live_rows > 0 and (dnf is None or _may_match(f, dnf))]

    def ids_of(self, entry: FileEntry, local: np.ndarray) -> np.ndarray:
        """Table ``_id`` of local rows of one file."""
        local = np.asarray(local, dtype=np.int64)
        if entry.id_max - entry.id_min + 1 == entry.rows:
            return entry.id_min + local
        ids = self.reader(entry).take(local, [ID_COLUMN]).column(0)
        return ids.to_numpy(zero_copy_only=False).astype(np.int64)

    def live(self, entry: FileEntry) -> BitMap | None:
        """Live local rows of a file, or None when every row is live."""
        if not entry.tombstones:
            return None
        return BitMap(range(entry.rows)) - entry.tombstones

    def allowed(self, entry: FileEntry, filter_: Filter) -> BitMap | None:
        """Local rows that are live and pass ``filter_``; None means every row."""
        expr = to_expression(filter_)
        if expr is None:
            return self.live(entry)
        matched = self._matching_rows(entry, expr)
        return matched - entry.tombstones if entry.tombstones else matched

    def restrict(self, entry: FileEntry, local: np.ndarray, filter_: Filter) -> np.ndarray:
        """The rows of ``local`` (local row ids, ascending) that are live and pass
        ``filter_``. A few candidates are checked by reading just their rows of the
        filter's columns; many are checked against the file-wide ``allowed`` set."""
        if entry.tombstones and len(local):
            dead = np.asarray(entry.tombstones.to_array(), np.int64)
            local = local[~np.isin(local, dead)]
        dnf = as_dnf(filter_)
        if filter_ is None or len(local) == 0:
            return local
        if dnf is None or len(local) > RESTRICT_BY_TAKE_MAX:
            matched = self._matching_rows(entry, to_expression(filter_))
            return local[np.isin(local, np.asarray(matched.to_array(), np.int64))]
        columns = sorted({col for conj in dnf for col, _, _ in conj})
        self.check_columns(columns)
        rows = self.conform(self.reader(entry).take(local, columns))
        position = pa.array(np.arange(len(local), dtype=np.int64))
        kept = rows.append_column("__row", position).filter(to_expression(filter_))
        return local[kept.column("__row").to_numpy()]

    def _matching_rows(self, entry: FileEntry, expr: pc.Expression) -> BitMap:
        reader = self.reader(entry)
        try:
            ids = pq.read_table(RangeFile(reader.source), filters=expr, columns=[ID_COLUMN])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise TableSchemaError(f"cannot apply filter {expr}: {exc}") from None
        got = ids.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if entry.id_max - entry.id_min + 1 == entry.rows:
            local = got - entry.id_min
        else:
            all_ids = reader.read_table([ID_COLUMN]).column(0).to_numpy(zero_copy_only=False)
            local = np.searchsorted(all_ids, got)
        return bitmap_of(local)

    def conform(self, table: pa.Table) -> pa.Table:
        """Casts columns read from a file to the table's declared types (nested field names
        as written by Parquet readers differ from the declared ones)."""
        schema = pa.schema([self.manifest.schema.field(c) for c in table.column_names])
        return table if table.schema.equals(schema) else table.cast(schema)

    def count(self, filter_: Filter = None) -> int:
        if filter_ is None:
            return self.manifest.num_rows
        return sum(len(self.allowed(f, filter_) or ()) for f in self.candidate_files(filter_))

    def scan(self, columns: Sequence[str] | None = None, filter_: Filter = None,
             with_id: bool = False) -> Iterator[pa.RecordBatch]:
        """Live rows, file by file, as record batches."""
        wanted = list(columns) if columns is not None else list(self.schema.names)
        self.check_columns(wanted)
        read_cols = ([ID_COLUMN] if with_id and ID_COLUMN not in wanted else []) + wanted
        expr = to_expression(filter_)
        for entry in self.candidate_files(filter_):
            reader = self.reader(entry)
            table = self.conform(reader.read_table(read_cols))
            if entry.tombstones:
                keep = np.ones(entry.rows, dtype=bool)
                keep[bitmap_rows(entry.tombstones)] = False
                table = table.filter(pa.array(keep))
            if expr is not None:
                table = table.filter(expr)
            yield from table.to_batches()

    def to_table(self, columns: Sequence[str] | None = None, filter_: Filter = None,
                 with_id: bool = False) -> pa.Table:
        wanted = list(columns) if columns is not None else list(self.schema.names)
        self.check_columns(wanted)
        schema_cols = ([ID_COLUMN] if with_id and ID_COLUMN not in wanted else []) + wanted
        schema = pa.schema([self.manifest.schema.field(c) for c in schema_cols])
        return pa.Table.from_batches(list(self.scan(columns, filter_, with_id)), schema=schema)
