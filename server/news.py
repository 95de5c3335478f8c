"""Texts to staff that are news, not pages: to everyone paged for an alarm, to the
managers, and the news that a button was pressed again (throttled).

Texts go out through the pager after the caller's transaction has committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import incidents
from server.models import EscalationJob, Incident, JobKind, JobStatus, Page, State
from server.paging import messages
from server.paging.fit import BUDGET
from server.paging.pager import Pager
from server.site import LiveSite, SiteSource, Staff

log = logging.getLogger(__name__)

#: A person paged about this many open (not yet taken) alarms or more gets no re-press
#: news: their pages name the rooms, and news would only hold those pages back.
NEWS_QUIET = 3


class Tell(LiveSite):
    """Texts to groups of staff: those paged for an incident, or the managers."""

    def __init__(self, *, sessions: sessionmaker[Session], site: SiteSource, pager: Pager) -> None:
        self._sessions = sessions
        self._sites = site
        self._pager = pager

    def paged(
        self,
        incident_id: int,
        text: Callable[[Staff], str],
        *,
        purpose: str,
        but: str | None = None,
    ) -> None:
        """Send a text to everyone paged for the incident (except ``but``)."""
        with self._sessions() as s:
            paged = set(s.scalars(select(Page.staff_id).where(Page.incident_id == incident_id)))
        for staff_id in sorted(paged - {but}):
            try:
                member = self._site.member(staff_id)
            except LookupError:  # removed from the site file since the page
                log.warning("staff %s is no longer in the site file; not told", staff_id)
                continue
            self._pager.send_text(member, text(member), incident_id=incident_id, purpose=purpose)

    def managers(self, text: Callable[[Staff], str], *, purpose: str) -> None:
        """Technical news for managers (or the default group, or everyone)."""
        for member in self._site.managers():
            self._pager.send_text(member, text(member), incident_id=None, purpose=purpose)


class RepressNews(LiveSite):
    """Tells the people paged for an incident that its button was pressed again.

    Each person gets at most one text every ``incidents.NEWS_EVERY`` seconds,
    covering all their rooms with news (a button mashed 30 times is one text,
    then one more with the count when the window ends: the ``repress_news`` job
    scheduled with each press). Nobody paged about NEWS_QUIET open alarms or
    more gets news. A person counts as told only once Twilio took the text; a
    text that failed re-arms the job.

    NOTE: who was told what is kept in memory; after a restart the pending job
    tells everyone paged the current count (at worst one text twice, never none).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        pager: Pager,
        clock: Clock,
        wake: Callable[[], object],
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._pager = pager
        self._clock = clock
        self._wake = wake
        self._lock = threading.Lock()
        #: (incident, staff) -> the press count the last re-press news Twilio took said.
        self._told: dict[tuple[int, str], int] = {}
        #: staff -> when their last re-press news was sent (one text per NEWS_EVERY).
        self._news_at: dict[str, datetime] = {}

    def send(self, incident_id: int, now: datetime) -> bool:
        """Send the news of an incident's presses to everyone paged for it, as the
        throttle allows. Return whether someone's news is held back for a reason no
        scheduled job covers (they are being paged about many alarms): the caller's
        job then runs again (:meth:`again`)."""
        with self._sessions() as s:
            incident = s.get(Incident, incident_id)
            if incident is None or incident.state == State.RESOLVED:
                return False
            paged = sorted(
                set(s.scalars(select(Page.staff_id).where(Page.incident_id == incident_id)))
            )
        held = False
        for staff_id in paged:
            held |= self._news_for(staff_id, now)
        return held

    def forget(self, incident_id: int) -> None:
        """The incident is closed: no more news for it."""
        with self._lock:
            for key in [k for k in self._told if k[0] == incident_id]:
                del self._told[key]

    def again(self, incident_id: int) -> None:
        """Run the incident's latest re-press news job again in NEWS_EVERY seconds."""
        due = self._clock.now() + timedelta(seconds=incidents.NEWS_EVERY)
        with self._sessions.begin() as s:
            job = s.scalars(
                select(EscalationJob)
                .where(
                    EscalationJob.incident_id == incident_id,
                    EscalationJob.kind == JobKind.REPRESS_NEWS,
                )
                .order_by(EscalationJob.step.desc())
                .limit(1)
            ).first()
            if job is None:
                return
            job.status, job.due_at, job.done_at = JobStatus.PENDING, due, None
        self._wake()

    def _news_for(self, staff_id: str, now: datetime) -> bool:
        """Send one person their re-press news now if the throttle allows; return True
        when it is held back because they are being paged about many open alarms."""
        window = timedelta(seconds=incidents.NEWS_EVERY)
        with self._lock:
            last = self._news_at.get(staff_id)
            if last is not None and now < last + window:
                return False  # told too recently: the job of the press tells later
        try:
            member = self._site.member(staff_id)
        except LookupError:  # removed from the site file since the page
            return False
        with self._sessions() as s:
            rows = s.execute(
                select(Incident.id, Incident.room_id, Incident.presses, Incident.state)
                .where(
                    Incident.state != State.RESOLVED,
                    Incident.presses > 1,
                    Incident.id.in_(select(Page.incident_id).where(Page.staff_id == staff_id)),
                )
                .order_by(Incident.id)
            ).all()
            paged_open = s.scalar(
                select(func.count(func.distinct(Page.incident_id)))
                .join(Incident, Incident.id == Page.incident_id)
                .where(Page.staff_id == staff_id, Incident.state == State.OPEN)
            )
        with self._lock:
            last = self._news_at.get(staff_id)
            if last is not None and now < last + window:
                return False
            news = [
                (incident_id, room_id, presses)
                for incident_id, room_id, presses, _ in rows
                if presses > self._told.get((incident_id, staff_id), 1)
            ]
            if not news:
                return False
            if (paged_open or 0) >= NEWS_QUIET:
                return True
            self._news_at[staff_id] = now
        rooms = [(self._site.room(room_id).label, presses) for _, room_id, presses in news]
        self._pager.send_text(
            member,
            messages.repress_all(member.language, rooms=rooms, budget=BUDGET["sms"]),
            incident_id=news[0][0],
            purpose="repress",
            on_done=lambda sent: self._done(staff_id, news, sent, now),
        )
        return False

    def _done(
        self, staff_id: str, news: list[tuple[int, str, int]], sent: bool, at: datetime
    ) -> None:
        """After a news text: mark its rooms told, or re-arm a job to send it again."""
        if sent:
            with self._lock:
                for incident_id, _, presses in news:
                    key = (incident_id, staff_id)
                    self._told[key] = max(self._told.get(key, 1), presses)
            return
        with self._lock:
            if self._news_at.get(staff_id) == at:
                del self._news_at[staff_id]  # not told: the next news may go at once
        self.again(news[0][0])
