"""One compiled pass over a table's resident full-text indexes for a query's terms.

For each (file, term) whose index is resident the pass finds the term in the dictionary
(the block checked the first time, as ``dictblock.find_term`` does) and validates the
term's postings the first time (``codec.validate_term``, remembered per term in the
reader); for the other files it tests the file's term Bloom filter. Out come each pair's
answer (may the file hold the term), document frequency, postings offset and length: one
call for the whole table where a plan used to make a few Python calls per file and term.

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
from numba import carray, njit, types
from numba.extending import intrinsic

from quiver.superfile.errors import CorruptFileError
from quiver.superfile.fts.codec import BLOCK_SIZE, validate_term
from quiver.superfile.fts.dictblock import BLOCK_OK, BLOCK_PROBLEMS, compare_bytes, find_term
from quiver.superfile.fts.multi import PostingsPlan, build_plan, packed_plan
from quiver.superfile.fts.reader import FtsIndexReader
from quiver.supertable.bloom import hash_pairs
from quiver.supertable.manifest import FileEntry
from quiver.supertable.readers import ReaderPool

__all__ = ["Found", "TableTerms", "forget", "settle_checks", "table_terms"]

log = logging.getLogger(__name__)

_NONE_U8 = np.zeros(1, np.uint8)
_NONE_I64 = np.zeros(2, np.int64)

# Error kinds of the pass: a malformed dictionary block, malformed postings.
_BAD_BLOCK = 1
_BAD_POSTINGS = 2


def _pointer_to(dtype: types.Type) -> Any:
    @intrinsic
    def to_pointer(typingctx: Any, address: Any) -> Any:
        if not isinstance(address, types.Integer):
            return None
        ptr = types.CPointer(dtype)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(ptr))

        return ptr(address), codegen

    return to_pointer


# The pass reads each file's arrays by address: one call takes any number of files with no
# per-call container to build (``TableTerms`` keeps every array alive while it is used).
_u8_at = _pointer_to(types.uint8)
_i64_at = _pointer_to(types.int64)
_u64_at = _pointer_to(types.uint64)


@njit(cache=True, nogil=True)
def _lookup(addr, size, num_docs, num_terms, per_block, bloom_m, num_hashes, key_data,
            key_offs):
    # addr/size columns: bloom bits, dictionary, postings, first terms, block offsets,
    # first-term offsets, checked blocks, validated terms (address 0: not there).
    nf = addr.shape[0]
    nt = len(key_offs) - 1
    pairs = hash_pairs(key_data, key_offs, nt)
    maybe = np.zeros((nf, nt), np.uint8)
    df = np.zeros((nf, nt), np.int64)
    off = np.zeros((nf, nt), np.int64)
    length = np.zeros((nf, nt), np.int64)
    err = np.zeros(5, np.int64)  # kind, file, term, status, block
    for f in range(nf):
        has_bloom = addr[f, 0] != 0
        loaded = addr[f, 1] != 0
        if has_bloom:
            bits = carray(_u64_at(addr[f, 0]), size[f, 0])
            m = np.uint64(bloom_m[f])
        if loaded:
            dict_data = carray(_u8_at(addr[f, 1]), size[f, 1])
            postings = carray(_u8_at(addr[f, 2]), size[f, 2])
            fd = carray(_u8_at(addr[f, 3]), size[f, 3])
            bo = carray(_i64_at(addr[f, 4]), size[f, 4])
            fo = carray(_i64_at(addr[f, 5]), size[f, 5])
            checked = carray(_u8_at(addr[f, 6]), size[f, 6])
            seen = carray(_u8_at(addr[f, 7]), size[f, 7])
        for t in range(nt):
            # A resident dictionary answers exactly, at about the cost of the filter's
            # probes: the filter is asked only for files whose dictionary is not here.
            if has_bloom and not loaded:
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
            if not loaded:
                maybe[f, t] = 1
                continue
            key = key_data[key_offs[t]:key_offs[t + 1]]
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
            count = min(per_block[f], num_terms[f] - j * per_block[f])
            status, i, d, o, n, _crc = find_term(
                dict_data, bo[j], bo[j + 1], count, j, checked, key, num_docs[f],
                len(postings), fd, fo)
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
            if seen[ordinal] == 0:
                nb = (d + (BLOCK_SIZE - 1)) // BLOCK_SIZE
                if validate_term(postings, o, o + n, nb, d, num_docs[f]) != 0:
                    err[0] = _BAD_POSTINGS
                    err[1] = f
                    err[2] = t
                    return maybe, df, off, length, err
                seen[ordinal] = 1
            maybe[f, t] = 1
            df[f, t] = d
            off[f, t] = o
            length[f, t] = n
    return maybe, df, off, length, err


@njit(cache=True, nogil=True)
def _gather(addr, df, off, length, keep, live_rows, plain, and_mode):
    # The files ``keep`` selects that hold the query's terms (in 'and' mode all of them),
    # biggest first (ties in table order), and every one's present terms in query order,
    # their postings copied into one buffer back to back. ``ok`` is False (and nothing
    # gathered) when some selected file is not ``plain``.
    nt = df.shape[1]
    sel = np.flatnonzero(keep)
    ok = True
    for i in sel:
        if not plain[i]:
            ok = False
    if not ok:
        sel = sel[:0]
    sel = sel[np.argsort(-live_rows[sel], kind="mergesort")]
    counts = np.zeros(len(sel), np.int64)
    n = 0
    m = 0
    for j in range(len(sel)):
        c = 0
        for t in range(nt):
            if df[sel[j], t] != 0:
                c += 1
        if c == 0 or (and_mode and c < nt):
            continue
        sel[n] = sel[j]
        counts[n] = c
        n += 1
        m += c
    cand = sel[:n].copy()
    counts = counts[:n].copy()
    t_base = np.zeros(m, np.int64)
    t_df = np.zeros(m, np.int64)
    t_q = np.zeros(m, np.int64)
    total = 0
    e = 0
    for j in range(n):
        f = cand[j]
        for t in range(nt):
            if df[f, t] != 0:
                t_base[e] = total
                t_df[e] = df[f, t]
                t_q[e] = t
                total += length[f, t]
                e += 1
    buf = np.empty(total, np.uint8)
    e = 0
    for j in range(n):
        f = cand[j]
        for t in range(nt):
            if df[f, t] != 0:
                src = carray(_u8_at(addr[f, 2]), off[f, t] + length[f, t])
                buf[t_base[e]:t_base[e] + length[f, t]] = src[off[f, t]:off[f, t] + length[f, t]]
                e += 1
    return ok, cand, counts, buf, t_base, t_df, t_q


@dataclass(frozen=True)
class Found:
    """The pass's answer for a query's terms: per (file, term) whether the file may hold
    the term (``maybe``: for covered files whether its dictionary does, for the others
    whether its Bloom filter allows it), and for covered files its df (0: absent),
    postings offset and length inside ``TableTerms.postings[file]``."""

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
        self.postings: list[np.ndarray] = [_NONE_U8] * n
        self._addr = np.zeros((n, 8), np.int64)
        self._size = np.zeros((n, 8), np.int64)
        self._num_docs = np.zeros(n, np.int64)
        self._num_terms = np.zeros(n, np.int64)
        self._per_block = np.ones(n, np.int64)
        self._bloom_m = np.ones(n, np.int64)
        self._num_hashes = np.zeros(n, np.int64)
        self._alive: list[np.ndarray] = []  # every array addressed, kept alive
        # What a plan needs of each file, as arrays: files of one version never change.
        self._live_rows = np.array([f.live_rows for f in files], np.int64)
        self._id_base = np.array([f.id_min for f in files], np.int64)
        # Files a plan can take whole from the pass: covered, every row live, rows numbered
        # id_min, id_min + 1, ...
        self._plain = np.zeros(n, np.bool_)
        self._avgdl = np.ones(n, np.float64)
        for i, entry in enumerate(files):
            summary = pool.summary(entry)
            bloom = summary.blooms.get(column) if summary else None
            if bloom is not None and len(bloom.bits):
                self._bloom_m[i] = bloom.m
                self._num_hashes[i] = bloom.num_hashes
                self._address(i, 0, bloom.bits)
            fts = pool.open_fts(entry, column)
            parts = fts.resident_lookup() if fts is not None else None
            if fts is None or parts is None or not all(len(a) for a in parts[:7]):
                continue
            self.readers[i] = fts
            self.postings[i] = parts.postings
            self._plain[i] = (not entry.tombstones
                              and entry.id_max - entry.id_min + 1 == entry.rows)
            self._avgdl[i] = fts.avg_doc_len if fts.avg_doc_len > 0 else 1.0
            self._num_docs[i] = fts.num_docs
            self._num_terms[i] = parts.num_terms
            self._per_block[i] = parts.per_block
            for c, arr in enumerate((parts.dict_data, parts.postings, parts.first_data,
                                     parts.block_off, parts.first_offs, parts.block_ok,
                                     parts.validated), start=1):
                self._address(i, c, arr)
        self.all_loaded = all(r is not None for r in self.readers)
        unchecked = [r for r in self.readers if r is not None and not r.fully_checked]
        if unchecked:
            _CHECKS.submit(_check_quietly, unchecked)

    def would_cover(self, pool: ReaderPool, column: str, indexes: list[int]) -> bool:
        """Whether a pass built now would cover some of these files it does not."""
        for i in indexes:
            fts = pool.open_fts(self.files[i], column)
            parts = fts.resident_lookup() if fts is not None else None
            if parts is not None and all(len(a) for a in parts[:7]):
                return True
        return False

    def _address(self, i: int, c: int, arr: np.ndarray) -> None:
        if not arr.flags.c_contiguous:
            raise ValueError("the compiled lookup reads contiguous arrays only")
        self._alive.append(arr)
        self._addr[i, c] = arr.ctypes.data
        self._size[i, c] = len(arr)

    def lookup(self, terms: tuple[str, ...]) -> Found:
        """Every file's answer and dictionary entry for ``terms`` (see ``Found``);
        a malformed dictionary block or postings raise ``CorruptFileError``."""
        raw = [t.encode() for t in terms]
        key_offs = np.zeros(len(raw) + 1, np.int64)
        np.cumsum([len(b) for b in raw], out=key_offs[1:])
        key_data = np.frombuffer(b"".join(raw) or b"\0", np.uint8)
        maybe, df, off, length, err = _lookup(
            self._addr, self._size, self._num_docs, self._num_terms, self._per_block,
            self._bloom_m, self._num_hashes, key_data, key_offs)
        if err[0] == _BAD_BLOCK:
            raise CorruptFileError(
                f"full-text dictionary block {int(err[4])} of {self.files[int(err[1])].path} "
                f"is malformed ({BLOCK_PROBLEMS[int(err[3])]})")
        if err[0] == _BAD_POSTINGS:
            raise CorruptFileError(f"postings of term {terms[int(err[2])]!r} in "
                                   f"{self.files[int(err[1])].path} are malformed")
        return Found(maybe, df, off, length)

    def plan(self, found: Found, keep: np.ndarray, and_mode: bool) -> PostingsPlan | None:
        """The plan of the files ``keep`` selects for a query without excluded terms, made
        from the pass's answer in whole-array steps: what ``build_plan`` makes of the same
        files (biggest first, files holding none of the terms, or in 'and' mode not all of
        them, left out). None when some of those files are not covered by the pass, have
        tombstones or number their rows other than consecutively."""
        ok, cand, counts, buf, t_base, dfs, t_q = _gather(
            self._addr, found.df, found.off, found.length, keep, self._live_rows, self._plain,
            and_mode)
        if not ok:
            return None
        if not len(cand):
            return build_plan([], and_mode)
        idx = cand.tolist()
        return packed_plan(
            [self.files[i] for i in idx], tuple(self.files[i].path for i in idx), buf, t_base,
            dfs, t_q, counts, self._avgdl[cand], self._id_base[cand], and_mode)


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
