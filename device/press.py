"""Turning raw button edges into alarms, in our own code.

gpiozero's mock pins ignore ``bounce_time``, so debouncing and gestures live
here, where tests can drive them with exact times. Debouncing is leading-edge:
the first edge of a press acts at once (a press must not wait), further edges
within ``debounce`` seconds are ignored, and after the window the level the
pin really has is taken (so a bounce storm ends in the right state).

Gestures, per room (``[press] gesture`` in the firmware config):

- ``single`` (default): one press raises the alarm.
- ``double``: two presses within ``double_window`` seconds (rooms with many
  accidental presses).
- ``hold``: the button held for ``hold`` seconds.

There is no gesture that cancels: an alarm, once raised, is a staff matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Gesture(StrEnum):
    SINGLE = "single"
    DOUBLE = "double"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class PressConfig:
    """Times in seconds: ``debounce`` (default 0.05), ``hold`` (2.0), ``double_window`` (1.5)."""

    gesture: Gesture = Gesture.SINGLE
    debounce: float = 0.05
    hold: float = 2.0
    double_window: float = 1.5


class PressDetector:
    """Feed it raw edges and the passing of time; it answers with alarms.

    Not thread-safe: the agent's thread owns it. ``edge`` and ``tick`` return
    the number of alarms raised (0 or 1).
    """

    def __init__(self, config: PressConfig) -> None:
        self.config = config
        self.pressed = False  # the debounced level
        self._raw = False
        self._changed_at = float("-inf")  # when the debounced level last changed
        self._held_since: float | None = None
        self._hold_fired = False
        self._last_press: float | None = None
        self.edges = 0  # raw edges seen, for the record

    def edge(self, pressed: bool, at: float) -> int:
        """A raw edge: ``pressed`` is the pin's new level at monotonic time ``at``."""
        self.edges += 1
        self._raw = pressed
        if at - self._changed_at < self.config.debounce:
            return 0  # a bounce; the level is re-read when the window closes
        return self._accept(pressed, at)

    def tick(self, now: float) -> int:
        """Time passes: settle a level left over from bounces, and time a hold."""
        alarms = 0
        if self._raw != self.pressed and now - self._changed_at >= self.config.debounce:
            alarms += self._accept(self._raw, now)
        if (
            self.config.gesture is Gesture.HOLD
            and self.pressed
            and not self._hold_fired
            and self._held_since is not None
            and now - self._held_since >= self.config.hold
        ):
            self._hold_fired = True
            alarms += 1
        return alarms

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to decide, or None."""
        if self._raw != self.pressed:
            return self._changed_at + self.config.debounce
        if self.config.gesture is Gesture.HOLD and self.pressed and not self._hold_fired:
            assert self._held_since is not None
            return self._held_since + self.config.hold
        return None

    def _accept(self, pressed: bool, at: float) -> int:
        if pressed == self.pressed:
            return 0
        self.pressed = pressed
        self._changed_at = at
        if not pressed:
            self._held_since = None
            return 0
        self._held_since = at
        self._hold_fired = False
        match self.config.gesture:
            case Gesture.SINGLE:
                return 1
            case Gesture.DOUBLE:
                if (
                    self._last_press is not None
                    and at - self._last_press <= self.config.double_window
                ):
                    self._last_press = None
                    return 1
                self._last_press = at
                return 0
            case Gesture.HOLD:
                return 0
