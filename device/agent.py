"""The room unit agent: one thread owns the outbox and the light.

Path of a press: the gpiozero callback (on gpiozero's thread) puts a
:class:`Pressed` event on the queue -> :meth:`Agent._on_press` stores the alert
in the outbox (on disk) -> publishes it -> the light says "sent". The server's
``received`` feedback removes it from the outbox; ``acknowledged`` turns the
light steady ("help is coming"). Nothing at the unit cancels an alert.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero import LED, Button, Factory

from device.config import DeviceConfig
from device.indicator import Indicator, Light
from device.link import FeedbackIn, Link, LinkDown, LinkUp
from device.outbox import Outbox
from panicbutton.wire import Alert, AlertKind, Feedback, FeedbackState, WireError

log = logging.getLogger(__name__)

_ORDER = {FeedbackState.RECEIVED: 1, FeedbackState.ACKNOWLEDGED: 2, FeedbackState.RESOLVED: 3}

#: First resend of an unconfirmed alert after this many seconds; doubles up to resend_max.
RESEND_FIRST = 2.0


@dataclass(frozen=True, slots=True)
class Pressed:
    at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


class Agent:
    """A room unit: a button, a light, an outbox and a link.

    ``pin_factory`` is gpiozero's (``MockFactory()`` in tests and ``--simulate``;
    None picks the board's own). ``on_light`` is called on the agent's thread
    with each new light state.
    """

    def __init__(
        self,
        config: DeviceConfig,
        *,
        pin_factory: Factory | None = None,
        on_light: Callable[[Light], None] | None = None,
    ) -> None:
        self.config = config
        self._events: queue.Queue[Any] = queue.Queue()
        self._on_light = on_light
        self.outbox = Outbox(config.outbox_path)
        self.link = Link(config, self._events)
        self.button = Button(config.button_pin, pull_up=True, pin_factory=pin_factory)
        try:
            self.indicator = Indicator(LED(config.led_pin, pin_factory=pin_factory))
        except Exception:
            self.button.close()
            raise
        self.button.when_pressed = lambda: self._events.put(Pressed(time.monotonic()))
        self._last_edge = -1e9
        self._latest: str | None = None  # alert id the light speaks about
        self._states: dict[str, FeedbackState] = {}
        self._next_resend: dict[str, tuple[float, float]] = {}  # alert id -> (due, delay)
        self._thread = threading.Thread(
            target=self._run, name=f"agent-{config.device_id}", daemon=True
        )
        self.last_error: str | None = self.outbox.fault

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        pending = self.outbox.pending()
        if pending:
            self._latest = pending[-1].alert_id
            log.warning("%d unconfirmed alert(s) in the outbox; resending on connect", len(pending))
        self._refresh_light()
        self.link.start()
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._events.put(_Stop())
            self._thread.join(timeout=5)
        self.link.stop(self.outbox.depth())
        self.button.close()
        self.indicator.close()
        self.outbox.close()

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def press(self) -> None:
        """Queue a press as if the button was pressed (``device check`` and tests)."""
        self._events.put(Pressed(time.monotonic()))

    # -- the owner thread -------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                event = None
            try:
                if isinstance(event, _Stop):
                    return
                self._handle(event)
            except Exception:  # a bug must not stop the agent from alerting
                log.exception("agent event %r failed", event)

    def _handle(self, event: object) -> None:
        match event:
            case Pressed(at=at):
                self._on_press(at)
            case LinkUp():
                log.info("connected to %s:%d", self.config.mqtt.host, self.config.mqtt.port)
                self.last_error = self.outbox.fault
                self.link.publish_status(self.outbox.depth())
                for alert in self.outbox.pending():
                    self._send(alert)
            case LinkDown(reason=reason):
                self.last_error = reason
                log.warning("link down: %s", reason)
            case FeedbackIn(payload=payload):
                self._on_feedback(payload)
        self._resend_due()
        self._refresh_light()

    def _on_press(self, at: float) -> None:
        if at - self._last_edge < self.config.debounce:
            return  # a bounce of the same press
        self._last_edge = at
        alert = self.outbox.add(self.config.device_id, AlertKind.PANIC)
        if self.outbox.fault:
            self.last_error = self.outbox.fault
            log.error("%s; alert %s kept in memory only", self.outbox.fault, alert.alert_id)
        self._latest = alert.alert_id
        log.info("press: alert %s seq %d stored", alert.alert_id, alert.seq)
        self._send(alert)

    def _send(self, alert: Alert) -> None:
        self.link.publish_alert(alert)
        _, delay = self._next_resend.get(alert.alert_id, (0.0, RESEND_FIRST / 2))
        delay = min(delay * 2, self.config.resend_max)
        self._next_resend[alert.alert_id] = (time.monotonic() + delay, delay)

    def _resend_due(self) -> None:
        if not self.link.connected:
            return
        now = time.monotonic()
        for alert in self.outbox.pending():
            due, _ = self._next_resend.get(alert.alert_id, (0.0, 0.0))
            if due <= now:
                self._send(alert)

    def _on_feedback(self, payload: bytes) -> None:
        try:
            fb = Feedback.from_json(payload)
        except WireError as exc:
            log.error("ignored feedback from the server: %s", exc)
            return
        if self.outbox.confirm(fb.alert_id):
            log.info("alert %s confirmed by the server (incident %d)", fb.alert_id, fb.incident)
        self._next_resend.pop(fb.alert_id, None)
        known = self._states.get(fb.alert_id)
        # Redelivered or retained feedback can arrive out of order: never step back.
        if known is None or _ORDER[fb.state] > _ORDER[known]:
            self._states[fb.alert_id] = fb.state
        if self._latest is None:
            self._latest = fb.alert_id  # after a reboot: the retained feedback tells the state

    def _light(self) -> Light:
        latest = self._states.get(self._latest) if self._latest else None
        if latest is FeedbackState.ACKNOWLEDGED:
            return Light.HELP_COMING
        if latest is FeedbackState.RECEIVED:
            return Light.RECEIVED
        if not self.link.connected:
            return Light.NO_LINK
        if self.outbox.depth():
            return Light.SENT
        if self.outbox.fault:
            return Light.FAULT
        return Light.ARMED

    def _refresh_light(self) -> None:
        light = self._light()
        if self.indicator.show(light):
            log.info("light: %s", light)
            if self._on_light is not None:
                self._on_light(light)
