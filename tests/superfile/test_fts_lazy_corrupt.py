"""Lazy range reads of the full-text blob and its behaviour on corrupt bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.superfile.errors import CorruptFileError, SuperfileError
from quiver.superfile.fts import FtsIndexReader, build_fts_index
from quiver.superfile.ranges import BytesRangeReader, CountingRangeReader


def _texts(n: int, seed: int = 5) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3000)] + ["python", "rust", "json"]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    return [" ".join(rng.choice(vocab, size=int(rng.integers(3, 15)), p=p)) for _ in range(n)]


@pytest.fixture(scope="module")
def blob() -> bytes:
    return build_fts_index(pa.array(_texts(4000)))[0]


def test_lazy_open_reads_only_the_header(blob):
    src = CountingRangeReader(BytesRangeReader(blob))
    reader = FtsIndexReader.open(src)
    assert src.reads <= 2
    assert src.bytes_read < 0.05 * len(blob)
    assert reader.num_docs == 4000


def test_one_term_query_reads_one_dictionary_block_and_its_postings(blob):
    eager = FtsIndexReader.open(BytesRangeReader(blob), verify=True)
    src = CountingRangeReader(BytesRangeReader(blob))
    reader = FtsIndexReader.open(src)
    src.reset()
    docs, scores = reader.search("w17", 10)
    assert src.reads == 2
    assert src.bytes_read < 0.02 * len(blob)
    ref_docs, ref_scores = eager.search("w17", 10)
    assert docs.tolist() == ref_docs.tolist()
    np.testing.assert_array_equal(scores, ref_scores)
    src.reset()
    reader.search("w17", 10)
    assert src.reads == 0  # the term's dictionary entry and postings are cached


def test_lazy_and_eager_readers_agree_on_multi_term_queries(blob):
    eager = FtsIndexReader.open(BytesRangeReader(blob), verify=True)
    lazy = FtsIndexReader.open(BytesRangeReader(blob))
    for q in ["python rust", "w1 w2 -w3", "w10*", "json w99 w5"]:
        for mode in ("or", "and"):
            a = eager.search(q, 10, mode=mode)
            b = lazy.search(q, 10, mode=mode)
            assert a[0].tolist() == b[0].tolist()
            np.testing.assert_array_equal(a[1], b[1])


def _exercise(data: bytes, verify: bool) -> list:
    reader = FtsIndexReader.open(BytesRangeReader(data), verify=verify)
    out = []
    for q, mode in [("python w3 w1*", "or"), ("rust json", "and"), ("w0 w2 -w4", "or")]:
        docs, scores = reader.search(q, 5, mode=mode)
        out += [docs.tolist(), scores.tolist()]
    out.append(reader.token_match("w2 -w4").tolist())
    out.append(reader.terms_with_prefix("w"))
    out.append(reader.doc_freq("w7"))
    out.append(reader.doc_lengths().tolist())
    return out


SMALL = build_fts_index(pa.array(_texts(300, seed=9)))[0]
INTACT = _exercise(SMALL, True)


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, len(SMALL) - 1), flip=st.integers(1, 255), verify=st.booleans())
def test_flipped_bytes_raise_corruption_or_leave_answers_intact(pos, flip, verify):
    corrupt = bytearray(SMALL)
    corrupt[pos] ^= flip
    try:
        got = _exercise(bytes(corrupt), verify)
    except SuperfileError:
        return
    # A lazy reader verifies only what it reads, so a flip elsewhere may go unseen, but the
    # answers must then be exactly the intact ones. A verifying open must always notice.
    assert not verify
    assert got == INTACT


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, len(SMALL) - 1), verify=st.booleans())
def test_truncated_blobs_raise_superfile_errors_only(cut, verify):
    with pytest.raises(SuperfileError):
        _exercise(SMALL[:cut], verify)


def test_verifying_open_detects_a_flip_in_every_section():
    for pos in range(0, len(SMALL), max(1, len(SMALL) // 97)):
        corrupt = bytearray(SMALL)
        corrupt[pos] ^= 0x40
        with pytest.raises(CorruptFileError):
            FtsIndexReader.open(BytesRangeReader(bytes(corrupt)), verify=True)
