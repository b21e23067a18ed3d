"""Interrupts: a cancel is seen by checks and by waiters, whenever it comes; the scope of
an interrupt ends with its block, also when the block raises."""

from __future__ import annotations

import threading
import time

import pytest

from quiver.supertable import interrupt as interrupts
from quiver.supertable.errors import WorkCancelledError, WorkTimeoutError


def test_a_cancel_before_the_wait_returns_at_once() -> None:
    work = interrupts.Interrupt()
    work.cancel("stopped")
    started = time.monotonic()
    assert work.wait(5.0) is True
    assert time.monotonic() - started < 1.0


def test_a_cancel_from_another_thread_wakes_the_waiter() -> None:
    work = interrupts.Interrupt()
    timer = threading.Timer(0.1, work.cancel)
    timer.start()
    started = time.monotonic()
    try:
        assert work.wait(5.0) is True
    finally:
        timer.cancel()
    assert time.monotonic() - started < 4.0


def test_a_wait_without_a_cancel_runs_out() -> None:
    assert interrupts.Interrupt().wait(0.05) is False


def test_a_check_raises_once_cancelled_or_past_the_deadline() -> None:
    work = interrupts.Interrupt()
    work.check()
    work.cancel()
    with pytest.raises(WorkCancelledError):
        work.check()
    late = interrupts.Interrupt(timeout_s=0.01)
    time.sleep(0.02)
    with pytest.raises(WorkTimeoutError):
        late.check()


def test_a_watched_condition_cancels_the_work() -> None:
    gone = threading.Event()
    work = interrupts.Interrupt(also=gone.is_set)
    assert not work.cancelled
    gone.set()
    assert work.cancelled and work.wait(0) is True


def test_the_scope_restores_the_outer_interrupt_also_after_an_error() -> None:
    outer, inner = interrupts.Interrupt(), interrupts.Interrupt()
    with interrupts.scope(outer):
        with pytest.raises(RuntimeError), interrupts.scope(inner):
            assert interrupts.current() is inner
            raise RuntimeError("boom")
        assert interrupts.current() is outer
    assert interrupts.current() is None
