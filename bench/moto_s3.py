"""A moto S3 server on loopback in the benchmark's own process, with one bucket."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

REGION = "us-east-1"
# moto accepts any key pair unless told to enforce them.
KEY = ("bench-access-key", "bench-secret-key")


@dataclass(frozen=True)
class MotoBucket:
    """Where the bucket is, and a boto3 client for it."""

    endpoint: str
    bucket: str
    client: Any

    def store_options(self) -> dict[str, str]:
        """``open_store`` (Quiver) options that reach the bucket."""
        return {"aws_endpoint": self.endpoint, "aws_access_key_id": KEY[0],
                "aws_secret_access_key": KEY[1], "aws_region": REGION, "allow_http": "true"}

    def description(self) -> str:
        from importlib import metadata

        return (f"S3 API: moto {metadata.version('moto')} ThreadedMotoServer in this process "
                f"on {self.endpoint} (HTTP, loopback)")


@contextlib.contextmanager
def moto_bucket(bucket: str) -> Iterator[MotoBucket]:
    """Starts the server and creates ``bucket``; stops the server afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                              aws_access_key_id=KEY[0], aws_secret_access_key=KEY[1])
        client.create_bucket(Bucket=bucket)
        yield MotoBucket(endpoint, bucket, client)
    finally:
        server.stop()
