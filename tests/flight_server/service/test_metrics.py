"""Prometheus metrics scraped over loopback move by exactly what the statements sent
through real clients did; the ``quiver serve --metrics-port`` process serves them."""

from __future__ import annotations

import time
import urllib.request
import warnings
from collections.abc import Iterator

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quiver.flight_server.service import metrics
from quiver.flight_server.sql import connect
from quiver.flight_server.sql.decoded import DecodedRows
from quiver.supertable import commit
from tests.flight_server.conftest import free_port, start_server


def _adbc(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


@pytest.fixture
def scrape() -> Iterator:
    server = metrics.serve_metrics("127.0.0.1", 0)

    def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    try:
        yield read
    finally:
        server.stop()


def _get(values: dict, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def docs(quiver_server) -> str:
    quiver_server.conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR)")
    quiver_server.conn.sql("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta')")
    return f"grpc://127.0.0.1:{quiver_server.port}"


def _settle(read, name: str, expected: float, **labels: str) -> dict:
    """The scrape once ``name`` reaches ``expected`` (a DoGet's count lands when the
    server's side of the stream ends, a moment after the client read the last row)."""
    deadline = time.monotonic() + 10
    values = read()
    while _get(values, name, **labels) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
        values = read()
    return values


def test_statements_latency_and_bytes_move_by_exactly_what_ran(docs, scrape) -> None:
    before = scrape()
    conn = _adbc(docs)
    try:
        cur = conn.cursor()
        for i in range(3):
            cur.execute(f"SELECT id, title FROM docs WHERE id < {10 + i} ORDER BY id")
            assert len(cur.fetchall()) == 2
        with pytest.raises(adbc.Error):
            cur.execute("SELECT nosuch FROM docs")
    finally:
        conn.close()
    total = "quiver_statements_total"
    ok = _get(before, total, kind="query", status="OK") + 3
    after = _settle(scrape, total, ok, kind="query", status="OK")
    assert _get(after, total, kind="query", status="OK") == ok
    # ADBC prepares each statement; the bad one fails there.
    assert _get(after, total, kind="prepare", status="INVALID_ARGUMENT") == _get(
        before, total, kind="prepare", status="INVALID_ARGUMENT") + 1
    assert _get(after, total, kind="prepare", status="OK") == _get(
        before, total, kind="prepare", status="OK") + 3
    count = "quiver_statement_duration_seconds_count"
    assert _get(after, count, kind="query") == _get(before, count, kind="query") + 3
    sent = "quiver_statement_bytes_out_total"
    assert _get(after, sent, kind="query") > _get(before, sent, kind="query")
    assert _get(after, "quiver_statements_running") == 0
    assert _get(after, "process_resident_memory_bytes") > 10 << 20


def test_ingest_counts_bytes_in_and_one_commit(docs, scrape) -> None:
    before = scrape()
    client = flight.connect(docs)
    rows = pa.table({"id": pa.array(range(1000), pa.int64()),
                     "title": [f"t{i}" for i in range(1000)]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("docs"), rows.schema)
    writer.write_table(rows)
    writer.close()
    after = _settle(scrape, "quiver_statements_total",
                    _get(before, "quiver_statements_total", kind="ingest", status="OK") + 1,
                    kind="ingest", status="OK")
    assert _get(after, "quiver_statements_total", kind="ingest", status="OK") == _get(
        before, "quiver_statements_total", kind="ingest", status="OK") + 1
    received = (_get(after, "quiver_statement_bytes_in_total", kind="ingest")
                - _get(before, "quiver_statement_bytes_in_total", kind="ingest"))
    assert rows.nbytes <= received < rows.nbytes + 4096
    assert _get(after, "quiver_commits_total") == _get(before, "quiver_commits_total") + 1


def test_a_lost_commit_race_counts_one_conflict(server_root, scrape) -> None:
    conn = connect(str(server_root))
    try:
        conn.sql("CREATE TABLE t (id BIGINT)")
        table = conn.open_table("t")
        store, prefix = table.store, table.prefix
        stale = commit.read_manifest(store, prefix, commit.latest_version(store, prefix))

        def same_files(operation: str):
            return lambda current: current.successor(files=current.files, created_ms=0,
                                                     operation=operation)

        before = scrape()
        commit.publish(store, prefix, stale, same_files("first"), attempts=3, what="first")
        # Built on the version the first writer just replaced: loses once, then wins.
        commit.publish(store, prefix, stale, same_files("second"), attempts=3, what="second")
        after = scrape()
    finally:
        conn.close()
    assert _get(after, "quiver_commits_total") == _get(before, "quiver_commits_total") + 2
    assert _get(after, "quiver_commit_conflicts_total") == _get(
        before, "quiver_commit_conflicts_total") + 1
    assert _get(after, "quiver_commits_aborted_total") == _get(
        before, "quiver_commits_aborted_total")


def test_running_gauge_counts_an_open_stream(docs, quiver_server, scrape) -> None:
    quiver_server.conn.sql("CREATE TABLE big (id BIGINT)")
    client = flight.connect(docs)
    ids = pa.table({"id": pa.array(range(20_000), pa.int64())})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("big"), ids.schema)
    writer.write_table(ids)
    writer.close()
    idle = _get(scrape(), "quiver_statements_running")
    reader = client.do_get(flight.Ticket(b"SELECT a.id FROM big a CROSS JOIN big b"))
    reader.read_chunk()
    assert _get(scrape(), "quiver_statements_running") == idle + 1
    reader.cancel()
    client.close()
    deadline = time.monotonic() + 10
    while _get(scrape(), "quiver_statements_running") != idle and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _get(scrape(), "quiver_statements_running") == idle


def test_cache_lookups_and_memory_pool_hook(scrape) -> None:
    before = scrape()
    rows = DecodedRows(1 << 20)
    key = ("uuid", "tables/t/data/a.parquet", 0)
    assert rows.get(key) is None
    rows.put(key, pa.table({"id": [1, 2]}))
    assert rows.get(key) is not None and rows.get(key) is not None
    rows.close()
    after = scrape()
    for name, moved in (("quiver_cache_misses_total", 1), ("quiver_cache_hits_total", 2)):
        assert _get(after, name, cache="decoded") == _get(before, name, cache="decoded") + moved
        assert (name, (("cache", "disk"),)) in after
    assert ("quiver_memory_pool_bytes", ()) not in after  # no limit given: not exported
    metrics.set_memory_pool_limit(256 << 20)
    try:
        assert _get(scrape(), "quiver_memory_pool_bytes") == 256 << 20
    finally:
        metrics.set_memory_pool_limit(None)


def test_quiver_serve_metrics_port_serves_metrics(server_root) -> None:
    port = free_port()
    server = start_server(server_root, "--metrics-port", str(port), "--log-format", "json")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=5) as answer:
                    text = answer.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert "quiver_statements_running" in text and "quiver_commits_total" in text
    finally:
        assert server.stop() == 0
    assert '"logger": "quiver.flight_server.service.serve"' in server.log()
