"""Parsing of full-text query strings into terms, prefixes and excluded terms."""

from __future__ import annotations

from dataclasses import dataclass

from superfile.errors import QueryError
from superfile.fts.tokenizer import tokenize

__all__ = ["ParsedQuery", "parse_query"]


@dataclass(frozen=True)
class ParsedQuery:
    """A query after tokenization: every string is one normalized token."""

    terms: tuple[str, ...]
    prefixes: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.terms or self.prefixes or self.excluded)


def _dedup(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_query(text: str) -> ParsedQuery:
    """Splits a query on whitespace into words and tokenizes each word.

    ``-word`` excludes every token of ``word``; ``word*`` makes the last token of ``word`` a
    prefix (earlier tokens of the same word stay plain terms). A ``*`` on an excluded word is
    ignored: exclusion is by whole token. Repeated tokens count once. A query that yields no
    token at all raises ``QueryError``.
    """
    if not isinstance(text, str):
        raise QueryError(f"a full-text query must be a string, not {type(text).__name__}")
    terms: list[str] = []
    prefixes: list[str] = []
    excluded: list[str] = []
    for word in text.split():
        if word.startswith("-"):
            excluded.extend(tokenize(word[1:]))
            continue
        if word.endswith("*"):
            toks = tokenize(word.rstrip("*"))
            if toks:
                terms.extend(toks[:-1])
                prefixes.append(toks[-1])
            continue
        terms.extend(tokenize(word))
    parsed = ParsedQuery(_dedup(terms), _dedup(prefixes), _dedup(excluded))
    if parsed.is_empty:
        raise QueryError(f"the query {text!r} contains no searchable token")
    return parsed
