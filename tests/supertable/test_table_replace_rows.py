"""Table.replace_rows: new versions of rows given with their ``_id``, in one commit."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.supertable.errors import TableSchemaError
from quiver.supertable.table import Table
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8


@pytest.fixture(params=["memory", "local"])
def table(request, tmp_path) -> Table:
    uri = f"memory://r{uuid.uuid4().hex}" if request.param == "memory" else str(tmp_path / "r")
    conn = catalog.connect(uri)
    t = conn.create_table("docs", docs_schema(DIM))
    for i in range(3):
        t.append(make_docs(30, seed=i, dim=DIM))
    yield t
    conn.close()
    if request.param == "memory":
        drop_memory_store(uri)


def _rows(table: Table) -> dict[int, dict]:
    got = table.to_arrow(with_id=True).to_pylist()
    return {r.pop("_id"): r for r in got}


def _edited(table: Table, ids: list[int], body: str) -> pa.Table:
    old = table.to_arrow(with_id=True, filter_=pc.field("_id").isin(ids))
    return old.set_column(old.schema.get_field_index("body"), "body",
                          pa.array([body] * old.num_rows, pa.string()))


def test_replaced_rows_keep_their_ids_and_carry_the_new_values_in_one_version(table):
    before = _rows(table)
    ids = [3, 31, 62, 89]
    version = table.version
    assert table.replace_rows(_edited(table, ids, "okapi okapi")) == 4
    assert table.refresh().version == version + 1
    after = _rows(table)
    assert set(after) == set(before)
    for i in before:
        want = dict(before[i], body="okapi okapi") if i in ids else before[i]
        assert after[i] == want
    hits = table.bm25_search("body", "okapi", 10, columns=["body"])
    assert sorted(hits.column("_id").to_pylist()) == ids


def test_replacing_a_row_twice_leaves_one_live_version(table):
    table.replace_rows(_edited(table, [5], "first"))
    table.replace_rows(_edited(table, [5], "second"))
    got = table.to_arrow(with_id=True, filter_=pc.field("_id") == 5)
    assert got.column("body").to_pylist() == ["second"]
    assert table.count() == 90


def test_rows_whose_id_is_no_longer_live_are_left_out(table):
    rows = _edited(table, [1, 2, 40], "late")
    assert table.delete(pc.field("_id") == 2) == 1
    assert table.replace_rows(rows) == 2
    after = _rows(table)
    assert 2 not in after and after[1]["body"] == "late" and after[40]["body"] == "late"
    assert table.count() == 89


def test_replacing_only_missing_ids_publishes_nothing(table):
    version = table.version
    rows = _edited(table, [7], "x").set_column(0, "_id", pa.array([10_000], pa.int64()))
    assert table.replace_rows(rows) == 0
    assert table.refresh().version == version


def test_replaced_vectors_move_the_row_in_vector_search(table):
    rows = table.to_arrow(with_id=True, filter_=pc.field("_id") == 17)
    target = np.full(DIM, 9.0, dtype=np.float32)
    rows = rows.set_column(rows.schema.get_field_index("emb"), "emb",
                           pa.FixedSizeListArray.from_arrays(pa.array(target), DIM))
    assert table.replace_rows(rows) == 1
    hits = table.vector_search("emb", target, 1)
    assert hits.column("_id").to_pylist() == [17]


@pytest.mark.parametrize("bad", [
    lambda t: t.drop_columns(["_id"]),
    lambda t: t.drop_columns(["year"]),
    lambda t: t.set_column(0, "_id", pa.array([3, 3], pa.int64())),
    lambda t: t.set_column(0, "_id", pa.array([3, None], pa.int64())),
    lambda t: t.set_column(t.schema.get_field_index("year"), "year",
                           pa.array(["x", "y"])),
])
def test_malformed_replacements_are_rejected_and_change_nothing(table, bad):
    before, version = _rows(table), table.version
    rows = _edited(table, [3, 4], "nope")
    with pytest.raises(TableSchemaError):
        table.replace_rows(bad(rows))
    assert table.refresh().version == version
    assert _rows(table) == before
