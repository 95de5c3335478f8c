"""A storm: 200 rooms press within one second, against a fake Twilio that enforces
Twilio's limits (Body, TwiML, per-sender rate).

Each room unit is a plain paho client publishing the documented alert payload
as its own broker user (Mosquitto with passwords and ACL). Every person on duty
must get accepted SMS and accepted calls that, together, name or count every
room: rooms named plus "+N more" add up to exactly 200, with no room named twice.

Run with ``pytest -s`` to see the figure: seconds from the last press until every
on-duty phone's accepted SMS and calls cover all 200 rooms.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import SecretStr

from panicbutton.wire import QOS, Alert, alert_topic, new_alert_id, now_utc
from server.site import Site
from tests.bench.floor import close, connect
from tests.conftest import missing
from tests.harness import (
    FLOOR,
    RECEPTION,
    System,
    find_mosquitto,
    sample_site,
    start_mosquitto,
    wait_until,
)

ROOMS = 200
UNITS = [f"unit-{i}" for i in range(1, ROOMS + 1)]
#: Generous: on a loaded 2-core machine the figure printed is what matters.
TIMEOUT = 180.0


def storm_site() -> Site:
    return sample_site(
        rooms=[
            {"id": f"room-{i}", "label": f"Room {i}", "device": u} for i, u in enumerate(UNITS, 1)
        ],
        # Step 0 only within the test: the people on duty, by SMS and call.
        escalation={
            "steps": [{"after": 0, "who": "on_duty"}, {"after": 3600, "who": "all_staff"}],
            "repeat_every": 600,
        },
    )


def coverage(text: str) -> tuple[set[int], int]:
    """(rooms named, rooms counted as "+N more") in one SMS or one call's first Say."""
    more = re.search(r"(\d+) (?:more rooms|andere kamers)", text)
    return {int(n) for n in re.findall(r"Room (\d+)", text)}, int(more.group(1)) if more else 0


def covered_at(items: list[tuple[float, str]]) -> tuple[float | None, set[int], int]:
    """When (monotonic) accepted messages first cover every room; rooms named; total."""
    named: set[int] = set()
    total = 0
    when = None
    for at, text in sorted(items):
        rooms, more = coverage(text)
        assert not rooms & named, f"a room named twice: {sorted(rooms & named)}"
        named |= rooms
        total += len(rooms) + more
        if total >= ROOMS and when is None:
            when = at
    return when, named, total


def first_say(twiml: str) -> str:
    found = re.search(r"<Say[^>]*>([^<]*)</Say>", twiml)
    return found.group(1) if found else ""


def test_a_storm_of_200_rooms_reaches_every_phone_on_duty_about_every_room(
    tmp_path: Path,
) -> None:
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    with (
        start_mosquitto(tmp_path / "mosquitto", devices=UNITS) as broker,
        System(
            mqtt_port=broker.port,
            users=broker.users,
            database_url=f"sqlite:///{tmp_path / 'storm.sqlite3'}",
            folder=tmp_path,
            broker=broker,
            site=storm_site(),
            settings={"link_secret": SecretStr("k" * 40)},
        ) as system,
    ):
        units: list[mqtt.Client] = [connect(u, u, broker.users[u], broker.port) for u in UNITS]
        try:
            payloads = [
                Alert(device_id=u, alert_id=new_alert_id(), seq=1, pressed_at=now_utc()).to_json()
                for u in UNITS
            ]
            first = time.monotonic()
            sent = [
                c.publish(alert_topic(u), p, qos=QOS)
                for c, u, p in zip(units, UNITS, payloads, strict=True)
            ]
            last = time.monotonic()
            for info in sent:
                info.wait_for_publish(30)
            assert last - first < 1.0, f"the presses took {last - first:.2f} s"

            def phone(number: str) -> tuple[float | None, float | None]:
                texts = [(s.at, s.body) for s in list(system.twilio.sent) if s.to == number]
                calls = [(c.at, first_say(c.twiml)) for c in system.twilio.calls_to(number)]
                return covered_at(texts)[0], covered_at(calls)[0]

            def done() -> bool:
                return all(None not in phone(p) for p in (RECEPTION, FLOOR))

            assert wait_until(done, TIMEOUT, step=0.2), {
                p: (
                    covered_at([(s.at, s.body) for s in system.twilio.sent if s.to == p])[2],
                    covered_at([(c.at, first_say(c.twiml)) for c in system.twilio.calls_to(p)])[2],
                )
                for p in (RECEPTION, FLOOR)
            }
        finally:
            for unit in units:
                close(unit)
        times = [phone(p) for p in (RECEPTION, FLOOR)]
        sms_at = max(t[0] for t in times if t[0] is not None)
        call_at = max(t[1] for t in times if t[1] is not None)
        for number in (RECEPTION, FLOOR):
            texts = [(s.at, s.body) for s in system.twilio.sent if s.to == number]
            calls = [(c.at, first_say(c.twiml)) for c in system.twilio.calls_to(number)]
            assert covered_at(texts)[2] == ROOMS
            assert covered_at(calls)[2] == ROOMS
        refused = [(r.code, r.to[-3:]) for r in system.twilio.refused]
        assert all(code == 20429 for code, _ in refused), refused  # only waited-out 429s
        print(
            f"\n  storm: {ROOMS} rooms pressed within {last - first:.2f} s; every on-duty phone "
            f"had accepted SMS and calls naming or counting all {ROOMS} rooms "
            f"{max(sms_at, call_at) - last:.1f} s after the last press (SMS: "
            f"{sms_at - last:.1f} s; calls: {call_at - last:.1f} s, the call bundle window "
            f"being {system.settings.call_bundle_window:.0f} s) "
            f"({len(system.twilio.sent)} SMS, {len(system.twilio.calls)} calls accepted, "
            f"{len(refused)} requests answered 429)"
        )
