"""``quiver.optimize`` and ``quiver.gc`` as Flight actions of a real ``quiver serve``:
``quiver optimize|gc --server`` work; the JSON body is untrusted (INVALID_ARGUMENT, nothing
done); the actions need credentials and stop at the statement time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.sql import connect
from tests.flight_server.conftest import REPO, ServerProcess, start_server

USER, PASSWORD = "maint", "maintenance-password"
# The server's own background compaction would merge the small files first.
NO_COMPACTION = ("--no-compaction",)


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "quiver", *argv], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=120)


def _make_root(root: Path, appends: int = 4, rows: int = 2) -> None:
    with connect(str(root)) as conn:
        conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR) WITH (fts = 'body')")
        table = conn.open_table("docs")
        for i in range(appends):
            ids = list(range(i * rows, (i + 1) * rows))
            table.append(pa.table({"id": ids, "body": [f"rust word{j} text {j % 7}"
                                                        for j in ids]}))


def _state(root: Path) -> tuple[int, int]:
    with connect(str(root)) as conn:
        snap = conn.open_table("docs").snapshot()
        return snap.version, len(snap.files)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    root = tmp_path / "root"
    _make_root(root)
    server = start_server(root, *NO_COMPACTION)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[ServerProcess]:
    """One server for the tests that must leave its table as it was."""
    root = tmp_path_factory.mktemp("maintenance") / "root"
    _make_root(root)
    server = start_server(root, *NO_COMPACTION)
    try:
        yield server
    finally:
        server.stop()


def test_optimize_and_gc_run_through_the_server(served: ServerProcess) -> None:
    root = served.root
    version, files = _state(root)
    assert files == 4
    done = _run("optimize", "docs", "--server", served.uri)
    assert done.returncode == 0, done.stderr
    assert "optimize docs: files 4 -> 1 (rewrote 4 into 1, 8 rows" in done.stdout
    assert _state(root) == (version + 1, 1)
    # The replaced files are now unreferenced; age every file past the server's grace floor.
    old = time.time() - 7200
    data_files = [p for p in root.rglob("*") if p.is_file()]
    for path in data_files:
        os.utime(path, (old, old))
    done = _run("gc", "docs", "--server", served.uri, "--grace-seconds", "3600")
    assert done.returncode == 0, done.stderr
    removed = int(done.stdout.split("gc docs: removed ")[1].split()[0])
    assert removed >= 4 and "from 1 table" in done.stdout
    assert sum(1 for p in data_files if not p.exists()) >= 4
    with connect(str(root)) as conn:  # the table still reads whole
        assert conn.sql("SELECT count(*) AS n FROM docs").column("n")[0].as_py() == 8
    every = _run("gc", "--server", served.uri)
    assert every.returncode == 0, every.stderr
    assert "gc: removed the files of 0 dropped or replaced tables" in every.stdout


def _action(uri: str, kind: str, body: bytes, **call: object) -> list[bytes]:
    client = flight.FlightClient(uri)
    try:
        return [r.body.to_pybytes() for r in client.do_action(
            flight.Action(kind, body), flight.FlightCallOptions(**call))]
    finally:
        client.close()


@pytest.mark.parametrize(("kind", "body", "says"), [
    ("quiver.optimize", b"", "must be a JSON object"),
    ("quiver.optimize", b"\xff\xfe", "not JSON"),
    ("quiver.optimize", b"[1, 2]", "must be a JSON object, got list"),
    ("quiver.optimize", b'{"table": "docs", "drop": true}', "unknown key(s) 'drop'"),
    ("quiver.optimize", b'{"table": "../docs"}', "invalid table name '../docs'"),
    ("quiver.optimize", b'{"table": "docs; DROP TABLE docs"}', "invalid table name"),
    ("quiver.optimize", b'{"table": 7}', "invalid table name int"),
    ("quiver.optimize", b'{}', "invalid table name NoneType"),
    ("quiver.optimize", b'{"table": "docs", "options": {"target_rows": "5"}}',
     "target_rows must be an integer"),
    ("quiver.optimize", b'{"table": "docs", "options": {"target_rows": true}}',
     "target_rows must be an integer"),
    ("quiver.optimize", b'{"table": "docs", "options": {"target_rows": 0}}',
     "target_rows must lie in [1, 100000000], got 0"),
    ("quiver.optimize", b'{"table": "docs", "options": {"min_live_fraction": NaN}}',
     "min_live_fraction must be a number"),
    ("quiver.optimize", b'{"table": "docs", "options": {"min_live_fraction": 2}}',
     "must lie in [0, 1]"),
    ("quiver.optimize", b'{"table": "docs", "options": {"rm": 1}}', "unknown option 'rm'"),
    ("quiver.optimize", b'{"table": "docs", "options": [1]}', "must be a JSON object"),
    ("quiver.gc", b'{"table": "docs", "options": {"grace_seconds": 0}}',
     "grace_seconds must lie in [60,"),
    ("quiver.gc", b'{"table": "docs", "options": {"keep_versions": -1}}', "keep_versions"),
    ("quiver.gc", b'{"table": "docs", "options": {"expire_manifests": 1}}',
     "must be true or false"),
    ("quiver.gc", b'{"table": "docs"}' + b" " * (65 << 10), "at most 65536"),
    ("quiver.gc", b"[" * 60_000, "not JSON"),
])
def test_an_untrusted_body_is_invalid_argument_and_changes_nothing(
        shared: ServerProcess, kind: str, body: bytes, says: str) -> None:
    before = _state(shared.root)
    with pytest.raises(pa.ArrowInvalid) as caught:
        _action(shared.uri, kind, body)
    assert says in str(caught.value)
    assert _state(shared.root) == before


def test_an_unknown_table_is_not_found(shared: ServerProcess) -> None:
    with pytest.raises(pa.ArrowKeyError):
        _action(shared.uri, "quiver.optimize", b'{"table": "nope"}')


def test_the_actions_are_listed(shared: ServerProcess) -> None:
    client = flight.FlightClient(shared.uri)
    try:
        names = {a.type for a in client.list_actions()}
    finally:
        client.close()
    assert {"quiver.optimize", "quiver.gc"} <= names


def test_the_actions_need_credentials_on_a_secured_server(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _make_root(root)
    server = start_server(root, *NO_COMPACTION, "--user", f"{USER}:{PASSWORD}")
    try:
        before = _state(root)
        with pytest.raises(flight.FlightUnauthenticatedError):
            _action(server.uri, "quiver.optimize", b'{"table": "docs"}')
        assert _state(root) == before
        refused = _run("optimize", "docs", "--server", server.uri)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1
        done = _run("optimize", "docs", "--server", server.uri, "--user", f"{USER}:{PASSWORD}")
        assert done.returncode == 0, done.stderr
        assert _state(root)[1] == 1
    finally:
        server.stop()


def test_optimize_past_the_statement_time_limit_stops_and_publishes_nothing(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    _make_root(root, appends=12, rows=8000)
    server = start_server(root, *NO_COMPACTION, "--statement-timeout", "0.05")
    try:
        before = _state(root)
        started = time.monotonic()
        with pytest.raises(flight.FlightTimedOutError) as caught:
            _action(server.uri, "quiver.optimize", b'{"table": "docs"}')
        assert "time limit" in str(caught.value)
        assert time.monotonic() - started < 30
        assert _state(root) == before
        answer = json.loads(_action(server.uri, "quiver.gc", b'{"table": "docs"}')[0])
        assert answer["tables"][0]["table"] == "docs"
    finally:
        server.stop()


def test_the_actions_wait_for_a_statement_slot_like_every_call(tmp_path: Path) -> None:
    from tests.security.test_statement_limits import HEAVY

    root = tmp_path / "root"
    _make_root(root)
    server = start_server(root, *NO_COMPACTION, "--max-concurrent-statements", "1",
                          "--statement-timeout", "30")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    busy = subprocess.Popen([sys.executable, "-m", "quiver", "sql", "--server", server.uri,
                             HEAVY], cwd=str(REPO), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        before = _state(root)
        time.sleep(4.0)  # the heavy query now holds the only slot
        assert busy.poll() is None
        started = time.monotonic()
        with pytest.raises(pa.ArrowException) as caught:
            # The server's line is 10 s long; the call's own bound is longer.
            _action(server.uri, "quiver.optimize", b'{"table": "docs"}', timeout=30.0)
        assert "busy" in str(caught.value), caught.value
        assert 5 < time.monotonic() - started < 25
        assert _state(root) == before
    finally:
        busy.kill()
        busy.wait(timeout=30)
        server.stop()
