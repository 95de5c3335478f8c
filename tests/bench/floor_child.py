"""The black-box floor's responder, in a process of its own as the server is.

Run as ``python -m tests.bench.floor_child`` by :mod:`tests.bench.blackbox`, with
one JSON line on stdin (broker port, user and password; the fake Twilio's URL,
account SID and token: kept off the command line, where ``ps`` would show them).
It takes the same hops as the server with no application logic: subscribed (QoS 1)
to every unit's alert topic, it parses each alert, publishes a ``received``
feedback (QoS 1, retained, as the server does for a panic alert) at once, and hands
one Messages.json request with the twilio library's HTTP client to a worker thread,
as the server hands pages to its pager. Its socket has no Nagle delay, as the
server's has. It prints ``ready`` once subscribed, and runs until terminated.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from twilio.http.http_client import TwilioHttpClient

from panicbutton.sockets import no_delay
from panicbutton.wire import (
    ALERT_SUBSCRIPTION,
    QOS,
    Alert,
    Feedback,
    FeedbackState,
    feedback_topic,
    now_utc,
)


def main() -> int:
    config = json.loads(sys.stdin.readline())
    url = f"{config['twilio_url']}/2010-04-01/Accounts/{config['sid']}/Messages.json"
    auth = (config["sid"], config["token"])
    http = TwilioHttpClient(timeout=10)
    work: queue.Queue[str] = queue.Queue()

    def poster() -> None:
        while True:
            device = work.get()
            try:
                http.request(
                    "POST",
                    url,
                    data={
                        "To": config["to"],
                        "From": config["from"],
                        "ValidityPeriod": "300",
                        "Body": f"ALARM {device} at 12:00. Reply 1 if you are going.",
                    },
                    auth=auth,
                )
            except Exception as exc:  # noqa: BLE001 -- the bench sees the missing request
                print(f"floor: POST failed: {exc!r}", file=sys.stderr, flush=True)

    threading.Thread(target=poster, name="floor-poster", daemon=True).start()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=config["user"],
        clean_session=True,
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.username_pw_set(config["user"], config["password"])

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            print(f"floor: broker refused: {reason}", file=sys.stderr, flush=True)
            return
        no_delay(c.socket())
        c.subscribe(ALERT_SUBSCRIPTION, qos=QOS)

    def on_subscribe(*args: Any) -> None:
        print("ready", flush=True)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        alert = Alert.from_json(bytes(msg.payload))
        feedback = Feedback(
            alert_id=alert.alert_id, state=FeedbackState.RECEIVED, at=now_utc(), incident=1
        )
        c.publish(feedback_topic(alert.device_id), feedback.to_json(), qos=QOS, retain=True)
        work.put(alert.device_id)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", int(config["port"]), keepalive=30)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
