"""Opening storage roots: schemes, the memory registry, local disk specifics."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from pathlib import Path

import pytest

from quiver.catalog.storage import drop_memory_store, open_store
from quiver.supertable.errors import ObjectNotFoundError, StorageError, StoragePermissionError
from quiver.supertable.store import ObjectVersion


def test_unknown_scheme_names_the_supported_ones():
    with pytest.raises(StorageError, match=r"memory://.*s3://.*gs://.*az://"):
        open_store("ftp://host/dir")


def test_empty_root_and_options_on_memory_or_local_roots_are_rejected(tmp_path):
    with pytest.raises(StorageError):
        open_store("")
    with pytest.raises(StorageError, match="no options"):
        open_store("memory://x", aws_region="us-east-1")
    with pytest.raises(StorageError, match="no options"):
        open_store(str(tmp_path), aws_region="us-east-1")


def test_same_memory_uri_opened_twice_shares_data():
    name = f"shared-{uuid.uuid4().hex}"
    try:
        a = open_store(f"memory://{name}")
        b = open_store(f"memory://{name}")
        a.put("k", b"v")
        assert b.get("k")[0] == b"v"
        assert a.uri == f"memory://{name}"
        # A prefix is a view into the same named store.
        sub = open_store(f"memory://{name}/tables")
        sub.put("t", b"1")
        assert a.get("tables/t")[0] == b"1"
        assert sub.uri == f"memory://{name}/tables"
        other = open_store(f"memory://other-{uuid.uuid4().hex}")
        with pytest.raises(ObjectNotFoundError):
            other.get("k")
    finally:
        drop_memory_store(f"memory://{name}")
    with pytest.raises(ObjectNotFoundError):
        open_store(f"memory://{name}").get("k")
    drop_memory_store(name)


def test_local_root_is_created_and_reachable_by_path_or_file_uri(tmp_path):
    root = tmp_path / "deep" / "root"
    by_path = open_store(str(root), validate=True)
    assert root.is_dir()
    assert by_path.uri == root.as_uri()
    by_path.put("a/b.bin", b"xyz")
    by_uri = open_store(root.as_uri())
    assert by_uri.get("a/b.bin")[0] == b"xyz"
    assert (root / "a" / "b.bin").read_bytes() == b"xyz"


def test_local_root_inside_a_read_only_directory_fails_validation(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoragePermissionError):
            open_store(str(locked / "root"))
        with pytest.raises(StoragePermissionError):
            open_store(str(locked), validate=True)
    finally:
        locked.chmod(0o700)


def test_local_root_that_is_a_file_is_rejected(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError):
        open_store(str(tmp_path / "file"))


def test_local_conditional_writes_leave_no_extra_files(tmp_path):
    store = open_store(str(tmp_path / "r"))
    v = store.put("m/ptr", b"1", mode="create")
    for i in range(5):
        v = store.put("m/ptr", str(i).encode(), mode=v)
    assert sorted(p.name for p in (tmp_path / "r" / "m").iterdir()) == ["ptr"]
    assert [m.path for m in store.list()] == ["m/ptr"]


def test_cloud_roots_are_configured_without_contacting_anything():
    gs = open_store("gs://bucket/some/prefix/")
    assert gs.uri == "gs://bucket/some/prefix"
    s3 = open_store("s3://bucket", aws_region="eu-west-1", aws_access_key_id="k",
                    aws_secret_access_key="s", connect_timeout="1s", max_retries="0")
    assert s3.uri == "s3://bucket"
    az = open_store("az://container/p", azure_storage_account_name="acct")
    assert az.uri == "az://container/p"


def test_bad_cloud_configuration_raises_storage_error():
    with pytest.raises(StorageError, match="not valid"):
        open_store("s3://bucket", aws_no_such_key="1")
    with pytest.raises(StorageError, match="duration"):
        open_store("s3://bucket", retry_timeout="soon")
    with pytest.raises(StorageError, match="names no bucket"):
        open_store("s3:///prefix")


# ------------------------------------------------------------------ several processes


def _increment(root: str, times: int) -> None:
    from quiver.supertable.errors import PreconditionFailedError

    store = open_store(root)
    for _ in range(times):
        while True:
            data, meta = store.get("counter")
            try:
                store.put("counter", str(int(data) + 1).encode(), mode=meta.version)
                break
            except PreconditionFailedError:
                continue


def _create(root: str, key: str, tag: str, start: float) -> str:
    import time

    from quiver.supertable.errors import ObjectExistsError

    time.sleep(max(0.0, start - time.time()))
    try:
        open_store(root).put(key, tag.encode(), mode="create")
        return "won"
    except ObjectExistsError:
        return "lost"


def test_local_disk_conditional_writes_hold_across_processes(tmp_path):
    import time

    root = str(tmp_path / "shared")
    store = open_store(root)
    store.put("counter", b"0")
    ctx = multiprocessing.get_context("spawn")
    workers, times = 3, 10
    with ctx.Pool(workers) as pool:
        pool.starmap(_increment, [(root, times)] * workers)
        assert int(store.get("counter")[0]) == workers * times
        start = time.time() + 0.3
        outcomes = pool.starmap(_create, [(root, "m/1.json", f"p{i}", start)
                                          for i in range(workers)])
    assert sorted(outcomes) == ["lost"] * (workers - 1) + ["won"]
    winner = outcomes.index("won")
    assert store.get("m/1.json")[0] == f"p{winner}".encode()
    assert isinstance(store.head("m/1.json").version, ObjectVersion)
    assert sorted(p.name for p in Path(root).iterdir()) == ["counter", "m"]
