"""``literal_dnf``: WHERE clauses as table-layer DNF, exact (index paths) or implied
(file pruning)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from quiver.flight_server.sql import parse as sqlparse

SCHEMA = pa.schema([("year", pa.int32()), ("title", pa.string())])


def _any_fit(value, dtype) -> bool:
    return not isinstance(value, bool)


def _dnf(where: str, *, exact: bool):
    expr = sqlparse.parse(f"SELECT 1 FROM t WHERE {where}").expr
    ref = sqlparse.table_refs(expr)[0]
    node = ref.select.args["where"].this
    return sqlparse.literal_dnf(node, sqlparse.RefColumns(ref, SCHEMA), _any_fit, exact=exact)


@pytest.mark.parametrize("exact", [True, False])
def test_comparisons_in_lists_and_ranges_read_the_same_in_both_modes(exact) -> None:
    assert _dnf("year <> 3", exact=exact) == [[("year", "!=", 3)]]
    assert _dnf("2000 <= year", exact=exact) == [[("year", ">=", 2000)]]
    assert _dnf("(year = 1 OR year = 2) AND title = 'a'", exact=exact) == [
        [("year", "=", 1), ("title", "=", "a")], [("year", "=", 2), ("title", "=", "a")]]
    assert _dnf("title IN ('a', 'b')", exact=exact) == [[("title", "in", ["a", "b"])]]
    assert _dnf("year BETWEEN 1 AND 5", exact=exact) == [[("year", ">=", 1), ("year", "<=", 5)]]


def test_exact_mode_refuses_a_clause_it_cannot_express_whole() -> None:
    assert _dnf("year = 1 AND title LIKE 'a%'", exact=True) is None
    assert _dnf("year BETWEEN 1 AND length(title)", exact=True) is None


def test_implied_mode_keeps_the_parts_that_bound_the_columns() -> None:
    assert _dnf("year = 1 AND title LIKE 'a%'", exact=False) == [[("year", "=", 1)]]
    assert _dnf("year BETWEEN 1 AND length(title)", exact=False) == [[("year", ">=", 1)]]
    # Either side of an OR may let any row through, so an unknown side says nothing.
    assert _dnf("year = 1 OR title LIKE 'a%'", exact=False) is None


def test_too_many_alternatives_are_not_multiplied_out() -> None:
    years = " OR ".join(f"year = {i}" for i in range(8))
    titles = " OR ".join(f"title = 't{i}'" for i in range(5))
    where = f"({years}) AND ({titles})"  # 40 alternatives multiplied out
    assert _dnf(where, exact=True) is None
    # Implied: one side alone still bounds every passing row; the shorter one is kept.
    assert _dnf(where, exact=False) == [[("title", "=", f"t{i}")] for i in range(5)]
