"""``bm25_snippet(column, query [, words])``: the fragment of each text that best shows why
it matched a full-text query, with the matching words marked.

The text is split into words by the full-text index's own tokenizer rules (Unicode
lowercase, then runs of letters and digits; ``quiver.superfile.fts.tokenizer``), and the query
is read by the index's query parser (``quiver.superfile.fts.query``, one column: a ``field:``
naming the snippet's column aims at it, any other ``name:`` is plain text, as in
``bm25(column, query)``). A word matches when its lowercased form is one of the query's
terms, the words of one of its phrases (each word counts on its own, wherever it
stands), or starts with one of its prefixes (``word*``); excluded words are not marked.

The fragment is the window of ``words`` consecutive words (default ``DEFAULT_WORDS``, at
most ``MAX_WORDS``) holding the most distinct query terms, then the most matching
words, then the earliest; the window is then moved back so the matches sit in its
middle where the text allows. It runs from the window's first word to its last, with
the original spelling and punctuation between them; ``"… "`` opens it when words come
before it in the text, ``" …"`` closes it when words follow. The whole fragment is
HTML-escaped (``&``, ``<``, ``>``, ``"`` and ``'``, as Python's ``html.escape``), and each
matching word is then wrapped in ``<b>``…``</b>``, so the result can be shown as HTML as
it is. A NULL text gives NULL; a text without any word the empty string.

The work is vectorized over a batch of texts (numpy over the batch's code points and
pyarrow over its pieces), with a loop over the query's terms only, so it is safe over a
whole table scan.
"""

from __future__ import annotations

import threading

import datafusion
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.flight_server.sql.errors import SqlPlanError
from quiver.superfile.errors import QueryError
from quiver.superfile.fts.query import parse_fields
from quiver.superfile.fts.tokenizer import SPLIT_PATTERN

__all__ = ["DEFAULT_WORDS", "FUNCTION", "MAX_WORDS", "NAME", "check_query", "register",
           "snippets"]

NAME = "bm25_snippet"
# What bm25_snippet(...) is rewritten to: every argument spelled out (see rewrite.py).
FUNCTION = "__quiver_snippet"
DEFAULT_WORDS = 30
MAX_WORDS = 1000
OPEN, CLOSE = "<b>", "</b>"
LEAD, TRAIL = "… ", " …"
_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#x27;"))
_CODE_POINTS = 0x110000


class _Tables:
    """For every code point: its lowercase (pyarrow's ``utf8_lower``) and whether that
    lowercase is a word character (not matched by the tokenizer's split pattern)."""

    def __init__(self) -> None:
        cps = np.concatenate([np.arange(0, 0xD800, dtype=np.uint32),
                              np.arange(0xE000, _CODE_POINTS, dtype=np.uint32)])
        nbytes = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
        offsets = np.zeros(len(cps) + 1, np.int32)
        np.cumsum(nbytes, out=offsets[1:])
        data = cps.tobytes().decode("utf-32-le").encode("utf-8")
        arr = pa.StringArray.from_buffers(len(cps), pa.py_buffer(offsets.tobytes()),
                                          pa.py_buffer(data))
        lowered = pc.utf8_lower(arr)
        low = np.frombuffer("".join(lowered.to_pylist()).encode("utf-32-le"), np.uint32)
        if len(low) != len(cps):
            raise RuntimeError("utf8_lower no longer maps code points one to one")
        self.lower = np.arange(_CODE_POINTS, dtype=np.uint32)
        self.lower[cps] = low
        self.word = np.zeros(_CODE_POINTS, bool)
        self.word[cps] = ~pc.match_substring_regex(lowered, SPLIT_PATTERN).to_numpy(
            zero_copy_only=False)


_tables: _Tables | None = None
_lock = threading.Lock()


def _get_tables() -> _Tables:
    global _tables
    if _tables is None:
        with _lock:
            if _tables is None:
                _tables = _Tables()
    return _tables


def _query_terms(query: str, field: str) -> tuple[list[str], list[str]]:
    """(whole-word terms, prefixes) the query marks in ``field``."""
    q = parse_fields(query, [field or "_"]).per_field[field or "_"]
    words = list(dict.fromkeys([*q.terms, *(t for p in q.phrases for t in p.tokens)]))
    return words, list(q.prefixes)


def check_query(query: object, words: object) -> None:
    """Refuses a query the index could not read, or a window size out of range."""
    if not isinstance(query, str):
        raise SqlPlanError(f"{NAME}(): the query must be text, got {query!r}")
    try:
        parse_fields(query, ["_"])
    except QueryError as exc:
        raise SqlPlanError(f"{NAME}(): {exc}") from None
    if isinstance(words, bool) or not isinstance(words, int) or \
            not 1 <= words <= MAX_WORDS:
        raise SqlPlanError(f"{NAME}(): the window is a number of words from 1 to "
                           f"{MAX_WORDS}, got {words!r}")


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _escape(pieces: pa.Array) -> pa.Array:
    for raw, escaped in _ESCAPES:
        pieces = pc.replace_substring(pieces, raw, escaped)
    return pieces


def _plain(texts: pa.Array) -> pa.Array:
    if not pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.large_string())
    # Null slots get empty values, so every byte of the data belongs to a real text.
    return pc.if_else(pc.is_null(texts), "", texts) if texts.null_count else texts


def snippets(texts: pa.Array | pa.ChunkedArray, query: str, words: int = DEFAULT_WORDS,
             field: str = "") -> pa.Array:
    """The snippet of each text (see the module's rules), as a string array."""
    check_query(query, words)
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    nulls = pc.is_null(texts)
    arr = _plain(texts)
    n = len(arr)
    if n == 0:
        return pa.array([], pa.string())
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + n + 1]
    base = offsets[0]
    raw = arr.buffers()[2]
    data = raw.to_pybytes()[base:offsets[-1]] if raw is not None else b""
    row_byte = offsets - base
    tables = _get_tables()
    cps = _codes(data.decode("utf-8"))
    if len(cps) == 0:
        return _with_nulls(pa.array([""] * n, pa.string()), nulls)
    cp_byte = np.zeros(len(cps) + 1, np.int64)
    np.cumsum(1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000), out=cp_byte[1:])
    row_cp = np.searchsorted(cp_byte, row_byte)
    low = tables.lower[cps]
    word = tables.word[low]

    # Words: runs of word characters, cut at row boundaries.
    row_start = np.zeros(len(cps) + 1, bool)
    row_start[row_cp] = True
    prev = np.concatenate([[False], word[:-1]])
    nxt = np.concatenate([word[1:], [False]])
    starts = np.flatnonzero(word & (~prev | row_start[:-1]))
    ends = np.flatnonzero(word & (~nxt | row_start[1:])) + 1
    lengths = ends - starts
    # The row of each code point: empty rows share their start with the next row.
    row_of_cp = np.cumsum(np.bincount(row_cp[:-1], minlength=len(cps) + 1)) - 1
    tok_row = row_of_cp[starts]
    first_tok = np.searchsorted(tok_row, np.arange(n + 1))

    # Which query term each word is (-1: none).
    terms, prefixes = _query_terms(query, field)
    term_of = np.full(len(starts), -1, np.int64)
    for j, (term, prefix) in enumerate([(t, False) for t in terms]
                                       + [(p, True) for p in prefixes]):
        code = _codes(term)
        size = len(code)
        cand = np.flatnonzero(((lengths >= size) if prefix else (lengths == size))
                              & (term_of < 0))
        if len(cand) == 0:
            continue
        same = (low[starts[cand, None] + np.arange(size)] == code).all(axis=1)
        term_of[cand[same]] = j
    matched = term_of >= 0

    # The best window of each row with words.
    rows = np.flatnonzero(first_tok[1:] > first_tok[:-1])
    row_end_tok = first_tok[tok_row + 1]
    stop = np.minimum(np.arange(len(starts)) + words, row_end_tok)
    cum = np.concatenate([[0], np.cumsum(matched)])
    hits = cum[stop] - cum[np.arange(len(starts))]
    distinct = np.zeros(len(starts), np.int64)
    for j in range(len(terms) + len(prefixes)):
        cj = np.concatenate([[0], np.cumsum(term_of == j)])
        distinct += (cj[stop] - cj[np.arange(len(starts))]) > 0
    score = distinct * (words + 1) + hits
    win_start = np.zeros(n, np.int64)
    if len(rows):
        # Per row the first word of the highest score.
        top = np.maximum.reduceat(score, first_tok[rows])
        rank = np.zeros(n, np.int64)
        rank[rows] = np.arange(len(rows))
        firsts = _next_true(score == top[rank[tok_row]])[first_tok[rows]]
        lo, hi = first_tok[rows], first_tok[rows + 1]
        a = firsts
        b = np.minimum(a + words, hi)
        # Centre the window's matches: first and last matching word inside it.
        has = hits[a] > 0
        nxt = _next_true(matched)
        f = np.where(has, nxt[a], a)
        last = _prev_true(matched)
        lm = np.where(has, last[np.maximum(b - 1, 0)], a)
        slack = words - (lm - f + 1)
        start = np.where(has, f - slack // 2, a)
        start = np.minimum(start, hi - words)
        start = np.maximum(start, lo)
        win_start[rows] = start
    win_stop = np.zeros(n, np.int64)
    if len(rows):
        win_stop[rows] = np.minimum(win_start[rows] + words, first_tok[rows + 1])

    # Pieces: the words and the text between them, as slices of the batch's bytes.
    cut = np.zeros(len(cps) + 1, bool)
    cut[row_cp] = cut[starts] = cut[ends] = True
    bounds = np.flatnonzero(cut)
    piece_bytes = cp_byte[bounds]
    pieces = pa.LargeStringArray.from_buffers(
        len(bounds) - 1, pa.py_buffer(piece_bytes.astype(np.int64).tobytes()),
        pa.py_buffer(data))
    tok_piece = (np.cumsum(cut) - 1)[starts]
    marks = np.zeros(len(bounds) + 1, bool)
    marks[tok_piece[matched]] = True
    extra = pa.array([LEAD, TRAIL], pa.large_string())
    lead_i, trail_i = len(bounds) - 1, len(bounds)
    everything = pa.concat_arrays([pieces, extra])

    lead = np.zeros(n, bool)
    trail = np.zeros(n, bool)
    p_first = np.zeros(n, np.int64)
    p_last = np.zeros(n, np.int64)
    count = np.zeros(n, np.int64)
    if len(rows):
        lead[rows] = win_start[rows] > first_tok[rows]
        trail[rows] = win_stop[rows] < first_tok[rows + 1]
        p_first[rows] = tok_piece[win_start[rows]]
        p_last[rows] = tok_piece[win_stop[rows] - 1]
        count[rows] = p_last[rows] - p_first[rows] + 1 + lead[rows] + trail[rows]
    list_offsets = np.concatenate([[0], np.cumsum(count)])
    total = int(list_offsets[-1])
    pos = np.arange(total) - np.repeat(list_offsets[:-1], count)
    index = np.repeat(p_first - lead, count) + pos
    index[list_offsets[:-1][lead]] = lead_i
    index[list_offsets[1:][trail] - 1] = trail_i
    taken = _escape(everything.take(pa.array(index, pa.int64())))
    wrapped = pc.binary_join_element_wise(
        pa.scalar(OPEN, pa.large_string()), taken, pa.scalar(CLOSE, pa.large_string()),
        pa.scalar("", pa.large_string()))
    shown = pc.if_else(pa.array(marks[index]), wrapped, taken)
    joined = pc.binary_join(pa.LargeListArray.from_arrays(
        pa.array(list_offsets, pa.int64()), shown), pa.scalar("", pa.large_string()))
    return _with_nulls(joined.cast(pa.string()), nulls)


def _with_nulls(out: pa.Array, nulls: pa.Array) -> pa.Array:
    if nulls.true_count:
        out = pc.if_else(nulls, pa.scalar(None, pa.string()), out)
    return out


def _next_true(mask: np.ndarray) -> np.ndarray:
    """For each position, the first position at or after it where ``mask`` holds (or
    ``len(mask)``)."""
    idx = np.where(mask, np.arange(len(mask)), len(mask))
    return np.minimum.accumulate(idx[::-1])[::-1]


def _prev_true(mask: np.ndarray) -> np.ndarray:
    """For each position, the last position at or before it where ``mask`` holds (or
    -1)."""
    idx = np.where(mask, np.arange(len(mask)), -1)
    return np.maximum.accumulate(idx) if len(idx) else idx


def _kernel(texts: pa.Array, query: pa.Array, words: pa.Array, field: pa.Array) -> pa.Array:
    if len(texts) == 0:
        return pa.array([], pa.string())
    values = [a[0].as_py() for a in (query, words, field)]
    for a in (query, words, field):
        if len(a) > 1 and pc.count_distinct(a, mode="all").as_py() > 1:
            raise SqlPlanError(f"{NAME}(): the query and the window must be constants")
    q, w, f = values
    if q is None or w is None:
        return pa.nulls(len(texts), pa.string())
    return snippets(texts, q, int(w), f or "")


def register(ctx: datafusion.SessionContext) -> None:
    """Registers the function ``bm25_snippet`` is rewritten to on ``ctx``."""
    ctx.register_udf(datafusion.udf(
        _kernel, [pa.string(), pa.string(), pa.int64(), pa.string()], pa.string(),
        "immutable", FUNCTION))
