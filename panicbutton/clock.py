"""Time for every timer in panicbutton: the real clocks, or one a test moves by hand.

One clock for both sides. On a room unit it times resends, the HTTPS fallback,
heartbeats, press gestures and the self-test, and the agent's thread waits for
its next event through it. On the server it times escalation steps, the
pager's bundling windows, sweeps and retries. With :class:`ManualClock` a test
runs thirty minutes of escalation or a two-minute outage in a fraction of a
second with the real logic, while the broker, the database, Twilio's stand-in
and the pins stay real (like gpiozero's injected ``pin_factory``). paho's own
keepalive and reconnect timers stay on real time.

Standard library only: the room unit imports it.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current wall-clock time, aware UTC."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for schedules kept across reboots)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""

    def wait(self, event: threading.Event, until: datetime | None, longest: float) -> bool:
        """Sleep until ``until`` (or at most ``longest`` seconds of this clock's time), or
        until ``event`` is set; return True if it was set."""

    def get(self, events: queue.Queue[Any], timeout: float) -> Any:
        """The next item of ``events``, or None once ``timeout`` seconds of this clock's
        time have passed with none."""


class SystemClock:
    """The real clocks (the default everywhere)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, until: datetime | None, longest: float) -> bool:
        seconds = longest if until is None else (until - self.now()).total_seconds()
        return event.wait(max(0.0, min(seconds, longest)))

    def get(self, events: queue.Queue[Any], timeout: float) -> Any:
        try:
            return events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None


#: How often a thread waiting on a :class:`ManualClock` looks at its event or queue,
#: in real seconds (the clock itself only moves when a test moves it).
_SLICE = 0.01


class ManualClock:
    """A clock that only moves when :meth:`advance` is called (tests).

    The wall clock starts at ``start`` (aware UTC; defaults to the real time at
    creation) and the monotonic clock at ``monotonic``; both move together.
    """

    def __init__(self, start: datetime | None = None, monotonic: float = 1000.0) -> None:
        wall = start if start is not None else datetime.now(UTC)
        if wall.tzinfo is None:
            raise ValueError(f"a clock's start must be aware UTC, got {wall.isoformat()}")
        self._mono = monotonic
        self._wall = wall.astimezone(UTC)
        self._moved = threading.Condition()

    def now(self) -> datetime:
        with self._moved:
            return self._wall

    def time(self) -> float:
        with self._moved:
            return self._wall.timestamp()

    def monotonic(self) -> float:
        with self._moved:
            return self._mono

    def advance(self, seconds: float) -> datetime:
        """Move both clocks forward by ``seconds``; return the new wall-clock time."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, got {seconds} s")
        with self._moved:
            self._mono += seconds
            self._wall += timedelta(seconds=seconds)
            self._moved.notify_all()
            return self._wall

    def sleep(self, seconds: float) -> None:
        with self._moved:
            deadline = self._mono + seconds
            while self._mono < deadline:
                self._moved.wait(_SLICE)

    def wait(self, event: threading.Event, until: datetime | None, longest: float) -> bool:
        with self._moved:
            deadline = self._wall + timedelta(seconds=longest)
            if until is not None:
                deadline = min(deadline, until)
            # Wake on a time step, or every slice of real time to see the event.
            while self._wall < deadline and not event.is_set():
                self._moved.wait(_SLICE)
        return event.is_set()

    def get(self, events: queue.Queue[Any], timeout: float) -> Any:
        with self._moved:
            deadline = self._mono + timeout
        while True:
            try:
                # Real time slices, to see an item arrive; this clock's time for the timeout.
                return events.get(timeout=_SLICE)
            except queue.Empty:
                pass
            with self._moved:
                if self._mono >= deadline:
                    return None
