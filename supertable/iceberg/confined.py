"""Reading an existing Iceberg table that someone else wrote, confined to the table's own
location: the metadata file a catalog names, then only files under the location that
metadata declares.

A catalog entry is data, not a promise: its metadata may name a manifest, a data file or
a delete file anywhere (``file:///etc/...``, another bucket, ``../`` out of the folder).
So every location is checked before it is opened:

- the metadata file must be named ``*.metadata.json`` (it is read whole to learn the
  table's location, so it cannot be any file at all);
- everything read after it (manifest list, manifests, data and delete files) must lie
  under the table's ``location``, compared after the scheme's aliases and ``.``/``..``
  segments (raw and percent-decoded) are refused outright; a location that is a
  filesystem or bucket root is refused, as it would confine nothing;
- on a local root (``file:`` or a plain path) symbolic links are resolved: the table's
  location is confined to its real path, and a file is read only if its real path lies
  under that, and then by its real path (a link in the folder to a file or folder
  elsewhere is refused; a table reached through a linked folder reads as usual). Object
  stores have no links and keep the check by name;
- ``plan`` checks the paths of every data and delete file of the current snapshot before
  any of them is opened, so a table naming one file outside its location is refused
  without reading any of its rows; the file interface (``ConfinedFileIO``) refuses any
  other location as well, as a second line.

The file interface is built from the caller's properties only: the table's own
properties (``py-io-impl``, endpoints, keys), which whoever wrote the metadata chose, are
never used to pick or configure it. Rows are read one file at a time and one record batch
at a time (``batches``), with position deletes and deletion vectors applied by pyiceberg.

``load(..., confine=False)`` reads a table its operator named on their own machine (``quiver
ingest``): the same file-by-file reading, without the location checks, and with the file
interface pyiceberg picks from the table's properties, as for any table one opens oneself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
from pyiceberg.io import FileIO, InputFile, OutputFile

from quiver.root_error import Kind, QuiverError

log = logging.getLogger(__name__)

METADATA_SUFFIX = ".metadata.json"
# Schemes that name the same store.
_ALIASES = {"": "file", "s3a": "s3", "s3n": "s3", "gcs": "gs", "abfss": "abfs",
            "wasbs": "wasb"}


class LakeTableError(QuiverError):
    """The Iceberg table cannot be read: unreadable metadata, an unsupported feature."""

    kind = Kind.INVALID_INPUT


class OutsideLocationError(LakeTableError):
    """The table's metadata names a file outside the table's own location."""


@dataclass(frozen=True)
class Place:
    """A location split into what the check compares: store (scheme and bucket or host)
    and the path's segments."""

    store: tuple[str, str]
    segments: tuple[str, ...]


def place(location: str) -> Place | None:
    """``location`` as a ``Place``; None when it has ``.``/``..`` or empty segments that a
    store might resolve (raw or percent-decoded) or is not a location at all."""
    parts = urlsplit(location)
    scheme = _ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if len(parts.scheme) == 1:  # a Windows drive letter is not a scheme
        return None
    if parts.query or parts.fragment:
        return None
    path = parts.path or ("/" if parts.netloc else "")
    if not path.startswith("/"):
        # A relative path would be resolved against the server's working folder.
        return None
    segments = tuple(path.split("/")[1:])
    if segments and segments[-1] == "":
        segments = segments[:-1]
    for seg in segments:
        for form in (seg, unquote(seg)):
            if form in ("", ".", "..") or "/" in form or "\\" in form or "\0" in form:
                return None
    return Place((scheme, parts.netloc.lower() if scheme != "file" else ""), segments)


def within(location: str, root: str) -> bool:
    """Whether ``location`` lies under the folder ``root`` (strictly inside it), on a local
    root after resolving the links of both."""
    return confined(location, root) is not None


def confined(location: str, root: str, resolved_root: str | None = None) -> str | None:
    """The location to open for ``location`` if it lies under the folder ``root``, else
    None: the one place every check goes through. Both must lie under by name; on a local
    root the real path of ``location`` must also lie under the real path of ``root``
    (``resolved_root``, when the caller resolved it already), and that real path is what is
    returned, so the file opened is the one checked, not whatever a link names."""
    inner, outer = place(location), place(root)
    if inner is None or outer is None or not outer.segments:
        return None
    if not (inner.store == outer.store and len(inner.segments) > len(outer.segments)
            and inner.segments[:len(outer.segments)] == outer.segments):
        return None
    if inner.store[0] != "file":
        return location
    real = _real_path(location)
    base = resolved_root if resolved_root is not None else _real_path(root)
    if base == "/" or not real.startswith(base.rstrip("/") + "/"):
        return None
    return real


def real_root(root: str) -> str | None:
    """A local ``root``'s real path (its links resolved), None for an object store."""
    outer = place(root)
    return _real_path(root) if outer is not None and outer.store[0] == "file" else None


def _real_path(location: str) -> str:
    """The real path of the local file pyiceberg's file interface opens for ``location``:
    a ``file:`` URI's path is used as written (no percent-decoding) after its host, a plain
    path as it is."""
    parts = urlsplit(location)
    path = f"{parts.netloc}{parts.path}" if parts.scheme else location
    return os.path.realpath(path)


def _file_io(properties: dict[str, str]) -> FileIO:
    from pyiceberg.io.pyarrow import PyArrowFileIO

    return PyArrowFileIO(properties=dict(properties))


class ConfinedFileIO(FileIO):
    """A read-only pyiceberg file interface that opens only locations under ``root``."""

    def __init__(self, inner: FileIO, root: str, table: str) -> None:
        super().__init__(inner.properties)
        self._inner = inner
        self._root = root
        # Resolved once: the folder the table's files must really lie in.
        self._real_root = real_root(root)
        self._table = table

    def check(self, location: str, what: str = "file") -> str:
        """The location to open for ``location`` (its real path on a local root);
        ``OutsideLocationError`` unless it lies under the table's location."""
        opened = confined(location, self._root, self._real_root)
        if opened is None:
            raise OutsideLocationError(
                f"Iceberg table {self._table} lists a {what} outside its location "
                f"{self._root!r}: {location!r}; refused (only files under the table's "
                "location are read)")
        return opened

    def new_input(self, location: str) -> InputFile:
        # The real path checked is what is opened, not the name the metadata lists, so a
        # link there at the check is not followed. Left open: the path changing between
        # the check and the open (a file or folder on it replaced by a link), which takes
        # write access to the table's real folder at that instant; closing it would take
        # opening by descriptor, which pyiceberg's file interface does not do.
        return self._inner.new_input(self.check(location))

    def new_output(self, location: str) -> OutputFile:
        raise LakeTableError("Iceberg source tables are read only")

    def delete(self, location: str | InputFile | OutputFile) -> None:
        raise LakeTableError("Iceberg source tables are read only")


@dataclass
class LakeTable:
    """One Iceberg table's current metadata, read through a ``ConfinedFileIO`` (or, for a
    table loaded with ``confine=False``, through the file interface its properties pick)."""

    name: str
    metadata_location: str
    table: Any  # pyiceberg.table.Table
    io: FileIO

    @property
    def location(self) -> str:
        return str(self.table.metadata.location)

    def arrow_schema(self, columns: Sequence[str] | None = None) -> pa.Schema:
        """The Arrow schema of the current snapshot's rows (``columns`` of them)."""
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        return schema_to_pyarrow(self._projection(columns), include_field_ids=False)

    def _projection(self, columns: Sequence[str] | None) -> Any:
        schema = self.table.schema()
        return schema if columns is None else schema.select(*columns)

    def plan(self) -> list[Any]:
        """The current snapshot's file scan tasks, every data and delete file checked to
        lie under the table's location before any of them is read."""
        if self.table.current_snapshot() is None:
            return []
        try:
            tasks = list(self.table.scan().plan_files())
        except QuiverError:
            raise
        except Exception as exc:  # pyiceberg raises many kinds (e.g. equality deletes)
            raise LakeTableError(f"Iceberg table {self.name}: cannot plan a scan: "
                                 f"{type(exc).__name__}: {_short(exc)}") from None
        if isinstance(self.io, ConfinedFileIO):
            for task in tasks:
                self.io.check(task.file.file_path, "data file")
                for deletes in task.delete_files:
                    self.io.check(deletes.file_path, "delete file")
        return tasks

    def batches(self, tasks: Sequence[Any], columns: Sequence[str] | None = None,
                schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        """The live rows of ``tasks`` (``columns`` of them), one file after the other and
        one record batch at a time, cast to ``schema`` (default ``arrow_schema(columns)``,
        which it must match by names)."""
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import ArrowScan

        target = self.arrow_schema(columns) if schema is None else schema
        scan = ArrowScan(self.table.metadata, self.io, self._projection(columns), AlwaysTrue())
        for task in tasks:
            try:
                for batch in _task_batches(scan, task):
                    if batch.schema.names != target.names:
                        # pyiceberg gives the columns in the table's order.
                        batch = batch.select(target.names)
                    yield batch if batch.schema.equals(target) else batch.cast(target)
            except QuiverError:
                raise
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise LakeTableError(f"Iceberg table {self.name}: cannot read a data file: "
                                     f"{type(exc).__name__}: {_short(exc)}") from None


def _task_batches(scan: Any, task: Any) -> Iterator[pa.RecordBatch]:
    """One task's batches as they are read. pyiceberg's public ``to_record_batches``
    reads each file whole before handing out its batches; its per-task generator does
    not, and is used while it is there."""
    stream = getattr(scan, "_record_batches_from_scan_tasks_and_deletes", None)
    if stream is None:
        yield from scan.to_record_batches([task])
        return
    from pyiceberg.io.pyarrow import _read_all_delete_files

    yield from stream([task], _read_all_delete_files(scan._io, [task]))


def _short(exc: BaseException, n: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[:n] + "…"


def load(metadata_location: str, name: str, properties: dict[str, str] | None = None, *,
         confine: bool = True) -> LakeTable:
    """The table whose current metadata file is ``metadata_location`` (as a catalog lists
    it); ``name`` names it in errors. The metadata is read through a file interface made
    from ``properties`` (never the table's own); everything after it is confined to the
    location the metadata declares. With ``confine=False`` (a table the operator named
    themselves) nothing is confined, the files are read through the file interface the
    table's properties pick, and a metadata file's read error is told in full."""
    from pyiceberg.catalog.noop import NoopCatalog
    from pyiceberg.serializers import FromInputFile
    from pyiceberg.table import Table

    if not metadata_location.endswith(METADATA_SUFFIX) or (
            confine and place(metadata_location) is None):
        raise LakeTableError(f"Iceberg table {name}: its catalog entry names no metadata "
                             f"file (*{METADATA_SUFFIX})")
    inner = _file_io(properties or {})
    try:
        metadata = FromInputFile.table_metadata(inner.new_input(metadata_location))
    except QuiverError:
        raise
    except Exception as exc:
        # Only the kind of failure: a parser's message may quote the file's content.
        log.debug("Iceberg table %s: metadata %s unreadable: %r", name, metadata_location,
                  type(exc).__name__)
        detail = type(exc).__name__ if confine else f"{type(exc).__name__}: {_short(exc)}"
        raise LakeTableError(f"Iceberg table {name}: its metadata file cannot be read as "
                             f"Iceberg table metadata ({detail})") from None
    io: FileIO
    if confine:
        io = _confined_io(inner, metadata, metadata_location, name)
    else:
        from pyiceberg.io import load_file_io

        io = load_file_io({**(properties or {}), **metadata.properties},
                          location=metadata_location)
    table = Table(identifier=tuple(name.split(".")), metadata=metadata,
                  metadata_location=metadata_location, io=io,
                  catalog=NoopCatalog("quiver-lake"))
    return LakeTable(name, metadata_location, table, io)


def _confined_io(inner: FileIO, metadata: Any, metadata_location: str, name: str
                 ) -> ConfinedFileIO:
    location = str(metadata.location).rstrip("/")
    root = place(location)
    real = real_root(location)
    if root is None or not root.segments or real == "/":
        raise OutsideLocationError(f"Iceberg table {name}: its location {location!r} is not "
                                   "a folder a table may be confined to")
    if not within(metadata_location, location):
        raise OutsideLocationError(f"Iceberg table {name}: its metadata file lies outside "
                                   f"its location {location!r}; refused")
    return ConfinedFileIO(inner, location, name)
