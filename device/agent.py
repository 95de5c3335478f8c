"""The room unit agent: one thread owns the outbox, the press detector and the light.

Path of a press: gpiozero's callback (on gpiozero's thread) puts an
:class:`Edge` on the queue -> :class:`~device.press.PressDetector` decides it
is an alarm -> :mod:`device.outbox` stores it on disk -> :mod:`device.delivery`
publishes it through :mod:`device.link` (and posts it through :mod:`device.https`
too when the server has not answered for a while) -> the light says "sent".
The server's feedback (:mod:`device.standing`) confirms it; ``acknowledged``
turns the light steady ("help is coming").

(Just over 300 lines: the agent's one thread and the events it takes; each job
it hands on is a module of its own, named above.)

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
from device.delivery import Delivery
from device.https import HttpsSender
from device.indicator import Indicator, Light
from device.link import FeedbackIn, Link, LinkDown, LinkEvent, LinkUp, Via
from device.outbox import Outbox
from device.press import PressConfig, PressDetector
from device.selftest import SelfTestSchedule
from device.standing import Standing
from device.systemd import notify, watchdog_interval
from panicbutton.clock import Clock, SystemClock
from panicbutton.wire import AlertKind

log = logging.getLogger(__name__)

#: The longest the agent's loop sleeps, in seconds (it also feeds the systemd watchdog).
TICK = 0.5


@dataclass(frozen=True, slots=True)
class Edge:
    """The alarm button's pin changed (on gpiozero's thread)."""

    pressed: bool
    at: float  # the agent's clock.monotonic()


@dataclass(frozen=True, slots=True)
class TestEdge:
    """The test button's pin changed."""

    pressed: bool
    at: float


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


@dataclass(frozen=True, slots=True)
class _Turn:
    """Set once the agent's thread has handled every event queued before this one."""

    done: threading.Event


#: Everything the agent's thread is handed.
Event = Edge | TestEdge | LinkEvent | _Stop | _Turn


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
        self._events: queue.Queue[Event] = queue.Queue()
        self._on_light = on_light
        self.detector = PressDetector(config.press)
        # The test button is debounced like the alarm button, single press.
        self._test_detector = PressDetector(PressConfig(debounce=config.press.debounce))
        self.outbox = Outbox(config.outbox_path, clock=self._clock)
        self.link = Link(config, self._events.put, clock=self._clock)
        self.https = (
            HttpsSender(config.https, config.device_id, self._events.put) if config.https else None
        )
        self._delivery = Delivery(
            outbox=self.outbox,
            link=self.link,
            https=self.https,
            https_after=config.https.after if config.https is not None else float("inf"),
            resend_max=config.resend_max,
            clock=self._clock,
        )
        self._standing = Standing(self.outbox, self._delivery)
        self._selftest = SelfTestSchedule(
            config.state_dir / "selftest.last", config.selftest_hours, self._clock
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
        self._next_heartbeat = 0.0
        self.last_error: str | None = self.outbox.fault
        # The last failure said in the journal for each path: a path retrying with
        # the same cause is said once, again when the cause changes or after the
        # path has worked in between.
        self._said_down: dict[Via, str] = {}
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
            self._standing.latest = open_alert.alert_id
        if pending := self.outbox.pending():
            log.warning("%d unconfirmed alert(s) in the outbox; resending", len(pending))
        self._refresh_light()
        self.link.start()
        self._thread.start()  # it tells systemd it is ready, then feeds the watchdog

    def close(self) -> None:
        if self._thread.is_alive():
            self._events.put(_Stop())
            self._thread.join(timeout=5)
        self.link.stop(self.outbox.depth(), uptime=self.uptime)
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
    def uptime(self) -> int:
        """Seconds since the agent was made, by its clock."""
        return int(self._clock.monotonic() - self.started)

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

    # -- the owner thread --------------------------------------------------------
    def _run(self) -> None:
        watchdog = watchdog_interval()
        # From this thread, before its first watchdog ping (from start(), after the
        # thread began, a ping could come first).
        notify("READY=1")
        while True:
            now = self._clock.monotonic()
            deadline = self.detector.next_deadline()
            timeout = TICK if deadline is None else min(TICK, max(0.0, deadline - now))
            event: Event | None = self._clock.get(self._events, timeout)
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

    def _handle(self, event: Event | None) -> None:
        match event:
            case Edge(pressed=pressed, at=at):
                if self.detector.edge(pressed, at):
                    self._alarm()
            case TestEdge(pressed=pressed, at=at):
                if self._test_detector.edge(pressed, at):
                    self._test(scheduled=False)
            case LinkUp():
                log.info("connected to %s:%d", self.config.mqtt.host, self.config.mqtt.port)
                self._next_heartbeat = 0.0
                self._said_down.pop(Via.MQTT, None)
                self._delivery.link_up()
            case LinkDown(reason=reason, path=path):
                self.last_error = reason
                if self._said_down.get(path) == reason:
                    log.debug("%s", reason)
                else:
                    self._said_down[path] = reason
                    log.warning("%s", reason)
                if path is Via.MQTT:
                    self._delivery.link_down()
            case FeedbackIn(payload=payload, via=via):
                self._said_down.pop(via, None)
                self._standing.take(payload, via)

    def _periodic(self, now: float) -> None:
        if self.detector.tick(now):
            self._alarm()
        self._test_detector.tick(now)
        self._delivery.due(now)
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
        self._standing.latest = alert.alert_id
        log.info(
            "press: alert %s seq %d presses %d stored", alert.alert_id, alert.seq, alert.presses
        )
        self._delivery.send(alert, anew=True)

    def _test(self, *, scheduled: bool) -> None:
        alert = self.outbox.add(self.config.device_id, AlertKind.TEST)
        self._note_fault()
        # The person testing watches the light; a scheduled test is silent, and a
        # test never takes the light away from an open panic alert.
        if not scheduled and self.outbox.open_alert() is None:
            self._standing.latest = alert.alert_id
        log.info("test alert %s (%s)", alert.alert_id, "scheduled" if scheduled else "by hand")
        self._delivery.send(alert)

    def _note_fault(self) -> None:
        if self.outbox.fault:
            self.last_error = self.outbox.fault

    def _heartbeat_due(self, now: float) -> None:
        if not self.link.connected or now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.config.heartbeat
        self.link.publish_status(
            outbox=self.outbox.depth(), uptime=self.uptime, error=self.last_error or ""
        )

    def _selftest_due(self) -> None:
        try:
            due = self._selftest.due()
        except OSError as exc:
            self.last_error = f"cannot record the self-test time: {exc.strerror}"
            return
        if due:
            self._test(scheduled=True)

    # -- the light -------------------------------------------------------------------
    def _refresh_light(self) -> None:
        light = self._standing.light(connected=self.link.connected)
        if self.indicator.show(light):
            log.info("light: %s", light)
            if self.buzzer is not None and light in (Light.NO_LINK, Light.FAULT):
                # Technical faults only: the alarm itself stays silent in the room.
                self.buzzer.beep(on_time=0.1, off_time=0.1, n=2)
            if self._on_light is not None:
                self._on_light(light)
