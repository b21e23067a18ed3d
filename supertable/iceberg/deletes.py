"""Which delete files a snapshot lists for a table's tombstones, and writing the new ones.

Format version 2 (position delete files): a commit whose tombstones changed writes one
Parquet delete file (``file_path``, ``pos``, sorted by path then position) holding the
whole tombstone set of every data file whose set changed since the previous snapshot.
That file *claims* those data files at those tombstone counts. A file's tombstones only
ever grow, so for each data file the newest claim holds all of them; an older delete
file stays listed while it holds the newest claim of at least one live data file, and
leaves the manifests once every data file it claims is gone (optimize, a file whose
rows are all deleted) or claimed anew by a later file. Readers apply every listed
delete file, so an older file's stale positions for a data file that a newer file
claims are a subset of the newer set and change nothing. Past ``MAX_DELETE_FILES``
listed files, the commit writes one file holding every tombstone instead, so readers
open few delete files however many commits deleted rows.

Format version 3 (deletion vectors): each data file with tombstones has exactly one
deletion vector, a manifest entry of its own (``referenced_data_file``,
``content_offset``, ``content_size_in_bytes``). A commit whose tombstones changed writes
one Puffin file holding the vectors of every data file with tombstones, changed or not,
so a snapshot lists a single Puffin file; commits that change no tombstone list it again.
Vectors are small (roaring bitmaps), so rewriting them is cheap, and readers open one
file: DuckDB 1.5.5's ``iceberg_scan`` applies wrong vectors when a snapshot lists several
Puffin files holding several vectors each (its external file cache), which this layout
never produces.

A delete file's sequence number is the version that wrote it: every data file it
claims was added at or before that version, and a position delete applies to data
files whose sequence number is not greater. What each listed file claims is read back
from the previous snapshot's delete manifests (a deletion vector names its data file;
a Parquet file's claims are in its manifest's key-value metadata, ``quiver.claims``),
remembered per manifest in this process since manifests never change. When a previous
snapshot's claims cannot be known, every tombstone is written anew.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.avro.file import AvroFile
from pyiceberg.manifest import (
    MANIFEST_ENTRY_SCHEMAS,
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
)
from pyiceberg.typedef import Record

from quiver.supertable.iceberg import puffin
from quiver.supertable.iceberg.folder import METADATA_DIR, Folder
from quiver.supertable.iceberg.io import StoreFileIO
from quiver.supertable.manifest import FileEntry, bitmap_rows

DELETES_DIR = f"{METADATA_DIR}/deletes"
# Field ids the Iceberg spec reserves for the columns of position delete files.
FILE_PATH_ID = 2147483546
POS_ID = 2147483545
CLAIMS_KEY = "quiver.claims"
# Delete (or Puffin) files a snapshot lists at most before one file replaces them all.
MAX_DELETE_FILES = 8
# Positions of the version-3 fields of pyiceberg's data file record.
REFERENCED_DATA_FILE = 17
CONTENT_OFFSET = 18
CONTENT_SIZE = 19
_REMEMBERED = 512
_remembered: OrderedDict[str, list[Listed]] = OrderedDict()
_lock = threading.Lock()
_DELETE_SCHEMA = pa.schema([
    pa.field("file_path", pa.string(), nullable=False,
             metadata={b"PARQUET:field_id": str(FILE_PATH_ID).encode()}),
    pa.field("pos", pa.int64(), nullable=False,
             metadata={b"PARQUET:field_id": str(POS_ID).encode()}),
])


@dataclass
class Listed:
    """A delete file (or one deletion vector of a Puffin file) a snapshot lists."""

    path: str            # the Parquet or Puffin file, relative to the table folder
    added_in: int        # the version that wrote it: its sequence numbers
    claims: dict[str, int]  # data file (relative path) -> tombstones it holds for it
    data_file: DataFile  # its manifest record

    @property
    def key(self) -> tuple[str, str]:
        """Unique per listed entry: a Puffin file lists one entry per vector."""
        return self.path, next(iter(self.claims)) if self.is_vector else ""

    @property
    def is_vector(self) -> bool:
        return self.data_file.file_format == FileFormat.PUFFIN


@dataclass
class Plan:
    """The delete entries of a snapshot and what writing them added."""

    listed: list[Listed]
    objects: list[str] = field(default_factory=list)
    added_files: int = 0
    added_positions: int = 0
    removed_files: int = 0


def claims_meta(listed: list[Listed]) -> dict[str, str]:
    """Manifest key-value metadata recording what the Parquet delete files claim."""
    claims = {d.path: d.claims for d in listed if not d.is_vector}
    return {CLAIMS_KEY: json.dumps(claims, separators=(",", ":"))} if claims else {}


def _read_manifest(folder: Folder, mf: ManifestFile) -> list[Listed] | None:
    io_ = StoreFileIO(folder.store, folder.location, folder.prefix)
    with AvroFile[ManifestEntry](
        io_.new_input(mf.manifest_path), MANIFEST_ENTRY_SCHEMAS[3],
        read_types={-1: ManifestEntry, 2: DataFile},
        read_enums={0: ManifestEntryStatus, 101: FileFormat, 134: DataFileContent},
    ) as reader:
        meta = reader.header.meta
        entries = list(reader)
    raw = meta.get(CLAIMS_KEY)
    claimed = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw else {}
    out = []
    for entry in entries:
        if entry.status == ManifestEntryStatus.DELETED:
            continue
        df = entry.data_file
        seq = entry.sequence_number
        if seq is None:  # an added entry inherits the manifest's
            seq = mf.sequence_number
        rel = folder.rel(df.file_path)
        if df.file_format == FileFormat.PUFFIN:
            target = df[REFERENCED_DATA_FILE]
            if target is None:
                return None
            claims = {folder.rel(target): int(df.record_count)}
        elif rel in claimed:
            claims = {str(k): int(v) for k, v in claimed[rel].items()}
        else:
            # A delete file of one data file (as older versions wrote them): its path bounds
            # name that file.
            lower = (df.lower_bounds or {}).get(FILE_PATH_ID)
            if lower is None or lower != (df.upper_bounds or {}).get(FILE_PATH_ID):
                return None
            claims = {folder.rel(lower.decode()): int(df.record_count)}
        out.append(Listed(rel, int(seq), claims, df))
    return out


def listed_in(folder: Folder, manifests: list[ManifestFile]) -> list[Listed] | None:
    """The delete entries the delete manifests among ``manifests`` list; None when what
    one of them claims cannot be known."""
    out: list[Listed] = []
    for mf in manifests:
        if mf.content != ManifestContent.DELETES:
            continue
        with _lock:
            found = _remembered.get(mf.manifest_path)
        if found is None:
            read = _read_manifest(folder, mf)
            if read is None:
                return None
            found = read
            with _lock:
                _remembered[mf.manifest_path] = found
                while len(_remembered) > _REMEMBERED:
                    _remembered.popitem(last=False)
        out += found
    return out


def remember(manifest_path: str, listed: list[Listed]) -> None:
    """Records the entries of a delete manifest this process wrote."""
    with _lock:
        _remembered[manifest_path] = list(listed)
        while len(_remembered) > _REMEMBERED:
            _remembered.popitem(last=False)


def _owners(prior: list[Listed]) -> dict[str, tuple[Listed, int]]:
    owners: dict[str, tuple[Listed, int]] = {}
    for d in prior:
        for data, count in d.claims.items():
            held = owners.get(data)
            if held is None or d.added_in > held[0].added_in:
                owners[data] = (d, count)
    return owners


def plan(folder: Folder, version: int, dead: list[FileEntry], prior: list[Listed] | None,
         vectors: bool) -> Plan:
    """The delete entries of version ``version`` whose files with tombstones are ``dead``,
    writing the one new delete (or Puffin) file it needs."""
    owners = _owners(prior or [])
    kept: dict[tuple[str, str], Listed] = {}
    changed: list[FileEntry] = []
    for f in dead:
        held = owners.get(f.path)
        if held is not None and held[1] == len(f.tombstones):
            kept[held[0].key] = held[0]
        else:
            changed.append(f)
    # Deletion vectors all go in one new Puffin file whenever any changed (see the notes).
    limit = 1 if vectors else MAX_DELETE_FILES
    if changed and len({d.path for d in kept.values()}) + 1 > limit:
        kept, changed = {}, list(dead)
    out = Plan(listed=list(kept.values()))
    if changed:
        written = _write_vectors(folder, version, changed) if vectors else [
            _write_positions(folder, version, changed)]
        out.listed += written
        out.objects.append(written[0].path)
        out.added_files = len(written)
        out.added_positions = sum(d.data_file.record_count for d in written)
    now = {d.key for d in out.listed}
    out.removed_files = len({d.key for d in prior or []} - now)
    return out


def _delete_record(**kwargs: Any) -> DataFile:
    return DataFile.from_args(
        _table_format_version=3, content=DataFileContent.POSITION_DELETES,
        partition=Record(), sort_order_id=None, spec_id=0, equality_ids=None,
        key_metadata=None, **kwargs)


def _name(version: int, suffix: str) -> str:
    return f"{DELETES_DIR}/d{version}-{uuid.uuid4().hex[:12]}.{suffix}"


def _write_positions(folder: Folder, version: int, files: list[FileEntry]) -> Listed:
    """One Parquet position delete file holding the tombstones of ``files``."""
    ordered = sorted(files, key=lambda f: folder.uri(f.path))
    uris = [folder.uri(f.path) for f in ordered]
    rows = [bitmap_rows(f.tombstones).astype(np.int64) for f in ordered]
    counts = [len(r) for r in rows]
    paths = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(uris), dtype=np.int32), counts)),
        pa.array(uris, pa.string())).cast(pa.string())
    positions = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    table = pa.table([paths, pa.array(positions)], schema=_DELETE_SCHEMA)
    sink = io.BytesIO()
    # DuckDB loads every delete file on one thread before it reads any data: paths as a
    # dictionary and sorted positions as deltas keep the file small (a few bytes per 100
    # positions) with nothing to decompress, which measurably shortens that step.
    pq.write_table(table, sink, compression="none", use_dictionary=["file_path"],
                   column_encoding={"pos": "DELTA_BINARY_PACKED"})
    data = sink.getvalue()
    name = _name(version, "parquet")
    folder.store.put(folder.path(name), data, mode="create")
    record = _delete_record(
        file_path=folder.uri(name), file_format=FileFormat.PARQUET,
        record_count=len(positions), file_size_in_bytes=len(data),
        lower_bounds={FILE_PATH_ID: uris[0].encode(),
                      POS_ID: struct.pack("<q", int(positions.min()))},
        upper_bounds={FILE_PATH_ID: uris[-1].encode(),
                      POS_ID: struct.pack("<q", int(positions.max()))})
    return Listed(name, version, {f.path: len(f.tombstones) for f in ordered}, record)


def _write_vectors(folder: Folder, version: int, files: list[FileEntry]) -> list[Listed]:
    """One Puffin file holding a deletion vector for each of ``files``."""
    ordered = sorted(files, key=lambda f: folder.uri(f.path))
    data, blobs = puffin.write([(folder.uri(f.path), f.tombstones) for f in ordered])
    name = _name(version, "puffin")
    folder.store.put(folder.path(name), data, mode="create")
    out = []
    for f, blob in zip(ordered, blobs, strict=True):
        uri = blob.data_file.encode()
        record = _delete_record(
            file_path=folder.uri(name), file_format=FileFormat.PUFFIN,
            record_count=blob.cardinality, file_size_in_bytes=len(data),
            referenced_data_file=blob.data_file, content_offset=blob.offset,
            content_size_in_bytes=blob.length,
            # Path bounds naming the one data file: readers that match delete files to data
            # files by these (pyiceberg) find the vector without trying every data file.
            lower_bounds={FILE_PATH_ID: uri}, upper_bounds={FILE_PATH_ID: uri})
        out.append(Listed(name, version, {f.path: len(f.tombstones)}, record))
    return out
