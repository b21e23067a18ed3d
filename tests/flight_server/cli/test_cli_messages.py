"""Errors print the server's own message on one line, without the ADBC driver's
``(NotFound; Prepare). Vendor code: 5`` or gRPC's debug context, in every subcommand."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from quiver.flight_server.cli.messages import one_line
from tests.flight_server.conftest import REPO, ServerProcess, free_port, start_server

NOISE = ("Vendor code", "(NotFound;", "(InvalidArgument;", "(AlreadyExists;", "[FlightSQL]",
         "gRPC client debug context", "Client context", "Detail:", "Traceback",
         "Flight returned")


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "quiver", *argv], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("messages") / "root"
    root.mkdir()
    srv = start_server(root)
    try:
        done = _run("sql", "--server", srv.uri, "CREATE TABLE docs (id BIGINT, body VARCHAR)")
        assert done.returncode == 0, done.stderr
        yield srv
    finally:
        srv.stop()


def _clean(err: str) -> str:
    assert err.startswith("quiver") and err.count("\n") == 1, err
    for noise in NOISE:
        assert noise not in err, err
    return err


@pytest.mark.parametrize(("argv", "says"), [
    (["sql", "SELECT * FROM nope"], "unknown table 'nope'"),
    (["sql", "CREATE TABLE docs (id BIGINT)"], "table 'docs' already exists"),
    (["sql", "SELEC 1"], "cannot read the statement (Invalid expression"),
    (["describe", "nope"], "unknown table 'nope'"),
])
def test_server_errors_reach_the_user_as_the_servers_message(server: ServerProcess,
                                                             argv: list[str], says: str) -> None:
    done = _run(*argv, "--server", server.uri)
    assert done.returncode == 1
    err = _clean(done.stderr)
    assert says in err
    # The server's message ends the line: nothing the driver appends follows it.
    assert not err.rstrip().endswith(")") or says.endswith(")")


def test_an_unreachable_server_is_one_clean_line_for_data_commands_and_health() -> None:
    uri = f"grpc://127.0.0.1:{free_port()}"
    for argv in (["tables", "--server", uri], ["health", "--server", uri, "--timeout", "3"]):
        done = _run(*argv)
        assert done.returncode == 1
        _clean(done.stderr)


def test_one_line_keeps_parentheses_that_belong_to_the_message() -> None:
    text = ("INVALID_ARGUMENT: [FlightSQL] cannot read (Unexpected token. Line 1, Col: 7.); "
            "try again (InvalidArgument; Prepare). Vendor code: 3")
    assert one_line(text) == "cannot read (Unexpected token. Line 1, Col: 7.); try again"
    flight = ("Flight returned invalid argument error, with message: bad table name. gRPC "
              "client debug context: INVALID_ARGUMENT:bad table name. Client context: "
              "IOError: x. Detail: Internal")
    assert one_line(flight) == "bad table name"
