"""A storm: many rooms press within one second, black box, against a fake Twilio that
enforces Twilio's limits (Body, TwiML, per-sender rate answered 429 + Retry-After).

The server runs as its own process (:func:`tests.bench.blackbox.server_process`,
bundling on at its default windows, step 0 paging the two people on duty by SMS).
Each room unit is a plain paho client as its own broker user (Mosquitto with
passwords and ACL), subscribed to its feedback topic before the storm; each
publishes one alert (QoS 1), all within a second. The figures, in seconds from the
last press: until every unit has heard "received" for its own alert, and until every
on-duty phone's accepted SMS name or count every room (rooms named plus "+N more",
no room named twice). Then the database is read: one incident per alert, none lost,
none twice.

The floor, in the same run: as many fresh units press on a second Mosquitto of the
same configuration, where :mod:`tests.bench.floor_child` answers each alert with its
feedback at once and makes one Twilio request (no logic, no database).
"""

from __future__ import annotations

import multiprocessing
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from server.models import Incident
from tests.bench.blackbox import Unit, fake_twilio, floor_process, server_process
from tests.harness import FLOOR, RECEPTION, Broker, start_mosquitto, wait_until

ON_DUTY = (RECEPTION, FLOOR)
#: Units connecting at once, before the storm (a thousand in series would take long).
CONNECTING = 16


@dataclass
class Coverage:
    """What one phone's accepted SMS said, oldest first."""

    named: set[int] = field(default_factory=set)
    twice: set[int] = field(default_factory=set)  # rooms named in more than one
    total: int = 0  # rooms named + rooms counted as "+N more"
    at: float | None = None  # monotonic time the total reached every room


@dataclass
class Presses:
    """One storm as the units saw it."""

    rooms: int
    span: float  # first to last publish, seconds
    last: float  # monotonic time of the last publish
    received: list[float]  # seconds from the last publish to each unit's "received"

    def drain(self) -> float | None:
        """Seconds from the last press until every unit had "received"; None if one never did."""
        return max(self.received) if len(self.received) == self.rooms else None


@dataclass
class StormRun:
    app: Presses
    floor: Presses | None
    floor_sms: float | None  # seconds from the last floor press to its last Twilio request
    sms: dict[str, Coverage]
    incidents: int  # incidents the server opened
    units: int  # distinct units among them (each pressed once)
    commits: int  # transactions they were opened in (distinct times of receipt)
    accepted_sms: int
    refused: list[tuple[int, str]]  # (Twilio code, number) of every refused request

    def reached(self) -> float | None:
        """Seconds from the last press until every on-duty phone was covered."""
        times = [c.at for c in self.sms.values()]
        return None if None in times else max(t for t in times if t) - self.app.last

    def lines(self, db: str) -> list[str]:
        app, floor = self.app, self.floor
        lost = app.rooms - self.units
        return [
            f"{app.rooms} rooms pressed within {app.span:.2f} s (server on {db}):",
            (
                f"  every unit had 'received' {_s(app.drain())} after the last press "
                f"({len(app.received)} of {app.rooms}; median {_s(_median(app.received))}); "
                f"floor {_s(floor.drain() if floor else None)}"
            ),
            (
                f"  every on-duty phone's accepted SMS named or counted every room "
                f"{_s(self.reached())} after the last press; floor's last request "
                f"{_s(self.floor_sms)}"
            ),
            (
                f"  {self.incidents} incidents for {app.rooms} alerts, in {self.commits} "
                f"commits: {lost} lost, {self.incidents - self.units} twice; "
                f"{self.accepted_sms} SMS accepted, "
                f"{len(self.refused)} requests refused "
                f"({', '.join(sorted({str(c) for c, _ in self.refused})) or 'none'})"
            ),
        ]


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def says(text: str) -> tuple[set[int], int]:
    """(rooms named, rooms counted as "+N more") in one SMS."""
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


#: Units per pressing process: paho waits with select(), which takes no descriptor
#: above 1,024, and each unit holds three.
PER_PROCESS = 200


def press_all(broker: Broker, units: list[str], timeout: float) -> Presses:
    """Connect ``units`` (each subscribed to its feedback) in processes of
    PER_PROCESS, press each once within a second once all are connected, and wait up
    to ``timeout`` s for every unit's "received"."""
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    groups = [units[i : i + PER_PROCESS] for i in range(0, len(units), PER_PROCESS)]
    ready = ctx.Barrier(len(groups) + 1)
    procs = [
        ctx.Process(
            target=_press_group,
            args=({u: broker.users[u] for u in g}, broker.port, ready, go, results, timeout),
        )
        for g in groups
    ]
    for p in procs:
        p.start()
    try:
        ready.wait(timeout)
        go.set()
        found = [results.get(timeout=timeout + 30) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    first, last = min(f[0] for f in found), max(f[1] for f in found)
    return Presses(
        rooms=len(units),
        span=last - first,
        last=last,
        received=[t - last for f in found for t in f[2]],
    )


def _press_group(
    users: dict[str, str],
    port: int,
    ready: Any,
    go: Any,
    results: Any,
    timeout: float,
) -> None:
    """In a pressing process: connect, wait for ``go``, press, wait for "received";
    puts (first press, last press, [each "received"]) in monotonic seconds, which
    every process on the machine shares."""
    with ThreadPoolExecutor(CONNECTING) as pool:
        clients = list(pool.map(lambda u: Unit(u, users[u], port), users))
    try:
        ready.wait(timeout)
        go.wait(timeout)
        first = time.monotonic()
        for unit in clients:
            unit.alert()
        last = time.monotonic()
        wait_until(lambda: all(u.received.is_set() for u in clients), timeout, step=0.05)
        results.put((first, last, [u.received_at for u in clients if u.received.is_set()]))
    finally:
        with ThreadPoolExecutor(CONNECTING) as pool:
            list(pool.map(Unit.close, clients))


def measure_storm(
    folder: Path,
    rooms: int = 200,
    *,
    database_url: str | None = None,
    floor: bool = True,
    timeout: float = 180.0,
) -> StormRun:
    """Start a broker with ``rooms`` unit users and the server as its own process (on
    ``database_url``, SQLite in ``folder`` by default), press every room within a second
    and wait until every unit heard "received" and every on-duty phone is covered (or
    ``timeout``); then the floor's storm, unless ``floor`` is False."""
    units = [f"unit-{i}" for i in range(1, rooms + 1)]
    url = database_url or f"sqlite:///{folder / 'storm.sqlite3'}"
    with ExitStack() as stack:
        broker = stack.enter_context(start_mosquitto(folder / "mosquitto", devices=units))
        # Twilio's limits, the per-sender rate (429 + Retry-After) included.
        twilio = fake_twilio(stack)
        with server_process(broker, twilio, url, folder, units, bundling=True):
            app = press_all(broker, units, timeout)

            def sms() -> dict[str, Coverage]:
                texts = list(twilio.sent)
                return {
                    p: coverage([(s.at, s.body) for s in texts if s.to == p], rooms)
                    for p in ON_DUTY
                }

            wait_until(lambda: all(c.at is not None for c in sms().values()), timeout, step=0.2)
            covered = sms()
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                opened = conn.scalar(select(func.count()).select_from(Incident)) or 0
                rooms_in = conn.scalar(select(func.count(func.distinct(Incident.device_id)))) or 0
                # Alerts recorded together share their moment of receipt.
                commits = conn.scalar(select(func.count(func.distinct(Incident.received_at)))) or 0
        finally:
            engine.dispose()
        accepted, refused = len(twilio.sent), [(r.code, r.to) for r in twilio.refused]
        floor_run = floor_sms = None
        if floor:
            floor_broker = stack.enter_context(start_mosquitto(folder / "floor", devices=units))
            twilio.sender_rate = 0.0  # the floor's one request per alert, no logic
            before = len(twilio.sent)
            with floor_process(floor_broker, twilio, folder):
                floor_run = press_all(floor_broker, units, timeout)
                if twilio.wait_for(lambda sent: len(sent) >= before + rooms, timeout):
                    floor_sms = max(s.at for s in twilio.sent[before:]) - floor_run.last
    return StormRun(
        app=app,
        floor=floor_run,
        floor_sms=floor_sms,
        sms=covered,
        incidents=opened,
        units=rooms_in,
        commits=commits,
        accepted_sms=accepted,
        refused=refused,
    )
