"""``CREATE TABLE ... WITH (iceberg_version = 3)``: the table's Iceberg metadata is format
version 3 with deleted rows as deletion vectors, DuckDB reads its live rows, and an
unknown version is refused before any table exists."""

from __future__ import annotations

import pytest

from quiver import catalog
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql.errors import SqlPlanError
from quiver.supertable import iceberg
from quiver.supertable.iceberg import metadata as ice_metadata
from quiver.supertable.iceberg.sync import folder_for
from tests.supertable.iceberg_readers import duck


def _format(table) -> int:
    state = ice_metadata.load(folder_for(table.store, table.prefix))
    assert state is not None
    return state[1]["format-version"]


def test_create_table_with_iceberg_version_3_writes_deletion_vectors(tmp_path):
    con = catalog.connect(str(tmp_path))
    engine = SqlEngine(con)
    engine.execute("CREATE TABLE papers (id BIGINT, title VARCHAR) WITH (iceberg_version = 3)")
    engine.execute("INSERT INTO papers VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    engine.execute("DELETE FROM papers WHERE id = 2")
    table = con.open_table("papers")
    assert _format(table) == 3
    assert {p.rsplit(".", 1)[-1] for p in
            (m.path for m in table.store.list(f"{table.prefix}/metadata/deletes/"))} == {"puffin"}
    location = iceberg.metadata_location(table.store, table.prefix)
    got = duck().execute("SELECT id FROM iceberg_scan(?) ORDER BY id", [location]).fetchall()
    assert got == [(1,), (3,)]
    engine.execute("CREATE TABLE copied WITH (iceberg_version = '3') AS SELECT * FROM papers")
    assert _format(con.open_table("copied")) == 3
    engine.execute("CREATE TABLE plain (id BIGINT)")
    assert _format(con.open_table("plain")) == 2
    con.close()


def test_an_unknown_iceberg_version_is_refused_and_creates_nothing(tmp_path):
    con = catalog.connect(str(tmp_path))
    engine = SqlEngine(con)
    with pytest.raises(SqlPlanError, match="iceberg_version"):
        engine.execute("CREATE TABLE t (id BIGINT) WITH (iceberg_version = 4)")
    assert con.list_tables() == []
    con.close()
