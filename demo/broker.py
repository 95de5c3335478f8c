"""Broker processes for the demo and the tests: a Mosquitto child process, or the
embedded amqtt broker when no mosquitto binary is installed.

Both apply the one ACL of :mod:`server.units.broker` (users, passwords, topics);
what production needs of the broker (its password hashes, ACL file and config)
stays there.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.units.broker import BrokerFiles, allowed

#: Where :func:`free_port` looks: below Linux's ephemeral range (32768-60999 by
#: default, ``/proc/sys/net/ipv4/ip_local_port_range``), from which the kernel
#: picks the local port of every outgoing connection.
PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port nothing listens on, for a child process to bind next.

    Not the kernel's choice (``bind(0)``): that comes from the ephemeral range, where
    any outgoing connection on the machine (to PostgreSQL, to a broker) may take the
    same port before the child binds it. A random port below that range can only be
    taken by another caller of this function picking the same one of 12,000.
    """
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # that range is full: the kernel's choice after all
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (to send it SIGHUP: reload its files)."""
        return self._proc.pid if self._proc is not None else None

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
