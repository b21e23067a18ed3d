"""The point-lookup path: ``SELECT <columns or *> FROM t WHERE <text column> = 'v' [AND …]
[LIMIT n]`` answered from the table's BM25 index without DataFusion.

``analysis.PointLookup`` is the statement's shape, read once with the statement; this
module judges it against the pinned snapshot and runs it. It is taken only when the
answer is the general path's exactly: every compared column is a text column of the
table, one of them has a BM25 index and a value with at least one token (a value
without tokens, ``''`` or punctuation only, is left to the general path, which scans),
every projected column exists, and the result names are unique. The result has the
general path's schema: ``*`` is the visible columns (never ``_id``), a column keeps the
table's type, an alias names it as DataFusion folds it. Rows come in ``_id`` order; a
LIMIT keeps the first ones. Anything else returns None and the general path runs.

``SELECT <columns or *> FROM exact_match('t', 'col', 'v') [LIMIT n]`` is the same lookup
over the function's relation: ``_id``, a NULL ``score FLOAT`` and the table's columns
but its vector columns (``*`` is all of them, in that order). It is taken under the same
conditions; whatever the function would refuse (an unknown table or column, a table with
its own ``score`` column) is left to the general path, which refuses it as before.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

import pyarrow as pa

from quiver.flight_server.sql.analysis import PointLookup
from quiver.superfile.fts.tokenizer import tokenize
from quiver.supertable import lookup
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.snapshot import Snapshot

# Statements this process answered by a point lookup: what a caller checks to know the
# path was taken.
RUNS: Counter[str] = Counter()
_runs_lock = threading.Lock()


@dataclass(frozen=True)
class PointPlan:
    """A point lookup judged against one snapshot: the indexed equality that finds the
    rows, the others checked on them, the table columns read and the result's schema."""

    snap: Snapshot
    column: str
    value: str
    also: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]
    schema: pa.Schema
    limit: int | None
    # Positions of the result's NULL ``score`` columns (an exact_match relation's), which
    # ``columns`` leaves out.
    scores: tuple[int, ...] = ()

    def run(self, files: Collection[str] | None = None) -> pa.Table:
        """The result rows (only those in ``files``, paths, when given)."""
        with _runs_lock:
            RUNS["statements"] += 1
        # Some column is read even when only scores are asked for: it counts the rows.
        read = self.columns or (ID_COLUMN,)
        rows = lookup.equal_rows(self.snap, self.column, self.value, read,
                                 also=self.also, files=files, limit=self.limit)
        arrays = list(rows.columns) if self.columns else []
        for i in self.scores:
            arrays.insert(i, pa.nulls(rows.num_rows, SCORE.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def note(self) -> str:
        """What EXPLAIN says of it."""
        shown = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        more = f" and {len(self.also)} more equalities checked on its rows" if self.also \
            else ""
        limit = f" limit={self.limit}" if self.limit is not None else ""
        return (f"point lookup: {self.snap.name}.{self.column} = {shown!r} through its BM25 "
                f"index{more}, columns={list(self.columns)}{limit}; answered without "
                "DataFusion (the plan above is the general path's)")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


# The exact_match relation's score column (NULL: its rows are not ranked).
SCORE = pa.field("score", pa.float32())


def plan(point: PointLookup, snap: Snapshot) -> PointPlan | None:
    """The point lookup of ``point`` over ``snap``, or None when the general path must
    answer (see the module docstring)."""
    if point.function:
        return _function_plan(point, snap)
    schema = snap.schema
    names = set(schema.names)
    fts = snap.manifest.spec.fts
    for column, _ in point.equalities:
        if column not in names or not _is_text(schema.field(column).type):
            return None
    driver = next(((c, v) for c, v in point.equalities if c in fts and tokenize(v)), None)
    if driver is None:
        return None
    expanded = _expand(point, schema.names, {*names, ID_COLUMN})
    if expanded is None:
        return None
    columns, outputs = expanded
    full = snap.manifest.schema
    fields = [full.field(c).with_name(out) for c, out in zip(columns, outputs, strict=True)]
    also = list(point.equalities)
    also.remove(driver)
    return PointPlan(snap, driver[0], driver[1], tuple(also), tuple(columns),
                     pa.schema(fields), point.limit)


def _expand(point: PointLookup, star: list[str], known: set[str]
            ) -> tuple[list[str], list[str]] | None:
    """The projections' source columns and result names, ``*`` standing for ``star``;
    None when one names a column not ``known`` or two results share a name."""
    sources: list[str] = []
    outputs: list[str] = []
    for source, out in point.projections:
        if source is None or out is None:
            sources += star
            outputs += star
        elif source in known:
            sources.append(source)
            outputs.append(out)
        else:
            return None
    if len(set(outputs)) != len(outputs):
        return None
    return sources, outputs


def _function_plan(point: PointLookup, snap: Snapshot) -> PointPlan | None:
    """``plan`` for the relation of ``exact_match(table, column, value)``."""
    schema = snap.schema
    spec = snap.manifest.spec
    ((column, value),) = point.equalities
    if "score" in schema.names or column not in schema.names or \
            not _is_text(schema.field(column).type) or column not in spec.fts or \
            not tokenize(value):
        return None
    relation = [ID_COLUMN, SCORE.name] + [c for c in schema.names if c not in spec.vector]
    expanded = _expand(point, relation, set(relation))
    if expanded is None:
        return None
    sources, outputs = expanded
    full = snap.manifest.schema
    fields = [(SCORE if c == SCORE.name else full.field(c)).with_name(out)
              for c, out in zip(sources, outputs, strict=True)]
    scores = tuple(i for i, c in enumerate(sources) if c == SCORE.name)
    columns = tuple(c for c in sources if c != SCORE.name)
    return PointPlan(snap, column, value, (), columns, pa.schema(fields), point.limit, scores)
