"""Scans from decoded rows kept in memory: the same answers as Parquet scans, taken only
once every file of a view is decoded, keyed so that deletes and new versions show."""

from __future__ import annotations

import pyarrow as pa
import pytest

from quiver import catalog
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql.decoded import DecodedRows
from quiver.flight_server.sql.views import MEMORY_SUFFIX
from tests.supertable.conftest import docs_schema, make_docs

QUERIES = [
    "SELECT _id, title, year FROM docs ORDER BY _id",
    "SELECT year, count(*) AS n FROM docs GROUP BY year ORDER BY year",
    "SELECT count(*) AS n FROM docs WHERE title LIKE '%rust%'",
    "SELECT _id FROM docs WHERE year BETWEEN 2005 AND 2010 ORDER BY _id",
]


def _rows(t: pa.Table) -> list[dict]:
    return t.to_pylist()


@pytest.fixture()
def root(tmp_path):
    con = catalog.connect(str(tmp_path / "root"))
    docs = con.create_table("docs", docs_schema())
    for seed in range(4):
        docs.append(make_docs(100, seed=seed))
        docs.commit()
    docs.delete([("year", "<", 2003)])
    yield con
    con.close()


def _scan_view(engine: SqlEngine, sql: str) -> str:
    plan = "\n".join(engine.execute("EXPLAIN " + sql).column(1).to_pylist())
    return "memory" if MEMORY_SUFFIX in plan else "parquet"


def test_decoded_scans_answer_exactly_as_parquet_scans(root):
    parquet = SqlEngine(root, memory_cache_bytes=0)
    cached = SqlEngine(root, memory_cache_bytes=64 << 20)
    try:
        first = [_rows(cached.execute(q)) for q in QUERIES]
        cached.decoded.wait()
        assert _scan_view(cached, QUERIES[0]) == "memory"
        assert _scan_view(parquet, QUERIES[0]) == "parquet"
        for q, cold in zip(QUERIES, first, strict=True):
            want = _rows(parquet.execute(q))
            assert cold == want, q
            assert _rows(cached.execute(q)) == want, q
    finally:
        cached.close()


def test_deletes_and_appends_are_seen_through_decoded_rows(root):
    engine = SqlEngine(root, memory_cache_bytes=64 << 20)
    try:
        engine.execute(QUERIES[0])
        engine.decoded.wait()
        docs = root.open_table("docs")
        gone = docs.delete([("year", "=", 2010)])
        assert gone > 0
        docs.append(make_docs(30, seed=9))
        docs.commit()
        got = engine.execute(QUERIES[0])
        want = docs.to_arrow(with_id=True).select(["_id", "title", "year"]).sort_by("_id")
        assert got.to_pylist() == want.to_pylist()
        engine.decoded.wait()
        assert engine.execute(QUERIES[0]).to_pylist() == want.to_pylist()
        assert _scan_view(engine, QUERIES[0]) == "memory"
    finally:
        engine.close()


def test_a_table_beyond_the_budget_share_is_never_decoded(root):
    engine = SqlEngine(root, memory_cache_bytes=1024)
    try:
        engine.execute(QUERIES[1])
        engine.decoded.wait()
        assert engine.decoded.nbytes == 0
        assert _scan_view(engine, QUERIES[1]) == "parquet"
    finally:
        engine.close()


def test_least_recently_used_rows_leave_first_within_the_budget():
    cache = DecodedRows(budget=3000)
    rows = pa.table({"x": pa.array(range(125), pa.int64())})  # 1000 bytes
    for i in range(4):
        cache.put(("t", f"f{i}", 0), rows)
        if i == 1:
            assert cache.get(("t", "f0", 0)) is not None  # f0 becomes the most recent
    assert cache.nbytes <= 3000
    assert cache.get(("t", "f1", 0)) is None
    assert cache.get(("t", "f0", 0)) is not None
    assert cache.get(("t", "f3", 0)) is not None


def test_a_failed_decode_leaves_scans_on_parquet():
    cache = DecodedRows(budget=1 << 20)

    def broken() -> pa.Table:
        raise OSError("gone")

    cache.schedule(("t", "f", 0), broken)
    cache.wait()
    assert cache.get(("t", "f", 0)) is None
    cache.close()
