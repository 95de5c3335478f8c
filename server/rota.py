"""Duty, as staff change it: "I take over now" (and its end), and warnings to
managers ahead of a stretch the roster leaves uncovered. Who is on duty at a
moment is :mod:`server.duty`."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import duty
from server.log.append import audit
from server.models import DutyOverride
from server.paging import messages
from server.paging.pager import Pager
from server.site import LiveSite, SiteSource, Staff


class Rota(LiveSite):
    """Take-overs and duty-gap warnings; texts go out after each commit."""

    def __init__(
        self, *, sessions: sessionmaker[Session], site: SiteSource, clock: Clock, pager: Pager
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._pager = pager

    def takeover(self, *, staff_id: str, on: bool = True, hours: float | None = None) -> None:
        """ "I take over now" (or end it): this person alone is on duty until it ends."""
        now = self._clock.now()
        member = self._site.member(staff_id)
        until = now + timedelta(hours=hours or self._site.duty.takeover_hours)
        with self._sessions.begin() as s:
            before = duty.takeovers(s, now)
            for row in s.scalars(
                select(DutyOverride).where(
                    DutyOverride.staff_id == staff_id, DutyOverride.end_at > now
                )
            ):
                row.end_at = now
            if on:
                s.add(DutyOverride(staff_id=staff_id, start_at=now, end_at=until))
            audit(
                s,
                at=now,
                type="duty.takeover" if on else "duty.takeover_ended",
                staff=staff_id,
                until=until if on else None,
            )
        text = (
            messages.duty_on(member.language, until=until, timezone=self._site.timezone)
            if on
            else messages.duty_off(member.language)
        )
        self._pager.send_text(member, text, incident_id=None, purpose="duty")
        if on:
            self._tell_replaced(member, before, until, now)

    def _tell_replaced(
        self, member: Staff, before: list[duty.Takeover], until: datetime, now: datetime
    ) -> None:
        """Tell whoever was on duty before ``member`` took over, and no longer is (a
        take-over by a spoofed SMS is then seen at once by the people it replaced)."""
        after = [o for o in before if o.staff_id != member.id]
        after.append(duty.Takeover(member.id, now, until))
        was = duty.responders(self._site, before, now)
        still = set(duty.responders(self._site, after, now))
        for staff_id in was:
            if staff_id in still:
                continue
            other = self._site.member(staff_id)
            self._pager.send_text(
                other,
                messages.duty_replaced(
                    other.language, name=member.name, until=until, timezone=self._site.timezone
                ),
                incident_id=None,
                purpose="duty_replaced",
            )

    def check_gap(self, warned: set[datetime | None]) -> datetime | None:
        """Warn managers once ahead of a stretch nobody covers; returns its start.
        ``warned`` holds the ends of the gaps warned of (the caller keeps it)."""
        now = self._clock.now()
        with self._sessions() as s:
            overrides = duty.takeovers(s, now)
        gap = duty.next_gap(
            self._site, overrides, now, timedelta(seconds=self._site.duty.gap_warning)
        )
        # NOTE: keyed by the gap's end: inside a gap, "the next uncovered minute" moves
        # on every minute, its end does not (None: no roster at all, warned once).
        if gap is None or gap[1] in warned:
            return None
        start, end = gap
        warned.add(end)
        with self._sessions.begin() as s:
            audit(s, at=now, type="duty.gap_warned", start=start, end=end)
        tz = self._site.timezone
        for manager in self._site.managers():
            self._pager.send_text(
                manager,
                messages.gap(manager.language, start=start, end=end, timezone=tz),
                incident_id=None,
                purpose="duty_gap",
            )
        return start
