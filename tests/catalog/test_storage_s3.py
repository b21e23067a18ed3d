"""S3 roots against a loopback server: connect-time validation, failures that end fast."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from quiver.catalog.storage import open_store
from quiver.supertable.errors import (
    ObjectNotFoundError,
    StoragePermissionError,
    StorageUnavailableError,
)

FAST = 5.0  # seconds; the bound on how long an unusable endpoint may take to fail


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_validate_succeeds_with_the_right_credentials(s3_server):
    bucket = s3_server.new_bucket()
    store = open_store(f"s3://{bucket}/root", validate=True, **s3_server.options())
    store.put("k", b"v")
    assert store.get("k")[0] == b"v"
    assert store.uri == f"s3://{bucket}/root"


@pytest.mark.parametrize("bad", [{"aws_secret_access_key": "wrong"},
                                 {"aws_access_key_id": "AKIAUNKNOWNUNKNOWN00"}])
def test_wrong_credentials_fail_validation_with_a_permission_error_naming_the_root(
        s3_server, bad):
    bucket = s3_server.new_bucket()
    options = s3_server.options(**bad)
    began = time.monotonic()
    with pytest.raises(StoragePermissionError) as info:
        open_store(f"s3://{bucket}/p", validate=True, **options)
    assert time.monotonic() - began < FAST
    message = str(info.value)
    assert f"s3://{bucket}/p" in message
    assert s3_server.endpoint in message
    assert "403" in message


def test_wrong_credentials_without_validation_fail_on_first_use_the_same_way(s3_server):
    bucket = s3_server.new_bucket()
    store = open_store(f"s3://{bucket}", **s3_server.options(aws_secret_access_key="wrong"))
    with pytest.raises(StoragePermissionError):
        store.get("anything")
    with pytest.raises(StoragePermissionError):
        store.put("anything", b"x", mode="create")
    with pytest.raises(StoragePermissionError):
        list(store.list())


def test_missing_bucket_fails_validation_as_not_found(s3_server):
    with pytest.raises(ObjectNotFoundError, match="no-such-bucket"):
        open_store("s3://no-such-bucket/p", validate=True, **s3_server.options())


def test_closed_port_fails_fast_as_unavailable_with_default_timeouts(s3_server):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    options = s3_server.options(aws_endpoint=endpoint)
    began = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        open_store("s3://bucket/p", validate=True, **options)
    assert time.monotonic() - began < FAST
    assert endpoint in str(info.value)
    store = open_store("s3://bucket/p", **options)
    began = time.monotonic()
    with pytest.raises(StorageUnavailableError):
        store.get_range("k", 0, 10)
    with pytest.raises(StorageUnavailableError):
        store.put("k", b"x", mode="create")
    assert time.monotonic() - began < 2 * FAST


def test_endpoint_that_never_answers_fails_within_the_configured_timeout(s3_server,
                                                                          silent_endpoint):
    options = s3_server.options(aws_endpoint=silent_endpoint, timeout="500ms",
                                max_retries="1", retry_timeout="1s")
    began = time.monotonic()
    with pytest.raises(StorageUnavailableError):
        open_store("s3://bucket", validate=True, **options)
    assert time.monotonic() - began < FAST
