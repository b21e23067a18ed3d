"""The byte layout of one vector index blob: header, sections, checksums.

Layout (little-endian; every section starts on a 64-byte boundary)::

    header      fixed ``HEADER.size`` bytes, ends with a CRC-32C of itself
    meta        radius (f64), trained-quantizer length (u32), pad, summary centroid
                (dim f32), quantizer parameters (f32: SQ8 ranges or PQ codebooks)
    directory   per cluster: count, CRC of its id/code block, CRC of its vectors
    centroids   coarse centroids, nlist x dim f32
    positions   per local row id: position in cluster order, or NO_POSITION
    blocks      per cluster, in order: local ids (u32), [v1: row hashes (u32)], codes (u8)
    vectors     v1 only: per cluster, stored float32 vectors (normalized for cosine)

Version 2 (written today) stores no float32 vectors: the exact rerank reads them
from the file's own Parquet column, the one stored copy, so the ``vectors``
section is empty and a block record is the id and the code. Version 1 blobs
(ids, hashes, codes, plus a float32 copy of every vector) still read.

The header, meta and directory sit together at the front so a lazy open usually costs
one read. Cluster ``c`` starts at position ``start[c] = sum(count[:c])`` in
the block section (and the v1 vector section), so offsets are derived, not stored.

Every section carries a CRC-32C (in the header or the directory). In v1, vectors
fetched for rerank are too small to justify reading their whole cluster, so each
row also has a 32-bit multiplicative hash that numpy checks for a shortlist at once;
in v2 the Parquet page checksums cover the vectors.

PQ codes (v2) are residuals to the cell centroid, ``M`` sub-quantizers of 256
centroids each (one byte per sub-vector); the codebooks are the meta's quantizer
parameters, ``256 * dim`` floats laid out as faiss' ``ProductQuantizer.centroids``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import crc32c
import numpy as np

from quiver.superfile.errors import CorruptFileError, UnsupportedVersionError
from quiver.superfile.spec import Metric

if TYPE_CHECKING:
    from typing_extensions import Buffer

MAGIC = b"QVEC"
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
ALIGN = 64
NO_POSITION = 0xFFFFFFFF

METRIC_CODES: dict[Metric, int] = {Metric.COSINE: 1, Metric.L2: 2, Metric.INNER_PRODUCT: 3}
METRICS_BY_CODE = {v: k for k, v in METRIC_CODES.items()}

QUANT_FLAT = 0  # no codes: the coarse pass scores the float32 vectors themselves
QUANT_SQ8 = 1
QUANT_PQ = 2  # version 2 only
QUANTIZERS = {"flat": QUANT_FLAT, "sq8": QUANT_SQ8, "pq": QUANT_PQ}
QUANTIZER_NAMES = {v: k for k, v in QUANTIZERS.items()}
PQ_CENTROIDS = 256

# magic, version, header length, metric, quantizer, flags, dim, nlist, code size,
# reserved, nrows, count, then (offset, length) of the six sections, then the
# CRCs of meta, directory, centroids, positions, and the header's own CRC.
HEADER = struct.Struct("<4sHHBBHIIII QQ QQQQQQQQQQQQ IIIII")
_SECTIONS = ("meta", "directory", "centroids", "positions", "blocks", "vectors")

DIR_DTYPE = np.dtype([("count", "<u4"), ("block_crc", "<u4"), ("vec_crc", "<u4"), ("pad", "<u4")])
META_FIXED = struct.Struct("<dII")

# Odd multipliers make any change confined to one 32-bit word change the hash.
_HASH_MULT = (
    (np.arange(1, 2 * 65536, 2, dtype=np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
).astype(np.uint32) | np.uint32(1)


def crc(data: bytes | memoryview | np.ndarray) -> int:
    # numpy declares ndarray's buffer protocol to type checkers from Python 3.12 only.
    return crc32c.crc32c(cast("Buffer", data))


def row_hashes(vectors: np.ndarray) -> np.ndarray:
    """A 32-bit hash per row of a (n, dim) float32 array, vectorized over rows."""
    n, dim = vectors.shape
    if dim > len(_HASH_MULT):
        raise ValueError(f"dimension {dim} exceeds the supported maximum {len(_HASH_MULT)}")
    words = np.ascontiguousarray(vectors, dtype="<f4").view("<u4")
    mult = _HASH_MULT[:dim]
    out = np.empty(n, dtype=np.uint32)
    step = 8192  # bounds the temporary product array
    for lo in range(0, n, step):
        out[lo : lo + step] = (words[lo : lo + step] * mult).sum(axis=1, dtype=np.uint32)
    return out


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Header:
    metric: Metric
    quantizer: int
    dim: int
    nlist: int
    code_size: int
    nrows: int
    count: int
    sections: dict[str, tuple[int, int]]
    meta_crc: int
    dir_crc: int
    centroids_crc: int
    positions_crc: int
    version: int = VERSION

    @property
    def has_vectors(self) -> bool:
        """Whether the blob carries its own float32 vectors (v1) or leaves them to the column."""
        return self.version == 1

    @property
    def record_size(self) -> int:
        """Bytes per row in the blocks section: id, v1's row hash, code."""
        return (8 if self.has_vectors else 4) + self.code_size

    def pack(self) -> bytes:
        offsets: list[int] = []
        for name in _SECTIONS:
            offsets.extend(self.sections[name])
        body = HEADER.pack(
            MAGIC, self.version, HEADER.size, METRIC_CODES[self.metric], self.quantizer, 0,
            self.dim, self.nlist, self.code_size, 0, self.nrows, self.count, *offsets,
            self.meta_crc, self.dir_crc, self.centroids_crc, self.positions_crc, 0,
        )
        return body[:-4] + struct.pack("<I", crc(body[:-4]))

    @classmethod
    def unpack(cls, data: bytes | memoryview, blob_size: int) -> Header:
        if len(data) < HEADER.size:
            raise CorruptFileError(
                f"vector index blob is {len(data)} bytes, shorter than its header"
            )
        raw = bytes(data[: HEADER.size])
        fields = HEADER.unpack(raw)
        magic, version, hlen, metric_code, quant, _flags, dim, nlist, code_size = fields[:9]
        if magic != MAGIC:
            raise CorruptFileError(f"vector index blob has magic {magic!r}, expected {MAGIC!r}")
        (own_crc,) = struct.unpack("<I", raw[-4:])
        if crc(raw[:-4]) != own_crc:
            raise CorruptFileError("vector index header checksum mismatch")
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersionError(
                f"vector index format version {version}; this reader supports "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}"
            )
        if hlen != HEADER.size:
            raise CorruptFileError(f"vector index header length {hlen}, expected {HEADER.size}")
        if metric_code not in METRICS_BY_CODE:
            raise CorruptFileError(f"vector index has unknown metric code {metric_code}")
        expected_code = {QUANT_FLAT: 0, QUANT_SQ8: dim}.get(quant)
        if quant == QUANT_PQ and version >= 2:
            # M sub-quantizers of one byte each; M divides the dimension.
            expected_code = code_size if 0 < code_size <= dim and dim % code_size == 0 else -1
        if expected_code is None:
            raise CorruptFileError(f"vector index has unknown quantizer code {quant}")
        if dim <= 0 or dim > len(_HASH_MULT) or code_size != expected_code:
            raise CorruptFileError(f"vector index has dim {dim}, code size {code_size}")
        nrows, count = fields[10], fields[11]
        offs = fields[12:24]
        sections = {name: (offs[2 * i], offs[2 * i + 1]) for i, name in enumerate(_SECTIONS)}
        header = cls(
            metric=METRICS_BY_CODE[metric_code], quantizer=quant, dim=dim, nlist=nlist,
            code_size=code_size, nrows=nrows, count=count, sections=sections,
            meta_crc=fields[24], dir_crc=fields[25], centroids_crc=fields[26],
            positions_crc=fields[27], version=version,
        )
        header._check(blob_size)
        return header

    def expected_lengths(self) -> dict[str, int]:
        return {
            "directory": self.nlist * DIR_DTYPE.itemsize,
            "centroids": self.nlist * self.dim * 4,
            "positions": self.nrows * 4,
            "blocks": self.count * self.record_size,
            "vectors": self.count * self.dim * 4 if self.has_vectors else 0,
        }

    def _check(self, blob_size: int) -> None:
        if self.count > self.nrows or self.count > NO_POSITION or self.nlist > max(self.count, 1):
            raise CorruptFileError(
                f"vector index claims {self.count} vectors in {self.nrows} rows, "
                f"{self.nlist} clusters"
            )
        expected = self.expected_lengths()
        for name, (off, length) in self.sections.items():
            if name in expected and length != expected[name]:
                raise CorruptFileError(
                    f"vector index section {name} is {length} bytes, expected {expected[name]}"
                )
            if off < HEADER.size or off + length > blob_size:
                raise CorruptFileError(
                    f"vector index section {name} [{off}, {off + length}) lies outside the "
                    f"{blob_size}-byte blob (truncated or corrupt)"
                )
        end = align(max(off + length for off, length in self.sections.values()))
        if end != blob_size:
            raise CorruptFileError(
                f"vector index blob is {blob_size} bytes but its sections end at {end} "
                "(truncated or corrupt)"
            )
        meta_len = self.sections["meta"][1]
        if meta_len < META_FIXED.size + 4 * self.dim:
            raise CorruptFileError(f"vector index meta section is only {meta_len} bytes")
