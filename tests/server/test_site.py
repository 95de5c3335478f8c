"""The site file: mistakes are named with where they are and how to fix them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.errors import SiteError
from server.site import load_site, parse_site


def site(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "site": {"timezone": "Europe/Brussels"},
        "rooms": [{"id": "room-1", "label": "Room 1", "device": "unit-1"}],
        "staff": [{"id": "desk", "name": "Desk", "phone": "+32470000001", "language": "nl"}],
        "duty": {"on_duty": ["desk"]},
    }
    data.update(changes)
    return data


def test_valid_site_defaults_to_duty_then_everyone_by_sms_and_call() -> None:
    parsed = parse_site(site())
    assert [(s.after, s.who, s.channels) for s in parsed.escalation.steps] == [
        (0, "on_duty", ("sms", "call")),
        (30, "all_staff", ("sms", "call")),
    ]
    assert parsed.escalation.repeat_every == 60
    assert parsed.duty.always == ("desk",)
    assert parsed.room_for_device("unit-1") is not None
    assert parsed.room_for_device("unit-9") is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rooms": []}, "no \\[\\[rooms\\]\\]"),
        (
            {"staff": [{"id": "desk", "name": "Desk", "phone": "0470 00 00 01"}]},
            "staff\\[0\\]: phone must be in international form",
        ),
        (
            {"staff": [{"id": "desk", "name": "Desk", "phone": "+32470000001", "language": "de"}]},
            "language must be one of fr, nl, en, got 'de'",
        ),
        ({"duty": {"on_duty": ["nobody"]}}, "on_duty names 'nobody', which is not a staff id"),
        ({"duty": {}}, "names nobody"),
        (
            {"duty": {"shifts": [{"staff": "desk", "start": "25:00", "end": "06:00"}]}},
            'must be a time like "08:00"',
        ),
        ({"escalation": {"repeat_every": 0}}, "paging never stops, so it needs a pace"),
        ({"site": {"timezone": "Mars/Olympus"}}, "'Mars/Olympus' is not an IANA time zone"),
        (
            {
                "rooms": [
                    {"id": "room-1", "label": "A", "device": "unit-1"},
                    {"id": "room-2", "label": "B", "device": "unit-1"},
                ]
            },
            "room device 'unit-1' is used twice",
        ),
        ({"escalation": {"steps": [{"after": 30}]}}, "steps\\[0\\] must have after = 0"),
        ({"escalation": {"steps": [{"after": 0, "channels": ["fax"]}]}}, "sms and call"),
        ({"rooms": [{"id": "room-1", "label": "A"}]}, "rooms\\[0\\]: `device` is missing"),
    ],
)
def test_mistakes_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SiteError, match=message):
        parse_site(site(**changes), "site.toml")


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match=r"copy firmware_config/site\.example\.toml"):
        load_site(tmp_path / "site.toml")


EXAMPLE = Path(__file__).parents[2] / "firmware_config" / "site.example.toml"


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Notepad saves "UTF-8" with a byte-order mark in front.
    path = tmp_path / "site.toml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    assert load_site(path) == load_site(EXAMPLE)


def test_a_file_nested_too_deeply_is_refused_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + "z = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(SiteError) as refused:
        load_site(path)
    assert str(refused.value) == (
        f"site file {path}: arrays or tables are nested too deeply to read; a site file "
        "needs only a few levels (see firmware_config/site.example.toml)"
    )
