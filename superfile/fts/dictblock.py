"""Compiled checks and lookups over one dictionary block's bytes (layout in ``format``).

A block is checked once, in one compiled pass over its bytes, by the first lookup that
reaches it: entry values in range, term offsets increasing, every term valid UTF-8, the
terms strictly increasing by bytes (which is code point order) and the first one the
dictionary index's. Lookups binary-search the term bytes in place, in the same compiled
call, so a block never becomes Python objects unless a caller asks for its terms (prefix
expansion).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quiver.superfile.fts.codec import BLOCK_SIZE, validate_term

__all__ = [
    "BLOCK_OK",
    "BLOCK_PROBLEMS",
    "check_block",
    "check_resident",
    "check_sorted",
    "compare_bytes",
    "find_term",
]

BLOCK_OK = 0
BAD_ENTRY = 1
BAD_OFFSETS = 2
BAD_UTF8 = 3
UNSORTED = 4
NOT_FIRST = 5
BLOCK_PROBLEMS = {
    BAD_ENTRY: "an entry is out of range",
    BAD_OFFSETS: "bad term offsets",
    BAD_UTF8: "a term is not valid UTF-8",
    UNSORTED: "terms are not sorted",
    NOT_FIRST: "its first term is not the index's",
}
_ENTRY = 20  # bytes of one DIR_ENTRY record: df u32, off u64, len u32, crc u32


@njit(cache=True, inline="always")
def _u32(b, p):
    return (np.int64(b[p]) | (np.int64(b[p + 1]) << 8) | (np.int64(b[p + 2]) << 16)
            | (np.int64(b[p + 3]) << 24))


@njit(cache=True, inline="always")
def _cont(b, p, lo, hi):
    return lo <= b[p] <= hi


@njit(cache=True)
def _utf8_ok(b, s, e):
    p = s
    while p < e:
        c = b[p]
        if c < 0x80:
            p += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n = 2
        elif 0xE0 <= c <= 0xEF:
            n = 3
        elif 0xF0 <= c <= 0xF4:
            n = 4
        else:
            return False
        if p + n > e:
            return False
        # The second byte's range rules out overlong forms, surrogates and > U+10FFFF.
        lo, hi = 0x80, 0xBF
        if c == 0xE0:
            lo = 0xA0
        elif c == 0xED:
            hi = 0x9F
        elif c == 0xF0:
            lo = 0x90
        elif c == 0xF4:
            hi = 0x8F
        if not _cont(b, p + 1, lo, hi):
            return False
        for i in range(2, n):
            if not _cont(b, p + i, 0x80, 0xBF):
                return False
        p += n
    return True


@njit(cache=True, inline="always")
def _compare(b, s1, e1, k, s2, e2):
    # -1, 0 or 1 as b[s1:e1] sorts before, equal to or after k[s2:e2] (bytewise).
    n1 = e1 - s1
    n2 = e2 - s2
    n = min(n1, n2)
    for i in range(n):
        x = b[s1 + i]
        y = k[s2 + i]
        if x != y:
            return -1 if x < y else 1
    if n1 == n2:
        return 0
    return -1 if n1 < n2 else 1


# For callers that search other sorted byte strings (the dictionary index's first terms).
compare_bytes = _compare


@njit(cache=True)
def check_sorted(text, offs):
    """``BLOCK_OK`` when the terms ``text[offs[i]:offs[i + 1]]`` are non-empty, cover
    ``text`` exactly, are valid UTF-8 and strictly increase by bytes."""
    m = len(offs) - 1
    if m < 0 or offs[0] != 0 or offs[m] != len(text):
        return BAD_OFFSETS
    for i in range(m):
        if offs[i + 1] <= offs[i]:
            return BAD_OFFSETS
    for i in range(m):
        if not _utf8_ok(text, offs[i], offs[i + 1]):
            return BAD_UTF8
        if i > 0 and _compare(text, offs[i - 1], offs[i], text, offs[i], offs[i + 1]) >= 0:
            return UNSORTED
    return BLOCK_OK


@njit(cache=True)
def check_block(data, s, e, count, num_docs, postings_len, first_data, first_offs, j):
    """Checks block ``j``, ``data[s:e]`` (``count`` entries expected): the entries' df in
    [1, num_docs] and postings inside ``postings_len`` bytes, the terms as
    ``check_sorted``, the first one equal to the index's (``first_data``, ``first_offs``).
    Returns ``BLOCK_OK`` or what is wrong."""
    if e - s < 4 or _u32(data, s) != count:
        return BAD_ENTRY
    p = s + 4 + count * _ENTRY
    t = p + 4 * (count + 1)
    if e < t:
        return BAD_ENTRY
    for i in range(count):
        q = s + 4 + i * _ENTRY
        df = _u32(data, q)
        off = _u32(data, q + 4) | (_u32(data, q + 8) << 32)
        length = _u32(data, q + 12)
        # An offset past 2**62 is damage; testing it first keeps the sum from overflowing.
        if df == 0 or df > num_docs or off < 0 or off > postings_len - length:
            return BAD_ENTRY
    offs = np.empty(count + 1, np.int64)
    for i in range(count + 1):
        offs[i] = _u32(data, p + 4 * i)
    status = check_sorted(data[t:e], offs)
    if status != BLOCK_OK:
        return status
    if count > 0 and _compare(data, t, t + offs[1], first_data, first_offs[j],
                              first_offs[j + 1]) != 0:
        return NOT_FIRST
    return BLOCK_OK


@njit(cache=True, nogil=True)
def find_term(data, s, e, count, j, checked, key, num_docs, postings_len, first_data,
              first_offs):
    """``key`` (UTF-8 bytes) looked up in dictionary block ``j``, ``data[s:e]``, which is
    checked (``check_block``) the first time and marked in ``checked`` (one byte per
    block). Returns (status, index, df, postings offset, length, CRC): index -1 when the
    block does not hold the key; status ``BLOCK_OK`` unless the block is malformed."""
    if checked[j] == 0:
        status = check_block(data, s, e, count, num_docs, postings_len, first_data,
                             first_offs, j)
        if status != BLOCK_OK:
            return status, -1, 0, 0, 0, 0
        checked[j] = 1
    p = s + 4 + count * _ENTRY
    t = p + 4 * (count + 1)
    lo = 0
    hi = count
    n = len(key)
    while lo < hi:
        mid = (lo + hi) // 2
        if _compare(data, t + _u32(data, p + 4 * mid), t + _u32(data, p + 4 * mid + 4),
                    key, 0, n) < 0:
            lo = mid + 1
        else:
            hi = mid
    if lo < count and _compare(data, t + _u32(data, p + 4 * lo),
                               t + _u32(data, p + 4 * lo + 4), key, 0, n) == 0:
        q = s + 4 + lo * _ENTRY
        return (BLOCK_OK, lo, _u32(data, q), _u32(data, q + 4) | (_u32(data, q + 8) << 32),
                _u32(data, q + 12), _u32(data, q + 16))
    return BLOCK_OK, -1, 0, 0, 0, 0


@njit(cache=True, nogil=True)
def check_resident(data, block_off, per_block, num_terms, num_docs, postings, first_data,
                   first_offs, checked, validated):
    """Checks every block of a resident dictionary not checked yet and validates the
    postings of every term in it not validated yet (``codec.validate_term``), marking
    what passes in ``checked`` (per block) and ``validated`` (per term). What fails stays
    unmarked: the lookup that reaches it finds the problem and reports it. Returns the
    number of blocks left unmarked."""
    nblocks = len(block_off) - 1
    plen = len(postings)
    bad = 0
    for j in range(nblocks):
        s = block_off[j]
        e = block_off[j + 1]
        count = min(per_block, num_terms - j * per_block)
        if checked[j] == 0:
            if check_block(data, s, e, count, num_docs, plen, first_data, first_offs,
                           j) != BLOCK_OK:
                bad += 1
                continue
            checked[j] = 1
        for i in range(count):
            ordinal = j * per_block + i
            if validated[ordinal] != 0:
                continue
            q = s + 4 + i * _ENTRY
            df = _u32(data, q)
            off = _u32(data, q + 4) | (_u32(data, q + 8) << 32)
            length = _u32(data, q + 12)
            nb = (df + (BLOCK_SIZE - 1)) // BLOCK_SIZE
            if validate_term(postings, off, off + length, nb, df, num_docs) == 0:
                validated[ordinal] = 1
    return bad
