"""``lookup.equal_rows``: the live rows whose text equals a value, through the index,
equal the table's live rows filtered by the same equalities."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quiver import catalog
from quiver.superfile.errors import QueryError
from quiver.supertable import lookup
from quiver.supertable.manifest import ID_COLUMN
from tests.supertable.conftest import docs_schema, make_docs


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    con = catalog.connect(str(tmp_path_factory.mktemp("lookup") / "root"))
    t = con.create_table("docs", docs_schema(), fts=["title", "body"], vector={})
    for seed in range(3):
        t.append(make_docs(200, seed))
        t.commit()
    t.delete([("year", "<", 2004)])
    t.update([("year", "=", 2011)], {"title": "rust rust"})
    yield t
    con.close()


def _expected(live: pa.Table, equalities: list[tuple[str, str]]) -> pa.Table:
    keep = None
    for c, v in equalities:
        eq = pc.fill_null(pc.equal(live.column(c), v), False)
        keep = eq if keep is None else pc.and_(keep, eq)
    return live.filter(keep).sort_by(ID_COLUMN)


def test_equal_rows_are_the_live_rows_with_the_values(table):
    snap = table.snapshot()
    live = table.to_arrow(with_id=True)
    titles = [*sorted(set(live.column("title").to_pylist()))[:25], "rust rust", "rust", "Rust"]
    columns = [ID_COLUMN, "year", "title"]
    for title in titles:
        want = _expected(live, [("title", title)]).select(columns)
        got = lookup.equal_rows(snap, "title", title, columns)
        assert got.to_pylist() == want.to_pylist(), title
        body = live.filter(pc.equal(live.column("title"), title)).column("body")
        if len(body):
            also = [("body", body[0].as_py())]
            want = _expected(live, [("title", title), *also]).select(columns)
            got = lookup.equal_rows(snap, "title", title, columns, also=also)
            assert got.to_pylist() == want.to_pylist() and got.num_rows >= 1


def test_files_and_limit_narrow_the_rows(table):
    snap = table.snapshot()
    every = lookup.equal_rows(snap, "title", "rust rust", [ID_COLUMN])
    assert every.num_rows > 2
    parts = [lookup.equal_rows(snap, "title", "rust rust", [ID_COLUMN], files={f.path})
             for f in snap.files]
    assert sorted(i for p in parts for i in p.column(0).to_pylist()) == \
        every.column(0).to_pylist()
    assert lookup.equal_rows(snap, "title", "rust rust", [ID_COLUMN], limit=2).to_pylist() \
        == every.slice(0, 2).to_pylist()


def test_a_column_without_an_index_is_refused(table):
    with pytest.raises(QueryError, match="no BM25 index"):
        lookup.equal_rows(table.snapshot(), "year", "2010", [ID_COLUMN])
