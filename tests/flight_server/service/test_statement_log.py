"""The statement log: one line per statement, with who, what, how long, how much and how
it ended; a DoGet's line when its stream ends; JSON lines for every record with
``--log-format json``; never a parameter value."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service.log_setup import JsonFormatter, configure, stop
from quiver.flight_server.service.statement_log import TEXT_CHARS

LOGGER = "quiver.statements"


def _adbc(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def statements(self) -> list[dict]:
        return [r.statement for r in self.records if hasattr(r, "statement")]


@pytest.fixture
def lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger(LOGGER)
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.fixture
def docs(quiver_server) -> str:
    quiver_server.conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR)")
    quiver_server.conn.sql("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma')")
    return f"grpc://127.0.0.1:{quiver_server.port}"


def _wait_for(handler: _Lines, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = handler.statements()
        if len(found) >= count:
            return found
        time.sleep(0.02)
    return handler.statements()


def test_a_query_through_adbc_is_one_line_with_every_field(docs, lines) -> None:
    conn = _adbc(docs)
    try:
        cur = conn.cursor()
        cur.execute("SELECT id, title FROM docs WHERE id >= 2 ORDER BY id")
        assert cur.fetchall() == [(2, "beta"), (3, "gamma")]
    finally:
        conn.close()
    found = _wait_for(lines, 1)
    assert len(found) == 1, found
    line = found[0]
    assert set(line) == {"user", "peer", "kind", "sha", "text", "ms", "rows", "bytes",
                         "status"}
    sql = "SELECT id, title FROM docs WHERE id >= 2 ORDER BY id"
    assert line["kind"] == "query" and line["status"] == "OK"
    assert line["text"] == sql
    assert line["sha"] == hashlib.sha256(sql.encode()).hexdigest()[:16]
    assert line["rows"] == 2 and line["bytes"] > 0 and line["ms"] >= 0
    assert line["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert line["user"] is None  # no authentication configured


def test_failed_statement_is_logged_with_its_status_code(docs, lines) -> None:
    conn = _adbc(docs)
    try:
        with pytest.raises(adbc.Error):
            conn.cursor().execute("SELECT nosuch FROM docs")
    finally:
        conn.close()
    found = _wait_for(lines, 1)
    assert [f["status"] for f in found] == ["INVALID_ARGUMENT"]
    assert found[0]["text"] == "SELECT nosuch FROM docs"


def test_updates_and_ingest_log_their_rows_and_bytes_in(docs, lines) -> None:
    client = flight.connect(docs)
    rows = pa.table({"id": pa.array([7, 8, 9, 10], pa.int64()),
                     "title": ["w", "x", "y", "z"]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("docs"), rows.schema)
    writer.write_table(rows)
    writer.close()
    conn = _adbc(docs)
    try:
        cur = conn.cursor()
        cur.execute("DELETE FROM docs WHERE id >= 9")
    finally:
        conn.close()
    found = _wait_for(lines, 2)
    ingest = next(f for f in found if f["kind"] == "ingest")
    assert ingest["text"] == "docs" and ingest["rows"] == 4 and ingest["status"] == "OK"
    assert ingest["bytes"] >= rows.nbytes  # bytes received
    delete = next(f for f in found if f["text"].startswith("DELETE"))
    assert delete["kind"] in ("update", "prepared_update") and delete["rows"] == 2


def test_long_statement_text_is_cut_and_hashed_whole(docs, lines) -> None:
    sql = "SELECT id FROM docs WHERE " + " OR ".join(f"id = {i}" for i in range(200))
    client = flight.connect(docs)
    client.do_get(flight.Ticket(sql.encode())).read_all()
    line = _wait_for(lines, 1)[0]
    assert len(line["text"]) == TEXT_CHARS and sql.startswith(line["text"])
    assert line["sha"] == hashlib.sha256(sql.encode()).hexdigest()[:16]


def test_bound_parameter_values_are_not_logged(docs, lines) -> None:
    conn = _adbc(docs)
    try:
        cur = conn.cursor()
        cur.execute("SELECT title FROM docs WHERE title = ?", parameters=("s3cr3t-value",))
        cur.fetchall()
    finally:
        conn.close()
    found = _wait_for(lines, 1)
    assert found and all("s3cr3t-value" not in json.dumps(f) for f in found)
    assert all("s3cr3t-value" not in r.getMessage() for r in lines.records)


def test_doget_abandoned_by_its_client_is_logged_when_the_stream_ends(docs, quiver_server,
                                                                       lines) -> None:
    quiver_server.conn.sql("CREATE TABLE big (id BIGINT)")
    client = flight.connect(docs)
    # Its cross join with itself has 400 million rows: the stream cannot end on its own.
    ids = pa.table({"id": pa.array(range(20_000), pa.int64())})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("big"), ids.schema)
    writer.write_table(ids)
    writer.close()
    lines.records.clear()
    reader = client.do_get(flight.Ticket(b"SELECT a.id FROM big a CROSS JOIN big b"))
    reader.read_chunk()
    reader.cancel()
    client.close()
    found = _wait_for(lines, 1, timeout=30)
    assert len(found) == 1, found
    assert found[0]["status"] == "CANCELLED" and found[0]["kind"] == "query"
    assert found[0]["rows"] > 0


def test_json_format_writes_every_record_as_one_json_object(docs) -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("INFO", "json", stream=out)
        logging.getLogger("quiver.test").warning("plain\nrecord")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("quiver.test").exception("failed")
        client = flight.connect(docs)
        client.do_get(flight.Ticket(b"SELECT 1 AS one")).read_all()
        time.sleep(0.2)
        stop()  # the writer thread writes out what it holds
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["message"] == "plain\nrecord" and records[0]["level"] == "WARNING"
    assert records[1]["message"] == "failed" and "ValueError: boom" in records[1]["exc"]
    statement = next(r for r in records if r["logger"] == LOGGER)
    assert statement["kind"] == "query" and statement["rows"] == 1
    assert statement["time"].endswith("Z") and statement["status"] == "OK"


def test_json_formatter_keeps_records_without_statement_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "hello you"
