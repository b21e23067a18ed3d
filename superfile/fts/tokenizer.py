"""The one tokenizer of the full-text index, shared by index build and query parsing.

Rules: Unicode lowercase (Arrow's ``utf8_lower``, one code point to one code point), then
split on every run of code points that are neither letters (``\\p{L}``) nor digits
(``\\p{N}``), dropping empty tokens. Columns are tokenized with pyarrow compute (RE2);
single query strings with an equivalent pure-Python path whose lowercase map and character
class are derived once from pyarrow itself, so both paths agree code point for code point.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SPLIT_PATTERN = r"[^\p{L}\p{N}]+"

__all__ = ["SPLIT_PATTERN", "split_column", "tokenize", "tokenize_column"]


def _as_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    if pa.types.is_string_view(texts.type):
        texts = texts.cast(pa.string())
    return texts


def split_column(texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Lowercases and splits, keeping empty pieces (the build drops them by term id)."""
    arr = _as_array(texts)
    if len(arr) == 0:
        return pa.array([], pa.string()), np.zeros(0, np.int64)
    lists = pc.split_pattern_regex(pc.utf8_lower(arr), pattern=SPLIT_PATTERN)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy().astype(np.int64, copy=False)
    return flat, parents


def tokenize_column(texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Tokens of every row, flattened, with the row index (int64) of each token.

    Null rows produce no tokens.
    """
    flat, parents = split_column(texts)
    if len(flat) == 0:
        return flat, parents
    keep = pc.greater(pc.binary_length(flat), 0)
    keep_np = keep.to_numpy(zero_copy_only=False)
    if keep_np.all():
        return flat, parents
    return flat.filter(keep), parents[keep_np]


class _Tables:
    """Lowercase map and token-character class, read off pyarrow for every code point."""

    def __init__(self) -> None:
        cps = np.concatenate(
            [np.arange(0, 0xD800, dtype=np.uint32), np.arange(0xE000, 0x110000, dtype=np.uint32)]
        )
        nbytes = np.where(cps < 0x80, 1, np.where(cps < 0x800, 2, np.where(cps < 0x10000, 3, 4)))
        offsets = np.zeros(len(cps) + 1, np.int32)
        np.cumsum(nbytes, out=offsets[1:])
        data = cps.tobytes().decode("utf-32-le").encode("utf-8")
        arr = pa.StringArray.from_buffers(
            len(cps), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)
        )
        lowered = pc.utf8_lower(arr)
        if pc.max(pc.utf8_length(lowered)).as_py() != 1:
            raise RuntimeError("utf8_lower no longer maps code points one to one")
        low_cps = np.frombuffer(
            "".join(lowered.to_pylist()).encode("utf-32-le"), dtype=np.uint32
        )
        changed = np.nonzero(low_cps != cps)[0]
        self.lower_map = {int(cps[i]): chr(int(low_cps[i])) for i in changed}
        is_word = pc.match_substring_regex(arr, r"^[\p{L}\p{N}]$").to_numpy(zero_copy_only=False)
        word_cps = cps[is_word]
        # Collapse the word code points into ranges for a compact character class.
        breaks = np.nonzero(np.diff(word_cps.astype(np.int64)) != 1)[0]
        starts = np.concatenate([[word_cps[0]], word_cps[breaks + 1]])
        ends = np.concatenate([word_cps[breaks], [word_cps[-1]]])
        ranges = "".join(
            f"\\U{int(s):08x}" if s == e else f"\\U{int(s):08x}-\\U{int(e):08x}"
            for s, e in zip(starts, ends, strict=True)
        )
        self.splitter = re.compile(f"[^{ranges}]+")


_tables: _Tables | None = None
_tables_lock = threading.Lock()


def _get_tables() -> _Tables:
    global _tables
    if _tables is None:
        with _tables_lock:
            if _tables is None:
                _tables = _Tables()
    return _tables


def tokenize(text: str) -> list[str]:
    """Tokens of one string under the same rules as ``tokenize_column``."""
    tables = _get_tables()
    lowered = text.translate(tables.lower_map)
    return [t for t in tables.splitter.split(lowered) if t]
