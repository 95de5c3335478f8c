"""A storm: many rooms press within one second, against a fake Twilio that enforces
Twilio's limits (Body, TwiML, per-sender rate answered 429 + Retry-After).

Each room unit is a plain paho client publishing the documented alert payload as
its own broker user (Mosquitto with passwords and ACL). The figure: seconds from
the last press until every on-duty phone's accepted SMS, and accepted calls, name
or count every room (rooms named plus "+N more", with no room named twice).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import SecretStr

from panicbutton.wire import QOS, Alert, alert_topic, new_alert_id, now_utc
from server.site import Site
from tests.bench.floor import close, connect
from tests.harness import FLOOR, RECEPTION, System, sample_site, start_mosquitto, wait_until

ON_DUTY = (RECEPTION, FLOOR)


@dataclass
class Coverage:
    """What one phone's accepted SMS (or calls) said, oldest first."""

    named: set[int] = field(default_factory=set)
    twice: set[int] = field(default_factory=set)  # rooms named in more than one
    total: int = 0  # rooms named + rooms counted as "+N more"
    at: float | None = None  # monotonic time the total reached every room


@dataclass
class StormRun:
    rooms: int
    press_span: float  # first to last publish, seconds
    last_press: float
    sms: dict[str, Coverage]
    calls: dict[str, Coverage]
    accepted_sms: int
    accepted_calls: int
    refused: list[tuple[int, str]]  # (Twilio code, number) of every refused request
    call_window: float

    def reached(self, channel: str) -> float | None:
        """Seconds from the last press until every on-duty phone was covered."""
        cover = self.sms if channel == "sms" else self.calls
        times = [c.at for c in cover.values()]
        return None if None in times else max(t for t in times if t) - self.last_press

    def line(self) -> str:
        sms, calls = self.reached("sms"), self.reached("call")
        both = None if sms is None or calls is None else max(sms, calls)
        return (
            f"{self.rooms} rooms pressed within {self.press_span:.2f} s; every on-duty phone "
            f"had accepted SMS and calls naming or counting every room "
            f"{_s(both)} after the last press (SMS {_s(sms)}, calls {_s(calls)}, the call "
            f"bundle window being {self.call_window:.0f} s); {self.accepted_sms} SMS and "
            f"{self.accepted_calls} calls accepted, {len(self.refused)} requests refused "
            f"({', '.join(sorted({str(c) for c, _ in self.refused})) or 'none'})"
        )


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def storm_site(units: list[str]) -> Site:
    return sample_site(
        rooms=[
            {"id": f"room-{i}", "label": f"Room {i}", "device": u} for i, u in enumerate(units, 1)
        ],
        # Step 0 only: the people on duty, by SMS and call.
        escalation={
            "steps": [{"after": 0, "who": "on_duty"}, {"after": 3600, "who": "all_staff"}],
            "repeat_every": 600,
        },
    )


def says(text: str) -> tuple[set[int], int]:
    """(rooms named, rooms counted as "+N more") in one SMS or a call's first Say."""
    more = re.search(r"(\d+) (?:more rooms|andere kamers)", text)
    return {int(n) for n in re.findall(r"Room (\d+)", text)}, int(more.group(1)) if more else 0


def coverage(items: list[tuple[float, str]], rooms: int) -> Coverage:
    cover = Coverage()
    for at, text in sorted(items):
        named, more = says(text)
        cover.twice |= named & cover.named
        cover.named |= named
        cover.total += len(named) + more
        if cover.total >= rooms and cover.at is None:
            cover.at = at
    return cover


def first_say(twiml: str) -> str:
    found = re.search(r"<Say[^>]*>([^<]*)</Say>", twiml)
    return found.group(1) if found else ""


def measure_storm(folder: Path, rooms: int = 200, timeout: float = 180.0) -> StormRun:
    """Start a broker with ``rooms`` unit users and a server (SQLite), press every room
    within a second and wait until every on-duty phone is covered (or ``timeout``)."""
    units = [f"unit-{i}" for i in range(1, rooms + 1)]
    with (
        start_mosquitto(folder / "mosquitto", devices=units) as broker,
        System(
            mqtt_port=broker.port,
            users=broker.users,
            database_url=f"sqlite:///{folder / 'storm.sqlite3'}",
            folder=folder,
            broker=broker,
            site=storm_site(units),
            settings={"link_secret": SecretStr("k" * 40)},
        ) as system,
    ):
        clients: list[mqtt.Client] = [connect(u, u, broker.users[u], broker.port) for u in units]
        try:
            payloads = [
                Alert(device_id=u, alert_id=new_alert_id(), seq=1, pressed_at=now_utc()).to_json()
                for u in units
            ]
            first = time.monotonic()
            sent = [
                c.publish(alert_topic(u), p, qos=QOS)
                for c, u, p in zip(clients, units, payloads, strict=True)
            ]
            last = time.monotonic()
            for info in sent:
                info.wait_for_publish(30)

            def state() -> tuple[dict[str, Coverage], dict[str, Coverage]]:
                texts = list(system.twilio.sent)
                calls = list(system.twilio.calls)
                return (
                    {
                        p: coverage([(s.at, s.body) for s in texts if s.to == p], rooms)
                        for p in ON_DUTY
                    },
                    {
                        p: coverage([(c.at, first_say(c.twiml)) for c in calls if c.to == p], rooms)
                        for p in ON_DUTY
                    },
                )

            def done() -> bool:
                sms, calls = state()
                return all(c.at is not None for c in [*sms.values(), *calls.values()])

            wait_until(done, timeout, step=0.2)
        finally:
            for client in clients:
                close(client)
        sms, calls = state()
        return StormRun(
            rooms=rooms,
            press_span=last - first,
            last_press=last,
            sms=sms,
            calls=calls,
            accepted_sms=len(system.twilio.sent),
            accepted_calls=len(system.twilio.calls),
            refused=[(r.code, r.to) for r in system.twilio.refused],
            call_window=system.settings.call_bundle_window,
        )
