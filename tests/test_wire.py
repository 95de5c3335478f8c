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
    ],
)
def test_malformed_alert_is_refused_with_a_reason(payload: bytes, message: str | None) -> None:
    if message is None:  # optional fields may be left out
        assert Alert.from_json(payload).presses == 1
        return
    with pytest.raises(WireError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Alert.from_json(payload)


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
