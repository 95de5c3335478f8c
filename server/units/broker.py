"""The MQTT broker's users and ACL, for Mosquitto files and the embedded demo broker.

One ACL, written once here: the server reads alerts and status of every unit
and writes their feedback; a room unit (MQTT user name = device id) writes
only its own alert and status and reads only its own feedback. Mosquitto gets
it as ``password_file`` + ``acl_file``; the embedded amqtt broker (demo only,
when no mosquitto binary is installed) enforces the same rules in-process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from panicbutton.wire import PREFIX

log = logging.getLogger(__name__)

SERVER_USER: Final = "panicbutton-server"

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


def mosquitto_acl(server_users: tuple[str, ...] = (SERVER_USER,)) -> str:
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
                    f"password_file {passwd}",
                    f"acl_file {self.folder / 'acl'}",
                    f"listener {self.port} 127.0.0.1",
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


class MosquittoProcess:
    """A Mosquitto child process on a loopback port (demo and tests)."""

    def __init__(self, files: BrokerFiles, binary: str | None = None) -> None:
        self.files = files
        self.binary = binary or find_mosquitto()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self.binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt install mosquitto)")
        conf = self.files.write()
        self._proc = subprocess.Popen(  # noqa: S603 -- our own binary and config file
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.files.port, timeout, self._proc)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"mosquitto exited at start: {err.strip()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


# --- the embedded broker (amqtt), demo only --------------------------------------

#: Users of running embedded brokers, by registry key (amqtt hydrates plugin config
#: from plain data, so the plugins look their users up here).
_REGISTRY: dict[str, dict[str, str]] = {}


class PasswordAuth:
    """amqtt auth plugin: user name and password must match (no anonymous)."""

    @dataclass
    class Config:
        registry: str = ""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.config = context.config

    async def authenticate(self, *, session: Any) -> bool:
        users = _REGISTRY.get(self.config.registry, {})
        expected = users.get(session.username or "")
        given = session.password or ""
        return expected is not None and hmac.compare_digest(
            given.encode() if isinstance(given, str) else bytes(given), expected.encode()
        )

    async def close(self) -> None:
        return None


class TopicAcl:
    """amqtt topic plugin applying :func:`allowed`."""

    @dataclass
    class Config:
        registry: str = ""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.config = context.config

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool:
        if session is None or topic is None:
            return False
        access = "write" if str(action) == "publish" else "read"
        return allowed(session.username or "", topic, access)

    async def close(self) -> None:
        return None


def _as_plugin(cls: type, base_path: str) -> type:
    """Subclass an amqtt base lazily, so importing this module does not need amqtt."""
    import importlib  # noqa: PLC0415 -- amqtt is a demo-only dependency

    module, _, name = base_path.rpartition(".")
    base = getattr(importlib.import_module(module), name)
    return type(cls.__name__, (cls, base), {"__module__": __name__})


class EmbeddedBroker:
    """An amqtt broker on a loopback port, in a thread of its own, with passwords and ACL.

    amqtt speaks MQTT 3.1.1 only; with its anonymous plugin it silently drops
    queued messages, so it runs here only with :class:`PasswordAuth`.
    """

    def __init__(self, port: int, users: dict[str, str]) -> None:
        self.port = port
        self._key = secrets.token_hex(8)
        _REGISTRY[self._key] = dict(users)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._broker: Any = None

    def start(self, timeout: float = 10.0) -> None:
        from amqtt.broker import Broker  # noqa: PLC0415 -- demo-only dependency

        global PasswordAuthPlugin, TopicAclPlugin  # noqa: PLW0603 -- built once, on first use
        if "PasswordAuthPlugin" not in globals():
            PasswordAuthPlugin = _as_plugin(PasswordAuth, "amqtt.plugins.base.BaseAuthPlugin")
            TopicAclPlugin = _as_plugin(TopicAcl, "amqtt.plugins.base.BaseTopicPlugin")
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                f"{__name__}.PasswordAuthPlugin": {"registry": self._key},
                f"{__name__}.TopicAclPlugin": {"registry": self._key},
            },
        }
        self._thread.start()

        async def _start() -> None:
            self._broker = Broker(config, loop=self._loop)
            await self._broker.start()

        asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout)
        wait_for_port(self.port, timeout)

    def stop(self) -> None:
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        _REGISTRY.pop(self._key, None)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


PasswordAuthPlugin: type
TopicAclPlugin: type
