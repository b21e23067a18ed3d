"""One ADBC bulk ingest is one commit: a storage outage in the middle of a create leaves
no table (so the retried create succeeds), in the middle of an append adds nothing, and
a ``quiver serve`` killed with SIGKILL mid-create leaves no table once restarted; ``gc``
then removes what the dead load staged."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import open_store
from quiver.flight_server.service.ingest import CHUNK_ROWS
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql.connection import SqlConnection
from tests.flight_server.conftest import start_server
from tests.supertable.faulty_store import FaultyStore, Rule

CHUNKS = 3


def _rows(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table({"id": ids, "half": ids.astype(np.float64) / 2})


def _stream(chunks: int = CHUNKS, pause_s: float = 0.0) -> pa.RecordBatchReader:
    data = _rows(0, 1)

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(chunks):
            yield from _rows(i * CHUNK_ROWS, CHUNK_ROWS).to_batches(max_chunksize=CHUNK_ROWS)
            time.sleep(pause_s)

    return pa.RecordBatchReader.from_batches(data.schema, batches())


@pytest.fixture(params=["local", "s3"])
def faulty(request, tmp_path) -> Iterator[tuple[FaultyStore, str]]:
    """An in-process server over a root whose storage fails on request."""
    if request.param == "local":
        store = FaultyStore(open_store(str(tmp_path / "root")))
    else:
        s3 = request.getfixturevalue("s3_server")
        store = FaultyStore(open_store(f"s3://{s3.new_bucket()}/quiver", **s3.options()))
    conn = SqlConnection(catalog.Connection(store))
    server = QuiverFlightServer(conn, "grpc://127.0.0.1:0")
    try:
        yield store, f"grpc://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        conn.close()


def _data_puts(store: FaultyStore) -> int:
    return sum(1 for op, path in store.write_log() if op == "put" and "/data/" in path)


def test_a_create_cut_by_a_storage_outage_leaves_no_table_and_a_retry_succeeds(faulty):
    store, uri = faulty
    # Storage goes away at the third data object (two chunks' files are uploaded by
    # then) and stays away: the failed load cannot tidy up after itself either.
    store.add(Rule(op="put", path="*/data/*", calls={3}, action="hook",
                   hook=lambda: store.add(Rule(op="write"))))
    with adbc.connect(uri, autocommit=True) as db, db.cursor() as cur:
        with pytest.raises(adbc.Error):
            cur.adbc_ingest("big", _stream(), mode="create")
        assert _data_puts(store) >= 2
        cur.execute("SHOW TABLES")
        assert cur.fetchall() == []
        store.clear()
        assert cur.adbc_ingest("big", _stream(), mode="create") == CHUNKS * CHUNK_ROWS
        cur.execute("SELECT count(*), count(DISTINCT id) FROM big")
        assert cur.fetchall() == [(CHUNKS * CHUNK_ROWS, CHUNKS * CHUNK_ROWS)]
    # What the failed create uploaded goes with gc (its staged folder is not a table).
    conn = catalog.Connection(store.inner)
    conn.purge_dropped(staging_grace_s=0)
    assert len({m.path.split("/")[1] for m in store.inner.list("tables/")}) == 1
    assert conn.list_tables() == ["big"]


def test_an_append_cut_by_a_storage_outage_adds_nothing(faulty):
    store, uri = faulty
    with adbc.connect(uri, autocommit=True) as db, db.cursor() as cur:
        assert cur.adbc_ingest("t", _rows(0, 10), mode="create") == 10
        # Past the first chunk's files (each chunk is two superfiles and their summaries).
        store.add(Rule(op="put", path="*/data/*", calls={6}))
        with pytest.raises(adbc.Error):
            cur.adbc_ingest("t", _stream(), mode="append")
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchall() == [(10,)]
        store.clear()
        assert cur.adbc_ingest("t", _stream(), mode="append") == CHUNKS * CHUNK_ROWS
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchall() == [(10 + CHUNKS * CHUNK_ROWS,)]


def test_a_server_killed_mid_create_leaves_no_table_and_gc_removes_the_staged_files(
        tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, log_path=tmp_path / "first.log")
    failure: list[BaseException] = []

    def load() -> None:
        try:
            with adbc.connect(server.uri, autocommit=True) as db, db.cursor() as cur:
                cur.adbc_ingest("big", _stream(chunks=6, pause_s=1.0), mode="create")
        except BaseException as exc:  # expected: the server dies under it
            failure.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        deadline = time.monotonic() + 60
        # Wait until two chunks' superfiles are on storage, then kill the server.
        while time.monotonic() < deadline and \
                len(list(root.glob("tables/*/data/*.parquet"))) < 2:
            time.sleep(0.05)
        assert len(list(root.glob("tables/*/data/*.parquet"))) >= 2
        server.stop(signal.SIGKILL)
    finally:
        loader.join(timeout=60)
        server.stop()
    assert failure, "the load must fail when its server dies"
    assert list(root.glob("tables/*/data/*.parquet"))  # the dead load's files remain
    again = start_server(root, log_path=tmp_path / "second.log")
    try:
        with adbc.connect(again.uri, autocommit=True) as db, db.cursor() as cur:
            cur.execute("SHOW TABLES")
            assert cur.fetchall() == []
            assert cur.adbc_ingest("big", _stream(chunks=2), mode="create") == 2 * CHUNK_ROWS
    finally:
        again.stop()
    with catalog.connect(str(root)) as conn:
        conn.purge_dropped(staging_grace_s=0)
        holding = {p.relative_to(root / "tables").parts[0]
                   for p in root.glob("tables/**/*") if p.is_file()}
        assert len(holding) == 1
        assert conn.open_table("big").count() == 2 * CHUNK_ROWS


def test_an_insert_select_failing_in_a_later_part_adds_nothing(tmp_path, monkeypatch):
    from quiver.flight_server.sql import SqlEngine, statements
    from quiver.flight_server.sql.errors import SqlError

    engine = SqlEngine(catalog.connect(str(tmp_path / "root")))
    engine.execute("CREATE TABLE src (v BIGINT)")
    engine.execute("INSERT INTO src VALUES " + ", ".join(f"({i})" for i in range(40)))
    engine.execute(f"INSERT INTO src VALUES ({2**40})")  # does not fit an INT: sorts last
    engine.execute("CREATE TABLE dst (v INT)")
    monkeypatch.setattr(statements, "INSERT_PART_ROWS", 10)
    with pytest.raises(SqlError):
        engine.execute("INSERT INTO dst SELECT v FROM src ORDER BY v")
    assert engine.execute("SELECT count(*) FROM dst").column(0)[0].as_py() == 0
    table = engine.connection.open_table("dst")
    # Earlier parts were uploaded under reserved ids before the failure, then removed.
    assert table.refresh().operation == "reserve"
    assert not list(table.store.list(f"{table.prefix}/data/"))
    assert engine.execute("INSERT INTO dst SELECT v FROM src WHERE v < 40").column(0)[0] \
        .as_py() == 40
