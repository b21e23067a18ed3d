"""Spark reads Quiver tables through Iceberg: by metadata file, by folder and through a
Hadoop catalog over the root's ``tables/`` folder, every version by snapshot id, and on S3
(loopback) registered into a JDBC catalog; the rows equal Quiver's own ``SELECT *``
(after deletes, updates, optimize and gc), for a format-3 table (deletion vectors) too.

Spark runs once for the module, in a child interpreter with a pyspark that Iceberg ships a
runtime for (``env.py``); the reads' rows come back as Parquet files. The Spark guide's
Iceberg block runs in that same session, against a root laid out as the guide leaves it.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.flight_server.sql import SqlConnection, connect
from quiver.supertable import iceberg
from quiver.supertable.table import Table, TableOptions
from tests.spark_iceberg import env

SETUP = env.chosen()
_why = env.missing(SETUP)
if _why is not None:
    pytest.skip(f"Spark through Iceberg: {_why}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "spark.md"
RUN_TIMEOUT_S = 240
OPTS = TableOptions(max_rows_per_file=300, build_threads=2, background_indexing=False)
DIM = 4
# Reads are named <table>@<how>; the catalog the reader adds, over the root's tables/.
CATALOG = "qtest"
S3_CATALOG = "qs3"


# -- the tables -----------------------------------------------------------------------------


def _docs(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    emb = np.stack([ids * 0.5 + j / 8 for j in range(DIM)], axis=1).astype(np.float32)
    return pa.table({
        "id": ids,
        "title": [f"doc {i}" for i in ids],
        "year": (2000 + ids % 25).astype(np.int32),
        "rating": ids / 4,
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM),
    })


def _build_docs(conn: SqlConnection, name: str = "docs",
                iceberg_version: int | None = None) -> Table:
    """Six versions: create, two appends over several files, a delete, an update, a
    delete of scattered rows (in every data file: position delete files in format version
    2, deletion vectors in format version 3)."""
    version = f", iceberg_version = {iceberg_version}" if iceberg_version else ""
    conn.sql(f"CREATE TABLE {name} (id BIGINT, title VARCHAR, year INT, rating DOUBLE, "
             f"emb FLOAT[{DIM}]) WITH (fts = 'title', vector = 'emb'{version})")
    t = conn.open_table(name)
    t.append(_docs(0, 700))
    t.append(_docs(700, 120))
    conn.sql(f"DELETE FROM {name} WHERE year < 2004")
    conn.sql(f"UPDATE {name} SET title = 'rewritten', rating = -1 WHERE year = 2010")
    conn.sql(f"DELETE FROM {name} WHERE id % 7 = 3")
    return conn.open_table(name)


TYPED_SCHEMA = pa.schema([
    ("k", pa.int64()), ("i", pa.int32()), ("small", pa.int16()), ("f", pa.float32()),
    ("d", pa.float64()), ("s", pa.string()), ("b", pa.bool_()), ("dt", pa.date32()),
    ("ts", pa.timestamp("us")), ("tstz", pa.timestamp("us", tz="UTC")),
    ("dec", pa.decimal128(10, 2)), ("bin", pa.binary()),
    ("vec", pa.list_(pa.float32(), 3)),
])
# How Spark names each column's type, read through Iceberg.
TYPED_SPARK = ("struct<k:bigint,i:int,small:int,f:float,d:double,s:string,b:boolean,"
               "dt:date,ts:timestamp_ntz,tstz:timestamp,dec:decimal(10,2),bin:binary,"
               "vec:array<float>>")


def _typed_rows() -> pa.Table:
    day = datetime.date(2024, 1, 2)
    at = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901)
    rows = [
        (1, 7, -3, 1.5, 2.25, "one", True, day, at,
         at.replace(tzinfo=datetime.UTC), decimal.Decimal("12.34"), b"\x00\x01",
         [0.5, -1.0, 2.0]),
        (2, None, None, None, None, None, None, None, None, None, None, None, None),
        (3, -2**31, 2**15 - 1, float("inf"), -0.0, "ünïcode ✓", False,
         datetime.date(1970, 1, 1), datetime.datetime(1999, 12, 31, 23, 59, 59),
         datetime.datetime(2000, 6, 1, tzinfo=datetime.UTC), decimal.Decimal("-99999999.99"),
         b"", [0.0, 0.0, 1.0]),
        (4, 4, 4, 4.0, 4.0, "four", True, day, at, at.replace(tzinfo=datetime.UTC),
         decimal.Decimal("4.00"), b"4", [4.0, 4.0, 4.0]),
    ]
    return pa.Table.from_pylist([dict(zip(TYPED_SCHEMA.names, r, strict=True)) for r in rows],
                                schema=TYPED_SCHEMA)


def _build_typed(conn: SqlConnection) -> Table:
    t = conn.create_table("typed", TYPED_SCHEMA)
    t.append(_typed_rows())
    conn.sql("DELETE FROM typed WHERE k = 4")
    conn.sql("UPDATE typed SET s = 'one, updated' WHERE k = 1")
    return conn.open_table("typed")


def _build_compacted(conn: SqlConnection) -> Table:
    """Appends, a delete, ``optimize`` (a replace snapshot), an update, then ``gc``."""
    conn.sql(f"CREATE TABLE compacted (id BIGINT, title VARCHAR, year INT, rating DOUBLE, "
             f"emb FLOAT[{DIM}])")
    t = conn.open_table("compacted")
    for i in range(3):
        t.append(_docs(i * 200, 200))
    conn.sql("DELETE FROM compacted WHERE year > 2015")
    t = conn.open_table("compacted")
    t.optimize(target_rows=1000)
    conn.sql("UPDATE compacted SET title = 'after optimize' WHERE year = 2001")
    t = conn.open_table("compacted")
    t.gc(grace_seconds=0)
    return t


def _build_guide_table(conn: SqlConnection) -> None:
    """``spark_docs`` as the guide's write step leaves it: created, then one commit per
    Spark task of the write (two on ``local[2]``)."""
    conn.sql("CREATE TABLE spark_docs (id BIGINT, title VARCHAR) WITH (fts = 'title')")
    conn.sql("INSERT INTO spark_docs VALUES (1, 'rust async runtime')")
    conn.sql("INSERT INTO spark_docs VALUES (2, 'python web framework'), "
             "(3, 'rust web server')")


# -- the guide's Iceberg block --------------------------------------------------------------


_RUNTIME = re.compile(r"org\.apache\.iceberg:iceberg-spark-runtime-[0-9.]+_[0-9.]+:[0-9.]+")


def guide_iceberg_blocks() -> list[str]:
    """The guide's python blocks marked ``docs-test: skip``: the Iceberg ones, which need
    a Spark the guide's own process does not have."""
    lines = GUIDE.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if re.search(r"<!--\s*docs-test:\s*skip\s*-->", lines[i]):
            i += 1
            assert lines[i].startswith("```python"), f"spark.md:{i + 1}: not a python block"
            end = lines.index("```", i + 1)
            blocks.append("\n".join(lines[i + 1:end]) + "\n")
            i = end
        i += 1
    return blocks


def offline(block: str) -> str:
    """The block with ``spark.jars.packages`` (which downloads) replaced by the local jar."""
    return _RUNTIME.sub(str(SETUP.jar), block.replace('"spark.jars.packages"', '"spark.jars"'))


# -- one Spark run for the module -----------------------------------------------------------


@dataclass
class SparkRun:
    root: Path
    out: Path
    results: dict[str, Any]
    seconds: float
    log: str

    def read(self, name: str) -> pa.Table:
        entry = self.results["reads"][name]
        assert entry["error"] is None, f"Spark read {name} failed:\n{entry['error']}"
        return pq.read_table(self.out / f"{name}.parquet")

    def schema(self, name: str) -> str:
        self.read(name)
        return self.results["reads"][name]["schema"]


@dataclass
class Built:
    conn: SqlConnection
    tables: dict[str, Table]
    # ``docs`` again on a root in S3 (None when the S3 jars or moto are missing).
    s3_docs: Table | None
    s3_conn: SqlConnection | None
    s3: Any

    def location(self, name: str) -> str:
        t = self.tables[name]
        location = iceberg.metadata_location(t.store, t.prefix)
        assert location is not None and location.startswith("file://"), location
        return location

    def folder(self, name: str) -> str:
        """The table's folder as a local path, the way a user would type it."""
        return self.location(name).removeprefix("file://").rsplit("/metadata/", 1)[0]

    def folder_name(self, name: str) -> str:
        return self.folder(name).rsplit("/", 1)[-1]


def _s3_server(request) -> Any:
    """The loopback S3 server, or None where moto is missing (only the S3 test skips)."""
    try:
        return request.getfixturevalue("s3_server")
    except pytest.skip.Exception:
        return None


@pytest.fixture(scope="module")
def built(tmp_path_factory, request) -> Iterator[Built]:
    work = tmp_path_factory.mktemp("spark-iceberg")
    conn = connect(str(work / "data"), table_options=OPTS)
    tables = {"docs": _build_docs(conn), "docs_v3": _build_docs(conn, "docs_v3", 3),
              "typed": _build_typed(conn), "compacted": _build_compacted(conn)}
    _build_guide_table(conn)
    s3_docs = s3_conn = None
    s3_server = _s3_server(request) if SETUP.s3_missing() is None else None
    if s3_server is not None:
        s3_conn = connect(f"s3://{s3_server.new_bucket('spark-iceberg')}/quiver",
                          table_options=OPTS, **s3_server.options())
        s3_docs = _build_docs(s3_conn)
    yield Built(conn, tables, s3_docs, s3_conn, s3_server)
    for c in (conn, s3_conn):
        if c is not None:
            c.close()


def _s3_catalog(s3: Any) -> dict[str, str]:
    """An Iceberg JDBC catalog (an in-memory H2 database) reading S3 through Iceberg's own
    ``S3FileIO``: tables are registered into it by metadata file, with no Hadoop S3 file
    system involved."""
    prefix = f"spark.sql.catalog.{S3_CATALOG}"
    return {prefix: "org.apache.iceberg.spark.SparkCatalog",
            f"{prefix}.type": "jdbc",
            f"{prefix}.uri": "jdbc:h2:mem:quiver;DB_CLOSE_DELAY=-1",
            f"{prefix}.jdbc.user": "sa",
            f"{prefix}.jdbc.password": "",
            f"{prefix}.warehouse": "s3://unused/warehouse",
            f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
            f"{prefix}.s3.endpoint": s3.endpoint,
            f"{prefix}.s3.path-style-access": "true",
            f"{prefix}.s3.access-key-id": s3.access_key_id,
            f"{prefix}.s3.secret-access-key": s3.secret_access_key,
            f"{prefix}.client.region": s3.region}


def _s3_reads(b: Built) -> list[dict[str, Any]]:
    if b.s3_docs is None:
        return []
    location = iceberg.metadata_location(b.s3_docs.store, b.s3_docs.prefix)
    assert location is not None and location.startswith("s3://"), location
    older = f"{location.rsplit('/', 1)[0]}/v3.metadata.json"
    table = f"{S3_CATALOG}.db.docs"

    def register(name: str, metadata_file: str) -> dict[str, Any]:
        return {"name": name, "statement": True,
                "sql": f"CALL {S3_CATALOG}.system.register_table(table => 'db.docs', "
                       f"metadata_file => '{metadata_file}')"}

    # As the guide says: register a version, drop the entry, register a newer one.
    return [
        {"name": "s3-namespace", "statement": True,
         "sql": f"CREATE NAMESPACE IF NOT EXISTS {S3_CATALOG}.db"},
        register("s3-register-v3", older),
        {"name": "s3-docs@v3-file", "sql": f"SELECT * FROM {table}"},
        {"name": "s3-drop", "statement": True, "sql": f"DROP TABLE {table}"},
        register("s3-register", location),
        {"name": "s3-docs", "sql": f"SELECT * FROM {table}"},
        {"name": "s3-docs@v3", "sql": f"SELECT * FROM {table} VERSION AS OF 3"},
    ]


def _reads(b: Built) -> list[dict[str, Any]]:
    docs = b.tables["docs"]
    reads: list[dict[str, Any]] = [
        {"name": "docs@metadata", "path": b.location("docs")},
        {"name": "docs@folder", "path": b.folder("docs")},
        {"name": "docs@catalog", "sql": f"SELECT * FROM {CATALOG}.`{b.folder_name('docs')}`"},
        {"name": "docs@v3-file", "path": f"{b.folder('docs')}/metadata/v3.metadata.json"},
        {"name": "typed@metadata", "path": b.location("typed")},
        {"name": "compacted@catalog",
         "sql": f"SELECT * FROM {CATALOG}.`{b.folder_name('compacted')}`"},
    ]
    reads += [{"name": f"docs@snapshot-{v}", "path": b.folder("docs"),
               "options": {"versionAsOf": str(v)}} for v in range(1, docs.version + 1)]
    v3 = b.tables["docs_v3"]
    reads += [
        {"name": "docs_v3@metadata", "path": b.location("docs_v3")},
        {"name": "docs_v3@catalog",
         "sql": f"SELECT * FROM {CATALOG}.`{b.folder_name('docs_v3')}`"},
        {"name": "docs_v3@format-version", "sql": (
            f"SHOW TBLPROPERTIES {CATALOG}.`{b.folder_name('docs_v3')}` ('format-version')")},
    ]
    reads += [{"name": f"docs_v3@snapshot-{v}", "path": b.folder("docs_v3"),
               "options": {"versionAsOf": str(v)}} for v in range(1, v3.version + 1)]
    return reads + _s3_reads(b)


@pytest.fixture(scope="module")
def spark_run(built: Built, tmp_path_factory) -> SparkRun:
    base = tmp_path_factory.mktemp("spark-run")
    out = base / "out"
    root = Path(built.conn.uri.removeprefix("file://"))
    jars = [SETUP.jar, *(SETUP.s3_jars.values() if built.s3_docs is not None else [])]
    job = {
        "jars": [str(j) for j in jars],
        "cwd": str(root.parent),
        "blocks": [offline(b) for b in guide_iceberg_blocks()],
        "conf": {"spark.sql.extensions":
                 "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
                 f"spark.sql.catalog.{CATALOG}": "org.apache.iceberg.spark.SparkCatalog",
                 f"spark.sql.catalog.{CATALOG}.type": "hadoop",
                 f"spark.sql.catalog.{CATALOG}.warehouse": str(root / "tables"),
                 **(_s3_catalog(built.s3) if built.s3_docs is not None else {}),
                 "spark.sql.session.timeZone": "UTC"},
        "reads": _reads(built),
        "out": str(out),
    }
    job_file = base / "job.json"
    job_file.write_text(json.dumps(job))
    env_vars = {**os.environ,
                "PYTHONPATH": SETUP.python_path(str(REPO)),
                "PYSPARK_PYTHON": sys.executable}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tests.spark_iceberg.reader", str(job_file)],
                          cwd=REPO, env=env_vars, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - started
    log = (done.stdout + done.stderr)[-8000:]
    assert done.returncode == 0 and (out / "results.json").exists(), (
        f"the Spark reader exited {done.returncode}:\n{log}")
    results = json.loads((out / "results.json").read_text())
    sys.stderr.write(f"Spark {SETUP.pyspark_version} + Iceberg {env.ICEBERG_VERSION}: "
                     f"{seconds:.1f}s in all, session {results['session_s']:.1f}s, "
                     f"{len(job['reads'])} reads\n")
    return SparkRun(root, out, results, seconds, log)


# -- comparing rows -------------------------------------------------------------------------


def rows(table: pa.Table, key: str) -> list[tuple]:
    """Rows in ``key`` order, vectors as tuples; column order as the table has it."""
    out = [tuple(tuple(v) if isinstance(v, list) else v for v in r.values())
           for r in table.sort_by(key).to_pylist()]
    return out


def quiver_select_star(b: Built, name: str) -> pa.Table:
    return b.conn.sql(f"SELECT * FROM {name}")


def _same(spark_rows: pa.Table, want: pa.Table, key: str, what: str) -> None:
    assert spark_rows.column_names == want.column_names, what
    got, expected = rows(spark_rows, key), rows(want, key)
    assert len(got) == len(expected), f"{what}: {len(got)} rows, Quiver has {len(expected)}"
    for g, e in zip(got, expected, strict=True):
        assert g == e, f"{what}: Spark row {g} != Quiver row {e}"


# -- tests ----------------------------------------------------------------------------------


def test_metadata_file_read_equals_quiver_select_star_after_deletes_and_updates(
        spark_run, built):
    want = quiver_select_star(built, "docs")
    # Deletes and updates did happen, in every data file: the comparison means something.
    assert 0 < want.num_rows < 820
    assert "rewritten" in want.column("title").to_pylist()
    deletes = Path(built.folder("docs")) / "metadata" / "deletes"
    assert any(deletes.rglob("*.parquet")), "no position delete files were written"
    _same(spark_run.read("docs@metadata"), want, "id", "docs by metadata file")


def test_folder_and_hadoop_catalog_reads_give_the_newest_version(spark_run, built):
    want = quiver_select_star(built, "docs")
    _same(spark_run.read("docs@folder"), want, "id", "docs by folder")
    _same(spark_run.read("docs@catalog"), want, "id", "docs through the Hadoop catalog")


def test_each_snapshot_id_reads_the_quiver_version_of_that_number(spark_run, built):
    t = built.tables["docs"]
    assert t.version == 6
    for v in range(1, t.version + 1):
        want = t.at_version(v).to_table()
        _same(spark_run.read(f"docs@snapshot-{v}"), want, "id", f"docs at snapshot {v}")


def test_an_older_metadata_file_reads_the_table_as_it_was(spark_run, built):
    want = built.tables["docs"].at_version(3).to_table()
    assert want.num_rows == 820
    _same(spark_run.read("docs@v3-file"), want, "id", "docs by v3.metadata.json")


def test_a_format_3_table_reads_exactly_through_its_deletion_vectors(spark_run, built):
    want = quiver_select_star(built, "docs_v3")
    # The same history as docs: rows deleted in every data file, one updated.
    assert want.num_rows == quiver_select_star(built, "docs").num_rows
    assert 0 < want.num_rows < 820 and "rewritten" in want.column("title").to_pylist()
    deletes = Path(built.folder("docs_v3")) / "metadata" / "deletes"
    assert any(deletes.glob("*.puffin")) and not any(deletes.glob("*.parquet")), (
        "a format-3 table must delete rows by deletion vectors only")
    meta = json.loads(Path(built.location("docs_v3").removeprefix("file://")).read_text())
    assert meta["format-version"] == 3
    # Spark's Iceberg sees a format-3 table, not one it downgraded or guessed.
    props = spark_run.read("docs_v3@format-version").to_pylist()
    assert [tuple(r.values()) for r in props] == [("format-version", "3")]
    _same(spark_run.read("docs_v3@metadata"), want, "id", "docs_v3 by metadata file")
    _same(spark_run.read("docs_v3@catalog"), want, "id", "docs_v3 through the Hadoop catalog")


def test_each_format_3_snapshot_reads_the_quiver_version_of_that_number(spark_run, built):
    t = built.tables["docs_v3"]
    assert t.version == 6
    for v in range(1, t.version + 1):
        want = t.at_version(v).to_table()
        _same(spark_run.read(f"docs_v3@snapshot-{v}"), want, "id", f"docs_v3 at snapshot {v}")


def test_vectors_are_arrays_of_float_and_the_row_id_stays_hidden(spark_run, built):
    schema = spark_run.schema("docs@metadata")
    assert schema == ("struct<id:bigint,title:string,year:int,rating:double,"
                      "emb:array<float>>")
    table = spark_run.read("docs@metadata")
    assert table.schema.field("emb").type == pa.list_(pa.float32())
    first = rows(table, "id")[0]
    assert first[0] == 4 and first[-1] == pytest.approx((2.0, 2.125, 2.25, 2.375))


def test_every_column_type_reads_with_its_values_and_nulls(spark_run, built):
    assert spark_run.schema("typed@metadata") == TYPED_SPARK
    want = quiver_select_star(built, "typed")
    assert sorted(want.column("k").to_pylist()) == [1, 2, 3]
    _same(spark_run.read("typed@metadata"), want, "k", "typed by metadata file")


def test_a_table_after_optimize_update_and_gc_reads_exactly(spark_run, built):
    want = quiver_select_star(built, "compacted")
    assert "after optimize" in want.column("title").to_pylist()
    _same(spark_run.read("compacted@catalog"), want, "id", "compacted through the catalog")


def test_the_spark_guides_iceberg_blocks_run_against_a_root(spark_run):
    blocks = guide_iceberg_blocks()
    assert blocks, "docs/spark.md has no Iceberg block marked docs-test: skip"
    # The guide names the runtime this test resolved (a download the reader replaced).
    assert all(SETUP.artifact in b or "spark.jars.packages" not in b for b in blocks)
    assert any(SETUP.artifact in b for b in blocks)
    ran = spark_run.results["blocks"]
    assert ran["error"] is None, f"the guide's Iceberg blocks failed:\n{ran['error']}"


def test_a_table_on_s3_registered_by_metadata_file_reads_exactly(spark_run, built):
    if built.s3_docs is None:
        pytest.skip(f"Spark through Iceberg on S3: "
                    f"{SETUP.s3_missing() or 'moto (the loopback S3 server) is not installed'}")
    for step in ("s3-namespace", "s3-register-v3", "s3-drop", "s3-register"):
        entry = spark_run.results["reads"][step]
        assert entry["error"] is None, f"{step} failed:\n{entry['error']}"
    t = built.s3_docs
    v3 = t.at_version(3).to_table()
    _same(spark_run.read("s3-docs@v3-file"), v3, "id", "docs on S3 registered at v3")
    _same(spark_run.read("s3-docs@v3"), v3, "id", "docs on S3, VERSION AS OF 3")
    # Read after the DROP TABLE: dropping the catalog entry left the table's files.
    want = built.s3_conn.sql("SELECT * FROM docs")
    assert 0 < want.num_rows < v3.num_rows
    _same(spark_run.read("s3-docs"), want, "id", "docs on S3 registered at the newest version")
