"""Provisioning a new unit, as an installer would: server side, then the Pi side."""

from __future__ import annotations

import base64
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
    assert "sudo firmware_config/provision.sh unit-4/" in result.stdout


def test_provision_refuses_to_overwrite_credentials(tmp_path: Path) -> None:
    assert provision(tmp_path).returncode == 0
    again = provision(tmp_path)
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
    result = subprocess.run(
        [
            "bash",
            str(REPO / "firmware_config" / "provision.sh"),
            str(tmp_path / "bundles" / "unit-4"),
        ],
        env={**os.environ, "ROOT": str(root), "PANICBUTTON_PROVISION_DRY": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    etc = root / "etc" / "panicbutton"
    assert stat.S_IMODE((etc / "mqtt-password").stat().st_mode) == 0o640
    assert (root / "etc/systemd/system/panicbutton-device.service").is_file()
    assert "would run: systemctl enable --now panicbutton-device" in result.stdout
    assert "device check --no-test-alert" in result.stdout
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
    result = subprocess.run(
        ["bash", str(REPO / "firmware_config" / "provision.sh"), str(tmp_path / "device.toml")],
        env={**os.environ, "ROOT": str(root), "PANICBUTTON_PROVISION_DRY": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    etc = root / "etc" / "panicbutton"
    assert stat.S_IMODE((etc / "device.toml").stat().st_mode) == 0o640
    assert not (etc / "mqtt-password").exists()
    config = load_config(etc / "device.toml")
    assert (config.device_id, config.mqtt.password) == ("unit-5", secret.password)
    assert config.https is not None
    assert config.https.token == secret.token
