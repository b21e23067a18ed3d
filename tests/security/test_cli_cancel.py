"""Ctrl-C in ``quiver sql`` stops the running statement: in this process on a local root,
and on the server (whose CPU time stops growing) through ``--server``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.flight_server.conftest import REPO, start_server
from tests.security.test_statement_limits import HEAVY, assert_idle


def _quiver_sql(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "quiver", "sql", *args],
                            cwd=str(REPO), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _interrupt(proc: subprocess.Popen, after: float = 2.0) -> tuple[int, str, float]:
    time.sleep(after)
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - sent


def test_ctrl_c_stops_a_local_statement_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    code, err, took = _interrupt(_quiver_sql("--root", str(root), HEAVY))
    assert code == 130 and "interrupted" in err
    assert took < 3.0


def test_ctrl_c_cancels_the_statement_on_the_server(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root)
    try:
        code, err, took = _interrupt(_quiver_sql("--server", server.uri, HEAVY))
        assert code == 130 and "interrupted" in err, err[-3000:]
        assert took < 6.0
        assert_idle(server.proc.pid)
    finally:
        server.stop()
