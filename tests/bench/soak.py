"""``make soak``: the server as deployed, for an hour at a realistic load.

Not part of ``make bench`` or ``make test``: it takes as long as it is told to
(``--minutes``, default 60). The server runs as its own process (as in part 9
of the bench) against a real Mosquitto and the fake Twilio; ``--units`` room
units stay connected the whole time, each sending its status every 20 s as a
real unit does, and every ``--alarm-every`` seconds a unit of its own raises an
alarm and waits for "received" and the two on-duty SMS requests.

It reports, by stretch of the run: press -> "received" and press -> first SMS
request, the server's resident memory and CPU; and at the end every alarm that
was lost (no "received" or no page within 15 s), every unit wrongly reported
offline (a page to the manager), and how much the server's memory grew in the
second half of the run (a leak shows there: the first half includes warming up).
It exits 1 when an alarm was lost or a connected unit was reported offline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from panicbutton.wire import QOS, LinkState, Status, now_utc, status_topic
from tests.bench.blackbox import ON_DUTY_SMS, fake_twilio, one_alert, server_process
from tests.bench.figures import value
from tests.bench.floor import close, connect
from tests.bench.stats import SUMMARY_HEADERS, Summary, table
from tests.harness import MANAGER, Broker, find_mosquitto, start_mosquitto

#: A page to the manager about a unit reported offline (in French, the manager's
#: language in the bench's site file), and the number of its room.
OFFLINE_TEXT = re.compile(r"PANNE: le boîtier de Room (\d+) ")
#: Seconds between a unit's statuses, as a real unit sends them (docs/asyncapi.yaml).
HEARTBEAT = 20.0
#: Seconds between the samples of the server's memory and CPU.
SAMPLE_EVERY = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    at: float  # seconds since the start of the run
    rss_mib: float
    cpu_seconds: float  # the server's user + system time so far


@dataclass
class SoakRun:
    minutes: float
    units: int
    alarm_every: float
    #: (seconds since start, press -> received, press -> first SMS) of each alarm.
    alarms: list[tuple[float, float, float]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # what became of each lost alarm
    samples: list[Sample] = field(default_factory=list)
    offline_pages: int = 0  # pages to the manager: a connected unit reported offline
    #: Alarm units reported offline: each leaves after its alarm (saying "offline", as a
    #: unit stopped cleanly does), and a room whose unit stopped is rightly reported.
    left_reported: int = 0
    heartbeats: int = 0

    def stretches(self, count: int = 4) -> list[tuple[str, list[tuple[float, float, float]]]]:
        """The alarms in ``count`` equal stretches of the run."""
        length = self.minutes * 60 / count
        return [
            (
                f"minutes {i * length / 60:.0f}-{(i + 1) * length / 60:.0f}",
                [a for a in self.alarms if i * length <= a[0] < (i + 1) * length],
            )
            for i in range(count)
        ]

    def growth_mib(self) -> float:
        """Resident memory growth over the second half of the run."""
        half = [s for s in self.samples if s.at >= self.minutes * 30]
        return half[-1].rss_mib - half[0].rss_mib if len(half) >= 2 else 0.0

    def cpu_percent(self) -> float:
        """The server's CPU over the run, in % of one core."""
        if len(self.samples) < 2:
            return 0.0
        first, last = self.samples[0], self.samples[-1]
        return 100 * (last.cpu_seconds - first.cpu_seconds) / (last.at - first.at)

    def failed(self) -> bool:
        return bool(self.lost or self.offline_pages)

    def figures(self) -> dict[str, Any]:
        return {
            "title": f"Soak: {self.minutes:g} min, {self.units} units, an alarm every "
            f"{self.alarm_every:g} s",
            "values": {
                "server CPU": value(self.cpu_percent(), "% of one core"),
                "memory growth, second half": value(self.growth_mib(), "MiB"),
                "alarms lost": value(len(self.lost), "alarms"),
            },
        }

    def report(self) -> list[str]:
        rows = []
        for label, alarms in self.stretches():
            if alarms:
                rows.append(Summary.of([a[1] for a in alarms]).row(f"{label}: -> received"))
                rows.append(Summary.of([a[2] for a in alarms]).row("  -> first SMS request"))
        rss = [s.rss_mib for s in self.samples]
        return [
            (
                f"Soak: {self.minutes:g} minutes, the server as its own process (SQLite), "
                f"{self.units} units connected"
            ),
            (
                f"sending a status every {HEARTBEAT:g} s ({self.heartbeats:,} in all), an alarm "
                f"every {self.alarm_every:g} s from a unit of its own. In ms:"
            ),
            "",
            table(SUMMARY_HEADERS, rows) if rows else "  no alarms",
            "",
            f"alarms: {len(self.alarms)} received and paged, {len(self.lost)} lost"
            + "".join(f"\n  lost: {why}" for why in self.lost),
            f"units wrongly reported offline (pages to the manager): {self.offline_pages}",
            (
                f"alarm units reported offline after they left, as they should be: "
                f"{self.left_reported}"
            ),
            (
                f"server memory: {min(rss, default=0):.1f} to {max(rss, default=0):.1f} MiB; "
                f"growth over the second half {self.growth_mib():+.1f} MiB"
            ),
            f"server CPU: {self.cpu_percent():.1f} % of one core on average",
        ]


class Fleet:
    """``units`` room units connected the whole run, each sending its status every
    :data:`HEARTBEAT` seconds (spread over the period) with a Last Will, as a unit does."""

    def __init__(self, broker: Broker, units: Sequence[str]) -> None:
        self._clients: dict[str, mqtt.Client] = {}
        self.sent = 0
        for device in units:
            client = connect(device, device, broker.users[device], broker.port)
            self._clients[device] = client
            self._say(device, LinkState.ONLINE)  # as a unit does once connected
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="soak_fleet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        devices = list(self._clients)
        step = HEARTBEAT / max(1, len(devices))
        while not self._stop.is_set():
            for device in devices:
                if self._stop.wait(step):
                    return
                self._say(device, LinkState.ONLINE)

    def _say(self, device: str, state: LinkState) -> None:
        status = Status(device_id=device, state=state, at=now_utc())
        self._clients[device].publish(status_topic(device), status.to_json(), qos=QOS, retain=True)
        self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for device, client in self._clients.items():
            self._say(device, LinkState.OFFLINE)  # a clean stop, as a unit says it
            close(client)


def server_sample(pid: int, began: float) -> Sample:
    """The server's resident memory and CPU time so far, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return Sample(time.monotonic() - began, rss_kb / 1024, cpu)


def measure_soak(
    folder: Path,
    *,
    minutes: float,
    units: int,
    alarm_every: float,
    progress: Callable[[str], None] | None = None,
) -> SoakRun:
    alarms = int(minutes * 60 / alarm_every)
    fleet_units = [f"unit-{i}" for i in range(1, units + 1)]
    alarm_units = [f"unit-{i}" for i in range(units + 1, units + alarms + 1)]
    run = SoakRun(minutes=minutes, units=units, alarm_every=alarm_every)
    with contextlib.ExitStack() as stack:
        everyone = fleet_units + alarm_units
        broker = stack.enter_context(start_mosquitto(folder / "mosquitto", devices=everyone))
        # Twilio queues a sender's excess rather than refusing it (as in part 9).
        twilio = fake_twilio(stack, sender_rate=0.0)
        database = f"sqlite:///{folder / 'soak.sqlite3'}"
        # A unit that stops sending is reported after a minute, as on a site.
        server = stack.enter_context(
            server_process(
                broker, twilio, database, folder, everyone, env={"PANICBUTTON_OFFLINE_GRACE": "60"}
            )
        )
        assert server.process is not None
        pid = server.process.pid
        fleet = Fleet(broker, fleet_units)
        fleet.start()
        stack.callback(fleet.stop)
        began = time.monotonic()
        next_sample = 0.0
        for i, device in enumerate(alarm_units):
            due = began + i * alarm_every
            while (now := time.monotonic()) < due:
                if now - began >= next_sample:
                    run.samples.append(server_sample(pid, began))
                    next_sample += SAMPLE_EVERY
                time.sleep(min(due - now, 0.5))
            at = time.monotonic() - began
            try:
                received, sms = one_alert(broker, device, twilio, ON_DUTY_SMS, lambda: "")
            except TimeoutError as exc:
                run.lost.append(f"{device} at {at:.0f} s: {exc}")
            else:
                run.alarms.append((at, received, sms))
            if progress is not None and (i + 1) % 20 == 0:
                progress(f"soak: {i + 1}/{alarms} alarms, {at / 60:.1f} min")
        run.samples.append(server_sample(pid, began))
        run.heartbeats = fleet.sent
        # The manager speaks French in the bench's site file (tests/bench/blackbox.py),
        # where unit-N is in Room N.
        rooms = [
            int(found.group(1))
            for text in twilio.to(MANAGER)
            if (found := OFFLINE_TEXT.match(text)) is not None
        ]
        run.offline_pages = sum(room <= units for room in rooms)
        run.left_reported = len({room for room in rooms if room > units})
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.soak",
        description="The server as deployed for a long run at a realistic load (make soak).",
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="length (default 60)")
    parser.add_argument(
        "--units", type=int, default=50, help="units connected throughout (default 50)"
    )
    parser.add_argument(
        "--alarm-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between alarms, each from a unit of its own (default 30)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write figures as JSON")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.units < 1 or args.alarm_every <= 0:
        parser.error("--minutes and --alarm-every must be above 0, --units at least 1")
    if args.minutes * 60 < args.alarm_every:
        parser.error("--minutes is too short for even one alarm at --alarm-every")
    if find_mosquitto() is None:
        print("soak: mosquitto is not installed (apt install mosquitto)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pb-soak-") as folder:
        run = measure_soak(
            Path(folder),
            minutes=args.minutes,
            units=args.units,
            alarm_every=args.alarm_every,
            progress=lambda line: print(f"  ... {line}", file=sys.stderr, flush=True),
        )
    print("\n".join(run.report()))
    if args.json is not None:
        args.json.write_text(json.dumps(run.figures(), indent=1) + "\n")
    return 1 if run.failed() else 0


if __name__ == "__main__":
    raise SystemExit(main())
