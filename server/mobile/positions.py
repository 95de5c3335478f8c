"""Where a worker's phone is during its alarm: positions it shares, and what responders read.

After a press the page asks for the position (Geolocation API) and sends it every
15 s while the alarm is open (``POST /api/v1/phone/alarms/{alert_id}/positions``).
A position is personal data, kept in ``mobile_positions`` and deleted
``PANICBUTTON_RETENTION_POSITIONS_DAYS`` after its incident ends
(:mod:`server.mobile.retention`); the log holds only that a position was shared
(``position.shared``, once per incident), never where.

A fix's time comes from the phone's clock, as its request's ``X-Phone-Time`` does.
While that is within 15 minutes of the server's clock (as every request but an
alarm's must be), the fix's age is judged on the server's clock: a captured request
sent again later carries its old ``X-Phone-Time``, and must not pass an old
position off as fresh. A phone whose clock is further off still shares where it is:
its fix's age is judged on its own clock. Either way the fix is kept on the server's
clock (received less its age), and each position of an alarm must have been taken
after the last one kept (a request sent again is refused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.errors import PeopleError
from server.log.append import audit
from server.mobile.alarms import device_of
from server.mobile.signing import SKEW
from server.mobile.tables import CheckIn, Position
from server.models import Incident, IncidentKind, LogEntry, State
from server.site import PHONE_PREFIX

#: The least time between two positions of one alarm (the page sends one every 15 s).
EVERY = timedelta(seconds=5)
#: How far ahead of the phone's own clock a fix may be, and how old it may be.
AHEAD = timedelta(minutes=1)
STALE = timedelta(minutes=10)
#: No fix is older than this: a phone whose clock says 1970 has no idea of the time.
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
#: The worst accuracy taken, metres (a fix from the cell network can be a few km off;
#: 100 km says nothing of where a worker is).
WORST_ACCURACY = 100_000.0
#: Positions a map shows at most (the newest).
SHOWN = 20


class PositionRefusedError(PeopleError):
    """A position that is not taken: the message says why and what to do."""


class NoSuchAlarmError(PositionRefusedError, LookupError):
    """Not an alarm of this phone (a duress alarm counts as none: the phone never knows)."""


class AlarmOverError(PositionRefusedError):
    """The alarm was resolved: the page stops sharing."""


class BadFixError(PositionRefusedError):
    """A value no phone's Geolocation API gives: not a number, out of range, or a time
    that is not now."""


class OldFixError(BadFixError):
    """A fix taken no later than the alarm's last position kept: the same request sent
    again (or captured and replayed). The page sends its next fix."""


class TooOftenError(PositionRefusedError):
    """More than one position per :data:`EVERY` for one alarm."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        #: Whole seconds before the next position is taken.
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Fix:
    """One position: degrees (WGS 84), the radius of 95 % confidence in metres, and
    when the phone took it."""

    latitude: float
    longitude: float
    accuracy: float
    taken_at: datetime


@dataclass(frozen=True, slots=True)
class Shared:
    """What the worker chose to share when they started their check-in session."""

    note: str
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """A phone's alarm as its map shows it."""

    incident_id: int
    room_id: str
    kind: str
    state: str
    resolved_at: datetime | None
    #: Newest first, at most :data:`SHOWN`; none once the alarm is over (unless asked).
    positions: list[Fix]
    #: The check-in session that raised this alarm, if one did.
    checkin: Shared | None

    @property
    def over(self) -> bool:
        return self.state == State.RESOLVED


def check(fix: Fix, *, now: datetime, phone_now: datetime | None) -> datetime:
    """The fix's time on the server's clock; BadFixError if a value is absurd.
    ``phone_now``: the phone's clock when it sent the fix (its request's time): the
    fix's age is judged on it only when it is more than :data:`SKEW` off the server's."""
    values = (fix.latitude, fix.longitude, fix.accuracy)
    if not all(math.isfinite(v) for v in values):
        raise BadFixError("latitude, longitude and accuracy must be finite numbers")
    if not (-90 <= fix.latitude <= 90 and -180 <= fix.longitude <= 180):
        raise BadFixError("latitude must be within -90..90 and longitude within -180..180")
    if not 0 < fix.accuracy <= WORST_ACCURACY:
        raise BadFixError(
            f"accuracy must be more than 0 and at most {WORST_ACCURACY:.0f} metres: send "
            "the fix's coords.accuracy as the phone gives it, or wait for a better fix"
        )
    if fix.taken_at.tzinfo is None:
        raise BadFixError("taken_at must carry a time zone (the fix's time, UTC)")
    if fix.taken_at < EARLIEST:
        raise BadFixError(
            "taken_at is before 2020: the phone's clock is wrong (set its date and time to "
            "automatic)"
        )
    phone_clock = phone_now or now
    if fix.taken_at - phone_clock > AHEAD:
        raise BadFixError(
            "taken_at is more than a minute ahead of the phone's own clock: send the fix's "
            "own timestamp"
        )
    # NOTE: a phone's request within SKEW of the server's clock is judged on the server's:
    # a replay keeps its old X-Phone-Time, and would otherwise make an old fix look new.
    age = (now if abs(phone_clock - now) <= SKEW else phone_clock) - fix.taken_at
    if age > STALE:
        raise BadFixError(
            "this fix is more than 10 minutes old: send a fresh one (responders need "
            "where the worker is now; if the phone's clock is slow, set it to automatic)"
        )
    return now - max(age, timedelta(0))


def share(
    session: Session,
    *,
    phone_id: str,
    alert_id: str,
    fix: Fix,
    now: datetime,
    phone_now: datetime | None,
) -> None:
    """Keep a position of this phone's open alarm ``alert_id``; the first one of an
    incident is logged as ``position.shared`` (never where). Raises NoSuchAlarmError,
    AlarmOverError, BadFixError (OldFixError: not taken after the last one kept) or
    TooOftenError, and then changes nothing."""
    incident = session.scalar(
        select(Incident).where(
            Incident.alert_id == alert_id, Incident.device_id == device_of(phone_id)
        )
    )
    if incident is None or incident.kind == IncidentKind.DURESS:
        raise NoSuchAlarmError("this phone raised no alarm with that id")
    if incident.state == State.RESOLVED:
        raise AlarmOverError("the alarm is over: stop sharing")
    taken_at = check(fix, now=now, phone_now=phone_now)
    newest_sent = session.scalar(
        select(func.max(Position.sent_taken_at)).where(Position.incident_id == incident.id)
    )
    if newest_sent is not None and fix.taken_at <= newest_sent:
        raise OldFixError(
            "taken_at is not after this alarm's last position: this fix was sent already; "
            "send the next one"
        )
    last = session.scalar(
        select(func.max(Position.received_at)).where(Position.incident_id == incident.id)
    )
    if last is not None and now - last < EVERY:
        wait = math.ceil((EVERY - (now - last)).total_seconds())
        raise TooOftenError(
            f"one position per {EVERY.seconds} s per alarm: send the next in {wait} s",
            retry_after=max(wait, 1),
        )
    session.add(
        Position(
            incident_id=incident.id,
            phone_id=phone_id,
            latitude=fix.latitude,
            longitude=fix.longitude,
            accuracy=fix.accuracy,
            taken_at=taken_at,
            sent_taken_at=fix.taken_at,
            received_at=now,
        )
    )
    # Once per incident, keyed: two first positions at once make one entry (the other's
    # commit fails, and its retry finds this one).
    key = f"position:{incident.id}"
    if session.scalar(select(LogEntry.n).where(LogEntry.key == key)) is None:
        audit(
            session,
            at=now,
            type="position.shared",
            incident_id=incident.id,
            key=key,
            phone=phone_id,
        )


def whereabouts(
    session: Session, incident_id: int, *, after_end: bool = False
) -> Whereabouts | None:
    """What a map of this incident shows: its newest positions (none once it is over,
    unless ``after_end``) and what the worker shared at check-in. None if there is no
    such incident, or it is no phone's."""
    incident = session.get(Incident, incident_id)
    if incident is None or not incident.device_id.startswith(PHONE_PREFIX):
        return None
    positions: list[Fix] = []
    if after_end or incident.state != State.RESOLVED:
        rows = session.scalars(
            select(Position)
            .where(Position.incident_id == incident_id)
            .order_by(Position.taken_at.desc(), Position.id.desc())
            .limit(SHOWN)
        )
        positions = [Fix(p.latitude, p.longitude, p.accuracy, p.taken_at) for p in rows]
    raised_by = or_(
        CheckIn.alert_id == incident.alert_id, CheckIn.duress_alert_id == incident.alert_id
    )
    checkin = session.scalar(select(CheckIn).where(raised_by).order_by(CheckIn.id))
    return Whereabouts(
        incident_id=incident.id,
        room_id=incident.room_id,
        kind=incident.kind,
        state=incident.state,
        resolved_at=incident.resolved_at,
        positions=positions,
        checkin=None if checkin is None else Shared(note=checkin.note, ends_at=checkin.ends_at),
    )


def newest(session: Session, incident_ids: list[int]) -> dict[int, datetime]:
    """When each of these incidents' newest position was taken (those with one)."""
    if not incident_ids:
        return {}
    rows = session.execute(
        select(Position.incident_id, func.max(Position.taken_at))
        .where(Position.incident_id.in_(incident_ids))
        .group_by(Position.incident_id)
    )
    return dict(rows.all())
