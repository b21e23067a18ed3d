"""SQL scans on an S3 root read superfiles from the local disk cache once they are there."""

from __future__ import annotations

import pyarrow as pa

from quiver import catalog
from quiver.flight_server.sql import SqlEngine
from quiver.supertable.table import TableOptions
from tests.supertable.conftest import docs_schema, make_docs

QUERY = "SELECT _id, title, year FROM docs WHERE year >= 2005"


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


def _reads(engine: SqlEngine, sql: str) -> set[str]:
    """How the physical plan of ``sql`` reads its rows: "objects" (Parquet on S3) and/or
    "disk copies" (the disk cache's memory maps)."""
    explained = engine.execute(f"EXPLAIN {sql}")
    plan = "\n".join(explained.column("plan").to_pylist())
    return ({"objects"} if "file_type=parquet" in plan else set()) | (
        {"disk copies"} if "DatasetExec" in plan else set())


def _expected(con: catalog.Connection) -> pa.Table:
    """What QUERY returns, read through the table layer of ``con``."""
    rows = con.open_table("docs").to_arrow(["title", "year"], [("year", ">=", 2005)],
                                           with_id=True)
    return rows.select(["_id", "title", "year"])


def _connect(s3_server, uri: str, **options) -> catalog.Connection:
    return catalog.connect(uri, table_options=TableOptions(**options), **s3_server.options())


def _written(s3_server, appends: int) -> tuple[str, catalog.Connection]:
    """A root whose table ``docs`` another process wrote (its files are in no cache of
    the reader's), and that writer."""
    uri = f"s3://{s3_server.new_bucket()}/sql"
    writer = _connect(s3_server, uri, cache_bytes=0)
    t = writer.create_table("docs", docs_schema())
    for i in range(appends):
        t.append(make_docs(60, seed=i))
    return uri, writer


def test_scan_moves_from_s3_to_the_disk_copies_with_the_same_rows(s3_server, tmp_path) -> None:
    uri, writer = _written(s3_server, appends=3)
    # Tombstones: the per-file anti-join must still apply to the disk copies.
    assert writer.open_table("docs").delete([("year", "<", 2003)]) > 0
    want = _rows(_expected(writer))
    con = _connect(s3_server, uri, cache_dir=str(tmp_path / "cache"))
    t = con.open_table("docs")
    engine = SqlEngine(con)

    assert _reads(engine, QUERY) == {"objects"}  # the first view reads the objects
    assert _rows(engine.execute(QUERY)) == want
    assert t.pool.cache.wait_idle(60), "the copies into the disk cache did not finish"

    assert _reads(engine, QUERY) == {"disk copies"}
    assert _rows(engine.execute(QUERY)) == want
    assert engine.execute("SELECT count(*) FROM docs").column(0)[0].as_py() == \
        writer.open_table("docs").count()
    con.close()
    writer.close()


def test_a_new_version_keeps_reading_the_cached_files_and_the_new_one(s3_server,
                                                                     tmp_path) -> None:
    uri, writer = _written(s3_server, appends=1)
    # Every statement asks for a newer version, so the writer's commits show at once.
    con = _connect(s3_server, uri, cache_dir=str(tmp_path / "cache"), max_staleness_s=0)
    t = con.open_table("docs")
    engine = SqlEngine(con)
    engine.execute(QUERY)
    assert t.pool.cache.wait_idle(60)
    w = writer.open_table("docs")
    w.append(make_docs(50, seed=2))
    w.update([("year", "<", 2010)], {"year": 1999})
    want = _rows(_expected(writer))
    assert _rows(engine.execute(QUERY)) == want
    assert t.pool.cache.wait_idle(60)
    assert _reads(engine, QUERY) == {"disk copies"}
    assert _rows(engine.execute(QUERY)) == want
    con.close()
    writer.close()


def test_without_a_disk_cache_scans_keep_reading_s3(s3_server) -> None:
    _, con = _written(s3_server, appends=1)
    engine = SqlEngine(con)
    want = _rows(_expected(con))
    for _ in range(2):
        assert _rows(engine.execute(QUERY)) == want
        assert _reads(engine, QUERY) == {"objects"}
    con.close()


def test_scans_stay_right_while_a_small_cache_evicts_the_copies_views_read(s3_server,
                                                                           tmp_path) -> None:
    uri, writer = _written(s3_server, appends=4)
    want = _rows(_expected(writer))
    sizes = [f.size for f in writer.open_table("docs").snapshot().files]
    # Room for about two of the four files: copying the others evicts earlier copies,
    # some of them still read by registered views.
    con = _connect(s3_server, uri, cache_dir=str(tmp_path / "cache"),
                   cache_bytes=int(max(sizes) * 2.5))
    cache = con.open_table("docs").pool.cache
    engine = SqlEngine(con)
    for _ in range(6):
        assert _rows(engine.execute(QUERY)) == want
        assert cache.wait_idle(60)
    assert cache.stats.evictions >= 1
    assert "disk copies" in _reads(engine, QUERY)
    assert _rows(engine.execute(QUERY)) == want
    con.close()
    writer.close()
