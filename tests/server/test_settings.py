"""No default passwords: unsafe settings stop the server at start, with the reason."""

from __future__ import annotations

import secrets

import pytest
from pydantic import SecretStr, ValidationError

from server.settings import Settings

API_TOKEN = "Xq3vL0b9-TzR7wKp2Nf5Jc8Hd1Gm6Ys4Ae0Ui9Oo2Pl"
TWILIO_TOKEN = "3f9c1a7e5b2d8c4f6a0e9b1d7c3f5a2e"
GOOD = {
    "api_token": SecretStr(API_TOKEN),
    "mqtt_password": SecretStr("Vb7-q2Lx9Rk4Wz0n"),
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": SecretStr(TWILIO_TOKEN),
    "twilio_from": "+32460000000",
    "public_base_url": "https://alarm.example.test/",
    "log_key_file": "/etc/panicbutton/log.key",
}


def test_complete_settings_are_accepted_and_url_normalised() -> None:
    settings = Settings(**GOOD)  # type: ignore[arg-type]
    assert settings.public_base_url == "https://alarm.example.test"
    assert settings.twilio_tokens() == [TWILIO_TOKEN]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"link_secret": SecretStr("changeme")},
            "PANICBUTTON_LINK_SECRET is empty or a placeholder",
        ),
        ({"link_secret": SecretStr("short-but-not-a-placeholder")}, "at least 32 characters"),
        ({"cookies_secure": False}, "only the demo on loopback runs without HTTPS"),
        ({"mqtt_password": SecretStr("")}, "PANICBUTTON_MQTT_PASSWORD is empty or a placeholder"),
        ({"public_base_url": ""}, "PANICBUTTON_PUBLIC_BASE_URL is not set"),
        ({"notifier": "console"}, "console is for the demo only"),
        ({"log_key_file": None}, "PANICBUTTON_LOG_KEY_FILE is not set"),
        # Twilio refuses a ValidityPeriod outside 1-36000 s: every page would fail.
        ({"sms_validity": 36001}, "sms_validity\n  Input should be less than or equal to 36000"),
        ({"sms_validity": 0}, "sms_validity\n  Input should be greater than or equal to 1"),
        # A rate of 0 would never send; one beyond any Twilio sender is a typo.
        ({"twilio_sms_per_second": 0}, "PANICBUTTON_TWILIO_SMS_PER_SECOND must be 0.1 to 1000"),
        ({"twilio_calls_per_second": 5000}, "PANICBUTTON_TWILIO_CALLS_PER_SECOND must be 0.1"),
        ({"twilio_burst": 0}, "PANICBUTTON_TWILIO_BURST must be 1 to 1000, got 0"),
    ],
)
def test_unsafe_settings_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**{**GOOD, **change})  # type: ignore[arg-type]


def test_the_sms_rate_follows_the_sender_unless_set() -> None:
    """A phone number sends about one SMS a second; a Messaging Service, its pool."""
    number = Settings(**GOOD)  # type: ignore[arg-type]
    assert number.send_rates() == {"sms": 1.0, "call": 1.0}
    service = Settings(**{**GOOD, "twilio_from": "MG" + "0" * 32})  # type: ignore[arg-type]
    assert service.send_rates() == {"sms": 3.0, "call": 1.0}
    chosen = {"twilio_sms_per_second": 10, "twilio_calls_per_second": 2}
    assert Settings(**{**GOOD, **chosen}).send_rates() == {"sms": 10.0, "call": 2.0}  # type: ignore[arg-type]


HOW = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"link_secret": SecretStr("a" * 32)}, "PANICBUTTON_LINK_SECRET is too weak"),
        ({"link_secret": SecretStr("ab" * 20)}, "PANICBUTTON_LINK_SECRET is too weak"),
        ({"link_secret": SecretStr("0123456789" * 4)}, "PANICBUTTON_LINK_SECRET is too weak"),
        (
            {"link_secret": SecretStr("abcdefghijklmnopqrstuvwxyzABCDEFGH")},
            "LINK_SECRET is too weak",
        ),
        ({"mqtt_password": SecretStr("x")}, "PANICBUTTON_MQTT_PASSWORD is too short"),
        ({"mqtt_password": SecretStr("Summer2024!Summer2024!")}, "MQTT_PASSWORD is too weak"),
        ({"link_secret": SecretStr("s" * 40)}, "PANICBUTTON_LINK_SECRET is too weak"),
        # Near-periodic: a long part repeated with a little between.
        (
            {"link_secret": SecretStr("Password1Password2Password3Password4")},
            "PANICBUTTON_LINK_SECRET is too weak: a long part of it repeats",
        ),
        (
            {"link_secret": SecretStr("x7Kq-Rw2LmZ9x7Kq-Rw2LmZ9ab3Fh0Tq8Wc1")},
            "PANICBUTTON_LINK_SECRET is too weak: a long part of it repeats",
        ),
        # Made of words a guesser tries first.
        (
            {"link_secret": SecretStr("MyCompanyPanicButtonApiToken2024")},
            "PANICBUTTON_LINK_SECRET is too weak: mostly common words",
        ),
        (
            {"mqtt_password": SecretStr("WelcomeSummer2026")},
            "PANICBUTTON_MQTT_PASSWORD is too weak: mostly common words",
        ),
        ({"twilio_auth_token": SecretStr("f" * 32)}, "PANICBUTTON_TWILIO_AUTH_TOKEN is too weak"),
        (
            {"twilio_auth_token_secondary": SecretStr("0" * 32)},
            "PANICBUTTON_TWILIO_AUTH_TOKEN_SECONDARY is too weak",
        ),
        (
            {"database_url": "postgresql+psycopg://app:secret123@db/pb"},
            "the password in PANICBUTTON_DATABASE_URL is too short",
        ),
    ],
)
def test_weak_secrets_are_refused_with_how_to_make_one(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        Settings(**{**GOOD, **change})  # type: ignore[arg-type]
    text = str(caught.value)
    how = "copy it from the Twilio console" if "TWILIO" in message else HOW
    assert how in text


def test_a_database_url_without_a_password_is_accepted() -> None:
    # Peer or trust authentication on the machine itself: no password to judge.
    url = "postgresql+psycopg://app@/pb?host=/run/postgresql"
    assert Settings(**{**GOOD, "database_url": url}).database_url == url  # type: ignore[arg-type]


def test_generated_secrets_are_accepted() -> None:
    # What the README, docker-compose.yml and the test harness generate, many times over.
    for _ in range(500):
        generated = {
            "api_token": SecretStr(secrets.token_urlsafe(32)),
            "link_secret": SecretStr(secrets.token_hex(24)),
            "mqtt_password": SecretStr(secrets.token_urlsafe(12)),
            "twilio_auth_token": SecretStr(secrets.token_hex(16)),
            "database_url": f"postgresql+psycopg://app:{secrets.token_hex(24)}@db/pb",
        }
        Settings(**{**GOOD, **generated})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "demo"),
    [
        ("http://alarm.example.test", False),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("ftp://alarm.example.test", False),
        ("https://", False),
        ("http://alarm.example.test", True),
        ("http://localhost.evil.example", True),
    ],
)
def test_public_base_url_must_be_https(url: str, demo: bool) -> None:
    with pytest.raises(ValidationError, match="PANICBUTTON_PUBLIC_BASE_URL must be https://"):
        Settings(**{**GOOD, "public_base_url": url, "demo": demo})  # type: ignore[arg-type]


def test_the_demo_may_serve_plain_http_on_loopback() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        assert Settings(public_base_url=url, demo=True).public_base_url == url


def test_twilio_api_base_url_is_https_except_on_loopback() -> None:
    with pytest.raises(ValidationError, match="PANICBUTTON_TWILIO_API_BASE_URL must be https://"):
        Settings(**{**GOOD, "twilio_api_base_url": "http://api.twilio.com"})  # type: ignore[arg-type]
    local = Settings(**{**GOOD, "twilio_api_base_url": "http://127.0.0.1:5000"})  # type: ignore[arg-type]
    assert local.twilio_api_base_url == "http://127.0.0.1:5000"


def test_secrets_never_show_in_repr() -> None:
    settings = Settings(**GOOD)  # type: ignore[arg-type]
    assert API_TOKEN not in repr(settings)
    assert TWILIO_TOKEN not in str(settings.model_dump())


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANICBUTTON_DEMO", "1")
    monkeypatch.setenv("PANICBUTTON_MQTT_PORT", "18830")
    assert Settings().mqtt_port == 18830


def test_public_base_url_loses_surrounding_whitespace() -> None:
    # Webhook signatures are checked against public_base_url + path: a stray newline
    # (pasted from a file) would make every genuine Twilio webhook fail.
    for url in (
        "https://alarm.example.test\n",
        " https://alarm.example.test/ ",
        "\thttps://alarm.example.test",
    ):
        settings = Settings(**{**GOOD, "public_base_url": url})  # type: ignore[arg-type]
        assert settings.public_base_url == "https://alarm.example.test"


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("https://alarm.example.test/?x=1", "a query"),
        ("https://alarm.example.test#frag", "a fragment"),
        ("https://user:pw@alarm.example.test", "a user or password"),
        ("https://user@alarm.example.test", "a user or password"),
    ],
)
def test_public_base_url_with_a_query_fragment_or_user_is_refused(url: str, part: str) -> None:
    message = f"PANICBUTTON_PUBLIC_BASE_URL must not carry {part}:"
    with pytest.raises(ValidationError, match=message):
        Settings(**{**GOOD, "public_base_url": url})  # type: ignore[arg-type]
