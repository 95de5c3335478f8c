"""The server as its own process, as it runs in production: ``python -m panicbutton.cli
server`` configured only by ``PANICBUTTON_*`` variables and a site file, its output in a
log file (tests of restarts and the emulated room unit of ``make pi-check``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.units.broker import SERVER_USER
from tests import web
from tests.fakes.twilio import FakeTwilio
from tests.harness import Broker, write_log_key


class ServerProcess:
    """``python -m panicbutton.cli server`` as a child process, its output in a log file."""

    def __init__(self, env: dict[str, str], port: int, folder: Path) -> None:
        self.env = env
        self.port = port
        self.folder = folder
        self.log_path = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, within: float = 30.0) -> float:
        """Start the server; return seconds from the command to its HTTP port answering
        (at most ``within``)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            began = time.monotonic()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "panicbutton.cli",
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = began + within
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited at start:\n{self.log()}"
            try:
                web.get(f"http://127.0.0.1:{self.port}/api/v1/incidents", timeout=0.5)
            except httpx.TransportError:
                time.sleep(0.01)
                continue
            return time.monotonic() - began
        raise AssertionError(f"server did not answer HTTP within {within:.0f} s:\n{self.log()}")

    def connected(self) -> bool:
        """Whether this run's log says it connected (and subscribed) to the broker."""
        marker = f"===== start {self.starts} ====="
        return "connected to broker" in self.log().rsplit(marker, 1)[-1]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or an OOM kill."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]


def server_env(
    *,
    broker: Broker,
    twilio: FakeTwilio,
    database_url: str,
    site_file: Path,
    mqtt_port: int | None = None,
) -> dict[str, str]:
    """This process's environment without any PANICBUTTON_* setting, plus the server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANICBUTTON_")}
    # As fast as the fake Twilio takes.
    env.update(twilio.pace_env())
    env.update(
        {
            "PANICBUTTON_DATABASE_URL": database_url,
            "PANICBUTTON_SITE_FILE": str(site_file),
            "PANICBUTTON_MQTT_HOST": "127.0.0.1",
            "PANICBUTTON_MQTT_PORT": str(mqtt_port or broker.port),
            "PANICBUTTON_MQTT_USERNAME": SERVER_USER,
            "PANICBUTTON_MQTT_PASSWORD": broker.users[SERVER_USER],
            "PANICBUTTON_TWILIO_ACCOUNT_SID": twilio.account_sid,
            "PANICBUTTON_TWILIO_AUTH_TOKEN": twilio.auth_token,
            "PANICBUTTON_TWILIO_FROM": "+32460000000",
            "PANICBUTTON_TWILIO_API_BASE_URL": twilio.base_url,
            "PANICBUTTON_PUBLIC_BASE_URL": "https://alarm.example.test",
            "PANICBUTTON_LOG_KEY_FILE": str(write_log_key(site_file.parent / "log.key")),
            "PANICBUTTON_LOG_CHECKPOINT_FILE": str(site_file.parent / "log-checkpoints.jsonl"),
            # Units never report in this test: no unit-offline alert may page the manager.
            "PANICBUTTON_OFFLINE_GRACE": "3600",
        }
    )
    return env
