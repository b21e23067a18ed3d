"""Table maintenance as Flight actions: ``quiver.optimize`` and ``quiver.gc``.

A client (``quiver optimize --server``, ``quiver gc --server``) sends a DoAction whose
body is a JSON object ``{"table": NAME, "options": {...}}`` and gets one result holding a
JSON object that reports what was done. The body comes from the network, so it is read
strictly: at most ``MAX_BODY_BYTES``, a JSON object with known keys only, a valid table
name, options of the right type inside fixed bounds; anything else is INVALID_ARGUMENT
naming what is wrong.

The actions run like every other call (see ``server.FlightHandlers._run``): after
authentication, admitted through the server's statement limits, and under the call's
interrupt, so a client that cancels or goes away, the statement time limit or a
shutdown stops them between steps (optimize publishes nothing then; gc stops deleting).

Through a server, ``gc`` never deletes files younger than ``MIN_GRACE_S``: the
server's own statements may be reading them.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Literal, overload

from quiver.catalog.connection import is_valid_table_name
from quiver.catalog.errors import quote_short
from quiver.flight_server.service.errors import InvalidArgument

log = logging.getLogger(__name__)

__all__ = ["ACTIONS", "GC", "MIN_GRACE_S", "OPTIMIZE", "run_action"]

OPTIMIZE = "quiver.optimize"
GC = "quiver.gc"
ACTIONS = {
    OPTIMIZE: "Compact a table's small and mostly-deleted files. Body: JSON {\"table\": NAME, "
              "\"options\": {\"target_rows\": N, \"min_live_fraction\": F}}; result: JSON report.",
    GC: "Delete files no table version needs. Body: JSON {\"table\": NAME or null for every "
        "table, \"options\": {\"grace_seconds\": S, \"expire_manifests\": B, "
        "\"keep_versions\": N}}; result: JSON report.",
}
MAX_BODY_BYTES = 64 << 10
MIN_GRACE_S = 60.0
MAX_GRACE_S = 366 * 24 * 3600.0
MAX_TARGET_ROWS = 100_000_000
MAX_KEEP_VERSIONS = 1_000_000


def run_action(conn: Any, kind: str, body: bytes) -> bytes:
    """Runs maintenance action ``kind`` on ``conn``'s tables; its JSON report."""
    request = _request(body, kind)
    if kind == OPTIMIZE:
        table = _table_name(request.get("table"), required=True)
        options = _options(request.get("options"), _OPTIMIZE_OPTIONS, kind)
        report = _optimize(conn, table, options)
    elif kind == GC:
        gc_table = _table_name(request.get("table"), required=False)
        options = _options(request.get("options"), _GC_OPTIONS, kind)
        report = _gc(conn, gc_table, options)
    else:  # pragma: no cover - the caller dispatches known kinds only
        raise InvalidArgument(f"unknown maintenance action {quote_short(kind)}")
    return json.dumps(report, separators=(",", ":")).encode()


# -- reading the body -------------------------------------------------------------------------


def _request(body: bytes, kind: str) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidArgument(f"{kind}: the body is {len(body)} bytes; at most "
                              f"{MAX_BODY_BYTES} are accepted")
    if not body.strip():
        raise InvalidArgument(f"{kind}: the body must be a JSON object such as "
                              '{"table": "docs", "options": {}}')
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidArgument(f"{kind}: the body is not JSON (UTF-8)") from None
    if not isinstance(request, dict):
        raise InvalidArgument(f"{kind}: the body must be a JSON object, got "
                              f"{type(request).__name__}")
    unknown = sorted(set(request) - {"table", "options"})
    if unknown:
        raise InvalidArgument(f"{kind}: unknown key(s) {quote_short(', '.join(unknown))}; "
                              "the body holds \"table\" and \"options\"")
    return request


@overload
def _table_name(value: Any, *, required: Literal[True]) -> str: ...
@overload
def _table_name(value: Any, *, required: bool) -> str | None: ...
def _table_name(value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not is_valid_table_name(value):
        shown = quote_short(value) if isinstance(value, str) else type(value).__name__
        raise InvalidArgument(f"invalid table name {shown}: use 1-128 letters, digits or "
                              "underscores, not starting with a digit")
    return value


# name -> (type, lowest, highest)
_OPTIMIZE_OPTIONS: dict[str, tuple[type, float, float]] = {
    "target_rows": (int, 1, MAX_TARGET_ROWS),
    "min_live_fraction": (float, 0.0, 1.0),
}
_GC_OPTIONS: dict[str, tuple[type, float, float]] = {
    "grace_seconds": (float, MIN_GRACE_S, MAX_GRACE_S),
    "expire_manifests": (bool, 0, 1),
    "keep_versions": (int, 1, MAX_KEEP_VERSIONS),
}


def _options(value: Any, allowed: dict[str, tuple[type, float, float]],
             kind: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{kind}: \"options\" must be a JSON object")
    out: dict[str, Any] = {}
    for key, given in value.items():
        if key not in allowed:
            raise InvalidArgument(f"{kind}: unknown option {quote_short(str(key))}; known: "
                                  + ", ".join(allowed))
        if given is None:
            continue
        wanted, low, high = allowed[key]
        # JSON true/false are Python bools, which are ints too: only a bool is a bool.
        if wanted is bool:
            if not isinstance(given, bool):
                raise InvalidArgument(f"{kind}: option {key} must be true or false")
            out[key] = given
            continue
        ok_type = (isinstance(given, int) if wanted is int else
                   isinstance(given, int | float)) and not isinstance(given, bool)
        if not ok_type or (isinstance(given, float) and not math.isfinite(given)):
            raise InvalidArgument(f"{kind}: option {key} must be "
                                  f"{'an integer' if wanted is int else 'a number'}")
        if not low <= given <= high:
            raise InvalidArgument(f"{kind}: option {key} must lie in [{_num(low)}, "
                                  f"{_num(high)}], got {_num(given)}")
        out[key] = wanted(given)
    return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


# -- the work ---------------------------------------------------------------------------------


def _optimize(conn: Any, name: str, options: dict[str, Any]) -> dict[str, Any]:
    table = conn.open_table(name)
    before = table.snapshot()
    result = table.optimize(target_rows=options.get("target_rows"),
                            min_live_fraction=options.get("min_live_fraction", 0.8))
    after = table.snapshot()
    log.info("optimize %s: files %d -> %d", name, len(before.files), len(after.files))
    return {"table": name, "files_before": len(before.files), "files_after": len(after.files),
            "version_before": before.version, "version": result.version,
            "version_after": after.version, "files_removed": result.files_removed,
            "files_added": result.files_added, "rows_rewritten": result.rows_rewritten,
            "tombstones_dropped": result.tombstones_dropped}


def _gc(conn: Any, name: str | None, options: dict[str, Any]) -> dict[str, Any]:
    from quiver.supertable import interrupt

    names = [name] if name is not None else conn.list_tables()
    tables = []
    for each in names:
        interrupt.check()
        result = conn.open_table(each).gc(
            grace_seconds=options.get("grace_seconds", 3600.0),
            expire_manifests=options.get("expire_manifests", False),
            keep_versions=options.get("keep_versions", 10))
        tables.append({"table": each, "objects_deleted": result.objects_deleted,
                       "bytes_deleted": result.bytes_deleted,
                       "manifests_deleted": result.manifests_deleted,
                       "intents_deleted": result.intents_deleted,
                       "iceberg_deleted": result.iceberg_deleted})
    purged = None
    if name is None:
        interrupt.check()
        purged = conn.catalog.purge_dropped()
    return {"tables": tables, "dropped_purged": purged}
