"""One immutable data file: a Parquet file that carries its own BM25 and vector indexes.

Write with ``write_superfile``; read with ``SuperfileReader.open`` (bytes in
memory) or ``SuperfileReader.open_lazy`` (any ``RangeReader``). Every error is
a ``SuperfileError``.
"""

from quiver.superfile.errors import (
    CorruptFileError,
    IndexSpecError,
    NotASuperfileError,
    QueryError,
    RangeReadError,
    SuperfileError,
    UnsupportedVersionError,
)
from quiver.superfile.fts.query import ParsedQuery, parse_query
from quiver.superfile.fts.stats import CollectionStats
from quiver.superfile.kernels import note_compiles
from quiver.superfile.ranges import (
    BytesRangeReader,
    CountingRangeReader,
    FileRangeReader,
    RangeReader,
    SubRangeReader,
)
from quiver.superfile.reader import SuperfileReader
from quiver.superfile.spec import IndexSpec, Metric
from quiver.superfile.vector.summary import VectorSummary
from quiver.superfile.writer import WriterOptions, WrittenSuperfile, write_superfile

# Kernels compile lazily, on first call: the first compile in a process is logged.
note_compiles()

__all__ = [
    "BytesRangeReader",
    "CollectionStats",
    "CorruptFileError",
    "CountingRangeReader",
    "FileRangeReader",
    "IndexSpec",
    "IndexSpecError",
    "Metric",
    "NotASuperfileError",
    "ParsedQuery",
    "QueryError",
    "RangeReadError",
    "RangeReader",
    "SubRangeReader",
    "SuperfileError",
    "SuperfileReader",
    "UnsupportedVersionError",
    "VectorSummary",
    "WriterOptions",
    "WrittenSuperfile",
    "parse_query",
    "write_superfile",
]
