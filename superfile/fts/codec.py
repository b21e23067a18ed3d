"""Compiled codecs of the full-text blob: postings block bit-packing and CRC-32C.

A term's postings are ``nb`` fixed-size block records followed by the packed block data.
Block record (``META_SIZE`` bytes, little endian)::

    first_doc u32 | last_doc u32 | data_off u32 | max_tf u32 | ratio_dl u32 | ratio_tf u32 |
    best_tf u32 | best_dl u32 | w_gap u8 | w_tf u8 | w_dl u8 | count-1 u8

Block data is one LSB-first bitstream, byte aligned at its start: ``count-1`` doc gaps
(``doc[i] - doc[i-1] - 1``) of ``w_gap`` bits, ``count`` values ``tf-1`` of ``w_tf`` bits and
``count`` document lengths of ``w_dl`` bits. The exact document length travels with each
posting so a term's postings score on their own, without a document-length fetch.
The block record bounds the block's BM25 contribution for any N, avgdl and df. A posting's
score is ``idf * (k1 + 1) / (1 + g)`` with ``g = k1 (1 - b) / tf + (k1 b / avgdl) * dl / tf``,
so a lower bound on ``g`` bounds the block: ``max_tf`` and the posting with the smallest
``dl / tf`` (``ratio_dl / ratio_tf``) give one valid for every avgdl; the posting that scores
best under the file's own avgdl (``best_tf``, ``best_dl``) gives the exact maximum there and,
since ``g`` is linear in ``1 / avgdl``, a tighter bound near it.

Decoders never trust the bytes: every read is bounds-checked and every decoded block is
checked against its record; a failure returns a negative code the reader turns into
``CorruptFileError``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK_SIZE = 128
META_SIZE = 36
CORRUPT = -1

__all__ = [
    "BLOCK_SIZE",
    "CORRUPT",
    "META_SIZE",
    "block_count",
    "crc32c_nb",
    "decode_block",
    "decode_docs",
    "decode_term",
    "encode_postings",
    "get_bits",
    "pack_ranges",
    "posting_tf_dl",
    "validate_term",
]


@njit(cache=True)
def block_count(n):
    """Number of postings blocks holding ``n`` postings (an int or an integer array)."""
    return (n + (BLOCK_SIZE - 1)) // BLOCK_SIZE


def pack_ranges(parts: list[tuple[np.ndarray, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Copies ``buf[start:start + length]`` of each ``(buf, start, length)`` into one buffer;
    returns it and where each part starts in it (one copy per part, not per posting)."""
    lengths = np.array([n for _, _, n in parts], np.int64)
    bases = np.zeros(len(parts), np.int64)
    np.cumsum(lengths[:-1], out=bases[1:])
    out = np.empty(int(lengths.sum()), np.uint8)
    for (buf, start, n), at in zip(parts, bases.tolist(), strict=True):
        out[at:at + n] = buf[start:start + n]
    return out, bases


def _make_crc_table() -> np.ndarray:
    table = np.zeros((8, 256), dtype=np.uint32)
    poly = 0x82F63B78
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table[0, i] = c
    for t in range(1, 8):
        for i in range(256):
            prev = int(table[t - 1, i])
            table[t, i] = (prev >> 8) ^ int(table[0, prev & 0xFF])
    return table


_CRC_TABLE = _make_crc_table()


@njit(cache=True)
def _crc32c_tab(buf, start, end, table):
    crc = np.uint32(0xFFFFFFFF)
    i = start
    while i + 8 <= end:
        lo = crc ^ (
            np.uint32(buf[i])
            | (np.uint32(buf[i + 1]) << 8)
            | (np.uint32(buf[i + 2]) << 16)
            | (np.uint32(buf[i + 3]) << 24)
        )
        crc = (
            table[7, lo & 0xFF]
            ^ table[6, (lo >> 8) & 0xFF]
            ^ table[5, (lo >> 16) & 0xFF]
            ^ table[4, lo >> 24]
            ^ table[3, buf[i + 4]]
            ^ table[2, buf[i + 5]]
            ^ table[1, buf[i + 6]]
            ^ table[0, buf[i + 7]]
        )
        i += 8
    while i < end:
        crc = table[0, (crc ^ np.uint32(buf[i])) & 0xFF] ^ (crc >> 8)
        i += 1
    return crc ^ np.uint32(0xFFFFFFFF)


def crc32c_nb(buf: np.ndarray, start: int = 0, end: int | None = None) -> int:
    """CRC-32C of ``buf[start:end]`` computed in compiled code (same value as ``crc32c``)."""
    return int(_crc32c_tab(buf, start, len(buf) if end is None else end, _CRC_TABLE))


@njit(cache=True)
def _width(v):
    w = 0
    while v > 0:
        w += 1
        v >>= 1
    return w


@njit(cache=True)
def _put_u32(out, pos, v):
    out[pos] = v & 0xFF
    out[pos + 1] = (v >> 8) & 0xFF
    out[pos + 2] = (v >> 16) & 0xFF
    out[pos + 3] = (v >> 24) & 0xFF


@njit(cache=True)
def get_u32(buf, pos):
    return (
        np.int64(buf[pos])
        | (np.int64(buf[pos + 1]) << 8)
        | (np.int64(buf[pos + 2]) << 16)
        | (np.int64(buf[pos + 3]) << 24)
    )


@njit(cache=True)
def _block_widths(docs, tfs, dls, s, e):
    mg = 0
    mt = 0
    md = 0
    for i in range(s, e):
        if i > s:
            g = np.int64(docs[i]) - np.int64(docs[i - 1]) - 1
            if g > mg:
                mg = g
        t = np.int64(tfs[i]) - 1
        if t > mt:
            mt = t
        d = np.int64(dls[i])
        if d > md:
            md = d
    return _width(mg), _width(mt), _width(md)


@njit(cache=True)
def _term_size(docs, tfs, dls, s, e):
    n = e - s
    nb = block_count(n)
    size = nb * META_SIZE
    for j in range(nb):
        bs = s + j * BLOCK_SIZE
        be = min(e, bs + BLOCK_SIZE)
        wg, wt, wd = _block_widths(docs, tfs, dls, bs, be)
        cnt = be - bs
        size += ((cnt - 1) * wg + cnt * (wt + wd) + 7) // 8
    return size


@njit(cache=True)
def _g(tf, dl, x, c):
    return c / tf + x * dl / tf


@njit(cache=True)
def _write_term(out, base, docs, tfs, dls, s, e, x, c):
    n = e - s
    nb = block_count(n)
    data = base + nb * META_SIZE
    off = 0
    for j in range(nb):
        bs = s + j * BLOCK_SIZE
        be = min(e, bs + BLOCK_SIZE)
        cnt = be - bs
        wg, wt, wd = _block_widths(docs, tfs, dls, bs, be)
        max_tf = np.int64(0)
        r_dl = np.int64(dls[bs])
        r_tf = np.int64(tfs[bs])
        b_dl = r_dl
        b_tf = r_tf
        best_g = _g(np.float64(b_tf), np.float64(b_dl), x, c)
        for i in range(bs, be):
            tf = np.int64(tfs[i])
            dl = np.int64(dls[i])
            if tf > max_tf:
                max_tf = tf
            if dl * r_tf < r_dl * tf:
                r_dl = dl
                r_tf = tf
            g = _g(np.float64(tf), np.float64(dl), x, c)
            if g < best_g:
                best_g = g
                b_tf = tf
                b_dl = dl
        m = base + j * META_SIZE
        _put_u32(out, m, np.int64(docs[bs]))
        _put_u32(out, m + 4, np.int64(docs[be - 1]))
        _put_u32(out, m + 8, off)
        _put_u32(out, m + 12, max_tf)
        _put_u32(out, m + 16, r_dl)
        _put_u32(out, m + 20, r_tf)
        _put_u32(out, m + 24, b_tf)
        _put_u32(out, m + 28, b_dl)
        out[m + 32] = wg
        out[m + 33] = wt
        out[m + 34] = wd
        out[m + 35] = cnt - 1
        p = data + off
        acc = np.uint64(0)
        nacc = 0
        for part in range(3):
            w = wg if part == 0 else (wt if part == 1 else wd)
            if w == 0:
                continue
            for i in range(bs, be):
                if part == 0:
                    if i == bs:
                        continue
                    v = np.uint64(np.int64(docs[i]) - np.int64(docs[i - 1]) - 1)
                elif part == 1:
                    v = np.uint64(np.int64(tfs[i]) - 1)
                else:
                    v = np.uint64(dls[i])
                acc |= v << np.uint64(nacc)
                nacc += w
                while nacc >= 8:
                    out[p] = np.uint8(acc & np.uint64(0xFF))
                    acc >>= np.uint64(8)
                    nacc -= 8
                    p += 1
        if nacc > 0:
            out[p] = np.uint8(acc & np.uint64(0xFF))
            p += 1
        off = p - data
    return data + off


@njit(cache=True)
def _encode_all(term_start, docs, tfs, dls, table, x, c):
    nt = len(term_start) - 1
    term_off = np.zeros(nt + 1, np.int64)
    for t in range(nt):
        term_off[t + 1] = term_off[t] + _term_size(
            docs, tfs, dls, term_start[t], term_start[t + 1]
        )
    out = np.zeros(term_off[nt], np.uint8)
    crcs = np.zeros(nt, np.uint32)
    for t in range(nt):
        end = _write_term(
            out, term_off[t], docs, tfs, dls, term_start[t], term_start[t + 1], x, c
        )
        if end != term_off[t + 1]:
            raise ValueError("postings size mismatch")
        crcs[t] = _crc32c_tab(out, term_off[t], term_off[t + 1], table)
    return out, term_off, crcs


def encode_postings(
    term_start: np.ndarray,
    docs: np.ndarray,
    tfs: np.ndarray,
    dls: np.ndarray,
    avgdl: float = 1.0,
    k1: float = 1.2,
    b: float = 0.75,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encodes every term's postings; term ``t`` owns ``docs[term_start[t]:term_start[t+1]]``.

    ``avgdl`` is the file's own average document length (it picks each block's best posting).

    Returns the postings bytes, each term's byte offset (``T + 1`` entries) and each term's
    CRC-32C.
    """
    return _encode_all(
        np.ascontiguousarray(term_start, np.int64),
        np.ascontiguousarray(docs, np.uint32),
        np.ascontiguousarray(tfs, np.uint32),
        np.ascontiguousarray(dls, np.uint32),
        _CRC_TABLE,
        k1 * b / (avgdl if avgdl > 0 else 1.0),
        k1 * (1.0 - b),
    )


@njit(cache=True)
def validate_term(buf, base, end, nb, df, num_docs):
    """Checks a term's block records: sizes, ordering, counts. Returns 0 or ``CORRUPT``."""
    if nb <= 0 or base < 0 or base + nb * META_SIZE > end or end > len(buf):
        return -1
    data = base + nb * META_SIZE
    total = 0
    prev_last = np.int64(-1)
    for j in range(nb):
        m = base + j * META_SIZE
        first = get_u32(buf, m)
        last = get_u32(buf, m + 4)
        off = get_u32(buf, m + 8)
        wg = np.int64(buf[m + 32])
        wt = np.int64(buf[m + 33])
        wd = np.int64(buf[m + 34])
        cnt = np.int64(buf[m + 35]) + 1
        if wg > 32 or wt > 32 or wd > 32 or cnt > BLOCK_SIZE:
            return -1
        if get_u32(buf, m + 12) == 0 or get_u32(buf, m + 20) == 0 or get_u32(buf, m + 24) == 0:
            return -1
        if first <= prev_last or last < first or last >= num_docs or last - first + 1 < cnt:
            return -1
        if j < nb - 1 and cnt != BLOCK_SIZE:
            return -1
        if data + off + ((cnt - 1) * wg + cnt * (wt + wd) + 7) // 8 > end:
            return -1
        prev_last = last
        total += cnt
    if total != df:
        return -1
    return 0


@njit(cache=True)
def decode_docs(buf, base, nb, blk, out_docs):
    """Decodes the doc ids of block ``blk`` of a validated term; returns the count or -1."""
    m = base + blk * META_SIZE
    first = get_u32(buf, m)
    last = get_u32(buf, m + 4)
    p = base + nb * META_SIZE + get_u32(buf, m + 8)
    w = np.int64(buf[m + 32])
    cnt = np.int64(buf[m + 35]) + 1
    out_docs[0] = first
    if w == 0:
        for i in range(1, cnt):
            out_docs[i] = out_docs[i - 1] + 1
    else:
        acc = np.uint64(0)
        nacc = 0
        mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
        for i in range(1, cnt):
            while nacc < w:
                acc |= np.uint64(buf[p]) << np.uint64(nacc)
                p += 1
                nacc += 8
            out_docs[i] = out_docs[i - 1] + np.int64(acc & mask) + 1
            acc >>= np.uint64(w)
            nacc -= w
    if out_docs[cnt - 1] != last:
        return -1
    return cnt


@njit(cache=True, inline="always")
def get_bits(buf, start, bitpos, w):
    """Value of ``w`` bits at ``bitpos`` of the bitstream starting at byte ``start``."""
    if w == 0:
        return np.int64(0)
    q = start + (bitpos >> 3)
    shift = bitpos & 7
    need = (shift + w + 7) >> 3
    acc = np.uint64(0)
    for i in range(need):
        acc |= np.uint64(buf[q + i]) << np.uint64(8 * i)
    return np.int64((acc >> np.uint64(shift)) & ((np.uint64(1) << np.uint64(w)) - np.uint64(1)))


@njit(cache=True)
def posting_tf_dl(buf, base, nb, blk, i):
    """(tf, dl) of posting ``i`` of block ``blk`` without decoding the rest of the block."""
    m = base + blk * META_SIZE
    p = base + nb * META_SIZE + get_u32(buf, m + 8)
    wg = np.int64(buf[m + 32])
    wt = np.int64(buf[m + 33])
    wd = np.int64(buf[m + 34])
    cnt = np.int64(buf[m + 35]) + 1
    tf = get_bits(buf, p, (cnt - 1) * wg + i * wt, wt) + 1
    dl = get_bits(buf, p, (cnt - 1) * wg + cnt * wt + i * wd, wd)
    return tf, dl


@njit(cache=True)
def decode_block(buf, base, nb, blk, out_docs, out_tfs, out_dls):
    """Decodes block ``blk`` of a validated term fully; returns its count or ``CORRUPT``."""
    cnt = decode_docs(buf, base, nb, blk, out_docs)
    if cnt < 0:
        return -1
    m = base + blk * META_SIZE
    wg = np.int64(buf[m + 32])
    wt = np.int64(buf[m + 33])
    wd = np.int64(buf[m + 34])
    bitpos = (cnt - 1) * wg
    p = base + nb * META_SIZE + get_u32(buf, m + 8) + (bitpos >> 3)
    nacc = 0
    acc = np.uint64(0)
    skip = bitpos & 7
    if skip:
        acc = np.uint64(buf[p]) >> np.uint64(skip)
        nacc = 8 - skip
        p += 1
    for part in range(2):
        w = wt if part == 0 else wd
        mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
        for i in range(cnt):
            v = np.int64(0)
            if w > 0:
                while nacc < w:
                    acc |= np.uint64(buf[p]) << np.uint64(nacc)
                    p += 1
                    nacc += 8
                v = np.int64(acc & mask)
                acc >>= np.uint64(w)
                nacc -= w
            if part == 0:
                out_tfs[i] = v + 1
            else:
                out_dls[i] = v
    return cnt


@njit(cache=True)
def decode_term(buf, base, nb, df):
    """Decodes all blocks of a validated term into (docs, tfs, dls) int64 arrays."""
    docs = np.empty(df, np.int64)
    tfs = np.empty(df, np.int64)
    dls = np.empty(df, np.int64)
    bd = np.empty(BLOCK_SIZE, np.int64)
    bt = np.empty(BLOCK_SIZE, np.int64)
    bl = np.empty(BLOCK_SIZE, np.int64)
    pos = 0
    for j in range(nb):
        c = decode_block(buf, base, nb, j, bd, bt, bl)
        if c < 0 or pos + c > df:
            return docs[:0], tfs[:0], dls[:0], False
        docs[pos : pos + c] = bd[:c]
        tfs[pos : pos + c] = bt[:c]
        dls[pos : pos + c] = bl[:c]
        pos += c
    return docs, tfs, dls, pos == df
