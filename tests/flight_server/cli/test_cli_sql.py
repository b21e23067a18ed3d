"""``quiver sql``: every output format, stdin scripts, one-line errors, statement splitting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.flight_server.cli.main import main
from quiver.flight_server.cli.sql_shell import json_lines, split_statements, statement_complete
from quiver.flight_server.sql import connect

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    with connect(str(path)) as conn:
        conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR, emb FLOAT[3])")
        conn.sql("INSERT INTO docs VALUES (1, 'rust async', [1.0, 0.0, 0.5]), "
                 "(2, 'a \"quoted\" title, with comma', [0.0, 1.0, 0.25]), "
                 f"(3, '{'long ' * 40}', NULL)")
    return path


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "quiver", *argv], cwd=str(REPO),
                          env=env, capture_output=True, text=True, timeout=120, input=stdin)


QUERY = "SELECT id, title, emb FROM docs ORDER BY id"


def test_table_format_shortens_long_cells_and_vectors(root: Path, capsys) -> None:
    assert main(["sql", "--root", str(root), "--max-width", "20", QUERY]) == 0
    out = capsys.readouterr().out
    assert "rust async" in out and "(3 rows)" in out
    assert "long " * 40 not in out and "…" in out
    assert "NULL" in out


def test_table_format_limits_rows_but_counts_them_all(root: Path, capsys) -> None:
    assert main(["sql", "--root", str(root), "--max-rows", "1", QUERY]) == 0
    out = capsys.readouterr().out
    assert "(3 rows, first 1 shown)" in out and "rust async" in out and "quoted" not in out


def test_csv_format_quotes_text_and_writes_vectors_as_lists(root: Path, capsys) -> None:
    assert main(["sql", "--root", str(root), "--format", "csv", QUERY]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == '"id","title","emb"'
    assert out[1] == '1,"rust async","[1.0,0.0,0.5]"'
    assert out[2] == '2,"a ""quoted"" title, with comma","[0.0,1.0,0.25]"'
    assert out[3].endswith(",") and len(out) == 4


def test_json_format_writes_one_object_per_row(root: Path, capsys) -> None:
    assert main(["sql", "--root", str(root), "--format", "json", QUERY]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == {"id": 1, "title": "rust async", "emb": [1.0, 0.0, 0.5]}
    assert rows[1]["title"] == 'a "quoted" title, with comma'
    assert rows[2]["emb"] is None and len(rows) == 3


def test_parquet_format_writes_the_output_file_and_needs_one(root: Path, tmp_path: Path,
                                                              capsys) -> None:
    out = tmp_path / "out.parquet"
    assert main(["sql", "--root", str(root), "--format", "parquet", "--output", str(out),
                 QUERY]) == 0
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("emb").to_pylist()[0] == [1.0, 0.0, 0.5]
    assert main(["sql", "--root", str(root), "--format", "parquet", QUERY]) == 1
    assert "needs --output" in capsys.readouterr().err


def test_output_file_takes_csv(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert main(["sql", "--root", str(root), "--format", "csv", "-o", str(out),
                 "SELECT id FROM docs ORDER BY id"]) == 0
    assert out.read_text().split() == ['"id"', "1", "2", "3"]


def test_statements_from_stdin_run_in_order(root: Path) -> None:
    script = ("INSERT INTO docs (id, title) VALUES (4, 'semi;colon');\n"
              "-- a comment; not a statement\n"
              "SELECT title FROM docs WHERE id = 4;\n")
    result = _run("sql", "--root", str(root), "--format", "json", stdin=script)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"count": 1}, {"title": "semi;colon"}]


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT * FROM nope", "nope"),
    ("SELEC 1", "SELEC"),
    ("SELECT missing_column FROM docs", "missing_column"),
])
def test_errors_are_one_line_with_exit_status_one(root: Path, query: str,
                                                   expected: str) -> None:
    result = _run("sql", "--root", str(root), query)
    assert result.returncode == 1
    assert result.stderr.startswith("quiver: error: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr and result.stdout == ""


def test_a_failing_statement_on_stdin_stops_the_rest(root: Path) -> None:
    result = _run("sql", "--root", str(root), "--format", "csv",
                  stdin="SELECT 1 AS a; SELECT * FROM nope; SELECT 2 AS b;")
    assert result.returncode == 1 and '"a"' in result.stdout and '"b"' not in result.stdout


def test_root_and_server_together_are_refused(root: Path, capsys) -> None:
    assert main(["sql", "--root", str(root), "--server", "grpc://127.0.0.1:1", "SELECT 1"]) == 1
    assert "not both" in capsys.readouterr().err


def test_statements_split_on_semicolons_outside_quotes_and_comments() -> None:
    text = "select 'a;b'; select \"x;y\" from t -- c;\n; /* ; */ select 3"
    assert split_statements(text) == ["select 'a;b'", 'select "x;y" from t -- c;',
                                      "/* ; */ select 3"]
    assert split_statements("select 'it''s; fine'") == ["select 'it''s; fine'"]
    assert split_statements(" ; ;\n-- only a comment") == []


@pytest.mark.parametrize(("text", "complete"), [
    ("select 1;", True), ("select 1", False), ("select ';", False),
    ("select 1; -- done", True), ("select 1 -- not done;", False), ("\\q", True),
    ("select 1;\nselect 2", False),
])
def test_prompt_accepts_a_statement_once_a_semicolon_ends_it(text: str,
                                                             complete: bool) -> None:
    assert statement_complete(text) is complete


def test_json_lines_escape_control_characters_and_keep_floats_floats() -> None:
    batch = pa.record_batch({"s": ["tab\there\x01", None], "f": [2.0, float("inf")],
                             "b": [True, False]})
    lines = json_lines(batch).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"s": "tab\there\x01", "f": 2.0, "b": True}, {"s": None, "f": None, "b": False}]
    assert '"f":2.0' in lines[0]


def test_sql_help_explains_every_option() -> None:
    result = _run("sql", "--help")
    assert result.returncode == 0
    for option in ("--format", "--output", "--max-rows", "--max-width", "--root", "--server",
                   "--token", "--user", "--tls-root-certs", "--storage-option"):
        assert option in result.stdout
