"""What the manifest records about one superfile so queries can skip it unopened.

Small facts (row count, ``_id`` range, per-column min/max, BM25 sizes) go in
the manifest entry itself; bulky ones (a Bloom filter of each BM25 column's
terms, each vector column's centroid, radius and cluster centroids) go in a
sidecar object stored next to the superfile as an ``.npz`` archive.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.superfile import Metric, WrittenSuperfile
from quiver.superfile.vector.summary import VectorSummary
from quiver.supertable.bloom import TermBloom
from quiver.supertable.errors import TableCorruptError

MAX_STRING_BOUND = 64


@dataclass
class FileSummary:
    """The sidecar of one superfile."""

    blooms: dict[str, TermBloom]
    vectors: dict[str, VectorSummary]

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        for col, bloom in self.blooms.items():
            arrays[f"bloom/{col}"] = bloom.bits
        for col, s in self.vectors.items():
            arrays[f"vec/{col}/meta"] = np.array(
                [list(Metric).index(s.metric), s.dim, s.count, s.radius], np.float64)
            arrays[f"vec/{col}/centroid"] = s.centroid.astype(np.float32)
            arrays[f"vec/{col}/clusters"] = s.cluster_centroids.astype(np.float32)
            arrays[f"vec/{col}/counts"] = s.cluster_counts.astype(np.int64)
        sink = io.BytesIO()
        # Numeric arrays only: from_bytes loads them with allow_pickle=False.
        np.savez(sink, allow_pickle=False, **arrays)
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> FileSummary:
        try:
            npz = np.load(io.BytesIO(data), allow_pickle=False)
            blooms: dict[str, TermBloom] = {}
            vectors: dict[str, VectorSummary] = {}
            for key in npz.files:
                parts = key.split("/")
                if parts[0] == "bloom":
                    blooms["/".join(parts[1:])] = TermBloom(npz[key])
                elif parts[0] == "vec" and parts[-1] == "meta":
                    col = "/".join(parts[1:-1])
                    metric_i, dim, count, radius = npz[key]
                    vectors[col] = VectorSummary(
                        metric=list(Metric)[int(metric_i)],
                        dim=int(dim),
                        count=int(count),
                        centroid=npz[f"vec/{col}/centroid"],
                        radius=float(radius),
                        cluster_centroids=npz[f"vec/{col}/clusters"],
                        cluster_counts=npz[f"vec/{col}/counts"],
                    )
            return cls(blooms, vectors)
        except (ValueError, KeyError, OSError, EOFError, IndexError) as exc:
            raise TableCorruptError(f"summary {where} is unreadable: {exc}") from None


def summarize(written: WrittenSuperfile) -> FileSummary:
    blooms = {col: TermBloom.build(stats.terms) for col, stats in written.fts_stats.items()}
    return FileSummary(blooms, dict(written.vector_summaries))


def _bound(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_STRING_BOUND:
        return None
    return value


def column_ranges(table: pa.Table) -> dict[str, tuple[Any, Any]]:
    """Min/max of every column whose values order simply (numbers, strings, times, bools)."""
    out: dict[str, tuple[Any, Any]] = {}
    for f in table.schema:
        t = f.type
        col = table.column(f.name)
        if pa.types.is_temporal(t):
            # 32-bit dates and times cast to integers only at their own width.
            try:
                col = col.cast(pa.int32() if t.bit_width == 32 else pa.int64())
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid, ValueError):
                continue
        elif not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                  or pa.types.is_string(t) or pa.types.is_large_string(t)):
            continue
        if col.null_count == len(col):
            continue
        mm = pc.min_max(col)
        lo, hi = _bound(mm["min"].as_py()), _bound(mm["max"].as_py())
        if lo is None or hi is None:
            continue
        if isinstance(lo, float) and (np.isnan(lo) or np.isnan(hi)):
            continue
        out[f.name] = (lo, hi)
    return out
