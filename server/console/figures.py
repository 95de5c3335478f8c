"""The reports page's figures, folded from the incident log: how fast alarms were
paged, acknowledged and resolved (per month and per room), the test alarms of each
room unit against the test schedule, and the gaps in the reference person's duty.

Plain functions over :class:`Event` values (what the log says, nothing else), so the
numbers are checked without a server; :func:`read` loads the events from the database.

- An *alarm* is one round of a panic incident: its ``alert.raised``, or an
  ``incident.reopened`` (a press after it was resolved starts paging over). It is
  timed from the entry's time, the moment the server received the press (the unit's
  own clock is kept in the log but is not trusted for timing), to the round's first
  ``page.sent`` (the provider took the first SMS or call), its
  ``incident.acknowledged``, and from that to its ``incident.resolved``.
- The shares acknowledged within :data:`WITHIN` seconds count every alarm, an alarm
  nobody acknowledged as not within (BS 8484 asks 80 % within 10 s and 98.5 %
  within 40 s of an alarm centre; NFPA 72 90 s from initiation to display).
- A room unit's tests are its ``test`` alerts (test button, scheduled self-test, or
  ``panicbutton device test``); each is due :data:`TEST_EVERY` after the last one.
- A duty gap is a ``duty_gap`` incident: workers present and nobody on duty, from
  ``duty.gap_started`` to ``duty.gap_ended``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import LogEntry
from server.site import Site

#: Seconds from press to acknowledgement the report counts alarms within.
WITHIN = (10, 40, 90)
#: How often each room unit must be tested, as no site setting says otherwise:
#: at least yearly (Washington WAC 296-831-300, the closest rule that names a figure).
TEST_EVERY = timedelta(days=365)
#: The log's event types the figures read.
TYPES = (
    "alert.raised",
    "incident.reopened",
    "page.sent",
    "incident.acknowledged",
    "incident.resolved",
    "test.completed",
    "duty.gap_started",
    "duty.gap_ended",
)


@dataclass(frozen=True)
class Event:
    """One log entry, as the figures read it."""

    at: datetime
    type: str
    incident: int | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Alarm:
    """One round of a panic alarm and its times, in seconds (None: it never came)."""

    incident: int
    room: str
    #: The month of the press in the site's time zone, as "2026-11".
    month: str
    pressed_at: datetime
    to_page: float | None = None
    to_acknowledge: float | None = None
    #: From the acknowledgement to the resolution.
    to_resolve: float | None = None


@dataclass(frozen=True)
class Summary:
    """Alarms of one month or one room: medians in seconds (None without any), and how
    many were acknowledged within each of :data:`WITHIN`."""

    key: str
    alarms: int
    acknowledged: int
    page_median: float | None
    acknowledge_median: float | None
    acknowledge_max: float | None
    resolve_median: float | None
    within: tuple[int, ...]

    def shares(self) -> tuple[float, ...]:
        """The share (0 to 1) of all alarms acknowledged within each of :data:`WITHIN`."""
        return tuple(n / self.alarms if self.alarms else 0.0 for n in self.within)


@dataclass(frozen=True)
class UnitTests:
    """The test alarms of one room's unit, against the schedule."""

    room: str
    device: str
    tests: int
    passed: int
    last_at: datetime | None
    #: ``passed`` or ``failed`` (every page went out, or not); "" until it completes.
    last_result: str
    #: When the next test is due (None: never tested, due now).
    due_at: datetime | None
    overdue: bool


@dataclass(frozen=True)
class Gap:
    """A stretch with workers present and nobody on duty."""

    incident: int | None
    started_at: datetime
    month: str
    #: How long it lasted; None while it goes on.
    seconds: float | None
    present: int


@dataclass(frozen=True)
class GapMonth:
    month: str
    gaps: int
    seconds: float


@dataclass(frozen=True)
class Figures:
    """Everything the reports page shows, read at one moment."""

    alarms: list[Alarm]
    by_month: list[Summary]
    by_room: list[Summary]
    tests: list[UnitTests]
    gaps: list[Gap]
    gap_months: list[GapMonth]


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


def alarms(events: Iterable[Event], zone: ZoneInfo) -> list[Alarm]:
    """Every round of every panic incident, in the order they began."""
    rounds: dict[int, dict[str, Any]] = {}  # the current round of each panic incident
    out: list[dict[str, Any]] = []
    for e in events:
        if e.incident is None:
            continue
        if e.type == "alert.raised":
            if e.data.get("kind") != "panic":
                continue
            rounds[e.incident] = {
                "incident": e.incident,
                "room": str(e.data.get("room", "")),
                "at": e.at,
            }
            out.append(rounds[e.incident])
            continue
        current = rounds.get(e.incident)
        if current is None:
            continue
        if e.type == "incident.reopened":
            rounds[e.incident] = {"incident": e.incident, "room": current["room"], "at": e.at}
            out.append(rounds[e.incident])
        elif e.type == "page.sent":
            current.setdefault("page", e.at)
        elif e.type == "incident.acknowledged":
            current.setdefault("ack", e.at)
        elif e.type == "incident.resolved" and "ack" in current:
            current.setdefault("resolved", e.at)
    return [
        Alarm(
            incident=r["incident"],
            room=r["room"],
            month=r["at"].astimezone(zone).strftime("%Y-%m"),
            pressed_at=r["at"],
            to_page=_seconds(r["at"], r["page"]) if "page" in r else None,
            to_acknowledge=_seconds(r["at"], r["ack"]) if "ack" in r else None,
            to_resolve=_seconds(r["ack"], r["resolved"]) if "resolved" in r else None,
        )
        for r in out
    ]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(alarms: Iterable[Alarm], key: Callable[[Alarm], str]) -> list[Summary]:
    """The alarms grouped by ``key`` (a month, a room), in the order of the keys."""
    groups: dict[str, list[Alarm]] = {}
    for a in alarms:
        groups.setdefault(key(a), []).append(a)
    out = []
    for name in sorted(groups):
        group = groups[name]
        acks = [a.to_acknowledge for a in group if a.to_acknowledge is not None]
        out.append(
            Summary(
                key=name,
                alarms=len(group),
                acknowledged=len(acks),
                page_median=_median([a.to_page for a in group if a.to_page is not None]),
                acknowledge_median=_median(acks),
                acknowledge_max=max(acks) if acks else None,
                resolve_median=_median([a.to_resolve for a in group if a.to_resolve is not None]),
                within=tuple(sum(s <= limit for s in acks) for limit in WITHIN),
            )
        )
    return out


def unit_tests(
    events: Iterable[Event], site: Site, now: datetime, every: timedelta = TEST_EVERY
) -> list[UnitTests]:
    """Each room of the site (and any other room with a test in the log), its tests and
    when the next is due."""
    tests: dict[str, list[tuple[int, datetime]]] = {r.id: [] for r in site.rooms}
    devices = {r.id: r.device for r in site.rooms}
    results: dict[int, str] = {}
    for e in events:
        if e.type == "alert.raised" and e.data.get("kind") == "test" and e.incident is not None:
            room = str(e.data.get("room", ""))
            tests.setdefault(room, []).append((e.incident, e.at))
            devices.setdefault(room, str(e.data.get("device", "")))
        elif e.type == "test.completed" and e.incident is not None:
            results[e.incident] = str(e.data.get("result", ""))
    out = []
    for room, done in tests.items():
        last = max(done, key=lambda t: t[1]) if done else None
        due = last[1] + every if last else None
        out.append(
            UnitTests(
                room=room,
                device=devices[room],
                tests=len(done),
                passed=sum(results.get(i) == "passed" for i, _ in done),
                last_at=last[1] if last else None,
                last_result=results.get(last[0], "") if last else "",
                due_at=due,
                overdue=due is None or due <= now,
            )
        )
    return out


def gaps(events: Iterable[Event], zone: ZoneInfo) -> list[Gap]:
    """Every duty gap, in the order they began."""
    started: dict[int | None, int] = {}  # incident -> its place in out
    out: list[Gap] = []
    for e in events:
        if e.type == "duty.gap_started":
            gap = Gap(
                incident=e.incident,
                started_at=e.at,
                month=e.at.astimezone(zone).strftime("%Y-%m"),
                seconds=None,
                present=int(e.data.get("present") or 0),
            )
            started[e.incident] = len(out)
            out.append(gap)
        elif e.type == "duty.gap_ended" and e.incident in started:
            place = started.pop(e.incident)
            out[place] = replace(out[place], seconds=float(e.data.get("seconds") or 0))
    return out


def gap_months(found: Iterable[Gap], now: datetime) -> list[GapMonth]:
    """The gaps per month (of their start): how many, and how long in all (a gap that
    goes on counts until ``now``)."""
    months: dict[str, list[float]] = {}
    for g in found:
        lasted = g.seconds if g.seconds is not None else _seconds(g.started_at, now)
        months.setdefault(g.month, []).append(lasted)
    return [GapMonth(m, len(v), sum(v)) for m, v in sorted(months.items())]


def compute(events: Sequence[Event], site: Site, now: datetime) -> Figures:
    """Every figure of the reports page from ``events`` (in log order)."""
    found = alarms(events, site.zone)
    found_gaps = gaps(events, site.zone)
    return Figures(
        alarms=found,
        by_month=summarise(found, lambda a: a.month),
        by_room=summarise(found, lambda a: a.room),
        tests=unit_tests(events, site, now),
        gaps=found_gaps,
        gap_months=gap_months(found_gaps, now),
    )


def read(session: Session, site: Site, now: datetime) -> Figures:
    """The figures from the log in the database."""
    rows = session.scalars(select(LogEntry).where(LogEntry.type.in_(TYPES)).order_by(LogEntry.n))
    events = [Event(r.at, r.type, r.incident_id, r.data) for r in rows]
    return compute(events, site, now)
