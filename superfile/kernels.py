"""Says so when a search kernel must be compiled in this process.

The kernels (``@njit(cache=True)`` in ``fts``, ``vector`` and the table layer's bloom
filters) are compiled on first use and the machine code is kept on disk; a process whose
cache is missing or stale (a fresh install that skipped the warm-up, a cache folder it
cannot write) spends seconds compiling on its first searches. ``note_compiles`` makes
that visible: the first compile in a process logs one line, later ones stay quiet. Numba
only reports a compile when the disk cache had nothing, so a warmed install logs
nothing. ``quiver.flight_server.sql.warmup`` compiles every kernel ahead.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("quiver.kernels")

NOTICE = ("quiver: compiling search kernels (first use after install); the first searches "
          "wait a few seconds, later processes load them from the cache")

_lock = threading.Lock()
_state = {"installed": False, "noted": False}


def _on_compile_start(event: Any) -> None:
    with _lock:
        if _state["noted"]:
            return
        _state["noted"] = True
    log.warning(NOTICE)


def note_compiles() -> None:
    """Installs (once per process) the listener that logs the first kernel compile."""
    with _lock:
        if _state["installed"]:
            return
        _state["installed"] = True
    from numba.core import event

    class _FirstCompile(event.Listener):
        def on_start(self, ev: Any) -> None:
            _on_compile_start(ev)

        def on_end(self, ev: Any) -> None:
            pass

    event.register("numba:compile", _FirstCompile())


def compile_noted() -> bool:
    """Whether this process has compiled a kernel (and said so)."""
    return _state["noted"]
