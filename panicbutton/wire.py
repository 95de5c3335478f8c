"""The MQTT wire contract between room units and the server, version 1.

Both sides import this module, so it uses the standard library only (a room
unit is a Raspberry Pi Zero 2 W), with :mod:`panicbutton.fields` and the log's
``format_time`` (:mod:`panicbutton.log.spec`), standard library themselves.
``docs/asyncapi.yaml`` documents the same topics and payloads for readers who do not
read Python.

Topics carry the contract version and the device id::

    pb/v1/dev/{device_id}/alert     device -> server, QoS 1, not retained
    pb/v1/dev/{device_id}/status    device -> server, QoS 1, retained, Last Will "offline"
    pb/v1/dev/{device_id}/feedback  server -> device, QoS 1, retained

The broker's ACL lets a device publish only under its own id (its MQTT user
name is its device id); the server checks again that the id inside a payload
matches the topic it came on.

Everything works over MQTT 3.1.1: no user properties, no response topics.

Over 300 lines on purpose: the whole contract is one module, as its AsyncAPI is one file.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Self

from panicbutton.errors import PanicbuttonError
from panicbutton.fields import REQUIRED, read_field
from panicbutton.log.spec import format_time

VERSION: Final = 1
PREFIX: Final = f"pb/v{VERSION}/dev"
QOS: Final = 1

#: Device ids are also MQTT user names, client ids and topic levels: keep them plain,
#: and within the 23 characters every MQTT 3.1.1 broker must accept as a client id.
DEVICE_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,22}$")
#: The largest number any count on the wire may hold (``seq``, ``presses``, ``outbox``,
#: ``uptime``): the server keeps them in 32-bit SQL integers.
INT_MAX: Final = 2**31 - 1


class WireError(PanicbuttonError, ValueError):
    """A payload or topic that does not follow the contract.

    The message says what is wrong in terms a person can act on.
    """


class AlertKind(StrEnum):
    PANIC = "panic"
    TEST = "test"


class FeedbackState(StrEnum):
    """What the server tells a room unit about one alert, in order."""

    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class LinkState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


def alert_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/alert"


def status_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/status"


def feedback_topic(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/feedback"


#: What the server subscribes to (single-level wildcard on the device id).
ALERT_SUBSCRIPTION: Final = f"{PREFIX}/+/alert"
STATUS_SUBSCRIPTION: Final = f"{PREFIX}/+/status"


def parse_topic(topic: str) -> tuple[str, str]:
    """Split ``pb/v1/dev/{device_id}/{kind}`` into ``(device_id, kind)``."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX:
        raise WireError(f"topic {topic!r} is not under {PREFIX}/<device_id>/<kind>")
    device_id, kind = parts[3], parts[4]
    check_device_id(device_id)
    if kind not in ("alert", "status", "feedback"):
        raise WireError(f"topic {topic!r}: unknown message kind {kind!r}")
    return device_id, kind


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise WireError(
            f"device id {device_id!r} must be 1-23 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return device_id


def now_utc() -> datetime:
    return datetime.now(UTC)


#: RFC 3339 section 5.6 ``date-time``: ASCII digits, ``T``/``t``, a fraction of any
#: length, and ``Z``/``z`` or a numeric offset (which the contract requires).
_RFC3339: Final = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-][0-9]{2}:[0-9]{2}))?"
)


def parse_time(value: object, name: str) -> datetime:
    """An RFC 3339 time with an offset. A leap second (``:60``) is read as the last
    microsecond of the minute before; other ISO 8601 forms (week dates, no separators,
    a space for ``T``) are refused."""
    if not isinstance(value, str):
        raise WireError(f"{name} must be an RFC 3339 time string, got {type(value).__name__}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise WireError(f"{name} {value!r} is not an RFC 3339 time") from None
    date, hour, minute, second, fraction, zulu, offset = match.groups()
    if zulu is None and offset is None:
        raise WireError(f"{name} {value!r} has no time zone; send UTC with a trailing Z")
    leap = second == "60"
    text = (
        f"{date}T{hour}:{minute}:{'59' if leap else second}.{(fraction or '0')[:6]:0<6}"
        f"{offset or '+00:00'}"
    )
    try:
        moment = datetime.fromisoformat(text)
        if leap:
            moment = moment.replace(microsecond=999_999)
        moment.astimezone(UTC)  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
    except ValueError:
        raise WireError(f"{name} {value!r} is not an RFC 3339 time") from None
    except OverflowError:
        raise WireError(f"{name} {value!r} is out of range in UTC; send UTC") from None
    return moment


def _load(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > 4096:
        raise WireError(f"{what} payload is {len(payload)} bytes; the limit is 4096")
    try:
        # NOTE: decoded here, strictly: json.loads(bytes) would also take UTF-16,
        # UTF-32 and a byte-order mark, which the contract does not allow.
        data = json.loads(payload.decode("utf-8"))
        # A "\udcff" escape decodes to half a character, which nothing can store (the
        # strict decode above already refused raw ones; only an escape can carry it).
        if b"\\u" in payload:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} payload is not UTF-8 text: {exc}") from None
    except UnicodeEncodeError:
        raise WireError(
            f"{what} payload holds half a character (a lone UTF-16 surrogate escape)"
        ) from None
    except json.JSONDecodeError as exc:
        raise WireError(f"{what} payload is not JSON: {exc}") from None
    except RecursionError:  # e.g. 2,000 nested brackets: within the size limit
        raise WireError(f"{what} payload is not JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise WireError(f"{what} payload must be a JSON object")
    version = data.get("v")
    if type(version) is not int or version != VERSION:  # JSON true is not 1
        raise WireError(
            f"{what} payload has contract version {version!r}; this side speaks {VERSION}"
        )
    return data


def _field(data: dict[str, Any], name: str, kind: type, what: str, default: Any = REQUIRED) -> Any:
    """``what.name``, typed as :func:`read_field` reads it; a count is within ``INT_MAX``."""
    value = read_field(
        data, name, kind, lambda problem: WireError(f"{what}.{name} {problem}"), default=default
    )
    if isinstance(value, int) and value > INT_MAX:
        raise WireError(f"{what}.{name} must be at most {INT_MAX}, got {value}")
    if isinstance(value, int) and value < 0:
        raise WireError(f"{what}.{name} must not be negative, got {value}")
    return value


def _text(value: str) -> str:
    """Free text from a unit (its version, its last fault) without control characters
    or lone surrogates: words for a person to read, which a database can store
    (PostgreSQL refuses NUL in text) and a log line cannot be forged with."""
    return "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cs"))


def _to_json(message: Alert | Status | Feedback) -> bytes:
    """A message as compact JSON, keys sorted: times in ``format_time``'s form, states
    and kinds as their values."""
    data = {
        name: format_time(value) if isinstance(value, datetime) else value
        for name, value in asdict(message).items()
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def new_alert_id() -> str:
    """A fresh alert id, made on the device at press time (UUID4, 32 hex digits)."""
    return uuid.uuid4().hex


ALERT_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class Alert:
    """One press of a room's button.

    ``alert_id`` is the idempotency key across redeliveries and paths; ``seq``
    counts the device's alerts since it was provisioned (it survives reboots, so
    the server can tell a lost alert from a quiet room); ``pressed_at`` is the
    device's clock, kept for the record but never trusted for ordering.
    """

    device_id: str
    alert_id: str
    seq: int
    pressed_at: datetime
    kind: AlertKind = AlertKind.PANIC
    presses: int = 1
    v: int = field(default=VERSION)

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        if not ALERT_ID_RE.fullmatch(self.alert_id):
            raise WireError(f"alert.alert_id {self.alert_id!r} must be 32 lowercase hex digits")
        for name, value in (("seq", self.seq), ("presses", self.presses)):
            if value < 1:
                raise WireError(f"alert.{name} must be a positive integer, got {value}")
            if value > INT_MAX:
                raise WireError(f"alert.{name} must be at most {INT_MAX}, got {value}")

    def to_json(self) -> bytes:
        return _to_json(self)

    @classmethod
    def from_json(cls, payload: bytes) -> Self:
        data = _load(payload, "alert")
        kind = data.get("kind", "panic")
        try:
            alert_kind = AlertKind(kind)
        except ValueError:
            raise WireError(f"alert.kind must be 'panic' or 'test', got {kind!r}") from None
        return cls(
            device_id=_field(data, "device_id", str, "alert"),
            alert_id=_field(data, "alert_id", str, "alert"),
            seq=_field(data, "seq", int, "alert"),
            pressed_at=parse_time(data.get("pressed_at"), "alert.pressed_at"),
            kind=alert_kind,
            presses=_field(data, "presses", int, "alert", 1),
        )


@dataclass(frozen=True, slots=True)
class Status:
    """A room unit's link state and health; retained, and its Last Will says ``offline``.

    Sent on connect and then every heartbeat period (default 20 s), so a
    silent unit is noticed even when the broker has not yet seen it drop.
    ``uptime`` is in seconds; ``outbox`` counts unconfirmed alerts; ``error``
    is the unit's last fault in words ("" when healthy).
    """

    device_id: str
    state: LinkState
    at: datetime
    version: str = ""
    outbox: int = 0
    uptime: int = 0
    error: str = ""
    v: int = field(default=VERSION)

    def to_json(self) -> bytes:
        return _to_json(self)

    @classmethod
    def from_json(cls, payload: bytes) -> Self:
        data = _load(payload, "status")
        try:
            state = LinkState(str(data.get("state")))
        except ValueError:
            raise WireError(
                f"status.state must be 'online' or 'offline', got {data.get('state')!r}"
            ) from None
        return cls(
            device_id=check_device_id(_field(data, "device_id", str, "status")),
            state=state,
            at=parse_time(data.get("at"), "status.at"),
            version=_text(str(data.get("version", ""))),
            outbox=_field(data, "outbox", int, "status", 0),
            uptime=_field(data, "uptime", int, "status", 0),
            error=_text(_field(data, "error", str, "status", ""))[:200],
        )


@dataclass(frozen=True, slots=True)
class Feedback:
    """The server's word to a room unit about one alert.

    ``received`` is sent only after the incident is committed: it is what lets
    the unit drop the alert from its outbox (the broker's PUBACK only says the
    broker has it). ``incident`` is the server's incident number, for display.
    ``presses`` is how many presses of this alert the server has recorded, so a
    re-press stays in the unit's outbox until the server has counted it.

    ``round`` is the incident's round: 0, then one more each time a press the
    unit sent before it heard ``resolved`` reopens the incident under the same
    alert id. States only move forward within a round; a higher round is the
    alert open again (the one allowed step back, from ``resolved`` to
    ``received``), and a lower round is stale news.
    """

    alert_id: str
    state: FeedbackState
    at: datetime
    incident: int
    presses: int = 1
    round: int = 0
    v: int = field(default=VERSION)

    def to_json(self) -> bytes:
        return _to_json(self)

    @classmethod
    def from_json(cls, payload: bytes) -> Self:
        data = _load(payload, "feedback")
        try:
            state = FeedbackState(str(data.get("state")))
        except ValueError:
            raise WireError(
                f"feedback.state {data.get('state')!r} is not one of "
                f"{', '.join(s.value for s in FeedbackState)}"
            ) from None
        alert_id = _field(data, "alert_id", str, "feedback")
        if not ALERT_ID_RE.fullmatch(alert_id):
            raise WireError(f"feedback.alert_id {alert_id!r} must be 32 lowercase hex digits")
        return cls(
            alert_id=alert_id,
            state=state,
            at=parse_time(data.get("at"), "feedback.at"),
            incident=_field(data, "incident", int, "feedback"),
            presses=_field(data, "presses", int, "feedback", 1),
            round=_field(data, "round", int, "feedback", 0),
        )
