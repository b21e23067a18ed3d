"""``INSERT … VALUES`` of plain literals is appended without planning a query, and stores
exactly what the same rows inserted through the SQL engine (``INSERT … SELECT * FROM
(VALUES …)``) store, or fails as that does."""

from __future__ import annotations

import pytest

from quiver import catalog
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql.errors import SqlError
from quiver.supertable.errors import TableError

CREATE = ("CREATE TABLE {} (i INT, b BIGINT, s VARCHAR, f DOUBLE, ok BOOLEAN, "
          "d DATE, ts TIMESTAMP, dec DECIMAL(10, 2))")
ROWS = [
    "(1, -5, 'it''s', 2, true, '2024-01-02', '2024-01-02 03:04:05', NULL)",
    "(NULL, 9223372036854775807, NULL, -3, false, NULL, NULL, NULL)",
    "(-2147483648, 0, '', NULL, NULL, '1999-12-31', '2000-01-01 00:00:00', NULL)",
]


@pytest.fixture
def engine():
    eng = SqlEngine(catalog.connect("memory://insert-literals"))
    eng.execute(CREATE.format("fast"))
    eng.execute(CREATE.format("planned"))
    yield eng
    eng.connection.drop_table("fast", missing_ok=True)
    eng.connection.drop_table("planned", missing_ok=True)


def _both(engine: SqlEngine, values: str) -> tuple[object, object]:
    out = []
    for sql in (f"INSERT INTO fast VALUES {values}",
                f"INSERT INTO planned SELECT * FROM (VALUES {values}) AS v"):
        try:
            out.append(engine.execute(sql).column(0).to_pylist())
        except (SqlError, TableError) as exc:
            out.append(type(exc))
    return out[0], out[1]


def test_literal_rows_store_what_the_engine_stores(engine):
    fast, planned = _both(engine, ", ".join(ROWS))
    assert fast == planned == [3]
    rows = [engine.execute(f"SELECT * FROM {t} ORDER BY b").to_pylist()
            for t in ("fast", "planned")]
    assert rows[0] == rows[1]
    assert rows[0][0]["s"] == "it's" and rows[0][2]["b"] == 9223372036854775807


@pytest.mark.parametrize("values", [
    "(2147483648, 1, 'x', 1, true, NULL, NULL, NULL)",  # out of INT's range
    "(1, 1, 'x', 1, 'not a bool', NULL, NULL, NULL)",
    "(1, 1, 'x', 1, true, 'not a date', NULL, NULL)",
    "(1, 1, 'x', 1, true, NULL, NULL, 7)",  # BIGINT into DECIMAL is refused either way
])
def test_literal_rows_that_do_not_fit_fail_as_through_the_engine(engine, values):
    fast, planned = _both(engine, values)
    assert isinstance(fast, type) and isinstance(planned, type)
    assert engine.execute("SELECT count(*) FROM fast").column(0)[0].as_py() == 0


def test_rows_mixing_kinds_in_a_column_still_insert(engine):
    fast, planned = _both(engine, "(1, 1, 'x', 1.5, true, NULL, NULL, 2.25), "
                                  "(2, 2, 'y', 2, false, NULL, NULL, 3)")
    assert fast == planned == [2]
    rows = [engine.execute(f"SELECT f, dec FROM {t} ORDER BY i").to_pylist()
            for t in ("fast", "planned")]
    assert rows[0] == rows[1]
