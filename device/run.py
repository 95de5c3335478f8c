"""``panicbutton device``: run the agent until stopped, or check an installation.

``--simulate`` runs on any computer: gpiozero's mock pins, Enter presses the button.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from gpiozero.exc import BadPinFactory

from device import statefile
from device.agent import Agent
from device.check import check
from device.config import load_config
from device.indicator import Light
from device.pins import PinFactory, make_factory, no_pin_library


def run(*, config_path: Path, simulate: bool) -> int:
    config = load_config(config_path)
    factory = make_factory(PinFactory.MOCK if simulate else config.pin_factory)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def show(light: Light) -> None:
        print(f"light: {light}", flush=True)
        statefile.write(config.state_dir, light)

    try:
        agent = Agent(config, pin_factory=factory, on_light=show)
    except BadPinFactory as exc:  # pins.factory = "auto" and no library loads
        raise no_pin_library(exc) from None
    with agent:
        if simulate:
            print(
                "simulated room unit: press Enter (or send SIGUSR1) to press the button, "
                "Ctrl-D to stop",
                flush=True,
            )
            pin = factory.pin(config.button_pin)

            def press() -> None:
                pin.drive_low()
                time.sleep(0.1)
                pin.drive_high()

            # A unit run with no terminal (an emulated Pi, a container) is pressed by signal.
            signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=press).start())
            if sys.stdin.isatty() or not _no_input():
                for _line in sys.stdin:
                    press()
                stop.set()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _no_input() -> bool:
    """Whether standard input is /dev/null (no presses will come from it)."""
    try:
        given, null = os.fstat(sys.stdin.fileno()), Path(os.devnull).stat()
    except (OSError, ValueError):
        return False
    return (given.st_dev, given.st_ino) == (null.st_dev, null.st_ino)


def run_check(
    *, config_path: Path, wait_press: float, test_alert: bool, simulate: bool, installed: bool
) -> int:
    config = load_config(config_path)
    if installed:
        from device.upgrade import check_installed  # noqa: PLC0415

        return 0 if check_installed(config) else 1
    failed = check(
        config,
        wait_press=wait_press,
        test_alert=test_alert,
        pin_factory=make_factory(PinFactory.MOCK) if simulate else None,
    )
    return 1 if failed else 0
