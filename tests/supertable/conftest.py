"""Roots for table tests: the same behaviour on memory, local disk and loopback S3."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store

_counter = itertools.count()


@pytest.fixture(params=["memory", "local", "s3"])
def root(request, tmp_path, s3_server) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh, empty root URI and its storage options, on each backend."""
    if request.param == "memory":
        uri = f"memory://t{uuid.uuid4().hex}"
        yield uri, {}
        drop_memory_store(uri)
    elif request.param == "local":
        yield str(tmp_path / "root"), {}
    else:
        yield f"s3://{s3_server.new_bucket()}/quiver", s3_server.options()


@pytest.fixture
def connect(root) -> Callable[..., catalog.Connection]:
    """Opens (another) connection to the test's root."""
    uri, options = root

    def _connect(**kwargs) -> catalog.Connection:
        return catalog.connect(uri, **options, **kwargs)

    return _connect


def docs_schema(dim: int = 8) -> pa.Schema:
    return pa.schema([
        ("title", pa.string()),
        ("body", pa.string()),
        ("year", pa.int32()),
        ("emb", pa.list_(pa.float32(), dim)),
    ])


WORDS = ["rust", "async", "python", "json", "fast", "parser", "http", "client", "data",
         "tool", "storage", "search", "vector", "index", "query", "engine"]


def make_docs(n: int, seed: int = 0, dim: int = 8) -> pa.Table:
    """Random documents over a small vocabulary, so terms recur across rows and files."""
    rng = np.random.default_rng(seed)
    body = [" ".join(rng.choice(WORDS, size=rng.integers(1, 9))) for _ in range(n)]
    title = [" ".join(rng.choice(WORDS, size=2)) for _ in range(n)]
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    return pa.table({
        "title": title,
        "body": body,
        "year": rng.integers(2000, 2026, size=n).astype(np.int32),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim),
    }, schema=docs_schema(dim))


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path) -> Iterator[tuple[str, dict[str, str], object]]:
    """A fresh root URI on local disk or S3 (moto), its storage options, and the S3 server
    when it is on S3."""
    if request.param == "local":
        yield str(tmp_path / "root"), {}, None
    else:
        s3 = request.getfixturevalue("s3_server")
        yield f"s3://{s3.new_bucket()}/quiver", s3.options(), s3
