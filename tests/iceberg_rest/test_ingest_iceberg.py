"""``quiver ingest`` reading an existing Iceberg table that pyiceberg wrote (through Apache
Iceberg's REST catalog fixture): by its folder, by its metadata file, or by catalog and
identifier; the Quiver table then holds exactly the lake table's live rows, rows deleted
in the lake included as deleted, and is searchable."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from quiver.flight_server.cli.main import main
from quiver.flight_server.sql import connect
from quiver.supertable.iceberg.catalog import TOKEN_ENV
from tests.iceberg_rest.conftest import TOKEN

ROWS = 5000


@pytest.fixture(scope="module")
def lake(catalog_server):
    """A lake table written by pyiceberg: two appends, then a delete of every 7th row and
    of one whole append's 'beta' rows."""
    from pyiceberg.catalog.rest import RestCatalog
    from pyiceberg.expressions import EqualTo, In

    client = RestCatalog("rest", uri=catalog_server.url, token=TOKEN)
    client.create_namespace_if_not_exists("lakehouse")
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("kind", pa.string()),
                        ("body", pa.string()), ("weight", pa.float64())])
    table = client.create_table(("lakehouse", "events"), schema=schema)
    ids = list(range(ROWS))
    first = pa.table({"id": ids[:3000], "kind": ["alpha" if i % 2 else "beta" for i in ids[:3000]],
                      "body": [f"event number {i} about rivers" for i in ids[:3000]],
                      "weight": [i * 0.5 for i in ids[:3000]]}, schema=schema)
    second = pa.table({"id": ids[3000:], "kind": ["gamma"] * (ROWS - 3000),
                       "body": [f"event number {i} about mountains" for i in ids[3000:]],
                       "weight": [None] * (ROWS - 3000)}, schema=schema)
    table.append(first)
    table.append(second)
    table.delete(In("id", list(range(0, ROWS, 7))))
    table.delete(EqualTo("kind", "beta"))
    table = client.load_table(("lakehouse", "events"))
    expected = table.scan().to_arrow().sort_by("id").to_pylist()
    assert len(expected) < ROWS and all(r["id"] % 7 and r["kind"] != "beta" for r in expected)
    return table, expected


def _quiver_rows(root: Path, name: str) -> list[dict]:
    with connect(str(root)) as conn:
        return conn.sql(f"SELECT id, kind, body, weight FROM {name}").sort_by("id").to_pylist()


def test_ingest_reads_a_lake_table_by_its_folder_with_its_deletes(lake, tmp_path,
                                                                  capsys) -> None:
    table, expected = lake
    folder = Path(table.metadata.location.removeprefix("file:"))
    root = tmp_path / "root"
    assert main(["ingest", "--create-root", "--root", str(root), "events", str(folder), "--create",
                 "--fts", "body", "--chunk-rows", "1000"]) == 0
    assert f"{len(expected):,} rows" in capsys.readouterr().out
    assert _quiver_rows(root, "events") == expected
    with connect(str(root)) as conn:
        hits = conn.sql("SELECT id FROM bm25_search('events', 'body', 'mountains', 10)")
    assert hits.num_rows == 10 and all(r["id"] >= 3000 for r in hits.to_pylist())


def test_ingest_again_of_the_same_snapshot_adds_nothing(lake, tmp_path, capsys) -> None:
    table, expected = lake
    root = tmp_path / "root"
    meta = Path(table.metadata_location.removeprefix("file:"))
    args = ["ingest", "--create-root", "--root", str(root), "events", str(meta), "--create"]
    assert main(args) == 0
    assert main(args) == 0
    assert "skipped 1 file already ingested" in capsys.readouterr().out
    assert _quiver_rows(root, "events") == expected


def test_ingest_reads_a_lake_table_through_its_rest_catalog(lake, catalog_server, tmp_path,
                                                            monkeypatch) -> None:
    _, expected = lake
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    root = tmp_path / "root"
    assert main(["ingest", "--create-root", "--root", str(root), "events", "--create",
                 "--iceberg-catalog", catalog_server.uri,
                 "--iceberg-table", "lakehouse.events"]) == 0
    assert _quiver_rows(root, "events") == expected


def test_ingest_names_a_missing_catalog_table(catalog_server, tmp_path, monkeypatch,
                                              capsys) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert main(["ingest", "--create-root", "--root", str(tmp_path / "root"), "events", "--create",
                 "--iceberg-catalog", catalog_server.uri,
                 "--iceberg-table", "lakehouse.nope"]) == 1
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "root" / "_catalog").exists()


def test_ingest_applies_the_position_delete_files_of_a_merge_on_read_table(tmp_path) -> None:
    # pyiceberg deletes by rewriting files; a Quiver table's Iceberg metadata has position
    # delete files, as Spark's and Trino's merge-on-read deletes do.
    lake = tmp_path / "lake"
    with connect(str(lake)) as conn:
        conn.sql("CREATE TABLE src (id BIGINT, body VARCHAR)")
        conn.sql("INSERT INTO src VALUES " + ", ".join(f"({i}, 'row {i}')" for i in range(50)))
        conn.sql("DELETE FROM src WHERE id % 5 = 0")
        table = conn.open_table("src")
        folder = Path(table.store.uri.removeprefix("file://")) / table.prefix
    assert list((folder / "metadata" / "deletes").glob("*.parquet"))
    root = tmp_path / "root"
    assert main(["ingest", "--create-root", "--root", str(root), "copy", str(folder),
                 "--create"]) == 0
    with connect(str(root)) as conn:
        ids = conn.sql("SELECT id FROM copy").column("id").to_pylist()
    assert sorted(ids) == [i for i in range(50) if i % 5]
