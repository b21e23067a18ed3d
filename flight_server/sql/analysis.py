"""What a statement is, read once: its kind, the tables it reads and writes, and the
shape the server or the engine answers in a way of its own.

``analyse(text, params)`` parses the statement through the parse cache and hands the
tree to one classifier; the immutable ``Analysis`` it returns is remembered by text, so
the FlightInfo, the schema request and the run of one statement share one reading. The
shapes (``Shape``) are:

- ``SCAN``: ``SELECT <columns or *> FROM <table> [WHERE <row filter>]`` and nothing that
  combines rows, so any split of the table's files returns, part by part, exactly the
  query's rows (``PlainScan``: the table, the columns, whether rows are filtered);
- ``COUNT``: ``SELECT count(*) | count(1) [AS name] FROM <table>``, answered from the
  manifest (``CountRows``);
- ``SEARCH``: ``SELECT * FROM <search function>(<literals>)``, answered by the function
  itself (``SearchCall``);
- ``QUERY``: any other SELECT / WITH / VALUES / set operation; ``EXPLAIN`` of a query;
- the statements Quiver carries out itself: ``CREATE``, ``DROP``, ``APPEND`` (``INSERT …
  VALUES`` with no query inside), ``INSERT`` (with a query), ``UPDATE``, ``DELETE``,
  ``SHOW_TABLES``, ``DESCRIBE_TABLE``;
- ``UNSUPPORTED`` (read, but none of the above: refused by the gate) and ``UNREADABLE``.

The gate (``quiver.flight_server.sql.gate``) decides what may run from these shapes
and its own checks of every relation and function; nothing here lets a statement through.
"""

from __future__ import annotations

import enum
import functools
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
from sqlglot import exp

from quiver.flight_server.sql import params as sqlbind
from quiver.flight_server.sql import parse as sqlparse

try:
    from quiver.flight_server.sql.functions import NAMES as _SEARCH_FUNCTIONS
except ImportError:
    _SEARCH_FUNCTIONS = frozenset()


class Kind(enum.Enum):
    """What a statement does, coarsely."""

    QUERY = "query"
    EXPLAIN = "explain"
    DDL = "ddl"
    DML = "dml"
    SHOW = "show"
    DESCRIBE = "describe"
    OTHER = "other"
    UNREADABLE = "unreadable"


class Shape(enum.Enum):
    """The forms the classifier tells apart (see the module docstring)."""

    SCAN = "scan"
    COUNT = "count"
    SEARCH = "search"
    QUERY = "query"
    EXPLAIN = "explain"
    CREATE = "create"
    DROP = "drop"
    APPEND = "append"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    SHOW_TABLES = "show_tables"
    DESCRIBE_TABLE = "describe_table"
    UNSUPPORTED = "unsupported"
    UNREADABLE = "unreadable"


_QUERY_SHAPES = frozenset({Shape.SCAN, Shape.COUNT, Shape.SEARCH, Shape.QUERY})
_CARRIED_OUT = frozenset({Shape.CREATE, Shape.DROP, Shape.APPEND, Shape.INSERT, Shape.UPDATE,
                          Shape.DELETE, Shape.SHOW_TABLES, Shape.DESCRIBE_TABLE})
# Kinds whose result is rows to fetch: text that cannot be read counts too, to be
# refused when it is planned.
_ROW_KINDS = frozenset({Kind.QUERY, Kind.EXPLAIN, Kind.SHOW, Kind.DESCRIBE, Kind.UNREADABLE})


@dataclass(frozen=True)
class PlainScan:
    """A query that only reads rows of one table: the table as written, the projected
    columns as written (``*`` for a star), and whether a WHERE filters rows."""

    table: str
    quoted: bool
    columns: tuple[str, ...]
    filtered: bool
    ref: sqlparse.TableRef = field(repr=False, compare=False)

    def names(self) -> list[str]:
        """The catalog names the table may go by, in the order the engine resolves them
        (an unquoted name folds to lower case unless only the exact spelling exists)."""
        if not self.quoted and self.table != self.table.lower():
            return [self.table.lower(), self.table]
        return [self.table]

    def pruning_filter(self, schema: pa.Schema) -> sqlparse.Dnf | None:
        """The WHERE conjuncts bounding the table's columns by literals, as table-layer
        DNF (implied by the filter); None when there is nothing to prune with."""
        return sqlparse.pruning_filter(self.ref, schema) if self.filtered else None


@dataclass(frozen=True)
class CountRows:
    """``SELECT count(*)`` / ``count(1)`` of one table: ``form`` is "star" or "one";
    ``column`` the alias's name when aliased."""

    table: str
    quoted: bool
    form: str
    column: str | None


@dataclass(frozen=True)
class SearchCall:
    """``SELECT * FROM <search function>(<literals>)``: the function and its values."""

    function: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class PointLookup:
    """``SELECT <columns or *> FROM <table> WHERE <column> = '<text>' [AND …] [LIMIT n]``:
    one table (no schema or catalog), plain columns (aliased or not) and stars, a WHERE
    that is only equalities of the table's columns with standard string literals, and
    no other clause. ``projections`` are (column, result name), ``(None, None)`` for a
    star; ``equalities`` (column, value), columns as DataFusion resolves them. Whether
    the table's columns make it a lookup through an index is the engine's to judge.

    ``function`` marks ``SELECT <columns or *> FROM exact_match('<table>', '<column>',
    '<text>') [AS a] [LIMIT n]`` (arguments standard string literals): the rows the
    function gives, its ``_id``, NULL ``score`` and columns; the table is named exactly
    as written (``quoted``) and its one equality is the call's column and value."""

    table: str
    quoted: bool
    projections: tuple[tuple[str, str] | tuple[None, None], ...]
    equalities: tuple[tuple[str, str], ...]
    limit: int | None
    function: bool = False

    def names(self) -> list[str]:
        """The catalog names the table may go by, as ``PlainScan.names``."""
        if not self.quoted and self.table != self.table.lower():
            return [self.table.lower(), self.table]
        return [self.table]


@dataclass(frozen=True)
class Analysis:
    """One statement, read and classified (see the module docstring)."""

    text: str
    kind: Kind
    shape: Shape
    # Table names as written, each once, in the order they appear; a search function's
    # table argument counts as read.
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    # No join, row generator, unnest, subquery or recursion: a query's work is bounded
    # by the rows it reads.
    row_bounded: bool
    scan: PlainScan | None = None
    count: CountRows | None = None
    search: SearchCall | None = None
    point: PointLookup | None = None
    statement: sqlparse.Statement = field(repr=False, compare=False, kw_only=True)

    @property
    def explain(self) -> bool:
        return self.kind is Kind.EXPLAIN

    @property
    def is_query(self) -> bool:
        """Whether the statement returns rows (SELECT, VALUES, WITH, EXPLAIN, SHOW,
        DESCRIBE) rather than being DDL or DML."""
        return self.kind in _ROW_KINDS

    @property
    def plans_as_query(self) -> bool:
        """Whether DataFusion plans it: a query, or EXPLAIN of one."""
        return self.shape in _QUERY_SHAPES or self.shape is Shape.EXPLAIN

    @property
    def carried_out(self) -> bool:
        """Whether Quiver carries the statement out itself (DDL, DML, SHOW TABLES,
        DESCRIBE of a table)."""
        return self.shape in _CARRIED_OUT

    @cached_property
    def literals_hidden(self) -> str:
        """The statement (without an EXPLAIN prefix) with every literal shown as ``?``,
        for logs: a scan ticket's text has the client's parameter values bound into it."""
        expr = self.statement.expr if self.statement is not None else None
        if expr is None:
            return "?"
        try:
            shown = expr.transform(
                lambda n: exp.Placeholder() if isinstance(n, exp.Literal) else n)
            return shown.sql(dialect=sqlparse.DIALECT)
        except Exception:  # a tree sqlglot cannot write back is not logged
            return "?"


# Readings of texts up to this long are remembered (longer ones, bulk VALUES, would crowd
# out the rest), as the parse cache does.
CACHED_STATEMENT_CHARS = sqlparse.CACHED_BODY_CHARS


def analyse(text: str, params: Sequence[Any] | None = None) -> Analysis:
    """The statement ``text`` (with ``params`` bound to its placeholders) read and
    classified. ``SqlSyntaxError`` for an empty text or several statements; text sqlglot
    cannot read is ``Shape.UNREADABLE`` (refused by the gate)."""
    if params is not None:
        text = sqlbind.bind(text, params)
    if len(text) <= CACHED_STATEMENT_CHARS:
        return _analyse_cached(text)
    return _analyse(text)


def hide_literals(text: str) -> str:
    """``text`` with its literals shown as ``?``; ``?`` when it cannot be read."""
    try:
        return analyse(text).literals_hidden
    except Exception:  # what cannot be read is not logged at all
        return "?"


# A cheap lexical test, for admission before a statement is read (reading it there would
# let any number of callers parse at once, outside the statement limit).
_INSERT = re.compile(r"\s*INSERT\s+INTO\s", re.IGNORECASE)
_SELECT = re.compile(r"\bSELECT\b", re.IGNORECASE)


def looks_like_append(text: str) -> bool:
    """Whether ``text`` reads as ``INSERT INTO … VALUES`` with no query inside, judged
    from its words alone (what ``Shape.APPEND`` is, without parsing)."""
    return _INSERT.match(text) is not None and _SELECT.search(text) is None


# How many statements this process has read and classified (cache hits not counted):
# what a caller checks to know a statement was read once.
READS: Counter[str] = Counter()
_reads_lock = threading.Lock()


def _analyse(text: str) -> Analysis:
    with _reads_lock:
        READS["statements"] += 1
    return classify(sqlparse.parse(text))


_analyse_cached = functools.lru_cache(maxsize=256)(_analyse)


def classify(st: sqlparse.Statement) -> Analysis:
    """The kind, shape and tables of a parsed statement."""
    expr = st.expr
    if expr is None:
        return Analysis(st.text, Kind.UNREADABLE, Shape.UNREADABLE, (), (), False,
                        statement=st)
    kind, shape = _kind_and_shape(expr, st.explain)
    targets = _write_targets(expr) if kind in (Kind.DDL, Kind.DML) else []
    refs = sqlparse.table_refs(expr)
    reads = [r.name for r in refs if not any(r.node is t for t in targets)]
    reads += _searched_tables(expr)
    writes = tuple(dict.fromkeys(t.name for t in targets))
    scan = count = search = point = None
    if shape in (Shape.QUERY, Shape.EXPLAIN) and isinstance(expr, exp.Select):
        point = _point_lookup(expr, refs, st.body)
        # A count under EXPLAIN is still recognised: the plan notes how it is answered.
        count = _count_rows(expr, refs)
        if shape is Shape.QUERY:
            scan = None if count is not None else _plain_scan(expr, refs)
            search = None if scan or count else _search_call(expr)
            shape = Shape.SCAN if scan else Shape.COUNT if count else \
                Shape.SEARCH if search else Shape.QUERY
    return Analysis(st.text, kind, shape, tuple(dict.fromkeys(reads)), writes,
                    _row_bounded(expr), scan, count, search, point, statement=st)


def shape_of(expr: exp.Expression) -> Shape:
    """The shape of a parsed statement that is not under EXPLAIN (without looking for
    the query shapes the server and engine answer themselves: those are ``QUERY``)."""
    return _kind_and_shape(expr, False)[1]


def carried_out(expr: exp.Expression) -> bool:
    """Whether Quiver carries ``expr`` out itself: every CREATE, DROP, INSERT, DELETE and
    UPDATE, SHOW TABLES and DESCRIBE of a table."""
    return shape_of(expr) in _CARRIED_OUT


def _kind_and_shape(expr: exp.Expression, explain: bool) -> tuple[Kind, Shape]:
    if explain:
        return Kind.EXPLAIN, Shape.EXPLAIN if sqlparse.is_query(expr) else Shape.UNSUPPORTED
    if sqlparse.is_query(expr):
        return Kind.QUERY, Shape.QUERY
    if isinstance(expr, exp.Create):
        return Kind.DDL, Shape.CREATE
    if isinstance(expr, exp.Drop):
        return Kind.DDL, Shape.DROP
    if isinstance(expr, exp.Insert):
        appends = isinstance(expr.expression, exp.Values) and expr.find(exp.Select) is None
        return Kind.DML, Shape.APPEND if appends else Shape.INSERT
    if isinstance(expr, exp.Update):
        return Kind.DML, Shape.UPDATE
    if isinstance(expr, exp.Delete):
        return Kind.DML, Shape.DELETE
    if isinstance(expr, exp.Show):
        return Kind.SHOW, Shape.SHOW_TABLES if expr.name.upper() == "TABLES" \
            else Shape.UNSUPPORTED
    if isinstance(expr, exp.Describe):
        return Kind.DESCRIBE, Shape.DESCRIBE_TABLE if isinstance(expr.this, exp.Table) \
            else Shape.UNSUPPORTED
    return Kind.OTHER, Shape.UNSUPPORTED


def _write_targets(expr: exp.Expression) -> list[exp.Table]:
    """The tables a DDL or DML statement creates, drops or changes."""
    found = list(expr.args.get("tables") or ()) if isinstance(expr, exp.Drop) else [expr.this]
    targets = []
    for target in found:
        if isinstance(target, exp.Schema):
            target = target.this
        if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
            targets.append(target)
    return targets


def _searched_tables(expr: exp.Expression) -> list[str]:
    """The table arguments of search functions read as relations, when literal."""
    names = []
    for node in expr.find_all(exp.Table):
        call = node.this
        if not isinstance(call, exp.Anonymous) or call.name.lower() not in _SEARCH_FUNCTIONS:
            continue
        first = call.expressions[0] if call.expressions else None
        if isinstance(first, exp.Literal) and first.is_string:
            names.append(first.this)
    return names


def _row_bounded(expr: exp.Expression) -> bool:
    for node in expr.walk():
        if isinstance(node, exp.Join | exp.GenerateSeries | exp.Unnest | exp.Subquery) or \
                (isinstance(node, exp.With) and node.args.get("recursive")):
            return False
    return True


# -- the query shapes answered outside DataFusion's general path ------------------------------

def _set_args(node: exp.Expression) -> set[str]:
    return {k for k, v in node.args.items() if v not in (None, [], False)}


def _given_args(node: exp.Expression) -> set[str]:
    return {k for k, v in node.args.items() if v}


def _only_from(select: exp.Select, given: Callable[[exp.Expression], set[str]],
               allowed: frozenset[str] = frozenset()) -> exp.Table | None:
    """The one table (or table function) a SELECT reads when it has no parts beyond its
    projections and FROM (``allowed`` adds others)."""
    if given(select) - {"expressions", "from_", "from"} - allowed:
        return None
    source = select.args.get("from_") or select.args.get("from")
    node = source.this if isinstance(source, exp.From) else None
    return node if isinstance(node, exp.Table) else None


# Expressions a filter may hold and still be checked row by row within any one file.
_ROW_EXPRESSIONS = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.And,
    exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.NullSafeNEQ, exp.GT, exp.GTE,
    exp.LT, exp.LTE, exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Neg, exp.Add,
    exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Cast, exp.TryCast, exp.DataType, exp.Tuple,
    exp.DataTypeParam, exp.Var,
)


def _plain_column(node: exp.Expression) -> bool:
    if isinstance(node, exp.Alias):
        node = node.this
    if isinstance(node, exp.Star):
        return not _set_args(node)
    if not isinstance(node, exp.Column) or _set_args(node) - {"this", "table"}:
        return False
    return isinstance(node.this, exp.Identifier | exp.Star) and not (
        isinstance(node.this, exp.Star) and _set_args(node.this))


def _column_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Star):
        return "*"
    assert isinstance(node, exp.Column), "only plain columns make a plain scan"
    if isinstance(node.this, exp.Star):
        return f"{node.table}.*"
    return sqlparse.norm(node.this)


def _plain_scan(select: exp.Select, refs: list[sqlparse.TableRef]) -> PlainScan | None:
    node = _only_from(select, _set_args, frozenset({"where"}))
    if node is None or not isinstance(node.this, exp.Identifier):
        return None
    if _set_args(node) - {"this", "alias"}:
        return None
    alias = node.args.get("alias")
    if alias is not None and (not isinstance(alias, exp.TableAlias)
                              or _set_args(alias) - {"this"}):
        return None
    if not select.expressions or not all(_plain_column(e) for e in select.expressions):
        return None
    where = select.args.get("where")
    if where is not None and not all(isinstance(n, _ROW_EXPRESSIONS)
                                     for n in where.this.walk()):
        return None
    if len(refs) != 1 or refs[0].node is not node:
        return None
    ref = refs[0]
    return PlainScan(ref.name, ref.quoted, tuple(_column_name(e) for e in select.expressions),
                     where is not None, ref)


def _point_lookup(select: exp.Select, refs: list[sqlparse.TableRef], body: str
                  ) -> PointLookup | None:
    node = _only_from(select, _set_args, frozenset({"where", "limit"}))
    if node is not None and isinstance(node.this, exp.Anonymous):
        return _exact_match_lookup(select, node, refs, body)
    where = select.args.get("where")
    if node is None or where is None or len(refs) != 1 or refs[0].node is not node:
        return None
    if not isinstance(node.this, exp.Identifier) or _set_args(node) - {"this", "alias"}:
        return None
    alias = node.args.get("alias")
    if not _plain_alias(alias):
        return None
    ref = refs[0]
    qualifier = sqlparse.norm(ref.alias_ident)
    projections = _lookup_projections(select, qualifier)
    if projections is None:
        return None
    equalities = []
    for cond in _and_terms(where.this):
        pair = _column_equals_text(cond, qualifier, body)
        if pair is None:
            return None
        equalities.append(pair)
    limit = _lookup_limit(select)
    if limit is False:
        return None
    return PointLookup(ref.name, ref.quoted, projections, tuple(equalities), limit)


def _plain_alias(alias: exp.Expression | None) -> bool:
    """No alias, or a bare name (``AS m``, without column names)."""
    return alias is None or (isinstance(alias, exp.TableAlias) and not _set_args(alias) - {"this"}
                             and isinstance(alias.this, exp.Identifier))


def _exact_match_lookup(select: exp.Select, node: exp.Table, refs: list[sqlparse.TableRef],
                        body: str) -> PointLookup | None:
    """``PointLookup.function``: a plain projection of one ``exact_match`` call."""
    call = node.this
    if refs or select.args.get("where") is not None or call.name.lower() != "exact_match" \
            or _set_args(node) - {"this", "alias"} or _set_args(call) - {"this", "expressions"}:
        return None
    alias = node.args.get("alias")
    if not _plain_alias(alias):
        return None
    # Unaliased, only unqualified columns are read (a qualifier matches nothing).
    qualifier = sqlparse.norm(alias.this) if alias is not None else None
    args = [a for a in (_text_literal(e, body) for e in call.expressions) if a is not None]
    if len(args) != 3 or len(call.expressions) != 3:
        return None
    projections = _lookup_projections(select, qualifier)
    limit = _lookup_limit(select)
    if projections is None or limit is False:
        return None
    table, column, value = args
    return PointLookup(table, True, projections, ((column, value),), limit, function=True)


def _lookup_projections(select: exp.Select, qualifier: str | None
                        ) -> tuple[tuple[str, str] | tuple[None, None], ...] | None:
    projections = []
    for proj in select.expressions:
        item = _lookup_projection(proj, qualifier)
        if item is None:
            return None
        projections.append(item)
    names = [out for _, out in projections if out is not None]
    if len(set(names)) != len(names):
        return None
    return tuple(projections)


def _lookup_limit(select: exp.Select) -> int | bool | None:
    """The LIMIT's row count, None without one, False for any other LIMIT."""
    node_limit = select.args.get("limit")
    if node_limit is None:
        return None
    if not isinstance(node_limit, exp.Limit) or _set_args(node_limit) - {"expression"}:
        return False
    limit = sqlparse.literal_number(node_limit.expression)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        return False
    return limit


def _and_terms(node: exp.Expression) -> list[exp.Expression]:
    node = sqlparse.unparen(node)
    if isinstance(node, exp.And):
        return _and_terms(node.this) + _and_terms(node.expression)
    return [node]


def _lookup_column(node: exp.Expression, qualifier: str | None) -> str | None:
    """The column a plain (possibly qualified) column reference of the table names."""
    node = sqlparse.unparen(node)
    if type(node) is not exp.Column or not isinstance(node.this, exp.Identifier) or \
            _set_args(node) - {"this", "table"}:
        return None
    table = node.args.get("table")
    if table is not None and (not isinstance(table, exp.Identifier)
                              or sqlparse.norm(table) != qualifier):
        return None
    return sqlparse.norm(node.this)


def _lookup_projection(node: exp.Expression, qualifier: str | None
                       ) -> tuple[str, str] | tuple[None, None] | None:
    if type(node) is exp.Star:
        return (None, None) if not _set_args(node) else None
    if type(node) is exp.Column and isinstance(node.this, exp.Star):
        table = node.args.get("table")
        if _set_args(node) - {"this", "table"} or _set_args(node.this) or \
                not isinstance(table, exp.Identifier) or sqlparse.norm(table) != qualifier:
            return None
        return (None, None)
    if type(node) is exp.Alias:
        ident = node.args.get("alias")
        column = _lookup_column(node.this, qualifier) if \
            type(sqlparse.unparen(node.this)) is exp.Column else None
        if column is None or not isinstance(ident, exp.Identifier) or \
                _set_args(node) - {"this", "alias"}:
            return None
        return column, sqlparse.norm(ident)
    column = _lookup_column(node, qualifier) if type(node) is exp.Column else None
    return None if column is None else (column, column)


def _column_equals_text(node: exp.Expression, qualifier: str | None, body: str
                        ) -> tuple[str, str] | None:
    """``(column, value)`` of ``column = 'value'`` (either way round) where the value is
    a standard string literal, written as such in the text (so SQL engines agree on
    what it holds)."""
    if type(node) is not exp.EQ:
        return None
    for col_side, lit_side in ((node.this, node.expression), (node.expression, node.this)):
        column = _lookup_column(col_side, qualifier)
        lit = sqlparse.unparen(lit_side)
        if column is None or type(lit) is not exp.Literal or not lit.is_string:
            continue
        value = _text_literal(lit, body)
        return None if value is None else (column, value)
    return None


def _text_literal(node: exp.Expression, body: str) -> str | None:
    """The text of a standard string literal written as such in the statement's text (so
    SQL engines agree on what it holds), else None."""
    lit = sqlparse.unparen(node)
    if type(lit) is not exp.Literal or not lit.is_string:
        return None
    value = lit.this
    start, end = lit.meta.get("start"), lit.meta.get("end")
    if not isinstance(value, str) or start is None or end is None or \
            body[start:end + 1] != "'" + value.replace("'", "''") + "'":
        return None
    return value


def _count_rows(select: exp.Select, refs: list[sqlparse.TableRef]) -> CountRows | None:
    if len(select.expressions) != 1:
        return None
    node = _only_from(select, _given_args)
    if node is None or _given_args(node) - {"this", "alias", "db"}:
        return None
    proj = select.expressions[0]
    call = proj.this if isinstance(proj, exp.Alias) else proj
    if not isinstance(call, exp.Count) or _given_args(call) - {"this", "big_int"}:
        return None
    arg = call.this
    if isinstance(arg, exp.Star) and not _given_args(arg):
        form = "star"
    elif isinstance(arg, exp.Literal) and not arg.is_string and arg.this == "1":
        form = "one"
    else:
        return None
    if len(refs) != 1 or refs[0].node is not node:
        return None
    column = None
    if isinstance(proj, exp.Alias):
        ident = proj.args["alias"]
        column = ident.name if ident.quoted else ident.name.lower()
    return CountRows(refs[0].name, refs[0].quoted, form, column)


def _search_call(select: exp.Select) -> SearchCall | None:
    node = _only_from(select, _given_args)
    if node is None or _given_args(node) - {"this"} or not isinstance(node.this, exp.Anonymous):
        return None
    if len(select.expressions) != 1 or not isinstance(select.expressions[0], exp.Star) or \
            any(select.expressions[0].args.values()):
        return None
    call = node.this
    if call.name.lower() not in _SEARCH_FUNCTIONS:
        return None
    values = tuple(sqlparse.literal_value(a) for a in call.expressions)
    if any(v is sqlparse.NO_LITERAL for v in values):
        return None
    return SearchCall(call.name, values)


@dataclass(frozen=True)
class ScanSource:
    """What a plain scan reads: the table, its snapshot pinned now, the superfiles the
    filter leaves, and its live rows (-1 when a filter makes that unknown)."""

    table: Any
    snapshot: Any
    files: tuple[Any, ...]
    records: int


def scan_source(scan: PlainScan, open_table: Callable[[str], Any],
                missing: tuple[type[BaseException], ...]) -> ScanSource | None:
    """The source of ``scan``, its table opened by ``open_table`` as the engine resolves
    names; None when no table of the root has the name (``missing`` are the errors
    saying so)."""
    table = None
    for name in scan.names():
        try:
            table = open_table(name)
            break
        except missing:
            continue
    if table is None:
        return None
    snap = table.snapshot()
    files = tuple(snap.candidate_files(scan.pruning_filter(snap.schema)))
    records = -1 if scan.filtered else int(sum(f.live_rows for f in files))
    return ScanSource(table, snap, files, records)
