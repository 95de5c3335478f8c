"""A unit's alert: opens its incident (once), tells the unit, pages step 0.

Two commits: the incident (with step 0 as a pending job), then the unit is told
"received"; then the plan is frozen and step 0's pages are written and sent. The
unit waits only for the first (about a quarter of the work). Step 0's job is born
claimed by this instance, so no scheduler races it for the job; should the server
stop between the two, the claim ends (at the stop, or when its lease lapses) and a
scheduler runs step 0: at the next start, or on another instance.

Alerts that arrive together (a storm) are recorded in one transaction (group
commit, :meth:`Alerts.handle_many`), and their step 0s in a few more
(:data:`PAGE_BATCH` at a time). The MQTT side records and confirms every alert
waiting before it pages any (:meth:`Alerts.page_waiting` when nothing is
queued): in a storm every unit hears "received" first, and the pages, bundled
anyway, follow. Should one of a batch fail, each is recorded again alone, so
that it fails alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from panicbutton.wire import Alert, Feedback
from server import incidents
from server.escalation import steps
from server.metrics import Metrics
from server.models import EscalationJob, Incident, JobKind, JobStatus
from server.news import RepressNews
from server.paging.pager import Pager
from server.site import LiveSite, Room, Site, SiteSource
from server.units.feedback import Lights, feedback_of

log = logging.getLogger(__name__)

#: Incidents whose step 0 runs in one transaction: few enough that an alert arriving
#: meanwhile waits little, enough that a storm's pages take few commits.
PAGE_BATCH = 8

#: Seconds an incident's step 0 may wait behind alerts still coming in (a storm that
#: goes on): the MQTT side then pages a batch between two batches of alerts.
HOLD_MAX = 0.25


class Alerts(LiveSite):
    """Turns room units' alerts into incidents."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        lights: Lights,
        news: RepressNews,
        wake: Callable[[], object],
        metrics: Metrics,
        instance: str = "local",
    ) -> None:
        """``instance`` names this server instance: the step 0 jobs of the alerts it
        records are claimed by it (see :func:`server.escalation.steps.defer`)."""
        self._instance = instance
        self._sessions = sessions
        self._metrics = metrics
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._lights = lights
        self._news = news
        self._wake = wake
        #: Incidents recorded and confirmed whose step 0 has not run (steps.defer), and
        #: since when (monotonic seconds).
        self._unpaged: deque[tuple[int, float]] = deque()
        #: Incidents taken from there whose step 0 is being run now.
        self._running: set[int] = set()
        self._unpaged_lock = threading.Lock()
        #: Batches of step 0s being run now, from their transaction until their pages
        #: are the pager's (read by whoever waits for the server to be idle).
        self.paging = 0

    def handle(self, alert: Alert, *, started_by: str | None = None) -> Feedback:
        """Record ``alert`` (once), page step 0, and return the feedback for the unit.

        The incident is committed before this returns; the caller confirms
        receipt to the unit only then. A unit missing from the site file still
        pages the staff on duty (someone pressed a button), as an unknown unit.
        ``started_by``: a test alert started from the console by this person
        (see :func:`server.incidents.record_alert`).
        """
        feedback = self._record_one(alert, started_by=started_by)
        # Its own step 0 at once (a unit's HTTPS path, a test from the console): not
        # behind a storm's, which the MQTT side pages.
        with self._unpaged_lock:
            own = [entry for entry in self._unpaged if entry[0] == feedback.incident]
            for entry in own:
                self._unpaged.remove(entry)
            if own:
                self._running.add(feedback.incident)
        if own:
            self._page([feedback.incident])
        return feedback

    def _record_one(self, alert: Alert, *, started_by: str | None = None) -> Feedback:
        """Record ``alert`` and tell its unit; its step 0 is left waiting."""
        site = self._site  # read once: one configuration for the whole alert
        room = self._room(site, alert)
        now = self._clock.now()

        def record() -> incidents.AlertResult:
            with self._sessions.begin() as s:
                return incidents.record_alert(
                    session=s,
                    site=site,
                    room=room,
                    alert=alert,
                    now=now,
                    started_by=started_by,
                    defer=True,
                    claimed_by=self._instance,
                )

        try:
            result = record()
        except IntegrityError:
            # Another instance, or the same alert by the other path (MQTT and HTTPS at
            # once), committed it first: read its incident.
            log.info("alert %s was recorded by another path first", alert.alert_id)
            result = record()
        return self._confirm([(alert, result)], now)[0]

    def handle_many(
        self, alerts: Sequence[Alert], *, page: bool = True
    ) -> list[Feedback | Exception]:
        """:meth:`handle` for alerts that came together, recorded in one transaction
        (group commit); what became of each, in order: its feedback, sent to its unit
        after the commit, or the error that kept it from being recorded. ``page``
        False: their step 0s wait for :meth:`page_waiting` (the MQTT side calls it
        once no alert is waiting to be recorded)."""
        outcomes = self._record_many(alerts)
        if page:
            self.page_waiting()
        return outcomes

    def _record_many(self, alerts: Sequence[Alert]) -> list[Feedback | Exception]:
        if len(alerts) == 1:
            return [self._alone(alerts[0])]
        site = self._site
        rooms = [self._room(site, a) for a in alerts]
        now = self._clock.now()
        try:
            with self._sessions.begin() as s:
                results = incidents.record_alerts(
                    session=s,
                    site=site,
                    alerts=list(zip(alerts, rooms, strict=True)),
                    now=now,
                    claimed_by=self._instance,
                )
        except Exception:  # noqa: BLE001 -- each is recorded again alone, its error kept
            # One of them failed (nothing was committed): each alone, so that it fails alone.
            log.warning("%d alerts recorded together failed; recording each alone", len(alerts))
            return [self._alone(a) for a in alerts]
        return list(self._confirm(list(zip(alerts, results, strict=True)), now))

    def _alone(self, alert: Alert) -> Feedback | Exception:
        try:
            return self._record_one(alert)
        except Exception as exc:  # noqa: BLE001 -- handed to the caller, one per alert
            return exc

    def page_waiting(self, most: int | None = None, *, held: float = 0.0) -> bool:
        """Run the step 0 of incidents recorded and confirmed, :data:`PAGE_BATCH` in each
        transaction, and hand their pages to the pager: all of them, or the first
        ``most`` batches; only when the oldest has waited ``held`` seconds or more.
        True if there were any."""
        ran = False
        while most is None or most > 0:
            with self._unpaged_lock:
                if not self._unpaged or time.monotonic() - self._unpaged[0][1] < held:
                    break
                batch = [
                    self._unpaged.popleft()[0] for _ in range(min(PAGE_BATCH, len(self._unpaged)))
                ]
                self._running.update(batch)
            if not batch:
                break
            ran = True
            most = None if most is None else most - 1
            self._page(batch)
        return ran

    def holds(self) -> set[int]:
        """Incidents whose step 0 this instance has yet to run, or is running: their jobs
        are claimed by it (born so), and its scheduler leaves them alone. Any other step
        0 job still claimed by it is one it could not run, and the scheduler takes it."""
        with self._unpaged_lock:
            return {incident for incident, _ in self._unpaged} | self._running

    def _page(self, incident_ids: list[int]) -> None:
        """Step 0 of ``incident_ids`` (each taken into ``_running`` by the caller)."""
        with self._unpaged_lock:
            self.paging += 1
        try:
            self._page_now(incident_ids)
        finally:
            with self._unpaged_lock:
                self.paging -= 1
                self._running.difference_update(incident_ids)

    def _page_now(self, incident_ids: list[int]) -> None:
        try:
            site = self._site  # read from the database at times: it can fail too
            now = self._clock.now()
            with self._sessions.begin() as s:
                # NOTE: every incident's row before any page's reply-code lock, in one
                # order: a scheduler running one of them (a lease that lapsed) takes the
                # row, then the locks; taking them row, locks, row, ... would deadlock.
                s.execute(
                    select(Incident.id)
                    .where(Incident.id.in_(incident_ids))
                    .order_by(Incident.id)
                    .with_for_update()
                )
                pages = [
                    page_id
                    for incident_id in incident_ids
                    for page_id in steps.run_first(
                        session=s,
                        site=site,
                        incident_id=incident_id,
                        now=now,
                        by=self._instance,
                    )
                ]
                # Claimed as they are written: after the commit they go straight to their
                # sender, with no claim of their own to commit first.
                claimed = self._pager.claim_in(s, pages)
        except Exception:
            log.exception(
                "could not page step 0 of incidents %s here; the scheduler will", incident_ids
            )
            self._release(incident_ids)
            self._wake()
            return
        self._pager.send_claimed(claimed)
        self._wake()  # their step 1 jobs

    def _release(self, incident_ids: list[int]) -> None:
        """Give back the claims on step 0 jobs this instance could not run: the scheduler
        runs each (and logs its error). Should that fail too (the database is away), this
        instance's scheduler takes them once they are no longer :meth:`holds`."""
        try:
            with self._sessions.begin() as s:
                s.execute(
                    update(EscalationJob)
                    .where(
                        EscalationJob.incident_id.in_(incident_ids),
                        EscalationJob.kind == JobKind.STEP,
                        EscalationJob.status == JobStatus.RUNNING,
                        EscalationJob.claimed_by == self._instance,
                    )
                    .values(status=JobStatus.PENDING, claimed_by=None, lease_until=None)
                )
        except Exception:  # noqa: BLE001 -- the database is away: the scheduler takes them
            log.warning(
                "could not give back step 0 jobs %s; the scheduler takes them when it can",
                incident_ids,
            )

    @staticmethod
    def _room(site: Site, alert: Alert) -> Room:
        room = site.room_for_device(alert.device_id)
        if room is None:
            log.error(
                "alert from unit %s, which is not in the site file: paging as an unknown "
                "unit; add it to the site file",
                alert.device_id,
            )
            room = site.unknown_room(alert.device_id)
        return room

    def _confirm(
        self, recorded: list[tuple[Alert, incidents.AlertResult]], now: datetime
    ) -> list[Feedback]:
        """After the commit: tell each unit, then hand the pages over, log and count."""
        accepted = [r.incident for _, r in recorded if not r.refused]
        try:
            # The units hear "received" first (it is committed): handing the pages to the
            # pager's threads and waking the scheduler would make them wait for the GIL.
            self._lights.show_all(accepted, now)
        finally:
            # The pages go whatever became of the feedback (a broker error, a database
            # read failing): the unit resends until it hears; the pages must not wait on it.
            with self._unpaged_lock:
                since = time.monotonic()
                self._unpaged.extend((r.incident.id, since) for _, r in recorded if r.deferred)
            pages = [i for _, r in recorded if r.new for i in r.page_ids]
            self._pager.dispatch(pages)
            if pages:
                self._wake()
        return [self._after(alert, result, now) for alert, result in recorded]

    def _after(self, alert: Alert, result: incidents.AlertResult, now: datetime) -> Feedback:
        if result.refused:
            # NOTE: the unit is told ``resolved`` so that it stops resending an alert
            # that can never be accepted, and its next press starts a new alert that
            # pages for its own room.
            log.error(
                "alert %s from unit %s refused: that alert id belongs to another unit's "
                "incident (a cloned memory card, or a forged unit); told the unit it is over",
                alert.alert_id,
                alert.device_id,
            )
            return self._lights.refuse(alert, now)
        incident = result.incident
        if result.new:
            log.info(
                "incident %d opened: room %s, alert %s",
                incident.id,
                incident.room_id,
                alert.alert_id,
            )
            if not result.repressed:
                self._metrics.alarm(incident.kind)
        elif result.repressed:
            log.info("incident %d: button pressed again (%d)", incident.id, incident.presses)
        else:
            log.info("alert %s redelivered; incident %d already open", alert.alert_id, incident.id)
        if result.repressed:
            # After the unit's feedback: the news (several queries) must not delay it.
            self._news.send(incident.id, now)
            self._wake()  # the job for the news this window holds back
        return feedback_of(incident, now)
