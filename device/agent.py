"""The room unit agent: one thread owns the outbox, the press detector and the light.

Path of a press: gpiozero's callback (on gpiozero's thread) puts an
:class:`Edge` on the queue -> :class:`~device.press.PressDetector` decides it
is an alarm -> :mod:`device.outbox` stores it on disk -> :mod:`device.link`
publishes it (and :mod:`device.https` posts it too when the broker has been out
of reach for a while) -> the light says "sent". The server's feedback confirms
it; ``acknowledged`` turns the light steady ("help is coming").

Nothing at the unit cancels an alert. A press while this room's alert is still
open is a re-press of it (counted, and sent again), not a new incident.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero import LED, Button, Buzzer, Factory

from device.config import DeviceConfig
from device.https import HttpsSender
from device.indicator import Indicator, Light
from device.link import FeedbackIn, Link, LinkDown, LinkUp
from device.outbox import Outbox
from device.press import PressConfig, PressDetector
from device.systemd import notify, watchdog_interval
from panicbutton.clock import Clock, SystemClock
from panicbutton.wire import Alert, AlertKind, Feedback, FeedbackState, WireError

log = logging.getLogger(__name__)

_ORDER = {FeedbackState.RECEIVED: 1, FeedbackState.ACKNOWLEDGED: 2, FeedbackState.RESOLVED: 3}


def _rank(fb: Feedback) -> tuple[int, int]:
    """Where a feedback stands: by round (a reopened incident), then by state."""
    return fb.round, _ORDER[fb.state]


#: First resend of an unconfirmed alert after this many seconds; doubles up to resend_max.
RESEND_FIRST = 2.0
#: The longest the agent's loop sleeps, in seconds (it also feeds the systemd watchdog).
TICK = 0.5


@dataclass(frozen=True, slots=True)
class Edge:
    pressed: bool
    at: float  # the agent's clock.monotonic()


@dataclass(frozen=True, slots=True)
class TestEdge:
    pressed: bool
    at: float


@dataclass(frozen=True, slots=True)
class TestRequested:
    scheduled: bool = False


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


@dataclass(frozen=True, slots=True)
class _Turn:
    """Set once the agent's thread has handled every event queued before this one."""

    done: threading.Event


class Agent:
    """A room unit: a button, a light, an outbox and one or two paths to the server.

    ``pin_factory`` is gpiozero's (``MockFactory()`` in tests and ``--simulate``;
    None picks the board's own). ``on_light`` is called on the agent's thread
    with each new light state. ``clock`` times resends, the HTTPS fallback,
    heartbeats, gestures and self-tests (defaults to the real clocks; a test
    passes a :class:`panicbutton.clock.ManualClock`).
    """

    def __init__(
        self,
        config: DeviceConfig,
        *,
        pin_factory: Factory | None = None,
        on_light: Callable[[Light], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._clock: Clock = clock or SystemClock()
        self.started = self._clock.monotonic()
        self._events: queue.Queue[Any] = queue.Queue()
        self._on_light = on_light
        self.detector = PressDetector(config.press)
        # The test button is debounced like the alarm button, single press.
        self._test_detector = PressDetector(PressConfig(debounce=config.press.debounce))
        self.outbox = Outbox(config.outbox_path, clock=self._clock)
        self.link = Link(config, self._events, clock=self._clock)
        self.https = (
            HttpsSender(config.https, config.device_id, self._events) if config.https else None
        )
        self._devices: list[Any] = []
        try:
            self.button = self._own(
                Button(config.button_pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
            )
            self.button.when_pressed = self._on_edge(Edge, pressed=True)
            self.button.when_released = self._on_edge(Edge, pressed=False)
            if config.test_pin is not None:
                test = self._own(
                    Button(config.test_pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
                )
                test.when_pressed = self._on_edge(TestEdge, pressed=True)
                test.when_released = self._on_edge(TestEdge, pressed=False)
            self.indicator = Indicator(self._own(LED(config.led_pin, pin_factory=pin_factory)))
            self.buzzer = (
                self._own(Buzzer(config.buzzer_pin, pin_factory=pin_factory))
                if config.buzzer_pin is not None
                else None
            )
        except Exception:
            self._close_devices()
            raise
        self._latest: str | None = None  # the alert the light speaks about
        self._states: dict[str, Feedback] = {}  # alert id -> the newest feedback heard
        self._resend: dict[str, tuple[float, float]] = {}  # alert id -> (due, delay)
        self._down_since: float | None = self._clock.monotonic()
        self._next_https = 0.0
        self._first_sent: dict[str, float] = {}  # alert id -> when first sent (monotonic)
        self._next_heartbeat = 0.0
        self._selftest_file = config.state_dir / "selftest.last"
        self.last_error: str | None = self.outbox.fault
        self._thread = threading.Thread(
            target=self._run, name=f"agent-{config.device_id}", daemon=True
        )

    def _on_edge(self, kind: type[Edge | TestEdge], *, pressed: bool) -> Callable[[], None]:
        """A gpiozero callback (on gpiozero's thread) that queues the edge, timed now."""
        return lambda: self._events.put(kind(pressed, self._clock.monotonic()))

    def _own(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    def _close_devices(self) -> None:
        for device in reversed(self._devices):
            device.close()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        open_alert = self.outbox.open_alert()
        if open_alert is not None:
            self._latest = open_alert.alert_id
        if pending := self.outbox.pending():
            log.warning("%d unconfirmed alert(s) in the outbox; resending", len(pending))
        self._refresh_light()
        self.link.start()
        self._thread.start()
        notify("READY=1")

    def close(self) -> None:
        if self._thread.is_alive():
            self._events.put(_Stop())
            self._thread.join(timeout=5)
        self.link.stop(self.outbox.depth())
        if self.https is not None:
            self.https.close()
        self._close_devices()
        self.outbox.shutdown()

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until the agent's thread has handled every event queued before this call
        and done its timed work (resends, heartbeat, light) at the clock's current time;
        False if it did not within ``timeout`` real seconds (or is not running)."""
        if not self.running:
            return False
        turn = _Turn(threading.Event())
        self._events.put(turn)
        return turn.done.wait(timeout)

    def request_test(self) -> None:
        """Send a test alert through the whole chain (test button, ``device check``)."""
        self._events.put(TestRequested())

    # -- the owner thread --------------------------------------------------------
    def _run(self) -> None:
        watchdog = watchdog_interval()
        while True:
            now = self._clock.monotonic()
            deadline = self.detector.next_deadline()
            timeout = TICK if deadline is None else min(TICK, max(0.0, deadline - now))
            event = self._clock.get(self._events, timeout)
            if isinstance(event, _Stop):
                return
            try:
                self._handle(event)
                self._periodic(self._clock.monotonic())
            except Exception:  # a bug must not stop the agent from alerting
                log.exception("agent event %r failed", event)
            if isinstance(event, _Turn):
                event.done.set()
            if watchdog is not None:
                notify("WATCHDOG=1")

    def _handle(self, event: object) -> None:
        match event:
            case Edge(pressed=pressed, at=at):
                if self.detector.edge(pressed, at):
                    self._alarm()
            case TestEdge(pressed=pressed, at=at):
                if self._test_detector.edge(pressed, at):
                    self._test(scheduled=False)
            case TestRequested(scheduled=scheduled):
                self._test(scheduled=scheduled)
            case LinkUp():
                log.info("connected to %s:%d", self.config.mqtt.host, self.config.mqtt.port)
                self._down_since = None
                self._next_heartbeat = 0.0
                for alert in self.outbox.pending():
                    self._send(alert)
                # The open alert again, even if confirmed: the server answers with where
                # it stands now, so a "resolved" missed while away is not missed for good.
                current = self.outbox.open_alert()
                if current is not None and current.alert_id not in {
                    a.alert_id for a in self.outbox.pending()
                }:
                    self.link.publish_alert(current)
            case LinkDown(reason=reason, path=path):
                self.last_error = reason
                log.warning("%s", reason)
                if path == "mqtt" and self._down_since is None:
                    self._down_since = self._clock.monotonic()
            case FeedbackIn(payload=payload, via=via):
                self._on_feedback(payload, via)

    def _periodic(self, now: float) -> None:
        if self.detector.tick(now):
            self._alarm()
        self._test_detector.tick(now)
        self._resend_due(now)
        self._https_due(now)
        self._heartbeat_due(now)
        self._selftest_due()
        self._refresh_light()

    # -- alarms ------------------------------------------------------------------
    def _alarm(self) -> None:
        current = self.outbox.open_alert()
        alert = None
        if current is not None and current.kind is AlertKind.PANIC:
            alert = self.outbox.repress(current.alert_id)
        if alert is None:
            alert = self.outbox.add(self.config.device_id, AlertKind.PANIC)
        self._note_fault()
        self._latest = alert.alert_id
        log.info(
            "press: alert %s seq %d presses %d stored", alert.alert_id, alert.seq, alert.presses
        )
        self._resend.pop(alert.alert_id, None)
        self._send(alert)

    def _test(self, *, scheduled: bool) -> None:
        alert = self.outbox.add(self.config.device_id, AlertKind.TEST)
        self._note_fault()
        # The person testing watches the light; a scheduled test is silent, and a
        # test never takes the light away from an open panic alert.
        if not scheduled and self.outbox.open_alert() is None:
            self._latest = alert.alert_id
        log.info("test alert %s (%s)", alert.alert_id, "scheduled" if scheduled else "by hand")
        self._send(alert)

    def _note_fault(self) -> None:
        if self.outbox.fault:
            self.last_error = self.outbox.fault

    def _send(self, alert: Alert) -> None:
        self._first_sent.setdefault(alert.alert_id, self._clock.monotonic())
        self.link.publish_alert(alert)
        _, delay = self._resend.get(alert.alert_id, (0.0, RESEND_FIRST / 2))
        delay = min(delay * 2, self.config.resend_max)
        self._resend[alert.alert_id] = (self._clock.monotonic() + delay, delay)
        self._https_due(self._clock.monotonic())

    def _resend_due(self, now: float) -> None:
        if not self.link.connected:
            return
        for alert in self.outbox.pending():
            due, _ = self._resend.get(alert.alert_id, (0.0, 0.0))
            if due <= now:
                self._send(alert)

    def _https_due(self, now: float) -> None:
        """Use the second path when an alert has waited ``after`` seconds for the server:
        the broker out of reach, or reachable but nobody confirming."""
        if self.https is None or self.https.busy or now < self._next_https:
            return
        after = self.https_after
        waiting = [
            a for a in self.outbox.pending() if now - self._first_sent.get(a.alert_id, now) >= after
        ]
        if not waiting:
            return
        self._next_https = now + after
        for alert in waiting:
            log.warning(
                "alert %s unconfirmed for %.0f s (%s): sending it over HTTPS too",
                alert.alert_id,
                now - self._first_sent[alert.alert_id],
                "broker out of reach" if self._down_since is not None else "no answer",
            )
            self.https.submit(alert)

    @property
    def https_after(self) -> float:
        return self.config.https.after if self.config.https is not None else float("inf")

    def _heartbeat_due(self, now: float) -> None:
        if not self.link.connected or now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.config.heartbeat
        self.link.publish_status(
            outbox=self.outbox.depth(), uptime=int(now - self.started), error=self.last_error or ""
        )

    def _selftest_due(self) -> None:
        if not self.config.selftest_hours:
            return
        now = self._clock.time()
        try:
            last = float(self._selftest_file.read_text())
        except (OSError, ValueError):
            last = None
        if last is not None and now - last < self.config.selftest_hours * 3600:
            return
        try:
            self._selftest_file.write_text(f"{now:.0f}")
        except OSError as exc:
            self.last_error = f"cannot record the self-test time: {exc.strerror}"
            return
        if last is not None:  # the first start only sets the schedule
            self._test(scheduled=True)

    # -- feedback and the light -------------------------------------------------------
    def _on_feedback(self, payload: bytes, via: str) -> None:
        try:
            fb = Feedback.from_json(payload)
        except WireError as exc:
            log.error("ignored feedback from the server (%s): %s", via, exc)
            return
        if self.outbox.confirm(fb.alert_id, fb.presses):
            log.info(
                "alert %s confirmed by the server via %s (incident %d)",
                fb.alert_id,
                via,
                fb.incident,
            )
            self._resend.pop(fb.alert_id, None)
            self._first_sent.pop(fb.alert_id, None)
        known = self._states.get(fb.alert_id)
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
        self._states[fb.alert_id] = fb
        if fb.state is FeedbackState.RESOLVED:
            if not self.outbox.close(fb.alert_id, fb.presses):
                log.warning(
                    "alert %s resolved after %d press(es); this unit has more: still "
                    "sending it (the server reopens the incident for it)",
                    fb.alert_id,
                    fb.presses,
                )
        elif self.outbox.reopen(fb.alert_id, fb.presses):
            # NOTE: after a reboot no round is known here, but the broker sends only the
            # retained (newest) feedback to a clean session: open at the server is open.
            log.warning(
                "alert %s reopened by the server (incident %d, round %d): a press now is "
                "a re-press of it",
                fb.alert_id,
                fb.incident,
                fb.round,
            )
            current = self.outbox.open_alert()
            if current is not None and current.alert_id == fb.alert_id:
                self._latest = fb.alert_id
        if self._latest is None and not self.outbox.is_test(fb.alert_id):
            self._latest = fb.alert_id  # after a reboot: the retained feedback tells the state

    def _light(self) -> Light:
        heard = self._states.get(self._latest) if self._latest else None
        latest = heard.state if heard is not None else None
        pending = self._latest is not None and any(
            a.alert_id == self._latest for a in self.outbox.pending()
        )
        if latest is FeedbackState.ACKNOWLEDGED:
            return Light.HELP_COMING  # help is on its way whatever the link does now
        if latest is FeedbackState.RECEIVED:
            # A re-press the server has not had yet, with no link: say so.
            return Light.NO_LINK if pending and not self.link.connected else Light.RECEIVED
        if pending:
            return Light.SENT if self.link.connected else Light.NO_LINK
        if not self.link.connected:
            return Light.NO_LINK
        if self.outbox.fault:
            return Light.FAULT
        return Light.ARMED

    def _refresh_light(self) -> None:
        light = self._light()
        if self.indicator.show(light):
            log.info("light: %s", light)
            if self.buzzer is not None and light in (Light.NO_LINK, Light.FAULT):
                # Technical faults only: the alarm itself stays silent in the room.
                self.buzzer.beep(on_time=0.1, off_time=0.1, n=2)
            if self._on_light is not None:
                self._on_light(light)
