"""Two ``quiver serve`` processes on one S3 root: writes through one are read through the
other, and a scan's endpoints are dealt over both advertised servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.sql.engine import CATALOG_RECHECK_S
from quiver.proto import flight_sql_pb2, pack
from tests.flight_server.conftest import REPO, ServerProcess, free_port, start_server

# Each ingest chunk is one superfile; a split needs at least this many rows per part.
PART_ROWS = 70_000


def _rows(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table({"id": ids, "half": ids.astype(np.float64) / 2})


@pytest.fixture
def pair(s3_server, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    bucket = s3_server.new_bucket("scaleout")
    root = f"s3://{bucket}/root"
    options = [a for k, v in s3_server.options().items()
               for a in ("--storage-option", f"{k}={v}")]
    ports = [free_port(), free_port()]
    advertise = [a for p in ports for a in ("--advertise", f"grpc://127.0.0.1:{p}")]
    started: list[ServerProcess] = []
    try:
        for i, port in enumerate(ports):
            # --max-staleness 0: every statement asks storage for the newest version (the
            # default on object storage shares one check per table per 0.2 s).
            started.append(start_server(root, *options, *advertise, "--max-staleness", "0",
                                        port=port,  # type: ignore[arg-type]
                                        log_path=tmp_path / f"server-{i}.log"))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    return client.get_flight_info(flight.FlightDescriptor.for_command(cmd))


def test_a_write_through_one_server_is_read_through_the_other(pair) -> None:
    writer, reader = pair
    with adbc.connect(writer.uri, autocommit=True) as a, adbc.connect(reader.uri,
                                                                      autocommit=True) as b:
        with a.cursor() as cur:
            assert cur.adbc_ingest("nums", _rows(0, 10), mode="create") == 10
        with b.cursor() as cur:
            cur.execute("SELECT count(*) AS n, sum(id) AS s FROM nums")
            assert cur.fetchall() == [(10, 45)]
        with a.cursor() as cur:
            cur.execute("INSERT INTO nums VALUES (100, 50.0)")
            cur.execute("DELETE FROM nums WHERE id < 5")
        # Every statement asks storage for the newest version: no wait, no retry.
        with b.cursor() as cur:
            cur.execute("SELECT id FROM nums ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == [5, 6, 7, 8, 9, 100]
        with a.cursor() as cur:
            assert cur.adbc_ingest("nums", _rows(7, 2), mode="replace") == 2
        # A table replaced under its name is another table: the other server rereads the
        # name's catalog entry at most CATALOG_RECHECK_S after it last read it.
        deadline = time.monotonic() + 10 * CATALOG_RECHECK_S
        seen: list[int] = []
        while time.monotonic() < deadline:
            with b.cursor() as cur:
                cur.execute("SELECT id FROM nums ORDER BY id")
                seen = [r[0] for r in cur.fetchall()]
            if seen == [7, 8]:
                break
            time.sleep(CATALOG_RECHECK_S / 4)
        assert seen == [7, 8]


def test_a_scan_is_dealt_over_both_servers_and_every_part_read_where_it_points(pair) -> None:
    writer, reader = pair
    with adbc.connect(writer.uri, autocommit=True) as a, a.cursor() as cur:
        cur.adbc_ingest("big", _rows(0, PART_ROWS), mode="create")
        cur.adbc_ingest("big", _rows(PART_ROWS, PART_ROWS), mode="append")
    client = flight.connect(reader.uri)
    info = _info(client, "SELECT id, half FROM big")
    assert info.total_records == 2 * PART_ROWS
    assert len(info.endpoints) == 2
    where = sorted(loc.uri.decode() for e in info.endpoints for loc in e.locations)
    assert where == sorted([writer.uri, reader.uri])
    parts = []
    for endpoint in info.endpoints:
        [location] = endpoint.locations
        with flight.connect(location) as there:
            parts.append(there.do_get(endpoint.ticket).read_all())
    assert all(p.num_rows > 0 for p in parts)
    got = pa.concat_tables(parts)
    assert got.num_rows == 2 * PART_ROWS
    assert np.array_equal(np.sort(got.column("id").to_numpy()), np.arange(2 * PART_ROWS))
    client.close()
    # The ADBC driver follows the locations itself and reads the same rows.
    with adbc.connect(reader.uri, autocommit=True) as b, b.cursor() as cur:
        cur.execute("SELECT id FROM big WHERE id % 1000 = 0")
        assert sorted(cur.fetch_arrow_table().column("id").to_pylist()) == \
            list(range(0, 2 * PART_ROWS, 1000))


def test_serve_refuses_an_advertised_location_that_is_not_a_grpc_address(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "quiver", "serve", "--root", str(tmp_path),
         "--port", "0", "--advertise", "http://somewhere"],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--advertise wants a location like grpc://host:port" in done.stderr
