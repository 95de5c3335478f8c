"""Provisioning a new unit, as an installer would: server side, then the Pi side."""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from device.config import load_config
from server.site import parse_site
from server.units.provision import Secrets, device_toml

REPO = Path(__file__).resolve().parent.parent


def fake_wheelhouse(folder: Path) -> Path:
    """What provision.sh reads of a wheelhouse, for its dry runs (no wheel is installed
    in a dry run; tests/test_wheelhouse.py builds and installs a real one)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "VERSION").write_text("0.1.0\n")
    (folder / "requirements.txt").write_text("panicbutton-device==0.1.0 --hash=sha256:00\n")
    (folder / "lgpio.txt").write_text("lgpio==0.2.2.0 --hash=sha256:00\n")
    for name in ("panicbutton-device.service", "99-gpio.rules"):
        (folder / name).write_text((REPO / "firmware_config" / name).read_text())
    return folder


def pi_script(bundle: Path, root: Path, house: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "firmware_config" / "provision.sh"), str(bundle)],
        env={
            **os.environ,
            "ROOT": str(root),
            "PANICBUTTON_PROVISION_DRY": "1",
            "WHEELHOUSE": str(house),
        },
        capture_output=True,
        text=True,
        check=False,
    )


def provision(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "panicbutton.cli",
            "provision",
            "unit-4",
            "--room",
            "room-4",
            "--label",
            "Room 4",
            "--broker-host",
            "mqtt.house.example",
            "--out",
            str(tmp_path / "bundles"),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_provision_writes_a_bundle_and_the_server_side_lines(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    result = provision(
        tmp_path, "--server-url", "https://alarm.example.test/", "--ca-file", str(ca)
    )
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "bundles" / "unit-4"
    password = (bundle / "mqtt-password").read_text().strip()
    token = (bundle / "device-token").read_text().strip()
    for secret in ("mqtt-password", "device-token"):
        assert stat.S_IMODE((bundle / secret).stat().st_mode) == 0o600
    assert password not in result.stdout
    assert token not in result.stdout

    # The password-file line is Mosquitto's PBKDF2-SHA512 of the bundle's password.
    line = next(x.strip() for x in result.stdout.splitlines() if x.strip().startswith("unit-4:$7$"))
    _, _, iterations, salt, digest = line.split("$")
    assert hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations), 64
    ) == base64.b64decode(digest)
    # The site entry parses, and holds the token's hash, not the token.
    entry = result.stdout.split("2. Add to the site file")[1].split("3. On the Pi")[0]
    entry = "\n".join(x.strip() for x in entry.splitlines()[1:])
    site = parse_site(
        {
            **tomllib.loads(entry),
            "staff": [{"id": "desk", "name": "Desk", "phone": "+32470000009"}],
            "duty": {"on_duty": ["desk"]},
        }
    )
    assert site.rooms[0].token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert "sudo unit-4/provision.sh unit-4/" in result.stdout
    # The bundle carries its installer: nothing else need be copied to the Pi.
    for name in ("provision.sh", "unit_fetch.py", "panicbutton-device.service", "firstboot.sh"):
        assert (bundle / name).read_bytes() == (REPO / "firmware_config" / name).read_bytes()
    assert (bundle / "ca.crt").read_text() == ca.read_text()


def test_provision_refuses_plain_mqtt_to_a_broker_on_the_network(tmp_path: Path) -> None:
    refused = provision(tmp_path)
    assert refused.returncode == 2
    assert "reaches mqtt.house.example over the network, so it must use TLS" in refused.stderr
    assert "--ca-file" in refused.stderr
    assert not (tmp_path / "bundles" / "unit-4").exists()
    # A broker on the unit itself (the one-Pi site) may be reached in clear.
    local = provision(tmp_path, "--broker-host", "127.0.0.1")
    assert local.returncode == 0, local.stderr
    config = tomllib.loads((tmp_path / "bundles" / "unit-4" / "device.toml").read_text())
    assert (config["mqtt"]["host"], config["mqtt"]["port"]) == ("127.0.0.1", 1883)


def test_provision_refuses_a_ca_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    result = provision(tmp_path, "--ca-file", str(bad))
    assert result.returncode == 2
    assert "is not a PEM certificate" in result.stderr


def test_provision_copies_a_wheelhouse_and_takes_another_port(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    house = tmp_path / "house"
    not_built = provision(tmp_path, "--ca-file", str(ca), "--wheelhouse", str(house))
    assert not_built.returncode == 2
    assert "panicbutton wheelhouse build" in not_built.stderr
    fake_wheelhouse(house)
    for name in ("provision.sh", "unit_fetch.py", "firstboot.sh"):
        (house / name).write_text("#\n")
    result = provision(
        tmp_path, "--ca-file", str(ca), "--wheelhouse", str(house), "--broker-port", "18883"
    )
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "bundles" / "unit-4"
    assert (bundle / "wheelhouse" / "requirements.txt").is_file()
    assert tomllib.loads((bundle / "device.toml").read_text())["mqtt"]["port"] == 18883


def test_provision_refuses_to_overwrite_credentials(tmp_path: Path) -> None:
    assert provision(tmp_path, "--broker-host", "localhost").returncode == 0
    again = provision(tmp_path, "--broker-host", "localhost")
    assert again.returncode == 2
    assert "each unit is provisioned once" in again.stderr


def test_pi_script_installs_config_and_secrets_for_the_service(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert (
        provision(
            tmp_path, "--server-url", "https://alarm.example.test", "--ca-file", str(ca)
        ).returncode
        == 0
    )
    root = tmp_path / "root"
    house = fake_wheelhouse(tmp_path / "house")
    result = pi_script(tmp_path / "bundles" / "unit-4", root, house)
    assert result.returncode == 0, result.stderr
    etc = root / "etc" / "panicbutton"
    assert stat.S_IMODE((etc / "mqtt-password").stat().st_mode) == 0o640
    assert (root / "etc/systemd/system/panicbutton-device.service").is_file()
    assert "device check --no-test-alert" in result.stdout
    # From the wheelhouse alone, each wheel checked against its hash.
    assert (
        f"--no-index --find-links {house} --require-hashes -r {house}/requirements.txt"
        in result.stdout
    )
    assert f"{root}/opt/panicbutton/current/bin/panicbutton device check" in result.stdout
    if not _has_group("gpio"):  # plain Debian: the group is made
        assert "would run: groupadd --system gpio" in result.stdout
    rule = root / "etc/udev/rules.d/99-panicbutton-gpio.rules"
    if not _host_rule_for("gpiochip"):  # and a udev rule giving it the pins
        assert 'KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' in rule.read_text()
    unit = (root / "etc/systemd/system/panicbutton-device.service").read_text()
    assert "ExecStart=/opt/panicbutton/current/bin/panicbutton device" in unit
    assert "UMask=0077" in unit
    # The installed config loads once its /etc paths point into the test root.
    text = (etc / "device.toml").read_text().replace("/etc/panicbutton", str(etc))
    (etc / "device.toml").write_text(text)
    config = load_config(etc / "device.toml")
    assert (config.device_id, config.mqtt.host, config.mqtt.port) == (
        "unit-4",
        "mqtt.house.example",
        8883,
    )
    assert config.https is not None
    assert config.https.url == "https://alarm.example.test"


def _host_rule_for(text: str) -> bool:
    folders = ("/etc/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d")
    return any(
        text in rule.read_text(errors="replace")
        for folder in folders
        for rule in Path(folder).glob("*.rules")
    )


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_pi_script_says_where_the_wheels_are_missing(tmp_path: Path) -> None:
    bundle = tmp_path / "unit-9"
    bundle.mkdir()
    text = device_toml(
        device_id="unit-9",
        label="Room 9",
        broker_host="127.0.0.1",
        server_url=None,
        tls=False,
        by="a test",
    )
    (bundle / "device.toml").write_text(text)
    (bundle / "mqtt-password").write_text("secret\n")
    result = subprocess.run(
        ["bash", str(REPO / "firmware_config" / "provision.sh"), str(bundle)],
        env={**os.environ, "ROOT": str(tmp_path / "root"), "PANICBUTTON_PROVISION_DRY": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "has no [server] url and token" in result.stderr
    assert "panicbutton provision --wheelhouse" in result.stderr


def test_pi_script_explains_a_wrong_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "firmware_config" / "provision.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "device.toml is missing: is this a bundle folder?" in result.stderr


def test_pi_script_takes_the_one_file_from_the_console(tmp_path: Path) -> None:
    secret = Secrets.new()
    text = device_toml(
        device_id="unit-5",
        label="Room 5",
        broker_host="mqtt.house.example",
        server_url="https://alarm.example.test",
        tls=False,
        by="the console",
        inline=secret,
    )
    (tmp_path / "device.toml").write_text(text)
    root = tmp_path / "root"
    result = pi_script(tmp_path / "device.toml", root, fake_wheelhouse(tmp_path / "house"))
    assert result.returncode == 0, result.stderr
    etc = root / "etc" / "panicbutton"
    assert stat.S_IMODE((etc / "device.toml").stat().st_mode) == 0o640
    assert not (etc / "mqtt-password").exists()
    config = load_config(etc / "device.toml")
    assert (config.device_id, config.mqtt.password) == ("unit-5", secret.password)
    assert config.https is not None
    assert config.https.token == secret.token
