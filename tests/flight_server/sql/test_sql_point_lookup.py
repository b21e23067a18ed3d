"""The point-lookup path (``SELECT … FROM t WHERE <indexed text> = 'v' [AND …] [LIMIT n]``
answered without DataFusion) returns exactly what the general path returns.

Oracles: the same engine with point lookups off (DataFusion, through the index rewrite),
and the equality written as a closed range (a plain scan no index path takes). Tables of
several superfiles with deletes and updates, and a table whose rows sit in write-log
files without indexes, on memory and local roots.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine, analysis, point
from quiver.flight_server.sql.errors import SqlError
from quiver.supertable import interrupt as interrupts
from quiver.supertable import lookup
from quiver.supertable.errors import WorkCancelledError, WorkTimeoutError
from quiver.supertable.manifest import ID_COLUMN
from quiver.supertable.table import TableOptions

SCHEMA = pa.schema([("name", pa.string()), ("note", pa.string()), ("kind", pa.string()),
                    ("year", pa.int32())])
# Values that differ from each other only in what exact equality sees: case, word order,
# spacing, punctuation, accents, unicode forms; duplicates; words of longer values.
NAMES = [
    "requests", "Requests", "REQUESTS", "requests-oauthlib", "requests oauthlib",
    "oauthlib requests", "requests  oauthlib", "requests!", "!requests", "requests.",
    "py-requests", "requests_toolbelt", "it's", "it s", "its", "a/b\\c", "50% off",
    "straße", "STRASSE", "strasse", "café", "cafe\u0301", "naïve café", "日本語 テキスト",
    "emoji 🚀 rocket", "rocket 🚀", "x", "x x", "x x x", "tab\there", "tab here",
    "requests", "requests", "oauthlib", "",
    "   ", "--", "semi;colon", "quote\"double", "new\nline", "new line",
]
NOTES = ["alpha beta", "beta alpha", "Alpha Beta", "alpha", "", None]
KINDS = ["lib", "app", "Lib", None]
# Absent from every table: unknown words, known words in new combinations.
ABSENT = ["zzz nothing here", "requests oauthlib toolbelt", "oauthlib oauthlib",
          "requests-", "café café", "日本語", "REQUESTS!", "x x x x", "tab"]


def _rows(start: int, n: int) -> pa.Table:
    names = [NAMES[(start + i) % len(NAMES)] for i in range(n)]
    # A few NULL names among the rows.
    names = [None if (start + i) % 17 == 5 else v for i, v in enumerate(names)]
    return pa.table({
        "name": names,
        "note": [NOTES[(start + i) % len(NOTES)] for i in range(n)],
        "kind": [KINDS[(start + i) % len(KINDS)] for i in range(n)],
        "year": pa.array([2000 + (start + i) % 7 for i in range(n)], pa.int32()),
    }, schema=SCHEMA)


LOGGED = TableOptions(write_log_rows=1000, fold_rows=10**9, fold_files=10**6,
                      fold_age_s=3600.0)


def _build(con: catalog.Connection, logged: catalog.Connection) -> None:
    items = con.create_table("items", SCHEMA, fts=["name", "note"], vector={})
    for i in range(4):
        items.append(_rows(i * 90, 90))
        items.commit()
    items.delete([("year", "=", 2003)])
    items.update([("year", "=", 2005)], {"name": "updated name"})
    items.update([("kind", "=", "app"), ("year", "=", 2001)], {"name": "requests"})
    log = logged.create_table("logged", SCHEMA, fts=["name", "note"], vector={})
    log.append(_rows(0, 120))
    for i in range(6):
        log.append(_rows(200 + i * 7, 7))
    log.delete([("year", "=", 2002)])
    log.update([("year", "=", 2004)], {"name": "requests"})


@pytest.fixture(scope="module", params=["memory", "local"])
def engines(request, tmp_path_factory):
    if request.param == "memory":
        uri = f"memory://point{uuid.uuid4().hex}"
    else:
        uri = str(tmp_path_factory.mktemp("point") / "root")
    con = catalog.connect(uri)
    logged = catalog.connect(uri, table_options=LOGGED)
    _build(con, logged)
    assert any(not f.indexed for f in con.open_table("logged").snapshot().files)
    assert len(con.open_table("items").snapshot().files) > 1
    fast = SqlEngine(con, memory_cache_bytes=0)
    general = SqlEngine(con, memory_cache_bytes=0, point_lookups=False)
    yield fast, general
    fast.close()
    general.close()
    logged.close()
    con.close()
    if request.param == "memory":
        drop_memory_store(uri)


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _taken(engine: SqlEngine, sql: str, params=None) -> tuple[pa.Table, int]:
    before = point.RUNS["statements"]
    got = engine.execute(sql, params)
    return got, point.RUNS["statements"] - before


def _same(fast: SqlEngine, general: SqlEngine, sql: str, params=None) -> tuple[pa.Table, int]:
    got, runs = _taken(fast, sql, params)
    want = general.execute(sql, params)
    assert got.schema.equals(want.schema), (sql, got.schema, want.schema)
    # Without ORDER BY the order of rows is the engine's: the general path's varies.
    assert _sorted(got) == _sorted(want), sql
    assert fast.schema(sql, params).equals(want.schema), sql
    return got, runs


def _sorted(t: pa.Table) -> list[tuple]:
    return sorted(zip(*(c.to_pylist() for c in t.columns), strict=True), key=repr)


VALUES = sorted({v for v in NAMES} | set(ABSENT) | {"updated name"})
PROJECTIONS = ["*", "_id, name", "name AS n, year, kind", "i.*, i._id", "year"]


@pytest.mark.parametrize("table", ["items", "logged"])
def test_point_lookup_equals_the_general_path_and_the_scan_for_every_value(engines, table):
    fast, general = engines
    taken = 0
    for value in VALUES:
        for proj in PROJECTIONS:
            sql = f"SELECT {proj} FROM {table} AS i WHERE name = {_lit(value)}"
            got, runs = _same(fast, general, sql)
            taken += runs
            scan = fast.execute(f"SELECT {proj} FROM {table} AS i WHERE "
                                f"name >= {_lit(value)} AND name <= {_lit(value)}")
            assert _sorted(got) == _sorted(scan), sql
            if runs and ID_COLUMN in got.column_names:
                ids = got.column(ID_COLUMN).to_pylist()
                assert ids == sorted(ids), sql
        live = fast.execute(f"SELECT name FROM {table}").column(0).to_pylist()
        count = fast.execute(f"SELECT count(*) AS c FROM {table} WHERE name = {_lit(value)}")
        assert count.column(0)[0].as_py() == live.count(value)
    # Every value with a word goes the point path; '' and punctuation-only ones do not.
    words = [v for v in VALUES if any(ch.isalnum() for ch in v)]
    assert taken == len(words) * len(PROJECTIONS)


def test_duplicates_case_and_punctuation_are_exact(engines):
    fast, general = engines
    got, runs = _same(fast, general, "SELECT name, kind FROM items WHERE name = 'requests'")
    assert runs == 1 and got.num_rows > 3
    assert set(got.column("name").to_pylist()) == {"requests"}
    for value in ("Requests", "requests!", "requests oauthlib", "straße", "café"):
        got, runs = _same(fast, general, f"SELECT name FROM items WHERE name = {_lit(value)}")
        assert runs == 1 and set(got.column(0).to_pylist()) == {value}
    got, runs = _same(fast, general, "SELECT * FROM items WHERE name = 'cafe\u0301'")
    assert runs == 1 and set(got.column("name").to_pylist()) == {"cafe\u0301"}


def test_values_absent_from_the_index_return_no_rows_through_the_point_path(engines):
    fast, general = engines
    for value in ABSENT:
        got, runs = _same(fast, general, f"SELECT * FROM items WHERE name = {_lit(value)}")
        assert runs == 1 and got.num_rows == 0, value


def test_null_and_wordless_values_go_the_general_path(engines):
    fast, general = engines
    for sql, params in [("SELECT * FROM items WHERE name = NULL", None),
                        ("SELECT * FROM items WHERE name = ?", [None]),
                        ("SELECT * FROM items WHERE name = ''", None),
                        ("SELECT * FROM items WHERE name = '--'", None)]:
        _, runs = _same(fast, general, sql, params)
        assert runs == 0, sql
    assert fast.execute("SELECT * FROM items WHERE name = NULL").num_rows == 0
    assert fast.execute("SELECT * FROM items WHERE name = ''").num_rows > 0


def test_bound_parameters_take_the_point_path(engines):
    fast, general = engines
    for value in ("requests", "it's", "日本語 テキスト", "nothing at all"):
        got, runs = _same(fast, general, "SELECT _id, name FROM items WHERE name = ?", [value])
        assert runs == 1
        assert set(got.column("name").to_pylist()) <= {value}


def test_more_equalities_are_all_checked(engines):
    fast, general = engines
    for where in ["name = 'requests' AND kind = 'lib'",
                  "kind = 'Lib' AND 'requests' = name",
                  "name = 'requests' AND note = 'alpha beta'",
                  "(name = 'oauthlib requests') AND (note = 'beta alpha') AND kind = 'lib'",
                  "name = 'requests' AND name = 'Requests'",
                  "note = 'alpha' AND name = 'x x'",
                  "name = 'requests' AND kind = 'nothing'"]:
        for table in ("items", "logged"):
            got, runs = _same(fast, general, f"SELECT * FROM {table} WHERE {where}")
            assert runs == 1, where
    # A text column without an index is compared, never searched.
    got, runs = _same(fast, general, "SELECT * FROM items WHERE kind = 'lib'")
    assert runs == 0 and got.num_rows > 0


def test_limit_keeps_the_first_rows_by_id(engines):
    fast, general = engines
    every = fast.execute("SELECT _id, name FROM items WHERE name = 'requests'")
    assert every.num_rows > 3
    for n in (0, 1, 2, every.num_rows, every.num_rows + 5):
        got, runs = _taken(fast, f"SELECT _id, name FROM items WHERE name = 'requests' LIMIT {n}")
        assert runs == 1
        assert got.to_pylist() == every.slice(0, n).to_pylist()
        want = general.execute(f"SELECT _id, name FROM items WHERE name = 'requests' "
                               f"ORDER BY _id LIMIT {n}")
        assert got.to_pylist() == want.to_pylist()
        assert got.schema.equals(want.schema)


def test_other_shapes_go_the_general_path(engines):
    fast, general = engines
    for sql in ["SELECT * FROM items WHERE name = 'requests' OR name = 'x'",
                "SELECT * FROM items WHERE name = 'requests' ORDER BY year",
                "SELECT * FROM items WHERE name = 'requests' LIMIT 2 OFFSET 1",
                "SELECT DISTINCT name FROM items WHERE name = 'requests'",
                "SELECT upper(name) FROM items WHERE name = 'requests'",
                "SELECT count(*) FROM items WHERE name = 'requests'",
                "SELECT * FROM items WHERE name LIKE 'requests'",
                "SELECT * FROM items WHERE name = 'requests' AND year = 2001",
                "SELECT * FROM items WHERE name = 'requests' AND year > 2001",
                "SELECT * FROM items WHERE name IN ('requests', 'x')",
                "SELECT * FROM items WHERE name = 'requests' AND TRUE",
                "SELECT * FROM items WHERE name = 'requests' || ''",
                "SELECT * FROM (SELECT * FROM items) AS s WHERE name = 'requests'"]:
        got, runs = _taken(fast, sql)
        assert runs == 0, sql
        want = general.execute(sql)
        # Which rows a LIMIT without ORDER BY keeps is the engine's choice.
        assert _sorted(got) == _sorted(want) if "LIMIT" not in sql else \
            got.num_rows == want.num_rows, sql


def test_equivalent_statements_off_the_point_path_agree(engines):
    fast, _ = engines
    for value in ("requests", "Requests", "oauthlib requests", "straße", "nothing"):
        got, runs = _taken(fast, f"SELECT * FROM items WHERE name = {_lit(value)}")
        assert runs == 1
        same, off = _taken(fast, f"SELECT * FROM items WHERE name = {_lit(value)} AND TRUE")
        assert off == 0
        assert got.schema.equals(same.schema) and _sorted(got) == _sorted(same)


def test_errors_are_the_general_paths(engines):
    fast, general = engines
    for sql in ["SELECT * FROM nosuch WHERE name = 'requests'",
                "SELECT missing FROM items WHERE name = 'requests'",
                "SELECT * FROM items WHERE missing = 'requests'",
                "SELECT name, name FROM items WHERE name = 'requests'",
                "SELECT * FROM items AS i WHERE items.name = 'requests'",
                'SELECT * FROM "__quiver_items" WHERE name = \'requests\'',
                "SELECT * FROM \"items@0123abcd@v1\" WHERE name = 'requests'"]:
        assert_same_error(fast, general, sql)


def assert_same_error(fast: SqlEngine, general: SqlEngine, sql: str) -> None:
    """Both engines refuse ``sql`` with the same error class and message."""
    with pytest.raises(SqlError) as fast_error:
        fast.execute(sql)
    with pytest.raises(SqlError) as general_error:
        general.execute(sql)
    assert type(fast_error.value) is type(general_error.value), sql
    assert str(fast_error.value) == str(general_error.value), sql


def test_explain_notes_the_point_lookup(engines):
    fast, general = engines
    plan = fast.execute("EXPLAIN SELECT * FROM items WHERE name = 'requests'")
    notes = [p for k, p in zip(plan.column(0).to_pylist(), plan.column(1).to_pylist(),
                               strict=True) if k == "quiver_index_path"]
    assert any(n.startswith("point lookup: items.name = 'requests'") for n in notes)
    plan = general.execute("EXPLAIN SELECT * FROM items WHERE name = 'requests'")
    assert not any("point lookup" in str(p) for p in plan.column(1).to_pylist())


def test_a_new_version_is_seen_at_once(engines):
    fast, general = engines
    table = fast.connection.open_table("items")
    marker = f"fresh {uuid.uuid4().hex[:8]}"
    assert fast.execute(f"SELECT * FROM items WHERE name = {_lit(marker)}").num_rows == 0
    table.append(_rows(0, 3).set_column(0, "name", pa.array([marker] * 3)))
    table.commit()
    got, runs = _same(fast, general, f"SELECT _id, name FROM items WHERE name = {_lit(marker)}")
    assert runs == 1 and got.num_rows == 3
    table.delete([("name", "=", marker)])
    got, runs = _same(fast, general, f"SELECT _id, name FROM items WHERE name = {_lit(marker)}")
    assert runs == 1 and got.num_rows == 0


def test_read_of_some_files_returns_only_their_rows(engines):
    fast, general = engines
    snap = fast.connection.open_table("items").snapshot()
    paths = [f.path for f in snap.files if f.live_rows > 0]
    sql = "SELECT _id, name FROM items WHERE name = 'requests'"
    every = fast.execute(sql)
    parts = []
    for path in paths:
        before = point.RUNS["statements"]
        got = fast.sql_files(sql, "items", snap.version, [path]).read_all()
        assert point.RUNS["statements"] == before + 1
        want = general.sql_files(sql, "items", snap.version, [path]).read_all()
        assert _sorted(got) == _sorted(want)
        parts.append(got)
    assert sorted(pa.concat_tables(parts).column(ID_COLUMN).to_pylist()) == \
        every.column(ID_COLUMN).to_pylist()


def test_time_limit_and_cancel_stop_a_point_lookup(engines):
    fast, _ = engines
    sql = "SELECT * FROM items WHERE name = 'requests'"
    stopped = interrupts.Interrupt()
    stopped.cancel()
    before = point.RUNS["statements"]
    with interrupts.scope(stopped), pytest.raises(WorkCancelledError):
        fast.execute(sql)
    late = interrupts.Interrupt(1e-9)
    with interrupts.scope(late), pytest.raises(WorkTimeoutError):
        fast.execute(sql)
    assert point.RUNS["statements"] - before <= 2


def test_many_candidates_are_compared_then_fetched(engines, monkeypatch):
    """The branches for many candidates (compared by a compute call, the other columns
    read for the equal rows only) answer as the few-candidate ones do."""
    fast, general = engines
    monkeypatch.setattr(lookup, "FETCH_TOGETHER_MAX", 0)
    monkeypatch.setattr(lookup, "_PY_COMPARE_MAX", 0)
    for table in ("items", "logged"):
        for value in ("requests", "Requests", "x x", "nothing here", "updated name"):
            for proj in ("*", "_id", "_id, kind, name"):
                _, runs = _same(fast, general,
                                f"SELECT {proj} FROM {table} WHERE name = {_lit(value)} "
                                "AND note = 'alpha beta'")
                assert runs == 1


def test_a_column_named_star_is_a_column_not_every_column(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    schema = pa.schema([("*", pa.string()), ("name", pa.string())])
    table = con.create_table("odd", schema, fts=["name"], vector={})
    table.append(pa.table({"*": ["star", "other"], "name": ["alpha", "beta"]},
                          schema=schema))
    table.commit()
    fast = SqlEngine(con, memory_cache_bytes=0)
    general = SqlEngine(con, memory_cache_bytes=0, point_lookups=False)
    try:
        got, runs = _same(fast, general, "SELECT \"*\" FROM odd WHERE name = 'alpha'")
        assert runs == 1 and got.column_names == ["*"]
        assert got.to_pylist() == [{"*": "star"}]
        got, runs = _same(fast, general, "SELECT * FROM odd WHERE name = 'beta'")
        assert runs == 1 and got.column_names == ["*", "name"]
    finally:
        fast.close()
        general.close()
        con.close()


@pytest.mark.parametrize("sql, projections, equalities, limit", [
    ("SELECT * FROM t WHERE name = 'a'", ((None, None),), (("name", "a"),), None),
    ("SELECT s.name AS N, \"Big\", s.* FROM t s WHERE 'x' = s.name AND (kind = 'it''s') "
     "LIMIT 3", (("name", "n"), ("Big", "Big"), (None, None)),
     (("name", "x"), ("kind", "it's")), 3),
    ("SELECT _id FROM t WHERE t.name = 'a\\b' LIMIT 0", (("_id", "_id"),),
     (("name", "a\\b"),), 0),
])
def test_analysis_reads_the_point_lookup_shape(sql, projections, equalities, limit):
    point_ = analysis.analyse(sql).point
    assert point_ is not None
    assert (point_.projections, point_.equalities, point_.limit) == \
        (projections, equalities, limit)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM t WHERE name = 'a' OR name = 'b'",
    "SELECT * FROM t WHERE name = N'a'",
    "SELECT * FROM t WHERE name = E'a'",
    "SELECT * FROM t WHERE name = 'a' LIMIT 2 OFFSET 1",
    "SELECT DISTINCT * FROM t WHERE name = 'a'",
    "SELECT * FROM t WHERE name = NULL",
    "SELECT * FROM t WHERE name = 5",
    "SELECT * FROM t WHERE name = 'a' || 'b'",
    "SELECT * FROM t WHERE lower(name) = 'a'",
    "SELECT * FROM public.t WHERE name = 'a'",
    "SELECT * FROM t AS u WHERE t.name = 'a'",
    "SELECT * FROM t",
    "SELECT * FROM t, u WHERE name = 'a'",
    "SELECT * FROM t WHERE name = 'a' ORDER BY name",
    "SELECT * FROM t WHERE name = 'a' FETCH FIRST 2 ROWS ONLY",
    "SELECT name AS x, kind AS x FROM t WHERE name = 'a'",
    "WITH t AS (SELECT 'a' AS name) SELECT * FROM t WHERE name = 'a'",
])
def test_analysis_leaves_other_shapes_alone(sql):
    assert analysis.analyse(sql).point is None
