"""Time for the server's timers: the wall clock, or one a test moves by hand.

Escalation steps are due at times in the database; the scheduler sleeps until
the next one. With :class:`ManualClock` a test can run thirty minutes of
escalation in a second, while everything else (broker, Twilio, database) is
real.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol

from panicbutton.wire import now_utc


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware UTC."""

    def wait(self, event: threading.Event, until: datetime | None, longest: float) -> bool:
        """Sleep until ``until`` (or at most ``longest`` seconds of this clock's time), or
        until ``event`` is set; return True if it was set."""


class SystemClock:
    def now(self) -> datetime:
        return now_utc()

    def wait(self, event: threading.Event, until: datetime | None, longest: float) -> bool:
        seconds = longest if until is None else (until - now_utc()).total_seconds()
        return event.wait(max(0.0, min(seconds, longest)))


class ManualClock:
    """A clock that only moves when :meth:`advance` is called (tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Condition()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._lock.notify_all()
            return self._now

    def wait(self, event: threading.Event, until: datetime | None, longest: float) -> bool:
        with self._lock:
            deadline = self._now + timedelta(seconds=longest)
            if until is not None:
                deadline = min(deadline, until)
            # Wake on a time step, or every 20 ms of real time to see the event.
            while self._now < deadline and not event.is_set():
                self._lock.wait(0.02)
        return event.is_set()
