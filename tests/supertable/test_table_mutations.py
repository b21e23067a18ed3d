"""Deletes and updates on every backend, checked against a pyarrow oracle after each step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from quiver.supertable.errors import TableSchemaError
from quiver.supertable.table import Table
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8


def _with_nulls(docs: pa.Table, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    for name in ("year", "body"):
        col = docs.column(name)
        nulls = pa.array(rng.random(docs.num_rows) < 0.1)
        docs = docs.set_column(docs.schema.get_field_index(name), name,
                               pc.if_else(nulls, pa.scalar(None, col.type), col))
    return docs


class Oracle:
    """The table's expected live rows, ``_id`` included, kept with plain pyarrow."""

    def __init__(self) -> None:
        self.rows = pa.schema([("_id", pa.int64()), *docs_schema(DIM)]).empty_table()
        self.next_id = 0

    def append(self, docs: pa.Table) -> None:
        ids = pa.array(np.arange(self.next_id, self.next_id + docs.num_rows), pa.int64())
        self.rows = pa.concat_tables([self.rows, docs.add_column(0, "_id", ids)])
        self.next_id += docs.num_rows

    def _matching(self, filter_) -> pa.Table:
        expr = filter_ if isinstance(filter_, pc.Expression) else pq.filters_to_expression(
            filter_)
        return ds.dataset(self.rows).to_table(filter=expr)

    def _without(self, ids: pa.Array) -> pa.Table:
        return self.rows.filter(pc.invert(pc.is_in(self.rows.column("_id"), ids)))

    def delete(self, filter_) -> int:
        gone = self._matching(filter_).column("_id")
        self.rows = self._without(gone)
        return len(gone)

    def update(self, filter_, values: dict) -> int:
        old = self._matching(filter_)
        projection = {}
        for name in old.column_names:
            value = values.get(name, pc.field(name))
            if not isinstance(value, pc.Expression):
                value = pc.scalar(pa.scalar(value, old.schema.field(name).type))
            projection[name] = value
        new = ds.dataset(old).to_table(columns=projection).cast(old.schema)
        self.rows = pa.concat_tables([self._without(old.column("_id")), new])
        return old.num_rows


def _check(table: Table, oracle: Oracle) -> None:
    want = oracle.rows.sort_by("_id")
    got = table.to_arrow(with_id=True).sort_by("_id")
    assert table.count() == want.num_rows
    assert got.column_names == want.column_names
    for name in want.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


@pytest.fixture
def pair(connect) -> tuple[Table, Oracle]:
    table = connect().create_table("docs", docs_schema(DIM))
    oracle = Oracle()
    for i in range(4):
        docs = _with_nulls(make_docs(40, seed=i, dim=DIM), seed=i)
        table.append(docs)
        oracle.append(docs)
    return table, oracle


STEPS = [
    ("delete", [("year", "<", 2003)], None),
    ("delete", pc.field("title").isin(["rust async", "json fast"]), None),
    ("update", [("year", "in", [2010, 2011])], {"body": "zebra updated"}),
    ("update", pc.field("year") > 2020, {"year": pc.field("year") - 100}),
    ("update", [[("year", "<", 1950)], [("body", "=", "zebra updated")]],
     {"title": pc.binary_join_element_wise(pc.field("title"), pc.field("body"), " / ")}),
    ("delete", [("year", "!=", 2015), ("year", ">", 2012)], None),
    ("update", pc.field("body").is_null(), {"body": "was null"}),
    ("delete", [("title", "not in", ["data tool", "http client"]), ("year", "<=", 2006)], None),
    ("update", [("year", "=", 2015)], {"year": None, "body": pc.field("title")}),
    ("delete", pc.field("year").is_null() & (pc.field("body") == "was null"), None),
]


def test_deletes_and_updates_match_a_pyarrow_oracle_after_every_step(pair):
    table, oracle = pair
    _check(table, oracle)
    for op, filter_, values in STEPS:
        version = table.refresh().version
        if op == "delete":
            n, want = table.delete(filter_), oracle.delete(filter_)
        else:
            n, want = table.update(filter_, values), oracle.update(filter_, values)
        assert n == want, (op, filter_)
        assert table.refresh().version == version + (1 if n else 0)
        _check(table, oracle)
    assert 0 < table.count() < 160


def test_mutations_are_visible_to_other_connections(pair, connect):
    table, oracle = pair
    for op, filter_, values in STEPS[:4]:
        if op == "delete":
            table.delete(filter_)
            oracle.delete(filter_)
        else:
            table.update(filter_, values)
            oracle.update(filter_, values)
    _check(connect().open_table("docs"), oracle)


def test_filters_that_match_nothing_change_nothing(pair):
    table, oracle = pair
    version = table.version
    assert table.delete([("year", ">", 3000)]) == 0
    assert table.delete(pc.field("title") == "no such title") == 0
    assert table.update([("year", "<", 0)], {"body": "x"}) == 0
    assert table.refresh().version == version
    _check(table, oracle)


def test_an_updated_row_keeps_its_id_and_is_found_by_search_with_its_new_values(pair):
    table, _ = pair
    target = table.to_arrow(with_id=True, filter_=[("year", "=", 2012)])
    ids = sorted(target.column("_id").to_pylist())
    assert ids
    assert table.update([("year", "=", 2012)], {"body": "platypus platypus"}) == len(ids)
    got = table.bm25_search("body", "platypus", 100, columns=["body", "year"])
    assert sorted(got.column("_id").to_pylist()) == ids
    assert set(got.column("body").to_pylist()) == {"platypus platypus"}
    assert sorted(table.token_match("body", "platypus").tolist()) == ids
    assert sorted(table.exact_match("body", "platypus platypus").tolist()) == ids
    # The old versions are gone from search, not merely outranked.
    old_bodies = {b for b in target.column("body").to_pylist() if b}
    for body in old_bodies:
        hits = table.exact_match("body", body)
        assert not set(hits.tolist()) & set(ids)


def test_updating_a_vector_moves_the_row_in_vector_search(pair):
    table, _ = pair
    row = table.to_arrow(with_id=True, filter_=[("year", "=", 2007)]).slice(0, 1)
    rid = row.column("_id")[0].as_py()
    target = np.zeros(DIM, np.float32)
    target[3] = 1.0
    before = table.vector_search("emb", target, 1, columns=[])
    assert before.column("_id")[0].as_py() != rid
    table.update(pc.field("_id") == rid, {"emb": target.tolist()})
    after = table.vector_search("emb", target, 3, columns=["emb"])
    assert after.column("_id")[0].as_py() == rid
    assert after.column("score")[0].as_py() == pytest.approx(0.0, abs=1e-6)
    assert after.column("emb")[0].as_py() == target.tolist()
    old = row.column("emb")[0].as_py()
    near_old = table.vector_search("emb", old, 1, columns=[])
    assert near_old.column("_id")[0].as_py() != rid or near_old.column("score")[0].as_py() > 0.01


def test_deleting_everything_leaves_an_empty_table_that_still_works(pair):
    table, oracle = pair
    assert table.delete(pc.scalar(True)) == 160 - oracle.delete(pc.scalar(False))
    assert table.count() == 0
    empty = table.to_arrow(with_id=True)
    assert empty.num_rows == 0 and empty.column_names == ["_id", *docs_schema(DIM).names]
    assert table.bm25_search("body", "rust", 5).num_rows == 0
    assert table.vector_search("emb", np.ones(DIM), 5).num_rows == 0
    assert table.hybrid_search("body", "rust", "emb", np.ones(DIM), 5).num_rows == 0
    assert len(table.token_match("body", "rust")) == 0
    assert table.delete([("year", ">", 0)]) == 0
    table.append(make_docs(3, seed=42, dim=DIM))
    assert table.to_arrow(with_id=True).column("_id").to_pylist() == [160, 161, 162]
    assert table.bm25_search("body", make_docs(3, 42, DIM).column("body")[0].as_py(),
                             3).num_rows > 0


def test_a_snapshot_taken_before_a_change_keeps_seeing_the_old_rows(pair):
    table, _ = pair
    before = table.snapshot()
    rows_before = before.to_table(with_id=True).sort_by("_id")
    table.delete([("year", "<", 2010)])
    table.update([("year", ">=", 2010)], {"body": "later"})
    assert before.to_table(with_id=True).sort_by("_id").equals(rows_before)
    assert before.count() == 160
    assert table.at_version(before.version).count() == 160
    dated = table.to_arrow(filter_=pc.field("year").is_valid())
    assert set(dated.column("body").to_pylist()) == {"later"}
    # Rows without a year match neither filter and are kept as they were.
    assert table.count() == dated.num_rows + rows_before.filter(
        pc.field("year").is_null()).num_rows


def test_update_and_delete_reject_bad_arguments_and_change_nothing(pair):
    table, oracle = pair
    version = table.version
    with pytest.raises(TableSchemaError, match="filter"):
        table.delete(None)
    with pytest.raises(TableSchemaError):
        table.update(None, {"body": "x"})
    with pytest.raises(TableSchemaError):
        table.update([("year", ">", 0)], {})
    with pytest.raises(TableSchemaError, match="nope"):
        table.update([("year", ">", 0)], {"nope": 1})
    with pytest.raises(TableSchemaError, match="_id"):
        table.update([("year", ">", 0)], {"_id": 1})
    with pytest.raises(TableSchemaError, match="year"):
        table.update([("year", ">", 0)], {"year": "not a year"})
    with pytest.raises(TableSchemaError, match="year"):
        table.update([("year", ">", 3000)], {"year": "fails even when no row matches"})
    with pytest.raises(TableSchemaError, match="emb"):
        table.update([("year", ">", 0)], {"emb": [1.0, 2.0]})
    with pytest.raises(TableSchemaError, match="year"):
        table.update([("year", ">", 0)], {"year": pc.field("title")})
    with pytest.raises(TableSchemaError, match="nope"):
        table.delete([("nope", "=", 1)])
    with pytest.raises(TableSchemaError, match="nope"):
        table.delete(pc.field("nope") == 1)
    assert table.refresh().version == version
    _check(table, oracle)
