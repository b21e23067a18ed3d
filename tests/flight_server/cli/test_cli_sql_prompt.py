"""The interactive ``quiver sql`` prompt, driven on a pseudo-terminal: meta-commands,
``\\timing``, Ctrl-C cancelling the running statement (here and on a server), completion
of keywords, tables and columns; and EXPLAIN printed whole."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quiver.flight_server.cli.client import LocalClient
from quiver.flight_server.cli.main import main
from quiver.flight_server.cli.sql_prompt import Names, candidates
from quiver.flight_server.sql import connect
from tests.flight_server.cli.pty_session import PtySession
from tests.flight_server.conftest import REPO, start_server
from tests.security.test_statement_limits import HEAVY, assert_idle

PROMPT = r"quiver>"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    with connect(str(path)) as conn:
        conn.sql("CREATE TABLE docs (id BIGINT, body VARCHAR) WITH (fts = 'body')")
        conn.sql("INSERT INTO docs VALUES (1, 'rust async'), (2, 'python asyncio')")
    return path


def _prompt(tmp_path: Path, *where: str) -> PtySession:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(home), TERM="xterm",
               COLUMNS="160", LINES="50")
    session = PtySession([sys.executable, "-m", "quiver", "sql", *where], env, str(REPO))
    session.expect(PROMPT, timeout=60)
    return session


@pytest.fixture
def local_prompt(tmp_path: Path, root: Path) -> Iterator[PtySession]:
    session = _prompt(tmp_path, "--root", str(root))
    try:
        yield session
    finally:
        session.close()


def test_meta_commands_list_describe_toggle_timing_and_quit(local_prompt: PtySession) -> None:
    s = local_prompt
    s.line("\\?")
    s.expect(r"\\timing\s+toggle")
    s.expect(PROMPT)
    s.line("\\dt")
    s.expect(r"│ docs\s+│")
    s.expect(r"\(1 row\)")
    s.line("\\d docs")
    s.expect(r"│ id\s+│ BIGINT")
    s.expect(r"│ body\s+│ VARCHAR\s+│ YES\s+│ bm25")
    s.line("\\d nope")
    s.expect(r"error: .*nope")
    s.line("\\timing")
    s.expect("Timing is on.")
    s.line("SELECT 41 + 1 AS answer;")
    s.expect(r"│\s+42 │")
    s.expect(r"Time: \d+\.\d{3} ms")
    s.line("\\timing")
    s.expect("Timing is off.")
    s.line("SELECT 7 AS seven;")
    s.expect(r"\(1 row\)")
    after = s.seen
    s.expect(PROMPT)
    assert "Time:" not in s.text[after:s.seen]
    s.line("\\q")
    assert s.wait(20) == 0


def test_ctrl_c_cancels_the_local_statement_and_the_prompt_goes_on(
        local_prompt: PtySession) -> None:
    s = local_prompt
    s.line(HEAVY + ";")
    time.sleep(2.0)
    sent = time.monotonic()
    s.send("\x03")
    s.expect("cancelled", timeout=15)
    assert time.monotonic() - sent < 6.0
    s.expect(PROMPT, timeout=10)
    s.line("SELECT count(*) AS n FROM docs;")
    s.expect(r"│\s+2 │", timeout=30)
    s.expect(PROMPT)
    s.send("\x04")  # Ctrl-D on an empty line quits
    assert s.wait(20) == 0


def test_ctrl_c_cancels_the_statement_on_the_server(tmp_path: Path, root: Path) -> None:
    server = start_server(root)
    s = _prompt(tmp_path, "--server", server.uri)
    try:
        s.line(HEAVY + ";")
        time.sleep(2.0)
        s.send("\x03")
        s.expect("cancelled", timeout=15)
        s.expect(PROMPT, timeout=10)
        assert_idle(server.proc.pid)
        s.line("SELECT count(*) AS n FROM docs;")
        s.expect(r"│\s+2 │", timeout=30)
        # Completion and meta-commands read the server's tables through the same client.
        s.line("CREATE TABLE on_server (remote_col BIGINT);")
        s.expect("created")
        s.expect(PROMPT)
        s.send("SELECT remote_c\t")
        s.expect("remote_col")
        s.line(" FROM on_server;")
        s.expect(r"\(0 rows\)")
        s.line("\\d on_server")
        s.expect(r"│ remote_col\s+│ BIGINT")
        s.line("\\q")
        assert s.wait(20) == 0
    finally:
        s.close()
        server.stop()


def test_tab_completes_keywords_tables_and_columns_and_learns_new_tables(
        local_prompt: PtySession) -> None:
    s = local_prompt
    s.send("SELEC\t")
    s.expect("SELECT")
    s.send("\x03")  # clears the line
    s.expect(PROMPT)
    s.line("CREATE TABLE fresh_table (zeta_col BIGINT);")
    s.expect(r"created")
    s.expect(PROMPT)
    s.send("SELECT zeta_c\t")
    s.expect("zeta_col")
    s.send(" FROM fresh_t\t")
    s.expect("fresh_table")
    s.line(";")
    s.expect(r"\(0 rows\)")
    s.line("\\q")
    assert s.wait(20) == 0


def test_completion_candidates_come_from_the_tables_through_the_client(root: Path) -> None:
    with LocalClient(connect(str(root))) as client:
        names = Names()
        names.refresh(client)

        def offered(text: str) -> set[str]:
            return {value for value, _ in candidates(text, names)}

        assert names.tables == ["docs"] and names.columns["docs"] == ["id", "body"]
        assert "SELECT" in offered("SEL") and "select" in offered("sel")
        assert offered("SELECT * FROM d") == {"docs"}
        assert "body" in offered("SELECT bo") and "id" in offered("SELECT i")
        assert "\\timing" in offered("\\ti") and offered("\\d d") == {"docs"}
        client.stream("CREATE TABLE later (lcol INT)").read_all()
        names.refresh(client)
        assert offered("SELECT * FROM la") == {"later"}
        assert offered("SELECT lc") == {"lcol"}


def test_explain_prints_every_plan_line_whole(root: Path, capsys) -> None:
    assert main(["sql", "--root", str(root), "--max-width", "20",
                 "EXPLAIN SELECT id, body FROM docs WHERE id > 1 ORDER BY id"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    lines = out.splitlines()
    assert lines[0] == "logical_plan:" and "physical_plan:" in lines
    scan = next(line for line in lines if "TableScan:" in line)
    assert "projection=[id, body]" in scan and len(scan) > 40
    # The tree keeps its indentation: a child is indented deeper than its parent.
    depth = [len(line) - len(line.lstrip()) for line in lines[1:lines.index("physical_plan:")]]
    assert depth == sorted(depth) and depth[-1] > depth[0]
