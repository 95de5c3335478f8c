"""The register of acts of violence by third parties (wellbeing code): kept 5 years,
anonymous unless the worker concerned consents.

A manager records an incident in the register with an account (personal data: the
log holds its ref and commitment, ``violence.recorded``) and, if known, the worker
concerned. That worker gives or withdraws consent to show their identity for that
incident (``consent.given`` / ``consent.withdrawn``): the worker's id goes to
personal data too, so the log never links a worker to an incident. The register
(:func:`register`) names a worker only while their consent holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.db import changed
from server.errors import PeopleError
from server.log.append import audit
from server.log.personal import Retention, record
from server.models import Incident
from server.people.auth import active_roles
from server.people.directory import find
from server.people.roles import Role
from server.people.tables import Consent, Person, ViolenceEntry
from server.site import Site

#: What the register shows for a worker who has not consented (or is not known).
ANONYMOUS = "anonymous"
#: The most an account may hold, in characters.
ACCOUNT_MAX = 4000


class ViolenceConflictError(PeopleError):
    """Recorded twice, consent given twice, or withdrawn when not given."""


class NotInRegisterError(PeopleError, LookupError):
    """No such entry (or not one naming this worker)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the register as the prevention adviser reads it."""

    incident: int
    date: datetime
    room: str
    kind: str
    outcome: str
    account: str
    #: The worker's name where they consent now; otherwise :data:`ANONYMOUS`.
    worker: str
    consent: bool


def record_entry(
    session: Session,
    *,
    incident_id: int,
    account: str,
    worker_id: str | None,
    by: str,
    now: datetime,
    retention: Retention,
) -> ViolenceEntry:
    """Record incident ``incident_id`` in the register."""
    if session.get(Incident, incident_id) is None:
        raise NotInRegisterError(f"no incident {incident_id}")
    if not account.strip() or len(account) > ACCOUNT_MAX:
        raise PeopleError(f"the account must be 1 to {ACCOUNT_MAX} characters")
    if session.get(ViolenceEntry, incident_id) is not None:
        raise ViolenceConflictError(f"incident {incident_id} is already in the register")
    if worker_id is not None:
        find(session, worker_id)
        if Role.WORKER not in active_roles(session, worker_id, now):
            raise PeopleError(f"{worker_id!r} is not a worker: name the worker concerned")
    entry = ViolenceEntry(
        incident_id=incident_id,
        recorded_by=by,
        recorded_at=now,
        worker_id=worker_id,
        account=account.strip(),
    )
    session.add(entry)
    session.flush()
    record(
        session,
        type="violence.recorded",
        kind="note",
        value=entry.account,
        subjects=[worker_id] if worker_id else [],
        now=now,
        retention=retention,
        incident_id=incident_id,
        by=by,
    )
    return entry


def withdraw_entry(session: Session, *, incident_id: int, by: str, now: datetime) -> None:
    """Take an incident out of the register (with any consent given for it)."""
    if session.get(ViolenceEntry, incident_id) is None:
        raise NotInRegisterError(f"incident {incident_id} is not in the register")
    session.execute(delete(Consent).where(Consent.incident_id == incident_id))
    session.execute(delete(ViolenceEntry).where(ViolenceEntry.incident_id == incident_id))
    audit(session, at=now, type="violence.withdrawn", incident_id=incident_id, by=by)


def _own(session: Session, incident_id: int, worker_id: str) -> ViolenceEntry:
    entry = session.get(ViolenceEntry, incident_id)
    if entry is None or entry.worker_id != worker_id:
        raise NotInRegisterError(f"no entry of the register names you for incident {incident_id}")
    return entry


def consent(
    session: Session,
    *,
    incident_id: int,
    worker_id: str,
    given: bool,
    now: datetime,
    retention: Retention,
) -> None:
    """The worker gives (``given``) or withdraws consent to show who they are."""
    _own(session, incident_id, worker_id)
    row = session.scalar(
        select(Consent).where(Consent.incident_id == incident_id, Consent.worker_id == worker_id)
    )
    holds = row is not None and row.withdrawn_at is None
    if given == holds:
        raise ViolenceConflictError(
            "you have already given consent for this incident"
            if given
            else "you have not given consent for this incident; nothing to withdraw"
        )
    if row is None:
        session.add(
            Consent(worker_id=worker_id, incident_id=incident_id, given_at=now, withdrawn_at=None)
        )
    elif given:
        row.given_at, row.withdrawn_at = now, None
    else:
        row.withdrawn_at = now
    record(
        session,
        type="consent.given" if given else "consent.withdrawn",
        kind="note",
        # NOTE: not the worker's id: a full or incident bundle with personal data would
        # then tie the worker to the incident without their consent. Only the subject
        # (for the worker's own bundle) says whose consent it is.
        value={"consent": given},
        subjects=[worker_id],
        now=now,
        retention=retention,
        incident_id=incident_id,
    )


def register(session: Session, *, site: Site, worker_id: str | None = None) -> list[Row]:
    """The register, oldest first (only the entries naming ``worker_id``, if given)."""
    query = select(ViolenceEntry, Incident).join(Incident, Incident.id == ViolenceEntry.incident_id)
    if worker_id is not None:
        query = query.where(ViolenceEntry.worker_id == worker_id)
    consenting = {
        (c.incident_id, c.worker_id)
        for c in session.scalars(select(Consent).where(Consent.withdrawn_at.is_(None)))
    }
    rows = []
    for entry, incident in session.execute(query.order_by(Incident.received_at, Incident.id)):
        agreed = (entry.incident_id, entry.worker_id) in consenting
        person = session.get(Person, entry.worker_id) if agreed and entry.worker_id else None
        try:
            room = site.room(incident.room_id).label
        except LookupError:  # a room removed from the site since
            room = incident.room_id
        rows.append(
            Row(
                incident=incident.id,
                date=incident.received_at,
                room=room,
                kind=incident.kind,
                outcome=incident.outcome or "",
                account=entry.account,
                worker=person.name if person is not None else ANONYMOUS,
                consent=agreed,
            )
        )
    return rows


def purge(session: Session, *, now: datetime, days: int) -> int:
    """Delete the entries recorded over ``days`` ago (the register is kept 5 years:
    ``PANICBUTTON_RETENTION_NOTE_DAYS``), with their consents; how many entries."""
    old = select(ViolenceEntry.incident_id).where(
        ViolenceEntry.recorded_at < now - timedelta(days=days)
    )
    session.execute(delete(Consent).where(Consent.incident_id.in_(old)))
    return changed(session, delete(ViolenceEntry).where(ViolenceEntry.incident_id.in_(old)))
