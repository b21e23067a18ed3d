"""The Dockerfile, read without building it: the entry point is the installed ``quiver``
command, the default command parses, and everything the wheel build needs is copied in
and not excluded by ``.dockerignore``."""

from __future__ import annotations

import ast
import fnmatch
import json
import tomllib

from tests.compose.conftest import DOCKERFILE, REPO, serve_args
from tests.source_tree import parse_source


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def _only(steps: list[tuple[str, str]], keyword: str) -> str:
    found = [rest for kw, rest in steps if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _layers() -> tuple[str, ...]:
    """The folders ``setup.py`` installs under the ``quiver`` package."""
    tree = parse_source((REPO / "setup.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["LAYERS"]]
    return ast.literal_eval(value)


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_entrypoint_is_the_console_script_the_project_installs() -> None:
    entrypoint = json.loads(_only(_final_stage(), "ENTRYPOINT"))
    assert entrypoint == ["quiver"]
    assert _pyproject()["project"]["scripts"]["quiver"] == "quiver.flight_server.cli.main:main"


def test_default_command_is_accepted_by_quiver_serve() -> None:
    command = json.loads(_only(_final_stage(), "CMD"))
    args = serve_args(command)
    assert args.host == "0.0.0.0"
    assert args.root == "/data"
    assert args.port == 50051


def test_the_image_exposes_the_port_and_runs_as_a_non_root_user() -> None:
    stage = _final_stage()
    assert _only(stage, "EXPOSE") == "50051"
    user = _only(stage, "USER").split(":")[0]
    assert user not in ("root", "0")
    assert "/opt/quiver/bin" in _only(stage, "ENV")


def test_base_image_is_a_slim_python_the_project_supports() -> None:
    steps = _instructions()
    arg = next(rest for kw, rest in steps if kw == "ARG" and rest.startswith("PYTHON_IMAGE="))
    image = arg.split("=", 1)[1]
    assert image.startswith("python:3.1") and "-slim" in image
    minor = int(image.split(":")[1].split("-")[0].split(".")[1])
    required = _pyproject()["project"]["requires-python"]
    assert required == ">=3.11" and minor >= 11


def test_every_package_and_the_build_metadata_are_copied_and_not_ignored() -> None:
    copied = {source for kw, rest in _instructions()
              if kw == "COPY" and not rest.startswith("--from")
              for source in rest.split()[:-1]}
    needed = {"pyproject.toml", "setup.py", "README.md", "quiver", *_layers()}
    assert needed <= copied, f"not copied: {needed - copied}"
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for path in needed:
        assert (REPO / path).exists(), path
        hits = [pattern for pattern in ignored if fnmatch.fnmatch(path, pattern)]
        assert not hits, f"{path} is excluded by .dockerignore {hits}"
    for excluded in (".venv", ".git", "data", "bench"):
        assert excluded in ignored
