"""A missing ``--root`` is refused (exit 2) unless ``--create-root``; ``quiver serve`` may
make its default ./data; every command takes the same credential flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from quiver.flight_server.cli.main import main
from quiver.flight_server.cli.roots import RootMissingError, require_root
from tests.flight_server.conftest import REPO, free_port, wait_listening

USER, PASSWORD = "alice", "correct horse battery"


def _run(*argv: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "quiver", *argv], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [["tables"], ["sql", "SELECT 1"], ["describe", "t"],
                                     ["gc"], ["optimize", "t"]])
def test_a_missing_root_is_refused_with_status_2_and_not_created(tmp_path: Path, capsys,
                                                                 command: list[str]) -> None:
    missing = tmp_path / "typo"
    assert main([*command, "--root", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "--create-root" in err
    assert not missing.exists()


def test_a_missing_file_uri_root_is_refused_too(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "typo"
    assert main(["tables", "--root", f"file://{missing}"]) == 2
    assert not missing.exists()


def test_a_root_that_is_a_file_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["tables", "--root", str(tmp_path / "f")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_create_root_starts_a_new_root(tmp_path: Path, capsys) -> None:
    new = tmp_path / "a" / "b"
    assert main(["sql", "--root", str(new), "--create-root",
                 "CREATE TABLE t (id BIGINT)"]) == 0
    assert new.is_dir()
    assert main(["tables", "--root", str(new)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "t"


def test_the_default_data_root_may_be_made_by_any_command(tmp_path: Path) -> None:
    # A fresh clone: `quiver ingest docs files/ --create` and `--root ./data` work.
    done = _run("tables", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data").is_dir()
    (tmp_path / "data").rmdir()
    done = _run("tables", "--root", "./data", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_object_store_and_memory_roots_never_count_as_missing() -> None:
    require_root("s3://bucket/empty/prefix", create=False)
    require_root("memory://nothing-here", create=False)
    with pytest.raises(RootMissingError):
        require_root("/nonexistent/quiver/root", create=False)


def test_serve_refuses_a_missing_explicit_root(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    done = _run("serve", "--root", str(missing), "--port", "0", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "does not exist" in done.stderr and not missing.exists()


def test_serve_on_a_fresh_folder_creates_its_default_data_root(tmp_path: Path) -> None:
    # What `make run` and the README's first command do on a fresh clone.
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "quiver", "serve", "--port", str(port)],
                            cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, proc, timeout=30)
        assert (tmp_path / "data").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


# -- one set of credential flags ------------------------------------------------------------


@pytest.fixture
def secured(tmp_path: Path):
    from tests.flight_server.conftest import start_server

    root = tmp_path / "root"
    root.mkdir()
    server = start_server(root, "--user", f"{USER}:{PASSWORD}")
    try:
        yield server.uri
    finally:
        server.stop()


def test_health_and_data_commands_take_the_same_user_flag(secured: str, monkeypatch) -> None:
    monkeypatch.delenv("QUIVER_PASSWORD", raising=False)
    for command in (["health"], ["tables"]):
        ok = _run(*command, "--server", secured, "--user", f"{USER}:{PASSWORD}")
        assert ok.returncode == 0, (command, ok.stderr)
        bad = _run(*command, "--server", secured, "--user", f"{USER}:wrong")
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1, (command, bad.stderr)
    env_ok = subprocess.run(
        [sys.executable, "-m", "quiver", "health", "--server", secured, "--user", USER],
        cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO), QUIVER_PASSWORD=PASSWORD),
        capture_output=True, text=True, timeout=60)
    assert env_ok.returncode == 0, env_ok.stderr


def test_the_old_username_password_spelling_still_works_everywhere(secured: str) -> None:
    for command in (["health"], ["tables"]):
        done = _run(*command, "--server", secured, "--username", USER, "--password", PASSWORD)
        assert done.returncode == 0, (command, done.stderr)


def test_the_old_spelling_is_hidden_from_help() -> None:
    for command in ("health", "tables"):
        shown = _run(command, "--help").stdout
        assert "--user" in shown and "--token-env" in shown and "--tls-root-certs" in shown
        assert "--username" not in shown and "--password" not in shown
