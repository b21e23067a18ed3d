"""What a root tells other readers (SQL engines) about where its files are."""

from __future__ import annotations

from quiver.catalog.storage import open_store


def test_local_root_reports_its_folder(tmp_path):
    store = open_store(str(tmp_path / "root"))
    assert store.local_root == (tmp_path / "root").resolve()
    assert store.s3_settings() is None


def test_s3_root_reports_bucket_prefix_endpoint_and_credentials(s3_server):
    bucket = s3_server.new_bucket()
    store = open_store(f"s3://{bucket}/some/prefix", **s3_server.options())
    got = store.s3_settings()
    assert got is not None
    assert got["bucket"] == bucket
    assert got["prefix"] == "some/prefix"
    assert got["endpoint"] == s3_server.endpoint
    assert got["access_key_id"] == s3_server.access_key_id
    assert got["secret_access_key"] == s3_server.secret_access_key
    assert got["allow_http"] is True
    assert store.local_root is None
