"""Metadata through the ADBC Flight SQL driver against a running server.

The driver checks the catalog, schema and table results against its own reference
schemas, so these calls fail if a result schema is off.
"""

from __future__ import annotations

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pytest

from quiver.flight_server.service import metadata


@pytest.fixture
def db(flight_uri):
    conn = flightsql.connect(flight_uri)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE docs (id BIGINT NOT NULL, title VARCHAR, "
                        "embedding FLOAT[3]) WITH (fts = 'title', vector = 'embedding')")
            cur.execute("CREATE TABLE doc_tags (doc BIGINT, tag VARCHAR)")
            cur.execute("CREATE TABLE docxtags (n DOUBLE)")
        yield conn
    finally:
        conn.close()


def _objects(conn, depth: str, **filters) -> list[dict]:
    return conn.adbc_get_objects(depth=depth, **filters).read_all().to_pylist()


def _tables(objects: list[dict]) -> dict[str, list[str] | None]:
    """table name -> column names (None when the depth left columns out)."""
    out = {}
    for cat in objects:
        for sch in cat["catalog_db_schemas"] or []:
            for tab in sch["db_schema_tables"] or []:
                cols = tab["table_columns"]
                out[tab["table_name"]] = None if cols is None else [
                    c["column_name"] for c in cols]
    return out


def test_get_objects_catalogs_lists_the_one_catalog(db):
    objs = _objects(db, "catalogs")
    assert [o["catalog_name"] for o in objs] == [metadata.CATALOG]


def test_get_objects_db_schemas_lists_the_one_schema(db):
    objs = _objects(db, "db_schemas")
    assert [(o["catalog_name"], [s["db_schema_name"] for s in o["catalog_db_schemas"]])
            for o in objs] == [(metadata.CATALOG, [metadata.DB_SCHEMA])]
    none = _objects(db, "db_schemas", db_schema_filter="nope%")
    assert all(not o["catalog_db_schemas"] for o in none)


def test_get_objects_tables_lists_every_table(db):
    assert set(_tables(_objects(db, "tables"))) == {"docs", "doc_tags", "docxtags"}


def test_get_objects_table_filter_follows_the_pattern_rules(db):
    assert set(_tables(_objects(db, "tables", table_name_filter="doc_tags"))) == {
        "doc_tags", "docxtags"}
    assert set(_tables(_objects(db, "tables", table_name_filter="doc\\_tags"))) == {
        "doc_tags"}
    assert set(_tables(_objects(db, "tables", table_name_filter="d%s"))) == {
        "docs", "doc_tags", "docxtags"}
    assert _tables(_objects(db, "tables", table_types_filter=["VIEW"])) == {}
    assert set(_tables(_objects(db, "tables", table_types_filter=["TABLE"]))) == {
        "docs", "doc_tags", "docxtags"}


def test_get_objects_all_lists_columns_without_the_hidden_id(db):
    tables = _tables(_objects(db, "all"))
    assert tables["docs"] == ["id", "title", "embedding"]
    assert tables["doc_tags"] == ["doc", "tag"]
    only = _tables(_objects(db, "all", table_name_filter="docs", column_name_filter="ti%"))
    assert only == {"docs": ["title"]}


def test_get_table_schema_is_the_select_star_schema(db):
    schema = db.adbc_get_table_schema("docs")
    with db.cursor() as cur:
        cur.execute("SELECT * FROM docs")
        star = cur.fetch_arrow_table().schema
    assert schema.remove_metadata().equals(star.remove_metadata())
    assert schema.field("id").type == pa.int64() and not schema.field("id").nullable
    assert schema.field("embedding").type == pa.list_(pa.float32(), 3)


def test_get_table_schema_of_a_missing_table_fails(db):
    with pytest.raises(flightsql.Error):
        db.adbc_get_table_schema("missing")


def test_get_table_types_is_table(db):
    assert db.adbc_get_table_types() == ["TABLE"]


def test_get_info_reports_the_vendor(db):
    info = db.adbc_get_info()
    assert info["vendor_name"] == "Quiver"
    assert info["vendor_arrow_version"] == pa.__version__
    assert isinstance(info["vendor_version"], str) and info["vendor_version"]
