"""Flight SQL server fixtures: one in this process on port 0, one as a ``quiver serve`` process.

``flight_uri`` (in-process, fast) and ``served`` (a real subprocess, for restart and
kill tests) both yield a running server's ``grpc://127.0.0.1:<port>`` address.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerExited(RuntimeError):
    """The server process ended before it listened."""


def wait_listening(port: int, proc: subprocess.Popen | None = None,
                   timeout: float = START_TIMEOUT_S) -> None:
    """Waits until something accepts connections on ``port`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerExited(f"server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


@dataclass
class ServerProcess:
    """A ``quiver serve`` child process over ``root``."""

    root: Path
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return int(self.proc.returncode)


def start_server(root: Path, *extra: str, port: int | None = None,
                 log_path: Path | None = None) -> ServerProcess:
    """Starts ``python -m quiver serve`` on ``root`` and waits until it listens.

    Without ``port`` a free one is picked, and picked again should another process take
    it before the server binds it (a server that exits at once).
    """
    if port is not None:
        return _start_server(root, extra, port, log_path)
    for attempt in range(3):
        try:
            return _start_server(root, extra, free_port(), log_path)
        except ServerExited:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_server(root: Path, extra: tuple[str, ...], port: int,
                  log_path: Path | None) -> ServerProcess:
    log_path = log_path or root.parent / f"server-{port}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            # A missing --root is refused; these servers may start on a fresh folder.
            [sys.executable, "-m", "quiver", "serve", "--root", str(root), "--create-root",
             "--port", str(port), *extra],
            cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT)
    server = ServerProcess(root, port, proc, log_path)
    try:
        wait_listening(port, proc)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


def two_docs(stem: str) -> Any:
    """A SQL connection over a fresh memory root holding table ``docs`` with two rows
    (ids 1 and 2); stop a server over it with ``stop_on_memory``."""
    from quiver.flight_server.sql import connect

    conn = connect(f"memory://{stem}-{uuid.uuid4().hex}")
    conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR)")
    conn.sql("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta')")
    return conn


def stop_on_memory(srv: Any) -> None:
    """Stops an in-process server over a ``two_docs`` connection and frees its root."""
    from quiver.catalog.storage import drop_memory_store

    srv.shutdown()
    srv.conn.close()
    drop_memory_store(srv.conn.uri)


@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def quiver_server(server_root: Path) -> Iterator:
    """A ``QuiverFlightServer`` in this process over a fresh local root, on a free port."""
    from quiver.flight_server.service.server import QuiverFlightServer
    from quiver.flight_server.sql import connect

    conn = connect(str(server_root))
    server = QuiverFlightServer(conn, "grpc://127.0.0.1:0")
    try:
        yield server
    finally:
        server.shutdown()
        conn.close()


@pytest.fixture
def flight_uri(quiver_server) -> str:
    """The address of an in-process server (see ``quiver_server``)."""
    return f"grpc://127.0.0.1:{quiver_server.port}"


@pytest.fixture
def served(server_root: Path) -> Iterator[ServerProcess]:
    """A real ``quiver serve`` process over a fresh local root; stopped afterwards."""
    server = start_server(server_root)
    try:
        yield server
    finally:
        server.stop()
