"""Compiled checks and lookups over one dictionary block's bytes (layout in ``format``).

A block is parsed once, in one compiled pass over its bytes: entry values in range, term
offsets increasing, every term valid UTF-8 and the terms strictly increasing by bytes (which
is code point order). Lookups then binary-search the term bytes in place, so a block never
becomes a list of Python strings unless a caller asks for its terms (prefix expansion).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["BLOCK_OK", "BLOCK_PROBLEMS", "check_block", "check_sorted", "find_term"]

BLOCK_OK = 0
BAD_ENTRY = 1
BAD_OFFSETS = 2
BAD_UTF8 = 3
UNSORTED = 4
BLOCK_PROBLEMS = {
    BAD_ENTRY: "an entry is out of range",
    BAD_OFFSETS: "bad term offsets",
    BAD_UTF8: "a term is not valid UTF-8",
    UNSORTED: "terms are not sorted",
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
def check_block(data, count, num_docs, postings_len):
    """Checks a whole block (``count`` entries expected): the entries' df in [1, num_docs]
    and postings inside ``postings_len`` bytes, then the terms as ``check_sorted``.
    Returns (status, the term offsets, where the term bytes start)."""
    offs = np.zeros(count + 1, np.int64)
    if len(data) < 4 or _u32(data, 0) != count:
        return BAD_ENTRY, offs, 0
    p = 4 + count * _ENTRY
    t = p + 4 * (count + 1)
    if len(data) < t:
        return BAD_ENTRY, offs, 0
    for i in range(count):
        q = 4 + i * _ENTRY
        df = _u32(data, q)
        off = _u32(data, q + 4) | (_u32(data, q + 8) << 32)
        length = _u32(data, q + 12)
        # An offset past 2**62 is damage; testing it first keeps the sum from overflowing.
        if df == 0 or df > num_docs or off < 0 or off > postings_len - length:
            return BAD_ENTRY, offs, 0
    for i in range(count + 1):
        offs[i] = _u32(data, p + 4 * i)
    return check_sorted(data[t:], offs), offs, t


@njit(cache=True)
def find_term(data, text_at, offs, key):
    """``key`` (UTF-8 bytes) looked up in a block ``check_block`` accepted, whose term
    bytes start at ``text_at``: (index, df, postings offset, length, CRC) of its entry,
    index -1 when the block does not hold it."""
    lo = 0
    hi = len(offs) - 1
    n = len(key)
    while lo < hi:
        mid = (lo + hi) // 2
        if _compare(data, text_at + offs[mid], text_at + offs[mid + 1], key, 0, n) < 0:
            lo = mid + 1
        else:
            hi = mid
    if lo < len(offs) - 1 and _compare(data, text_at + offs[lo], text_at + offs[lo + 1],
                                       key, 0, n) == 0:
        q = 4 + lo * _ENTRY
        return (lo, _u32(data, q), _u32(data, q + 4) | (_u32(data, q + 8) << 32),
                _u32(data, q + 12), _u32(data, q + 16))
    return -1, 0, 0, 0, 0
