"""What one statement may cost the server: its time limit, its place among the
statements running at once, and the registry that stops them.

Every unit of work a call starts (planning or running a statement, a DoGet stream, an
ingest, a metadata request) takes a slot from ``Admission``: at most
``max_concurrent`` run at once, the rest wait in line up to ``queue_timeout_s`` (and
no longer than the call's own deadline) and are then refused with
``ResourceExhausted``. Each holds a ``quiver.supertable.interrupt.Interrupt`` carrying the
statement time limit (shortened by the client's deadline), kept with its slot so a
shutdown can cancel all of them at once.

``INSERT … VALUES`` statements (``quiver.flight_server.sql.looks_like_append``, judged
before the statement is read) are admitted in a class of their own, of
``max_concurrent_appends`` slots: such a statement spends nearly all its time waiting for
the group commit it joined, so it should neither take a query's slot nor be kept from
joining that commit (fuller groups are what makes small appends cheap).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from quiver.flight_server.service.errors import ResourceExhausted
from quiver.supertable.interrupt import Interrupt

DEFAULT_STATEMENT_TIMEOUT_S = 300.0
DEFAULT_MAX_CONCURRENT = 16
DEFAULT_MAX_CONCURRENT_APPENDS = 64
DEFAULT_QUEUE_TIMEOUT_S = 10.0
# Most statements waiting for a slot; beyond it a call is refused at once.
DEFAULT_MAX_QUEUED = 256


@dataclass(frozen=True)
class Limits:
    """The server's statement limits (0 or None for no time limit)."""

    statement_timeout_s: float | None = DEFAULT_STATEMENT_TIMEOUT_S
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    max_concurrent_appends: int = DEFAULT_MAX_CONCURRENT_APPENDS
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S
    max_queued: int = DEFAULT_MAX_QUEUED


class Slot:
    """One admitted unit of work; ``release`` gives the slot back (once)."""

    __slots__ = ("_admission", "_released", "interrupt")

    def __init__(self, admission: Admission, interrupt: Interrupt) -> None:
        self._admission = admission
        self._released = False
        self.interrupt = interrupt

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._leave(self)


class Admission:
    """At most ``limits.max_concurrent`` units of work at once; the others queue."""

    def __init__(self, limits: Limits, capacity: int | None = None) -> None:
        self.limits = limits
        self.capacity = limits.max_concurrent if capacity is None else capacity
        # The lock alone guards the common case (a free slot, nobody waiting); the
        # condition on it is used only to wait, and notified only when someone does.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._running: set[Slot] = set()
        self._queued = 0

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return self._queued

    def enter(self, interrupt: Interrupt) -> Slot:
        """A slot for the work ``interrupt`` belongs to, once one is free;
        ``ResourceExhausted`` when the line is full or the wait runs out."""
        limit = self.capacity
        with self._lock:
            if len(self._running) >= limit:
                if self._queued >= self.limits.max_queued:
                    raise ResourceExhausted(
                        f"the server is busy: {len(self._running)} statements running and "
                        f"{self._queued} waiting; retry later")
                wait_until = time.monotonic() + self.limits.queue_timeout_s
                if interrupt.deadline is not None:
                    wait_until = min(wait_until, interrupt.deadline)
                self._queued += 1
                try:
                    while len(self._running) >= limit:
                        left = wait_until - time.monotonic()
                        if left <= 0:
                            raise ResourceExhausted(
                                f"the server is busy: {limit} statements are running (its "
                                "--max-concurrent-statements or --max-concurrent-appends) "
                                "and none finished within "
                                f"{self.limits.queue_timeout_s:g} s; retry later")
                        self._cond.wait(min(left, 0.25))
                        interrupt.check()
                finally:
                    self._queued -= 1
            slot = Slot(self, interrupt)
            self._running.add(slot)
            return slot

    def _leave(self, slot: Slot) -> None:
        with self._lock:
            self._running.discard(slot)
            if self._queued:
                self._cond.notify()

    def cancel_all(self, reason: str) -> int:
        """Cancels every admitted unit of work; how many there were."""
        with self._lock:
            slots = list(self._running)
        for slot in slots:
            slot.interrupt.cancel(reason)
        return len(slots)
