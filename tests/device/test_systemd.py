"""The agent tells systemd it is ready and keeps feeding the watchdog."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from device import systemd
from tests.harness import System


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    return sock


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.watchdog_interval() is None


def test_agent_says_ready_then_feeds_the_watchdog(
    system: System, notify_socket: socket.socket
) -> None:
    assert systemd.watchdog_interval() == 1.0
    system.room("unit-1")
    received = [notify_socket.recv(64).decode() for _ in range(3)]  # 5 s timeout each
    assert received[0] == "READY=1"
    assert set(received[1:]) == {"WATCHDOG=1"}
    notify_socket.close()
