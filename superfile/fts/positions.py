"""Compiled codec of word positions (format 2) and the phrase matcher that reads them.

A term's positions follow its postings block by block: for block ``j`` of its postings
(up to ``BLOCK_SIZE`` documents) a record ``data_off u32 | npos u32 | width u8 | 3 pad`` and, after
all records, one LSB-first bitstream per block, byte aligned at its start, of ``npos``
values of ``width`` bits: for each document of the block in doc order, its first
position, then the gaps ``p[i] - p[i-1] - 1`` to the next ones (``tf`` values in all).
``npos`` is the block's summed tf. Positions count the document's tokens from 0.

The positions section of the blob is ``T + 1`` u64 term offsets (relative to the data),
``T`` u32 CRC-32C of each term's range, then the data, term after term in dictionary
order; a term's ordinal is its dictionary block times the block size plus its index in it.

A phrase ``t0 t1 … tn-1`` with slop ``s`` matches at every position ``p`` of ``t0`` from
which the earliest later positions ``p < q1 < … < qn-1`` of the next terms, chosen one
after the other, end with ``qn-1 - p - (n - 1) <= s`` (slop 0: adjacent and in order).
Its frequency in a document is the number of such ``p``. Decoders never trust the
bytes: every read is bounds-checked and a position must lie below the document length.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quiver.superfile.fts.codec import (
    BLOCK_SIZE,
    CORRUPT,
    META_SIZE,
    _crc32c_tab,
    _put_u32,
    _width,
    block_count,
    decode_block,
    decode_docs,
    get_bits,
    get_u32,
)
from quiver.superfile.fts.engine import _better, _sift_down, _sift_up, _tscore, block_bound
from quiver.superfile.fts.match import term_docs

POS_META = 12

__all__ = ["POS_META", "encode_positions", "phrase_docs", "phrase_topk"]


@njit(cache=True)
def _pos_value(pos, i, start):
    return np.int64(pos[i]) if i == start else np.int64(pos[i]) - np.int64(pos[i - 1]) - 1


@njit(cache=True)
def _term_pos_size(p_tf, p_pstart, pos, s, e):
    nb = block_count(e - s)
    size = nb * POS_META
    for j in range(nb):
        bs = s + j * BLOCK_SIZE
        be = min(e, bs + BLOCK_SIZE)
        w = 0
        n = 0
        for i in range(bs, be):
            a = p_pstart[i]
            for q in range(a, a + p_tf[i]):
                v = _pos_value(pos, q, a)
                if _width(v) > w:
                    w = _width(v)
            n += p_tf[i]
        size += (n * w + 7) // 8
    return size


@njit(cache=True)
def _write_term_pos(out, base, p_tf, p_pstart, pos, s, e):
    nb = block_count(e - s)
    data = base + nb * POS_META
    off = 0
    for j in range(nb):
        bs = s + j * BLOCK_SIZE
        be = min(e, bs + BLOCK_SIZE)
        w = 0
        n = 0
        for i in range(bs, be):
            a = p_pstart[i]
            for q in range(a, a + p_tf[i]):
                v = _pos_value(pos, q, a)
                if _width(v) > w:
                    w = _width(v)
            n += p_tf[i]
        m = base + j * POS_META
        _put_u32(out, m, off)
        _put_u32(out, m + 4, n)
        out[m + 8] = w
        p = data + off
        acc = np.uint64(0)
        nacc = 0
        if w > 0:
            for i in range(bs, be):
                a = p_pstart[i]
                for q in range(a, a + p_tf[i]):
                    acc |= np.uint64(_pos_value(pos, q, a)) << np.uint64(nacc)
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
def _encode_positions(term_start, p_tf, pos, table):
    nt = len(term_start) - 1
    npost = len(p_tf)
    p_pstart = np.zeros(npost + 1, np.int64)
    for i in range(npost):
        p_pstart[i + 1] = p_pstart[i] + p_tf[i]
    term_off = np.zeros(nt + 1, np.int64)
    for t in range(nt):
        term_off[t + 1] = term_off[t] + _term_pos_size(
            p_tf, p_pstart, pos, term_start[t], term_start[t + 1])
    out = np.zeros(term_off[nt], np.uint8)
    crcs = np.zeros(nt, np.uint32)
    for t in range(nt):
        end = _write_term_pos(out, term_off[t], p_tf, p_pstart, pos, term_start[t],
                              term_start[t + 1])
        if end != term_off[t + 1]:
            raise ValueError("positions size mismatch")
        crcs[t] = _crc32c_tab(out, term_off[t], term_off[t + 1], table)
    return out, term_off, crcs


def encode_positions(term_start: np.ndarray, p_tf: np.ndarray, pos: np.ndarray,
                     table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of every term: posting ``i`` (term-major, doc order) owns the next
    ``p_tf[i]`` entries of ``pos`` (ascending within the document). Returns the data bytes,
    each term's offset (``T + 1``) and each term's CRC-32C."""
    return _encode_positions(np.ascontiguousarray(term_start, np.int64),
                             np.ascontiguousarray(p_tf, np.int64),
                             np.ascontiguousarray(pos, np.int64), table)


# -- reading --------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _locate(buf, base, nb, cands, n, out):
    """``out[i]`` = index of ``cands[i]`` among the term's postings, or -1 (ascending
    ``cands[:n]``). Returns blocks decoded or ``CORRUPT``."""
    block = np.empty(BLOCK_SIZE, np.int64)
    blk = 0
    cur = -1
    cnt = 0
    p = 0
    decoded = 0
    for i in range(n):
        out[i] = -1
        c = cands[i]
        while blk < nb and get_u32(buf, base + blk * META_SIZE + 4) < c:
            blk += 1
        if blk >= nb:
            continue
        if get_u32(buf, base + blk * META_SIZE) > c:
            continue
        if cur != blk:
            cnt = decode_docs(buf, base, nb, blk, block)
            if cnt < 0:
                return CORRUPT
            cur = blk
            p = 0
            decoded += 1
        while p < cnt and block[p] < c:
            p += 1
        if p < cnt and block[p] == c:
            out[i] = blk * BLOCK_SIZE + p
    return decoded


@njit(cache=True, nogil=True)
def _load(pbuf, pbase, pnb, qbuf, qbase, qend, blk, cache_blk, TF, DL, PRE, D):
    """Decodes postings block ``blk`` of a term into D / TF / DL, its tf prefix sums into
    PRE, and checks its positions record; returns its count or ``CORRUPT``."""
    c = decode_block(pbuf, pbase, pnb, blk, D, TF, DL)
    if c < 0:
        return CORRUPT
    PRE[0] = 0
    for i in range(c):
        PRE[i + 1] = PRE[i] + TF[i]
    cache_blk[0] = blk
    m = qbase + blk * POS_META
    if m + POS_META > qend or qbase + pnb * POS_META > qend:
        return CORRUPT
    if get_u32(qbuf, m + 4) != PRE[c]:
        return CORRUPT
    w = np.int64(qbuf[m + 8])
    if w > 32 or qbase + pnb * POS_META + get_u32(qbuf, m) + (PRE[c] * w + 7) // 8 > qend:
        return CORRUPT
    return c


@njit(cache=True, nogil=True, inline="always")
def _term_positions(pbuf, pbase, pnb, qbuf, qbase, qend, idx, cache_blk, TF, DL, PRE, D, out):
    """Positions of posting ``idx`` of one term into ``out``; returns (count, dl),
    (-2, tf) when ``out`` is shorter than tf, or (``CORRUPT``, 0). ``cache_blk[0]`` / TF /
    DL / PRE hold the last decoded block."""
    blk = idx // BLOCK_SIZE
    r = idx - blk * BLOCK_SIZE
    if cache_blk[0] != blk and _load(pbuf, pbase, pnb, qbuf, qbase, qend, blk, cache_blk,
                                     TF, DL, PRE, D) < 0:
        return CORRUPT, 0
    m = qbase + blk * POS_META
    start = qbase + pnb * POS_META + get_u32(qbuf, m)
    w = np.int64(qbuf[m + 8])
    tf = TF[r]
    dl = DL[r]
    if tf > len(out):
        return -2, tf
    prev = np.int64(-1)
    for i in range(tf):
        v = get_bits(qbuf, start, (PRE[r] + i) * w, w)
        prev = v if i == 0 else prev + v + 1
        if prev >= dl:
            return CORRUPT, 0
        out[i] = prev
    return tf, dl


@njit(cache=True, nogil=True)
def _intersect(pbuf, p_base, p_nb, p_df, driver):
    """Docs holding every term (ascending) and each term's posting index for them:
    (docs, idx[n, m], ok)."""
    n = len(p_base)
    cands, ok = term_docs(pbuf, p_base[driver], p_nb[driver], p_df[driver])
    m = len(cands)
    idx = np.empty((n, m), np.int64)
    if not ok:
        return cands[:0], idx[:, :0], False
    for i in range(m):
        idx[driver, i] = i
    tmp = np.empty(m, np.int64)
    alive = m
    for j in range(n):
        if j == driver or alive == 0:
            continue
        if _locate(pbuf, p_base[j], p_nb[j], cands, alive, tmp) < 0:
            return cands[:0], idx[:, :0], False
        w = 0
        for i in range(alive):
            if tmp[i] >= 0:
                cands[w] = cands[i]
                for jj in range(n):
                    idx[jj, w] = idx[jj, i]
                idx[j, w] = tmp[i]
                w += 1
        alive = w
    return cands[:alive], idx[:, :alive], True


@njit(cache=True, nogil=True)
def _freq(pbuf, p_base, p_nb, qbuf, q_base, q_end, slop, max_dl, idx, i, cache_blk, TF, DL,
          PRE, D, P, cnt, ptr):
    """Phrase frequency in candidate ``i`` and its length: (freq, dl, P); freq < 0 is
    damage. ``P`` (scratch positions, one row per term) may come back grown."""
    n = len(p_base)
    dl = np.int64(0)
    for j in range(n):
        c, dl = _term_positions(pbuf, p_base[j], p_nb[j], qbuf, q_base[j], q_end[j],
                                idx[j, i], cache_blk[j], TF[j], DL[j], PRE[j], D[j], P[j])
        if c == -2:
            # A tf beyond the scratch rows: grow them (tf <= document length <= max_dl).
            if dl > max_dl:
                return -1, 0, P
            Q = np.empty((n, dl), np.int64)
            for jj in range(j):
                Q[jj, :cnt[jj]] = P[jj, :cnt[jj]]
            P = Q
            c, dl = _term_positions(pbuf, p_base[j], p_nb[j], qbuf, q_base[j], q_end[j],
                                    idx[j, i], cache_blk[j], TF[j], DL[j], PRE[j], D[j], P[j])
        if c < 0:
            return -1, 0, P
        cnt[j] = c
        ptr[j] = 0
    f = 0
    for a in range(cnt[0]):
        cur = P[0, a]
        done = False
        for j in range(1, n):
            while ptr[j] < cnt[j] and P[j, ptr[j]] <= cur:
                ptr[j] += 1
            if ptr[j] >= cnt[j]:
                done = True
                break
            cur = P[j, ptr[j]]
        if done:
            break
        if cur - P[0, a] - (n - 1) <= slop:
            f += 1
    return f, dl, P


@njit(cache=True, nogil=True)
def phrase_docs(pbuf, p_base, p_nb, p_df, qbuf, q_base, q_end, slop, driver, max_dl):
    """Documents matching a phrase, with the phrase's frequency and the document length.

    Term ``j`` of the phrase (in order) has its postings at ``pbuf[p_base[j]]`` (validated,
    ``p_nb[j]`` blocks, ``p_df[j]`` documents) and its positions in ``qbuf[q_base[j]:
    q_end[j]]``; ``driver`` is the index of the rarest term; ``max_dl`` bounds any
    document's length. Returns (docs, freqs, lengths, ok).
    """
    n = len(p_base)
    empty = np.zeros(0, np.int64)
    cands, idx, ok = _intersect(pbuf, p_base, p_nb, p_df, driver)
    if not ok:
        return empty, empty, empty, False
    alive = len(cands)
    out_d = np.empty(alive, np.int64)
    out_f = np.empty(alive, np.int64)
    out_l = np.empty(alive, np.int64)
    cache_blk = np.full((n, 1), -1, np.int64)
    TF = np.empty((n, BLOCK_SIZE), np.int64)
    DL = np.empty((n, BLOCK_SIZE), np.int64)
    PRE = np.empty((n, 129), np.int64)
    D = np.empty((n, BLOCK_SIZE), np.int64)
    P = np.empty((n, 64), np.int64)
    cnt = np.empty(n, np.int64)
    ptr = np.empty(n, np.int64)
    got = 0
    for i in range(alive):
        f, dl, P = _freq(pbuf, p_base, p_nb, qbuf, q_base, q_end, slop, max_dl, idx, i,
                         cache_blk, TF, DL, PRE, D, P, cnt, ptr)
        if f < 0:
            return empty, empty, empty, False
        if f > 0:
            out_d[got] = cands[i]
            out_f[got] = f
            out_l[got] = dl
            got += 1
    return out_d[:got], out_f[:got], out_l[:got], True


@njit(cache=True, nogil=True)
def phrase_topk(pbuf, p_base, p_nb, p_df, qbuf, q_base, q_end, slop, driver, max_dl, k,
                floor, mask, use_mask, idf, k1, b, avgdl, file_avgdl):
    """Top-``k`` of a query that is one phrase: (count, scores, docs, ok), unordered.

    The phrase frequency never exceeds the first term's frequency, nor (slop 0, where
    matches share no position) any term's, so those terms' block bounds
    (``engine.block_bound``) and frequencies in a candidate bound its score: a block of
    the rarest term that cannot reach the k-th score so far is skipped undecoded, and a
    candidate's positions are read only when its own bound can. Candidates come in doc
    order, so a later one tying the k-th loses on its id.
    """
    n = len(p_base)
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    hf = np.zeros(k, np.int64)
    hl = np.zeros(k, np.int64)
    cache_blk = np.full((n, 1), -1, np.int64)
    TF = np.empty((n, BLOCK_SIZE), np.int64)
    DL = np.empty((n, BLOCK_SIZE), np.int64)
    D = np.empty((n, BLOCK_SIZE), np.int64)
    PRE = np.empty((n, 129), np.int64)
    P = np.empty((n, 64), np.int64)
    cnt = np.empty(n, np.int64)
    ptr = np.empty(n, np.int64)
    blk = np.zeros(n, np.int64)
    pos = np.zeros(n, np.int64)
    bcnt = np.zeros(n, np.int64)
    idx = np.empty((n, 1), np.int64)
    hn = 0
    theta = floor
    dbase = p_base[driver]
    skip_blocks = slop == 0 or driver == 0
    for bd in range(p_nb[driver]):
        if skip_blocks and block_bound(pbuf, dbase + bd * META_SIZE, idf, k1, b, avgdl,
                                       file_avgdl) <= theta:
            continue
        c0 = _load(pbuf, dbase, p_nb[driver], qbuf, q_base[driver], q_end[driver], bd,
                   cache_blk[driver], TF[driver], DL[driver], PRE[driver], D[driver])
        if c0 < 0:
            return 0, hs, hd, False
        for r0 in range(c0):
            d = D[driver, r0]
            if use_mask and mask[d] == 0:
                continue
            dl = DL[driver, r0]
            mtf = TF[driver, r0] if skip_blocks else dl
            if _tscore(idf, np.float64(mtf), np.float64(dl), k1, b, avgdl) * (1.0 + 1e-12) \
                    <= theta:
                continue
            idx[driver, 0] = bd * BLOCK_SIZE + r0
            found = True
            for j in range(n):
                if j == driver:
                    continue
                base = p_base[j]
                while blk[j] < p_nb[j] and get_u32(pbuf, base + blk[j] * META_SIZE + 4) < d:
                    blk[j] += 1
                if blk[j] >= p_nb[j] or get_u32(pbuf, base + blk[j] * META_SIZE) > d:
                    found = False
                    break
                if cache_blk[j, 0] != blk[j]:
                    cj = _load(pbuf, base, p_nb[j], qbuf, q_base[j], q_end[j], blk[j],
                               cache_blk[j], TF[j], DL[j], PRE[j], D[j])
                    if cj < 0:
                        return 0, hs, hd, False
                    bcnt[j] = cj
                    pos[j] = 0
                while pos[j] < bcnt[j] and D[j, pos[j]] < d:
                    pos[j] += 1
                if pos[j] >= bcnt[j] or D[j, pos[j]] != d:
                    found = False
                    break
                idx[j, 0] = blk[j] * BLOCK_SIZE + pos[j]
                if (slop == 0 or j == 0) and TF[j, pos[j]] < mtf:
                    mtf = TF[j, pos[j]]
            if not found:
                continue
            if _tscore(idf, np.float64(mtf), np.float64(dl), k1, b, avgdl) * (1.0 + 1e-12) \
                    <= theta:
                continue
            f, _dl2, P = _freq(pbuf, p_base, p_nb, qbuf, q_base, q_end, slop, max_dl, idx, 0,
                              cache_blk, TF, DL, PRE, D, P, cnt, ptr)
            if f < 0:
                return 0, hs, hd, False
            if f == 0:
                continue
            sc = _tscore(idf, np.float64(f), np.float64(dl), k1, b, avgdl)
            if sc <= floor:
                continue
            if hn < k:
                hs[hn] = sc
                hd[hn] = d
                _sift_up(hs, hd, hf, hl, hn)
                hn += 1
            elif _better(sc, d, hs[0], hd[0]):
                hs[0] = sc
                hd[0] = d
                _sift_down(hs, hd, hf, hl, hn, 0)
            else:
                continue
            if hn == k and hs[0] > theta:
                theta = hs[0]
    return hn, hs, hd, True
