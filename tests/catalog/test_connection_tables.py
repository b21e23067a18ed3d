"""The catalog's tables on every backend: create, open, list, drop, races and bad input."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.errors import InvalidTableNameError
from quiver.superfile import IndexSpec, Metric
from quiver.supertable.errors import (
    StoragePermissionError,
    TableExistsError,
    TableNotFoundError,
    TableSchemaError,
)
from quiver.supertable.options import REMOTE_MAX_STALENESS_S, TableOptions, staleness_allowed
from tests.supertable import conftest as table_fixtures
from tests.supertable.conftest import docs_schema, make_docs

# The table tests' backends (memory, local disk, loopback S3), reused for the catalog.
root = table_fixtures.root
connect = table_fixtures.connect

BAD_NAMES = ["", "1docs", "my-table", "my table", "a/b", "../up", "x" * 129, "dé", None, 7]


def test_created_tables_are_listed_and_open_from_another_connection(connect):
    con = connect()
    assert con.list_tables() == []
    docs = con.create_table("docs", docs_schema())
    con.create_table("notes", pa.schema([("text", pa.string())]), fts=["text"])
    docs.append(make_docs(30, seed=1))
    assert con.list_tables() == ["docs", "notes"]

    other = connect()
    assert other.list_tables() == ["docs", "notes"]
    again = other.open_table("docs")
    assert again.schema == docs_schema()
    assert again.spec == IndexSpec.of(fts=["title", "body"], vector={"emb": Metric.COSINE})
    assert again.count() == 30
    assert again.to_arrow().equals(make_docs(30, seed=1))
    assert other.open_table("notes").spec == IndexSpec.of(fts=["text"])


def test_index_options_given_at_create_are_kept(connect):
    con = connect()
    con.create_table("docs", docs_schema(), fts=["body"], vector={"emb": "l2"})
    spec = connect().open_table("docs").spec
    assert spec.fts == ("body",)
    assert spec.vector == {"emb": Metric.L2}


def test_creating_an_existing_table_raises_and_keeps_the_first(connect):
    con = connect()
    first = con.create_table("docs", docs_schema())
    first.append(make_docs(5))
    with pytest.raises(TableExistsError, match="docs"):
        con.create_table("docs", docs_schema())
    with pytest.raises(TableExistsError, match="docs"):
        connect().create_table("docs", pa.schema([("other", pa.int64())]))
    assert connect().open_table("docs").count() == 5
    same = connect().create_table("docs", docs_schema(), exist_ok=True)
    assert same.count() == 5
    assert con.list_tables() == ["docs"]


def test_a_failed_create_leaves_no_files_behind(connect):
    con = connect()
    con.create_table("docs", docs_schema())
    before = sorted(m.path for m in con.store.list(""))
    with pytest.raises(TableExistsError):
        connect().create_table("docs", docs_schema())
    assert sorted(m.path for m in con.store.list("")) == before


def test_opening_or_dropping_a_missing_table_raises_table_not_found(connect):
    con = connect()
    with pytest.raises(TableNotFoundError, match="nope"):
        con.open_table("nope")
    with pytest.raises(TableNotFoundError, match="nope"):
        con.drop_table("nope")
    con.drop_table("nope", missing_ok=True)


def test_two_threads_racing_to_create_one_name_see_exactly_one_winner(connect):
    for attempt in range(3):
        name = f"race{attempt}"
        cons = [connect(), connect()]
        barrier = threading.Barrier(2)
        outcomes: list[object] = [None, None]

        def create(i: int, name: str = name, cons=cons, barrier=barrier,
                   outcomes=outcomes) -> None:
            barrier.wait(timeout=10)
            try:
                table = cons[i].create_table(name, docs_schema())
                table.append(make_docs(3, seed=i))
                outcomes[i] = table
            except TableExistsError as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        winners = [i for i, o in enumerate(outcomes) if not isinstance(o, Exception)]
        losers = [o for o in outcomes if isinstance(o, TableExistsError)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        reopened = connect().open_table(name)
        assert reopened.count() == 3
        assert reopened.to_arrow().equals(make_docs(3, seed=winners[0]))
    con = connect()
    assert con.list_tables() == ["race0", "race1", "race2"]
    # The losers' half-created folders are gone: one folder per table remains.
    folders = {m.path.split("/")[1] for m in con.store.list("tables/")}
    assert len(folders) == 3


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_table_names_are_rejected_everywhere(connect, name):
    con = connect()
    with pytest.raises(InvalidTableNameError):
        con.create_table(name, docs_schema())
    with pytest.raises(InvalidTableNameError):
        con.open_table(name)
    with pytest.raises(InvalidTableNameError):
        con.drop_table(name)
    assert con.list_tables() == []


def test_longest_valid_name_and_underscores_are_accepted(connect):
    con = connect()
    for name in ("_t", "a" * 128, "Docs_2024"):
        con.create_table(name, docs_schema())
    assert con.list_tables() == sorted(["_t", "a" * 128, "Docs_2024"])


def test_reserved_id_column_and_unindexable_specs_are_schema_errors(connect):
    con = connect()
    with pytest.raises(TableSchemaError, match="_id"):
        con.create_table("docs", pa.schema([("_id", pa.int64()), ("text", pa.string())]))
    with pytest.raises(TableSchemaError, match="year"):
        con.create_table("docs", docs_schema(), fts=["year"])
    with pytest.raises(TableSchemaError, match="missing"):
        con.create_table("docs", docs_schema(), vector={"missing": "cosine"})
    assert con.list_tables() == []


def test_drop_removes_the_table_and_its_files_and_recreate_starts_empty(connect):
    con = connect()
    table = con.create_table("docs", docs_schema())
    for i in range(3):
        table.append(make_docs(10, seed=i), batch_id=f"b{i}")
    con.create_table("keep", docs_schema()).append(make_docs(4))
    con.drop_table("docs")
    assert con.list_tables() == ["keep"]
    with pytest.raises(TableNotFoundError):
        connect().open_table("docs")
    # The files outlive the table for readers elsewhere, until the grace has passed.
    assert [m.path for m in con.store.list("tables/") if "/docs-" in m.path]
    assert con.purge_dropped(grace_s=0) == 1
    assert [m.path for m in con.store.list("tables/") if "/docs-" in m.path] == []
    assert list(con.store.list("_trash/")) == []

    fresh = connect().create_table("docs", pa.schema([("text", pa.string())]))
    assert fresh.count() == 0
    assert fresh.version == 1
    assert fresh.schema == pa.schema([("text", pa.string())])
    # Batch ids of the dropped table do not make the new one skip appends.
    fresh.append(pa.table({"text": ["hello"]}), batch_id="b0")
    assert connect().open_table("docs").to_arrow().column("text").to_pylist() == ["hello"]
    assert connect().open_table("keep").count() == 4


def test_validate_with_wrong_s3_credentials_raises_permission_error(s3_server):
    bucket = s3_server.new_bucket()
    bad = s3_server.options(aws_secret_access_key="not-the-secret")
    with pytest.raises(StoragePermissionError):
        catalog.connect(f"s3://{bucket}/root", validate=True, **bad)
    with pytest.raises(StoragePermissionError):
        catalog.connect(f"s3://{bucket}/root", validate=True,
                        **s3_server.options(aws_access_key_id="AKIAUNKNOWN"))
    good = catalog.connect(f"s3://{bucket}/root", validate=True, **s3_server.options())
    assert good.list_tables() == []
    # Without validation the bad credentials surface on first use, as the same error.
    lazy = catalog.connect(f"s3://{bucket}/root", **bad)
    with pytest.raises(StoragePermissionError):
        lazy.create_table("docs", docs_schema())


def test_a_connection_that_opened_a_table_sees_it_replaced_after_drop_and_create(connect):
    # Asking storage on every open (max_staleness_s=0) sees another connection's drop at once.
    a, b = connect(table_options=TableOptions(max_staleness_s=0)), connect()
    a.create_table("docs", docs_schema()).append(make_docs(7))
    assert a.open_table("docs").count() == 7
    b.drop_table("docs")
    with pytest.raises(TableNotFoundError):
        a.open_table("docs")
    b.create_table("docs", pa.schema([("text", pa.string())])).append(
        pa.table({"text": ["x", "y"]}))
    again = a.open_table("docs")
    assert again.schema == pa.schema([("text", pa.string())])
    assert again.count() == 2


def test_another_connections_drop_shows_once_the_staleness_allowance_has_passed(connect):
    a, b = connect(table_options=TableOptions(max_staleness_s=1.0)), connect()
    a.create_table("docs", docs_schema()).append(make_docs(7))
    held = a.open_table("docs")
    b.drop_table("docs")
    # The lookup made just now is reused without a request...
    assert a.open_table("docs") is held
    time.sleep(1.05)
    # ...and asked again once it is older than the allowance.
    with pytest.raises(TableNotFoundError):
        a.open_table("docs")


def test_only_object_storage_shares_lookups_by_default(connect, root) -> None:
    con = connect()
    expected = 0.0 if root[0].startswith(("memory://", "/", "file://")) else (
        REMOTE_MAX_STALENESS_S)
    assert staleness_allowed(con.store, TableOptions()) == expected


def test_a_reader_elsewhere_finishes_on_a_dropped_table_within_the_grace(connect):
    con = connect()
    table = con.create_table("docs", docs_schema())
    table.append(make_docs(20, seed=1))
    reader = connect().open_table("docs")
    snap = reader.snapshot()
    con.drop_table("docs")
    assert snap.count() == 20
    assert sum(b.num_rows for b in snap.scan(["title"])) == 20
    assert con.purge_dropped() == 0  # still within the grace
    assert con.purge_dropped(grace_s=0) == 1


def test_files_left_by_a_process_that_stopped_early_are_purged_later(connect):
    con = connect()
    con.create_table("docs", docs_schema()).append(make_docs(5))
    con.drop_table("docs")
    con.close()  # its timer is cancelled: the record stays in _trash/
    later = connect()
    assert len(list(later.store.list("_trash/"))) == 1
    assert later.purge_dropped(grace_s=0) == 1
    assert [m.path for m in later.store.list("tables/")] == []
