"""No default passwords: unsafe settings stop the server at start, with the reason."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from server.settings import Settings

GOOD = {
    "api_token": SecretStr("k" * 40),
    "mqtt_password": SecretStr("a-real-broker-password"),
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": SecretStr("f" * 32),
    "twilio_from": "+32460000000",
    "public_base_url": "https://alarm.example.test/",
    "log_key_file": "/etc/panicbutton/log.key",
}


def test_complete_settings_are_accepted_and_url_normalised() -> None:
    settings = Settings(**GOOD)  # type: ignore[arg-type]
    assert settings.public_base_url == "https://alarm.example.test"
    assert settings.twilio_tokens() == ["f" * 32]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"api_token": SecretStr("changeme")}, "PANICBUTTON_API_TOKEN is empty or a placeholder"),
        ({"api_token": SecretStr("short-but-not-a-placeholder")}, "at least 32 characters"),
        ({"mqtt_password": SecretStr("")}, "PANICBUTTON_MQTT_PASSWORD is empty or a placeholder"),
        ({"public_base_url": ""}, "PANICBUTTON_PUBLIC_BASE_URL is not set"),
        ({"notifier": "console"}, "console is for the demo only"),
        ({"log_key_file": None}, "PANICBUTTON_LOG_KEY_FILE is not set"),
    ],
)
def test_unsafe_settings_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**{**GOOD, **change})  # type: ignore[arg-type]


def test_secrets_never_show_in_repr() -> None:
    settings = Settings(**GOOD)  # type: ignore[arg-type]
    assert "k" * 40 not in repr(settings)
    assert "f" * 32 not in str(settings.model_dump())


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANICBUTTON_DEMO", "1")
    monkeypatch.setenv("PANICBUTTON_MQTT_PORT", "18830")
    assert Settings().mqtt_port == 18830
