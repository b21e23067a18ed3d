"""The gate every statement passes before it runs: which statements may run at all, and
which relations and functions they may name.

A statement reaches DataFusion only after sqlglot has read it and this module has
accepted it; text that cannot be read is refused, never handed on as it is. What
is accepted:

- queries: SELECT, WITH, VALUES and set operations over them;
- the statements Quiver carries out itself: CREATE TABLE, DROP TABLE, INSERT,
  UPDATE, DELETE, SHOW TABLES and DESCRIBE of a table;
- EXPLAIN [ANALYZE] [VERBOSE] of a query.

Inside a query a relation is one of the root's tables (resolved by the engine; a
name that is no table of the root is refused there), a CTE of the statement that is
in scope where it is named, ``information_schema.tables`` / ``.columns`` (built from
the catalog), Quiver's search functions, ``iceberg_table`` (tables of the Iceberg
catalogs the operator named, by identifier: ``quiver.flight_server.sql.lake``) or
DataFusion's row generators (``generate_series``, ``range``). Everything else — other
schemas and catalogs, DataFusion's settings, file paths, the engine's internal views —
is refused here, and DataFusion itself is asked to plan with DDL, DML and statements disallowed
(``SQL_OPTIONS``), so a file or object store is reachable only through the
engine's own sources.

Functions whose output grows with an argument are bounded, as DataFusion's memory
pool does not see what an expression allocates: the list forms of ``range`` /
``generate_series`` and ``array_repeat`` take constant sizes of at most
``MAX_LIST_VALUES``, ``lpad`` / ``rpad`` a constant length of at most
``MAX_PAD_LENGTH``; ``repeat`` is replaced by a version that refuses to build more
than ``bounded.MAX_STRING_BYTES`` in one call (``quiver.flight_server.sql.bounded``).
"""

from __future__ import annotations

from collections.abc import Collection

import datafusion
from sqlglot import exp

from quiver.catalog.errors import quote_short
from quiver.flight_server.sql import information
from quiver.flight_server.sql.analysis import Analysis, Shape
from quiver.flight_server.sql.errors import SqlPlanError, SqlSyntaxError
from quiver.flight_server.sql.parse import literal_value, norm

# What the refusal of a statement says may run.
ALLOWED = ("SELECT / WITH / VALUES queries, CREATE TABLE, DROP TABLE, INSERT, UPDATE, "
           "DELETE, SHOW TABLES, DESCRIBE <table>, and EXPLAIN [ANALYZE] of a query")
# Row generators DataFusion provides as table functions: they read nothing.
GENERATORS = frozenset({"generate_series", "range"})
# Most values a list-valued range or array_repeat may produce per row, and the longest
# padding: per batch of rows that is a few hundred MB at most.
MAX_LIST_VALUES = 10_000
MAX_PAD_LENGTH = 10_000
# DataFusion plans only queries: DDL, DML and statements such as SET, COPY, CREATE
# EXTERNAL TABLE or SHOW are refused by its own checks too.
SQL_OPTIONS = (datafusion.SQLOptions().with_allow_ddl(False).with_allow_dml(False)
               .with_allow_statements(False))
# Characters of the engine's internal relation names, never part of a table name.
_INTERNAL_MARKS = ("@", "#")
_INTERNAL_PREFIX = "__quiver"


def check(a: Analysis, table_functions: Collection[str]) -> None:
    """Refuses the statement ``a`` unless it may run (``SqlSyntaxError`` when it cannot be
    read, ``SqlPlanError`` naming what is not allowed)."""
    expr = a.statement.expr
    if expr is None:
        raise SqlSyntaxError(f"cannot read the statement ({a.statement.error or 'syntax error'}"
                             f"); statements allowed are {ALLOWED}")
    if a.shape is Shape.UNSUPPORTED:
        if a.explain:
            raise SqlPlanError(f"EXPLAIN explains a query, not {_kind(expr)}")
        raise SqlPlanError(f"{_kind(expr)} statements are not allowed; statements allowed "
                           f"are {ALLOWED}")
    # Also the queries inside INSERT … SELECT, CREATE TABLE … AS and WHERE subqueries.
    check_query(expr, table_functions)


def check_query(expr: exp.Expression, table_functions: Collection[str]) -> None:
    """Refuses a query naming a relation or function it may not reach."""
    for node in expr.walk():
        if isinstance(node, exp.Table):
            _check_relation(node, table_functions)
        elif isinstance(node, exp.Select) and node.args.get("into") is not None:
            raise SqlPlanError("SELECT … INTO is not allowed; use CREATE TABLE … AS SELECT")
        elif isinstance(node, exp.GenerateSeries) and not isinstance(node.parent, exp.Table):
            _check_generated(node, [node.args.get("start"), node.args.get("end")],
                             node.args.get("step"))
        elif isinstance(node, exp.Anonymous) and node.name.lower() == "array_repeat":
            args = node.expressions
            _check_size(node, args[1] if len(args) > 1 else None, MAX_LIST_VALUES, "count")
        elif isinstance(node, exp.Pad):
            _check_size(node, node.args.get("expression"), MAX_PAD_LENGTH, "length")
        elif isinstance(node, exp.Identifier) and _internal(node.name) and \
                isinstance(node.parent, exp.TableAlias):
            raise SqlPlanError(f"the name {quote_short(node.name)} is reserved")


def _kind(expr: exp.Expression) -> str:
    if isinstance(expr, exp.Command):
        return str(expr.this).upper()
    return type(expr).__name__.upper()


def _internal(name: str) -> bool:
    return any(m in name for m in _INTERNAL_MARKS) or name.lower().startswith(_INTERNAL_PREFIX)


def _check_relation(node: exp.Table, table_functions: Collection[str]) -> None:
    target = node.this
    if isinstance(target, exp.GenerateSeries):
        return
    if isinstance(target, exp.Func):
        # sqlglot knows some names as functions of its own (vector_search): any of the
        # names it reads as that function will do.
        names = ({target.name.lower()} if isinstance(target, exp.Anonymous)
                 else {n.lower() for n in type(target).sql_names()})
        if names & {*table_functions, *GENERATORS}:
            return
        raise SqlPlanError(f"unknown table function {quote_short(target.sql())}; table functions "
                           f"are {', '.join(sorted({*table_functions, *GENERATORS}))}")
    if not isinstance(target, exp.Identifier):
        raise SqlPlanError(f"cannot read from {quote_short(node.sql())}: name a table")
    name = target.name
    if _internal(name):
        raise SqlPlanError(f"unknown table {quote_short(name)}")
    db = node.args.get("db")
    catalog = node.args.get("catalog")
    if isinstance(db, exp.Identifier) and norm(db) == "information_schema" and catalog is None:
        if norm(target) not in information.RELATIONS:
            raise SqlPlanError(f"information_schema.{quote_short(norm(target))} is not available; "
                               "information_schema.tables and .columns are")
        return
    if catalog is not None or (db is not None and norm(db) != "public"):
        raise SqlPlanError(f"unknown table {quote_short(node.sql())}: qualified table names "
                           "are not supported; tables are named without a catalog or schema")


def _check_generated(node: exp.Expression, bounds: list[exp.Expression | None],
                     step: exp.Expression | None) -> None:
    """A list-producing range must have constant integer bounds within the limit."""
    values = [literal_value(b) if b is not None else 0 for b in bounds]
    step_value = literal_value(step) if step is not None else 1
    if not all(isinstance(v, int) for v in [*values, step_value]) or step_value == 0:
        raise SqlPlanError(f"{quote_short(node.sql())}: a list-valued range takes constant integer "
                           "bounds and a non-zero step; as a table function "
                           "(FROM generate_series(…)) it takes any")
    count = abs(values[-1] - values[0]) // abs(step_value) + 1
    if count > MAX_LIST_VALUES:
        raise SqlPlanError(f"{quote_short(node.sql())}: a list-valued range may hold at most "
                           f"{MAX_LIST_VALUES} values; use FROM generate_series(…) for rows")


def _check_size(node: exp.Expression, size: exp.Expression | None, limit: int,
                what: str) -> None:
    value = literal_value(size) if size is not None else None
    if not isinstance(value, int) or value > limit:
        raise SqlPlanError(f"{quote_short(node.sql())}: the {what} must be a constant integer of "
                           f"at most {limit}")
