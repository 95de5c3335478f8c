"""Twilio as it really is: a storm of alarms against a sender that takes one SMS a second
and an account that places one call a second, the server configured the same.

Rooms are pressed within a moment (the alert service called in process: this part is
about the pager, the storm part covers MQTT). The fake Twilio enforces the rate with a
burst of 2 (a request reaches Twilio a moment after its slot). The figures: seconds
from the last press until every on-duty phone's accepted SMS, and accepted calls, name
or count every room; how many SMS and calls that took; how many requests Twilio
refused (a correctly configured site: none).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from panicbutton.wire import Alert, new_alert_id, now_utc
from server.site import Site
from tests.bench.storm import ON_DUTY, Coverage, coverage
from tests.harness import System, sample_site, start_mosquitto, wait_until

#: Requests a second of the sender and of the caller, as a Twilio long code and account.
RATE = 1.0


def storm_site(units: list[str]) -> Site:
    """A room per unit; step 0 pages the people on duty by SMS and call."""
    return sample_site(
        rooms=[
            {"id": f"room-{i}", "label": f"Room {i}", "device": u} for i, u in enumerate(units, 1)
        ],
        escalation={
            "steps": [{"after": 0, "who": "on_duty"}, {"after": 3600, "who": "all_staff"}],
            "repeat_every": 600,
        },
    )


def first_say(twiml: str) -> str:
    """What a call says first (the rooms it names)."""
    found = re.search(r"<Say[^>]*>([^<]*)</Say>", twiml)
    return found.group(1) if found else ""


@dataclass
class PacedRun:
    rooms: int
    press_span: float
    sms: dict[str, Coverage]
    calls: dict[str, Coverage]
    last_press: float
    accepted_sms: int
    accepted_calls: int
    refused: int

    def reached(self, cover: dict[str, Coverage]) -> float | None:
        times = [c.at for c in cover.values()]
        return None if None in times else max(t for t in times if t) - self.last_press

    def line(self) -> str:
        sms, calls = self.reached(self.sms), self.reached(self.calls)
        return (
            f"{self.rooms} rooms pressed within {self.press_span:.2f} s at {RATE:g} SMS and "
            f"{RATE:g} call a second: every on-duty phone's SMS named or counted every room "
            f"{_s(sms)} after the last press, its calls {_s(calls)}; {self.accepted_sms} SMS "
            f"and {self.accepted_calls} calls accepted in all, {self.refused} requests refused"
        )


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def measure_pacing(folder: Path, rooms: int = 200, timeout: float = 120.0) -> PacedRun:
    """Press ``rooms`` rooms at once (SQLite, default bundle windows) and wait until every
    on-duty phone is covered by SMS and calls (or ``timeout``)."""
    units = [f"unit-{i}" for i in range(1, rooms + 1)]
    with (
        start_mosquitto(folder / "mosquitto", devices=[]) as broker,
        System(
            mqtt_port=broker.port,
            users=broker.users,
            database_url=f"sqlite:///{folder / 'pacing.sqlite3'}",
            folder=folder,
            broker=broker,
            site=storm_site(units),
            settings={
                "link_secret": SecretStr("k" * 40),
                "twilio_sms_per_second": RATE,
                "twilio_calls_per_second": RATE,
                "twilio_burst": 1,
            },
        ) as system,
    ):
        system.twilio.sender_rate, system.twilio.sender_burst = RATE, 2
        assert system.server is not None
        alerts = system.server.services.alerts
        first = time.monotonic()
        for unit in units:
            alerts.handle(
                Alert(device_id=unit, alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
            )
        last = time.monotonic()

        def state() -> tuple[dict[str, Coverage], dict[str, Coverage]]:
            texts, calls = list(system.twilio.sent), list(system.twilio.calls)
            return (
                {p: coverage([(s.at, s.body) for s in texts if s.to == p], rooms) for p in ON_DUTY},
                {
                    p: coverage([(c.at, first_say(c.twiml)) for c in calls if c.to == p], rooms)
                    for p in ON_DUTY
                },
            )

        def done() -> bool:
            sms, calls = state()
            return all(c.at is not None for c in [*sms.values(), *calls.values()])

        wait_until(done, timeout, step=0.2)
        sms, calls = state()
        return PacedRun(
            rooms=rooms,
            press_span=last - first,
            sms=sms,
            calls=calls,
            last_press=last,
            accepted_sms=len(system.twilio.sent),
            accepted_calls=len(system.twilio.calls),
            refused=len(system.twilio.refused),
        )
