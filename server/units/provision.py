"""``panicbutton provision``: credentials and config for one new room unit (many at
once from a CSV file: :mod:`server.units.bulk`, which writes each with
:func:`write_bundle`).

Run where the site file and the broker live. It writes a bundle folder for the
installer to copy to the Pi (config, MQTT password, HTTPS token, the broker's CA
certificate, the installer itself and, with ``--wheelhouse``, every wheel the unit
installs) and prints the two lines to add on the server side: the Mosquitto
password-file line and the room's entry for the site file (only the token's hash goes
there). Then, on the Pi: ``sudo BUNDLE/provision.sh BUNDLE``.

A unit on the network talks to the broker over TLS (8883, the site's CA): a bundle
for plain MQTT (1883) is made only for a broker on the unit itself (the one-Pi site),
because the shipped broker listens in clear on loopback alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from panicbutton.wire import DEVICE_ID_RE
from server.errors import ServerError, SiteError
from server.site import ID_RE, printable
from server.units.broker import SERVER_USER, mosquitto_hash
from server.units.wheelhouse import INSTALLER, Wheelhouse, firmware_folder

ETC = "/etc/panicbutton"
#: Host names that are the unit itself: the only brokers a unit may reach in clear.
ON_THE_UNIT = frozenset({"localhost", "127.0.0.1", "::1"})


#: How to fix a plain unit for a network broker, with ``panicbutton provision``.
PROVISION_FIX = (
    "give the broker's CA certificate (--ca-file, the site's ca.crt; see "
    "docs/install/broker.md, 'Certificates'). "
    "Plain MQTT is only for a broker on the unit itself (--broker-host 127.0.0.1)"
)


def check_broker(broker_host: str, *, tls: bool, fix: str = PROVISION_FIX) -> None:
    """Refuse plain MQTT to a broker that is not on the unit itself (ServerError says how,
    with ``fix``: the console's way differs from the command's)."""
    if not tls and broker_host.strip().lower() not in ON_THE_UNIT:
        raise ServerError(
            f"a unit reaches {broker_host} over the network, so it must use TLS: {fix}"
        )


@dataclass(frozen=True, slots=True)
class Unit:
    """One room unit to provision: its id (also its MQTT user name), its room's id in the
    site file and the room's label (what staff read in the SMS)."""

    device_id: str
    room_id: str
    label: str

    def problems(self) -> list[str]:
        """What is wrong with it, each said with what to do (none: it can be provisioned)."""
        found = []
        if not DEVICE_ID_RE.fullmatch(self.device_id):
            found.append(f"device id {self.device_id!r} must be 1-23 characters of a-z, 0-9, '-'")
        elif self.device_id.startswith(SERVER_USER):
            # Its password line would replace a server instance's in the broker's file.
            found.append(
                f"device id {self.device_id!r} is kept for the server's own broker users: "
                "give the unit another id"
            )
        if not ID_RE.fullmatch(self.room_id):
            found.append(
                f"room id {self.room_id!r} must be 1-63 characters of a-z, 0-9, '-' "
                "(starting with a letter or digit)"
            )
        if not self.label.strip():
            found.append("the label is empty: give what staff read in the SMS, e.g. 'Room 4'")
        else:
            try:
                printable(self.label, "the label")
            except SiteError as exc:
                found.append(str(exc))
        return found


@dataclass(frozen=True, slots=True)
class Link:
    """How every unit of one run reaches the broker and the server (shared by a batch)."""

    broker_host: str
    server_url: str | None
    #: The broker's CA certificate (PEM): TLS; None: plain MQTT (a broker on the unit).
    ca_pem: str | None
    broker_port: int | None = None

    @classmethod
    def checked(
        cls,
        *,
        broker_host: str,
        server_url: str | None,
        ca_file: Path | None,
        broker_port: int | None = None,
    ) -> Link:
        """Read the CA certificate, refusing plain MQTT to a broker on the network and a
        file that is not a certificate (ServerError says how to fix either)."""
        check_broker(broker_host, tls=ca_file is not None)
        try:
            ca_pem = ca_file.read_text() if ca_file is not None else None
        except (OSError, UnicodeDecodeError) as exc:
            raise ServerError(f"cannot read the CA certificate {ca_file}: {exc}") from None
        if ca_pem is not None and "BEGIN CERTIFICATE" not in ca_pem:
            raise ServerError(f"{ca_file} is not a PEM certificate (no BEGIN CERTIFICATE line)")
        return cls(
            broker_host=broker_host, server_url=server_url, ca_pem=ca_pem, broker_port=broker_port
        )


@dataclass(frozen=True, slots=True)
class Bundle:
    folder: Path
    passwd_line: str
    site_entry: str


#: The installer every bundle carries: file name -> (bytes, mode), read once per run.
Installer = dict[str, tuple[bytes, int]]


def installer_files() -> Installer:
    """``firmware_config/``'s installer files, to write into bundles (ServerError if the
    folder is not there)."""
    folder = firmware_folder()
    return {
        name: ((folder / name).read_bytes(), stat.S_IMODE((folder / name).stat().st_mode))
        for name in INSTALLER
    }


def provision(
    *,
    unit: Unit,
    out: Path,
    link: Link,
    wheelhouse: Path | None = None,
) -> Bundle:
    """Write the bundle for ``unit`` into ``out/device_id`` (which must not exist).

    ``wheelhouse``: a built wheelhouse (:mod:`server.units.wheelhouse`) copied into the
    bundle, for a unit that cannot reach the server's HTTPS address while installing.
    """
    if problems := unit.problems():
        raise ServerError("; ".join(problems))
    if wheelhouse is not None:
        Wheelhouse(wheelhouse).check()
    files = installer_files()
    folder = out / unit.device_id
    out.mkdir(parents=True, exist_ok=True)
    try:
        bundle = write_bundle(folder, unit=unit, link=link, installer=files)
    except FileExistsError:
        raise ServerError(
            f"{folder} exists: each unit is provisioned once; remove it to "
            "issue new credentials (and replace the old lines)"
        ) from None
    if wheelhouse is not None:
        shutil.copytree(wheelhouse, folder / "wheelhouse")
    return bundle


def write_bundle(folder: Path, *, unit: Unit, link: Link, installer: Installer) -> Bundle:
    """Make ``folder`` (mode 0700; FileExistsError if it exists) with the unit's new
    secrets, config and installer; return it with its broker and site-file lines."""
    folder.mkdir(mode=0o700)
    secret = Secrets.new()
    files = bundle_files(
        device_id=unit.device_id,
        label=unit.label,
        broker_host=link.broker_host,
        server_url=link.server_url,
        ca_pem=link.ca_pem,
        secret=secret,
        by="`panicbutton provision`",
        broker_port=link.broker_port,
    )
    for name, text in files.items():
        _write(folder / name, text.encode(), 0o600)
    for name, (data, mode) in installer.items():
        _write(folder / name, data, mode)
    return Bundle(
        folder=folder,
        passwd_line=secret.passwd_line(unit.device_id),
        site_entry=site_entry(unit, secret if link.server_url is not None else None),
    )


def site_entry(unit: Unit, secret: Secrets | None) -> str:
    """The unit's ``[[rooms]]`` entry for the site file (with ``secret``: its token's
    hash, which turns on the HTTPS path)."""
    entry = [
        "[[rooms]]",
        f"id = {_toml(unit.room_id)}",
        f"label = {_toml(unit.label)}",
        f"device = {_toml(unit.device_id)}",
    ]
    if secret is not None:
        entry.append(f'device_token_sha256 = "{secret.token_sha256}"')
    return "\n".join(entry)


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


def bundle_files(
    *,
    device_id: str,
    label: str,
    broker_host: str,
    server_url: str | None,
    ca_pem: str | None,
    secret: Secrets,
    by: str,
    broker_port: int | None = None,
) -> dict[str, str]:
    """A unit's bundle as file name -> text: ``device.toml``, ``mqtt-password``, and
    ``device-token`` (with a server URL) and ``ca.crt`` (with TLS) as they apply."""
    files = {
        "device.toml": device_toml(
            device_id=device_id,
            label=label,
            broker_host=broker_host,
            server_url=server_url,
            tls=ca_pem is not None,
            by=by,
            broker_port=broker_port,
        ),
        "mqtt-password": secret.password + "\n",
    }
    if server_url is not None:
        files["device-token"] = secret.token + "\n"
    if ca_pem is not None:
        files["ca.crt"] = ca_pem
    return files


def device_toml(
    *,
    device_id: str,
    label: str,
    broker_host: str,
    server_url: str | None,
    tls: bool,
    by: str,
    inline: Secrets | None = None,
    broker_port: int | None = None,
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
        f"port = {broker_port or (8883 if tls else 1883)}",
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


def _write(path: Path, data: bytes, mode: int) -> None:
    """A new file with exactly ``mode`` from its first byte (a secret is never readable
    by others, even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        os.fchmod(fd, mode)
