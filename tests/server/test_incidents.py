"""Incidents on SQLite and PostgreSQL: one per alert, codes per phone, log in step."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from panicbutton.wire import Alert, new_alert_id
from server import incidents
from server.db import make_engine, migrate, sessions
from server.escalation import plans, reply_codes, steps
from server.models import Incident, LogEntry, Outcome, Page, State
from server.site import Site
from tests.harness import sample_site

NOW = datetime(2026, 3, 29, 0, 59, tzinfo=UTC)  # 01:59 in Brussels, just before DST starts
SITE = sample_site()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent: a restart runs it again
    yield engine
    engine.dispose()


def alert(device: str = "unit-1", seq: int = 1) -> Alert:
    return Alert(device_id=device, alert_id=new_alert_id(), seq=seq, pressed_at=NOW)


def record(s: Session, a: Alert) -> incidents.AlertResult:
    room = SITE.room_for_device(a.device_id)
    assert room is not None
    return incidents.record_alert(session=s, site=SITE, room=room, alert=a, now=NOW)


def count(s: Session, model: type[object]) -> int:
    return s.scalar(select(func.count()).select_from(model)) or 0


def test_same_alert_opens_one_incident_and_pages_once(engine: Engine) -> None:
    a = alert()
    for _ in range(3):
        with sessions(engine).begin() as s:
            result = record(s, a)
    assert result.new is False
    assert result.page_ids == []
    with sessions(engine)() as s:
        assert count(s, Incident) == 1
        assert count(s, Page) == 4  # both people on duty, by SMS and call, once
        assert s.scalars(select(LogEntry.type)).all().count("alert.raised") == 1


def test_reply_codes_are_random_three_digits_and_unique_per_phone(engine: Engine) -> None:
    with sessions(engine).begin() as s:
        opened = [record(s, alert(f"unit-{i}")).incident.id for i in (1, 2, 3)]
    with sessions(engine)() as s:
        codes = {(p.incident_id, p.staff_id): p.reply_code for p in s.scalars(select(Page))}
    mine = [codes[(i, "reception")] for i in opened]
    assert all(100 <= c <= 999 for c in codes.values())
    assert len(set(mine)) == 3
    assert mine != [1, 2, 3]


def test_a_reply_code_is_never_reused_while_its_incident_is_open(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three codes only: uniqueness, not luck, must keep them apart.
    monkeypatch.setattr(reply_codes, "CODE_TIERS", ((10**6, range(100, 103)),))
    with sessions(engine).begin() as s:
        record(s, alert("unit-1"))
        record(s, alert("unit-2"))
        record(s, alert("unit-3"))
    with sessions(engine).begin() as s:
        codes = {(p.incident_id, p.staff_id): p.reply_code for p in s.scalars(select(Page))}
        assert {c for (_, staff), c in codes.items() if staff == "reception"} == {100, 101, 102}


def test_acknowledge_counts_once_and_resolve_needs_outcome(engine: Engine) -> None:
    with sessions(engine).begin() as s:
        opened = record(s, alert())
    later = NOW + timedelta(seconds=40)
    with sessions(engine).begin() as s:
        inc = s.get_one(Incident, opened.incident.id)
        assert incidents.acknowledge(
            session=s, incident=inc, staff_id="floor", via="sms", now=later
        )
        assert not incidents.acknowledge(
            session=s, incident=inc, staff_id="reception", via="sms", now=later
        )
        assert incidents.resolve(
            session=s, incident=inc, staff_id="floor", outcome=Outcome.GENUINE, now=later
        )
    with sessions(engine)() as s:
        inc = s.get_one(Incident, opened.incident.id)
        assert (inc.state, inc.acknowledged_by, inc.outcome) == (
            State.RESOLVED,
            "floor",
            "genuine",
        )
        assert inc.acknowledged_at == later  # aware UTC on both backends
        types = s.scalars(select(LogEntry.type).order_by(LogEntry.n)).all()
        assert types.count("incident.acknowledged") == 1
        assert types[-1] == "incident.resolved"


def test_failed_transaction_leaves_neither_incident_nor_log(engine: Engine) -> None:
    def crash_before_commit() -> None:
        with sessions(engine).begin() as s:
            record(s, alert())
            raise RuntimeError("database went away before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    with sessions(engine)() as s:
        assert count(s, Incident) == 0
        assert count(s, LogEntry) == 0


def test_sequence_gap_is_logged(engine: Engine) -> None:
    with sessions(engine).begin() as s:
        record(s, alert(seq=1))
        record(s, alert(seq=4))
    with sessions(engine)() as s:
        gap = s.scalars(select(LogEntry).where(LogEntry.type == "device.sequence_gap")).one()
        assert gap.data == {"device": "unit-1", "expected": 2, "got": 4}


def log_of(engine: Engine, *types: str) -> list[tuple[str, dict[str, object]]]:
    with sessions(engine)() as s:
        rows = s.scalars(select(LogEntry).where(LogEntry.type.in_(types)).order_by(LogEntry.n))
        return [(e.type, e.data) for e in rows]


def test_sequence_going_back_is_logged(engine: Engine) -> None:
    with sessions(engine).begin() as s:
        for seq in (1, 2, 3, 4, 5, 6, 3, 7):
            record(s, alert(seq=seq))
    assert log_of(engine, "device.sequence_gap", "device.sequence_back") == [
        ("device.sequence_back", {"device": "unit-1", "previous": 6, "got": 3})
    ]


def test_one_huge_jump_does_not_hide_later_gaps(engine: Engine) -> None:
    with sessions(engine).begin() as s:
        for seq in (1, 2, 10**9, 3, 5):
            record(s, alert(seq=seq))
    # The jump is flagged, but one message does not move the mark that far: the real
    # gap after it (4 never arrived) is flagged too.
    assert log_of(engine, "device.sequence_gap", "device.sequence_back") == [
        ("device.sequence_gap", {"device": "unit-1", "expected": 3, "got": 10**9}),
        ("device.sequence_gap", {"device": "unit-1", "expected": 4, "got": 5}),
    ]


def test_a_unit_that_goes_on_counting_after_a_jump_moves_the_mark(engine: Engine) -> None:
    with sessions(engine).begin() as s:
        for seq in (1, 5000, 5001, 5003, 2):
            record(s, alert(seq=seq))
    assert log_of(engine, "device.sequence_gap", "device.sequence_back") == [
        ("device.sequence_gap", {"device": "unit-1", "expected": 2, "got": 5000}),
        ("device.sequence_gap", {"device": "unit-1", "expected": 5002, "got": 5003}),
        ("device.sequence_back", {"device": "unit-1", "previous": 5003, "got": 2}),
    ]


def many_rooms(n: int) -> Site:
    """A site of ``n`` rooms (unit-1 .. unit-n), for alarm storms."""
    token = hashlib.sha256(b"unused").hexdigest()
    return sample_site(
        rooms=[
            {
                "id": f"room-{i}",
                "label": f"Room {i}",
                "device": f"unit-{i}",
                "device_token_sha256": token,
            }
            for i in range(1, n + 1)
        ]
    )


def test_reply_codes_grow_longer_as_a_person_has_more_open_alarms(engine: Engine) -> None:
    site = many_rooms(45)
    with sessions(engine).begin() as s:
        for room in site.rooms:
            a = alert(room.device)
            incidents.record_alert(session=s, site=site, room=room, alert=a, now=NOW)
    with sessions(engine)() as s:
        pages = s.scalars(
            select(Page).where(Page.staff_id == "reception").order_by(Page.incident_id)
        )
        mine = list({p.incident_id: p.reply_code for p in pages}.values())
    # Up to 4 open alarms 3 digits, up to 40 4 digits, beyond that 5: one guess of any
    # length hits with a chance of at most 4 in 900.
    assert [len(str(c)) for c in mine] == [3] * 4 + [4] * 36 + [5] * 5
    assert len(set(mine)) == 45


def test_a_resolved_alarms_code_is_not_given_to_a_new_alarm_for_twelve_hours(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three codes of each length only: the hold, not luck, must keep them apart.
    monkeypatch.setattr(
        reply_codes, "CODE_TIERS", ((10, range(100, 103)), (10**6, range(1000, 1003)))
    )
    with sessions(engine).begin() as s:
        first = record(s, alert("unit-1"))
        record(s, alert("unit-2"))
        record(s, alert("unit-3"))
        old = s.scalar(
            select(Page.reply_code).where(
                Page.incident_id == first.incident.id, Page.staff_id == "reception"
            )
        )
        incidents.resolve(
            session=s,
            incident=s.get_one(Incident, first.incident.id),
            staff_id="reception",
            outcome=Outcome.FALSE_ALARM,
            now=NOW,
        )

    def new_code(at: datetime) -> int | None:
        with sessions(engine).begin() as s:
            room = SITE.room_for_device("unit-1")
            assert room is not None
            a = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=9, pressed_at=at)
            result = incidents.record_alert(session=s, site=SITE, room=room, alert=a, now=at)
            code = s.scalar(
                select(Page.reply_code)
                .where(Page.incident_id == result.incident.id, Page.staff_id == "reception")
                .order_by(Page.id.desc())
                .limit(1)
            )
            incidents.resolve(
                session=s,
                incident=result.incident,
                staff_id="reception",
                outcome=Outcome.TEST,
                now=at,
            )
            return code

    # A late "NNNg" for the closed room must not find a new alarm: its code stays out of use.
    soon = new_code(NOW + timedelta(hours=11))
    assert soon != old
    assert soon is not None
    assert soon >= 1000
    # After the hold, it is free again (the only free three-digit code here).
    assert new_code(NOW + timedelta(hours=13)) == old


def test_a_follow_up_with_no_taker_on_record_pages_the_last_step(engine: Engine) -> None:
    """An acknowledged row without its taker (restored or edited by hand) must still page
    someone: the follow-up goes to the plan's last step, not to a job that fails for ever."""
    with sessions(engine).begin() as s:
        opened = record(s, alert())
    later = NOW + timedelta(minutes=10)
    with sessions(engine).begin() as s:
        inc = s.get_one(Incident, opened.incident.id)
        inc.state, inc.acknowledged_by = State.ACKNOWLEDGED, None
        new = steps.run_follow_up(session=s, incident=inc, n=plans.base(inc), due=later, now=later)
    last, _ = plans.step_group(opened.incident.plan or {}, len(SITE.escalation.steps))
    with sessions(engine)() as s:
        paged = {p.staff_id for p in s.scalars(select(Page).where(Page.id.in_(new)))}
    assert new
    assert paged == set(last)
