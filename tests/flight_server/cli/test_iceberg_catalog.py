"""``quiver iceberg register`` and ``quiver serve --iceberg-catalog``: a SQLite Iceberg SQL
catalog lists Quiver tables at their newest metadata, and a reader of the catalog scans
exactly what ``SELECT *`` returns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.table import StaticTable

from quiver.flight_server.cli.main import main
from quiver.flight_server.sql import connect
from quiver.supertable.iceberg.catalog import CatalogError
from quiver.supertable.iceberg.sqlite import SqliteCatalog
from tests.flight_server.conftest import start_server
from tests.iceberg_catalogs import adbc_cursor, docs_root
from tests.iceberg_sql import reader

NS = "lake"


def _scan(db: Path, name: str) -> pa.Table:
    """The table as a catalog reader sees it: pyiceberg's own SqlCatalog (in a child with
    SQLAlchemy 2, ``tests.iceberg_sql.reader``) where it can run, else the catalog row read
    directly and its metadata file scanned."""
    if reader.missing() is None:
        return reader.scan(f"sqlite:///{db}", NS, name)
    with sqlite3.connect(db) as con:
        (location,) = con.execute(
            "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = 'default'"
            " AND table_namespace = ? AND table_name = ?", (NS, name)).fetchone()
    return StaticTable.from_metadata(location).scan().to_arrow()


def _rows(table: pa.Table) -> list[dict]:
    return table.sort_by("id").to_pylist()


def _listed(db: Path, name: str) -> tuple[str, str | None]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT metadata_location, previous_metadata_location FROM "
                           "iceberg_tables WHERE table_namespace = ? AND table_name = ?",
                           (NS, name)).fetchone()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return docs_root(tmp_path / "root")


def _select(root: Path, name: str) -> list[dict]:
    with connect(str(root)) as conn:
        return _rows(conn.sql(f"SELECT * FROM {name}"))


def test_register_lists_every_table_and_a_catalog_scan_equals_select(root, tmp_path,
                                                                      capsys) -> None:
    db = tmp_path / "catalog.db"
    code = main(["iceberg", "register", "--root", str(root), "--catalog-uri",
                 f"sqlite:///{db}", "--namespace", NS])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{NS}.docs\tregistered\tfile://" in out and f"{NS}.notes\tregistered" in out
    for name in ("docs", "notes"):
        assert _rows(_scan(db, name)) == _select(root, name)
    assert [r["id"] for r in _rows(_scan(db, "docs"))] == [1, 3]


def test_register_again_is_idempotent_and_moves_a_table_to_its_newest_metadata(
        root, tmp_path, capsys) -> None:
    db = tmp_path / "catalog.db"
    args = ["iceberg", "register", "--root", str(root), "--catalog-uri", f"sqlite:///{db}",
            "--namespace", NS, "docs"]
    assert main(args) == 0
    first, _ = _listed(db, "docs")
    assert main(args) == 0
    assert "docs\tunchanged" in capsys.readouterr().out
    assert _listed(db, "docs") == (first, None)
    assert _listed(db, "notes") is None  # only the named table
    with connect(str(root)) as conn:
        conn.sql("INSERT INTO docs VALUES (4, 'delta')")
    assert main(args) == 0
    assert "docs\tupdated" in capsys.readouterr().out
    newest, previous = _listed(db, "docs")
    assert previous == first and newest != first
    assert [r["id"] for r in _rows(_scan(db, "docs"))] == [1, 3, 4]


def test_catalog_never_moves_a_table_back_to_older_metadata(tmp_path) -> None:
    cat = SqliteCatalog(f"sqlite:///{tmp_path / 'c.db'}")
    new = "file:///r/docs/metadata/v12.metadata.json"
    assert cat.register(NS, "docs", new) == "registered"
    assert cat.register(NS, "docs", "file:///r/docs/metadata/v9.metadata.json") == "unchanged"
    assert cat.location(NS, "docs") == new


def test_register_refuses_a_catalog_uri_of_no_known_kind(root, capsys) -> None:
    code = main(["iceberg", "register", "--root", str(root), "--catalog-uri",
                 "mysql://db/catalog"])
    assert code == 1
    assert "unknown catalog URI" in capsys.readouterr().err
    with pytest.raises(CatalogError):
        SqliteCatalog("sqlite:///:memory:")


def test_server_with_iceberg_catalog_keeps_it_at_the_newest_version(root, tmp_path) -> None:
    db = tmp_path / "catalog.db"
    assert main(["iceberg", "register", "--root", str(root), "--catalog-uri",
                 f"sqlite:///{db}", "--namespace", NS]) == 0
    registered, _ = _listed(db, "docs")
    srv = start_server(root, "--iceberg-catalog", f"sqlite:///{db}", "--iceberg-namespace", NS)
    try:
        with adbc_cursor(srv.uri) as cur:
            for i in (5, 6):
                cur.execute(f"INSERT INTO docs VALUES ({i}, 'new {i}')")
            cur.execute("DELETE FROM docs WHERE id = 1")
        newest, _ = _listed(db, "docs")
        with connect(str(root)) as local:
            from quiver.supertable.iceberg import metadata_location

            table = local.open_table("docs")
            assert newest == metadata_location(table.store, table.prefix)
        assert newest != registered
        assert [r["id"] for r in _rows(_scan(db, "docs"))] == [3, 5, 6]
    finally:
        assert srv.stop() == 0
