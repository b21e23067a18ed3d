"""An object store that misbehaves on request, for fault and crash tests of tables.

``FaultyStore`` delegates every call to a real store (from ``quiver.catalog.storage.open_store``)
and, for the calls that a ``Rule`` selects by operation name, path pattern and call
index, fails them, delays them, lets them happen and then reports a failure (an
ambiguous outcome, like a timeout after the server applied the write), or runs a hook
first. ``kill_at_write=N`` makes the process SIGKILL itself just before its Nth write
(a put or a delete), so a child process dies exactly between two storage steps. Every
call is recorded in ``log``, which tells a dry run how many writes an operation makes.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from quiver.supertable.errors import StorageError, StorageUnavailableError
from quiver.supertable.store import ObjectMeta, ObjectStore, ObjectVersion, PutMode

READ_OPS = frozenset({"get", "get_range", "get_ranges", "head", "list"})
WRITE_OPS = frozenset({"put", "delete"})


@dataclass
class Rule:
    """Which calls to disturb and how.

    ``op`` is an operation name (``put``, ``get``, ``delete``, ``head``, ``list``,
    ``get_range``, ``get_ranges``) or ``read`` / ``write`` / ``*``. ``path`` is a glob
    matched against the object path (the list prefix for ``list``). ``calls`` picks the
    1-based indices among the calls this rule matches; None means every one.

    ``action``: ``fail`` raises ``error`` instead of the call, ``fail_after`` performs the
    call and then raises, ``delay`` sleeps ``delay_s`` first, ``hook`` runs ``hook()``
    first (once per selected call).
    """

    op: str
    path: str = "*"
    calls: set[int] | None = None
    action: str = "fail"
    error: type[StorageError] = StorageUnavailableError
    delay_s: float = 0.0
    hook: Callable[[], None] | None = None
    seen: int = 0
    fired: int = 0

    def matches(self, op: str, path: str) -> bool:
        if self.op == "*":
            ok = True
        elif self.op == "read":
            ok = op in READ_OPS
        elif self.op == "write":
            ok = op in WRITE_OPS
        else:
            ok = self.op == op
        return ok and fnmatch.fnmatchcase(path, self.path)


@dataclass
class FaultyStore:
    """An ``ObjectStore`` that forwards to ``inner`` and applies ``rules``."""

    inner: ObjectStore
    rules: list[Rule] = field(default_factory=list)
    kill_at_write: int | None = None
    log: list[tuple[str, str]] = field(default_factory=list)
    writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ----------------------------------------------------------------------- plumbing

    @property
    def uri(self) -> str:
        return self.inner.uri

    @property
    def kind(self) -> str:
        # Readers open files eagerly or lazily by backend kind; keep the real one.
        return getattr(self.inner, "kind", "remote")

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def write_log(self) -> list[tuple[str, str]]:
        with self._lock:
            return [entry for entry in self.log if entry[0] in WRITE_OPS]

    def _enter(self, op: str, path: str) -> list[Rule]:
        """Records the call, kills or picks the rules that fire; returns those to apply after."""
        with self._lock:
            self.log.append((op, path))
            if op in WRITE_OPS:
                self.writes += 1
                if self.kill_at_write is not None and self.writes == self.kill_at_write:
                    os.kill(os.getpid(), signal.SIGKILL)
            selected = []
            for rule in self.rules:
                if rule.matches(op, path):
                    rule.seen += 1
                    if rule.calls is None or rule.seen in rule.calls:
                        rule.fired += 1
                        selected.append(rule)
        after = []
        for rule in selected:
            if rule.action == "delay":
                time.sleep(rule.delay_s)
            elif rule.action == "hook":
                assert rule.hook is not None
                rule.hook()
            elif rule.action == "fail":
                raise rule.error(f"injected failure of {op} {path!r}")
            elif rule.action == "fail_after":
                after.append(rule)
            else:
                raise ValueError(f"unknown fault action {rule.action!r}")
        return after

    @staticmethod
    def _leave(after: list[Rule], op: str, path: str) -> None:
        for rule in after:
            raise rule.error(f"injected failure after {op} {path!r} took effect")

    # ----------------------------------------------------------------------- reads

    def get(self, path: str) -> tuple[bytes, ObjectMeta]:
        after = self._enter("get", path)
        out = self.inner.get(path)
        self._leave(after, "get", path)
        return out

    def get_range(self, path: str, offset: int, length: int) -> bytes:
        after = self._enter("get_range", path)
        out = self.inner.get_range(path, offset, length)
        self._leave(after, "get_range", path)
        return out

    def get_range_buffer(self, path: str, offset: int, length: int) -> Any:
        return self.get_range(path, offset, length)

    def get_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        after = self._enter("get_ranges", path)
        out = self.inner.get_ranges(path, ranges)
        self._leave(after, "get_ranges", path)
        return out

    def get_ranges_buffers(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        return list(self.get_ranges(path, ranges))

    def head(self, path: str) -> ObjectMeta:
        after = self._enter("head", path)
        out = self.inner.head(path)
        self._leave(after, "head", path)
        return out

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        after = self._enter("list", prefix)
        out = list(self.inner.list(prefix))
        self._leave(after, "list", prefix)
        return iter(out)

    # ----------------------------------------------------------------------- writes

    def put(self, path: str, data: bytes, mode: PutMode = "overwrite") -> ObjectVersion:
        after = self._enter("put", path)
        out = self.inner.put(path, data, mode)
        self._leave(after, "put", path)
        return out

    def delete(self, path: str) -> None:
        after = self._enter("delete", path)
        self.inner.delete(path)
        self._leave(after, "delete", path)
