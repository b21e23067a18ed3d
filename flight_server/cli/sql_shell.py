"""``quiver sql``: runs statements and prints their results as a table, CSV, JSON lines or Parquet.

Statements come from the command line (one), from a non-interactive stdin (several,
separated by ``;``), or from an interactive prompt (``sql_prompt``). Results stream
batch by batch to CSV, JSON lines and Parquet writers; the ``table`` format shows the
first ``--max-rows`` rows with rich, long cells and vectors shortened, except a query
plan (EXPLAIN), whose lines are printed whole as the tree they draw.

JSON lines are built column-wise with Arrow compute kernels (``json_text``), so a large
result is encoded without a Python step per row.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from quiver.flight_server.cli.client import Client
from quiver.flight_server.sql.arrow_types import plain_schema, plain_type
from quiver.root_error import Kind, QuiverError

log = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json", "parquet")
DEFAULT_MAX_ROWS = 100
DEFAULT_MAX_WIDTH = 40
_VECTOR_HEAD = 4


class SqlCliError(QuiverError):
    """A usage problem of ``quiver sql`` (format, output file)."""

    kind = Kind.INVALID_INPUT


# -- statements -----------------------------------------------------------------------------


def split_statements(text: str) -> list[str]:
    """The ``;``-separated statements of ``text``, ignoring ``;`` inside quotes and comments.

    A final statement without ``;`` counts; empty statements are dropped."""
    out: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            end = i + 1
            while end < n:
                if text[end] == c:
                    # A doubled quote is an escaped quote inside the literal.
                    if end + 1 < n and text[end + 1] == c:
                        end += 2
                        continue
                    break
                end += 1
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ";":
            out.append(text[start:i])
            start = i = i + 1
        else:
            i += 1
    out.append(text[start:])
    return [s.strip() for s in out if _has_code(s)]


def _code_lines(statement: str) -> list[str]:
    return [line.split("--", 1)[0].strip() for line in statement.splitlines()]


def _has_code(statement: str) -> bool:
    # A piece holding only comments is no statement.
    return any(_code_lines(statement))


def statement_complete(text: str) -> bool:
    """Whether the prompt's buffer ends a statement: its last code is a ``;`` outside quotes
    and comments (or the buffer is empty, or a quit command)."""
    stripped = text.strip()
    if not stripped or stripped.lower() in ("exit", "quit") or stripped.startswith("\\"):
        return True
    # After a closing ';' a new line starts a statement of its own.
    last = split_statements(stripped + "\nx")[-1]
    return [line for line in _code_lines(last) if line] == ["x"]


# -- value formatting -------------------------------------------------------------------------


def plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with view and large string/binary types cast to their plain forms."""
    schema = plain_schema(batch.schema)
    return batch if schema.equals(batch.schema) else batch.cast(schema)


_CONTROL = [chr(c) for c in range(0x20)]
_SHORT_ESCAPES = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string(values: pa.Array) -> pa.Array:
    text = values.cast(pa.string())
    text = pc.replace_substring(text, "\\", "\\\\")
    text = pc.replace_substring(text, '"', '\\"')
    if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
        for ch in _CONTROL:
            text = pc.replace_substring(text, ch, _SHORT_ESCAPES.get(ch, f"\\u{ord(ch):04x}"))
    return pc.binary_join_element_wise('"', text, '"', "")


def _from_lists(offsets: pa.Array, items: pa.Array, nulls: pa.Array | None) -> pa.Array:
    lists = pa.ListArray.from_arrays(offsets, items, mask=nulls)
    joined = pc.binary_join(lists, ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def json_text(values: pa.Array) -> pa.Array:
    """Each value of ``values`` as JSON text (``null`` for nulls), computed column-wise."""
    t = values.type
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_null(t):
        out = pa.nulls(len(values), pa.string())
    elif pa.types.is_dictionary(t):
        return json_text(values.cast(t.value_type))
    elif pa.types.is_boolean(t):
        out = pc.if_else(values, "true", "false")
    elif pa.types.is_integer(t) or pa.types.is_decimal(t):
        out = values.cast(pa.string())
    elif pa.types.is_floating(t):
        text = values.cast(pa.string())
        # "1" would read back as an integer; a float keeps its point.
        text = pc.if_else(pc.match_substring_regex(text, "[.eE]"), text,
                          pc.binary_join_element_wise(text, ".0", ""))
        out = pc.if_else(pc.is_finite(values), text, pa.scalar(None, pa.string()))
    elif (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
          or pa.types.is_temporal(t)):
        out = _json_string(values)
    elif pa.types.is_fixed_size_list(t):
        size = t.list_size
        items = values.values.slice(values.offset * size, len(values) * size)
        offsets = pa.array(range(0, (len(values) + 1) * size, size) if size else
                           [0] * (len(values) + 1), pa.int32())
        out = _from_lists(offsets, json_text(items).fill_null("null"),
                          values.is_null() if values.null_count else None)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = values.offsets
        base = offsets[0].as_py()
        items = values.values.slice(base, offsets[-1].as_py() - base)
        offsets = pc.subtract(offsets, base).cast(pa.int32())
        out = _from_lists(offsets, json_text(items).fill_null("null"),
                          values.is_null() if values.null_count else None)
    elif pa.types.is_struct(t):
        parts: list[Any] = []
        for i, f in enumerate(t):
            parts += ["," if i else "", json.dumps(f.name) + ":",
                      json_text(values.field(i)).fill_null("null")]
        body = pc.binary_join_element_wise("{", *parts, "}", "") if parts else \
            pa.array(["{}"] * len(values), pa.string())
        out = pc.if_else(values.is_null(), pa.scalar(None, pa.string()), body)
    else:
        # Binary, maps and other rare types: encoded value by value.
        out = pa.array([None if v is None else json.dumps(_jsonable(v))
                        for v in values.to_pylist()], pa.string())
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def json_lines(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` as JSON objects, one per line."""
    if batch.num_rows == 0:
        return b""
    parts: list[Any] = []
    for i, name in enumerate(batch.schema.names):
        parts += [("," if i else "") + json.dumps(name) + ":",
                  json_text(batch.column(i)).fill_null("null")]
    rows = pc.binary_join_element_wise("{", *parts, "}\n", "")
    # The string array's data buffer holds the lines back to back.
    offsets = pa.Array.from_buffers(pa.int32(), len(rows) + 1, [None, rows.buffers()[1]],
                                    offset=rows.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return rows.buffers()[2].to_pybytes()[start:end]


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nested columns become their JSON text, which the CSV writer can hold."""
    columns, fields = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_nested(f.type) or pa.types.is_dictionary(f.type):
            col, f = json_text(col), f.with_type(pa.string())
        columns.append(col)
        fields.append(f)
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _short(value: Any, width: int) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        head = ", ".join(_short(v, width) for v in value[:_VECTOR_HEAD])
        more = f", … ({len(value)} items)" if len(value) > _VECTOR_HEAD else ""
        text = f"[{head}{more}]"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, bytes):
        text = value[:width].hex()
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


# -- writers --------------------------------------------------------------------------------


class _Writer:
    def write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        pass


class _TableWriter(_Writer):
    def __init__(self, out: IO[str], schema: pa.Schema, max_rows: int, max_width: int) -> None:
        self.out, self.schema = out, schema
        self.max_rows, self.max_width = max_rows, max_width
        self.kept: list[pa.RecordBatch] = []
        self.kept_rows = self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        room = self.max_rows - self.kept_rows
        if room > 0:
            part = batch.slice(0, room)
            self.kept.append(part)
            self.kept_rows += part.num_rows

    def finish(self) -> None:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=self.out, width=None if self.out.isatty() else 160,
                          soft_wrap=False)
        table = Table(show_lines=False, highlight=False)
        for f in self.schema:
            table.add_column(f.name, overflow="ellipsis", no_wrap=True,
                             justify="right" if _numeric(f.type) else "left")
        if self.kept:
            shown = pa.Table.from_batches(self.kept, schema=self.schema)
            columns = [shown.column(i).to_pylist() for i in range(shown.num_columns)]
            for row in zip(*columns, strict=True):
                table.add_row(*(_short(v, self.max_width) for v in row))
        console.print(table)
        more = f", first {self.kept_rows} shown" if self.rows > self.kept_rows else ""
        console.print(f"({self.rows} row{'s' if self.rows != 1 else ''}{more})")


class _PlanWriter(_Writer):
    """EXPLAIN's ``plan_type``/``plan`` rows: each plan printed as-is under its type, so
    its indented tree stays readable and no operator is cut short."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.rows: list[tuple[str, str]] = []

    def write(self, batch: pa.RecordBatch) -> None:
        kinds, plans = batch.column(0).to_pylist(), batch.column(1).to_pylist()
        self.rows += [(str(k), "" if p is None else str(p)) for k, p in zip(kinds, plans,
                                                                              strict=True)]

    def finish(self) -> None:
        for kind, plan in self.rows:
            self.out.write(f"{kind}:\n")
            for line in plan.splitlines():
                self.out.write(f"  {line.rstrip()}\n")
        self.out.flush()


def is_plan(schema: pa.Schema) -> bool:
    """Whether a result is an EXPLAIN plan: the columns ``plan_type`` and ``plan``, text."""
    return (schema.names == ["plan_type", "plan"]
            and all(pa.types.is_string(f.type) for f in schema))


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


class _CsvWriter(_Writer):
    def __init__(self, out: IO[bytes] | _TextBytes) -> None:
        self.out = out
        self.writer: pacsv.CSVWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        batch = _csv_ready(batch)
        if self.writer is None:
            self.writer = pacsv.CSVWriter(self.out, batch.schema)
        self.writer.write_batch(batch)

    def start(self, schema: pa.Schema) -> None:
        # An empty result still gets its header line.
        self.write(pa.record_batch([pa.array([], f.type) for f in schema], schema=schema))

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.out.flush()


class _JsonWriter(_Writer):
    def __init__(self, out: IO[bytes] | _TextBytes) -> None:
        self.out = out

    def write(self, batch: pa.RecordBatch) -> None:
        self.out.write(json_lines(batch))

    def finish(self) -> None:
        self.out.flush()


class _ParquetWriter(_Writer):
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.writer = pq.ParquetWriter(str(path), schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)

    def finish(self) -> None:
        self.writer.close()


def _batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        yield plain(batch)


def write_result(reader: pa.RecordBatchReader, fmt: str, *, output: Path | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS, max_width: int = DEFAULT_MAX_WIDTH,
                 append: bool = False) -> int:
    """Streams a statement's result in ``fmt`` to ``output`` (stdout when None); its rows."""
    schema = pa.schema([f.with_type(plain_type(f.type)) for f in reader.schema])
    text_out: IO[str] | None = None
    binary_out: IO[bytes] | _TextBytes | None = None
    opened: IO[Any] | None = None  # the output file, closed at the end
    if fmt == "parquet":
        if output is None:
            raise SqlCliError("--format parquet needs --output FILE")
        writer: _Writer = _ParquetWriter(output, schema)
    elif output is not None:
        if fmt == "table":
            text_out = opened = output.open("a" if append else "w", encoding="utf-8")
        else:
            binary_out = opened = output.open("ab" if append else "wb")
    else:
        sys.stdout.flush()
        text_out, binary_out = sys.stdout, getattr(sys.stdout, "buffer", None)
        if binary_out is None:
            binary_out = _TextBytes(sys.stdout)
    if fmt == "table" and is_plan(schema):
        assert text_out is not None
        writer = _PlanWriter(text_out)
    elif fmt == "table":
        assert text_out is not None
        writer = _TableWriter(text_out, schema, max_rows, max_width)
    elif fmt == "csv":
        assert binary_out is not None
        writer = _CsvWriter(binary_out)
        writer.start(schema)
    elif fmt == "json":
        assert binary_out is not None
        writer = _JsonWriter(binary_out)
    rows = 0
    try:
        for batch in _batches(reader):
            rows += batch.num_rows
            writer.write(batch)
        writer.finish()
    finally:
        if opened is not None:
            opened.close()
    return rows


class _TextBytes:
    """A bytes sink over a text stream (stdout replaced by one without a ``buffer``)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        self.out.write(bytes(data).decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def closed(self) -> bool:
        return False


# -- the command ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", default=None,
                        help="the statement to run; without it, statements are read from stdin "
                        "(separated by ';'), or typed at a prompt when stdin is a terminal")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="result format: table (readable, shortened cells), csv, json (JSON "
                        "lines, one object per row) or parquet (needs --output); default table")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                        help="write results to FILE instead of stdout (several statements' "
                        "results follow each other; parquet keeps the last)")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
                        help=f"rows the table format shows (default {DEFAULT_MAX_ROWS}; the "
                        "row count still counts all)")
    parser.add_argument("--max-width", type=int, default=DEFAULT_MAX_WIDTH, metavar="CHARS",
                        help="longest cell the table format shows before shortening it with "
                        f"… (default {DEFAULT_MAX_WIDTH}); vectors show their first "
                        f"{_VECTOR_HEAD} items")


# Seconds a cancelled statement gets to wind down before the prompt comes back anyway.
CANCEL_WAIT_S = 5.0


def run_statement(client: Client, text: str, args: argparse.Namespace, *,
                  append: bool = False) -> int:
    """Runs one statement and writes its result as ``args`` say; returns its row count.
    Ctrl-C cancels the statement (on the server too) and raises KeyboardInterrupt."""
    if args.format == "parquet" and args.output is None:
        raise SqlCliError("--format parquet needs --output FILE")

    def work() -> int:
        return write_result(client.stream(text), args.format, output=args.output,
                            max_rows=args.max_rows, max_width=args.max_width, append=append)

    return cancellable(client, work)


def cancellable(client: Client, work: Any) -> Any:
    """``work()`` run in a worker thread while this one waits for it, so that Ctrl-C
    here cancels the client's running statement instead of waiting for it to end."""
    outcome: dict[str, Any] = {}
    # An event, not Thread.join: a KeyboardInterrupt inside join can leave the thread
    # looking finished while it still runs.
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="quiver-sql-statement", daemon=True).start()
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        client.cancel()
        if not done.wait(CANCEL_WAIT_S):
            client.abandon()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def run(client: Client, args: argparse.Namespace) -> int:
    """``quiver sql``: the exit status. Errors propagate to the caller, which reports them."""
    if args.max_rows < 0 or args.max_width < 4:
        raise SqlCliError("--max-rows must be >= 0 and --max-width >= 4")
    if args.format == "parquet" and args.output is None:
        raise SqlCliError("--format parquet needs --output FILE")
    if args.query is not None:
        statements = split_statements(args.query)
        if not statements:
            raise SqlCliError("the query is empty")
    elif sys.stdin.isatty():
        return interactive(client, args)
    else:
        statements = split_statements(sys.stdin.read())
    for i, statement in enumerate(statements):
        run_statement(client, statement, args, append=i > 0)
    return 0


def interactive(client: Client, args: argparse.Namespace) -> int:
    """The interactive prompt (``quiver.flight_server.cli.sql_prompt``)."""
    from quiver.flight_server.cli.sql_prompt import interactive as prompt

    return prompt(client, args)
