"""Tables on a real MinIO server, started in Docker when a Docker engine is reachable."""

from __future__ import annotations

import pytest

from quiver import catalog
from tests.supertable.conftest import docs_schema, make_docs


def _docker_reason() -> str | None:
    try:
        import docker
    except ImportError:
        return "the docker client library is not installed"
    try:
        docker.from_env().ping()
    except Exception as exc:  # any failure to reach the engine means: no Docker here
        return f"no Docker engine is reachable ({type(exc).__name__})"
    return None


@pytest.fixture(scope="module")
def minio():
    reason = _docker_reason()
    if reason is not None:
        pytest.skip(f"MinIO tests need Docker: {reason}")
    try:
        from testcontainers.community import minio as minio_module
    except ImportError:
        minio_module = pytest.importorskip("testcontainers.minio")
    with minio_module.MinioContainer() as container:
        client = container.get_client()
        client.make_bucket("quiver")
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield {
            "aws_endpoint": f"http://{host}:{port}",
            "aws_access_key_id": container.access_key,
            "aws_secret_access_key": container.secret_key,
            "aws_region": "us-east-1",
            "allow_http": "true",
        }


def test_table_on_minio_appends_searches_and_reopens(minio):
    con = catalog.connect("s3://quiver/tables", validate=True, **minio)
    table = con.create_table("docs", docs_schema(), fts=["body"], vector={"emb": "cosine"})
    table.append(make_docs(200, seed=1))
    table.delete([("year", "<", 2005)])
    expected = table.count()
    hits = table.bm25_search("body", "rust", k=5)
    assert hits.num_rows > 0
    reopened = catalog.connect("s3://quiver/tables", **minio).open_table("docs")
    assert reopened.count() == expected
    assert reopened.bm25_search("body", "rust", k=5).column("_id").to_pylist() == \
        hits.column("_id").to_pylist()
