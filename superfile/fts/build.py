"""Builds one column's BM25 index blob from a string column, vectorized over the column.

Tokens come from the shared tokenizer; term ids from ``dictionary_encode`` ranked by a
byte-order sort of the unique terms; postings from a compiled counting sort by term id
(tokens are already in row order, so each term's postings come out doc-sorted), with
duplicate (term, doc) pairs collapsed into term frequencies. The same stable sort carries
each token's position in its document, so every posting's positions come out ascending
and in posting order for the positions section.
"""

from __future__ import annotations

from dataclasses import dataclass

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from quiver.superfile.fts import format as fmt
from quiver.superfile.fts.codec import (
    _CRC_TABLE,
    BLOCK_SIZE,
    _crc32c_tab,
    _put_u32,
    encode_postings,
)
from quiver.superfile.fts.positions import encode_positions
from quiver.superfile.fts.tokenizer import split_column

__all__ = ["FtsColumnStats", "build_fts_index"]


@dataclass
class FtsColumnStats:
    """What a table needs from a built column index to keep table-wide BM25 statistics."""

    num_docs: int
    total_tokens: int
    terms: pa.Array
    doc_freqs: np.ndarray


@njit(cache=True)
def _group_postings(term_ids, doc_ids, positions, n_terms):
    counts = np.zeros(n_terms + 1, np.int64)
    for i in range(len(term_ids)):
        t = term_ids[i]
        if t >= 0:
            counts[t + 1] += 1
    for t in range(n_terms):
        counts[t + 1] += counts[t]
    total = counts[n_terms]
    cursor = counts[:-1].copy()
    sorted_docs = np.empty(total, np.uint32)
    sorted_pos = np.empty(total, np.int64)
    for i in range(len(term_ids)):
        t = term_ids[i]
        if t >= 0:
            sorted_docs[cursor[t]] = doc_ids[i]
            sorted_pos[cursor[t]] = positions[i]
            cursor[t] += 1
    p_doc = np.empty(total, np.uint32)
    p_tf = np.empty(total, np.uint32)
    term_start = np.zeros(n_terms + 1, np.int64)
    n = 0
    for t in range(n_terms):
        prev = np.int64(-1)
        for i in range(counts[t], counts[t + 1]):
            d = np.int64(sorted_docs[i])
            if d == prev:
                p_tf[n - 1] += 1
            else:
                p_doc[n] = d
                p_tf[n] = 1
                n += 1
                prev = d
        term_start[t + 1] = n
    return term_start, p_doc[:n], p_tf[:n], sorted_pos


@njit(cache=True)
def _encode_dict(term_data, term_offs, df, post_off, post_len, post_crc, per_block, table):
    nt = len(df)
    nb = (nt + per_block - 1) // per_block
    block_off = np.zeros(nb + 1, np.int64)
    for j in range(nb):
        s = j * per_block
        e = min(nt, s + per_block)
        m = e - s
        block_off[j + 1] = block_off[j] + 4 + 20 * m + 4 * (m + 1) + (term_offs[e] - term_offs[s])
    out = np.zeros(block_off[nb], np.uint8)
    crcs = np.zeros(nb, np.uint32)
    for j in range(nb):
        s = j * per_block
        e = min(nt, s + per_block)
        m = e - s
        p = block_off[j]
        _put_u32(out, p, m)
        p += 4
        for t in range(s, e):
            _put_u32(out, p, df[t])
            _put_u32(out, p + 4, post_off[t] & 0xFFFFFFFF)
            _put_u32(out, p + 8, post_off[t] >> 32)
            _put_u32(out, p + 12, post_len[t])
            _put_u32(out, p + 16, post_crc[t])
            p += 20
        for t in range(s, e + 1):
            _put_u32(out, p, term_offs[t] - term_offs[s])
            p += 4
        for i in range(term_offs[s], term_offs[e]):
            out[p] = term_data[i]
            p += 1
        crcs[j] = _crc32c_tab(out, block_off[j], block_off[j + 1], table)
    return out, block_off, crcs


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, offsets rebased to 0) of a string / large_string array."""
    bufs = arr.buffers()
    off_dtype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offs = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset : arr.offset + len(arr) + 1]
    offs = offs.astype(np.int64)
    data = (
        np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    )
    return data[offs[0] : offs[-1]], offs - offs[0]


def _crc(data: np.ndarray) -> int:
    return int(_crc32c_tab(data, 0, len(data), _CRC_TABLE))


def build_fts_index(texts: pa.Array | pa.ChunkedArray) -> tuple[bytes, FtsColumnStats]:
    """Builds the index blob of a string column; row ``i`` is local doc id ``i``.

    Nulls and empty strings are documents of length 0.
    """
    num_docs = len(texts)
    if num_docs >= 2**32 - 1:
        raise ValueError("a column index holds fewer than 2**32 - 1 documents")
    flat, parents = split_column(texts)
    if len(flat):
        encoded = pc.dictionary_encode(flat)
        dictionary = encoded.dictionary
        order = pc.sort_indices(dictionary).to_numpy()
        has_empty = len(order) > 0 and len(dictionary[int(order[0])].as_py()) == 0
        rank = np.empty(len(dictionary), np.int64)
        rank[order] = np.arange(len(order), dtype=np.int64) - int(has_empty)
        if has_empty:
            order = order[1:]
        terms = dictionary.take(pa.array(order, pa.int64()))
        term_ids = rank[encoded.indices.to_numpy()]
    else:
        terms = pa.array([], pa.string())
        term_ids = np.zeros(0, np.int64)
    if not pa.types.is_string(terms.type):
        terms = terms.cast(pa.string())
    n_terms = len(terms)
    nonempty = term_ids >= 0
    doc_len = np.bincount(parents[nonempty], minlength=num_docs).astype(np.int64)
    total_tokens = int(doc_len.sum())
    # A token's position is its rank among its document's non-empty tokens.
    doc_start = np.zeros(num_docs + 1, np.int64)
    np.cumsum(doc_len, out=doc_start[1:])
    before = np.cumsum(nonempty) - nonempty  # non-empty tokens ahead of each piece
    positions = before - doc_start[parents] if len(parents) else np.zeros(0, np.int64)
    term_start, p_doc, p_tf, sorted_pos = _group_postings(term_ids, parents, positions, n_terms)
    dfs = np.diff(term_start)
    p_dl = doc_len[p_doc].astype(np.uint32)
    avgdl = total_tokens / num_docs if num_docs else 0.0
    postings, post_off, post_crc = encode_postings(term_start, p_doc, p_tf, p_dl, avgdl)
    pos_data, pos_off, pos_crc = encode_positions(term_start, p_tf, sorted_pos, _CRC_TABLE)
    positions_section = np.concatenate([
        pos_off.astype("<u8").view(np.uint8), pos_crc.astype("<u4").view(np.uint8), pos_data])

    term_data, term_offs = _string_buffers(terms)
    dict_bytes, block_off, block_crc = _encode_dict(
        term_data, term_offs, dfs, post_off[:-1], np.diff(post_off), post_crc,
        fmt.DICT_BLOCK_TERMS, _CRC_TABLE,
    )
    n_blocks = len(block_crc)
    firsts = np.arange(n_blocks, dtype=np.int64) * fmt.DICT_BLOCK_TERMS
    first_lens = term_offs[firsts + 1] - term_offs[firsts]
    first_offs = np.zeros(n_blocks + 1, np.int64)
    np.cumsum(first_lens, out=first_offs[1:])
    # Gather the first term of every block without a per-block loop.
    gather = np.repeat(term_offs[firsts] - first_offs[:-1], first_lens) + np.arange(
        int(first_offs[-1])
    )
    first_bytes = term_data[gather]

    max_len = int(doc_len.max()) if num_docs else 0
    width = 1 if max_len < 2**8 else 2 if max_len < 2**16 else 4
    doclens = doc_len.astype(f"<u{width}").view(np.uint8)

    dict_index = b"".join([
        block_off.astype("<u8").tobytes(),
        block_crc.astype("<u4").tobytes(),
        first_offs.astype("<u4").tobytes(),
        first_bytes.tobytes(),
    ])
    header_len = fmt.FIXED_END + len(dict_index)
    sections = []
    pos = header_len
    for data in (dict_bytes, postings, doclens, positions_section):
        sections.append(fmt.SECTION.pack(pos, len(data), _crc(data)))
        pos += len(data)
    header_body = b"".join([
        fmt.HEADER_FIXED.pack(
            num_docs, n_terms, total_tokens, n_blocks, fmt.DICT_BLOCK_TERMS, BLOCK_SIZE, width
        ),
        *sections,
        dict_index,
    ])
    preamble = fmt.PREAMBLE.pack(
        fmt.MAGIC, fmt.VERSION, 0, header_len, crc32c.crc32c(header_body)
    )
    blob = b"".join([preamble, header_body, dict_bytes.tobytes(), postings.tobytes(),
                     doclens.tobytes(), positions_section.tobytes()])
    stats = FtsColumnStats(
        num_docs=num_docs, total_tokens=total_tokens, terms=terms,
        doc_freqs=dfs.astype(np.int64),
    )
    return blob, stats
