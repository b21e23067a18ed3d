"""Search as SQL relations: the table functions ``bm25_search``, ``vector_search``,
``hybrid_search``, ``token_match`` and ``exact_match``.

Each runs the table layer's search over the snapshot that ``pin`` hands out for the
named table, when the statement runs, and returns a relation of ``_id BIGINT``,
``score FLOAT`` and every user column of the table except vector columns (a vector
column would only repeat bulky data the caller can join back on ``_id``).

- ``bm25_search(table, columns, query, k [, 'and'|'or'])``: BM25 score, higher is better,
  rows in descending score order (ties by ascending ``_id``). ``columns`` is one column or
  several with optional weights (``'title^2,body'``: a weighted sum of each column's
  BM25); the query syntax (phrases, proximity, fields, boosts) is docs/search-syntax.md.
- ``vector_search(table, column, vector, k [, nprobe])``: the distance, smaller is nearer.
- ``hybrid_search(table, text_column, text, vector_column, vector, k [, text_weight,
  vector_weight])``: reciprocal-rank fusion of the two rankings, each rank's share
  multiplied by its list's weight (default 1 each), higher is better.
- ``token_match(table, column, query [, 'and'|'or'])`` and
  ``exact_match(table, column, value)``: unranked; every live matching row in ascending
  ``_id`` order, with a NULL score. A plain ``SELECT <columns or *> FROM exact_match(…)
  [LIMIT n]`` over a BM25-indexed column is answered by the point lookup instead
  (``quiver.flight_server.sql.point``), with the same relation.

Arguments reach the functions as literals (the engine evaluates constant expressions
and scalar subqueries first, ``quiver.flight_server.sql.constants``). When only the schema of
a statement is planned (``dry()`` is true: a Flight client's GetFlightInfo, a prepare)
the arguments, table, columns and query are checked as for a run, but no search runs:
the relation is empty with the schema a run would give. A vector is a string
(``'[0.1, 0.2]'`` or ``'0.1,0.2'``) or an array literal (``[0.1, 0.2]``,
``make_array(0.1, 0.2)``). A bad argument, an unknown table or column, a column without
the needed index or a vector of the wrong length raises ``SqlPlanError`` naming the
function and what is wrong; storage and corruption errors of the layers below pass
through as raised. DataFusion reports an exception raised inside a table function as a
``ValueError`` carrying only its text; ``search_errors()`` around the call that plans a
statement re-raises the original exception instead (``callback_errors.recover``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import datafusion
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from datafusion import udtf
from datafusion.catalog import Table as DfTable

from quiver.catalog.errors import InvalidTableNameError
from quiver.flight_server.sql.callback_errors import recover
from quiver.flight_server.sql.errors import SqlPlanError, SqlResourceError
from quiver.superfile.errors import QueryError
from quiver.superfile.fts.query import parse_fields, parse_query
from quiver.superfile.spec import vector_dim
from quiver.supertable import search
from quiver.supertable.errors import TableNotFoundError
from quiver.supertable.manifest import FileEntry
from quiver.supertable.snapshot import Snapshot

__all__ = ["argument_kinds", "parse_vector_literal", "register_search_functions",
           "search_errors"]

Pin = Callable[[str], Snapshot]
Dry = Callable[[], bool]

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_VECTOR_TEXT = re.compile(rf"\s*({_NUMBER})(?:\s*,\s*{_NUMBER})*\s*")
_F32_MAX = float(np.finfo(np.float32).max)


def parse_vector_literal(value: Any) -> np.ndarray:
    """A query vector from a SQL literal, as a 1-d float32 array.

    Accepts text ``'[0.1, 0.2]'`` / ``'0.1,0.2'`` (decimal numbers, optional exponent,
    optional surrounding brackets), a pyarrow list scalar of numbers (an SQL array
    literal), or a Python / numpy sequence of numbers. Empty vectors, nulls, nested
    lists, NaN, infinities and values beyond float32 range are rejected.
    """
    if isinstance(value, pa.Scalar):
        value = _scalar_vector(value)
    elif isinstance(value, str):
        value = _text_vector(value)
    elif isinstance(value, (list, tuple, np.ndarray)):
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise SqlPlanError(
                f"a query vector must hold numbers only, got {value!r}") from None
        if value.ndim != 1:
            raise SqlPlanError(
                f"a query vector must be a flat list of numbers, got shape {value.shape}")
    else:
        raise SqlPlanError(
            "a query vector must be a string like '[0.1, 0.2]' or an array literal, "
            f"not {type(value).__name__}")
    if value.size == 0:
        raise SqlPlanError("a query vector must not be empty")
    if not np.all(np.isfinite(value)) or np.any(np.abs(value) > _F32_MAX):
        raise SqlPlanError("a query vector must hold finite float32 values only")
    return value.astype(np.float32)


def _text_vector(text: str) -> np.ndarray:
    body = text.strip()
    opened, closed = body.startswith("["), body.endswith("]")
    if opened != closed:
        raise SqlPlanError(f"malformed vector literal {text!r}: unbalanced brackets")
    if opened:
        body = body[1:-1]
    if not _VECTOR_TEXT.fullmatch(body):
        if not body.strip():
            raise SqlPlanError("a query vector must not be empty")
        raise SqlPlanError(
            f"malformed vector literal {_clip(text)!r}: expected comma-separated numbers "
            "like '[0.1, 0.2]'")
    return np.array(body.split(","), dtype=np.float64)


def _scalar_vector(scalar: pa.Scalar) -> np.ndarray:
    t = scalar.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)):
        if scalar.is_valid and _is_text(t):
            return _text_vector(scalar.as_py())
        raise SqlPlanError(
            "a query vector must be a string like '[0.1, 0.2]' or an array literal, "
            f"not a {t} value")
    if not scalar.is_valid:
        raise SqlPlanError("a query vector must not be NULL")
    values = scalar.values
    vt = values.type
    if len(values) == 0:
        raise SqlPlanError("a query vector must not be empty")
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_decimal(vt)):
        raise SqlPlanError(f"a query vector must hold numbers, not {vt} values")
    if values.null_count:
        raise SqlPlanError("a query vector must not contain NULL values")
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


# -- arguments --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # "text", "int", "number", "mode", "vector"
    required: bool = True


def _literal(fn: str, param: _Param, expr: datafusion.Expr) -> Any:
    if expr.variant_name() != "Literal":
        # Placeholders, column references and subqueries have no value at planning time.
        raise SqlPlanError(
            f"{fn}: argument {param.name!r} must be a literal value, got {expr}")
    return _argument(fn, param, expr.python_value())


def _argument(fn: str, param: _Param, scalar: Any) -> Any:
    """The value of one argument, checked against what the parameter takes."""
    if scalar is None or (isinstance(scalar, pa.Scalar) and not scalar.is_valid):
        raise SqlPlanError(f"{fn}: argument {param.name!r} must not be NULL")
    if param.kind == "vector":
        try:
            return parse_vector_literal(scalar)
        except SqlPlanError as exc:
            raise SqlPlanError(f"{fn}: argument {param.name!r}: {exc}") from None
    value = scalar.as_py() if isinstance(scalar, pa.Scalar) else scalar
    if param.kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)):
            raise SqlPlanError(f"{fn}: argument {param.name!r} must be a number, got {value!r}")
        if not (np.isfinite(value) and value >= 0):
            raise SqlPlanError(
                f"{fn}: argument {param.name!r} must be a non-negative number, got {value}")
        return float(value)
    if param.kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SqlPlanError(
                f"{fn}: argument {param.name!r} must be an integer, got {value!r}")
        if value < (1 if param.name == "nprobe" else 0):
            raise SqlPlanError(
                f"{fn}: argument {param.name!r} must be "
                f"{'positive' if param.name == 'nprobe' else 'non-negative'}, got {value}")
        return int(value)
    if not isinstance(value, str):
        raise SqlPlanError(
            f"{fn}: argument {param.name!r} must be a string, got {value!r}")
    if param.kind == "mode":
        mode = value.strip().lower()
        if mode not in ("and", "or"):
            raise SqlPlanError(
                f"{fn}: argument {param.name!r} must be 'and' or 'or', got {value!r}")
        return mode
    return value


def _check_arity(fn: str, params: tuple[_Param, ...], n: int) -> None:
    lo = sum(p.required for p in params)
    if not lo <= n <= len(params):
        want = (", ".join(p.name if p.required else f"[{p.name}]" for p in params))
        raise SqlPlanError(
            f"{fn} takes {lo if lo == len(params) else f'{lo} to {len(params)}'} arguments "
            f"({want}), got {n}")


def _bind(fn: str, params: tuple[_Param, ...], args: tuple[Any, ...]) -> list[Any]:
    _check_arity(fn, params, len(args))
    return [_literal(fn, p, a) for p, a in zip(params, args, strict=False)]


# -- results ----------------------------------------------------------------------------------


def _output_columns(snap: Snapshot) -> list[str]:
    vectors = snap.manifest.spec.vector
    return [c for c in snap.schema.names if c not in vectors]


def _relation(table: pa.Table) -> DfTable:
    return DfTable(ds.dataset(table))


def _hits_of_ids(snap: Snapshot, ids: np.ndarray) -> search.Hits:
    """Where each live row with one of ``ids`` (sorted, unique) sits: file and local row.

    An updated row keeps its ``_id`` in a newer file while the old copy is tombstoned,
    so the live copy is the one found outside the tombstones.
    """
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        return search.Hits.empty()
    files: list[FileEntry] = []
    fidx: list[np.ndarray] = []
    local: list[np.ndarray] = []
    found: list[np.ndarray] = []
    lo_id, hi_id = int(ids[0]), int(ids[-1])
    for entry in snap.files:
        if entry.live_rows == 0 or entry.id_max < lo_id or entry.id_min > hi_id:
            continue
        a, b = np.searchsorted(ids, [entry.id_min, entry.id_max + 1])
        want = ids[a:b]
        if len(want) == 0:
            continue
        if entry.id_max - entry.id_min + 1 == entry.rows:
            rows = want - entry.id_min
            hit = want
        else:
            all_ids = snap.ids_of(entry, np.arange(entry.rows, dtype=np.int64))
            order = np.argsort(all_ids, kind="stable")
            pos = np.minimum(np.searchsorted(all_ids[order], want), entry.rows - 1)
            ok = all_ids[order[pos]] == want
            rows, hit = order[pos[ok]], want[ok]
        if entry.tombstones:
            dead = np.asarray(entry.tombstones.to_array(), np.int64)
            keep = ~np.isin(rows, dead)
            rows, hit = rows[keep], hit[keep]
        if len(rows) == 0:
            continue
        fidx.append(np.full(len(rows), len(files), np.int64))
        files.append(entry)
        local.append(rows.astype(np.int64))
        found.append(hit)
    if not files:
        return search.Hits.empty()
    all_found = np.concatenate(found)
    order = np.argsort(all_found, kind="stable")
    return search.Hits(files, np.concatenate(fidx)[order], np.concatenate(local)[order],
                       all_found[order], np.zeros(len(order), np.float32))


def _unranked(snap: Snapshot, ids: np.ndarray) -> pa.Table:
    out = search.materialize(snap, _hits_of_ids(snap, ids), _output_columns(snap))
    i = out.schema.get_field_index("score")
    return out.set_column(i, out.schema.field(i), pa.nulls(out.num_rows, pa.float32()))


# -- registration -----------------------------------------------------------------------------

@contextmanager
def search_errors() -> Iterator[None]:
    """Re-raises the exception a search function raised while the body planned a statement.

    DataFusion turns it into a ``ValueError`` holding only its text; the original (a
    ``SqlPlanError``, or a storage / corruption error of the table layer) is recovered
    with its type (``callback_errors.recover``), so callers can map it without parsing
    messages. Other failures pass as raised.
    """
    try:
        yield
    except Exception as exc:
        original = recover(exc)
        if original is not None:
            raise original from None
        raise


_pool_lock = threading.Lock()


def _pool_for(snap: Snapshot, holder: dict[str, ThreadPoolExecutor]) -> ThreadPoolExecutor | None:
    # Resident files make search CPU-bound and threads only add hand-offs; remote files
    # benefit from overlapping their reads.
    if snap.pool.eager:
        return None
    with _pool_lock:
        if "pool" not in holder:
            holder["pool"] = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sql-search")
        return holder["pool"]

# A word for a search's query text while planning: tokenized like any query, held by no
# index, so a search for it finds nothing and costs a dictionary lookup.
PROBE_WORD = "quiverschemaprobe"
# Most results one search function call may return, unless the engine says otherwise.
DEFAULT_MAX_K = 100_000

_TABLE = _Param("table", "text")
_K = _Param("k", "int")

_SIGNATURES: dict[str, tuple[_Param, ...]] = {
    "bm25_search": (_TABLE, _Param("column", "text"), _Param("query", "text"), _K,
                    _Param("mode", "mode", required=False)),
    "vector_search": (_TABLE, _Param("column", "text"), _Param("vector", "vector"), _K,
                      _Param("nprobe", "int", required=False)),
    "hybrid_search": (_TABLE, _Param("text_column", "text"), _Param("text", "text"),
                      _Param("vector_column", "text"), _Param("vector", "vector"), _K,
                      _Param("text_weight", "number", required=False),
                      _Param("vector_weight", "number", required=False)),
    "token_match": (_TABLE, _Param("column", "text"), _Param("query", "text"),
                    _Param("mode", "mode", required=False)),
    "exact_match": (_TABLE, _Param("column", "text"), _Param("value", "text")),
}
# The search table functions' names.
NAMES = frozenset(_SIGNATURES)


def argument_kinds(name: str) -> list[tuple[str, str]]:
    """The ``(name, kind)`` of each argument the search table function ``name`` takes, in
    order; kind is "text", "int", "number", "mode" ('and' / 'or') or "vector". Empty for any other
    name."""
    return [(p.name, p.kind) for p in _SIGNATURES.get(name.lower(), ())]


def _run(fn: str, snap: Snapshot, args: list[Any], pool: ThreadPoolExecutor | None) -> pa.Table:
    columns = _output_columns(snap)
    if fn == "bm25_search":
        _, column, query, k, *rest = args
        hits = search.bm25(snap, column, query, k, mode=rest[0] if rest else "or", pool=pool)
        return search.materialize(snap, hits, columns)
    if fn == "vector_search":
        _, column, vec, k, *rest = args
        hits = search.vector(snap, column, vec, k, nprobe=rest[0] if rest else None, pool=pool)
        return search.materialize(snap, hits, columns)
    if fn == "hybrid_search":
        _, text_column, text, vector_column, vec, k, *weights = args
        tw = weights[0] if weights else 1.0
        vw = weights[1] if len(weights) > 1 else 1.0
        hits = search.hybrid(snap, text_column, text, vector_column, vec, k, pool=pool,
                             text_weight=tw, vector_weight=vw)
        return search.materialize(snap, hits, columns)
    if fn == "token_match":
        _, column, query, *rest = args
        return _unranked(snap, search.token_match(snap, column, query, rest[0] if rest else "or"))
    _, column, value = args
    return _unranked(snap, search.exact_match(snap, column, value))


def _check_column(fn: str, snap: Snapshot, column: str, need: str) -> None:
    """Names what is wrong before the search starts: unknown column, missing index,
    wrong column type (``need`` is "fts", "vector" or "text")."""
    if column not in snap.schema.names:
        raise SqlPlanError(f"{fn}: table {snap.name!r} has no column {column!r}; columns are "
                           f"{snap.schema.names}")
    spec = snap.manifest.spec
    if need == "fts" and column not in spec.fts:
        raise SqlPlanError(f"{fn}: column {column!r} of table {snap.name!r} has no BM25 index")
    if need == "vector" and column not in spec.vector:
        raise SqlPlanError(f"{fn}: column {column!r} of table {snap.name!r} has no vector index")
    if need == "text":
        t = snap.schema.field(column).type
        if not _is_text(t):
            raise SqlPlanError(f"{fn}: column {column!r} of table {snap.name!r} is {t}, "
                               "not text")


def _check_vector(fn: str, snap: Snapshot, column: str, vec: np.ndarray) -> None:
    dim = vector_dim(snap.manifest.schema.field(column).type)
    if dim is not None and len(vec) != dim:
        raise SqlPlanError(f"{fn}: the query vector has {len(vec)} values; column {column!r} "
                           f"of table {snap.name!r} holds vectors of {dim}")


def _validate(fn: str, snap: Snapshot, args: list[Any]) -> None:
    if "score" in snap.schema.names:
        raise SqlPlanError(f"{fn}: table {snap.name!r} has a column named 'score', which the "
                           "result's own score column would clash with")
    if fn == "bm25_search":
        try:
            columns = search.parse_columns(args[1])
        except QueryError as exc:
            raise SqlPlanError(f"{fn}: {exc}") from None
        for column, _w in columns:
            _check_column(fn, snap, column, "fts")
    elif fn == "token_match":
        _check_column(fn, snap, args[1], "fts")
    elif fn == "vector_search":
        _check_column(fn, snap, args[1], "vector")
        _check_vector(fn, snap, args[1], args[2])
    elif fn == "hybrid_search":
        _check_column(fn, snap, args[1], "fts")
        _check_column(fn, snap, args[3], "vector")
        _check_vector(fn, snap, args[3], args[4])
    else:
        _check_column(fn, snap, args[1], "text")


def _empty(fn: str, snap: Snapshot, args: list[Any]) -> pa.Table:
    """The relation a run would give, without its rows: the query is read (and refused
    when unreadable) as the search would read it."""
    if fn == "bm25_search":
        parse_fields(args[2], [c for c, _w in search.parse_columns(args[1])])
    elif fn in ("token_match", "hybrid_search"):
        parse_query(args[2])
    if fn in ("token_match", "exact_match"):
        return _unranked(snap, np.zeros(0, np.int64))
    return search.materialize(snap, search.Hits.empty(), _output_columns(snap))


def _search(fn: str, args: list[Any], pin: Pin, holder: dict[str, ThreadPoolExecutor],
            max_k: int, dry: Dry | None = None) -> pa.Table:
    params = _SIGNATURES[fn]
    if _K in params and args[params.index(_K)] > max_k:
        raise SqlResourceError(f"{fn}: k={args[params.index(_K)]} is more than the "
                               f"{max_k} results a search may return on this server")
    try:
        snap = pin(args[0])
    except (TableNotFoundError, InvalidTableNameError) as exc:
        raise SqlPlanError(f"{fn}: {exc}") from exc
    _validate(fn, snap, args)
    try:
        if dry is not None and dry():
            return _empty(fn, snap, args)
        return _run(fn, snap, args, _pool_for(snap, holder))
    except QueryError as exc:
        # What the checks above cannot see, e.g. a query without a searchable word.
        raise SqlPlanError(f"{fn}: {exc}") from exc


def _make(fn: str, pin: Pin, holder: dict[str, ThreadPoolExecutor], max_k: int,
          dry: Dry | None) -> Callable[..., DfTable]:
    params = _SIGNATURES[fn]

    def call(*exprs: Any) -> DfTable:
        return _relation(_search(fn, _bind(fn, params, exprs), pin, holder, max_k, dry))

    call.__name__ = fn
    return call


class SearchFunctions:
    """The search table functions of one session: registered on its DataFusion context,
    and callable directly for a statement that is nothing but one call."""

    def __init__(self, ctx: datafusion.SessionContext, pin: Pin,
                 max_k: int = DEFAULT_MAX_K, dry: Dry | None = None) -> None:
        self._pin = pin
        self._dry = dry
        self._holder: dict[str, ThreadPoolExecutor] = {}
        self.max_k = max_k
        for fn in _SIGNATURES:
            ctx.register_udtf(udtf(_make(fn, pin, self._holder, max_k, dry), fn))

    @staticmethod
    def knows(name: str) -> bool:
        return name.lower() in _SIGNATURES

    def call(self, name: str, values: Sequence[Any]) -> pa.Table:
        """The relation ``name(values…)`` gives, for argument values already read from
        literals (strings, numbers, vectors as text or lists)."""
        fn = name.lower()
        params = _SIGNATURES[fn]
        _check_arity(fn, params, len(values))
        args = [_argument(fn, p, v) for p, v in zip(params, values, strict=False)]
        return _search(fn, args, self._pin, self._holder, self.max_k, self._dry)


def register_search_functions(ctx: datafusion.SessionContext, pin: Pin,
                              max_k: int = DEFAULT_MAX_K, dry: Dry | None = None
                              ) -> SearchFunctions:
    """Registers the search table functions on ``ctx``; ``pin(name)`` gives the snapshot
    of a table that a statement reads (the engine pins one per table per statement).
    A search asking for more than ``max_k`` results is refused. While ``dry()`` is true
    a call checks its arguments and gives an empty relation without searching."""
    return SearchFunctions(ctx, pin, max_k, dry)
