"""Where the index blobs live inside a superfile, and how the footer names them.

A superfile is the Parquet file pyarrow wrote, with one *index region* spliced
in between the last column chunk / page index and the Parquet footer:

    PAR1 | column chunks | page indexes | pad | blob 0 | blob 1 | ... | footer | len | PAR1

Every offset the footer records points before the region, so any Parquet
reader opens the file unchanged. The footer's key/value metadata carries our
``quiver.*`` keys: the format name and version, the row count, the region
length ``L`` (blobs only, padding excluded) and a JSON directory of blobs with
their offsets inside the region, lengths and CRC32C checksums.

The region ends where the footer starts, so a reader finds it from the footer
alone: blobs start at ``footer_start - L``. ``L`` is known before pyarrow writes
the footer, and the footer does not move the body, so one write suffices. The
writer pads in front of the blobs so that they start on a 64-byte boundary of
the file, which lets readers view numeric sections in place.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import crc32c

from quiver.superfile.errors import CorruptFileError, NotASuperfileError, UnsupportedVersionError

FORMAT_KEY = "quiver.format"
FORMAT_NAME = "quiver-superfile"
VERSION_KEY = "quiver.format_version"
# Version 2: vector index blobs hold codes only; the rerank reads the Parquet column.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
NUM_ROWS_KEY = "quiver.num_rows"
REGION_LENGTH_KEY = "quiver.index_region_length"
DIRECTORY_KEY = "quiver.indexes"
RESERVED_PREFIX = "quiver."

ALIGNMENT = 64
PARQUET_MAGIC = b"PAR1"

FTS = "fts"
VECTOR = "vector"


@dataclass(frozen=True)
class BlobEntry:
    """One index blob: which column and kind, where it sits in the region, its checksum."""

    kind: str
    column: str
    offset: int
    length: int
    crc32c: int
    params: Mapping[str, object]

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "column": self.column,
            "offset": self.offset,
            "length": self.length,
            "crc32c": self.crc32c,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class Region:
    """The planned index region: blob entries plus the bytes that follow the padding."""

    entries: tuple[BlobEntry, ...]
    payload: bytes

    @property
    def length(self) -> int:
        return len(self.payload)


def _aligned(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_region(blobs: Sequence[tuple[str, str, bytes, Mapping[str, object]]]) -> Region:
    """Lays blobs ``(kind, column, bytes, params)`` out back to back, each 64-byte aligned."""
    entries: list[BlobEntry] = []
    parts: list[bytes] = []
    offset = 0
    for kind, column, blob, params in blobs:
        entries.append(BlobEntry(kind, column, offset, len(blob), crc32c.crc32c(blob), params))
        padded = _aligned(len(blob))
        parts.append(bytes(blob))
        parts.append(b"\0" * (padded - len(blob)))
        offset += padded
    return Region(tuple(entries), b"".join(parts))


def footer_metadata(region: Region, num_rows: int) -> dict[str, str]:
    """The ``quiver.*`` key/value pairs that name the region in the Parquet footer."""
    return {
        FORMAT_KEY: FORMAT_NAME,
        VERSION_KEY: str(FORMAT_VERSION),
        NUM_ROWS_KEY: str(num_rows),
        REGION_LENGTH_KEY: str(region.length),
        DIRECTORY_KEY: json.dumps([e.to_json() for e in region.entries], separators=(",", ":")),
    }


def splice_region(parquet: bytes, region: Region) -> bytes:
    """Inserts the region (with its leading pad) just before the footer of ``parquet``."""
    footer_start = parquet_footer_start(parquet)
    pad = (-footer_start) % ALIGNMENT
    return b"".join(
        (
            memoryview(parquet)[:footer_start],
            b"\0" * pad,
            region.payload,
            memoryview(parquet)[footer_start:],
        )
    )


def parquet_footer_start(tail_or_file: bytes | memoryview, file_size: int | None = None) -> int:
    """Offset of the footer, from the last 8 bytes (``len`` + ``PAR1``) of a Parquet file.

    ``tail_or_file`` may be the whole file or only its tail; ``file_size`` is
    the whole file's size when only a tail is given.
    """
    size = len(tail_or_file) if file_size is None else file_size
    if size < 12 or len(tail_or_file) < 8:
        raise NotASuperfileError(f"{size} bytes is too short to be a Parquet file")
    tail = bytes(tail_or_file[-8:])
    if tail[4:] != PARQUET_MAGIC:
        raise NotASuperfileError("not a Parquet file: the trailing magic bytes are missing")
    (footer_len,) = struct.unpack("<I", tail[:4])
    footer_start = size - 8 - footer_len
    if footer_start < 4:
        raise CorruptFileError(
            f"Parquet footer length {footer_len} does not fit in a {size}-byte file"
        )
    return footer_start


@dataclass(frozen=True)
class Directory:
    """What the footer says about the index region, validated."""

    num_rows: int
    region_start: int
    region_length: int
    entries: tuple[BlobEntry, ...]

    def absolute(self, entry: BlobEntry) -> int:
        return self.region_start + entry.offset

    def find(self, kind: str, column: str) -> BlobEntry | None:
        for e in self.entries:
            if e.kind == kind and e.column == column:
                return e
        return None


def parse_directory(kv: Mapping[bytes, bytes] | None, footer_start: int) -> Directory:
    """Validates the footer's ``quiver.*`` keys and locates each blob in the file."""
    if not kv or FORMAT_KEY.encode() not in kv:
        raise NotASuperfileError(
            "a Parquet file without Quiver index metadata (quiver.format is missing)"
        )
    meta = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in kv.items()}
    if meta[FORMAT_KEY] != FORMAT_NAME:
        raise NotASuperfileError(f"{FORMAT_KEY} is {meta[FORMAT_KEY]!r}, not {FORMAT_NAME!r}")
    try:
        version = int(meta[VERSION_KEY])
    except (KeyError, ValueError):
        raise CorruptFileError(f"{VERSION_KEY} is missing or not an integer") from None
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f"superfile format version {version}; this build reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        num_rows = int(meta[NUM_ROWS_KEY])
        region_length = int(meta[REGION_LENGTH_KEY])
        raw_entries = json.loads(meta[DIRECTORY_KEY])
        entries = tuple(
            BlobEntry(
                kind=str(e["kind"]),
                column=str(e["column"]),
                offset=int(e["offset"]),
                length=int(e["length"]),
                crc32c=int(e["crc32c"]),
                params=dict(e.get("params", {})),
            )
            for e in raw_entries
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"malformed Quiver index metadata in the footer: {exc}") from None
    region_start = footer_start - region_length
    if num_rows < 0 or region_length < 0 or region_start < 4:
        raise CorruptFileError("the index region does not fit before the Parquet footer")
    for e in entries:
        if e.kind not in (FTS, VECTOR):
            raise CorruptFileError(f"unknown index kind {e.kind!r} for column {e.column!r}")
        if e.offset < 0 or e.length < 0 or e.offset + e.length > region_length:
            raise CorruptFileError(
                f"{e.kind} index of column {e.column!r} lies outside the index region"
            )
    return Directory(num_rows, region_start, region_length, entries)


def verify_blob(entry: BlobEntry, blob: bytes | memoryview) -> None:
    """Checks a whole blob against the checksum the footer recorded."""
    if crc32c.crc32c(blob) != entry.crc32c:
        raise CorruptFileError(
            f"checksum mismatch in the {entry.kind} index of column {entry.column!r}"
        )
