"""Bound parameters: placeholders in statement text and the literals that replace them.

A statement may hold positional ``?`` placeholders (numbered left to right) or
numbered ``$1``, ``$2`` … (not both). Binding writes each value as a SQL
literal into the text before the statement is parsed, so every statement form
(search function arguments, ``knn`` vectors, INSERT values, WHERE filters)
accepts parameters wherever it accepts a literal. A list or array of numbers
becomes a vector literal (``'[0.1, 0.2]'``), which every vector argument and
vector column accepts.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from quiver.flight_server.sql.errors import SqlParameterError, SqlSyntaxError

_NUMBERED = re.compile(r"^\$([1-9][0-9]*)$")
_DIALECT = "duckdb"


@dataclass(frozen=True)
class Placeholder:
    """One placeholder: its span in the text (end exclusive) and its 0-based parameter."""

    start: int
    end: int
    index: int


def placeholders(text: str) -> list[Placeholder]:
    """The placeholders of ``text`` in order of appearance; strings, quoted identifiers
    and comments are not searched."""
    try:
        tokens = sqlglot.tokenize(text, read=_DIALECT)
    except TokenError as exc:
        raise SqlSyntaxError(str(exc).split("\n", 1)[0]) from None
    found: list[Placeholder] = []
    positional = numbered = False
    for i, tok in enumerate(tokens):
        if tok.token_type == TokenType.PLACEHOLDER and tok.text == "?":
            positional = True
            found.append(Placeholder(tok.start, tok.end + 1, len(found)))
            continue
        if tok.token_type == TokenType.QDCOLON:
            # "?::T" reads as one token (another dialect's try-cast operator, which
            # DataFusion lacks): here it is a placeholder cast with "::".
            positional = True
            found.append(Placeholder(tok.start, tok.start + 1, len(found)))
            continue
        span = None
        if tok.token_type == TokenType.PARAMETER and tok.text == "$" and i + 1 < len(tokens):
            # "$1" reads as a parameter sign then a number, with nothing between them.
            nxt = tokens[i + 1]
            if nxt.token_type == TokenType.NUMBER and nxt.start == tok.end + 1:
                span = (tok.start, nxt.end + 1)
        elif tok.token_type == TokenType.VAR:
            span = (tok.start, tok.end + 1)
        if span is None:
            continue
        m = _NUMBERED.match(text[span[0]:span[1]])
        if m:
            numbered = True
            found.append(Placeholder(span[0], span[1], int(m.group(1)) - 1))
    if positional and numbered:
        raise SqlParameterError("a statement uses either '?' or '$1, $2, …' placeholders, "
                                "not both")
    return found


def parameter_count(text: str) -> int:
    """How many values the statement takes."""
    found = placeholders(text)
    return max((p.index for p in found), default=-1) + 1


def bind(text: str, values: Sequence[Any]) -> str:
    """``text`` with every placeholder replaced by the literal of its value."""
    found = placeholders(text)
    needed = max((p.index for p in found), default=-1) + 1
    if len(values) != needed:
        raise SqlParameterError(f"the statement takes {needed} parameter(s), "
                                f"{len(values)} given")
    if not found:
        return text
    sql = [""] * needed
    for index in sorted({p.index for p in found}):
        sql[index] = literal(values[index], index)
    return _replace(text, found, sql)


def substitute(text: str, sql: Sequence[str]) -> str:
    """``text`` with every placeholder replaced by the SQL text given for its parameter
    (``sql[i]`` for parameter ``i``), written as it is: the caller vouches for it."""
    found = placeholders(text)
    needed = max((p.index for p in found), default=-1) + 1
    if len(sql) != needed:
        raise SqlParameterError(f"the statement takes {needed} parameter(s), "
                                f"{len(sql)} given")
    return _replace(text, found, sql) if found else text


def _replace(text: str, found: list[Placeholder], sql: Sequence[str]) -> str:
    out: list[str] = []
    pos = 0
    for p in found:
        out.append(text[pos:p.start])
        out.append(sql[p.index])
        pos = p.end
    out.append(text[pos:])
    return "".join(out)


def rows(params: pa.Table | pa.RecordBatch) -> list[list[Any]]:
    """The parameter rows of a bound batch, each in column order."""
    return [list(row.values()) for row in params.to_pylist()]


def literal(value: Any, index: int = 0) -> str:
    """The SQL literal for one parameter value."""
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if value is None:
        return "NULL"
    if isinstance(value, bool | np.bool_):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _float(float(value))
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"X'{bytes(value).hex()}'"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, dt.time):
        return f"TIME '{value.isoformat()}'"
    if isinstance(value, np.ndarray | list | tuple):
        return _vector(value, index)
    raise SqlParameterError(f"parameter {index + 1} has a type that cannot be bound: "
                            f"{type(value).__name__}")


def _float(x: float) -> str:
    if math.isnan(x):
        return "CAST('NaN' AS DOUBLE)"
    if math.isinf(x):
        return f"CAST('{'-' if x < 0 else ''}Infinity' AS DOUBLE)"
    return repr(x)


def _string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _vector(value: Any, index: int) -> str:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SqlParameterError(f"parameter {index + 1} is a list but not a list of numbers; "
                                "only numeric lists (vectors) can be bound") from None
    if arr.ndim != 1:
        raise SqlParameterError(f"parameter {index + 1} must be a flat list of numbers, got "
                                f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise SqlParameterError(f"parameter {index + 1} holds NaN or infinite components")
    return "'[" + ", ".join(repr(float(x)) for x in arr.tolist()) + "]'"
