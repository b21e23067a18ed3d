"""``quiver ingest``: Parquet, CSV and JSON-lines files, and existing Iceberg tables,
streamed into a table, resumably.

Each file is read record batch by record batch (``pyarrow.parquet.ParquetFile``,
``pyarrow.csv.open_csv``, ``pyarrow.json.open_json``), so a large file is never
held whole. Batches are gathered into chunks of about ``--chunk-rows`` rows and each
chunk is committed with a batch id derived from the file's identity (its path
relative to the argument that named it, its size and its modification time):

- every file is all-or-nothing: it is committed whole, carrying the id
  ``<identity>``, and a rerun skips a committed file unread;
- a large file's chunks are built and uploaded as they are read and published in
  one commit at its end (``quiver.supertable.staged``), so memory stays bounded; a run
  that stopped in the middle of a file adds none of it, and the rerun reads it again;
- small files share one commit, so a folder of many small files is not one
  version per file.

An Iceberg table (its folder, its metadata file, or ``--iceberg-catalog`` with
``--iceberg-table``) is one source whose identity is its UUID and current snapshot
(``iceberg_source``); its rows are read batch by batch like a large file's.

Through ``--server`` each file goes in with one Flight SQL bulk ingest (one commit)
carrying its identity as the ``quiver.batch_id`` option: a rerun sends the files
again, and the server adds none of those it already committed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from quiver.flight_server.cli import iceberg_source
from quiver.flight_server.cli.client import Client, LocalClient, ServerClient, quote_ident
from quiver.root_error import Kind, QuiverError
from quiver.superfile.spec import IndexSpec, vector_dim
from quiver.supertable.staged import StagedAppend

log = logging.getLogger(__name__)

KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json",
         ".ndjson": "json", ".json": "json"}
DEFAULT_CHUNK_ROWS = 250_000
CHUNK_BYTES = 128 << 20
_READ_BLOCK = 8 << 20
_PARQUET_BATCH = 65_536
METRICS = ("cosine", "l2", "ip")


class IngestError(QuiverError):
    """Files or options that cannot be ingested; the message names the file or column."""

    kind = Kind.INVALID_INPUT


@dataclass(frozen=True)
class SourceFile:
    """One input file and the identity a rerun recognises it by."""

    path: Path
    relative: str
    size: int
    mtime_ns: int
    kind: str
    iceberg: iceberg_source.IcebergTable | None = None

    @property
    def identity(self) -> str:
        if self.iceberg is not None:
            return self.iceberg.identity
        key = f"{self.relative}\0{self.size}\0{self.mtime_ns}".encode()
        return "ingest:" + hashlib.sha256(key).hexdigest()[:32]


def find_files(paths: list[Path], kind: str | None = None) -> list[SourceFile]:
    """The files named by ``paths``: files as given, folders searched recursively (sorted)."""
    found: list[SourceFile] = []
    for arg in paths:
        location = (arg.resolve().as_uri() if iceberg_source.is_metadata_file(arg)
                    else iceberg_source.metadata_in(arg) if arg.is_dir() else None)
        if location is not None and kind in (None, "iceberg"):
            found.append(iceberg_file(location, arg))
        elif kind == "iceberg":
            raise IngestError(f"{arg}: not an Iceberg table (a folder holding metadata/ or a "
                              "*.metadata.json file)")
        elif arg.is_dir():
            inside = sorted(p for p in arg.rglob("*")
                            if p.is_file() and (kind or KINDS.get(p.suffix.lower())))
            if not inside:
                raise IngestError(f"{arg}: no {', '.join(sorted(KINDS))} files in this folder")
            found += [_source(p, p.relative_to(arg).as_posix(), kind) for p in inside]
        elif arg.is_file():
            found.append(_source(arg, arg.name, kind))
        elif arg.exists():
            raise IngestError(f"{arg}: not a file or folder")
        else:
            raise IngestError(f"{arg}: no such file or folder")
    return found


def iceberg_file(location: str, path: Path | None = None) -> SourceFile:
    """The current snapshot of the Iceberg table whose metadata file is ``location``."""
    try:
        table = iceberg_source.describe(location)
    except iceberg_source.IcebergSourceError as exc:
        raise IngestError(str(exc)) from None
    return SourceFile(path or Path(location), location, table.data_bytes, table.snapshot_id,
                      "iceberg", table)


def _source(path: Path, relative: str, kind: str | None) -> SourceFile:
    kind = kind or KINDS.get(path.suffix.lower())
    if kind is None:
        raise IngestError(f"{path}: unknown file type; name it .parquet, .csv, .jsonl, "
                          ".ndjson or .json, or give --input-format")
    stat = path.stat()
    return SourceFile(path, relative, stat.st_size, stat.st_mtime_ns, kind)


# -- reading --------------------------------------------------------------------------------


def _readable_type(t: pa.DataType) -> pa.DataType:
    # Readers cannot produce fixed-size lists; they read variable lists, cast afterwards.
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_type)
    return t


class _Reader:
    """Record batches of one file, and how far into the file they have got (in bytes)."""

    def __init__(self, src: SourceFile, hint: pa.Schema | None) -> None:
        self.src = src
        self._file: pa.NativeFile | None = None
        try:
            self.schema, self._batches, self._position = self._open(hint)
        except (pa.ArrowInvalid, OSError) as exc:
            self.close()
            raise IngestError(f"{src.path}: cannot read as {src.kind}: "
                              f"{_named(exc, src)}") from None
        except iceberg_source.IcebergSourceError as exc:
            raise IngestError(str(exc)) from None

    def _open(self, hint: pa.Schema | None
              ) -> tuple[pa.Schema, Iterator[pa.RecordBatch], Callable[[], int]]:
        src = self.src
        if src.iceberg is not None:
            return iceberg_source.batches(src.iceberg)
        if src.kind == "parquet":
            pf = pq.ParquetFile(str(src.path))
            total = max(1, pf.metadata.num_rows)
            done = [0]

            def parquet_batches() -> Iterator[pa.RecordBatch]:
                for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
                    done[0] += batch.num_rows
                    yield batch

            return (pf.schema_arrow, parquet_batches(),
                    lambda: src.size * done[0] // total)
        self._file = pa.OSFile(str(src.path))
        if src.kind == "csv":
            types = {}
            for f in hint or []:
                # List columns arrive as text such as "[0.1, 0.2]" and are parsed afterwards.
                types[f.name] = pa.string() if pa.types.is_nested(f.type) else f.type
            reader = pacsv.open_csv(
                self._file, read_options=pacsv.ReadOptions(block_size=_READ_BLOCK),
                convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            parse = pajson.ParseOptions()
            if hint is not None:
                parse = pajson.ParseOptions(
                    explicit_schema=pa.schema([f.with_type(_readable_type(f.type))
                                               for f in hint]),
                    unexpected_field_behavior="infer")
            reader = pajson.open_json(self._file,
                                      read_options=pajson.ReadOptions(block_size=_READ_BLOCK),
                                      parse_options=parse)
        native = self._file
        return reader.schema, iter(reader), lambda: native.tell()

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._batches
        except (pa.ArrowInvalid, OSError) as exc:
            raise IngestError(f"{self.src.path}: {_named(exc, self.src)}") from None
        finally:
            self.close()

    def position(self) -> int:
        try:
            return min(self.src.size, self._position())
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


def _named(exc: BaseException, src: SourceFile) -> str:
    """The reader's message, with a CSV column number replaced by the column's name."""
    text = _first(exc)
    match = re.search(r"In CSV column #(\d+): ", text)
    if src.kind != "csv" or match is None:
        return text
    try:
        with src.path.open(newline="", encoding="utf-8", errors="replace") as f:
            header = next(csv.reader(f), [])
        name = header[int(match.group(1))]
    except (OSError, IndexError, csv.Error):
        return text
    return text.replace(match.group(0), f"column {name!r}: ")


def _first(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _text_lists(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Text such as ``[0.5, 1]`` parsed into lists of ``target``'s item type."""
    values = values.cast(pa.string())
    parts = pc.split_pattern(pc.utf8_trim(values, characters="[] \t"), pattern=",")
    items = pc.utf8_trim_whitespace(parts.values)
    items = pc.if_else(pc.equal(items, ""), pa.scalar(None, pa.string()), items)
    lists = pa.ListArray.from_arrays(parts.offsets, items.cast(target.value_type),
                                     mask=values.is_null())
    return lists.cast(target)


def conform(batch: pa.RecordBatch, schema: pa.Schema, src: SourceFile,
            table: str) -> pa.RecordBatch:
    """``batch`` with the table's columns and types; an ``IngestError`` naming the column
    that does not fit."""
    names = batch.schema.names
    missing = [n for n in schema.names if n not in names]
    extra = [n for n in names if n not in schema.names]
    if missing or extra:
        what = []
        if missing:
            what.append(f"lacks column(s) {', '.join(missing)}")
        if extra:
            what.append(f"has column(s) {', '.join(extra)} that table {table!r} does not")
        raise IngestError(f"{src.path}: {' and '.join(what)}")
    columns = []
    for f in schema:
        col = batch.column(f.name)
        if col.type.equals(f.type):
            columns.append(col)
            continue
        try:
            if pa.types.is_string(col.type) and pa.types.is_nested(f.type):
                columns.append(_text_lists(col, f.type))
            else:
                columns.append(col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise IngestError(f"{src.path}: column {f.name!r} is {col.type}, table {table!r} "
                              f"wants {f.type}: {_first(exc)}") from None
    return pa.RecordBatch.from_arrays(columns, schema=schema)


# -- creating the table ---------------------------------------------------------------------


def _vector_dims(pairs: list[str]) -> dict[str, int]:
    dims = {}
    for pair in pairs:
        col, sep, value = pair.partition("=")
        try:
            dims[col.strip()] = int(value)
        except ValueError:
            sep = ""
        if not sep or dims.get(col.strip(), 0) <= 0:
            raise IngestError(f"--vector-dim wants COLUMN=N with N > 0, got {pair!r}")
    return dims


def _vector_columns(args: argparse.Namespace) -> list[str]:
    names = []
    for item in args.vector or []:
        names += [p.split(":", 1)[0].strip() for p in item.split(",") if p.strip()]
    return names


def create_schema(schema: pa.Schema, first: pa.RecordBatch | None,
                  args: argparse.Namespace) -> pa.Schema:
    """The new table's schema from the first file's: float list columns named by
    ``--vector`` or ``--vector-dim`` become ``FLOAT[d]`` vectors."""
    dims = _vector_dims(args.vector_dim or [])
    wanted = set(_vector_columns(args)) | set(dims)
    fields = []
    for f in schema:
        t = f.type
        if f.name in wanted and vector_dim(t) is None:
            is_list = pa.types.is_list(t) or pa.types.is_large_list(t) \
                or pa.types.is_fixed_size_list(t)
            if not is_list or not pa.types.is_floating(t.value_type):
                raise IngestError(f"column {f.name!r} is {t}, not a list of numbers: it "
                                  "cannot be a vector")
            dim = dims.get(f.name) or (t.list_size if pa.types.is_fixed_size_list(t) else
                                       _first_length(first, f.name))
            if not dim:
                raise IngestError(f"column {f.name!r}: no value in the first rows tells its "
                                  f"dimension; give --vector-dim {f.name}=N")
            t = pa.list_(pa.float32(), dim)
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        fields.append(f.with_type(t))
    return pa.schema(fields)


def _first_length(batch: pa.RecordBatch | None, name: str) -> int | None:
    if batch is None or batch.num_rows == 0:
        return None
    lengths = pc.drop_null(pc.list_value_length(batch.column(name)))
    return int(lengths[0].as_py()) if len(lengths) else None


def _index_options(args: argparse.Namespace) -> dict[str, list[str]]:
    if args.no_index:
        return {"fts": [], "vector": []}
    options: dict[str, list[str]] = {}
    if args.fts is not None:
        options["fts"] = [c.strip() for c in args.fts.split(",") if c.strip()]
    if args.vector is not None:
        options["vector"] = [p.strip() for item in args.vector for p in item.split(",")
                             if p.strip()]
    if args.metric is not None:
        options["metric"] = [args.metric]
    return options


def plan_indexes(schema: pa.Schema, args: argparse.Namespace) -> IndexSpec:
    """The indexes a table created from ``schema`` gets under ``args``' index options."""
    from quiver.flight_server.sql.statements import index_spec

    return index_spec(schema, _index_options(args))


def describe_indexes(name: str, spec: IndexSpec, args: argparse.Namespace) -> str:
    """The line telling which columns of the new table get which index, and why."""
    parts = []
    if spec.fts:
        default = "" if args.fts is not None else " (every text column, the default)"
        parts.append(f"full-text (BM25) on {', '.join(spec.fts)}{default}")
    if spec.vector:
        default = "" if args.vector is not None else " (every vector column, the default)"
        parts.append("vector on " + ", ".join(f"{c} ({m})" for c, m in spec.vector.items())
                     + default)
    if not parts:
        return f"creating table {name} without indexes"
    hint = "" if args.fts is not None and args.vector is not None else \
        "; choose with --fts COL,... / --vector COL,... or --no-index"
    return f"creating table {name} with indexes: {'; '.join(parts)}{hint}"


def _create_local(client: LocalClient, name: str, schema: pa.Schema, spec: IndexSpec) -> None:
    from quiver.supertable.errors import TableExistsError

    try:
        client.connection.create_table(name, schema, spec=spec)
    except TableExistsError:
        log.info("table %r appeared meanwhile; appending to it", name)


def _create_remote(client: ServerClient, name: str, schema: pa.Schema,
                   spec: IndexSpec) -> None:
    from quiver.flight_server.sql.statements import sql_type

    columns = ", ".join(f"{quote_ident(f.name)} {sql_type(f.type)}"
                        + ("" if f.nullable else " NOT NULL") for f in schema)
    # The server builds exactly the indexes printed: every choice is spelled out.
    fts = ",".join(spec.fts)
    vector = ",".join(f"{c}:{m}" for c, m in spec.vector.items())
    client.stream(f"CREATE TABLE IF NOT EXISTS {quote_ident(name)} ({columns}) "
                  f"WITH (fts = '{fts}', vector = '{vector}')").read_all()


# -- progress -------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar on stderr, or nothing when stderr is no TTY.

    Its description names the phase: ``reading`` a file, ``indexing`` a chunk (building its
    superfile with its indexes), ``committing`` (publishing a version). Reading fills the
    first ``READ_SHARE`` of the bar and committed bytes the rest, so the bar does not stand
    at 100% while indexes are still being built."""

    READ_SHARE = 0.8

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.bar = None
        self.total = max(1, total_bytes)
        self.read = self.committed = self.rows = 0
        self.phase, self.name = "reading", ""
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TaskProgressColumn(), TextColumn("{task.fields[rows]:,} rows"),
                                TransferSpeedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task("reading", total=self.total, rows=0)
            self.bar.start()

    def update(self, name: str, read_bytes: int, rows: int) -> None:
        """Reading ``name``: ``read_bytes`` of all files read so far, ``rows`` rows."""
        self.phase, self.name = "reading", name
        self.read, self.rows = read_bytes, rows
        self._show()

    def enter(self, phase: str, name: str = "") -> None:
        """A phase without byte progress of its own starts (``indexing``, ``committing``)."""
        self.phase, self.name = phase, name
        self._show(now=True)

    def committed_upto(self, nbytes: int) -> None:
        self.committed = max(self.committed, nbytes)
        self._show()

    def _show(self, now: bool = False) -> None:
        if self.bar is None:
            return
        share = self.READ_SHARE
        done = share * min(self.read, self.total) + (1 - share) * min(self.committed,
                                                                      self.total)
        if self.phase != "reading":
            # Not full while something is still being built or published.
            done = min(done, 0.99 * self.total)
        self.bar.update(self.task, description=f"{self.phase} {self.name}".rstrip(),
                        completed=done, rows=self.rows)
        if now:
            # A phase change is drawn at once, not at the next timed refresh.
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- the command ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table to append to (created with --create)")
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="files (.parquet, .csv, .jsonl, .ndjson, .json holding JSON lines) "
                        "or folders, searched recursively in sorted order; an Iceberg table's "
                        "folder (holding metadata/) or metadata file (*.metadata.json) is read "
                        "as that table's current snapshot")
    parser.add_argument("--iceberg-catalog", default=None, metavar="URI",
                        help="read the table --iceberg-table from this Iceberg catalog "
                        "(sqlite:///path.db, postgresql://user@host:port/db or "
                        "rest+http://host:port/path; a REST catalog's "
                        "token or credential come from $QUIVER_ICEBERG_CATALOG_TOKEN or "
                        "$QUIVER_ICEBERG_CATALOG_CREDENTIAL)")
    parser.add_argument("--iceberg-table", default=None, metavar="NS.TABLE",
                        help="with --iceberg-catalog: the table to read")
    parser.add_argument("--iceberg-catalog-name", default="default", metavar="NAME",
                        help="with a SQL --iceberg-catalog: the catalog's name (default "
                        "default)")
    parser.add_argument("--iceberg-catalog-warehouse", default=None, metavar="NAME",
                        help="with a REST --iceberg-catalog: the warehouse sent with "
                        "GET /v1/config")
    parser.add_argument("--create", action="store_true",
                        help="create the table from the first file's columns when it does not "
                        "exist (an existing table is appended to)")
    parser.add_argument("--fts", default=None, metavar="COL[,COL]",
                        help="with --create: columns to give a full-text (BM25) index ('' for "
                        "none; default every string column); the indexes chosen are printed")
    parser.add_argument("--vector", action="append", default=None, metavar="COL[:METRIC]",
                        help="with --create: column(s) to give a vector index, repeatable or "
                        "comma-separated; a list-of-floats column named here becomes FLOAT[d] "
                        "(default every FLOAT[d] column)")
    parser.add_argument("--no-index", action="store_true",
                        help="with --create: no full-text or vector index (a vector column "
                        "named by --vector-dim stays a vector)")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="with --create: distance of the vector indexes (default cosine)")
    parser.add_argument("--vector-dim", action="append", default=None, metavar="COL=N",
                        help="with --create: make the list-of-floats column COL a vector of N "
                        "floats (when left out, --vector columns take the length of their "
                        "first value)")
    parser.add_argument("--input-format", choices=("parquet", "csv", "json", "iceberg"),
                        default=None,
                        help="read every file as this format instead of going by its suffix")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, metavar="N",
                        help=f"rows per commit (default {DEFAULT_CHUNK_ROWS:,}); small files "
                        "share a commit, large ones are split")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar even on a terminal")


@dataclass
class IngestSummary:
    """What one ``quiver ingest`` did."""

    table: str
    files: int = 0
    skipped: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    remote: bool = False

    def line(self) -> str:
        secs = max(self.seconds, 1e-6)
        text = (f"ingested {self.files} file{'s' if self.files != 1 else ''} into "
                f"{self.table}: {self.rows:,} rows, {self.bytes / 1e6:,.1f} MB in "
                f"{self.seconds:,.1f} s ({self.rows / secs:,.0f} rows/s)")
        if self.skipped:
            text += (f"; skipped {self.skipped} file{'s' if self.skipped != 1 else ''} "
                     "already ingested")
        return text


class _LocalSink:
    """Chunks committed to a table in this process with batch ids."""

    def __init__(self, client: LocalClient, name: str, chunk_rows: int,
                 progress: _Progress) -> None:
        self.table = client.connection.open_table(name)
        self.chunk_rows = chunk_rows
        self.progress = progress
        self.pending_upto = 0  # bytes of input (for the bar) that the pending rows end at
        self.known = set(self.table.refresh().batches)
        self.pending: list[tuple[pa.Table, str]] = []
        self.pending_rows = self.pending_bytes = 0
        self.rows = 0

    def add(self, batches: list[pa.RecordBatch], batch_id: str, upto: int = 0) -> None:
        data = pa.Table.from_batches(batches, schema=self.table.schema)
        self.pending_upto = max(self.pending_upto, upto)
        self.pending.append((data, batch_id))
        self.pending_rows += data.num_rows
        self.pending_bytes += data.nbytes
        if self.pending_rows >= self.chunk_rows or self.pending_bytes >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        self.pending_rows = self.pending_bytes = 0
        # One commit builds the files' superfiles (their indexes) and publishes them.
        self.progress.enter("indexing and committing",
                            f"{len(pending)} file{'s' if len(pending) != 1 else ''}")
        for data, batch_id in pending[:-1]:
            self.table.append(data, batch_id=batch_id, commit=False)
        data, batch_id = pending[-1]
        result = self.table.append(data, batch_id=batch_id)
        self.rows += result.rows
        self.known.update(b for _, b in pending)
        self.progress.committed_upto(self.pending_upto)


class _Run:
    """One ``quiver ingest``: files in order, each into the sink or the server."""

    def __init__(self, client: Client, args: argparse.Namespace, sources: list[SourceFile],
                 schema: pa.Schema | None) -> None:
        self.client, self.args, self.sources, self.schema = client, args, sources, schema
        self.summary = IngestSummary(args.table, remote=not client.local)
        self.progress = _Progress(sum(s.size for s in sources),
                                  sys.stderr.isatty() and not args.no_progress)
        self.sink: _LocalSink | None = None
        self.base = 0  # bytes of the files before the current one
        self.read_rows = 0

    def rows(self) -> int:
        """Rows read so far (the progress bar's count; the summary counts rows added)."""
        return self.read_rows

    def run(self) -> IngestSummary:
        start = time.monotonic()
        try:
            for src in self.sources:
                self.file(src)
                self.base += src.size
            if self.sink is not None:
                self.sink.flush()
        except BaseException:
            # Files read whole before the failure are still committed.
            if self.sink is not None:
                try:
                    self.sink.flush()
                except Exception as exc:  # the first failure is the one to report
                    log.warning("could not commit the files read before the failure: %s", exc)
            raise
        finally:
            self.progress.close()
            if self.sink is not None:
                self.summary.rows = self.sink.rows
        self.summary.seconds = time.monotonic() - start
        return self.summary

    def file(self, src: SourceFile) -> None:
        client, args = self.client, self.args
        if self.sink is None and self.schema is not None and isinstance(client, LocalClient):
            self.sink = _LocalSink(client, args.table, args.chunk_rows, self.progress)
        if self.sink is not None and src.identity in self.sink.known:
            self.summary.skipped += 1
            self.progress.update(src.relative, self.base + src.size, self.rows())
            self.progress.committed_upto(self.base + src.size)
            return
        reader = _Reader(src, self.schema)
        batches = reader.batches()
        if self.schema is None:
            first = next(batches, None)
            schema = create_schema(reader.schema, first, args)
            spec = plan_indexes(schema, args)
            sys.stdout.write(describe_indexes(args.table, spec, args) + "\n")
            sys.stdout.flush()
            self.progress.enter("creating", args.table)
            if isinstance(client, LocalClient):
                _create_local(client, args.table, schema, spec)
            else:
                assert isinstance(client, ServerClient)
                _create_remote(client, args.table, schema, spec)
            self.schema = client.table_schema(args.table)
            if self.schema is None:
                raise IngestError(f"table {args.table!r} vanished right after its creation")
            batches = _chain(first, batches)
            if isinstance(client, LocalClient):
                self.sink = _LocalSink(client, args.table, args.chunk_rows, self.progress)
        conformed = self.conformed(src, reader, batches, self.schema)
        if self.sink is not None:
            _ingest_local(self.sink, src, conformed, args.chunk_rows, self.base + src.size)
        else:
            assert isinstance(client, ServerClient)
            client.ingest(args.table, pa.RecordBatchReader.from_batches(self.schema, conformed),
                          create=False, batch_id=src.identity,
                          sent=lambda: self.progress.enter("indexing and committing on the "
                                                           "server", src.relative))
            self.progress.committed_upto(self.base + src.size)
        self.summary.files += 1
        self.summary.bytes += src.size

    def conformed(self, src: SourceFile, reader: _Reader, batches: Iterator[pa.RecordBatch],
                  schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            out = conform(batch, schema, src, self.args.table)
            self.read_rows += out.num_rows
            if self.sink is None:
                self.summary.rows += out.num_rows
            self.progress.update(src.relative, self.base + reader.position(), self.rows())
            yield out


def run(client: Client, args: argparse.Namespace) -> int:
    """``quiver ingest``: prints the summary line; errors propagate to the caller."""
    if args.chunk_rows <= 0:
        raise IngestError("--chunk-rows must be positive")
    if not args.create and (args.fts is not None or args.vector or args.metric
                            or args.vector_dim or args.no_index):
        raise IngestError("--fts, --vector, --metric, --vector-dim and --no-index go with "
                          "--create")
    if args.no_index and (args.fts is not None or args.vector or args.metric):
        raise IngestError("give --no-index or --fts / --vector / --metric, not both")
    sources = _sources(args)
    schema = client.table_schema(args.table)
    if schema is None and not args.create:
        raise IngestError(f"no table {args.table!r} at {client.where}; give --create to create "
                          "it from the first file")
    summary = _Run(client, args, sources, schema).run()
    sys.stdout.write(summary.line() + "\n")
    return 0


def _sources(args: argparse.Namespace) -> list[SourceFile]:
    if bool(args.iceberg_catalog) != bool(args.iceberg_table):
        raise IngestError("--iceberg-catalog and --iceberg-table go together")
    if not args.paths and not args.iceberg_table:
        raise IngestError("name files or folders to ingest, or an Iceberg table with "
                          "--iceberg-catalog and --iceberg-table")
    sources = find_files(args.paths, args.input_format) if args.paths else []
    if args.iceberg_table:
        try:
            location = iceberg_source.from_catalog(
                args.iceberg_catalog, args.iceberg_table, name=args.iceberg_catalog_name,
                token=None, credential=None, warehouse=args.iceberg_catalog_warehouse)
        except iceberg_source.IcebergSourceError as exc:
            raise IngestError(str(exc)) from None
        sources.append(iceberg_file(location))
    return sources


def _chain(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch]
           ) -> Iterator[pa.RecordBatch]:
    if first is not None:
        yield first
    yield from rest


def _sliced(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """The batches cut so that chunks of ``chunk_rows`` rows end on batch boundaries; the cuts
    depend only on the file, so a rerun forms the same chunks."""
    filled = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(chunk_rows - filled, batch.num_rows - offset)
            yield batch.slice(offset, take)
            offset += take
            filled = (filled + take) % chunk_rows


def _ingest_local(sink: _LocalSink, src: SourceFile, batches: Iterator[pa.RecordBatch],
                  chunk_rows: int, upto: int) -> None:
    """One file into the sink: a file of one chunk joins the sink's shared commit; a
    larger one is staged chunk by chunk and published in one commit of its own."""
    chunk: list[pa.RecordBatch] = []
    rows = nbytes = chunks = 0
    staged: StagedAppend | None = None
    try:
        for batch in _sliced(batches, chunk_rows):
            chunk.append(batch)
            rows += batch.num_rows
            nbytes += batch.nbytes
            if rows >= chunk_rows or nbytes >= CHUNK_BYTES:
                if staged is None:
                    staged = StagedAppend(sink.table, batch_id=src.identity)
                chunks += 1
                sink.progress.enter("indexing", f"{src.relative} chunk {chunks}")
                staged.add(pa.Table.from_batches(chunk, schema=sink.table.schema))
                chunk, rows, nbytes = [], 0, 0
        if staged is None:
            sink.add(chunk, src.identity, upto)
            return
        if chunk:
            chunks += 1
            sink.progress.enter("indexing", f"{src.relative} chunk {chunks}")
            staged.add(pa.Table.from_batches(chunk, schema=sink.table.schema))
        sink.progress.enter("committing", src.relative)
        result = staged.commit()
        sink.progress.committed_upto(upto)
    except BaseException:
        if staged is not None:
            staged.abort()
        raise
    sink.rows += result.rows
    sink.known.add(src.identity)
