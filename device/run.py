"""``panicbutton device``: run the agent until stopped, or check an installation.

``--simulate`` runs on any computer: gpiozero's mock pins, Enter presses the button.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

from device.agent import Agent
from device.check import check
from device.config import load_config
from device.pins import PinFactory, make_factory


def run(*, config_path: Path, simulate: bool) -> int:
    config = load_config(config_path)
    factory = make_factory(PinFactory.MOCK if simulate else config.pin_factory)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Agent(
        config, pin_factory=factory, on_light=lambda light: print(f"light: {light}", flush=True)
    ):
        if simulate:
            print(
                "simulated room unit: press Enter to press the button, Ctrl-D to stop", flush=True
            )
            pin = factory.pin(config.button_pin)
            for _line in sys.stdin:
                pin.drive_low()
                time.sleep(0.1)
                pin.drive_high()
            stop.set()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def run_check(*, config_path: Path, wait_press: float, test_alert: bool, simulate: bool) -> int:
    config = load_config(config_path)
    failed = check(
        config,
        wait_press=wait_press,
        test_alert=test_alert,
        pin_factory=make_factory(PinFactory.MOCK) if simulate else None,
    )
    return 1 if failed else 0
