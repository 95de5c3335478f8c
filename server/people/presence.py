"""The presence register (royal decree of 20 October 2024): which workers are present.

A worker checks in (optionally to a room of the site) and out, themselves or by a
member of staff. Every change is one ``presence.changed`` log entry holding how
many workers are present now and who made the change: ``self`` when the worker
did it, so that the log never names the worker. The rows are personal data with
their own retention (``PANICBUTTON_RETENTION_PRESENCE_DAYS``): :func:`purge`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.db import changed
from server.errors import PeopleError
from server.log.append import audit
from server.people.auth import active_roles
from server.people.directory import find
from server.people.roles import Role
from server.people.tables import Presence
from server.site import Site

#: ``by`` of a change the worker made for themselves: the log never names a worker.
SELF = "self"


class PresenceConflictError(PeopleError):
    """Checked in twice, or out while not in: the message says which."""


def present_count(session: Session) -> int:
    """How many workers are checked in now."""
    return session.scalar(select(func.count()).where(Presence.checked_out_at.is_(None))) or 0


def present(session: Session) -> list[Presence]:
    """Every open stay (checked in, not out), oldest first."""
    return list(
        session.scalars(
            select(Presence)
            .where(Presence.checked_out_at.is_(None))
            .order_by(Presence.checked_in_at, Presence.id)
        )
    )


def stay_of(session: Session, person_id: str) -> Presence | None:
    """The worker's open stay, or None if they are not checked in."""
    return session.scalar(
        select(Presence).where(Presence.person_id == person_id, Presence.checked_out_at.is_(None))
    )


def check_in(
    session: Session,
    *,
    person_id: str,
    by: str,
    now: datetime,
    site: Site,
    room_id: str | None = None,
) -> Presence:
    """Check a worker in (``by``: who did it, :data:`SELF` for the worker).
    PeopleError if they are no worker or the room is unknown; PresenceConflictError if in."""
    find(session, person_id)
    if Role.WORKER not in active_roles(session, person_id, now):
        raise PeopleError(
            f"{person_id!r} does not hold the worker role: only workers are checked in "
            "(a manager grants the role)"
        )
    if room_id is not None and room_id not in {r.id for r in site.rooms}:
        raise PeopleError(
            f"room {room_id!r} is not in the site: use one of "
            f"{', '.join(r.id for r in site.rooms)}, or check in without a room"
        )
    stay = stay_of(session, person_id)
    if stay is not None:
        raise PresenceConflictError(
            f"{person_id!r} is already checked in (since {stay.checked_in_at.isoformat()}); "
            "check out first"
        )
    stay = Presence(
        person_id=person_id,
        room_id=room_id,
        checked_in_at=now,
        checked_out_at=None,
        in_by=by,
        out_by=None,
    )
    session.add(stay)
    session.flush()
    audit(session, at=now, type="presence.changed", present=present_count(session), by=by)
    return stay


def check_out(session: Session, *, person_id: str, by: str, now: datetime) -> Presence:
    """Check a worker out; PresenceConflictError if they are not checked in."""
    stay = stay_of(session, person_id)
    if stay is None:
        raise PresenceConflictError(f"{person_id!r} is not checked in; nothing to check out")
    stay.checked_out_at = now
    stay.out_by = by
    # NOTE: the room is forgotten once the stay ends: kept, it could be joined with the
    # incidents (room, time) to count one worker's alarms, which must never be countable.
    stay.room_id = None
    session.flush()
    audit(session, at=now, type="presence.changed", present=present_count(session), by=by)
    return stay


def history(session: Session, *, since: datetime, until: datetime) -> list[Presence]:
    """Every stay that overlaps [since, until), oldest first."""
    return list(
        session.scalars(
            select(Presence)
            .where(
                Presence.checked_in_at < until,
                Presence.checked_out_at.is_(None) | (Presence.checked_out_at >= since),
            )
            .order_by(Presence.checked_in_at, Presence.id)
        )
    )


def purge(session: Session, *, before: datetime) -> int:
    """Delete the stays checked out before ``before`` (their retention ended); how many."""
    return changed(
        session,
        delete(Presence).where(
            Presence.checked_out_at.is_not(None), Presence.checked_out_at < before
        ),
    )
