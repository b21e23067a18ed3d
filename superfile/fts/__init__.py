"""The BM25 full-text index embedded in a superfile: tokenizer, builder, blob reader."""

from quiver.superfile.fts.build import FtsColumnStats, build_fts_index
from quiver.superfile.fts.query import ParsedQuery, parse_query
from quiver.superfile.fts.reader import MAX_PREFIX_EXPANSION, FtsIndexReader
from quiver.superfile.fts.stats import CollectionStats
from quiver.superfile.fts.tokenizer import tokenize, tokenize_column

__all__ = [
    "MAX_PREFIX_EXPANSION",
    "CollectionStats",
    "FtsColumnStats",
    "FtsIndexReader",
    "ParsedQuery",
    "build_fts_index",
    "parse_query",
    "tokenize",
    "tokenize_column",
]
