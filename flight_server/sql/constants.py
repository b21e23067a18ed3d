"""Constant arguments of the search functions: any constant expression or scalar subquery
where a search takes a value, evaluated once, before the statement is planned.

The search functions read their arguments as literals (the table functions when
DataFusion plans them, ``bm25()`` / ``knn()`` / ``vector_distance()`` /
``bm25_snippet()`` in the index rewrite). Before either sees the statement, every value
argument that is not already a literal — ``lower('JSON')``, ``concat('web', ' x')``,
``(SELECT emb FROM t WHERE id = 3)``, ``2 + 3`` — is evaluated once by DataFusion as
``SELECT <argument>``, under the statement's own snapshot pins, and its text is replaced
by the value written as a literal: text as a string, integers and finite floats as
numbers, a list of numbers (a vector column's value) as the vector text
``'[0.1, 0.2]'``, NULL as NULL (which the function then refuses). The column argument of
the scalar functions is never evaluated. An argument that reads a column of the
enclosing query is not constant and is refused; a scalar subquery returning more than
one row is DataFusion's error.

When only the schema is wanted (``dry``), a NULL value where a query, a number or a
vector is needed is replaced by a stand-in of its kind (as prepared statements plan
with NULL for each parameter), since no search runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from quiver.flight_server.sql import functions
from quiver.flight_server.sql import parse as sqlparse
from quiver.flight_server.sql.errors import SqlPlanError
from quiver.flight_server.sql.parse import NO_LITERAL, literal_number, literal_value, unparen

__all__ = ["fold"]

# Kinds of the scalar search functions' arguments ("column" is never evaluated).
SCALAR_KINDS = {
    "bm25": ("column", "text", "mode"),
    "knn": ("column", "vector", "int", "int"),
    "vector_distance": ("column", "vector"),
    "bm25_snippet": ("column", "text", "int"),
}

Evaluate = Callable[[str], pa.Scalar]


def _call_name(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        return name if name in functions.NAMES or name in SCALAR_KINDS else None
    if isinstance(node, exp.Func) and isinstance(node.parent, exp.Table):
        names = {n.lower() for n in type(node).sql_names()} & functions.NAMES
        return names.pop() if names else None
    return None


def _kinds(name: str) -> list[str]:
    if name in SCALAR_KINDS:
        return list(SCALAR_KINDS[name])
    return [kind if arg not in ("table", "column", "text_column", "vector_column")
            else "name" for arg, kind in functions.argument_kinds(name)]


def _is_literal(node: exp.Expression) -> bool:
    inner = unparen(node)
    # NULL and unbound placeholders are left to the functions, which refuse them by name.
    if isinstance(inner, exp.Null | exp.Placeholder) or literal_value(inner) is not NO_LITERAL:
        return True
    if isinstance(inner, exp.Array) or (isinstance(inner, exp.Anonymous)
                                        and inner.name.lower() == "make_array"):
        return all(literal_number(e) is not NO_LITERAL for e in inner.expressions)
    return False


def _outer_columns(node: exp.Expression) -> list[exp.Column]:
    """Columns of ``node`` read outside any subquery inside it."""
    found = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (exp.Subquery, exp.Select)) and n is not node:
            continue
        if isinstance(n, exp.Column):
            found.append(n)
            continue
        stack.extend(n.iter_expressions())
    return found


def _argument_spans(body: str, start: int) -> list[tuple[int, int]]:
    """[start, end) of each argument of the call whose name starts at ``start``."""
    try:
        tokens = Dialect.get_or_raise(sqlparse.DIALECT).tokenize(body[start:])
    except TokenError:
        tokens = Dialect.get_or_raise("postgres").tokenize(body[start:])
    if len(tokens) < 2 or tokens[1].token_type != TokenType.L_PAREN:
        raise SqlPlanError("cannot locate a search function's arguments in the statement")
    spans: list[tuple[int, int]] = []
    depth = 0
    arg: tuple[int, int] | None = None  # [start, end) of the argument being read
    for tok in tokens[1:]:
        tt = tok.token_type
        if tt in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
            if depth == 1:
                continue
        elif tt in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth -= 1
            if depth == 0:
                if arg is not None:
                    spans.append(arg)
                return [(start + a, start + b) for a, b in spans]
        elif tt == TokenType.COMMA and depth == 1:
            if arg is None:
                raise SqlPlanError("a search function has an empty argument")
            spans.append(arg)
            arg = None
            continue
        arg = (tok.start if arg is None else arg[0], tok.end + 1)
    raise SqlPlanError("unbalanced parentheses in a search function's arguments")


def _arguments(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    args = []
    for key in type(node).arg_types:
        value = node.args.get(key)
        if value is None:
            break
        args.append(value)
    return args


def _vector_text(values: list[Any]) -> str:
    if any(v is None for v in values):
        raise SqlPlanError("a query vector must not contain NULL values")
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise SqlPlanError("a query vector must hold numbers only") from None
    return "'[" + ", ".join(repr(x) for x in numbers) + "]'"


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def literal(scalar: pa.Scalar, fn: str, kind: str, dry: bool) -> str:
    """The SQL literal of one evaluated argument value."""
    t = scalar.type
    if not scalar.is_valid:
        if not dry or kind in ("name",):
            return "NULL"
        if kind == "text":
            return _string(functions.PROBE_WORD)
        if kind == "mode":
            return "'or'"
        if kind == "int":
            return "1"
        if kind == "number":
            return "1.0"
        if kind == "vector" and pa.types.is_fixed_size_list(t) and t.list_size > 0:
            return _vector_text([1.0] + [0.0] * (t.list_size - 1))
        return "NULL"
    value = scalar.as_py()
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        if not math.isfinite(float(value)):
            raise SqlPlanError(f"{fn}(): an argument evaluated to {value}, not a finite number")
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, list):
        return _vector_text(value)
    raise SqlPlanError(f"{fn}(): an argument evaluated to a {t} value; search arguments are "
                       "text, numbers or vectors")


def fold(st: sqlparse.Statement, evaluate: Evaluate, dry: bool = False) -> str | None:
    """The statement's text with every non-literal value argument of a search function
    replaced by its value's literal; None when there is none to replace."""
    expr = st.expr
    if expr is None:
        return None
    edits: list[sqlparse.Edit] = []
    for walked in expr.walk():
        node = sqlparse.as_node(walked)
        fn = _call_name(node)
        if fn is None:
            continue
        args = _arguments(node)
        kinds = _kinds(fn)
        todo = [i for i, a in enumerate(args) if i < len(kinds) and kinds[i] != "column"
                and not _is_literal(a)]
        if not todo:
            continue
        start = node.meta.get("start")
        if start is None:
            raise SqlPlanError(f"cannot locate {fn}(...) in the statement text")
        spans = _argument_spans(st.body, start)
        if len(spans) != len(args):
            raise SqlPlanError(f"cannot read the arguments of {fn}(...) in the statement text")
        for i in todo:
            arg = args[i]
            if any(isinstance(n, exp.Anonymous) and _call_name(n) for n in arg.walk()):
                raise SqlPlanError(f"{fn}(): search functions cannot be nested")
            outer = _outer_columns(arg)
            if outer:
                raise SqlPlanError(
                    f"{fn}(): argument {i + 1} must be a constant (a literal, a parameter, an "
                    f"expression of constants or a scalar subquery), not a column of the query "
                    f"({outer[0].sql()})")
            a, b = spans[i]
            value = evaluate(st.body[a:b])
            edits.append(sqlparse.Edit(a, b, literal(value, fn, kinds[i], dry)))
    if not edits:
        return None
    return st.prefix + sqlparse.splice(st.body, edits)
