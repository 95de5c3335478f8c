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


def test_valid_site_defaults_to_paging_duty_at_once() -> None:
    parsed = parse_site(site())
    assert [s.after for s in parsed.steps] == [0]
    assert parsed.recipients("on_duty")[0].phone == "+32470000001"
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
        ({"duty": {}}, "on_duty is empty"),
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
        ({"rooms": [{"id": "room-1", "label": "A"}]}, "rooms\\[0\\]: `device` is missing"),
    ],
)
def test_mistakes_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SiteError, match=message):
        parse_site(site(**changes), "site.toml")


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match=r"copy firmware_config/site\.example\.toml"):
        load_site(tmp_path / "site.toml")
