"""Byte layout of one column's full-text blob, shared by builder and reader.

Version 2 (written now) adds a fourth section, ``positions`` (see ``positions``), after
the three of version 1, which readers still open: a version 1 blob has no word
positions, so phrase and proximity clauses over it are refused with a ``QueryError``.

All integers are little endian. The blob is::

    preamble  magic "QFTS" | version u16 | flags u16 | header_len u32 | header_crc u32
    header    fixed fields (HEADER_FIXED) | 3 section entries (SECTION) | dictionary index
    dict      dictionary blocks of up to DICT_BLOCK_TERMS sorted terms each
    postings  every term's postings (see ``codec``), in term order
    doclens   one unsigned integer of ``doclen_width`` bytes per document
    positions (version 2) term offsets, term CRCs and each term's word positions

``header_crc`` covers bytes ``[16, header_len)``. Each section entry carries the section's
offset (from the blob start), length and CRC-32C; the dictionary index carries each
dictionary block's offset (relative to the dict section, ``nblocks + 1`` u64), CRC-32C
(``nblocks`` u32) and first term (``nblocks + 1`` u32 offsets into the concatenated first
terms), so a lookup reads one dictionary block. A dictionary block is ``count u32``, then
``count`` directory entries (DIR_ENTRY: df, postings offset relative to the postings
section, postings length, postings CRC-32C), then ``count + 1`` u32 term offsets and the
UTF-8 term bytes. Terms are sorted by UTF-8 bytes (code point order).
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"QFTS"
VERSION = 2
VERSIONS = (1, 2)
PREAMBLE = struct.Struct("<4sHHII")
HEADER_FIXED = struct.Struct("<IIQIHHB7x")
SECTION = struct.Struct("<QQI4x")
SECTION_NAMES_V1 = ("dict", "postings", "doclens")
SECTION_NAMES = ("dict", "postings", "doclens", "positions")
DICT_BLOCK_TERMS = 128
DIR_ENTRY = np.dtype([("df", "<u4"), ("off", "<u8"), ("len", "<u4"), ("crc", "<u4")])


def section_names(version: int) -> tuple[str, ...]:
    return SECTION_NAMES_V1 if version == 1 else SECTION_NAMES


def fixed_end(version: int) -> int:
    """Where the dictionary index starts in a header of ``version``."""
    return PREAMBLE.size + HEADER_FIXED.size + SECTION.size * len(section_names(version))


FIXED_END = fixed_end(VERSION)
FIXED_END_MIN = fixed_end(1)
