"""What became of each page (its row's status, and the log entry that says so) and text.

A page is "pending" until a worker claims it ("sending"), then "sent",
"failed" or "cancelled" (its incident moved on while it waited). Each change
after the claim is written with its incident-log entry in one transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from server.db import changed
from server.errors import NotifierError
from server.log.append import audit
from server.models import Incident, Page, PageStatus
from server.people.problems import record_problem

__all__ = ["claim", "fail", "record", "record_text", "still_wanted"]


def claim(sessions: sessionmaker[Session], page_id: int) -> bool:
    """Mark a pending page "sending"; False if another worker (or server) has it."""
    with sessions.begin() as s:
        claimed = changed(
            s,
            update(Page)
            .where(Page.id == page_id, Page.status == PageStatus.PENDING)
            .values(status=PageStatus.SENDING),
        )
    return bool(claimed)


def still_wanted(sessions: sessionmaker[Session], page_ids: list[int], now: datetime) -> list[int]:
    """Those of ``page_ids`` whose incident still wants them; the others are cancelled
    (a bundle held, a queue: nobody is paged about an alarm someone already took)."""
    keep = []
    with sessions.begin() as s:
        for page_id in page_ids:
            page = s.get_one(Page, page_id)
            state = s.get_one(Incident, page.incident_id).state
            # Steps page while the incident is open; follow-ups while it is taken.
            if state == ("acknowledged" if page.step < 0 else "open"):
                keep.append(page_id)
            else:
                page.status = PageStatus.CANCELLED
                audit(
                    s,
                    at=now,
                    type="page.cancelled",
                    incident_id=page.incident_id,
                    page=page.id,
                    reason=state,
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
