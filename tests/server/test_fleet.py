"""A small fleet over real MQTT: each unit its own broker user and Last Will, all
heartbeating. What a manager sees in the API: every unit online and seen moments
ago, while the beats cost a transaction per flush, not one each; and a unit that
drops, by a closed socket or by silence, shown offline within the timeout. Units
coming up together are shown online within a moment, written together; what the
server heard just before it stops is still on record when it starts again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from server.site import Site, parse_site
from tests import web
from tests.bench.fleet import Unit
from tests.conftest import HEAVY
from tests.harness import Broker, System, find_mosquitto, sample_site, start_mosquitto, wait_until

UNITS = 100
BEAT = 2.0  # seconds between a unit's heartbeats
NEVER = "unit-never"  # a room whose unit the server never hears from
SILENCE = 6.0  # the server's offline_silence here (35 s by default)


@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[Broker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    devices = [f"unit-{i}" for i in range(1, UNITS + 1)]
    with start_mosquitto(tmp_path / "mosquitto", devices=devices) as broker:
        yield broker


class Loop:
    """An asyncio loop on its own thread, where the units live."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def units_seen(system: System, headers: dict[str, str], **query: str) -> dict[str, dict[str, Any]]:
    answer = web.get(f"{system.api}/units", headers=headers, params=query, timeout=10)
    answer.raise_for_status()
    return {u["device_id"]: u for u in answer.json()}


def fleet_site(devices: list[str]) -> Site:
    """A site of one room per unit, with the sample site's staff."""
    base = sample_site()
    return parse_site(
        {
            "site": {"name": "Fleet house", "timezone": "Europe/Brussels"},
            "rooms": [
                {"id": f"room-{i}", "label": f"Room {i}", "device": d}
                for i, d in enumerate(devices, 1)
            ],
            "staff": [
                {
                    "id": p.id,
                    "name": p.name,
                    "phone": p.phone,
                    "language": p.language,
                    "role": p.role,
                }
                for p in base.staff
            ],
            "duty": {"on_duty": ["reception", "floor"]},
        },
        "tests",
    )


@HEAVY
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_fleet_heartbeats_without_a_write_each_and_a_dropped_unit_shows_offline(
    fleet_broker: Broker, database_url: str, tmp_path: Path
) -> None:
    devices = [f"unit-{i}" for i in range(1, UNITS + 1)]
    site = fleet_site(devices)
    loop = Loop()
    with System(
        mqtt_port=fleet_broker.port,
        users=fleet_broker.users,
        database_url=database_url,
        folder=tmp_path,
        site=site,
        broker=fleet_broker,
        settings={"offline_silence": SILENCE, "supervision_interval": 0.5},
    ) as system:
        assert system.server is not None
        headers = system.headers("manager")
        units: list[Unit] = []
        try:

            async def connect_all() -> None:
                # Made on their loop: a gmqtt client belongs to the loop it was made on.
                units.extend(Unit(d, fleet_broker.users[d], heartbeat=BEAT) for d in devices)
                await asyncio.gather(*(u.connect(fleet_broker.port) for u in units))

            loop.run(connect_all())
            assert wait_until(
                lambda: all(u["online"] for u in units_seen(system, headers).values()), 30
            )

            # Heartbeats flow: several per unit, and the database sees a commit per
            # flush (each supervision pass, here every 0.5 s), not one per beat.
            commits = 0

            def count(_: Any) -> None:
                nonlocal commits
                commits += 1

            engine = system.server.services.engine
            event.listen(engine, "commit", count)
            beats = sum(u.beats for u in units)
            loop.run(asyncio.sleep(3 * BEAT))
            beats = sum(u.beats for u in units) - beats
            event.remove(engine, "commit", count)
            assert beats >= 2 * UNITS, beats
            assert commits < beats / 4, (commits, beats)

            seen = units_seen(system, headers)
            now = datetime.now(UTC)
            assert all(u["online"] for u in seen.values())
            stale = [
                d
                for d, u in seen.items()
                if now - datetime.fromisoformat(u["last_seen"]) > timedelta(seconds=BEAT + 2)
            ]
            assert not stale, f"last seen long ago: {stale[:5]}"

            # One unit's socket closes without DISCONNECT (its Last Will), another
            # goes silent with its link up (a hung agent).
            closed, silent = units[0], units[1]
            before = len(system.events("device.offline"))
            loop.loop.call_soon_threadsafe(closed.close_abruptly)
            loop.loop.call_soon_threadsafe(silent.go_silent)
            timeout = SILENCE + BEAT + 2.0  # silence, plus a pass and a flush, with room

            def offline() -> set[str]:
                return {d for d, u in units_seen(system, headers).items() if not u["online"]}

            assert wait_until(lambda: offline() == {closed.device, silent.device}, timeout), (
                offline()
            )
            after = system.events("device.offline")[before:]
            reasons = {e.data["device"]: e.data["reason"] for e in after}
            assert reasons == {closed.device: "will", silent.device: "silent"}
        finally:

            async def stop_all() -> None:
                await asyncio.gather(*(u.stop() for u in units), return_exceptions=True)

            loop.run(stop_all())
            loop.close()


@HEAVY
@pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_units_coming_up_together_are_written_together_and_none_is_lost_at_stop(
    fleet_broker: Broker, database_url: str, tmp_path: Path
) -> None:
    devices = [f"unit-{i}" for i in range(1, UNITS + 1)]
    together, late = devices[:-10], devices[-10:]
    loop = Loop()
    units: list[Unit] = []

    async def connect(some: list[str]) -> None:
        # Made on their loop: a gmqtt client belongs to the loop it was made on. No
        # heartbeat after the "online" at connect: that one status is all they say.
        new = [Unit(d, fleet_broker.users[d], heartbeat=3600.0) for d in some]
        units.extend(new)
        await asyncio.gather(*(u.connect(fleet_broker.port) for u in new))

    # No supervision pass (its flush would write what the window or the stop failed to).
    settings = {"offline_silence": 3600.0, "supervision_interval": 3600.0}
    with System(
        mqtt_port=fleet_broker.port,
        users=fleet_broker.users,
        database_url=database_url,
        folder=tmp_path,
        site=fleet_site([*devices, NEVER]),
        broker=fleet_broker,
        settings=settings,
    ) as system:
        try:
            assert system.server is not None
            statuses = system.server.services.statuses
            engine = system.server.services.engine
            commits = 0

            def count(_: Any) -> None:
                nonlocal commits
                commits += 1

            # Units coming up together: each first "online" is a change of state,
            # written a burst at a time (not a transaction each), shown within a moment.
            event.listen(engine, "commit", count)
            loop.run(connect(together))
            assert wait_until(lambda: statuses.changes_written == len(together))
            event.remove(engine, "commit", count)
            assert commits < len(together) / 4, commits
            seen = units_seen(system, system.headers("manager"))
            assert sorted(d for d, u in seen.items() if u["online"]) == sorted(together)
            assert sorted(e.data["device"] for e in system.events("device.online")) == sorted(
                together
            )

            # Heard just before a stop, with no write due before it: the last ten come
            # up and one unit's socket closes (the broker publishes its Last Will).
            statuses.window = 3600.0
            dropped = units[0]
            loop.run(connect(late))
            loop.loop.call_soon_threadsafe(dropped.close_abruptly)
            assert wait_until(lambda: statuses.queued()[0] == len(late) + 1), statuses.queued()
            system.stop_server()
            assert sorted(e.data["device"] for e in system.events("device.online")) == sorted(
                devices
            )
            offline = system.events("device.offline")
            assert [(e.data["device"], e.data["reason"]) for e in offline] == [
                (dropped.device, "will")
            ]

            # Started again, the API shows what the server heard before it stopped (a
            # retained "online" replayed by the broker proves nothing on its own).
            system.start_server()
            headers = system.headers("manager")
            seen = units_seen(system, headers)
            assert [d for d, u in seen.items() if not u["online"]] == [dropped.device, NEVER]
            # Asked for only the units offline (or online), as a large site's dashboard.
            assert list(units_seen(system, headers, online="false")) == [dropped.device, NEVER]
            online = units_seen(system, headers, online="true")
            assert sorted(online) == sorted(set(devices) - {dropped.device})
        finally:

            async def stop_all() -> None:
                await asyncio.gather(*(u.stop() for u in units), return_exceptions=True)

            loop.run(stop_all())
            loop.close()
