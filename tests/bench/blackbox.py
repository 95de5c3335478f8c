"""Press -> 'received' and press -> first SMS request, black box: the server as deployed.

The server runs as its own process (``python -m panicbutton.cli server``,
:class:`tests.processes.ServerProcess`), configured only by ``PANICBUTTON_*``
variables and a site file, against a real Mosquitto (passwords, ACL, no Nagle
delay) and the fake Twilio in the bench process. Nothing of the server is wrapped
or probed: only what a unit and Twilio see is timed.

Each alert comes from a unit of its own (its own broker user, a plain paho client
whose socket has no Nagle delay, as a room unit's link sets it), one at a time:
the unit connects, subscribes to its feedback topic, publishes its alert (QoS 1)
and waits for the 'received' feedback; the bench waits for the incident's two SMS
requests (step 0 pages the two people on duty), then a short quiet gap. A "press"
here is the unit's ``publish()`` of its alert: the unit's own part (outbox
commit, thread hand-off) is part 3's press -> publish.

The floor runs in the same run, interleaved (floor alert i right after app alert
i, so both see the same machine load): a second Mosquitto of the same
configuration and :mod:`tests.bench.floor_child` as its own process, which
answers each alert with the feedback at once and makes one Twilio-style request.

Times are ``time.monotonic()`` in the bench process: the unit's paho thread notes
the feedback's arrival, the fake Twilio the request's.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from demo.broker import free_port
from panicbutton.sockets import no_delay
from panicbutton.wire import (
    QOS,
    Alert,
    Feedback,
    FeedbackState,
    LinkState,
    Status,
    alert_topic,
    feedback_topic,
    new_alert_id,
    now_utc,
    status_topic,
)
from tests.bench.figures import pair
from tests.bench.floor import close, connect, subscribe
from tests.bench.latency import at_least
from tests.bench.stats import SUMMARY_HEADERS, Summary, ratio_table, table
from tests.fakes.twilio import FakeTwilio
from tests.harness import FLOOR, MANAGER, MONITOR, RECEPTION, Broker, start_mosquitto, wait_until
from tests.processes import ServerProcess, server_env

REPO = Path(__file__).resolve().parents[2]
WARMUP = 10
#: Quiet seconds after each alert (app and floor), before the unit disconnects.
GAP = 0.1
#: Seconds between a unit's SUBACK and its alert, so the connection's own traffic is over.
SETTLE = 0.03
TIMEOUT = 15.0
#: Step 0 pages the two people on duty by SMS.
ON_DUTY_SMS = 2

SITE_HEAD = f"""\
[site]
name = "Bench house"
timezone = "Europe/Brussels"

[[staff]]
id = "reception"
name = "Reception"
phone = "{RECEPTION}"
language = "en"

[[staff]]
id = "floor"
name = "Floor"
phone = "{FLOOR}"
language = "nl"

[[staff]]
id = "manager"
name = "Manager"
phone = "{MANAGER}"
language = "fr"
role = "manager"

[duty]
on_duty = ["reception", "floor"]

[escalation]
steps = [
  {{after = 0, who = "on_duty", channels = ["sms"]}},
  {{after = 3600, who = "all_staff", channels = ["sms"]}},
]
repeat_every = 3600
"""


def site_toml(units: list[str]) -> str:
    """A site with one room per unit; step 0 pages the two on duty by SMS, and no later
    step comes within the run."""
    rooms = "".join(
        f'\n[[rooms]]\nid = "room-{i}"\nlabel = "Room {i}"\ndevice = "{unit}"\n'
        for i, unit in enumerate(units, 1)
    )
    return SITE_HEAD + rooms


@dataclass
class BlackboxRun:
    """Seconds from each alert's publish, measured alerts only."""

    warmup: int = WARMUP
    app_received: list[float] = field(default_factory=list)
    app_sms: list[float] = field(default_factory=list)
    floor_received: list[float] = field(default_factory=list)
    floor_sms: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """Summaries and samples, in milliseconds, for the bench's JSON report."""
        return {
            "title": "9. Black box: the server as its own process",
            "warmup": self.warmup,
            "pairs": {
                "press -> received": pair(self.app_received, self.floor_received, samples=True),
                "press -> first SMS request": pair(self.app_sms, self.floor_sms, samples=True),
            },
        }


class Unit:
    """One room unit as a plain paho client: its own broker user, no Nagle delay."""

    def __init__(self, device: str, password: str, port: int) -> None:
        self.device = device
        self._waiting = ""
        self.received_at = 0.0
        self.received = threading.Event()
        self.client = connect(device, device, password, port)
        no_delay(self.client.socket())  # as device/link.py sets it once connected
        self.client.on_message = self._on_message
        subscribe(self.client, feedback_topic(device))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        at = time.monotonic()
        if not msg.payload:
            return
        feedback = Feedback.from_json(bytes(msg.payload))
        if feedback.alert_id == self._waiting and feedback.state is FeedbackState.RECEIVED:
            self.received_at = at
            self.received.set()

    def alert(self) -> float:
        """Publish a new alert; return ``time.monotonic()`` just before ``publish()``."""
        alert = Alert(device_id=self.device, alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
        payload = alert.to_json()
        self._waiting = alert.alert_id
        at = time.monotonic()
        self.client.publish(alert_topic(self.device), payload, qos=QOS)
        return at

    def close(self) -> None:
        """Say "offline" and disconnect, as a room unit stopping cleanly does."""
        status = Status(device_id=self.device, state=LinkState.OFFLINE, at=now_utc())
        topic = status_topic(self.device)
        info = self.client.publish(topic, status.to_json(), qos=QOS, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=2)
        close(self.client)


def one_alert(
    broker: Broker, device: str, twilio: FakeTwilio, requests: int, why: Callable[[], str]
) -> tuple[float, float]:
    """(publish -> 'received', publish -> first SMS request) of one alert from ``device``,
    which waits for ``requests`` SMS requests and then the quiet gap."""
    unit = Unit(device, broker.users[device], broker.port)
    try:
        time.sleep(SETTLE)
        before = len(twilio.sent)
        at = unit.alert()
        if not unit.received.wait(TIMEOUT):
            raise TimeoutError(
                f"bench: no 'received' for {device}'s alert within {TIMEOUT} s{why()}"
            )
        if not twilio.wait_for(at_least(before + requests), TIMEOUT):
            raise TimeoutError(
                f"bench: {device}'s alert: {len(twilio.sent) - before} of {requests} SMS "
                f"requests within {TIMEOUT} s{why()}"
            )
        first = min(s.at for s in twilio.sent[before : before + requests])
        time.sleep(GAP)
        return unit.received_at - at, first - at
    finally:
        unit.close()


def fake_twilio(stack: ExitStack, **settings: Any) -> FakeTwilio:
    """A fake Twilio with credentials of its own, started, and stopped with ``stack``
    (``settings``: its own, such as ``sender_rate=0``: Twilio queues a sender's excess
    rather than refusing it)."""
    twilio = FakeTwilio(
        account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16), **settings
    ).start()
    stack.callback(twilio.stop)
    return twilio


@contextmanager
def server_process(
    broker: Broker,
    twilio: FakeTwilio,
    database_url: str,
    folder: Path,
    units: list[str],
    env: dict[str, str] | None = None,
    *,
    bundling: bool = False,
) -> Iterator[ServerProcess]:
    """The server as its own process, connected to ``broker``; stopped afterwards.
    ``env``: settings of its own (``PANICBUTTON_*``) over the bench's; ``bundling``: at
    the default windows (a storm), else off."""
    site_file = folder / "site.toml"
    site_file.write_text(site_toml(units))
    settings = server_env(
        broker=broker, twilio=twilio, database_url=database_url, site_file=site_file
    )
    # As deployed: the SMS carries a signed acknowledgement link.
    settings["PANICBUTTON_LINK_SECRET"] = secrets.token_urlsafe(32)
    if not bundling:
        # Bundling off, as in parts 1, 4, 7 and 8: no page waits for a bundle.
        settings.update(
            {"PANICBUTTON_SMS_BUNDLE_WINDOW": "0", "PANICBUTTON_CALL_BUNDLE_WINDOW": "0"}
        )
    settings.update(env or {})
    server = ServerProcess(settings, free_port(), folder)
    try:
        # A thousand rooms to import, on a machine the bench keeps busy: more than 30 s.
        server.start(within=120)
        if not wait_until(server.connected, TIMEOUT):
            raise TimeoutError(f"bench: the server did not connect to the broker:\n{server.log()}")
        yield server
    finally:
        server.stop()


@contextmanager
def floor_process(broker: Broker, twilio: FakeTwilio, folder: Path) -> Iterator[None]:
    """:mod:`tests.bench.floor_child` subscribed on ``broker``; terminated afterwards."""
    errors = folder / "floor.err"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.floor_child"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        config = {
            "port": broker.port,
            "user": MONITOR,
            "password": broker.users[MONITOR],
            "twilio_url": twilio.base_url,
            "sid": twilio.account_sid,
            "token": twilio.auth_token,
            "to": RECEPTION,
            "from": "+32460000000",
        }
        proc.stdin.write(json.dumps(config) + "\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"bench: the floor responder did not start: {errors.read_text()}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure_blackbox(
    folder: Path,
    database_url: str,
    presses: int,
    *,
    warmup: int = WARMUP,
    progress: Callable[[str], None] | None = None,
) -> BlackboxRun:
    """``warmup`` + ``presses`` alerts from as many units, each followed by a floor alert."""
    units = [f"unit-{i}" for i in range(1, warmup + presses + 1)]
    run = BlackboxRun(warmup=warmup)
    with ExitStack() as stack:
        broker = stack.enter_context(start_mosquitto(folder / "mosquitto", devices=units))
        floor_broker = stack.enter_context(start_mosquitto(folder / "floor", devices=units))
        # Twilio queues a sender's excess rather than refusing it (see parts 1/4/7/8).
        twilio = fake_twilio(stack, sender_rate=0.0)
        server = stack.enter_context(server_process(broker, twilio, database_url, folder, units))
        stack.enter_context(floor_process(floor_broker, twilio, folder))

        def server_log() -> str:
            return f"; the server's log ends:\n{server.log(3000)}"

        def floor_log() -> str:
            return f"; the floor responder's errors: {(folder / 'floor.err').read_text()!r}"

        for i, device in enumerate(units):
            app = one_alert(broker, device, twilio, ON_DUTY_SMS, server_log)
            floor = one_alert(floor_broker, device, twilio, 1, floor_log)
            if i >= warmup:
                run.app_received.append(app[0])
                run.app_sms.append(app[1])
                run.floor_received.append(floor[0])
                run.floor_sms.append(floor[1])
            if progress is not None and (i + 1) % 50 == 0:
                progress(f"blackbox: {i + 1}/{len(units)} alerts")
    return run


def blackbox_report(run: BlackboxRun, db: str) -> list[str]:
    """Part 9 of the report, as lines."""
    received = Summary.of(run.app_received), Summary.of(run.floor_received)
    sms = Summary.of(run.app_sms), Summary.of(run.floor_sms)
    return [
        "",
        f"9. Press -> 'received' and -> first SMS request, black box (server on {db}, as its",
        "   own process: python -m panicbutton.cli server, configured by PANICBUTTON_*",
        "   variables and a site file, unprobed). Each alert from a unit of its own (a paho",
        "   client, its own broker user, TCP_NODELAY), one at a time; a press here is the",
        "   unit's publish() of its alert (QoS 1). 'received': that feedback at the unit;",
        "   SMS: the fake Twilio's receipt of the first of the two on-duty Messages.json",
        "   requests. Floor, interleaved (floor alert i right after app alert i): a second",
        "   Mosquitto of the same config and a responder process that publishes the feedback",
        "   at once and hands one twilio-library request to a worker thread. Real Mosquitto",
        "   with passwords + ACL and set_tcp_nodelay; bundling off; fake Twilio's per-sender",
        f"   rate off. {run.warmup} warm-up alerts not counted. In ms:",
        "",
        table(
            SUMMARY_HEADERS,
            [
                received[0].row("press -> 'received' at the unit"),
                received[1].row("floor: publish -> 'received'"),
            ],
        ),
        "",
        ratio_table(*received),
        "",
        table(
            SUMMARY_HEADERS,
            [
                sms[0].row("press -> first SMS request"),
                sms[1].row("floor: publish -> SMS request"),
            ],
        ),
        "",
        ratio_table(*sms),
    ]
