"""``panicbutton device check``: what an installer runs after wiring a unit.

Checks, in order, and says what is wrong in each: the config; the pins (the
button's level, a blink of the light, and optionally a real press); the
broker login; the server round trip (a *test* alert that pages only the test
recipients, confirmed by the server); and the HTTPS path's token.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from device import why
from device.config import DeviceConfig
from device.errors import DeviceError
from device.https import HttpsSender, describe
from device.outbox import Outbox
from device.pins import make_factory, no_pin_library
from panicbutton.clock import Clock, SystemClock
from panicbutton.wire import QOS, AlertKind, Feedback, WireError, alert_topic, feedback_topic


class Report:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.failed = 0

    def ok(self, what: str, detail: str) -> None:
        self.say(f"ok    {what}: {detail}")

    def fail(self, what: str, detail: str) -> None:
        self.failed += 1
        self.say(f"FAIL  {what}: {detail}")


def check(
    config: DeviceConfig,
    *,
    say: Callable[[str], None] = print,
    wait_press: float = 0,
    test_alert: bool = True,
    pin_factory: Any = None,
    clock: Clock | None = None,
) -> int:
    """Run every check; return the number that failed.

    ``wait_press`` is how long to wait for a real press, in seconds (0, the default,
    skips it); ``clock`` times the server's answer (defaults to the real clocks).
    """
    report = Report(say)
    report.ok(
        "config",
        f"device {config.device_id}, button GPIO{config.button_pin}, light GPIO{config.led_pin}",
    )
    _pins(config, report, wait_press, pin_factory)
    client = _broker(config, report)
    if client is not None:
        if test_alert:
            _round_trip(config, report, client, clock or SystemClock())
        client.disconnect()
        client.loop_stop()
    _https(config, report)
    say("all checks passed" if not report.failed else f"{report.failed} check(s) failed")
    return report.failed


def _pins(config: DeviceConfig, report: Report, wait_press: float, pin_factory: Any) -> None:
    from gpiozero import LED, Button  # noqa: PLC0415 -- only when checking pins
    from gpiozero.exc import BadPinFactory  # noqa: PLC0415 -- as above

    try:
        factory = pin_factory if pin_factory is not None else make_factory(config.pin_factory)
        with (
            Button(config.button_pin, pull_up=True, pin_factory=factory) as button,
            LED(config.led_pin, pin_factory=factory) as led,
        ):
            if button.is_pressed:
                report.fail(
                    "button",
                    f"GPIO{config.button_pin} reads pressed while nobody "
                    "presses it: a short to ground, or a normally-closed button",
                )
            else:
                report.ok("button", f"GPIO{config.button_pin} reads released")
            led.blink(on_time=0.2, off_time=0.2, n=3, background=False)
            report.ok("light", f"GPIO{config.led_pin} blinked 3 times (did you see it?)")
            if wait_press:
                report.say(f"      press the button within {wait_press:.0f} s ...")
                if button.wait_for_press(timeout=wait_press):
                    report.ok("button press", "seen")
                else:
                    report.fail(
                        "button press",
                        "not seen: check the wiring between "
                        f"GPIO{config.button_pin} and GND (see WIRING.md)",
                    )
    except BadPinFactory as exc:
        report.fail("pins", str(no_pin_library(exc)))
    except (DeviceError, OSError, RuntimeError) as exc:
        report.fail(
            "pins",
            f"{exc} (is the agent running? stop it first: sudo systemctl stop panicbutton-device)",
        )
    except Exception as exc:  # gpiozero raises its own errors for busy or missing pins  # noqa: BLE001
        report.fail("pins", f"{type(exc).__name__}: {exc}")


def _broker(config: DeviceConfig, report: Report) -> mqtt.Client | None:
    """Log in as the unit; a failure is worded as the agent's journal words it."""
    result: list[why.Why | None] = []
    ready = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{config.device_id}-check",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.username_pw_set(config.mqtt.username, config.mqtt.password)
    if config.mqtt.ca_file is not None:
        client.tls_set(ca_certs=str(config.mqtt.ca_file))

    def on_connect(c: mqtt.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        result.append(why.refused(reason, config.mqtt) if reason.is_failure else None)
        ready.set()

    def on_disconnect(c: mqtt.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        if not ready.is_set():  # closed before it answered the login
            result.append(why.closed_early(config.mqtt))
            ready.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    where = f"{config.mqtt.host}:{config.mqtt.port}"
    try:
        client.connect(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive)
    except OSError as exc:
        report.fail("broker", str(why.cannot_connect(exc, config.mqtt)))
        return None
    client.loop_start()
    if not ready.wait(10) or result[0] is not None:
        failure = result[0] if result else f"no answer from {where} in 10 s; check the broker's log"
        report.fail("broker", str(failure))
        client.disconnect()
        client.loop_stop()
        return None
    report.ok("broker", f"logged in to {where} as {config.device_id}")
    return client


def _round_trip(config: DeviceConfig, report: Report, client: mqtt.Client, clock: Clock) -> None:
    outbox = Outbox(config.outbox_path, clock=clock)
    alert = outbox.add(config.device_id, AlertKind.TEST)
    confirmed: list[Feedback] = []
    done = threading.Event()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            fb = Feedback.from_json(bytes(message.payload))
        except WireError:
            return
        if fb.alert_id == alert.alert_id:
            confirmed.append(fb)
            done.set()

    client.on_message = on_message
    client.subscribe(feedback_topic(config.device_id), qos=QOS)
    time.sleep(0.2)  # the broker's pace, on real time: let the subscription settle
    started = clock.monotonic()
    client.publish(alert_topic(config.device_id), alert.to_json(), qos=QOS)
    if clock.wait(done, None, 15):
        outbox.confirm(alert.alert_id, confirmed[0].presses)
        report.ok(
            "server",
            f"confirmed the test alert in {clock.monotonic() - started:.2f} s "
            f"(incident {confirmed[0].incident}); test recipients were paged",
        )
    else:
        report.fail(
            "server",
            "no confirmation within 15 s: the broker works but the server "
            "did not answer (is it running, and is this unit in its site file?); "
            "the test alert stays in the outbox and the agent will resend it",
        )
    outbox.shutdown()


def _https(config: DeviceConfig, report: Report) -> None:
    if config.https is None:
        report.ok(
            "https path", "not configured (set [server] url and token_file for a second path)"
        )
        return
    sender = HttpsSender(config.https, config.device_id, lambda _event: None)  # checks only
    try:
        sender.check()
        report.ok("https path", f"{config.https.url} accepts this unit's token")
    except urllib.error.HTTPError as exc:
        hint = " (the token is wrong, or the site file lacks its hash)" if exc.code == 401 else ""
        report.fail("https path", f"{config.https.url}: {describe(exc)}{hint}")
    except OSError as exc:
        report.fail("https path", f"{config.https.url}: {describe(exc)}")
    finally:
        sender.close()
