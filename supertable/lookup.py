"""Point lookups: the live rows whose text column equals a value exactly, found through
the column's BM25 index and read with only the columns asked for.

Equality is exact string equality; the index only narrows the candidates. A row equal to
the value holds every token of the value and exactly as many tokens, so a file's
postings (all of the value's tokens) and its document lengths leave few candidates,
and its term filter rules the file out when a token is missing. The candidates' own
values of the compared columns are read, in the same fetch as the columns asked for,
and compared with the values byte for byte. Rows come back in ``_id`` order, as
``exact_match`` gives them.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.superfile.errors import QueryError
from quiver.superfile.fts.query import ParsedQuery
from quiver.superfile.fts.tokenizer import tokenize
from quiver.supertable import interrupt
from quiver.supertable.bloom import TermBloom
from quiver.supertable.manifest import ID_COLUMN, FileEntry
from quiver.supertable.snapshot import Snapshot

# Past this many candidates in one file, the compared columns are read first and the
# other columns only for the rows that are equal (a common value with many candidates).
FETCH_TOGETHER_MAX = 1024

# How many point lookups this process has run: what a caller checks to know one ran.
RUNS: Counter[str] = Counter()
_runs_lock = threading.Lock()


def equal_rows(snap: Snapshot, column: str, value: str, columns: Sequence[str], *,
               also: Sequence[tuple[str, str]] = (), files: Collection[str] | None = None,
               limit: int | None = None) -> pa.Table:
    """The chosen ``columns`` (``_id`` may be one of them) of the live rows whose
    ``column`` equals ``value`` and whose every ``(column, value)`` of ``also`` holds too,
    in ``_id`` order, at most ``limit`` of them. ``column`` must have a BM25 index and
    every compared column must be text. ``files`` (paths) limits the search to those
    files of the snapshot."""
    with _runs_lock:
        RUNS["lookups"] += 1
    if column not in snap.manifest.spec.fts:
        raise QueryError(f"column {column!r} of table {snap.name!r} has no BM25 index")
    wanted = list(columns)
    snap.check_columns(wanted + [column] + [c for c, _ in also])
    full = snap.manifest.schema
    schema = pa.schema([full.field(c) for c in wanted])
    every = tokenize(value)
    tokens = tuple(dict.fromkeys(every))
    compared = [(column, value), *also]
    stored = list(dict.fromkeys(c for c in wanted if c != ID_COLUMN))
    dnf = [[(c, "=", v) for c, v in compared]]
    hashes = _hashes(tokens) if tokens else None
    ids: list[np.ndarray] = []
    values: list[dict[str, pa.Array | pa.ChunkedArray]] = []
    for entry in snap.candidate_files(dnf):
        if files is not None and entry.path not in files:
            continue
        interrupt.check()
        if hashes is not None and not _bloom_keeps(snap, entry, column, hashes):
            continue
        local = _candidates(snap, entry, column, tokens, len(every))
        if len(local):
            found, taken = _fetch(snap, entry, local, compared, stored)
            if len(found):
                ids.append(found)
                values.append(taken)
    if not ids:
        return schema.empty_table()
    if len(ids) == 1:
        row_ids, out = ids[0], values[0]
    else:
        row_ids = np.concatenate(ids)
        order = np.argsort(row_ids, kind="stable")
        row_ids = row_ids[order]
        indices = pa.array(order)
        out = {c: pa.chunked_array([v[c] for v in values], full.field(c).type).take(indices)
               for c in stored}
    if limit is not None and len(row_ids) > limit:
        row_ids = row_ids[:limit]
        out = {c: v.slice(0, limit) for c, v in out.items()}
    arrays = [pa.array(row_ids, pa.int64()) if c == ID_COLUMN else out[c] for c in wanted]
    return pa.Table.from_arrays(arrays, schema=schema)


@functools.lru_cache(maxsize=1024)
def _hashes(tokens: tuple[str, ...]) -> np.ndarray:
    """The term filter hashes of a value's tokens (the same values are looked up again)."""
    hashes = TermBloom.hash_terms(list(tokens))
    hashes.setflags(write=False)
    return hashes


def _bloom_keeps(snap: Snapshot, entry: FileEntry, column: str, hashes: np.ndarray) -> bool:
    """False when the file's term filter proves a token of the value is absent."""
    summary = snap.pool.summary(entry)
    bloom = summary.blooms.get(column) if summary else None
    return bloom is None or bool(bloom.might_contain(hashes).all())


def _candidates(snap: Snapshot, entry: FileEntry, column: str, tokens: tuple[str, ...],
                length: int) -> np.ndarray:
    """Live local rows of one file that hold every token and exactly ``length`` tokens
    (every live row when the value has no token)."""
    if tokens:
        index = snap.fts(entry, column)
        local = index.token_match(ParsedQuery(tokens, (), ()), "and")
        if len(local):
            local = local[index.doc_lengths()[local] == length]
        local = local.astype(np.int64)
    else:
        local = np.arange(entry.rows, dtype=np.int64)
    if entry.tombstones and len(local):
        dead = np.asarray(entry.tombstones.to_array(), np.int64)
        local = local[~np.isin(local, dead)]
    return local


def _fetch(snap: Snapshot, entry: FileEntry, local: np.ndarray,
           compared: list[tuple[str, str]], stored: list[str]
           ) -> tuple[np.ndarray, dict[str, pa.Array | pa.ChunkedArray]]:
    """The ``_id`` of the rows of ``local`` equal to every compared value, and their
    ``stored`` columns."""
    contiguous = entry.id_max - entry.id_min + 1 == entry.rows
    keys = list(dict.fromkeys(c for c, _ in compared))
    needed = stored if contiguous else [*stored, ID_COLUMN]
    reader = snap.reader(entry)
    together = len(local) <= FETCH_TOGETHER_MAX
    rows = snap.conform(reader.take(local, list(dict.fromkeys(keys + needed)) if together
                                    else keys))
    keep = np.ones(len(local), bool)
    for c, v in compared:
        keep &= _equal(rows.column(c), v)
    if not keep.all():
        local = local[keep]
        rows = rows.filter(pa.array(keep)) if together else rows
    if not together:
        rows = snap.conform(reader.take(local, needed)) if len(local) and needed else \
            pa.schema([snap.manifest.schema.field(c) for c in needed]).empty_table()
    if contiguous:
        found = entry.id_min + local
    else:
        found = rows.column(ID_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
    return found, {c: rows.column(c) for c in stored}


# Up to this many values, comparing them as Python strings costs less than a compute call.
_PY_COMPARE_MAX = 64


def _equal(values: pa.ChunkedArray, value: str) -> np.ndarray:
    """Whether each value equals ``value`` exactly (a NULL does not)."""
    if len(values) <= _PY_COMPARE_MAX:
        return np.fromiter((x == value for x in values.to_pylist()), bool, len(values))
    eq = pc.fill_null(pc.equal(values, pa.scalar(value, values.type)), False)
    return np.asarray(eq.to_numpy(zero_copy_only=False), bool)
