"""The ``quiver`` Python API against real tables: local folders, memory roots, and the
SQL forms each call must agree with."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import quiver
from quiver.catalog.errors import InvalidTableNameError
from quiver.flight_server.sql import SqlSyntaxError, SqlTableNotFoundError
from quiver.supertable.errors import CommitConflictError, StorageError, TableExistsError

REPO = Path(__file__).resolve().parents[2]
HAS_POLARS = importlib.util.find_spec("polars") is not None
needs_polars = pytest.mark.skipif(not HAS_POLARS, reason="polars is not installed")

TITLES = ["fast json parser", "async http client", "json schema validator",
          "http json api server", "image resizer"]
VECTORS = [[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]]


@pytest.fixture
def db(tmp_path: Path):
    with quiver.connect(str(tmp_path / "data")) as database:
        yield database


@pytest.fixture
def docs(db):
    frame = pd.DataFrame({"id": range(5), "title": TITLES,
                          "year": [2001, 2010, 2015, 2020, 1999],
                          "emb": [np.array(v) for v in VECTORS]})
    return db.create_table("docs", frame)


# -- connect, sql, tables --------------------------------------------------------------------


def test_version_is_the_distribution_version_and_the_cli_prints_it() -> None:
    from importlib.metadata import version
    assert quiver.__version__ == version("quiver")
    out = subprocess.run([sys.executable, "-m", "quiver", "--version"],
                         capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"quiver {quiver.__version__}"


def test_every_public_name_is_exported_and_documented() -> None:
    for name in quiver.__all__:
        assert hasattr(quiver, name), name
        if name != "__version__":
            assert getattr(quiver, name).__doc__, name
    for cls in (quiver.Database, quiver.Table, quiver.Search, quiver.Result):
        for attr, value in vars(cls).items():
            if not attr.startswith("_") and callable(value):
                assert value.__doc__, f"{cls.__name__}.{attr}"


def test_sql_result_converts_to_arrow_pandas_and_lists(db) -> None:
    db.sql("CREATE TABLE t (a BIGINT, b VARCHAR)")
    db.sql("INSERT INTO t VALUES (?, ?), (?, ?)", [1, "x", 2, "y"])
    result = db.sql("SELECT a, b FROM t WHERE a > ? ORDER BY a", [0])
    assert result.to_arrow().to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert result.to_pandas()["b"].tolist() == ["x", "y"]
    assert result.to_list() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert len(result) == 2


@pytest.mark.skipif(HAS_POLARS, reason="polars is installed: the missing-polars path is moot")
def test_to_polars_without_polars_says_how_to_get_it(db) -> None:
    with pytest.raises(ImportError, match="pip install polars"):
        db.sql("SELECT 1 AS one").to_polars()


@needs_polars
def test_to_polars_gives_a_polars_frame(db) -> None:
    assert db.sql("SELECT 1 AS one").to_polars()["one"].to_list() == [1]


def test_table_names_open_and_drop(db, docs) -> None:
    db.create_table("other", schema=pa.schema([("x", pa.int64())]))
    assert db.table_names() == ["docs", "other"]
    assert db.open_table("docs").count() == 5
    db.drop_table("other")
    assert db.table_names() == ["docs"]
    with pytest.raises(quiver.NotFound):
        db.open_table("other")
    db.drop_table("other", missing_ok=True)


def test_memory_root_and_context_manager_close() -> None:
    with quiver.connect("memory://quiver-api-test") as db:
        db.create_table("m", [{"a": 1, "s": "hello world"}])
        assert db.open_table("m").search("hello").to_list()[0]["a"] == 1


# -- create_table ----------------------------------------------------------------------------


def test_float64_pandas_embeddings_become_a_float32_vector_index(db, docs) -> None:
    assert docs.schema.field("emb").type == pa.list_(pa.float32(), 2)
    spec = db._conn.open_table("docs").spec
    assert dict(spec.vector) == {"emb": "cosine"}
    assert list(spec.fts) == ["title"]
    hits = docs.search([1.0, 0.05]).limit(1).to_list()
    assert hits[0]["id"] == 0


def test_float16_arrow_lists_are_cast_and_indexed(db) -> None:
    emb = pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float16()))
    t = db.create_table("half", pa.table({"k": [1, 2], "emb": emb}))
    assert t.schema.field("emb").type == pa.list_(pa.float32(), 2)
    assert t.search([0.0, 1.0]).limit(1).to_list()[0]["k"] == 2


@pytest.mark.parametrize("value_type", [pa.float16(), pa.float64()], ids=str)
def test_float16_and_float64_vectors_find_the_float32_neighbours(db, value_type) -> None:
    # Values a float16 holds exactly, so every width holds the same numbers.
    x = np.random.default_rng(9).standard_normal((300, 8)).astype(np.float16)

    def table(t: pa.DataType) -> pa.Table:
        flat = pa.array(x.reshape(-1).astype(t.to_pandas_dtype()), t)
        return pa.table({"k": range(len(x)), "v": pa.FixedSizeListArray.from_arrays(flat, 8)})

    ref = db.create_table("ref32", table(pa.float32()), metric="l2")
    wide = db.create_table("wide", table(value_type), metric="l2")
    assert wide.schema.field("v").type == pa.list_(pa.float32(), 8)
    q = (x[21].astype(np.float32) + 0.03).tolist()
    got = wide.search(q).limit(10).to_list()
    expected = ref.search(q).limit(10).to_list()
    assert [r["k"] for r in got] == [r["k"] for r in expected]
    sql = db.sql(f"SELECT k FROM vector_search('wide', 'v', '{q}', 10) ORDER BY score, k")
    assert [r["k"] for r in sql.to_list()] == [r["k"] for r in expected]


@pytest.mark.parametrize("column", [pa.array([[1, 2], [3, 4]], pa.list_(pa.int8(), 2)),
                                    pa.array(["a", "b"])], ids=["int8-list", "string"])
def test_a_vector_index_on_a_non_vector_column_is_invalid_input(db, column) -> None:
    with pytest.raises(quiver.InvalidInput, match="fixed-size list of float16, float32"):
        db.create_table("bad", pa.table({"v": column}), fts=[], vector="v")
    assert "bad" not in db.table_names()


def test_ragged_embeddings_are_refused_and_create_nothing(db) -> None:
    frame = pd.DataFrame({"emb": [[1.0, 2.0], [1.0, 2.0, 3.0]]})
    with pytest.raises(quiver.InvalidInput, match="different lengths"):
        db.create_table("ragged", frame)
    assert "ragged" not in db.table_names()


def test_explicit_indexes_and_metric(db) -> None:
    data = pa.table({"a": ["x y", "z"], "b": ["p", "q"],
                     "v": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32(), 2))})
    t = db.create_table("explicit", data, fts=["b"], vector="v", metric="l2")
    spec = db._conn.open_table("explicit").spec
    assert list(spec.fts) == ["b"] and dict(spec.vector) == {"v": "l2"}
    with pytest.raises(quiver.InvalidInput):
        t.search("x").column("a").to_list()


def test_create_modes(db, docs) -> None:
    with pytest.raises(quiver.AlreadyExists):
        db.create_table("docs", [{"title": "other"}])
    same = db.create_table("docs", [{"title": "other"}], mode="exist_ok")
    assert same.count() == 5
    replaced = db.create_table("docs", [{"title": "other"}], mode="overwrite")
    assert replaced.count() == 1 and replaced.schema.names == ["title"]
    with pytest.raises(quiver.InvalidInput, match="mode"):
        db.create_table("docs", [{"title": "x"}], mode="append")


def test_create_from_schema_only_then_add_every_data_kind(db) -> None:
    schema = pa.schema([("n", pa.int64()), ("s", pa.string())])
    t = db.create_table("kinds", schema=schema)
    assert t.count() == 0
    batch = pa.record_batch({"n": [3], "s": ["c"]})
    assert t.add(pd.DataFrame({"n": [1], "s": ["a"]})) == 1
    assert t.add(pa.table({"n": [2], "s": ["b"]})) == 1
    assert t.add(batch) == 1
    assert t.add(pa.RecordBatchReader.from_batches(batch.schema, [batch, batch])) == 2
    assert t.add([{"n": 5, "s": "e"}]) == 1
    assert t.count() == 6
    assert sorted(t.to_arrow()["n"].to_pylist()) == [1, 2, 3, 3, 3, 5]


@needs_polars
def test_polars_frames_create_and_add(db) -> None:
    import polars as pl
    frame = pl.DataFrame({"s": ["a b", "c"], "emb": [[1.0, 0.0], [0.0, 1.0]]})
    t = db.create_table("pl", frame)
    assert t.schema.field("emb").type == pa.list_(pa.float32(), 2)
    assert t.add(frame) == 2
    assert t.search("a").to_polars()["s"].to_list() == ["a b", "a b"]


def test_add_refuses_rows_of_another_shape_and_adds_nothing(db, docs) -> None:
    with pytest.raises(quiver.InvalidInput):
        docs.add([{"nope": 1}])
    assert docs.count() == 5


# -- update / delete through SQL -------------------------------------------------------------


def test_update_and_delete_match_sql_counts(db, docs) -> None:
    assert docs.update("year < 2005", {"title": "renamed json"}) == 2
    assert db.sql("SELECT count(*) AS n FROM docs WHERE title = 'renamed json'"
                  ).to_list() == [{"n": 2}]
    assert docs.update("id = 1", {"emb": np.array([0.5, 0.5]), "year": 2011}) == 1
    assert docs.delete("year >= 2015") == 2
    assert docs.count() == 3
    assert docs.delete("id = 99") == 0


def test_update_values_are_parameters_not_sql(db, docs) -> None:
    evil = "x'; DELETE FROM docs; --"
    assert docs.update("id = 0", {"title": evil}) == 1
    assert docs.count() == 5
    assert db.sql("SELECT title FROM docs WHERE id = 0").to_list() == [{"title": evil}]


def test_a_table_name_needing_quotes_stays_an_identifier(db) -> None:
    # Names are letters, digits and underscores; a keyword still needs quoting in SQL.
    t = db.create_table("select", [{"a": 1, "s": "word"}])
    assert t.update("a = 1", {"s": "other word"}) == 1
    assert t.search("other").to_list()[0]["s"] == "other word"
    assert t.delete("true") == 1


# -- search ----------------------------------------------------------------------------------


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def test_text_search_equals_bm25_search(db, docs) -> None:
    got = docs.search("json").limit(3).to_arrow()
    want = db.sql("SELECT * FROM bm25_search('docs', 'title', 'json', 3)").to_arrow()
    assert _rows(got) == _rows(want)
    assert got.column_names == ["_id", "score", "id", "title", "year"]


def test_vector_search_equals_vector_search(db, docs) -> None:
    got = docs.search([0.9, 0.1]).limit(4).to_arrow()
    want = db.sql("SELECT * FROM vector_search('docs', 'emb', [0.9, 0.1], 4) "
                  "ORDER BY score, _id").to_arrow()
    assert _rows(got) == _rows(want)


def test_hybrid_search_equals_hybrid_search(db, docs) -> None:
    got = docs.search("json", [0.9, 0.1]).limit(3).to_arrow()
    want = db.sql("SELECT * FROM hybrid_search('docs', 'title', 'json', 'emb', "
                  "[0.9, 0.1], 3) ORDER BY score DESC, _id").to_arrow()
    assert _rows(got) == _rows(want)


def test_filtered_text_search_equals_bm25_in_where(db, docs) -> None:
    got = docs.search("json").where("year >= 2010").select(["title"]).to_list()
    want = db.sql("SELECT _id, bm25(title, 'json') AS score, title FROM docs "
                  "WHERE bm25(title, 'json') > 0 AND year >= 2010 "
                  "ORDER BY score DESC, _id").to_list()
    assert [r["_id"] for r in got] == [r["_id"] for r in want] == [2, 3]
    assert got[0]["score"] == pytest.approx(want[0]["score"], rel=1e-6)


def test_filtered_vector_search_filters_inside_the_ranking(db, docs) -> None:
    got = docs.search([1.0, 0.0]).where("year >= 2010").limit(2).to_list()
    # The nearest row (id 0, year 2001) is filtered out, and still two rows come back.
    assert [r["id"] for r in got] == [2, 3]
    want = db.sql("SELECT _id FROM docs WHERE knn(emb, [1.0, 0.0], 2) AND year >= 2010 "
                  "ORDER BY vector_distance(emb, [1.0, 0.0]), _id").to_list()
    assert [r["_id"] for r in got] == [r["_id"] for r in want]


def test_filtered_hybrid_search_fuses_the_filtered_rankings(db, docs) -> None:
    unfiltered = docs.search("json", [1.0, 0.0]).where("true").to_list()
    plain = docs.search("json", [1.0, 0.0]).to_list()
    assert [r["_id"] for r in unfiltered] == [r["_id"] for r in plain]
    assert [r["score"] for r in unfiltered] == pytest.approx([r["score"] for r in plain])
    got = docs.search("json", [1.0, 0.0]).where("year >= 2010").to_list()
    assert {r["id"] for r in got} <= {1, 2, 3} and got[0]["id"] == 2


def test_search_text_is_a_parameter_not_sql(db, docs) -> None:
    assert docs.search("json'); DROP TABLE docs; --").to_list()[0]["title"]
    assert docs.count() == 5


def test_column_picks_among_several_indexes(db) -> None:
    t = db.create_table("two", [{"a": "red apple", "b": "green pear"},
                                {"a": "green apple", "b": "red pear"}])
    with pytest.raises(quiver.InvalidInput, match="column"):
        t.search("red").to_list()
    assert [r["a"] for r in t.search("red").column("b").to_list()] == ["green apple"]
    with pytest.raises(quiver.InvalidInput, match="no column"):
        t.search("red").column("c").to_list()


def test_selecting_a_vector_column_returns_it_with_the_same_ranking(db, docs) -> None:
    plain = docs.search([0.9, 0.1]).limit(3).to_list()
    with_vectors = docs.search([0.9, 0.1]).select(["id", "emb"]).limit(3).to_list()
    assert [r["_id"] for r in with_vectors] == [r["_id"] for r in plain]
    assert with_vectors[0]["emb"] == pytest.approx(VECTORS[plain[0]["id"]])


def test_search_results_as_pandas(db, docs) -> None:
    frame = docs.search("http").select(["id"]).to_pandas()
    assert list(frame.columns) == ["_id", "score", "id"]
    assert sorted(frame["id"]) == [1, 3]


# -- errors ----------------------------------------------------------------------------------


def test_errors_map_to_subclasses_with_the_cause_kept(db, docs) -> None:
    with pytest.raises(quiver.InvalidInput) as info:
        db.sql("SELECT (1")
    assert isinstance(info.value.__cause__, SqlSyntaxError)
    with pytest.raises(quiver.NotFound) as info:
        db.sql("SELECT * FROM missing_table")
    assert isinstance(info.value.__cause__, SqlTableNotFoundError)
    with pytest.raises(quiver.AlreadyExists):
        db.sql("CREATE TABLE docs (a BIGINT)")
    with pytest.raises(quiver.InvalidInput) as info:
        db.create_table("bad name!", [{"a": 1}])
    assert isinstance(info.value.__cause__, InvalidTableNameError)
    with pytest.raises(quiver.InvalidInput):
        docs.search([1.0, 0.0, 0.0]).to_list()  # wrong vector length
    with pytest.raises(quiver.InvalidInput):
        db.create_table("x", [{"a": 1}], metric="manhattan")
    for kind in (quiver.InvalidInput, quiver.NotFound, quiver.AlreadyExists,
                 quiver.Conflict, quiver.StorageError):
        assert issubclass(kind, quiver.QuiverError)


def test_translate_maps_conflicts_and_storage_failures() -> None:
    from quiver.errors import translate
    cause = CommitConflictError("lost")
    assert type(translate(cause)) is quiver.Conflict
    assert translate(cause).__cause__ is cause
    assert type(translate(StorageError("down"))) is quiver.StorageError
    assert type(translate(TableExistsError("t"))) is quiver.AlreadyExists
    assert translate(KeyError("x")) is None


def test_s3_root_with_storage_options(s3_server) -> None:
    bucket = s3_server.new_bucket("quiver-api")
    with quiver.connect(f"s3://{bucket}/root", **s3_server.options()) as db:
        t = db.create_table("s3docs", pd.DataFrame({"title": TITLES[:2]}))
        assert t.search("json").to_list()[0]["title"] == "fast json parser"
    with quiver.connect(f"s3://{bucket}/root", **s3_server.options()) as again:
        assert again.table_names() == ["s3docs"]


def test_refused_storage_credentials_are_a_storage_error(s3_server) -> None:
    bucket = s3_server.new_bucket("quiver-api")
    options = s3_server.options(aws_secret_access_key="wrong")
    with pytest.raises(quiver.StorageError) as info:
        db = quiver.connect(f"s3://{bucket}/root", **options)
        try:
            db.create_table("t", [{"a": 1}])
        finally:
            db.close()
    assert isinstance(info.value.__cause__, StorageError)
