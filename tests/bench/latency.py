"""Press -> first SMS request, through the whole system (real Mosquitto, server, twilio library).

Each press is made by :func:`press`, which takes ``time.monotonic()`` right
before the mock button pin is driven low. The end is the time the fake Twilio
received the first of the incident's two Messages requests (``Sent.at``, same
process, same clock).

Where time goes is read from stage marks: the bench wraps a few methods of the
live objects (agent, ingest, pager, notifier) so each records when it was first
entered or left during a press. Nothing in the application is changed; a mark
costs about a microsecond.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpiozero.pins.mock import MockPin
from sqlalchemy import func, select

from device.indicator import Light
from panicbutton.wire import ALERT_SUBSCRIPTION
from server.models import Incident, Outcome
from tests.fakes.twilio import Sent
from tests.harness import BUTTON, DEVICES, Room, System, wait_until

#: Seconds the button is held down, and the quiet time between two presses (>= debounce).
HOLD = 0.05
GAP = 0.05
TIMEOUT = 15.0

#: (label, from mark, to mark), in path order.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("room: pin low -> agent thread decides: alarm", "press", "agent.alarm"),
    ("room: outbox commit (SQLite, synchronous=FULL)", "agent.alarm", "agent.stored"),
    ("room: stored -> paho publish() called", "agent.stored", "agent.publish"),
    ("MQTT: publish() -> server on_message", "agent.publish", "server.on_message"),
    ("server: parse + incident transaction (commit)", "server.on_message", "server.dispatch"),
    ("server: pager thread-pool hand-off", "server.dispatch", "pager.send_page"),
    ("server: claim page (transaction) + render text", "pager.send_page", "notifier.send_sms"),
    ("twilio library + HTTP -> fake Twilio receipt", "notifier.send_sms", "twilio.receipt"),
)


class Marks:
    """First time each named point was passed since :meth:`reset` (thread-safe enough:
    ``dict.setdefault`` is atomic under the GIL)."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def reset(self) -> None:
        self._at = {}

    def mark(self, name: str, at: float | None = None) -> None:
        self._at.setdefault(name, time.monotonic() if at is None else at)

    def snapshot(self) -> dict[str, float]:
        return dict(self._at)


def wrap(
    obj: object, attr: str, marks: Marks, *, before: str | None = None, after: str | None = None
) -> bool:
    """Replace ``obj.attr`` (a callable) by one that marks ``before`` / ``after`` it runs."""
    inner = getattr(obj, attr, None)
    if not callable(inner):
        return False
    call: Callable[..., Any] = inner

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            marks.mark(before)
        try:
            return call(*args, **kwargs)
        finally:
            if after is not None:
                marks.mark(after)

    setattr(obj, attr, wrapper)
    return True


def install_probes(system: System, rooms: list[Room], marks: Marks) -> list[str]:
    """Wrap the live objects; return the names of probes that could not be installed."""
    missing: list[str] = []
    for room in rooms:
        agent = room.agent
        # The agent's "this press is an alarm" step: _alarm() now, _on_press(at) before.
        alarm = "_alarm" if callable(getattr(agent, "_alarm", None)) else "_on_press"
        for obj, attr, before, after in (
            (agent, alarm, "agent.alarm", None),
            (agent.outbox, "add", None, "agent.stored"),
            (agent.link, "publish_alert", "agent.publish", None),
        ):
            if not wrap(obj, attr, marks, before=before, after=after):
                missing.append(f"{type(obj).__name__}.{attr}")
    assert system.server is not None
    pager = system.server.services.pager
    if not wrap(pager, "dispatch", marks, before="server.dispatch"):
        missing.append("Pager.dispatch")
    if not wrap(pager, "_send_page", marks, before="pager.send_page"):
        missing.append("Pager._send_page")
    notifier = getattr(pager, "_notifier", None)
    if notifier is None or not wrap(notifier, "send_sms", marks, before="notifier.send_sms"):
        missing.append("Notifier.send_sms")
    client = getattr(system.server.ingest, "_client", None)
    handler = getattr(client, "on_message", None)
    if client is None or handler is None:
        missing.append("Ingest._client.on_message")
    else:
        alert_suffix = ALERT_SUBSCRIPTION.rsplit("/", 1)[1]

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            if str(msg.topic).endswith("/" + alert_suffix):
                marks.mark("server.on_message")
            handler(c, userdata, msg)

        client.on_message = on_message
    return missing


def press(room: Room, hold: float = HOLD) -> float:
    """Press and release the room's button; return ``time.monotonic()`` just before the edge."""
    pin: MockPin = room.factory.pin(BUTTON)
    at = time.monotonic()
    pin.drive_low()
    time.sleep(hold)
    pin.drive_high()
    return at


@dataclass
class AppRun:
    totals: list[float] = field(default_factory=list)  # seconds, press -> first SMS request
    stages: dict[str, list[float]] = field(default_factory=dict)
    missing_probes: list[str] = field(default_factory=list)
    warmup: int = 0


def shows(room: Room, light: Light) -> Callable[[], bool]:
    return lambda: room.light is light


def at_least(n: int) -> Callable[[list[Sent]], bool]:
    return lambda sent: len(sent) >= n


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise TimeoutError(f"bench: timed out after {TIMEOUT} s waiting for {what}")


def resolve_latest(system: System) -> None:
    """Resolve the newest incident (a test), so the room's next press is a new alert."""
    assert system.server is not None
    system.server.services.responder.resolve(
        incident_id=_latest_incident(system), staff_id="reception", outcome=Outcome.TEST
    )


def _latest_incident(system: System) -> int:
    assert system.server is not None
    with system.server.services.sessions() as s:
        latest = s.scalar(select(func.max(Incident.id)))
    if latest is None:
        raise RuntimeError("bench: no incident was recorded")
    return int(latest)


def measure_app(
    system: System, presses: int, *, warmup: int = 3, progress: Callable[[str], None] | None = None
) -> AppRun:
    """Press rooms unit-1..3 round-robin; one incident per press, each resolved before the next."""
    assert system.server is not None
    services = system.server.services
    rooms = [system.room(d) for d in DEVICES]
    for room in rooms:
        _need(
            wait_until(shows(room, Light.ARMED), TIMEOUT),
            f"{room.agent.config.device_id} to show ARMED",
        )
    marks = Marks()
    run = AppRun(warmup=warmup, missing_probes=install_probes(system, rooms, marks))
    run.stages = {label: [] for label, _, _ in STAGES}
    twilio = system.twilio
    for i in range(warmup + presses):
        room = rooms[i % len(rooms)]
        before = len(twilio.sent)
        marks.reset()
        at = press(room)
        marks.mark("press", at)
        _need(twilio.wait_for(at_least(before + 2), TIMEOUT), "both SMS requests")
        _need(wait_until(shows(room, Light.RECEIVED), TIMEOUT), "the light to show RECEIVED")
        _need(wait_until(lambda: services.pager.backlog() == 0, TIMEOUT), "the pager to be idle")
        first = twilio.sent[before].at
        marks.mark("twilio.receipt", first)
        if i >= warmup:
            run.totals.append(first - at)
            seen = marks.snapshot()
            for label, start, end in STAGES:
                if start in seen and end in seen:
                    run.stages[label].append(seen[end] - seen[start])
        # Resolve, so every press starts from the same state: light ARMED, no open incident.
        resolve_latest(system)
        _need(
            wait_until(shows(room, Light.ARMED), TIMEOUT), "the light to show ARMED after resolve"
        )
        time.sleep(GAP)
        if progress is not None and (i + 1) % 25 == 0:
            progress(f"app: {i + 1}/{warmup + presses} presses")
    for room in rooms:
        room.agent.close()
    system.rooms.clear()
    return run
