"""The SQL engine: statements over the tables of one storage root, on DataFusion.

One long-lived SessionContext serves every statement. A statement is read once
(``quiver.flight_server.sql.analysis``, remembered by text) and let through the gate;
a query's reading gives the Quiver tables it names: each is pinned to one snapshot for
the whole statement (self-joins and search functions included), its versioned
view is registered (or reused), and the names in the text are pointed at the
views before DataFusion plans it. Results stream batch by batch. DDL and DML
go to the table layer through ``quiver.flight_server.sql.statements``.

The fixed cost of a statement is kept small: tables already open are reused
without rereading their catalog entry (pinning still checks for a newer version),
and a bare ``SELECT count(*) FROM t`` is answered from the pinned manifest's
live-row count without planning a scan.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import datafusion
import pyarrow as pa
from sqlglot import exp

from quiver.catalog import Connection
from quiver.catalog.errors import InvalidTableNameError
from quiver.flight_server.sql import (
    analysis,
    bounded,
    constants,
    gate,
    information,
    lake,
    param_types,
    point,
    snippet,
)
from quiver.flight_server.sql import params as sqlbind
from quiver.flight_server.sql import parse as sqlparse
from quiver.flight_server.sql.arrow_types import plain_schema
from quiver.flight_server.sql.callback_errors import recover
from quiver.flight_server.sql.decoded import DecodedRows, default_budget
from quiver.flight_server.sql.errors import (
    SqlError,
    SqlParameterError,
    SqlPlanError,
    SqlResourceError,
    SqlSyntaxError,
    SqlTableNotFoundError,
    unknown_table,
)
from quiver.flight_server.sql.views import ViewRegistry
from quiver.root_error import QuiverError
from quiver.supertable import interrupt as interrupts
from quiver.supertable.errors import (
    ObjectNotFoundError,
    TableNotFoundError,
    WorkCancelledError,
)
from quiver.supertable.manifest import FileEntry
from quiver.supertable.snapshot import Snapshot
from quiver.supertable.table import Table

log = logging.getLogger(__name__)

try:
    from quiver.flight_server.sql import functions as _functions
except ImportError:
    _functions = None  # type: ignore[assignment]
try:
    from quiver.flight_server.sql import rewrite as _rewrite
except ImportError:
    _rewrite = None  # type: ignore[assignment]
try:
    from quiver.flight_server.sql import statements as _statements
except ImportError:
    _statements = None  # type: ignore[assignment]

# Internal relation names: "<table>@<uuid8>@v<version>[@<files>]" and sources with '#'.
_INTERNAL = re.compile(r'"?(?:datafusion\.public\.)?([A-Za-z_][A-Za-z0-9_]*)@[0-9a-f]{8}@v\d+'
                       r'(?:@[0-9a-f]+)?(?:@mem)?(?:#[^"\s\']*)?"?')


# Seconds an open table is used without rereading its catalog entry: a drop and re-create
# under the same name by another process shows within this time (in this process at once).
CATALOG_RECHECK_S = 1.0
_transient_names = itertools.count()
# Statements whose one column carries DataFusion's name for an unaliased count, by form.
_COUNT_FORMS = {"star": "SELECT count(*) FROM (VALUES (1)) AS t(x)",
                "one": "SELECT count(1) FROM (VALUES (1)) AS t(x)"}
# DataFusion's refusal of two result columns of one name (as stand-ins may make them).
_NAME_CLASH = "unique expression names"
# A statement that may call a search function (the names followed by a parenthesis).
_SEARCH_CALL = re.compile(r"\b(?:bm25|knn|vector_distance|bm25_snippet|bm25_search|"
                          r"vector_search|hybrid_search|token_match|exact_match)\s*\(",
                          re.IGNORECASE)
# A statement reading an Iceberg source (its rows are not counted in advance).
_LAKE_CALL = re.compile(rf"\b{lake.FUNCTION}\s*\(", re.IGNORECASE)
# Table functions the gate lets a statement name.
TABLE_FUNCTIONS = frozenset((_functions.NAMES if _functions is not None else set())
                            | lake.NAMES)
# How often a statement waiting for DataFusion's next batch checks its interrupt.
POLL_S = 0.05
# Statements remembered per engine (gate verdicts, plans of table-free queries); past
# this the memo starts over.
MEMO_STATEMENTS = 512
# Largest result of a literals-only query kept with its plan: with MEMO_STATEMENTS texts
# at most 8 MiB per engine, whatever a client sends.
CONSTANT_RESULT_BYTES = 16 << 10
# Longest statement text read by default, in characters (as Trino's query.max-length):
# reading is not interruptible (about 2 s per million characters), and rows in bulk go
# faster through an ingest than through INSERT … VALUES text.
MAX_STATEMENT_LENGTH = 4 << 20


def default_memory_limit() -> int:
    """The memory pool of DataFusion's operators by default: a quarter of the machine's
    memory (``QUIVER_MEMORY_LIMIT`` bytes when set)."""
    env = os.environ.get("QUIVER_MEMORY_LIMIT")
    if env:
        return int(env)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError):
        return 4 << 30


@dataclass(frozen=True)
class Prepared:
    """What preparing a statement tells a client: whether it is a query, its parameters'
    declared types, and its result schema (None for DDL / DML, and for a query whose
    result depends on which values are bound, see ``quiver.flight_server.sql.param_types``)."""

    is_query: bool
    parameter_schema: pa.Schema
    dataset_schema: pa.Schema | None


@dataclass
class _Pins:
    """The snapshots one statement reads, by table name."""

    tables: dict[str, Table] = field(default_factory=dict)
    snaps: dict[str, Snapshot] = field(default_factory=dict)
    # What the index rewrite decided, shown by EXPLAIN.
    notes: list[object] = field(default_factory=list)
    # Tables read through some of their files only (``sql_files``): paths by table name.
    files: dict[str, frozenset[str]] = field(default_factory=dict)
    # Only the result's schema is wanted: searches check their arguments but do not run.
    dry: bool = False


class _Statement:
    """The block of one statement: its ``_Pins`` are this thread's while it runs (a
    statement run inside another shares the outer one's), under the caller's interrupt or
    one of its own with the engine's time limit. A class rather than a generator: every
    statement opens one."""

    __slots__ = ("_local", "_owner", "_scope", "_timeout_s")

    def __init__(self, local: threading.local, timeout_s: float | None) -> None:
        self._local = local
        self._timeout_s = timeout_s
        self._owner = False
        self._scope: interrupts.scope | None = None

    def __enter__(self) -> _Pins:
        outer = getattr(self._local, "pins", None)
        if outer is not None:
            return outer
        pins = _Pins()
        self._local.pins = pins
        self._owner = True
        if interrupts.current() is None and self._timeout_s:
            self._scope = interrupts.scope(interrupts.Interrupt(self._timeout_s))
            self._scope.__enter__()
            return pins
        try:
            interrupts.check()
        except BaseException:
            self._local.pins = None
            raise
        return pins

    def __exit__(self, *exc: object) -> None:
        if not self._owner:
            return
        if self._scope is not None:
            self._scope.__exit__(*exc)
        self._local.pins = None


class SqlEngine:
    """Runs SQL over the tables of ``connection``. Safe to share between threads."""

    def __init__(self, connection: Connection, memory_cache_bytes: int | None = None, *,
                 memory_limit: int | None = None, spill_dir: str | None = None,
                 max_search_k: int | None = None,
                 statement_timeout_s: float | None = None,
                 point_lookups: bool = True, iceberg_sources: Any = None,
                 max_statement_length: int | None = None) -> None:
        """``memory_cache_bytes`` bounds the decoded table rows kept in memory for scans
        (default ``QUIVER_MEMORY_CACHE_BYTES`` or 1 GiB; 0 reads Parquet every time).
        ``memory_limit`` is the pool DataFusion's operators share (sorts, joins and
        aggregates spill to ``spill_dir`` or the system's temporary folder, else fail
        with ``SqlResourceError``); ``max_search_k`` the most results a search function
        returns; ``statement_timeout_s`` the time limit of a statement run outside any
        ``quiver.supertable.interrupt`` scope (None: no limit). ``point_lookups`` off sends
        every statement through DataFusion (see ``quiver.flight_server.sql.point``).
        ``max_statement_length`` is the longest statement text taken, in characters
        (default ``MAX_STATEMENT_LENGTH``): reading a text is not interruptible and takes
        about 2 s per million characters."""
        self.connection = connection
        self.max_statement_length = (MAX_STATEMENT_LENGTH if max_statement_length is None
                                     else max_statement_length)
        self.point_lookups = point_lookups
        self.memory_limit = default_memory_limit() if memory_limit is None else memory_limit
        self.statement_timeout_s = statement_timeout_s
        config = (
            datafusion.SessionConfig()
            .with_information_schema(True)
            .with_target_partitions(max(1, os.cpu_count() or 1))
            # Scans read strings as Utf8View (faster LIKE, GROUP BY and joins) and filter
            # after decoding whole pages, which measured faster than filter pushdown on the
            # summaries table; results go out as the plain types the tables declare.
            .set("datafusion.execution.parquet.pushdown_filters", "false")
            .set("datafusion.execution.parquet.schema_force_view_types", "true")
        )
        runtime = datafusion.RuntimeEnvBuilder().with_fair_spill_pool(self.memory_limit)
        runtime = (runtime.with_disk_manager_specified(spill_dir) if spill_dir
                   else runtime.with_disk_manager_os())
        self.ctx = datafusion.SessionContext(config, runtime)
        bounded.register(self.ctx)
        self.decoded = DecodedRows(default_budget() if memory_cache_bytes is None
                                   else memory_cache_bytes)
        self.views = ViewRegistry(self.ctx, self.decoded if self.decoded.budget else None)
        self._local = threading.local()
        self._open: dict[str, tuple[Table, float]] = {}
        self._count_names: dict[str, str] = {}
        # Statements that passed the gate, by text (the Analysis itself, so a reading made
        # anew is checked anew); plans of statements that read no table (below).
        self._gated: dict[str, analysis.Analysis] = {}
        self._tableless: dict[str, _Tableless | None] = {}
        self._search = None
        if _functions is not None and hasattr(_functions, "register_search_functions"):
            self._search = _functions.register_search_functions(
                self.ctx, self.pin, max_search_k or _functions.DEFAULT_MAX_K, self._dry)
        self._distances = _rewrite.DistanceFunctions(self.ctx) if _rewrite else None
        snippet.register(self.ctx)
        self.lake = (iceberg_sources if isinstance(iceberg_sources, lake.LakeSources)
                     else lake.LakeSources(iceberg_sources))
        self.lake.register(self.ctx, self._dry)

    def close(self) -> None:
        """Stops decoding rows into memory, lets go of those decoded and removes the
        views' file links."""
        self.decoded.close()
        self.views.close()

    # -- pinning -------------------------------------------------------------------------

    def _statement(self) -> _Statement:
        return _Statement(self._local, self.statement_timeout_s)

    def analyse(self, text: str, params: Sequence[Any] | None = None) -> analysis.Analysis:
        """The statement ``text`` read and classified (``analysis.analyse``), once it is
        within ``max_statement_length``: reading cannot be interrupted, so a longer text
        is refused unread."""
        if len(text) > self.max_statement_length:
            raise SqlResourceError(
                f"the statement is {len(text):,} characters long; this server reads "
                f"statements of up to {self.max_statement_length:,} "
                "(--max-statement-length): load many rows with a bulk ingest (ADBC "
                "adbc_ingest, DoPut) rather than INSERT … VALUES")
        return analysis.analyse(text, params)

    def read(self, text: str | analysis.Analysis,
             params: Sequence[Any] | None = None) -> analysis.Analysis:
        """The statement ``text`` (with ``params`` bound), read and let through the gate
        (``quiver.flight_server.sql.gate``): refused with an ``SqlError`` unless it may run.
        A statement already analysed is not read again."""
        if isinstance(text, analysis.Analysis):
            a = text if params is None else analysis.analyse(text.text, params)
        else:
            a = self.analyse(text, params)
        # The gate's verdict depends on the reading alone: a reading already let through
        # (the very object, as the analysis cache hands it out again) is not walked again.
        # Long texts (bulk VALUES) are read anew each time and not kept.
        if self._gated.get(a.text) is not a:
            gate.check(a, TABLE_FUNCTIONS)
            if len(a.text) <= analysis.CACHED_STATEMENT_CHARS:
                if len(self._gated) >= MEMO_STATEMENTS:
                    self._gated.clear()
                self._gated[a.text] = a
        return a

    @contextmanager
    def fresh_pins(self) -> Iterator[None]:
        """Reads inside pin the tables anew, apart from the enclosing statement's pins: one
        attempt of a write statement that is run again after a write conflict."""
        outer = getattr(self._local, "pins", None)
        self._local.pins = _Pins()
        try:
            yield
        finally:
            self._local.pins = outer

    def open_table(self, name: str) -> Table:
        """The table ``name``; ``SqlPlanError`` naming the tables there are when unknown."""
        try:
            return self._open_table(name)
        except (TableNotFoundError, InvalidTableNameError):
            raise unknown_table(name, self.connection.list_tables()) from None

    def _open_table(self, name: str) -> Table:
        now = time.monotonic()
        hit = self._open.get(name)
        if hit is not None and now - hit[1] < CATALOG_RECHECK_S and self._current(name, hit[0]):
            return hit[0]
        try:
            table = self.connection.open_table(name)
        except (TableNotFoundError, InvalidTableNameError):
            self._open.pop(name, None)
            raise
        self._open[name] = (table, now)
        return table

    def _current(self, name: str, table: Table) -> bool:
        """Whether the connection still holds ``table`` under ``name`` (a drop or re-create
        through it, SQL or not, replaces or removes it)."""
        return self.connection.cached_table(name) is table

    def _resolve(self, pins: _Pins, name: str, quoted: bool = True) -> str:
        """The catalog name an identifier refers to (unquoted names fold to lower case
        unless only the exact spelling exists)."""
        if name in pins.snaps:
            return name
        if not quoted and name != name.lower():
            lower = name.lower()
            if lower in pins.snaps:
                return lower
            try:
                self._open_table(lower)
                return lower
            except (TableNotFoundError, InvalidTableNameError):
                pass
        return name

    def _pin_in(self, pins: _Pins, name: str) -> Snapshot:
        snap = pins.snaps.get(name)
        if snap is None:
            table = self.open_table(name)
            snap = table.snapshot()
            pins.tables[name] = table
            pins.snaps[name] = snap
        return snap

    def _dry(self) -> bool:
        pins = getattr(self._local, "pins", None)
        return pins is not None and pins.dry

    def pin(self, table: str) -> Snapshot:
        """The snapshot the current statement reads ``table`` at: the first call in a
        statement pins it, later calls (self-joins, search functions) get the same one.
        Outside a statement, the latest snapshot."""
        pins = getattr(self._local, "pins", None)
        if pins is None:
            return self.open_table(table).snapshot()
        return self._pin_in(pins, table)

    # -- running -------------------------------------------------------------------------

    def execute(self, text: str | analysis.Analysis,
                params: Sequence[Any] | None = None) -> pa.Table:
        """Runs one statement and collects its result."""
        return self.sql(text, params).read_all()

    def execute_many(self, text: str, params: pa.Table | pa.RecordBatch) -> pa.Table:
        """Runs one statement once per row of bound parameters. DML results are summed
        into one count; query results are concatenated in row order. An INSERT whose
        VALUES row is all placeholders appends the parameter rows in one commit."""
        if params.num_rows == 0:
            raise SqlParameterError("no parameter rows to bind")
        if params.num_rows > 1 and _statements is not None:
            a = self.read(text)
            appended = _statements.insert_parameter_rows(self, a.statement.expr, params) \
                if a.statement.expr is not None and not a.explain else None
            if appended is not None:
                return appended
        results = [self.execute(text, row) for row in sqlbind.rows(params)]
        if len(results) > 1 and results[0].schema.names == ["count"]:
            total = sum(r.column(0)[0].as_py() or 0 for r in results)
            return pa.table({"count": pa.array([total], pa.int64())})
        return pa.concat_tables(results)

    def schema(self, text: str | analysis.Analysis,
               params: Sequence[Any] | None = None) -> pa.Schema:
        """The schema of the statement's result, planned without running it: search
        functions check their arguments (constant ones evaluated) but search nothing."""
        a = self.read(text, params)
        if not a.plans_as_query:
            if _statements is None or not a.carried_out:
                raise SqlError(f"{type(a.statement.expr).__name__.upper()} statements are "
                               "not supported")
            return _statements.result_schema(self, a.statement.tree)
        tableless = self._tableless_plan(a)
        if tableless is not None:
            return tableless.schema
        with self._statement() as pins:
            outer, pins.dry = pins.dry, True
            try:
                found = None if a.explain else self._point_plan(a, pins)
                if found is not None:
                    return found.schema
                a = self._fold_constants(a, pins, dry=True)
                direct = None if a.explain else (self._count_only(a, pins)
                                                 or self._bare_search(a, pins))
                if direct is not None:
                    return direct.schema
                df = self._plan_query(a.statement, pins)
                return plain_schema(df.schema(), fold_large=False)
            finally:
                pins.dry = outer

    def parameter_types(self, text: str) -> list[pa.DataType | None]:
        """The type each parameter of the statement takes, read from where its
        placeholders stand (None where nothing says; ``quiver.flight_server.sql.param_types``)."""
        return [s.type for s in param_types.infer(text, self.table_schema)]

    def prepare(self, text: str) -> Prepared:
        """Reads the statement as a client prepares it: its parameters' declared types,
        and for a query its result schema, planned with stand-ins for the parameters. A
        statement that cannot be read, or names an unknown table or column, is refused
        here as it would be when run."""
        is_query = self.is_query(text)
        slots = param_types.infer(text, self.table_schema)
        dataset = None
        if is_query:
            if not slots:
                dataset = self.schema(text)
            elif (probes := param_types.stand_ins(slots)) is None:
                log.debug("result schema of %r known once parameters are bound", text)
            else:
                try:
                    dataset = self.schema(sqlbind.substitute(text, probes))
                except SqlPlanError as exc:
                    if _NAME_CLASH not in str(exc):
                        raise
                    distinct = param_types.stand_ins(slots, distinct=True)
                    # The same slots had stand-ins just above.
                    assert distinct is not None
                    dataset = self.schema(sqlbind.substitute(text, distinct))
        return Prepared(is_query, param_types.parameter_schema(slots), dataset)

    def table_schema(self, name: str, quoted: bool = True) -> pa.Schema:
        """The user columns of the table ``name`` refers to (unquoted, it folds to lower
        case unless only the exact spelling exists); ``SqlTableNotFoundError`` when
        there is none."""
        if not quoted and name != name.lower():
            try:
                return self._open_table(name.lower()).schema
            except (TableNotFoundError, InvalidTableNameError):
                pass
        return self.open_table(name).schema

    def is_query(self, text: str) -> bool:
        """Whether the statement returns rows of a query (SELECT, VALUES, WITH, EXPLAIN,
        SHOW, DESCRIBE) rather than being DDL or DML; text that cannot be read counts as
        a query, to be refused when it is planned."""
        return self.analyse(text).is_query

    def sql(self, text: str | analysis.Analysis,
            params: Sequence[Any] | None = None) -> pa.RecordBatchReader:
        """Runs one statement (with ``params`` bound to its placeholders); the result
        streams as record batches."""
        a = self.read(text, params)
        with self._statement() as pins:
            if not a.plans_as_query:
                return self._run_statement(a)
            found = self._point_plan(a, pins)
            if found is not None:
                if not a.explain:
                    return found.run().to_reader()
                pins.notes.append(found.note())
            tableless = self._tableless_plan(a)
            if tableless is not None and tableless.rows is not None and not a.explain:
                return tableless.rows.to_reader()
            if tableless is not None:
                df = self.ctx.create_dataframe_from_logical_plan(tableless.plan)
                if _small(a, pins):
                    return self._collected(df, tableless.schema)
                return self._stream(df, schema=tableless.schema)
            a = self._fold_constants(a, pins)
            # Under EXPLAIN the count still runs, for the note saying how it would be
            # answered.
            counted = self._count_only(a, pins)
            direct = None if a.explain else (counted or self._bare_search(a, pins))
            if direct is not None:
                return pa.RecordBatchReader.from_batches(direct.schema, direct.to_batches())
            df = self._plan_query(a.statement, pins)
            if a.explain and pins.notes:
                return self._explain_with_notes(df, pins.notes)
            return self._stream(df, small=_small(a, pins))

    def sql_files(self, text: str, table: str, version: int, files: Sequence[str],
                  params: Sequence[Any] | None = None, *, table_uuid: str | None = None
                  ) -> pa.RecordBatchReader:
        """Runs a query that reads ``table`` as of ``version`` through the superfiles
        ``files`` only (paths as that version's manifest lists them), so the rows of a
        table can be read in parts. ``table_uuid``, when given, must be the table's:
        a table dropped and created again under the name is another table.
        ``ObjectNotFoundError`` when that version or one of the files is gone."""
        a = self.read(text, params)
        if a.explain or not a.plans_as_query:
            raise SqlError("only a query can read part of a table's files")
        with self._statement() as pins:
            source = self.open_table(table)
            # The newest version known says whether this is still the same table; asking
            # for an old version of another table would fail less clearly.
            if table_uuid is not None and \
                    source.snapshot(refresh=False).manifest.table_uuid != table_uuid:
                raise ObjectNotFoundError(f"table {table!r} was dropped or replaced since "
                                          "this read was planned; run the query again")
            snap = self._snapshot_at(source, version)
            wanted = frozenset(files)
            missing = wanted - {f.path for f in snap.files}
            if missing:
                raise ObjectNotFoundError(f"version {version} of table {table!r} has no "
                                          f"file(s) {sorted(missing)[:3]}")
            pins.tables[table] = source
            pins.snaps[table] = snap
            pins.files[table] = wanted
            found = self._point_plan(a, pins, only=table)
            if found is not None:
                return found.run(wanted).to_reader()
            df = self._plan_query(a.statement, pins)
            return self._stream(df)

    @staticmethod
    def _snapshot_at(table: Table, version: int) -> Snapshot:
        snap = table.snapshot(refresh=False)
        if snap.version == version:
            return snap
        try:
            return table.at_version(version)
        except ObjectNotFoundError:
            raise ObjectNotFoundError(
                f"version {version} of table {table.name!r} is no longer stored (old "
                "versions are removed after a while); run the query again") from None

    def _fold_constants(self, a: analysis.Analysis, pins: _Pins, dry: bool = False
                        ) -> analysis.Analysis:
        """The statement with its search functions' constant arguments evaluated and
        written in as literals (``quiver.flight_server.sql.constants``), each once, under the
        statement's pins."""
        if _functions is None or not _SEARCH_CALL.search(a.statement.body):
            return a

        def evaluate(text: str) -> pa.Scalar:
            sub = self.read(f"SELECT {text}").statement
            if not isinstance(sub.expr, exp.Select) or len(sub.expr.expressions) != 1:
                raise SqlPlanError(f"cannot evaluate the search argument {text[:80]!r}")
            try:
                result = self._stream(self._plan_query(sub, pins)).read_all()
            except SqlError as exc:
                raise SqlPlanError(f"the search argument {text[:80]!r}: {exc}") from None
            if result.num_rows != 1 or result.num_columns != 1:
                raise SqlPlanError(f"the search argument {text[:80]!r} is not one value")
            return result.column(0)[0]

        text = constants.fold(a.statement, evaluate, dry)
        return a if text is None else self.read(text)

    def _point_plan(self, a: analysis.Analysis, pins: _Pins, only: str | None = None
                    ) -> point.PointPlan | None:
        """The point lookup answering the statement (``analysis.PointLookup`` judged
        against its table's pinned snapshot), or None for the general path. ``only``:
        the one table the statement may read (a read of some of its files)."""
        look = a.point
        if look is None or not self.point_lookups:
            return None
        if look.function:
            # The function's own errors (an unknown table among them) are the general
            # path's to raise; a read of some files runs the function as before.
            if self._search is None or only is not None:
                return None
            if look.table not in pins.snaps:
                try:
                    self._open_table(look.table)
                except (TableNotFoundError, InvalidTableNameError):
                    return None
            return point.plan(look, self._pin_in(pins, look.table))
        name = self._resolve(pins, look.table, look.quoted)
        if only is not None and name != only:
            return None
        return point.plan(look, self._pin_in(pins, name))

    def _count_only(self, a: analysis.Analysis, pins: _Pins) -> pa.Table | None:
        """The result of ``SELECT count(*) FROM t`` (or ``count(1)``, aliased or not, with
        nothing else in the statement; ``analysis.Shape.COUNT``) from the pinned manifest:
        its live-row count is exact, tombstones included. None for any other statement."""
        count = a.count
        if count is None:
            return None
        name = self._resolve(pins, count.table, count.quoted)
        snap = self._pin_in(pins, name)
        rows = snap.count()
        if a.explain:
            pins.notes.append(f"count: {name} counted from manifest v{snap.version} "
                              f"({rows} live rows), no scan")
        column = count.column or self._count_name(count.form)
        field_ = pa.field(column, pa.int64(), nullable=False)
        return pa.table([pa.array([rows], pa.int64())], schema=pa.schema([field_]))

    def _bare_search(self, a: analysis.Analysis, pins: _Pins) -> pa.Table | None:
        """The result of ``SELECT * FROM <search function>(<literals>)`` with nothing else
        in the statement (``analysis.Shape.SEARCH``), from the function itself: DataFusion
        would only pass its rows through. None for any other statement."""
        call = a.search
        if self._search is None or call is None or not self._search.knows(call.function):
            return None
        return self._search.call(call.function, list(call.values))

    def _tableless_plan(self, a: analysis.Analysis) -> _Tableless | None:
        """The logical plan and result schema of a query that reads no relation at all
        (``SELECT 1``, ``SELECT now()``, ``VALUES …``: no table, view, table function or
        search), planned once per text; None for any other statement. Nothing in such a
        plan depends on the tables' versions, and each run makes a new DataFrame of it, so
        time functions still read the time of the run. A query of literals and operators
        alone (``SELECT 1``, a pool's health check) has one answer: it is kept with the
        plan when small."""
        if a.shape is not analysis.Shape.QUERY or len(a.text) > analysis.CACHED_STATEMENT_CHARS:
            return None
        key = a.text
        try:
            return self._tableless[key]
        except KeyError:
            pass
        expr = a.statement.expr
        planned = None
        if expr is not None and expr.find(exp.Table) is None \
                and not _SEARCH_CALL.search(a.statement.body):
            df = self._plan(a.statement.text, {}, None)
            schema = plain_schema(df.schema(), fold_large=False)
            rows = None
            # Bounded by its text (no join or row generator), so it runs here at once; one
            # that fails reports the failure on each run instead.
            if a.row_bounded and not _calls_or_parameters(expr):
                try:
                    rows = self._collected(df, schema).read_all()
                except QuiverError:
                    rows = None
                if rows is not None and rows.nbytes > CONSTANT_RESULT_BYTES:
                    rows = None
            planned = _Tableless(df.logical_plan(), schema, rows)
        if len(self._tableless) >= MEMO_STATEMENTS:
            self._tableless.clear()
        self._tableless[key] = planned
        return planned

    def _count_name(self, form: str) -> str:
        """The column name DataFusion gives an unaliased count of this form."""
        name = self._count_names.get(form)
        if name is None:
            name = datafusion.SessionContext().sql(_COUNT_FORMS[form]).schema().names[0]
            self._count_names[form] = name
        return name

    def _explain_with_notes(self, df: datafusion.DataFrame, notes: list[object]
                            ) -> pa.RecordBatchReader:
        plan = self._stream(df).read_all()
        kinds = ["quiver_index_path"] * len(notes)
        texts = [str(n) for n in notes]
        extra = pa.Table.from_arrays(
            [pa.array(kinds if i == 0 else texts, f.type) for i, f in enumerate(plan.schema)],
            schema=plan.schema)
        out = pa.concat_tables([plan, extra])
        return pa.RecordBatchReader.from_batches(out.schema, out.to_batches())

    def _run_statement(self, a: analysis.Analysis) -> pa.RecordBatchReader:
        if _statements is None or not a.carried_out:
            kind = type(a.statement.expr).__name__.upper()
            raise SqlError(f"{kind} statements are not supported yet; SELECT, WITH, VALUES "
                           "and EXPLAIN are")
        result = _statements.run_statement(self, a.statement.tree)
        return pa.RecordBatchReader.from_batches(result.schema, result.to_batches())

    def _plan_query(self, st: sqlparse.Statement, pins: _Pins) -> datafusion.DataFrame:
        expr = st.tree
        refs = sqlparse.table_refs(expr)
        names = {}
        for ref in refs:
            name = self._resolve(pins, ref.name, ref.quoted)
            names[id(ref.node)] = name
            self._pin_in(pins, name)
        acquired: list[tuple[Table, Snapshot]] = []
        renames: dict[str, str] = {}

        def source(ref: sqlparse.TableRef) -> tuple[Table, Snapshot]:
            name = names[id(ref.node)]
            return pins.tables[name], pins.snaps[name]

        def acquire(ref: sqlparse.TableRef, files: Sequence[FileEntry] | None) -> str:
            table, snap = source(ref)
            view = self.views.acquire(table, snap, files)
            acquired.append((table, snap))
            renames[view] = table.name
            return view

        index = None
        # The index rewrite reads whole tables; a read of some files scans them instead.
        if _rewrite is not None and self._distances is not None and not pins.files:
            index = _rewrite.IndexRewrite(self.ctx, st, refs, source, acquire, self._distances,
                                          self.views.resident, dry=pins.dry)
        transient: list[str] = []
        try:
            edits = self._information_edits(st, transient)
            replaced: dict[int, sqlparse.Edit] = {}
            if index is not None:
                found = index.run()
                edits += found.edits
                replaced = found.ref_edits
                pins.notes.extend(found.notes)
            for ref in refs:
                if id(ref.node) in replaced:
                    edits.append(replaced[id(ref.node)])
                    continue
                table, snap = source(ref)
                dnf = sqlparse.pruning_filter(ref, snap.schema)
                files = snap.candidate_files(dnf) if dnf else None
                only = pins.files.get(names[id(ref.node)])
                if only is not None:
                    files = [f for f in (snap.files if files is None else files)
                             if f.path in only]
                view = acquire(ref, files)
                edit = sqlparse.table_edit(ref, view, st.body)
                if edit is not None:
                    edits.append(edit)

            def columns_of(ref: sqlparse.TableRef) -> list[str]:
                return list(pins.snaps[names[id(ref.node)]].schema.names)

            edits += sqlparse.star_edits(expr, refs, st.body, columns_of)
            rewritten = st.prefix + sqlparse.splice(st.body, edits)
            log.debug("planning %s", rewritten)
            return self._plan(rewritten, renames, None)
        finally:
            for table, snap in acquired:
                self.views.release(table, snap)
            if index is not None:
                index.close()
            for name in transient:
                self.ctx.deregister_table(name)

    def _information_edits(self, st: sqlparse.Statement, transient: list[str]
                           ) -> list[sqlparse.Edit]:
        """Points ``information_schema.tables`` / ``.columns`` at relations built from the
        catalog (registered for this statement only; their names go to ``transient``)."""
        edits = []
        for ref in sqlparse.information_refs(st.tree, information.RELATIONS):
            name = f"__quiver_information_{ref.name}_{next(_transient_names)}"
            data = information.relation(self.connection, ref.name)
            self.ctx.register_record_batches(name, [data.to_batches() or [
                pa.RecordBatch.from_pylist([], schema=data.schema)]])
            transient.append(name)
            edit = sqlparse.table_edit(ref, name, st.body)
            if edit is not None:
                edits.append(edit)
        return edits

    def _plan(self, text: str, renames: dict[str, str], parse_error: str | None
              ) -> datafusion.DataFrame:
        try:
            return self.ctx.sql_with_options(text, gate.SQL_OPTIONS)
        except QuiverError:
            raise
        except Exception as exc:  # DataFusion raises plain exceptions with a kind prefix
            raise _map_error(exc, parse_error, renames) from None

    def _collected(self, df: datafusion.DataFrame, schema: pa.Schema) -> pa.RecordBatchReader:
        """The rows of ``df`` collected at once: for a statement that reads no table and
        generates no rows (its result is a few rows), where streaming costs more than the
        whole run."""
        interrupts.check()
        try:
            batches = df.collect()
        except QuiverError:
            raise
        except Exception as exc:
            raise _map_error(exc, None, memory_limit=self.memory_limit) from None
        out = [b if b.schema.equals(schema) else b.cast(schema) for b in batches]
        return pa.Table.from_batches(out, schema).to_reader()

    def _stream(self, df: datafusion.DataFrame, small: bool = False,
                schema: pa.Schema | None = None) -> pa.RecordBatchReader:
        """The rows of ``df`` batch by batch. Under an interrupt (the statement's time
        limit and cancel flag, taken from the scope it was planned in) each batch is
        awaited while the interrupt is polled; when it fires, DataFusion's stream is
        dropped, which stops its tasks and frees their memory. A ``small`` statement
        (see ``_small``) is pulled directly, the interrupt checked between batches: it
        saves the wait's cost where no batch can take long. ``schema`` is the plain
        schema of ``df`` when known already."""
        watch = interrupts.current()
        try:
            if schema is None:
                schema = plain_schema(df.schema(), fold_large=False)
            # Held only here, so that emptying it drops the stream even while an exception
            # raised out of it (and its frames) is still referenced elsewhere.
            held = [df.execute_stream()]
        except QuiverError:
            raise
        except Exception as exc:
            raise _map_error(exc, None, memory_limit=self.memory_limit) from None

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    try:
                        batch = _next_batch(held, watch, small)
                    except QuiverError:
                        raise
                    except Exception as exc:
                        raise _map_error(exc, None, memory_limit=self.memory_limit) from None
                    if batch is None:
                        return
                    out = batch.to_pyarrow()
                    yield out if out.schema.equals(schema) else out.cast(schema)
            finally:
                held.clear()

        return pa.RecordBatchReader.from_batches(schema, batches())


_loops = threading.local()
# A statement reading at most this many live rows, without joins, row generators or
# recursion, cannot keep one batch busy for long: it is pulled without the wait.
SMALL_ROWS = 100_000


@dataclass(frozen=True)
class _Tableless:
    """A table-free query planned once: its plan, its result schema and, for a query of
    literals and operators alone, its rows."""

    plan: Any
    schema: pa.Schema
    rows: pa.Table | None


def _calls_or_parameters(expr: exp.Expression) -> bool:
    """Whether the query calls any function (``now()``, ``random()``, a cast) or takes a
    parameter: then each run computes its rows anew."""
    return expr.find(exp.Func, exp.Placeholder, exp.Parameter) is not None


def _small(a: analysis.Analysis, pins: _Pins) -> bool:
    """Whether every batch of the statement is quick to make: it reads at most
    ``SMALL_ROWS`` live rows of its tables, and joins nothing, generates no rows and does
    not recurse (so its work is bounded by those rows times its expressions, which are
    bounded)."""
    if a.explain or not a.row_bounded or _LAKE_CALL.search(a.statement.body):
        return False
    return sum(snap.count() for snap in pins.snaps.values()) <= SMALL_ROWS


def _next_batch(held: list[Any], watch: interrupts.Interrupt | None, small: bool) -> Any:
    """The next batch of the DataFusion stream in ``held``, or None at its end. Without
    an interrupt (or for a small statement) the call blocks; with one, the batch is
    awaited on this thread's event loop while a timer checks the interrupt every
    ``POLL_S``, cancelling the wait when it fires (the caller then empties ``held``,
    which stops DataFusion's work)."""
    if watch is None or small:
        if watch is not None:
            watch.check()
        try:
            return held[0].next()
        except StopIteration:
            return None
    watch.check()
    loop = getattr(_loops, "loop", None)
    if loop is None:
        loop = _loops.loop = asyncio.new_event_loop()
    task = loop.create_task(_anext(held))
    timer: list[asyncio.TimerHandle | None] = [None]

    def poll() -> None:
        if watch.cancelled or (watch.deadline is not None
                               and time.monotonic() >= watch.deadline):
            task.cancel()
        else:
            timer[0] = loop.call_later(POLL_S, poll)

    timer[0] = loop.call_later(POLL_S, poll)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        handle = timer[0]
        if handle is not None:
            handle.cancel()
        timer[0] = None
    # Raised outside the handler and with the task let go: the cancelled wait's frames
    # hold DataFusion's stream, and an exception chained to them would keep it running.
    task = None
    watch.check()
    raise WorkCancelledError("the statement was cancelled")


async def _anext(held: list[Any]) -> Any:
    try:
        return await held[0].__anext__()
    except StopAsyncIteration:
        return None


def _clean(message: str, renames: dict[str, str] | None = None) -> str:
    for internal, name in (renames or {}).items():
        message = message.replace(f'"{internal}"', name).replace(internal, name)
    return _INTERNAL.sub(lambda m: m.group(1), message).strip()


def _map_error(exc: BaseException, parse_error: str | None,
               renames: dict[str, str] | None = None, *,
               memory_limit: int | None = None) -> BaseException:
    inner = recover(exc)
    if inner is not None:
        return inner
    message = _clean(str(exc), renames)
    if "Resources exhausted" in message:
        pool = f" of {memory_limit} bytes" if memory_limit else ""
        detail = message.split("Resources exhausted:", 1)[-1].strip()
        return SqlResourceError(f"the statement needs more memory than the server's "
                                f"statement memory pool{pool} allows ({detail[:200]})")
    if "ParserError" in message or message.startswith("SQL error"):
        if parse_error:
            message = f"{message} ({parse_error})"
        return SqlSyntaxError(message)
    if "not found" in message and "table" in message.lower():
        return SqlTableNotFoundError(message)
    if message.startswith(("Error during planning", "Schema error", "Type error",
                           "This feature is not implemented")):
        return SqlPlanError(message)
    return SqlError(message)
