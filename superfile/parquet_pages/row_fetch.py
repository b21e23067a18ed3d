"""Fetching chosen rows of a Parquet file by row id, reading only the pages that hold them.

pyarrow cannot select rows through the page index, so ``RowFetcher`` does the
selection itself: it reads each needed column chunk's OffsetIndex, picks the
pages that cover the wanted rows, fetches them (plus the dictionary page when
those pages need it) with coalesced range reads, and wraps them in a small
Parquet file built in memory whose footer describes just those pages. pyarrow
decodes that file; the wanted rows are then taken from it in the order asked.

Each top-level field gets its own in-memory file, because pages of different
columns end at different rows while a row group needs one row count for all of
its columns. Leaves of one nested field are cut at row boundaries common to all
of them, so they stay aligned. Column chunks without an offset index are read
whole through ``RangeFile`` instead.

Files held in memory skip all that: building and decoding a small file per column
costs far more than taking rows from an already decoded column, so a fetcher over
resident bytes decodes a requested column whole, once, and keeps it in
``ColumnCache``, one least-recently-used store with a byte budget shared by every
such fetcher in the process. Columns too big for their share of the budget keep
using the pages.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import logging
import struct
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quiver.superfile.errors import CorruptFileError, NotASuperfileError, QueryError, SuperfileError
from quiver.superfile.parquet_pages import metadata as md
from quiver.superfile.parquet_pages.metadata import (
    ColumnChunkInfo,
    FileMetadata,
    PageHeaderInfo,
    PageIndex,
    TopField,
)
from quiver.superfile.parquet_pages.thrift_compact import Struct, TList, TType, encode_struct
from quiver.superfile.ranges import Buffer, RangeReader, read_many

logger = logging.getLogger(__name__)

MAGIC = b"PAR1"
ENCRYPTED_MAGIC = b"PARE"
ARROW_SCHEMA_KEY = b"ARROW:schema"
# ColumnMetaData fields that stay valid for a subset of the pages; statistics, page
# encoding counts, bloom filters and size statistics describe the whole chunk and go.
_KEPT_COLUMN_META = (md.CMD_TYPE, md.CMD_ENCODINGS, md.CMD_PATH, md.CMD_CODEC, md.CMD_KV)
DEFAULT_COLUMN_CACHE_BYTES = 512 * 1024 * 1024
# A single column may take at most this share of the budget, so one huge column (say
# of vectors) cannot flush everything else, and so its whole decode is never paid
# for a handful of rows that its pages serve far cheaper.
COLUMN_SHARE = 8
# A first take of a column that asks for fewer rows than 1/ADMIT_FRACTION of the file
# goes through the pages and only marks the column; the whole decode (some ms for a
# large string column) is paid on the second take, so a one-off query stays as cheap
# as before while repeated ones become an Arrow take.
ADMIT_FRACTION = 64


class ColumnCache:
    """Whole decoded columns of resident files, keyed by (owner, column name).

    Least recently used columns are evicted first, whole, once the decoded bytes pass
    the budget. Thread-safe.
    """

    def __init__(self, budget: int = DEFAULT_COLUMN_CACHE_BYTES, *,
                 max_column: int | None = None) -> None:
        """``max_column`` bounds one column's bytes; by default 1/COLUMN_SHARE of the
        budget."""
        if budget < 0:
            raise ValueError(f"a cache budget cannot be negative, got {budget}")
        self._max_column = max_column
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[int, str], tuple[pa.Array | pa.ChunkedArray, int]] = \
            OrderedDict()
        self._owners: dict[int, set[str]] = {}
        self._budget = int(budget)
        self._used = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def used(self) -> int:
        """Decoded bytes held now."""
        return self._used

    @property
    def max_column(self) -> int:
        """The largest column, in bytes, that is kept."""
        if self._max_column is not None:
            return min(self._max_column, self._budget)
        return self._budget // COLUMN_SHARE

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: tuple[int, str]) -> bool:
        with self._lock:
            return key in self._items

    def set_budget(self, budget: int) -> None:
        """Changes the budget, evicting at once down to a smaller one."""
        if budget < 0:
            raise ValueError(f"a cache budget cannot be negative, got {budget}")
        with self._lock:
            self._budget = int(budget)
            self._evict_locked()

    def get(self, owner: int, column: str) -> pa.Array | pa.ChunkedArray | None:
        with self._lock:
            found = self._items.get((owner, column))
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end((owner, column))
            self.hits += 1
            return found[0]

    def put(self, owner: int, column: str, values: pa.Array | pa.ChunkedArray, nbytes: int
            ) -> pa.Array | pa.ChunkedArray:
        """Keeps ``values`` if they fit; returns the column to use (an equal one that a
        concurrent caller put first wins, so both callers share one copy)."""
        key = (owner, column)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found[0]
            if nbytes > self.max_column:
                return values
            self._items[key] = (values, nbytes)
            self._owners.setdefault(owner, set()).add(column)
            self._used += nbytes
            self._evict_locked()
            return values

    def drop_owner(self, owner: int) -> None:
        """Forgets every column of one owner (its file is no longer read)."""
        with self._lock:
            for column in self._owners.pop(owner, ()):
                _, nbytes = self._items.pop((owner, column))
                self._used -= nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._owners.clear()
            self._used = 0

    def _evict_locked(self) -> None:
        while self._used > self._budget and self._items:
            (owner, column), (_, nbytes) = self._items.popitem(last=False)
            self._used -= nbytes
            self.evictions += 1
            columns = self._owners.get(owner)
            if columns is not None:
                columns.discard(column)
                if not columns:
                    del self._owners[owner]


COLUMN_CACHE = ColumnCache()
_owner_ids = itertools.count(1)


class RangeFile(io.RawIOBase):
    """A seekable, read-only file object over a ``RangeReader`` (each read is one range read)."""

    def __init__(self, source: RangeReader) -> None:
        super().__init__()
        self._source = source
        self._size = source.size()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        start = min(self._pos, self._size)
        n = self._size - start if size is None or size < 0 else min(size, self._size - start)
        if n <= 0:
            return b""
        data = bytes(self._source.read(start, n))
        self._pos = start + n
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def read_footer(source: RangeReader, tail: int = 65536) -> tuple[bytes, int]:
    """The thrift FileMetaData bytes of a Parquet file and the offset where they start.

    One read of the file's last ``tail`` bytes, and a second one when the footer is
    longer than that.
    """
    size = source.size()
    if size < 12:
        raise NotASuperfileError(f"a {size}-byte file is too small to be Parquet")
    tail_len = min(max(tail, 8), size)
    tail_bytes = memoryview(source.read(size - tail_len, tail_len)).cast("B")
    magic = bytes(tail_bytes[-4:])
    if magic == ENCRYPTED_MAGIC:
        raise NotASuperfileError("encrypted Parquet footers are not supported")
    if magic != MAGIC:
        raise NotASuperfileError("not a Parquet file: no PAR1 magic at the end")
    (footer_len,) = struct.unpack("<I", tail_bytes[-8:-4])
    if footer_len == 0 or footer_len + 12 > size:
        raise CorruptFileError(
            f"Parquet footer length {footer_len} does not fit a {size}-byte file"
        )
    start = size - 8 - footer_len
    if footer_len + 8 <= tail_len:
        footer = bytes(tail_bytes[tail_len - 8 - footer_len : tail_len - 8])
    else:
        footer = bytes(source.read(start, footer_len))
    if tail_len == size and bytes(tail_bytes[:4]) != MAGIC:
        raise NotASuperfileError("not a Parquet file: no PAR1 magic at the start")
    return footer, start


@dataclass
class _Piece:
    """The pages of one leaf column taken from one row group."""

    row_group: int
    leaf: int
    chunk: ColumnChunkInfo
    page_ids: np.ndarray
    dict_range: tuple[int, int] | None
    want_dict: bool
    data: list[Buffer] = field(default_factory=list)
    headers: list[PageHeaderInfo] = field(default_factory=list)
    dictionary: Buffer | None = None


@dataclass
class _GroupPlan:
    """One row group's share of one field: leaf pieces, or a whole-chunk fallback."""

    row_group: int
    num_rows: int  # rows the pieces cover (or the whole row group for the fallback)
    pieces: list[_Piece] | None


class RowFetcher:
    """Fetches rows by id through the page index, or, over resident bytes, from whole
    columns decoded once. Thread-safe for concurrent ``take`` calls."""

    def __init__(self, source: RangeReader, footer: bytes, schema: pa.Schema, *,
                 resident: Buffer | None = None, cache: ColumnCache | None = None) -> None:
        """``resident`` is the whole file when it is held in memory; only then are whole
        columns decoded and kept in ``cache`` (the process-wide one unless given)."""
        self._source = source
        self._schema = schema
        self._meta: FileMetadata = md.parse_file_metadata(footer)
        self._fields: dict[str, TopField] = {}
        for name in schema.names:
            top = self._meta.find_field(name)
            if top is None:
                raise CorruptFileError(
                    f"column {name!r} of the schema is not in the Parquet footer"
                )
            self._fields[name] = top
        self._page_index: dict[tuple[int, int], PageIndex] = {}
        self._arrow_fields: dict[str, bytes | None] = {}
        self._parquet_file: pq.ParquetFile | None = None
        # The fallback reader moves one shared file position; serialize its use.
        self._fallback_lock = threading.Lock()
        self._resident = resident
        self._cache: ColumnCache | None = None
        self._owner = next(_owner_ids)
        self._paged_only: set[str] = set()
        self._touched: set[str] = set()
        if resident is not None:
            self._cache = COLUMN_CACHE if cache is None else cache
            # The columns of a file nobody reads any more free their budget share at once.
            weakref.finalize(self, self._cache.drop_owner, self._owner)

    @property
    def num_rows(self) -> int:
        return self._meta.num_rows

    # -- public ----------------------------------------------------------------------------

    def take(self, row_ids: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """The rows ``row_ids`` (local ids, any order, repeats allowed) of ``columns``."""
        names = list(self._schema.names) if columns is None else list(columns)
        unknown = [c for c in names if c not in self._fields]
        if unknown:
            raise QueryError(f"no columns {unknown}; columns are {self._schema.names}")
        ids = self._check_ids(row_ids)
        out_schema = pa.schema([self._schema.field(n) for n in names],
                               metadata=self._schema.metadata)
        if ids.size == 0:
            return out_schema.empty_table()
        whole = {n: w for n in dict.fromkeys(names)
                 if (w := self._whole_column(n, ids.size)) is not None}
        paged = [n for n in dict.fromkeys(names) if n not in whole]
        taken: dict[str, pa.Array | pa.ChunkedArray] = {}
        if whole:
            indices = pa.array(ids)
            taken = {n: w.take(indices) for n, w in whole.items()}
        if paged:
            taken.update(self._take_pages(ids, paged))
        try:
            # Casts where the decoded type differs from the schema's (e.g. a caller's schema).
            return pa.Table.from_arrays([taken[n] for n in names], schema=out_schema)
        except pa.ArrowException as exc:
            raise CorruptFileError(f"the file's columns do not have the schema's types: {exc}"
                                   ) from None

    def _take_pages(self, ids: np.ndarray, names: list[str]) -> dict[str, pa.ChunkedArray]:
        uniq, inverse = np.unique(ids, return_inverse=True)
        starts = self._meta.row_starts
        rg_of = np.searchsorted(starts, uniq, side="right") - 1
        local = uniq - starts[rg_of]
        groups = np.unique(rg_of)
        bounds = np.searchsorted(rg_of, np.append(groups, groups[-1] + 1))
        wanted = {int(g): local[bounds[i] : bounds[i + 1]] for i, g in enumerate(groups)}

        self._load_page_indexes(names, wanted)
        plans = {n: self._plan_field(self._fields[n], wanted) for n in names}
        self._fetch_pages([p for plan in plans.values() for gp, _ in plan for p in gp.pieces or ()])
        out = {}
        for name in names:
            values, positions = self._read_field(name, plans[name])
            out[name] = values.take(pa.array(positions[inverse]))
        return out

    # -- whole columns of resident files ---------------------------------------------------

    def _whole_column(self, name: str, wanted: int) -> pa.Array | pa.ChunkedArray | None:
        """The decoded column ``name`` of a resident file, or None to use the pages for
        this take of ``wanted`` rows."""
        cache = self._cache
        if cache is None:
            return None
        if name in self._paged_only:
            return None
        found = cache.get(self._owner, name)
        if found is not None:
            return found
        lo, hi = self._fields[name].leaf_range
        encoded = 0
        for group in self._meta.row_groups:
            for chunk in group.columns[lo:hi]:
                size = chunk.raw[md.CC_META][1].get(md.CMD_TOTAL_UNCOMPRESSED)
                encoded += size[1] if size is not None else chunk.total_compressed_size
        if encoded > cache.max_column:
            self._paged_only.add(name)
            return None
        if name not in self._touched and wanted * ADMIT_FRACTION < self._meta.num_rows:
            self._touched.add(name)
            return None
        column = self._decode_whole(name)
        values: pa.Array | pa.ChunkedArray = column
        if column.num_chunks == 1:
            values = column.chunk(0)
        elif column.num_chunks > 1:
            # One array makes each take cheaper; strings past 2 GiB stay chunked.
            with contextlib.suppress(pa.ArrowException):
                values = column.combine_chunks()
        if values.nbytes > cache.max_column:
            # Decoded it outgrows its encoded size (dictionaries expand): serve this take
            # from it, and later ones from the pages rather than decoding it again.
            self._paged_only.add(name)
            return values
        return cache.put(self._owner, name, values, values.nbytes)

    def _decode_whole(self, name: str) -> pa.ChunkedArray:
        assert self._resident is not None
        try:
            file = pq.ParquetFile(pa.BufferReader(pa.py_buffer(self._resident)),
                                  page_checksum_verification=True)
            column = file.read(columns=[name], use_threads=False).column(0)
        except SuperfileError:
            raise
        except Exception as exc:  # pyarrow reports bad bytes with many exception types
            raise CorruptFileError(f"column {name!r} does not decode: {exc}") from None
        if len(column) != self._meta.num_rows:
            raise CorruptFileError(f"column {name!r} decodes to {len(column)} rows where the "
                                   f"footer promises {self._meta.num_rows}")
        return column

    # -- planning --------------------------------------------------------------------------

    def _check_ids(self, row_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(row_ids)
        if ids.ndim != 1:
            raise QueryError(f"row ids must be one-dimensional, got shape {ids.shape}")
        if ids.size == 0:
            return ids.astype(np.int64)
        if not np.issubdtype(ids.dtype, np.integer):
            raise QueryError(f"row ids must be integers, got {ids.dtype}")
        lo, hi = ids.min(), ids.max()
        if lo < 0 or hi >= self._meta.num_rows:
            bad = lo if lo < 0 else hi
            raise QueryError(f"row id {int(bad)} is outside 0..{self._meta.num_rows - 1}")
        return ids.astype(np.int64, copy=False)

    def _load_page_indexes(self, names: list[str], wanted: dict[int, np.ndarray]) -> None:
        todo: list[tuple[int, int]] = []
        for name in names:
            lo, hi = self._fields[name].leaf_range
            for g in wanted:
                for leaf in range(lo, hi):
                    key = (g, leaf)
                    if key not in self._page_index and \
                            self._meta.row_groups[g].columns[leaf].offset_index is not None:
                        todo.append(key)
        if not todo:
            return
        chunks = [self._meta.row_groups[g].columns[leaf] for g, leaf in todo]
        blobs = read_many(self._source, [c.offset_index for c in chunks])  # type: ignore[misc]
        for key, chunk, blob in zip(todo, chunks, blobs, strict=True):
            self._page_index[key] = md.parse_offset_index(
                blob, chunk, self._meta.row_groups[key[0]].num_rows
            )

    def _plan_field(self, top: TopField, wanted: dict[int, np.ndarray]
                    ) -> list[tuple[_GroupPlan, np.ndarray]]:
        """Per touched row group: what to fetch, and where each wanted row lands in it."""
        lo, hi = top.leaf_range
        plans = []
        for g, rows in wanted.items():
            group = self._meta.row_groups[g]
            indexes = [self._page_index.get((g, leaf)) for leaf in range(lo, hi)]
            if lo == hi or any(ix is None for ix in indexes):
                plans.append((_GroupPlan(g, group.num_rows, None), rows))
                continue
            # Rows where every leaf starts a page: cutting there keeps the leaves aligned.
            cuts = reduce(np.intersect1d, [ix.first_rows for ix in indexes])  # type: ignore[union-attr]
            ends = np.append(cuts[1:], group.num_rows)
            block = np.searchsorted(cuts, rows, side="right") - 1
            touched = np.unique(block)
            lengths = ends[touched] - cuts[touched]
            before = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            positions = before[np.searchsorted(touched, block)] + (rows - cuts[block])
            pieces = []
            for leaf, ix in zip(range(lo, hi), indexes, strict=True):
                chunk = group.columns[leaf]
                page_block = np.searchsorted(cuts, ix.first_rows, side="right") - 1  # type: ignore[union-attr]
                page_ids = np.flatnonzero(np.isin(page_block, touched))
                dict_range = None
                want_dict = False
                if chunk.dictionary_page_offset is not None:
                    first = int(ix.offsets[0])  # type: ignore[union-attr]
                    dict_range = (chunk.dictionary_page_offset,
                                  first - chunk.dictionary_page_offset)
                    known = chunk.dict_encoded_pages
                    want_dict = known is None or bool(page_ids[0] < known)
                pieces.append(_Piece(g, leaf, chunk, page_ids, dict_range, want_dict))
            plans.append((_GroupPlan(g, int(lengths.sum()), pieces), positions))
        return plans

    # -- fetching --------------------------------------------------------------------------

    def _fetch_pages(self, pieces: list[_Piece]) -> None:
        ranges: list[tuple[int, int]] = []
        for p in pieces:
            ix = self._page_index[(p.row_group, p.leaf)]
            ranges.extend(zip(ix.offsets[p.page_ids].tolist(), ix.sizes[p.page_ids].tolist(),
                              strict=True))
            if p.want_dict and p.dict_range is not None:
                ranges.append(p.dict_range)
        blobs = iter(read_many(self._source, ranges))
        late: list[_Piece] = []
        for p in pieces:
            data = [next(blobs) for _ in range(len(p.page_ids))]
            headers = [md.parse_page_header(b) for b in data]
            # Writers may leave an empty page that shares its first row with the next one;
            # it holds no values, and some decoders stop at it, so it is left out.
            keep = [i for i, h in enumerate(headers) if h.num_values > 0]
            p.data = [data[i] for i in keep]
            p.headers = [headers[i] for i in keep]
            p.page_ids = p.page_ids[keep]
            if any(h.page_type == md.PAGE_DICTIONARY for h in p.headers):
                raise CorruptFileError("a Parquet data page location points at a dictionary page")
            if p.want_dict and p.dict_range is not None:
                p.dictionary = next(blobs)
            elif p.dict_range is not None and any(h.dictionary_encoded for h in p.headers):
                late.append(p)
        if late:
            # The page encoding counts misled the guess; fetch the missing dictionaries now.
            logger.debug("fetching %d dictionary pages in a second round", len(late))
            for p, blob in zip(late, read_many(self._source, [p.dict_range for p in late]),  # type: ignore[misc]
                               strict=True):
                p.dictionary = blob
        for p in pieces:
            if p.dictionary is not None:
                header = md.parse_page_header(p.dictionary)
                if header.page_type != md.PAGE_DICTIONARY:
                    raise CorruptFileError("Parquet dictionary_page_offset does not point at a "
                                           "dictionary page")
                p.headers.insert(0, header)
                p.data.insert(0, p.dictionary)

    # -- decoding --------------------------------------------------------------------------

    def _read_field(self, name: str, plan: list[tuple[_GroupPlan, np.ndarray]]
                    ) -> tuple[pa.ChunkedArray, np.ndarray]:
        """The field's values from every touched row group, and each unique wanted row's
        position in them (in row id order)."""
        chunks: list[pa.Array] = []
        synthetic = [(gp, pos) for gp, pos in plan if gp.pieces is not None]
        fallback = [(gp, pos) for gp, pos in plan if gp.pieces is None]
        parts: list[np.ndarray] = []
        base = 0
        if synthetic:
            table = self._decode_synthetic(name, [gp for gp, _ in synthetic])
            chunks.extend(table.column(0).chunks)
            for gp, pos in synthetic:
                parts.append(pos + base)
                base += gp.num_rows
            if base != table.num_rows:
                raise CorruptFileError(f"pages of column {name!r} decode to {table.num_rows} rows "
                                       f"where the page index promises {base}")
        for gp, pos in fallback:
            col = self._read_row_group(gp.row_group, name)
            chunks.extend(col.chunks)
            parts.append(pos + base)
            base += gp.num_rows
        # Row groups were planned in ascending order, matching the sorted unique ids.
        order = [gp.row_group for gp, _ in synthetic] + [gp.row_group for gp, _ in fallback]
        by_group = dict(zip(order, parts, strict=True))
        positions = np.concatenate([by_group[g] for g in sorted(by_group)])
        field_type = chunks[0].type if chunks else self._schema.field(name).type
        return pa.chunked_array(chunks, type=field_type), positions

    def _read_row_group(self, g: int, name: str) -> pa.ChunkedArray:
        with self._fallback_lock:
            try:
                if self._parquet_file is None:
                    self._parquet_file = pq.ParquetFile(RangeFile(self._source))
                table = self._parquet_file.read_row_group(g, columns=[name], use_threads=False)
            except SuperfileError:
                raise
            except Exception as exc:  # pyarrow reports bad bytes with many exception types
                raise CorruptFileError(f"unreadable row group {g}: {exc}") from None
        return table.column(0)

    def _decode_synthetic(self, name: str, groups: list[_GroupPlan]) -> pa.Table:
        blob = self._synthesize(name, groups)
        try:
            return pq.ParquetFile(pa.BufferReader(blob)).read(use_threads=False)
        except SuperfileError:
            raise
        except Exception as exc:  # pyarrow reports bad bytes with many exception types
            raise CorruptFileError(f"pages of column {name!r} do not decode: {exc}") from None

    def _synthesize(self, name: str, groups: list[_GroupPlan]) -> bytes:
        """A Parquet file holding only the fetched pages of one field, one row group per
        original row group."""
        top = self._fields[name]
        out: list[Buffer] = [MAGIC]
        pos = len(MAGIC)
        row_groups = []
        total_rows = 0
        for gp in groups:
            columns = []
            byte_size = 0
            for piece in gp.pieces or ():
                start = pos
                meta = {k: v for k, v in piece.chunk.raw[md.CC_META][1].items()
                        if k in _KEPT_COLUMN_META}
                uncompressed = num_values = 0
                dict_off = data_off = None
                for header, page in zip(piece.headers, piece.data, strict=True):
                    if header.page_type == md.PAGE_DICTIONARY:
                        dict_off = pos
                    elif data_off is None:
                        data_off = pos
                    uncompressed += header.header_length + header.uncompressed_size
                    num_values += header.num_values
                    out.append(page)
                    pos += len(page)
                if data_off is None:
                    raise CorruptFileError(f"no data pages selected for column {name!r}")
                meta[md.CMD_NUM_VALUES] = (TType.I64, num_values)
                meta[md.CMD_TOTAL_UNCOMPRESSED] = (TType.I64, uncompressed)
                meta[md.CMD_TOTAL_COMPRESSED] = (TType.I64, pos - start)
                meta[md.CMD_DATA_PAGE_OFFSET] = (TType.I64, data_off)
                if dict_off is not None:
                    meta[md.CMD_DICT_PAGE_OFFSET] = (TType.I64, dict_off)
                byte_size += uncompressed
                columns.append({
                    md.CC_FILE_OFFSET: (TType.I64, start),
                    md.CC_META: (TType.STRUCT, dict(sorted(meta.items()))),
                })
            row_groups.append({
                md.RG_COLUMNS: (TType.LIST, TList(TType.STRUCT, columns)),
                md.RG_TOTAL_BYTE_SIZE: (TType.I64, byte_size),
                md.RG_NUM_ROWS: (TType.I64, gp.num_rows),
            })
            total_rows += gp.num_rows
        footer = encode_struct(self._footer_for(top, total_rows, row_groups))
        out.extend((footer, struct.pack("<I", len(footer)), MAGIC))
        return b"".join(out)

    def _footer_for(self, top: TopField, num_rows: int, row_groups: list[Struct]) -> Struct:
        raw = self._meta.raw
        s_lo, s_hi = top.schema_range
        root = dict(self._meta.schema[0])
        root[md.SE_NUM_CHILDREN] = (TType.I32, 1)
        footer: Struct = {
            md.FMD_VERSION: raw[md.FMD_VERSION],
            md.FMD_SCHEMA: (TType.LIST, TList(TType.STRUCT, [root, *self._meta.schema[s_lo:s_hi]])),
            md.FMD_NUM_ROWS: (TType.I64, num_rows),
            md.FMD_ROW_GROUPS: (TType.LIST, TList(TType.STRUCT, row_groups)),
        }
        kv = self._key_value_for(top)
        if kv:
            footer[md.FMD_KV] = (TType.LIST, TList(TType.STRUCT, kv))
        if md.FMD_CREATED_BY in raw:
            # Readers pick version-specific workarounds from this string; keep it.
            footer[md.FMD_CREATED_BY] = raw[md.FMD_CREATED_BY]
        orders = raw.get(md.FMD_COLUMN_ORDERS)
        if orders is not None and orders[0] == TType.LIST:
            l_lo, l_hi = top.leaf_range
            items = orders[1].items[l_lo:l_hi]
            if len(items) == l_hi - l_lo:
                footer[md.FMD_COLUMN_ORDERS] = (TType.LIST, TList(orders[1].elem_type, items))
        return footer

    def _key_value_for(self, top: TopField) -> list[Struct]:
        """The key/value metadata with the stored Arrow schema cut down to one field, so
        pyarrow restores the field's Arrow type exactly as for the whole file."""
        if top.name not in self._arrow_fields:
            self._arrow_fields[top.name] = self._arrow_schema_for(top)
        one = self._arrow_fields[top.name]
        if one is None:
            return []
        return [{md.KV_KEY: (TType.BINARY, ARROW_SCHEMA_KEY), md.KV_VALUE: (TType.BINARY, one)}]

    def _arrow_schema_for(self, top: TopField) -> bytes | None:
        stored = next((v for k, v in self._meta.key_value if k == ARROW_SCHEMA_KEY), None)
        if stored is None:
            return None
        try:
            full = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
        except (ValueError, OSError, pa.ArrowException) as exc:
            raise CorruptFileError(f"unreadable stored Arrow schema: {exc}") from None
        index = full.get_field_index(top.name)
        if index < 0:
            raise CorruptFileError(f"stored Arrow schema lacks column {top.name!r}")
        return base64.b64encode(pa.schema([full.field(index)]).serialize().to_pybytes())


__all__ = [
    "COLUMN_CACHE",
    "DEFAULT_COLUMN_CACHE_BYTES",
    "ColumnCache",
    "RangeFile",
    "RowFetcher",
    "read_footer",
]
