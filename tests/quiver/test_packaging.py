"""The distribution as a user installs it: a wheel and an sdist built from the checkout,
the wheel installed in a fresh virtualenv beside proto-plus, and only ``quiver`` names
imported from it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import quiver
from tests.source_tree import parse_source

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("superfile", "supertable", "catalog", "flight_server", "proto")
SOURCES = (*LAYERS, "quiver", "tests", "bench")


def _imported_tops(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(parse_source(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_no_module_imports_a_layer_by_a_top_level_name() -> None:
    """From the checkout's root ``import catalog`` would work and hide a break that only an
    installed wheel shows; every import goes through ``quiver.``."""
    wrong = [f"{path.relative_to(REPO)}:{line} imports {top}"
             for folder in SOURCES for path in sorted((REPO / folder).rglob("*.py"))
             for line, top in _imported_tops(path) if top in LAYERS]
    assert wrong == []


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the build backend (setuptools) is already in this environment, and the
    # test must not reach the network.
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                           str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def _one(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


def test_wheel_installs_only_the_quiver_package(dist: Path) -> None:
    names = zipfile.ZipFile(_one(dist, "quiver-*.whl")).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"quiver", f"quiver-{quiver.__version__}.dist-info"}
    for layer in LAYERS:
        assert f"quiver/{layer}/__init__.py" in names
    assert "quiver/proto/FlightSql.proto" in names
    assert "quiver/flight_server/sql/engine.py" in names
    entry = zipfile.ZipFile(_one(dist, "quiver-*.whl")).read(
        f"quiver-{quiver.__version__}.dist-info/entry_points.txt").decode()
    assert "quiver = quiver.flight_server.cli.main:main" in entry


def test_sdist_keeps_the_repository_layout(dist: Path) -> None:
    with tarfile.open(_one(dist, "quiver-*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for path in ("setup.py", "pyproject.toml", "README.md", "proto/FlightSql.proto",
                 "proto/Flight.proto", "superfile/__init__.py", "catalog/storage.py",
                 "flight_server/service/server.py", "quiver/__init__.py"):
        assert path in names, path


SMOKE = textwrap.dedent("""
    import sys
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import polars as pl
    import proto
    import pyarrow as pa

    import quiver
    from quiver.proto import flight_sql_pb2

    venv = Path(sys.argv[1]).resolve()
    # proto-plus keeps its name; Quiver's messages live under quiver.proto.
    assert hasattr(proto, "Message") and hasattr(proto, "Field"), proto.__file__
    assert flight_sql_pb2.CommandStatementQuery(query="SELECT 1").query == "SELECT 1"
    import quiver.flight_server.sql
    import quiver.superfile
    for module in (quiver, quiver.superfile, quiver.flight_server.sql):
        assert Path(module.__file__).resolve().is_relative_to(venv), module.__file__

    titles = ["fast json parser", "async http client", "json schema validator"]
    vectors = [[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]]
    with quiver.connect(sys.argv[2]) as db:
        frame = pd.DataFrame({"id": [0, 1, 2], "title": titles,
                              "emb": [np.array(v) for v in vectors]})
        docs = db.create_table("docs", frame, fts="title", vector="emb")
        docs.add(pl.DataFrame({"id": [3], "title": ["http json api server"],
                               "emb": [[0.6, 0.8]]}))
        docs.add(pa.table({"id": [4], "title": ["image resizer"],
                           "emb": pa.array([[-1.0, 0.0]], pa.list_(pa.float32(), 2))}))
        hits = docs.search("json").limit(2).to_pandas()
        assert list(hits["title"]) == ["fast json parser", "json schema validator"], hits
        near = docs.search(vector=[1.0, 0.0]).limit(1).to_polars()
        assert near["title"][0] == "fast json parser", near
        count = db.sql("SELECT count(*) AS n FROM docs").to_arrow()
        assert count["n"][0].as_py() == 5
    print("smoke ok")
""")


def test_wheel_in_a_fresh_virtualenv_beside_proto_plus_answers_searches(dist: Path,
                                                                         tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    work = tmp_path / "work"
    work.mkdir()
    # Run from an empty folder with the variables pip reads cleared: a checkout's
    # ``quiver.egg-info`` in the working folder would pass for an installed quiver.
    env = {key: value for key, value in os.environ.items()
           if key != "PYTHONPATH" and not key.startswith("PIP_")}
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                           "--force-reinstall", str(_one(dist, "quiver-*.whl"))],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(site.glob("quiver-*.dist-info")), done.stdout[-2000:]
    # Dependencies (and proto-plus) come from this environment's packages, after the fresh
    # environment's own: the wheel is the only thing installed there. Added after the
    # install, or pip would take this environment's editable quiver for an installed one.
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (work / "smoke.py").write_text(SMOKE)
    done = subprocess.run([str(python), "smoke.py", str(venv), str(tmp_path / "data")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.strip().endswith("smoke ok")
    version = subprocess.run([str(venv / "bin" / "quiver"), "--version"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.strip() == f"quiver {quiver.__version__}"
