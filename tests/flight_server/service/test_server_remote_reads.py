"""``quiver serve`` on a remote root: the staleness window and the local disk cache."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pytest

from quiver.catalog import connect as catalog_connect
from quiver.flight_server.service.serve import ServeError, build_server
from quiver.supertable.options import REMOTE_MAX_STALENESS_S
from tests.flight_server.conftest import ServerProcess, start_server

SCHEMA = pa.schema([("id", pa.int64()), ("body", pa.string())])


def _rows(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table({"id": ids, "body": [f"word{i} common" for i in ids]}, schema=SCHEMA)


@pytest.fixture
def remote(s3_server, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    root = f"s3://{s3_server.new_bucket('remote-reads')}/root"
    yield root, s3_server.options()


def _serve(root: str, options: dict[str, str], tmp_path: Path, *extra: str) -> ServerProcess:
    flags = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
    return start_server(root, *flags, *extra,  # type: ignore[arg-type]
                        log_path=tmp_path / "server.log")


def _cursor(server: ServerProcess):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(server.uri).cursor()


def _sum(cur, table: str) -> int:
    cur.execute(f"SELECT sum(id) AS s, count(*) AS n FROM {table}")
    return cur.fetchall()[0]


def test_staleness_window_serves_the_checked_version_and_own_writes_at_once(
        remote, tmp_path) -> None:
    root, options = remote
    other = catalog_connect(root, **options)  # a second writer on the same root
    other.create_table("t", SCHEMA, fts=["body"]).append(_rows(0, 3))
    server = _serve(root, options, tmp_path, "--max-staleness", "600",
                    "--cache-dir", str(tmp_path / "cache"))
    try:
        cur = _cursor(server)
        assert _sum(cur, "t") == (3, 3)
        other.open_table("t").append(_rows(3, 2))
        # Inside the window the server answers from the version it already checked.
        assert _sum(cur, "t") == (3, 3)
        cur.execute("INSERT INTO t VALUES (100, 'mine')")
        # Its own commit lands on the newest version, which it then reads.
        assert _sum(cur, "t") == (0 + 1 + 2 + 3 + 4 + 100, 6)
        # A search reads the superfiles' indexes, which copies them into the disk cache.
        cur.execute("SELECT id FROM token_match('t', 'body', 'word2')")
        assert cur.fetchall() == [(2,)]
        cur.close()
        cur.connection.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _cached(tmp_path / "cache"):
            time.sleep(0.1)
        assert _cached(tmp_path / "cache"), "no superfile reached the disk cache"
    finally:
        server.stop()
        other.close()


def _cached(directory: Path) -> list[Path]:
    return list(directory.rglob("*.qvc"))


@pytest.mark.parametrize("extra", [(), ("--max-staleness", "0")], ids=["default", "zero"])
def test_server_reads_another_writers_commit_within_its_staleness_allowance(
        remote, tmp_path, extra) -> None:
    root, options = remote
    other = catalog_connect(root, **options)
    other.create_table("t", SCHEMA).append(_rows(0, 3))
    server = _serve(root, options, tmp_path, *extra)
    try:
        cur = _cursor(server)
        assert _sum(cur, "t") == (3, 3)
        other.open_table("t").append(_rows(3, 2))
        if not extra:  # statements share one check per REMOTE_MAX_STALENESS_S
            time.sleep(REMOTE_MAX_STALENESS_S + 0.05)
        assert _sum(cur, "t") == (10, 5)
        cur.close()
        cur.connection.close()
    finally:
        server.stop()
        other.close()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("max_staleness_s", -1.0, "--max-staleness must be 0 or more seconds"),
    ("max_staleness_s", float("nan"), "--max-staleness must be 0 or more seconds"),
    ("cache_bytes", -5, "--cache-bytes must be 0 or more bytes"),
])
def test_negative_remote_read_settings_are_refused(server_root, option, value,
                                                   message) -> None:
    with pytest.raises(ServeError, match=message):
        build_server(str(server_root), port=0, **{option: value})
