"""The room unit agent's footprint, measured in a subprocess (see :mod:`agent_child`).

Needs the server running, so that alerts are confirmed and the agent does not
resend; each incident is resolved before the next press, which the child makes
only once its light shows ARMED again (else the press would be a re-press of
the open alert, not a new one). Press -> publish is measured from the child's ``time.monotonic()``
just before ``drive_low()`` to the receipt of that alert by a separate paho
subscriber in the bench process (server credentials, ``pb/v1/dev/+/alert``),
so it includes the broker hop to that subscriber.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt

from panicbutton.wire import ALERT_SUBSCRIPTION, Alert, WireError, alert_topic
from tests.bench.floor import close, connect, subscribe
from tests.bench.latency import GAP, HOLD, TIMEOUT, at_least, resolve_latest
from tests.harness import BUTTON, LED, MONITOR, System, wait_until

DEVICE = "unit-1"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Footprint:
    spawn_to_main: float = 0.0  # seconds: exec + interpreter start + `-m` package imports
    imports: float = 0.0  # gpiozero + device.agent
    start_to_armed: float = 0.0  # Agent() + start() + MQTT connect + first light
    rss_base_kb: int = 0
    rss_imported_kb: int = 0
    rss_armed_kb: int = 0
    rss_end_kb: int = 0
    hwm_kb: int = 0
    press_to_publish: list[float] = field(default_factory=list)

    @property
    def spawn_to_armed(self) -> float:
        return self.spawn_to_main + self.imports + self.start_to_armed


def _reader(stream: IO[str], out: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        try:
            out.put(json.loads(line))
        except json.JSONDecodeError:
            out.put({"event": "noise", "line": line.rstrip()})
    out.put({"event": "eof"})


def _next(lines: queue.Queue[dict[str, Any]], event: str) -> dict[str, Any]:
    deadline = time.monotonic() + 2 * TIMEOUT
    while True:
        try:
            msg = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"bench: agent subprocess did not say {event!r}") from None
        if msg.get("event") == event:
            return msg
        if msg.get("event") in ("error", "eof"):
            raise RuntimeError(f"bench: agent subprocess failed: {msg}")


def _more_than(receipts: dict[tuple[str, int], float], n: int) -> Callable[[], bool]:
    return lambda: len(receipts) > n


def measure_footprint(system: System, presses: int, folder: Path) -> Footprint:
    assert system.server is not None
    pager = system.server.services.pager
    # First receipt of each (alert id, presses): a resend of the same alert is not counted.
    receipts: dict[tuple[str, int], float] = {}

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        at = time.monotonic()
        if msg.topic != alert_topic(DEVICE):
            return
        with contextlib.suppress(WireError):  # not ours to judge; the server logs it
            alert = Alert.from_json(bytes(msg.payload))
            receipts.setdefault((alert.alert_id, alert.presses), at)

    watch = connect("bench-agent-watch", MONITOR, system.users[MONITOR], system.mqtt_port)
    watch.on_message = on_message
    subscribe(watch, ALERT_SUBSCRIPTION)
    args = json.dumps(
        {
            "device": DEVICE,
            "state_dir": str(folder / f"child-{DEVICE}"),
            "button": BUTTON,
            "led": LED,
            "port": system.mqtt_port,
            "password": system.users[DEVICE],
            "hold": HOLD,
        }
    )
    result = Footprint()
    spawned = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.agent_child", args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        armed = _next(lines, "armed")
        result.spawn_to_main = armed["main"] - spawned
        result.imports = armed["imported"] - armed["main"]
        result.start_to_armed = armed["armed"] - armed["imported"]
        result.rss_base_kb = armed["rss_base"]
        result.rss_imported_kb = armed["rss_imported"]
        result.rss_armed_kb = armed["rss_armed"]
        for n in range(1, presses + 1):
            before, seen = len(system.twilio.sent), len(receipts)
            proc.stdin.write("press\n")
            proc.stdin.flush()
            pressed = _next(lines, "pressed")
            if not wait_until(_more_than(receipts, seen), TIMEOUT):
                raise TimeoutError(f"bench: alert {n} from the agent subprocess never arrived")
            result.press_to_publish.append(list(receipts.values())[seen] - pressed["at"])
            # Let the server finish this incident, and resolve it (the light goes back to
            # ARMED), so the next press is a new alert on a quiet machine.
            system.twilio.wait_for(at_least(before + 2), TIMEOUT)
            wait_until(lambda: pager.backlog() == 0, TIMEOUT)
            resolve_latest(system)
            time.sleep(GAP)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        bye = _next(lines, "bye")
        result.rss_end_kb, result.hwm_kb = bye["rss"], bye["hwm"]
        proc.stdin.close()
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        close(watch)
    return result
