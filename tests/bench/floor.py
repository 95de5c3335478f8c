"""The floor: the same hops as a press, with no application logic in between.

paho publisher --QoS 1--> the same Mosquitto --QoS 1--> paho subscriber (another
client, same process) --> one POST with the twilio library's HTTP client
(``TwilioHttpClient``, as the server uses it) to the same fake Twilio
Messages.json --> time of receipt there. The subscriber posts straight from its
``on_message`` callback.

The server must be stopped first: the floor publishes on a room unit's alert
topic (the broker's ACL allows nothing else), which the server would ingest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from twilio.http.http_client import TwilioHttpClient

from panicbutton.wire import QOS, Alert, alert_topic, new_alert_id, now_utc
from server.units.broker import SERVER_USER
from tests.bench.latency import GAP, TIMEOUT, at_least
from tests.harness import MONITOR, RECEPTION, System

DEVICE = "unit-3"

#: (label, from mark, to mark)
STAGES: tuple[tuple[str, str, str], ...] = (
    ("MQTT: publish() -> subscriber on_message", "publish", "on_message"),
    ("twilio HTTP client -> fake Twilio receipt", "on_message", "twilio.receipt"),
)


@dataclass
class FloorRun:
    totals: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    warmup: int = 0


def connect(client_id: str, username: str, password: str, port: int) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.username_pw_set(username, password)
    connected = threading.Event()

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not reason.is_failure:
            connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not connected.wait(TIMEOUT):
        client.loop_stop()
        raise TimeoutError(f"bench: {client_id} could not connect to the broker as {username}")
    return client


def subscribe(client: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *args: done.set()
    client.subscribe(topic, qos=QOS)
    if not done.wait(TIMEOUT):
        raise TimeoutError(f"bench: no SUBACK for {topic}")


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def measure_floor(
    system: System,
    iterations: int,
    *,
    warmup: int = 3,
    progress: Callable[[str], None] | None = None,
) -> FloorRun:
    twilio = system.twilio
    url = f"{twilio.base_url}/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    http = TwilioHttpClient(timeout=10)
    form = {
        "To": RECEPTION,
        "From": system.settings.twilio_from,
        "ValidityPeriod": "300",
        "Body": "ALARM Room 3 at 12:00. Reply 1 if you are going.",
    }
    received: list[float] = []
    posted = threading.Event()
    errors: list[str] = []

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received.append(time.monotonic())
        try:
            response = http.request(
                "POST", url, data=dict(form), auth=(twilio.account_sid, twilio.auth_token)
            )
            if response.status_code != 201:
                errors.append(f"fake Twilio answered {response.status_code}")
        except Exception as exc:  # noqa: BLE001 -- reported below, the bench goes on
            errors.append(repr(exc))
        posted.set()

    sub = connect("bench-floor-sub", MONITOR, system.users[MONITOR], system.mqtt_port)
    pub = connect("bench-floor-pub", DEVICE, system.users[DEVICE], system.mqtt_port)
    run = FloorRun(warmup=warmup, stages={label: [] for label, _, _ in STAGES})
    try:
        sub.on_message = on_message
        subscribe(sub, alert_topic(DEVICE))
        for i in range(warmup + iterations):
            payload = Alert(
                device_id=DEVICE, alert_id=new_alert_id(), seq=i + 1, pressed_at=now_utc()
            ).to_json()
            before = len(twilio.sent)
            received.clear()
            posted.clear()
            at = time.monotonic()
            pub.publish(alert_topic(DEVICE), payload, qos=QOS)
            if not twilio.wait_for(at_least(before + 1), TIMEOUT) or not posted.wait(TIMEOUT):
                raise TimeoutError(
                    f"bench: floor message {i + 1} did not reach fake Twilio "
                    f"({'; '.join(errors) or 'no error seen'})"
                )
            receipt = twilio.sent[before].at
            if i >= warmup:
                run.totals.append(receipt - at)
                seen = {"publish": at, "on_message": received[0], "twilio.receipt": receipt}
                for label, start, end in STAGES:
                    run.stages[label].append(seen[end] - seen[start])
            time.sleep(GAP)
            if progress is not None and (i + 1) % 50 == 0:
                progress(f"floor: {i + 1}/{warmup + iterations}")
    finally:
        close(pub)
        close(sub)
        # The floor published on a unit's alert topic while the server was stopped:
        # the broker queued those for the server's persistent session. A clean
        # session under the server's user name (its client id) drops them, so a
        # later server does not take them for alarms.
        close(connect("drop-queued", SERVER_USER, system.users[SERVER_USER], system.mqtt_port))
    if errors:
        raise RuntimeError(f"bench: floor POSTs failed: {errors[:3]}")
    return run
