"""One room unit agent in a process of its own, for the footprint figures.

Run as ``python -m tests.bench.agent_child '<json>'`` by :mod:`tests.bench.footprint`.
It imports only what a room unit imports (``device.agent`` and gpiozero's
MockFactory), starts one :class:`~device.agent.Agent`, and talks JSON lines:
stdout ``{"event": "armed", ...}`` once the light shows ARMED; on each ``press``
line on stdin it waits for the light to show ARMED (the previous incident
resolved), presses the mock button and answers with the press time; on
``quit`` it reports its memory and exits. Times are ``time.monotonic()``, which
on Linux is one clock for all processes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

MAIN_AT = time.monotonic()


def memory() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in kB."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def say(**data: Any) -> None:
    print(json.dumps(data), flush=True)


def main() -> int:
    args = json.loads(sys.argv[1])
    base = memory()
    from gpiozero.pins.mock import MockFactory  # noqa: PLC0415 -- timed and measured here

    from device.agent import Agent  # noqa: PLC0415
    from device.config import parse_config  # noqa: PLC0415
    from device.indicator import Light  # noqa: PLC0415

    imported_at = time.monotonic()
    imported = memory()
    config = parse_config(
        {
            "device": {"id": args["device"], "state_dir": args["state_dir"]},
            "pins": {"button": args["button"], "led": args["led"]},
            "mqtt": {"host": "127.0.0.1", "port": args["port"], "password": args["password"]},
        },
        "bench agent",
    )
    factory = MockFactory()
    armed = threading.Event()

    def on_light(light: Light) -> None:
        # Set while the light shows ARMED: a press then makes a new alert, not a re-press.
        if light is Light.ARMED:
            armed.set()
        else:
            armed.clear()

    agent = Agent(config, pin_factory=factory, on_light=on_light)
    agent.start()
    if not armed.wait(20):
        say(event="error", message="the light never showed ARMED")
        agent.close()
        return 1
    say(
        event="armed",
        main=MAIN_AT,
        imported=imported_at,
        armed=time.monotonic(),
        rss_base=base["VmRSS"],
        rss_imported=imported["VmRSS"],
        rss_armed=memory()["VmRSS"],
    )
    pin = factory.pin(args["button"])
    for line in sys.stdin:
        command = line.strip()
        if command == "press":
            if not armed.wait(20):
                say(event="error", message="the light did not return to ARMED")
                break
            at = time.monotonic()
            pin.drive_low()
            time.sleep(args["hold"])
            pin.drive_high()
            say(event="pressed", at=at)
        elif command == "quit":
            break
    now = memory()
    say(event="bye", rss=now["VmRSS"], hwm=now["VmHWM"])
    agent.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
