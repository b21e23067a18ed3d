"""``Connection.replace_table``: a name pointed at another table's files in one write."""

from __future__ import annotations

import pyarrow as pa
import pytest

from quiver.supertable.errors import CommitConflictError, TableNotFoundError
from tests.supertable import conftest as table_fixtures

# The table tests' backends (memory, local disk, loopback S3), reused for the catalog.
root = table_fixtures.root
connect = table_fixtures.connect

SCHEMA = pa.schema([("id", pa.int64()), ("word", pa.string())])


def _rows(ids: list[int]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "word": pa.array([f"w{i}" for i in ids])}, schema=SCHEMA)


def _files_under(con, prefix: str) -> list[str]:
    return [m.path for m in con.store.list(f"{prefix}/")]


def test_replace_points_the_name_at_the_staged_rows_and_removes_the_old_files(connect):
    con = connect()
    old = con.create_table("docs", SCHEMA)
    old.append(_rows([1, 2, 3]))
    old_prefix = old.prefix
    staged = con.create_table("docs_staged", SCHEMA)
    staged.append(_rows([10, 20]))
    staged_prefix = staged.prefix
    assert _files_under(con, old_prefix)

    con.replace_table("docs", "docs_staged")

    assert con.list_tables() == ["docs"]
    table = con.open_table("docs")
    assert table.prefix == staged_prefix
    assert sorted(table.to_arrow().column("id").to_pylist()) == [10, 20]
    assert _files_under(con, old_prefix)  # kept for readers elsewhere, for a grace period
    assert con.purge_dropped(grace_s=0) == 1
    assert _files_under(con, old_prefix) == []
    # Another connection on the same root sees the same thing.
    other = connect()
    assert sorted(other.open_table("docs").to_arrow().column("id").to_pylist()) == [10, 20]
    with pytest.raises(TableNotFoundError):
        other.open_table("docs_staged")


def test_replaced_table_takes_appends_under_its_name(connect):
    con = connect()
    con.create_table("docs", SCHEMA).append(_rows([1]))
    con.create_table("docs_new", SCHEMA).append(_rows([5]))
    con.replace_table("docs", "docs_new")
    con.open_table("docs").append(_rows([6]))
    assert sorted(connect().open_table("docs").to_arrow().column("id").to_pylist()) == [5, 6]


def test_replace_of_a_missing_table_or_from_a_missing_stage_changes_nothing(connect):
    con = connect()
    con.create_table("docs", SCHEMA).append(_rows([1, 2]))
    with pytest.raises(TableNotFoundError):
        con.replace_table("docs", "no_such_stage")
    con.create_table("stage", SCHEMA).append(_rows([9]))
    with pytest.raises(TableNotFoundError):
        con.replace_table("absent", "stage")
    assert con.list_tables() == ["docs", "stage"]
    assert sorted(con.open_table("docs").to_arrow().column("id").to_pylist()) == [1, 2]
    assert con.open_table("stage").to_arrow().column("id").to_pylist() == [9]


def test_replace_loses_to_a_concurrent_change_of_the_entry_and_changes_nothing(connect):
    con = connect()
    con.create_table("docs", SCHEMA).append(_rows([1]))
    con.create_table("stage", SCHEMA).append(_rows([2]))
    con.create_table("rival", SCHEMA).append(_rows([3]))
    # A store whose first read of the entry comes back stale: the rival replace
    # lands between this replace's read and its conditional write.
    store = con.store
    real_get = store.get
    stale: dict[str, bytes] = {}

    def get_then_rival(path: str):
        data = real_get(path)
        if path.endswith("/docs.json") and not stale:
            stale[path] = data[0]
            connect().replace_table("docs", "rival")
        return data

    store.get = get_then_rival
    try:
        with pytest.raises(CommitConflictError):
            con.replace_table("docs", "stage")
    finally:
        del store.get
    fresh = connect()
    assert fresh.open_table("docs").to_arrow().column("id").to_pylist() == [3]
    assert fresh.open_table("stage").to_arrow().column("id").to_pylist() == [2]


def test_replace_rejects_a_table_replacing_itself(connect):
    con = connect()
    con.create_table("docs", SCHEMA)
    with pytest.raises(ValueError):
        con.replace_table("docs", "docs")
    assert con.list_tables() == ["docs"]
