"""SQL UPDATE and DELETE are serializable per table: counters incremented concurrently,
through two engines on one root or two ``quiver serve`` processes with ADBC clients, end
at exactly the number of acknowledged statements; an UPDATE racing a DELETE never brings
the row back; a predicate write conflicts with a newer row its WHERE clause matches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pytest

from quiver import catalog
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql import statements as st
from quiver.supertable.errors import WriteConflictError
from quiver.supertable.options import REMOTE_MAX_STALENESS_S
from tests.flight_server.conftest import start_server

# Bounds of each racing client: whichever comes first.
RACE_SECONDS = 5.0
RACE_STATEMENTS = 100
INCREMENT = "UPDATE c SET v = v + 1 WHERE id = 1"


@pytest.fixture(params=["local", "s3"])
def shared_root(request, tmp_path) -> tuple[str, dict[str, str]]:
    if request.param == "local":
        return str(tmp_path / "root"), {}
    s3 = request.getfixturevalue("s3_server")
    return f"s3://{s3.new_bucket()}/quiver", s3.options()


def _race(clients: list[Callable[[], int]], seconds: float = RACE_SECONDS,
          limit: int = RACE_STATEMENTS) -> list[int]:
    """Runs each client's statement over and over on its own thread; returns how many
    statements each had acknowledged with a count of 1."""
    acked = [0] * len(clients)
    errors: list[BaseException] = []
    start = threading.Barrier(len(clients))

    def run(i: int) -> None:
        try:
            start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and acked[i] < limit:
                if clients[i]() == 1:
                    acked[i] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    assert not errors, errors
    return acked


def _counter_engines(uri: str, options: dict) -> tuple[SqlEngine, SqlEngine]:
    first = SqlEngine(catalog.connect(uri, **options))
    first.execute("CREATE TABLE c (id BIGINT, v BIGINT)")
    first.execute("INSERT INTO c VALUES (1, 0), (2, 0)")
    return first, SqlEngine(catalog.connect(uri, **options))


def _value(engine: SqlEngine, row: int = 1) -> int | None:
    got = engine.execute(f"SELECT v FROM c WHERE id = {row}").column(0).to_pylist()
    return got[0] if got else None


def _count(engine: SqlEngine, sql: str) -> int:
    return int(engine.execute(sql).column(0)[0].as_py())


def test_two_engines_incrementing_one_counter_lose_no_update(shared_root):
    uri, options = shared_root
    a, b = _counter_engines(uri, options)
    acked = _race([lambda: _count(a, INCREMENT), lambda: _count(b, INCREMENT)])
    assert min(acked) > 0, acked
    # Each engine sees the other's last commits once its check for a newer version is
    # older than the staleness allowance (0.2 s on object storage).
    time.sleep(REMOTE_MAX_STALENESS_S + 0.05)
    assert _value(a) == sum(acked) == _value(b)
    assert _value(a, 2) == 0


def test_update_racing_delete_never_brings_the_row_back(shared_root):
    uri, options = shared_root
    a, b = _counter_engines(uri, options)
    deleted: list[int] = []

    def delete_once() -> int:
        if not deleted:
            time.sleep(0.5)
            deleted.append(_count(b, "DELETE FROM c WHERE id = 1"))
        return 0

    _race([lambda: _count(a, INCREMENT), delete_once], seconds=2.5)
    assert deleted == [1]
    time.sleep(REMOTE_MAX_STALENESS_S + 0.05)
    assert _value(a) is None and _value(b) is None
    assert _count(a, "SELECT count(*) FROM c") == 1
    # Once it is gone, an update finds nothing to change.
    assert _count(a, INCREMENT) == 0


def test_a_delete_conflicts_with_a_newer_row_its_where_clause_matches(tmp_path):
    a, b = _counter_engines(str(tmp_path / "root"), {})
    table = a.open_table("c")
    statement = st.parse("DELETE FROM c WHERE v >= 10")
    select = st.parse('SELECT "_id" FROM c WHERE v >= 10')

    def read_now():
        with a.fresh_pins():
            version = a.pin("c").version
            ids = a.execute(select.sql()).column(0).combine_chunks()
            return st._read_set(a, table, statement, select, version, ids)

    read = read_now()
    b.execute("INSERT INTO c VALUES (3, 5)")          # not matched: no conflict
    assert table.delete(st.pc.field("_id").isin([]), read=read) == 0
    read = read_now()
    b.execute("INSERT INTO c VALUES (4, 50)")         # matched: the DELETE must run again
    with pytest.raises(WriteConflictError):
        table.delete(st.pc.field("_id").isin([]), read=read)
    assert _count(a, "DELETE FROM c WHERE v >= 10") == 1
    assert sorted(a.execute("SELECT id FROM c").column(0).to_pylist()) == [1, 2, 3]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_servers_on_one_root_count_every_acknowledged_update(kind, tmp_path: Path,
                                                                 request):
    extra: list[str] = []
    if kind == "local":
        root: Path | str = tmp_path / "root"
        root.mkdir()  # type: ignore[union-attr]
    else:
        s3 = request.getfixturevalue("s3_server")
        root = f"s3://{s3.new_bucket('counter')}/root"
        extra = [a for k, v in s3.options().items() for a in ("--storage-option", f"{k}={v}")]
    servers = []
    try:
        for i in range(2):
            servers.append(start_server(root, *extra,  # type: ignore[arg-type]
                                        log_path=tmp_path / f"server-{i}.log"))
        conns = [adbc.connect(s.uri, autocommit=True) for s in servers]
        cursors = [c.cursor() for c in conns]
        cursors[0].execute("CREATE TABLE c (id BIGINT, v BIGINT)")
        cursors[0].execute("INSERT INTO c VALUES (1, 0), (2, 0)")

        def client(cur) -> Callable[[], int]:
            def run() -> int:
                cur.execute(INCREMENT)
                return cur.rowcount
            return run

        acked = _race([client(cursors[0]), client(cursors[1])])
        # The other server's last commits show once its check for a newer version is older
        # than the staleness allowance (0.2 s on object storage).
        time.sleep(REMOTE_MAX_STALENESS_S + 0.05)
        cursors[1].execute("SELECT v FROM c WHERE id = 1")
        final = cursors[1].fetchall()[0][0]
        assert min(acked) > 0, acked
        assert final == sum(acked), (acked, final)
        for cur in cursors:
            cur.close()
        for c in conns:
            c.close()
    finally:
        for s in servers:
            s.stop()
