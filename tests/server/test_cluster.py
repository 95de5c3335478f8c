"""Server instances on one database (:mod:`server.cluster`): who is alive, whose claims
lapse, who keeps the log, and news of each other's commits. Real SQLite and PostgreSQL;
the two-process SIGKILL drill is ``tests/test_failover.py``."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from panicbutton.clock import ManualClock
from server.cluster import LEASE, Instances, KeeperLock, Notices, SecondInstanceError
from server.db import make_engine, migrate, sessions
from server.models import Incident, Page, PageStatus
from server.paging import status
from tests.harness import postgres_database

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _instances(url: str, name: str, clock: ManualClock) -> Instances:
    engine = make_engine(url)
    migrate(engine)
    return Instances(
        name=name, sessions=sessions(engine), clock=clock, single=url.startswith("sqlite")
    )


def test_a_second_instance_on_one_sqlite_file_is_refused_and_a_restart_is_not(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/one.sqlite3"
    clock = ManualClock(START)
    first = _instances(url, "panicbutton-server", clock)
    first.check()
    first.register()
    with pytest.raises(SecondInstanceError, match="SQLite serves one server process"):
        _instances(url, "panicbutton-server-2", clock).check()
    _instances(url, "panicbutton-server", clock).check()  # the same one, restarted
    clock.advance(LEASE + 1)  # the first stopped long enough ago
    _instances(url, "panicbutton-server-2", clock).check()


def _page(incident_id: int) -> Page:
    return Page(
        incident_id=incident_id,
        staff_id="reception",
        channel="sms",
        step=0,
        reply_code=123,
        status=PageStatus.PENDING,
        created_at=START,
    )


def test_a_page_held_by_a_stopped_instance_is_taken_over_once_its_lease_lapses(
    database_url: str,
) -> None:
    clock = ManualClock(START)
    engine = make_engine(database_url)
    migrate(engine)
    db = sessions(engine)
    with db.begin() as s:
        incident = Incident(
            room_id="room-1",
            device_id="unit-1",
            alert_id="a" * 32,
            kind="panic",
            seq=1,
            state="open",
            pressed_at=START,
            received_at=START,
        )
        s.add(incident)
        s.flush()
        page = _page(incident.id)
        s.add(page)
    lease = timedelta(seconds=LEASE)
    assert status.claim(db, page.id, by="a", until=START + lease)
    assert not status.claim(db, page.id, by="b", until=START + lease), "claimed twice"
    # While "a" renews its lease, "b" takes nothing; once it lapses, "b" takes it, once.
    assert status.lapsed(db, by="b", now=START + lease / 2, lease=lease) == []
    clock.advance(LEASE + 1)
    taken = status.lapsed(db, by="b", now=clock.now(), lease=lease)
    assert [p.id for p in taken] == [page.id]
    assert status.lapsed(db, by="c", now=clock.now(), lease=lease) == []
    with db() as s:
        assert s.scalar(select(Page.claimed_by).where(Page.id == page.id)) == "b"
    engine.dispose()


@pytest.mark.usefixtures("pg_available")
def test_one_keeper_at_a_time_and_the_next_once_the_holder_is_gone() -> None:
    with postgres_database(f"pb_keeper_{secrets.token_hex(4)}") as url:
        first, second = make_engine(url), make_engine(url)
        a, b = KeeperLock(first), KeeperLock(second)
        assert a.held()
        assert a.held(), "the holder keeps it"
        assert not b.held()
        a.release()  # as a killed holder's connection ends
        assert b.held()
        assert not a.held()
        b.release()
        first.dispose()
        second.dispose()


@pytest.mark.usefixtures("pg_available")
def test_a_commit_announced_by_one_instance_wakes_the_other_and_not_itself() -> None:
    with postgres_database(f"pb_notices_{secrets.token_hex(4)}") as url:
        engines = [make_engine(url), make_engine(url)]
        here, there = Notices(engines[0]), Notices(engines[1])
        heard_here, heard_there = threading.Event(), threading.Event()
        here.subscribe(heard_here.set)
        there.subscribe(heard_there.set)
        here.start()
        there.start()
        try:
            # Until the other listens, an announcement is lost: announce until heard.
            for _ in range(50):
                here.committed()
                if heard_there.wait(0.1):
                    break
            assert heard_there.is_set()
            assert not heard_here.is_set(), "an instance is woken by its own commit"
        finally:
            here.stop()
            there.stop()
            for engine in engines:
                engine.dispose()
