"""``quiver ingest`` from an Iceberg table reads it one data file after the other: the
first file's batches are handed out before the next file is opened, so a table of many
files is never held in memory at once; the rows it ingests are the table's live rows, its
position deletes applied.

The files are observed through the table's own file interface (``py-io-impl``), a
pyiceberg ``PyArrowFileIO`` that notes every Parquet file it opens.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyiceberg.io import InputFile
from pyiceberg.io.pyarrow import PyArrowFileIO

from quiver.flight_server.cli import iceberg_source
from quiver.flight_server.cli.main import main
from quiver.flight_server.sql import connect

FILES = 4
ROWS_PER_FILE = 300
OPENED: list[str] = []


class CountingFileIO(PyArrowFileIO):
    """Notes each data file (``data/*.parquet``) as it is opened."""

    def new_input(self, location: str) -> InputFile:
        if "/data/" in location and location.endswith(".parquet"):
            OPENED.append(location)
        return super().new_input(location)


def _lake(tmp_path: Path) -> tuple[Path, list[int]]:
    """A table of FILES data files with every 7th row deleted by a position delete file,
    and a metadata file of its current snapshot that reads through ``CountingFileIO``."""
    with connect(str(tmp_path / "lake")) as conn:
        conn.sql("CREATE TABLE src (id BIGINT, body VARCHAR)")
        for k in range(FILES):
            first = k * ROWS_PER_FILE
            conn.sql("INSERT INTO src VALUES " + ", ".join(
                f"({i}, 'row {i}')" for i in range(first, first + ROWS_PER_FILE)))
        conn.sql("DELETE FROM src WHERE id % 7 = 0")
        table = conn.open_table("src")
        folder = Path(table.store.uri.removeprefix("file://")) / table.prefix
    assert len(list((folder / "data").glob("*.parquet"))) == FILES
    assert list((folder / "metadata" / "deletes").glob("*.parquet"))
    current = Path(iceberg_source.metadata_in(folder).removeprefix("file://"))
    meta = json.loads(current.read_text())
    meta.setdefault("properties", {})["py-io-impl"] = f"{__name__}.CountingFileIO"
    counted = current.parent / "counted.metadata.json"
    counted.write_text(json.dumps(meta))
    live = [i for i in range(FILES * ROWS_PER_FILE) if i % 7]
    return counted, live


def test_ingest_reads_an_iceberg_table_one_data_file_at_a_time(tmp_path) -> None:
    counted, live = _lake(tmp_path)
    source = iceberg_source.describe(counted.as_uri())
    OPENED.clear()
    _, batches, _ = iceberg_source.batches(source)
    assert OPENED == []  # planning opens no data file
    opened_at_each_batch, ids = [], []
    for batch in batches:
        opened_at_each_batch.append(len(OPENED))
        ids += batch.column("id").to_pylist()
    # The first file's rows arrive while it is the only file opened; each file is opened
    # once, after the batches of the one before it were handed out.
    assert opened_at_each_batch[0] == 1
    assert opened_at_each_batch == sorted(opened_at_each_batch)
    assert set(opened_at_each_batch) == set(range(1, FILES + 1))
    assert len(OPENED) == len(set(OPENED)) == FILES
    assert sorted(ids) == live


def test_ingest_of_a_multi_file_iceberg_table_leaves_out_its_deleted_positions(
        tmp_path, capsys) -> None:
    counted, live = _lake(tmp_path)
    OPENED.clear()
    root = tmp_path / "root"
    args = ["ingest", "--create-root", "--root", str(root), "copy", str(counted), "--create",
            "--chunk-rows", "250"]
    assert main(args) == 0
    assert f"{len(live):,} rows" in capsys.readouterr().out
    assert len(OPENED) == len(set(OPENED)) == FILES
    with connect(str(root)) as conn:
        rows = conn.sql("SELECT id, body FROM copy").sort_by("id").to_pylist()
    assert rows == [{"id": i, "body": f"row {i}"} for i in live]
    assert main(args) == 0  # the same snapshot again adds nothing
    assert "skipped 1 file already ingested" in capsys.readouterr().out
    with connect(str(root)) as conn:
        assert conn.sql("SELECT count(*) AS n FROM copy").column("n")[0].as_py() == len(live)


def test_ingest_names_an_unreadable_iceberg_metadata_file(tmp_path, capsys) -> None:
    meta = tmp_path / "lake" / "metadata" / "v1.metadata.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"not": "iceberg"}')
    root = tmp_path / "root"
    assert main(["ingest", "--create-root", "--root", str(root), "copy",
                 str(tmp_path / "lake"), "--create"]) == 1
    err = capsys.readouterr().err
    assert "v1.metadata.json" in err and "cannot be read as Iceberg table metadata" in err
    assert not (root / "_catalog").exists()
