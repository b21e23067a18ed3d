"""Building the Flight SQL server from options and running it until a signal stops it.

``build_server`` opens the storage root, checks the listening address against the
authentication settings (a non-loopback host needs authentication unless
``allow_unauthenticated``), wires authentication middleware and TLS, and starts
listening. ``serve`` runs it until SIGTERM or SIGINT, then shuts down: calls in
flight finish (streams are cut when their client goes away), and no table write is
left half done because every write is one atomic commit.

Several servers may serve one root (tickets are self-contained, and every statement
reads the newest committed version): ``advertise`` lists the locations of all of
them, this one included, and a query split into several endpoints deals them
round-robin over those locations. Without it, every endpoint is read over the
connection the client already has (a server cannot know which of its addresses
a client can reach, e.g. behind port mapping or a TLS name).

Calls are served by a pool of threads (``quiver.flight_server.service.transport``); ``workers``
(``--max-concurrent-statements``) bounds how many units of work run at once
(GetFlightInfo, GetSchema, DoPut, actions, and a DoGet until its stream ends), each
under the statement time limit (``quiver.flight_server.service.limits``); ``INSERT … VALUES``
statements have their own ``max_concurrent_appends`` slots (``--max-concurrent-appends``).

Shutdown (SIGTERM, SIGINT) stops taking calls, cancels every running statement at
once, gives the other calls in flight ``shutdown_grace_s`` to finish, and then ends
the process even if some native work has not returned yet.

Tickets, prepared-statement handles and bearer tokens are signed with a secret all
servers of the root share (``quiver.flight_server.service.keys``): ``secret_file``
(``--secret-file`` or ``$QUIVER_SECRET_FILE``), else one kept in the root. Tickets are valid for
``ticket_ttl`` seconds, bearer tokens for ``token_ttl``; failed logins back off per
address and per user (``quiver.flight_server.service.login_limit``); each connection
holds at most ``prepared_per_session`` prepared statements.

Reading a remote root: a statement asks storage whether each table it reads has a newer
version (one request) unless another statement did within ``max_staleness_s`` (None:
0.2 s on object storage, 0 on local disk); writes through this server are seen at once
either way. Superfiles read
from a remote root are kept in a local disk cache (``cache_dir``, ``cache_bytes``).

Writes: a small commit goes to the table's write log and is folded into an indexed
superfile within ``fold_age_s``; small superfiles are compacted in the background
(``quiver.supertable.maintain``); both are on by default here, unlike in an embedded table.

Operating it: every statement is one line of the ``quiver.statements`` log
(``quiver.flight_server.service.statement_log``); ``metrics_port`` serves Prometheus metrics at
``/metrics`` on the server's host (``quiver.flight_server.service.metrics``).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from quiver.flight_server.service import auth as auth_module
from quiver.flight_server.service import handles, keys, log_setup, login_limit
from quiver.flight_server.service.limits import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_CONCURRENT_APPENDS,
    DEFAULT_STATEMENT_TIMEOUT_S,
    Limits,
)
from quiver.flight_server.service.server import QuiverFlightServer
from quiver.flight_server.sql import connect
from quiver.flight_server.sql.lake import LakeSources
from quiver.root_error import Kind, QuiverError
from quiver.supertable.table import TableOptions

log = logging.getLogger(__name__)


SHUTDOWN_GRACE_S = 10.0
# A server keeps its tables' write logs and compacts them (the embedded default is off).
SERVER_WRITE_OPTIONS: dict[str, Any] = {"write_log_rows": 1000, "fold_age_s": 1.0,
                                        "compaction": True, "group_commit_window_s": 0.0}
# After the grace, this long for the process to wind down before it is ended outright
# (a thread inside a native call cannot be stopped otherwise).
EXIT_MARGIN_S = 3.0


def _leave_now() -> None:
    """Ends the process without the interpreter's teardown, its log written out first."""
    log_setup.stop()
    logging.shutdown()
    os._exit(0)


def _exit_after(seconds: float) -> None:
    def end() -> None:
        log.warning("quiver: work still running %.0f s after shutdown began; exiting", seconds)
        _leave_now()

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()


class ServeError(QuiverError):
    """The server cannot start with these options (the CLI exits with status 2)."""

    kind = Kind.INVALID_INPUT


def _location(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{'grpc+tls' if tls else 'grpc'}://{shown}:{port}"


def build_server(root: str, *, host: str = "127.0.0.1", port: int = 50051,
                 storage_options: dict[str, Any] | None = None, auth: Any | None = None,
                 tls_cert: Path | None = None, tls_key: Path | None = None,
                 allow_unauthenticated: bool = False,
                 workers: int | None = None,
                 advertise: list[str] | None = None,
                 memory_cache_bytes: int | None = None,
                 max_staleness_s: float | None = None,
                 cache_dir: str | None = None,
                 cache_bytes: int | None = None,
                 statement_timeout_s: float | None = None,
                 memory_limit: int | None = None,
                 spill_dir: str | None = None,
                 max_search_k: int | None = None,
                 max_statement_length: int | None = None,
                 max_message_bytes: int | None = None,
                 max_put_bytes: int | None = None,
                 secret_file: Path | None = None,
                 ticket_ttl: float = handles.DEFAULT_TICKET_TTL,
                 token_ttl: float = auth_module.DEFAULT_TOKEN_TTL,
                 login_free_failures: int = login_limit.DEFAULT_FREE_FAILURES,
                 login_max_delay: float = login_limit.DEFAULT_MAX_DELAY,
                 prepared_per_session: int = 256,
                 write_options: dict[str, Any] | None = None,
                 max_concurrent_appends: int | None = None,
                 iceberg_sources: Any = None) -> QuiverFlightServer:
    """A listening server over the tables at ``root`` (``auth`` is an ``AuthConfig``;
    ``memory_cache_bytes`` bounds the decoded rows kept for scans, None for the
    default; ``max_staleness_s``, ``cache_dir`` and ``cache_bytes`` as in
    ``TableOptions``; ``workers`` statements at once and ``statement_timeout_s`` as in
    ``limits.Limits``; ``memory_limit``, ``spill_dir``, ``max_search_k`` and
    ``max_statement_length`` as in ``SqlEngine``; ``max_message_bytes`` the largest
    message a client may send; ``max_put_bytes`` the most one DoPut stream (an ingest)
    may carry;
    ``write_options`` the write log, compaction and group commit fields of
    ``TableOptions``, defaults ``SERVER_WRITE_OPTIONS``; ``max_concurrent_appends`` the
    slots of ``INSERT … VALUES`` statements, as in ``limits.Limits``; ``iceberg_sources``
    the Iceberg catalogs statements may read tables of with ``iceberg_table``, as in
    ``quiver.flight_server.sql.lake.LakeSources``)."""
    if (tls_cert is None) != (tls_key is None):
        raise ServeError("TLS needs both --tls-cert and --tls-key")
    if auth is not None and not auth.enabled:
        auth = None
    if auth is None and not allow_unauthenticated and not auth_module.is_loopback(host):
        raise ServeError(f"refusing to listen on {host} without authentication: give users "
                         "or tokens (--user, --users-file, --token-file, --token-env), or "
                         "pass --allow-unauthenticated")
    if workers is not None and workers < 1:
        raise ServeError("--max-concurrent-statements must be at least 1")
    if max_concurrent_appends is not None and max_concurrent_appends < 1:
        raise ServeError("--max-concurrent-appends must be at least 1")
    if statement_timeout_s is not None and not statement_timeout_s >= 0:
        raise ServeError("--statement-timeout must be 0 (none) or more seconds")
    if memory_limit is not None and memory_limit < (16 << 20):
        raise ServeError("--memory-limit must be at least 16 MiB")
    if max_search_k is not None and max_search_k < 1:
        raise ServeError("--max-search-k must be at least 1")
    if max_statement_length is not None and max_statement_length < 1024:
        raise ServeError("--max-statement-length must be at least 1024 characters")
    if max_message_bytes is not None and not (1 << 20) <= max_message_bytes < 2**31:
        raise ServeError("--max-message-bytes must be between 1 MiB and 2 GiB")
    if max_put_bytes is not None and max_put_bytes < (1 << 20):
        raise ServeError("--max-put-bytes must be at least 1 MiB")
    if memory_cache_bytes is not None and memory_cache_bytes < 0:
        raise ServeError("--memory-cache must be 0 or more bytes")
    if max_staleness_s is not None and not max_staleness_s >= 0:  # also refuses NaN
        raise ServeError("--max-staleness must be 0 or more seconds")
    if cache_bytes is not None and cache_bytes < 0:
        raise ServeError("--cache-bytes must be 0 or more bytes")
    if not ticket_ttl > 0 or not token_ttl > 0:
        raise ServeError("--ticket-ttl and --token-ttl must be more than 0 seconds")
    if login_free_failures < 0 or not login_max_delay >= login_limit.DEFAULT_BASE_DELAY:
        raise ServeError("--login-free-failures must be 0 or more and --login-max-delay "
                         f"at least {login_limit.DEFAULT_BASE_DELAY:g} seconds")
    if prepared_per_session < 1:
        raise ServeError("--prepared-per-session must be at least 1")
    advertised = [_check_location(uri) for uri in (advertise or [])]
    middleware = None
    tls = None
    if auth is not None:
        limiter = login_limit.LoginLimiter(free_failures=login_free_failures,
                                           max_delay=login_max_delay)
        middleware = auth_module.middleware(auth, token_ttl=token_ttl, limiter=limiter)
    if tls_cert is not None and tls_key is not None:
        try:
            tls = auth_module.tls_certificates(tls_cert, tls_key)
        except ValueError as exc:
            raise ServeError(str(exc)) from None
    writes = {**SERVER_WRITE_OPTIONS, **(write_options or {})}
    if writes["write_log_rows"] < 0 or not writes["fold_age_s"] >= 0 or not (
            writes["group_commit_window_s"] >= 0):
        raise ServeError("--write-log-rows, --fold-age and --group-commit-window must be 0 "
                         "or more")
    table_options = TableOptions(max_staleness_s=max_staleness_s, cache_dir=cache_dir,
                                 cache_bytes=cache_bytes, **writes)
    try:
        sources = LakeSources(iceberg_sources)
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    conn = connect(root, memory_cache_bytes=memory_cache_bytes, table_options=table_options,
                   memory_limit=memory_limit, spill_dir=spill_dir, max_search_k=max_search_k,
                   max_statement_length=max_statement_length, iceberg_sources=sources,
                   **(storage_options or {}))
    location = _location(host, port, tls is not None)
    limits = Limits(statement_timeout_s=(DEFAULT_STATEMENT_TIMEOUT_S
                                         if statement_timeout_s is None
                                         else statement_timeout_s or None),
                    max_concurrent=workers or DEFAULT_MAX_CONCURRENT,
                    max_concurrent_appends=(max_concurrent_appends
                                            or DEFAULT_MAX_CONCURRENT_APPENDS))
    try:
        key = keys.server_key(conn.catalog.store, secret_file)
        prepared = handles.PreparedRegistry(per_session=prepared_per_session,
                                            key=key.derive("prepared statements"))
        server = QuiverFlightServer(conn, location, tls_certificates=tls, middleware=middleware,
                                    advertise=advertised, limits=limits,
                                    max_message_bytes=max_message_bytes,
                                    max_put_bytes=max_put_bytes, key=key,
                                    ticket_ttl=ticket_ttl, prepared=prepared)
    except keys.SecretError as exc:
        conn.close()
        raise ServeError(str(exc)) from None
    except Exception:
        conn.close()
        raise
    server.root = root  # type: ignore[attr-defined]
    return server


_SCHEMES = ("grpc", "grpc+tcp", "grpc+tls")


def _check_location(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or scheme not in _SCHEMES or not host or not port.isdigit():
        raise ServeError(f"--advertise wants a location like grpc://host:port or "
                         f"grpc+tls://host:port, got {uri!r}")
    return uri


def listening_uri(server: QuiverFlightServer) -> str:
    """The URI clients connect to (with the port the server really bound)."""
    scheme, _, rest = server.location.partition("://")
    host = rest.rsplit(":", 1)[0]
    return f"{scheme}://{host}:{server.port}"


# How long a shutdown waits for the background warm-up to finish.
WARM_UP_JOIN_S = 5.0

# Young-generation size and how rarely older generations are collected (see ``_settle_gc``).
GC_THRESHOLDS = (20_000, 50, 100)


def _warm_up() -> None:
    """Runs each kind of search once on a throwaway table (``sql.warmup``): the first use
    of a kernel in a process loads it (or, without a cache, compiles it), which holds
    every thread up; done here, no statement (nor the first fold of a write log) waits."""
    from quiver.flight_server.sql.warmup import warm_up

    warm_up()


def _settle_gc() -> None:
    """A full collection stops every thread for as long as it takes to scan every object:
    the startup objects (modules, parsers, the engine) are set aside for good, and
    collections are made rarer, so that small statements do not wait tens of milliseconds
    for them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _restore(handlers: dict[signal.Signals, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _warm_up_then_settle() -> None:
    try:
        _warm_up()
    except Exception as exc:  # only a head start: statements compile what they need
        log.warning("quiver: warming up the search kernels failed: %s", exc)
    _settle_gc()


def serve(root: str, *, shutdown_grace_s: float | None = None,
          metrics_port: int | None = None, **options: Any) -> None:
    """Runs a server (``build_server`` options) until SIGTERM or SIGINT, then stops
    within ``shutdown_grace_s`` (default ``SHUTDOWN_GRACE_S``); with ``metrics_port``,
    Prometheus metrics are served on the server's host at that port."""
    grace = SHUTDOWN_GRACE_S if shutdown_grace_s is None else max(0.0, shutdown_grace_s)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    # Taken before anything slow, so a signal during start-up still shuts down cleanly.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = build_server(root, **options)
    except BaseException:
        _restore(previous)
        raise
    # In the background: compiling the kernels can take a while on a fresh install, and
    # the server must answer signals (and calls) meanwhile.
    warm = threading.Thread(target=_warm_up_then_settle, name="quiver-warm-up", daemon=True)
    warm.start()
    metrics_server = None
    if metrics_port:
        from quiver.flight_server.service.metrics import serve_metrics, set_memory_pool_limit

        try:
            metrics_server = serve_metrics(options.get("host", "127.0.0.1"), metrics_port)
            set_memory_pool_limit(server.conn.engine.memory_limit)
        except OSError:
            server.shutdown(0)
            server.conn.close()
            _restore(previous)
            raise
    message = f"quiver: listening on {listening_uri(server)} (root {root})"
    log.info(message)
    if not log.isEnabledFor(logging.INFO):
        print(message, file=sys.stderr, flush=True)
    try:
        # A bounded wait keeps the main thread able to run the signal handler.
        while not stop.wait(0.5):
            pass
    finally:
        # Running queries are cancelled at once; the other calls in flight get a grace
        # period, then are cancelled too (writes commit atomically, so none is left half
        # written).
        _exit_after(grace + EXIT_MARGIN_S)
        cancelled = server.cancel_streams()
        log.info("quiver: shutting down (%d running statements cancelled)", cancelled)
        server.shutdown(grace)
        server.conn.close()
        if metrics_server is not None:
            metrics_server.stop()
        _restore(previous)
        # The interpreter must not be torn down under the warm-up's native code (that
        # aborts the process): wait for it, and leave without the teardown if it is slow.
        warm.join(WARM_UP_JOIN_S)
        if warm.is_alive():
            _leave_now()
