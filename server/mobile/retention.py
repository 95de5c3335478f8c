"""The mobile button's personal data at the end of its retention.

* A position goes ``PANICBUTTON_RETENTION_POSITIONS_DAYS`` (default 7) after its
  incident was resolved: where a worker was is needed while help goes to them,
  and for a short while after (a review, a complaint to the police).
* A check-in session (and the note the worker shared) goes with the presence
  register: ``PANICBUTTON_RETENTION_PRESENCE_DAYS`` after it ended, once no open
  alarm is about it.
* A revoked phone's row, the one link between the phone id in the log and its
  worker, goes the same time after its revocation, once none of its alarms is open;
  its alarms then name it by its id (:meth:`server.site.Site.phone_room`).

The log never refers to these rows (it names the phone id only), so deleting them
leaves it verifiable; no log entry is written (the keeper logs the count).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from server.db import changed
from server.mobile.tables import CheckIn, MobilePhone, Position
from server.models import Incident, State
from server.site import PHONE_PREFIX


def purge(session: Session, *, now: datetime, positions_days: int, presence_days: int) -> int:
    """Delete the positions, check-in sessions and revoked phones past their retention;
    how many rows went."""
    return (
        purge_positions(session, before=now - timedelta(days=positions_days))
        + purge_checkins(session, before=now - timedelta(days=presence_days))
        + purge_phones(session, before=now - timedelta(days=presence_days))
    )


def purge_positions(session: Session, *, before: datetime) -> int:
    """Delete the positions of incidents resolved before ``before``."""
    ended = select(Incident.id).where(
        Incident.state == State.RESOLVED, Incident.resolved_at < before
    )
    return changed(session, delete(Position).where(Position.incident_id.in_(ended)))


def purge_checkins(session: Session, *, before: datetime) -> int:
    """Delete the check-in sessions that ended before ``before`` (closed, or missed) and
    raised no alarm that is still open."""
    open_alarm = exists().where(
        or_(Incident.alert_id == CheckIn.alert_id, Incident.alert_id == CheckIn.duress_alert_id),
        Incident.state != State.RESOLVED,
    )
    return changed(
        session,
        delete(CheckIn).where(
            CheckIn.state != "running",
            func.coalesce(CheckIn.closed_at, CheckIn.ends_at) < before,
            ~open_alarm,
        ),
    )


def purge_phones(session: Session, *, before: datetime) -> int:
    """Delete the phones revoked before ``before`` with no open alarm, their check-in
    sessions with them."""
    revoked = session.scalars(
        select(MobilePhone.id).where(
            MobilePhone.revoked_at.is_not(None), MobilePhone.revoked_at < before
        )
    ).all()
    gone = 0
    for phone_id in revoked:
        still_open = session.scalar(
            select(
                exists().where(
                    and_(
                        Incident.device_id == PHONE_PREFIX + phone_id,
                        Incident.state != State.RESOLVED,
                    )
                )
            )
        )
        if still_open:
            continue
        gone += changed(session, delete(CheckIn).where(CheckIn.phone_id == phone_id))
        gone += changed(session, delete(MobilePhone).where(MobilePhone.id == phone_id))
    return gone
