"""Alarms from workers' phones: the same chain as a room unit's alert.

An alarm from the phone button (HTTPS), a fallback SMS or call, or a check-in
session (missed check-out, duress) becomes an incident whose device and room
are ``-phone-<phone id>``, exactly once per alert id however often it is resent,
and pages by the site's escalation plan. The phone reads back where its alarm
stands (:meth:`PhoneAlarms.view`); a duress alarm is never shown to it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import incidents
from server.errors import PeopleError
from server.incidents import Incoming
from server.metrics import Metrics
from server.models import Incident, IncidentKind, State
from server.news import RepressNews
from server.paging.pager import Pager
from server.site import PHONE_PREFIX, LiveSite, SiteSource

log = logging.getLogger(__name__)

#: Alarms of one phone that may be open at once: a phone resends its open alarm (same
#: id, more presses); new ids beyond this are a flood, answered 429.
MAX_OPEN = 3
#: What a phone is told its alarm's state is (a room light's states).
PHONE_STATE = {
    State.OPEN: "received",
    State.ACKNOWLEDGED: "acknowledged",
    State.RESOLVED: "resolved",
}


class TooManyAlarmsError(PeopleError):
    """A phone with :data:`MAX_OPEN` alarms open sent one more new alarm."""


class NotThisPhonesError(PeopleError):
    """The alert id is another device's alarm's (or a duress alarm's, which its phone
    never sees): nothing is recorded; the phone makes a new id."""


class NoFreeIdError(PeopleError, RuntimeError):
    """Every fresh alert id tried for an alarm the server raises itself was taken (never
    expected: 128 random bits); the caller's transaction rolls back and is tried again."""


@dataclass(frozen=True, slots=True)
class PhoneView:
    """An alarm as the phone shows it."""

    alert_id: str
    incident: int
    kind: str
    #: received, acknowledged (help is coming) or resolved.
    state: str
    #: Who is going, once someone acknowledged.
    going: str | None
    presses: int


def device_of(phone_id: str) -> str:
    return PHONE_PREFIX + phone_id


#: Fresh ids tried for one alarm the server raises itself before giving up (for now).
FRESH_TRIES = 3


def derived_alert_id(*parts: object) -> str:
    """An alert id made from a provider's own unguessable id (a fallback SMS's or call's
    sid): the same parts, the same id, so a redelivery opens no second incident. Never
    from our own row ids: those a phone can guess, and SQLite reuses them."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:32]


def fresh_alert_id() -> str:
    """A new random alert id (32 hex digits) for an alarm the server raises itself (a
    missed check-out, a duress PIN): no phone can guess it or send it first."""
    return secrets.token_hex(16)


def press_time(pressed_at: datetime, now: datetime) -> datetime:
    """The phone's time of a press as it is kept, or ``now`` (the server's receipt time,
    so the log entry's ``device_time`` equals its ``at``) when it cannot be: it has no
    time zone, or is out of the range a time in UTC can take (year 1 less an offset,
    9999 plus one). An alarm is never refused for the phone's clock."""
    if pressed_at.tzinfo is None:
        return now
    try:
        pressed_at.astimezone(UTC)
    except (OverflowError, ValueError):
        return now
    return pressed_at


class PhoneAlarms(LiveSite):
    """Turns workers' phones' alarms into incidents, and says where they stand."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        news: RepressNews,
        wake: Callable[[], object],
        metrics: Metrics,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._news = news
        self._wake = wake

    def raise_alarm(
        self,
        *,
        phone_id: str,
        alert_id: str,
        pressed_at: datetime,
        presses: int = 1,
        kind: IncidentKind = IncidentKind.PANIC,
        via: str = "phone",
    ) -> PhoneView:
        """Record the alarm (once per ``alert_id``) in its own transaction, page step 0
        once it is committed, and return where it stands. TooManyAlarmsError for a
        flood of new alert ids from one phone; NotThisPhonesError (nothing recorded) for
        an id that is another device's alarm's, or a duress alarm's. A ``pressed_at``
        that cannot be kept is kept as the time of receipt (:func:`press_time`)."""
        now = self._clock.now()
        kept = press_time(pressed_at, now)
        if kept is not pressed_at:
            log.warning(
                "alarm %s of phone %s: its press time has no time zone or is out of range; "
                "the server's time of receipt is kept instead",
                alert_id,
                phone_id,
            )

        def once() -> incidents.AlertResult:
            with self._sessions.begin() as s:
                return self.record(
                    s,
                    phone_id=phone_id,
                    alert_id=alert_id,
                    pressed_at=kept,
                    presses=presses,
                    kind=kind,
                    via=via,
                    now=now,
                )

        try:
            result = once()
        except IntegrityError:
            # Another instance (or request) committed the same alarm first: read it.
            result = once()
        self.after_commit(result, now)
        if result.refused:
            # NOTE: never the other alarm's view: its number, kind, state and who is going
            # are not this phone's to read.
            raise NotThisPhonesError("this alert id is not this phone's: make a new one")
        return _view(result.incident, self._site.name_of)

    def record(
        self,
        session: Session,
        *,
        phone_id: str,
        alert_id: str,
        pressed_at: datetime,
        now: datetime,
        presses: int = 1,
        kind: IncidentKind = IncidentKind.PANIC,
        via: str = "phone",
        limit: bool = True,
    ) -> incidents.AlertResult:
        """Record the alarm inside ``session``'s transaction (a check-out that raises a
        duress alarm with it); the caller calls :meth:`after_commit` once committed.
        ``limit=False`` for an alarm the server raises itself (a check-in's): never
        refused as a flood. An id that is a duress alarm's is refused as another
        device's would be (``refused``), and that alarm left as it is."""
        device_id = device_of(phone_id)
        existing = session.scalar(select(Incident).where(Incident.alert_id == alert_id))
        if existing is not None and existing.kind == IncidentKind.DURESS:
            return incidents.AlertResult(existing, new=False, refused=True)
        new = existing is None
        if limit and new:
            # NOTE: a duress alarm is not counted: whoever holds the phone must not
            # meet the flood limit one alarm sooner after a duress check-out.
            open_now = session.scalar(
                select(func.count())
                .select_from(Incident)
                .where(
                    Incident.device_id == device_id,
                    Incident.state != State.RESOLVED,
                    Incident.kind != IncidentKind.DURESS,
                )
            )
            if (open_now or 0) >= MAX_OPEN:
                raise TooManyAlarmsError(
                    f"this phone has {open_now} alarms open already: resend the open one "
                    "(same alert_id, more presses) instead of starting new ones"
                )
        incoming = Incoming(
            alert_id=alert_id,
            device_id=device_id,
            kind=str(kind),
            seq=0,
            presses=presses,
            pressed_at=pressed_at,
            via=via,
        )
        return incidents.record_phone_alarm(
            session=session, site=self._site, incoming=incoming, now=now
        )

    def record_fresh(
        self,
        session: Session,
        *,
        phone_id: str,
        kind: IncidentKind,
        pressed_at: datetime,
        now: datetime,
    ) -> tuple[str, incidents.AlertResult]:
        """Record an alarm the server raises itself for a check-in session (``kind``
        duress or missed_checkout, ``via`` checkin, never refused as a flood) under a
        fresh random id, inside ``session``'s transaction: the caller stores the id on
        the session's row in the same transaction, so a retry after a crash finds it
        there (or finds nothing: neither was committed). An id found taken (another
        device's, or an alarm already there) is never taken for done: another is tried.
        (alert id, result); NoFreeIdError after :data:`FRESH_TRIES` taken ids."""
        for _ in range(FRESH_TRIES):
            alert_id = fresh_alert_id()
            result = self.record(
                session,
                phone_id=phone_id,
                alert_id=alert_id,
                pressed_at=pressed_at,
                now=now,
                kind=kind,
                via="checkin",
                limit=False,
            )
            if result.new and not result.refused and not result.repressed:
                return alert_id, result
            log.error("a fresh alert id for phone %s was taken already: trying another", phone_id)
        raise NoFreeIdError(f"{FRESH_TRIES} fresh alert ids in a row were taken")

    def after_commit(self, result: incidents.AlertResult, now: datetime) -> None:
        """Page and wake the scheduler for an alarm just committed."""
        incident = result.incident
        if result.refused:
            log.error(
                "alarm %s from a phone refused: that alert id is another device's alarm's "
                "(or one its phone may not see)",
                incident.alert_id,
            )
            return
        if result.new:
            log.info("incident %d opened: a worker's phone (%s)", incident.id, incident.kind)
            if not result.repressed:
                self._metrics.alarm(incident.kind)
            self._pager.dispatch(result.page_ids)
            self._wake()
        if result.repressed:
            self._news.send(incident.id, now)
            self._wake()

    def view(self, *, phone_id: str, alert_id: str) -> PhoneView | None:
        """Where this phone's alarm ``alert_id`` stands; None if it is not one of its
        own, or is a duress alarm (which the phone never sees)."""
        with self._sessions() as s:
            incident = s.scalar(
                select(Incident).where(
                    Incident.alert_id == alert_id, Incident.device_id == device_of(phone_id)
                )
            )
            if incident is None or incident.kind == IncidentKind.DURESS:
                return None
            return _view(incident, self._site.name_of)

    def open_alarms(self, *, phone_id: str) -> list[PhoneView]:
        """This phone's alarms not yet resolved, oldest first, duress ones left out."""
        with self._sessions() as s:
            rows = s.scalars(
                select(Incident)
                .where(
                    Incident.device_id == device_of(phone_id),
                    Incident.state != State.RESOLVED,
                    Incident.kind != IncidentKind.DURESS,
                )
                .order_by(Incident.id)
            )
            return [_view(i, self._site.name_of) for i in rows]


def _view(incident: Incident, name_of: Callable[[str], str]) -> PhoneView:
    return PhoneView(
        alert_id=incident.alert_id,
        incident=incident.id,
        kind=incident.kind,
        state=PHONE_STATE[State(incident.state)],
        going=name_of(incident.acknowledged_by) if incident.acknowledged_by else None,
        presses=incident.presses,
    )
