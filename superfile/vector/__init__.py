"""The vector (kNN) index of one superfile column: build, blob format, reader, summary."""

from quiver.superfile.vector.build import VectorIndexParams, build_vector_index
from quiver.superfile.vector.column_vectors import ColumnVectors
from quiver.superfile.vector.reader import DEFAULT_NPROBE, DEFAULT_RERANK, VectorIndexReader
from quiver.superfile.vector.summary import VectorSummary

__all__ = [
    "DEFAULT_NPROBE",
    "DEFAULT_RERANK",
    "ColumnVectors",
    "VectorIndexParams",
    "VectorIndexReader",
    "VectorSummary",
    "build_vector_index",
]
