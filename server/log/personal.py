"""Personal data, kept apart from the incident log, and its retention.

Names and numbers of a roster, free-text notes, the justifications given for
viewing or exporting records: each is one row of ``personal_data`` with a
random ref and salt. The log entry that refers to it holds the ref and a
salted commitment only (``panicbutton.log.spec.commitment``). At the end of its
retention the row is deleted and a ``record.redacted`` entry says so: the log
stays verifiable, and what it no longer holds cannot be recovered from it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from panicbutton.log import spec
from server.db import changed
from server.log.append import audit
from server.models import PersonalData

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Retention:
    """How long each class of personal data is kept, in days (every value >= 1).

    The defaults, and where they come from:

    * ``note``: free-text notes on incidents. 5 years: the Belgian wellbeing
      code's register of acts of violence by third parties is kept 5 years;
      Washington WAC 296-831-500 keeps its complaint log at least 5 years.
    * ``roster``: staff names and numbers as configured (who could be paged, and
      who was on duty). 5 years, with the incidents they explain (same sources).
    * ``access``: the justification given for each view or export. 5 years, as
      long as the records whose access it explains (GDPR art. 5(2)
      accountability for the processing of those records).
    * ``review``: a manager's sign-off remarks. 5 years (same sources as notes).

    The log entries themselves hold no personal data and are kept for good:
    removing one would break every later proof.
    """

    note: int = 5 * 365 + 1
    roster: int = 5 * 365 + 1
    access: int = 5 * 365 + 1
    review: int = 5 * 365 + 1

    def days(self, kind: str) -> int:
        value: int = getattr(self, kind)
        return value


KINDS = ("note", "roster", "access", "review")


def keep(
    session: Session,
    *,
    kind: str,
    value: Any,
    subjects: list[str],
    now: datetime,
    retention: Retention,
) -> tuple[str, str]:
    """Store one piece of personal data; returns (ref, commitment) for the log entry."""
    if kind not in KINDS:
        raise ValueError(f"personal data kind {kind!r} is not one of {', '.join(KINDS)}")
    ref = "pd-" + secrets.token_hex(12)
    salt = spec.new_salt()
    session.add(
        PersonalData(
            ref=ref,
            kind=kind,
            salt=salt,
            value=value,
            subjects=subjects,
            created_at=now,
        )
    )
    return ref, spec.commitment(ref=ref, salt=salt, value=value)


def record(
    session: Session,
    *,
    type: str,
    kind: str,
    value: Any,
    subjects: list[str],
    now: datetime,
    retention: Retention,
    incident_id: int | None = None,
    **data: Any,
) -> str:
    """Keep ``value`` as personal data and append a ``type`` entry that names it (its
    ref and commitment, besides ``data``); returns the ref."""
    ref, commitment = keep(
        session, kind=kind, value=value, subjects=subjects, now=now, retention=retention
    )
    audit(
        session,
        at=now,
        type=type,
        incident_id=incident_id,
        **data,
        ref=ref,
        commitment=commitment,
    )
    return ref


def reveal(row: PersonalData) -> dict[str, Any]:
    """The row as a bundle's personal.jsonl carries it (what a commitment is checked on)."""
    return {"ref": row.ref, "salt": row.salt.hex(), "value": row.value}


def purge_expired(
    session: Session, *, now: datetime, retention: Retention, limit: int = 500
) -> int:
    """Delete personal data whose retention (as configured now) has ended, each with a
    ``record.redacted`` entry in the same transaction; returns how many rows went.

    The end is counted from each row's creation with today's setting, so shortening a
    retention applies to what is already kept. A row another server deleted first is
    skipped, so it is never reported twice.
    """
    gone = 0
    for kind in KINDS:
        ends = now - retention.days(kind) * DAY
        rows = session.execute(
            select(PersonalData.ref)
            .where(PersonalData.kind == kind, PersonalData.created_at <= ends)
            .order_by(PersonalData.created_at)
            .limit(limit)
        ).all()
        for (ref,) in rows:
            if changed(session, delete(PersonalData).where(PersonalData.ref == ref)) != 1:
                continue
            audit(session, at=now, type="record.redacted", ref=ref, kind=kind, reason="retention")
            gone += 1
    return gone
