"""What became of each page (its row's status, and the log entry that says so) and text.

A page is "pending" until a worker claims it ("sending"), then "sent",
"failed" or "cancelled" (its incident moved on while it waited). Each change
after the claim is written with its incident-log entry in one transaction.
A claim names the server instance that holds it and lasts until ``lease_until``,
which that instance's heartbeat renews (:mod:`server.cluster`); a claim that
lapsed is taken over by a live instance (:func:`lapsed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from server import db
from server.errors import NotifierError
from server.escalation import plans
from server.log.append import audit
from server.models import ALARM_KINDS, Incident, Page, PageStatus
from server.people.problems import record_problem

log = logging.getLogger(__name__)

__all__ = [
    "Claimed",
    "claim",
    "claim_new",
    "fail",
    "first_of_alarm",
    "lapsed",
    "record",
    "record_text",
    "release",
    "still_wanted",
]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A page claimed by this instance, and what its sender's queue needs of it: whom it
    is for on which channel (``key``), its incident, and whether it is of the first step
    of an alarm (:func:`first_of_alarm`)."""

    page_id: int
    key: tuple[str, str]
    incident_id: int
    first: bool

    @classmethod
    def of(cls, page: Page, incident: Incident) -> Claimed:
        first = first_of_alarm(page.step, kind=incident.kind, round_=incident.round)
        return cls(page.id, (page.staff_id, page.channel), incident.id, first)


def first_of_alarm(step: int, *, kind: str, round_: int) -> bool:
    """Whether a page of ``step`` is of the first step of an alarm (step 0 of its
    incident's round, ``round_``): such pages go first in their sender's queue
    (:mod:`server.paging.pacing`)."""
    return step == round_ * plans.ROUND and kind in ALARM_KINDS


def claim(sessions: sessionmaker[Session], page_id: int, *, by: str, until: datetime) -> bool:
    """Mark a pending page "sending", claimed by instance ``by`` until ``until``; False if
    another worker (or server instance) has it."""
    with sessions.begin() as s:
        claimed = db.claim(
            s,
            Page,
            Page.id == page_id,
            Page.status == PageStatus.PENDING,
            values={"status": PageStatus.SENDING, "claimed_by": by, "lease_until": until},
        )
    return bool(claimed)


# Built once, run as Core on the session's connection: claiming a new alarm's pages is
# on the path of every press.
_CLAIM_NEW = (
    update(Page)
    .where(Page.id.in_(bindparam("ids", expanding=True)), Page.status == PageStatus.PENDING)
    .values(status=PageStatus.SENDING, claimed_by=bindparam("by"), lease_until=bindparam("until"))
)
_CLAIMED = (
    select(
        Page.id,
        Page.staff_id,
        Page.channel,
        Page.step,
        Page.incident_id,
        Incident.kind,
        Incident.round,
    )
    .join(Incident, Incident.id == Page.incident_id)
    .where(
        Page.id.in_(bindparam("ids", expanding=True)),
        Page.claimed_by == bindparam("by"),
        Page.lease_until == bindparam("until"),
    )
    .order_by(Page.id)
)


def claim_new(session: Session, page_ids: list[int], *, by: str, until: datetime) -> list[Claimed]:
    """Claim pages for instance ``by`` until ``until`` in the transaction that wrote them
    (``session``'s, not yet committed): they commit "sending", claimed, with the step
    that made them. Nobody else sees them before that commit, so every one of them still
    "pending" is won: one UPDATE, no row lock to take first."""
    if not page_ids:
        return []
    session.flush()  # the pages' rows, should the caller have left them unflushed
    conn = session.connection()
    params = {"ids": page_ids, "by": by, "until": until}
    conn.execute(_CLAIM_NEW, params)
    return [
        Claimed(page_id, (staff, channel), incident, first_of_alarm(step, kind=kind, round_=r))
        for page_id, staff, channel, step, incident, kind, r in conn.execute(_CLAIMED, params)
    ]


def release(sessions: sessionmaker[Session], page_ids: list[int], *, by: str) -> int:
    """Give back pages claimed by instance ``by`` that never reached the provider (held
    for a bundle, or waiting for the sender's slot, when the server stopped): "pending"
    again, so the next start sends them without asking Twilio about each first."""
    if not page_ids:
        return 0
    with sessions.begin() as s:
        return db.changed(
            s,
            update(Page)
            .where(
                Page.id.in_(page_ids),
                Page.status == PageStatus.SENDING,
                Page.claimed_by == by,
            )
            .values(status=PageStatus.PENDING, claimed_by=None, lease_until=None),
        )


def lapsed(
    sessions: sessionmaker[Session], *, by: str, now: datetime, lease: timedelta
) -> list[Page]:
    """Pages "sending" whose claim lapsed (the instance holding them stopped renewing
    it), now claimed by ``by``: the caller asks the provider about each before sending it
    again. A claim made before claims had leases counts as lapsed once that old."""
    with sessions.begin() as s:
        ids = db.claim(
            s,
            Page,
            Page.status == PageStatus.SENDING,
            or_(
                Page.lease_until < now,
                Page.lease_until.is_(None) & (Page.created_at < now - lease),
            ),
            values={"claimed_by": by, "lease_until": now + lease},
        )
        return list(s.scalars(select(Page).where(Page.id.in_(ids)).order_by(Page.id)))


def unclaimed(sessions: sessionmaker[Session], *, before: datetime) -> list[int]:
    """Pages still "pending" that were made before ``before`` (queued by an instance that
    stopped before claiming them, or waiting long in a live one's queue)."""
    with sessions() as s:
        return list(
            s.scalars(
                select(Page.id)
                .where(Page.status == PageStatus.PENDING, Page.created_at < before)
                .order_by(Page.id)
            )
        )


# Built once: every send reads it just before its request goes to the provider.
_WANTED = (
    select(Page.id, Page.status, Page.claimed_by, Page.step, Incident.state)
    .join(Incident, Incident.id == Page.incident_id)
    .where(Page.id.in_(bindparam("ids", expanding=True)))
    .order_by(Page.id)
    .with_for_update(of=Page)
)


def still_wanted(
    sessions: sessionmaker[Session], page_ids: list[int], now: datetime, *, by: str
) -> list[int]:
    """Those of ``page_ids`` still claimed by instance ``by`` whose incident still wants
    them; the others are cancelled (a bundle held, a queue: nobody is paged about an
    alarm someone already took). A page whose claim another instance took over (this one
    stalled past its lease) is left to that one: sending it here too would page twice."""
    keep = []
    with sessions.begin() as s:
        rows = {row.id: row for row in s.connection().execute(_WANTED, {"ids": page_ids})}
        for page_id in page_ids:
            row = rows[page_id]
            if row.status != PageStatus.SENDING or row.claimed_by != by:
                log.warning("page %d: its claim was taken over; this instance leaves it", page_id)
                continue
            # Steps page while the incident is open; follow-ups while it is taken.
            if row.state == ("acknowledged" if row.step < 0 else "open"):
                keep.append(page_id)
                continue
            page = s.get_one(Page, page_id)
            page.status = PageStatus.CANCELLED
            audit(
                s,
                at=now,
                type="page.cancelled",
                incident_id=page.incident_id,
                page=page.id,
                reason=row.state,
            )
    return keep


def record(
    sessions: sessionmaker[Session],
    page_ids: list[int],
    *,
    sid: str | None,
    error: NotifierError | None,
    now: datetime,
) -> None:
    """Record pages sent together as the provider's ``sid``, or failed with ``error``."""
    with sessions.begin() as s:
        for page_id in page_ids:
            page = s.get_one(Page, page_id)
            if sid is not None:
                page.status, page.provider_sid, page.sent_at = PageStatus.SENT, sid, now
                audit(
                    s,
                    at=now,
                    type="page.sent",
                    incident_id=page.incident_id,
                    page=page.id,
                    provider_id=sid,
                    bundled=len(page_ids),
                )
            else:
                page.status, page.error = PageStatus.FAILED, (error.args[0] if error else "")[:200]
                audit(
                    s,
                    at=now,
                    type="page.failed",
                    incident_id=page.incident_id,
                    page=page.id,
                    code=error.code if error else None,
                )


def fail(sessions: sessionmaker[Session], page_ids: list[int], why: str, now: datetime) -> None:
    """Record pages failed before reaching the provider (``why``: what went wrong)."""
    with sessions.begin() as s:
        for page_id in page_ids:
            page = s.get_one(Page, page_id)
            page.status, page.error = PageStatus.FAILED, why[:200]
            audit(
                s,
                at=now,
                type="page.failed",
                incident_id=page.incident_id,
                page=page.id,
                code=None,
            )


def record_text(
    sessions: sessionmaker[Session],
    staff_id: str,
    *,
    sent: bool,
    error: NotifierError | None,
    now: datetime,
    incident_id: int | None,
    purpose: str,
) -> None:
    """Log a plain text (no page row) as taken by the provider, or failed with ``error``."""
    with sessions.begin() as s:
        audit(
            s,
            at=now,
            type="message.sent" if sent else "message.failed",
            incident_id=incident_id,
            staff=staff_id,
            purpose=purpose,
            code=error.code if error else None,
        )
        if error is not None:  # a number the provider says is bad shows on the person
            record_problem(s, person_id=staff_id, code=error.code, now=now)
