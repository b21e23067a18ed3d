"""Compiled BM25 top-k over the blocked postings of a few terms.

Document-at-a-time over doc-id intervals: interval boundaries are the first doc and
last doc + 1 of every block of every query term, so inside one interval each term has
either exactly one covering block or none. An interval whose summed block bounds cannot
beat the current threshold (the k-th best score, or the caller's floor) is skipped without
decoding anything. Inside a live interval the active terms are ordered by block bound and
split MaxScore-style: only the "essential" terms (those whose bounds alone can beat the
threshold) generate candidates; the others are decoded and probed only while the
candidate can still win. Blocks decode doc ids only; a posting's tf and length are read
from the bitstream when the posting is scored.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from superfile.fts.codec import decode_block, decode_docs, get_u32, posting_tf_dl

K1 = 1.2
B = 0.75

__all__ = ["K1", "B", "topk_kernel"]


@njit(cache=True, inline="always")
def _tscore(idf, tf, dl, k1, b, avgdl):
    return idf * (tf * (k1 + 1.0)) / (tf + k1 * (1.0 - b + b * dl / avgdl))


@njit(cache=True)
def block_bound(buf, m, idf, k1, b, avgdl, file_avgdl):
    """Upper bound of one block's contribution (see ``codec`` for the derivation)."""
    best_tf = np.float64(get_u32(buf, m + 24))
    best_dl = np.float64(get_u32(buf, m + 28))
    if avgdl == file_avgdl:
        return _tscore(idf, best_tf, best_dl, k1, b, avgdl)
    c = k1 * (1.0 - b)
    xq = k1 * b / avgdl
    x = k1 * b / file_avgdl
    max_tf = np.float64(get_u32(buf, m + 12))
    rmin = np.float64(get_u32(buf, m + 16)) / np.float64(get_u32(buf, m + 20))
    amin = c / max_tf
    g = amin + xq * rmin
    gbest = c / best_tf + x * best_dl / best_tf
    g2 = gbest + (xq - x) * rmin if xq > x else xq / x * gbest + (1.0 - xq / x) * amin
    if g2 > g:
        g = g2
    # Computed by a different formula than the scores: a relative margin covers rounding.
    return idf * (k1 + 1.0) / (1.0 + g) * (1.0 + 1e-9)


@njit(cache=True, inline="always")
def _better(s, d, rs, rd):
    return s > rs or (s == rs and d < rd)


@njit(cache=True)
def _sift_down(hs, hd, n, i):
    # Min-heap on "worse first": lower score, then higher doc id, sits at the root.
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        r = c + 1
        if r < n and _better(hs[c], hd[c], hs[r], hd[r]):
            c = r
        if _better(hs[i], hd[i], hs[c], hd[c]):
            hs[i], hs[c] = hs[c], hs[i]
            hd[i], hd[c] = hd[c], hd[i]
            i = c
        else:
            return


@njit(cache=True)
def _sift_up(hs, hd, i):
    while i > 0:
        p = (i - 1) // 2
        if _better(hs[p], hd[p], hs[i], hd[i]):
            hs[p], hs[i] = hs[i], hs[p]
            hd[p], hd[i] = hd[i], hd[p]
            i = p
        else:
            return


@njit(cache=True, nogil=True)
def topk_kernel(buf, t_base, t_nb, idf, gmask, solo, required, and_mode, driver, k, floor,
                mask, use_mask, k1, b, avgdl, file_avgdl):
    """Top-k of the terms whose postings start at ``buf[t_base[t]]`` (validated terms).

    ``gmask[t]`` is the bit set of query groups term ``t`` satisfies; in AND mode a doc must
    cover ``required``, and candidates come only from the terms of group bit ``driver`` (the
    caller picks the rarest group); ``solo[t]`` says some group has ``t`` as its only term,
    so a document without ``t`` fails AND at once. Only scores above ``floor`` count.
    Returns (count, scores, docs, blocks decoded, corrupt flag); the heap is unordered.
    """
    T = len(t_base)
    big = np.int64(1) << 40
    blk = np.zeros(T, np.int64)
    dec = np.full(T, -1, np.int64)
    cnt = np.zeros(T, np.int64)
    pos = np.zeros(T, np.int64)
    D = np.empty((T, 128), np.int64)
    TF = np.empty((T, 128), np.int64)
    DL = np.empty((T, 128), np.int64)
    full = np.zeros(T, np.bool_)
    act = np.empty(T, np.int64)
    ubs = np.empty(T, np.float64)
    cum = np.empty(T, np.float64)
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    hn = 0
    theta = floor
    decoded = 0
    lo = np.int64(0)
    while True:
        hi = big
        nxt = big
        na = 0
        covered = np.int64(0)
        for t in range(T):
            base = t_base[t]
            nb = t_nb[t]
            while blk[t] < nb and get_u32(buf, base + blk[t] * 36 + 4) < lo:
                blk[t] += 1
            if blk[t] >= nb:
                continue
            f = get_u32(buf, base + blk[t] * 36)
            if f > lo:
                if f < nxt:
                    nxt = f
                if f < hi:
                    hi = f
            else:
                last1 = get_u32(buf, base + blk[t] * 36 + 4) + 1
                if last1 < hi:
                    hi = last1
                act[na] = t
                na += 1
                covered |= gmask[t]
        if na == 0:
            if nxt == big:
                break
            lo = nxt
            continue
        if and_mode and covered != required:
            lo = hi
            continue
        total = 0.0
        for i in range(na):
            t = act[i]
            u = block_bound(buf, t_base[t] + blk[t] * 36, idf[t], k1, b, avgdl, file_avgdl)
            ubs[i] = u
            total += u
        if total <= theta:
            lo = hi
            continue
        # Order active terms by bound, ascending (few terms: insertion sort).
        for i in range(1, na):
            j = i
            while j > 0 and ubs[j - 1] > ubs[j]:
                ubs[j - 1], ubs[j] = ubs[j], ubs[j - 1]
                act[j - 1], act[j] = act[j], act[j - 1]
                j -= 1
        e = 0
        if and_mode:
            # Driver-group terms go last and alone generate candidates.
            for i in range(na):
                if gmask[act[i]] & driver == 0:
                    t = act[i]
                    u = ubs[i]
                    for j in range(i, e, -1):
                        act[j] = act[j - 1]
                        ubs[j] = ubs[j - 1]
                    act[e] = t
                    ubs[e] = u
                    e += 1
        acc = 0.0
        for i in range(na):
            acc += ubs[i]
            cum[i] = acc
        if not and_mode:
            while e < na and cum[e] <= theta:
                e += 1
        for i in range(e, na):
            t = act[i]
            if dec[t] != blk[t] or not full[t]:
                # Every posting of an essential block gets scored: decode it all at once.
                c = decode_block(buf, t_base[t], t_nb[t], blk[t], D[t], TF[t], DL[t])
                if c < 0:
                    return 0, hs, hd, decoded, True
                if dec[t] != blk[t]:
                    pos[t] = 0
                    decoded += 1
                dec[t] = blk[t]
                full[t] = True
                cnt[t] = c
            while pos[t] < cnt[t] and D[t, pos[t]] < lo:
                pos[t] += 1
        while True:
            d = big
            for i in range(e, na):
                t = act[i]
                if pos[t] < cnt[t] and D[t, pos[t]] < d:
                    d = D[t, pos[t]]
            if d >= hi:
                break
            partial = 0.0
            got = np.int64(0)
            skip = use_mask and mask[d] == 0
            for i in range(e, na):
                t = act[i]
                if pos[t] < cnt[t] and D[t, pos[t]] == d:
                    if not skip:
                        p = pos[t]
                        partial += _tscore(idf[t], np.float64(TF[t, p]), np.float64(DL[t, p]),
                                           k1, b, avgdl)
                        got |= gmask[t]
                    pos[t] += 1
            if skip:
                continue
            ok = True
            for i in range(e - 1, -1, -1):
                if partial + cum[i] <= theta:
                    ok = False
                    break
                t = act[i]
                if dec[t] != blk[t]:
                    c = decode_docs(buf, t_base[t], t_nb[t], blk[t], D[t])
                    if c < 0:
                        return 0, hs, hd, decoded, True
                    dec[t] = blk[t]
                    full[t] = False
                    cnt[t] = c
                    pos[t] = 0
                    decoded += 1
                while pos[t] < cnt[t] and D[t, pos[t]] < d:
                    pos[t] += 1
                if pos[t] < cnt[t] and D[t, pos[t]] == d:
                    p = pos[t]
                    if full[t]:
                        tf, dl = TF[t, p], DL[t, p]
                    else:
                        tf, dl = posting_tf_dl(buf, t_base[t], t_nb[t], blk[t], p)
                    partial += _tscore(idf[t], np.float64(tf), np.float64(dl), k1, b, avgdl)
                    got |= gmask[t]
                elif and_mode and solo[t]:
                    ok = False
                    break
            if not ok or partial <= theta:
                continue
            if and_mode and got != required:
                continue
            if hn < k:
                hs[hn] = partial
                hd[hn] = d
                _sift_up(hs, hd, hn)
                hn += 1
            elif _better(partial, d, hs[0], hd[0]):
                hs[0] = partial
                hd[0] = d
                _sift_down(hs, hd, hn, 0)
            if hn == k and hs[0] > theta:
                theta = hs[0]
                if total <= theta:
                    break
                if not and_mode:
                    while e < na and cum[e] <= theta:
                        e += 1
        lo = hi
    return hn, hs, hd, decoded, False
