"""Failover: two server processes on one PostgreSQL database and one Mosquitto, both
taking in alerts (an MQTT 5 shared subscription), and one SIGKILLed in the middle of
a storm.

Each room unit is a plain paho client with its own broker user that resends its
alert like a unit does (:mod:`device.delivery`: after 2, 4, 8... seconds) until the
server's "received". The figures: seconds from the kill until every on-duty phone's
accepted SMS name or count every room (the takeover), and the same from the last
press in a run where nothing is killed (the floor); how long after the kill the next
page went out, and whether any room reached a phone twice.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import create_engine, func, select

from demo.broker import free_port
from device.delivery import RESEND_FIRST
from panicbutton.wire import (
    QOS,
    Alert,
    Feedback,
    FeedbackState,
    alert_topic,
    feedback_topic,
    new_alert_id,
    now_utc,
)
from server.db import make_engine, migrate
from server.models import Incident, Page
from server.units.broker import SERVER_USER
from tests.bench.blackbox import fake_twilio
from tests.bench.floor import close, connect, subscribe
from tests.bench.storm import Coverage, coverage, says
from tests.fakes.twilio import FakeTwilio
from tests.harness import (
    FLOOR,
    MANAGER,
    RECEPTION,
    postgres_database,
    postgres_reachable,
    start_mosquitto,
    wait_until,
)
from tests.processes import ServerProcess, server_env

ON_DUTY = (RECEPTION, FLOOR)
#: The second server instance's broker user, MQTT client id and instance name.
SECOND = "panicbutton-server-2"
#: The longest resend delay of the simulated units (a unit's ``resend_max``), seconds.
RESEND_MAX = 8.0


@dataclass
class FailoverRun:
    units: int
    killed: bool
    press_span: float  # first to last press, seconds
    last_press: float  # monotonic
    kill_at: float | None  # monotonic
    received: dict[str, float]  # unit -> monotonic time its "received" came
    resends: int
    sms: dict[str, Coverage]
    #: Rooms whose incident the killed instance opened before it died (its log says so).
    opened_by_killed: set[int]
    #: Seconds from the kill until each on-duty phone had an SMS naming each of those
    #: rooms (the pages it held, taken over), the longest; None if one was never named.
    killed_rooms_paged: float | None
    #: Seconds from the kill to the next SMS Twilio accepted.
    next_page: float | None
    #: Pages in the database not "sent" at the end, by status.
    unsent: dict[str, int] = field(default_factory=dict)
    incidents: int = 0
    #: The second instance's log says it became the log's keeper; either says the log
    #: failed its check.
    second_keeps_log: bool = False
    log_failed: bool = False
    logs: str = ""

    def covered(self) -> float | None:
        """Monotonic time every on-duty phone was covered, or None."""
        times = [c.at for c in self.sms.values()]
        return None if None in times else max(t for t in times if t is not None)

    def covered_after(self) -> float | None:
        """Seconds from the kill (or, unkilled, the last press) to every phone covered."""
        covered = self.covered()
        start = self.kill_at if self.kill_at is not None else self.last_press
        return None if covered is None else covered - start

    def line(self) -> str:
        took = self.covered_after()
        when = "after the kill" if self.killed else "after the last press"
        span = f"{took:.1f} s" if took is not None else "never"
        lines = [
            (
                f"{self.units} units pressed within {self.press_span:.2f} s; "
                f"{len(self.received)} had 'received' ({self.resends} resends); every on-duty "
                f"phone's SMS named or counted every room {span} {when}"
            )
        ]
        if self.killed:
            nxt = f"{self.next_page:.2f} s" if self.next_page is not None else "never"
            paged = self.killed_rooms_paged
            lines.append(
                f"the killed instance had opened {len(self.opened_by_killed)} incident(s), "
                f"named to every phone {f'{paged:.1f} s' if paged is not None else 'never'} "
                f"after the kill; next SMS {nxt} after the kill; rooms paged twice: "
                f"{sum(len(c.twice) for c in self.sms.values())}"
            )
        return "; ".join(lines)


def site_toml(units: list[str]) -> str:
    rooms = "".join(
        f'[[rooms]]\nid = "room-{i}"\nlabel = "Room {i}"\ndevice = "{u}"\n\n'
        for i, u in enumerate(units, 1)
    )
    staff = "".join(
        f'[[staff]]\nid = "{sid}"\nname = "{name}"\nphone = "{phone}"\nlanguage = "en"\n'
        + (f'role = "{role}"\n' if role else "")
        + "\n"
        for sid, name, phone, role in (
            ("reception", "Reception", RECEPTION, ""),
            ("floor", "Floor", FLOOR, ""),
            ("manager", "Manager", MANAGER, "manager"),
        )
    )
    return (
        '[site]\nname = "Failover house"\ntimezone = "Europe/Brussels"\n\n'
        + rooms
        + staff
        + '[duty]\non_duty = ["reception", "floor"]\n\n'
        + "[escalation]\nsteps = [\n"
        + '  {after = 0, who = "on_duty", channels = ["sms"]},\n'
        + '  {after = 3600, who = "all_staff", channels = ["sms"]},\n'
        + "]\nrepeat_every = 3600\n"
    )


class Unit:
    """One room unit: its own broker user, its feedback, and resends like a unit."""

    def __init__(self, device_id: str, password: str, port: int) -> None:
        self.device_id = device_id
        self.client = connect(device_id, device_id, password, port)
        self.received: float | None = None
        self.alert = Alert(
            device_id=device_id, alert_id=new_alert_id(), seq=1, pressed_at=now_utc()
        )
        self._due = 0.0
        self._delay = RESEND_FIRST
        self.client.on_message = self._feedback
        subscribe(self.client, feedback_topic(device_id))

    def _feedback(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        feedback = Feedback.from_json(bytes(msg.payload))
        if feedback.alert_id == self.alert.alert_id and feedback.state is FeedbackState.RECEIVED:
            self.received = self.received or time.monotonic()

    def press(self) -> None:
        self.client.publish(alert_topic(self.device_id), self.alert.to_json(), qos=QOS)
        self._due = time.monotonic() + self._delay

    def resend_due(self, now: float) -> bool:
        """Resend the alert if it is unconfirmed and its time came (2, 4, 8 s...)."""
        if self.received is not None or now < self._due:
            return False
        self._delay = min(self._delay * 2, RESEND_MAX)
        self.press()
        return True


@contextmanager
def two_servers(folder: Path, database_url: str, units: list[str]) -> Iterator[Any]:
    """A Mosquitto, the fake Twilio and two server processes (A, then B) on one database."""
    with ExitStack() as stack:
        broker = stack.enter_context(
            start_mosquitto(folder / "mosquitto", devices=units, servers=(SECOND,))
        )
        # The takeover is measured here, not Twilio's pacing.
        twilio = fake_twilio(stack, sender_rate=0)
        site_file = folder / "site.toml"
        site_file.write_text(site_toml(units))
        engine = make_engine(database_url)
        migrate(engine)  # once, before two processes could race to
        engine.dispose()
        env = server_env(
            broker=broker, twilio=twilio, database_url=database_url, site_file=site_file
        )
        servers = []
        for name in (SERVER_USER, SECOND):
            (folder / name).mkdir()
            own = env | {
                "PANICBUTTON_MQTT_USERNAME": name,
                "PANICBUTTON_MQTT_PASSWORD": broker.users[name],
                "PANICBUTTON_MQTT_CLIENT_ID": name,
                "PANICBUTTON_MQTT_SHARED": "true",
                "PANICBUTTON_LOG_CHECKPOINT_FILE": str(folder / name / "log-checkpoints.jsonl"),
            }
            server = ServerProcess(own, free_port(), folder / name)
            stack.callback(server.stop)
            server.start(within=90)  # a loaded machine imports slowly
            servers.append(server)
        for server in servers:
            assert wait_until(server.connected, 30), f"not connected:\n{server.log()}"
        yield broker, twilio, servers


def measure_failover(
    folder: Path, database_url: str, units_n: int = 50, *, kill: bool = True, timeout: float = 40.0
) -> FailoverRun:
    """Press ``units_n`` units within about a second with two server instances up; SIGKILL
    the first half-way (``kill``); wait until every phone on duty is covered and the
    dust settled (every claim of the killed instance lapsed and was taken over)."""
    names = [f"unit-{i}" for i in range(1, units_n + 1)]
    with two_servers(folder, database_url, names) as (broker, twilio, (first, second)):
        units = [Unit(n, broker.users[n], broker.port) for n in names]

        def state() -> dict[str, Coverage]:
            texts = list(twilio.sent)
            return {
                p: coverage([(s.at, s.body) for s in texts if s.to == p], units_n) for p in ON_DUTY
            }

        try:
            began = time.monotonic()
            kill_at = None
            for i, unit in enumerate(units):
                if kill and i == units_n // 2:
                    # Half-way, once the first instance took in two alarms (the second's
                    # pages wait in memory for their bundle window): SIGKILL.
                    wait_until(lambda: first.log(200_000).count(" opened: room ") >= 2, 30)
                    first.kill()
                    kill_at = time.monotonic()
                unit.press()
                time.sleep(1.0 / units_n)
            last = time.monotonic()
            resends = 0

            def done() -> bool:
                nonlocal resends
                now = time.monotonic()
                resends += sum(unit.resend_due(now) for unit in units)
                return all(u.received for u in units) and all(
                    c.at is not None for c in state().values()
                )

            wait_until(done, timeout, step=0.05)
            # A duplicate would come from a claim taken over after the phones were
            # covered: wait until every claim of the killed instance has lapsed.
            settle = (kill_at or last) + 8.0
            while time.monotonic() < settle:
                done()
                time.sleep(0.05)
        finally:
            for unit in units:
                close(unit.client)
        sms = state()
        after = [s.at for s in twilio.sent if kill_at is not None and s.at >= kill_at]
        engine = create_engine(database_url)
        with engine.connect() as conn:
            unsent = dict(
                conn.execute(
                    select(Page.status, func.count())
                    .where(Page.status != "sent")
                    .group_by(Page.status)
                ).all()
            )
            incidents = conn.scalar(select(func.count()).select_from(Incident)) or 0
        engine.dispose()
        logs = first.log(200_000)
        theirs = {int(n) for n in re.findall(r" opened: room room-(\d+),", logs)} if kill else set()
        return FailoverRun(
            units=units_n,
            killed=kill,
            press_span=last - began,
            last_press=last,
            kill_at=kill_at,
            received={u.device_id: u.received for u in units if u.received is not None},
            resends=resends,
            sms=sms,
            opened_by_killed=theirs,
            killed_rooms_paged=_named_after(twilio, theirs, kill_at),
            next_page=min(after) - kill_at if after and kill_at is not None else None,
            unsent={str(k): int(v) for k, v in unsent.items()},
            incidents=incidents,
            second_keeps_log="this instance keeps the incident log" in second.log(10**7),
            log_failed="FAILED its check" in logs + second.log(10**7),
            logs=f"== first ==\n{logs[-6000:]}\n== second ==\n{second.log()}",
        )


def _named_after(twilio: FakeTwilio, rooms: set[int], since: float | None) -> float | None:
    """Seconds from ``since`` until every on-duty phone had an SMS naming each of
    ``rooms`` (the latest such first naming), or None if one never was."""
    if since is None or not rooms:
        return None
    latest = since
    for phone in ON_DUTY:
        for room in rooms:
            at = min(
                (s.at for s in twilio.sent if s.to == phone and room in says(s.body)[0]),
                default=None,
            )
            if at is None:
                return None
            latest = max(latest, at)
    return latest - since


def failover_report(folder: Path, units_n: int) -> list[str]:
    """The bench part: the same storm with two instances, once untouched (the floor) and
    once with the first SIGKILLed half-way; each on a fresh PostgreSQL database."""
    if not postgres_reachable():
        return ["", "Failover: skipped (PostgreSQL is not reachable; two instances need it)"]
    runs = []
    for kill in (False, True):
        where = folder / ("kill" if kill else "floor")
        where.mkdir(parents=True)
        with postgres_database(f"pb_bench_failover_{secrets.token_hex(4)}") as url:
            runs.append(measure_failover(where, url, units_n, kill=kill, timeout=120))
    floor, killed = runs
    took, base = killed.covered_after(), floor.covered_after()
    ratio = f"{took / base:.1f}x" if took is not None and base else "-"
    paged = killed.killed_rooms_paged
    return [
        "",
        (
            f"Failover: two server instances on one PostgreSQL database and one Mosquitto "
            f"(MQTT 5 shared subscription); {units_n} units press within about a second, each "
            "resending like a unit until 'received'; the first instance is SIGKILLed half-way."
        ),
        f"  floor (nobody killed): {floor.line()}",
        f"  killed:                {killed.line()}",
        (
            f"  takeover: the killed instance's alarms named to every phone "
            f"{f'{paged:.1f} s' if paged is not None else 'never'} after the kill; every room "
            f"covered {f'{took:.1f} s' if took is not None else 'never'} after the kill "
            f"({ratio} the floor's time after the last press)"
        ),
    ]
