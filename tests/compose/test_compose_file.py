"""The compose file: valid for ``docker-compose config``, secrets required, and every
option of the quiver service's command and health check accepted by the real parsers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.compose.conftest import (
    COMPOSE_FILE,
    MissingVariable,
    health_args,
    interpolate,
    load_compose,
    serve_args,
)

SECRETS = ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "QUIVER_TOKENS")
ENV = {
    "MINIO_ROOT_USER": "quiver-admin",
    "MINIO_ROOT_PASSWORD": "minio-password-for-tests",
    "QUIVER_TOKENS": "token-one-for-the-tests,token-two-for-the-tests",
}
COMPOSE_BIN = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    COMPOSE_BIN is None,
    reason="docker-compose is not installed (apt-get install -y docker-compose)",
)


def _config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # An empty --env-file keeps a developer's compose/.env out of the result; PATH only,
    # so no variable of the calling shell leaks in either.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [COMPOSE_BIN, "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        cwd=str(tmp_path), capture_output=True, text=True, timeout=60)


@needs_compose
def test_docker_compose_config_accepts_the_file_with_the_secrets_set(tmp_path) -> None:
    out = _config(tmp_path, ENV)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert set(services) == {"minio", "createbucket", "quiver"}
    quiver = services["quiver"]
    assert quiver["environment"]["QUIVER_TOKENS"] == ENV["QUIVER_TOKENS"]
    assert f"aws_access_key_id={ENV['MINIO_ROOT_USER']}" in quiver["command"]
    assert f"aws_secret_access_key={ENV['MINIO_ROOT_PASSWORD']}" in quiver["command"]
    assert quiver["depends_on"] == {
        "createbucket": {"condition": "service_completed_successfully"}}
    assert services["createbucket"]["depends_on"] == {
        "minio": {"condition": "service_healthy"}}
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == ENV["MINIO_ROOT_PASSWORD"]
    assert "minio-data" in config["volumes"]
    serve_args(quiver["command"])


@needs_compose
@pytest.mark.parametrize("missing", SECRETS)
def test_docker_compose_config_fails_naming_a_missing_secret(tmp_path, missing) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    out = _config(tmp_path, env)
    assert out.returncode != 0
    assert missing in out.stderr


@needs_compose
def test_docker_compose_config_fails_with_an_empty_token_list(tmp_path) -> None:
    out = _config(tmp_path, {**ENV, "QUIVER_TOKENS": ""})
    assert out.returncode != 0
    assert "QUIVER_TOKENS" in out.stderr


def test_every_secret_is_required_and_never_has_a_default() -> None:
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[-?]?)[^}]*\}", text)
        assert uses, f"{name} is not used"
        assert set(uses) == {":?"}, f"{name} must always be written ${{{name}:?message}}"
    for value in ENV.values():
        assert value not in text


def test_the_quiver_command_is_accepted_by_the_quiver_serve_parser() -> None:
    command = [interpolate(part, ENV) for part in load_compose()["services"]["quiver"]["command"]]
    args = serve_args(command)
    assert args.host == "0.0.0.0"
    assert args.port == 50051
    assert args.root == "s3://quiver/warehouse"
    assert args.token_env == "QUIVER_TOKENS"
    options = dict(pair.split("=", 1) for pair in args.storage_option)
    assert options == {
        "aws_endpoint": "http://minio:9000",
        "allow_http": "true",
        "aws_region": "us-east-1",
        "aws_access_key_id": ENV["MINIO_ROOT_USER"],
        "aws_secret_access_key": ENV["MINIO_ROOT_PASSWORD"],
    }


def test_the_bucket_created_is_the_bucket_served() -> None:
    services = load_compose()["services"]
    root = serve_args(services["quiver"]["command"]).root
    bucket = root.removeprefix("s3://").split("/", 1)[0]
    script = " ".join(services["createbucket"]["command"])
    assert f"mc mb --ignore-existing local/{bucket}" in script
    assert "http://minio:9000" in script


def test_the_health_check_is_quiver_health_with_the_served_tokens() -> None:
    quiver = load_compose()["services"]["quiver"]
    test = quiver["healthcheck"]["test"]
    assert test[:3] == ["CMD", "quiver", "health"]
    args = health_args(test[3:])
    port = serve_args(quiver["command"]).port
    assert args.server == f"grpc://127.0.0.1:{port}"
    assert args.token_env == "QUIVER_TOKENS"
    assert "QUIVER_TOKENS" in quiver["environment"]


def test_interpolation_helper_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a=${SET}", env) == "a=v"
    assert interpolate("${EMPTY:-d}/${UNSET:-d}/${EMPTY-d}", env) == "d/d/"
    assert interpolate("$${SET}", env) == "${SET}"
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?needed}", env)
