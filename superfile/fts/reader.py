"""Reads one column's full-text blob: dictionary lookups, prefix expansion and BM25 search.

Opening reads the preamble and header (dictionary index included) and nothing else; a
query then reads the dictionary blocks of its terms and those terms' postings, each
verified against the checksum stored for exactly that range. With ``verify=True`` (bytes
resident) every section is checked up front and kept, so queries never read again.
Decoded dictionary blocks and per-term postings references are cached on the reader.
Unranked token match intersects from the rarest query group and decodes only the blocks
of the other terms that may hold a surviving candidate (``match``).
"""

from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import crc32c
import numpy as np
import pyarrow as pa

from quiver.superfile.errors import (
    CorruptFileError,
    QueryError,
    SuperfileError,
    UnsupportedVersionError,
)
from quiver.superfile.fts import format as fmt
from quiver.superfile.fts.codec import block_count, pack_ranges, validate_term
from quiver.superfile.fts.dictblock import (
    BLOCK_OK,
    BLOCK_PROBLEMS,
    check_resident,
    check_sorted,
    find_term,
)
from quiver.superfile.fts.match import kway_union, mark_term, probe_term, term_docs
from quiver.superfile.fts.positions import phrase_docs
from quiver.superfile.fts.query import (
    MAX_PREFIX_EXPANSION,
    ParsedQuery,
    Phrase,
    parse_query,
)
from quiver.superfile.fts.scoring import FieldSearch, search_fields
from quiver.superfile.fts.stats import CollectionStats
from quiver.superfile.ranges import RangeReader, read_many

__all__ = ["MAX_PREFIX_EXPANSION", "FtsIndexReader", "check_mode"]

log = logging.getLogger(__name__)

"""A prefix expands to at most this many terms: the most frequent ones (by this file's df)."""

_FIRST_READ = 4096
_TERM_CACHE_LIMIT = 8192
_DECODED_BLOCKS = 256  # dictionary blocks kept as Python strings (prefix expansion)
_NO_KEY = np.zeros(0, np.uint8)
_DENSE = 16  # a union of at least num_docs / _DENSE postings goes through a row mask


class _Term(NamedTuple):
    df: int
    off: int  # offset of the postings inside the postings section
    length: int
    crc: int
    ordinal: int = -1  # rank in the dictionary (positions are found by it)


@dataclass(frozen=True)
class _DictBlock:
    terms: list[str]
    entries: np.ndarray  # DIR_ENTRY records


class ResidentDictionary(NamedTuple):
    """A resident index's arrays, for compiled lookups over many files at once: the
    dictionary and postings sections, the dictionary index (block offsets, first terms'
    bytes and offsets), the reader's checked-block flags and a flag per term that its
    postings were validated (both written by those lookups)."""

    dict_data: np.ndarray
    postings: np.ndarray
    block_off: np.ndarray
    first_data: np.ndarray
    first_offs: np.ndarray
    block_ok: np.ndarray
    validated: np.ndarray
    num_terms: int
    per_block: int


class _Postings(NamedTuple):
    buf: np.ndarray
    base: int
    nb: int
    df: int
    length: int


# The phrase kernels' (``positions.phrase_docs``/``phrase_topk``) leading arguments: the
# terms' postings buffer, bases, block counts and document frequencies, their positions
# buffer, starts and ends, then the slop, the driving term and the longest document.
PhraseArgs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                   np.ndarray, int, int, int]


def _u8(data: Any) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


class FtsIndexReader:
    """A BM25 index over one column of one file; doc ids are the file's row indexes."""

    def __init__(self, source: RangeReader, header: memoryview, version: int = fmt.VERSION
                 ) -> None:
        self._source = source
        self.version = version
        self.has_positions = version >= 2
        self._lock = threading.Lock()
        fixed = fmt.HEADER_FIXED.unpack_from(header, fmt.PREAMBLE.size)
        (self.num_docs, self.num_terms, self.total_tokens, nblocks, self._per_block,
         _posting_block, self._dl_width) = fixed
        if self._dl_width not in (1, 2, 4) or self._per_block == 0:
            raise CorruptFileError("full-text header has invalid field values")
        self.avg_doc_len = self.total_tokens / self.num_docs if self.num_docs else 0.0
        size = source.size()
        self._sections: dict[str, tuple[int, int, int]] = {}
        pos = fmt.PREAMBLE.size + fmt.HEADER_FIXED.size
        expect = len(header)
        for name in fmt.section_names(version):
            off, length, crc = fmt.SECTION.unpack_from(header, pos)
            pos += fmt.SECTION.size
            if off != expect or off + length > size:
                raise CorruptFileError(f"full-text section {name} lies outside the blob")
            expect = off + length
            self._sections[name] = (off, length, crc)
        if self._sections["doclens"][1] != self.num_docs * self._dl_width:
            raise CorruptFileError("full-text doc-length section has the wrong size")
        if nblocks != (self.num_terms + self._per_block - 1) // self._per_block:
            raise CorruptFileError("full-text dictionary block count disagrees with term count")
        if self.has_positions:
            plen = self._sections["positions"][1]
            self._pos_data = 8 * (self.num_terms + 1) + 4 * self.num_terms
            if plen < self._pos_data:
                raise CorruptFileError("full-text positions section is truncated")
        index = _u8(header)[fmt.fixed_end(version):]
        need = 8 * (nblocks + 1) + 4 * nblocks + 4 * (nblocks + 1)
        if len(index) < need:
            raise CorruptFileError("full-text dictionary index is truncated")
        self._block_off = np.frombuffer(index[: 8 * (nblocks + 1)], "<u8").astype(np.int64)
        p = 8 * (nblocks + 1)
        self._block_crc = np.frombuffer(index[p : p + 4 * nblocks], "<u4")
        p += 4 * nblocks
        first_offs = np.frombuffer(index[p : p + 4 * (nblocks + 1)], "<u4").astype(np.int64)
        p += 4 * (nblocks + 1)
        first_data = index[p:]
        if (
            self._block_off[0] != 0
            or np.any(np.diff(self._block_off) <= 0)
            or self._block_off[-1] != self._sections["dict"][1]
            or first_offs[0] != 0
            or np.any(np.diff(first_offs) < 0)
            or first_offs[-1] != len(first_data)
        ):
            raise CorruptFileError("full-text dictionary index is malformed")
        if check_sorted(first_data, first_offs) != BLOCK_OK:
            raise CorruptFileError("full-text dictionary index is not sorted")
        self._first_terms = _strings(first_data, first_offs)
        self._first_data = np.ascontiguousarray(first_data)
        self._first_offs = first_offs
        self._block_ok = np.zeros(nblocks, np.uint8)  # 1: block checked (``dictblock``)
        self._blocks: dict[int, np.ndarray] = {}  # lazily read dictionary blocks
        self._decoded: dict[int, _DictBlock] = {}
        self._validated: np.ndarray | None = None  # per term: postings validated (resident)
        self._all_checked = False
        self._term_cache: dict[str, _Term | None] = {}
        self._postings_cache: dict[str, _Postings] = {}
        self._positions_cache: dict[str, tuple[np.ndarray, int, int]] = {}
        self._resident: dict[str, np.ndarray] = {}
        self._doc_lens: np.ndarray | None = None
        self.last_search_blocks_decoded = 0
        self.last_match_blocks_decoded = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, source: RangeReader, *, verify: bool = False) -> FtsIndexReader:
        """Opens a blob lazily (two small reads); ``verify`` checks and keeps every section."""
        try:
            size = source.size()
            if size < fmt.FIXED_END_MIN:
                raise CorruptFileError(f"full-text blob of {size} bytes is truncated")
            head = memoryview(source.read(0, min(size, _FIRST_READ))).cast("B")
            magic, version, flags, header_len, header_crc = fmt.PREAMBLE.unpack_from(head, 0)
            if magic != fmt.MAGIC:
                raise CorruptFileError("not a full-text index blob (bad magic)")
            if version not in fmt.VERSIONS:
                raise UnsupportedVersionError(f"full-text index version {version} is unsupported")
            if flags != 0:
                # No flags are defined; anything else is damage or a newer writer.
                raise CorruptFileError(f"full-text index has unknown flags {flags:#x}")
            if header_len < fmt.fixed_end(version) or header_len > size:
                raise CorruptFileError("full-text header length is out of range")
            if header_len > len(head):
                head = memoryview(source.read(0, header_len)).cast("B")
            header = head[:header_len]
            if crc32c.crc32c(header[fmt.PREAMBLE.size :]) != header_crc:
                raise CorruptFileError("full-text header checksum mismatch")
            reader = cls(source, header, version)
            if verify:
                reader._load_all()
            return reader
        except SuperfileError:
            raise
        except Exception as exc:  # malformed bytes surface as many kinds of failure
            raise CorruptFileError(f"malformed full-text index: {exc}") from exc

    def _load_all(self) -> None:
        for name, (off, length, crc) in self._sections.items():
            data = self._source.read(off, length)
            if crc32c.crc32c(data) != crc:
                raise CorruptFileError(f"full-text section {name} checksum mismatch")
            self._resident[name] = _u8(data)

    # --------------------------------------------------------------- dictionary

    def _block_bytes(self, j: int) -> tuple[np.ndarray, int, int]:
        """(buffer, start, end) of dictionary block ``j``: the resident section, or the
        block read once (its checksum verified) and kept."""
        start, end = int(self._block_off[j]), int(self._block_off[j + 1])
        if "dict" in self._resident:
            return self._resident["dict"], start, end
        data = self._blocks.get(j)
        if data is None:
            raw = self._source.read(self._sections["dict"][0] + start, end - start)
            if crc32c.crc32c(raw) != int(self._block_crc[j]):
                raise CorruptFileError(f"full-text dictionary block {j} checksum mismatch")
            data = _u8(raw)
            with self._lock:
                self._blocks[j] = data
        return data, 0, end - start

    def _block_count(self, j: int) -> int:
        return min(self._per_block, self.num_terms - j * self._per_block)

    def _find(self, j: int, key: np.ndarray) -> tuple[int, int, int, int, int]:
        """(index, df, offset, length, CRC) of ``key`` in block ``j`` (index -1: absent),
        the block checked by the first search that reaches it."""
        data, s, e = self._block_bytes(j)
        status, i, df, off, length, crc = find_term(
            data, s, e, self._block_count(j), j, self._block_ok, key, self.num_docs,
            self._sections["postings"][1], self._first_data, self._first_offs)
        if status != BLOCK_OK:
            raise CorruptFileError(f"full-text dictionary block {j} is malformed "
                                   f"({BLOCK_PROBLEMS[status]})")
        return i, df, off, length, crc

    def _dict_block(self, j: int) -> _DictBlock:
        """Block ``j``'s terms and entries as objects (prefix expansion), checked first."""
        block = self._decoded.get(j)
        if block is not None:
            return block
        if self._block_ok[j] == 0:
            self._find(j, _NO_KEY)
        data, s, e = self._block_bytes(j)
        m = self._block_count(j)
        p = s + 4 + m * fmt.DIR_ENTRY.itemsize
        offs = data[p : p + 4 * (m + 1)].view("<u4").astype(np.int64)
        block = _DictBlock(_strings(data[p + 4 * (m + 1) : e], offs),
                           data[s + 4 : p].view(fmt.DIR_ENTRY))
        with self._lock:
            if len(self._decoded) >= _DECODED_BLOCKS:
                self._decoded.clear()
            self._decoded[j] = block
        return block

    def _lookup(self, term: str) -> _Term | None:
        if term in self._term_cache:
            return self._term_cache[term]
        j = bisect.bisect_right(self._first_terms, term) - 1
        found = None
        if j >= 0:
            i, df, off, length, crc = self._find(j, np.frombuffer(term.encode(), np.uint8))
            if i >= 0:
                found = _Term(df, off, length, crc, j * self._per_block + i)
        with self._lock:
            if len(self._term_cache) >= _TERM_CACHE_LIMIT:
                self._term_cache.clear()
            self._term_cache[term] = found
        return found

    def resident_lookup(self) -> ResidentDictionary | None:
        """The arrays compiled lookups read (``ResidentDictionary``), or None when the
        dictionary or postings are not resident."""
        if "dict" not in self._resident or "postings" not in self._resident:
            return None
        with self._lock:
            if self._validated is None:
                self._validated = np.zeros(max(self.num_terms, 1), np.uint8)
        return ResidentDictionary(
            self._resident["dict"], self._resident["postings"], self._block_off,
            self._first_data, self._first_offs, self._block_ok, self._validated,
            self.num_terms, self._per_block)

    @property
    def fully_checked(self) -> bool:
        """Whether ``check_resident`` has run (a resident index checked whole)."""
        return self._all_checked

    def check_resident(self) -> None:
        """Checks every dictionary block and every term's postings of a resident index in
        one compiled pass (what lookups would otherwise check one by one as they first
        reach them); what fails is left for the lookup that reaches it to report."""
        parts = self.resident_lookup()
        if parts is None or self._all_checked:
            return
        check_resident(parts.dict_data, parts.block_off, parts.per_block, parts.num_terms,
                       self.num_docs, parts.postings, parts.first_data, parts.first_offs,
                       parts.block_ok, parts.validated)
        self._all_checked = True

    def doc_freq(self, term: str) -> int:
        """Number of documents containing ``term`` (one normalized token); 0 if absent."""
        entry = self._wrap(self._lookup, term)
        return entry.df if entry else 0

    def _prefix_matches(self, prefix: str) -> list[tuple[str, int]]:
        """(term, df) of every term starting with ``prefix``, in term order."""
        out: list[tuple[str, int]] = []
        j = max(bisect.bisect_right(self._first_terms, prefix) - 1, 0)
        while j < len(self._first_terms):
            if j > 0 and self._first_terms[j] > prefix and not self._first_terms[j].startswith(
                prefix
            ):
                break
            block = self._dict_block(j)
            i = bisect.bisect_left(block.terms, prefix)
            while i < len(block.terms) and block.terms[i].startswith(prefix):
                out.append((block.terms[i], int(block.entries["df"][i])))
                i += 1
            if i < len(block.terms):
                break
            j += 1
        return out

    def terms_with_prefix(self, prefix: str, limit: int | None = None) -> list[str]:
        """Dictionary terms starting with ``prefix`` in code point order (first ``limit``)."""
        matches = self._wrap(self._prefix_matches, prefix)
        terms = [t for t, _ in matches]
        return terms if limit is None else terms[: max(limit, 0)]

    def _expand(self, prefix: str, limit: int = MAX_PREFIX_EXPANSION) -> list[str]:
        matches = self._prefix_matches(prefix)
        if len(matches) > limit:
            log.debug("prefix %r matches %d terms; keeping the %d most frequent",
                      prefix, len(matches), limit)
            order = sorted(range(len(matches)), key=lambda i: -matches[i][1])
            keep = sorted(order[:limit])
            matches = [matches[i] for i in keep]
        return [t for t, _ in matches]

    # ----------------------------------------------------------------- postings

    def _postings(self, terms: list[str]) -> list[tuple[str, _Postings]]:
        """(term, postings) of the present terms, fetching the missing ones in one batch."""
        cache = self._postings_cache
        found = {t: cache[t] for t in terms if t in cache}
        missing = [t for t in terms if t not in found]
        if missing:
            entries = [self._lookup(t) for t in missing]
            pairs = [(t, e) for t, e in zip(missing, entries, strict=True) if e is not None]
            base = self._sections["postings"][0]
            if "postings" in self._resident:
                section = self._resident["postings"]
                bufs = [(section, e.off) for _, e in pairs]
            else:
                datas = read_many(self._source, [(base + e.off, e.length) for _, e in pairs])
                bufs = []
                for (t, e), d in zip(pairs, datas, strict=True):
                    if crc32c.crc32c(d) != e.crc:
                        raise CorruptFileError(f"postings of term {t!r} checksum mismatch")
                    bufs.append((_u8(d), 0))
            for (t, e), (buf, start) in zip(pairs, bufs, strict=True):
                nb = int(block_count(e.df))
                if validate_term(buf, start, start + e.length, nb, e.df, self.num_docs) != 0:
                    raise CorruptFileError(f"postings of term {t!r} are malformed")
                ref = _Postings(buf, start, nb, e.df, e.length)
                with self._lock:
                    if len(self._postings_cache) >= _TERM_CACHE_LIMIT:
                        self._postings_cache.clear()
                    self._postings_cache[t] = ref
                found[t] = ref
        return [(t, found[t]) for t in terms if t in found]

    def postings_refs(self, terms: list[str]) -> list[tuple[int, np.ndarray, int, int, int]]:
        """Validated postings of the present ``terms``: (position in ``terms``, buffer, start,
        length, df). ``buffer[start:start + length]`` is the term's encoded postings."""
        pairs = self._wrap(self._postings, terms)
        where = {t: i for i, t in enumerate(terms)}
        return [(where[t], r.buf, r.base, r.length, r.df) for t, r in pairs]

    def row_mask(self, query: ParsedQuery, allow: Any = None) -> np.ndarray | None:
        """Per-document uint8 mask of the rows a search may return (``allow`` minus documents
        holding an excluded term); None when every row may."""
        return self._wrap(self._exclusion_mask, query, allow)

    @staticmethod
    def _decode(term: str, r: _Postings) -> np.ndarray:
        docs, ok = term_docs(r.buf, r.base, r.nb, r.df)
        if not ok:
            raise CorruptFileError(f"postings of term {term!r} failed to decode")
        return docs

    def _union(self, pairs: list[tuple[str, _Postings]]) -> np.ndarray:
        """Sorted ids of the documents holding any of the terms (every block decodes)."""
        if len(pairs) <= 1:
            return self._decode(*pairs[0]) if pairs else np.zeros(0, np.int64)
        if sum(r.df for _, r in pairs) * _DENSE >= self.num_docs:
            # Dense: marking a row mask beats merging, and needs no sort.
            mask = np.zeros(self.num_docs, np.uint8)
            for t, r in pairs:
                if mark_term(r.buf, r.base, r.nb, mask, 1) < 0:
                    raise CorruptFileError(f"postings of term {t!r} failed to decode")
            return np.flatnonzero(mask)
        parts = [self._decode(t, r) for t, r in pairs]
        starts = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(p) for p in parts], out=starts[1:])
        return kway_union(np.concatenate(parts), starts)

    @staticmethod
    def _probe(cands: np.ndarray, pairs: list[tuple[str, _Postings]], keep: bool
               ) -> tuple[np.ndarray, int]:
        """The candidates held by some term (``keep``) or by none of them (not ``keep``),
        and the number of blocks decoded to find out."""
        hit = np.zeros(len(cands), np.uint8)
        blocks = 0
        for t, r in pairs:
            decoded = probe_term(r.buf, r.base, r.nb, cands, len(cands), hit)
            if decoded < 0:
                raise CorruptFileError(f"postings of term {t!r} failed to decode")
            blocks += decoded
        return (cands[hit != 0] if keep else cands[hit == 0]), blocks

    def doc_lengths(self) -> np.ndarray:
        """Token count of every document (reads the doc-length section once)."""
        if self._doc_lens is None:
            off, length, crc = self._sections["doclens"]
            data = self._resident.get("doclens")
            if data is None:
                raw = self._source.read(off, length)
                if crc32c.crc32c(raw) != crc:
                    raise CorruptFileError("full-text doc-length section checksum mismatch")
                data = _u8(raw)
            self._doc_lens = data.view(f"<u{self._dl_width}").astype(np.int64)
        return self._doc_lens

    # ---------------------------------------------------------------- positions

    def _positions(self, terms: list[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        """(buffer, start, end) of each present term's positions, read in one batch."""
        cache = self._positions_cache
        found = {t: cache[t] for t in terms if t in cache}
        missing = [(t, e) for t in terms if t not in found
                   for e in [self._lookup(t)] if e is not None]
        if not missing:
            return found
        sec_off, sec_len, _sec_crc = self._sections["positions"]
        nt = self.num_terms
        if "positions" in self._resident:
            section = self._resident["positions"]
            table = [(section[8 * e.ordinal: 8 * e.ordinal + 16],
                      section[8 * (nt + 1) + 4 * e.ordinal: 8 * (nt + 1) + 4 * e.ordinal + 4])
                     for _, e in missing]
        else:
            reads = []
            for _, e in missing:
                reads.append((sec_off + 8 * e.ordinal, 16))
                reads.append((sec_off + 8 * (nt + 1) + 4 * e.ordinal, 4))
            datas = read_many(self._source, reads)
            table = [(_u8(datas[2 * i]), _u8(datas[2 * i + 1])) for i in range(len(missing))]
        spans = []
        for (t, _e), (offs, crc_bytes) in zip(missing, table, strict=True):
            a, b = (int(x) for x in np.frombuffer(offs, "<u8"))
            if a > b or self._pos_data + b > sec_len:
                raise CorruptFileError(f"positions of term {t!r} lie outside their section")
            spans.append((t, a, b, int(np.frombuffer(crc_bytes, "<u4")[0])))
        if "positions" in self._resident:
            bufs = [(self._resident["positions"], self._pos_data + a, self._pos_data + b)
                    for _, a, b, _ in spans]
        else:
            datas = read_many(self._source, [(sec_off + self._pos_data + a, b - a)
                                             for _, a, b, _ in spans])
            bufs = []
            for (t, _a, _b, crc), d in zip(spans, datas, strict=True):
                if crc32c.crc32c(d) != crc:
                    raise CorruptFileError(f"positions of term {t!r} checksum mismatch")
                bufs.append((_u8(d), 0, len(d)))
        for (t, *_), ref in zip(spans, bufs, strict=True):
            with self._lock:
                if len(cache) >= _TERM_CACHE_LIMIT:
                    cache.clear()
                cache[t] = ref
            found[t] = ref
        return found

    def phrase_matches(self, phrase: Phrase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(doc ids, phrase frequency, document length) of every document matching
        ``phrase``, ascending by doc id (int64 each). See ``positions`` for what matches."""
        return self._wrap(self._phrase_matches, phrase)

    def _phrase_args(self, phrase: Phrase) -> PhraseArgs | None:
        """The phrase kernels' first ten arguments, or None when a term is absent."""
        if not self.has_positions:
            raise QueryError(
                "phrase and proximity queries need word positions, which this file's "
                f"full-text index (format {self.version}) does not hold; rewrite the file "
                "(optimize the table) to search phrases")
        uniq = list(dict.fromkeys(phrase.tokens))
        refs = dict(self._postings(uniq))
        if len(refs) < len(uniq):
            return None
        pos = self._positions(uniq)
        toks = phrase.tokens
        rs = [refs[t] for t in toks]
        if len({id(r.buf) for r in rs}) == 1:
            pbuf, p_base = rs[0].buf, np.array([r.base for r in rs], np.int64)
        else:
            pbuf, p_base = pack_ranges([(r.buf, r.base, r.length) for r in rs])
        ps = [pos[t] for t in toks]
        if len({id(p[0]) for p in ps}) == 1:
            qbuf = ps[0][0]
            q_base = np.array([p[1] for p in ps], np.int64)
            q_end = np.array([p[2] for p in ps], np.int64)
        else:
            qbuf, q_base = pack_ranges([(b, a, e - a) for b, a, e in ps])
            q_end = q_base + np.array([e - a for _, a, e in ps], np.int64)
        driver = int(np.argmin([r.df for r in rs]))
        return (pbuf, p_base, np.array([r.nb for r in rs], np.int64),
                np.array([r.df for r in rs], np.int64), qbuf, q_base, q_end, phrase.slop,
                driver, max(self._max_doc_len(), 1))

    def _phrase_matches(self, phrase: Phrase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        empty = np.zeros(0, np.int64)
        args = self._phrase_args(phrase)
        if args is None:
            return empty, empty, empty
        docs, freqs, lens, ok = phrase_docs(*args)
        if not ok:
            raise CorruptFileError(
                f"positions of the phrase {' '.join(phrase.tokens)!r} are malformed")
        return docs, freqs, lens

    def _max_doc_len(self) -> int:
        # No document is longer than the file's token count (from the checked header).
        return int(self.total_tokens)

    # ------------------------------------------------------------------ queries

    @staticmethod
    def _wrap(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except SuperfileError:
            raise
        except Exception as exc:
            raise CorruptFileError(f"malformed full-text index: {exc}") from exc

    def _groups(self, q: ParsedQuery) -> list[list[str]]:
        groups = [[t] for t in q.terms]
        limit = q.expansion_limit()
        groups += [self._expand(p, limit) for p in q.prefixes]
        return groups

    def _exclusion_mask(self, q: ParsedQuery, allow: Any) -> np.ndarray | None:
        if allow is None and not q.excluded:
            return None
        if allow is not None:
            mask = np.zeros(self.num_docs, np.uint8)
            ids = np.asarray(allow.to_array() if hasattr(allow, "to_array") else list(allow),
                             dtype=np.int64)
            mask[ids[(ids >= 0) & (ids < self.num_docs)]] = 1
        else:
            mask = np.ones(self.num_docs, np.uint8)
        for t, r in self._postings(list(q.excluded)):
            if mark_term(r.buf, r.base, r.nb, mask, 0) < 0:
                raise CorruptFileError(f"postings of term {t!r} failed to decode")
        return mask

    def search(
        self,
        query: str | ParsedQuery,
        k: int,
        *,
        mode: str = "or",
        floor: float | None = None,
        stats: CollectionStats | None = None,
        allow: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-``k``: (doc ids uint32, scores float32), best first, ties to lower id.

        ``mode`` 'or' matches any term, 'and' all (a prefix is satisfied by any of its
        expansions, capped at ``MAX_PREFIX_EXPANSION`` most frequent terms). Excluded terms
        remove documents. Phrases score by their frequency (see ``scoring``); a file
        without positions refuses them. Only scores strictly above ``floor`` are returned. ``stats``
        replaces this file's N, avgdl and dfs; ``allow`` (a ``pyroaring.BitMap`` of doc
        ids) restricts ranking to those documents.
        """
        q = parse_query(query) if isinstance(query, str) else query
        and_mode = check_mode(mode)
        if not isinstance(k, (int, np.integer)) or k < 0:
            raise QueryError(f"k must be a non-negative integer, got {k!r}")
        if not q.scored:
            raise QueryError("a full-text query needs at least one term that is not excluded")
        empty = (np.zeros(0, np.uint32), np.zeros(0, np.float32))
        k = min(int(k), self.num_docs)
        if k == 0:
            return empty
        return self._wrap(self._search, q, k, and_mode, floor, stats, allow)

    def _search(self, q, k, and_mode, floor, stats, allow):
        docs, scores, decoded = search_fields([FieldSearch(self, q, 1.0, stats)], k,
                                              and_mode=and_mode, floor=floor, allow=allow)
        self.last_search_blocks_decoded = decoded
        return docs, scores

    def token_match(self, query: str | ParsedQuery, mode: str = "or") -> np.ndarray:
        """Sorted uint32 ids of documents matching any ('or') or all ('and') query groups."""
        q = parse_query(query) if isinstance(query, str) else query
        and_mode = check_mode(mode)
        if not q.terms and not q.prefixes:
            raise QueryError("a full-text query needs at least one term that is not excluded")
        return self._wrap(self._token_match, q, and_mode)

    def _token_match(self, q: ParsedQuery, and_mode: bool) -> np.ndarray:
        groups = self._groups(q)
        wanted = list(dict.fromkeys([t for g in groups for t in g] + list(q.excluded)))
        refs = dict(self._postings(wanted))
        present = [[(t, refs[t]) for t in g if t in refs] for g in groups]
        if and_mode:
            if not all(present):
                self.last_match_blocks_decoded = 0
                return np.zeros(0, np.uint32)
            # The rarest group drives; each other group only probes the survivors, rarest
            # first, so the candidate list shrinks as fast as it can.
            present.sort(key=lambda g: sum(r.df for _, r in g))
            result = self._union(present[0])
            blocks = sum(r.nb for _, r in present[0])
            for g in present[1:]:
                if not len(result):
                    break
                result, decoded = self._probe(result, g, keep=True)
                blocks += decoded
        else:
            union = list(dict(p for g in present for p in g).items())
            result = self._union(union)
            blocks = sum(r.nb for _, r in union)
        gone = [(t, refs[t]) for t in q.excluded if t in refs]
        if gone and len(result):
            result, decoded = self._probe(result, gone, keep=False)
            blocks += decoded
        self.last_match_blocks_decoded = blocks
        return result.astype(np.uint32)


_NO_MASK = np.zeros(1, np.uint8)


def check_mode(mode: str) -> bool:
    """True for 'and', False for 'or' (any case); anything else is a ``QueryError``."""
    m = str(mode).lower()
    if m not in ("or", "and"):
        raise QueryError(f"mode must be 'or' or 'and', got {mode!r}")
    return m == "and"


def _strings(data: np.ndarray, offs: np.ndarray) -> list[str]:
    """Decodes UTF-8 strings given 0-based int64 offsets (validated by pyarrow)."""
    if offs[-1] >= 2**31:
        raise CorruptFileError("full-text term bytes are implausibly large")
    arr = pa.StringArray.from_buffers(
        len(offs) - 1,
        pa.py_buffer(offs.astype(np.int32).tobytes()),
        pa.py_buffer(np.ascontiguousarray(data).tobytes()),
    )
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise CorruptFileError(f"full-text term bytes are not valid UTF-8: {exc}") from None
    return arr.to_pylist()
