"""information_schema.tables / .columns list the root's tables and visible columns, never
the engine's internal views."""

from __future__ import annotations

import uuid

import pytest

from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import connect


@pytest.fixture()
def conn():
    uri = f"memory://info{uuid.uuid4().hex}"
    c = connect(uri)
    c.sql("CREATE TABLE docs (id BIGINT, title VARCHAR NOT NULL, emb FLOAT[3]) "
          "WITH (fts = 'title', vector = 'emb')")
    c.sql("CREATE TABLE other (x DOUBLE)")
    c.sql("INSERT INTO docs VALUES (1, 'a', [1, 0, 0])")
    # Reading a table registers its internal views on the session.
    c.sql("SELECT count(*) FROM docs WHERE id > 0")
    yield c
    c.close()
    drop_memory_store(uri)


def test_tables_lists_the_catalogs_tables_only(conn):
    rows = conn.sql("SELECT * FROM information_schema.tables ORDER BY table_name").to_pylist()
    assert rows == [
        {"table_catalog": "quiver", "table_schema": "main", "table_name": "docs",
         "table_type": "TABLE"},
        {"table_catalog": "quiver", "table_schema": "main", "table_name": "other",
         "table_type": "TABLE"},
    ]


def test_columns_lists_visible_columns_in_order_without_the_hidden_id(conn):
    rows = conn.sql("SELECT column_name, ordinal_position, is_nullable, data_type "
                    "FROM information_schema.columns WHERE table_name = 'docs' "
                    "ORDER BY ordinal_position").to_pylist()
    assert rows == [
        {"column_name": "id", "ordinal_position": 1, "is_nullable": "YES",
         "data_type": "BIGINT"},
        {"column_name": "title", "ordinal_position": 2, "is_nullable": "NO",
         "data_type": "VARCHAR"},
        {"column_name": "emb", "ordinal_position": 3, "is_nullable": "YES",
         "data_type": "FLOAT[3]"},
    ]


def test_information_relations_join_with_each_other_and_follow_ddl(conn):
    sql = ("SELECT t.table_name, count(*) AS n FROM information_schema.tables AS t "
           "JOIN information_schema.columns AS c ON t.table_name = c.table_name "
           "GROUP BY t.table_name ORDER BY t.table_name")
    assert conn.sql(sql).to_pylist() == [{"table_name": "docs", "n": 3},
                                         {"table_name": "other", "n": 1}]
    conn.sql("DROP TABLE other")
    assert conn.sql(sql).to_pylist() == [{"table_name": "docs", "n": 3}]


def test_information_relations_are_not_left_registered(conn):
    before = set(conn.engine.ctx.catalog().schema().names())
    conn.sql("SELECT * FROM information_schema.tables")
    assert set(conn.engine.ctx.catalog().schema().names()) == before
