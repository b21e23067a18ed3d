"""A damaged vector index blob fails with CorruptFileError, never another exception."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from quiver.superfile.errors import CorruptFileError, SuperfileError
from quiver.superfile.ranges import BytesRangeReader
from quiver.superfile.spec import Metric
from quiver.superfile.vector import VectorIndexParams, VectorIndexReader, build_vector_index
from quiver.superfile.vector.column_vectors import ColumnVectors
from tests.superfile.conftest import vectors

RNG = np.random.default_rng(21)
X = RNG.standard_normal((900, 6)).astype(np.float32)
NULLS = RNG.random(900) < 0.1
BLOB, _ = build_vector_index(vectors(X, NULLS), Metric.L2, VectorIndexParams(flat_threshold=100))
FLAT_BLOB, _ = build_vector_index(vectors(X[:50]), Metric.COSINE)
QUERIES = RNG.standard_normal((3, 6)).astype(np.float32)
ALLOW = BitMap(range(0, 900, 3))
# Both blobs index prefixes of X: one column source serves their reranks.
COLUMN = ColumnVectors.of_array(Metric.L2, vectors(X, NULLS))


def run_all(blob: bytes, verify: bool) -> list[list[int]]:
    reader = VectorIndexReader.open(BytesRangeReader(blob), verify=verify, vectors=COLUMN)
    out = []
    for q in QUERIES:
        out.append(reader.search(q, 5).__getitem__(0).tolist())
        out.append(reader.search(q, 5, nprobe=reader.nlist).__getitem__(0).tolist())
        out.append(reader.search(q, 5, allow=ALLOW).__getitem__(0).tolist())
        out.append(reader.search(q, 5, allow=BitMap([1, 2, 3])).__getitem__(0).tolist())
    return out


CLEAN = {blob: run_all(blob, False) for blob in (BLOB, FLAT_BLOB)}


def test_clean_blob_passes_full_verification():
    reader = VectorIndexReader.open(BytesRangeReader(BLOB), verify=True, vectors=COLUMN)
    assert reader.count == int((~NULLS).sum())


@pytest.mark.parametrize("blob", [BLOB, FLAT_BLOB], ids=["ivf", "flat"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_byte_flip_is_caught_by_verification(blob, data):
    pos = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(blob)
    bad[pos] ^= 1 << bit
    with pytest.raises(CorruptFileError):
        run_all(bytes(bad), verify=True)


@pytest.mark.parametrize("blob", [BLOB, FLAT_BLOB], ids=["ivf", "flat"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_lazy_reader_on_a_flipped_byte_fails_cleanly_or_answers_unchanged(blob, data):
    pos = data.draw(st.integers(0, len(blob) - 1))
    value = data.draw(st.integers(1, 255))
    bad = bytearray(blob)
    bad[pos] ^= value
    try:
        got = run_all(bytes(bad), verify=False)
    except CorruptFileError:
        return
    # Bytes the queries never read (or alignment padding) may differ without effect.
    assert got == CLEAN[blob]


@pytest.mark.parametrize("verify", [True, False])
@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, len(BLOB) - 1))
def test_truncated_blob_is_corrupt(verify, cut):
    with pytest.raises(CorruptFileError):
        run_all(BLOB[:cut], verify=verify)


@settings(max_examples=40, deadline=None)
@given(noise=st.binary(min_size=0, max_size=400))
def test_random_bytes_are_rejected_as_superfile_errors(noise):
    with pytest.raises(SuperfileError):
        run_all(noise, verify=False)


def test_header_with_future_version_but_valid_checksum_is_unsupported():
    import struct

    from quiver.superfile.errors import UnsupportedVersionError
    from quiver.superfile.vector import format as fmt

    raw = bytearray(BLOB[: fmt.HEADER.size])
    struct.pack_into("<H", raw, 4, fmt.VERSION + 1)
    raw[-4:] = struct.pack("<I", fmt.crc(bytes(raw[:-4])))
    with pytest.raises(UnsupportedVersionError):
        VectorIndexReader.open(BytesRangeReader(bytes(raw) + BLOB[fmt.HEADER.size :]),
                               vectors=COLUMN)
