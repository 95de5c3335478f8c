"""The wire contract: what each side may send, and what it says about bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from panicbutton.wire import (
    Alert,
    AlertKind,
    Feedback,
    FeedbackState,
    LinkState,
    Status,
    WireError,
    alert_topic,
    new_alert_id,
    parse_topic,
)

PRESSED = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC)


def alert_json(**changes: object) -> bytes:
    data: dict[str, object] = {
        "v": 1,
        "device_id": "unit-1",
        "alert_id": "a" * 32,
        "seq": 7,
        "pressed_at": "2026-11-28T12:00:00.123Z",
        "kind": "panic",
        "presses": 1,
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_alert_round_trips_with_device_clock_in_utc() -> None:
    alert = Alert(
        device_id="unit-1", alert_id=new_alert_id(), seq=3, pressed_at=PRESSED, kind=AlertKind.TEST
    )
    raw = alert.to_json()
    assert json.loads(raw)["pressed_at"] == "2026-11-28T12:00:00.123Z"
    assert Alert.from_json(raw) == alert


def test_status_and_feedback_round_trip() -> None:
    status = Status(
        device_id="unit-2", state=LinkState.OFFLINE, at=PRESSED, version="0.1.0", outbox=2
    )
    feedback = Feedback(
        alert_id="b" * 32, state=FeedbackState.ACKNOWLEDGED, at=PRESSED, incident=12
    )
    assert Status.from_json(status.to_json()) == status
    assert Feedback.from_json(feedback.to_json()) == feedback


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "alert payload is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (alert_json(v=2), "contract version 2; this side speaks 1"),
        (alert_json(seq="7"), "alert.seq must be int, got '7'"),
        (alert_json(seq=True), "alert.seq must be int, got True"),
        (alert_json(seq=0), "alert.seq must be a positive integer"),
        (alert_json(alert_id="xyz"), "alert.alert_id 'xyz' must be 32 lowercase hex digits"),
        (alert_json(device_id="Unit 1"), "device id 'Unit 1' must be 1-23 characters"),
        (alert_json(pressed_at="yesterday"), "alert.pressed_at 'yesterday' is not an RFC 3339"),
        (alert_json(pressed_at="2026-11-28T12:00:00"), "has no time zone"),
        (alert_json(kind="drill"), "alert.kind must be 'panic' or 'test'"),
        (alert_json(presses=...), None),
        (b"{" + b" " * 5000 + b"}", "the limit is 4096"),
        (alert_json(v=True), "contract version True"),
        (alert_json().decode().encode("utf-16"), "alert payload is not UTF-8 text"),
        (b"\xef\xbb\xbf" + alert_json(), "alert payload is not JSON: Unexpected UTF-8 BOM"),
        (alert_json().replace(b'"unit-1"', b'"unit-1\\udcff"'), "half a character"),
        (alert_json(pressed_at="2026-W48-1T12:00Z"), "is not an RFC 3339 time"),
        (alert_json(pressed_at="20261128T120000Z"), "is not an RFC 3339 time"),
        (alert_json(pressed_at="2026-11-28 12:00:00Z"), "is not an RFC 3339 time"),
        (alert_json(pressed_at="2026-02-30T12:00:00Z"), "is not an RFC 3339 time"),
    ],
)
def test_malformed_alert_is_refused_with_a_reason(payload: bytes, message: str | None) -> None:
    if message is None:  # optional fields may be left out
        assert Alert.from_json(payload).presses == 1
        return
    with pytest.raises(WireError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Alert.from_json(payload)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        # RFC 3339 allows lower case t and z, any fraction and a leap second.
        ("2026-11-30t18:48:29.156z", datetime(2026, 11, 30, 18, 48, 29, 156000, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2026-11-28T13:00:00.1234567+01:00", datetime(2026, 11, 28, 12, 0, 0, 123456, UTC)),
    ],
)
def test_every_rfc_3339_time_is_read(text: str, moment: datetime) -> None:
    assert Alert.from_json(alert_json(pressed_at=text)).pressed_at == moment


def test_feedback_with_unknown_state_names_the_valid_ones() -> None:
    raw = json.dumps(
        {"v": 1, "alert_id": "c" * 32, "state": "done", "at": "2026-11-28T12:00:00Z", "incident": 1}
    ).encode()
    with pytest.raises(WireError, match="received, acknowledged, resolved"):
        Feedback.from_json(raw)


def test_topics_carry_version_and_device_id() -> None:
    assert alert_topic("unit-9") == "pb/v1/dev/unit-9/alert"
    assert parse_topic("pb/v1/dev/unit-9/status") == ("unit-9", "status")
    for bad in (
        "pb/v2/dev/unit-9/alert",
        "pb/v1/dev/unit-9/alert/x",
        "pb/v1/dev/+/alert",
        "pb/v1/dev/unit-9/reboot",
    ):
        with pytest.raises(WireError):
            parse_topic(bad)
