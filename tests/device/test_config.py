"""The unit's [server] URL: the per-device token goes there, so only https, or
plain http to this very machine (the demo and tests)."""

from __future__ import annotations

from typing import Any

import pytest

from device.config import parse_config
from device.errors import ConfigError


def config(url: str) -> dict[str, Any]:
    return {
        "device": {"id": "unit-1"},
        "mqtt": {"host": "broker.example.test", "password": "a-unit-password-123"},
        "server": {"url": url, "token": "token-for-unit-1-xxxxxxxxxxxxxxxxxxxxxxxx"},
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example:8080",
        "http://localhost@evil.example/",
        "http://127.0.0.1@evil.example",
        "http://localhostevil.example",
        "http://alarm.example.test",
        "ftp://alarm.example.test",
        "https://",
        "alarm.example.test",
    ],
)
def test_server_url_refuses_plain_http_off_this_machine(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(url), "test")

    message = str(caught.value)
    assert "server.url must be https://" in message
    assert repr(url) in message


@pytest.mark.parametrize(
    "url",
    [
        "https://alarm.example.test",
        "https://alarm.example.test:8443/panicbutton/",
        "http://localhost:8080",
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
        "HTTPS://Alarm.Example.Test",
    ],
)
def test_server_url_accepts_https_and_loopback(url: str) -> None:
    https = parse_config(config(url), "test").https

    assert https is not None
    assert https.url == url.rstrip("/")
