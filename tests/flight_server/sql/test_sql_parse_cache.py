"""Parsed statements are shared by text: a schema request and its run parse once."""

from __future__ import annotations

import pytest

from quiver.flight_server.sql import parse as sqlparse
from quiver.flight_server.sql.errors import SqlSyntaxError


def test_the_same_short_text_shares_one_tree_and_explain_reuses_it() -> None:
    text = "SELECT a, count(*) FROM t WHERE b = 'x' GROUP BY a"
    first, again = sqlparse.parse(text), sqlparse.parse(text)
    assert first.expr is again.expr
    explained = sqlparse.parse(f"EXPLAIN {text}")
    assert explained.explain and explained.expr is first.expr


def test_long_texts_are_parsed_each_time() -> None:
    values = ", ".join(f"({i}, 'v{i}')" for i in range(1500))
    text = f"INSERT INTO t VALUES {values}"
    assert len(text) > sqlparse.CACHED_BODY_CHARS
    assert sqlparse.parse(text).expr is not sqlparse.parse(text).expr


def test_text_that_does_not_parse_reports_its_error_every_time() -> None:
    assert sqlparse.parse("SELEC 1").expr is None
    assert sqlparse.parse("SELEC 1").error
    with pytest.raises(SqlSyntaxError, match="one statement at a time"):
        sqlparse.parse("SELECT 1; SELECT 2")
    with pytest.raises(SqlSyntaxError, match="one statement at a time"):
        sqlparse.parse("SELECT 1; SELECT 2")
