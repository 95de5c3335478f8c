"""Choosing gpiozero's pin factory from ``pins.factory`` in the firmware config.

``auto`` (the default) lets gpiozero pick; it tries lgpio first, the only
factory that works on a Raspberry Pi 5 (gpiozero >= 2.0.1.post3; post1 and
post2 were broken there). Naming one makes a missing library a clear error at
start instead of a silent fallback.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import Any

from device.errors import ConfigError


class PinFactory(StrEnum):
    """The values ``pins.factory`` may take."""

    AUTO = "auto"
    LGPIO = "lgpio"
    RPIGPIO = "rpigpio"
    PIGPIO = "pigpio"
    NATIVE = "native"
    MOCK = "mock"


#: Each named factory: (module, class, how to install what it needs).
FACTORIES = {
    PinFactory.LGPIO: ("gpiozero.pins.lgpio", "LGPIOFactory", "sudo apt install python3-lgpio"),
    PinFactory.RPIGPIO: (
        "gpiozero.pins.rpigpio",
        "RPiGPIOFactory",
        "sudo apt install python3-rpi.gpio",
    ),
    PinFactory.PIGPIO: (
        "gpiozero.pins.pigpio",
        "PiGPIOFactory",
        "sudo apt install pigpio python3-pigpio",
    ),
    PinFactory.NATIVE: ("gpiozero.pins.native", "NativeFactory", "(built into gpiozero)"),
    PinFactory.MOCK: ("gpiozero.pins.mock", "MockFactory", "(built into gpiozero)"),
}


def make_factory(name: PinFactory) -> Any:
    """A pin factory by config name; None for ``auto`` (gpiozero's own choice)."""
    if name is PinFactory.AUTO:
        return None
    module, cls, install = FACTORIES[name]
    try:
        return getattr(importlib.import_module(module), cls)()
    except Exception as exc:  # noqa: BLE001 -- ImportError, or the library failing on the chip
        raise ConfigError(
            f"pins.factory = {name!r} cannot be used here ({exc}); {install}, "
            'or set pins.factory = "auto"'
        ) from None
