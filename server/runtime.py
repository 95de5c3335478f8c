"""The server's core, shared by the MQTT ingest and the HTTP routes.

It owns the database sessions, the site, the pager and the way feedback goes
back to room units. Each ``handle_*`` method is one transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from panicbutton.wire import Alert, Feedback, FeedbackState, Status, now_utc
from server import incidents, messages, replies
from server.db import sessions
from server.incidents import FEEDBACK_FOR, Outcome, State, audit
from server.models import Incident, Page, WebhookReceipt
from server.notifier import Notifier, mask
from server.paging import Pager
from server.site import Language, Site, Staff

log = logging.getLogger(__name__)

FeedbackSink = Callable[[str, Feedback], None]

#: "Not understood" replies per number before we stay silent (stops auto-responder loops).
MAX_NOT_UNDERSTOOD = 5


class UnknownDeviceError(LookupError):
    pass


class Runtime:
    def __init__(
        self,
        *,
        site: Site,
        engine: Engine,
        notifier: Notifier,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.site = site
        self.engine = engine
        self.sessions = sessions(engine)
        self.clock = clock
        self.pager = Pager(sessions=self.sessions, site=site, notifier=notifier, clock=clock)
        self.publish_feedback: FeedbackSink = lambda device_id, fb: None
        self.pager.on_page_done = self._page_done
        self._test_lock = threading.Lock()
        self._not_understood: dict[str, int] = {}
        self._not_understood_lock = threading.Lock()

    def close(self) -> None:
        self.pager.close()

    # -- room units ----------------------------------------------------------
    def handle_alert(self, alert: Alert) -> Feedback:
        """Record ``alert`` (once), queue its pages, and return the feedback for the unit.

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
        incident = result.incident
        if result.new:
            log.info(
                "incident %d opened: room %s, alert %s",
                incident.id,
                incident.room_id,
                alert.alert_id,
            )
            self.pager.dispatch(result.page_ids)
        elif result.repressed:
            log.info("incident %d: button pressed again (%d)", incident.id, incident.presses)
            self._tell_paged(
                incident,
                lambda m: messages.repress(m.language, room=room.label, presses=incident.presses),
                purpose="repress",
            )
        else:
            log.info("alert %s redelivered; incident %d already open", alert.alert_id, incident.id)
        return Feedback(
            alert_id=alert.alert_id,
            state=FEEDBACK_FOR[State(incident.state)],
            at=now,
            incident=incident.id,
            presses=incident.presses,
        )

    def _page_done(self, incident_id: int) -> None:
        """A test incident is complete once all its pages went out (or failed): record the
        result and resolve it, so the room unit's light returns to armed."""
        now = self.clock()
        with self._test_lock, self.sessions.begin() as s:
            incident = s.get_one(Incident, incident_id)
            if incident.kind != "test" or incident.state == State.RESOLVED:
                return
            statuses = list(s.scalars(select(Page.status).where(Page.incident_id == incident_id)))
            if any(status in ("pending", "sending") for status in statuses):
                return
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
        self.publish_feedback(
            incident.device_id,
            Feedback(
                alert_id=incident.alert_id,
                state=FeedbackState.RESOLVED,
                at=now,
                incident=incident.id,
                presses=incident.presses,
            ),
        )

    def _tell_paged(
        self, incident: Incident, text: Callable[[Staff], str], *, purpose: str
    ) -> None:
        """Send a text to everyone paged for ``incident`` (or who acknowledged it)."""
        with self.sessions() as s:
            paged = set(s.scalars(select(Page.staff_id).where(Page.incident_id == incident.id)))
        for staff_id in sorted(paged):
            member = self.site.member(staff_id)
            self.pager.send_text(member, text(member), incident_id=incident.id, purpose=purpose)

    def handle_status(self, status: Status) -> None:
        """A unit's status: heartbeat, Last Will or clean stop."""
        room = self.site.room_for_device(status.device_id)
        if room is None:
            raise UnknownDeviceError(f"device {status.device_id!r} is not in the site file")
        with self.sessions.begin() as s:
            back = incidents.record_status(session=s, status=status, now=self.clock())
        if back:
            self.tell_managers(
                lambda m: messages.unit_online(m.language, room=room.label), purpose="unit_online"
            )

    def tell_managers(self, text: Callable[[Staff], str], *, purpose: str) -> None:
        """Technical news for managers (staff on duty when the site names no manager)."""
        for member in self.site.managers():
            self.pager.send_text(member, text(member), incident_id=None, purpose=purpose)

    # -- staff -----------------------------------------------------------------
    def seen_webhook(self, key: str) -> bool:
        """Record a webhook's provider id; True if it was handled before (a replay)."""
        try:
            with self.sessions.begin() as s:
                s.execute(insert(WebhookReceipt).values(key=key[:96], at=self.clock()))
        except IntegrityError:
            return True
        return False

    def handle_sms(self, *, phone: str, body: str) -> None:
        """Act on an SMS from ``phone``; replies go out through the pager."""
        member = self.site.by_phone(phone)
        if member is None:
            log.warning("SMS from unknown number %s ignored", mask(phone))
            return
        command = replies.parse(body)
        now = self.clock()
        if command.kind in (replies.Kind.OPT_OUT, replies.Kind.OPT_IN):
            with self.sessions.begin() as s:
                audit(s, at=now, type=f"staff.{command.kind}", staff=member.id)
            log.warning(
                "staff %s sent %s: pages to them will %s",
                member.id,
                command.kind,
                "fail until they send START" if command.kind is replies.Kind.OPT_OUT else "resume",
            )
            return
        if command.kind is replies.Kind.UNKNOWN:
            self._not_understood_reply(member.id, member.phone, member.language)
            return
        with self._not_understood_lock:
            self._not_understood.pop(member.phone, None)
        with self.sessions.begin() as s:
            query = (
                select(Page, Incident)
                .join(Incident, Incident.id == Page.incident_id)
                .where(Page.staff_id == member.id, Incident.state != State.RESOLVED)
            )
            if command.code is not None:
                query = query.where(Page.reply_code == command.code)
            row = s.execute(query.order_by(Incident.id.desc()).limit(1)).first()
            if row is None:
                changed, incident = False, None
            else:
                incident = row[1]
                changed = incidents.acknowledge(
                    session=s, incident=incident, staff_id=member.id, via="sms", now=now
                )
                paged = set(s.scalars(select(Page.staff_id).where(Page.incident_id == incident.id)))
        if incident is None:
            self._not_understood_reply(member.id, member.phone, member.language)
            return
        room = self.site.room(incident.room_id).label
        if not changed:
            acker = self.site.member(incident.acknowledged_by or member.id)
            self.pager.send_text(
                member,
                messages.already(member.language, name=acker.name, room=room),
                incident_id=incident.id,
                purpose="already_acknowledged",
            )
            return
        log.info("incident %d acknowledged by staff %s", incident.id, member.id)
        self.publish_feedback(
            incident.device_id,
            Feedback(
                alert_id=incident.alert_id,
                state=FeedbackState.ACKNOWLEDGED,
                at=now,
                incident=incident.id,
                presses=incident.presses,
            ),
        )
        self.pager.send_text(
            member,
            messages.confirm(member.language, room=room),
            incident_id=incident.id,
            purpose="confirm",
        )
        for other_id in sorted(paged - {member.id}):
            other = self.site.member(other_id)
            self.pager.send_text(
                other,
                messages.stand_down(other.language, name=member.name, room=room),
                incident_id=incident.id,
                purpose="stand_down",
            )

    def _not_understood_reply(self, staff_id: str, phone: str, language: Language) -> None:
        with self._not_understood_lock:
            count = self._not_understood.get(phone, 0) + 1
            self._not_understood[phone] = count
        if count > MAX_NOT_UNDERSTOOD:
            log.warning("staff %s: reply not understood again; staying silent", staff_id)
            return
        self.pager.send_text(
            self.site.member(staff_id),
            messages.not_understood(language),
            incident_id=None,
            purpose="not_understood",
        )

    def resolve(self, *, incident_id: int, staff_id: str, outcome: Outcome) -> Incident | None:
        now = self.clock()
        with self.sessions.begin() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                return None
            changed = incidents.resolve(
                session=s, incident=incident, staff_id=staff_id, outcome=outcome, now=now
            )
        if changed:
            self.publish_feedback(
                incident.device_id,
                Feedback(
                    alert_id=incident.alert_id,
                    state=FeedbackState.RESOLVED,
                    at=now,
                    incident=incident.id,
                    presses=incident.presses,
                ),
            )
        return incident
