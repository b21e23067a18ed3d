"""A short end-to-end tour of one superfile, run by ``quiver demo``.

It writes a superfile from real data when the project's data folder is at
hand (package summaries and their embeddings) or from generated data
otherwise, reopens it lazily from disk, and answers a BM25 query, a vector
query, a filtered vector query and an exact match, reporting the reads each
one cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyroaring import BitMap

from quiver.superfile import (
    CountingRangeReader,
    FileRangeReader,
    IndexSpec,
    SuperfileReader,
    write_superfile,
)

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pypi-minilm"


def _real_table(folder: Path, rows: int) -> tuple[pa.Table, np.ndarray, str]:
    corpus = pq.read_table(folder / "corpus.parquet").slice(0, rows)
    emb = np.load(folder / "embeddings.f16.npy", mmap_mode="r")[:rows].astype(np.float32)
    queries = np.load(folder / "query_embeddings.f32.npy")
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1])
    table = pa.table(
        {
            "row": corpus.column("row"),
            "name": corpus.column("name"),
            "summary": corpus.column("summary"),
            "embedding": vectors,
        }
    )
    return table, queries[0], "the package summaries of pypi-minilm"


def _generated_table(rows: int) -> tuple[pa.Table, np.ndarray, str]:
    rng = np.random.default_rng(7)
    words = np.array(
        [
            "fast",
            "json",
            "parser",
            "python",
            "library",
            "async",
            "http",
            "client",
            "machine",
            "learning",
            "data",
            "command",
            "line",
            "tool",
            "storage",
            "kubernetes",
            "helm",
            "pdf",
            "text",
        ]
    )
    picks = rng.integers(0, len(words), size=(rows, 6))
    texts = [" ".join(words[p]) for p in picks]
    emb = rng.standard_normal((rows, 32)).astype(np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 32)
    table = pa.table(
        {
            "row": pa.array(np.arange(rows, dtype=np.int32)),
            "name": pa.array([f"pkg-{i}" for i in range(rows)]),
            "summary": pa.array(texts),
            "embedding": vectors,
        }
    )
    return table, emb[0], "generated text and vectors"


_T = TypeVar("_T")


def _timed(label: str, counter: CountingRangeReader, fn: Callable[[], _T]) -> _T:
    counter.reset()
    start = time.perf_counter()
    result = fn()
    ms = (time.perf_counter() - start) * 1e3
    print(f"  {label}: {ms:.2f} ms, {counter.reads} reads, {counter.bytes_read:,} bytes")
    return result


def run_demo(out_dir: Path, rows: int = 20000, data: Path = DEFAULT_DATA) -> None:
    """Writes, reopens and queries one superfile, printing what happens."""
    if (data / "corpus.parquet").exists():
        table, query_vec, source = _real_table(data, rows)
    else:
        table, query_vec, source = _generated_table(rows)
    print(f"Writing a superfile of {table.num_rows:,} rows from {source}")
    start = time.perf_counter()
    written = write_superfile(table, IndexSpec.of(fts=["summary"], vector={"embedding": "cosine"}))
    secs = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "demo.superfile.parquet"
    path.write_bytes(written.data)
    print(f"  {len(written.data):,} bytes in {secs:.2f} s -> {path}")

    plain = pq.read_table(path, columns=["name", "summary"])
    print(f"  a plain Parquet reader sees {plain.num_rows:,} rows and columns {plain.column_names}")

    counter = CountingRangeReader(FileRangeReader(path))
    reader = _timed("lazy open", counter, lambda: SuperfileReader.open_lazy(counter))
    assert isinstance(reader, SuperfileReader)

    ids, scores = _timed(
        "bm25 'json parser'", counter, lambda: reader.bm25_search("summary", "json parser", k=5)
    )
    rows_ = reader.take(ids, ["name", "summary"]).to_pylist()
    for row, score in zip(rows_, scores, strict=True):
        print(f"    {score:6.3f}  {row['name']}: {row['summary'][:70]}")

    ids, dist = _timed(
        "vector top-5", counter, lambda: reader.vector_search("embedding", query_vec, k=5)
    )
    for row, d in zip(reader.take(ids, ["name"]).to_pylist(), dist, strict=True):
        print(f"    {d:6.3f}  {row['name']}")

    even = BitMap(range(0, reader.num_rows, 2))
    ids, _ = _timed(
        "filtered vector top-5 (even rows only)",
        counter,
        lambda: reader.vector_search("embedding", query_vec, k=5, allow=even),
    )
    print(f"    rows {ids.tolist()}")

    target = table.column("summary")[1].as_py()
    ids = _timed(
        f"exact match {target[:40]!r}", counter, lambda: reader.exact_match("summary", target)
    )
    print(f"    rows {np.asarray(ids).tolist()}")
