"""Appends on every backend: schema checks, row ids, idempotent batches, buffering, shards."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver.supertable.errors import TableSchemaError
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs


def _objects(table: Table) -> set[str]:
    return {m.path for m in table.store.list(f"{table.prefix}/")}


def _ids(table: Table) -> np.ndarray:
    return np.sort(table.to_arrow(columns=[], with_id=True).column("_id").to_numpy())


def _bad_batches() -> dict[str, pa.Table]:
    good = make_docs(4, seed=5)
    emb7 = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(28, np.float32)), 7)
    return {
        "missing column": good.drop_columns(["year"]),
        "extra column": good.append_column("lang", pa.array(["en"] * 4)),
        "supplied _id": good.append_column("_id", pa.array(np.arange(4))),
        "text in an int column": good.set_column(2, "year", pa.array(["x", "y", "z", "w"])),
        "fractional year": good.set_column(2, "year", pa.array([2001.5, 2002, 2003, 2004])),
        "year out of int32": good.set_column(2, "year", pa.array([2**40, 1, 2, 3])),
        "vector of the wrong length": good.set_column(3, "emb", emb7),
        "list in a text column": good.set_column(1, "body", pa.array([["a"], ["b"], [], None])),
        "text in a vector column": good.set_column(3, "emb", pa.array(["v"] * 4)),
    }


def test_rows_that_do_not_fit_the_schema_raise_and_write_nothing(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(10))
    version, files = table.version, _objects(table)
    for what, batch in _bad_batches().items():
        for commit in (True, False):
            with pytest.raises(TableSchemaError):
                table.append(batch, commit=commit)
            assert table.refresh().version == version, what
            assert _objects(table) == files, what
    # Nothing bad was left in the buffer either.
    assert table.commit().version is None
    assert table.count() == 10


def test_schema_error_names_the_offending_columns(connect):
    table = connect().create_table("docs", docs_schema())
    good = make_docs(2)
    with pytest.raises(TableSchemaError, match="year"):
        table.append(good.drop_columns(["year"]))
    with pytest.raises(TableSchemaError, match="lang"):
        table.append(good.append_column("lang", pa.array(["en", "fr"])))


def test_rows_are_conformed_to_the_schema_when_the_values_fit(connect):
    table = connect().create_table("docs", docs_schema())
    good = make_docs(6, seed=2)
    emb64 = pa.FixedSizeListArray.from_arrays(
        pa.array(good.column("emb").combine_chunks().flatten().to_numpy().astype(np.float64)), 8)
    loose = pa.table({
        "emb": emb64,
        "year": good.column("year").cast(pa.int64()),
        "body": good.column("body").cast(pa.large_string()),
        "title": good.column("title"),
    })
    table.append(loose)
    assert table.to_arrow().equals(good)
    assert table.to_arrow().schema == docs_schema()


def test_record_batches_and_batch_iterables_are_accepted(connect):
    table = connect().create_table("docs", docs_schema())
    docs = make_docs(30, seed=3)
    table.append(docs.to_batches(max_chunksize=30)[0])
    table.append(iter(docs.to_batches(max_chunksize=7)))
    assert table.count() == 60
    assert table.to_arrow().equals(pa.concat_tables([docs, docs]))


def test_row_ids_are_unique_dense_and_never_reused(connect):
    table = connect().create_table("docs", docs_schema())
    sizes = [1, 17, 250, 3]
    for i, n in enumerate(sizes):
        table.append(make_docs(n, seed=i))
    total = sum(sizes)
    np.testing.assert_array_equal(_ids(table), np.arange(total))
    # Ids follow append order: each append's rows get the next block.
    got = table.to_arrow(with_id=True).sort_by("_id")
    assert got.slice(1, 17).drop_columns(["_id"]).equals(make_docs(17, seed=1))

    table.delete([("year", ">=", 2013)])
    table.update(pc.field("year") < 2005, {"body": "changed"})
    left = _ids(table)
    assert len(np.unique(left)) == len(left) == table.count()
    table.append(make_docs(5, seed=9))
    after = _ids(table)
    np.testing.assert_array_equal(after[-5:], np.arange(total, total + 5))
    assert len(np.unique(after)) == len(after)


def test_row_ids_stay_dense_across_tables_reopened_in_other_connections(connect):
    connect().create_table("docs", docs_schema()).append(make_docs(12))
    again = connect().open_table("docs")
    again.append(make_docs(8, seed=1))
    np.testing.assert_array_equal(_ids(connect().open_table("docs")), np.arange(20))


def test_repeated_batch_id_adds_nothing_and_publishes_no_version(connect):
    table = connect().create_table("docs", docs_schema())
    first = table.append(make_docs(10), batch_id="job-1")
    assert first.version is not None and first.rows == 10
    files = _objects(table)
    again = table.append(make_docs(10), batch_id="job-1")
    assert again.version is None and again.rows == 0
    assert table.refresh().version == first.version
    assert table.count() == 10
    assert _objects(table) == files
    # Another connection retrying the same job is also a no-op.
    other = connect().open_table("docs")
    assert other.append(make_docs(10), batch_id="job-1").version is None
    assert other.append(make_docs(3), batch_id="job-2").rows == 3
    table.refresh(max_staleness_s=0)  # another connection's commit: ask storage now
    assert table.count() == 13


def test_a_batch_id_repeated_within_one_buffer_is_applied_once(connect):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(4), batch_id="retry", commit=False)
    table.append(make_docs(4), batch_id="retry", commit=False)
    table.append(make_docs(2, seed=1), batch_id="other", commit=False)
    result = table.commit()
    assert result.rows == 6
    assert table.count() == 6


def test_buffered_appends_become_visible_together_on_commit(connect):
    table = connect().create_table("docs", docs_schema())
    start = table.version
    parts = [make_docs(n, seed=n) for n in (5, 9, 14)]
    for part in parts:
        assert table.append(part, commit=False).version is None
    assert table.refresh().version == start
    assert table.count() == 0
    assert connect().open_table("docs").count() == 0
    result = table.commit()
    assert result.version == start + 1 and result.rows == 28
    assert table.to_arrow().equals(pa.concat_tables(parts))
    assert connect().open_table("docs").count() == 28
    assert table.commit().version is None


def test_a_big_commit_is_split_into_balanced_shards(connect):
    options = TableOptions(max_rows_per_file=100)
    table = connect(table_options=options).create_table("docs", docs_schema())
    docs = make_docs(950, seed=4)
    result = table.append(docs)
    files = table.snapshot().files
    assert result.files_added == len(files) == 10
    sizes = sorted(f.rows for f in files)
    assert sizes[-1] <= 100 and sizes[-1] - sizes[0] <= 1
    ranges = sorted((f.id_min, f.id_max) for f in files)
    assert ranges[0][0] == 0 and ranges[-1][1] == 949
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    assert table.to_arrow(with_id=True).sort_by("_id").drop_columns(["_id"]).equals(docs)
    assert table.bm25_search("body", "rust", 5).num_rows == 5


def test_shard_count_follows_the_buffer_not_each_append(connect):
    options = TableOptions(max_rows_per_file=100)
    table = connect(table_options=options).create_table("docs", docs_schema())
    for i in range(5):
        table.append(make_docs(30, seed=i), commit=False)
    table.commit()
    assert sorted(f.rows for f in table.snapshot().files) == [75, 75]


@pytest.mark.parametrize("empty", [
    lambda: make_docs(0),
    lambda: docs_schema().empty_table(),
    lambda: iter(()),
    lambda: [],
], ids=["no-rows", "empty-table", "no-batches", "empty-list"])
def test_an_empty_append_is_a_no_op(connect, empty):
    table = connect().create_table("docs", docs_schema())
    table.append(make_docs(3))
    version, files = table.version, _objects(table)
    result = table.append(empty())
    assert result.version is None and result.rows == 0
    assert table.refresh().version == version
    assert _objects(table) == files
    assert table.count() == 3
