"""Writes one superfile: the Parquet body by pyarrow, the index blobs, the footer keys.

The indexes are built from the same Arrow columns that go into the Parquet
body, concurrently on a small thread pool (pyarrow, numba and faiss release
the GIL for the heavy parts). The result is the bytes of one immutable file
plus the summaries the table layer keeps in its manifest.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from quiver.superfile import layout
from quiver.superfile.errors import IndexSpecError
from quiver.superfile.fts.build import FtsColumnStats, build_fts_index
from quiver.superfile.spec import IndexSpec, vector_dim
from quiver.superfile.vector.build import VectorIndexParams, build_vector_index
from quiver.superfile.vector.summary import VectorSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterOptions:
    """How the Parquet body is laid out and how vector indexes are built."""

    row_group_size: int = 65536
    # Small pages keep a row fetch cheap: a lazy read of one row costs one page per column.
    data_page_size: int = 16 * 1024
    max_rows_per_page: int = 4096
    dictionary_page_size: int = 128 * 1024
    compression: str = "zstd"
    vector_params: VectorIndexParams | None = None
    threads: int = 2


@dataclass
class WrittenSuperfile:
    """The bytes of one superfile and what the table layer records about it."""

    data: bytes
    num_rows: int
    schema: pa.Schema
    spec: IndexSpec
    fts_stats: dict[str, FtsColumnStats] = field(default_factory=dict)
    vector_summaries: dict[str, VectorSummary] = field(default_factory=dict)


def _as_table(data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
              schema: pa.Schema | None) -> pa.Table:
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    else:
        batches = list(data)
        if not batches and schema is None:
            raise IndexSpecError("no record batches and no schema: nothing says what to write")
        try:
            table = pa.Table.from_batches(batches, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise IndexSpecError(f"record batches do not share one schema: {exc}") from None
    if schema is not None and not table.schema.equals(schema, check_metadata=False):
        raise IndexSpecError(f"data schema {table.schema} does not match {schema}")
    reserved = [k for k in (table.schema.metadata or {}) if k.decode().startswith("quiver.")]
    if reserved:
        raise IndexSpecError(f"schema metadata keys {reserved} use the reserved 'quiver.' prefix")
    return table


def _write_parquet(table: pa.Table, spec: IndexSpec, options: WriterOptions,
                   footer_kv: dict[str, str]) -> bytes:
    vector_cols = [f.name for f in table.schema if vector_dim(f.type) is not None]
    compression: dict[str, str] = {name: options.compression for name in table.schema.names}
    for name in vector_cols:
        # Float vectors barely compress and cost build time; store them plain.
        compression[name] = "none"
    dictionary = [n for n in table.schema.names if n not in vector_cols]
    metadata = dict(table.schema.metadata or {})
    metadata.update({k.encode(): v.encode() for k, v in footer_kv.items()})
    sink = io.BytesIO()
    pq.write_table(
        table.replace_schema_metadata(metadata),
        sink,
        row_group_size=max(1, options.row_group_size),
        data_page_size=options.data_page_size,
        max_rows_per_page=options.max_rows_per_page,
        dictionary_pagesize_limit=options.dictionary_page_size,
        compression=compression,
        use_dictionary=dictionary,
        write_statistics=True,
        write_page_index=True,
        # Page CRCs let readers refuse a damaged page instead of decoding wrong values.
        write_page_checksum=True,
        store_schema=True,
    )
    return sink.getvalue()


def _vector_params(options: WriterOptions, spec: IndexSpec, column: str) -> VectorIndexParams:
    """The writer's vector build knobs, with the codes the spec names for ``column``."""
    params = options.vector_params or VectorIndexParams()
    codes = spec.vector_codes.get(column)
    return params if codes is None else dataclasses.replace(params, quantizer=codes)


def write_superfile(
    data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
    spec: IndexSpec | None = None,
    *,
    schema: pa.Schema | None = None,
    options: WriterOptions | None = None,
) -> WrittenSuperfile:
    """Builds one superfile from Arrow data.

    ``spec`` says which string columns get a BM25 index and which vector columns
    (fixed-size lists of float16, float32 or float64) a vector index; without it every
    string column gets BM25 and every vector column a cosine index. The index holds
    float32 vectors; the Parquet body keeps each column's own type.
    """
    options = options or WriterOptions()
    table = _as_table(data, schema)
    spec = spec if spec is not None else IndexSpec.default_for(table.schema)
    spec.validate(table.schema)
    table = table.combine_chunks()

    with ThreadPoolExecutor(max_workers=max(1, options.threads)) as pool:
        fts_jobs = {col: pool.submit(build_fts_index, table.column(col)) for col in spec.fts}
        vec_jobs = {
            col: pool.submit(build_vector_index, table.column(col), metric,
                             _vector_params(options, spec, col))
            for col, metric in spec.vector.items()
        }
        fts_built = {col: job.result() for col, job in fts_jobs.items()}
        vec_built = {col: job.result() for col, job in vec_jobs.items()}

    blobs: list[tuple[str, str, bytes, dict[str, object]]] = []
    for col, (blob, _stats) in fts_built.items():
        blobs.append((layout.FTS, col, blob, {}))
    for col, (blob, summary) in vec_built.items():
        params = {"metric": str(spec.vector[col]), "dim": summary.dim}
        blobs.append((layout.VECTOR, col, blob, params))
    region = layout.plan_region(blobs)
    parquet = _write_parquet(table, spec, options, layout.footer_metadata(region, table.num_rows))
    out = layout.splice_region(parquet, region)
    log.debug("superfile: %d rows, %d bytes (%d of indexes)", table.num_rows, len(out),
              region.length)
    return WrittenSuperfile(
        data=out,
        num_rows=table.num_rows,
        schema=table.schema,
        spec=spec,
        fts_stats={col: stats for col, (_b, stats) in fts_built.items()},
        vector_summaries={col: summary for col, (_b, summary) in vec_built.items()},
    )


def replace_column(data: bytes, name: str, values: pa.Array,
                   options: WriterOptions | None = None) -> bytes:
    """The same superfile with one column's values replaced, its indexes kept as they are.

    Only columns that no index covers may be replaced (the indexes are kept
    byte for byte): the table layer renumbers its ``_id`` column this way when a
    commit has to move onto a newer table version.
    """
    options = options or WriterOptions()
    footer_start = layout.parquet_footer_start(data)
    table = pq.read_table(pa.BufferReader(data))
    kv = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    directory = layout.parse_directory(table.schema.metadata, footer_start)
    if any(e.column == name for e in directory.entries):
        raise IndexSpecError(f"column {name!r} is indexed; its values cannot be replaced")
    if len(values) != table.num_rows:
        raise IndexSpecError(f"{len(values)} values for a file of {table.num_rows} rows")
    index = table.schema.get_field_index(name)
    if index < 0:
        raise IndexSpecError(f"no column {name!r} to replace")
    field = table.schema.field(index)
    table = table.set_column(index, field, values.cast(field.type))
    user_meta = {k: v for k, v in kv.items() if not k.startswith(layout.RESERVED_PREFIX)}
    ours = {k: v for k, v in kv.items() if k.startswith(layout.RESERVED_PREFIX)}
    table = table.replace_schema_metadata(user_meta)
    payload = bytes(memoryview(data)[directory.region_start : footer_start])
    region = layout.Region(directory.entries, payload)
    spec = IndexSpec(fts=tuple(e.column for e in directory.entries if e.kind == layout.FTS))
    parquet = _write_parquet(table, spec, options, ours)
    return layout.splice_region(parquet, region)

