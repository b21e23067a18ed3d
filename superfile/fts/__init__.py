"""The BM25 full-text index embedded in a superfile: tokenizer, builder, blob reader."""

from superfile.fts.build import FtsColumnStats, build_fts_index
from superfile.fts.query import ParsedQuery, parse_query
from superfile.fts.reader import MAX_PREFIX_EXPANSION, FtsIndexReader
from superfile.fts.stats import CollectionStats
from superfile.fts.tokenizer import tokenize, tokenize_column

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
