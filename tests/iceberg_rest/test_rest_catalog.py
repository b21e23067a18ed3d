"""``quiver iceberg register`` and ``quiver serve --iceberg-catalog`` with a REST catalog:
Apache Iceberg's REST catalog fixture, a real server on loopback, lists Quiver tables; a
commit moves the catalog forward; pyiceberg's REST client scans what ``SELECT *`` returns;
the catalog's token is sent and never printed."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest

from quiver.flight_server.cli.main import main
from quiver.flight_server.sql import connect
from quiver.supertable.iceberg.catalog import TOKEN_ENV, CatalogError
from quiver.supertable.iceberg.rest import RestCatalog, commit_request
from tests.flight_server.conftest import start_server
from tests.iceberg_catalogs import adbc_cursor, docs_root
from tests.iceberg_rest import server as fixture
from tests.iceberg_rest.conftest import TOKEN

NS = "lake"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return docs_root(tmp_path / "root")


@pytest.fixture
def namespace(request) -> str:
    # Each test its own namespace: the catalog server is shared by the module.
    return f"{NS}_{request.node.name[5:40]}"


def _client(srv: fixture.RestServer):
    from pyiceberg.catalog.rest import RestCatalog as PyIcebergRest

    return PyIcebergRest("rest", uri=srv.url, token=TOKEN)


def _rows(table: pa.Table) -> list[dict]:
    return table.sort_by("id").to_pylist()


def _select(root: Path, name: str) -> list[dict]:
    with connect(str(root)) as conn:
        return _rows(conn.sql(f"SELECT * FROM {name}"))


def _register(root: Path, srv: fixture.RestServer, namespace: str, *tables: str) -> int:
    return main(["iceberg", "register", "--root", str(root), "--catalog-uri", srv.uri,
                 "--namespace", namespace, *tables])


def test_register_lists_tables_in_a_rest_catalog_and_its_scan_equals_select(
        catalog_server, root, namespace, monkeypatch, capsys, caplog) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    caplog.set_level(logging.DEBUG)
    assert _register(root, catalog_server, namespace) == 0
    out = capsys.readouterr()
    assert f"{namespace}.docs\tregistered\tfile://" in out.out
    assert f"{namespace}.notes\tregistered" in out.out
    client = _client(catalog_server)
    for name in ("docs", "notes"):
        assert _rows(client.load_table((namespace, name)).scan().to_arrow()) == \
            _select(root, name)
    assert [r["id"] for r in _rows(client.load_table((namespace, "docs")).scan().to_arrow())] \
        == [1, 3]
    assert TOKEN not in out.out + out.err + caplog.text


def test_a_commit_moves_the_rest_catalog_forward_and_rerun_is_unchanged(
        catalog_server, root, namespace, monkeypatch, capsys) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    client = _client(catalog_server)
    assert _register(root, catalog_server, namespace, "docs") == 0
    first = client.load_table((namespace, "docs")).metadata_location
    assert _register(root, catalog_server, namespace, "docs") == 0
    assert "docs\tunchanged" in capsys.readouterr().out
    with connect(str(root)) as conn:
        conn.sql("INSERT INTO docs VALUES (4, 'delta'), (5, 'epsilon')")
        conn.sql("DELETE FROM docs WHERE id = 1")
        conn.sql("UPDATE docs SET title = 'GAMMA' WHERE id = 3")
        conn.sql("INSERT INTO docs VALUES (6, 'zeta')")
    assert _register(root, catalog_server, namespace, "docs") == 0
    assert "docs\tupdated" in capsys.readouterr().out
    table = client.load_table((namespace, "docs"))
    assert table.metadata_location != first
    assert _rows(table.scan().to_arrow()) == _select(root, "docs")
    assert [r["id"] for r in _select(root, "docs")] == [3, 4, 5, 6]
    # The catalog keeps the history: the snapshot it was registered at is still there.
    assert len(table.metadata.snapshots) > 1


def test_commit_request_never_moves_a_catalog_back(root) -> None:
    doc = {"current-snapshot-id": 7, "snapshots": [], "table-uuid": "u"}
    assert commit_request({"current-snapshot-id": 9, "snapshots": []}, doc) is None
    assert commit_request({"current-snapshot-id": 7, "snapshots": []}, doc) is None
    body = commit_request({"current-snapshot-id": 5, "snapshots": [{"snapshot-id": 5}]},
                          {**doc, "snapshots": [{"snapshot-id": 7, "sequence-number": 7}]})
    assert {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 5} in \
        body["requirements"]
    assert {"action": "remove-snapshots", "snapshot-ids": [5]} in body["updates"]


def test_a_wrong_token_fails_register_without_printing_either_token(
        catalog_server, root, namespace, monkeypatch, capsys) -> None:
    wrong = "not-the-token-4e2a"
    monkeypatch.setenv(TOKEN_ENV, wrong)
    assert _register(root, catalog_server, namespace) == 1
    out = capsys.readouterr()
    assert "401" in out.err
    assert wrong not in out.out + out.err and TOKEN not in out.out + out.err
    with pytest.raises(CatalogError, match="401"):
        RestCatalog(catalog_server.uri).location(namespace, "docs")


def test_server_with_a_rest_catalog_keeps_it_at_the_newest_version(
        catalog_server, root, namespace, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    srv = start_server(root, "--iceberg-catalog", catalog_server.uri,
                       "--iceberg-namespace", namespace)
    client = _client(catalog_server)
    try:
        with adbc_cursor(srv.uri) as cur:
            for i in (5, 6):
                cur.execute(f"INSERT INTO docs VALUES ({i}, 'new {i}')")
            cur.execute("DELETE FROM docs WHERE id = 1")
        table = client.load_table((namespace, "docs"))
        assert _rows(table.scan().to_arrow()) == _select(root, "docs")
        assert [r["id"] for r in _select(root, "docs")] == [3, 5, 6]
    finally:
        assert srv.stop() == 0
    assert TOKEN not in srv.log_path.read_text()


def test_gc_keeps_the_metadata_file_the_rest_catalog_points_at(
        catalog_server, root, namespace, monkeypatch) -> None:
    import time

    from quiver.supertable.iceberg import sync

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert _register(root, catalog_server, namespace, "docs") == 0
    with connect(str(root)) as conn:
        conn.sql("INSERT INTO docs VALUES (7, 'eta')")
    assert _register(root, catalog_server, namespace, "docs") == 0
    pointed = _client(catalog_server).load_table((namespace, "docs")).metadata_location
    assert "/metadata/v" not in pointed  # the catalog wrote this one itself
    with connect(str(root)) as conn:
        table = conn.open_table("docs")
        doomed = sync.clean_for_gc(table.store, table.prefix, time.time() + 3600)
    assert doomed, "gc past every file's age removes something"
    assert not any(pointed.endswith(m.path) for m in doomed)
    assert _rows(_client(catalog_server).load_table((namespace, "docs")).scan().to_arrow()) \
        == _select(root, "docs")


def test_register_with_older_metadata_never_moves_the_rest_catalog_back(
        catalog_server, root, namespace, monkeypatch) -> None:
    from quiver.supertable.iceberg import metadata_location

    with connect(str(root)) as conn:
        table = conn.open_table("docs")
        older = metadata_location(table.store, table.prefix)
        conn.sql("INSERT INTO docs VALUES (8, 'theta')")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert _register(root, catalog_server, namespace, "docs") == 0
    cat = RestCatalog(catalog_server.uri, token=TOKEN)
    newest = cat.location(namespace, "docs")
    assert cat.register(namespace, "docs", older) == "unchanged"
    assert cat.location(namespace, "docs") == newest
    assert 8 in [r["id"] for r in _client(catalog_server).load_table((namespace, "docs"))
                 .scan().to_arrow().to_pylist()]
