"""Choosing gpiozero's pin factory from ``pins.factory`` in the firmware config.

``auto`` (the default) lets gpiozero pick; it tries lgpio first, the only
factory that works on a Raspberry Pi 5 (gpiozero >= 2.0.1.post3; post1 and
post2 were broken there). Naming one makes a missing library a clear error at
start instead of a silent fallback. What to install is said for this system:
Raspberry Pi OS packages the pin libraries, plain Debian does not.
"""

from __future__ import annotations

import importlib
import platform
import sys
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from device.errors import ConfigError

#: Only Raspberry Pi OS has it (its 64-bit edition says ID=debian in /etc/os-release).
RPI_ISSUE = Path("/etc/rpi-issue")


class PinFactory(StrEnum):
    """The values ``pins.factory`` may take."""

    AUTO = "auto"
    LGPIO = "lgpio"
    RPIGPIO = "rpigpio"
    PIGPIO = "pigpio"
    NATIVE = "native"
    MOCK = "mock"


#: Each named factory: (module, class).
FACTORIES = {
    PinFactory.LGPIO: ("gpiozero.pins.lgpio", "LGPIOFactory"),
    PinFactory.RPIGPIO: ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    PinFactory.PIGPIO: ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    PinFactory.NATIVE: ("gpiozero.pins.native", "NativeFactory"),
    PinFactory.MOCK: ("gpiozero.pins.mock", "MockFactory"),
}
#: What a factory needs: (Raspberry Pi OS's packages, the name on PyPI, what else).
NEEDS = {
    PinFactory.LGPIO: (
        "python3-lgpio",
        "lgpio",
        "the server's wheelhouse has it: rerun provision.sh",
    ),
    PinFactory.RPIGPIO: ("python3-rpi.gpio", "RPi.GPIO", ""),
    PinFactory.PIGPIO: (
        "pigpio python3-pigpio",
        "pigpio",
        "and the pigpio daemon, pigpiod, which Debian does not package",
    ),
}


def on_raspberry_pi_os(
    os_release: Mapping[str, str] | None = None, rpi_issue: Path = RPI_ISSUE
) -> bool:
    """Whether this system is Raspberry Pi OS, from ``os_release`` (defaults to this
    system's /etc/os-release) and the presence of ``rpi_issue``."""
    if os_release is None:
        try:
            os_release = platform.freedesktop_os_release()
        except OSError:
            os_release = {}
    system = os_release.get("ID", "")
    return system == "raspbian" or (system == "debian" and rpi_issue.exists())


def install_hint(name: PinFactory, *, pi_os: bool | None = None) -> str:
    """How to install what factory ``name`` needs on this system (``pi_os`` says
    whether it is Raspberry Pi OS; defaults to :func:`on_raspberry_pi_os`)."""
    if name not in NEEDS:
        return "it is built into gpiozero"
    packages, wheel, more = NEEDS[name]
    if on_raspberry_pi_os() if pi_os is None else pi_os:
        return f"install it: sudo apt install {packages}"
    # Plain Debian packages none of them: the agent's venv gets them from PyPI.
    also = f" ({more})" if more else ""
    return f"pip install {wheel} into the agent's venv: {sys.prefix}/bin/pip install {wheel}{also}"


def no_pin_library(exc: Exception) -> ConfigError:
    """gpiozero found no pin library it could load (``pins.factory = "auto"``)."""
    return ConfigError(
        f"no pin library loads here ({exc}): lgpio works on every Raspberry Pi; "
        f"{install_hint(PinFactory.LGPIO)}"
    )


def make_factory(name: PinFactory) -> Any:
    """A pin factory by config name; None for ``auto`` (gpiozero's own choice)."""
    if name is PinFactory.AUTO:
        return None
    module, cls = FACTORIES[name]
    try:
        return getattr(importlib.import_module(module), cls)()
    except Exception as exc:  # noqa: BLE001 -- ImportError, or the library failing on the chip
        raise ConfigError(
            f'pins.factory = "{name}" cannot be used here ({exc}); {install_hint(name)}; '
            'or set pins.factory = "auto"'
        ) from None
