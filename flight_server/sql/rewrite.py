"""Search inside ordinary queries: ``bm25()``, ``knn()``, ``vector_distance()`` and
equality on BM25-indexed columns, answered from the table's indexes.

The engine hands every statement to ``IndexRewrite`` before DataFusion plans it. The
rewrite reads the sqlglot tree, runs the index searches over the statement's pinned
snapshots, registers their results as in-memory relations for this one statement, and
returns text edits (spans of the user's own text replaced, nothing regenerated):

- A table reference whose SELECT requires a match (``WHERE bm25(c, 'q') > 0`` or a
  ``knn(...)`` conjunct) is *replaced* by the search result: ``_id``, the score and
  only the columns the statement names, so the text column is never scanned. WHERE
  conjuncts over the table's own columns go into the search as a table-layer filter
  (comparisons with literals exactly as DNF, which also prunes files by min/max). For
  ``knn`` any other condition on the table alone is pushed too, by first asking
  DataFusion for the ``_id`` of the rows that pass, so ``knn(c, v, k)`` is the k
  nearest rows among those passing every filter. ``bm25`` asks for k = LIMIT + OFFSET
  when its SELECT orders by the score alone (descending) with every filter pushed;
  otherwise for every match, and DataFusion filters those.
- ``bm25()`` beside ``knn()`` on the same reference: every BM25 match is scored first;
  the kNN result carries those scores (0 for rows that do not match), and a lower
  bound on the score in WHERE limits the kNN to the rows above it, so the k nearest
  rows are found among the matches.
- Several different ``bm25()`` searches on one reference: the first whose match WHERE
  requires gives the rows (as above); each other is scored over every match and
  carried beside (0 where a row does not match), its lower bounds narrowing the rows.
- ``bm25()`` without a WHERE that requires a match needs 0 for rows that do not match:
  the reference becomes the table LEFT JOIN each search result on ``_id`` with
  ``COALESCE(score, 0)``.
- ``knn()`` anywhere but as an AND condition of WHERE (under OR or NOT, in the SELECT
  list) is true for the k nearest rows and false for the others: the reference
  becomes the table LEFT JOIN the kNN result; the WHERE's top-level comparisons of the
  table's columns with literals narrow the kNN, other conditions apply to its result.
- Conditions on ``_id`` are conditions on the table like any other.
- ``vector_distance(c, v)`` is the search's distance when the same SELECT has
  ``knn(c, v, k)`` on the same column and vector; elsewhere it is computed by a scalar
  function over the vector column (the column's index metric: cosine ``1 - cos``,
  l2 Euclidean, inner product ``-<a, b>``; a zero stored vector is at cosine distance 1).
- ``col = 'v'`` / ``col IN ('a', 'b')`` on a BM25-indexed column reads its rows from
  ``exact_match``: term blooms rule out files, the postings give candidate rows (all of
  the value's tokens), and only the candidates are read and compared with the value.
  A value without tokens (empty, punctuation only) is left to the scan, and so is a
  table of at most ``RESIDENT_SCAN_MAX_ROWS`` rows already decoded in memory, which
  compares every value faster than the index finds and fetches the candidates.

Every decision is recorded as a note; ``EXPLAIN`` shows the notes as extra rows.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import datafusion
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from quiver.flight_server.sql import gate, snippet
from quiver.flight_server.sql import parse as sqlparse
from quiver.flight_server.sql.errors import SqlPlanError
from quiver.flight_server.sql.functions import _hits_of_ids, parse_vector_literal
from quiver.flight_server.sql.parse import (
    FLIPPED,
    MAX_DISJUNCTS,
    NO_LITERAL,
    RefColumns,
    literal_dnf,
    literal_number,
    literal_value,
    norm,
    unparen,
)
from quiver.superfile.errors import QueryError
from quiver.superfile.fts.query import parse_query
from quiver.superfile.fts.tokenizer import tokenize
from quiver.superfile.spec import Metric, vector_dim
from quiver.supertable import search
from quiver.supertable.manifest import ID_COLUMN, FileEntry
from quiver.supertable.snapshot import Snapshot, to_expression
from quiver.supertable.table import Table

__all__ = ["SCORE_COLUMN", "IndexRewrite", "RewriteResult", "has_search_calls"]

log = logging.getLogger(__name__)

SEARCH_FUNCTIONS = ("bm25", "knn", "vector_distance")
SCORE_COLUMN = "__quiver_score"
# Up to this many rows, comparing every value of a table held in memory is faster than
# an index lookup followed by fetching the candidate rows (measured on 778K summaries:
# about 1.8 ms against 2.4 ms).
RESIDENT_SCAN_MAX_ROWS = 1_000_000
_STOP = {TokenType.GROUP_BY, TokenType.ORDER_BY, TokenType.LIMIT, TokenType.HAVING,
         TokenType.WINDOW, TokenType.QUALIFY, TokenType.UNION, TokenType.INTERSECT,
         TokenType.EXCEPT, TokenType.SEMICOLON, TokenType.OFFSET, TokenType.FETCH}
_names = itertools.count()
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None

Source = Callable[[sqlparse.TableRef], tuple[Table, Snapshot]]
Acquire = Callable[[sqlparse.TableRef, Sequence[FileEntry] | None], str]


def has_search_calls(expr: exp.Expression) -> bool:
    return any(n.name.lower() in SEARCH_FUNCTIONS for n in expr.find_all(exp.Anonymous))


def _fan_out_pool(snap: Snapshot) -> ThreadPoolExecutor | None:
    # Resident files make search CPU-bound; only remote reads gain from overlapping.
    global _pool
    if snap.pool.eager:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sql-rewrite")
        return _pool


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    inner = unparen(node)
    if isinstance(inner, exp.And):
        return _conjuncts(inner.this) + _conjuncts(inner.expression)
    return [node]


def _fits(value: Any, dtype: pa.DataType) -> bool:
    """Comparisons that mean the same to pyarrow as to SQL for this column type."""
    if isinstance(value, bool):
        return False
    if pa.types.is_integer(dtype):
        return isinstance(value, int)
    if pa.types.is_floating(dtype):
        return isinstance(value, (int, float))
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return isinstance(value, str)
    return False


# -- text positions ---------------------------------------------------------------------------


class _Text:
    """Token positions of the statement body, for spans sqlglot's tree does not carry."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.tokens: list[Token] = []
        for dialect in (sqlparse.DIALECT, "postgres"):
            try:
                self.tokens = Dialect.get_or_raise(dialect).tokenize(body)
                break
            except TokenError:
                continue
        self._by_start = {t.start: i for i, t in enumerate(self.tokens)}

    def call_span(self, call: exp.Anonymous) -> tuple[int, int]:
        """[start, end) of ``name(...)`` from the function name to its closing paren."""
        start = call.meta.get("start")
        i = self._by_start.get(start) if start is not None else None
        if start is None or i is None or i + 1 >= len(self.tokens) or \
                self.tokens[i + 1].token_type != TokenType.L_PAREN:
            raise SqlPlanError(f"cannot locate {call.name}(...) in the statement text")
        depth = 0
        for tok in self.tokens[i + 1:]:
            if tok.token_type == TokenType.L_PAREN:
                depth += 1
            elif tok.token_type == TokenType.R_PAREN:
                depth -= 1
                if depth == 0:
                    return start, tok.end + 1
        raise SqlPlanError(f"unbalanced parentheses after {call.name}")

    def where_span(self, where: exp.Where) -> tuple[int, int] | None:
        """[start, end) of the condition after WHERE."""
        starts = [n.meta["start"] for n in where.walk()
                  if isinstance(n, (exp.Identifier, exp.Literal, exp.Anonymous))
                  and "start" in n.meta]
        if not starts:
            return None
        anchor = min(starts)
        kw = None
        for i, tok in enumerate(self.tokens):
            if tok.start >= anchor:
                break
            if tok.token_type == TokenType.WHERE:
                kw = i
        if kw is None or kw + 1 >= len(self.tokens):
            return None
        depth, end = 0, None
        for tok in self.tokens[kw + 1:]:
            tt = tok.token_type
            if depth == 0 and (tt in _STOP or tt == TokenType.R_PAREN):
                break
            if tt == TokenType.L_PAREN:
                depth += 1
            elif tt == TokenType.R_PAREN:
                depth -= 1
            end = tok.end + 1
        return (self.tokens[kw + 1].start, end) if end is not None else None


# -- calls ------------------------------------------------------------------------------------


@dataclass
class _Call:
    node: exp.Anonymous
    fn: str
    ref: sqlparse.TableRef
    column: str
    column_node: exp.Column
    span: tuple[int, int]
    query: Any = None  # str for bm25, float32 vector for knn / vector_distance
    k: int | None = None
    mode: str = "or"
    nprobe: int | None = None

    def same_search(self, other: _Call) -> bool:
        if self.column != other.column:
            return False
        if isinstance(self.query, np.ndarray) or isinstance(other.query, np.ndarray):
            return (isinstance(self.query, np.ndarray) and isinstance(other.query, np.ndarray)
                    and np.array_equal(self.query, other.query))
        return self.query == other.query and self.mode == other.mode


@dataclass
class _Plan:
    """What happens to one table reference."""

    ref: sqlparse.TableRef
    table: Table
    snap: Snapshot
    calls: list[_Call] = field(default_factory=list)


@dataclass
class _Scores:
    """A BM25 search beside the one whose rows a reference becomes: every match's
    ``_id`` and score, the calls they answer, the least score the WHERE lets through
    (None when non-matching rows pass too) and the column that carries the score."""

    calls: list[_Call]
    ids: np.ndarray
    scores: np.ndarray
    floor: float | None
    column: str = "__quiver_bm25"

    def allowed(self) -> np.ndarray:
        keep = self.scores >= self.floor if self.floor is not None else slice(None)
        return np.sort(self.ids[keep])

    def of(self, ids: np.ndarray) -> np.ndarray:
        """The score of each of ``ids``; 0 where it does not match."""
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
        found = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
        return np.where(found, self.scores[order][pos] if len(sorted_ids) else 0, 0
                        ).astype(np.float32)


BM25_COLUMN = "__quiver_bm25"
KNN_COLUMN = "__quiver_knn"


@dataclass
class RewriteResult:
    """Replacements for table references (by ``id`` of their node), other text edits,
    and what was decided, in words."""

    ref_edits: dict[int, sqlparse.Edit] = field(default_factory=dict)
    edits: list[sqlparse.Edit] = field(default_factory=list)
    # Each note reads as ``str(note)`` (some are written out only then).
    notes: list[str | _LazyNote] = field(default_factory=list)


class IndexRewrite:
    """The index part of planning one statement; ``close()`` once DataFusion has planned
    it (the plan keeps what it read from the relations registered here)."""

    def __init__(self, ctx: datafusion.SessionContext, st: sqlparse.Statement,
                 refs: list[sqlparse.TableRef], source: Source, acquire: Acquire,
                 distances: DistanceFunctions,
                 resident: Callable[[Table, Snapshot], bool] | None = None,
                 dry: bool = False) -> None:
        self.ctx = ctx
        # Only the schema is wanted: every check runs, no search does (results are empty).
        self.dry = dry
        self.st = st
        self.refs = refs
        self.source = source
        self.acquire = acquire
        self.distances = distances
        # Whether a table version's rows are in memory already (then a scan of a table
        # that is not too large beats the index for equality).
        self.resident = resident
        self._text: _Text | None = None
        self._registered: list[str] = []
        # bm25_snippet(...) spelled out, also inside conditions evaluated on their own.
        self._snippet_edits: list[sqlparse.Edit] = []
        self.result = RewriteResult()

    @property
    def text(self) -> _Text:
        if self._text is None:
            self._text = _Text(self.st.body)
        return self._text

    def close(self) -> None:
        for name in self._registered:
            self.ctx.deregister_table(name)
        self._registered.clear()

    # -- entry --------------------------------------------------------------------------

    def run(self) -> RewriteResult:
        expr = self.st.expr
        if expr is None:
            return self.result
        self._snippets(expr)
        plans: dict[int, _Plan] = {}
        for call in self._calls(expr):
            plan = plans.get(id(call.ref.node))
            if plan is None:
                table, snap = self.source(call.ref)
                plan = plans[id(call.ref.node)] = _Plan(call.ref, table, snap)
            plan.calls.append(call)
        for plan in plans.values():
            self._search_ref(plan)
        for ref in self.refs:
            if id(ref.node) not in plans and ref.select is not None \
                    and ref.select.args.get("where") is not None:
                self._equality_ref(ref)
        return self.result

    def _note(self, text: str | _LazyNote) -> None:
        log.debug("%s", text)
        self.result.notes.append(text)

    # -- searches -----------------------------------------------------------------------

    def _bm25(self, snap: Snapshot, column: str, query: str, k: int, **kw: Any
              ) -> search.Hits:
        if self.dry:
            parse_query(query)
            return search.Hits.empty()
        return search.bm25(snap, column, query, k, **kw)

    def _knn(self, snap: Snapshot, column: str, query: np.ndarray, k: int, **kw: Any
             ) -> search.Hits:
        if self.dry:
            return search.Hits.empty()
        return search.vector(snap, column, query, k, **kw)

    def _exact(self, snap: Snapshot, column: str, value: str, **kw: Any) -> np.ndarray:
        if self.dry:
            return np.zeros(0, np.int64)
        return search.exact_match(snap, column, value, **kw)

    # -- snippets -----------------------------------------------------------------------

    def _snippets(self, expr: exp.Expression) -> None:
        """``bm25_snippet(c, 'q' [, n])`` becomes the scalar function with every argument
        spelled out: the window (default ``snippet.DEFAULT_WORDS``) and the column's name,
        which a ``name:`` prefix in the query may aim at."""
        for node in expr.find_all(exp.Anonymous):
            if node.name.lower() != snippet.NAME:
                continue
            args = list(node.expressions)
            if not 2 <= len(args) <= 3:
                raise SqlPlanError(f"{snippet.NAME}() takes 2 or 3 arguments as "
                                   f"{snippet.NAME}(column, 'query' [, words]), got {len(args)}")
            query = literal_value(args[1])
            if not isinstance(query, str):
                raise SqlPlanError(f"{snippet.NAME}(): the query must be constant text, got "
                                   f"{args[1].sql()}")
            words = literal_value(args[2]) if len(args) == 3 else snippet.DEFAULT_WORDS
            snippet.check_query(query, words)
            col = unparen(args[0])
            field_ = norm(col.this) if isinstance(col, exp.Column) and \
                isinstance(col.this, exp.Identifier) else ""
            start, end = self.text.call_span(node)
            name_end = self.text.tokens[self.text._by_start[start]].end + 1
            more = (f", {snippet.DEFAULT_WORDS}" if len(args) == 2 else "") + \
                ", '" + field_.replace("'", "''") + "'"
            edits = [sqlparse.Edit(start, name_end, snippet.FUNCTION),
                     sqlparse.Edit(end - 1, end - 1, more)]
            parent = node.parent
            if isinstance(parent, exp.Select) and node in parent.expressions:
                edits.append(sqlparse.Edit(end, end, f" AS {_quote(self.st.body[start:end])}"))
            self._snippet_edits.extend(edits)
            self.result.edits.extend(edits)

    # -- finding calls ------------------------------------------------------------------

    def _calls(self, expr: exp.Expression) -> list[_Call]:
        found = [n for n in expr.find_all(exp.Anonymous) if n.name.lower() in SEARCH_FUNCTIONS]
        calls = []
        for node in found:
            fn = node.name.lower()
            if any(isinstance(a, exp.Anonymous) and a.name.lower() in SEARCH_FUNCTIONS
                   for n in node.expressions for a in n.walk()):
                raise SqlPlanError(f"{fn}(): search functions cannot be nested")
            select = node.find_ancestor(exp.Select)
            calls.append(self._bind(fn, node, select))
        return calls

    def _bind(self, fn: str, node: exp.Anonymous, select: exp.Select | None) -> _Call:
        args = list(node.expressions)
        shapes = {"bm25": (2, 3, "bm25(column, 'query' [, 'and'|'or'])"),
                  "knn": (3, 4, "knn(column, vector, k [, nprobe])"),
                  "vector_distance": (2, 2, "vector_distance(column, vector)")}
        lo, hi, usage = shapes[fn]
        if not lo <= len(args) <= hi:
            raise SqlPlanError(f"{fn}() takes {lo if lo == hi else f'{lo} to {hi}'} arguments "
                               f"as {usage}, got {len(args)}")
        col = unparen(args[0])
        if not isinstance(col, exp.Column) or not isinstance(col.this, exp.Identifier):
            raise SqlPlanError(f"{fn}(): the first argument must be a column of a table, "
                               f"got {args[0].sql()}")
        ref = self._owner(fn, col, select)
        _, snap = self.source(ref)
        column = norm(col.this)
        self._check_column(fn, snap, column)
        call = _Call(node, fn, ref, column, col, self.text.call_span(node))
        if fn == "bm25":
            query = unparen(args[1])
            if not (isinstance(query, exp.Literal) and query.is_string):
                raise SqlPlanError(f"bm25(): the query must be a string literal, got "
                                   f"{args[1].sql()}")
            call.query = query.this
            if len(args) == 3:
                mode = unparen(args[2])
                if not (isinstance(mode, exp.Literal) and mode.is_string
                        and mode.this.strip().lower() in ("and", "or")):
                    raise SqlPlanError(f"bm25(): the mode must be 'and' or 'or', got "
                                       f"{args[2].sql()}")
                call.mode = mode.this.strip().lower()
            return call
        call.query = self._vector(fn, snap, column, args[1])
        if fn == "knn":
            call.k = self._int(fn, "k", args[2], 0)
            if len(args) == 4:
                call.nprobe = self._int(fn, "nprobe", args[3], 1)
        return call

    @staticmethod
    def _int(fn: str, name: str, node: exp.Expression, least: int) -> int:
        value = literal_number(node)
        if not isinstance(value, int) or value < least:
            raise SqlPlanError(f"{fn}(): {name} must be an integer of at least {least}, got "
                               f"{node.sql()}")
        return value

    def _owner(self, fn: str, col: exp.Column, select: exp.Select | None
               ) -> sqlparse.TableRef:
        """The table reference of the SELECT that the call's column belongs to."""
        local = [r for r in self.refs if select is not None and r.select is select]
        if not local:
            raise SqlPlanError(f"{fn}(): {col.sql()} must be a column of a table read in the "
                               "same SELECT (FROM or JOIN)")
        qual = col.args.get("table")
        name = norm(col.this)
        if isinstance(qual, exp.Identifier):
            hits = [r for r in local if norm(r.alias_ident) == norm(qual)]
            if not hits:
                raise SqlPlanError(f"{fn}(): no table named {qual.name!r} in the SELECT of "
                                   f"{col.sql()}")
            return hits[0]
        if len(local) == 1:
            return local[0]
        having = [r for r in local if name in self.source(r)[1].schema.names]
        if len(having) != 1:
            what = "several tables" if having else "none of the tables"
            raise SqlPlanError(f"{fn}(): column {name!r} is in {what} of its SELECT; "
                               "qualify it with the table name")
        return having[0]

    @staticmethod
    def _check_column(fn: str, snap: Snapshot, column: str) -> None:
        if column not in snap.schema.names:
            raise SqlPlanError(f"{fn}(): table {snap.name!r} has no column {column!r}; "
                               f"columns are {snap.schema.names}")
        spec = snap.manifest.spec
        dtype = snap.schema.field(column).type
        if fn == "bm25":
            if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)):
                raise SqlPlanError(f"bm25(): column {column!r} of table {snap.name!r} is "
                                   f"{dtype}, not text")
            if column not in spec.fts:
                raise SqlPlanError(f"bm25(): column {column!r} of table {snap.name!r} has no "
                                   "BM25 index")
            return
        if vector_dim(dtype) is None:
            raise SqlPlanError(f"{fn}(): column {column!r} of table {snap.name!r} is {dtype}, "
                               "not a vector column")
        if column not in spec.vector:
            raise SqlPlanError(f"{fn}(): column {column!r} of table {snap.name!r} has no "
                               "vector index")

    @staticmethod
    def _vector(fn: str, snap: Snapshot, column: str, node: exp.Expression) -> np.ndarray:
        node = unparen(node)
        if isinstance(node, exp.Literal) and node.is_string:
            raw: Any = node.this
        elif isinstance(node, exp.Array) or (
                isinstance(node, exp.Anonymous) and node.name.lower() == "make_array"):
            raw = [literal_number(e) for e in node.expressions]
            if any(v is NO_LITERAL for v in raw):
                raise SqlPlanError(f"{fn}(): the vector must hold number literals only, got "
                                   f"{node.sql()}")
        elif isinstance(node, exp.Placeholder):
            raise SqlPlanError(f"{fn}(): a bound parameter cannot be the query vector here; "
                               "write the vector as a literal")
        else:
            raise SqlPlanError(f"{fn}(): the vector must be a string like '[0.1, 0.2]' or an "
                               f"array literal, got {node.sql()}")
        try:
            vec = parse_vector_literal(raw)
        except SqlPlanError as exc:
            raise SqlPlanError(f"{fn}(): {exc}") from None
        dim = vector_dim(snap.schema.field(column).type)
        if len(vec) != dim:
            raise SqlPlanError(f"{fn}(): the query vector has {len(vec)} values; column "
                               f"{column!r} of table {snap.name!r} holds vectors of {dim}")
        return vec

    # -- filters ------------------------------------------------------------------------

    def _local(self, ref: sqlparse.TableRef, snap: Snapshot, node: exp.Expression) -> bool:
        """Whether ``node`` reads only columns of ``ref`` (and no subquery)."""
        if any(isinstance(n, (exp.Select, exp.Subquery)) for n in node.walk()):
            return False
        cols = list(node.find_all(exp.Column))
        # ``_id`` is the table's too (conditions on it are evaluated with the others).
        columns = RefColumns(ref, snap.schema.append(pa.field(ID_COLUMN, pa.int64())))
        return all(columns.column(c) is not None for c in cols)

    @staticmethod
    def _dnf(ref: sqlparse.TableRef, snap: Snapshot, node: exp.Expression
             ) -> list[list[tuple[str, str, Any]]] | None:
        """The exact DNF of ``node``, or None when it is not made of comparisons of the
        table's columns with literals."""
        return literal_dnf(node, RefColumns(ref, snap.schema), _fits, exact=True)

    @staticmethod
    def _describe(conjuncts: list[exp.Expression]) -> str:
        return " AND ".join(c.sql(dialect=sqlparse.DIALECT) for c in conjuncts)

    # -- search references --------------------------------------------------------------

    def _search_ref(self, plan: _Plan) -> None:
        ref, snap = plan.ref, plan.snap
        knn = [c for c in plan.calls if c.fn == "knn"]
        dist = [c for c in plan.calls if c.fn == "vector_distance"]
        # Distinct BM25 searches, each with the calls that ask for it.
        groups: list[list[_Call]] = []
        for c in (c for c in plan.calls if c.fn == "bm25"):
            same = next((g for g in groups if g[0].same_search(c)), None)
            if same is None:
                groups.append([c])
            else:
                same.append(c)
        if any(not c.same_search(knn[0]) for c in knn[1:]):
            raise SqlPlanError(f"knn(): one nearest-neighbour search per reference to table "
                               f"{snap.name!r}; join the table again for another")
        where = ref.select.args.get("where") if ref.select is not None else None
        conjuncts = _conjuncts(where.this) if where is not None else []
        top_level = {id(unparen(c)) for c in conjuncts}
        knn_call = knn[0] if knn else None
        by_score = [c for c in dist if knn_call is not None and c.same_search(knn_call)]
        if knn_call is not None and any(id(c.node) not in top_level for c in knn):
            # Under OR / NOT or outside WHERE: true for the k nearest rows, false for others.
            for c in dist:
                self._distance_edit(c, snap)
            self._join(plan, groups, conjuncts, knn)
            return
        for c in dist:
            if c not in by_score:
                self._distance_edit(c, snap)
        if knn_call is not None:
            sides = [self._side_scores(plan, g, conjuncts, i, strict=True)
                     for i, g in enumerate(groups)]
            self._replace(plan, knn_call, where, conjuncts, knn + by_score, sides)
            return
        required = [g for g in groups if self._requires_match(g, conjuncts)]
        if required:
            primary = required[0]
            sides = [self._side_scores(plan, g, conjuncts, i, strict=False)
                     for i, g in enumerate(g for g in groups if g is not primary)]
            self._replace(plan, primary[0], where, conjuncts, primary, sides)
        elif groups:
            self._join(plan, groups, conjuncts, [])

    def _side_scores(self, plan: _Plan, calls: list[_Call], conjuncts: list[exp.Expression],
                     i: int, strict: bool) -> _Scores:
        """BM25 scores of every match of one search, for a reference whose rows come from
        another search. A lower bound on the score in WHERE narrows the rows that search
        may return. Beside ``knn`` (``strict``) any other use of the score in WHERE would
        need scores of rows not yet found; beside a BM25 search that returns every match
        it is evaluated on those."""
        floors = []
        for c in conjuncts:
            if not any(self._contains(c, call) for call in calls):
                continue
            floor = self._lower_bound(calls, c)
            if floor is None and strict:
                raise SqlPlanError("with knn() on the same table reference, bm25() may appear "
                                   "in WHERE only as a lower bound (bm25(col, 'q') > c); "
                                   "join the table again for other uses")
            if floor is not None:
                floors.append(floor)
        exact, _, _ = self._split(plan, conjuncts)
        call = calls[0]
        try:
            hits = self._bm25(plan.snap, call.column, call.query,
                              max(1, plan.snap.manifest.num_rows), mode=call.mode,
                              filter_=self._filter(plan, exact), pool=_fan_out_pool(plan.snap))
        except QueryError as exc:
            raise SqlPlanError(f"bm25(): {exc}") from None
        return _Scores(calls, np.asarray(hits.ids, np.int64),
                       np.asarray(hits.scores, np.float32), max(floors) if floors else None,
                       f"{BM25_COLUMN}_{i}")

    @staticmethod
    def _contains(node: exp.Expression, call: _Call) -> bool:
        return any(n is call.node for n in node.walk())

    def _distance_edit(self, call: _Call, snap: Snapshot) -> None:
        dtype = snap.manifest.schema.field(call.column).type
        fn = self.distances.function(snap.manifest.spec.vector[call.column], dtype)
        col_span = sqlparse.node_span(call.column_node)
        col_text = self.st.body[col_span[0]:col_span[1]] if col_span else call.column_node.sql()
        vec = "[" + ", ".join(repr(float(x)) for x in call.query) + "]"
        self._call_edit(call, f"{fn}({col_text}, '{vec}')")

    def _call_edit(self, call: _Call, text: str) -> None:
        parent = call.node.parent
        if isinstance(parent, exp.Select) and call.node in parent.expressions:
            # A bare projection keeps the user's text as its column name.
            original = self.st.body[call.span[0]:call.span[1]]
            text = f"{text} AS {_quote(original)}"
        self.result.edits.append(sqlparse.Edit(call.span[0], call.span[1], text))

    def _alias_text(self, ref: sqlparse.TableRef) -> str:
        span = sqlparse.node_span(ref.alias_ident)
        return self.st.body[span[0]:span[1]] if span else _quote(ref.alias_ident.name)

    def _requires_match(self, calls: list[_Call], conjuncts: list[exp.Expression]) -> bool:
        return any(self._lower_bound(calls, c) is not None for c in conjuncts)

    @staticmethod
    def _lower_bound(calls: list[_Call], node: exp.Expression) -> float | None:
        """c when ``node`` is ``bm25(...) > c`` (c >= 0) or ``>= c`` (c > 0) for one of
        ``calls``: only matching rows pass it."""
        node = unparen(node)
        for cls, op in ((exp.GT, ">"), (exp.GTE, ">="), (exp.LT, "<"), (exp.LTE, "<=")):
            if type(node) is not cls:
                continue
            for call_side, lit_side, o in ((node.this, node.expression, op),
                                           (node.expression, node.this, FLIPPED[op])):
                inner = unparen(call_side)
                if not (isinstance(inner, exp.Anonymous) and inner.name.lower() == "bm25"):
                    continue
                if not any(inner is c.node for c in calls):
                    continue
                value = literal_number(lit_side)
                if value is NO_LITERAL:
                    return None
                if (o == ">" and value >= 0) or (o == ">=" and value > 0):
                    return float(value)
            return None
        return None

    def _needed(self, plan: _Plan, replaced: list[_Call]) -> list[str]:
        """Columns of the table the statement may read through this reference."""
        snap, ref = plan.snap, plan.ref
        select = ref.select
        if select is not None:
            alias = norm(ref.alias_ident)
            for proj in select.expressions:
                if isinstance(proj, exp.Star):
                    return list(snap.schema.names)
                if isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
                    qual = proj.args.get("table")
                    if isinstance(qual, exp.Identifier) and norm(qual) == alias:
                        return list(snap.schema.names)
        skip = {id(c.column_node) for c in replaced}
        names = {norm(c.this) for c in self.st.tree.find_all(exp.Column)
                 if isinstance(c.this, exp.Identifier) and id(c) not in skip}
        return [c for c in snap.schema.names if c in names]

    def _split(self, plan: _Plan, conjuncts: list[exp.Expression]
               ) -> tuple[list[exp.Expression], list[exp.Expression], list[exp.Expression]]:
        """(exact DNF conjuncts, other conjuncts over the table alone, the rest), the
        conjuncts holding search calls left out."""
        exact, local, rest = [], [], []
        for c in conjuncts:
            if has_search_calls(c):
                continue
            if self._dnf(plan.ref, plan.snap, c) is not None:
                exact.append(c)
            elif self._local(plan.ref, plan.snap, c):
                local.append(c)
            else:
                rest.append(c)
        return exact, local, rest

    def _filter(self, plan: _Plan, exact: list[exp.Expression]
                ) -> list[list[tuple[str, str, Any]]] | None:
        dnf: list[list[tuple[str, str, Any]]] = [[]]
        for c in exact:
            part = self._dnf(plan.ref, plan.snap, c)
            if part is None or len(dnf) * len(part) > MAX_DISJUNCTS:
                return None
            dnf = [a + b for a in dnf for b in part]
        return dnf if dnf != [[]] else None

    def _prefilter(self, plan: _Plan, calls_in_where: list[_Call]) -> np.ndarray | None:
        """``_id`` of the live rows passing the whole WHERE (search conditions taken as
        true), computed by DataFusion over the table's view; None when the WHERE cannot be
        evaluated on the table alone."""
        ref = plan.ref
        # Only a search call's reference gets here, and with local conjuncts its WHERE.
        assert ref.select is not None
        where = ref.select.args.get("where")
        if self.dry:
            return np.zeros(0, np.int64)
        assert where is not None
        if len(sqlparse.select_sources(ref.select)) != 1 or \
                any(isinstance(n, (exp.Select, exp.Subquery)) for n in where.walk()):
            return None
        span = self.text.where_span(where)
        if span is None:
            return None
        edits = []
        for c in calls_in_where:
            if not (span[0] <= c.span[0] and c.span[1] <= span[1]):
                continue
            if c.fn == "knn":
                text = "TRUE"
            elif c.fn == "vector_distance":
                dtype = plan.snap.manifest.schema.field(c.column).type
                fn = self.distances.function(plan.snap.manifest.spec.vector[c.column], dtype)
                vec = "[" + ", ".join(repr(float(x)) for x in c.query) + "]"
                col_span = sqlparse.node_span(c.column_node)
                if col_span is None:
                    raise SqlPlanError(f"cannot locate {c.fn}(...)'s column in the statement")
                text = f"{fn}({self.st.body[col_span[0]:col_span[1]]}, '{vec}')"
            else:
                # Only lower bounds on the score reach here; every match passes them.
                text = "1e308"
            edits.append(sqlparse.Edit(c.span[0] - span[0], c.span[1] - span[0], text))
        edits += [sqlparse.Edit(e.start - span[0], e.end - span[0], e.text)
                  for e in self._snippet_edits if span[0] <= e.start and e.end <= span[1]]
        condition = sqlparse.splice(self.st.body[span[0]:span[1]], edits)
        view = self.acquire(ref, None)
        sql = (f"SELECT {_quote(ID_COLUMN)} FROM {_quote(view)} AS {self._alias_text(ref)} "
               f"WHERE {condition}")
        ids = self.ctx.sql_with_options(sql, gate.SQL_OPTIONS).to_arrow_table().column(0)
        return np.unique(ids.to_numpy(zero_copy_only=False).astype(np.int64))

    def _register(self, data: pa.Table) -> str:
        name = f"__quiver_hits_{next(_names)}"
        batches = data.to_batches() or [pa.RecordBatch.from_pylist([], schema=data.schema)]
        self.ctx.register_record_batches(name, [batches])
        self._registered.append(name)
        return name

    def _k_from_limit(self, plan: _Plan, call: _Call) -> int | None:
        """LIMIT + OFFSET when the SELECT returns its rows ranked by this score alone."""
        select = plan.ref.select
        if select is None or select.args.get("group") or select.args.get("having") or \
                select.args.get("distinct") or select.args.get("joins"):
            return None
        if any(isinstance(n, (exp.AggFunc, exp.Window)) for p in select.expressions
               for n in p.walk()):
            return None
        order, limit = select.args.get("order"), select.args.get("limit")
        if order is None or limit is None or len(order.expressions) != 1:
            return None
        ordered = order.expressions[0]
        if not ordered.args.get("desc"):
            return None
        key = unparen(ordered.this)
        if isinstance(key, exp.Column) and key.args.get("table") is None:
            for proj in select.expressions:
                if isinstance(proj, exp.Alias) and proj.alias == key.name:
                    key = unparen(proj.this)
                    break
        if not (isinstance(key, exp.Anonymous) and key.name.lower() == "bm25"
                and any(c.node is key for c in plan.calls)):
            return None
        n = literal_number(limit.expression)
        offset = select.args.get("offset")
        skip = literal_number(offset.expression) if offset is not None else 0
        if not isinstance(n, int) or not isinstance(skip, int) or n < 0 or skip < 0:
            return None
        return n + skip

    def _replace(self, plan: _Plan, call: _Call, where: exp.Where | None,
                 conjuncts: list[exp.Expression], scored: list[_Call],
                 sides: Sequence[_Scores] = ()) -> None:
        """The reference becomes the search result; it carries the scores of the other
        BM25 searches (``sides``) too, and a floor on one of them narrows the search."""
        ref, snap = plan.ref, plan.snap
        exact, local, rest = self._split(plan, conjuncts)
        others = [c for c in conjuncts if has_search_calls(c)
                  and not (call.fn == "bm25" and self._lower_bound(scored, c) is not None)
                  and not (call.fn == "knn" and unparen(c) is call.node)
                  and not any(b.floor is not None and self._lower_bound(b.calls, c) is not None
                              for b in sides)]
        k = call.k
        if call.fn == "bm25":
            k = self._k_from_limit(plan, call) if not rest and not others else None
        filter_: Any = self._filter(plan, exact)
        pushed = list(exact)
        prefiltered = False
        # For knn the filter decides which rows are the k nearest, so it must reach the
        # search. For bm25 it only trims the matches: asking DataFusion for the passing
        # rows scans the whole table, which measured slower than taking every match and
        # filtering those.
        if local and call.fn == "knn":
            ids = self._prefilter(plan, [c for c in plan.calls])
            if ids is not None:
                filter_ = pc.field(ID_COLUMN).isin(pa.array(ids, pa.int64()))
                pushed += local
                prefiltered = True
        floored = [b for b in sides if b.floor is not None]
        if floored:
            allowed = floored[0].allowed()
            for b in floored[1:]:
                allowed = np.intersect1d(allowed, b.allowed())
            if prefiltered:
                assert ids is not None
                filter_ = pc.field(ID_COLUMN).isin(pa.array(np.intersect1d(ids, allowed)))
            else:
                only = pc.field(ID_COLUMN).isin(pa.array(allowed, pa.int64()))
                expr = to_expression(filter_)
                filter_ = only if expr is None else expr & only
            pushed += [c for c in conjuncts
                       if any(self._lower_bound(b.calls, c) is not None for b in floored)]
        if call.fn == "bm25" and local and not prefiltered:
            k = None
        left = [c for c in local + rest if not any(c is p for p in pushed)]
        pool = _fan_out_pool(snap)
        try:
            if call.fn == "bm25":
                hits = self._bm25(snap, call.column, call.query,
                                  k if k is not None else max(1, snap.manifest.num_rows),
                                  mode=call.mode, filter_=filter_, pool=pool)
            else:
                assert call.k is not None, "knn() always has k"
                hits = self._knn(snap, call.column, call.query, call.k,
                                 nprobe=call.nprobe, filter_=filter_, pool=pool)
        except QueryError as exc:
            raise SqlPlanError(f"{call.fn}(): {exc}") from None
        columns = self._needed(plan, scored + [c for b in sides for c in b.calls])
        data = search.materialize(snap, hits, columns, score_name=SCORE_COLUMN)
        for b in sides:
            data = data.append_column(b.column, pa.array(
                b.of(np.asarray(hits.ids, np.int64)), pa.float32()))
        name = self._register(data)
        placeholder = "\x00view\x00"
        edit = sqlparse.table_edit(ref, placeholder, self.st.body)
        if edit is None:
            raise SqlPlanError(f"cannot locate table {snap.name!r} in the statement text")
        self.result.ref_edits[id(ref.node)] = sqlparse.Edit(
            edit.start, edit.end, edit.text.replace(_quote(placeholder), _quote(name), 1))
        alias = self._alias_text(ref)
        for c in scored:
            if c.fn == "knn":
                self.result.edits.append(sqlparse.Edit(c.span[0], c.span[1], "TRUE"))
            else:
                self._call_edit(c, f"{alias}.{_quote(SCORE_COLUMN)}")
        for b in sides:
            for c in b.calls:
                self._call_edit(c, f"{alias}.{_quote(b.column)}")
        what = "bm25" if call.fn == "bm25" else "knn"
        desc = [f"index path: {what} on {snap.name}.{call.column}",
                f"k={k if k is not None else 'all'}"]
        if pushed:
            how = " (by _id of rows passing it)" if prefiltered else ""
            desc.append(f"filter=[{self._describe(pushed)}]{how}")
        if left:
            desc.append(f"after the search=[{self._describe(left)}]")
        for b in sides:
            desc.append(f"bm25 on {snap.name}.{b.calls[0].column} "
                        f"({b.calls[0].query!r}) scores {len(b.ids)} matches"
                        + (" and limits the " + ("kNN" if what == "knn" else "search")
                           + " to them" if b.floor is not None else ""))
        desc.append(f"columns={columns}")
        desc.append(f"rows={data.num_rows}")
        self._note(" ".join(desc))
        if call.fn == "knn" and left:
            self._note(f"knn on {snap.name}.{call.column}: conditions that read other tables "
                       "apply after the search; fewer than k rows may remain")

    def _join(self, plan: _Plan, groups: list[list[_Call]], conjuncts: list[exp.Expression],
              knn: list[_Call]) -> None:
        """Every row keeps its place: the table LEFT JOIN each search's result on ``_id``.
        A BM25 score is 0 where the row does not match; ``knn()`` is true for the k
        nearest rows (among those passing the WHERE's top-level comparisons with
        literals) and false for the others."""
        ref, snap = plan.ref, plan.snap
        exact, _, _ = self._split(plan, conjuncts)
        filter_ = self._filter(plan, exact)
        pool = _fan_out_pool(snap)
        alias = self._alias_text(ref)
        i = _quote(ID_COLUMN)
        select, joins, notes = ["__quiver_v.*"], [], []
        for n, group in enumerate(groups):
            call = group[0]
            try:
                hits = self._bm25(snap, call.column, call.query,
                                  max(1, snap.manifest.num_rows), mode=call.mode,
                                  filter_=filter_, pool=pool)
            except QueryError as exc:
                raise SqlPlanError(f"bm25(): {exc}") from None
            column = _quote(SCORE_COLUMN if n == 0 else f"{BM25_COLUMN}_{n}")
            name = self._register(pa.table({ID_COLUMN: pa.array(hits.ids, pa.int64()),
                                            "s": pa.array(hits.scores, pa.float32())}))
            h = f"__quiver_h{n}"
            select.append(f'COALESCE({h}."s", CAST(0 AS REAL)) AS {column}')
            joins.append(f"LEFT JOIN {_quote(name)} AS {h} ON __quiver_v.{i} = {h}.{i}")
            for c in group:
                self._call_edit(c, f"{alias}.{column}")
            notes.append(f"index path: bm25 on {snap.name}.{call.column} ({call.query!r}) "
                         f"k=all scores joined to every row matches={len(hits.ids)}")
        if knn:
            call = knn[0]
            assert call.k is not None, "knn() always has k"
            try:
                hits = self._knn(snap, call.column, call.query, call.k, nprobe=call.nprobe,
                                 filter_=filter_, pool=pool)
            except QueryError as exc:
                raise SqlPlanError(f"knn(): {exc}") from None
            name = self._register(pa.table({ID_COLUMN: pa.array(hits.ids, pa.int64())}))
            select.append(f"(__quiver_k.{i} IS NOT NULL) AS {_quote(KNN_COLUMN)}")
            joins.append(f"LEFT JOIN {_quote(name)} AS __quiver_k ON __quiver_v.{i} = "
                         f"__quiver_k.{i}")
            for c in knn:
                self._call_edit(c, f"{alias}.{_quote(KNN_COLUMN)}")
            notes.append(f"index path: knn on {snap.name}.{call.column} k={call.k} marks its "
                         f"{len(hits.ids)} rows among every row (knn() outside the AND "
                         "conditions of WHERE)")
        dnf = sqlparse.pruning_filter(ref, snap.schema)
        view = self.acquire(ref, snap.candidate_files(dnf) if dnf else None)
        relation = (f"(SELECT {', '.join(select)} FROM {_quote(view)} AS __quiver_v "
                    f"{' '.join(joins)})")
        placeholder = "\x00view\x00"
        edit = sqlparse.table_edit(ref, placeholder, self.st.body)
        if edit is None:
            raise SqlPlanError(f"cannot locate table {snap.name!r} in the statement text")
        self.result.ref_edits[id(ref.node)] = sqlparse.Edit(
            edit.start, edit.end, edit.text.replace(_quote(placeholder), relation, 1))
        filtered = f" filter=[{self._describe(exact)}]" if exact else ""
        for note in notes:
            self._note(note + filtered)

    # -- equality -----------------------------------------------------------------------

    def _equality_ref(self, ref: sqlparse.TableRef) -> None:
        table, snap = self.source(ref)
        fts = snap.manifest.spec.fts
        if not fts:
            return
        found = None
        assert ref.select is not None, "the caller checked the reference has a WHERE"
        for c in _conjuncts(ref.select.args["where"].this):
            dnf = self._dnf(ref, snap, c)
            if dnf is None or len(dnf) != 1 or len(dnf[0]) != 1:
                continue
            col, op, value = dnf[0][0]
            if col in fts and op in ("=", "in"):
                found = (c, col, value if op == "in" else [value])
                break
        if found is None:
            return
        cond, column, values = found
        if any(not tokenize(v) for v in values):
            return
        # Notes are read by EXPLAIN and debug logs only: the condition is written out
        # (sqlglot generating SQL, a cost on every statement) when one reads them.
        def where() -> str:
            return f"{snap.name}.{column} ({self._describe([cond])})"

        if self.resident is not None and snap.count() <= RESIDENT_SCAN_MAX_ROWS \
                and self.resident(table, snap):
            self._note(_LazyNote(lambda: f"scan: {where()} left to the scan of rows already "
                                         "in memory"))
            return
        dnf = sqlparse.pruning_filter(ref, snap.schema)
        files = snap.candidate_files(dnf) if dnf else snap.candidate_files()
        ids = np.unique(np.concatenate(
            [self._exact(snap, column, v, filter_=dnf) for v in values]
            or [np.zeros(0, np.int64)]))
        hits = _hits_of_ids(snap, ids)
        rows = search.materialize(snap, hits, self._needed(_Plan(ref, table, snap), []),
                                  score_name=SCORE_COLUMN)
        name = self._register(rows.drop_columns([SCORE_COLUMN]))
        edit = sqlparse.table_edit(ref, name, self.st.body)
        if edit is not None:
            self.result.ref_edits[id(ref.node)] = edit
            shown = (rows.num_rows, len(hits.files), len(files))
            self._note(_LazyNote(lambda: f"index path: exact_match on {where()} "
                                         f"rows={shown[0]} from {shown[1]} of {shown[2]} files"))


class _LazyNote:
    """A note written out when first read (``str``)."""

    __slots__ = ("_make", "_text")

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = self._make()
        return self._text


# -- vector_distance --------------------------------------------------------------------------


class DistanceFunctions:
    """Scalar functions ``vector_distance`` is rewritten to, one per (metric, vector type),
    registered on first use."""

    def __init__(self, ctx: datafusion.SessionContext) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._names: dict[tuple[str, str], str] = {}

    def function(self, metric: Metric, dtype: pa.DataType) -> str:
        key = (str(metric), str(dtype))
        with self._lock:
            name = self._names.get(key)
            if name is None:
                name = f"__quiver_distance_{len(self._names)}"
                dim = vector_dim(dtype)
                if dim is None:
                    raise SqlPlanError(f"vector_distance() needs a vector column, got {dtype}")
                self.ctx.register_udf(datafusion.udf(
                    _distance_kernel(Metric(metric), dim), [dtype, pa.string()], pa.float32(),
                    "immutable", name))
                self._names[key] = name
            return name


def _distance_kernel(metric: Metric, dim: int) -> Callable[[pa.Array, pa.Array], pa.Array]:
    parsed: dict[str, np.ndarray] = {}

    def kernel(vectors: pa.Array, query: pa.Array) -> pa.Array:
        n = len(vectors)
        if n == 0:
            return pa.array([], pa.float32())
        text = query[0].as_py() if isinstance(query, pa.Array) else query.as_py()
        q = parsed.get(text)
        if q is None:
            q = parsed.setdefault(text, parse_vector_literal(text).astype(np.float64))
        if isinstance(vectors, pa.ChunkedArray):
            vectors = vectors.combine_chunks()
        flat = vectors.values.slice(vectors.offset * dim, n * dim)
        m = flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(n, dim)
        if metric is Metric.COSINE:
            norms = np.linalg.norm(m, axis=1) * float(np.linalg.norm(q))
            dots = m @ q
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(norms > 0, 1.0 - dots / np.where(norms > 0, norms, 1.0), 1.0)
        elif metric is Metric.L2:
            d = np.sqrt(((m - q) ** 2).sum(axis=1))
        else:
            d = -(m @ q)
        mask = vectors.is_null().to_numpy(zero_copy_only=False) if vectors.null_count else None
        return pa.array(d.astype(np.float32), pa.float32(), mask=mask)

    return kernel
