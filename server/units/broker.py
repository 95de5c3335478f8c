"""The MQTT broker's users and ACL, for Mosquitto files and the embedded demo broker.

One ACL, written once here: the server reads alerts and status of every unit
and writes their feedback; a room unit (MQTT user name = device id) writes
only its own alert and status and reads only its own feedback. Mosquitto gets
it as ``password_file`` + ``acl_file``; the embedded amqtt broker (demo only,
when no mosquitto binary is installed, in :mod:`demo.broker`) enforces the same
rules in-process through :func:`allowed`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from panicbutton.wire import PREFIX

SERVER_USER: Final = "panicbutton-server"
#: The second server instance's user (docker-compose.yml runs two; add more the same way).
SECOND_SERVER_USER: Final = "panicbutton-server-2"

#: (access, topic) pairs; "%u" stands for the connecting user's name.
SERVER_RULES: Final = (
    ("read", f"{PREFIX}/+/alert"),
    ("read", f"{PREFIX}/+/status"),
    ("write", f"{PREFIX}/+/feedback"),
)
DEVICE_RULES: Final = (
    ("write", f"{PREFIX}/%u/alert"),
    ("write", f"{PREFIX}/%u/status"),
    ("read", f"{PREFIX}/%u/feedback"),
)


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """A Mosquitto 2.0 password-file hash (``$7$``: PBKDF2-HMAC-SHA512)."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_acl(server_users: tuple[str, ...] = (SERVER_USER, SECOND_SERVER_USER)) -> str:
    """The ACL file: each server instance's user (give each instance its own: with
    ``use_username_as_clientid`` two sessions of one user would push each other off),
    then one pattern set for room units, whose MQTT user name is their device id."""
    lines = [
        "# panicbutton: written by server/broker.py; the server user(s) and one pattern set",
        "# for room units, whose MQTT user name is their device id.",
    ]
    for user in server_users:
        lines += ["", f"user {user}"]
        lines += [f"topic {access} {topic}" for access, topic in SERVER_RULES]
    lines += ["", "# room units: only their own topics"]
    lines += [f"pattern {access} {topic}" for access, topic in DEVICE_RULES]
    return "\n".join(lines) + "\n"


def _matches(filter_: str, topic: str) -> bool:
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def allowed(user: str, topic: str, access: str) -> bool:
    """The ACL above as a function: may ``user`` ``access`` ("read"/"write") ``topic``?"""
    rules = (
        SERVER_RULES
        if user == SERVER_USER
        else tuple((a, t.replace("%u", user)) for a, t in DEVICE_RULES)
    )
    if user != SERVER_USER and ("+" in user or "#" in user or "/" in user):
        return False
    return any(a == access and _matches(t, topic) for a, t in rules)


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A second listener, with TLS, for units that reach the broker over the network."""

    port: int
    cafile: Path
    certfile: Path
    keyfile: Path
    host: str = "127.0.0.1"


@dataclass
class BrokerFiles:
    """A Mosquitto configuration in one folder: config, password file and ACL."""

    folder: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    #: Keep retained messages and sessions across a restart (on in production).
    persistence: bool = False
    #: Users with the server's rights (one per server instance, or a test's monitor).
    server_users: tuple[str, ...] = (SERVER_USER,)
    tls: TlsListener | None = None

    @property
    def conf(self) -> Path:
        return self.folder / "mosquitto.conf"

    def write(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        passwd = self.folder / "passwd"
        passwd.write_text("".join(f"{u}:{mosquitto_hash(p)}\n" for u, p in self.users.items()))
        (self.folder / "acl").write_text(mosquitto_acl(self.server_users))
        for f in (passwd, self.folder / "acl"):
            f.chmod(0o600)
        import getpass  # noqa: PLC0415 -- only needed here

        self.conf.write_text(
            "\n".join(
                [
                    "# panicbutton: a local Mosquitto with passwords and ACL, no anonymous access",
                    "per_listener_settings false",
                    "allow_anonymous false",
                    # Alerts and feedback are small: send each at once (no Nagle delay).
                    "set_tcp_nodelay true",
                    f"password_file {passwd}",
                    f"acl_file {self.folder / 'acl'}",
                    f"listener {self.port} 127.0.0.1",
                    *self._tls_lines(),
                    # After the listener: before one, this would create a default
                    # listener on 1883. A client id is its user name, so a unit's
                    # password cannot push the server (or another unit) off.
                    "use_username_as_clientid true",
                    f"persistence {'true' if self.persistence else 'false'}",
                    f"persistence_location {self.folder}/",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    # As root, Mosquitto drops to user mosquitto, who cannot read these files.
                    f"user {getpass.getuser()}",
                    "",
                ]
            )
        )
        return self.conf

    def _tls_lines(self) -> list[str]:
        if self.tls is None:
            return []
        t = self.tls
        return [
            f"listener {t.port} {t.host}",
            f"cafile {t.cafile}",
            f"certfile {t.certfile}",
            f"keyfile {t.keyfile}",
            "tls_version tlsv1.2",
        ]
