"""Writes through servers that keep a write log and compact in the background: with two
``quiver serve`` processes on one root (local and S3), every acknowledged INSERT and
UPDATE is counted while log files are folded and small files merged, and readers see
counts and search results that only grow; a row acknowledged by a server killed with
SIGKILL right after is there, and folded, once a server runs again."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pytest

from quiver import catalog
from quiver.supertable.maintain import log_files
from tests.flight_server.conftest import start_server

SECONDS = 6.0
MAX_INSERTS = 120
# Fast folds and merges, so that many happen within the race.
FAST = ("--fold-age", "0.1")


def _root(kind: str, tmp_path: Path, request) -> tuple[Path | str, list[str], dict]:
    if kind == "local":
        root = tmp_path / "root"
        root.mkdir()
        return root, [], {}
    s3 = request.getfixturevalue("s3_server")
    options = s3.options()
    extra = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
    return f"s3://{s3.new_bucket('writes')}/root", extra, options


def _scalar(cur, sql: str) -> int:
    cur.execute(sql)
    return int(cur.fetchall()[0][0])


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_servers_count_every_acknowledged_write_while_compacting(kind, tmp_path,
                                                                     request):
    root, extra, options = _root(kind, tmp_path, request)
    servers = []
    try:
        for i in range(2):
            servers.append(start_server(root, *extra, *FAST,  # type: ignore[arg-type]
                                        log_path=tmp_path / f"server-{i}.log"))
        with adbc.connect(servers[0].uri, autocommit=True) as setup, setup.cursor() as cur:
            cur.execute("CREATE TABLE ev (id BIGINT, who BIGINT, body VARCHAR)")
            cur.execute("CREATE TABLE c (id BIGINT, v BIGINT)")
            cur.execute("INSERT INTO c VALUES (1, 0)")
        acked = {"insert": 0, "update": 0}
        problems: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + SECONDS
        next_id = iter(range(10**6))

        def writer(server: int, kind_: str) -> None:
            with adbc.connect(servers[server].uri, autocommit=True) as conn, \
                    conn.cursor() as cur:
                while time.monotonic() < deadline:
                    with lock:
                        if kind_ == "insert" and acked["insert"] >= MAX_INSERTS:
                            return
                        i = next(next_id)
                    if kind_ == "insert":
                        cur.execute(f"INSERT INTO ev VALUES ({i}, {server}, "
                                    f"'common token{i} words')")
                    else:
                        cur.execute("UPDATE c SET v = v + 1 WHERE id = 1")
                    cur.fetchall()
                    if cur.rowcount == 1:
                        with lock:
                            acked[kind_] += 1

        def reader() -> None:
            # Counts and search hits never go down while files are folded and merged, and a
            # search (run after the count) finds every row counted.
            with adbc.connect(servers[1].uri, autocommit=True) as conn, \
                    conn.cursor() as cur:
                last_count = last_hits = 0
                while time.monotonic() < deadline:
                    count = _scalar(cur, "SELECT count(*) FROM ev")
                    hits = _scalar(cur, "SELECT count(*) FROM "
                                        "bm25_search('ev', 'body', 'common', 100000)")
                    if count < last_count or hits < last_hits or hits < count:
                        problems.append(f"count {last_count}->{count}, hits "
                                        f"{last_hits}->{hits}")
                    last_count, last_hits = count, hits

        threads = [threading.Thread(target=writer, args=(s, k))
                   for s in (0, 1) for k in ("insert", "insert", "update")]
        threads.append(threading.Thread(target=reader))
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 120)
        assert not problems, problems[:5]
        with adbc.connect(servers[1].uri, autocommit=True) as conn, conn.cursor() as cur:
            assert _scalar(cur, "SELECT count(*) FROM ev") == acked["insert"] > 0
            assert _scalar(cur, "SELECT count(DISTINCT id) FROM ev") == acked["insert"]
            assert _scalar(cur, "SELECT v FROM c WHERE id = 1") == acked["update"] > 0
            assert _scalar(cur, "SELECT count(*) FROM c") == 1
        with catalog.connect(str(root), **options) as conn:
            table = conn.open_table("ev")
            ops = {table.at_version(v).manifest.operation
                   for v in range(1, table.refresh().version + 1)}
        assert "optimize" in ops, ops
    finally:
        for s in servers:
            s.stop()


def test_a_row_acknowledged_before_sigkill_survives_and_is_folded_after_restart(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    # Folding would wait an hour: the row is only in the write log when the server dies.
    server = start_server(root, "--fold-age", "3600", log_path=tmp_path / "first.log")
    try:
        with adbc.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE ev (id BIGINT, body VARCHAR)")
            cur.execute("INSERT INTO ev VALUES (7, 'acknowledged before the crash')")
            cur.fetchall()
            assert cur.rowcount == 1
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    with catalog.connect(str(root)) as conn:
        assert len(log_files(conn.open_table("ev").refresh())) == 1
    server = start_server(root, "--fold-age", "0.1", log_path=tmp_path / "second.log")
    try:
        with adbc.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM bm25_search('ev', 'body', 'crash', 10)")
            assert [r[0] for r in cur.fetchall()] == [7]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with catalog.connect(str(root)) as conn:
                manifest = conn.open_table("ev").refresh()
            if not log_files(manifest):
                break
            time.sleep(0.2)
        assert not log_files(manifest) and manifest.files[0].indexed
        assert manifest.num_rows == 1
    finally:
        server.stop()


HEAVY = "SELECT count(DISTINCT value % 1000003) AS n FROM generate_series(1, 20000000000)"


def test_inserts_are_admitted_while_queries_hold_every_statement_slot(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, "--max-concurrent-statements", "1", "--statement-timeout",
                          "8", log_path=tmp_path / "server.log")
    try:
        # Connected first: the driver's metadata calls at connect time are queries.
        with adbc.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE ev (id BIGINT)")
            stmt = cur.adbc_statement
            busy = threading.Event()
            ended: list[str] = []

            def heavy() -> None:
                with adbc.connect(server.uri, autocommit=True) as other, \
                        other.cursor() as hcur:
                    busy.set()
                    try:
                        hcur.execute(HEAVY)
                        hcur.fetchall()
                    except Exception as exc:  # ended by its time limit
                        ended.append(repr(exc))

            worker = threading.Thread(target=heavy)
            worker.start()
            busy.wait(10)
            time.sleep(1.0)  # the query holds the only statement slot now
            started = time.monotonic()
            for i in range(5):
                stmt.set_sql_query(f"INSERT INTO ev VALUES ({i})")
                assert stmt.execute_update() == 1
            took = time.monotonic() - started
            assert worker.is_alive(), f"the query ended before the inserts ran: {ended}"
            assert took < 4.0, f"5 INSERTs took {took:.1f} s behind a running query"
            worker.join(30)
    finally:
        server.stop()
