"""A superfile is a plain Parquet file: DuckDB and pyarrow read back what was written."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.superfile import IndexSpec, IndexSpecError, Metric, SuperfileReader, write_superfile
from quiver.superfile.ranges import BytesRangeReader
from tests.superfile.conftest import vectors

TEXT = st.one_of(st.none(), st.just(""), st.text(max_size=40))
METRICS = st.sampled_from(list(Metric))


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, IndexSpec]:
    n = draw(st.integers(min_value=0, max_value=40))
    cols: dict[str, pa.Array] = {}
    fts: list[str] = []
    vec: dict[str, Metric] = {}
    for i in range(draw(st.integers(min_value=1, max_value=5))):
        kind = draw(st.sampled_from(["int", "float", "text", "large_text", "bool", "ts", "vec"]))
        name = f"c{i}_{kind}"
        if kind == "int":
            vals = draw(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                                 min_size=n, max_size=n))
            cols[name] = pa.array(vals, pa.int64())
        elif kind == "float":
            vals = draw(st.lists(st.one_of(st.none(), st.floats(allow_nan=False)),
                                 min_size=n, max_size=n))
            cols[name] = pa.array(vals, pa.float64())
        elif kind in ("text", "large_text"):
            vals = draw(st.lists(TEXT, min_size=n, max_size=n))
            cols[name] = pa.array(vals, pa.string() if kind == "text" else pa.large_string())
            if draw(st.booleans()):
                fts.append(name)
        elif kind == "bool":
            cols[name] = pa.array(draw(st.lists(st.one_of(st.none(), st.booleans()),
                                                min_size=n, max_size=n)), pa.bool_())
        elif kind == "ts":
            vals = draw(st.lists(st.one_of(st.none(), st.datetimes(
                min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1))),
                min_size=n, max_size=n))
            cols[name] = pa.array(vals, pa.timestamp("us"))
        else:
            d = draw(st.integers(min_value=1, max_value=8))
            seed = draw(st.integers(0, 2**31))
            arr = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
            nulls = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
            cols[name] = vectors(arr, nulls if n else None)
            if draw(st.booleans()):
                vec[name] = draw(METRICS)
    return pa.table(cols), IndexSpec(fts=tuple(fts), vector=vec)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_roundtrip_pyarrow_and_superfile_reader_read_back_the_input(case):
    table, spec = case
    data = write_superfile(table, spec).data
    assert pq.read_table(pa.BufferReader(data)).equals(table)
    reader = SuperfileReader.open(data)
    assert reader.num_rows == table.num_rows
    assert reader.schema.equals(table.schema)
    assert reader.read_table().equals(table)
    assert set(reader.fts_columns) == set(spec.fts)
    assert set(reader.vector_columns) == set(spec.vector)
    lazy = SuperfileReader.open_lazy(BytesRangeReader(data))
    if table.num_rows:
        ids = np.random.default_rng(0).integers(0, table.num_rows, size=7)
        assert lazy.take(ids).equals(table.take(ids))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_roundtrip_duckdb_reads_every_column_equal_to_the_input(tmp_path_factory, case):
    table, spec = case
    path = tmp_path_factory.mktemp("duck") / "f.parquet"
    path.write_bytes(write_superfile(table, spec).data)
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
    got = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
    assert got.num_rows == table.num_rows
    for name in table.column_names:
        assert got.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_write_without_spec_indexes_every_text_and_vector_column(small_corpus):
    reader = SuperfileReader.open(write_superfile(small_corpus).data)
    assert reader.fts_columns == ["body"]
    assert reader.vector_columns == ["embedding"]
    assert reader.spec.vector["embedding"] is Metric.COSINE


def test_write_keeps_user_schema_metadata_and_hides_ours(small_corpus):
    table = small_corpus.replace_schema_metadata({"owner": "search-team"})
    reader = SuperfileReader.open(write_superfile(table).data)
    assert reader.schema.metadata == {b"owner": b"search-team"}


def test_write_empty_batches_with_schema_gives_an_empty_searchable_file():
    schema = pa.schema([("body", pa.string()), ("v", pa.list_(pa.float32(), 4))])
    written = write_superfile([], IndexSpec.of(fts=["body"], vector={"v": "l2"}), schema=schema)
    reader = SuperfileReader.open(written.data)
    assert reader.num_rows == 0
    assert len(reader.bm25_search("body", "anything", k=5)[0]) == 0
    assert len(reader.vector_search("v", [0, 0, 0, 1], k=5)[0]) == 0


def test_write_one_row_file_answers_every_search():
    table = pa.table({"body": ["only row"], "v": vectors(np.ones((1, 3)))})
    reader = SuperfileReader.open(write_superfile(table).data)
    assert reader.bm25_search("body", "row", k=3)[0].tolist() == [0]
    assert reader.vector_search("v", [1, 1, 1], k=3)[0].tolist() == [0]
    assert reader.exact_match("body", "only row").tolist() == [0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (IndexSpec.of(fts=["missing"]), "not in the schema"),
        (IndexSpec.of(fts=["year"]), "needs a string column"),
        (IndexSpec.of(vector={"body": "cosine"}), "fixed-size list of float16, float32 or float64"),
    ],
)
def test_write_rejects_an_index_spec_that_does_not_fit_the_schema(small_corpus, spec, message):
    with pytest.raises(IndexSpecError, match=message):
        write_superfile(small_corpus, spec)


def test_write_rejects_unknown_metric():
    with pytest.raises(IndexSpecError, match="unknown metric"):
        IndexSpec.of(vector={"v": "manhattan"})


def test_write_rejects_batches_of_different_schemas():
    a = pa.record_batch({"x": [1]})
    b = pa.record_batch({"y": ["z"]})
    with pytest.raises(IndexSpecError):
        write_superfile([a, b])
