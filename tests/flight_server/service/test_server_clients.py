"""Other clients against the server: flightsql-dbapi (DB-API and its SQLAlchemy dialect) and
ADBC's metadata calls, which reach ``quiver.flight_server.service.metadata`` through the server."""

from __future__ import annotations

import warnings

import adbc_driver_flightsql.dbapi as adbc
import pytest

flightsql = pytest.importorskip("flightsql")
pytest.importorskip("pandas")  # flightsql-dbapi's fetch methods go through pandas


@pytest.fixture
def docs(quiver_server):
    quiver_server.conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR)")
    quiver_server.conn.sql("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta')")
    return quiver_server


def test_flightsql_dbapi_runs_queries_with_and_without_parameters(docs) -> None:
    client = flightsql.FlightSQLClient(host="127.0.0.1", port=docs.port, insecure=True)
    try:
        cur = flightsql.connect(client).cursor()
        cur.execute("SELECT id, title FROM docs ORDER BY id")
        assert [tuple(r) for r in cur.fetchall()] == [(1, "alpha"), (2, "beta")]
        cur.execute("SELECT title FROM docs WHERE id = ?", [2])
        assert [tuple(r) for r in cur.fetchall()] == [("beta",)]
    finally:
        client.close()


def test_sqlalchemy_dialect_selects_and_lists_tables(docs) -> None:
    sa = pytest.importorskip("sqlalchemy")
    import flightsql.sqlalchemy  # noqa: F401  registers the dialect

    engine = sa.create_engine(f"datafusion+flightsql://127.0.0.1:{docs.port}?insecure=true")
    try:
        with engine.connect() as con:
            rows = con.execute(sa.text("SELECT count(*) AS n FROM docs")).fetchall()
            assert [tuple(r) for r in rows] == [(2,)]
            assert sa.inspect(con).get_table_names() == ["docs"]
    finally:
        engine.dispose()


def test_adbc_metadata_calls_are_answered(docs, flight_uri) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(flight_uri)
    try:
        assert conn.adbc_get_table_schema("docs").names == ["id", "title"]
        assert conn.adbc_get_table_types() == ["TABLE"]
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        names = [t["table_name"] for c in objects for s in c["catalog_db_schemas"] or []
                 for t in s["db_schema_tables"] or []]
        assert names == ["docs"]
        assert conn.adbc_get_info()["vendor_name"]
    finally:
        conn.close()
