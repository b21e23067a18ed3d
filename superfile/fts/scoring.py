"""BM25 top-k of one file over one or several indexed columns, phrases and weights included.

The score of a document is a weighted sum over columns (not BM25F)::

    score(d) = sum over columns c of  w_c * sum over clauses q of c  boost_q * bm25_c(q, d)
    bm25_c(q, d) = idf_q * f * (k1 + 1) / (f + k1 * (1 - b + b * len_c(d) / avglen_c))

with each column's own N, average length and document frequencies. For a term, ``f`` is
its frequency in the document and ``idf_q = ln(1 + (N - df + 0.5) / (df + 0.5))``
(``engine.idf``); for a phrase, ``f`` is the phrase frequency (see ``positions``) and
``idf_q`` the sum of its terms' idfs. A prefix scores each of its expansions as a term. A
clause is one "group": 'and' needs every group matched in some column. Phrases are matched
first, exactly, and their (doc, frequency, length) lists encoded as extra postings, so the
compiled top-k (``engine``) ranks terms and phrases together with its usual block bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quiver.superfile.errors import CorruptFileError, QueryError
from quiver.superfile.fts.codec import block_count, encode_postings, pack_ranges
from quiver.superfile.fts.engine import K1, B, idf, topk_kernel
from quiver.superfile.fts.positions import phrase_topk
from quiver.superfile.fts.query import (
    MAX_GROUPS,
    ParsedQuery,
    Phrase,
    check_and_groups,
    group_bit,
)
from quiver.superfile.fts.stats import CollectionStats

if TYPE_CHECKING:
    from quiver.superfile.fts.reader import FtsIndexReader

__all__ = ["MAX_GROUPS", "FieldSearch", "search_fields"]

_NO_MASK = np.zeros(1, np.uint8)


@dataclass
class FieldSearch:
    """One column's share of a search: its index, its part of the query, its weight, its
    table-wide statistics (None: the file's own) and the group bits of each scored clause
    of ``query`` in group order (None: clause ``i`` is group ``i``)."""

    reader: FtsIndexReader
    query: ParsedQuery
    weight: float = 1.0
    stats: CollectionStats | None = None
    group_bits: tuple[int, ...] | None = None


@dataclass
class _Kernel:
    """The terms the compiled top-k will rank, built column by column."""

    parts: list[tuple[np.ndarray, int, int]]
    nb: list[int]
    idf: list[float]
    gmask: list[int]
    avgdl: list[float]
    favgdl: list[float]
    sizes: dict[int, int]  # group bit -> postings in it (picks the AND driver)
    covered: int = 0

    def add(self, buf: np.ndarray, base: int, length: int, df: int, weight: float, bits: int,
            avgdl: float, favgdl: float) -> None:
        self.parts.append((buf, base, length))
        self.nb.append(int(block_count(df)))
        self.idf.append(weight)
        self.gmask.append(bits)
        self.avgdl.append(avgdl)
        self.favgdl.append(favgdl)
        self.covered |= bits
        for g in range(MAX_GROUPS):
            if bits >> g & 1:
                self.sizes[g] = self.sizes.get(g, 0) + df


def _add_field(kern: _Kernel, fs: FieldSearch, and_mode: bool) -> None:
    r, q = fs.reader, fs.query
    keys = q.clause_keys()
    bits = (fs.group_bits if fs.group_bits is not None
            else tuple(group_bit(i) for i in range(len(keys))))
    favgdl = r.avg_doc_len if r.avg_doc_len > 0 else 1.0
    if fs.stats is not None:
        n_docs, avgdl = float(fs.stats.num_docs), float(fs.stats.avg_doc_len)
    else:
        n_docs, avgdl = float(r.num_docs), r.avg_doc_len
    if not avgdl > 0:
        avgdl = 1.0
    # Each term once, in every group it serves, at its largest clause weight.
    term_bits: dict[str, int] = {}
    term_boost: dict[str, float] = {}
    phrases: list[tuple[Phrase, int, float]] = []
    for (kind, key), gb in zip(keys, bits, strict=True):
        boost = q.boost(kind, key)
        # ParsedQuery keys its phrase clauses ("q") by Phrase and the others by token.
        if kind == "q":
            assert isinstance(key, Phrase)
            phrases.append((key, gb, boost))
            continue
        assert isinstance(key, str)
        members = [key] if kind == "t" else r._expand(key, q.expansion_limit())
        for t in members:
            term_bits[t] = term_bits.get(t, 0) | gb
            term_boost[t] = max(term_boost.get(t, 0.0), boost)
    pairs = r._postings(list(term_bits))
    phrase_terms = list(dict.fromkeys(t for p, _, _ in phrases for t in p.tokens))
    wanted = list(dict.fromkeys([t for t, _ in pairs] + phrase_terms))
    dfs = _dfs(r, fs.stats, wanted)
    idfs = dict(zip(wanted, idf(n_docs, np.array([dfs[t] for t in wanted], np.float64))
                    .tolist(), strict=True))
    for t, ref in pairs:
        kern.add(ref.buf, ref.base, ref.length, ref.df,
                 fs.weight * term_boost[t] * idfs[t], term_bits[t], avgdl, favgdl)
    for phrase, gb, boost in phrases:
        docs, freqs, lens = r._phrase_matches(phrase)
        if len(docs) == 0:
            continue
        data, _off, _crc = encode_postings(np.array([0, len(docs)], np.int64), docs, freqs,
                                           lens, favgdl, K1, B)
        w = fs.weight * boost * sum(idfs[t] for t in phrase.tokens)
        kern.add(data, 0, len(data), len(docs), w, gb, avgdl, favgdl)


def _dfs(r: FtsIndexReader, stats: CollectionStats | None, terms: list[str]) -> dict[str, int]:
    if stats is None:
        return {t: r.doc_freq(t) for t in terms}
    try:
        return {t: int(stats.doc_freqs[t]) for t in terms}
    except KeyError as exc:
        raise QueryError(
            f"collection statistics have no document frequency for term {exc.args[0]!r}"
        ) from None


def field_mask(fs: FieldSearch, mask: np.ndarray | None) -> np.ndarray | None:
    """``mask`` with the documents holding an excluded term or phrase of ``fs`` cleared."""
    r, q = fs.reader, fs.query
    if not (q.excluded or q.excluded_phrases):
        return mask
    if mask is None:
        mask = np.ones(r.num_docs, np.uint8)
    gone = r._exclusion_mask(ParsedQuery((), (), q.excluded), None) if q.excluded else None
    if gone is not None:
        mask &= gone
    for p in q.excluded_phrases:
        docs, _, _ = r._phrase_matches(p)
        mask[docs] = 0
    return mask


def _one_phrase(q: ParsedQuery) -> bool:
    return len(q.phrases) == 1 and not q.terms and not q.prefixes


def _allow_mask(num_docs: int, allow: Any) -> np.ndarray | None:
    if allow is None:
        return None
    mask = np.zeros(num_docs, np.uint8)
    ids = np.asarray(allow.to_array() if hasattr(allow, "to_array") else list(allow),
                     dtype=np.int64)
    mask[ids[(ids >= 0) & (ids < num_docs)]] = 1
    return mask


def _phrase_only(fs: FieldSearch, k: int, floor: float | None, allow: Any
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """A query of one phrase: verified best bound first (``positions.phrase_topk``)."""
    r, q = fs.reader, fs.query
    phrase = q.phrases[0]
    empty = (np.zeros(0, np.uint32), np.zeros(0, np.float32), 0)
    args = r._phrase_args(phrase)
    if args is None:
        return empty
    n_docs, avgdl = ((float(fs.stats.num_docs), float(fs.stats.avg_doc_len)) if fs.stats
                     else (float(r.num_docs), r.avg_doc_len))
    toks = list(dict.fromkeys(phrase.tokens))
    dfs = _dfs(r, fs.stats, toks)
    idfs = dict(zip(toks, idf(n_docs, np.array([dfs[t] for t in toks], np.float64)).tolist(),
                    strict=True))
    w = fs.weight * q.boost("q", phrase) * sum(idfs[t] for t in phrase.tokens)
    mask = field_mask(fs, _allow_mask(r.num_docs, allow))
    n, hs, hd, ok = phrase_topk(
        *args, k, -np.inf if floor is None else float(floor),
        mask if mask is not None else _NO_MASK, mask is not None, w, K1, B,
        avgdl if avgdl > 0 else 1.0, r.avg_doc_len if r.avg_doc_len > 0 else 1.0)
    if not ok:
        raise CorruptFileError(f"positions of the phrase {' '.join(phrase.tokens)!r} are "
                               "malformed")
    scores, docs = hs[:n], hd[:n]
    order = np.lexsort((docs, -scores))
    return docs[order].astype(np.uint32), scores[order].astype(np.float32), 0


def search_fields(fields: list[FieldSearch], k: int, *, and_mode: bool = False,
                  floor: float | None = None, allow: Any = None, num_groups: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """BM25 top-``k`` of one file: (doc ids uint32, scores float32, blocks decoded), best
    first, ties to the lower id. Every reader must index the same rows. ``allow`` (doc ids)
    restricts the ranking; only scores strictly above ``floor`` count."""
    empty = (np.zeros(0, np.uint32), np.zeros(0, np.float32), 0)
    if num_groups is None:
        num_groups = max(len(fs.query.clause_keys()) for fs in fields)
    if and_mode:
        check_and_groups(num_groups)
    if num_groups == 0:
        raise QueryError("a full-text query needs at least one term that is not excluded")
    if num_groups == 1:
        and_mode = False  # one group: any member satisfies it, exactly as OR ranks
    num_docs = fields[0].reader.num_docs
    k = min(int(k), num_docs)
    if k == 0:
        return empty
    if len(fields) == 1 and _one_phrase(fields[0].query):
        return _phrase_only(fields[0], k, floor, allow)
    kern = _Kernel([], [], [], [], [], [], {})
    for fs in fields:
        if fs.reader.num_docs != num_docs:
            raise QueryError("every searched column must index the same rows")
        _add_field(kern, fs, and_mode)
    required = (1 << min(num_groups, MAX_GROUPS)) - 1
    if not kern.parts or (and_mode and kern.covered != required):
        return empty
    mask = _allow_mask(num_docs, allow)
    for fs in fields:
        mask = field_mask(fs, mask)
    bufs = {id(b) for b, _, _ in kern.parts}
    if len(bufs) == 1:
        buf = kern.parts[0][0]
        bases = np.array([a for _, a, _ in kern.parts], np.int64)
    else:
        buf, bases = pack_ranges(kern.parts)
    gmask = np.array(kern.gmask, np.int64)
    driver = 0
    if and_mode:
        driver = 1 << min(kern.sizes, key=lambda g: kern.sizes[g])
    solo = np.zeros(len(gmask), np.bool_)
    for g in range(min(num_groups, MAX_GROUPS)):
        members = np.flatnonzero(gmask >> g & 1)
        if len(members) == 1:
            solo[members[0]] = True
    theta = -np.inf if floor is None else float(floor)
    n, hs, hd, decoded, corrupt = topk_kernel(
        buf, bases, np.array(kern.nb, np.int64), np.array(kern.idf, np.float64), gmask, solo,
        required, and_mode, driver, k, theta, mask if mask is not None else _NO_MASK,
        mask is not None, K1, B, np.array(kern.avgdl, np.float64),
        np.array(kern.favgdl, np.float64))
    if corrupt:
        raise CorruptFileError("full-text postings failed to decode")
    scores, docs = hs[:n], hd[:n]
    order = np.lexsort((docs, -scores))
    return docs[order].astype(np.uint32), scores[order].astype(np.float32), int(decoded)
