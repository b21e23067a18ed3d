"""One immutable data file: a Parquet file that carries its own BM25 and vector indexes.

Write with ``write_superfile``; read with ``SuperfileReader.open`` (bytes in
memory) or ``SuperfileReader.open_lazy`` (any ``RangeReader``). Every error is
a ``SuperfileError``.
"""

from superfile.errors import (
    CorruptFileError,
    IndexSpecError,
    NotASuperfileError,
    QueryError,
    RangeReadError,
    SuperfileError,
    UnsupportedVersionError,
)
from superfile.fts.query import ParsedQuery, parse_query
from superfile.fts.stats import CollectionStats
from superfile.ranges import (
    BytesRangeReader,
    CountingRangeReader,
    FileRangeReader,
    RangeReader,
    SubRangeReader,
)
from superfile.reader import SuperfileReader
from superfile.spec import IndexSpec, Metric
from superfile.vector.summary import VectorSummary
from superfile.writer import WriterOptions, WrittenSuperfile, write_superfile

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
