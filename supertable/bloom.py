"""Bloom filters of a column's terms, so a query skips files that cannot hold a term.

Hashing runs compiled over Arrow's string buffers (offsets + bytes), so a
file's whole term list is hashed in one call; a query hashes its few terms
through the same function, which keeps build and probe bit-identical.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from numba import njit

BITS_PER_TERM = 10
NUM_HASHES = 7


@njit(cache=True)
def _fnv1a64(data, start, end, seed):
    h = np.uint64(14695981039346656037) ^ np.uint64(seed)
    prime = np.uint64(1099511628211)
    for i in range(start, end):
        h = (h ^ np.uint64(data[i])) * prime
    # Final avalanche so that nearby strings spread over the whole word.
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True)
def _hash_pairs(data, offsets, n):
    out = np.empty((n, 2), np.uint64)
    for i in range(n):
        out[i, 0] = _fnv1a64(data, offsets[i], offsets[i + 1], 0)
        out[i, 1] = _fnv1a64(data, offsets[i], offsets[i + 1], 0x9E3779B9) | np.uint64(1)
    return out


# The same hashes, for compiled callers that test filters themselves.
hash_pairs = _hash_pairs


@njit(cache=True)
def _set_bits(bits, pairs, num_hashes, m):
    for i in range(pairs.shape[0]):
        h1 = pairs[i, 0]
        h2 = pairs[i, 1]
        for j in range(num_hashes):
            pos = (h1 + np.uint64(j) * h2) % np.uint64(m)
            bits[pos >> np.uint64(6)] |= np.uint64(1) << (pos & np.uint64(63))


@njit(cache=True)
def _test_bits(bits, pairs, num_hashes, m):
    out = np.ones(pairs.shape[0], np.bool_)
    for i in range(pairs.shape[0]):
        h1 = pairs[i, 0]
        h2 = pairs[i, 1]
        for j in range(num_hashes):
            pos = (h1 + np.uint64(j) * h2) % np.uint64(m)
            if not (bits[pos >> np.uint64(6)] >> (pos & np.uint64(63))) & np.uint64(1):
                out[i] = False
                break
    return out


def _pairs(terms: pa.Array | list[str]) -> np.ndarray:
    arr = pa.array(terms, pa.large_string()) if isinstance(terms, list) else terms
    arr = arr.cast(pa.large_string())
    if arr.null_count:
        arr = arr.drop_null()
    if len(arr) == 0:
        return np.empty((0, 2), np.uint64)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return _hash_pairs(data, offsets, len(arr))


class TermBloom:
    """A Bloom filter over a set of terms (false positives possible, no false negatives)."""

    def __init__(self, bits: np.ndarray, num_hashes: int = NUM_HASHES) -> None:
        self.bits = np.ascontiguousarray(bits, dtype=np.uint64)
        self.num_hashes = num_hashes
        self.m = len(self.bits) * 64

    @classmethod
    def build(cls, terms: pa.Array) -> TermBloom:
        n = max(1, len(terms))
        words = max(1, math.ceil(n * BITS_PER_TERM / 64))
        bloom = cls(np.zeros(words, np.uint64))
        pairs = _pairs(terms)
        if len(pairs):
            _set_bits(bloom.bits, pairs, bloom.num_hashes, np.uint64(bloom.m))
        return bloom

    @staticmethod
    def hash_terms(terms: list[str]) -> np.ndarray:
        """The terms' hashes, computed once and tested against many filters."""
        return _pairs(terms)

    def might_contain(self, terms: list[str] | np.ndarray) -> np.ndarray:
        """One boolean per term (or per row of ``hash_terms``): False means certainly absent."""
        pairs = terms if isinstance(terms, np.ndarray) else _pairs(terms)
        if not len(pairs):
            return np.zeros(0, bool)
        return _test_bits(self.bits, pairs, self.num_hashes, np.uint64(self.m))
