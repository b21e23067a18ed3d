"""DDL and DML statements of the SQL layer, carried out through the catalog and table layers.

DataFusion cannot write Quiver tables, so statements that change or describe the
catalog are recognised on the sqlglot tree (``is_statement``) and executed here
(``run_statement``): CREATE TABLE (with column definitions or AS SELECT), DROP
TABLE, SHOW TABLES, DESCRIBE, INSERT (VALUES or SELECT), DELETE and UPDATE.
Whatever a statement needs to compute (the rows of an INSERT ... SELECT, the rows
a WHERE clause matches, the new values of an UPDATE) is computed by a SELECT
through the engine, so every expression DataFusion knows is available.

Results are one small table: DDL returns a ``result`` string column (``created``,
``exists``, ``dropped``) or, for SHOW TABLES and DESCRIBE, the listing; DML and
CREATE TABLE ... AS SELECT return a ``count`` column with the rows written.

Every check that can fail (names, columns, types, vector lengths) runs before
anything is written, so a failed statement changes nothing. Unquoted identifiers
are folded to lower case, as DataFusion does when it reads them.

Concurrency: DELETE and UPDATE are serializable per table. They find their rows with
a SELECT over the snapshot the engine pinned for the attempt (nested SELECTs share
the pins, so a subquery over the same table reads the same version), then commit by
``_id`` with that read set. When a commit published after the snapshot changed or
deleted a matched row, or added a row the WHERE clause matches (see
``quiver.supertable.conflicts`` for the exact rule), nothing is written and the statement
runs again on the new version, a bounded number of times with jittered backoff;
then ``CommitConflictError``. INSERT ... SELECT and CREATE TABLE ... AS SELECT stream
the query's rows into parts of ``INSERT_PART_ROWS`` rows, built and uploaded as they come
and published in one commit.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from quiver.catalog.connection import is_valid_table_name
from quiver.catalog.errors import quote_short
from quiver.flight_server.sql import analysis
from quiver.flight_server.sql.arrow_types import plain_type
from quiver.flight_server.sql.errors import (
    SqlParameterError,
    SqlPlanError,
    SqlTableNotFoundError,
    unknown_table,
)
from quiver.flight_server.sql.parse import as_node
from quiver.superfile import IndexSpec, IndexSpecError, Metric
from quiver.superfile.spec import is_text_type, vector_dim
from quiver.supertable.conflicts import ReadSet
from quiver.supertable.errors import (
    CommitConflictError,
    TableExistsError,
    TableNotFoundError,
    WriteConflictError,
)
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.staged import StagedAppend
from quiver.supertable.table import Table

log = logging.getLogger(__name__)

# The dialect of SQL handed to the engine: it keeps ``[..]`` array literals and FLOAT as
# a 32-bit type, and is the one statements are parsed with.
DIALECT = "duckdb"

_DT = exp.DataType.Type
_SCALARS: dict[Any, pa.DataType] = {
    _DT.TINYINT: pa.int8(),
    _DT.SMALLINT: pa.int16(),
    _DT.INT: pa.int32(),
    _DT.BIGINT: pa.int64(),
    _DT.UTINYINT: pa.uint8(),
    _DT.USMALLINT: pa.uint16(),
    _DT.UINT: pa.uint32(),
    _DT.UBIGINT: pa.uint64(),
    _DT.FLOAT: pa.float32(),
    _DT.DOUBLE: pa.float64(),
    _DT.TEXT: pa.string(),
    _DT.VARCHAR: pa.string(),
    _DT.CHAR: pa.string(),
    _DT.NVARCHAR: pa.string(),
    _DT.NCHAR: pa.string(),
    _DT.BOOLEAN: pa.bool_(),
    _DT.DATE: pa.date32(),
    _DT.TIMESTAMP: pa.timestamp("us"),
    _DT.TIMESTAMPNTZ: pa.timestamp("us"),
    _DT.DATETIME: pa.timestamp("us"),
    _DT.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    _DT.VARBINARY: pa.binary(),
    _DT.BINARY: pa.binary(),
}
_HALF_FLOATS = ("HALFFLOAT", "FLOAT16")
_OPTIONS = ("fts", "vector", "metric", "vector_codes", "iceberg_version")


# -- results ---------------------------------------------------------------------------------


def _result(text: str) -> pa.Table:
    return pa.table({"result": pa.array([text], pa.string())})


def _count(n: int) -> pa.Table:
    return pa.table({"count": pa.array([n], pa.int64())})


# -- entry points ----------------------------------------------------------------------------


def is_statement(expr: exp.Expression) -> bool:
    """True for the statements ``run_statement`` carries out (or rejects with a reason):
    every CREATE, DROP, INSERT, DELETE and UPDATE, SHOW TABLES and DESCRIBE of a table
    (``quiver.flight_server.sql.analysis`` tells them apart)."""
    return analysis.carried_out(expr)


def run_statement(engine: Any, expr: exp.Expression) -> pa.Table:
    """Executes one statement against ``engine.connection``; SELECTs it needs go through
    ``engine.execute``. Returns the statement's small result table."""
    if isinstance(expr, exp.Create):
        return _create(engine, expr)
    if isinstance(expr, exp.Drop):
        return _drop(engine, expr)
    if isinstance(expr, exp.Show) and expr.name.upper() == "TABLES":
        return pa.table({"table_name": pa.array(engine.connection.list_tables(), pa.string())})
    if isinstance(expr, exp.Describe) and isinstance(expr.this, exp.Table):
        return _describe(_open(engine, expr.this))
    if isinstance(expr, exp.Insert):
        return _insert(engine, expr)
    if isinstance(expr, exp.Delete):
        return _delete(engine, expr)
    if isinstance(expr, exp.Update):
        return _update(engine, expr)
    raise SqlPlanError(f"not a statement this engine carries out: {expr.sql(dialect=DIALECT)}")


def result_schema(engine: Any, expr: exp.Expression) -> pa.Schema:
    """The schema ``run_statement`` will return for ``expr``, without carrying it out."""
    if isinstance(expr, exp.Insert | exp.Delete | exp.Update):
        return _count(0).schema
    if isinstance(expr, exp.Create | exp.Drop):
        return _result("").schema
    if isinstance(expr, exp.Show):
        return pa.schema([pa.field("table_name", pa.string())])
    if isinstance(expr, exp.Describe) and isinstance(expr.this, exp.Table):
        return _describe(_open(engine, expr.this)).schema
    raise SqlPlanError(f"not a statement this engine carries out: {expr.sql(dialect=DIALECT)}")


# -- names -----------------------------------------------------------------------------------


def _ident(node: exp.Expression) -> str:
    """The name an identifier stands for: as written when quoted, else lower case."""
    if isinstance(node, exp.Identifier):
        return node.name if node.quoted else node.name.lower()
    if isinstance(node, exp.Column | exp.Table) and isinstance(node.this, exp.Identifier):
        return _ident(node.this)
    return node.name


def _table_name(table: exp.Table) -> str:
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise SqlPlanError(f"expected a table name, got {table.sql(dialect=DIALECT)!r}")
    if table.args.get("db") or table.args.get("catalog"):
        raise SqlPlanError(
            f"qualified table names are not supported: {table.sql(dialect=DIALECT)!r}")
    return _ident(table.this)


def _resolve_table(engine: Any, table: exp.Table) -> str | None:
    """The catalog name ``table`` refers to, or None when there is no such table. An
    unquoted name also finds a table whose name differs only in case."""
    name = _table_name(table)
    names = engine.connection.list_tables()
    if name in names:
        return name
    if not table.this.quoted:
        folded = [n for n in names if n.lower() == name]
        if len(folded) == 1:
            return folded[0]
    return None


def _open(engine: Any, table: exp.Table) -> Table:
    exact = _table_name(table)
    if is_valid_table_name(exact):
        # The name as written is the one ``_resolve_table`` prefers: one catalog read
        # instead of listing the catalog (every INSERT comes here).
        try:
            return engine.connection.open_table(exact)
        except TableNotFoundError:
            pass
    name = _resolve_table(engine, table)
    if name is None:
        raise unknown_table(_table_name(table), engine.connection.list_tables())
    try:
        return engine.connection.open_table(name)
    except TableNotFoundError as exc:
        raise SqlTableNotFoundError(
            f"unknown table {quote_short(name)} (dropped meanwhile)") from exc


def _column(schema: pa.Schema, node: exp.Expression, table: str) -> str:
    """The table column a column reference names."""
    if isinstance(node, exp.Column):
        node = node.this
    name = _ident(node)
    if name == ID_COLUMN:
        raise SqlPlanError(f"{ID_COLUMN!r} is assigned by the table and cannot be written")
    if name in schema.names:
        return name
    if not (isinstance(node, exp.Identifier) and node.quoted):
        folded = [n for n in schema.names if n.lower() == name]
        if len(folded) == 1:
            return folded[0]
    raise SqlPlanError(f"table {table!r} has no column {name!r}; columns are {schema.names}")


def _text(query: exp.Expression) -> str:
    """SQL text of a query for the engine. Function names go out in lower case:
    sqlglot writes the functions it knows by its own upper-case names, and DataFusion
    looks table functions up by their exact (lower-case) names."""
    if any(True for _ in query.find_all(exp.HexString)):
        # sqlglot writes X'..' as UNHEX(..), which DataFusion lacks; decode(.., 'hex') it has.
        query = query.transform(lambda n: exp.Anonymous(
            this="decode", expressions=[exp.Literal.string(n.this), exp.Literal.string("hex")])
            if isinstance(n, exp.HexString) else n)
    return query.sql(dialect=DIALECT, normalize_functions="lower")


def _quoted(name: str) -> exp.Column:
    return exp.column(exp.to_identifier(name, quoted=True))


# -- types -----------------------------------------------------------------------------------


def arrow_type(kind: exp.DataType) -> pa.DataType:
    """The Arrow type of a SQL column type; FLOAT[n] is a vector, T[] a list."""
    if kind.this == _DT.ARRAY:
        if not kind.expressions:
            raise SqlPlanError(f"array type {kind.sql(dialect=DIALECT)} has no element type")
        size = kind.args.get("values")
        element = kind.expressions[0]
        if (size and element.this == _DT.USERDEFINED
                and str(element.args.get("kind") or "").upper() in _HALF_FLOATS):
            # Half floats exist here only as vector elements: an indexed HALFFLOAT[n] is
            # stored as FLOAT[n] (IndexSpec.stored_schema), as a bulk ingest of float16 is.
            inner = pa.float16()
        else:
            inner = arrow_type(element)
        if not size:
            return pa.list_(inner)
        try:
            n = int(size[0].name)
        except ValueError:
            n = 0
        if n <= 0:
            raise SqlPlanError(f"array size must be a positive integer: "
                               f"{kind.sql(dialect=DIALECT)}")
        return pa.list_(inner, n)
    if kind.this == _DT.DECIMAL:
        params = [int(p.name) for p in kind.expressions] or [18, 3]
        precision, scale = [*params, 0][:2]
        return pa.decimal128(precision, scale)
    try:
        return _SCALARS[kind.this]
    except KeyError:
        raise SqlPlanError(
            f"unsupported column type {kind.sql(dialect=DIALECT)}; use BIGINT, INT, SMALLINT, "
            "TINYINT, DOUBLE, FLOAT, DECIMAL, VARCHAR, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ, "
            "BLOB, FLOAT[n] (a vector; DOUBLE[n] and HALFFLOAT[n] are stored as FLOAT[n] when "
            "indexed) or T[] (a list)") from None


def sql_type(t: pa.DataType) -> str:
    """How DESCRIBE shows an Arrow type, in the spelling CREATE TABLE accepts."""
    names = {pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INT",
             pa.int64(): "BIGINT", pa.uint8(): "UTINYINT", pa.uint16(): "USMALLINT",
             pa.uint32(): "UINTEGER", pa.uint64(): "UBIGINT", pa.float32(): "FLOAT",
             pa.float64(): "DOUBLE", pa.string(): "VARCHAR", pa.large_string(): "VARCHAR",
             pa.bool_(): "BOOLEAN", pa.date32(): "DATE", pa.binary(): "BLOB",
             pa.large_binary(): "BLOB"}
    if t in names:
        return names[t]
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_fixed_size_list(t):
        return f"{sql_type(t.value_type)}[{t.list_size}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{sql_type(t.value_type)}[]"
    return str(t).upper()


def _text_vectors(values: pa.Array, column: str) -> pa.Array:
    """Parses vectors written as text, '[0.1, 0.2, ...]', into lists of float32."""
    parts = pc.split_pattern(pc.utf8_trim(values.cast(pa.string()), characters="[] \t\n"),
                             pattern=",")
    items = pc.utf8_trim_whitespace(parts.values)
    try:
        numbers = items.cast(pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise SqlPlanError(f"column {column!r} is a vector: text values must look like "
                           "'[0.5, 1.0, ...]'") from None
    return pa.ListArray.from_arrays(parts.offsets, numbers, mask=parts.is_null())


def coerce(values: pa.Array | pa.ChunkedArray, field: pa.Field, table: str) -> pa.Array:
    """``values`` as ``field`` stores them; a precise ``SqlPlanError`` when they do not fit."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    src, dst = values.type, field.type
    if pa.types.is_string_view(src) or pa.types.is_large_string(src):
        values, src = values.cast(pa.string()), pa.string()
    if pa.types.is_fixed_size_list(dst):
        if pa.types.is_string(src):
            values, src = _text_vectors(values, field.name), pa.list_(pa.float32())
        if pa.types.is_null(src):
            values = pa.nulls(len(values), dst)
        elif (pa.types.is_list(src) or pa.types.is_large_list(src)
              or pa.types.is_fixed_size_list(src) or pa.types.is_list_view(src)):
            lengths = pc.list_value_length(values)
            wrong = pc.filter(lengths, pc.not_equal(lengths, dst.list_size))
            if len(wrong):
                raise SqlPlanError(
                    f"column {field.name!r} of table {table!r} holds {sql_type(dst)} "
                    f"({dst.list_size} values); got a value of {wrong[0].as_py()} values")
        else:
            raise SqlPlanError(f"cannot store {sql_type(src)} values in column {field.name!r} "
                               f"({sql_type(dst)}) of table {table!r}")
    try:
        out = values.cast(dst)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise SqlPlanError(f"cannot store {sql_type(src)} values in column {field.name!r} "
                           f"({sql_type(dst)}) of table {table!r}: {exc}") from None
    if not field.nullable and out.null_count:
        raise SqlPlanError(f"column {field.name!r} of table {table!r} is NOT NULL; "
                           f"{out.null_count} row(s) have no value for it")
    return out


# -- CREATE / DROP / DESCRIBE ----------------------------------------------------------------


def _option_value(prop: exp.Property) -> list[str]:
    value = prop.args.get("value")
    items = value.expressions if isinstance(value, exp.Tuple | exp.Array) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, exp.Literal | exp.Identifier | exp.Column | exp.Var):
            raise SqlPlanError(f"option {prop.name!r} needs a string, e.g. {prop.name} = 'a,b'")
        out += [p.strip() for p in item.name.split(",") if p.strip()]
    return out


def _options(props: exp.Properties | None) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for prop in props.expressions if props is not None else []:
        if type(prop) is not exp.Property:
            raise SqlPlanError(f"unsupported table property {prop.sql(dialect=DIALECT)!r}; "
                               f"options are WITH ({', '.join(f'{o} = ...' for o in _OPTIONS)})")
        key = prop.name.lower()
        if key not in _OPTIONS:
            raise SqlPlanError(f"unknown table option {prop.name!r}; options are "
                               f"{list(_OPTIONS)}")
        options[key] = _option_value(prop)
    return options


def _spec_column(schema: pa.Schema, name: str) -> str:
    if name in schema.names:
        return name
    folded = [n for n in schema.names if n.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise SqlPlanError(f"index option names column {name!r}, which is not among "
                       f"{schema.names}")


def index_spec(schema: pa.Schema, options: dict[str, list[str]]) -> IndexSpec:
    """The index spec of ``WITH (fts = 'a,b', vector = 'v[:metric],...', metric = 'm',
    vector_codes = 'pq' | 'v:pq,...')``.

    An option left out takes its default (BM25 on every string column; a vector index on
    every FLOAT[n] column); an empty one (``fts = ''``) means none. ``metric`` applies to
    vector columns named without one; cosine unless given."""
    try:
        default = Metric.parse(options["metric"][0]) if options.get("metric") else Metric.COSINE
        if len(options.get("metric", [])) > 1:
            raise SqlPlanError("option 'metric' takes one metric; give per-column metrics as "
                               "vector = 'col:metric'")
        if "fts" in options:
            fts = [_spec_column(schema, c) for c in options["fts"]]
        else:
            fts = [f.name for f in schema if is_text_type(f.type)]
        if "vector" in options:
            vector: dict[str, str | Metric] = {}
            for item in options["vector"]:
                col, _, metric = item.partition(":")
                vector[_spec_column(schema, col.strip())] = (
                    Metric.parse(metric.strip()) if metric.strip() else default)
        else:
            vector = {f.name: default for f in schema if vector_dim(f.type) is not None}
        codes: dict[str, str] = {}
        for item in options.get("vector_codes", []):
            # 'pq' applies to every vector column; 'col:pq' to one.
            col, sep, kind = item.rpartition(":")
            targets = [_spec_column(schema, col.strip())] if sep else list(vector)
            codes.update({c: kind.strip().lower() for c in targets})
        spec = IndexSpec.of(fts=fts, vector=vector, vector_codes=codes)
        spec.validate(schema)
    except IndexSpecError as exc:
        raise SqlPlanError(str(exc)) from None
    return spec


def iceberg_version(options: dict[str, list[str]]) -> int | None:
    """The Iceberg format version of ``WITH (iceberg_version = 3)``; None when not given."""
    if "iceberg_version" not in options:
        return None
    given = options["iceberg_version"]
    if len(given) != 1 or given[0] not in ("2", "3"):
        raise SqlPlanError(f"option 'iceberg_version' takes 2 or 3, got {', '.join(given)!r}")
    return int(given[0])


def _schema_of(defs: Sequence[exp.Expression]) -> pa.Schema:
    fields = []
    for d in defs:
        if not isinstance(d, exp.ColumnDef) or d.args.get("kind") is None:
            raise SqlPlanError(f"expected 'name TYPE' in CREATE TABLE, got "
                               f"{d.sql(dialect=DIALECT)!r}")
        nullable = True
        for c in d.args.get("constraints") or []:
            if isinstance(c.args.get("kind"), exp.NotNullColumnConstraint):
                nullable = False
            else:
                raise SqlPlanError(f"unsupported column constraint {c.sql(dialect=DIALECT)!r} "
                                   f"on {d.name!r}; only NOT NULL is supported")
        fields.append(pa.field(_ident(d.this), arrow_type(d.args["kind"]), nullable))
    return _checked_schema(pa.schema(fields))


def _checked_schema(schema: pa.Schema) -> pa.Schema:
    if ID_COLUMN in schema.names:
        raise SqlPlanError(f"{ID_COLUMN!r} is reserved for the hidden row id; "
                           "name the column differently")
    dupes = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dupes:
        raise SqlPlanError(f"duplicate column name(s) {dupes}")
    if not schema.names:
        raise SqlPlanError("a table needs at least one column")
    return schema


def _create(engine: Any, expr: exp.Create) -> pa.Table:
    kind = str(expr.args.get("kind") or "").upper()
    if kind != "TABLE":
        raise SqlPlanError(f"CREATE {kind} is not supported; only CREATE TABLE")
    _reject(expr, "CREATE TABLE", "clone", "indexes", "with_")
    if expr.args.get("replace"):
        raise SqlPlanError("CREATE OR REPLACE TABLE is not supported; DROP TABLE first")
    target = expr.this
    defs = target.expressions if isinstance(target, exp.Schema) else []
    table_expr = target.this if isinstance(target, exp.Schema) else target
    name = _table_name(table_expr)
    if_not_exists = bool(expr.args.get("exists"))
    options = _options(expr.args.get("properties"))
    query = expr.expression
    if query is None:
        schema = _schema_of(defs)
        spec = index_spec(schema, options)
        try:
            engine.connection.create_table(name, schema, spec=spec,
                                           iceberg_version=iceberg_version(options))
        except TableExistsError:
            if if_not_exists:
                return _result("exists")
            raise
        log.info("created table %r with %d columns", name, len(schema))
        return _result("created")
    if defs:
        raise SqlPlanError("CREATE TABLE ... AS SELECT takes its columns from the query; "
                           "leave out the column list")
    if if_not_exists and _resolve_table(engine, table_expr) is not None:
        return _result("exists")
    return _create_as(engine, name, query, options, if_not_exists)


def _create_as(engine: Any, name: str, query: exp.Expression,
               options: dict[str, list[str]], if_not_exists: bool) -> pa.Table:
    rows = engine.sql(_text(query))
    schema = _checked_schema(pa.schema([pa.field(f.name, plain_type(f.type))
                                        for f in rows.schema]))
    spec = index_spec(schema, options)
    # The table is filled before it is named, so no one ever sees it without its rows;
    # the rows stream into it in parts, so memory holds one part at a time.
    table = engine.connection.create_staged(name, schema, spec=spec,
                                            iceberg_version=iceberg_version(options))
    try:
        written = _append(table, schema.names, rows, exclusive=True)
        engine.connection.publish_staged(table)
    except BaseException as exc:
        engine.connection.discard_staged(table)
        if isinstance(exc, TableExistsError) and if_not_exists:
            return _result("exists")
        raise
    count = written.column(0)[0].as_py()
    log.info("created table %r from a query with %d rows", name, count)
    return written


def _drop(engine: Any, expr: exp.Drop) -> pa.Table:
    kind = str(expr.args.get("kind") or "").upper()
    if kind != "TABLE":
        raise SqlPlanError(f"DROP {kind} is not supported; only DROP TABLE")
    if_exists = bool(expr.args.get("exists"))
    targets = expr.args.get("tables") or [expr.this]
    names = []
    for t in targets:
        found = _resolve_table(engine, t)
        if found is None and not if_exists:
            raise unknown_table(_table_name(t), engine.connection.list_tables())
        if found is not None:
            names.append(found)
    for name in names:
        engine.connection.drop_table(name, missing_ok=True)
        log.info("dropped table %r", name)
    return _result("dropped" if names else "not found")


def _describe(table: Table) -> pa.Table:
    spec = table.spec
    schema = table.schema
    index = [("bm25" if f.name in spec.fts else
              f"vector({spec.vector[f.name]})" if f.name in spec.vector else None)
             for f in schema]
    return pa.table({
        "column_name": pa.array(schema.names, pa.string()),
        "data_type": pa.array([sql_type(f.type) for f in schema], pa.string()),
        "is_nullable": pa.array(["YES" if f.nullable else "NO" for f in schema], pa.string()),
        "index": pa.array(index, pa.string()),
    })


# -- INSERT / DELETE / UPDATE ----------------------------------------------------------------


def _reject(expr: exp.Expression, what: str, *args: str) -> None:
    for arg in args:
        if expr.args.get(arg):
            raise SqlPlanError(f"{what} with {arg.rstrip('_').upper()} is not supported")


def _insert_target(engine: Any, expr: exp.Insert) -> tuple[Table, list[str]]:
    """The table an INSERT writes and the columns its rows fill, in order."""
    _reject(expr, "INSERT", "with_", "overwrite", "alternative", "returning", "conflict",
            "ignore", "partition", "by_name", "where", "using", "default")
    target = expr.this
    table = _open(engine, target.this if isinstance(target, exp.Schema) else target)
    schema = table.schema
    if not isinstance(target, exp.Schema):
        return table, list(schema.names)
    names = [_column(schema, c, table.name) for c in target.expressions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SqlPlanError(f"column(s) {dupes} named more than once in INSERT")
    return table, names


def _append(table: Table, names: list[str],
            rows: pa.Table | pa.RecordBatchReader, *, exclusive: bool = False) -> pa.Table:
    """Appends ``rows`` (one column per name, in order), coerced to the table's types;
    columns not named are null. A stream is built and uploaded in parts of about
    ``INSERT_PART_ROWS`` rows as it is read and published in one commit (``exclusive``:
    the table is one nobody else sees yet, being created)."""
    if len(rows.schema.names) != len(names):
        raise SqlPlanError(f"INSERT into {table.name!r} names {len(names)} column(s) but the "
                           f"query gives {len(rows.schema.names)}")
    if isinstance(rows, pa.Table) and rows.num_rows <= INSERT_PART_ROWS:
        # One part: an ordinary append, which shares its commit with concurrent ones.
        table.append(_fitted(table, names, rows))
        return _count(rows.num_rows)
    batches = rows.to_batches() if isinstance(rows, pa.Table) else rows
    staged = StagedAppend(table, exclusive=exclusive)
    with staged:
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in batches:
            offset = 0
            while offset < batch.num_rows:
                piece = batch.slice(offset, INSERT_PART_ROWS - count)
                offset += piece.num_rows
                pending.append(piece)
                count += piece.num_rows
                if count >= INSERT_PART_ROWS:
                    staged.add(_fitted(table, names,
                                       pa.Table.from_batches(pending, rows.schema)))
                    pending, count = [], 0
        if count:
            staged.add(_fitted(table, names, pa.Table.from_batches(pending, rows.schema)))
        staged.commit()
    return _count(staged.rows)


def _fitted(table: Table, names: list[str], rows: pa.Table) -> pa.Table:
    schema = table.schema
    given = dict(zip(names, range(len(names)), strict=True))
    columns = [coerce(rows.column(given[f.name]), f, table.name) if f.name in given
               else coerce(pa.nulls(rows.num_rows), f, table.name) for f in schema]
    return pa.table(columns, schema=schema)


def _insert(engine: Any, expr: exp.Insert) -> pa.Table:
    table, names = _insert_target(engine, expr)
    query = expr.expression
    if isinstance(query, exp.Values):
        width = {len(row.expressions) for row in query.expressions if isinstance(row, exp.Tuple)}
        if width - {len(names)}:
            raise SqlPlanError(f"INSERT into {table.name!r} names {len(names)} column(s) but "
                               f"a VALUES row has {sorted(width - {len(names)})[0]}")
        vectors = [i for i, n in enumerate(names)
                   if pa.types.is_fixed_size_list(table.schema.field(n).type)]
        literal = None if vectors else _literal_rows(query, names)
        if literal is not None:
            return _append(table, names, literal)
        sql = f"SELECT * FROM ({_text(_vector_literals_as_text(query, vectors))}) AS __values"
    elif query is not None:
        sql = _text(query)
    else:
        raise SqlPlanError("INSERT needs VALUES or a SELECT")
    return _append(table, names, engine.sql(sql))


def _literal_value(node: exp.Expression) -> tuple[bool, Any]:
    """(True, value) for a string, integer, boolean or NULL literal; (False, None) else."""
    if isinstance(node, exp.Null):
        return True, None
    if isinstance(node, exp.Boolean):
        return True, bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return True, node.this
        text = _number(node)
        return (True, int(text)) if text is not None and text.isdigit() else (False, None)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        text = _number(node)
        return (True, int(text)) if text is not None and text[1:].isdigit() else (False, None)
    return False, None


def _literal_rows(values: exp.Values, names: list[str]) -> pa.Table | None:
    """The rows of a VALUES list of plain literals, typed as the SQL engine types them
    (integers BIGINT, strings VARCHAR), without planning a query; None for anything
    else (expressions, decimals, columns mixing kinds), which the engine evaluates."""
    columns: list[list[Any]] = [[] for _ in names]
    for row in values.expressions:
        if not isinstance(row, exp.Tuple):
            return None
        for column, node in zip(columns, row.expressions, strict=True):
            ok, value = _literal_value(node)
            if not ok:
                return None
            column.append(value)
    arrays = []
    for column in columns:
        kinds = {type(v) for v in column if v is not None}
        if len(kinds) > 1:
            return None
        try:
            arrays.append(pa.array(column, pa.int64() if kinds == {int} else None))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
    return pa.Table.from_arrays(arrays, names=names)


def insert_parameter_rows(engine: Any, expr: exp.Expression,
                          params: pa.Table | pa.RecordBatch) -> pa.Table | None:
    """Carries out ``INSERT INTO t [(cols)] VALUES (?, ?, …)`` for every parameter row at
    once, as one append, when the VALUES row is nothing but placeholders; None for any
    other statement (the caller then binds row by row)."""
    if not isinstance(expr, exp.Insert) or not isinstance(expr.expression, exp.Values):
        return None
    tuples = expr.expression.expressions
    if len(tuples) != 1 or not isinstance(tuples[0], exp.Tuple):
        return None
    items = tuples[0].expressions
    if not items or not all(isinstance(i, exp.Placeholder) for i in items):
        return None
    numbered = [i.this for i in items]
    if all(n is None for n in numbered):
        order = list(range(len(items)))
    elif all(isinstance(n, int | str) and str(n).isdigit() for n in numbered):
        order = [int(n) - 1 for n in numbered]
    else:
        return None
    if params.num_columns != max(order) + 1 or min(order) < 0:
        raise SqlParameterError(f"the statement takes {max(order) + 1} parameter(s), "
                                f"{params.num_columns} given")
    table, names = _insert_target(engine, expr)
    if len(items) != len(names):
        raise SqlPlanError(f"INSERT into {table.name!r} names {len(names)} column(s) but "
                           f"a VALUES row has {len(items)}")
    rows = pa.Table.from_arrays([params.column(i) for i in order], names=names)
    return _append(table, names, rows)


def _number(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Neg):
        inner = _number(node.this)
        return None if inner is None else f"-{inner}"
    if isinstance(node, exp.Literal) and not node.is_string:
        return node.this
    return None


def _vector_literals_as_text(values: exp.Values, positions: list[int]) -> exp.Values:
    """VALUES whose vector columns hold array literals written as text ('[..]'), so rows
    may mix both spellings (a VALUES column has one type) and are parsed alike."""
    if not positions:
        return values
    values = values.copy()
    for row in values.expressions:
        if not isinstance(row, exp.Tuple):
            continue
        for i in positions:
            item = row.expressions[i]
            if isinstance(item, exp.Array):
                numbers = [_number(x) for x in item.expressions]
                known = [n for n in numbers if n is not None]
                if len(known) == len(numbers):
                    item.replace(exp.Literal.string(f"[{', '.join(known)}]"))
    return values


def _matching(table_expr: exp.Table, where: exp.Where | None,
              using: Sequence[exp.Expression] | None, projection: list[exp.Expression],
              ) -> exp.Select:
    select = exp.select(*projection).from_(table_expr.copy())
    for other in using or []:
        select = select.join(other.copy(), join_type="cross")
    if where is not None:
        select = select.where(where.this.copy())
    return select


def _delete(engine: Any, expr: exp.Delete) -> pa.Table:
    _reject(expr, "DELETE", "with_", "returning", "limit", "order", "cluster", "tables")
    table_expr = expr.this
    table = _open(engine, table_expr)
    using = expr.args.get("using")
    id_col = exp.column(exp.to_identifier(ID_COLUMN, quoted=True),
                        table=exp.to_identifier(table_expr.alias_or_name) if using else None)
    select = _matching(table_expr, expr.args.get("where"), using, [id_col])
    if using:
        # A row joined to several rows of the USING tables is still one row to delete.
        select = select.distinct()

    def attempt() -> int:
        version = engine.pin(table.name).version
        ids = engine.execute(_text(select)).column(0).combine_chunks()
        if len(ids) == 0:
            return 0
        ids = ids.cast(pa.int64())
        read = _read_set(engine, table, expr, select, version, ids)
        return table.delete(pc.field(ID_COLUMN).isin(ids), read=read)

    return _count(_serializable(engine, table, attempt))


def _update(engine: Any, expr: exp.Update) -> pa.Table:
    _reject(expr, "UPDATE", "from_", "from", "returning", "limit", "order", "with_")
    table_expr = expr.this
    table = _open(engine, table_expr)
    schema = table.schema
    values: dict[str, exp.Expression] = {}
    for item in expr.expressions:
        if not isinstance(item, exp.EQ) or not isinstance(item.this, exp.Column):
            raise SqlPlanError(f"UPDATE needs 'column = expression', got "
                               f"{item.sql(dialect=DIALECT)!r}")
        name = _column(schema, item.this, table.name)
        if name in values:
            raise SqlPlanError(f"column {name!r} is set more than once in UPDATE")
        values[name] = item.expression
    projection: list[exp.Expression] = [_quoted(ID_COLUMN)]
    for name in schema.names:
        if name in values:
            projection.append(as_node(exp.alias_(values[name].copy(),
                                                 exp.to_identifier(name, quoted=True))))
        else:
            projection.append(_quoted(name))
    where = expr.args.get("where")
    select = _matching(table_expr, where, None, projection)
    ids_only = _matching(table_expr, where, None, [_quoted(ID_COLUMN)])

    def attempt() -> int:
        version = engine.pin(table.name).version
        rows = engine.execute(_text(select))
        if rows.num_rows == 0:
            return 0
        ids = coerce(rows.column(0), pa.field(ID_COLUMN, pa.int64(), False), table.name)
        columns = [coerce(rows.column(i + 1), f, table.name) for i, f in enumerate(schema)]
        new = pa.table([ids, *columns],
                       schema=pa.schema([pa.field(ID_COLUMN, pa.int64(), False), *schema]))
        read = _read_set(engine, table, expr, ids_only, version, ids)
        return table.replace_rows(new, read=read)

    return _count(_serializable(engine, table, attempt))


# -- serializable writes ---------------------------------------------------------------------

# Rows of an INSERT ... SELECT built into superfiles at a time.
INSERT_PART_ROWS = 131_072
# How often a DELETE or UPDATE is run again after a concurrent commit changed rows it read.
WRITE_ATTEMPTS = 24
_RETRY_BASE_S = 0.004
_RETRY_CAP_S = 0.25


def _serializable(engine: Any, table: Table, attempt: Callable[[], int]) -> int:
    """Runs one DELETE or UPDATE attempt after another until one commits without a write
    conflict; each attempt reads the tables anew, so its WHERE clause is evaluated again on
    the newer version. ``CommitConflictError`` after ``WRITE_ATTEMPTS``."""
    for n in range(1, WRITE_ATTEMPTS + 1):
        with engine.fresh_pins():
            try:
                return attempt()
            except WriteConflictError as exc:
                log.debug("write to %r conflicted (attempt %d): %s", table.name, n, exc)
        delay = min(_RETRY_CAP_S, _RETRY_BASE_S * 2 ** min(n, 8))
        time.sleep(delay * random.uniform(0.5, 1.5))
    raise CommitConflictError(
        f"a write to table {table.name!r} conflicted with concurrent writes to the same rows "
        f"{WRITE_ATTEMPTS} times in a row; retry it later")


def _read_set(engine: Any, table: Table, expr: exp.Expression, ids_select: exp.Select,
              version: int, ids: pa.Array) -> ReadSet:
    """What the statement read, for the commit to validate: the matched rows, and its
    WHERE clause for rows that newer commits add."""
    matched = ids.to_numpy(zero_copy_only=False)
    refs = [t for t in expr.find_all(exp.Table)
            if isinstance(t.this, exp.Identifier) and _ident(t.this).lower() == table.name.lower()]
    if len(refs) > 1:
        # A subquery reads the target table too: what it read is not a set of rows.
        return ReadSet(version, matched, any_change=True)
    if ids_select.args.get("where") is None and not ids_select.args.get("joins"):
        return ReadSet(version, matched, matches_added=lambda _m, _f: True)
    text = _text(ids_select)

    def matches_added(manifest: Any, files: Sequence[Any]) -> bool:
        with engine.fresh_pins():
            found = engine.sql_files(text, table.name, manifest.version,
                                     [f.path for f in files],
                                     table_uuid=manifest.table_uuid).read_all()
        return found.num_rows > 0

    return ReadSet(version, matched, matches_added=matches_added)


def parse(sql: str) -> exp.Expression:
    """Parses one statement in the dialect this module generates (for callers and tests)."""
    return as_node(sqlglot.parse_one(sql, read=DIALECT))
