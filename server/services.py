"""Every service of one server, built once by :func:`server.app.build` in
dependency order and handed to the routes (:mod:`server.routes.deps`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.cluster import Cluster
from server.continuity import Continuity
from server.escalation.scheduler import Scheduler
from server.log.keeper import LogKeeper
from server.log.personal import Retention
from server.metrics import Metrics
from server.mobile.alarms import PhoneAlarms
from server.mobile.checkins import CheckIns
from server.mobile.timer import CheckinTimer
from server.news import RepressNews, Tell
from server.paging.pager import Pager
from server.people.signin import SignIn
from server.phones import Phones
from server.receipts import Receipts
from server.records import Records
from server.replies.fallback import Fallback
from server.replies.sms import SmsReplies
from server.replies.voice import VoiceKeys
from server.response import Responder
from server.roster.store import SiteBook
from server.rota import Rota
from server.runner import Runner
from server.site import Site
from server.units.alerts import Alerts
from server.units.feedback import Lights
from server.units.statuses import Statuses


@dataclass(frozen=True, slots=True)
class Services:
    """The server's parts, from the database up; each built with all it needs."""

    #: The site in force (rooms, staff, duty, escalation), read from the database.
    book: SiteBook
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    #: How long personal data is kept (notes, reviews, exports).
    retention: Retention
    keeper: LogKeeper
    pager: Pager
    scheduler: Scheduler
    lights: Lights
    tell: Tell
    news: RepressNews
    alerts: Alerts
    statuses: Statuses
    runner: Runner
    responder: Responder
    rota: Rota
    receipts: Receipts
    sms: SmsReplies
    #: Fallback SMS and calls from workers' phones whose data connection failed.
    fallback: Fallback
    voice: VoiceKeys
    records: Records
    #: Sign-in, enrolment links, personal API tokens.
    signin: SignIn
    #: What ``/metrics`` shows: alarms, pages, times to a first page and to an answer.
    metrics: Metrics

    #: Confirmed phones, test pages, numbers the provider reports as bad.
    phones: Phones
    #: Pages managers while workers are present and nobody is on duty.
    continuity: Continuity
    #: Alarms from workers' phones (the mobile button).
    mobile: PhoneAlarms
    #: Phones' check-in sessions, and their timer (reminders, missed check-outs).
    checkins: CheckIns
    checkin_timer: CheckinTimer
    #: This instance among the others on one database (:mod:`server.cluster`).
    cluster: Cluster

    @property
    def site(self) -> Site:
        """The site in force now."""
        return self.book.current()

    def start(self) -> None:
        """Send what a crash left queued, then run due jobs."""
        self.pager.redrive()
        self.scheduler.start()
        self.checkin_timer.start()

    def stop(self) -> None:
        self.checkin_timer.stop()
        self.scheduler.stop()
        self.pager.close()
