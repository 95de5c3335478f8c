"""Errors raised by the room unit agent.

Each subclasses :class:`DeviceError` and the matching builtin, so callers can
catch either.
"""

from panicbutton.errors import PanicbuttonError


class DeviceError(PanicbuttonError):
    """Base class for room unit errors."""


class ConfigError(DeviceError, ValueError):
    """The firmware config file is missing, unreadable or wrong.

    The message names the file, the setting, what is wrong and how to fix it.
    """
