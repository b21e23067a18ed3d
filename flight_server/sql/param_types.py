"""Parameter types at prepare time: the Arrow type each placeholder is declared with, and
the stand-in each takes while the result schema is planned before any value is bound.

Values are bound as literals (``quiver.flight_server.sql.params``), so the server itself needs
no types; a client does: the Flight SQL JDBC driver makes one Arrow vector per declared
parameter type and only writes Java values of the matching kind into it (a Null-typed
parameter takes nothing but NULL). Each placeholder's type is read from where it stands
in the statement, with sqlglot, over the catalog's table schemas:

- compared with an expression of known type (``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``,
  ``IS [NOT] DISTINCT FROM``, ``IN (…)``, ``BETWEEN … AND …``; either side): that type.
  A column's type comes from the table (or search function, CTE or derived table) it
  names in the enclosing SELECT, UPDATE or DELETE, or an outer one; literals, CASTs,
  counts, sums, averages and the common string functions have their own types.
- ``LIKE`` / ``ILIKE`` patterns: text.
- stored: ``INSERT INTO t [(cols)] VALUES (?, …)`` and ``INSERT … SELECT ?, …`` take the
  target column's type by position, ``UPDATE t SET c = ?`` the column's.
- ``CAST(? AS T)`` / ``?::T``: T. ``LIMIT ?`` / ``OFFSET ?``, lengths and counts of
  ``lpad``/``rpad``/``array_repeat``/``range``: BIGINT.
- arithmetic (``c + ?``, ``? * 2``): the wider of the other operand's numeric type and
  the numeric type expected where the expression stands; ``coalesce``/``nullif``/
  ``greatest``/``least``: the other arguments' type, else what is expected there.
- search functions: query text, column and table names and the mode are text, ``k``,
  ``nprobe`` and ``bm25_snippet``'s window BIGINT, a query vector text
  (``'[0.1, 0.2, …]'``).

How a type is declared, so the JDBC driver can bind it and ``params`` can write it back as
a literal: integers, floats, booleans, dates and DECIMAL(p ≤ 38) as they are; text as
utf8, binary as binary; timestamps as ``timestamp[ms]`` with the column's time zone (the
driver writes epoch milliseconds whatever the declared unit; it encodes the wall-clock
time of a ``java.sql.Timestamp`` as if it were UTC, which a zone-less timestamp keeps);
times as ``time32[ms]`` for the same reason. Vector columns (fixed-size float lists) are
declared utf8: every client can bind the text form ``'[0.1, 0.2, …]'`` (the JDBC driver
binds only a ``java.util.List`` into a list vector, which BI tools do not send), and a
client that binds an Arrow list instead is still accepted, since the server does not
hold clients to the declared types.

A placeholder whose type nothing determines (``SELECT ?``, ``? IS NULL``, ``f(?)``) is
declared utf8: every client can send a string there, and the text literal it becomes is
read by DataFusion's coercions where a number or date is needed (``'5' + 1``). A JDBC
``setLong`` on such a parameter is refused by the driver; a CAST in the statement
(``CAST(? AS BIGINT)``) declares the type.

The stand-ins: a placeholder of known type is planned as ``CAST(NULL AS <type>)``, one of
unknown type as ``NULL`` (which fits anywhere); positions where NULL is refused take a
value that costs nothing: a search function's query text a word no index holds, its
``k`` 0, its vector the unit vector of the column's dimension, a length 0. A
placeholder for a search function's table or column name, or a vector whose column
cannot be found, has no stand-in: such a statement's result schema is known only once
values are bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from quiver.flight_server.sql import analysis, functions, gate
from quiver.flight_server.sql import params as sqlbind
from quiver.flight_server.sql import parse as sqlparse
from quiver.flight_server.sql.errors import SqlPlanError, SqlSyntaxError
from quiver.flight_server.sql.parse import norm, unparen
from quiver.flight_server.sql.statements import arrow_type
from quiver.superfile.spec import vector_dim
from quiver.supertable.manifest import ID_COLUMN

TableSchema = Callable[[str, bool], pa.Schema]
"""The user columns of the catalog table a name refers to (the name as written, and
whether it was quoted); raises ``SqlTableNotFoundError`` for an unknown name."""

# Arguments of the scalar search functions, in order (see quiver.flight_server.sql.rewrite).
_SCALAR_SEARCH = {
    "bm25": ("column", "text", "mode"),
    "knn": ("column", "vector", "int", "nprobe"),
    "vector_distance": ("column", "vector"),
    "bm25_snippet": ("column", "text", "words"),
}
# The type of a search function's score (scalar and table forms).
_SCORE = pa.float32()
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ,
                exp.NullSafeNEQ)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod)
_SAME_AS_ARGUMENTS = (exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least)
_TEXT_FUNCTIONS = (exp.Lower, exp.Upper, exp.Trim, exp.Substring, exp.Concat, exp.Initcap)
_MARK = "__quiver_parameter_"
# How deep CTEs and derived tables are followed to a column's type.
_MAX_DEPTH = 8


@dataclass(frozen=True)
class Slot:
    """One parameter: its inferred type (None: nothing says) and the SQL that stands in
    for it while the result schema is planned (None: nothing can; ``fixed``: a value the
    position needs rather than a NULL)."""

    type: pa.DataType | None
    probe: str | None
    fixed: bool = False

    @property
    def declared(self) -> pa.DataType:
        """The type the parameter is declared with (see the module's rules)."""
        return declared_type(self.type)


@dataclass(frozen=True)
class _Guess:
    type: pa.DataType | None = None
    probe: str | None = None  # a stand-in other than a typed NULL
    blind: bool = False  # no stand-in can be planned

    def merged(self, other: _Guess) -> _Guess:
        return _Guess(self.type if self.type is not None else other.type,
                      self.probe if self.probe is not None else other.probe,
                      self.blind or other.blind)


_UNKNOWN = _Guess()


def infer(text: str, table_schema: TableSchema) -> list[Slot]:
    """One ``Slot`` per parameter of ``text`` (parameter ``i`` at index ``i``). Raises
    ``SqlSyntaxError`` when the statement cannot be read, and the lookup's
    ``SqlTableNotFoundError`` when a table the inference needs does not exist."""
    found = sqlbind.placeholders(text)
    count = max((p.index for p in found), default=-1) + 1
    if not count:
        return []
    mark = _MARK
    while mark in text:
        mark += "x"
    # Each placeholder becomes a string literal naming its parameter: the statement then
    # reads as it will once bound, and the literal is found again in the tree.
    marked = sqlbind.substitute(text, [f"'{mark}{i}'" for i in range(count)])
    st = sqlparse.parse(marked)
    if st.expr is None:
        # Refused as the statement is when run; zeros as long as the placeholders keep
        # the positions the parser's message gives.
        plain = sqlbind.substitute(text, ["0" * len(_spelling(found, i))
                                          for i in range(count)])
        gate.check(analysis.analyse(plain), ())
        raise SqlSyntaxError(f"cannot read the statement ({st.error or 'syntax error'})")
    reader = _Reader(table_schema, mark)
    guesses = [_UNKNOWN] * count
    for node in st.expr.find_all(exp.Literal):
        index = reader.parameter(node)
        if index is not None:
            guesses[index] = guesses[index].merged(reader.guess(node))
    return [Slot(g.type, None if g.blind else g.probe or probe_of(g.type),
                 fixed=g.probe is not None) for g in guesses]


def _spelling(found: list[sqlbind.Placeholder], index: int) -> str:
    """How parameter ``index`` is written ("?" when it is not written at all)."""
    for p in found:
        if p.index == index:
            return "?" * (p.end - p.start)
    return "?"


def stand_ins(slots: list[Slot], *, distinct: bool = False) -> list[str] | None:
    """The SQL standing in for each parameter while the result schema is planned; None
    when some parameter has none. ``distinct`` gives the NULLs names that differ: DataFusion
    names an unaliased NULL "NULL" whatever its type, so ``SELECT ?, ?`` would name two
    columns alike, as two equal bound values would."""
    probes = [s.probe for s in slots if s.probe is not None]
    if len(probes) != len(slots):
        return None
    if not distinct:
        return probes
    return [probe if s.fixed else
            f"CAST(CASE WHEN FALSE THEN {i + 1} END AS {_sql_name(s.type) or 'VARCHAR'})"
            for i, (s, probe) in enumerate(zip(slots, probes, strict=True))]


def parameter_schema(slots: list[Slot]) -> pa.Schema:
    """The parameter schema a prepared statement answers: ``$1``, ``$2`` … with the
    declared types, all nullable."""
    return pa.schema([pa.field(f"${i + 1}", s.declared) for i, s in enumerate(slots)])


def declared_type(t: pa.DataType | None) -> pa.DataType:
    """The type a parameter of inferred type ``t`` is declared with."""
    if t is None or pa.types.is_null(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return declared_type(t.value_type)
    if (pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_date32(t)
            or pa.types.is_float32(t) or pa.types.is_float64(t)):
        return t
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_decimal128(t):
        return t
    if pa.types.is_decimal(t):
        return pa.decimal128(t.precision, t.scale) if t.precision <= 38 else pa.float64()
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_timestamp(t):
        return pa.timestamp("ms", tz=t.tz)
    if pa.types.is_time(t):
        return pa.time32("ms")
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t)):
        return pa.binary()
    # Text of every kind, vectors and lists (bound as text), and anything else.
    return pa.string()


_SQL_NAMES = {pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INT",
              pa.int64(): "BIGINT", pa.uint8(): "TINYINT UNSIGNED",
              pa.uint16(): "SMALLINT UNSIGNED", pa.uint32(): "INT UNSIGNED",
              pa.uint64(): "BIGINT UNSIGNED", pa.float32(): "REAL", pa.float64(): "DOUBLE",
              pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN", pa.date32(): "DATE",
              pa.binary(): "BYTEA", pa.time32("ms"): "TIME"}


def probe_of(t: pa.DataType | None) -> str:
    """A NULL of the type a parameter of inferred type ``t`` is declared with (of no
    type when nothing says: a plain NULL fits anywhere)."""
    name = _sql_name(t)
    return f"CAST(NULL AS {name})" if name else "NULL"


def _sql_name(t: pa.DataType | None) -> str | None:
    """DataFusion's name of the type a parameter of inferred type ``t`` is declared with."""
    if t is None:
        return None
    d = declared_type(t)
    if pa.types.is_timestamp(d):
        # DataFusion's TIMESTAMP is zone-less; a zone is compared in UTC all the same.
        return "TIMESTAMP"
    if pa.types.is_decimal(d):
        return f"DECIMAL({d.precision}, {d.scale})"
    return _SQL_NAMES.get(d)


# -- reading the tree -----------------------------------------------------------------------


def _numeric(t: pa.DataType | None) -> bool:
    return t is not None and (pa.types.is_integer(t) or pa.types.is_floating(t)
                              or pa.types.is_decimal(t))


def _wider(a: pa.DataType | None, b: pa.DataType | None) -> pa.DataType | None:
    """The numeric type that holds values of both (one may be None)."""
    if not _numeric(a):
        return b if _numeric(b) else None
    if not _numeric(b):
        return a
    if pa.types.is_floating(a) or pa.types.is_floating(b):
        if pa.types.is_float32(a) and pa.types.is_float32(b):
            return a
        return pa.float64()
    if pa.types.is_decimal(a) or pa.types.is_decimal(b):
        return a if pa.types.is_decimal(a) else b
    assert a is not None and b is not None  # both numeric
    return a if a.bit_width >= b.bit_width else b


def _search_call(node: object) -> tuple[str, list[exp.Expression]] | None:
    """The name and arguments of a call of one of Quiver's search functions."""
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        if name in functions.NAMES or name in _SCALAR_SEARCH:
            return name, list(node.expressions)
        return None
    if isinstance(node, exp.Func):
        names = {n.lower() for n in type(node).sql_names()} & functions.NAMES
        if names:
            args = []
            for key in type(node).arg_types:
                value = node.args.get(key)
                if value is None:
                    break
                args.append(value)
            return names.pop(), args
    return None


def _position(items: list[exp.Expression], node: exp.Expression) -> int | None:
    """Where ``node`` itself (not an equal expression) is in ``items``."""
    return next((i for i, item in enumerate(items) if item is node), None)


def _string(node: exp.Expression) -> str | None:
    node = unparen(node)
    return node.this if isinstance(node, exp.Literal) and node.is_string else None


def _unit_vector(dim: int | None) -> str | None:
    if not dim:
        return None
    return "'[" + ", ".join(["1.0"] + ["0.0"] * (dim - 1)) + "]'"


class _Reader:
    """What one marked statement says about its parameters."""

    def __init__(self, table_schema: TableSchema, mark: str) -> None:
        self.table_schema = table_schema
        self.mark = mark
        self._schemas: dict[tuple[str, bool], pa.Schema] = {}

    def parameter(self, node: exp.Expression) -> int | None:
        """The parameter a marker literal stands for; None for any other node."""
        if isinstance(node, exp.Literal) and node.is_string and node.this.startswith(self.mark):
            digits = node.this[len(self.mark):]
            if digits.isdigit():
                return int(digits)
        return None

    def table(self, name: str, quoted: bool) -> pa.Schema:
        key = (name, quoted)
        if key not in self._schemas:
            self._schemas[key] = self.table_schema(name, quoted)
        return self._schemas[key]

    # -- what a position expects --------------------------------------------------------------

    def guess(self, node: exp.Expression, depth: int = 0) -> _Guess:
        """What the value at ``node`` must be, from the expression it stands in."""
        child, parent = node, node.parent
        while isinstance(parent, exp.Paren | exp.Neg):
            child, parent = parent, parent.parent
        if parent is None or depth > _MAX_DEPTH:
            return _UNKNOWN
        if isinstance(parent, exp.Cast) and child is parent.this:
            return _Guess(self._cast_type(parent))
        if isinstance(parent, exp.Limit | exp.Offset | exp.Fetch):
            return _Guess(pa.int64())
        call = _search_call(parent)
        position = _position(call[1], child) if call is not None else None
        if call is not None and position is not None:
            return self._search_argument(call, position)
        if isinstance(parent, exp.Pad):
            if child is parent.args.get("expression"):
                return _Guess(pa.int64(), "0")
            return _Guess(pa.string()) if child is parent.args.get("fill_pattern") else _UNKNOWN
        if isinstance(parent, exp.Anonymous) and parent.name.lower() == "array_repeat":
            if len(parent.expressions) > 1 and child is parent.expressions[1]:
                return _Guess(pa.int64(), "0")
            return _UNKNOWN
        if isinstance(parent, exp.GenerateSeries):
            return _Guess(pa.int64(), "1" if child is parent.args.get("step") else "0")
        if isinstance(parent, _COMPARISONS):
            other = parent.expression if child is parent.this else parent.this
            return _Guess(self.type_of(other, depth + 1))
        if isinstance(parent, exp.Like | exp.ILike):
            if child is parent.this:
                return _Guess(pa.string())
            return _Guess(self.type_of(parent.this, depth + 1) or pa.string())
        if isinstance(parent, exp.In):
            if child is parent.this:
                return _Guess(self._first_type(parent.expressions, depth))
            return _Guess(self.type_of(parent.this, depth + 1))
        if isinstance(parent, exp.Between):
            if child is parent.this:
                return _Guess(self._first_type([parent.args.get("low"),
                                                parent.args.get("high")], depth))
            return _Guess(self.type_of(parent.this, depth + 1))
        if isinstance(parent, _ARITHMETIC):
            other = parent.expression if child is parent.this else parent.this
            expected = self.guess(parent, depth + 1).type
            return _Guess(_wider(self.type_of(other, depth + 1), expected))
        if isinstance(parent, _SAME_AS_ARGUMENTS):
            others = [a for a in (parent.this, *parent.expressions,
                                  parent.args.get("expression")) if a is not None]
            known = self._first_type([a for a in others if a is not child], depth)
            return _Guess(known if known is not None else self.guess(parent, depth + 1).type)
        if isinstance(parent, exp.Tuple) and isinstance(parent.parent, exp.Values):
            return self._stored(parent.parent.parent, _position(parent.expressions, child))
        if isinstance(parent, exp.Alias) and isinstance(parent.parent, exp.Select):
            child, parent = parent, parent.parent
        if isinstance(parent, exp.Select):
            return self._stored(parent.parent, _position(parent.expressions, child))
        return _UNKNOWN

    def _cast_type(self, cast: exp.Cast) -> pa.DataType | None:
        try:
            return arrow_type(cast.args["to"])
        except (SqlPlanError, ValueError, KeyError):
            return None

    def _first_type(self, nodes: list[exp.Expression | None], depth: int) -> pa.DataType | None:
        for n in nodes:
            t = self.type_of(n, depth + 1) if n is not None else None
            if t is not None:
                return t
        return None

    def _stored(self, insert: object, position: int | None) -> _Guess:
        """The type of the column the ``position``-th value of an INSERT row fills."""
        if not isinstance(insert, exp.Insert) or position is None:
            return _UNKNOWN
        target = insert.this
        table = target.this if isinstance(target, exp.Schema) else target
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            return _UNKNOWN
        schema = self.table(table.this.name, bool(table.this.quoted))
        if isinstance(target, exp.Schema):
            names = [c for c in target.expressions if isinstance(c, exp.Identifier)]
            if position >= len(names):
                return _UNKNOWN
            return _Guess(_column_type(schema, names[position]))
        if position >= len(schema):
            return _UNKNOWN
        return _Guess(schema.field(position).type)

    def _search_argument(self, call: tuple[str, list[exp.Expression]],
                         position: int) -> _Guess:
        name, args = call
        if name in _SCALAR_SEARCH:
            kinds = [(k, k) for k in _SCALAR_SEARCH[name]]
        else:
            kinds = functions.argument_kinds(name)
        if position >= len(kinds):
            return _UNKNOWN
        arg, kind = kinds[position]
        if arg in ("nprobe", "words"):
            return _Guess(pa.int64(), "1")
        if kind == "int":
            return _Guess(pa.int64(), "0")
        if kind == "number":
            return _Guess(pa.float64(), "1.0")
        if kind == "mode":
            return _Guess(pa.string(), "'or'")
        if kind == "vector":
            probe = _unit_vector(self._vector_dim(name, args, kinds))
            return _Guess(pa.string(), probe, blind=probe is None)
        if arg in ("table", "column", "text_column", "vector_column"):
            # The relation itself depends on it: nothing can stand in.
            return _Guess(pa.string(), blind=True)
        return _Guess(pa.string(), f"'{functions.PROBE_WORD}'")

    def _vector_dim(self, name: str, args: list[exp.Expression],
                    kinds: list[tuple[str, str]]) -> int | None:
        names = [k for k, _ in kinds]
        if name in _SCALAR_SEARCH:
            column = unparen(args[0]) if args else None
            t = self.type_of(column, 1) if isinstance(column, exp.Column) else None
            return vector_dim(t) if t is not None else None
        table = _string(args[0]) if args else None
        where = names.index("vector_column" if "vector_column" in names else "column")
        column_name = _string(args[where]) if where < len(args) else None
        if table is None or column_name is None or table.startswith(self.mark) \
                or column_name.startswith(self.mark):
            return None
        schema = self.table(table, True)
        return (vector_dim(schema.field(column_name).type) if column_name in schema.names
                else None)

    # -- what an expression is ----------------------------------------------------------------

    def type_of(self, node: exp.Expression | None, depth: int = 0) -> pa.DataType | None:
        """The type of a value expression, when it is plain to see."""
        if node is None or depth > _MAX_DEPTH:
            return None
        node = unparen(node)
        if isinstance(node, exp.Neg):
            return self.type_of(node.this, depth + 1)
        if isinstance(node, exp.Column):
            return self._column(node, depth)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return None if node.this.startswith(self.mark) else pa.string()
            return pa.int64() if node.this.lstrip("+-").isdigit() else pa.float64()
        if isinstance(node, exp.Boolean):
            return pa.bool_()
        if isinstance(node, exp.Cast):
            return self._cast_type(node)
        if isinstance(node, _ARITHMETIC):
            return _wider(self.type_of(node.this, depth + 1),
                          self.type_of(node.expression, depth + 1))
        if isinstance(node, exp.Count):
            return pa.int64()
        if isinstance(node, exp.Avg):
            return pa.float64()
        if isinstance(node, exp.Sum):
            inner = self.type_of(node.this, depth + 1)
            return pa.int64() if inner is not None and pa.types.is_integer(inner) else inner
        if isinstance(node, exp.Min | exp.Max | exp.Abs | exp.Round):
            return self.type_of(node.this, depth + 1)
        if isinstance(node, _SAME_AS_ARGUMENTS):
            return self._first_type([node.this, *node.expressions], depth)
        if isinstance(node, _TEXT_FUNCTIONS):
            return pa.string()
        if isinstance(node, exp.Length):
            return pa.int64()
        call = _search_call(node)
        if call is not None and call[0] == "bm25_snippet":
            return pa.string()
        if call is not None and call[0] in _SCALAR_SEARCH and call[0] != "knn":
            return _SCORE
        return None

    def _column(self, col: exp.Column, depth: int) -> pa.DataType | None:
        if not isinstance(col.this, exp.Identifier) or col.args.get("db") is not None:
            return None
        qual = col.args.get("table")
        qual_name = norm(qual) if isinstance(qual, exp.Identifier) else None
        scope = col.parent
        while scope is not None:
            if isinstance(scope, exp.Select | exp.Update | exp.Delete):
                found = self._in_scope(scope, col.this, qual_name, depth)
                if found is not None:
                    return found
            scope = scope.parent
        return None

    def _in_scope(self, scope: exp.Expression, ident: exp.Identifier, qual: str | None,
                  depth: int) -> pa.DataType | None:
        """The type of column ``ident`` (of the source called ``qual``, or of the one
        source that has it) among the sources of ``scope``."""
        if isinstance(scope, exp.Select):
            sources = sqlparse.select_sources(scope)
        else:
            from_ = scope.args.get("from_")
            sources = [scope.this, *(scope.args.get("using") or ()),
                       *([from_.this] if isinstance(from_, exp.From) else [])]
        hits = []
        for source in sources:
            alias = self._alias(source)
            if qual is not None and alias != qual:
                continue
            t = self._source_column(source, ident, depth)
            if t is not None:
                hits.append(t)
            elif qual is not None:
                return None
        return hits[0] if len(hits) == 1 else None

    @staticmethod
    def _alias(source: exp.Expression) -> str | None:
        alias = source.args.get("alias")
        if isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier):
            return norm(alias.this)
        if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
            return norm(source.this)
        return None

    def _source_column(self, source: exp.Expression, ident: exp.Identifier,
                       depth: int) -> pa.DataType | None:
        if isinstance(source, exp.Subquery):
            return self._output_column(source.this, ident, depth + 1)
        if not isinstance(source, exp.Table):
            return None
        target = source.this
        if isinstance(target, exp.Identifier):
            if sqlparse.cte_in_scope(source):
                return self._cte_column(source, ident, depth + 1)
            if source.args.get("db") is not None or source.args.get("catalog") is not None:
                return None
            schema = self.table(target.name, bool(target.quoted))
            if norm(ident) == ID_COLUMN:
                return pa.int64()
            return _column_type(schema, ident)
        call = _search_call(target)
        if call is not None and call[0] in functions.NAMES and call[1]:
            table = _string(call[1][0])
            if table is None or table.startswith(self.mark):
                return None
            name = norm(ident)
            if name == ID_COLUMN:
                return pa.int64()
            if name == "score":
                return _SCORE
            return _column_type(self.table(table, True), ident)
        return None

    def _cte_column(self, ref: exp.Table, ident: exp.Identifier,
                    depth: int) -> pa.DataType | None:
        name = norm(ref.this)
        node = ref.parent
        while node is not None:
            with_ = node.args.get("with_") or node.args.get("with")
            if isinstance(node, exp.With):
                with_ = node
            if isinstance(with_, exp.With):
                for cte in with_.expressions:
                    alias = cte.args.get("alias")
                    if isinstance(alias, exp.TableAlias) and isinstance(alias.this,
                                                                        exp.Identifier) \
                            and norm(alias.this) == name:
                        columns = [c for c in alias.args.get("columns") or ()
                                   if isinstance(c, exp.Identifier)]
                        if columns:
                            wanted = [i for i, c in enumerate(columns) if norm(c) == norm(ident)]
                            return (self._output_position(cte.this, wanted[0], depth + 1)
                                    if wanted else None)
                        return self._output_column(cte.this, ident, depth + 1)
            node = node.parent
        return None

    def _output_select(self, query: exp.Expression) -> exp.Select | None:
        while isinstance(query, exp.SetOperation | exp.Subquery):
            query = query.this
        return query if isinstance(query, exp.Select) else None

    def _output_column(self, query: exp.Expression, ident: exp.Identifier,
                       depth: int) -> pa.DataType | None:
        """The type of the output column ``ident`` of a query."""
        select = self._output_select(query)
        if select is None or depth > _MAX_DEPTH:
            return None
        name = norm(ident)
        for proj in select.expressions:
            if isinstance(proj, exp.Alias) and norm(proj.args["alias"]) == name:
                return self.type_of(proj.this, depth + 1)
            if isinstance(proj, exp.Column) and isinstance(proj.this, exp.Identifier) \
                    and norm(proj.this) == name:
                return self.type_of(proj, depth + 1)
            star = proj if isinstance(proj, exp.Star) else (
                proj.this if isinstance(proj, exp.Column) else None)
            if isinstance(star, exp.Star):
                qual = proj.args.get("table") if isinstance(proj, exp.Column) else None
                found = self._in_scope(select, ident,
                                       norm(qual) if isinstance(qual, exp.Identifier) else None,
                                       depth + 1)
                if found is not None:
                    return found
        return None

    def _output_position(self, query: exp.Expression, position: int,
                         depth: int) -> pa.DataType | None:
        select = self._output_select(query)
        if select is None or position >= len(select.expressions):
            return None
        proj = select.expressions[position]
        return self.type_of(proj.this if isinstance(proj, exp.Alias) else proj, depth + 1)


def _column_type(schema: pa.Schema, ident: exp.Identifier) -> pa.DataType | None:
    """The type of the column an identifier names (an unquoted name also finds a column
    that differs only in case, when just one does)."""
    name = norm(ident)
    if name in schema.names:
        return schema.field(name).type
    if not ident.quoted:
        folded = [f for f in schema if f.name.lower() == name]
        if len(folded) == 1:
            return folded[0].type
    return None
