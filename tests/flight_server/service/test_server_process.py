"""``quiver serve`` as a real process: start-up line, refusals, clean stop, restarts and a
SIGKILL in the middle of an ingest loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.flight_server.conftest import REPO, free_port, start_server


def _connect(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "quiver", *args], cwd=str(REPO),
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_serve_logs_where_it_listens_and_stops_cleanly_on_sigterm(served) -> None:
    deadline = time.monotonic() + 10
    while "listening" not in served.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"quiver: listening on grpc://127.0.0.1:{served.port} (root {served.root})" \
        in served.log()
    assert served.stop(signal.SIGTERM) == 0


def test_non_loopback_host_without_auth_is_refused_with_status_2(tmp_path) -> None:
    out = _cli("serve", "--root", str(tmp_path), "--host", "0.0.0.0",
               "--port", str(free_port()))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "without authentication" in out.stderr and "--allow-unauthenticated" in out.stderr


def test_bad_storage_option_is_a_one_line_error(tmp_path) -> None:
    out = _cli("serve", "--root", str(tmp_path), "--storage-option", "nonsense")
    assert out.returncode == 2
    assert out.stderr.strip() == ("quiver: error: --storage-option wants KEY=VALUE, "
                                  "got 'nonsense'")


def test_serve_help_explains_every_option() -> None:
    out = _cli("serve", "--help")
    assert out.returncode == 0
    for option in ("--root", "--host", "--port", "--storage-option", "--workers", "--user",
                   "--users-file", "--token-file", "--token-env", "--tls-cert", "--tls-key",
                   "--allow-unauthenticated", "--memory-cache", "--advertise"):
        assert option in out.stdout


def test_restart_on_the_same_root_keeps_acknowledged_writes(served) -> None:
    conn = _connect(served.uri)
    cur = conn.cursor()
    cur.adbc_ingest("kept", pa.table({"id": np.arange(1000), "s": ["x"] * 1000}), mode="create")
    cur.execute("INSERT INTO kept VALUES (5000, 'y')")
    conn.close()
    assert served.stop(signal.SIGTERM) == 0
    again = start_server(served.root, port=free_port())
    try:
        conn = _connect(again.uri)
        cur = conn.cursor()
        cur.execute("SELECT count(*), max(id) FROM kept")
        assert cur.fetchall() == [(1001, 5000)]
        conn.close()
    finally:
        again.stop()


def test_sigkill_during_an_ingest_loop_loses_no_acknowledged_batch(served) -> None:
    batch_rows = 500
    conn = _connect(served.uri)
    cur = conn.cursor()
    cur.execute("CREATE TABLE log (id BIGINT)")
    acked: list[int] = []
    killer = threading.Timer(1.5, lambda: os.kill(served.proc.pid, signal.SIGKILL))
    killer.start()
    try:
        for i in range(10_000):  # bounded; the kill ends it long before
            ids = np.arange(i * batch_rows, (i + 1) * batch_rows, dtype=np.int64)
            try:
                cur.adbc_ingest("log", pa.table({"id": ids}), mode="append")
            except Exception:
                break
            acked.append(i)
    finally:
        killer.cancel()
        killer.join()
        cur.close()
        conn.close()
    served.proc.wait(timeout=30)
    assert served.proc.returncode == -signal.SIGKILL
    assert acked, "no batch was acknowledged before the kill"
    again = start_server(served.root, port=free_port())
    try:
        conn = _connect(again.uri)
        cur = conn.cursor()
        cur.execute("SELECT id FROM log")
        ids = np.sort(cur.fetch_arrow_table().column("id").to_numpy())
        conn.close()
    finally:
        again.stop()
    got = set((ids // batch_rows).tolist())
    assert set(acked) <= got
    # Only the batch in flight at the kill may be there unacknowledged, and only whole.
    assert got - set(acked) <= {len(acked)}
    assert len(ids) == len(got) * batch_rows


def test_sigterm_during_a_long_query_cancels_it_and_exits(served) -> None:
    client = flight.connect(served.uri)
    reader = client.do_get(flight.Ticket(b"SELECT value AS v FROM range(1000000000)"))
    reader.read_chunk()
    started = time.monotonic()
    assert served.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - started < 20
    with pytest.raises((flight.FlightError, pa.ArrowException)):
        for _ in range(100_000):
            reader.read_chunk()
