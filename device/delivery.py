"""Getting each stored alert to the server: resent over MQTT, and over HTTPS when it waits.

An alert is published at once, then again after 2, 4, 8... seconds (up to
``resend_max``) while the broker is connected, until the server's feedback
confirms it. When one has waited ``https.after`` seconds, the broker out of
reach or nobody answering, it is posted over the second path too; the server
de-duplicates by alert id.
"""

from __future__ import annotations

import logging

from device.https import HttpsSender
from device.link import Link
from device.outbox import Outbox
from panicbutton.clock import Clock
from panicbutton.wire import Alert

log = logging.getLogger(__name__)

#: First resend of an unconfirmed alert after this many seconds; doubles up to resend_max.
RESEND_FIRST = 2.0


class Delivery:
    """Sends the outbox's pending alerts until the server confirms them.

    Not thread-safe: the agent's thread owns it. ``resend_max`` caps the resend
    delay, in seconds; ``https`` is the second path, or None.
    """

    def __init__(
        self,
        *,
        outbox: Outbox,
        link: Link,
        https: HttpsSender | None,
        https_after: float,
        resend_max: float,
        clock: Clock,
    ) -> None:
        self._outbox = outbox
        self._link = link
        self._https = https
        self._https_after = https_after
        self._resend_max = resend_max
        self._clock = clock
        self._resend: dict[str, tuple[float, float]] = {}  # alert id -> (due, delay)
        self._first_sent: dict[str, float] = {}  # alert id -> when first sent (monotonic)
        self._next_https = 0.0
        #: When the broker was last lost (monotonic), or None while connected.
        self.down_since: float | None = clock.monotonic()

    def send(self, alert: Alert, *, anew: bool = False) -> None:
        """Publish ``alert`` now and schedule its resend; ``anew`` (a re-press) restarts
        the backoff from its first delay."""
        if anew:
            self._resend.pop(alert.alert_id, None)
        self._first_sent.setdefault(alert.alert_id, self._clock.monotonic())
        self._link.publish_alert(alert)
        _, delay = self._resend.get(alert.alert_id, (0.0, RESEND_FIRST / 2))
        delay = min(delay * 2, self._resend_max)
        self._resend[alert.alert_id] = (self._clock.monotonic() + delay, delay)
        self._https_due(self._clock.monotonic())

    def confirmed(self, alert_id: str) -> None:
        """The server has the alert: no more resends."""
        self._resend.pop(alert_id, None)
        self._first_sent.pop(alert_id, None)

    def link_up(self) -> None:
        """The broker is back: send every pending alert, and the open one again."""
        self.down_since = None
        pending = self._outbox.pending()
        for alert in pending:
            self.send(alert)
        # The open alert again, even if confirmed: the server answers with where
        # it stands now, so a "resolved" missed while away is not missed for good.
        current = self._outbox.open_alert()
        if current is not None and current.alert_id not in {a.alert_id for a in pending}:
            self._link.publish_alert(current)

    def link_down(self) -> None:
        if self.down_since is None:
            self.down_since = self._clock.monotonic()

    def due(self, now: float) -> None:
        """Resend what is due at monotonic time ``now``; use the second path if it is time."""
        if self._link.connected:
            for alert in self._outbox.pending():
                due, _ = self._resend.get(alert.alert_id, (0.0, 0.0))
                if due <= now:
                    self.send(alert)
        self._https_due(now)

    def _https_due(self, now: float) -> None:
        """Use the second path when an alert has waited ``https_after`` seconds for the
        server: the broker out of reach, or reachable but nobody confirming."""
        if self._https is None or self._https.busy or now < self._next_https:
            return
        after = self._https_after
        waiting = [
            a
            for a in self._outbox.pending()
            if now - self._first_sent.get(a.alert_id, now) >= after
        ]
        if not waiting:
            return
        self._next_https = now + after
        for alert in waiting:
            log.warning(
                "alert %s unconfirmed for %.0f s (%s): sending it over HTTPS too",
                alert.alert_id,
                now - self._first_sent[alert.alert_id],
                "broker out of reach" if self.down_since is not None else "no answer",
            )
            self._https.submit(alert)
