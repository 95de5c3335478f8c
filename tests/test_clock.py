"""The one clock: a ManualClock's waits wake when a test moves it, and time out in its own time."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from panicbutton.clock import ManualClock, SystemClock

START = datetime(2026, 3, 29, 0, 59, tzinfo=UTC)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``work`` on a thread; its result lands in the returned list."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    return thread, result


def still_waiting(thread: threading.Thread) -> bool:
    thread.join(0.1)  # real time: a ManualClock must not move by itself
    return thread.is_alive()


def test_advance_moves_wall_and_monotonic_together() -> None:
    clock = ManualClock(START, monotonic=5.0)
    assert clock.advance(90) == START + timedelta(seconds=90)
    assert clock.now() == START + timedelta(seconds=90)
    assert clock.time() == (START + timedelta(seconds=90)).timestamp()
    assert clock.monotonic() == 95.0


def test_start_must_be_aware_and_time_only_moves_forward() -> None:
    with pytest.raises(ValueError, match="aware UTC"):
        ManualClock(datetime(2026, 3, 29))
    with pytest.raises(ValueError, match="only moves forward"):
        ManualClock(START).advance(-1)


def test_sleep_wakes_once_advanced_by_its_length() -> None:
    clock = ManualClock(START)
    thread, _ = in_thread(lambda: clock.sleep(30))
    clock.advance(29)
    assert still_waiting(thread)
    clock.advance(1)
    thread.join(2)
    assert not thread.is_alive()


def test_wait_wakes_on_the_event_and_says_so() -> None:
    clock = ManualClock(START)
    event = threading.Event()
    thread, result = in_thread(lambda: clock.wait(event, None, 3600))
    assert still_waiting(thread)
    event.set()
    thread.join(2)
    assert result == [True]


def test_wait_times_out_at_until_or_longest_in_its_own_time() -> None:
    clock = ManualClock(START)
    event = threading.Event()
    until = START + timedelta(seconds=10)
    thread, result = in_thread(lambda: clock.wait(event, until, 60))
    clock.advance(9)
    assert still_waiting(thread)
    clock.advance(1)
    thread.join(2)
    assert result == [False]

    thread, result = in_thread(lambda: clock.wait(event, None, 60))
    clock.advance(59)
    assert still_waiting(thread)
    clock.advance(1)
    thread.join(2)
    assert result == [False]


def test_get_returns_an_item_at_once_and_none_after_the_timeout() -> None:
    clock = ManualClock(START)
    items: queue.Queue[str] = queue.Queue()
    thread, result = in_thread(lambda: clock.get(items, 5))
    items.put("edge")
    thread.join(2)
    assert result == ["edge"]

    thread, result = in_thread(lambda: clock.get(items, 5))
    clock.advance(4)
    assert still_waiting(thread)
    clock.advance(1)
    thread.join(2)
    assert result == [None]


def test_system_clock_gets_none_from_an_empty_queue_and_never_sleeps_backwards() -> None:
    clock = SystemClock()
    assert clock.get(queue.Queue(), 0.01) is None
    clock.sleep(-1)  # a deadline already past: no error, no wait
    assert not clock.wait(threading.Event(), clock.now() - timedelta(seconds=1), 10)
    assert clock.now().tzinfo is UTC
