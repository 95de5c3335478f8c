"""Where the room's alert stands, from the server's feedback, and the light that says so.

Feedback confirms an alert (no more resends), closes it when resolved (a
press then starts a new alert) or opens it again when the server reopens the
incident. The light speaks about one alert, the latest pressed here (or,
after a reboot, the one the retained feedback names).
"""

from __future__ import annotations

import logging

from device.delivery import Delivery
from device.indicator import Light
from device.link import Via
from device.outbox import Outbox
from panicbutton.wire import Feedback, FeedbackState, WireError

log = logging.getLogger(__name__)

_ORDER = {FeedbackState.RECEIVED: 1, FeedbackState.ACKNOWLEDGED: 2, FeedbackState.RESOLVED: 3}


def _rank(fb: Feedback) -> tuple[int, int]:
    """Where a feedback stands: by round (a reopened incident), then by state."""
    return fb.round, _ORDER[fb.state]


class Standing:
    """The newest feedback heard for each alert, applied to the outbox.

    Not thread-safe: the agent's thread owns it. ``latest`` is the id of the
    alert the light speaks about, or None.
    """

    def __init__(self, outbox: Outbox, delivery: Delivery) -> None:
        self._outbox = outbox
        self._delivery = delivery
        self._heard: dict[str, Feedback] = {}  # alert id -> the newest feedback heard
        self.latest: str | None = None

    def take(self, payload: bytes, via: Via) -> None:
        """Apply one feedback message as it came over ``via``; bad or stale ones are logged."""
        try:
            fb = Feedback.from_json(payload)
        except WireError as exc:
            log.error("ignored feedback from the server (%s): %s", via, exc)
            return
        if self._outbox.confirm(fb.alert_id, fb.presses):
            log.info(
                "alert %s confirmed by the server via %s (incident %d)",
                fb.alert_id,
                via,
                fb.incident,
            )
            self._delivery.confirmed(fb.alert_id)
        known = self._heard.get(fb.alert_id)
        # Redelivered or queued feedback can arrive out of order: never step back within
        # a round. A higher round is the one allowed step back (the incident reopened);
        # a lower one is stale news, even a "resolved".
        if known is not None and _rank(fb) < _rank(known):
            log.info(
                "stale feedback for alert %s ignored (%s, round %d; known: %s, round %d)",
                fb.alert_id,
                fb.state,
                fb.round,
                known.state,
                known.round,
            )
            return
        self._heard[fb.alert_id] = fb
        if fb.state is FeedbackState.RESOLVED:
            if not self._outbox.close(fb.alert_id, fb.presses):
                log.warning(
                    "alert %s resolved after %d press(es); this unit has more: still "
                    "sending it (the server reopens the incident for it)",
                    fb.alert_id,
                    fb.presses,
                )
        elif self._outbox.reopen(fb.alert_id, fb.presses):
            # NOTE: after a reboot no round is known here, but the broker sends only the
            # retained (newest) feedback to a clean session: open at the server is open.
            log.warning(
                "alert %s reopened by the server (incident %d, round %d): a press now is "
                "a re-press of it",
                fb.alert_id,
                fb.incident,
                fb.round,
            )
            current = self._outbox.open_alert()
            if current is not None and current.alert_id == fb.alert_id:
                self.latest = fb.alert_id
        if self.latest is None and not self._outbox.is_test(fb.alert_id):
            self.latest = fb.alert_id  # after a reboot: the retained feedback tells the state

    def light(self, *, connected: bool) -> Light:
        """What the light should show, ``connected`` saying whether the broker is."""
        heard = self._heard.get(self.latest) if self.latest else None
        latest = heard.state if heard is not None else None
        pending = self.latest is not None and any(
            a.alert_id == self.latest for a in self._outbox.pending()
        )
        if latest is FeedbackState.ACKNOWLEDGED:
            return Light.HELP_COMING  # help is on its way whatever the link does now
        if latest is FeedbackState.RECEIVED:
            # A re-press the server has not had yet, with no link: say so.
            return Light.NO_LINK if pending and not connected else Light.RECEIVED
        if pending:
            return Light.SENT if connected else Light.NO_LINK
        if not connected:
            return Light.NO_LINK
        if self._outbox.fault:
            return Light.FAULT
        return Light.ARMED
