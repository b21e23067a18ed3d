"""``quiver health`` against real servers: healthy with each kind of credential, exit 1
with one stderr line for every way it can be unhealthy, TLS, and bounded waits."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.cli import health
from quiver.flight_server.service import auth
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect
from tests.compose.conftest import REPO

TOKENS = ("first-static-token-for-health", "second-static-token-for-health")
USER, PASSWORD = "ops", "health-password"


def _server(config: auth.AuthConfig | None = None,
            tls: list | None = None) -> Iterator[QuiverFlightServer]:
    root = f"memory://health-{uuid.uuid4().hex}"
    conn = connect(root)
    scheme = "grpc+tls" if tls else "grpc"
    kwargs = {}
    if config is not None:
        kwargs = {"middleware": auth.middleware(config),
                  "auth_handler": auth.handshake_handler(config)}
    server = QuiverFlightServer(conn, f"{scheme}://127.0.0.1:0", tls_certificates=tls,
                                **kwargs)
    try:
        yield server
    finally:
        server.shutdown()
        conn.close()
        drop_memory_store(root)


@pytest.fixture(scope="module")
def secured() -> Iterator[str]:
    config = auth.AuthConfig(users={USER: PASSWORD}, tokens=frozenset(TOKENS))
    for server in _server(config):
        yield f"grpc://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def open_server() -> Iterator[str]:
    for server in _server():
        yield f"grpc://127.0.0.1:{server.port}"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = health.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _unhealthy(code: int, out: str, err: str) -> str:
    assert code == 1
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


def test_a_static_token_from_the_environment_is_healthy(secured, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HEALTH_TOKENS", ",".join(TOKENS))
    code, out, err = _run(capsys, "--server", secured, "--token-env", "HEALTH_TOKENS")
    assert (code, err) == (0, "")
    assert out == f"quiver health: ok: Quiver at {secured}\n"


def test_the_first_of_several_environment_tokens_is_the_one_sent(secured, capsys,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("HEALTH_TOKENS", f"not-a-valid-token-at-all,{TOKENS[0]}")
    err = _unhealthy(*_run(capsys, "--server", secured, "--token-env", "HEALTH_TOKENS"))
    assert "refused the credentials" in err


def test_a_token_on_the_command_line_is_healthy(secured, capsys) -> None:
    assert _run(capsys, "--server", secured, "--token", TOKENS[1])[0] == 0


def test_username_and_password_are_healthy(secured, capsys) -> None:
    assert _run(capsys, "--server", secured, "--username", USER, "--password", PASSWORD)[0] == 0


def test_password_may_come_from_the_environment(secured, capsys, monkeypatch) -> None:
    monkeypatch.setenv("QUIVER_PASSWORD", PASSWORD)
    assert _run(capsys, "--server", secured, "--username", USER)[0] == 0


@pytest.mark.parametrize(("argv", "says"), [
    ((), "refused the credentials"),
    (("--token", "wrong-token-of-enough-length"), "refused the credentials"),
    (("--username", USER, "--password", "wrong"), "refused the credentials"),
    (("--token-env", "HEALTH_UNSET_VARIABLE"), "'HEALTH_UNSET_VARIABLE' is not set"),
    (("--username", USER), "needs --password"),
    (("--password", PASSWORD), "needs --user"),
    (("--token", TOKENS[0], "--username", USER), "only one of"),
    (("--timeout", "0"), "--timeout must be positive"),
    (("--tls-root-certs", "/nonexistent/ca.pem"), "needs a grpc+tls"),
    (("--no-such-option",), "unrecognized arguments"),
])
def test_each_failure_is_exit_1_with_one_line(secured, capsys, monkeypatch, argv, says) -> None:
    monkeypatch.delenv("QUIVER_PASSWORD", raising=False)
    monkeypatch.delenv("HEALTH_UNSET_VARIABLE", raising=False)
    err = _unhealthy(*_run(capsys, "--server", secured, *argv))
    assert says in err


def test_a_server_without_authentication_is_healthy_without_credentials(open_server,
                                                                        capsys) -> None:
    assert _run(capsys, "--server", open_server)[0] == 0


def test_nothing_listening_is_unhealthy(capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _unhealthy(*_run(capsys, "--server", f"grpc://127.0.0.1:{port}", "--timeout", "5"))
    assert f"127.0.0.1:{port}" in err


def test_a_silent_listener_is_unhealthy_within_the_timeout(capsys) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        err = _unhealthy(*_run(capsys, "--server", f"grpc://127.0.0.1:{port}",
                               "--timeout", "1"))
        elapsed = time.monotonic() - started
    assert elapsed < 10
    assert "127.0.0.1" in err


def test_a_server_address_that_is_not_grpc_is_refused(capsys) -> None:
    err = _unhealthy(*_run(capsys, "--server", "http://127.0.0.1:50051"))
    assert "grpc://host:port" in err


def test_tls_with_the_server_certificate_as_root_is_healthy(tmp_path, capsys) -> None:
    cert, key = _self_signed(tmp_path)
    config = auth.AuthConfig(tokens=frozenset(TOKENS))
    for server in _server(config, tls=auth.tls_certificates(cert, key)):
        uri = f"grpc+tls://127.0.0.1:{server.port}"
        assert _run(capsys, "--server", uri, "--token", TOKENS[0],
                    "--tls-root-certs", str(cert))[0] == 0
        # Without the certificate the client does not trust the server.
        err = _unhealthy(*_run(capsys, "--server", uri, "--token", TOKENS[0],
                               "--timeout", "5"))
        assert uri in err


def test_python_dash_m_runs_the_check_and_sets_the_exit_status(secured) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), HEALTH_TOKENS=TOKENS[0])
    ok = subprocess.run([sys.executable, "-m", "quiver", "health", "--server", secured,
                         "--token-env", "HEALTH_TOKENS"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("quiver health: ok")
    bad = subprocess.run([sys.executable, "-m", "quiver", "health", "--server", secured],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and bad.stdout == ""


def test_help_exits_0(capsys) -> None:
    assert health.main(["--help"]) == 0
    assert "--token-env" in capsys.readouterr().out
