"""The embedded SQL connection: tables and SQL over them from one object."""

from __future__ import annotations

import uuid

import pyarrow as pa

from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import connect


def test_embedded_connection_creates_inserts_and_queries_with_sql():
    uri = f"memory://embedded{uuid.uuid4().hex}"
    try:
        with connect(uri) as con:
            con.sql("CREATE TABLE docs (id BIGINT, title VARCHAR) WITH (fts = 'title')")
            con.sql("INSERT INTO docs VALUES (1, 'fast json parser'), (2, 'async http client')")
            assert con.list_tables() == ["docs"]
            got = con.sql("SELECT id, title FROM docs ORDER BY id")
            assert got.to_pylist() == [{"id": 1, "title": "fast json parser"},
                                       {"id": 2, "title": "async http client"}]
            hits = con.sql("SELECT id FROM bm25_search('docs', 'title', 'json', 5)")
            assert hits.column("id").to_pylist() == [1]
            stream = con.sql_stream("SELECT count(*) AS n FROM docs")
            assert isinstance(stream, pa.RecordBatchReader)
            assert stream.read_all().column("n").to_pylist() == [2]
            assert con.open_table("docs").count() == 2
    finally:
        drop_memory_store(uri)
