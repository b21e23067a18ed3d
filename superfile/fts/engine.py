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

Across files (``table_topk``) the intervals of every file are listed once with their bounds
(``table_intervals``, kept by the caller's plan) and scored highest bound first for a
while, so the k-th best score reaches its final value early whichever file holds the best
rows; the rest follow in row order, each block decoded once, and the search ends as soon
as no interval left can beat the k-th best.

The BM25 formula is defined here once: ``K1``, ``B``, ``idf`` and the per-posting score.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quiver.superfile.errors import QueryError
from quiver.superfile.fts.codec import (
    BLOCK_SIZE,
    META_SIZE,
    decode_block,
    decode_docs,
    get_u32,
    posting_tf_dl,
)

K1 = 1.2
B = 0.75

__all__ = ["K1", "B", "idf", "table_block_intervals", "table_intervals", "table_topk",
           "topk_kernel"]


def idf(n_docs: float, dfs: np.ndarray) -> np.ndarray:
    """BM25 idf of terms held by ``dfs`` of ``n_docs`` documents:
    ``ln(1 + (N - df + 0.5) / (df + 0.5))``, float64."""
    dfs = np.asarray(dfs, np.float64)
    # A query has a few terms: their range is checked faster in Python than by numpy.
    values = dfs.tolist()
    if values and (min(values) < 0 or max(values) > n_docs):
        raise QueryError("collection statistics have a document frequency outside [0, N]")
    return np.log1p((n_docs - dfs + 0.5) / (dfs + 0.5))


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
def _swap(hs, hd, hf, hl, i, j):
    hs[i], hs[j] = hs[j], hs[i]
    hd[i], hd[j] = hd[j], hd[i]
    hf[i], hf[j] = hf[j], hf[i]
    hl[i], hl[j] = hl[j], hl[i]


@njit(cache=True)
def _sift_down(hs, hd, hf, hl, n, i):
    # Min-heap on "worse first": lower score, then higher id, sits at the root.
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        r = c + 1
        if r < n and _better(hs[c], hd[c], hs[r], hd[r]):
            c = r
        if _better(hs[i], hd[i], hs[c], hd[c]):
            _swap(hs, hd, hf, hl, i, c)
            i = c
        else:
            return


@njit(cache=True)
def _sift_up(hs, hd, hf, hl, i):
    while i > 0:
        p = (i - 1) // 2
        if _better(hs[p], hd[p], hs[i], hd[i]):
            _swap(hs, hd, hf, hl, p, i)
            i = p
        else:
            return


@njit(cache=True)
def _below32(x):
    """The largest float32 value strictly below ``float32(x)``, as float64."""
    a = np.empty(1, np.float32)
    a[0] = x
    bits = a.view(np.int32)
    if a[0] > 0:
        bits[0] -= 1
    elif a[0] == 0:
        bits[0] = np.int32(-2147483647)
    else:
        bits[0] += 1
    return np.float64(a[0])


@njit(cache=True, inline="always")
def _heap_floor(s, tied):
    # Across files ids do not follow scan order, so a later row tying the k-th (in float32,
    # the precision results carry) may still win on its lower id: only scores strictly
    # below the k-th's float32 value are safe to prune.
    return _below32(s) if tied else s


@njit(cache=True, nogil=True)
def _file_topk(buf, t_base, t_nb, idf, gmask, solo, required, and_mode, driver, k, floor,
               mask, m_off, use_mask, k1, b, avgdl, file_avgdl,
               hs, hd, hf, hl, hn, id_base, ids, i_off, file_i, tied, D, TF, DL):
    """Adds one file's matches to the heap ``(hs, hd, hf, hl)`` holding ``hn`` entries.

    ``avgdl[t]`` and ``file_avgdl[t]`` are term ``t``'s scoring and in-file average
    lengths (terms of different columns differ).

    Heap ids are ``ids[i_off + doc]``, or ``id_base + doc`` when ``i_off`` is negative;
    with ``tied`` scores enter rounded to float32.
    Returns (entries, blocks decoded, corrupt flag).
    """
    T = len(t_base)
    big = np.int64(1) << 40
    blk = np.zeros(T, np.int64)
    dec = np.full(T, -1, np.int64)
    cnt = np.zeros(T, np.int64)
    pos = np.zeros(T, np.int64)
    full = np.zeros(T, np.bool_)
    act = np.empty(T, np.int64)
    ubs = np.empty(T, np.float64)
    cum = np.empty(T, np.float64)
    theta = floor
    if hn == k:
        theta = max(theta, _heap_floor(hs[0], tied))
    decoded = 0
    lo = np.int64(0)
    while True:
        hi, na, covered, nxt = _next_interval(buf, t_base, t_nb, gmask, blk, act, lo)
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
            u = block_bound(buf, t_base[t] + blk[t] * META_SIZE, idf[t], k1, b, avgdl[t],
                            file_avgdl[t])
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
                    return hn, decoded, True
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
            skip = use_mask and mask[m_off + d] == 0
            for i in range(e, na):
                t = act[i]
                if pos[t] < cnt[t] and D[t, pos[t]] == d:
                    if not skip:
                        p = pos[t]
                        partial += _tscore(idf[t], np.float64(TF[t, p]), np.float64(DL[t, p]),
                                           k1, b, avgdl[t])
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
                        return hn, decoded, True
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
                    partial += _tscore(idf[t], np.float64(tf), np.float64(dl), k1, b, avgdl[t])
                    got |= gmask[t]
                elif and_mode and solo[t]:
                    ok = False
                    break
            if not ok or partial <= theta:
                continue
            if and_mode and got != required:
                continue
            s = np.float64(np.float32(partial)) if tied else partial
            gid = ids[i_off + d] if i_off >= 0 else id_base + d
            if hn < k:
                hs[hn] = s
                hd[hn] = gid
                hf[hn] = file_i
                hl[hn] = d
                _sift_up(hs, hd, hf, hl, hn)
                hn += 1
            elif _better(s, gid, hs[0], hd[0]):
                hs[0] = s
                hd[0] = gid
                hf[0] = file_i
                hl[0] = d
                _sift_down(hs, hd, hf, hl, hn, 0)
            else:
                continue
            if hn == k:
                h = _heap_floor(hs[0], tied)
                if h > theta:
                    theta = h
                    if total <= theta:
                        break
                    if not and_mode:
                        while e < na and cum[e] <= theta:
                            e += 1
        lo = hi
    return hn, decoded, False


_NO_IDS = np.zeros(1, np.int64)


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
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    hf = np.empty(k, np.int64)
    hl = np.empty(k, np.int64)
    D = np.empty((T, BLOCK_SIZE), np.int64)
    TF = np.empty((T, BLOCK_SIZE), np.int64)
    DL = np.empty((T, BLOCK_SIZE), np.int64)
    hn, decoded, bad = _file_topk(buf, t_base, t_nb, idf, gmask, solo, required, and_mode,
                                  driver, k, floor, mask, 0, use_mask, k1, b, avgdl,
                                  file_avgdl, hs, hd, hf, hl, 0, 0, _NO_IDS, -1, 0, False,
                                  D, TF, DL)
    return hn, hs, hd, decoded, bad


@njit(cache=True)
def _max_terms(f_t0):
    m = 1
    for f in range(len(f_t0) - 1):
        m = max(m, f_t0[f + 1] - f_t0[f])
    return m


@njit(cache=True, inline="always")
def _next_interval(buf, t_base, t_nb, gmask, blk, act, lo):
    """Moves every term to its first block ending at or after ``lo``; returns (start, end,
    active terms, their groups, next start) of the interval at ``lo``: ``act[:na]`` the terms
    whose block covers it. With no term covering ``lo``, na is 0 and the next interval
    starts at ``next`` (``2**40``: none left)."""
    big = np.int64(1) << 40
    hi = big
    nxt = big
    na = 0
    covered = np.int64(0)
    for t in range(len(t_base)):
        base = t_base[t]
        nb = t_nb[t]
        while blk[t] < nb and get_u32(buf, base + blk[t] * META_SIZE + 4) < lo:
            blk[t] += 1
        if blk[t] >= nb:
            continue
        f = get_u32(buf, base + blk[t] * META_SIZE)
        if f > lo:
            if f < nxt:
                nxt = f
            if f < hi:
                hi = f
        else:
            last1 = get_u32(buf, base + blk[t] * META_SIZE + 4) + 1
            if last1 < hi:
                hi = last1
            act[na] = t
            na += 1
            covered |= gmask[t]
    return hi, na, covered, nxt


@njit(cache=True, nogil=True)
def table_intervals(buf, f_t0, t_base, t_nb, t_q, idf_q, gmask_q, required, and_mode, k1, b,
                    avgdl, width):
    """Every file's doc-id intervals that hold a match, with their exact score bounds.

    Arguments are ``table_topk``'s. Interval ``i`` is rows ``[lo[i], hi[i])`` of file
    ``file[i]``; the file's ``t``-th term has postings there in its block ``blk[i, t]`` (-1:
    none), at most ``width`` of them, the best scoring ``ub[i, t]`` (every posting is decoded
    and scored once: an interval's bound is the sum of what each term scores at best inside
    it, much tighter than the bounds of whole blocks). ``bound[i]`` sums them. Intervals that
    cannot match (no posting; in AND mode a group missing) are left out. Returns (file, lo,
    hi, bound, blk, ub, index of a file whose postings failed to decode or -1), in file and
    row order.
    """
    F = len(f_t0) - 1
    max_t = _max_terms(f_t0)
    # An interval starts at 0, a block's first row, one past a block's last row or at the
    # posting after ``width`` of one term.
    cap = F
    for i in range(len(t_nb)):
        cap += 2 * t_nb[i] + (t_nb[i] * BLOCK_SIZE) // max(width, 1)
    big = np.int64(1) << 40
    iv_file = np.empty(cap, np.int32)
    iv_lo = np.empty(cap, np.int64)
    iv_hi = np.empty(cap, np.int64)
    iv_bound = np.empty(cap, np.float64)
    iv_blk = np.full((cap, max_t), -1, np.int32)
    iv_ub = np.zeros((cap, max_t), np.float64)
    blk = np.zeros(max_t, np.int64)
    act = np.empty(max_t, np.int64)
    gm = np.empty(max_t, np.int64)
    D = np.empty((max_t, BLOCK_SIZE), np.int64)
    TF = np.empty((max_t, BLOCK_SIZE), np.int64)
    DL = np.empty((max_t, BLOCK_SIZE), np.int64)
    dec = np.empty(max_t, np.int64)
    cnt = np.zeros(max_t, np.int64)
    pos = np.zeros(max_t, np.int64)
    n = 0
    for f in range(F):
        s = f_t0[f]
        T = f_t0[f + 1] - s
        if T == 0:
            continue
        covered = np.int64(0)
        for t in range(T):
            gm[t] = gmask_q[t_q[s + t]]
            covered |= gm[t]
            blk[t] = 0
            dec[t] = -1
        if and_mode and covered != required:
            continue
        tb = t_base[s:s + T]
        tn = t_nb[s:s + T]
        lo = np.int64(0)
        while True:
            hi, na, covered, nxt = _next_interval(buf, tb, tn, gm[:T], blk, act, lo)
            if na == 0:
                if nxt == big:
                    break
                lo = nxt
                continue
            for i in range(na):
                t = act[i]
                if dec[t] != blk[t]:
                    c = decode_block(buf, tb[t], tn[t], blk[t], D[t], TF[t], DL[t])
                    if c < 0:
                        return (iv_file[:0], iv_lo[:0], iv_hi[:0], iv_bound[:0], iv_blk[:0],
                                iv_ub[:0], f)
                    dec[t] = blk[t]
                    cnt[t] = c
                    pos[t] = 0
            # Every posting lies in one interval, and intervals come in row order: pos[t] is
            # each term's first posting at or after lo. The interval is cut before the
            # posting after ``width`` of any term.
            a = lo
            while a < hi:
                cut = hi
                for i in range(na):
                    t = act[i]
                    q = pos[t] + width
                    if q < cnt[t] and D[t, q] < cut:
                        cut = D[t, q]
                total = 0.0
                covered = np.int64(0)
                for i in range(na):
                    t = act[i]
                    best = -1.0
                    w = idf_q[t_q[s + t]]
                    while pos[t] < cnt[t] and D[t, pos[t]] < cut:
                        p = pos[t]
                        u = _tscore(w, np.float64(TF[t, p]), np.float64(DL[t, p]), k1, b, avgdl)
                        if u > best:
                            best = u
                        pos[t] += 1
                    if best >= 0.0:
                        # A margin: a document's terms are summed in another order.
                        best *= 1.0 + 1e-9
                        iv_blk[n, t] = blk[t]
                        iv_ub[n, t] = best
                        total += best
                        covered |= gm[t]
                if covered != 0 and not (and_mode and covered != required):
                    iv_file[n] = f
                    iv_lo[n] = a
                    iv_hi[n] = cut
                    iv_bound[n] = total
                    n += 1
                else:
                    iv_blk[n, :] = -1
                a = cut
            lo = hi
    return iv_file[:n], iv_lo[:n], iv_hi[:n], iv_bound[:n], iv_blk[:n], iv_ub[:n], -1


@njit(cache=True, nogil=True)
def table_block_intervals(buf, f_t0, t_base, t_nb, t_q, idf_q, gmask_q, required, and_mode,
                          f_avgdl, k1, b, avgdl):
    """``table_intervals``' arrays with bounds from the postings blocks' metadata alone.

    Intervals are cut at every block's first row and one past its last, so each term has
    at most one block in an interval, bounded by ``block_bound``: looser than what
    ``table_intervals`` finds by decoding every posting, but the cost is per block, not per
    posting (what a plan searched once should pay). Returns (file, lo, hi, bound, blk, ub),
    in file and row order.
    """
    F = len(f_t0) - 1
    max_t = _max_terms(f_t0)
    cap = F
    for i in range(len(t_nb)):
        cap += 2 * t_nb[i]
    big = np.int64(1) << 40
    iv_file = np.empty(cap, np.int32)
    iv_lo = np.empty(cap, np.int64)
    iv_hi = np.empty(cap, np.int64)
    iv_bound = np.empty(cap, np.float64)
    iv_blk = np.full((cap, max_t), -1, np.int32)
    iv_ub = np.zeros((cap, max_t), np.float64)
    blk = np.zeros(max_t, np.int64)
    act = np.empty(max_t, np.int64)
    gm = np.empty(max_t, np.int64)
    n = 0
    for f in range(F):
        s = f_t0[f]
        T = f_t0[f + 1] - s
        if T == 0:
            continue
        covered = np.int64(0)
        for t in range(T):
            gm[t] = gmask_q[t_q[s + t]]
            covered |= gm[t]
            blk[t] = 0
        if and_mode and covered != required:
            continue
        tb = t_base[s:s + T]
        tn = t_nb[s:s + T]
        lo = np.int64(0)
        while True:
            hi, na, covered, nxt = _next_interval(buf, tb, tn, gm[:T], blk, act, lo)
            if na == 0:
                if nxt == big:
                    break
                lo = nxt
                continue
            if not (and_mode and covered != required):
                total = 0.0
                for i in range(na):
                    t = act[i]
                    u = block_bound(buf, tb[t] + blk[t] * META_SIZE, idf_q[t_q[s + t]], k1, b,
                                    avgdl, f_avgdl[f])
                    total += u
                    iv_blk[n, t] = blk[t]
                    iv_ub[n, t] = u
                iv_file[n] = f
                iv_lo[n] = lo
                iv_hi[n] = hi
                iv_bound[n] = total
                n += 1
            lo = hi
    return iv_file[:n], iv_lo[:n], iv_hi[:n], iv_bound[:n], iv_blk[:n], iv_ub[:n]


@njit(cache=True, inline="always")
def _activate(iv_blk, iv_ub, j, n, blk, act, ubs):
    # The terms (of the file's n) with a block covering interval j, and those blocks' bounds.
    na = 0
    for i in range(n):
        bi = iv_blk[j, i]
        if bi >= 0:
            blk[i] = bi
            act[na] = i
            ubs[na] = iv_ub[j, i]
            na += 1
    return na


@njit(cache=True, nogil=True)
def table_topk(buf, f_t0, t_base, t_nb, t_q, idf_q, gmask_q, solo_q, required, and_mode,
               f_driver, k, floor, masks, f_moff, f_idbase, ids, f_ioff, k1, b, avgdl,
               iv_file, iv_lo, iv_hi, iv_bound, iv_blk, iv_ub, iv_order, seed):
    """One top-k over many files' postings, all held in ``buf``.

    File ``f`` owns entries ``f_t0[f]:f_t0[f + 1]`` of ``t_base`` / ``t_nb`` / ``t_q`` (its
    present query terms, ``t_q`` indexing ``idf_q``, ``gmask_q`` and ``solo_q``); its rows
    are ``ids[f_ioff[f] + doc]`` in the ranking (``f_idbase[f] + doc`` where ``f_ioff[f]`` is
    negative), ties going to the lower id. ``f_moff[f]`` is
    the offset of its row mask in ``masks`` (-1: every row counts). Scores are ranked as
    float32, the precision results carry.

    The ``iv_*`` arrays are ``table_intervals``' for the same arguments and ``iv_order``
    ranks them by bound, highest first. The search first scores the ``seed`` intervals of
    highest bound, across all files, so the k-th best score starts near its final value;
    it then goes through the rest in file and row order (each block decoded once), skipping
    every interval whose bound cannot beat the k-th best. Inside an interval it works as
    ``_file_topk`` does. Returns (count, scores, ids, file indexes, docs, blocks decoded,
    index of a corrupt file or -1); the heap is unordered.
    """
    E = len(t_base)
    big = np.int64(1) << 40
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    hf = np.empty(k, np.int64)
    hl = np.empty(k, np.int64)
    max_t = _max_terms(f_t0)
    # One decoded block per term of the file at hand (small: it stays in the nearest cache).
    D = np.empty((max_t, BLOCK_SIZE), np.int64)
    TF = np.empty((max_t, BLOCK_SIZE), np.int64)
    DL = np.empty((max_t, BLOCK_SIZE), np.int64)
    blk = np.zeros(max_t, np.int64)
    dec = np.full(max_t, -1, np.int64)
    cnt = np.zeros(max_t, np.int64)
    pos = np.zeros(max_t, np.int64)
    full = np.zeros(max_t, np.bool_)
    act = np.empty(max_t, np.int64)
    ubs = np.empty(max_t, np.float64)
    cum = np.empty(max_t, np.float64)
    idf = np.empty(E, np.float64)
    gmask = np.empty(E, np.int64)
    solo = np.empty(E, np.bool_)
    for i in range(E):
        q = t_q[i]
        idf[i] = idf_q[q]
        gmask[i] = gmask_q[q]
        solo[i] = solo_q[q]
    t_avg = np.full(E, avgdl, np.float64)
    n_iv = len(iv_file)
    n_seed = min(seed, n_iv)
    done = np.zeros(n_iv, np.bool_)
    cur = -1
    hn = 0
    decoded = 0
    theta = floor
    for step in range(n_seed + n_iv):
        if step < n_seed:
            iv = iv_order[step]
            if iv_bound[iv] <= theta:
                # Bounds only fall from here: no interval left can beat the k-th best.
                break
            done[iv] = True
        else:
            iv = step - n_seed
            if done[iv] or iv_bound[iv] <= theta:
                continue
        total = iv_bound[iv]
        lo = iv_lo[iv]
        hi = iv_hi[iv]
        f = iv_file[iv]
        if f != cur:
            dec[:] = -1
            cur = f
        s0 = f_t0[f]
        driver = f_driver[f]
        m_off = f_moff[f]
        i_off = f_ioff[f]
        id_base = f_idbase[f]
        na = _activate(iv_blk, iv_ub, iv, f_t0[f + 1] - s0, blk, act, ubs)
        for i in range(na):
            # Intervals come out of row order: rewind a decoded block an earlier interval of
            # which comes after a later one.
            t = act[i]
            if dec[t] == blk[t] and pos[t] > 0 and D[t, pos[t] - 1] >= lo:
                pos[t] = 0
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
                if gmask[s0 + act[i]] & driver == 0:
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
                c = decode_block(buf, t_base[s0 + t], t_nb[s0 + t], blk[t], D[t], TF[t], DL[t])
                if c < 0:
                    return hn, hs, hd, hf, hl, decoded, f
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
            skip = m_off >= 0 and masks[m_off + d] == 0
            for i in range(e, na):
                t = act[i]
                if pos[t] < cnt[t] and D[t, pos[t]] == d:
                    if not skip:
                        p = pos[t]
                        partial += _tscore(idf[s0 + t], np.float64(TF[t, p]), np.float64(DL[t, p]),
                                           k1, b, t_avg[s0 + t])
                        got |= gmask[s0 + t]
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
                    c = decode_docs(buf, t_base[s0 + t], t_nb[s0 + t], blk[t], D[t])
                    if c < 0:
                        return hn, hs, hd, hf, hl, decoded, f
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
                        tf, dl = posting_tf_dl(buf, t_base[s0 + t], t_nb[s0 + t], blk[t], p)
                    partial += _tscore(idf[s0 + t], np.float64(tf), np.float64(dl), k1, b,
                                       t_avg[s0 + t])
                    got |= gmask[s0 + t]
                elif and_mode and solo[s0 + t]:
                    ok = False
                    break
            if not ok or partial <= theta:
                continue
            if and_mode and got != required:
                continue
            s = np.float64(np.float32(partial))
            gid = ids[i_off + d] if i_off >= 0 else id_base + d
            if hn < k:
                hs[hn] = s
                hd[hn] = gid
                hf[hn] = f
                hl[hn] = d
                _sift_up(hs, hd, hf, hl, hn)
                hn += 1
            elif _better(s, gid, hs[0], hd[0]):
                hs[0] = s
                hd[0] = gid
                hf[0] = f
                hl[0] = d
                _sift_down(hs, hd, hf, hl, hn, 0)
            else:
                continue
            if hn == k:
                h = _below32(hs[0])
                if h > theta:
                    theta = h
                    if total <= theta:
                        break
                    if not and_mode:
                        while e < na and cum[e] <= theta:
                            e += 1
    return hn, hs, hd, hf, hl, decoded, -1
