"""``panicbutton provision``: credentials and config for one new room unit.

Run where the site file and the broker live. It writes a bundle folder for the
installer to copy to the Pi (config, MQTT password, HTTPS token, and the CA
certificate if given) and prints the two lines to add on the server side: the
Mosquitto password-file line and the room's entry for the site file (only the
token's hash goes there). Then, on the Pi: ``sudo firmware_config/provision.sh BUNDLE``.
"""

from __future__ import annotations

import hashlib
import json
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
    secret = Secrets.new()
    _secret(folder / "mqtt-password", secret.password)
    if ca_file is not None:
        shutil.copyfile(ca_file, folder / "ca.crt")
    if server_url is not None:
        _secret(folder / "device-token", secret.token)
    lines = device_toml(
        device_id=device_id,
        label=label,
        broker_host=broker_host,
        server_url=server_url,
        tls=ca_file is not None,
        by="`panicbutton provision`",
    )
    (folder / "device.toml").write_text(lines)
    entry = [f'[[rooms]]\nid = "{room_id}"\nlabel = "{label}"\ndevice = "{device_id}"']
    if server_url is not None:
        entry.append(f'device_token_sha256 = "{secret.token_sha256}"')
    return Bundle(
        folder=folder, passwd_line=secret.passwd_line(device_id), site_entry="\n".join(entry)
    )


@dataclass(frozen=True, slots=True)
class Secrets:
    """A new unit's MQTT password and HTTPS token (kept by the unit alone: the server
    side keeps only their hashes)."""

    password: str
    token: str

    @classmethod
    def new(cls) -> Secrets:
        return cls(password=secrets.token_urlsafe(24), token=secrets.token_urlsafe(32))

    @property
    def token_sha256(self) -> str:
        """What the site file keeps of the token (``device_token_sha256``)."""
        return hashlib.sha256(self.token.encode()).hexdigest()

    def passwd_line(self, device_id: str) -> str:
        """The unit's line for the broker's password file (the password's hash)."""
        return f"{device_id}:{mosquitto_hash(self.password)}"


def device_toml(
    *,
    device_id: str,
    label: str,
    broker_host: str,
    server_url: str | None,
    tls: bool,
    by: str,
    inline: Secrets | None = None,
) -> str:
    """The unit's ``device.toml``. Its secrets are files beside it in ``/etc/panicbutton``
    (a bundle), or, with ``inline``, in the file itself (one file to copy, from the
    console). With ``tls`` the broker's CA is ``/etc/panicbutton/ca.crt`` (port 8883)."""
    lines = [
        f"# panicbutton room unit {device_id} ({_comment(label)}); written by {by}",
        "[device]",
        f"id = {_toml(device_id)}",
        'state_dir = "/var/lib/panicbutton"',
        "",
        "[pins]",
        "button = 17",
        "led = 27",
        "",
        "[mqtt]",
        f"host = {_toml(broker_host)}",
        f"port = {8883 if tls else 1883}",
        f"password = {_toml(inline.password)}"
        if inline
        else f'password_file = "{ETC}/mqtt-password"',
    ]
    if tls:
        lines.append(f'ca_file = "{ETC}/ca.crt"')
    if server_url is not None:
        lines += [
            "",
            "[server]",
            f"url = {_toml(server_url.rstrip('/'))}",
            f"token = {_toml(inline.token)}" if inline else f'token_file = "{ETC}/device-token"',
        ]
        if tls:
            lines.append(f'ca_file = "{ETC}/ca.crt"')
    return "\n".join(lines) + "\n"


def _toml(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's for these characters)."""
    return json.dumps(text, ensure_ascii=False)


def _comment(text: str) -> str:
    return " ".join(text.split())


def _secret(path: Path, value: str) -> None:
    path.touch(mode=0o600)
    path.write_text(value + "\n")
