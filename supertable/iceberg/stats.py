"""Column statistics of data files for Iceberg manifests, from their Parquet footers.

Each data file entry a manifest lists gets the column sizes, value and null counts and
lower and upper bounds of its table columns (the hidden ``_id`` column and any column the
Iceberg schema lacks are left out), as Iceberg writers record them: readers such as
DuckDB's ``iceberg_scan`` and Trino prune files and plan with them. The footer is read
with two ranged reads (its length, then the footer) from the table's object store; a file
already listed with statistics in the previous snapshot's manifests is not read again,
and the statistics of the files this process described last are remembered (data files
never change once written), so merging manifests reads nothing in a long-running server.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import OrderedDict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    MetricModeTypes,
    MetricsMode,
    StatisticsCollector,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.schema import Schema
from pyiceberg.types import LongType

from quiver.supertable.store import ObjectStore

log = logging.getLogger(__name__)

_TAIL = 8  # footer length (4 bytes, little-endian) and the magic "PAR1"
REMEMBERED = 8192
_remembered: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()
_KEYS = ("column_sizes", "value_counts", "null_value_counts", "nan_value_counts",
         "lower_bounds", "upper_bounds")


def footer(store: ObjectStore, path: str, size: int) -> pq.FileMetaData:
    """The Parquet footer of the object at ``path`` (``size`` bytes), read by range."""
    tail = store.get_range(path, size - _TAIL, _TAIL)
    if tail[4:] != b"PAR1":
        raise ValueError(f"{path} is not a Parquet file")
    (length,) = struct.unpack("<I", tail[:4])
    meta = store.get_range(path, size - _TAIL - length, length)
    # The footer alone, framed as a file, is all pyarrow needs to parse the metadata.
    return pq.read_metadata(pa.BufferReader(b"PAR1" + bytes(meta) + bytes(tail)))


class Planner:
    """Which statistics to collect for one Iceberg schema, and collecting them."""

    def __init__(self, schema: Schema) -> None:
        self.plan = compute_statistics_plan(schema, {})
        self.mapping = parquet_path_to_id_mapping(schema)

    def of(self, metadata: pq.FileMetaData) -> dict[str, Any]:
        """``DataFile`` keyword arguments holding the statistics of the columns in the schema."""
        mapping = dict(self.mapping)
        plan = dict(self.plan)
        fake = -1
        for i in range(metadata.num_columns):
            path = metadata.schema.column(i).path
            if path not in mapping:
                # Not an Iceberg column (the hidden row id): collected under a throwaway id.
                mapping[path] = fake
                plan[fake] = StatisticsCollector(fake, LongType(),
                                                 MetricsMode(MetricModeTypes.NONE), path)
                fake -= 1
        stats = data_file_statistics_from_parquet_metadata(metadata, plan, mapping)
        out = stats.to_serialized_dict()
        return {key: {k: v for k, v in out[key].items() if k > 0} for key in _KEYS}


def file_stats(store: ObjectStore, planner: Planner, path: str, size: int
               ) -> dict[str, Any]:
    """The statistics of the data file at ``path``; none (and a debug line) when its footer
    cannot be read or described, which leaves readers to scan it unpruned."""
    try:
        return planner.of(footer(store, path, size))
    except Exception as exc:  # statistics are an optimisation: never fail a snapshot for them
        log.debug("no Iceberg column statistics for %s: %s", path, exc)
        return {}


def remembered(uri: str) -> dict[str, Any] | None:
    """The statistics this process last gave the data file at ``uri``, if it still has them."""
    with _lock:
        found = _remembered.get(uri)
        if found is not None:
            _remembered.move_to_end(uri)
        return found


def remember(uri: str, column_stats: dict[str, Any]) -> None:
    if not column_stats:
        return
    with _lock:
        _remembered[uri] = column_stats
        _remembered.move_to_end(uri)
        while len(_remembered) > REMEMBERED:
            _remembered.popitem(last=False)
