"""``panicbutton provision``: credentials and config for one new room unit.

Run where the site file and the broker live. It writes a bundle folder for the
installer to copy to the Pi (config, MQTT password, HTTPS token, and the CA
certificate if given) and prints the two lines to add on the server side: the
Mosquitto password-file line and the room's entry for the site file (only the
token's hash goes there). Then, on the Pi: ``sudo firmware_config/provision.sh BUNDLE``.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from panicbutton.wire import DEVICE_ID_RE
from server.errors import ServerError
from server.units.broker import mosquitto_hash

ETC = "/etc/panicbutton"


@dataclass(frozen=True, slots=True)
class Bundle:
    folder: Path
    passwd_line: str
    site_entry: str


def provision(
    *,
    device_id: str,
    room_id: str,
    label: str,
    out: Path,
    broker_host: str,
    server_url: str | None,
    ca_file: Path | None,
) -> Bundle:
    """Write the bundle for ``device_id`` into ``out/device_id`` (which must not exist)."""
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ServerError(f"device id {device_id!r} must be 1-23 characters of a-z, 0-9, '-'")
    folder = out / device_id
    try:
        folder.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        raise ServerError(
            f"{folder} exists: each unit is provisioned once; remove it to "
            "issue new credentials (and replace the old lines)"
        ) from None
    password = secrets.token_urlsafe(24)
    token = secrets.token_urlsafe(32)
    _secret(folder / "mqtt-password", password)
    lines = [
        f"# panicbutton room unit {device_id} ({label}); written by `panicbutton provision`",
        "[device]",
        f'id = "{device_id}"',
        'state_dir = "/var/lib/panicbutton"',
        "",
        "[pins]",
        "button = 17",
        "led = 27",
        "",
        "[mqtt]",
        f'host = "{broker_host}"',
        f"port = {8883 if ca_file else 1883}",
        f'password_file = "{ETC}/mqtt-password"',
    ]
    if ca_file is not None:
        shutil.copyfile(ca_file, folder / "ca.crt")
        lines.append(f'ca_file = "{ETC}/ca.crt"')
    if server_url is not None:
        _secret(folder / "device-token", token)
        lines += [
            "",
            "[server]",
            f'url = "{server_url.rstrip("/")}"',
            f'token_file = "{ETC}/device-token"',
        ]
        if ca_file is not None:
            lines.append(f'ca_file = "{ETC}/ca.crt"')
    (folder / "device.toml").write_text("\n".join(lines) + "\n")
    entry = [f'[[rooms]]\nid = "{room_id}"\nlabel = "{label}"\ndevice = "{device_id}"']
    if server_url is not None:
        entry.append(f'device_token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"')
    return Bundle(
        folder=folder,
        passwd_line=f"{device_id}:{mosquitto_hash(password)}",
        site_entry="\n".join(entry),
    )


def _secret(path: Path, value: str) -> None:
    path.touch(mode=0o600)
    path.write_text(value + "\n")
