"""The scheduled self-test: a silent test alert through the whole chain every few hours.

The time of the last one is kept in a private file, so the schedule holds
across reboots; the first start only sets it.
"""

from __future__ import annotations

from pathlib import Path

from device import private
from panicbutton.clock import Clock


class SelfTestSchedule:
    """Says when a self-test is due, every ``hours`` hours (0 turns it off).

    ``path`` holds the wall-clock time of the last one, in seconds since the epoch.
    """

    def __init__(self, path: Path, hours: float, clock: Clock) -> None:
        self._path = path
        self._hours = hours
        self._clock = clock

    def due(self) -> bool:
        """True if a test is due now, and note it as done. Raises OSError if that time
        cannot be recorded: then no test goes (or a broken disk would send one a tick)."""
        if not self._hours:
            return False
        now = self._clock.time()
        try:
            last = float(self._path.read_text())
        except (OSError, ValueError):
            last = None
        if last is not None and now - last < self._hours * 3600:
            return False
        private.write_text(self._path, f"{now:.0f}")
        return last is not None  # the first start only sets the schedule
