"""The server's core, shared by the MQTT ingest, the HTTP routes and the timers.

It owns the database sessions, the site, the pager, the escalation scheduler
and the way feedback goes back to room units. Each ``handle_*`` method is one
transaction; texts and feedback go out after it commits.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from panicbutton.clock import Clock, SystemClock
from panicbutton.wire import Alert, Feedback, FeedbackState, Status
from server import duty, incidents, replies
from server.db import sessions
from server.escalation import plans
from server.escalation.scheduler import Scheduler
from server.incidents import FEEDBACK_FOR, Outcome, State
from server.log.append import audit
from server.log.personal import Retention
from server.models import (
    DeviceRecord,
    DutyOverride,
    EscalationJob,
    Incident,
    Page,
    StaffState,
    WebhookReceipt,
)
from server.paging import messages
from server.paging.fit import BUDGET
from server.paging.links import LIST, make_token
from server.paging.notifier import Notifier, mask
from server.paging.pager import Pager
from server.site import Language, Room, Site, Staff

if TYPE_CHECKING:
    from server.log.keeper import LogKeeper

log = logging.getLogger(__name__)

FeedbackSink = Callable[[str, Feedback, bool], None]  # device id, feedback, retain

#: "Not understood" replies per number before we stay silent (stops auto-responder loops).
MAX_NOT_UNDERSTOOD = 5
#: A person paged about this many open (not yet taken) alarms or more gets no re-press
#: news: their pages name the rooms, and news would only hold those pages back.
NEWS_QUIET = 3
#: Wrong reply codes per number within GUESS_WINDOW before codes from it are refused
#: until the window passes: with 900 codes, a guesser gets 5 tries per 15 minutes.
MAX_WRONG_CODES = 5
GUESS_WINDOW = timedelta(minutes=15)
#: Wrong reply codes from all numbers together within GUESS_WINDOW before no code by
#: SMS is acted on for CODES_PAUSE (a spoofer has every staff number to send from).
MAX_SITE_WRONG_CODES = 10
CODES_PAUSE = timedelta(minutes=15)
#: Open alarms listed in the answer to a reply without a code.
CODES_SHOWN = 5
#: Provider statuses that mean a page did not reach the person.
FAILED = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})
#: Incident kinds that come from a room unit's button (they get feedback on its light).
FROM_BUTTON = ("panic", "test")


class UnknownDeviceError(LookupError):
    pass


class Runtime:
    def __init__(
        self,
        *,
        site: Site,
        engine: Engine,
        notifier: Notifier,
        clock: Clock | None = None,
        public_base_url: str = "",
        link_secret: str = "",
        bundle_window: dict[str, float] | None = None,
    ) -> None:
        self.site = site
        self.engine = engine
        self.sessions = sessions(engine)
        self.time = clock or SystemClock()
        self.clock = self.time.now
        self._public = public_base_url
        self._link_secret = link_secret
        self.pager = Pager(
            sessions=self.sessions,
            site=site,
            notifier=notifier,
            clock=self.time,
            callback_url=self.callback_url,
            link_url=self.ack_link,
            list_url=self.list_link,
            bundle_window=bundle_window,
            on_page_done=self._page_done,
        )
        self.scheduler = Scheduler(
            sessions=self.sessions,
            clock=self.time,
            run_job=self._run_job,
            on_pass=self.pager.request_sweep,
        )
        self.publish_feedback: FeedbackSink = lambda device_id, fb, retain: None
        self._feedback_lock = threading.Lock()
        self._lock = threading.Lock()
        self._not_understood: dict[str, int] = {}
        #: (incident, staff) -> the press count the last re-press news Twilio took said.
        self._told: dict[tuple[int, str], int] = {}
        #: staff -> when their last re-press news was sent (one text per NEWS_EVERY).
        self._news_at: dict[str, datetime] = {}
        #: Times of wrong reply codes per phone (kept in memory, see MAX_WRONG_CODES).
        self._guesses: dict[str, list[datetime]] = {}
        #: Times of wrong reply codes from any phone, and the end of a site-wide pause.
        self._site_guesses: list[datetime] = []
        self._codes_paused: datetime | None = None
        #: (phone, "phone" or "site") -> the end of the lock last explained to that phone.
        self._lock_told: dict[tuple[str, str], datetime] = {}
        #: Set by server.app.build: the log keeper (signs checkpoints) and retention.
        self.keeper: LogKeeper | None = None
        self.retention = Retention()

    def callback_url(self, path: str) -> str | None:
        """The public URL Twilio calls back on for ``path``; None without a public URL."""
        return self._public + path if self._public else None

    def ack_link(self, page_id: int, created: datetime) -> str | None:
        """A signed single-use acknowledgement link for a page, or None without links.
        Its expiry counts from the page's creation, so the same page always renders the
        same text (the crash check compares texts)."""
        if not (self._public and self._link_secret):
            return None
        return f"{self._public}/ack/{make_token(self._link_secret, page_id, created)}"

    def list_link(self, page_id: int, created: datetime) -> str | None:
        """A signed link to the open alarms of the person a page is for (a bundle names
        only the rooms that fit), or None without links."""
        if not (self._public and self._link_secret):
            return None
        token = make_token(self._link_secret, page_id, created, kind=LIST)
        return f"{self._public}/ack/{token}"

    def start(self) -> None:
        self.pager.redrive()
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.stop()
        self.pager.close()

    # -- room units --------------------------------------------------------------------
    def handle_alert(self, alert: Alert) -> Feedback:
        """Record ``alert`` (once), page step 0, and return the feedback for the unit.

        The incident is committed before this returns; the caller confirms
        receipt to the unit only then. A unit missing from the site file still
        pages the staff on duty (someone pressed a button), as an unknown unit.
        """
        room = self.site.room_for_device(alert.device_id)
        if room is None:
            log.error(
                "alert from unit %s, which is not in the site file: paging as an unknown "
                "unit; add it to the site file",
                alert.device_id,
            )
            room = self.site.unknown_room(alert.device_id)
        now = self.clock()
        try:
            with self.sessions.begin() as s:
                result = incidents.record_alert(
                    session=s, site=self.site, room=room, alert=alert, now=now
                )
        except IntegrityError:
            # Another instance committed the same alert first: read its incident.
            with self.sessions.begin() as s:
                result = incidents.record_alert(
                    session=s, site=self.site, room=room, alert=alert, now=now
                )
        if result.refused:
            return self._refused(alert, now)
        incident = result.incident
        if result.new:
            log.info(
                "incident %d opened: room %s, alert %s",
                incident.id,
                incident.room_id,
                alert.alert_id,
            )
            self.pager.dispatch(result.page_ids)
            self.scheduler.wake()
        elif result.repressed:
            log.info("incident %d: button pressed again (%d)", incident.id, incident.presses)
        else:
            log.info("alert %s redelivered; incident %d already open", alert.alert_id, incident.id)
        self._send_feedback(incident, now)
        if result.repressed:
            # After the unit's feedback: the news (several queries) must not delay it.
            self._repress_news(incident.id, now)
            self.scheduler.wake()  # the job for the news this window holds back
        return self._feedback(incident, now)

    def _refused(self, alert: Alert, now: datetime) -> Feedback:
        """An alert id another unit's incident holds: nothing opened, nothing counted.

        NOTE: the unit is told ``resolved`` (not retained: its own alerts' feedback
        stays) so that it stops resending an alert that can never be accepted, and
        its next press starts a new alert that pages for its own room.
        """
        log.error(
            "alert %s from unit %s refused: that alert id belongs to another unit's "
            "incident (a cloned memory card, or a forged unit); told the unit it is over",
            alert.alert_id,
            alert.device_id,
        )
        feedback = Feedback(
            alert_id=alert.alert_id,
            state=FeedbackState.RESOLVED,
            at=now,
            incident=0,
            presses=alert.presses,
        )
        self.publish_feedback(alert.device_id, feedback, False)
        return feedback

    def _repress_news(self, incident_id: int, now: datetime) -> bool:
        """Tell the people paged for an incident that its button was pressed again: each
        person at most one text every NEWS_EVERY seconds, covering all their rooms with
        news (a button mashed 30 times is one text, then one more with the count when
        the window ends: the ``repress_news`` job scheduled with each press). Nobody
        paged about NEWS_QUIET open alarms or more gets news. A person counts as told
        only once Twilio took the text; a text that failed re-arms the job.

        Return whether someone's news is held back for a reason no scheduled job
        covers (they are being paged about many alarms): the job then runs again.

        NOTE: who was told what is kept in memory; after a restart the pending job tells
        everyone paged the current count (at worst one text twice, never none).
        """
        with self.sessions() as s:
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

    def _news_for(self, staff_id: str, now: datetime) -> bool:
        """Send one person their re-press news now if the throttle allows; return True
        when it is held back because they are being paged about many open alarms."""
        window = timedelta(seconds=incidents.NEWS_EVERY)
        with self._lock:
            last = self._news_at.get(staff_id)
            if last is not None and now < last + window:
                return False  # told too recently: the job of the press tells later
        try:
            member = self.site.member(staff_id)
        except LookupError:  # removed from the site file since the page
            return False
        with self.sessions() as s:
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
        rooms = [(self.site.room(room_id).label, presses) for _, room_id, presses in news]
        self.pager.send_text(
            member,
            messages.repress_all(member.language, rooms=rooms, budget=BUDGET["sms"]),
            incident_id=news[0][0],
            purpose="repress",
            on_done=lambda sent: self._news_done(staff_id, news, sent, now),
        )
        return False

    def _news_done(
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
        self._news_again(news[0][0])

    def _news_again(self, incident_id: int) -> None:
        """Run the incident's latest re-press news job again in NEWS_EVERY seconds."""
        due = self.clock() + timedelta(seconds=incidents.NEWS_EVERY)
        with self.sessions.begin() as s:
            job = s.scalars(
                select(EscalationJob)
                .where(
                    EscalationJob.incident_id == incident_id,
                    EscalationJob.kind == incidents.REPRESS_NEWS,
                )
                .order_by(EscalationJob.step.desc())
                .limit(1)
            ).first()
            if job is None:
                return
            job.status, job.due_at, job.done_at = "pending", due, None
        self.scheduler.wake()

    @staticmethod
    def _feedback(incident: Incident, now: datetime) -> Feedback:
        return Feedback(
            alert_id=incident.alert_id,
            state=FEEDBACK_FOR[State(incident.state)],
            at=now,
            incident=incident.id,
            presses=incident.presses,
            round=incident.round,
        )

    def _send_feedback(self, incident: Incident, now: datetime) -> None:
        """Tell the unit where its alert stands, read fresh under a lock, so that two
        threads publishing for one incident cannot leave an older state retained."""
        if incident.kind not in FROM_BUTTON:
            return
        with self._feedback_lock, self.sessions() as s:
            fresh = s.get_one(Incident, incident.id)
            self.publish_feedback(
                fresh.device_id, self._feedback(fresh, now), fresh.kind == "panic"
            )

    def handle_status(self, status: Status, *, retained: bool = False) -> None:
        """A unit's status: heartbeat, Last Will or clean stop."""
        room = self.site.room_for_device(status.device_id)
        if room is None:
            raise UnknownDeviceError(f"device {status.device_id!r} is not in the site file")
        with self.sessions.begin() as s:
            back = incidents.record_status(
                session=s, status=status, now=self.clock(), retained=retained
            )
        if back:
            self.unit_online(room)

    def unit_offline(self, room: Room, since: datetime) -> None:
        """A unit is offline: a technical incident that pages managers until acknowledged."""
        now = self.clock()
        with self.sessions.begin() as s:
            device = s.get(DeviceRecord, room.device)
            if device is None or device.offline_alerted:
                return  # told already (or unknown)
            # NOTE: marked in the same transaction as the incident: never "told" without it.
            device.offline_alerted = True
            incident = Incident(
                alert_id=uuid.uuid4().hex,
                device_id=room.device,
                room_id=room.id,
                kind="unit_offline",
                seq=0,
                pressed_at=since,
                received_at=now,
                state=State.OPEN,
                presses=1,
            )
            s.add(incident)
            s.flush()
            audit(
                s,
                at=now,
                type="device.offline_alerted",
                incident_id=incident.id,
                device=room.device,
                since=since,
            )
            pages = plans.start(session=s, site=self.site, incident=incident, now=now)
        self.pager.dispatch(pages)
        self.scheduler.wake()

    def unit_online(self, room: Room) -> None:
        """A unit that managers were told is offline is back: close its technical incidents."""
        now = self.clock()
        with self.sessions.begin() as s:
            open_ = list(
                s.scalars(
                    select(Incident).where(
                        Incident.device_id == room.device,
                        Incident.kind == "unit_offline",
                        Incident.state != State.RESOLVED,
                    )
                )
            )
            for incident in open_:
                incidents.resolve(
                    session=s,
                    incident=incident,
                    staff_id="system",
                    outcome=Outcome.RECOVERED,
                    now=now,
                )
        for incident in open_:
            self._tell_paged(
                incident,
                lambda m: messages.unit_online(m.language, room=room.label),
                purpose="unit_online",
            )

    # -- escalation ----------------------------------------------------------------------
    def _run_job(self, job_id: int, now: datetime) -> None:
        with self.sessions.begin() as s:
            job = s.get_one(EscalationJob, job_id)
            incident = s.get_one(Incident, job.incident_id)
            news = job.kind == incidents.REPRESS_NEWS
            latest = job.step == incident.presses  # the news job of the last press
            wanted = State.OPEN if job.kind == "step" else State.ACKNOWLEDGED
            # A job of an earlier round (left by a crash before a reopen) is over.
            if not news and (incident.state != wanted or job.step // plans.ROUND != incident.round):
                job.status = "cancelled"
                return
            pages: list[int] = []
            if not news:
                run = plans.run_step if job.kind == "step" else plans.run_follow_up
                pages = run(session=s, incident=incident, n=job.step, due=job.due_at, now=now)
            job.status, job.done_at = "done", now
        if news:  # texts, after the commit like every other text
            if self._repress_news(incident.id, now) and latest:
                self._news_again(incident.id)  # someone is held back: try again later
            return
        log.info("incident %d: %s %d paged %d", incident.id, job.kind, job.step, len(pages))
        self.pager.dispatch(pages)

    def _page_done(self, incident_id: int, page_id: int) -> None:
        """After each page: a failed one hurries the next step; a test completes."""
        hurried = self._page_done_in_db(incident_id, page_id)
        if hurried:
            self.scheduler.wake()  # after the commit, so the scheduler sees the new time

    def _page_done_in_db(self, incident_id: int, page_id: int) -> bool:
        now = self.clock()
        with self._lock, self.sessions.begin() as s:
            incident = s.get_one(Incident, incident_id)
            page = s.get_one(Page, page_id)
            hurried = page.status == "failed" and self._failed(
                s, incident, page, page.error or "", now
            )
            if incident.kind != "test" or incident.state == State.RESOLVED:
                return hurried
            statuses = list(s.scalars(select(Page.status).where(Page.incident_id == incident_id)))
            if any(status in ("pending", "sending") for status in statuses):
                return hurried
            sent = statuses.count("sent")
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
        self._send_feedback(incident, now)
        return hurried

    def _failed(self, s: Session, incident: Incident, page: Page, why: str, now: datetime) -> bool:
        if plans.hurry(s, incident=incident, failed_step=page.step, now=now):
            log.warning(
                "incident %d: %s to staff %s failed (%s); next step now",
                incident.id,
                page.channel,
                page.staff_id,
                why,
            )
            hurried = True
        else:
            hurried = False
        if "21610" in why:
            self._opted_out(s, page.staff_id, now)
        return hurried

    def handle_provider_status(
        self, *, page_ids: list[int], status: str, error_code: str, provider_sid: str = ""
    ) -> None:
        """Twilio's status callback for an SMS or a call. Never an acknowledgement.

        ``page_ids`` come from the callback's URL, which names at most the first pages
        of a bundle; every page sent as ``provider_sid`` is found by that id too.
        """
        now = self.clock()
        wake = False
        with self._lock, self.sessions.begin() as s:
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
                if status in FAILED:
                    incident = s.get_one(Incident, page.incident_id)
                    wake = self._failed(s, incident, page, f"{status} {error_code}", now) or wake
        if wake:
            self.scheduler.wake()

    # -- staff -----------------------------------------------------------------------------
    def seen_webhook(self, key: str) -> bool:
        """Record a webhook's provider id; True if it was handled before (a replay)."""
        try:
            with self.sessions.begin() as s:
                s.execute(insert(WebhookReceipt).values(key=key[:96], at=self.clock()))
        except IntegrityError:
            return True
        return False

    def forget_webhook(self, key: str) -> None:
        """Handling failed: drop the receipt, so the provider's retry is acted on."""
        with self.sessions.begin() as s:
            s.execute(delete(WebhookReceipt).where(WebhookReceipt.key == key[:96]))

    def handle_voice(self, *, page_ids: list[int], digits: str) -> str:
        """A key pressed in a page call; answers with TwiML. Only "1" acknowledges."""
        with self.sessions() as s:
            pages = [p for p in (s.get(Page, i) for i in page_ids) if p is not None]
        if not pages:
            return messages.call_answer("en", "")
        member = self.site.member(pages[0].staff_id)
        if digits.strip() != "1":
            return messages.call_answer(member.language, messages.call_nothing(member.language))
        mine, others = [], []
        for page in pages:
            incident = self.acknowledge(
                incident_id=page.incident_id, staff_id=member.id, via="call", confirm=False
            )
            if incident is None:
                continue
            room = messages.room_label(self.site.room(incident.room_id).label)
            if incident.acknowledged_by in (None, member.id):
                mine.append(room)
            else:  # someone else was first: say so, never "you are going"
                taker = self.site.member(incident.acknowledged_by)
                others.append(messages.already(member.language, name=taker.name, room=room))
        said = [messages.call_thanks(member.language, room=", ".join(mine))] if mine else []
        return messages.call_answer(
            member.language, " ".join(said + others) or messages.call_nothing(member.language)
        )

    def acknowledge(
        self, *, incident_id: int, staff_id: str, via: str, confirm: bool = True
    ) -> Incident | None:
        """A person acknowledges: paging stops, the others are told who is going, and the
        room unit shows "help is coming". Returns the incident, or None if unknown."""
        member = self.site.member(staff_id)
        now = self.clock()
        with self.sessions.begin() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                return None
            changed = incidents.acknowledge(
                session=s, incident=incident, staff_id=staff_id, via=via, now=now
            )
        room = self.site.room(incident.room_id).label
        if not changed:
            if incident.acknowledged_by != staff_id and confirm:
                acker = self.site.member(incident.acknowledged_by or staff_id)
                self.pager.send_text(
                    member,
                    messages.already(member.language, name=acker.name, room=room),
                    incident_id=incident.id,
                    purpose="already_acknowledged",
                )
            return incident
        log.info("incident %d acknowledged by staff %s via %s", incident.id, staff_id, via)
        self._send_feedback(incident, now)
        self.scheduler.wake()
        if confirm:
            self.pager.send_text(
                member,
                messages.confirm(member.language, room=room),
                incident_id=incident.id,
                purpose="confirm",
            )
        self._tell_paged(
            incident,
            lambda other: messages.stand_down(other.language, name=member.name, room=room),
            purpose="stand_down",
            but=staff_id,
        )
        return incident

    def resolve(self, *, incident_id: int, staff_id: str, outcome: Outcome) -> Incident | None:
        """Close an incident with its outcome: a staff decision, never the room unit's."""
        now = self.clock()
        with self.sessions.begin() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                return None
            changed = incidents.resolve(
                session=s, incident=incident, staff_id=staff_id, outcome=outcome, now=now
            )
        if changed:
            with self._lock:  # no more re-press news for it
                for key in [k for k in self._told if k[0] == incident_id]:
                    del self._told[key]
            self._send_feedback(incident, now)
            room = self.site.room(incident.room_id).label
            self._tell_paged(
                incident,
                lambda m: messages.closed(m.language, room=room),
                purpose="closed",
                but=staff_id,
            )
        return incident

    def handle_sms(self, *, phone: str, body: str) -> None:
        """Act on an SMS from ``phone``; replies go out through the pager."""
        member = self.site.by_phone(phone)
        if member is None:
            log.warning("SMS from unknown number %s ignored", mask(phone))
            return
        command = replies.parse(body)
        match command.kind:
            case replies.Kind.OPT_OUT | replies.Kind.OPT_IN:
                with self.sessions.begin() as s:
                    if command.kind is replies.Kind.OPT_OUT:
                        self._opted_out(s, member.id, self.clock())
                    else:
                        self._set_opt_out(s, member.id, False, self.clock())
                return
            case replies.Kind.DUTY_ON | replies.Kind.DUTY_OFF:
                self._understood(member)
                self.takeover(staff_id=member.id, on=command.kind is replies.Kind.DUTY_ON)
                return
            case replies.Kind.NO_CODE:
                self._ask_for_code(member)
                return
            case replies.Kind.UNKNOWN:
                self._unclear(member, messages.not_understood(member.language))
                return
        self._act_on_code(member, command)

    def _act_on_code(self, member: Staff, command: replies.Command) -> None:
        """Acknowledge or resolve the incident a reply's code names, if the code is right."""
        now = self.clock()
        if self._codes_refused(member, now):
            return
        incident_id = (
            self._incident_for_code(member.id, command.code) if command.code is not None else None
        )
        if incident_id is None:
            self._wrong_code(member, now)
            return
        self._understood(member)
        if command.kind is replies.Kind.RESOLVE:
            self._close_by_code(member, incident_id, command)
            return
        self.acknowledge(incident_id=incident_id, staff_id=member.id, via="sms")

    def _close_by_code(self, member: Staff, incident_id: int, command: replies.Command) -> None:
        """ "482g" or "482f": closes only an alarm already taken, and only for the person
        who took it or whom a follow-up asked to close it. An open alarm is never closed
        by SMS: a guessed code must not stop the paging."""
        lang = member.language
        with self.sessions() as s:
            incident = s.get_one(Incident, incident_id)
            state, acker, room = incident.state, incident.acknowledged_by, incident.room_id
            asked = acker == member.id or s.scalar(
                select(Page.id)
                .where(Page.incident_id == incident_id, Page.staff_id == member.id, Page.step < 0)
                .limit(1)
            )
        label = self.site.room(room).label
        if state == State.OPEN:
            log.info("staff %s: close by SMS refused: the alarm is not taken yet", member.id)
            text = messages.take_first(lang, room=label, code=command.code or 0)
            self.pager.send_text(member, text, incident_id=incident_id, purpose="not_done")
            return
        if state == State.ACKNOWLEDGED and not asked:
            log.info("staff %s: close by SMS refused: taken by someone else", member.id)
            name = self.site.member(acker or member.id).name
            text = messages.not_yours(lang, room=label, name=name)
            self.pager.send_text(member, text, incident_id=incident_id, purpose="not_done")
            return
        closed = self.resolve(
            incident_id=incident_id,
            staff_id=member.id,
            outcome=Outcome(command.outcome or "genuine"),
        )
        if closed is not None:
            self.pager.send_text(
                member,
                messages.closed(lang, room=label),
                incident_id=incident_id,
                purpose="closed",
            )

    def _codes_refused(self, member: Staff, now: datetime) -> bool:
        """True while codes from this phone (or from any, see MAX_SITE_WRONG_CODES) are not
        acted on. The first code in each lock is answered with why, even past the limit on
        answers (the real person may be the one locked out); later ones are not (no loop
        with an auto-responder)."""
        tz, lang = self.site.timezone, member.language
        phone_until = self._codes_locked_until(member, now)
        if phone_until is not None:
            log.warning("staff %s: reply code refused: too many wrong codes lately", member.id)
            key, until = "phone", phone_until
            text = messages.codes_locked(lang, until=phone_until, timezone=tz)
        else:
            site_until = self._codes_paused_until(now)
            if site_until is None:
                return False
            log.warning("staff %s: reply code refused: codes by SMS are paused", member.id)
            key, until = "site", site_until
            text = messages.codes_paused(lang, until=site_until, timezone=tz)
        with self._lock:
            told = self._lock_told.get((member.phone, key)) == until
            self._lock_told[(member.phone, key)] = until
        if not told:
            self.pager.send_text(member, text, incident_id=None, purpose="not_understood")
        return True

    def _codes_paused_until(self, now: datetime) -> datetime | None:
        with self._lock:
            if self._codes_paused is not None and self._codes_paused <= now:
                self._codes_paused = None
            return self._codes_paused

    def _incident_for_code(self, staff_id: str, code: int) -> int | None:
        """The unresolved incident whose current round paged this person with ``code``: a
        code from before a reopen (a late reply about the closed alarm) takes nothing."""
        with self.sessions() as s:
            rows = s.execute(
                select(Incident.id, Incident.round, Page.step)
                .join(Page, Page.incident_id == Incident.id)
                .where(
                    Page.staff_id == staff_id,
                    Page.reply_code == code,
                    Incident.state != State.RESOLVED,
                )
            ).all()
        return next((i for i, now, step in rows if plans.round_of(step) == now), None)

    def _open_codes(self, staff_id: str) -> list[tuple[int, str]]:
        """(code, room) of this person's unresolved incidents, newest page's code each."""
        with self.sessions() as s:
            rows = s.execute(
                select(Incident.id, Incident.room_id, Page.reply_code)
                .join(Page, Page.incident_id == Incident.id)
                .where(Page.staff_id == staff_id, Incident.state != State.RESOLVED)
                .order_by(Incident.id, Page.id)
            ).all()
        codes = {incident_id: (code, room_id) for incident_id, room_id, code in rows}
        return [(code, self.site.room(room).label) for code, room in codes.values()][:CODES_SHOWN]

    def _ask_for_code(self, member: Staff) -> None:
        """A reply without a code (or a wrong one): say which codes this person can send."""
        codes = self._open_codes(member.id)
        lang = member.language
        self._unclear(
            member,
            messages.code_needed(lang, codes=codes) if codes else messages.not_understood(lang),
        )

    def _wrong_code(self, member: Staff, now: datetime) -> None:
        with self._lock:
            recent = [t for t in self._guesses.get(member.phone, []) if t > now - GUESS_WINDOW]
            self._guesses[member.phone] = [*recent, now]
            site = [*(t for t in self._site_guesses if t > now - GUESS_WINDOW), now]
            paused = len(site) >= MAX_SITE_WRONG_CODES
            self._site_guesses = [] if paused else site
            if paused:
                self._codes_paused = now + CODES_PAUSE
        log.warning(
            "staff %s: reply code matches none of their open alarms (%d of %d allowed in %d min)",
            member.id,
            len(recent) + 1,
            MAX_WRONG_CODES,
            GUESS_WINDOW.total_seconds() // 60,
        )
        locked = self._codes_locked_until(member, now)
        lang, tz = member.language, self.site.timezone
        if paused:  # said with the guess that starts it, so the limit on answers never hides it
            log.warning(
                "%d wrong reply codes on the site within %d min: codes by SMS paused for %d min",
                MAX_SITE_WRONG_CODES,
                GUESS_WINDOW.total_seconds() // 60,
                CODES_PAUSE.total_seconds() // 60,
            )
            text = messages.codes_paused(lang, until=now + CODES_PAUSE, timezone=tz)
            self.pager.send_text(member, text, incident_id=None, purpose="not_understood")
        elif locked is None:
            self._ask_for_code(member)
        else:  # said with the guess that starts it, so the limit on answers never hides it
            self._unclear(member, messages.codes_locked(lang, until=locked, timezone=tz))

    def _codes_locked_until(self, member: Staff, now: datetime) -> datetime | None:
        """While a phone has sent MAX_WRONG_CODES wrong codes within GUESS_WINDOW, no code
        from it is acted on (a spoofed sender must not try them all); until when."""
        with self._lock:
            recent = [t for t in self._guesses.get(member.phone, []) if t > now - GUESS_WINDOW]
            self._guesses[member.phone] = recent
        if len(recent) < MAX_WRONG_CODES:
            return None
        return recent[-MAX_WRONG_CODES] + GUESS_WINDOW

    def _understood(self, member: Staff) -> None:
        with self._lock:
            self._not_understood.pop(member.phone, None)

    def _unclear(self, member: Staff, text: str) -> None:
        """Answer a reply we did not act on, at most MAX_NOT_UNDERSTOOD times in a row."""
        with self._lock:
            count = self._not_understood.get(member.phone, 0) + 1
            self._not_understood[member.phone] = count
        if count > MAX_NOT_UNDERSTOOD:
            log.warning("staff %s: reply not understood again; staying silent", member.id)
            return
        self.pager.send_text(member, text, incident_id=None, purpose="not_understood")

    def _set_opt_out(self, s: Session, staff_id: str, out: bool, now: datetime) -> bool:
        state = s.get(StaffState, staff_id)
        if state is None:
            state = StaffState(staff_id=staff_id, sms_opted_out=not out, changed_at=now)
            s.add(state)
        changed = state.sms_opted_out != out
        if changed:
            state.sms_opted_out, state.changed_at = out, now
            audit(s, at=now, type="staff.opt_out" if out else "staff.opt_in", staff=staff_id)
        return changed

    def _opted_out(self, s: Session, staff_id: str, now: datetime) -> None:
        """STOP (or Twilio's 21610): SMS no longer reach this person; warn the managers
        if they are on duty now."""
        if not self._set_opt_out(s, staff_id, True, now):
            return
        member = self.site.member(staff_id)
        log.warning("staff %s opted out of SMS (STOP): only calls reach them", staff_id)
        if staff_id in duty.covering(self.site, duty.takeovers(s, now), now):
            for manager in self.site.managers():
                if manager.id != staff_id:
                    self.pager.send_text(
                        manager,
                        messages.opted_out(manager.language, name=member.name),
                        incident_id=None,
                        purpose="opted_out",
                    )

    # -- duty --------------------------------------------------------------------------------
    def takeover(self, *, staff_id: str, on: bool = True, hours: float | None = None) -> None:
        """ "I take over now" (or end it): this person alone is on duty until it ends."""
        now = self.clock()
        member = self.site.member(staff_id)
        until = now + timedelta(hours=hours or self.site.duty.takeover_hours)
        with self.sessions.begin() as s:
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
            messages.duty_on(member.language, until=until, timezone=self.site.timezone)
            if on
            else messages.duty_off(member.language)
        )
        self.pager.send_text(member, text, incident_id=None, purpose="duty")
        if on:
            self._tell_replaced(member, before, until, now)

    def _tell_replaced(
        self, member: Staff, before: list[duty.Takeover], until: datetime, now: datetime
    ) -> None:
        """Tell whoever was on duty before ``member`` took over, and no longer is (a
        take-over by a spoofed SMS is then seen at once by the people it replaced)."""
        after = [o for o in before if o.staff_id != member.id]
        after.append(duty.Takeover(member.id, now, until))
        was = duty.responders(self.site, before, now)
        still = set(duty.responders(self.site, after, now))
        for staff_id in was:
            if staff_id in still:
                continue
            other = self.site.member(staff_id)
            self.pager.send_text(
                other,
                messages.duty_replaced(
                    other.language, name=member.name, until=until, timezone=self.site.timezone
                ),
                incident_id=None,
                purpose="duty_replaced",
            )

    def check_duty_gap(self, warned: set[datetime | None]) -> datetime | None:
        """Warn managers once ahead of a stretch nobody covers; returns its start."""
        now = self.clock()
        with self.sessions() as s:
            overrides = duty.takeovers(s, now)
        gap = duty.next_gap(
            self.site, overrides, now, timedelta(seconds=self.site.duty.gap_warning)
        )
        # NOTE: keyed by the gap's end: inside a gap, "the next uncovered minute" moves
        # on every minute, its end does not (None: no roster at all, warned once).
        if gap is None or gap[1] in warned:
            return None
        start, end = gap
        warned.add(end)
        with self.sessions.begin() as s:
            audit(
                s,
                at=now,
                type="duty.gap_warned",
                start=start,
                end=end,
            )
        tz = self.site.timezone
        for manager in self.site.managers():
            self.pager.send_text(
                manager,
                messages.gap(manager.language, start=start, end=end, timezone=tz),
                incident_id=None,
                purpose="duty_gap",
            )
        return start

    def tell_managers(self, text: Callable[[Staff], str], *, purpose: str) -> None:
        """Technical news for managers (or the default group, or everyone)."""
        for member in self.site.managers():
            self.pager.send_text(member, text(member), incident_id=None, purpose=purpose)

    def _tell_paged(
        self,
        incident: Incident,
        text: Callable[[Staff], str],
        *,
        purpose: str,
        but: str | None = None,
    ) -> None:
        """Send a text to everyone paged for ``incident`` (except ``but``)."""
        with self.sessions() as s:
            paged = set(s.scalars(select(Page.staff_id).where(Page.incident_id == incident.id)))
        for staff_id in sorted(paged - {but}):
            try:
                member = self.site.member(staff_id)
            except LookupError:  # removed from the site file since the page
                log.warning("staff %s is no longer in the site file; not told", staff_id)
                continue
            self.pager.send_text(member, text(member), incident_id=incident.id, purpose=purpose)


__all__ = ["FeedbackSink", "Language", "Runtime", "UnknownDeviceError"]
