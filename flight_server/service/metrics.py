"""Prometheus metrics of the server, served over HTTP at ``/metrics`` (``--metrics-port``).

Importing this module starts counting: it observes every statement the statement log
sees (``quiver.flight_server.service.statement_log``). Metrics, all in ``REGISTRY``:

- ``quiver_statements_total{kind,status}``: statements ended, by kind and gRPC status;
- ``quiver_statement_duration_seconds{kind}``: their latency (histogram);
- ``quiver_statement_bytes_out_total{kind}`` / ``quiver_statement_bytes_in_total{kind}``;
- ``quiver_statements_running``: statements running now;
- ``quiver_commits_total``, ``quiver_commit_conflicts_total`` (lost races, retried),
  ``quiver_commits_aborted_total`` (gave up): from ``quiver.supertable.stats``;
- ``quiver_cache_hits_total{cache}`` / ``quiver_cache_misses_total{cache}``: ``disk``
  (superfiles of remote roots) and ``decoded`` (rows kept in memory for scans);
- ``quiver_memory_pool_bytes``: the SQL engine's memory limit, only once a limit is
  given with ``set_memory_pool_limit`` (DataFusion's pool use is not visible from Python);
- ``process_resident_memory_bytes`` and the other ``process_*`` metrics.

A statement planned in GetFlightInfo and streamed by DoGet counts once, when it ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from quiver.flight_server.service import statement_log
from quiver.flight_server.service.statement_log import StatementRecord
from quiver.supertable import stats as table_stats

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

STATEMENTS = Counter("quiver_statements", "Statements ended, by kind and gRPC status.",
                     ["kind", "status"], registry=REGISTRY)
LATENCY = Histogram("quiver_statement_duration_seconds", "Statement latency, by kind.",
                    ["kind"], registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0, 10.0, 30.0, 60.0, 300.0))
BYTES_OUT = Counter("quiver_statement_bytes_out", "Result bytes sent, by statement kind.",
                    ["kind"], registry=REGISTRY)
BYTES_IN = Counter("quiver_statement_bytes_in", "Bytes received (DoPut), by statement kind.",
                   ["kind"], registry=REGISTRY)
RUNNING = Gauge("quiver_statements_running", "Statements running now.", registry=REGISTRY)
ProcessCollector(registry=REGISTRY)

_COUNTERS = (
    ("quiver_commits", "Table versions published.", "commits"),
    ("quiver_commit_conflicts", "Commit attempts that lost the race for the next version "
     "and were retried.", "commit_conflicts"),
    ("quiver_commits_aborted", "Commits that gave up after their retries (ABORTED).",
     "commits_aborted"),
)
_CACHES = (("disk", "disk_cache_hits", "disk_cache_misses"),
           ("decoded", "decoded_hits", "decoded_misses"))

_pool_limit: int | None = None


def set_memory_pool_limit(limit_bytes: int | None) -> None:
    """Exports ``quiver_memory_pool_bytes`` as the SQL engine's configured memory limit
    (None stops exporting it). Called by whoever configures that limit."""
    global _pool_limit
    _pool_limit = limit_bytes


class _TableCollector(Collector):
    """Reads the table layer's counters (and the memory pool limit) at each scrape."""

    def collect(self) -> Iterator[Any]:
        counts = table_stats.snapshot()
        for name, doc, key in _COUNTERS:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], counts.get(key, 0))
            yield family
        hits = CounterMetricFamily("quiver_cache_hits", "Cache lookups that hit, by cache.",
                                   labels=["cache"])
        misses = CounterMetricFamily("quiver_cache_misses",
                                     "Cache lookups that missed, by cache.", labels=["cache"])
        for cache, hit, miss in _CACHES:
            hits.add_metric([cache], counts.get(hit, 0))
            misses.add_metric([cache], counts.get(miss, 0))
        yield hits
        yield misses
        if _pool_limit is not None:
            pool = GaugeMetricFamily("quiver_memory_pool_bytes",
                                     "The SQL engine's configured memory limit.")
            pool.add_metric([], _pool_limit)
            yield pool


REGISTRY.register(_TableCollector())


class _StatementObserver:
    def started(self, record: StatementRecord) -> None:
        RUNNING.inc()

    def finished(self, record: StatementRecord, status: str, seconds: float) -> None:
        RUNNING.dec()
        if record.deferred and status == "OK":
            return  # planned only: the DoGet that streams its rows counts it
        kind = record.kind or "other"
        STATEMENTS.labels(kind, status).inc()
        LATENCY.labels(kind).observe(seconds)
        if record.bytes_out:
            BYTES_OUT.labels(kind).inc(record.bytes_out)
        if record.bytes_in:
            BYTES_IN.labels(kind).inc(record.bytes_in)


statement_log.add_observer(_StatementObserver())


class MetricsServer:
    """The HTTP endpoint serving ``/metrics`` from ``REGISTRY``."""

    def __init__(self, host: str, port: int) -> None:
        self._httpd, self._thread = _start_http_server(port, addr=host, registry=REGISTRY)
        self.host = host
        self.port: int = self._httpd.server_port
        self._stopped = threading.Event()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(host: str, port: int) -> MetricsServer:
    """Starts serving ``/metrics`` on ``host:port`` (0 picks a free port)."""
    server = MetricsServer(host, port)
    log.info("quiver: metrics on http://%s:%d/metrics", host, server.port)
    return server
