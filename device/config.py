"""The room unit's firmware config: one TOML file, validated at start.

(Over 300 lines: the typed settings and the check of each sit together, so a
setting and its error message are read in one place.)

``firmware_config/device.example.toml`` shows every setting with its unit and
default. Errors name the file and the setting, and say how to fix it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from device.errors import ConfigError
from device.pins import PinFactory
from device.press import Gesture, PressConfig
from panicbutton.fields import read_field
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
class HttpsPath:
    """The second path: alerts POSTed to the server when the broker is out of reach.

    ``after`` is in seconds: how long the broker must be unreachable while an
    alert is pending before the second path is used too (default 10).
    """

    url: str
    token: str
    ca_file: Path | None
    after: float = 10.0


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """Everything the agent needs, checked.

    Pins are BCM GPIO numbers. Times are in seconds: ``resend_max`` caps the
    resend backoff for unconfirmed alerts (default 30), ``heartbeat`` is the
    status period (default 20). ``selftest_hours`` schedules a test alert
    through the whole chain (0, the default, turns it off).
    """

    device_id: str
    state_dir: Path
    button_pin: int
    led_pin: int
    mqtt: MqttConfig
    press: PressConfig = field(default_factory=PressConfig)
    test_pin: int | None = None
    buzzer_pin: int | None = None
    pin_factory: PinFactory = PinFactory.AUTO
    https: HttpsPath | None = None
    resend_max: float = 30.0
    heartbeat: float = 20.0
    selftest_hours: float = 0.0

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.sqlite3"


#: Every key the file may have, by table; anything else is a typo worth naming.
KNOWN = {
    "device": {"id", "state_dir"},
    "pins": {"button", "led", "test", "buzzer", "factory"},
    "press": {"gesture", "debounce", "hold", "double_window"},
    "mqtt": {
        "host",
        "port",
        "password",
        "password_file",
        "ca_file",
        "keepalive",
        "resend_max",
    },
    "server": {"url", "token", "token_file", "ca_file", "fallback_after"},
    "status": {"heartbeat"},
    "selftest": {"every_hours"},
}
#: This machine's loopback host names: the only hosts plain http may go to.
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


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
        return read_field(table, name, kind, partial(self.fail, key), kind_name=_kind_name(kind))

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


def _check_keys(r: _Reader) -> None:
    for table, value in r.data.items():
        if table not in KNOWN:
            raise r.fail(table, f"is not a known table; known: {', '.join(sorted(KNOWN))}")
        if not isinstance(value, dict):
            raise r.fail(table, f"must be a [{table}] table")
        for key in value:
            if key not in KNOWN[table]:
                raise r.fail(
                    f"{table}.{key}",
                    "is not a known setting (a typo?); known: " + ", ".join(sorted(KNOWN[table])),
                )


def _secret(r: _Reader, key: str, what: str) -> str | None:
    """A secret given inline (``key``) or in a file (``key_file``); None if neither."""
    inline: str | None = r.get(key, str, None)
    file: str | None = r.get(f"{key}_file", str, None)
    if inline is not None and file is not None:
        raise r.fail(f"{key}_file", f"and {key} are both set; keep one ({what})")
    if file is not None:
        try:
            inline = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise r.fail(f"{key}_file", f"cannot be read: {exc.strerror} ({file})") from None
    if inline is not None and not inline:
        raise r.fail(key, f"is empty ({what})")
    return inline


def _ca(r: _Reader, key: str) -> Path | None:
    ca: str | None = r.get(key, str, None)
    if ca and not Path(ca).is_file():
        raise r.fail(key, f"names {ca}, which is not a file")
    return Path(ca) if ca else None


def _optional_pin(r: _Reader, key: str, taken: dict[int, str]) -> int | None:
    section, _, name = key.partition(".")
    if name not in r.data.get(section, {}):
        return None
    pin = r.pin(key, 0)
    if pin in taken:
        raise r.fail(key, f"GPIO{pin} is already used by {taken[pin]}")
    taken[pin] = key
    return pin


def _press(r: _Reader) -> PressConfig:
    gesture = r.get("press.gesture", str, "single")
    try:
        kind = Gesture(gesture)
    except ValueError:
        raise r.fail("press.gesture", f"must be single, double or hold, got {gesture!r}") from None
    return PressConfig(
        gesture=kind,
        debounce=r.seconds("press.debounce", 0.05, 0.0, 0.5),
        hold=r.seconds("press.hold", 2.0, 0.5, 10.0),
        double_window=r.seconds("press.double_window", 1.5, 0.3, 5.0),
    )


def _https(r: _Reader) -> HttpsPath | None:
    url: str | None = r.get("server.url", str, None)
    token = _secret(r, "server.token", "the per-device token for the HTTPS path")
    if url is None and token is None:
        return None
    if url is None or token is None:
        raise r.fail(
            "server.url",
            "and server.token (or server.token_file) go together: "
            "both set the second path to the server; provisioning writes both",
        )
    # NOTE: the parsed host, not the string's start: http://localhost.evil.example
    # and http://localhost@evil.example go elsewhere.
    parts = urlsplit(url)
    if not (
        (parts.scheme == "https" and parts.hostname)
        or (parts.scheme == "http" and parts.hostname in LOOPBACK)
    ):
        raise r.fail(
            "server.url",
            "must be https://<host> (a token must not cross the network in clear; plain "
            f"http only to this machine: localhost, 127.0.0.1, [::1]), got {url!r}",
        )
    return HttpsPath(
        url=url.rstrip("/"),
        token=token,
        ca_file=_ca(r, "server.ca_file"),
        after=r.seconds("server.fallback_after", 10.0, 1.0, 300.0),
    )


def parse_config(data: dict[str, Any], source: str = "<memory>") -> DeviceConfig:
    """Check a parsed config and return it typed; raise :class:`ConfigError` if wrong."""
    r = _Reader(source, data)
    _check_keys(r)
    device_id: str = r.get("device.id", str)
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise r.fail("device.id", f"must be 1-23 characters of a-z, 0-9 and '-', got {device_id!r}")
    button = r.pin("pins.button", 17)
    led = r.pin("pins.led", 27)
    if button == led:
        raise r.fail("pins.led", f"must differ from pins.button (both are GPIO{button})")
    taken = {button: "pins.button", led: "pins.led"}
    factory_name: str = r.get("pins.factory", str, "auto")
    try:
        factory = PinFactory(factory_name)
    except ValueError:
        raise r.fail(
            "pins.factory", f"must be one of {', '.join(PinFactory)}, got {factory_name!r}"
        ) from None

    password = _secret(r, "mqtt.password", "anonymous MQTT is not allowed")
    if password is None:
        raise r.fail(
            "mqtt.password_file",
            "or mqtt.password must be set; provisioning writes mqtt.password_file",
        )
    ca_file = _ca(r, "mqtt.ca_file")
    port: int = r.get("mqtt.port", int, 8883 if ca_file else 1883)
    if not 1 <= port <= 65535:
        raise r.fail("mqtt.port", f"must be a TCP port 1-65535, got {port}")
    keepalive: int = r.get("mqtt.keepalive", int, 15)
    if not 5 <= keepalive <= 300:
        raise r.fail("mqtt.keepalive", f"must be between 5 and 300 seconds, got {keepalive}")
    selftest: float = r.get("selftest.every_hours", float, 0.0)
    if selftest and not 1 <= selftest <= 24 * 366:
        raise r.fail("selftest.every_hours", f"must be 0 (off) or 1 to 8784 hours, got {selftest}")

    return DeviceConfig(
        device_id=device_id,
        state_dir=Path(r.get("device.state_dir", str, "/var/lib/panicbutton")),
        button_pin=button,
        led_pin=led,
        mqtt=MqttConfig(
            host=r.get("mqtt.host", str),
            port=port,
            # NOTE: the broker's ACL gives a unit the topics of the user name it
            # logs in with, so the user name is always the device id.
            username=device_id,
            password=password,
            ca_file=ca_file,
            keepalive=keepalive,
        ),
        press=_press(r),
        test_pin=_optional_pin(r, "pins.test", taken),
        buzzer_pin=_optional_pin(r, "pins.buzzer", taken),
        pin_factory=factory,
        https=_https(r),
        resend_max=r.seconds("mqtt.resend_max", 30.0, 1.0, 600.0),
        heartbeat=r.seconds("status.heartbeat", 20.0, 5.0, 300.0),
        selftest_hours=selftest,
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
