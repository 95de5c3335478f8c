"""Continuity of the reference person (royal decree of 20 October 2024): while any
worker is checked in, someone must be on duty.

A gap (workers present, nobody covering by take-over, shift or the always list) is
a technical incident of kind ``duty_gap``, handled like a unit offline: it pages
the managers by SMS at the technical pace (``offline_repeat``) until one of them
acknowledges it, and closes itself (outcome ``recovered``) once someone is on duty
again or no worker is present any more. The log says ``duty.gap_started`` (how many
workers were present) and ``duty.gap_ended`` (how long it lasted, and who took the
duty by take-over; null when a shift began or the last worker left).

:meth:`Continuity.check` runs on every supervision pass, and after each check-in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import duty, incidents
from server.escalation import steps
from server.log.append import audit
from server.models import Incident, IncidentKind, Outcome, State
from server.news import Tell
from server.paging import messages
from server.paging.pager import Pager
from server.people.presence import present_count
from server.site import WHOLE_SITE, LiveSite, SiteSource

log = logging.getLogger(__name__)


class Continuity(LiveSite):
    """Opens and closes ``duty_gap`` incidents; pages go out after each commit."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        tell: Tell,
        wake: Callable[[], object],
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._tell = tell
        self._wake = wake

    def check(self) -> str:
        """One look: returns ``"started"``, ``"ended"`` or ``""`` (nothing changed)."""
        now = self._clock.now()
        pages: list[int] = []
        ended: list[int] = []
        with self._sessions.begin() as s:
            overrides = duty.takeovers(s, now)
            on_duty = duty.covering(self._site, overrides, now)
            present = present_count(s)
            open_ = list(
                s.scalars(
                    select(Incident).where(
                        Incident.kind == IncidentKind.DUTY_GAP, Incident.state != State.RESOLVED
                    )
                )
            )
            if present and not on_duty and not open_:
                incident = Incident(
                    alert_id=uuid.uuid4().hex,
                    device_id="",
                    room_id=WHOLE_SITE,
                    kind=IncidentKind.DUTY_GAP,
                    seq=0,
                    pressed_at=now,
                    received_at=now,
                    state=State.OPEN,
                    presses=1,
                )
                s.add(incident)
                s.flush()
                audit(s, at=now, type="duty.gap_started", incident_id=incident.id, present=present)
                pages = steps.start(session=s, site=self._site, incident=incident, now=now)
            elif open_ and (on_duty or not present):
                taken = {o.staff_id for o in overrides if o.start_at <= now < o.end_at}
                by = next((i for i in on_duty if i in taken), None)
                for incident in open_:
                    incidents.resolve(
                        session=s,
                        incident=incident,
                        staff_id="system",
                        outcome=Outcome.RECOVERED,
                        now=now,
                    )
                    seconds = round((now - incident.received_at).total_seconds())
                    audit(
                        s,
                        at=now,
                        type="duty.gap_ended",
                        incident_id=incident.id,
                        seconds=seconds,
                        by=by,
                    )
                    ended.append(incident.id)
        if pages:
            log.error("workers are present and nobody is on duty: paging the managers")
            self._pager.dispatch(pages)
            self._wake()
            return "started"
        for incident_id in ended:
            log.info("duty gap %d ended", incident_id)
            self._tell.paged(
                incident_id, lambda m: messages.duty_covered(m.language), purpose="duty_covered"
            )
        return "ended" if ended else ""
