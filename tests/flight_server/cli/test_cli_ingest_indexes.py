"""``quiver ingest --create`` says which columns get which index, takes ``--fts``,
``--vector`` and ``--no-index``, and its progress bar (on a terminal) shows the reading,
indexing and committing phases without standing at 100% while indexes are built."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.flight_server.cli.pty_session import PtySession
from tests.flight_server.conftest import REPO, ServerProcess, start_server


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "quiver", *argv], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "title": f"t{i}", "body": f"rust {i}",
                                        "emb": [float(i), 1.0]}) + "\n" for i in range(3)))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ingest-indexes") / "root"
    root.mkdir()
    srv = start_server(root)
    try:
        yield srv
    finally:
        srv.stop()


def _indexes(where: list[str], table: str) -> dict[str, str]:
    done = _run("sql", *where, "--format", "json", f"DESCRIBE {table}")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {r["column_name"]: r["index"] or "" for r in rows}


@pytest.fixture(params=["root", "server"])
def where(request, root: Path) -> list[str]:
    if request.param == "root":
        return ["--root", str(root)]
    return ["--server", request.getfixturevalue("server").uri]


def test_the_default_spec_is_printed_before_anything_is_indexed(
        where: list[str], src: Path, tmp_path: Path) -> None:
    table = "deflt_" + re.sub(r"\W", "_", tmp_path.name)[-20:]
    done = _run("ingest", table, str(src), *where, "--create", "--vector", "emb")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"creating table {table} with indexes: full-text (BM25) on "
                            "title, body (every text column, the default); vector on emb "
                            "(cosine)")
    assert "--no-index" in first
    indexes = _indexes(where, table)
    assert indexes["title"] and indexes["body"] and "vector" in indexes["emb"]


def test_fts_and_vector_choose_the_indexes_and_the_line_names_them(
        where: list[str], src: Path, tmp_path: Path) -> None:
    table = "chosen_" + re.sub(r"\W", "_", tmp_path.name)[-20:]
    done = _run("ingest", table, str(src), *where, "--create", "--fts", "body",
                "--vector", "emb:l2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (f"creating table {table} with indexes: full-text "
                                           "(BM25) on body; vector on emb (l2)")
    indexes = _indexes(where, table)
    assert indexes["title"] == "" and indexes["body"] == "bm25" and indexes["emb"] == "vector(l2)"


def test_no_index_creates_a_table_without_any_index(where: list[str], src: Path,
                                                    tmp_path: Path) -> None:
    table = "bare_" + re.sub(r"\W", "_", tmp_path.name)[-20:]
    done = _run("ingest", table, str(src), *where, "--create", "--no-index",
                "--vector-dim", "emb=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"creating table {table} without indexes"
    assert set(_indexes(where, table).values()) == {""}


@pytest.mark.parametrize(("argv", "says"), [
    (["--create", "--no-index", "--fts", "body"], "not both"),
    (["--no-index"], "go with --create"),
])
def test_contradicting_index_options_are_refused(root: Path, src: Path, argv: list[str],
                                                 says: str) -> None:
    done = _run("ingest", "t", str(src), "--root", str(root), *argv)
    assert done.returncode == 1 and says in done.stderr
    assert not (root / "tables").exists() or not any((root / "tables").iterdir())


def _big_parquet(path: Path, rows: int) -> Path:
    pq.write_table(pa.table({"id": pa.array(range(rows), pa.int64()),
                             "body": [f"word{i % 997} text{i % 13} more{i % 101}"
                                      for i in range(rows)]}), path)
    return path


_BAR = re.compile(r"(reading|indexing and committing|indexing|committing|creating)\b"
                  r"[^%]*?(\d+)%")


def _bars(text: str) -> list[tuple[str, str, int]]:
    """(phase, what the bar says, percent) of each drawing of the progress bar."""
    return [(m.group(1), m.group(0), int(m.group(2))) for m in _BAR.finditer(text)]


def _ingest_on_a_terminal(tmp_path: Path, *argv: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm", COLUMNS="160", LINES="50")
    session = PtySession([sys.executable, "-m", "quiver", "ingest", *argv], env, str(REPO))
    try:
        session.expect(r"ingested \d+ files? into", timeout=240)
        assert session.wait(30) == 0
        return session.text
    finally:
        session.close()


def test_the_progress_bar_shows_reading_indexing_and_committing(tmp_path: Path,
                                                                root: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _big_parquet(inputs / "a_big.parquet", 60_000)
    _big_parquet(inputs / "b_small.parquet", 500)
    text = _ingest_on_a_terminal(tmp_path, "docs", str(inputs), "--root", str(root),
                                 "--create", "--chunk-rows", "20000")
    bars = _bars(text)
    phases = {phase for phase, _, _ in bars}
    assert {"reading", "indexing", "committing", "indexing and committing"} <= phases, bars
    # While a phase after reading is shown, the bar is short of 100%.
    for phase, shown, percent in bars:
        if phase != "reading":
            assert percent < 100, shown
    assert "indexing a_big.parquet chunk 3" in text


def test_through_a_server_the_bar_waits_for_its_indexing_and_commit(
        tmp_path: Path, server: ServerProcess) -> None:
    path = _big_parquet(tmp_path / "remote.parquet", 20_000)
    text = _ingest_on_a_terminal(tmp_path, "remote_docs", str(path), "--server", server.uri,
                                 "--create")
    shown = [(said, percent) for _, said, percent in _bars(text) if "on the server" in said]
    assert shown, _bars(text)
    assert all(percent < 100 for _, percent in shown), shown
