"""Vectors are stored once: the index blob holds codes, the rerank reads the Parquet column,
and files written by the previous format (blob with its own float32 copy) still read.

The ``data/v1_*.superfile`` files were written by the format-1 writer (superfile format 1,
vector blob format 1): ``row`` int64, ``tag`` string (BM25), ``vec`` fixed_size_list<f32, 8>
of standard normal values drawn with ``numpy.random.default_rng(7)``; 4,500 rows with an
l2 IVF/SQ8 index, and 300 rows with a flat cosine index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pyroaring import BitMap

from quiver.superfile import (
    CountingRangeReader,
    IndexSpec,
    SuperfileReader,
    layout,
    write_superfile,
)
from quiver.superfile.errors import IndexSpecError
from quiver.superfile.ranges import BytesRangeReader
from quiver.superfile.spec import Metric
from quiver.superfile.vector import VectorIndexParams, build_vector_index
from quiver.superfile.vector import format as fmt
from quiver.superfile.writer import WriterOptions
from tests.superfile.conftest import vectors
from tests.superfile.test_vector_index import brute_force, clustered

DATA = Path(__file__).resolve().parent / "data"
OLD_FILES = [("v1_ivf_sq8_l2.superfile", Metric.L2), ("v1_flat_cosine.superfile", Metric.COSINE)]


def _table(x: np.ndarray) -> pa.Table:
    return pa.table({"row": pa.array(np.arange(len(x), dtype=np.int64)), "vec": vectors(x)})


def _column_bytes(reader: SuperfileReader, column: str) -> tuple[int, list[tuple[int, int]]]:
    """Total bytes of a column's chunks and each chunk's [start, end) in the file."""
    total, spans = 0, []
    meta = reader.metadata
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            chunk = rg.column(c)
            if chunk.path_in_schema.split(".")[0] == column:
                start = chunk.dictionary_page_offset or chunk.data_page_offset
                total += chunk.total_compressed_size
                spans.append((start, start + chunk.total_compressed_size))
    return total, spans


@pytest.mark.parametrize(("name", "metric"), OLD_FILES)
def test_format_1_files_still_read_eagerly_and_lazily_with_exact_answers(name, metric):
    data = (DATA / name).read_bytes()
    assert b'"quiver.format_version"' not in data  # keys live in the thrift footer
    x = np.array(SuperfileReader.open(data).read_table(["vec"]).column(0).to_pylist(),
                 dtype=np.float32)
    rng = np.random.default_rng(3)
    for reader in (SuperfileReader.open(data),
                   SuperfileReader.open_lazy(BytesRangeReader(data))):
        vec = reader.vector("vec")
        assert vec._h.version == 1 and vec._h.has_vectors
        assert reader.metadata.metadata[layout.VERSION_KEY.encode()] == b"1"
        for q in rng.standard_normal((4, 8)).astype(np.float32):
            ids, dist = reader.vector_search("vec", q, 5, nprobe=vec.nlist, rerank=len(x))
            want_ids, want_d = brute_force(x, q, metric, 5)
            assert ids.tolist() == want_ids.tolist()
            assert np.allclose(dist, want_d, atol=1e-4)
            allow = BitMap(range(1, len(x), 5))
            ids, _ = reader.vector_search("vec", q, 5, allow=allow)
            want_ids, _ = brute_force(x, q, metric, 5, np.array(sorted(allow)))
            assert ids.tolist() == want_ids.tolist()
        assert reader.bm25_search("tag", "t3", k=3)[0].size == 3


def test_new_files_are_format_2_and_the_blob_holds_no_float32_copy():
    x = clustered(20000, 64, 30, seed=4)
    spec = IndexSpec.of(vector={"vec": "l2"}, vector_codes={"vec": "pq"})
    data = write_superfile(_table(x), spec).data
    reader = SuperfileReader.open(data)
    assert reader.metadata.metadata[layout.VERSION_KEY.encode()] == b"2"
    vec = reader.vector("vec")
    assert vec._h.version == fmt.VERSION == 2 and not vec._h.has_vectors
    assert vec.codes_name == "pq" and vec._h.code_size == 64 // 4
    assert vec._h.sections["vectors"][1] == 0
    column, _ = _column_bytes(reader, "vec")
    blob = reader.directory.find("vector", "vec").length
    # PQ codes are 16x smaller than float32; ids, centroids and codebooks add a little.
    assert blob < 0.3 * column, (blob, column)
    assert len(data) < 1.4 * column


def test_lazy_rerank_reads_the_shortlisted_rows_pages_of_the_stored_column():
    x = clustered(20000, 64, 30, seed=5)
    data = write_superfile(_table(x), IndexSpec.of(vector={"vec": "l2"})).data
    counting = CountingRangeReader(BytesRangeReader(data))
    reader = SuperfileReader.open_lazy(counting)
    column, spans = _column_bytes(reader, "vec")
    q = x[123] + 0.01
    reader.vector_search("vec", q, 10)  # warms the centroids and the page index
    counting.reset()
    ids, dist = reader.vector_search("vec", q, 10, rerank=32)
    in_column = [(o, n) for o, n in counting.ranges
                 if any(s <= o < e for s, e in spans)]
    assert in_column, counting.ranges
    read = sum(n for _, n in in_column)
    # Only the pages of at most 32 rows (one data page each, ~16 KiB), not the column.
    page = WriterOptions().data_page_size
    assert 0 < read <= 32 * page * 1.25 < 0.2 * column
    want = np.linalg.norm(x[ids.astype(np.int64)] - q, axis=1)
    # Exact float32 distances from the column, not PQ approximations.
    assert np.allclose(dist, want, atol=1e-4)
    assert ids[0] == 123


def test_filtered_search_on_a_pq_file_equals_exact_filtered_search():
    x = clustered(20000, 32, 30, seed=6)
    data = write_superfile(_table(x), IndexSpec.of(vector={"vec": "cosine"})).data
    rng = np.random.default_rng(6)
    allow = BitMap(np.flatnonzero(rng.random(20000) < 0.05).tolist())
    small = BitMap(sorted(rng.choice(20000, 40, replace=False).tolist()))
    for reader in (SuperfileReader.open(data), SuperfileReader.open_lazy(BytesRangeReader(data))):
        assert reader.vector("vec").codes_name == "pq"
        for q in x[rng.choice(20000, 3)]:
            ids, _ = reader.vector_search("vec", q, 10, allow=small)
            want, _ = brute_force(x, q, Metric.COSINE, 10, np.array(sorted(small)))
            assert ids.tolist() == want.tolist()
            ids, _ = reader.vector_search("vec", q, 10, allow=allow,
                                          nprobe=reader.vector("vec").nlist)
            want, _ = brute_force(x, q, Metric.COSINE, 10, np.array(sorted(allow)))
            assert len(set(ids.tolist()) & set(want.tolist())) >= 9
            assert set(ids.tolist()) <= set(allow)


def test_lazy_flat_scan_of_a_small_file_decodes_its_vectors_once():
    # A flat index scores every row: the second search reads nothing more and decodes
    # nothing again, and answers exactly.
    x = clustered(1500, 32, 5, seed=11)
    data = write_superfile(_table(x), IndexSpec.of(vector={"vec": "l2"})).data
    counting = CountingRangeReader(BytesRangeReader(data))
    reader = SuperfileReader.open_lazy(counting)
    for q in x[:2]:
        before = counting.bytes_read
        ids, _ = reader.vector_search("vec", q, 10)
        want, _ = brute_force(x, q, Metric.L2, 10)
        assert ids.tolist() == want.tolist()
    assert counting.bytes_read == before


def test_codes_default_by_size_and_follow_the_spec():
    small = vectors(clustered(6000, 16, 10, seed=7))
    big = vectors(clustered(17000, 16, 10, seed=8))
    for col, params, want in [
        (small, None, fmt.QUANT_SQ8),
        (big, None, fmt.QUANT_PQ),
        (big, VectorIndexParams(quantizer="sq8"), fmt.QUANT_SQ8),
        (small, VectorIndexParams(quantizer="pq"), fmt.QUANT_PQ),
    ]:
        blob, _ = build_vector_index(col, Metric.L2, params)
        assert fmt.Header.unpack(blob, len(blob)).quantizer == want
    with pytest.raises(IndexSpecError, match="vector codes"):
        IndexSpec.of(vector={"vec": "l2"}, vector_codes={"vec": "opq"}).validate(
            _table(np.zeros((2, 4), np.float32)).schema)
    with pytest.raises(IndexSpecError, match="not a vector"):
        IndexSpec.of(vector={"vec": "l2"}, vector_codes={"row": "pq"}).validate(
            _table(np.zeros((2, 4), np.float32)).schema)


def test_writer_options_params_apply_to_every_vector_column():
    x = clustered(5000, 16, 10, seed=9)
    opts = WriterOptions(vector_params=VectorIndexParams(quantizer="pq"))
    data = write_superfile(_table(x), IndexSpec.of(vector={"vec": "l2"}), options=opts).data
    assert SuperfileReader.open(data).vector("vec").codes_name == "pq"


MINILM = Path(__file__).resolve().parents[3] / "shared" / "data" / "pypi-minilm"


def test_minilm_sample_default_probe_recall_and_codes_smaller_than_the_column():
    if not (MINILM / "embeddings.f16.npy").exists():
        pytest.skip("real embeddings not available")
    x = np.load(MINILM / "embeddings.f16.npy", mmap_mode="r")[:20000].astype(np.float32)
    qs = np.load(MINILM / "query_embeddings.f32.npy")[:50]
    data = write_superfile(_table(x), IndexSpec.of(vector={"vec": "cosine"})).data
    lazy = SuperfileReader.open_lazy(BytesRangeReader(data))
    assert lazy.vector("vec").codes_name == "pq"
    column, _ = _column_bytes(lazy, "vec")
    assert lazy.directory.find("vector", "vec").length < 0.3 * column
    sims = qs @ x.T
    tenth = -np.sort(-sims, axis=1)[:, 9]
    hits = 0
    for i, q in enumerate(qs):
        ids, _ = lazy.vector_search("vec", q, 10)
        hits += min(10, int((x[ids.astype(np.int64)] @ q >= tenth[i] - 1e-5).sum()))
    assert hits / (10 * len(qs)) >= 0.95


class BatchingSource(BytesRangeReader):
    """A store-like source that serves several ranges per call and records each call."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.batches: list[list[tuple[int, int]]] = []
        self.singles = 0

    def read(self, offset: int, length: int) -> memoryview:
        self.singles += 1
        return super().read(offset, length)

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[memoryview]:
        self.batches.append(list(ranges))
        return [super(BatchingSource, self).read(o, n) for o, n in ranges]


def test_lazy_search_sends_probed_cells_and_rerank_pages_to_the_store_as_batches():
    x = clustered(20000, 64, 30, seed=10)
    data = write_superfile(_table(x), IndexSpec.of(vector={"vec": "l2"})).data
    source = BatchingSource(data)
    reader = SuperfileReader.open_lazy(source)
    _, spans = _column_bytes(reader, "vec")
    blob = reader.directory.find("vector", "vec")
    b_start = reader.directory.absolute(blob)
    reader.vector_search("vec", x[7], 10)
    source.batches.clear()
    source.singles = 0
    ids, _ = reader.vector_search("vec", x[7] + 0.01, 10)
    assert ids[0] == 7
    page_batches = [b for b in source.batches
                    if len(b) > 1 and all(any(s <= o < e for s, e in spans) for o, _ in b)]
    cell_batches = [b for b in source.batches
                    if len(b) > 1 and all(b_start <= o < b_start + blob.length for o, _ in b)]
    # Many ranges, few round trips: each group goes out in one concurrent call.
    assert len(page_batches) == 1 and len(cell_batches) == 1, source.batches
    assert source.singles <= 2
