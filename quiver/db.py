"""``quiver.connect``: a storage root opened for SQL and tables, the API's entry point.

It wraps the embedded SQL connection (``quiver.flight_server.sql.connect``): the same roots
(a path, ``memory://``, ``s3://``, ``gs://``, ``az://``), the same durability and
isolation as the server's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from quiver.data import Data, normalize_schema, to_reader
from quiver.errors import AlreadyExists, InvalidInput, translated
from quiver.flight_server.service import ingest
from quiver.flight_server.sql import SqlConnection
from quiver.flight_server.sql import connect as _sql_connect
from quiver.result import Result
from quiver.superfile.spec import IndexSpec, Metric, is_text_type, vector_dim
from quiver.supertable.errors import TableExistsError, TableNotFoundError
from quiver.table import Table

__all__ = ["Database", "connect"]

log = logging.getLogger(__name__)

_MODES = ("create", "overwrite", "exist_ok")


class Database:
    """The tables under one storage root and SQL over them. Use it as a context manager
    or call ``close()``."""

    def __init__(self, conn: SqlConnection) -> None:
        self._conn = conn

    @property
    def uri(self) -> str:
        """The storage root this database opened."""
        return self._conn.uri

    def __repr__(self) -> str:
        return f"quiver.Database({self.uri!r})"

    def sql(self, text: str, params: Sequence[Any] | None = None) -> Result:
        """Runs one SQL statement (queries, search functions, DDL and DML); ``params`` are
        bound to its ``?`` (or ``$1`` …) placeholders. A statement runs when called."""
        with translated():
            return Result(self._conn.sql(text, params))

    def table_names(self) -> list[str]:
        """The names of the tables under the root, sorted."""
        with translated():
            return sorted(self._conn.list_tables())

    def open_table(self, name: str) -> Table:
        """The table ``name``; ``NotFound`` when there is none."""
        with translated():
            self._conn.open_table(name)
        return Table(self, name)

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Drops the table ``name`` (``NotFound`` when there is none, unless
        ``missing_ok``)."""
        with translated():
            self._conn.drop_table(name, missing_ok=missing_ok)

    def create_table(self, name: str, data: Data | None = None, *,
                     schema: pa.Schema | None = None,
                     fts: str | Iterable[str] | None = None,
                     vector: str | Iterable[str] | Mapping[str, str] | None = None,
                     metric: str = "cosine", mode: str = "create",
                     iceberg_version: int | None = None) -> Table:
        """Creates the table ``name`` holding ``data`` (a pandas or polars DataFrame, a
        pyarrow Table, RecordBatch or RecordBatchReader, or a list of dicts), or empty
        with ``schema``. The table appears with all its rows or not at all.

        Indexes: ``fts`` names the full-text (BM25) columns, ``vector`` the vector columns
        (a name, names, or a mapping of name to metric); each left out defaults as for a
        bulk ingest: BM25 on every string column, a vector index on every
        fixed-size float list column. A column named in ``vector`` that is not a vector
        (an integer list, a string) is refused (``InvalidInput``). ``metric`` (``cosine``, ``l2``,
        ``inner_product``) applies to vector columns given by name or by default.

        Embeddings: a column of float lists (lists or NumPy arrays per row in pandas)
        whose rows all have the same length becomes ``fixed_size_list<float32, d>`` and so
        gets a vector index; float16 and float64 values are cast to float32 (precision
        beyond float32 is lost). Rows of different lengths are refused (``InvalidInput``).

        ``mode``: ``"create"`` (``AlreadyExists`` if the name is taken), ``"overwrite"``
        (replaces an existing table in one step) or ``"exist_ok"`` (an existing table is
        returned as it is and ``data`` is not added).

        ``iceberg_version=3`` writes the table's Iceberg metadata in format version 3, with
        deleted rows as deletion vectors; the default is format version 2.
        """
        if mode not in _MODES:
            raise InvalidInput(f"mode must be one of {_MODES}, got {mode!r}")
        if data is None and schema is None:
            raise InvalidInput("create_table needs data or schema=")
        if mode != "overwrite" and self._exists(name):
            if mode == "exist_ok":
                return Table(self, name)
            raise AlreadyExists(f"table {name!r} already exists under {self.uri}; use "
                                "mode='overwrite' or mode='exist_ok'")
        if data is not None:
            reader = to_reader(data)
            if schema is not None:
                reader = _cast_reader(reader, normalize_schema(schema))
        else:
            reader = None
        target = reader.schema if reader is not None else normalize_schema(schema)
        spec = _spec_for(target, fts, vector, metric)
        with translated():
            self._create(name, target, spec, reader, mode, iceberg_version)
        return Table(self, name)

    def _exists(self, name: str) -> bool:
        with translated():
            try:
                self._conn.open_table(name)
            except TableNotFoundError:
                return False
        return True

    def _create(self, name: str, schema: pa.Schema, spec: IndexSpec,
                reader: pa.RecordBatchReader | None, mode: str,
                iceberg_version: int | None = None) -> None:
        catalog = self._conn.catalog
        staged = catalog.create_staged(name, schema, spec=spec, iceberg_version=iceberg_version)
        try:
            if reader is not None:
                ingest.append_stream(staged, reader, exclusive=True)
            try:
                catalog.publish_staged(staged, replace=mode == "overwrite")
            except TableExistsError:
                if mode != "exist_ok":
                    raise
                # Created meanwhile by another writer: returned as it is.
                _discard(catalog, staged)
        except BaseException:
            _discard(catalog, staged)
            raise

    def close(self) -> None:
        """Releases the connection's resources; the database is unusable afterwards."""
        self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _discard(catalog: Any, staged: Any) -> None:
    try:
        catalog.discard_staged(staged)
    except Exception as exc:  # the original failure matters more than this one
        log.warning("could not remove staged table %r (gc will): %s", staged.name, exc)


def _cast_reader(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    def batches() -> Iterable[pa.RecordBatch]:
        for batch in reader:
            try:
                yield batch.select(schema.names).cast(schema)
            except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                raise InvalidInput(f"the data does not fit schema=: {exc}") from exc

    return pa.RecordBatchReader.from_batches(schema, batches())


def _names(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _spec_for(schema: pa.Schema, fts: Any, vector: Any, metric: str) -> IndexSpec:
    with translated():
        parsed = Metric.parse(metric)
    fts_cols = ([f.name for f in schema if is_text_type(f.type)] if fts is None
                else _names(fts))
    vec: dict[str, str | Metric]
    if vector is None:
        vec = {f.name: parsed for f in schema if vector_dim(f.type) is not None}
    elif isinstance(vector, Mapping):
        vec = dict(vector)
    else:
        vec = {n: parsed for n in _names(vector)}
    with translated():
        spec = IndexSpec.of(fts=fts_cols, vector=vec)
        spec.validate(schema)
    return spec


def connect(uri: str, **storage_options: Any) -> Database:
    """Opens the storage root at ``uri``: a local path (``"./data"``), ``memory://name``
    (in this process only), ``s3://bucket/prefix``, ``gs://…`` or ``az://…``.
    ``storage_options`` are passed to the storage (e.g. ``aws_endpoint``, ``aws_region``)
    and to ``quiver.flight_server.sql.connect`` (``memory_limit``, ``statement_timeout_s`` …)."""
    with translated():
        return Database(_sql_connect(uri, **storage_options))
