"""Parsing of full-text query strings: words, prefixes, phrases, proximity, fields, boosts.

The syntax (docs/search-syntax.md is the user-facing description)::

    query   := clause*                      clauses are separated by whitespace
    clause  := ['-'] [field ':'] atom ['^' weight]
    atom    := word ['*'] | '"' words '"' ['~' slop]

A word is tokenized like indexed text, so ``web-framework`` is the two terms ``web`` and
``framework``. ``word*`` makes the word's last token a prefix. A quoted phrase matches its
tokens adjacent and in order; ``"a b"~N`` lets at most N other tokens stand between them
(in order). A phrase of one token is that term. ``-`` excludes documents holding the term
or phrase (a ``*`` on an excluded word is ignored: exclusion is by whole token). ``^w``
multiplies the clause's score by ``w > 0``. ``field:`` restricts the clause to one of the
searched columns; a name that is not one of them is plain text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from quiver.superfile.errors import QueryError
from quiver.superfile.fts.tokenizer import tokenize

__all__ = ["MAX_CLAUSES", "MAX_GROUPS", "MAX_PREFIX_EXPANSION", "MAX_SLOP", "FieldedQuery",
           "ParsedQuery", "Phrase", "parse_fields", "parse_query"]

MAX_SLOP = 1 << 16
MAX_PHRASE_TOKENS = 32
# Clauses (terms, prefixes, phrases) with a bit of their own in the rankings' int64 group
# masks. An OR query only asks whether some clause matched, so past this the bits repeat;
# a query whose clauses must all match needs one bit each and is refused past it.
MAX_GROUPS = 62
# Distinct clauses (terms, prefixes, phrases, excluded ones) one query may hold, and the
# terms its prefixes may expand to together: the ranking's work grows with the terms
# times the rows they reach, so a query of 5,000 words took half a minute.
MAX_CLAUSES = 1024
# Terms one prefix expands to at most (its most frequent ones).
MAX_PREFIX_EXPANSION = 256

def group_bit(group: int) -> int:
    """The mask bit of clause group ``group`` (see ``MAX_GROUPS``)."""
    return 1 << (group % MAX_GROUPS)


def check_and_groups(groups: int) -> None:
    """Refuses a query whose ``groups`` clauses must all match past ``MAX_GROUPS``."""
    if groups > MAX_GROUPS:
        raise QueryError(f"a query whose terms must all match takes at most {MAX_GROUPS} "
                         f"terms, prefixes and phrases, got {groups}")


_CLAUSE = re.compile(
    r'(?P<neg>-)?(?:(?P<field>[A-Za-z_][A-Za-z0-9_]*):(?=\S))?'
    r'(?:"(?P<phrase>[^"]*)"(?:~(?P<slop>\d+))?|(?P<word>[^\s"]+?))'
    r'(?:\^(?P<boost>\d+(?:\.\d+)?|\.\d+))?(?=\s|"|$)'
)


@dataclass(frozen=True)
class Phrase:
    """Tokens that must appear in order with at most ``slop`` other tokens between them."""

    tokens: tuple[str, ...]
    slop: int = 0


# A clause's key: its token for a term ("t") or prefix ("p"), its Phrase for a phrase ("q").
ClauseKey = str | Phrase
_K = TypeVar("_K", str, Phrase)


@dataclass(frozen=True)
class ParsedQuery:
    """A query for one column after tokenization: every string is one normalized token.

    Scored clauses ("groups") come in a fixed order: ``terms``, then ``prefixes``, then
    ``phrases``. ``boosts`` lists the clauses whose weight is not 1 as
    ``((kind, key), weight)`` with kind ``"t"`` (term), ``"p"`` (prefix) or ``"q"``
    (phrase, keyed by its ``Phrase``).
    """

    terms: tuple[str, ...]
    prefixes: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    phrases: tuple[Phrase, ...] = ()
    excluded_phrases: tuple[Phrase, ...] = ()
    boosts: tuple[tuple[tuple[str, ClauseKey], float], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.terms or self.prefixes or self.excluded or self.phrases
                    or self.excluded_phrases)

    @property
    def is_plain(self) -> bool:
        """Terms, prefixes and excluded terms only, every weight 1."""
        return not (self.phrases or self.excluded_phrases or self.boosts)

    @property
    def scored(self) -> bool:
        return bool(self.terms or self.prefixes or self.phrases)

    def boost(self, kind: str, key: ClauseKey) -> float:
        for (k, name), w in self.boosts:
            if k == kind and name == key:
                return w
        return 1.0

    def all_terms(self) -> tuple[str, ...]:
        """Plain terms and every phrase token (the words whose statistics scoring needs)."""
        out = list(self.terms)
        for p in self.phrases:
            out.extend(p.tokens)
        return tuple(dict.fromkeys(out))

    def expansion_limit(self) -> int:
        """How many expansions each prefix keeps: at most ``MAX_PREFIX_EXPANSION``, and
        together no more terms than ``MAX_CLAUSES`` leaves after the plain ones."""
        if not self.prefixes:
            return MAX_PREFIX_EXPANSION
        share = (MAX_CLAUSES - len(self.terms)) // len(self.prefixes)
        return max(1, min(MAX_PREFIX_EXPANSION, share))

    def clause_keys(self) -> list[tuple[str, ClauseKey]]:
        """(kind, key) of each scored clause, in group order."""
        keys: list[tuple[str, ClauseKey]] = [("t", t) for t in self.terms]
        keys += [("p", p) for p in self.prefixes]
        keys += [("q", q) for q in self.phrases]
        return keys


@dataclass
class _Builder:
    terms: dict[str, float] = field(default_factory=dict)
    prefixes: dict[str, float] = field(default_factory=dict)
    phrases: dict[Phrase, float] = field(default_factory=dict)
    excluded: dict[str, None] = field(default_factory=dict)
    excluded_phrases: dict[Phrase, None] = field(default_factory=dict)

    @staticmethod
    def _put(d: dict[_K, float], key: _K, w: float) -> None:
        # A repeated clause counts once, at its largest weight.
        d[key] = max(d.get(key, 0.0), w)

    def add(self, neg: bool, kind: str, key: ClauseKey, w: float) -> None:
        if kind == "q":
            # _clauses keys a phrase clause by its Phrase and every other clause by a token.
            assert isinstance(key, Phrase)
            if neg:
                self.excluded_phrases[key] = None
            else:
                self._put(self.phrases, key, w)
            return
        assert isinstance(key, str)
        if neg:
            self.excluded[key] = None
            return
        self._put({"t": self.terms, "p": self.prefixes}[kind], key, w)

    def build(self) -> ParsedQuery:
        count = (len(self.terms) + len(self.prefixes) + len(self.phrases) + len(self.excluded)
                 + len(self.excluded_phrases))
        if count > MAX_CLAUSES:
            raise QueryError(f"a full-text query takes at most {MAX_CLAUSES:,} distinct terms, "
                             f"prefixes and phrases, got {count:,}")
        boosts = tuple(((kind, key), w) for kind, d in
                       (("t", self.terms), ("p", self.prefixes), ("q", self.phrases))
                       for key, w in d.items() if w != 1.0)
        return ParsedQuery(tuple(self.terms), tuple(self.prefixes), tuple(self.excluded),
                           tuple(self.phrases), tuple(self.excluded_phrases), boosts)


def _weight(text: str | None, whole: str) -> float:
    if text is None:
        return 1.0
    w = float(text)
    if not (w > 0 and math.isfinite(w)):
        raise QueryError(f"the weight in {whole!r} must be a positive number")
    return w


def _clauses(text: str, fields: Sequence[str]
             ) -> Iterator[tuple[bool, str | None, str, ClauseKey, float]]:
    """Yields (negated, field or None, kind, key, weight) for each clause of ``text``."""
    if not isinstance(text, str):
        raise QueryError(f"a full-text query must be a string, not {type(text).__name__}")
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return
        m = _CLAUSE.match(text, pos)
        if m is None:
            raise QueryError(f"the query {text[:80]!r} has an unclosed quote at {pos}")
        pos = m.end()
        neg = m.group("neg") is not None
        name = m.group("field")
        w = _weight(m.group("boost"), m.group(0))
        if name is not None and name not in fields:
            # Not one of the searched columns: the name is plain text.
            for tok in tokenize(name):
                yield neg, None, "t", tok, w
            name = None
        if m.group("phrase") is not None:
            toks = tokenize(m.group("phrase"))
            slop = int(m.group("slop") or 0)
            if slop > MAX_SLOP:
                raise QueryError(f"a phrase's slop is at most {MAX_SLOP}, got {slop}")
            if len(toks) > MAX_PHRASE_TOKENS:
                raise QueryError(f"a phrase holds at most {MAX_PHRASE_TOKENS} tokens")
            if len(toks) == 1:
                yield neg, name, "t", toks[0], w
            elif toks:
                yield neg, name, "q", Phrase(tuple(toks), slop), w
            continue
        word = m.group("word")
        if neg:
            for tok in tokenize(word):
                yield True, name, "t", tok, w
            continue
        if word.endswith("*"):
            toks = tokenize(word.rstrip("*"))
            for tok in toks[:-1]:
                yield False, name, "t", tok, w
            if toks:
                yield False, name, "p", toks[-1], w
            continue
        for tok in tokenize(word):
            yield False, name, "t", tok, w


def parse_query(text: str) -> ParsedQuery:
    """Parses a query for one column (``field:`` prefixes are plain text).

    A query that yields no token at all raises ``QueryError``.
    """
    b = _Builder()
    for neg, _f, kind, key, w in _clauses(text, ()):
        b.add(neg, kind, key, w)
    parsed = b.build()
    if parsed.is_empty:
        raise QueryError(f"the query {str(text)[:80]!r} contains no searchable token")
    return parsed


@dataclass(frozen=True)
class FieldedQuery:
    """A query over several columns: each column's own ``ParsedQuery`` and, for each of
    its scored clauses (in group order), the bit set of query clauses it satisfies, so
    'and' can ask every clause to match in some column."""

    per_field: dict[str, ParsedQuery]
    groups: dict[str, tuple[int, ...]]
    num_groups: int


def parse_fields(text: str, fields: Sequence[str]) -> FieldedQuery:
    """Parses a query over ``fields``: a clause without ``field:`` applies to each of them."""
    fields = list(fields)
    builders = {f: _Builder() for f in fields}
    clause_ids: dict[tuple, int] = {}
    for neg, name, kind, key, w in _clauses(text, fields):
        targets = fields if name is None else [name]
        if not neg:
            clause_ids.setdefault((name, kind, key), len(clause_ids))
        for f in targets:
            builders[f].add(neg, kind, key, w)
    per_field: dict[str, ParsedQuery] = {}
    groups: dict[str, tuple[int, ...]] = {}
    for f, b in builders.items():
        q = b.build()
        per_field[f] = q
        bits = []
        for kind, key in q.clause_keys():
            # The clause aimed at this column and the unaimed one, whichever exist.
            bit = 0
            for c in ((f, kind, key), (None, kind, key)):
                if c in clause_ids:
                    bit |= group_bit(clause_ids[c])
            bits.append(bit)
        groups[f] = tuple(bits)
    if all(q.is_empty for q in per_field.values()):
        raise QueryError(f"the query {str(text)[:80]!r} contains no searchable token")
    return FieldedQuery(per_field, groups, len(clause_ids))
