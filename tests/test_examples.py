"""The shipped example and deployment files: they load, and they agree with the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from device.config import KNOWN, load_config, parse_config
from device.errors import ConfigError
from server.site import load_site
from server.units.broker import mosquitto_acl

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware_config"
DEVICE_EXAMPLE = FIRMWARE / "device.example.toml"
SITE_EXAMPLE = FIRMWARE / "site.example.toml"
#: Where the device example keeps its password file and CA; the tests move it to a temp folder.
ETC = "/etc/panicbutton/"
UNIT_PASSWORD = "a-unit-password"


def device_example(tmp_path: Path) -> str:
    """The device example's text, its /etc/panicbutton files made in ``tmp_path``."""
    (tmp_path / "mqtt-password").write_text(UNIT_PASSWORD + "\n", encoding="utf-8")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    text = DEVICE_EXAMPLE.read_text(encoding="utf-8")
    assert ETC in text
    return text.replace(ETC, f"{tmp_path}/")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(text, encoding="utf-8")
    return path


def replace_line(text: str, pattern: str, new: str) -> str:
    """Replace the one line matching ``pattern`` (a whole-line regex) with ``new``."""
    result, count = re.subn(rf"(?m)^{pattern}$", new, text)
    assert count == 1, f"the device example has no single line matching {pattern!r}"
    return result


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def example_settings() -> list[str]:
    """Every ``section.name`` the device example sets."""
    data = tomllib.loads(DEVICE_EXAMPLE.read_text(encoding="utf-8"))
    return [f"{section}.{name}" for section, table in data.items() for name in table]


def test_device_example_loads_with_its_own_values(tmp_path: Path) -> None:
    example = tomllib.loads(DEVICE_EXAMPLE.read_text(encoding="utf-8"))

    config = load_config(write_config(tmp_path, device_example(tmp_path)))

    assert config.device_id == example["device"]["id"]
    assert config.state_dir == Path(example["device"]["state_dir"])
    assert config.button_pin == example["pins"]["button"]
    assert config.led_pin == example["pins"]["led"]
    assert config.pin_factory == example["pins"]["factory"]
    assert config.press.gesture == example["press"]["gesture"]
    assert config.press.debounce == example["press"]["debounce"]
    assert config.press.hold == example["press"]["hold"]
    assert config.press.double_window == example["press"]["double_window"]
    assert config.mqtt.host == example["mqtt"]["host"]
    assert config.mqtt.port == example["mqtt"]["port"]
    assert config.mqtt.keepalive == example["mqtt"]["keepalive"]
    assert config.resend_max == example["mqtt"]["resend_max"]
    assert config.mqtt.username == config.device_id
    assert config.mqtt.password == UNIT_PASSWORD
    assert config.mqtt.ca_file == tmp_path / "ca.crt"
    assert config.heartbeat == example["status"]["heartbeat"]
    assert config.selftest_hours == example["selftest"]["every_hours"]


def test_device_example_documents_every_setting_the_loader_knows() -> None:
    # Optional settings are shown commented out ("# key = ..."); count them too.
    documented = set()
    section = ""
    for line in DEVICE_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if table := re.fullmatch(r"#? ?\[(\w+)\]", line):
            section = table[1]
        elif setting := re.match(r"#? ?(\w+) = ", line):
            documented.add(f"{section}.{setting[1]}")

    assert documented == {f"{table}.{key}" for table, keys in KNOWN.items() for key in keys}


@pytest.mark.parametrize("key", example_settings())
def test_device_example_sets_only_settings_the_loader_reads(tmp_path: Path, key: str) -> None:
    # A setting the loader reads is type-checked, so a wrong type must be refused
    # by name; a setting it ignores (a typo, a stale name) would pass silently.
    data: dict[str, Any] = tomllib.loads(device_example(tmp_path))
    section, name = key.split(".")
    data[section][name] = ["not", "a", "value"]

    with pytest.raises(ConfigError) as caught:
        parse_config(data, "example")

    assert f"{key} must be" in str(caught.value)


def test_site_example_loads_with_rooms_staff_and_duty() -> None:
    site = load_site(SITE_EXAMPLE)

    assert len(site.rooms) == 3
    assert site.staff
    assert site.duty.always or site.duty.shifts
    assert {member.language for member in site.staff} == {"fr", "nl", "en"}
    assert all(member.phone.startswith("+3247000000") for member in site.staff)
    assert site.escalation.steps


def test_site_example_has_a_room_for_the_device_example() -> None:
    device_id = tomllib.loads(DEVICE_EXAMPLE.read_text(encoding="utf-8"))["device"]["id"]

    assert load_site(SITE_EXAMPLE).room_for_device(device_id) is not None


def test_mosquitto_acl_file_is_what_the_server_generates() -> None:
    assert (FIRMWARE / "mosquitto" / "acl").read_text(encoding="utf-8") == mosquitto_acl()


def test_mosquitto_config_refuses_anonymous_clients() -> None:
    conf = (FIRMWARE / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")

    assert "allow_anonymous false" in conf.splitlines()
    assert not re.search(r"allow_anonymous\s+true", conf)


def test_compose_file_has_no_default_secret() -> None:
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    references = re.findall(r"\$\{(\w+)([^}]*)\}", compose)
    secrets = [(name, rest) for name, rest in references if "PASSWORD" in name or "TOKEN" in name]
    settings = re.findall(r"(?m)^\s*(\w*(?:PASSWORD|TOKEN)\w*):\s*(.*)$", compose)

    assert secrets
    assert [name for name, rest in secrets if not rest.startswith(":?")] == []
    assert not re.search(r"\$(?!\{)\w*(?:PASSWORD|TOKEN)", compose)
    assert [name for name, value in settings if not value.startswith("${")] == []
    assert not re.search(r"allow_anonymous\s+true", compose)


def test_the_docker_image_carries_the_units_scripts_and_compose_keeps_their_wheels() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    [copied_to] = re.findall(r"(?m)^COPY firmware_config (\S+)$", dockerfile)
    [firmware_dir] = re.findall(r"(?m)^ENV PANICBUTTON_FIRMWARE_DIR=(\S+)$", dockerfile)
    [wheelhouse] = re.findall(r"(?m)^\s+PANICBUTTON_WHEELHOUSE_DIR: (\S+)$", compose)
    [data] = re.findall(r"(?m)^\s+- panicbutton-data:(\S+)$", compose)

    assert copied_to == firmware_dir
    assert wheelhouse.startswith(data + "/"), "the wheelhouse must outlive the container"
    assert f"panicbutton wheelhouse build --out {wheelhouse}" in compose


def test_device_service_restarts_always() -> None:
    unit = (FIRMWARE / "panicbutton-device.service").read_text(encoding="utf-8").splitlines()

    assert "Restart=always" in unit
    assert (
        "ExecStart=/opt/panicbutton/current/bin/panicbutton device "
        "--config /etc/panicbutton/device.toml"
    ) in unit


def test_config_error_names_the_usable_gpio_numbers(tmp_path: Path) -> None:
    text = replace_line(device_example(tmp_path), r"button = \d+", "button = 40")
    path = write_config(tmp_path, text)

    message = load_error(path)

    assert str(path) in message
    assert "pins.button" in message
    assert "BCM GPIO number 2-27" in message
    assert "got 40" in message


def test_config_error_names_a_missing_broker_host(tmp_path: Path) -> None:
    text = replace_line(device_example(tmp_path), r"host = .*", "")

    message = load_error(write_config(tmp_path, text))

    assert "mqtt.host is missing" in message
    assert "[mqtt]" in message


def test_config_error_says_the_file_is_not_toml(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, "[device\nid = unit-1\n"))

    assert "not valid TOML" in message


def test_config_error_says_the_file_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    message = load_error(path)

    assert str(path) in message
    assert "file not found" in message
    assert "device.example.toml" in message


def test_config_error_says_the_password_file_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "not-provisioned"
    text = replace_line(
        device_example(tmp_path), r"password_file = .*", f'password_file = "{missing}"'
    )

    message = load_error(write_config(tmp_path, text))

    assert "mqtt.password_file cannot be read" in message
    assert str(missing) in message
