"""Reads one superfile: its Parquet body, its BM25 indexes and its vector indexes.

``SuperfileReader.open(data)`` works over resident bytes and verifies every
blob checksum up front. ``SuperfileReader.open_lazy(source)`` works through a
range reader: it fetches the file's tail once (footer and, usually, the
indexes' headers with it) and afterwards only the dictionary blocks,
postings, clusters and pages a query touches.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap

from quiver.superfile import layout
from quiver.superfile.errors import CorruptFileError, QueryError, SuperfileError
from quiver.superfile.fts.query import ParsedQuery
from quiver.superfile.fts.reader import FtsIndexReader
from quiver.superfile.fts.stats import CollectionStats
from quiver.superfile.fts.tokenizer import tokenize
from quiver.superfile.parquet_pages.row_fetch import RangeFile, RowFetcher
from quiver.superfile.ranges import (
    Buffer,
    BytesRangeReader,
    RangeReader,
    SubRangeReader,
    read_batch,
)
from quiver.superfile.spec import IndexSpec, Metric, vector_dim
from quiver.superfile.vector.column_vectors import ColumnVectors
from quiver.superfile.vector.reader import VectorIndexReader
from quiver.superfile.vector.summary import VectorSummary

TAIL_READ = 64 * 1024


class _TailCachedReader:
    """Serves reads that fall inside an already fetched tail of the file from memory."""

    def __init__(self, inner: RangeReader, tail_start: int, tail: Buffer) -> None:
        self._inner = inner
        self._tail_start = tail_start
        self._tail = memoryview(tail).cast("B")
        self._size = inner.size()

    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> Buffer:
        if offset >= self._tail_start and offset + length <= self._size:
            start = offset - self._tail_start
            return self._tail[start : start + length]
        return self._inner.read(offset, length)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[Buffer]:
        out: list[Buffer | None] = [None] * len(ranges)
        far = [i for i, (o, n) in enumerate(ranges)
               if not (o >= self._tail_start and o + n <= self._size)]
        for i, data in zip(far, read_batch(self._inner, [ranges[i] for i in far]), strict=True):
            out[i] = data
        return [self.read(*ranges[i]) if d is None else d for i, d in enumerate(out)]


def _parse_footer(footer: Buffer) -> pq.FileMetaData:
    framed = b"".join((layout.PARQUET_MAGIC, footer, struct.pack("<I", len(footer)),
                       layout.PARQUET_MAGIC))
    try:
        return pq.read_metadata(pa.BufferReader(framed))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise CorruptFileError(f"unreadable Parquet footer: {exc}") from None


# A lazily read file whose vector column is at most this large keeps it decoded once a
# search asks for most of it.
RESIDENT_VECTORS_MAX_BYTES = 8 << 20


class SuperfileReader:
    """One opened superfile. Safe to share between threads."""

    def __init__(
        self,
        source: RangeReader,
        footer: Buffer,
        *,
        resident: bool,
    ) -> None:
        self._source = source
        self._footer = bytes(footer)
        self._resident = resident
        self.metadata = _parse_footer(footer)
        footer_start = source.size() - 8 - len(footer)
        self.directory = layout.parse_directory(self.metadata.metadata, footer_start)
        if self.directory.num_rows != self.metadata.num_rows:
            raise CorruptFileError(
                f"footer says {self.metadata.num_rows} rows, index metadata says "
                f"{self.directory.num_rows}"
            )
        try:
            schema = self.metadata.schema.to_arrow_schema()
        except (pa.ArrowException, ValueError) as exc:
            raise CorruptFileError(f"unreadable schema in the footer: {exc}") from None
        user_meta = {
            k: v for k, v in (schema.metadata or {}).items()
            if not k.decode("utf-8", "replace").startswith(layout.RESERVED_PREFIX)
        }
        self.schema: pa.Schema = schema.with_metadata(user_meta or None)
        self._check_body_before_region()
        # Resident files hand the fetcher their bytes, so it can decode and keep whole
        # columns instead of building a small file per column and take.
        whole = source.read(0, source.size()) if resident else None
        self._rows = RowFetcher(source, self._footer, self.schema, resident=whole)
        self._fts: dict[str, FtsIndexReader] = {}
        self._vec: dict[str, VectorIndexReader] = {}
        vector_spec: dict[str, Metric] = {}
        for entry in self.directory.entries:
            if entry.column not in self.schema.names:
                raise CorruptFileError(f"index for unknown column {entry.column!r}")
            window = SubRangeReader(source, self.directory.absolute(entry), entry.length)
            if resident:
                layout.verify_blob(entry, window.read(0, entry.length))
            if entry.kind == layout.FTS:
                self._fts[entry.column] = FtsIndexReader.open(window, verify=resident)
            else:
                self._vec[entry.column] = VectorIndexReader.open(
                    window, verify=resident, vectors=self._column_vectors(entry, whole)
                )
                vector_spec[entry.column] = self._vec[entry.column].metric
        self.spec = IndexSpec(fts=tuple(self._fts), vector=vector_spec)

    def _column_vectors(self, entry: layout.BlobEntry, whole: Buffer | None) -> ColumnVectors:
        """The rerank's source of float32 vectors: this file's own column (stored once)."""
        column = entry.column
        metric = Metric.parse(str(entry.params.get("metric", "cosine")))
        dim = vector_dim(self.schema.field(column).type)
        if dim is None:
            raise CorruptFileError(f"vector index on column {column!r}, which holds no vectors")
        if whole is None:
            def take(ids: np.ndarray) -> pa.Array | pa.ChunkedArray:
                return self._rows.take(ids, [column]).column(0)

            if self.metadata.num_rows * dim * 4 > RESIDENT_VECTORS_MAX_BYTES:
                return ColumnVectors(metric, dim, take=take)
            # A small file asked for most of its vectors (a flat scan: every search of it
            # scores them all) decodes the column once and keeps it, instead of fetching
            # and decoding every page again on each query; a shortlist still takes pages.
            return ColumnVectors(metric, dim, take=take, rows_total=self.metadata.num_rows,
                                 whole=lambda: self.read_table([column]).column(0))

        def decode() -> pa.ChunkedArray:
            try:
                file = pq.ParquetFile(pa.BufferReader(whole), page_checksum_verification=True)
                return file.read(columns=[column]).column(0)
            except (OSError, pa.ArrowException) as exc:
                raise CorruptFileError(f"unreadable vector column {column!r}: {exc}") from None

        return ColumnVectors(metric, dim, whole=decode)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, data: Buffer) -> SuperfileReader:
        """Opens a superfile held in memory, verifying every index checksum."""
        source = BytesRangeReader(data)
        footer_start = layout.parquet_footer_start(source.read(0, source.size()))
        footer = source.read(footer_start, source.size() - 8 - footer_start)
        return cls._guarded(source, footer, resident=True)

    @classmethod
    def open_lazy(cls, source: RangeReader, tail: int = TAIL_READ) -> SuperfileReader:
        """Opens a superfile through ranged reads; usually one read for the whole open."""
        size = source.size()
        tail_start = max(0, size - tail)
        tail_bytes = source.read(tail_start, size - tail_start)
        footer_start = layout.parquet_footer_start(tail_bytes, size)
        if footer_start < tail_start:
            tail_start = footer_start
            tail_bytes = source.read(tail_start, size - tail_start)
        cached = _TailCachedReader(source, tail_start, tail_bytes)
        footer = cached.read(footer_start, size - 8 - footer_start)
        return cls._guarded(cached, footer, resident=False)

    @classmethod
    def _guarded(cls, source: RangeReader, footer: Buffer, *, resident: bool) -> SuperfileReader:
        try:
            return cls(source, footer, resident=resident)
        except SuperfileError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError,
                struct.error, pa.ArrowException, OSError) as exc:
            raise CorruptFileError(f"malformed superfile: {exc}") from None

    def _check_body_before_region(self) -> None:
        md = self.metadata
        body_end = 0
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            for j in range(rg.num_columns):
                col = rg.column(j)
                start = col.dictionary_page_offset or col.data_page_offset
                body_end = max(body_end, start + col.total_compressed_size)
        if body_end > self.directory.region_start:
            raise CorruptFileError("column data overlaps the index region")

    # -- what is in the file ---------------------------------------------------------------

    @property
    def source(self) -> RangeReader:
        """The byte source the file is read through."""
        return self._source

    @property
    def num_rows(self) -> int:
        return self.directory.num_rows

    @property
    def fts_columns(self) -> list[str]:
        return list(self._fts)

    @property
    def vector_columns(self) -> list[str]:
        return list(self._vec)

    def fts(self, column: str) -> FtsIndexReader:
        try:
            return self._fts[column]
        except KeyError:
            raise QueryError(self._missing_index(column, "BM25")) from None

    def vector(self, column: str) -> VectorIndexReader:
        try:
            return self._vec[column]
        except KeyError:
            raise QueryError(self._missing_index(column, "vector")) from None

    def _missing_index(self, column: str, kind: str) -> str:
        if column not in self.schema.names:
            return f"no column {column!r}; columns are {self.schema.names}"
        return f"column {column!r} has no {kind} index"

    def vector_summary(self, column: str) -> VectorSummary:
        return self.vector(column).summary

    # -- full text -------------------------------------------------------------------------

    def bm25_search(
        self,
        column: str,
        query: str | ParsedQuery,
        k: int = 10,
        *,
        mode: str = "or",
        floor: float | None = None,
        stats: CollectionStats | None = None,
        allow: BitMap | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-k of ``column``: (local row ids, scores), best first."""
        return self.fts(column).search(query, k, mode=mode, floor=floor, stats=stats, allow=allow)

    def token_match(self, column: str, query: str | ParsedQuery, mode: str = "or") -> np.ndarray:
        """Row ids (sorted) whose ``column`` contains any / all of the query's tokens."""
        return self.fts(column).token_match(query, mode)

    def doc_freq(self, column: str, term: str) -> int:
        return self.fts(column).doc_freq(term)

    def exact_match(self, column: str, value: str) -> np.ndarray:
        """Row ids (sorted) whose ``column`` equals ``value`` exactly, byte for byte."""
        if column not in self.schema.names:
            raise QueryError(self._missing_index(column, "BM25"))
        every = tokenize(value)
        tokens = tuple(dict.fromkeys(every))
        if column in self._fts and tokens:
            index = self._fts[column]
            candidates = index.token_match(ParsedQuery(tokens, (), ()), "and")
            # A row equal to the value has exactly its token count: rows that only contain
            # the value's words (``requests`` in ``requests-oauthlib``) are dropped here,
            # before their text is fetched to compare.
            if len(candidates):
                candidates = candidates[index.doc_lengths()[candidates] == len(every)]
        else:
            # Without tokens nothing prunes: every row is a candidate.
            candidates = np.arange(self.num_rows, dtype=np.uint32)
        if len(candidates) == 0:
            return candidates.astype(np.uint32)
        values = self.take(candidates, [column]).column(0)
        keep = pc.fill_null(pc.equal(values, pa.scalar(value, values.type)), False)
        return np.asarray(candidates, dtype=np.uint32)[keep.to_numpy(zero_copy_only=False)]

    # -- vectors ---------------------------------------------------------------------------

    def vector_search(
        self,
        column: str,
        query: np.ndarray | Sequence[float],
        k: int = 10,
        *,
        nprobe: int | None = None,
        rerank: int | None = None,
        allow: BitMap | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows of ``column``: (local row ids, exact distances), nearest first."""
        return self.vector(column).search(
            np.asarray(query, dtype=np.float32), k, nprobe=nprobe, rerank=rerank, allow=allow
        )

    # -- rows ------------------------------------------------------------------------------

    def take(self, row_ids: np.ndarray | Sequence[int], columns: list[str] | None = None
             ) -> pa.Table:
        """The chosen rows, in the order given: from whole columns decoded once (kept in the
        shared ``ColumnCache``) for a resident file, else decoding only the pages that
        hold them."""
        return self._rows.take(np.asarray(row_ids, dtype=np.int64), columns)

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """Every row of the chosen columns, as a Parquet reader sees the file."""
        unknown = [c for c in columns or () if c not in self.schema.names]
        if unknown:
            raise QueryError(f"no columns {unknown}; columns are {self.schema.names}")
        try:
            file = pq.ParquetFile(RangeFile(self._source), page_checksum_verification=True)
            table = file.read(columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptFileError(f"unreadable Parquet body: {exc}") from None
        return table.replace_schema_metadata(self.schema.metadata)
