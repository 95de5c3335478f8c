"""Check-in sessions of a worker's phone, and the duress PIN at check-out.

Before a job outside, the worker starts a session on their phone: the expected
end (5 minutes to 24 hours ahead, as lone-worker services allow) and, if they
wish, a note or address to share (personal data: it stays in the session's row,
never in the log). Starting checks the worker in to the presence register (so a
duty gap covers them, :mod:`server.continuity`); checking out with the PIN
closes the session and checks them out again. Extending it asks for the PIN too
(else whoever holds the phone could put off the missed check-out alarm for
ever). The duress PIN chosen at enrolment extends or checks out exactly as the
PIN does, visibly: the same answer, the same log entries and presence change,
both PINs' hashes checked whichever it is; and in the same transaction it raises
a silent ``duress`` alarm (one per session). A session not closed :data:`GRACE`
after its end raises a ``missed_checkout`` alarm (:mod:`server.mobile.timer`,
which also sends the reminders of :data:`REMINDERS`).

Wrong PINs are counted on the phone: after :data:`PIN_TRIES` in a row the PIN is
refused (check-out and extension) for :data:`LOCKOUT`, and the session keeps
running, so a phone that cannot check out still raises the missed check-out
alarm (fail safe).

(Over 300 lines: a session's whole life, start to check-out, with the rules it is
held to, reads best in one place; the timer is :mod:`server.mobile.timer`.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.continuity import Continuity
from server.db import changed
from server.errors import PeopleError
from server.incidents import AlertResult
from server.log.append import audit
from server.mobile import phones
from server.mobile.alarms import PhoneAlarms
from server.mobile.tables import CheckIn, MobilePhone
from server.models import IncidentKind
from server.people import presence
from server.site import LiveSite, SiteSource

log = logging.getLogger(__name__)

#: How far ahead a session's end may be set (from now), at start and when extended.
SHORTEST = timedelta(minutes=5)
LONGEST = timedelta(hours=24)
#: Minutes before the end at which the worker gets a reminder by SMS, in order.
REMINDERS = (10, 2)
#: How long after its end a session not closed raises the missed check-out alarm.
GRACE = timedelta(minutes=5)
#: Most characters of a session's note.
NOTE_MAX = 500
#: Wrong PINs in a row after which the PIN is refused (check-out, extension), and how long.
PIN_TRIES = 5
LOCKOUT = timedelta(minutes=15)
#: Real seconds a check-out or extension with either PIN takes at least: the duress PIN's
#: alarm is recorded in the same transaction (some 20-40 ms more), and its answer must
#: not come sooner or later than the PIN's.
ANSWER_FLOOR = 0.3
#: A session's states.
RUNNING, CLOSED, MISSED = "running", "closed", "missed"


class CheckinError(PeopleError):
    """A session cannot be started or changed so: the message says why (422)."""


class CheckinConflictError(CheckinError):
    """Another session is running on this phone, or this one is over (409)."""


class NoCheckinError(CheckinError):
    """This phone has no session with that id (404)."""


class WrongPinError(CheckinError):
    """The PIN given to check out or extend is neither of the phone's (403)."""


class PinLockedError(CheckinError):
    """Too many wrong PINs in a row: the PIN is refused for a while (429)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        #: Seconds until the PIN is taken again.
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class CheckinView:
    """A session as its phone sees it."""

    client_id: str
    started_at: datetime
    ends_at: datetime
    #: running, closed or missed (the alarm went; a late check-out keeps it missed).
    state: str
    note: str


def reminders_passed(ends_at: datetime, now: datetime) -> int:
    """How many of :data:`REMINDERS` are due already for a session ending at ``ends_at``
    (at start or extension: the worker just chose that end, no reminder for them)."""
    return sum(1 for minutes in REMINDERS if ends_at - timedelta(minutes=minutes) <= now)


def next_due(ends_at: datetime, reminders: int) -> datetime:
    """When a running session with ``reminders`` done needs the timer next."""
    if reminders < len(REMINDERS):
        return ends_at - timedelta(minutes=REMINDERS[reminders])
    return ends_at + GRACE


class CheckIns(LiveSite):
    """Starts, extends and closes phones' check-in sessions. ``wake`` tells the timer
    (:class:`server.mobile.timer.CheckinTimer`) that a session started or moved."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        alarms: PhoneAlarms,
        continuity: Continuity,
        wake: Callable[[], object],
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._alarms = alarms
        self._continuity = continuity
        self._wake = wake

    def start(
        self, *, phone_id: str, client_id: str, ends_at: datetime, note: str = ""
    ) -> tuple[CheckinView, bool]:
        """Start a session, or return the one ``client_id`` started already (and False).
        CheckinError for an end outside 5 minutes-24 hours ahead or a note too long;
        CheckinConflictError while another session of this phone is running."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            person_id = _hold(s, phone_id)
            row = _find(s, phone_id, client_id)
            if row is not None:
                return _view(row), False
            _check_end(ends_at, now)
            if len(note) > NOTE_MAX:
                raise CheckinError(
                    f"the note is {len(note)} characters long: at most {NOTE_MAX}, please"
                )
            if _running(s, phone_id) is not None:
                raise CheckinConflictError(
                    "a check-in is already running on this phone: check out of it or extend "
                    "it first"
                )
            row = CheckIn(
                phone_id=phone_id,
                person_id=person_id,
                client_id=client_id,
                started_at=now,
                ends_at=ends_at,
                note=note,
                state=RUNNING,
                reminders=reminders_passed(ends_at, now),
            )
            row.presence_id = self._check_in(s, person_id, now)
            s.add(row)
            s.flush()
            audit(s, at=now, type="checkin.started", phone=phone_id, until=ends_at)
            view = _view(row)
        self._wake()
        self._look_for_gap()
        return view, True

    def extend(self, *, phone_id: str, client_id: str, ends_at: datetime, pin: str) -> CheckinView:
        """Move a running session's end (5 minutes-24 hours ahead) with the PIN; its
        reminders start again. The duress PIN does exactly the same (the same answer,
        refusals included) and raises the session's silent alarm, once per session.
        NoCheckinError; WrongPinError (counted); PinLockedError after :data:`PIN_TRIES`
        wrong PINs in a row; then CheckinError (the end) or CheckinConflictError (the
        session is over)."""
        now, began = self._clock.now(), time.monotonic()
        which = self._which_pin(phone_id, client_id, pin, now)
        raised: AlertResult | None = None
        refusal: CheckinError | None = None
        with self._sessions.begin() as s:
            _hold(s, phone_id, pin_failures=0)
            row = _get(s, phone_id, client_id)
            if which == "duress" and row.closed_at is None:
                raised = self._duress(s, row, now)
            try:
                _move(s, row, ends_at, now)
            except CheckinError as exc:
                # Refused alike for either PIN; a duress alarm is raised all the same.
                refusal = exc
            view = _view(row)
        self._raised(raised, phone_id, now, "extension")
        self._wake()
        _answer_floor(began)
        if refusal is not None:
            raise refusal
        return view

    def check_out(self, *, phone_id: str, client_id: str, pin: str) -> CheckinView:
        """Close a session with the PIN: the check-out PIN and the duress PIN give the
        same answer, log and presence change; the duress PIN also raises a silent alarm
        (unless the session's extension raised one already). A session closed already
        answers as it is. NoCheckinError; WrongPinError (counted); PinLockedError after
        :data:`PIN_TRIES` wrong PINs in a row."""
        now, began = self._clock.now(), time.monotonic()
        which = self._which_pin(phone_id, client_id, pin, now)
        raised: AlertResult | None = None
        with self._sessions.begin() as s:
            _hold(s, phone_id, pin_failures=0)
            row = _get(s, phone_id, client_id)
            closed = _close(s, row, now)
            if closed:
                audit(s, at=now, type="checkin.closed", phone=phone_id)
                stay = presence.stay_of(s, row.person_id)
                if stay is not None and stay.id == row.presence_id:
                    presence.check_out(s, person_id=row.person_id, by=presence.SELF, now=now)
                if which == "duress":
                    raised = self._duress(s, row, now)
            view = _view(row)
        self._raised(raised, phone_id, now, "check-out")
        if closed:
            self._look_for_gap()
        _answer_floor(began)
        return view

    def running(self, phone_id: str) -> CheckinView | None:
        """This phone's running session, if any."""
        with self._sessions() as s:
            row = _running(s, phone_id)
            return None if row is None else _view(row)

    def _check_in(self, s: Session, person_id: str, now: datetime) -> int | None:
        """Check the worker in to presence for the session; None if they are checked in
        already (that stay is kept, and not ended by the session's check-out)."""
        if presence.stay_of(s, person_id) is not None:
            return None
        try:
            stay = presence.check_in(
                s, person_id=person_id, by=presence.SELF, now=now, site=self._site
            )
        except PeopleError:
            # No longer a worker (the role was taken back): the timer protects them still.
            log.warning("a check-in started by a phone of someone without the worker role")
            return None
        return stay.id

    def _which_pin(self, phone_id: str, client_id: str, pin: str, now: datetime) -> str:
        """Which PIN ``pin`` is for this phone's session ``client_id``: ``pin`` or
        ``duress``. NoCheckinError; PinLockedError while locked; WrongPinError (the
        wrong PIN counted and committed first)."""
        with self._sessions() as s:
            phone = s.get_one(MobilePhone, phone_id)
            _get(s, phone_id, client_id)
            if phone.pin_locked_until is not None and phone.pin_locked_until > now:
                raise _locked(phone.pin_locked_until - now)
            # Both hashes are checked (slow on purpose) whichever it is: a duress PIN
            # takes as long as the check-out PIN.
            which = phones.check_pins(s, phone, pin)
        if which == "wrong":
            raise self._wrong_pin(phone_id, now)
        return which

    def _duress(self, s: Session, row: CheckIn, now: datetime) -> AlertResult | None:
        """Record the session's silent duress alarm inside the caller's transaction, with
        its id on the row: None if this session raised one already (a second duress PIN,
        or the same request sent again, raises no second alarm)."""
        if row.duress_alert_id is not None:
            return None
        alert_id, result = self._alarms.record_fresh(
            s, phone_id=row.phone_id, kind=IncidentKind.DURESS, pressed_at=now, now=now
        )
        row.duress_alert_id = alert_id
        return result

    def _raised(self, raised: AlertResult | None, phone_id: str, now: datetime, at: str) -> None:
        """Page for a duress alarm just committed (none: nothing to do)."""
        if raised is None:
            return
        log.error("duress PIN at the %s of a session of phone %s", at, phone_id)
        self._alarms.after_commit(raised, now)

    def _wrong_pin(self, phone_id: str, now: datetime) -> CheckinError:
        """Count a wrong PIN (committed before the refusal); the error to answer."""
        with self._sessions.begin() as s:
            _hold(s, phone_id, pin_failures=MobilePhone.pin_failures + 1)
            phone = s.get_one(MobilePhone, phone_id)
            s.refresh(phone)
            left = PIN_TRIES - phone.pin_failures
            if left <= 0:
                phone.pin_failures, phone.pin_locked_until = 0, now + LOCKOUT
        if left <= 0:
            log.warning("phone %s: %d wrong PINs in a row; its PIN locked", phone_id, PIN_TRIES)
            return WrongPinError(
                f"Wrong PIN. That was {PIN_TRIES} wrong PINs in a row: checking out and "
                f"extending are refused for {LOCKOUT.seconds // 60} minutes (your check-in "
                "keeps running)"
            )
        return WrongPinError(
            f"Wrong PIN: {left} {'try' if left == 1 else 'tries'} left before checking out "
            f"and extending are refused for {LOCKOUT.seconds // 60} minutes"
        )

    def _look_for_gap(self) -> None:
        try:
            self._continuity.check()  # a gap starts (or ends) at once, not at the next pass
        except Exception:  # the change is committed; the next supervision pass looks again
            log.exception("continuity check after a check-in change failed")


def _hold(s: Session, phone_id: str, **values: object) -> str:
    """Lock the phone's row for this transaction (an UPDATE: PostgreSQL's row lock,
    SQLite's writer lock), so that two requests of one phone take turns; set
    ``values`` (default: ``last_seen_at``). Return whose phone it is."""
    changed(
        s,
        update(MobilePhone)
        .where(MobilePhone.id == phone_id)
        .values(**(values or {"last_seen_at": MobilePhone.last_seen_at}))
        .execution_options(synchronize_session=False),
    )
    return s.get_one(MobilePhone, phone_id).person_id


def _running(s: Session, phone_id: str) -> CheckIn | None:
    return s.scalar(select(CheckIn).where(CheckIn.phone_id == phone_id, CheckIn.state == RUNNING))


def _find(s: Session, phone_id: str, client_id: str) -> CheckIn | None:
    return s.scalar(
        select(CheckIn).where(CheckIn.phone_id == phone_id, CheckIn.client_id == client_id)
    )


def _get(s: Session, phone_id: str, client_id: str) -> CheckIn:
    row = _find(s, phone_id, client_id)
    if row is None:
        raise NoCheckinError(
            "this phone has no check-in with that id: start one, or use the id it was started with"
        )
    return row


def _move(s: Session, row: CheckIn, ends_at: datetime, now: datetime) -> None:
    """Set a running session's new end (its reminders start again) and log it; nothing
    if it ends then already (the same extension sent again). CheckinError (the end),
    CheckinConflictError (the session is over)."""
    if row.state == RUNNING and row.ends_at == ends_at:
        return
    _over(row)
    _check_end(ends_at, now)
    moved = changed(
        s,
        update(CheckIn)
        .where(CheckIn.id == row.id, CheckIn.state == RUNNING)
        .values(ends_at=ends_at, reminders=reminders_passed(ends_at, now))
        .execution_options(synchronize_session=False),
    )
    s.refresh(row)
    if not moved:  # the timer found it missed meanwhile (another server)
        _over(row)
    audit(s, at=now, type="checkin.extended", phone=row.phone_id, until=ends_at)


def _answer_floor(began: float) -> None:
    """Wait until :data:`ANSWER_FLOOR` real seconds (not the clock's: what the person
    holding the phone could measure) have passed since ``began`` (``time.monotonic``)."""
    time.sleep(max(0.0, ANSWER_FLOOR - (time.monotonic() - began)))


def _over(row: CheckIn) -> None:
    if row.state != RUNNING:
        raise CheckinConflictError(
            f"this check-in is {row.state} already and can no longer be extended: start a new one"
        )


def _close(s: Session, row: CheckIn, now: datetime) -> bool:
    """Close ``row`` (a missed one stays missed, with its check-out time); False if it
    was closed already (a check-out sent again, or by another server)."""
    for _ in range(2):  # again once if the timer found it missed meanwhile
        if row.closed_at is not None:
            return False
        won = changed(
            s,
            update(CheckIn)
            .where(CheckIn.id == row.id, CheckIn.closed_at.is_(None), CheckIn.state == row.state)
            .values(state=CLOSED if row.state == RUNNING else row.state, closed_at=now)
            .execution_options(synchronize_session=False),
        )
        s.refresh(row)
        if won:
            return True
    return False


def _check_end(ends_at: datetime, now: datetime) -> None:
    if ends_at.tzinfo is None:
        raise CheckinError("ends_at needs a time zone (e.g. 2026-11-30T21:40:00+01:00 or ...Z)")
    if not now + SHORTEST <= ends_at <= now + LONGEST:
        raise CheckinError(
            "ends_at must be between 5 minutes and 24 hours from now (the server's time "
            f"is {now.isoformat(timespec='seconds')}): choose another end time"
        )


def _locked(wait: timedelta) -> PinLockedError:
    minutes = math.ceil(wait.total_seconds() / 60)
    return PinLockedError(
        f"too many wrong PINs: checking out and extending are refused for {minutes} more "
        "minute(s); your check-in keeps running (check out then)",
        retry_after=max(1, math.ceil(wait.total_seconds())),
    )


def _view(row: CheckIn) -> CheckinView:
    return CheckinView(
        client_id=row.client_id,
        started_at=row.started_at,
        ends_at=row.ends_at,
        state=row.state,
        note=row.note,
    )
