"""Existing Iceberg tables read through SQL: ``iceberg_table('<source>', 'ns.table')`` over
catalogs the operator named with ``quiver serve --iceberg-source NAME=CATALOG_URI`` (or
``connect(iceberg_sources=...)``). A lake table written by pyiceberg's own writer becomes a
searchable Quiver table with CREATE TABLE … AS SELECT; filters, joins and INSERT … SELECT
read it; unknown sources and tables are INVALID_ARGUMENT; a catalog entry whose metadata
lists a file outside the table's location (by name, or through a symbolic link in its
folder) is refused with nothing read, while a table reached through a linked folder reads;
path-taking
functions stay refused; a server without sources refuses the function."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from adbc_driver_manager import AdbcStatusCode

from quiver.flight_server.cli.main import main
from quiver.flight_server.sql import SqlPlanError, connect
from quiver.flight_server.sql.lake import LakeSourceError, parse_sources
from quiver.supertable import interrupt as interrupts
from quiver.supertable.errors import WorkCancelledError
from quiver.supertable.iceberg.confined import ConfinedFileIO, OutsideLocationError, within
from quiver.supertable.iceberg.sqlite import SqliteCatalog
from tests.flight_server.conftest import ServerProcess, start_server
from tests.iceberg_catalogs import adbc_cursor, docs_root
from tests.iceberg_sql import lake_writer, reader
from tests.iceberg_sql.postgres import Postgres

ARTICLES = [
    (1, "the quick brown fox jumps", "ann"),
    (2, "a lazy dog sleeps all day", "bob"),
    (3, "foxes and dogs are friends", "ann"),
    (4, "whales sing in the deep sea", "cyd"),
    (5, "the fox den is under the oak", "bob"),
]
SECRET = "top-secret-row"


def _articles(rows: list[tuple[int, str, str]]) -> pa.Table:
    return pa.table({"id": pa.array([r[0] for r in rows], pa.int64()),
                     "body": pa.array([r[1] for r in rows], pa.string()),
                     "author": pa.array([r[2] for r in rows], pa.string())})


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite catalog whose namespace ``lake`` holds pyiceberg-written tables:
    ``articles`` (two appends: two data files), ``empty`` (no snapshot) and ``evil`` (one
    of its data files added from a folder outside its location), ``linked_file`` and
    ``linked_folder`` (a data file reached through a link in the table's folder to the same
    outside file, or to the outside folder) and ``via_link`` (written under a linked
    warehouse folder, so its location goes through the link); and whose namespace
    ``quiver`` lists a Quiver table ``docs`` (ids 1 and 3 live, 2 deleted)."""
    missing = reader.missing()
    if missing is not None:
        pytest.skip(missing)
    base = tmp_path_factory.mktemp("lake")
    db = base / "catalog.db"
    uri = f"sqlite:///{db}"
    warehouse = base / "warehouse"
    warehouse.mkdir()
    lake_writer.write(uri, warehouse, "lake", "articles",
                      [_articles(ARTICLES[:3]), _articles(ARTICLES[3:])])
    lake_writer.write(uri, warehouse, "lake", "empty", [_articles([])])
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    pq.write_table(_articles([(99, SECRET, "eve")]), elsewhere / "secret.parquet")
    lake_writer.write(uri, warehouse, "lake", "evil", [_articles(ARTICLES[:1])],
                      outside=[elsewhere / "secret.parquet"])
    # The links exist in the tables' folders before pyiceberg creates the tables there.
    for table, link, target, added in (("linked_file", "evil.parquet", "secret.parquet",
                                        "evil.parquet"),
                                       ("linked_folder", "sub", "", "sub/secret.parquet")):
        folder = warehouse / "lake" / table
        (folder / "data").mkdir(parents=True)
        (folder / "data" / link).symlink_to(elsewhere / target)
        location = lake_writer.write(uri, warehouse, "lake", table, [_articles(ARTICLES[:1])],
                                     outside=[folder / "data" / added])
        assert location == folder.as_uri(), location  # the link is inside the table
    (base / "warehouse-link").symlink_to(warehouse, target_is_directory=True)
    location = lake_writer.write(uri, base / "warehouse-link", "lake", "via_link",
                                 [_articles(ARTICLES[:2])])
    assert "/warehouse-link/" in location
    root = docs_root(base / "quiver-root", notes=False)
    assert main(["iceberg", "register", "--root", str(root), "--catalog-uri", uri,
                 "--namespace", "quiver"]) == 0
    return db


@pytest.fixture(scope="module")
def server(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("served") / "root"
    with connect(str(root)) as conn:
        conn.sql("CREATE TABLE authors (name VARCHAR, city VARCHAR)")
        conn.sql("INSERT INTO authors VALUES ('ann', 'Oslo'), ('bob', 'Lima')")
    srv = start_server(root, "--iceberg-source", f"lake=sqlite:///{lake}")
    try:
        yield srv
    finally:
        srv.stop()


def _rows(uri: str, sql: str) -> list[tuple]:
    with adbc_cursor(uri) as cur:
        cur.execute(sql)
        return cur.fetchall()


def _refused(uri: str, sql: str) -> adbc.Error:
    with adbc_cursor(uri) as cur, pytest.raises(adbc.Error) as bad:
        cur.execute(sql)
        cur.fetchall()
    return bad.value


# -- through a real server, with ADBC ----------------------------------------------------------


def test_create_table_as_select_from_a_lake_table_makes_it_searchable(server) -> None:
    assert _rows(server.uri, "CREATE TABLE articles WITH (fts = 'body') AS SELECT id, body, "
                 "author FROM iceberg_table('lake', 'lake.articles')") == [(5,)]
    found = _rows(server.uri, "SELECT id FROM bm25_search('articles', 'body', 'fox', 10) "
                  "ORDER BY id")
    assert found == [(1,), (5,)]
    assert _rows(server.uri, "SELECT count(*) FROM articles") == [(5,)]


def test_select_with_a_filter_and_a_join_reads_the_lake_table(server) -> None:
    rows = _rows(server.uri, "SELECT a.id, w.city FROM iceberg_table('lake', 'lake.articles') "
                 "AS a JOIN authors AS w ON a.author = w.name WHERE a.id >= 2 ORDER BY a.id")
    assert rows == [(2, "Lima"), (3, "Oslo"), (5, "Lima")]
    assert _rows(server.uri, "SELECT body FROM iceberg_table('lake', 'lake.articles') "
                 "WHERE author = 'cyd'") == [("whales sing in the deep sea",)]
    # No column read at all (the rows still count), and one lake table twice.
    assert _rows(server.uri, "SELECT count(*) FROM iceberg_table('lake', 'lake.articles')") \
        == [(5,)]
    assert _rows(server.uri, "WITH a AS (SELECT * FROM iceberg_table('lake', "
                 "'lake.articles')) SELECT count(*) FROM a AS x JOIN a AS y "
                 "ON x.author = y.author") == [(9,)]


def test_insert_select_appends_the_lake_rows(server) -> None:
    _rows(server.uri, "CREATE TABLE picks (id BIGINT, body VARCHAR)")
    assert _rows(server.uri, "INSERT INTO picks SELECT id, body FROM iceberg_table('lake', "
                 "'lake.articles') WHERE author = 'ann'") == [(2,)]
    assert _rows(server.uri, "SELECT id FROM picks ORDER BY id") == [(1,), (3,)]


def test_a_quiver_table_in_the_catalog_reads_without_its_deleted_rows(server) -> None:
    assert _rows(server.uri, "SELECT id, title FROM iceberg_table('lake', 'quiver.docs') "
                 "ORDER BY id") == [(1, "alpha"), (3, "gamma")]


def test_a_lake_table_without_a_snapshot_is_an_empty_relation(server) -> None:
    assert _rows(server.uri, "CREATE TABLE nothing AS SELECT * FROM iceberg_table('lake', "
                 "'lake.empty')") == [(0,)]
    assert _rows(server.uri, "SELECT count(*) FROM nothing") == [(0,)]


@pytest.mark.parametrize(("sql", "words"), [
    ("SELECT * FROM iceberg_table('ocean', 'lake.articles')", "unknown Iceberg source 'ocean'"),
    ("SELECT * FROM iceberg_table('lake', 'lake.nothere')", "has no table 'lake.nothere'"),
    ("SELECT * FROM iceberg_table('lake', 'articles')", "'namespace.table'"),
    ("SELECT * FROM iceberg_table('/etc', 'passwd.x')", "unknown Iceberg source"),
    ("SELECT * FROM iceberg_table('lake')", "takes 2 arguments"),
])
def test_unknown_sources_and_tables_are_invalid_argument(server, sql: str, words: str) -> None:
    err = _refused(server.uri, sql)
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT, err
    assert words in str(err)


def test_a_data_file_outside_the_table_location_is_refused_and_nothing_is_read(
        server) -> None:
    err = _refused(server.uri, "CREATE TABLE stolen AS SELECT * FROM iceberg_table('lake', "
                   "'lake.evil')")
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT
    assert "outside its location" in str(err) and SECRET not in str(err)
    # Not even the rows of its own file come out: the whole read is refused.
    err = _refused(server.uri, "SELECT body FROM iceberg_table('lake', 'lake.evil')")
    assert "outside its location" in str(err)
    assert "stolen" not in [r[0] for r in _rows(server.uri, "SHOW TABLES")]


@pytest.mark.parametrize("table", ["linked_file", "linked_folder"])
def test_a_data_file_linked_out_of_the_table_folder_is_refused_and_nothing_is_read(
        server, table: str) -> None:
    err = _refused(server.uri, f"SELECT * FROM iceberg_table('lake', 'lake.{table}')")
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT
    assert "outside its location" in str(err) and SECRET not in str(err)
    err = _refused(server.uri, f"CREATE TABLE linked_{table} AS SELECT * FROM "
                   f"iceberg_table('lake', 'lake.{table}')")
    assert "outside its location" in str(err)
    assert f"linked_{table}" not in [r[0] for r in _rows(server.uri, "SHOW TABLES")]


def test_a_table_whose_location_goes_through_a_linked_folder_reads(server) -> None:
    assert _rows(server.uri, "SELECT id, author FROM iceberg_table('lake', 'lake.via_link') "
                 "ORDER BY id") == [(1, "ann"), (2, "bob")]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM iceberg_scan('/tmp')",
    "CREATE TABLE t AS SELECT * FROM read_json('/etc/hosts')",
    "SELECT * FROM 'file:///etc/passwd'",
])
def test_the_gate_still_refuses_functions_that_take_paths(server, sql: str) -> None:
    err = _refused(server.uri, sql)
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT
    assert "root:" not in str(err)


def test_a_server_without_iceberg_sources_refuses_the_function(tmp_path: Path) -> None:
    from quiver.flight_server.service.server import QuiverFlightServer

    conn = connect(str(tmp_path / "root"))
    srv = QuiverFlightServer(conn, "grpc://127.0.0.1:0")
    try:
        err = _refused(f"grpc://127.0.0.1:{srv.port}",
                       "SELECT * FROM iceberg_table('lake', 'lake.articles')")
    finally:
        srv.shutdown()
        conn.close()
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT
    assert "reads no Iceberg catalogs" in str(err) and "--iceberg-source" in str(err)


# -- embedded ----------------------------------------------------------------------------------


def test_a_catalog_entry_naming_any_other_file_is_refused_without_its_content(
        lake: Path, tmp_path: Path) -> None:
    catalog = SqliteCatalog(f"sqlite:///{lake}")
    catalog.register("hostile", "passwd", "file:///etc/passwd")
    # Real metadata of a table, copied out of the table's folder and edited.
    real = SqliteCatalog(f"sqlite:///{lake}").location("lake", "articles")
    assert real is not None
    document = json.loads(Path(real.removeprefix("file://")).read_text())
    moved = tmp_path / "v1.metadata.json"
    moved.write_text(json.dumps(document))
    catalog.register("hostile", "moved", moved.as_uri())
    rooted = Path(real.removeprefix("file://")).with_name("v99.metadata.json")
    rooted.write_text(json.dumps({**document, "location": "file:///"}))
    catalog.register("hostile", "rooted", rooted.as_uri())
    try:
        with connect(str(tmp_path / "root"), iceberg_sources={"lake": f"sqlite:///{lake}"}) \
                as conn:
            for name, words in (("passwd", "names no metadata file"),
                                ("moved", "metadata file lies outside its location"),
                                ("rooted", "not a folder a table may be confined to")):
                with pytest.raises(LakeSourceError, match=words) as bad:
                    conn.sql(f"SELECT * FROM iceberg_table('lake', 'hostile.{name}')")
                assert "root:" not in str(bad.value)
            assert conn.list_tables() == []
    finally:
        rooted.unlink()


def test_only_locations_under_the_table_folder_are_within_it() -> None:
    root = "file:///data/lake/t"
    assert within("file:///data/lake/t/data/a.parquet", root)
    assert within("/data/lake/t/data/cat%3Da%20b/a.parquet", root)
    for outside in ("file:///etc/passwd", "file:///data/lake/t/../../../etc/passwd",
                    "file:///data/lake/t/%2e%2e/x", "file:///data/lake/tt/a.parquet",
                    "s3://bucket/data/lake/t/a.parquet", "data/lake/t/a.parquet",
                    "file:///data/lake/t", "file:///data/lake/t//x", "file:///data/lake/t/a%2Fb"):
        assert not within(outside, root), outside
    assert within("s3a://bucket/t/a.parquet", "s3://bucket/t")
    assert not within("s3://other/t/a.parquet", "s3://bucket/t")
    assert not within("s3://bucket/a.parquet", "s3://bucket")
    assert not within("file:///etc/passwd", "file:///")


def test_columns_come_in_the_order_asked_for(lake: Path) -> None:
    from quiver.flight_server.sql.lake import LakeSources

    table = LakeSources({"lake": f"sqlite:///{lake}"}).open("lake", "lake.articles")
    want = pa.schema([("author", pa.string()), ("id", pa.int64())])
    got = pa.Table.from_batches(list(table.batches(table.plan(), want.names, want)), want)
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == [
        {"author": r[2], "id": r[0]} for r in ARTICLES]


def test_the_confined_file_interface_opens_nothing_outside(tmp_path: Path) -> None:
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = ConfinedFileIO(PyArrowFileIO(), tmp_path.as_uri(), "t")
    (tmp_path / "inside").write_text("ok")
    with io.new_input((tmp_path / "inside").as_uri()).open() as f:
        assert f.read() == b"ok"
    with pytest.raises(OutsideLocationError):
        io.new_input("file:///etc/passwd")
    with pytest.raises(OutsideLocationError):
        io.new_input(f"{tmp_path.as_uri()}/../x")


def test_the_confined_file_interface_follows_no_link_out_of_its_folder(tmp_path: Path) -> None:
    from pyiceberg.io.pyarrow import PyArrowFileIO

    table, outside = tmp_path / "real" / "t", tmp_path / "outside"
    (table / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text(SECRET)
    (table / "data" / "own").write_text("ok")
    (table / "data" / "file-link").symlink_to(outside / "secret")
    (table / "data" / "folder-link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    for root in (table.as_uri(), str(table), (tmp_path / "link" / "t").as_uri()):
        io = ConfinedFileIO(PyArrowFileIO(), root, "t")
        for name in ("file-link", "folder-link/secret"):
            for form in (f"{root}/data/{name}", str(table / "data" / name)):
                with pytest.raises(OutsideLocationError):
                    io.new_input(form)
                assert not within(form, root), (form, root)
        # Through the linked folder, the table's own file opens by its real path.
        own = io.new_input(f"{root}/data/own")
        assert own.location == str(table.resolve() / "data" / "own")
        with own.open() as f:
            assert f.read() == b"ok"
    # A location that is a link to the filesystem's root confines nothing.
    (tmp_path / "to-root").symlink_to("/", target_is_directory=True)
    assert not within("file:///etc/passwd", (tmp_path / "to-root").as_uri())
    assert not within((tmp_path / "to-root" / "etc" / "passwd").as_uri(),
                      (tmp_path / "to-root").as_uri())


def test_a_cancelled_statement_reads_no_lake_batch(lake: Path, tmp_path: Path) -> None:
    with connect(str(tmp_path / "root"), iceberg_sources={"lake": f"sqlite:///{lake}"}) \
            as conn:
        watch = interrupts.Interrupt()
        with interrupts.scope(watch):
            stream = conn.sql_stream("SELECT * FROM iceberg_table('lake', 'lake.articles')")
            watch.cancel()
            with pytest.raises(WorkCancelledError):
                stream.read_all()


def test_iceberg_source_flags_are_parsed_without_quoting_uris_or_secrets() -> None:
    [src] = parse_sources(["lake=rest+http://127.0.0.1:1/cat"],
                          ["lake.token=s3cr3t", "lake.warehouse=wh"])
    assert (src.name, src.warehouse, src.token) == ("lake", "wh", "s3cr3t")
    assert "s3cr3t" not in repr(src) and "127.0.0.1" not in repr(src)
    for pairs, options in ((["lake"], []), (["la-ke=sqlite:///x.db"], []),
                           (["a=sqlite:///x.db", "a=sqlite:///y.db"], []),
                           (["a=sqlite:///x.db"], ["b.token=s3cr3t"]),
                           (["a=sqlite:///x.db"], ["a.password=s3cr3t"])):
        with pytest.raises(ValueError) as bad:
            parse_sources(pairs, options)
        assert "s3cr3t" not in str(bad.value) and "x.db" not in str(bad.value)


# -- a PostgreSQL catalog ----------------------------------------------------------------------


def test_a_postgres_catalog_source_reads_its_tables_and_never_shows_the_password(
        postgres_server: Postgres, pg_database: str, tmp_path: Path) -> None:
    uri = postgres_server.uri(pg_database)
    root = docs_root(tmp_path / "lake-root", notes=False)
    assert main(["iceberg", "register", "--root", str(root), "--catalog-uri", uri,
                 "--namespace", "pg"]) == 0
    with connect(str(tmp_path / "root"), iceberg_sources={"pg": uri}) as conn:
        assert conn.sql("CREATE TABLE docs WITH (fts = 'title') AS SELECT * FROM "
                        "iceberg_table('pg', 'pg.docs')").to_pylist() == [{"count": 2}]
        found = conn.sql("SELECT id FROM bm25_search('docs', 'title', 'gamma', 5)")
        assert found.to_pylist() == [{"id": 3}]
        with pytest.raises(SqlPlanError) as bad:
            conn.sql("SELECT * FROM iceberg_table('pg', 'pg.absent')")
        assert postgres_server.password not in str(bad.value)
    shutil.rmtree(root)
