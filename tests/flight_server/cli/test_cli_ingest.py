"""``quiver ingest``: file formats, folders, reruns that skip, table creation, one-line errors."""

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
from quiver.flight_server.sql import connect

REPO = Path(__file__).resolve().parents[2]


def _docs(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "title": [f"doc {i} {'rust' if i % 2 else 'python'}" for i in ids],
        "emb": pa.array([[float(i % 3), 1.0, 0.5] for i in ids], pa.list_(pa.float32(), 3)),
    })


def _write_inputs(folder: Path) -> None:
    (folder / "nested").mkdir(parents=True)
    pq.write_table(_docs(0, 5), folder / "a.parquet")
    lines = ["id,title,emb"] + [f'{i},doc {i} csv,"[{i}.0, 1.0, 0.5]"' for i in range(5, 8)]
    (folder / "b.csv").write_text("\n".join(lines) + "\n")
    rows = [{"id": i, "title": f"doc {i} json", "emb": [0.0, float(i), 1.0]} for i in (8, 9)]
    (folder / "nested" / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "notes.txt").write_text("not data\n")


def _new_root(tmp_path: Path) -> Path:
    """A fresh, empty root folder (a missing --root is refused)."""
    root = tmp_path / "root"
    root.mkdir()
    return root


def _count(root: Path, table: str = "docs") -> int:
    with connect(str(root)) as conn:
        return conn.sql(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py()


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "quiver", *argv], cwd=str(REPO),
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    _write_inputs(folder)
    return folder


def test_folder_of_parquet_csv_and_jsonl_is_ingested_and_a_rerun_skips_every_file(
        tmp_path: Path, inputs: Path) -> None:
    root = _new_root(tmp_path)
    first = _run("ingest", "docs", str(inputs), "--root", str(root), "--create")
    assert first.returncode == 0, first.stderr
    assert "ingested 3 files into docs: 10 rows" in first.stdout
    assert "rows/s" in first.stdout and "MB" in first.stdout
    # No terminal on stderr: no progress bar drawn there.
    assert first.stderr == ""
    assert _count(root) == 10
    again = _run("ingest", "docs", str(inputs), "--root", str(root))
    assert again.returncode == 0, again.stderr
    assert "0 rows" in again.stdout and "skipped 3 files already ingested" in again.stdout
    assert _count(root) == 10


def test_csv_and_json_vectors_arrive_as_the_tables_vectors(tmp_path: Path, inputs: Path,
                                                           capsys) -> None:
    root = _new_root(tmp_path)
    assert main(["ingest", "docs", str(inputs / "a.parquet"), "--root", str(root),
                 "--create"]) == 0
    assert main(["ingest", "docs", str(inputs / "b.csv"), str(inputs / "nested"),
                 "--root", str(root)]) == 0
    with connect(str(root)) as conn:
        rows = conn.sql("SELECT id, emb FROM docs WHERE id IN (6, 9) ORDER BY id").to_pylist()
        assert conn.open_table("docs").schema.field("emb").type == pa.list_(pa.float32(), 3)
    assert rows == [{"id": 6, "emb": [6.0, 1.0, 0.5]}, {"id": 9, "emb": [0.0, 9.0, 1.0]}]
    assert "ingested 2 files into docs: 5 rows" in capsys.readouterr().out


def test_a_changed_file_is_ingested_again_but_an_untouched_one_is_not(
        tmp_path: Path, inputs: Path, capsys) -> None:
    root = _new_root(tmp_path)
    assert main(["ingest", "docs", str(inputs), "--root", str(root), "--create"]) == 0
    pq.write_table(_docs(100, 2), inputs / "a.parquet")
    capsys.readouterr()
    assert main(["ingest", "docs", str(inputs), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ingested 1 file into docs: 2 rows" in out and "skipped 2 files" in out
    assert _count(root) == 12


def test_large_file_is_one_commit_of_several_chunk_files_and_a_rerun_adds_nothing(
        tmp_path: Path, capsys) -> None:
    src = tmp_path / "big.parquet"
    pq.write_table(_docs(0, 2500), src, row_group_size=500)
    root = _new_root(tmp_path)
    assert main(["ingest", "docs", str(src), "--root", str(root), "--create",
                 "--chunk-rows", "1000"]) == 0
    with connect(str(root)) as conn:
        table = conn.open_table("docs")
        manifest = table.refresh()
        files = table.snapshot().files
    # Three chunk files of at most 1000 rows, published by one commit under the file's id.
    assert len(manifest.batches) == 1 and "#" not in manifest.batches[0]
    assert len(files) == 3 and {f.added_in for f in files} == {manifest.version}
    assert manifest.operation == "append"
    capsys.readouterr()
    assert main(["ingest", "docs", str(src), "--root", str(root), "--chunk-rows", "1000"]) == 0
    assert "skipped 1 file already ingested" in capsys.readouterr().out
    assert _count(root) == 2500


def test_create_with_index_options_then_bm25_and_vector_search_through_quiver_sql(
        tmp_path: Path, inputs: Path, capsys) -> None:
    root = _new_root(tmp_path)
    rows = [{"id": i, "body": text, "emb": [float(i), 1.0]}
            for i, text in enumerate(["rust async runtime", "python asyncio", "rust borrow"])]
    src = tmp_path / "docs.ndjson"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["ingest", "docs", str(src), "--root", str(root), "--create", "--fts", "body",
                 "--vector", "emb", "--metric", "l2"]) == 0
    capsys.readouterr()
    assert main(["describe", "docs", "--root", str(root)]) == 0
    described = capsys.readouterr().out
    assert "FLOAT[2]" in described and "vector(l2)" in described and "bm25" in described
    assert main(["sql", "--root", str(root), "--format", "json",
                 "SELECT id FROM bm25_search('docs', 'body', 'rust', 10) ORDER BY id"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [0, 2]
    assert main(["sql", "--root", str(root), "--format", "csv",
                 "SELECT id FROM vector_search('docs', 'emb', '[2.0, 1.0]', 1)"]) == 0
    assert capsys.readouterr().out.split() == ['"id"', "2"]


def test_create_without_options_indexes_every_string_and_vector_column(
        tmp_path: Path, inputs: Path, capsys) -> None:
    root = _new_root(tmp_path)
    assert main(["ingest", "docs", str(inputs / "a.parquet"), "--root", str(root),
                 "--create"]) == 0
    with connect(str(root)) as conn:
        spec = conn.open_table("docs").spec
    assert list(spec.fts) == ["title"] and list(spec.vector) == ["emb"]


def test_json_float_lists_become_vectors_of_the_given_dimension(tmp_path: Path) -> None:
    src = tmp_path / "v.jsonl"
    src.write_text("".join(json.dumps({"k": i, "v": [0.5] * 4}) + "\n" for i in range(3)))
    root = _new_root(tmp_path)
    assert main(["ingest", "vecs", str(src), "--root", str(root), "--create",
                 "--vector-dim", "v=4"]) == 0
    with connect(str(root)) as conn:
        table = conn.open_table("vecs")
        assert table.schema.field("v").type == pa.list_(pa.float32(), 4)
        assert "v" in table.spec.vector


def test_schema_mismatch_fails_with_one_line_naming_the_column(tmp_path: Path,
                                                               inputs: Path) -> None:
    root = _new_root(tmp_path)
    assert main(["ingest", "docs", str(inputs / "a.parquet"), "--root", str(root),
                 "--create"]) == 0
    wrong_type = tmp_path / "wrong.csv"
    wrong_type.write_text('id,title,emb\nnot-a-number,x,"[1, 2, 3]"\n')
    result = _run("ingest", "docs", str(wrong_type), "--root", str(root))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("quiver: error: ")
    assert "'id'" in result.stderr
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": 1, "title": "t", "emb": [1, 2, 3], "lang": "en"}) + "\n")
    result = _run("ingest", "docs", str(extra), "--root", str(root))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "lang" in result.stderr
    assert _count(root) == 5


@pytest.mark.parametrize(("argv", "expected"), [
    (["ingest", "docs", "{missing}"], "no such file or folder"),
    (["ingest", "nope", "{file}"], "no table 'nope'"),
    (["ingest", "docs", "{file}", "--fts", "title"], "go with --create"),
    (["ingest", "docs", "{txt}"], "unknown file type"),
])
def test_ingest_errors_are_one_line_with_a_non_zero_status(
        tmp_path: Path, inputs: Path, capsys, argv: list[str], expected: str) -> None:
    root = _new_root(tmp_path)
    assert main(["ingest", "docs", str(inputs / "a.parquet"), "--root", str(root),
                 "--create"]) == 0
    capsys.readouterr()
    names = {"{missing}": str(tmp_path / "missing.parquet"),
             "{file}": str(inputs / "a.parquet"), "{txt}": str(inputs / "notes.txt")}
    assert main([names.get(a, a) for a in argv] + ["--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("quiver: error: ") and err.count("\n") == 1 and expected in err


def test_ingest_help_explains_every_option() -> None:
    result = _run("ingest", "--help")
    assert result.returncode == 0
    for option in ("--create", "--fts", "--vector", "--metric", "--vector-dim", "--root",
                   "--storage-option", "--server", "--token", "--token-env", "--user",
                   "--tls-root-certs", "--chunk-rows", "--input-format"):
        assert option in result.stdout
    assert "adds no row twice" in " ".join(result.stdout.split())
