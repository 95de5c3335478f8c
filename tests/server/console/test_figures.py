"""The reports page's figures from a hand-made log: response times per month and per
room, shares acknowledged within 10, 40 and 90 s, tests against the schedule, duty
gaps. No server, no browser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from server.console import figures
from server.console.figures import Event
from tests.harness import sample_site

SITE = sample_site()  # Europe/Brussels; rooms room-1..3 on unit-1..3
T0 = datetime(2026, 10, 31, 22, 30, tzinfo=UTC)  # 23:30 in Brussels: still October


def at(after: float) -> datetime:
    return T0 + timedelta(seconds=after)


def e(after: float, type_: str, incident: int | None, **data: Any) -> Event:
    return Event(at(after), type_, incident, data)


def raised(after: float, incident: int, room: str, kind: str = "panic") -> Event:
    device = room.replace("room", "unit")
    return e(after, "alert.raised", incident, kind=kind, room=room, device=device)


#: Four panic alarms, one test, one duty gap.
LOG = [
    # 1, room 1, October (Brussels time): paged after 0.5 s, acknowledged after 8 s,
    # resolved 2 min later.
    raised(0, 1, "room-1"),
    e(0.5, "page.sent", 1, page=1),
    e(1.0, "page.sent", 1, page=2),
    e(8, "incident.acknowledged", 1, staff="reception", via="sms"),
    e(128, "incident.resolved", 1, staff="reception", outcome="genuine"),
    # 2, room 2, November: acknowledged after 30 s, never resolved.
    raised(3600, 2, "room-2"),
    e(3602, "page.sent", 2, page=3),
    e(3630, "incident.acknowledged", 2, staff="floor", via="console"),
    # 3, room 1, November: pressed again after it was resolved (a second alarm):
    # round one acknowledged after 60 s, resolved 40 s later; round two after 100 s.
    raised(7200, 3, "room-1"),
    e(7201, "page.sent", 3, page=4),
    e(7260, "incident.acknowledged", 3, staff="floor", via="sms"),
    e(7300, "incident.resolved", 3, staff="floor", outcome="false_alarm"),
    e(9000, "incident.reopened", 3, round=1, presses=2),
    e(9004, "page.sent", 3, page=5),
    e(9100, "incident.acknowledged", 3, staff="reception", via="link"),
    # 4, room 3, November: nobody acknowledged, no page went out.
    raised(10000, 4, "room-3"),
    # A test alarm from room 2 that passed; a duty gap of 5 minutes; another open.
    raised(11000, 5, "room-2", kind="test"),
    e(11001, "page.sent", 5, page=6),
    e(11002, "test.completed", 5, sent=1, failed=0, result="passed"),
    e(11002, "incident.resolved", 5, staff="system", outcome="test"),
    e(12000, "duty.gap_started", 6, present=2),
    e(12300, "duty.gap_ended", 6, seconds=300, by="floor"),
    e(12300, "incident.resolved", 6, staff="system", outcome="recovered"),
    e(13000, "duty.gap_started", 7, present=1),
]


def test_each_round_of_a_panic_alarm_is_timed_from_the_servers_receipt() -> None:
    found = figures.alarms(LOG, SITE.zone)
    assert [(a.incident, a.room, a.month) for a in found] == [
        (1, "room-1", "2026-10"),
        (2, "room-2", "2026-11"),
        (3, "room-1", "2026-11"),
        (3, "room-1", "2026-11"),
        (4, "room-3", "2026-11"),
    ]
    assert [(a.to_page, a.to_acknowledge, a.to_resolve) for a in found] == [
        (0.5, 8.0, 120.0),
        (2.0, 30.0, None),
        (1.0, 60.0, 40.0),
        (4.0, 100.0, None),
        (None, None, None),
    ]


def test_months_and_rooms_give_medians_and_shares_within_10_40_90_seconds() -> None:
    result = figures.compute(LOG, SITE, at(20000))
    october, november = result.by_month
    assert (october.key, october.alarms, october.within, october.shares()) == (
        "2026-10",
        1,
        (1, 1, 1),
        (1.0, 1.0, 1.0),
    )
    # November: acknowledged after 30, 60 and 100 s; one never.
    assert (november.key, november.alarms, november.acknowledged) == ("2026-11", 4, 3)
    assert november.within == (0, 1, 2)
    assert november.shares() == (0.0, 0.25, 0.5)
    assert november.page_median == 2.0  # of 2, 1 and 4 s
    assert (november.acknowledge_median, november.acknowledge_max) == (60.0, 100.0)
    assert november.resolve_median == 40.0
    rooms = {s.key: s for s in result.by_room}
    assert sorted(rooms) == ["room-1", "room-2", "room-3"]
    assert (rooms["room-1"].alarms, rooms["room-1"].acknowledge_median) == (3, 60.0)
    assert rooms["room-1"].within == (1, 1, 2)
    assert (rooms["room-3"].alarms, rooms["room-3"].acknowledge_median) == (1, None)
    assert rooms["room-3"].shares() == (0.0, 0.0, 0.0)


def test_a_unit_is_overdue_a_year_after_its_last_test_or_at_once_if_never_tested() -> None:
    now = at(20000)
    tests = {t.room: t for t in figures.compute(LOG, SITE, now).tests}
    assert list(tests) == ["room-1", "room-2", "room-3"]  # every room, tested or not
    room2 = tests["room-2"]
    assert (room2.device, room2.tests, room2.passed) == ("unit-2", 1, 1)
    assert room2.last_result == "passed"
    assert room2.last_at == at(11000)
    assert room2.due_at == at(11000) + timedelta(days=365)
    assert not room2.overdue
    room1 = tests["room-1"]
    assert (room1.tests, room1.due_at, room1.overdue) == (0, None, True)
    later = figures.unit_tests(LOG, SITE, at(11000) + timedelta(days=366))
    assert [t.overdue for t in later] == [True, True, True]


def test_duty_gaps_count_per_month_and_one_that_goes_on_counts_until_now() -> None:
    result = figures.compute(LOG, SITE, at(13600))
    assert [(g.incident, g.seconds, g.present) for g in result.gaps] == [
        (6, 300.0, 2),
        (7, None, 1),
    ]
    assert [(m.month, m.gaps, m.seconds) for m in result.gap_months] == [("2026-11", 2, 900.0)]


def test_an_empty_log_gives_no_alarms_and_every_unit_due() -> None:
    result = figures.compute([], SITE, T0)
    assert (result.alarms, result.by_month, result.by_room, result.gaps) == ([], [], [], [])
    assert [t.overdue for t in result.tests] == [True, True, True]
