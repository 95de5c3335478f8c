"""The status light: what the worker sees of where help stands.

Patterns are discreet (one LED, no sound) and distinct:

=============  ===========================  =======================================
state          pattern                      meaning
=============  ===========================  =======================================
armed          5 ms blip every 5 s          working and connected; press to alert
no_link        1 s on, 1 s off              not connected: the button cannot alert
sent           fast flicker (0.1 s / 0.1 s) alert stored and sent, not yet confirmed
received       0.5 s on, 1.5 s off          the server has the alert; paging staff
help_coming    steady on                    a staff member acknowledged and is coming
fault          0.15 s on, 0.35 s off        the unit has a fault (disk, config)
=============  ===========================  =======================================

``docs/use/light-card.md`` has the same table, in fr/nl/en, for the card beside the button.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Protocol


class Light(StrEnum):
    ARMED = "armed"
    NO_LINK = "no_link"
    SENT = "sent"
    RECEIVED = "received"
    HELP_COMING = "help_coming"
    FAULT = "fault"


class LedLike(Protocol):
    """The part of :class:`gpiozero.LED` the indicator uses."""

    def on(self) -> None: ...
    def blink(
        self,
        on_time: float = ...,
        off_time: float = ...,
        n: int | None = ...,
        background: bool = ...,
    ) -> None: ...
    def close(self) -> None: ...


#: (on seconds, off seconds); None means steady on.
PATTERNS: Final[dict[Light, tuple[float, float] | None]] = {
    Light.ARMED: (0.005, 4.995),
    Light.NO_LINK: (1.0, 1.0),
    Light.SENT: (0.1, 0.1),
    Light.RECEIVED: (0.5, 1.5),
    Light.HELP_COMING: None,
    Light.FAULT: (0.15, 0.35),
}


class Indicator:
    """Drives one LED to show a :class:`Light` state; changes only when the state changes."""

    def __init__(self, led: LedLike) -> None:
        self._led = led
        self.state: Light | None = None

    def show(self, state: Light) -> bool:
        """Show ``state``; return True if the light changed."""
        if state is self.state:
            return False
        pattern = PATTERNS[state]
        if pattern is None:
            self._led.on()
        else:
            self._led.blink(on_time=pattern[0], off_time=pattern[1], background=True)
        # Named only once the LED shows it: stopping a blink waits for its thread, and
        # whoever reads ``state`` (the unit's status, a test) must see what the room sees.
        self.state = state
        return True

    def close(self) -> None:
        self._led.close()
