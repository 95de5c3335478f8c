"""Carrying out escalation: a due job's pages, and what becomes of each page (sent,
failed, the provider's status callbacks). A failed page hurries the next step;
a test alarm completes when its last page is out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import incidents
from server.escalation import plans, steps
from server.log.append import audit
from server.metrics import Metrics
from server.models import (
    EscalationJob,
    Incident,
    IncidentKind,
    JobKind,
    JobStatus,
    Outcome,
    Page,
    PageStatus,
    State,
)
from server.news import RepressNews
from server.paging.pager import Pager
from server.phones import Phones
from server.replies.optout import OptOut
from server.site import LiveSite, SiteSource
from server.units.feedback import Lights

log = logging.getLogger(__name__)

#: Provider statuses that mean a page did not reach the person.
FAILED = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})
#: Provider statuses that mean it did: an SMS delivered, a call answered (a voicemail may
#: answer too: never taken as an acknowledgement).
REACHED = frozenset({"delivered", "completed"})


@dataclass(frozen=True, slots=True)
class PagingState:
    """Sends queued, under way or held for a bundle; pending jobs and the next one's time."""

    send_backlog: int
    jobs_pending: int
    next_job_due: datetime | None


class Runner(LiveSite):
    """Runs the scheduler's due jobs and takes the pager's page results."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        lights: Lights,
        news: RepressNews,
        optout: OptOut,
        wake: Callable[[], object],
        metrics: Metrics,
        phones: Phones | None = None,
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._metrics = metrics
        self._clock = clock
        self._pager = pager
        self._lights = lights
        self._news = news
        self._optout = optout
        self._wake = wake
        self._phones = phones
        #: One page result at a time: each reads and moves the incident's jobs.
        self._lock = threading.Lock()

    def run_job(self, job_id: int, now: datetime) -> None:
        """Do one claimed job (for :class:`server.escalation.scheduler.Scheduler`)."""
        with self._sessions.begin() as s:
            job = s.get_one(EscalationJob, job_id)
            # NOTE: the incident's row first, then the job's again, as step 0's batches
            # take them (server.units.alerts) and before any page's reply-code lock: in
            # another order the two deadlock on PostgreSQL. Under the lock, a job that
            # was run elsewhere meanwhile (a lapsed claim) is not run twice.
            incident = s.get_one(Incident, job.incident_id, with_for_update=True)
            s.refresh(job, with_for_update=True)
            if job.status != JobStatus.RUNNING:
                log.info("job %d was %s elsewhere meanwhile; not run here", job.id, job.status)
                return
            news = job.kind == JobKind.REPRESS_NEWS
            latest = job.step == incident.presses  # the news job of the last press
            wanted = State.OPEN if job.kind == JobKind.STEP else State.ACKNOWLEDGED
            # A job of an earlier round (left by a crash before a reopen) is over.
            if not news and (incident.state != wanted or job.step // plans.ROUND != incident.round):
                job.status = JobStatus.CANCELLED
                return
            pages: list[int] = []
            if job.kind == JobKind.STEP and incident.plan is None:
                # Step 0 left for after the incident's commit (steps.defer), and the
                # server stopped before it ran: the plan is frozen now.
                pages = steps.begin(
                    session=s, site=self._site, incident=incident, due=job.due_at, now=now
                )
            elif job.kind == JobKind.FOLLOW_UP and incident.plan is None:
                # Acknowledged before its step 0 ran (steps.acknowledged made this job due
                # at once): the plan is frozen now, with nobody paged, and the follow-up
                # waits for its time by that plan.
                plan = steps.freeze(
                    session=s, site=self._site, incident=incident, due=incident.received_at, now=now
                )
                after = plan.get("follow_up_after") or steps.FOLLOW_UP_AFTER
                job.due_at = (incident.acknowledged_at or now) + timedelta(seconds=after)
                job.status, job.claimed_at, job.claimed_by, job.lease_until = (
                    JobStatus.PENDING,
                    None,
                    None,
                    None,
                )
                return
            elif not news:
                run = steps.run_step if job.kind == JobKind.STEP else steps.run_follow_up
                pages = run(session=s, incident=incident, n=job.step, due=job.due_at, now=now)
            job.status, job.done_at = JobStatus.DONE, now
        if news:  # texts, after the commit like every other text
            if self._news.send(incident.id, now) and latest:
                self._news.again(incident.id)  # someone is held back: try again later
            return
        log.info("incident %d: %s %d paged %d", incident.id, job.kind, job.step, len(pages))
        self._pager.dispatch(pages)

    def page_done(self, incident_id: int, page_id: int) -> None:
        """After each page (the pager's worker): a failed one hurries the next step; a
        test completes."""
        if self._page_done_in_db(incident_id, page_id):
            self._wake()  # after the commit, so the scheduler sees the new time

    def _page_done_in_db(self, incident_id: int, page_id: int) -> bool:
        now = self._clock.now()
        with self._lock, self._sessions.begin() as s:
            incident = s.get_one(Incident, incident_id)
            page = s.get_one(Page, page_id)
            hurried = page.status == PageStatus.FAILED and self._failed(
                s, incident, page, page.error or "", now
            )
            if incident.kind != IncidentKind.TEST or incident.state == State.RESOLVED:
                return hurried
            statuses = list(s.scalars(select(Page.status).where(Page.incident_id == incident_id)))
            if any(status in (PageStatus.PENDING, PageStatus.SENDING) for status in statuses):
                return hurried
            sent = statuses.count(PageStatus.SENT)
            audit(
                s,
                at=now,
                type="test.completed",
                incident_id=incident_id,
                sent=sent,
                failed=len(statuses) - sent,
                result="passed" if sent and sent == len(statuses) else "failed",
            )
            incidents.resolve(
                session=s, incident=incident, staff_id="system", outcome=Outcome.TEST, now=now
            )
        log.info("test alert %s: %d of %d pages sent", incident.alert_id, sent, len(statuses))
        self._lights.show(incident, now)
        return hurried

    def _failed(self, s: Session, incident: Incident, page: Page, why: str, now: datetime) -> bool:
        hurried = steps.hurry(s, incident=incident, failed_step=page.step, now=now)
        if hurried:
            log.warning(
                "incident %d: %s to staff %s failed (%s); next step now",
                incident.id,
                page.channel,
                page.staff_id,
                why,
            )
        if "21610" in why:
            self._optout.opted_out(s, page.staff_id, now)
        if self._phones is not None:  # a number the provider says is bad: mark it, warn
            self._phones.failed(s, page.staff_id, why, now)
        return hurried

    def provider_status(
        self, *, page_ids: list[int], status: str, error_code: str, provider_sid: str = ""
    ) -> None:
        """Twilio's status callback for an SMS or a call. Never an acknowledgement.

        ``page_ids`` come from the callback's URL, which names at most the first pages
        of a bundle; every page sent as ``provider_sid`` is found by that id too.
        """
        now = self._clock.now()
        wake = False
        outcome = "delivered" if status in REACHED else "undelivered" if status in FAILED else ""
        told: list[str] = []  # the channel of each page, counted once the change is committed
        with self._lock, self._sessions.begin() as s:
            if provider_sid:
                found = s.scalars(select(Page.id).where(Page.provider_sid == provider_sid))
                page_ids = sorted({*page_ids, *found})
            for page_id in page_ids:
                page = s.get(Page, page_id)
                if page is None:
                    continue
                page.provider_status = status[:24]
                audit(
                    s,
                    at=now,
                    type="page.status",
                    incident_id=page.incident_id,
                    page=page.id,
                    status=status[:24],
                    code=error_code[:8] or None,
                )
                if outcome:
                    told.append(page.channel)
                if status in FAILED:
                    incident = s.get_one(Incident, page.incident_id)
                    wake = self._failed(s, incident, page, f"{status} {error_code}", now) or wake
        for channel in told:
            self._metrics.pages(channel, outcome)
        if wake:
            self._wake()

    def paging_state(self) -> PagingState:
        """The send backlog and the pending escalation jobs."""
        with self._sessions() as s:
            pending = s.scalars(
                select(EscalationJob.due_at)
                .where(EscalationJob.status == JobStatus.PENDING)
                .order_by(EscalationJob.due_at)
            ).all()
        return PagingState(
            send_backlog=self._pager.backlog(),
            jobs_pending=len(pending),
            next_job_due=pending[0] if pending else None,
        )
