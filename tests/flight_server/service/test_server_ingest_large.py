"""Bulk ingests larger than the ADBC driver's 16 MiB message limit, as docs/adbc.md and
docs/pandas.md show them: a stream of batches under the limit, in one ingest."""

from __future__ import annotations

import time
import warnings

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pytest
from adbc_driver_flightsql import DatabaseOptions

ROWS, DIM = 20_000, 384


def in_batches(table: pa.Table, max_bytes: int = 8 << 20) -> pa.RecordBatchReader:
    """The guides' helper, as written there."""
    rows = max(1, max_bytes * table.num_rows // max(table.nbytes, 1))
    return pa.RecordBatchReader.from_batches(table.schema,
                                             table.to_batches(max_chunksize=rows))


def _connect(uri: str, **db_kwargs: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri, autocommit=True, db_kwargs=db_kwargs or None)


@pytest.fixture(scope="module")
def big() -> pa.Table:
    emb = np.random.default_rng(0).standard_normal((ROWS, DIM), dtype=np.float32)
    table = pa.table({"id": np.arange(ROWS),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()),
                                                                     DIM)})
    assert table.nbytes > 16 << 20
    return table


def _empty_table(cur, name: str) -> None:
    # No vector index: the test is about moving 30 MB, not about building an index.
    cur.execute(f"CREATE TABLE {name} (id BIGINT, embedding FLOAT[{DIM}]) "
                "WITH (vector = '')")


def test_one_message_above_16_mib_is_refused_by_the_driver(flight_uri, quiver_server,
                                                           big) -> None:
    with _connect(flight_uri) as conn, conn.cursor() as cur:
        _empty_table(cur, "one_piece")
        with pytest.raises(adbc.Error, match="larger than max"):
            cur.adbc_ingest("one_piece", big, mode="append")
        cur.execute("SELECT count(*) FROM one_piece")
        assert cur.fetchone()[0] == 0


def test_a_stream_of_batches_ingests_more_than_16_mib_in_one_commit(flight_uri,
                                                                    quiver_server,
                                                                    big) -> None:
    with _connect(flight_uri) as conn, conn.cursor() as cur:
        _empty_table(cur, "streamed")
        t0 = time.perf_counter()
        assert cur.adbc_ingest("streamed", in_batches(big), mode="append") == ROWS
        took = time.perf_counter() - t0
        cur.execute("SELECT count(*), sum(id) FROM streamed")
        assert cur.fetchone() == (ROWS, ROWS * (ROWS - 1) // 2)
    assert quiver_server.conn.open_table("streamed").snapshot().manifest.version == 2
    assert took < 60, f"30 MB took {took:.1f}s"


def test_a_raised_driver_limit_sends_it_in_one_message(flight_uri, quiver_server,
                                                       big) -> None:
    options = {DatabaseOptions.WITH_MAX_MSG_SIZE.value: str(64 << 20)}
    with _connect(flight_uri, **options) as conn, conn.cursor() as cur:
        _empty_table(cur, "raised")
        assert cur.adbc_ingest("raised", big, mode="append") == ROWS
