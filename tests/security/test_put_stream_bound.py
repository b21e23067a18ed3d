"""One DoPut stream may not carry more than the server's ``max_put_bytes`` (its rows as
they decode, summed over the stream): an ingest or bulk append past it, however small
each batch, is refused with RESOURCE_EXHAUSTED and stores nothing, a table it would have
created included; streams within it are taken as before."""

from __future__ import annotations

from collections.abc import Iterator

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service.serve import ServeError, build_server
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect

LIMIT = 2 << 20


@pytest.fixture
def server(tmp_path) -> Iterator[QuiverFlightServer]:
    conn = connect(str(tmp_path / "root"))
    conn.sql("CREATE TABLE t (x BIGINT, s VARCHAR)")
    conn.sql("INSERT INTO t VALUES (1, 'kept')")
    srv = QuiverFlightServer(conn, "grpc://127.0.0.1:0", max_put_bytes=LIMIT)
    try:
        yield srv
    finally:
        srv.shutdown(0)


def _rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"x": pa.array(np.arange(start, start + n, dtype=np.int64)),
                     "s": pa.array([f"row {i:08d}" for i in range(start, start + n)])})


def _count(srv: QuiverFlightServer, table: str = "t") -> int:
    return srv.conn.sql(f"SELECT count(*) AS n FROM {table}").to_pylist()[0]["n"]


def _put(srv: QuiverFlightServer, table: pa.Table, path: list[str]) -> None:
    client = flight.connect(f"grpc://127.0.0.1:{srv.port}")
    try:
        writer, reader = client.do_put(flight.FlightDescriptor.for_path(*path), table.schema)
        # Batches far below the limit each: only their sum goes past it.
        for batch in table.to_batches(max_chunksize=2_000):
            writer.write_batch(batch)
        writer.done_writing()
        reader.read()
        writer.close()
    finally:
        client.close()


def test_a_bulk_append_past_the_limit_is_refused_and_stores_nothing(server) -> None:
    big = _rows(200_000)  # 4.8 MB decoded, in batches of 48 KB
    assert big.nbytes > LIMIT
    with pytest.raises(pa.ArrowException, match="--max-put-bytes") as err:
        _put(server, big, ["t"])
    assert "resource exhausted" in str(err.value).lower()
    assert _count(server) == 1
    # A stream within the limit is taken, and the limit is per stream, not per table.
    _put(server, _rows(50_000), ["t"])
    _put(server, _rows(50_000, 50_000), ["t"])
    assert _count(server) == 100_001


def test_an_adbc_ingest_past_the_limit_creates_no_table(server) -> None:
    with flightsql.connect(f"grpc://127.0.0.1:{server.port}") as conn, conn.cursor() as cur:
        # The driver names the gRPC code in its text (vendor code 8, RESOURCE_EXHAUSTED).
        with pytest.raises(adbc_driver_manager.Error,
                           match=r"--max-put-bytes.*\(ResourceExhausted;"):
            cur.adbc_ingest("fresh", _rows(200_000), mode="create")
        cur.adbc_ingest("small", _rows(1_000), mode="create")
    assert "fresh" not in server.conn.list_tables()
    assert _count(server, "small") == 1_000


def test_serve_refuses_a_put_limit_under_one_mebibyte(tmp_path) -> None:
    with pytest.raises(ServeError, match="--max-put-bytes"):
        build_server(str(tmp_path / "root"), port=0, max_put_bytes=1000)
