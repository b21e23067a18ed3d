"""Existing Iceberg tables as SQL relations: the table function
``iceberg_table('<source>', '<namespace>.<table>')``, over catalogs the operator named.

A client never names a path. The operator opts in with sources (``quiver serve
--iceberg-source NAME=CATALOG_URI``, or ``connect(..., iceberg_sources=...)``): each is a
catalog Quiver already speaks (``quiver.supertable.iceberg.catalog.open_catalog``: SQLite,
PostgreSQL, REST). A statement names a source and a catalog identifier; the catalog gives
the table's metadata file, and the table is read confined to its own location
(``quiver.supertable.iceberg.confined``): a catalog entry whose metadata lists a file
elsewhere is refused before any row is read. Without sources, or with an unknown source
or identifier, the function raises ``SqlPlanError`` (INVALID_ARGUMENT over Flight).

The relation streams: it is handed to DataFusion as a dataset read lazily, whose
fragments are groups of the snapshot's data files (at most ``MAX_PARTS`` read at once),
each read file after file and batch after batch with pyiceberg's reader, the
statement's interrupt (time limit, cancel) checked before every batch. DataFusion's
projection is read only; its pushed-down filter is applied to each batch. When only the
schema is wanted (``dry()``: GetFlightInfo, prepare) the catalog and metadata are read
but no manifest or data file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datafusion
import pyarrow as pa
import pyarrow.dataset as ds
from datafusion import udtf
from datafusion.catalog import Table as DfTable

from quiver.catalog.errors import quote_short
from quiver.flight_server.sql.arrow_types import plain_schema
from quiver.flight_server.sql.errors import SqlPlanError
from quiver.supertable import interrupt as interrupts

log = logging.getLogger(__name__)

FUNCTION = "iceberg_table"
NAMES = frozenset({FUNCTION})
# Most groups of data files read at once for one call (each holds a batch or so).
MAX_PARTS = max(1, min(8, os.cpu_count() or 1))
# Environment variables a source's REST credentials may come from, NAME upper-cased.
TOKEN_ENV = "QUIVER_ICEBERG_SOURCE_{}_TOKEN"
CREDENTIAL_ENV = "QUIVER_ICEBERG_SOURCE_{}_CREDENTIAL"
_SETTINGS = ("catalog-name", "warehouse", "token", "credential")

Dry = Callable[[], bool]


class LakeSourceError(SqlPlanError):
    """An ``iceberg_table`` call that cannot be served: no such source or table, or a
    table that cannot be read confined to its location."""


@dataclass(frozen=True)
class IcebergSource:
    """One catalog the operator lets statements read tables of. Secrets are not shown by
    ``repr`` and never logged."""

    name: str
    uri: str = field(repr=False)
    catalog_name: str = "default"
    warehouse: str | None = None
    token: str | None = field(default=None, repr=False)
    credential: str | None = field(default=None, repr=False)

    def open(self) -> Any:
        """The catalog (``open_catalog``); credentials default to the source's own
        environment variables, then to the ``--iceberg-catalog`` ones."""
        from quiver.supertable.iceberg.catalog import open_catalog

        env = self.name.upper()
        return open_catalog(self.uri, self.catalog_name,
                            token=self.token or os.environ.get(TOKEN_ENV.format(env)),
                            credential=(self.credential
                                        or os.environ.get(CREDENTIAL_ENV.format(env))),
                            warehouse=self.warehouse)


def parse_sources(pairs: Sequence[str], settings: Sequence[str] = ()) -> list[IcebergSource]:
    """Sources from ``NAME=CATALOG_URI`` pairs and ``NAME.SETTING=VALUE`` settings
    (``catalog-name``, ``warehouse``, ``token``, ``credential``); ``ValueError`` saying
    what is wrong (never quoting a URI or a secret)."""
    uris: dict[str, str] = {}
    for pair in pairs:
        name, sep, uri = pair.partition("=")
        name = name.strip()
        if not sep or not uri or not _valid_name(name):
            raise ValueError("--iceberg-source wants NAME=CATALOG_URI, NAME of letters, digits "
                             "and underscores")
        if name in uris:
            raise ValueError(f"--iceberg-source {name!r} is given twice")
        uris[name] = uri
    extra: dict[str, dict[str, str]] = {name: {} for name in uris}
    for item in settings:
        key, sep, value = item.partition("=")
        name, dot, setting = key.partition(".")
        if not sep or not dot or setting not in _SETTINGS:
            raise ValueError("--iceberg-source-option wants NAME.SETTING=VALUE, SETTING one of "
                             f"{', '.join(_SETTINGS)}")
        if name not in extra:
            raise ValueError(f"--iceberg-source-option names {name!r}, which no "
                             "--iceberg-source defines")
        extra[name][setting] = value
    return [IcebergSource(name, uri, extra[name].get("catalog-name", "default"),
                          extra[name].get("warehouse"), extra[name].get("token"),
                          extra[name].get("credential"))
            for name, uri in uris.items()]


def _valid_name(name: str) -> bool:
    return bool(name) and name.replace("_", "a").isalnum() and name.isascii()


class LakeSources:
    """The sources of one engine, their catalogs opened once; the table function."""

    def __init__(self, sources: Mapping[str, IcebergSource | str] | Sequence[IcebergSource]
                 | None = None, *, properties: Mapping[str, str] | None = None) -> None:
        from quiver.supertable.iceberg.catalog import CatalogError

        items: list[IcebergSource] = []
        if isinstance(sources, Mapping):
            for name, given in sources.items():
                items.append(given if isinstance(given, IcebergSource)
                             else IcebergSource(name, str(given)))
        else:
            items = list(sources or ())
        self._catalogs: dict[str, Any] = {}
        self._properties = dict(properties or {})
        for source in items:
            if not _valid_name(source.name):
                raise ValueError(f"Iceberg source name {quote_short(source.name)}: use "
                                 "letters, digits and underscores")
            try:
                catalog = source.open()
            except CatalogError as exc:
                raise ValueError(f"Iceberg source {source.name!r}: {exc}") from None
            self._catalogs[source.name] = catalog
            log.info("Iceberg source %r: tables of catalog %s readable with %s()",
                     source.name, catalog.uri, FUNCTION)

    @property
    def names(self) -> list[str]:
        return sorted(self._catalogs)

    def open(self, source: str, identifier: str) -> Any:
        """The ``LakeTable`` ``identifier`` names in ``source``'s catalog."""
        from quiver.supertable.iceberg.catalog import CatalogError
        from quiver.supertable.iceberg.confined import LakeTableError, load

        if not self._catalogs:
            raise LakeSourceError(f"{FUNCTION}: this server reads no Iceberg catalogs; its "
                                  "operator enables them with --iceberg-source NAME=CATALOG_URI")
        catalog = self._catalogs.get(source)
        if catalog is None:
            raise LakeSourceError(f"{FUNCTION}: unknown Iceberg source {quote_short(source)}; "
                                  f"sources are: {', '.join(self.names)}")
        namespace, sep, table = identifier.rpartition(".")
        if not sep or not namespace or not table:
            raise LakeSourceError(f"{FUNCTION}: name the table as 'namespace.table', got "
                                  f"{quote_short(identifier)}")
        shown = f"{quote_short(identifier)} of source {source!r}"
        try:
            location = catalog.location(namespace, table)
        except CatalogError as exc:
            raise LakeSourceError(f"{FUNCTION}: source {source!r}: {exc}") from None
        if location is None:
            raise LakeSourceError(f"{FUNCTION}: source {source!r} has no table "
                                  f"{quote_short(identifier)}")
        try:
            return load(location, shown, self._properties)
        except LakeTableError as exc:
            raise LakeSourceError(f"{FUNCTION}: {exc}") from None

    def register(self, ctx: datafusion.SessionContext, dry: Dry | None = None) -> None:
        """Registers ``iceberg_table`` on ``ctx``; while ``dry()`` is true a call reads the
        table's schema only."""

        from quiver.supertable.iceberg.confined import LakeTableError

        def call(*exprs: Any) -> DfTable:
            source, identifier = _arguments(exprs)
            table = self.open(source, identifier)
            try:
                return DfTable(LakeDataset(table, planned=dry is None or not dry()))
            except LakeTableError as exc:
                raise LakeSourceError(f"{FUNCTION}: {exc}") from None

        call.__name__ = FUNCTION
        ctx.register_udtf(udtf(call, FUNCTION))


def _arguments(exprs: Sequence[Any]) -> tuple[str, str]:
    if len(exprs) != 2:
        raise LakeSourceError(f"{FUNCTION} takes 2 arguments (source, 'namespace.table'), "
                              f"got {len(exprs)}")
    values = []
    for name, expr in zip(("source", "table"), exprs, strict=True):
        value = expr.python_value() if expr.variant_name() == "Literal" else None
        value = value.as_py() if isinstance(value, pa.Scalar) else value
        if not isinstance(value, str):
            raise LakeSourceError(f"{FUNCTION}: argument {name!r} must be a string literal, "
                                  f"got {expr}")
        values.append(value)
    return values[0], values[1]


# -- the relation ------------------------------------------------------------------------------


class LakeDataset(ds.Dataset):
    """An Iceberg table's current snapshot as DataFusion reads a pyarrow dataset: it asks
    for ``schema``, a ``scanner`` (for the projected schema) and ``get_fragments`` when it
    plans, then each fragment's ``scanner(...).to_batches()`` when it runs. Every one of
    these is answered lazily here, so nothing is read before DataFusion pulls a batch."""

    def __init__(self, table: Any, *, planned: bool = True) -> None:
        # pyarrow's own constructor refuses to run: nothing of it is used.
        self._table = table
        # Plain types, as the root's own tables give (pyiceberg reads large strings).
        self._schema = plain_schema(table.arrow_schema())
        self._tasks = table.plan() if planned else []
        self._watch = interrupts.current()

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def scanner(self, schema: pa.Schema | None = None, columns: list[str] | None = None,
                filter: Any = None, **_: Any) -> _Scanner:
        return _Scanner(self, [], columns, filter)

    def get_fragments(self, filter: Any = None) -> list[_Fragment]:
        parts = min(MAX_PARTS, len(self._tasks))
        return [_Fragment(self, self._tasks[i::parts]) for i in range(parts)]


@dataclass
class _Fragment:
    dataset: LakeDataset
    tasks: list[Any]

    def scanner(self, schema: pa.Schema | None = None, columns: list[str] | None = None,
                filter: Any = None, **_: Any) -> _Scanner:
        return _Scanner(self.dataset, self.tasks, columns, filter)


class _Scanner:
    """The rows of some files: ``columns`` of them, those ``filter`` keeps."""

    def __init__(self, dataset: LakeDataset, tasks: list[Any], columns: list[str] | None,
                 filter: Any) -> None:
        self._dataset = dataset
        self._tasks = tasks
        self._columns = list(columns) if columns is not None else None
        self._filter = filter

    @property
    def projected_schema(self) -> pa.Schema:
        schema = self._dataset.schema
        if self._columns is None:
            return schema
        return pa.schema([schema.field(c) for c in self._columns])

    def to_batches(self) -> Iterator[pa.RecordBatch]:
        dataset = self._dataset
        out = self.projected_schema
        # The filter may name columns the projection leaves out: all are read then. A
        # projection of no columns (count(*)) still needs the rows: one column is read.
        filtered = self._filter is not None
        columns = self._columns
        if filtered or columns is None:
            read, columns = dataset.schema, None
        elif not columns:
            read = pa.schema([dataset.schema.field(0)])
            columns = read.names
        else:
            read = out
        watch = dataset._watch
        for batch in dataset._table.batches(self._tasks, columns, read):
            if watch is not None:
                watch.check()
            if filtered:
                batch = pa.Table.from_batches([batch]).filter(self._filter)
                yield from batch.select(out.names).to_batches()
            elif batch.num_rows:
                yield batch if batch.schema.equals(out) else batch.select(out.names)
