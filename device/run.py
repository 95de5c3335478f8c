"""``panicbutton device``: run the agent until stopped; ``--simulate`` reads Enter as a press."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

from device.agent import Agent
from device.config import load_config


def run(*, config_path: Path, simulate: bool) -> int:
    config = load_config(config_path)
    factory = None
    if simulate:
        from gpiozero.pins.mock import MockFactory  # noqa: PLC0415

        factory = MockFactory()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Agent(
        config, pin_factory=factory, on_light=lambda light: print(f"light: {light}", flush=True)
    ) as agent:
        if simulate:
            print(
                "simulated room unit: press Enter to press the button, Ctrl-D to stop", flush=True
            )
            pin = factory.pin(config.button_pin) if factory else None
            for _line in sys.stdin:
                if pin is not None:
                    pin.drive_low()
                    time.sleep(0.1)
                    pin.drive_high()
            stop.set()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        del agent
    return 0
