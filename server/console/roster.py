"""The roster page: the week as the pager sees it (who is on duty each hour, by shift,
the always-on-duty list or a take-over, and the gaps where nobody is), the shifts, the
duty lists, the escalation plan and the rooms' labels, each editable.

Changes go through the site API (``/api/v1/site/...``) from the browser, each with the
``version`` this page read: a change made meanwhile by someone else is refused (409).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from babel import Locale
from babel.dates import format_date
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server import duty
from server.console import pages
from server.console.access import RosterPage
from server.console.pages import N_
from server.console.routes import PAGE
from server.models import DutyOverride
from server.people.presence import present_count
from server.roster import edit
from server.routes.deps import ServicesDep
from server.site import DAYS, Site

router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)

WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
#: The years a week can be shown in (others are not found: no overflow, no long reads).
YEARS = range(2000, 2101)
#: The escalation groups a step can page, as the site file names them.
GROUPS = ("on_duty", "all_staff", "managers")


@dataclass
class Hour:
    """One hour of one day: who is on duty in it, and whether any minute is a gap."""

    names: list[str] = field(default_factory=list)
    takeover: bool = False
    gap: bool = False
    now: bool = False


@dataclass(frozen=True)
class Week:
    """The ISO week shown: its Monday, and the weeks before and after."""

    monday: date

    @property
    def label(self) -> str:
        year, week, _ = self.monday.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def before(self) -> str | None:
        """The week before, None before the first year shown."""
        return Week(self.monday - timedelta(days=7)).shown

    @property
    def after(self) -> str | None:
        """The week after, None after the last year shown."""
        return Week(self.monday + timedelta(days=7)).shown

    @property
    def shown(self) -> str | None:
        """Its label if it can be shown (a year from 2000 to 2100)."""
        return self.label if self.monday.isocalendar()[0] in YEARS else None

    @property
    def days(self) -> list[date]:
        return [self.monday + timedelta(days=i) for i in range(7)]


def week_of(param: str | None, today: date) -> Week:
    """The week ``?week=YYYY-Www`` names, or this week; 404 for a malformed one or one
    outside the years 2000 to 2100."""
    if param is None:
        return Week(today - timedelta(days=today.weekday()))
    found = WEEK.match(param)
    try:
        if found is None or int(found[1]) not in YEARS:
            raise ValueError(param)
        return Week(date.fromisocalendar(int(found[1]), int(found[2]), 1))
    except ValueError:
        raise HTTPException(404, f"no week {param!r}: write it as 2026-W49") from None


def calendar(
    site: Site, takeovers: list[duty.Takeover], week: Week, now: datetime
) -> list[list[Hour]]:
    """``[hour][day]``: who covers each hour of the week, to the minute, as an alarm
    would page them (only people who can be paged count)."""
    zone = site.zone
    pageable = {s.id for s in site.staff}
    # Who is on duty changes only where a shift or a take-over starts or ends: each hour
    # is looked at on its first minute and on each such minute inside it.
    turns = {t.hour * 60 + t.minute for sh in site.duty.shifts for t in (sh.start, sh.end)}
    moments = [m for t in takeovers for m in (t.start_at, t.end_at)]
    rows: list[list[Hour]] = []
    for hour in range(24):
        row = []
        for day in week.days:
            cell = Hour()
            start = datetime(day.year, day.month, day.day, hour, tzinfo=zone)
            end = start + timedelta(hours=1)
            looks = {start} | {
                start + timedelta(minutes=m - hour * 60) for m in turns if m // 60 == hour
            }
            looks |= {_next_minute(m) for m in moments if start <= _next_minute(m) < end}
            seen: dict[str, None] = {}
            for at in sorted(looks):
                on = duty.covering(site, takeovers, at)
                cell.gap = cell.gap or not on
                seen.update(dict.fromkeys(on))
                cell.takeover = cell.takeover or any(
                    t.start_at <= at < t.end_at and t.staff_id in pageable for t in takeovers
                )
            cell.names = [site.name_of(i) for i in seen]
            cell.now = start <= now < end
            row.append(cell)
        rows.append(row)
    return rows


def _next_minute(moment: datetime) -> datetime:
    """The first whole minute at or after ``moment`` (duty is looked at to the minute)."""
    whole = moment.replace(second=0, microsecond=0)
    return whole if whole == moment else whole + timedelta(minutes=1)


def _names(site: Site, ids: list[str]) -> list[str]:
    return [site.name_of(i) for i in ids]


def _takeovers(session: Session, first: datetime, now: datetime) -> list[duty.Takeover]:
    """The take-overs the page shows: those in the week from ``first`` (for its calendar)
    and those not yet over (the list); never every take-over since an old week."""
    last = first + timedelta(days=8)  # a day more: a week with a clock change
    rows = session.scalars(
        select(DutyOverride)
        .where(
            or_(
                and_(DutyOverride.end_at > first, DutyOverride.start_at < last),
                DutyOverride.end_at > now,
            )
        )
        .order_by(DutyOverride.start_at)
    )
    return [duty.Takeover(r.staff_id, r.start_at, r.end_at) for r in rows]


@router.get("/roster", summary="The roster: the week on duty, shifts, escalation, rooms")
async def roster_page(
    request: Request, services: ServicesDep, me: RosterPage, week: str | None = None
) -> Response:
    site = services.site
    now = services.clock.now()
    shown = week_of(week, now.astimezone(site.zone).date())

    def read() -> tuple[int, dict[str, Any], list[duty.Takeover], int]:
        with services.sessions() as s:
            version, document = edit.current_document(s, now)
            first = datetime.combine(shown.monday, datetime.min.time(), site.zone)
            return version, document, _takeovers(s, first, now), present_count(s)

    version, document, takeovers, present = await run_in_threadpool(read)
    hours = await run_in_threadpool(calendar, site, takeovers, shown, now)
    locale = Locale.parse(me.language)
    duty_doc = document.get("duty", {})
    escalation = document.get("escalation", {})
    staff = [m["id"] for m in document.get("staff", [])]
    return pages.page(
        request,
        services,
        me,
        "roster.html",
        title=N_("Roster"),
        version=version,
        week=shown,
        hours=hours,
        gaps=sum(c.gap for row in hours for c in row),
        # Workers are here and nobody is on duty: the gap the managers are paged for.
        uncovered=present if not duty.covering(site, takeovers, now) else 0,
        takeovers=[(site.name_of(t.staff_id), t) for t in takeovers if t.end_at > now],
        always=_names(site, duty_doc.get("on_duty", [])),
        default=_names(site, duty_doc.get("default", [])),
        duty=duty_doc,
        shifts=duty_doc.get("shifts", []),
        staff=[(i, site.name_of(i)) for i in staff],
        unpaged=[i for i in staff if not site.known(i)],
        steps=escalation.get("steps", []),
        escalation=escalation,
        groups=GROUPS,
        day_keys=DAYS,
        day_names=[locale.days["format"]["abbreviated"][i] for i in range(7)],
        day_labels=[format_date(d, "EEE d MMM", locale=locale) for d in shown.days],
        rooms=document.get("rooms", []),
    )
