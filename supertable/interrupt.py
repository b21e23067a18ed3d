"""Stopping work its caller no longer wants: a deadline and a cancel flag, checked
between units of work.

A caller (a SQL statement) opens a ``scope`` with an ``Interrupt``; code that loops
over files or waits for a stream calls ``check()``, which raises
``WorkCancelledError`` once the interrupt is cancelled and ``WorkTimeoutError`` once
its deadline has passed. The interrupt is held per thread; work handed to a thread
pool carries it along with ``carry``. Outside any scope ``check()`` costs one lookup
and never raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from quiver.supertable.errors import WorkCancelledError, WorkTimeoutError

T = TypeVar("T")

_local = threading.local()
_EVENT_MAKING = threading.Lock()


class Interrupt:
    """The deadline (``time.monotonic`` seconds, or None) and cancel flag of one unit of
    work. ``cancel`` may be called from any thread; ``also`` (and ``watch``) add
    conditions polled by ``check``: a client that went away, a cancel request."""

    __slots__ = ("_also", "_event", "_flag", "_reason", "deadline", "timeout_s")

    def __init__(self, timeout_s: float | None = None,
                 also: Callable[[], bool] | None = None) -> None:
        self.timeout_s = timeout_s if timeout_s and timeout_s > 0 else None
        self.deadline = (time.monotonic() + self.timeout_s) if self.timeout_s else None
        # Every statement makes one; only a waiter needs an event, so it is made then.
        self._flag = False
        self._event: threading.Event | None = None
        self._reason = "cancelled"
        self._also: list[Callable[[], bool]] = [also] if also is not None else []

    def watch(self, condition: Callable[[], bool]) -> None:
        """Adds a condition that, once true, cancels the work."""
        self._also.append(condition)

    def cancel(self, reason: str = "cancelled") -> None:
        self._reason = reason
        self._flag = True
        event = self._event
        if event is not None:
            event.set()

    def shorten(self, deadline: float) -> None:
        """Moves the deadline earlier (never later)."""
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    @property
    def cancelled(self) -> bool:
        if self._flag:
            return True
        for condition in self._also:
            if condition():
                self.cancel()
                return True
        return False

    def check(self) -> None:
        """Raises if the work should stop now."""
        if self.cancelled:
            raise WorkCancelledError(f"the statement was {self._reason}"
                                     if self._reason == "cancelled" else
                                     f"the statement was stopped: {self._reason}")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            limit = f" of {self.timeout_s:g} s" if self.timeout_s else ""
            raise WorkTimeoutError(f"the statement ran past its time limit{limit}")

    def wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds`` or until cancelled; whether it was cancelled."""
        with _EVENT_MAKING:
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        # A cancel that read no event yet has set the flag already.
        return self._flag or event.wait(seconds) or self._flag


def current() -> Interrupt | None:
    """The interrupt of the work this thread is doing, if any."""
    return getattr(_local, "interrupt", None)


def check() -> None:
    """Raises if the current work should stop; nothing outside a ``scope``."""
    interrupt = getattr(_local, "interrupt", None)
    if interrupt is not None:
        interrupt.check()


class scope:
    """Makes ``interrupt`` the current one of this thread for the block (every call of
    the server opens one, hence a class rather than a generator)."""

    __slots__ = ("_interrupt", "_outer")

    def __init__(self, interrupt: Interrupt | None) -> None:
        self._interrupt = interrupt
        self._outer: Interrupt | None = None

    def __enter__(self) -> Interrupt | None:
        self._outer = getattr(_local, "interrupt", None)
        _local.interrupt = self._interrupt
        return self._interrupt

    def __exit__(self, *exc: object) -> None:
        _local.interrupt = self._outer


def carry(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` wrapped to run under this thread's current interrupt in another thread."""
    interrupt = current()
    if interrupt is None:
        return fn

    def run(*args: Any, **kwargs: Any) -> T:
        with scope(interrupt):
            interrupt.check()
            return fn(*args, **kwargs)

    return run
