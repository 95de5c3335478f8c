"""The room unit's firmware config: one TOML file, validated at start.

``firmware_config/device.example.toml`` shows every setting with its unit and
default. Errors name the file and the setting, and say how to fix it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.errors import ConfigError
from panicbutton.wire import DEVICE_ID_RE

#: BCM numbers usable for a button or LED on a 40-pin header (0 and 1 are the HAT EEPROM bus).
USABLE_GPIO = range(2, 28)


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str
    port: int
    username: str
    password: str
    ca_file: Path | None
    keepalive: int


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """Everything the agent needs, checked.

    ``button_pin`` and ``led_pin`` are BCM GPIO numbers. ``debounce`` is in
    seconds (default 0.05). ``resend_max`` caps the resend backoff for
    unconfirmed alerts, in seconds (default 30).
    """

    device_id: str
    state_dir: Path
    button_pin: int
    led_pin: int
    mqtt: MqttConfig
    debounce: float = 0.05
    resend_max: float = 30.0

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.sqlite3"


class _Reader:
    """Reads typed values out of the parsed TOML, with errors that name the setting."""

    def __init__(self, source: str, data: dict[str, Any]) -> None:
        self.source = source
        self.data = data

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"config {self.source}: {key} {problem}")

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        section, _, name = key.partition(".")
        table = self.data.get(section, {})
        if not isinstance(table, dict):
            raise self.fail(section, f"must be a [{section}] table")
        if name not in table:
            if default is ...:
                raise self.fail(key, f"is missing: add it under [{section}]")
            return default
        value = table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def pin(self, key: str, default: int) -> int:
        value: int = self.get(key, int, default)
        if value not in USABLE_GPIO:
            raise self.fail(
                key,
                f"must be a BCM GPIO number {USABLE_GPIO.start}-{USABLE_GPIO.stop - 1}, "
                f"got {value} (the header pin number is not the GPIO number; see WIRING.md)",
            )
        return value

    def seconds(self, key: str, default: float, low: float, high: float) -> float:
        value: float = self.get(key, float, default)
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high} seconds, got {value}")
        return value


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def parse_config(data: dict[str, Any], source: str = "<memory>") -> DeviceConfig:
    """Check a parsed config and return it typed; raise :class:`ConfigError` if wrong."""
    r = _Reader(source, data)
    device_id: str = r.get("device.id", str)
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise r.fail("device.id", f"must be 1-63 characters of a-z, 0-9 and '-', got {device_id!r}")
    button = r.pin("pins.button", 17)
    led = r.pin("pins.led", 27)
    if button == led:
        raise r.fail("pins.led", f"must differ from pins.button (both are GPIO{button})")

    password: str | None = r.get("mqtt.password", str, None)
    password_file: str | None = r.get("mqtt.password_file", str, None)
    if (password is None) == (password_file is None):
        raise r.fail(
            "mqtt.password_file",
            "or mqtt.password must be set (exactly one of them); "
            "provisioning writes mqtt.password_file",
        )
    if password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise r.fail(
                "mqtt.password_file", f"cannot be read: {exc.strerror} ({password_file})"
            ) from None
    assert password is not None
    if not password:
        raise r.fail("mqtt.password", "is empty; anonymous MQTT is not allowed")

    ca: str | None = r.get("mqtt.ca_file", str, None)
    ca_file = Path(ca) if ca else None
    if ca_file is not None and not ca_file.is_file():
        raise r.fail("mqtt.ca_file", f"names {ca_file}, which is not a file")
    port: int = r.get("mqtt.port", int, 8883 if ca_file else 1883)
    if not 1 <= port <= 65535:
        raise r.fail("mqtt.port", f"must be a TCP port 1-65535, got {port}")
    keepalive: int = r.get("mqtt.keepalive", int, 15)
    if not 5 <= keepalive <= 300:
        raise r.fail("mqtt.keepalive", f"must be between 5 and 300 seconds, got {keepalive}")

    return DeviceConfig(
        device_id=device_id,
        state_dir=Path(r.get("device.state_dir", str, "/var/lib/panicbutton")),
        button_pin=button,
        led_pin=led,
        mqtt=MqttConfig(
            host=r.get("mqtt.host", str),
            port=port,
            username=r.get("mqtt.username", str, device_id),
            password=password,
            ca_file=ca_file,
            keepalive=keepalive,
        ),
        debounce=r.seconds("press.debounce", 0.05, 0.0, 1.0),
        resend_max=r.seconds("mqtt.resend_max", 30.0, 1.0, 600.0),
    )


def load_config(path: Path) -> DeviceConfig:
    """Read and check the TOML file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config {path}: file not found; copy firmware_config/device.example.toml there "
            "or run the provisioning step"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))
