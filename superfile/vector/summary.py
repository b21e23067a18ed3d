"""The geometric summary of one vector index, kept in the table manifest for file routing.

A query can skip a superfile whose ball (centroid, radius) or whose cluster
centroids are far from it without opening the file. For cosine the geometry
is that of the normalized vectors (L2 between unit vectors); for l2 and
inner_product it is plain Euclidean geometry of the stored vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quiver.superfile.errors import CorruptFileError, SuperfileError
from quiver.superfile.spec import Metric


@dataclass(frozen=True, eq=False)
class VectorSummary:
    """Centroid, radius and coarse clusters of the vectors one index holds.

    ``count`` is the number of non-null vectors indexed; ``centroid`` their mean
    (normalized vectors for cosine); ``radius`` the largest Euclidean distance
    from the centroid to any of them; ``cluster_centroids`` / ``cluster_counts``
    the coarse IVF cells (one cell for a flat index, none for an empty one).
    """

    metric: Metric
    dim: int
    count: int
    centroid: np.ndarray
    radius: float
    cluster_centroids: np.ndarray
    cluster_counts: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorSummary):
            return NotImplemented
        return (
            self.metric == other.metric
            and self.dim == other.dim
            and self.count == other.count
            and self.radius == other.radius
            and np.array_equal(self.centroid, other.centroid)
            and np.array_equal(self.cluster_centroids, other.cluster_centroids)
            and np.array_equal(self.cluster_counts, other.cluster_counts)
        )

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; float32 values survive the round trip exactly."""
        return {
            "metric": str(self.metric),
            "dim": int(self.dim),
            "count": int(self.count),
            "centroid": self.centroid.astype(np.float32).tolist(),
            "radius": float(self.radius),
            "cluster_centroids": self.cluster_centroids.astype(np.float32).tolist(),
            "cluster_counts": self.cluster_counts.astype(np.int64).tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VectorSummary:
        try:
            dim = int(d["dim"])
            centroid = np.asarray(d["centroid"], dtype=np.float32).reshape(dim)
            clusters = np.asarray(d["cluster_centroids"], dtype=np.float32).reshape(-1, dim)
            counts = np.asarray(d["cluster_counts"], dtype=np.int64).reshape(-1)
            if len(counts) != len(clusters):
                raise ValueError("cluster_counts and cluster_centroids differ in length")
            return cls(
                metric=Metric.parse(d["metric"]),
                dim=dim,
                count=int(d["count"]),
                centroid=centroid,
                radius=float(d["radius"]),
                cluster_centroids=clusters,
                cluster_counts=counts,
            )
        except SuperfileError as exc:
            raise CorruptFileError(f"malformed vector summary: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"malformed vector summary: {exc!r}") from None
