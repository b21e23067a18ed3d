"""Deletion vectors in Puffin files, the way Iceberg format version 3 stores deleted rows.

A Puffin file is ``PFA1``, its blobs, then a footer: ``PFA1``, a JSON payload naming each
blob (type, offset, length, properties), the payload's length (4 bytes, little-endian),
4 flag bytes (0: the payload is not compressed) and ``PFA1`` again.

A ``deletion-vector-v1`` blob holds the deleted positions of one data file: its length
(of what follows, up to the checksum; 4 bytes, big-endian), the magic ``D1 D3 39 64``, the
positions as a 64-bit roaring bitmap in the portable format (the number of 32-bit
bitmaps as 8 bytes, then each one's key, the high 32 bits, as 4 bytes and the bitmap),
and a CRC-32 of the magic and bitmap (4 bytes, big-endian). A table's tombstones are
32-bit roaring bitmaps, so the 64-bit form is that one bitmap under key 0 (or no bitmap
at all when nothing is deleted). Blob properties name the data file and the number of
deleted positions; snapshot id and sequence number are -1, as the format asks of writers
that do not know them yet.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from pyroaring import BitMap

MAGIC = b"PFA1"
DV_MAGIC = bytes([0xD1, 0xD3, 0x39, 0x64])
DV_TYPE = "deletion-vector-v1"
# The field id Iceberg reserves for a row's position in its data file.
ROW_POSITION_ID = 2147483545
CREATED_BY = "Quiver"


@dataclass(frozen=True)
class Blob:
    """Where one deletion vector sits in its Puffin file."""

    data_file: str
    offset: int
    length: int
    cardinality: int


def portable_64(bitmap: BitMap) -> bytes:
    """``bitmap`` (32-bit positions) in the portable 64-bit roaring format."""
    if not bitmap:
        return struct.pack("<Q", 0)
    body = BitMap(bitmap)
    body.run_optimize()
    return struct.pack("<QI", 1, 0) + body.serialize()


def vector_blob(bitmap: BitMap) -> bytes:
    """The ``deletion-vector-v1`` blob of the positions in ``bitmap``."""
    inner = DV_MAGIC + portable_64(bitmap)
    return (struct.pack(">I", len(inner)) + inner
            + struct.pack(">I", zlib.crc32(inner) & 0xFFFFFFFF))


def read_vector(blob: bytes) -> BitMap:
    """The positions of a ``deletion-vector-v1`` blob; ``ValueError`` when it is damaged
    or holds positions past 32 bits."""
    if len(blob) < 12:
        raise ValueError("deletion vector blob too short")
    (length,) = struct.unpack(">I", blob[:4])
    inner = blob[4:4 + length]
    if len(inner) != length or len(blob) != length + 8 or inner[:4] != DV_MAGIC:
        raise ValueError("deletion vector blob has a wrong length or magic")
    (crc,) = struct.unpack(">I", blob[4 + length:])
    if zlib.crc32(inner) & 0xFFFFFFFF != crc:
        raise ValueError("deletion vector blob fails its checksum")
    (count,) = struct.unpack("<Q", inner[4:12])
    if count == 0:
        return BitMap()
    (key,) = struct.unpack("<I", inner[12:16])
    if count != 1 or key != 0:
        raise ValueError("deletion vector holds positions past 32 bits")
    return BitMap.deserialize(inner[16:])


def write(vectors: list[tuple[str, BitMap]]) -> tuple[bytes, list[Blob]]:
    """A Puffin file holding one deletion vector per ``(data file location, positions)``,
    and where each blob landed."""
    parts = [MAGIC]
    offset = len(MAGIC)
    blobs: list[Blob] = []
    described = []
    for data_file, bitmap in vectors:
        blob = vector_blob(bitmap)
        parts.append(blob)
        blobs.append(Blob(data_file, offset, len(blob), len(bitmap)))
        described.append({
            "type": DV_TYPE, "fields": [ROW_POSITION_ID], "snapshot-id": -1,
            "sequence-number": -1, "offset": offset, "length": len(blob),
            "properties": {"referenced-data-file": data_file,
                           "cardinality": str(len(bitmap))},
        })
        offset += len(blob)
    payload = json.dumps({"blobs": described, "properties": {"created-by": CREATED_BY}},
                         separators=(",", ":")).encode()
    parts += [MAGIC, payload, struct.pack("<i", len(payload)), bytes(4), MAGIC]
    return b"".join(parts), blobs


def read(data: bytes) -> dict[str, BitMap]:
    """The deletion vectors of a Puffin file, by data file location."""
    if data[:4] != MAGIC or data[-4:] != MAGIC:
        raise ValueError("not a Puffin file")
    (size,) = struct.unpack("<i", data[-12:-8])
    if data[-8] & 1:
        raise ValueError("compressed Puffin footers are not read here")
    footer = json.loads(data[-12 - size:-12])
    out = {}
    for b in footer["blobs"]:
        if b["type"] == DV_TYPE:
            out[b["properties"]["referenced-data-file"]] = read_vector(
                data[b["offset"]:b["offset"] + b["length"]])
    return out
