"""Parsing a statement: its sqlglot tree, which tables it names, and how to rewrite it.

What kind of statement it is and which shape it has is ``quiver.flight_server.sql.analysis``'s
job, on the tree parsed here.

A statement is parsed with sqlglot only to learn its shape; the text handed to
DataFusion is the user's own text with a few spans replaced (table names by
versioned view names, ``*`` by the visible columns), so no SQL is regenerated
and nothing DataFusion understands is lost in a round trip through another
dialect. WHERE conjuncts that compare a table's column with literals are
turned into the DNF lists the table layer uses to skip files.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from quiver.flight_server.sql.errors import SqlSyntaxError

# duckdb reads the types Quiver's DDL uses (``FLOAT[384]``); postgres is the fallback.
DIALECT = "duckdb"
_DIALECTS = (DIALECT, "postgres")
_EXPLAIN = re.compile(r"^\s*explain\b(?:\s+analyze\b)?(?:\s+verbose\b)?\s*", re.IGNORECASE)
# Past this many alternatives a pruning filter costs more to check than it saves.
MAX_DISJUNCTS = 32
# The deepest syntax tree a statement may have. Each term of a chain of ``+``, ``OR`` or
# ``AND`` is one level, and DataFusion plans such chains in time that grows with the square
# of their length (1,000 terms: 0.8 s, 5,000: 16 s, 10,000: minutes), in a step no time
# limit or cancel can stop; recursive passes over the tree run out of stack well before.
MAX_DEPTH = 500
_TOO_DEEP = (f"the statement is nested too deeply (more than {MAX_DEPTH} levels; each term "
             "of a chain of +, OR or AND is one level: write a long list of values as "
             "IN (...))")

Dnf = list[list[tuple[str, str, Any]]]


@dataclass
class Statement:
    """A parsed statement; ``expr`` is None when sqlglot cannot read it."""

    text: str
    prefix: str
    body: str
    expr: exp.Expression | None
    error: str | None = None

    @property
    def explain(self) -> bool:
        return bool(self.prefix)

    @property
    def tree(self) -> exp.Expression:
        """The syntax tree of a statement that was read (the gate refuses the others)."""
        if self.expr is None:
            raise SqlSyntaxError(f"cannot read the statement ({self.error or 'syntax error'})")
        return self.expr


def parse(text: str) -> Statement:
    """Parses one statement (an optional trailing ``;`` allowed).

    The syntax tree may be shared with other callers parsing the same text: it is read,
    never changed (a caller that edits one works on a copy).
    """
    m = _EXPLAIN.match(text)
    prefix, body = (text[: m.end()], text[m.end():]) if m else ("", text)
    if not body.strip().rstrip(";").strip():
        raise SqlSyntaxError("empty statement" if not prefix else "EXPLAIN of nothing")
    read = _parse_body_cached if len(body) <= CACHED_BODY_CHARS else _parse_body
    expr, error = read(body)
    return Statement(text, prefix, body, expr, error)


def _parse_body(body: str) -> tuple[exp.Expression | None, str | None]:
    error = None
    for dialect in _DIALECTS:
        try:
            exprs = [e for e in sqlglot.parse(body, read=dialect) if e is not None]
        except (ParseError, TokenError) as exc:
            error = error or str(exc).split("\n", 1)[0]
            continue
        except RecursionError:
            error = error or "the statement is nested too deeply"
            continue
        except Exception:  # the parser's own slips on odd input: unreadable all the same
            error = error or "the statement could not be read"
            continue
        if len(exprs) != 1:
            raise SqlSyntaxError(
                f"one statement at a time, got {len(exprs)}; separate statements are run "
                "by separate calls")
        if depth_over(exprs[0], MAX_DEPTH):
            return None, _TOO_DEEP
        return as_node(exprs[0]), None
    return None, error


def depth_over(tree: Any, limit: int) -> bool:
    """Whether the syntax tree ``tree`` is more than ``limit`` levels deep (walked without
    recursion: the tree may be arbitrarily deep)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.iter_expressions():
            stack.append((child, depth + 1))
    return False


# A statement is usually parsed more than once (a schema request, then its run; the same
# text sent again); short texts keep their trees, long ones (bulk VALUES) would crowd out
# the rest.
CACHED_BODY_CHARS = 8192
_parse_body_cached = functools.lru_cache(maxsize=256)(_parse_body)


def is_query(expr: exp.Expression) -> bool:
    """SELECT, set operations, VALUES, and WITH over any of them."""
    return isinstance(expr, (exp.Select, exp.SetOperation, exp.Values, exp.Subquery))


def as_node(node: object) -> exp.Expression:
    """``node`` as the Expression it is: sqlglot types its parser and builders with its
    ``Expr`` base class, whose concrete nodes are all Expressions."""
    assert isinstance(node, exp.Expression), type(node)
    return node


def node_span(node: exp.Expression) -> tuple[int, int] | None:
    """Character range [start, end) of the identifiers and stars inside ``node``."""
    starts, ends = [], []
    for n in node.walk():
        meta = n.meta if isinstance(n, (exp.Identifier, exp.Star)) else None
        if meta and "start" in meta:
            starts.append(meta["start"])
            ends.append(meta["end"] + 1)
    return (min(starts), max(ends)) if starts else None


def norm(ident: exp.Identifier) -> str:
    """The name as DataFusion resolves it: unquoted identifiers fold to lower case."""
    return ident.name if ident.quoted else ident.name.lower()


@dataclass
class TableRef:
    """One reference to a (possibly Quiver) table in a statement."""

    node: exp.Table
    name: str
    quoted: bool
    select: exp.Select | None

    @property
    def alias_ident(self) -> exp.Identifier:
        alias = self.node.args.get("alias")
        if isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier):
            return alias.this
        return self.node.this

    @property
    def has_alias(self) -> bool:
        alias = self.node.args.get("alias")
        return isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier)


def cte_in_scope(node: exp.Table) -> bool:
    """Whether ``node`` names a CTE visible where it stands: one of an enclosing WITH,
    defined before the CTE it is used in (or that CTE itself under WITH RECURSIVE)."""
    ident = node.this
    if not isinstance(ident, exp.Identifier) or node.args.get("db") is not None \
            or node.args.get("catalog") is not None:
        return False
    name = norm(ident)
    child: object = node
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.With) and isinstance(child, exp.CTE):
            position = parent.expressions.index(child)
            recursive = bool(parent.args.get("recursive"))
            for i, cte in enumerate(parent.expressions):
                if (i < position or (i == position and recursive)) and _cte_name(cte) == name:
                    return True
        elif not isinstance(child, exp.With):
            with_ = parent.args.get("with_") or parent.args.get("with")
            if isinstance(with_, exp.With) and any(_cte_name(c) == name
                                                   for c in with_.expressions):
                return True
        child, parent = parent, parent.parent
    return False


def _cte_name(cte: exp.Expression) -> str | None:
    alias = cte.args.get("alias")
    if isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier):
        return norm(alias.this)
    return None


def table_refs(expr: exp.Expression) -> list[TableRef]:
    """Plain table names that are not CTEs in scope and not in another schema than the
    default."""
    refs = []
    for node in expr.find_all(exp.Table):
        ident = node.this
        if not isinstance(ident, exp.Identifier):
            continue
        db = node.args.get("db")
        if db is not None and norm(db) != "public":
            continue
        if node.args.get("catalog") is not None and norm(node.args["catalog"]) != "datafusion":
            continue
        if cte_in_scope(node):
            continue
        parent = node.parent
        select = None
        if isinstance(parent, (exp.From, exp.Join)) and isinstance(parent.parent, exp.Select):
            select = parent.parent
        refs.append(TableRef(node, ident.name, bool(ident.quoted), select))
    return refs


def information_refs(expr: exp.Expression, relations: Iterable[str]) -> list[TableRef]:
    """References to ``information_schema.<relation>`` for the given relations."""
    wanted = set(relations)
    refs = []
    for node in expr.find_all(exp.Table):
        db = node.args.get("db")
        if not isinstance(node.this, exp.Identifier) or not isinstance(db, exp.Identifier):
            continue
        if norm(db) != "information_schema" or norm(node.this) not in wanted:
            continue
        parent = node.parent
        select = parent.parent if isinstance(parent, (exp.From, exp.Join)) and \
            isinstance(parent.parent, exp.Select) else None
        refs.append(TableRef(node, norm(node.this), True, select))
    return refs


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str


def splice(text: str, edits: Iterable[Edit]) -> str:
    out, pos = [], 0
    for e in sorted(edits, key=lambda e: e.start):
        if e.start < pos:
            raise SqlSyntaxError("overlapping rewrite of the statement")
        out.append(text[pos:e.start])
        out.append(e.text)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


def table_edit(ref: TableRef, view: str, text: str) -> Edit | None:
    """Replaces the table name by ``view``, keeping the name the query uses for it."""
    parts = [n for n in (ref.node.this, ref.node.args.get("db"), ref.node.args.get("catalog"))
             if n is not None]
    spans = [span for n in parts if (span := node_span(n)) is not None]
    if not spans or len(spans) != len(parts):
        return None
    start, end = min(s[0] for s in spans), max(s[1] for s in spans)
    quoted = '"' + view.replace('"', '""') + '"'
    if ref.has_alias:
        return Edit(start, end, quoted)
    ident = ref.node.this
    ident_span = node_span(ident)
    as_text = text[ident_span[0]:ident_span[1]] if ident_span else ident.sql()
    return Edit(start, end, f"{quoted} AS {as_text}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def star_edits(expr: exp.Expression, refs: list[TableRef], text: str,
               columns_of: Callable[[TableRef], list[str]]) -> list[Edit]:
    """Expands ``*`` and ``q.*`` over Quiver tables into their visible columns, so the
    hidden ``_id`` stays out of ``SELECT *``."""
    by_node = {id(r.node): r for r in refs}
    edits = []
    for select in expr.find_all(exp.Select):
        sources = select_sources(select)
        if not any(id(s) in by_node for s in sources):
            continue
        for proj in select.expressions:
            if isinstance(proj, exp.Star):
                if any(proj.args.get(k) for k in ("replace", "rename")):
                    continue
                items = _expand_all(select, sources, by_node, text, columns_of,
                                    _excluded(proj))
            elif isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
                if any(proj.this.args.get(k) for k in ("replace", "rename")):
                    continue
                items = _expand_one(proj, sources, by_node, text, columns_of,
                                    _excluded(proj.this))
            else:
                continue
            span = node_span(proj)
            if items is None or span is None:
                continue
            edits.append(Edit(span[0], _star_end(text, span[1], proj), ", ".join(items)))
    return edits


def _star_end(text: str, end: int, proj: exp.Expression) -> int:
    """End of a star projection including an ``EXCLUDE (...)`` / ``EXCEPT (...)`` list."""
    star = proj if isinstance(proj, exp.Star) else proj.this
    if not star.args.get("except_") or "end" not in star.meta:
        return end
    depth, i = 0, star.meta["end"] + 1
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return end


def _excluded(star: exp.Star) -> set[str]:
    names = set()
    for col in star.args.get("except_") or ():
        if isinstance(col, exp.Column) and isinstance(col.this, exp.Identifier):
            names.add(norm(col.this))
    return names


def select_sources(select: exp.Select) -> list[exp.Expression]:
    out = []
    frm = select.args.get("from_")
    if frm is not None:
        out.append(frm.this)
    for join in select.args.get("joins") or ():
        out.append(join.this)
    return out


def _ident_text(ident: exp.Identifier, text: str) -> str:
    span = node_span(ident)
    return text[span[0]:span[1]] if span else ident.sql()


def _expand_all(select: exp.Select, sources: list[exp.Expression], by_node: dict[int, TableRef],
                text: str, columns_of: Callable[[TableRef], list[str]],
                excluded: set[str]) -> list[str] | None:
    using: set[str] = set()
    joins = select.args.get("joins") or ()
    if any(j.args.get("method") or j.args.get("kind") == "NATURAL" for j in joins):
        return None
    for j in joins:
        for ident in j.args.get("using") or ():
            if isinstance(ident, exp.Identifier):
                using.add(norm(ident))
    items: list[str] = []
    emitted: set[str] = set()
    for src in sources:
        ref = by_node.get(id(src))
        if ref is not None:
            qual = _ident_text(ref.alias_ident, text)
            for c in columns_of(ref):
                if c in excluded or (c in using and c in emitted):
                    continue
                emitted.add(c)
                items.append(f"{qual}.{_quote(c)}")
            continue
        alias = src.args.get("alias") if isinstance(src, exp.Expression) else None
        if excluded or using:
            return None
        if isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier):
            items.append(f"{_ident_text(alias.this, text)}.*")
        elif isinstance(src, exp.Table) and isinstance(src.this, exp.Identifier):
            span = node_span(src)
            if span is None:
                return None
            items.append(f"{text[span[0]:span[1]]}.*")
        else:
            return None
    return items or None


def _expand_one(col: exp.Column, sources: list[exp.Expression], by_node: dict[int, TableRef],
                text: str, columns_of: Callable[[TableRef], list[str]],
                excluded: set[str]) -> list[str] | None:
    qual = col.args.get("table")
    if not isinstance(qual, exp.Identifier) or col.args.get("db") is not None:
        return None
    for src in sources:
        ref = by_node.get(id(src))
        if ref is not None and norm(ref.alias_ident) == norm(qual):
            q = _ident_text(qual, text)
            return [f"{q}.{_quote(c)}" for c in columns_of(ref) if c not in excluded] or None
    return None


# -- literals and comparisons with them -----------------------------------------------------

NO_LITERAL = object()
"""What ``literal_number`` / ``literal_value`` return for anything but a plain literal."""


def unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def literal_number(node: exp.Expression) -> Any:
    """The int or float a (possibly negated, parenthesized) numeric literal stands for."""
    node = unparen(node)
    negate = isinstance(node, exp.Neg)
    if negate:
        node = unparen(node.this)
    if not isinstance(node, exp.Literal) or node.is_string:
        return NO_LITERAL
    try:
        value: Any = int(node.this)
    except ValueError:
        try:
            value = float(node.this)
        except ValueError:
            return NO_LITERAL
    return -value if negate else value


def literal_value(node: exp.Expression) -> Any:
    """The string or number a literal stands for, else ``NO_LITERAL``."""
    inner = unparen(node)
    if isinstance(inner, exp.Literal) and inner.is_string:
        return inner.this
    return literal_number(node)



COMPARISONS: dict[type[exp.Expression], str] = {
    exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=",
}
"""sqlglot's comparison nodes and the table layer's operator for each."""
FLIPPED = {"=": "=", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
"""Each operator with its two sides swapped."""

Fits = Callable[[Any, pa.DataType], bool]
"""Whether comparing a column of a type with a literal value may be handed on."""


class RefColumns:
    """Resolves column expressions to the columns of one table reference: unqualified
    names only when the reference is its SELECT's one source."""

    def __init__(self, ref: TableRef, schema: pa.Schema) -> None:
        self.alias = norm(ref.alias_ident)
        self.schema = schema
        self.single = ref.select is not None and len(select_sources(ref.select)) == 1

    def column(self, node: exp.Expression) -> str | None:
        node = unparen(node)
        if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
            return None
        if node.args.get("db") is not None:
            return None
        qual = node.args.get("table")
        if qual is None:
            if not self.single:
                return None
        elif not isinstance(qual, exp.Identifier) or norm(qual) != self.alias:
            return None
        name = norm(node.this)
        return name if name in self.schema.names else None


def literal_dnf(node: exp.Expression, columns: RefColumns, fits: Fits, *,
                exact: bool) -> Dnf | None:
    """``node`` as table-layer DNF over comparisons of ``columns`` with literals.

    ``exact``: the DNF means exactly what ``node`` means, or None. Otherwise it is implied
    by ``node`` (every row passing ``node`` passes it): parts that say nothing about the
    columns are left out, and None means nothing is known.
    """
    node = unparen(node)
    if isinstance(node, (exp.And, exp.Or)):
        left = literal_dnf(node.this, columns, fits, exact=exact)
        right = literal_dnf(node.expression, columns, fits, exact=exact)
        if isinstance(node, exp.Or):
            if left is None or right is None or len(left) + len(right) > MAX_DISJUNCTS:
                return None
            return left + right
        if left is None or right is None:
            return None if exact else left if right is None else right
        if len(left) * len(right) > MAX_DISJUNCTS:
            return None if exact else left if len(left) <= len(right) else right
        return [a + b for a in left for b in right]
    return _literal_leaf(node, columns, fits, exact)


def _literal_leaf(node: exp.Expression, columns: RefColumns, fits: Fits,
                  exact: bool) -> Dnf | None:
    op = COMPARISONS.get(type(node))
    if op is not None:
        for col_side, lit_side, o in ((node.this, node.expression, op),
                                      (node.expression, node.this, FLIPPED[op])):
            col = columns.column(col_side)
            if col is None:
                continue
            value = literal_value(lit_side)
            if value is NO_LITERAL or not fits(value, columns.schema.field(col).type):
                return None
            return [[(col, o, value)]]
        return None
    if isinstance(node, exp.In):
        if any(node.args.get(k) for k in ("query", "unnest", "field")) or not node.expressions:
            return None
        col = columns.column(node.this)
        if col is None:
            return None
        values = [literal_value(v) for v in node.expressions]
        dtype = columns.schema.field(col).type
        if any(v is NO_LITERAL or not fits(v, dtype) for v in values):
            return None
        return [[(col, "in", values)]]
    if isinstance(node, exp.Between) and not node.args.get("symmetric"):
        col = columns.column(node.this)
        if col is None:
            return None
        dtype = columns.schema.field(col).type
        bounds = [(">=", literal_value(node.args["low"])),
                  ("<=", literal_value(node.args["high"]))]
        conj = [(col, o, v) for o, v in bounds if v is not NO_LITERAL and fits(v, dtype)]
        if not conj or (exact and len(conj) < 2):
            return None
        return [conj]
    return None


def _fits_min_max(value: Any, dtype: pa.DataType) -> bool:
    """Only comparisons whose meaning the manifest's min/max captures exactly."""
    if pa.types.is_integer(dtype):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return isinstance(value, str)
    return False


def pruning_filter(ref: TableRef, schema: pa.Schema) -> Dnf | None:
    """The WHERE conjuncts of the reference's own SELECT that bound its columns by
    literals, as table-layer DNF; None when they say nothing about the table."""
    select = ref.select
    if select is None:
        return None
    where = select.args.get("where")
    if where is None:
        return None
    return literal_dnf(where.this, RefColumns(ref, schema), _fits_min_max, exact=False)
