"""The check-in timer: reminders before a session's end, and the missed check-out alarm.

One thread sleeps until the next thing a running session needs (on the server's
clock), or until woken because a session started or moved. A reminder goes by
SMS to the phone's enrolled number :data:`~server.mobile.checkins.REMINDERS`
minutes before the end, in the worker's language; a session still running
:data:`~server.mobile.checkins.GRACE` after its end raises a ``missed_checkout``
alarm through the phone's alarm chain.

Sessions live in the database only, so a restart loses none: the timer reads them
again and catches up (a reminder whose time passed while the server was down is
sent once, the latest due; an alarm due is raised at once). Several server
instances may share the database: each claims a reminder or an alarm with a
conditional UPDATE, so a reminder is never sent twice and an alarm is raised once:
its alert id is random (no phone can guess it or send it first) and is kept on the
session's row in the claim's own transaction.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.db import changed
from server.log.append import audit
from server.mobile.alarms import PhoneAlarms, device_of
from server.mobile.checkins import GRACE, MISSED, REMINDERS, RUNNING, next_due
from server.mobile.tables import CheckIn, MobilePhone
from server.models import IncidentKind
from server.paging.messages import local_time
from server.paging.pager import Pager
from server.people.tables import Person
from server.site import Language, LiveSite, SiteSource, Staff

log = logging.getLogger(__name__)

#: Longest sleep between looks, seconds of the clock: bounds how late a session started
#: through another server instance (which cannot wake this one) is seen.
LONGEST = 30.0
#: Seconds before a session whose reminder or alarm failed is tried again.
RETRY = 5.0

#: The reminder, in the worker's language. Discreet: it says nothing of alarms or the
#: duress PIN (someone else may read the phone's screen).
_REMINDER = {
    "fr": "panicbutton : votre check-in se termine à {time}. "
    "Terminez-le ou prolongez-le dans l'app.",
    "nl": "panicbutton: uw check-in eindigt om {time}. Check uit of verleng in de app.",
    "en": "panicbutton: your check-in ends at {time}. Check out or extend in the app.",
}


def reminder_text(language: Language, ends_at: datetime, timezone: str) -> str:
    return _REMINDER[language].format(time=local_time(ends_at, timezone))


class CheckinTimer(LiveSite):
    """Sends check-in reminders and raises missed check-out alarms when they fall due."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        alarms: PhoneAlarms,
        longest: float = LONGEST,
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._alarms = alarms
        self._longest = longest
        self._woken = threading.Event()
        self._stop = threading.Event()
        #: The clock's time when the last pass finished began (for tests waiting for a look).
        self.looked_at: datetime | None = None
        self._thread = threading.Thread(target=self._loop, name="checkin_timer", daemon=True)

    def start(self) -> None:
        """Start looking (again, after :meth:`stop`)."""
        if self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="checkin_timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def wake(self) -> None:
        """A session started or moved: look again now."""
        self._woken.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._woken.clear()
            try:
                due = self.run_due()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("check-in timer pass failed; trying again")
                due = self._clock.now() + timedelta(seconds=RETRY)
            if self._stop.is_set():
                return
            self._clock.wait(self._woken, due, self._longest)

    def run_due(self) -> datetime | None:
        """Send the reminders and raise the alarms due now; return when the next is due."""
        now = self._clock.now()
        with self._sessions() as s:
            rows = s.execute(
                select(CheckIn.id, CheckIn.ends_at, CheckIn.reminders).where(
                    CheckIn.state == RUNNING
                )
            ).all()
        later: list[datetime] = []
        for checkin_id, ends_at, done in rows:
            try:
                if now >= ends_at + GRACE:
                    self._missed(checkin_id, now)
                    continue
                if now >= next_due(ends_at, done):
                    self._remind(checkin_id, ends_at, done, now)
            except Exception:
                log.exception("check-in %d: reminder or alarm failed; trying again", checkin_id)
                later.append(now + timedelta(seconds=RETRY))
        with self._sessions() as s:
            running = s.execute(
                select(CheckIn.ends_at, CheckIn.reminders).where(CheckIn.state == RUNNING)
            ).all()
        later += [next_due(ends_at, done) for ends_at, done in running]
        self.looked_at = now
        return min(later, default=None)

    def _remind(self, checkin_id: int, ends_at: datetime, done: int, now: datetime) -> None:
        """Send the latest reminder due (one only, after a restart that missed some)."""
        due = [i for i in range(done, len(REMINDERS)) if ends_at - _minutes(i) <= now]
        step = due[-1]
        with self._sessions.begin() as s:
            won = changed(
                s,
                update(CheckIn)
                .where(
                    CheckIn.id == checkin_id,
                    CheckIn.state == RUNNING,
                    CheckIn.reminders == done,
                    CheckIn.ends_at == ends_at,
                )
                .values(reminders=step + 1)
                .execution_options(synchronize_session=False),
            )
            if not won:  # sent by another server, or the session moved or ended
                return
            row = s.get_one(CheckIn, checkin_id)
            phone = s.get_one(MobilePhone, row.phone_id)
            person = s.get_one(Person, row.person_id)
            audit(s, at=now, type="checkin.reminded", phone=phone.id, minutes=REMINDERS[step])
            # The log names the phone, never the worker: the text is "to" the phone.
            to = Staff(
                id=device_of(phone.id),
                name=person.name,
                phone=phone.number,
                language=cast(Language, person.language),
            )
        text = reminder_text(to.language, ends_at, self._site.timezone)
        self._pager.send_text(to, text, incident_id=None, purpose="checkin_reminder")

    def _missed(self, checkin_id: int, now: datetime) -> None:
        """Raise the missed check-out alarm of a session still running past its grace.
        The claim (running -> missed, with the alarm's fresh id) and the alarm commit
        together or not at all: after a crash the session is found running again and
        raises its one alarm then; once committed, it is missed and never raises another."""
        with self._sessions.begin() as s:
            won = changed(
                s,
                update(CheckIn)
                .where(
                    CheckIn.id == checkin_id,
                    CheckIn.state == RUNNING,
                    CheckIn.ends_at <= now - GRACE,
                )
                .values(state=MISSED)
                .execution_options(synchronize_session=False),
            )
            if not won:  # closed, extended, or raised by another server meanwhile
                return
            row = s.get_one(CheckIn, checkin_id)
            alert_id, result = self._alarms.record_fresh(
                s,
                phone_id=row.phone_id,
                kind=IncidentKind.MISSED_CHECKOUT,
                pressed_at=row.ends_at + GRACE,
                now=now,
            )
            row.alert_id = alert_id
            phone_id = row.phone_id
        log.error("phone %s did not check out 5 minutes after the end: alarm raised", phone_id)
        self._alarms.after_commit(result, now)


def _minutes(step: int) -> timedelta:
    return timedelta(minutes=REMINDERS[step])
