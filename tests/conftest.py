"""Fixtures shared by every test package: an S3-compatible server on loopback."""

from __future__ import annotations

import itertools
import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings

# CI runs a fixed set of examples so that a landing never depends on a lucky draw;
# local runs keep exploring new examples every time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Scans read Parquet unless a test turns the decoded-rows cache on itself: what a test
# measures (sources planned, bytes read) must not depend on a background warm-up.
os.environ.setdefault("QUIVER_MEMORY_CACHE_BYTES", "0")


@dataclass
class S3Server:
    """A running moto S3 server that checks signatures, with one valid key pair.

    Requests must be signed with ``access_key_id`` / ``secret_access_key``; anything
    else gets the 403 a real endpoint would give.
    """

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str
    _client: Any = field(repr=False)
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def new_bucket(self, stem: str = "quiver-test") -> str:
        """Creates an empty bucket with a fresh name and returns the name."""
        name = f"{stem}-{next(self._names)}"
        self._client.create_bucket(Bucket=name)
        return name

    def options(self, **overrides: str) -> dict[str, str]:
        """``open_store`` options that reach this server with the valid credentials."""
        return {
            "aws_endpoint": self.endpoint,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "aws_region": self.region,
            "allow_http": "true",
            **overrides,
        }


def _set_auth(endpoint: str, free_requests: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=free_requests.encode(), method="POST",
        headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    region = "us-east-1"
    try:
        # Credentials are minted through the server's own IAM before it starts
        # enforcing them, so wrong keys can be told apart from right ones.
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=region,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="quiver-tests")
        iam.put_user_policy(
            UserName="quiver-tests", PolicyName="s3-all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="quiver-tests")["AccessKey"]
        _set_auth(endpoint, "0")
        client = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                              aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"])
        yield S3Server(endpoint=endpoint, access_key_id=key["AccessKeyId"],
                       secret_access_key=key["SecretAccessKey"], region=region,
                       _client=client)
    finally:
        try:
            _set_auth(endpoint, "inf")
        finally:
            server.stop()


# -- unit and integration tests -----------------------------------------------------------
# An integration test starts a server (in this process on a socket, or as a process), uses
# S3 (moto, MinIO), Spark, Java or Docker, or runs the docs' guides; everything else is a
# unit test. Tests are marked here by folder, fixture and what their module imports, so a
# new test file is sorted without marking it by hand.

_INTEGRATION_FOLDERS = {
    ("compose",), ("docs",), ("java",), ("spark_iceberg",), ("security",),
    ("flight_server", "service"), ("flight_server", "connectors"),
}
_INTEGRATION_FIXTURES = {"s3_server", "minio", "quiver_server", "flight_uri", "served",
                         "spark", "spark_run", "maven", "deployment"}
# Module-level names of a test module that reaches a server, another process or a socket.
_INTEGRATION_NAMES = ("subprocess", "socket", "start_server", "flight",
                      "adbc_driver_flightsql", "ThreadedMotoServer")
_TESTS = os.path.dirname(os.path.abspath(__file__))


def _is_integration(item: pytest.Item) -> bool:
    parts = tuple(os.path.relpath(str(item.path), _TESTS).split(os.sep))
    if any(parts[:len(folder)] == folder for folder in _INTEGRATION_FOLDERS):
        return True
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & _INTEGRATION_FIXTURES or any("server" in name for name in fixtures):
        return True
    module = getattr(item, "module", None)
    return module is not None and any(name in vars(module) for name in _INTEGRATION_NAMES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration if _is_integration(item) else pytest.mark.unit)
