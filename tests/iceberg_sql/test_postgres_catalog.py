"""Iceberg's SQL catalog kept in PostgreSQL: ``quiver iceberg register`` and
``quiver serve --iceberg-catalog postgresql://...`` list Quiver tables there, pyiceberg's own
``SqlCatalog`` on the same database scans exactly what ``SELECT *`` returns, a commit moves
a table only forward even when writers race, a catalog outage never loses a commit, and the
password never shows."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path

import pytest

from quiver.flight_server.cli.main import main
from quiver.flight_server.sql import connect
from quiver.supertable import iceberg
from quiver.supertable.iceberg.catalog import CatalogError, follower, open_catalog
from quiver.supertable.iceberg.postgres import PostgresCatalog, redacted
from quiver.supertable.iceberg.sql_catalog import version
from tests.flight_server.conftest import start_server
from tests.iceberg_catalogs import adbc_cursor, docs_root
from tests.iceberg_sql import reader
from tests.iceberg_sql.postgres import Postgres

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed")

NS = "lake"
LOCK_WAIT_S = 20.0
SETTLE_S = 20.0


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return docs_root(tmp_path / "root", notes=False)


def _select(root: Path, name: str = "docs") -> list[dict]:
    with connect(str(root)) as conn:
        return conn.sql(f"SELECT * FROM {name}").sort_by("id").to_pylist()


def _newest(root: Path, name: str = "docs") -> str | None:
    with connect(str(root)) as conn:
        table = conn.open_table(name)
        return iceberg.metadata_location(table.store, table.prefix)


def _listed(uri: str, name: str = "docs") -> tuple[str, str | None] | None:
    with psycopg.connect(uri) as con:
        return con.execute("SELECT metadata_location, previous_metadata_location FROM "
                           "iceberg_tables WHERE catalog_name = 'default' AND "
                           "table_namespace = %s AND table_name = %s", (NS, name)).fetchone()


def _namespaces(uri: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(uri) as con:
        return con.execute("SELECT namespace, property_key, property_value FROM "
                           "iceberg_namespace_properties").fetchall()


def _settled(uri: str, root: Path) -> tuple[str, str | None]:
    """The catalog's row once it lists the table's newest metadata: the server folds its
    write log in the background, and each fold is a commit that moves the catalog too."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        listed, newest = _listed(uri), _newest(root)
        if listed is not None and listed[0] == newest:
            return listed
        if time.monotonic() > deadline:
            pytest.fail(f"the catalog lists {listed} while the newest metadata is {newest}")
        time.sleep(0.1)


def _scan(server: Postgres, db: str) -> list[dict]:
    rows = reader.scan(server.uri(db, scheme="postgresql+psycopg"), NS, "docs")
    return rows.sort_by("id").to_pylist()


def test_register_and_every_kind_of_commit_keep_pyiceberg_sqlcatalog_scan_equal_to_select(
        postgres_server, pg_database, sql_catalog_reader, root, capsys, monkeypatch) -> None:
    uri = postgres_server.uri(pg_database)
    assert main(["iceberg", "register", "--root", str(root), "--catalog-uri", uri,
                 "--namespace", NS]) == 0
    out = capsys.readouterr().out
    assert f"{NS}.docs\tregistered\tfile://" in out
    assert _namespaces(uri) == [(NS, "exists", "true")]  # register created the namespace
    assert _listed(uri) == (_newest(root), None)
    assert _scan(postgres_server, pg_database) == _select(root)

    # The server takes the password from libpq's environment, not from its command line.
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    passwordless = uri.replace(f":{postgres_server.password}@", "@").replace(
        "postgresql://", "postgresql+psycopg://")
    srv = start_server(root, "--iceberg-catalog", passwordless, "--iceberg-namespace", NS)
    try:
        with adbc_cursor(srv.uri) as cur:
            for statement in ("INSERT INTO docs VALUES (5, 'five'), (6, 'six')",
                              "DELETE FROM docs WHERE id = 1",
                              "UPDATE docs SET title = 'gamma, again' WHERE id = 3"):
                before = _listed(uri)
                assert before is not None
                cur.execute(statement)
                cur.fetchall()
                location, previous = _settled(uri, root)
                assert version(before[0]) <= version(previous) < version(location), statement
                assert _scan(postgres_server, pg_database) == _select(root), statement
    finally:
        assert srv.stop() == 0
    assert [(r["id"], r["title"]) for r in _select(root)] == [
        (3, "gamma, again"), (5, "five"), (6, "six")]


def test_a_writer_that_lost_the_race_never_moves_the_table_back(postgres_server,
                                                                pg_database) -> None:
    uri = postgres_server.uri(pg_database)
    folder = "file:///r/tables/docs-1/metadata"
    catalog = PostgresCatalog(uri)
    assert catalog.register(NS, "docs", f"{folder}/v5.metadata.json") == "registered"
    outcome: list[str] = []
    # Another writer moves the table to v9 and holds its transaction open: the catalog's
    # move to v7 read v5 and must wait, then find v9 and leave it there.
    with psycopg.connect(uri) as other:
        other.execute("UPDATE iceberg_tables SET metadata_location = %s, "
                      "previous_metadata_location = %s WHERE table_name = 'docs'",
                      (f"{folder}/v9.metadata.json", f"{folder}/v5.metadata.json"))
        racer = threading.Thread(target=lambda: outcome.append(
            catalog.register(NS, "docs", f"{folder}/v7.metadata.json")))
        racer.start()
        deadline = time.monotonic() + LOCK_WAIT_S
        with psycopg.connect(uri, autocommit=True) as watch:
            while time.monotonic() < deadline:
                waiting = watch.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "application_name = 'quiver' AND "
                                        "wait_event_type = 'Lock'").fetchone()
                if waiting and waiting[0] == 1:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the catalog's update never waited for the other writer")
        other.commit()
    racer.join(timeout=LOCK_WAIT_S)
    assert outcome == ["unchanged"]
    assert _listed(uri) == (f"{folder}/v9.metadata.json", f"{folder}/v5.metadata.json")


def test_two_connections_committing_together_only_ever_move_the_table_forward(
        postgres_server, pg_database) -> None:
    uri = postgres_server.uri(pg_database)
    folder = "file:///r/tables/docs-1/metadata"
    writers = [PostgresCatalog(uri), PostgresCatalog(uri)]
    seen: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(catalog: PostgresCatalog, versions: range) -> None:
        try:
            for n in versions:
                catalog.register(NS, "docs", f"{folder}/v{n}.metadata.json")
        except BaseException as exc:
            errors.append(exc)

    def watch() -> None:
        with psycopg.connect(uri, autocommit=True) as con:
            while not stop.is_set():
                row = con.execute("SELECT metadata_location FROM iceberg_tables").fetchone()
                if row:
                    seen.append(version(row[0]))

    assert writers[0].register(NS, "docs", f"{folder}/v0.metadata.json") == "registered"
    # Each writer commits every other version, the two interleaving as they race.
    threads = [threading.Thread(target=write, args=(writers[0], range(1, 61, 2))),
               threading.Thread(target=write, args=(writers[1], range(2, 61, 2)))]
    observer = threading.Thread(target=watch)
    observer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    observer.join(timeout=30)
    assert not errors
    assert seen and seen == sorted(seen)  # never backwards, as any reader saw it
    location, previous = _listed(uri) or ("", None)
    assert version(location) == 60 and version(previous) < 60


def test_a_catalog_outage_keeps_the_commit_and_the_next_commit_repairs_the_catalog(
        postgres_server, pg_database, root, caplog) -> None:
    uri = postgres_server.uri(pg_database)
    catalog = open_catalog(uri)
    follow = follower(catalog, NS)
    iceberg.add_listener(follow)
    try:
        with connect(str(root)) as conn:
            conn.sql("INSERT INTO docs VALUES (7, 'seven')")
            first, _ = _settled(uri, root)
            with psycopg.connect(uri, autocommit=True) as admin:
                admin.execute("ALTER TABLE iceberg_tables RENAME TO iceberg_tables_away")
                with caplog.at_level(logging.WARNING):
                    conn.sql("INSERT INTO docs VALUES (8, 'eight')")
                assert 8 in [r["id"] for r in _select(root)]  # the commit stands
                behind = admin.execute("SELECT metadata_location FROM iceberg_tables_away"
                                       ).fetchone()
                assert behind == (first,) and _newest(root) != first
                admin.execute("ALTER TABLE iceberg_tables_away RENAME TO iceberg_tables")
            assert "Iceberg catalog postgresql://quiver@127.0.0.1" in caplog.text
            assert "not updated" in caplog.text and "iceberg_tables" in caplog.text
            assert postgres_server.password not in caplog.text
            conn.sql("DELETE FROM docs WHERE id = 7")
            location, previous = _settled(uri, root)
            assert version(first) <= version(previous) < version(location)
            assert [r["id"] for r in _select(root)] == [1, 3, 8]
    finally:
        iceberg.remove_listener(follow)


def test_a_wrong_password_is_a_clear_error_that_never_shows_the_password(
        postgres_server, pg_database, root, capsys, caplog) -> None:
    wrong = "Wr0ng:p@ss/word%!"
    uri = postgres_server.uri(pg_database, password=wrong)
    assert main(["iceberg", "register", "--root", str(root), "--catalog-uri", uri,
                 "--namespace", NS]) == 1
    captured = capsys.readouterr()
    assert "password authentication failed" in captured.err
    assert "postgresql://quiver@127.0.0.1" in captured.err
    with pytest.raises(CatalogError) as raised:
        PostgresCatalog(uri).location(NS, "docs")
    # The driver's exception is not chained into the traceback a log or a crash prints.
    assert raised.value.__suppress_context__
    shown = "".join(traceback.format_exception(raised.value))
    with caplog.at_level(logging.DEBUG):
        follower(open_catalog(uri), NS)("docs", "file:///r/v1.metadata.json", dict)
    assert "password authentication failed" in caplog.text
    for text in (captured.out, captured.err, shown, caplog.text):
        for secret in (wrong, "Wr0ng", "p%40ss", "p@ss", postgres_server.password):
            assert secret not in text


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg",
                                    "postgresql+psycopg2"])
def test_every_spelling_of_a_postgresql_uri_reaches_the_same_catalog(
        postgres_server, pg_database, scheme) -> None:
    catalog = open_catalog(postgres_server.uri(pg_database, scheme=scheme), "other")
    assert isinstance(catalog, PostgresCatalog)
    assert catalog.register(NS, f"t_{scheme.replace('+', '_')}",
                            "file:///r/t/metadata/v1.metadata.json") == "registered"
    assert catalog.uri == f"postgresql://quiver@127.0.0.1:{postgres_server.port}/{pg_database}"


def test_a_shown_catalog_uri_keeps_user_host_and_database_only() -> None:
    assert redacted("postgresql+psycopg://u:s%40cret@db.internal:6432/cat?password=x&"
                    "sslmode=require") == "postgresql://u@db.internal:6432/cat"
    assert redacted("postgres://[::1]:5432/cat") == "postgresql://[::1]:5432/cat"


def test_ingest_reads_a_table_through_the_postgresql_catalog(postgres_server, pg_database,
                                                             root, tmp_path) -> None:
    uri = postgres_server.uri(pg_database, scheme="postgresql+psycopg")
    assert main(["iceberg", "register", "--root", str(root), "--catalog-uri", uri,
                 "--namespace", NS, "docs"]) == 0
    copy = tmp_path / "copy"
    assert main(["ingest", "--create-root", "--root", str(copy), "docs", "--create",
                 "--iceberg-catalog", uri, "--iceberg-table", f"{NS}.docs"]) == 0
    assert _select(copy) == _select(root)
