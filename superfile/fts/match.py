"""Compiled kernels of unranked token match: whole-term doc-id decoding, unions and probes.

A term's postings are sorted and unique, so one term's decoded ids need no de-duplication.
Intersections start from the rarest query group and probe each other term block by block:
a candidate is looked for only in the one block whose ``[first_doc, last_doc]`` range may
hold it (found by galloping over the block records), and only such blocks are decoded.
Terms must have passed ``codec.validate_term``; a block that fails to decode makes a
kernel return ``CORRUPT``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quiver.superfile.fts.codec import BLOCK_SIZE, CORRUPT, META_SIZE, decode_docs, get_u32

__all__ = ["kway_union", "mark_term", "probe_term", "term_docs"]


@njit(cache=True, nogil=True)
def term_docs(buf, base, nb, df):
    """Every doc id of one term, ascending (int64, ``df`` of them); ``(ids, ok)``."""
    out = np.empty(df, np.int64)
    pos = 0
    for j in range(nb):
        cnt = np.int64(buf[base + j * META_SIZE + 35]) + 1
        if pos + cnt > df:
            return out[:0], False
        if decode_docs(buf, base, nb, j, out[pos:pos + cnt]) != cnt:
            return out[:0], False
        pos += cnt
    return out, pos == df


@njit(cache=True, nogil=True)
def mark_term(buf, base, nb, mask, value):
    """Sets ``mask[doc] = value`` for every doc of one term; returns 0 or ``CORRUPT``."""
    block = np.empty(BLOCK_SIZE, np.int64)
    n = len(mask)
    for j in range(nb):
        cnt = decode_docs(buf, base, nb, j, block)
        if cnt < 0:
            return CORRUPT
        for i in range(cnt):
            d = block[i]
            if d < n:
                mask[d] = value
    return 0


@njit(cache=True, nogil=True)
def kway_union(docs, starts):
    """Sorted unique union of the ascending runs ``docs[starts[r]:starts[r + 1]]``.

    A binary heap of run heads keeps the merge at O(N log runs).
    """
    runs = len(starts) - 1
    out = np.empty(len(docs), np.int64)
    heap = np.empty(runs, np.int64)  # run indexes, ordered by their head value
    pos = starts[:-1].copy()
    h = 0
    for r in range(runs):
        if pos[r] < starts[r + 1]:
            heap[h] = r
            i = h
            h += 1
            while i > 0:
                p = (i - 1) >> 1
                if docs[pos[heap[p]]] > docs[pos[heap[i]]]:
                    heap[p], heap[i] = heap[i], heap[p]
                    i = p
                else:
                    break
    n = 0
    while h > 0:
        r = heap[0]
        d = docs[pos[r]]
        if n == 0 or out[n - 1] != d:
            out[n] = d
            n += 1
        pos[r] += 1
        if pos[r] >= starts[r + 1]:
            h -= 1
            heap[0] = heap[h]
        # Sift the root down.
        i = 0
        while True:
            c = 2 * i + 1
            if c >= h:
                break
            if c + 1 < h and docs[pos[heap[c + 1]]] < docs[pos[heap[c]]]:
                c += 1
            if docs[pos[heap[c]]] < docs[pos[heap[i]]]:
                heap[c], heap[i] = heap[i], heap[c]
                i = c
            else:
                break
    return out[:n]


@njit(cache=True, nogil=True, inline="always")
def _last(buf, base, j):
    return get_u32(buf, base + j * META_SIZE + 4)


@njit(cache=True, nogil=True)
def probe_term(buf, base, nb, cands, n, hit):
    """Sets ``hit[i] = 1`` for each of the ascending ``cands[:n]`` that the term holds.

    Returns the number of blocks decoded, or ``CORRUPT``.
    """
    block = np.empty(BLOCK_SIZE, np.int64)
    blk = 0
    cur = -1  # block currently decoded into ``block``
    cnt = 0
    p = 0
    decoded = 0
    for i in range(n):
        c = cands[i]
        if _last(buf, base, blk) < c:
            # Gallop to the first block whose last doc reaches c: few candidates over a
            # long list cost O(log) block records each instead of a walk over all.
            lo = blk
            step = 1
            hi = blk + 1
            while hi < nb and _last(buf, base, hi) < c:
                lo = hi
                step <<= 1
                hi = lo + step
            if hi > nb:
                hi = nb
            while hi - lo > 1:
                mid = (lo + hi) >> 1
                if _last(buf, base, mid) < c:
                    lo = mid
                else:
                    hi = mid
            blk = hi
            if blk >= nb:
                break
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
            hit[i] = 1
    return decoded
