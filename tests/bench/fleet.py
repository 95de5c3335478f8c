"""Fleet: N room units connected and heartbeating, the server as deployed.

A test Mosquitto (passwords, ACL) with one broker user per unit; the server as its
own process (``python -m panicbutton.cli server``, :class:`tests.processes.ServerProcess`)
with a site of N rooms; the N units in this one process, each an asyncio MQTT
client (gmqtt) with its own user and password and the Last Will a real unit sets
(a retained "offline" status, ``device/link.py``). They connect at a bounded rate,
say "online", then heartbeat every 20 s (each at a random phase, with jitter)
with a keepalive of 15 s, as ``device/`` does by default.

Measured, after every unit shows online through the API and one heartbeat period
more: the server's CPU over ``steady`` seconds (``/proc/<pid>/stat`` utime+stime,
in % of one core) and its resident memory (VmRSS, and its peak VmHWM). Then 1 % of
the units are dropped at once, half by closing their socket without a DISCONNECT
(the broker publishes their Last Will) and half by going silent while staying
connected (a hung agent: the server's silence sweep must catch it), and the API
(``/api/v1/units?online=false``, polled every second) is watched until it shows each
offline: seconds from each unit's last heartbeat, and from its drop. (The whole list,
10,000 units, is megabytes of JSON and most of a second of the server's CPU each time:
the bench asks only for the units offline, as a dashboard of a large site would.)

The floor: the server stopped, the same broker and units, and a plain paho
subscriber (this module run as a program) that only counts the statuses; its CPU
over the same time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from gmqtt import Client as MqttClient
from gmqtt import Message
from gmqtt.mqtt.constants import MQTTv311
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from demo.broker import free_port
from panicbutton.wire import QOS, LinkState, Status, now_utc, status_topic
from server.models import LogEntry
from tests.bench.blackbox import REPO, fake_twilio, site_toml
from tests.bench.figures import value
from tests.fakes.twilio import FakeTwilio
from tests.harness import MONITOR, Broker, start_mosquitto, wait_until
from tests.processes import ServerProcess, server_env

TARGET_UNITS = 10_000
TARGET_CPU = 10.0  # % of one core
TARGET_RSS_MB = 300.0
TARGET_REPORTED = 45.0  # seconds from a dropped unit's last heartbeat
HEARTBEAT = 20.0
JITTER = 1.0  # seconds either side of each heartbeat
KEEPALIVE = 15
#: Units connecting per second, as after a power cut at a large site. Each unit's
#: first "online" is a change of state (a log entry), written a burst at a time.
CONNECT_RATE = 100.0
DROP_SHARE = 0.01
#: Seconds to wait for the API to show every unit online (from the first connect), and
#: every dropped one offline.
ONLINE_TIMEOUT = 600.0
OFFLINE_TIMEOUT = 90.0
START_TIMEOUT = 120.0
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class FleetRun:
    units: int
    steady: float
    cpu: float = 0.0  # % of one core
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    beats: int = 0  # heartbeats sent while the CPU was measured
    floor_cpu: float = 0.0
    floor_beats: int = 0
    connect_seconds: float = 0.0
    online_seconds: float = 0.0
    #: Per dropped unit: (how, seconds from its last heartbeat, seconds from its drop).
    dropped: list[tuple[str, float, float]] = field(default_factory=list)
    missed: int = 0  # dropped units the API still showed online at the timeout
    #: Whether the units kept up: the most their event loop ran late (seconds), their
    #: links the broker dropped (no packet for 1.5 keepalives) and the units the API
    #: showed offline, over the steady state.
    loop_late: float = 0.0
    links_dropped: int = 0
    offline_at_end: int = 0
    #: Per dropped unit closed: seconds from its drop to the server's writing its Last
    #: Will (the time of its log entry), apart from the API's poll.
    will_written: list[float] = field(default_factory=list)
    will_drops: dict[str, float] = field(default_factory=dict)  # device: time.time()

    def report(self) -> list[str]:
        lines = [
            "",
            f"11. Fleet: {self.units:,} units in one asyncio process (gmqtt), each its own",
            (
                f"   broker user and Last Will, heartbeating every {HEARTBEAT:.0f} s "
                f"(+-{JITTER:.0f} s); the server as its own process."
            ),
            (
                f"   Connected at {CONNECT_RATE:.0f}/s in {self.connect_seconds:.0f} s; all shown "
                f"online by the API {self.online_seconds:.0f} s after the first connect."
            ),
            f"   Over {self.steady:.0f} s of steady state ({self.beats:,} heartbeats):",
            (
                f"   the units' event loop ran late by at most {self.loop_late:.1f} s; the broker "
                f"dropped {self.links_dropped} of their links; {self.offline_at_end} shown "
                "offline at its end"
            ),
            "",
            f"   server CPU {self.cpu:6.1f} % of one core (target <= {TARGET_CPU:.0f} %)",
            (
                f"   server RSS {self.rss_mb:6.0f} MB, peak {self.peak_rss_mb:.0f} MB "
                f"(target <= {TARGET_RSS_MB:.0f} MB)"
            ),
            (
                f"   floor CPU  {self.floor_cpu:6.1f} % of one core (a plain subscriber "
                f"counting {self.floor_beats:,} statuses)"
            ),
        ]
        if self.floor_cpu > 0:
            lines.append(f"   ratio           {self.cpu / self.floor_cpu:6.1f}x the floor")
        for how in ("closed", "silent"):
            rows = [(b, d) for h, b, d in self.dropped if h == how]
            if not rows:
                continue
            worst_beat = max(b for b, _ in rows)
            worst_drop = max(d for _, d in rows)
            lines.append(
                f"   dropped, {how:<6} {len(rows):4d} units: shown offline at most "
                f"{worst_beat:4.1f} s after its last heartbeat ({worst_drop:4.1f} s after the drop)"
            )
        if self.will_written:
            lines.append(
                f"   a closed unit's Last Will written by the server at most "
                f"{max(self.will_written):.1f} s after the drop (from its log entry)"
            )
        lines.append(
            f"   dropped units still shown online after {OFFLINE_TIMEOUT:.0f} s: {self.missed}"
        )
        lines.append(
            f"   (target: each within {TARGET_REPORTED:.0f} s of its last heartbeat; "
            "the API is polled every second)"
        )
        return lines

    def figures(self) -> dict[str, Any]:
        """The part's figures for the bench's JSON report and drawing."""
        values = {
            "server CPU": value(self.cpu, "% of one core", self.floor_cpu or None),
            "server resident memory": value(self.rss_mb, "MB"),
        }
        for how in ("closed", "silent"):
            if seconds := [b for h, b, _ in self.dropped if h == how]:
                values[f"unit dropped ({how}) -> shown offline"] = value(max(seconds), "s")
        return {"title": f"11. Fleet: {self.units:,} connected units", "values": values}


class Unit:
    """One simulated room unit: its own credentials, Last Will and heartbeat."""

    def __init__(self, device: str, password: str, *, heartbeat: float = HEARTBEAT) -> None:
        self.device = device
        self.password = password
        self.heartbeat = heartbeat
        self.started = time.monotonic()
        self.last_beat = 0.0
        self.beats = 0
        self.silent = False
        will = Message(status_topic(device), self._status(LinkState.OFFLINE), qos=QOS, retain=True)
        self.client = MqttClient(device, clean_session=True, will_message=will)
        self.client.set_auth_credentials(device, password)
        self.client.on_disconnect = self._disconnected
        self.links_dropped = 0
        self._task: asyncio.Task[None] | None = None

    def _disconnected(self, client: MqttClient, packet: Any, exc: Any = None) -> None:
        if not self.silent:  # the broker dropped it (gmqtt connects again by itself)
            self.links_dropped += 1

    def _status(self, state: LinkState) -> bytes:
        uptime = int(time.monotonic() - self.started) if state is LinkState.ONLINE else 0
        status = Status(device_id=self.device, state=state, at=now_utc(), uptime=uptime)
        return status.to_json()

    async def connect(self, port: int) -> None:
        await self.client.connect("127.0.0.1", port, keepalive=KEEPALIVE, version=MQTTv311)
        self.beat()
        self._task = asyncio.create_task(self._heartbeat())

    def beat(self) -> None:
        self.client.publish(
            status_topic(self.device), self._status(LinkState.ONLINE), qos=QOS, retain=True
        )
        self.last_beat = time.monotonic()
        self.beats += 1

    async def _heartbeat(self) -> None:
        await asyncio.sleep(random.uniform(0, self.heartbeat))  # units came up at different times
        jitter = min(JITTER, self.heartbeat / 10)
        while not self.silent:
            self.beat()
            await asyncio.sleep(self.heartbeat + random.uniform(-jitter, jitter))

    def go_silent(self) -> None:
        """A hung agent: no more heartbeats; the MQTT link (and its pings) stays up."""
        self.silent = True
        if self._task is not None:
            self._task.cancel()

    def close_abruptly(self) -> None:
        """The socket closes without a DISCONNECT (power cut, cable pulled with a RST):
        the broker publishes the Last Will."""
        self.go_silent()
        self.client.stop_reconnect()
        # NOTE: gmqtt has no public way to drop a link without DISCONNECT.
        self.client._connection._transport.abort()

    async def stop(self) -> None:
        self.go_silent()
        if not self.client._connection.is_closing():
            await self.client.disconnect()


class Lateness:
    """How late the event loop wakes: a loop late by seconds sends heartbeats and
    keepalive pings late, and its units look silent or dropped through no fault of
    the server's (the units' process starved of CPU on a busy machine)."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.worst = 0.0

    async def watch(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, time.monotonic() - began - self.period)


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for process {pid}")


def raise_open_files(needed: int) -> None:
    """Room for ``needed`` sockets in this process and in the Mosquitto it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(
                f"bench: {needed} open files are needed and the hard limit is {hard} "
                "(raise it with ulimit -Hn, or run with fewer --fleet-units)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextmanager
def _server(
    broker: Broker, twilio: FakeTwilio, database_url: str, folder: Path, units: list[str]
) -> Iterator[ServerProcess]:
    """The server as its own process with a site of ``units`` rooms (as the black-box
    part's, given longer to start: a site of 10,000 rooms on a busy machine)."""
    site_file = folder / "site.toml"
    site_file.write_text(site_toml(units))
    env = server_env(broker=broker, twilio=twilio, database_url=database_url, site_file=site_file)
    server = ServerProcess(env, free_port(), folder)
    try:
        server.start(within=START_TIMEOUT)
        if not wait_until(server.connected, START_TIMEOUT):
            raise TimeoutError(f"bench: the server did not connect to the broker:\n{server.log()}")
        yield server
    finally:
        server.stop()


def api_token(env: dict[str, str], folder: Path) -> str:
    """A personal API token with the ``units`` right, made as an installer would."""
    command = [sys.executable, "-m", "panicbutton.cli", "people"]
    for args in (
        ["invite", "--id", "bench", "--role", "manager"],
        ["token", "--id", "bench", "--scope", "units", "--label", "bench"],
    ):
        done = subprocess.run(
            [*command, *args], env=env, cwd=folder, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench: panicbutton people {args[0]} failed: {done.stderr}")
    token = re.search(r"pbt_\S+", done.stdout)
    if token is None:
        raise RuntimeError(f"bench: no token in: {done.stdout}")
    return token.group(0)


def offline_units(api: httpx.Client) -> set[str]:
    """The units the API shows offline (or never heard from)."""
    answer = api.get("/api/v1/units", params={"online": "false"})
    answer.raise_for_status()
    return {u["device_id"] for u in answer.json()}


def measure_fleet(
    folder: Path,
    database_url: str,
    units: int,
    *,
    steady: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> FleetRun:
    """Connect ``units`` units, measure the server and its floor, drop 1 % (at least 2)."""
    say = progress or (lambda _: None)
    # gmqtt warns for each publish racing a closed link (the dropped units, the end).
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    raise_open_files(units + 1024)
    devices = [f"unit-{i}" for i in range(1, units + 1)]
    run = FleetRun(units=units, steady=steady)
    with ExitStack() as stack:
        say(f"fleet: broker users for {units} units")
        broker = stack.enter_context(start_mosquitto(folder / "mosquitto", devices=devices))
        twilio = fake_twilio(stack)
        server = stack.enter_context(_server(broker, twilio, database_url, folder, devices))
        assert server.process is not None
        pid = server.process.pid
        token = api_token(server.env, folder)
        api = stack.enter_context(
            httpx.Client(
                base_url=f"http://127.0.0.1:{server.port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        )
        asyncio.run(_drive(broker, pid, api, run, server.stop, say))
        run.will_written = _wills_written(database_url, run.will_drops)
    return run


def _wills_written(database_url: str, drops: dict[str, float]) -> list[float]:
    """Seconds from each closed unit's drop (``drops``: wall-clock time by device) to
    the server's log entry of its Last Will."""
    engine = create_engine(database_url)
    try:
        with Session(engine) as s:
            entries = s.scalars(select(LogEntry).where(LogEntry.type == "device.offline"))
            return [
                e.at.timestamp() - drops[e.data["device"]]
                for e in entries
                if e.data.get("reason") == "will" and e.data["device"] in drops
            ]
    finally:
        engine.dispose()


async def _drive(
    broker: Broker,
    pid: int,
    api: httpx.Client,
    run: FleetRun,
    stop_server: Callable[[], None],
    say: Callable[[str], None],
) -> None:
    port = broker.port
    # Made on this loop: a gmqtt client belongs to the loop it was made on.
    fleet = [Unit(f"unit-{i}", broker.users[f"unit-{i}"]) for i in range(1, run.units + 1)]
    began = time.monotonic()
    say(f"fleet: connecting {len(fleet)} units")
    for i in range(0, len(fleet), 50):
        await asyncio.gather(*(u.connect(port) for u in fleet[i : i + 50]))
        await asyncio.sleep(max(0.0, began + (i + 50) / CONNECT_RATE - time.monotonic()))
    run.connect_seconds = time.monotonic() - began
    while offline := await asyncio.to_thread(offline_units, api):
        if time.monotonic() - began > ONLINE_TIMEOUT:
            raise TimeoutError(
                f"bench: {len(offline)} units not shown online after {ONLINE_TIMEOUT} s"
            )
        await asyncio.sleep(2)
    run.online_seconds = time.monotonic() - began
    say("fleet: steady state")
    await asyncio.sleep(HEARTBEAT)  # the burst of first statuses is over
    dropped_before = sum(u.links_dropped for u in fleet)
    lateness = Lateness()
    watch = asyncio.create_task(lateness.watch())
    run.cpu, run.beats = await _cpu_over(pid, fleet, run.steady)
    run.rss_mb, run.peak_rss_mb = memory_mb(pid), memory_mb(pid, "VmHWM")
    watch.cancel()
    run.loop_late = lateness.worst
    run.links_dropped = sum(u.links_dropped for u in fleet) - dropped_before
    run.offline_at_end = len(await asyncio.to_thread(offline_units, api))

    say("fleet: dropping 1 %")
    dropped = random.sample(fleet, max(2, round(len(fleet) * DROP_SHARE)))
    at: dict[str, tuple[str, float, float]] = {}
    for i, unit in enumerate(dropped):
        how = "closed" if i % 2 == 0 else "silent"
        last = unit.last_beat
        unit.close_abruptly() if how == "closed" else unit.go_silent()
        if how == "closed":
            run.will_drops[unit.device] = time.time()
        at[unit.device] = (how, last, time.monotonic())
    waiting = set(at)
    while waiting and time.monotonic() - max(d for _, _, d in at.values()) < OFFLINE_TIMEOUT:
        offline = await asyncio.to_thread(offline_units, api)
        seen = time.monotonic()
        for device in waiting & offline:
            how, last, drop = at[device]
            run.dropped.append((how, seen - last, seen - drop))
        waiting -= offline
        await asyncio.sleep(1.0)
    run.missed = len(waiting)

    say("fleet: floor")
    stop_server()
    floor = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.fleet", str(port), MONITOR, broker.users[MONITOR]],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert floor.stdout is not None
        if floor.stdout.readline().strip() != "ready":
            raise RuntimeError("bench: the floor subscriber did not start")
        await asyncio.sleep(HEARTBEAT)  # the retained statuses replayed at subscribe are in
        run.floor_cpu, _ = await _cpu_over(floor.pid, fleet, run.steady)
        floor.send_signal(signal.SIGTERM)
        out, _ = floor.communicate(timeout=10)
        run.floor_beats = int(out.split()[-1])
    finally:
        if floor.poll() is None:
            floor.kill()
            floor.wait(10)
    await asyncio.gather(*(u.stop() for u in fleet), return_exceptions=True)


async def _cpu_over(pid: int, fleet: list[Unit], seconds: float) -> tuple[float, int]:
    """(CPU % of one core of ``pid``, heartbeats sent) over ``seconds``."""
    beats = sum(u.beats for u in fleet)
    cpu, began = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    used, took = cpu_seconds(pid) - cpu, time.monotonic() - began
    return 100 * used / took, sum(u.beats for u in fleet) - beats


def _count_statuses(port: int, user: str, password: str) -> None:
    """The floor: a plain paho subscriber that counts statuses and does nothing else;
    prints ``ready`` once subscribed and the count on SIGTERM."""
    import threading  # noqa: PLC0415 -- only the floor's

    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    from panicbutton.wire import STATUS_SUBSCRIPTION  # noqa: PLC0415

    count = 0
    subscribed = threading.Event()
    done = threading.Event()

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        count += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user)
    client.username_pw_set(user, password)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(STATUS_SUBSCRIPTION, QOS)
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    client.connect("127.0.0.1", port, keepalive=15)
    client.loop_start()
    if not subscribed.wait(30):
        sys.exit("floor: not subscribed within 30 s")
    print("ready", flush=True)
    done.wait()
    client.loop_stop()
    print(json.dumps(count), flush=True)


if __name__ == "__main__":
    _count_statuses(int(sys.argv[1]), sys.argv[2], sys.argv[3])
