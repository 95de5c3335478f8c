"""Server settings, from environment variables prefixed ``PANICBUTTON_``.

Secrets are :class:`pydantic.SecretStr` so they never show in logs or reprs.
Outside demo mode, placeholder, short or predictable secrets are refused at
start, and so is a public URL that is not https.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from server.log.personal import Retention
from server.strength import MAKE_ONE, weakness

#: Host names of this machine's loopback: plain http is allowed there where stated.
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
#: SMS a second a sender takes by default: a phone number (a long code) sends about
#: one; a Messaging Service spreads over its pool of senders (a few numbers, say).
SMS_PER_SECOND_NUMBER = 1.0
SMS_PER_SECOND_SERVICE = 3.0
#: What the rates and the burst may be set to (requests a second; requests): slower
#: would make paging crawl, faster is beyond any Twilio sender (a short code sends
#: about 100 SMS a second).
SEND_RANGE = {
    "twilio_sms_per_second": (0.1, 1000.0),
    "twilio_calls_per_second": (0.1, 1000.0),
    "twilio_burst": (1, 1000),
}


def _database_password(url: str) -> str | None:
    """The password in a database URL; None without one (or if it is no URL: the
    engine says so when it is made)."""
    try:
        password = make_url(url).password
    except ArgumentError:
        return None
    return str(password) if password else None


def _url_problem(name: str, url: str, *, http_on_loopback: bool, why: str) -> str | None:
    """What is wrong with ``url`` (https:// with a host; http:// on loopback if allowed)."""
    if not url:
        return None
    parts = urlsplit(url)
    for part, present in (
        ("a query", parts.query or "?" in url),
        ("a fragment", parts.fragment or "#" in url),
        ("a user or password", "@" in parts.netloc),
    ):
        if present:
            # The URL itself is not repeated: a user info part may hold a password.
            return (
                f"{name} must not carry {part}: give the scheme, the host and any path prefix only"
            )
    if parts.scheme == "https" and parts.hostname:
        return None
    if http_on_loopback and parts.scheme == "http" and parts.hostname in LOOPBACK:
        return None
    return f"{name} must be https:// with a host name ({why}), got {url!r}"


class Settings(BaseSettings):
    """Every setting, with its unit and default."""

    model_config = SettingsConfigDict(env_prefix="PANICBUTTON_", extra="ignore")

    #: Demo mode: console SMS and generated credentials are allowed. Never in production.
    demo: bool = False

    #: SQLAlchemy URL. Default: SQLite (WAL) in the working directory.
    #: PostgreSQL: ``postgresql+psycopg://user@host/dbname``.
    database_url: str = "sqlite:///panicbutton.sqlite3"
    #: The site file: rooms, devices, staff, duty and escalation (TOML).
    site_file: Path = Path("site.toml")
    #: The room units' wheelhouse (``panicbutton wheelhouse build --out DIR``): what units
    #: install and upgrade from, served to each unit with its token. None: not served.
    wheelhouse_dir: Path | None = None

    #: HTTP listen address and port for the API and the Twilio webhooks.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: Retired: the one shared API token of earlier versions. People now sign in or use
    #: personal API tokens; a call with this token is refused with a 401 saying so.
    api_token: SecretStr = SecretStr("")

    #: Minutes a signed-in browser may stay unused, and hours a sign-in lasts at most.
    session_idle_minutes: int = Field(default=60, ge=5, le=24 * 60)
    session_hours: int = Field(default=12, ge=1, le=7 * 24)
    #: Days a reception screen's session (role ``kiosk``) may stay unused; it has no
    #: idle limit of minutes and survives a reboot (its cookie is kept this long).
    kiosk_session_days: int = Field(default=30, ge=1, le=366)
    #: Proxies (addresses or networks) whose ``X-Forwarded-For`` names the real caller,
    #: for sign-in throttling per address; empty: the peer address is the caller.
    trusted_proxies: list[str] = []
    #: Cookies are ``Secure`` (HTTPS only). Only the demo on loopback turns this off.
    cookies_secure: bool = True
    #: Seconds within which a roster change made through another server instance (or a
    #: role that ends by itself) is in force here; a change made here is at once.
    site_refresh_seconds: float = Field(default=1.0, ge=0.0, le=60.0)

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str = "panicbutton-server"
    mqtt_password: SecretStr = SecretStr("")
    #: CA certificate for a TLS broker; None means plain TCP (loopback only).
    mqtt_ca_file: Path | None = None
    #: MQTT client id; give each server instance its own (it also names the instance
    #: in the claims it holds on pages and jobs, :mod:`server.cluster`).
    mqtt_client_id: str = "panicbutton-server"
    #: Several server instances share the units' messages: an MQTT 5 shared subscription
    #: (``$share/<mqtt_share_group>/``) on a clean session, each alert and status going to
    #: one instance. Off (one server): MQTT 3.1.1 on a persistent session, so the broker
    #: keeps what units publish while the server restarts.
    mqtt_shared: bool = False
    mqtt_share_group: str = Field(default="panicbutton", pattern=r"^[A-Za-z0-9_-]+$")

    #: ``console`` prints SMS in the terminal (demo only); ``twilio`` sends them.
    notifier: Literal["twilio", "console"] = "twilio"
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    #: Accepted for webhook signatures too while the primary token is rotated.
    twilio_auth_token_secondary: SecretStr | None = None
    #: Sender: an E.164 number or a Messaging Service SID (MG...).
    twilio_from: str = ""
    #: Caller number for voice calls (E.164); defaults to PANICBUTTON_TWILIO_FROM when
    #: that is a number (a Messaging Service SID cannot place calls).
    twilio_voice_from: str = ""
    #: Twilio's REST base URL; regional edges and tests point it elsewhere.
    twilio_api_base_url: str = "https://api.twilio.com"
    #: Seconds a page SMS may wait in Twilio's queue before it expires (1-36000), so a
    #: stale alarm never arrives late; an expired one is escalated instead.
    sms_validity: int = Field(default=300, ge=1, le=36000)
    #: Seconds before a Twilio HTTP request is abandoned.
    twilio_timeout: float = 10.0
    #: SMS a second the sender takes (PANICBUTTON_TWILIO_FROM): the server queues its
    #: SMS and sends them no faster, most urgent first. None: 1 for a phone number, 3
    #: for a Messaging Service (MG...); set it to what Twilio gives your sender.
    twilio_sms_per_second: float | None = None
    #: Calls a second the account places (Twilio's CPS; 1 unless raised).
    twilio_calls_per_second: float = 1.0
    #: Requests a sender may take at once after a quiet while, before its rate applies
    #: (1: always spaced by the rate, so Twilio never has to queue or refuse one).
    twilio_burst: int = 1
    #: The public HTTPS base URL Twilio calls our webhooks on, as Twilio sees it
    #: (behind a TLS proxy the request's own URL differs, so it comes from here).
    public_base_url: str = ""

    #: Secret that signs acknowledgement links in pages (at least 32 characters);
    #: empty leaves links out of the SMS (reply codes and calls still work).
    link_secret: SecretStr = SecretStr("")

    #: Seconds without any status from a unit before it counts as offline (1.75 heartbeat
    #: periods: with a pass every 5 s a silent unit is shown offline within 40 s, 5 s
    #: inside the 45 s asked, for the pass's own time and the statuses' way in).
    offline_silence: float = 35.0
    #: Seconds a unit must stay offline before managers are paged (skips brief reconnects).
    offline_grace: float = 15.0
    #: Seconds after a page to a person during which their pages for other incidents are
    #: bundled into one SMS (0 turns bundling off), and the same for calls.
    sms_bundle_window: float = 3.0
    call_bundle_window: float = 20.0
    #: Seconds the server's own broker link may be down before managers are told.
    broker_loss_grace: float = 30.0
    #: Seconds between supervision passes.
    supervision_interval: float = 5.0

    #: The incident log's Ed25519 signing key (`panicbutton audit keygen --out FILE`),
    #: mode 600. Keep it apart from the database and its credentials: whoever can
    #: write the database must not be able to sign. Required outside the demo.
    log_key_file: Path | None = None
    #: Every signed checkpoint is also appended here (one JSON string per line), outside
    #: the database. Keep it on another disk or copy it off the machine. Empty: not kept.
    log_checkpoint_file: Path | None = Path("log-checkpoints.jsonl")
    #: Days personal data is kept, per class (see server/personal.py for the sources):
    #: free-text notes, the roster's names and numbers, the justifications of views and
    #: exports, review sign-off remarks. Default 1826 (5 years) each.
    retention_note_days: int = Field(default=1826, ge=1)
    retention_roster_days: int = Field(default=1826, ge=1)
    retention_access_days: int = Field(default=1826, ge=1)
    retention_review_days: int = Field(default=1826, ge=1)
    #: Days a stay in the presence register is kept after its check-out. Default 365:
    #: the register answers "who was working then" for an incident, an inspection or a
    #: claim that comes within the year; beyond that the rows say where each worker
    #: was, day by day, which is more than the decree's purpose needs (GDPR art. 5(1)(e)).
    #: The log keeps only the counts, for good.
    retention_presence_days: int = Field(default=365, ge=1)
    #: Days a position a worker's phone shared during an alarm is kept after the alarm
    #: was resolved. Default 7: where the worker was matters while help goes to them and
    #: for a review or a complaint soon after, not beyond (GDPR art. 5(1)(c) and (e)).
    #: Check-in sessions (the note a worker shares) and a revoked phone's row go with
    #: the presence register (PANICBUTTON_RETENTION_PRESENCE_DAYS).
    retention_positions_days: int = Field(default=7, ge=1)

    #: Passkeys: the relying party id (a host name, never an IP address) and the exact
    #: origin browsers sign in from. Empty: the host and origin of
    #: PANICBUTTON_PUBLIC_BASE_URL (the demo: http://localhost:<port>).
    webauthn_rp_id: str = ""
    webauthn_origin: str = ""

    @field_validator("log_checkpoint_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("public_base_url", "twilio_api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        # NOTE: webhook signatures are checked against this URL + the path: a stray
        # newline pasted with it would make every genuine Twilio request fail.
        return value.strip().rstrip("/")

    @field_validator(*SEND_RANGE)
    @classmethod
    def _a_rate(cls, value: float | None, info: ValidationInfo) -> float | None:
        field = info.field_name or ""
        low, high = SEND_RANGE[field]
        if value is not None and not low <= value <= high:
            raise ValueError(
                f"PANICBUTTON_{field.upper()} must be {low:g} to {high:g}, got {value:g} "
                "(a Twilio long code sends about 1 SMS a second, an account places 1 "
                "call a second unless Twilio raised it; see the Twilio section of the "
                "server install guide)"
            )
        return value

    def send_rates(self) -> dict[str, float]:
        """Requests a second each sender takes, by channel ("sms", "call")."""
        sms = self.twilio_sms_per_second
        if sms is None:
            service = self.twilio_from.startswith("MG")
            sms = SMS_PER_SECOND_SERVICE if service else SMS_PER_SECOND_NUMBER
        return {"sms": sms, "call": self.twilio_calls_per_second}

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        problems = [
            problem
            for problem in (
                _url_problem(
                    "PANICBUTTON_PUBLIC_BASE_URL",
                    self.public_base_url,
                    # The demo's own server on this machine; Twilio and phones never see it.
                    http_on_loopback=self.demo,
                    why="staff open acknowledgement links on it and Twilio posts signed "
                    "requests to it: over plain http both cross the network readable",
                ),
                _url_problem(
                    "PANICBUTTON_TWILIO_API_BASE_URL",
                    self.twilio_api_base_url,
                    # A local stand-in for Twilio (tests): the auth token stays on the machine.
                    http_on_loopback=True,
                    why="every request carries the Twilio auth token",
                ),
            )
            if problem
        ]
        if not self.demo:
            problems += self._production_problems()
        if problems:
            raise ValueError("unsafe or missing settings:\n  - " + "\n  - ".join(problems))
        return self

    def _production_problems(self) -> list[str]:
        problems = []
        if self.notifier == "console":
            problems.append(
                "PANICBUTTON_NOTIFIER=console prints SMS instead of sending them; "
                "set it to twilio (console is for the demo only)"
            )
        if self.log_key_file is None:
            problems.append(
                "PANICBUTTON_LOG_KEY_FILE is not set: the incident log must be signed; make a "
                "key with `panicbutton audit keygen --out /etc/panicbutton/log.key`"
            )
        if not self.cookies_secure:
            problems.append(
                "PANICBUTTON_COOKIES_SECURE=false sends sign-in cookies over plain HTTP; "
                "remove it (only the demo on loopback runs without HTTPS)"
            )
        # Each secret with its shortest acceptable length; empty is refused, except the
        # link secret (empty: no links) and the secondary Twilio token (empty: none).
        secrets = [
            ("PANICBUTTON_MQTT_PASSWORD", self.mqtt_password, 16),
        ]
        if self.link_secret.get_secret_value():
            secrets.append(("PANICBUTTON_LINK_SECRET", self.link_secret, 32))
        database_password = _database_password(self.database_url)
        if database_password:  # none with peer or trust authentication on the machine
            secrets.append(
                (
                    "the password in PANICBUTTON_DATABASE_URL",
                    SecretStr(database_password),
                    16,
                )
            )
        if self.notifier == "twilio":
            secrets.append(("PANICBUTTON_TWILIO_AUTH_TOKEN", self.twilio_auth_token, 32))
            secondary = self.twilio_auth_token_secondary
            if secondary is not None and secondary.get_secret_value():
                secrets.append(("PANICBUTTON_TWILIO_AUTH_TOKEN_SECONDARY", secondary, 32))
            for name, value in (
                ("PANICBUTTON_TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                ("PANICBUTTON_TWILIO_FROM", self.twilio_from),
                ("PANICBUTTON_PUBLIC_BASE_URL", self.public_base_url),
            ):
                if not value:
                    problems.append(f"{name} is not set")
        for name, secret, shortest in secrets:
            weak = weakness(secret.get_secret_value(), shortest)
            if weak:
                hint = (
                    "copy it from the Twilio console (Account Info: Auth Token)"
                    if "TWILIO" in name
                    else f"generate one with `{MAKE_ONE}`"
                )
                problems.append(f"{name} is {weak}; {hint}")
        return problems

    def retention(self) -> Retention:
        return Retention(
            note=self.retention_note_days,
            roster=self.retention_roster_days,
            access=self.retention_access_days,
            review=self.retention_review_days,
        )

    @property
    def instance_name(self) -> str:
        """This server instance's name among those on one database (its claims carry it):
        its MQTT client id, or its MQTT user while the client id is left at its default
        (the shipped Mosquitto takes the user as the client id)."""
        default = type(self).model_fields["mqtt_client_id"].default
        return self.mqtt_username if self.mqtt_client_id == default else self.mqtt_client_id

    def secret_values(self) -> list[str]:
        """Every configured secret, for the logs to redact wherever it shows."""
        values = [
            self.api_token.get_secret_value(),
            self.mqtt_password.get_secret_value(),
            self.link_secret.get_secret_value(),
            *self.twilio_tokens(),
        ]
        password = _database_password(self.database_url)
        if password:
            values.append(password)
        return [v for v in values if v]

    def twilio_tokens(self) -> list[str]:
        """Auth tokens accepted on webhook signatures, primary first."""
        tokens = [self.twilio_auth_token.get_secret_value()]
        if self.twilio_auth_token_secondary is not None:
            tokens.append(self.twilio_auth_token_secondary.get_secret_value())
        return [t for t in tokens if t]
