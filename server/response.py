"""Taking and closing an alarm: a person acknowledges (paging stops, the others
are told who is going, the unit shows "help is coming", a worker's phone whose alarm
came by SMS or call is texted who is coming), and staff resolve it with its outcome.
Also the reads the acknowledgement links need."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import incidents
from server.escalation.plans import opened_at, round_of
from server.metrics import Metrics
from server.mobile.news import WorkerNews
from server.models import ALARM_KINDS, Incident, Outcome, Page, State
from server.news import RepressNews, Tell
from server.paging import messages
from server.paging.pager import Pager
from server.site import LiveSite, SiteSource
from server.units.feedback import Lights

log = logging.getLogger(__name__)


class Responder(LiveSite):
    """Acknowledges and resolves incidents for staff, by any path (SMS, call, link, API)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        lights: Lights,
        news: RepressNews,
        tell: Tell,
        worker: WorkerNews,
        wake: Callable[[], object],
        metrics: Metrics,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._lights = lights
        self._news = news
        self._tell = tell
        self._worker = worker
        self._wake = wake

    def acknowledge(
        self, *, incident_id: int, staff_id: str, via: str, confirm: bool = True
    ) -> Incident | None:
        """A person acknowledges: paging stops, the others are told who is going, and the
        room unit shows "help is coming". Returns the incident, or None if unknown."""
        # NOTE: someone paged and on their way is heard even if, since the page, they can
        # no longer be paged (closed, demoted, a changed phone): the acknowledgement is
        # recorded and the others told; only the texts to them are left out.
        member = self._site.known(staff_id)
        name = member.name if member else staff_id
        now = self._clock.now()
        with self._sessions.begin() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                return None
            changed = incidents.acknowledge(
                session=s, incident=incident, staff_id=staff_id, via=via, now=now
            )
        room = self._site.room(incident.room_id).label
        phone = messages.of_phone(incident.room_id)
        if not changed:
            if incident.acknowledged_by != staff_id and confirm and member is not None:
                self._pager.send_text(
                    member,
                    messages.already(
                        member.language,
                        name=self._site.name_of(incident.acknowledged_by or staff_id),
                        room=room,
                    ),
                    incident_id=incident.id,
                    purpose="already_acknowledged",
                )
            return incident
        log.info("incident %d acknowledged by staff %s via %s", incident.id, staff_id, via)
        self._acknowledged(incident, now)
        self._lights.show(incident, now)
        self._worker.going(incident, name)
        self._wake()
        if confirm and member is not None:
            self._pager.send_text(
                member,
                messages.confirm(member.language, room=room, phone=phone),
                incident_id=incident.id,
                purpose="confirm",
            )
        self._tell.paged(
            incident.id,
            lambda other: messages.stand_down(other.language, name=name, room=room, phone=phone),
            purpose="stand_down",
            but=staff_id,
        )
        return incident

    def resolve(self, *, incident_id: int, staff_id: str, outcome: Outcome) -> Incident | None:
        """Close an incident with its outcome: a staff decision, never the room unit's."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                return None
            was_open = incident.state == State.OPEN
            changed = incidents.resolve(
                session=s, incident=incident, staff_id=staff_id, outcome=outcome, now=now
            )
        if changed:
            if was_open and incident.acknowledged_by == staff_id:
                self._acknowledged(incident, now)  # resolving it took it
            self._news.forget(incident_id)
            self._lights.show(incident, now)
            room = self._site.room(incident.room_id).label
            phone = messages.of_phone(incident.room_id)
            self._tell.paged(
                incident.id,
                lambda m: messages.closed(m.language, room=room, phone=phone),
                purpose="closed",
                but=staff_id,
            )
        return incident

    def _acknowledged(self, incident: Incident, now: datetime) -> None:
        if incident.kind in ALARM_KINDS:
            self._metrics.acknowledged(opened_at(incident), now)

    def page(self, page_id: int) -> tuple[Page, Incident] | None:
        """A page and its incident, or None if either is unknown."""
        with self._sessions() as s:
            page = s.get(Page, page_id)
            incident = s.get(Incident, page.incident_id) if page else None
        return (page, incident) if page is not None and incident is not None else None

    def current_page(self, page_id: int) -> Page | None:
        """The page, if it belongs to its incident's current round: a link from before
        the alarm was resolved and pressed again is for the old round (the new round's
        pages carry new links, as they carry new reply codes)."""
        found = self.page(page_id)
        if found is None or round_of(found[0].step) != found[1].round:
            return None
        return found[0]

    def open_pages(self, page_id: int) -> list[tuple[Page, Incident]] | None:
        """For the person page ``page_id`` was for: their newest page (up to that one,
        a list link's own) for each of their open alarms, oldest alarm first: an alarm
        opened after the link was sent has no page that old, so a forwarded or stale
        link cannot stop its paging. None if the page is unknown."""
        with self._sessions() as s:
            page = s.get(Page, page_id)
            if page is None:
                return None
            rows = s.execute(
                select(Page, Incident)
                .join(Incident, Incident.id == Page.incident_id)
                .where(
                    Page.staff_id == page.staff_id,
                    Page.id <= page.id,
                    Incident.state == State.OPEN,
                )
                .order_by(Incident.id, Page.id)
            ).all()
        newest = {incident.id: (page, incident) for page, incident in rows}
        return list(newest.values())
