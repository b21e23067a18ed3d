"""Lazy range reads of the full-text blob and its behaviour on corrupt bytes."""

from __future__ import annotations

import itertools
import struct

import crc32c
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.superfile.errors import CorruptFileError, SuperfileError
from quiver.superfile.fts import FtsIndexReader, build_fts_index
from quiver.superfile.fts import format as fmt
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


# -- damage that keeps every checksum valid: only the dictionary's own checks can see it ------

def _layout(blob: bytes) -> dict:
    """Where the dictionary section and its index lie in ``blob``."""
    header_len = fmt.PREAMBLE.unpack_from(blob, 0)[3]
    fixed = fmt.HEADER_FIXED.unpack_from(blob, fmt.PREAMBLE.size)
    nblocks = fixed[3]
    pos = fmt.PREAMBLE.size + fmt.HEADER_FIXED.size
    sections = {}
    for name in fmt.section_names(fmt.VERSION):
        sections[name] = (pos, *fmt.SECTION.unpack_from(blob, pos))
        pos += fmt.SECTION.size
    index = fmt.fixed_end(fmt.VERSION)
    block_off = np.frombuffer(blob, "<u8", nblocks + 1, index).astype(int)
    crc_at = index + 8 * (nblocks + 1)
    return {"header_len": header_len, "sections": sections, "block_off": block_off,
            "crc_at": crc_at, "first_offs_at": crc_at + 4 * nblocks, "nblocks": nblocks}


def _recrc(blob: bytearray, lay: dict, blocks: list[int]) -> bytes:
    """Rewrites the checksums of the given dictionary blocks, the dict section and the
    header so that they match the (damaged) bytes."""
    sec_entry, dict_off, dict_len, _ = lay["sections"]["dict"]
    for j in blocks:
        a, b = lay["block_off"][j], lay["block_off"][j + 1]
        struct.pack_into("<I", blob, lay["crc_at"] + 4 * j,
                         crc32c.crc32c(bytes(blob[dict_off + a:dict_off + b])))
    struct.pack_into("<Q Q I", blob, sec_entry, dict_off, dict_len,
                     crc32c.crc32c(bytes(blob[dict_off:dict_off + dict_len])))
    struct.pack_into("<I", blob, 12, crc32c.crc32c(bytes(blob[16:lay["header_len"]])))
    return bytes(blob)


def _block_terms(blob: bytes, lay: dict, j: int) -> tuple[int, list[tuple[int, int]]]:
    """(absolute offset of block j's term bytes, (start, end) of each of its terms)."""
    _, dict_off, _, _ = lay["sections"]["dict"]
    at = dict_off + lay["block_off"][j]
    m = struct.unpack_from("<I", blob, at)[0]
    p = at + 4 + m * fmt.DIR_ENTRY.itemsize
    offs = np.frombuffer(blob, "<u4", m + 1, p).astype(int)
    text = p + 4 * (m + 1)
    return text, [(text + offs[i], text + offs[i + 1]) for i in range(m)]


DICT_BLOB = build_fts_index(pa.array(_texts(4000)))[0]


def _damaged(edit) -> tuple[bytes, int]:
    """DICT_BLOB with block 3's term bytes edited, every checksum rewritten to match."""
    blob = bytearray(DICT_BLOB)
    lay = _layout(DICT_BLOB)
    j = 3
    _, spans = _block_terms(DICT_BLOB, lay, j)
    edit(blob, spans)
    return _recrc(blob, lay, [j]), j


def _swap_two_terms(blob, spans):
    # Two neighbours of equal length (offsets unchanged), not the block's first term.
    for (a, b), (c, d) in itertools.pairwise(spans[1:]):
        if b - a == d - c and blob[a:b] != blob[c:d]:
            blob[a:b], blob[c:d] = bytes(blob[c:d]), bytes(blob[a:b])
            return
    raise AssertionError("no two neighbouring terms of equal length")


def _invalid_utf8(blob, spans):
    a, _ = spans[5]
    blob[a] = 0xFF


def _first_term_changed(blob, spans):
    a, _ = spans[0]
    blob[a] = ord("a")


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("edit", [_swap_two_terms, _invalid_utf8, _first_term_changed])
def test_a_damaged_dictionary_block_with_valid_checksums_is_refused(edit, verify):
    data, j = _damaged(edit)
    reader = FtsIndexReader.open(BytesRangeReader(data), verify=verify)
    # Every term of the damaged block is looked up: any lookup reaching it must refuse.
    intact = FtsIndexReader.open(BytesRangeReader(DICT_BLOB), verify=True)
    terms = intact._dict_block(j).terms
    with pytest.raises(CorruptFileError):
        for t in terms:
            reader.search(t, 5)
    with pytest.raises(CorruptFileError):
        reader.terms_with_prefix(terms[1][:1])


def test_a_dictionary_index_out_of_order_is_refused():
    blob = bytearray(DICT_BLOB)
    lay = _layout(DICT_BLOB)
    first_offs = np.frombuffer(DICT_BLOB, "<u4", lay["nblocks"] + 1, lay["first_offs_at"])
    data_at = lay["first_offs_at"] + 4 * (lay["nblocks"] + 1)
    # Swap the first terms of two neighbouring blocks when they have equal length.
    for j in range(1, lay["nblocks"] - 1):
        a, b = data_at + int(first_offs[j]), data_at + int(first_offs[j + 1])
        c = data_at + int(first_offs[j + 2])
        if b - a == c - b:
            blob[a:b], blob[b:c] = bytes(blob[b:c]), bytes(blob[a:b])
            break
    else:
        raise AssertionError("no two neighbouring first terms of equal length")
    data = _recrc(blob, lay, [])
    with pytest.raises(CorruptFileError, match="not sorted"):
        FtsIndexReader.open(BytesRangeReader(data))


def test_every_term_of_an_intact_dictionary_is_found():
    reader = FtsIndexReader.open(BytesRangeReader(DICT_BLOB))
    intact = FtsIndexReader.open(BytesRangeReader(DICT_BLOB), verify=True)
    terms = intact.terms_with_prefix("")
    assert len(terms) == intact.num_terms
    assert all(reader.doc_freq(t) > 0 for t in terms)
    # Absent terms between, before and after the dictionary's are not found.
    for t in ["", "0", "w", "w1x", "zzzz", terms[0] + "\u00e9", "\U0001F600"]:
        if t not in set(terms):
            assert reader.doc_freq(t) == 0


@pytest.mark.parametrize("edit", [_swap_two_terms, _invalid_utf8, _first_term_changed])
def test_a_whole_index_check_leaves_a_damaged_block_for_its_lookups_to_refuse(edit):
    data, j = _damaged(edit)
    reader = FtsIndexReader.open(BytesRangeReader(data), verify=True)
    reader.check_resident()
    assert reader.fully_checked
    intact = FtsIndexReader.open(BytesRangeReader(DICT_BLOB), verify=True)
    # The damaged block is not marked checked: a lookup reaching it still refuses.
    with pytest.raises(CorruptFileError):
        for t in intact._dict_block(j).terms:
            reader.search(t, 5)
    # Every other block was checked whole and answers as the intact index does.
    other = intact._dict_block(j + 2).terms[:5]
    for t in other:
        assert reader.doc_freq(t) == intact.doc_freq(t) > 0


def test_a_whole_index_check_leaves_malformed_postings_for_their_lookups_to_refuse():
    intact = FtsIndexReader.open(BytesRangeReader(DICT_BLOB), verify=True)
    lay = _layout(DICT_BLOB)
    _, dict_off, _, _ = lay["sections"]["dict"]
    _, post_off, post_len, _ = lay["sections"]["postings"]
    term = "python"
    ordinal = intact._lookup(term).ordinal
    j, i = divmod(ordinal, intact._per_block)
    entry = dict_off + lay["block_off"][j] + 4 + i * fmt.DIR_ENTRY.itemsize
    df, off, _length, _crc = struct.unpack_from("<I Q I I", DICT_BLOB, entry)
    blob = bytearray(DICT_BLOB)
    # The first block's record claims more postings than the term has: its counts break.
    blob[post_off + off + 35] = 0
    data = bytearray(_recrc(blob, lay, []))
    struct.pack_into("<I", data, entry + 16,
                     crc32c.crc32c(bytes(data[post_off + off:post_off + off + _length])))
    struct.pack_into("<I", data, lay["crc_at"] + 4 * j, crc32c.crc32c(bytes(
        data[dict_off + lay["block_off"][j]:dict_off + lay["block_off"][j + 1]])))
    sec_entry = lay["sections"]["postings"][0]
    struct.pack_into("<Q Q I", data, sec_entry, post_off, post_len,
                     crc32c.crc32c(bytes(data[post_off:post_off + post_len])))
    data = _recrc(data, lay, [j])
    reader = FtsIndexReader.open(BytesRangeReader(data), verify=True)
    reader.check_resident()
    assert reader.resident_lookup().validated[ordinal] == 0
    assert df > 0
    with pytest.raises(CorruptFileError):
        reader.search(term, 5)
