"""One compiled pass over a table's resident full-text indexes for a query's terms.

For each (file, term) the pass tests the file's term Bloom filter; where the file may hold
the term and its index is resident, it finds the term in the dictionary (the block checked
the first time, as ``dictblock.find_term`` does) and validates the term's postings the
first time (``codec.validate_term``, remembered per term in the reader). Out come each
pair's Bloom answer, document frequency, postings offset and length: one call for the
whole table where a plan used to make a few Python calls per file and term.

``TableTerms`` (what the pass reads of each file) is built once per table version and
column from the files whose indexes are open already (a file is never opened for it);
files not covered go the per-file way, and the next query rebuilds it to take them in.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, types
from numba.typed import List

from quiver.superfile.errors import CorruptFileError
from quiver.superfile.fts.codec import BLOCK_SIZE, validate_term
from quiver.superfile.fts.dictblock import BLOCK_OK, BLOCK_PROBLEMS, compare_bytes, find_term
from quiver.superfile.fts.reader import FtsIndexReader
from quiver.supertable.bloom import hash_pairs
from quiver.supertable.manifest import FileEntry
from quiver.supertable.readers import ReaderPool

__all__ = ["Found", "TableTerms", "forget", "settle_checks", "table_terms"]

log = logging.getLogger(__name__)

_BYTES = types.Array(types.uint8, 1, "C", readonly=True)
_INTS = types.Array(types.int64, 1, "C", readonly=True)
_FLAGS = types.Array(types.uint8, 1, "C")
_BITS = types.Array(types.uint64, 1, "C", readonly=True)
_NONE_U8 = np.zeros(1, np.uint8)
_NONE_I64 = np.zeros(2, np.int64)
_NONE_U64 = np.zeros(1, np.uint64)

# Error kinds of the pass: a malformed dictionary block, malformed postings.
_BAD_BLOCK = 1
_BAD_POSTINGS = 2


@njit(cache=True, nogil=True)
def _lookup(has_bloom, blooms, bloom_m, num_hashes, loaded, dicts, block_offs, first_datas,
            first_offss, block_oks, validated, postings, num_docs, num_terms, per_block,
            key_data, key_offs):
    nf = len(loaded)
    nt = len(key_offs) - 1
    pairs = hash_pairs(key_data, key_offs, nt)
    maybe = np.zeros((nf, nt), np.uint8)
    df = np.zeros((nf, nt), np.int64)
    off = np.zeros((nf, nt), np.int64)
    length = np.zeros((nf, nt), np.int64)
    err = np.zeros(5, np.int64)  # kind, file, term, status, block
    for f in range(nf):
        for t in range(nt):
            if has_bloom[f]:
                bits = blooms[f]
                m = np.uint64(bloom_m[f])
                h1 = pairs[t, 0]
                h2 = pairs[t, 1]
                present = True
                for j in range(num_hashes[f]):
                    pos = (h1 + np.uint64(j) * h2) % m
                    if not (bits[pos >> np.uint64(6)] >> (pos & np.uint64(63))) & np.uint64(1):
                        present = False
                        break
                if not present:
                    continue
            maybe[f, t] = 1
            if not loaded[f]:
                continue
            ks = key_offs[t]
            key = key_data[ks:key_offs[t + 1]]
            fd = first_datas[f]
            fo = first_offss[f]
            # The last block whose first term is <= the key (bytes order is code point order).
            lo = 0
            hi = len(fo) - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if compare_bytes(fd, fo[mid], fo[mid + 1], key, 0, len(key)) <= 0:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo - 1
            if j < 0:
                continue
            bo = block_offs[f]
            count = min(per_block[f], num_terms[f] - j * per_block[f])
            plen = len(postings[f])
            status, i, d, o, n, _crc = find_term(
                dicts[f], bo[j], bo[j + 1], count, j, block_oks[f], key, num_docs[f], plen,
                fd, fo)
            if status != BLOCK_OK:
                err[0] = _BAD_BLOCK
                err[1] = f
                err[2] = t
                err[3] = status
                err[4] = j
                return maybe, df, off, length, err
            if i < 0:
                continue
            ordinal = j * per_block[f] + i
            seen = validated[f]
            if seen[ordinal] == 0:
                nb = (d + (BLOCK_SIZE - 1)) // BLOCK_SIZE
                if validate_term(postings[f], o, o + n, nb, d, num_docs[f]) != 0:
                    err[0] = _BAD_POSTINGS
                    err[1] = f
                    err[2] = t
                    return maybe, df, off, length, err
                seen[ordinal] = 1
            df[f, t] = d
            off[f, t] = o
            length[f, t] = n
    return maybe, df, off, length, err


@dataclass(frozen=True)
class Found:
    """The pass's answer for a query's terms: per (file, term) whether the file's Bloom
    filter allows the term (``maybe``), and for covered files its df (0: absent), postings
    offset and length inside ``TableTerms.postings[file]``."""

    maybe: np.ndarray
    df: np.ndarray
    off: np.ndarray
    length: np.ndarray


class TableTerms:
    """What the compiled pass reads of each file of one table version (see the module)."""

    def __init__(self, pool: ReaderPool, column: str, files: list[FileEntry]) -> None:
        n = len(files)
        self.files = files
        self.readers: list[FtsIndexReader | None] = [None] * n
        self.has_bloom = np.zeros(n, np.uint8)
        self.bloom_m = np.zeros(n, np.int64)
        self.num_hashes = np.zeros(n, np.int64)
        self.loaded = np.zeros(n, np.uint8)
        self.num_docs = np.zeros(n, np.int64)
        self.num_terms = np.zeros(n, np.int64)
        self.per_block = np.ones(n, np.int64)
        self.blooms = List.empty_list(_BITS)
        self.dicts = List.empty_list(_BYTES)
        self.postings = List.empty_list(_BYTES)
        self.first_datas = List.empty_list(_BYTES)
        self.block_offs = List.empty_list(_INTS)
        self.first_offss = List.empty_list(_INTS)
        self.block_oks = List.empty_list(_FLAGS)
        self.validated = List.empty_list(_FLAGS)
        self.postings_py: list[np.ndarray] = []
        for i, entry in enumerate(files):
            summary = pool.summary(entry)
            bloom = summary.blooms.get(column) if summary else None
            if bloom is not None:
                self.has_bloom[i] = 1
                self.bloom_m[i] = bloom.m
                self.num_hashes[i] = bloom.num_hashes
                self.blooms.append(bloom.bits)
            else:
                self.blooms.append(_NONE_U64)
            fts = pool.open_fts(entry, column)
            parts = fts.resident_lookup() if fts is not None else None
            if parts is None:
                for lst in (self.dicts, self.postings, self.first_datas):
                    lst.append(_NONE_U8)
                self.block_offs.append(_NONE_I64)
                self.first_offss.append(_NONE_I64)
                self.block_oks.append(np.zeros(1, np.uint8))
                self.validated.append(np.zeros(1, np.uint8))
                self.postings_py.append(_NONE_U8)
                continue
            self.readers[i] = fts
            self.loaded[i] = 1
            self.num_docs[i] = fts.num_docs
            self.num_terms[i] = parts.num_terms
            self.per_block[i] = parts.per_block
            self.dicts.append(parts.dict_data)
            self.postings.append(parts.postings)
            self.postings_py.append(parts.postings)
            self.first_datas.append(parts.first_data)
            self.block_offs.append(parts.block_off)
            self.first_offss.append(parts.first_offs)
            self.block_oks.append(parts.block_ok)
            self.validated.append(parts.validated)
        self.all_loaded = bool(self.loaded.all())
        unchecked = [r for r in self.readers if r is not None and not r.fully_checked]
        if unchecked:
            _CHECKS.submit(_check_quietly, unchecked)

    def lookup(self, terms: tuple[str, ...]) -> Found:
        """Every file's Bloom answer and dictionary entry for ``terms`` (see ``Found``);
        a malformed dictionary block or postings raise ``CorruptFileError``."""
        raw = [t.encode() for t in terms]
        key_offs = np.zeros(len(raw) + 1, np.int64)
        np.cumsum([len(b) for b in raw], out=key_offs[1:])
        key_data = np.frombuffer(b"".join(raw), np.uint8) if key_offs[-1] else _NONE_U8
        maybe, df, off, length, err = _lookup(
            self.has_bloom, self.blooms, self.bloom_m, self.num_hashes, self.loaded,
            self.dicts, self.block_offs, self.first_datas, self.first_offss, self.block_oks,
            self.validated, self.postings, self.num_docs, self.num_terms, self.per_block,
            key_data, key_offs)
        if err[0] == _BAD_BLOCK:
            raise CorruptFileError(
                f"full-text dictionary block {int(err[4])} of {self.files[int(err[1])].path} "
                f"is malformed ({BLOCK_PROBLEMS[int(err[3])]})")
        if err[0] == _BAD_POSTINGS:
            raise CorruptFileError(f"postings of term {terms[int(err[2])]!r} in "
                                   f"{self.files[int(err[1])].path} are malformed")
        return Found(maybe, df, off, length)


# Checks resident indexes whole, off the searching thread (its kernel releases the GIL):
# a search checks the blocks and postings it reaches itself, so until a file is done,
# its distinct queries pay a few microseconds per block they are first to reach.
_CHECKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quiver-fts-checks")


def _check_quietly(readers: list[FtsIndexReader]) -> None:
    for reader in readers:
        try:
            reader.check_resident()
        except Exception as exc:  # a search that reaches the damage reports it
            log.debug("a full-text index was left for its searches to check: %s", exc)


def settle_checks() -> None:
    """Waits for the whole-index checks started so far (the warm-up, which must leave
    every kernel compiled before it returns)."""
    _CHECKS.submit(int).result()


class _Cache:
    """The latest ``TableTerms`` of a pool, per (version, column)."""

    def __init__(self) -> None:
        self.items: OrderedDict[tuple[Any, str], TableTerms] = OrderedDict()
        self.lock = threading.Lock()


# A few versions per pool: each holds its files' index arrays alive.
_KEEP = 2
_caches: weakref.WeakKeyDictionary[ReaderPool, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def table_terms(pool: ReaderPool, version: Any, column: str, files: list[FileEntry]
                ) -> TableTerms:
    """The pass's view of ``files`` (a version's live files) for ``column``, kept per
    version until ``forget`` (or newer versions push it out)."""
    with _caches_lock:
        cache = _caches.get(pool)
        if cache is None:
            cache = _caches[pool] = _Cache()
    key = (version, column)
    with cache.lock:
        got = cache.items.get(key)
        if got is not None and len(got.files) == len(files):
            cache.items.move_to_end(key)
            return got
    built = TableTerms(pool, column, files)
    with cache.lock:
        cache.items[key] = built
        cache.items.move_to_end(key)
        while len(cache.items) > _KEEP:
            cache.items.popitem(last=False)
    return built


def forget(pool: ReaderPool, version: Any, column: str) -> None:
    """Drops the kept view, so the next query covers the files opened since."""
    with _caches_lock:
        cache = _caches.get(pool)
    if cache is not None:
        with cache.lock:
            cache.items.pop((version, column), None)
