"""The compose deployment run for real, without Docker: moto S3 on loopback stands in for
MinIO, and the quiver service's command runs as a ``quiver serve`` process with only the
endpoint, credentials, bucket and port swapped for the loopback ones. Clients use the
tokens from ``QUIVER_TOKENS`` the way a deployment's clients would."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pytest

from tests.compose.conftest import (
    REPO,
    cli_has_health,
    health_args,
    interpolate,
    load_compose,
    serve_args,
)

HEALTHY_WITHIN_S = 60.0
STOP_WITHIN_S = 30.0
ROWS = 300
WORDS = np.array(["parquet", "vector", "search", "storage"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_command(command: list[str], endpoint: str, region: str, bucket: str,
                      port: int) -> list[str]:
    """The compose command with MinIO's address, the bucket and the port replaced."""
    out = list(command)
    swapped = set()
    for i, part in enumerate(command[:-1]):
        value = command[i + 1]
        if part == "--port":
            out[i + 1] = str(port)
            swapped.add("port")
        elif part == "--root":
            assert value.startswith("s3://"), value
            prefix = value.removeprefix("s3://").partition("/")[2]
            out[i + 1] = f"s3://{bucket}/{prefix}"
            swapped.add("root")
        elif part == "--storage-option" and value.startswith("aws_endpoint="):
            out[i + 1] = f"aws_endpoint={endpoint}"
            swapped.add("endpoint")
        elif part == "--storage-option" and value.startswith("aws_region="):
            out[i + 1] = f"aws_region={region}"
    assert swapped == {"port", "root", "endpoint"}, f"the compose command lacks {swapped}"
    return out


@dataclass
class Deployment:
    """The quiver service of the compose file, as a local process over moto S3."""

    command: list[str]
    env: dict[str, str]
    healthcheck: list[str]
    port: int
    tokens: list[str]
    log_path: Path
    proc: subprocess.Popen | None = field(default=None)

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def health(self, *argv: str) -> subprocess.CompletedProcess:
        """The compose health check's options, run with ``python -m quiver health``."""
        return subprocess.run([sys.executable, "-m", "quiver", "health", *argv],
                              cwd=str(self.log_path.parent), env=self.env,
                              capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quiver", *self.command],
                cwd=str(self.log_path.parent), env=self.env, stdout=log,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"quiver serve exited with {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text(errors='replace')}")
            last = self.health(*self.healthcheck)
            if last.returncode == 0:
                return
            time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise AssertionError(f"not healthy within {HEALTHY_WITHIN_S}s: "
                             f"{last.stderr if last else ''}\n"
                             f"{self.log_path.read_text(errors='replace')}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_WITHIN_S)
        self.proc = None
        return proc.returncode


@pytest.fixture(scope="module")
def deployment(s3_server, tmp_path_factory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("compose-stack")
    tokens = [secrets.token_urlsafe(24), secrets.token_urlsafe(24)]
    variables = {
        "MINIO_ROOT_USER": s3_server.access_key_id,
        "MINIO_ROOT_PASSWORD": s3_server.secret_access_key,
        "QUIVER_TOKENS": ",".join(tokens),
    }
    service = load_compose()["services"]["quiver"]
    command = [interpolate(str(part), variables) for part in service["command"]]
    port = _free_port()
    command = _loopback_command(command, s3_server.endpoint, s3_server.region,
                                s3_server.new_bucket("compose"), port)
    assert serve_args(command).host == "0.0.0.0"
    service_env = {name: interpolate(str(value), variables)
                   for name, value in service["environment"].items()}
    env = {**os.environ, **service_env, "PYTHONPATH": str(REPO),
           # The image's QUIVER_CACHE_DIR, here under the test's own directory.
           "QUIVER_CACHE_DIR": str(workdir / "cache")}
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "quiver", "health"]
    healthcheck = [part.replace(":50051", f":{port}") for part in test[3:]]
    assert health_args(healthcheck).server == f"grpc://127.0.0.1:{port}"
    stack = Deployment(command=command, env=env, healthcheck=healthcheck, port=port,
                       tokens=tokens, log_path=workdir / "quiver.log")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _connect(uri: str, token: str | None):
    kwargs = {}
    if token is not None:
        kwargs["db_kwargs"] = {"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri, **kwargs)


def _rows() -> pa.Table:
    ids = np.arange(ROWS, dtype=np.int64)
    titles = np.char.add(WORDS[ids % len(WORDS)], np.char.add(" note ", ids.astype(str)))
    vectors = np.zeros((ROWS, 4), dtype=np.float32)
    vectors[np.arange(ROWS), ids % 4] = 1.0
    vectors += np.random.default_rng(7).random((ROWS, 4), dtype=np.float32) * 0.01
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4)
    return pa.table({"id": ids, "title": pa.array(titles), "embedding": embedding})


def _answers(cur) -> dict[str, object]:
    cur.execute("SELECT count(*), sum(id) FROM docs")
    count, total = cur.fetchall()[0]
    cur.execute("SELECT id FROM bm25_search('docs', 'title', 'vector', 500) ORDER BY id")
    found = [row[0] for row in cur.fetchall()]
    cur.execute("SELECT id FROM vector_search('docs', 'embedding', '[0, 0, 1, 0]', 5)")
    nearest = sorted(row[0] for row in cur.fetchall())
    return {"count": count, "sum": total, "bm25": found, "knn": nearest}


def test_the_compose_health_check_passes_once_the_server_is_up(deployment) -> None:
    out = deployment.health(*deployment.healthcheck)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"quiver health: ok: Quiver at {deployment.uri}\n"


@pytest.mark.skipif(not cli_has_health(),
                    reason="the quiver command line has no 'health' subcommand yet; the "
                    "compose health check calls 'quiver health'")
def test_the_compose_health_check_runs_through_the_quiver_command(deployment) -> None:
    out = subprocess.run([sys.executable, "-m", "quiver", "health",
                          *deployment.healthcheck], env=deployment.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_calls_without_a_valid_token_are_refused(deployment) -> None:
    for token in (None, "not-one-of-the-deployment-tokens"):
        conn = _connect(deployment.uri, token)
        try:
            cur = conn.cursor()
            with pytest.raises(adbc.Error, match=r"(?i)unauthenticated|authentication"):
                cur.execute("SELECT 1")
        finally:
            conn.close()


def test_tables_written_with_either_token_are_read_back_after_a_restart(deployment) -> None:
    data = _rows()
    conn = _connect(deployment.uri, deployment.tokens[1])
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE docs (id BIGINT, title VARCHAR, embedding FLOAT[4]) "
                    "WITH (fts = 'title', vector = 'embedding', metric = 'cosine')")
        cur.adbc_ingest("docs", data.slice(0, ROWS // 2), mode="append")
        cur.adbc_ingest("docs", data.slice(ROWS // 2), mode="append")
        before = _answers(cur)
    finally:
        conn.close()
    vector_ids = np.flatnonzero(WORDS[np.arange(ROWS) % len(WORDS)] == "vector").tolist()
    assert before["count"] == ROWS and before["sum"] == ROWS * (ROWS - 1) // 2
    assert before["bm25"] == vector_ids
    assert all(i % 4 == 2 for i in before["knn"]) and len(before["knn"]) == 5

    assert deployment.stop(signal.SIGTERM) == 0
    deployment.start()

    conn = _connect(deployment.uri, deployment.tokens[0])
    try:
        cur = conn.cursor()
        assert _answers(cur) == before
        cur.execute("SHOW TABLES")
        names = cur.fetch_arrow_table().column("table_name").to_pylist()
        assert "docs" in names
    finally:
        conn.close()
