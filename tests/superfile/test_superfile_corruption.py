"""Damaged files: truncation and bit flips give the project's own errors, never a crash."""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.superfile import (
    CorruptFileError,
    SuperfileError,
    SuperfileReader,
    UnsupportedVersionError,
    layout,
    write_superfile,
)
from quiver.superfile.ranges import BytesRangeReader
from tests.superfile.conftest import vectors


def _file() -> bytes:
    rng = np.random.default_rng(5)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    texts = [" ".join(rng.choice(words, size=5)) for _ in range(300)]
    table = pa.table({"t": texts, "v": vectors(rng.standard_normal((300, 8)))})
    return write_superfile(table).data


DATA = _file()


def _exercise(reader: SuperfileReader) -> None:
    reader.bm25_search("t", "alpha gam*", k=5)
    reader.token_match("t", "beta", "and")
    reader.vector_search("v", np.ones(8), k=5)
    reader.take([0, 150, 299])
    reader.exact_match("t", "alpha beta")


def _open_and_use(data: bytes, lazy: bool) -> None:
    if lazy:
        reader = SuperfileReader.open_lazy(BytesRangeReader(data))
    else:
        reader = SuperfileReader.open(data)
    _exercise(reader)


def test_untouched_file_passes_every_query_eager_and_lazy():
    _open_and_use(DATA, lazy=False)
    _open_and_use(DATA, lazy=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(DATA) - 1), lazy=st.booleans())
def test_truncated_file_raises_a_superfile_error(cut, lazy):
    with pytest.raises(SuperfileError):
        _open_and_use(DATA[:cut], lazy)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(0, len(DATA) - 1), st.integers(1, 255)),
                   min_size=1, max_size=4),
    lazy=st.booleans(),
)
def test_bit_flips_raise_a_superfile_error_or_leave_answers_well_formed(flips, lazy):
    data = bytearray(DATA)
    for pos, mask in flips:
        data[pos] ^= mask
    with contextlib.suppress(SuperfileError):
        _open_and_use(bytes(data), lazy)


def test_bit_flip_inside_an_index_blob_is_caught_by_its_checksum_on_eager_open():
    reader = SuperfileReader.open(DATA)
    entry = reader.directory.entries[0]
    pos = reader.directory.absolute(entry) + entry.length // 2
    data = bytearray(DATA)
    data[pos] ^= 0x40
    with pytest.raises(CorruptFileError, match="checksum"):
        SuperfileReader.open(bytes(data))


def test_newer_format_version_is_refused_with_a_clear_error():
    import io

    import pyarrow.parquet as pq

    region = layout.plan_region([])
    kv = layout.footer_metadata(region, 1)
    kv[layout.VERSION_KEY] = "99"
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}).replace_schema_metadata(kv), sink)
    with pytest.raises(UnsupportedVersionError, match="99"):
        SuperfileReader.open(sink.getvalue())
