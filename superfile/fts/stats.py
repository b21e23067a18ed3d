"""Collection statistics a caller supplies so many files are scored on one scale."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["CollectionStats"]


@dataclass(frozen=True)
class CollectionStats:
    """Table-wide BM25 statistics for one column.

    ``doc_freqs`` must hold every term that will be scored, prefix expansions included
    (expand prefixes with ``FtsIndexReader.terms_with_prefix`` on every file first); a
    scored term missing from it is a ``QueryError``.
    """

    num_docs: int
    avg_doc_len: float
    doc_freqs: Mapping[str, int] = field(default_factory=dict)
