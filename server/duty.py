"""Who is on duty at a given moment, and where the roster leaves nobody.

On duty at a moment: whoever has taken over ("I take over now", stored in
the database) and is still within their take-over; otherwise everyone whose
weekly shift covers that wall-clock time in the site's time zone (so a shift
from 22:00 to 06:00 stays right across the daylight-saving changes), plus the
site's ``on_duty`` list. When that is nobody, the ``default`` group is paged,
and if there is none, all staff: an alarm never pages no one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server.models import DutyOverride
from server.site import Site


@dataclass(frozen=True, slots=True)
class Takeover:
    staff_id: str
    start_at: datetime
    end_at: datetime


# Built once, run as Core on the session's connection: every alarm's plan reads it.
_TAKEOVERS = (
    select(DutyOverride.staff_id, DutyOverride.start_at, DutyOverride.end_at)
    .where(DutyOverride.end_at > bindparam("at"))
    .order_by(DutyOverride.start_at)
)


def takeovers(session: Session, at: datetime) -> list[Takeover]:
    """Take-overs active at ``at`` or later (for look-ahead)."""
    session.flush()  # Core below, without the ORM's autoflush: this transaction's take-overs
    rows = session.connection().execute(_TAKEOVERS, {"at": at})
    return [Takeover(staff_id, start, end) for staff_id, start, end in rows]


def covering(site: Site, overrides: list[Takeover], at: datetime) -> list[str]:
    """Staff ids on duty at ``at`` by take-over, shift or the always list; may be empty."""
    # NOTE: only take-overs by someone who can be paged now: a person closed, demoted or
    # with an unconfirmed phone since would otherwise stay "on duty" and page nobody.
    pageable = {s.id for s in site.staff}
    taken = [
        o.staff_id for o in overrides if o.start_at <= at < o.end_at and o.staff_id in pageable
    ]
    if taken:
        return list(dict.fromkeys(taken))
    local = at.astimezone(site.zone)
    shifts = [s.staff for s in site.duty.shifts if s.covers(local)]
    return list(dict.fromkeys([*shifts, *site.duty.always]))


def responders(site: Site, overrides: list[Takeover], at: datetime) -> list[str]:
    """Who an alarm at ``at`` pages as "on duty": never nobody."""
    return covering(site, overrides, at) or list(site.duty.default) or [s.id for s in site.staff]


def next_gap(
    site: Site, overrides: list[Takeover], start: datetime, horizon: timedelta
) -> tuple[datetime, datetime | None] | None:
    """The first stretch starting within ``horizon`` after ``start`` that nobody covers
    (minute resolution), as (from, until); None if covered throughout. The end is
    looked for up to a week on, so it stays the same while the gap goes on; None
    means nobody is rostered at all in that week (only the default group)."""
    step = timedelta(minutes=1)
    moment = start.replace(second=0, microsecond=0) + step
    gap_start: datetime | None = None
    while moment <= start + horizon or (
        gap_start is not None and moment <= gap_start + timedelta(days=7)
    ):
        covered = bool(covering(site, overrides, moment))
        if not covered and gap_start is None:
            gap_start = moment
        elif covered and gap_start is not None:
            return gap_start, moment
        moment += step
    return (gap_start, None) if gap_start is not None else None  # no end within a week
