"""Time for the room unit's timers: the real clocks, or one a test moves by hand.

The agent's resend backoff, HTTPS fallback, heartbeat, press gestures and
scheduled self-test all read this clock, and its thread waits for its next
event through it. With :class:`ManualClock` a test runs a two-minute outage
in a fraction of a second with the unit's real logic, while the broker, the
server and the pins stay real (like gpiozero's injected ``pin_factory``).
paho's own keepalive and reconnect timers stay on real time.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for schedules kept across reboots)."""

    def get(self, events: queue.Queue[Any], timeout: float) -> Any:
        """The next item of ``events``, or None once ``timeout`` seconds of this clock's
        time have passed with none."""


class SystemClock:
    """The real clocks (the default)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def get(self, events: queue.Queue[Any], timeout: float) -> Any:
        try:
            return events.get(timeout=timeout)
        except queue.Empty:
            return None


class ManualClock:
    """A clock that only moves when :meth:`advance` is called (tests).

    ``monotonic`` starts at ``start`` and ``time`` at ``wall`` (seconds since
    the epoch; defaults to the real time at creation); both move together.
    """

    def __init__(self, start: float = 1000.0, wall: float | None = None) -> None:
        self._now = start
        self._offset = (time.time() if wall is None else wall) - start
        self._moved = threading.Condition()

    def monotonic(self) -> float:
        with self._moved:
            return self._now

    def time(self) -> float:
        with self._moved:
            return self._now + self._offset

    def advance(self, seconds: float) -> float:
        """Move both clocks forward by ``seconds``; return the new monotonic time."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, got {seconds} s")
        with self._moved:
            self._now += seconds
            self._moved.notify_all()
            return self._now

    def get(self, events: queue.Queue[Any], timeout: float) -> Any:
        with self._moved:
            deadline = self._now + timeout
        while True:
            try:
                # Real time slices, to see an event arrive; this clock's time for the timeout.
                return events.get(timeout=0.01)
            except queue.Empty:
                pass
            with self._moved:
                if self._now >= deadline:
                    return None
