"""Bundling: one text (or call) for a person's pages about several incidents.

When one person gets pages for several incidents within a few seconds, the
first goes out at once and the others are held until the channel's window
ends, then go together as one SMS (or one call) that lists the rooms, instead
of a flood. Windows are on the pager's clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from panicbutton.clock import Clock

__all__ = ["BUNDLE_WINDOW", "Bundles", "Key"]

#: Default seconds after a page to one person during which their pages for *other*
#: incidents are bundled, by channel (settings: PANICBUTTON_SMS_BUNDLE_WINDOW, ...).
BUNDLE_WINDOW = {"sms": 3.0, "call": 20.0}

#: Whose pages, on which channel: (staff id, "sms" or "call").
Key = tuple[str, str]


class Bundles:
    """Pages held per person and channel while a bundle window is open.

    ``windows`` gives each channel's window in seconds; ``on_open(key, seconds)``
    is called when a page opens a bundle, with the seconds until its window ends
    (then :meth:`release` it).
    """

    def __init__(
        self, *, clock: Clock, windows: dict[str, float], on_open: Callable[[Key, float], None]
    ) -> None:
        self._clock = clock
        self._windows = windows
        self._on_open = on_open
        self._lock = threading.Lock()
        #: key -> (monotonic time, incident id) of the last page sent.
        self._last_sent: dict[Key, tuple[float, int]] = {}
        self._held: dict[Key, list[int]] = {}

    def hold(self, key: Key, incident_id: int, page_id: int) -> bool:
        """Hold the page for a bundle if another incident's page just went to this person
        (or a bundle is open); otherwise note it as sent now and return False."""
        with self._lock:
            last_at, last_incident = self._last_sent.get(key, (-1e9, 0))
            since = self._clock.monotonic() - last_at
            window = self._windows[key[1]]
            if (since < window and last_incident != incident_id) or key in self._held:
                first = key not in self._held
                self._held.setdefault(key, []).append(page_id)
                if first:
                    self._on_open(key, window - since)
                return True
            self._last_sent[key] = (self._clock.monotonic(), incident_id)
            return False

    def release(self, key: Key) -> list[int]:
        """The pages held for ``key`` (a window ended): they are sent now, together."""
        with self._lock:
            self._last_sent[key] = (self._clock.monotonic(), -1)
            return self._held.pop(key, [])

    def held(self) -> int:
        """Pages held for a bundle."""
        with self._lock:
            return sum(len(v) for v in self._held.values())
