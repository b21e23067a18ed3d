"""``quiver tables | describe | optimize | gc | health``, and data commands through ``--server``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.cli.main import main
from quiver.flight_server.service import auth
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD, TOKEN = "ann", "s3cret-pw", "static-token-for-tests-0123456789"


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "quiver", *argv], cwd=str(REPO),
                          env=full_env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    with connect(str(path)) as conn:
        conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR) WITH (fts = 'body')")
        table = conn.open_table("docs")
        # Several small appends: several small files for optimize to merge.
        for i in range(4):
            table.append(pa.table({"id": [2 * i, 2 * i + 1],
                                   "body": [f"rust {i}", f"python {i}"]}))
        conn.sql("CREATE TABLE other (x INT)")
    return path


def _files(root: Path, name: str = "docs") -> int:
    with connect(str(root)) as conn:
        return len(conn.open_table(name).snapshot().files)


# -- on a storage root --------------------------------------------------------------------


def test_tables_lists_one_name_per_line(root: Path, capsys) -> None:
    assert main(["tables", "--root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == ["docs", "other"]


def test_describe_shows_columns_indexes_rows_files_and_version(root: Path, capsys) -> None:
    assert main(["describe", "docs", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    for expected in ("rows: 8", "files: 4", "version:", "BIGINT", "VARCHAR", "bm25"):
        assert expected in out


def test_describe_shows_the_current_iceberg_metadata_file(root: Path, capsys) -> None:
    assert main(["describe", "docs", "--root", str(root)]) == 0
    out = "".join(capsys.readouterr().out.split())
    hint = next(root.glob("tables/docs-*/metadata/version-hint.text"))
    newest = hint.parent / f"v{hint.read_text().strip()}.metadata.json"
    assert f"icebergmetadata:{newest.as_uri()}" in out


def test_describe_of_an_unknown_table_is_one_line(root: Path, capsys) -> None:
    assert main(["describe", "nope", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("quiver: error: ") and err.count("\n") == 1 and "nope" in err


def test_optimize_merges_files_and_reports_before_and_after(root: Path, capsys) -> None:
    assert main(["optimize", "docs", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "files 4 -> 1" in out
    assert _files(root) == 1
    assert main(["optimize", "docs", "--root", str(root)]) == 0
    assert "nothing to rewrite" in capsys.readouterr().out
    with connect(str(root)) as conn:
        assert conn.sql("SELECT count(*) AS n FROM docs").column("n")[0].as_py() == 8


def test_gc_removes_the_files_optimize_replaced_and_says_so(root: Path, capsys) -> None:
    assert main(["optimize", "docs", "--root", str(root)]) == 0
    data_files = lambda: sum(1 for p in root.rglob("*") if p.is_file())  # noqa: E731
    before = data_files()
    capsys.readouterr()
    assert main(["gc", "docs", "--root", str(root), "--grace-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "gc docs: removed" in out and "gc: removed" in out and "1 table" in out
    removed = int(out.split("gc docs: removed ")[1].split()[0])
    # gc writes one Iceberg metadata file: the one without the snapshots it expired.
    assert removed >= 4 and data_files() == before - removed + 1
    with connect(str(root)) as conn:
        assert conn.sql("SELECT count(*) AS n FROM docs").column("n")[0].as_py() == 8


def test_gc_with_the_default_grace_keeps_recent_files(root: Path, capsys) -> None:
    assert main(["optimize", "docs", "--root", str(root)]) == 0
    assert main(["gc", "--root", str(root)]) == 0
    assert "gc: removed 0 objects" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["tables", "describe", "optimize", "gc", "ingest"])
def test_every_command_explains_its_options_in_help(command: str) -> None:
    result = _run(command, "--help")
    assert result.returncode == 0
    for option in ("--root", "--storage-option", "--server", "--token-env", "--user"):
        assert option in result.stdout
    if command in ("optimize", "gc"):
        assert "or on a server (--server)" in " ".join(result.stdout.split())


# -- through a server ---------------------------------------------------------------------


@pytest.fixture
def server_with_data(flight_uri: str, server_root: Path) -> str:
    with connect(str(server_root)) as conn:
        conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR)")
        conn.sql("INSERT INTO docs VALUES (1, 'rust async'), (2, 'python')")
    return flight_uri


def test_server_mode_lists_describes_and_queries(server_with_data: str, capsys) -> None:
    uri = server_with_data
    assert main(["tables", "--server", uri]) == 0
    assert capsys.readouterr().out.splitlines() == ["docs"]
    assert main(["describe", "docs", "--server", uri]) == 0
    out = capsys.readouterr().out
    assert "rows: 2" in out and "bm25" in out and "files:" not in out
    assert main(["sql", "--server", uri, "--format", "json",
                 "SELECT id FROM bm25_search('docs', 'body', 'rust', 5)"]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == [{"id": 1}]


def test_server_mode_errors_are_one_line(server_with_data: str, capsys) -> None:
    assert main(["sql", "--server", server_with_data, "SELECT * FROM nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("quiver: error: ") and err.count("\n") == 1
    assert "unknown table 'nope'" in err and "Detail" not in err
    assert main(["optimize", "nope", "--server", server_with_data]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "Detail" not in err


def test_server_mode_ingest_creates_with_options_and_a_rerun_adds_no_row_twice(
        server_with_data: str, tmp_path: Path, capsys) -> None:
    src = tmp_path / "v.jsonl"
    src.write_text("".join(json.dumps({"k": i, "t": f"w{i}", "v": [float(i), 1.0]}) + "\n"
                           for i in range(3)))
    argv = ["ingest", "vecs", str(src), "--server", server_with_data]
    assert main([*argv, "--create", "--fts", "t", "--vector", "v", "--metric", "l2"]) == 0
    assert "ingested 1 file into vecs: 3 rows" in capsys.readouterr().out
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["describe", "vecs", "--server", server_with_data]) == 0
    out = capsys.readouterr().out
    assert "rows: 3" in out and "FLOAT[2]" in out and "vector(l2)" in out
    src.write_text(src.read_text() + json.dumps({"k": 9, "t": "w9", "v": [9.0, 1.0]}) + "\n")
    assert main(argv) == 0  # a changed file is a new one: all its rows go in
    capsys.readouterr()
    assert main(["describe", "vecs", "--server", server_with_data]) == 0
    assert "rows: 7" in capsys.readouterr().out


def test_server_mode_unreachable_server_is_one_line(capsys) -> None:
    from tests.flight_server.conftest import free_port

    assert main(["tables", "--server", f"grpc://127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("quiver: error: ") and err.count("\n") == 1


@pytest.fixture
def auth_server() -> Iterator[str]:
    name = f"memory://cli-auth-{uuid.uuid4().hex}"
    conn = connect(name)
    conn.sql("CREATE TABLE docs (id BIGINT)")
    config = auth.AuthConfig(users={USER: PASSWORD}, tokens=frozenset({TOKEN}))
    srv = QuiverFlightServer(conn, "grpc://127.0.0.1:0", middleware=auth.middleware(config),
                             auth_handler=auth.handshake_handler(config))
    try:
        yield f"grpc://127.0.0.1:{srv.port}"
    finally:
        srv.shutdown()
        conn.close()
        drop_memory_store(name)


def test_server_mode_logs_in_with_user_token_or_token_env(auth_server: str, capsys,
                                                           monkeypatch) -> None:
    assert main(["tables", "--server", auth_server]) == 1
    assert "quiver: error: " in capsys.readouterr().err
    assert main(["tables", "--server", auth_server, "--user", f"{USER}:{PASSWORD}"]) == 0
    assert capsys.readouterr().out.splitlines() == ["docs"]
    assert main(["tables", "--server", auth_server, "--token", TOKEN]) == 0
    assert capsys.readouterr().out.splitlines() == ["docs"]
    monkeypatch.setenv("QUIVER_TEST_TOKEN", TOKEN)
    assert main(["tables", "--server", auth_server, "--token-env", "QUIVER_TEST_TOKEN"]) == 0
    assert capsys.readouterr().out.splitlines() == ["docs"]
    assert main(["tables", "--server", auth_server, "--user", f"{USER}:wrong"]) == 1
    assert main(["tables", "--server", auth_server, "--token", TOKEN, "--user", USER]) == 1
    assert "give only one of" in capsys.readouterr().err


def test_server_credentials_without_server_are_refused(root: Path, capsys) -> None:
    assert main(["tables", "--root", str(root), "--token", TOKEN]) == 1
    assert "--token goes with --server" in capsys.readouterr().err


def test_health_subcommand_runs_the_health_check(served) -> None:
    ok = _run("health", "--server", served.uri)
    assert ok.returncode == 0 and "ok" in ok.stdout
    parquet = served.root.parent / "a.parquet"
    pq.write_table(pa.table({"id": [1, 2], "body": ["x", "y"]}), parquet)
    ingested = _run("ingest", "t", str(parquet), "--server", served.uri, "--create")
    assert ingested.returncode == 0, ingested.stderr
    listed = _run("tables", "--server", served.uri)
    assert listed.stdout.split() == ["t"]
    served.stop()
    down = _run("health", "--server", served.uri, "--timeout", "2")
    assert down.returncode == 1 and down.stderr.count("\n") == 1
