"""Reply codes: the digits a person replies to acknowledge an alarm by SMS.

One code per person per round of an incident, drawn at random from a range that
grows with that person's unresolved alarms, never one of their open codes nor one
resolved within :data:`CODE_HOLD`. Imports the foundation only.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import BindParameter, ColumnElement, bindparam, distinct, func, select
from sqlalchemy.orm import Session

from server.models import Incident, Page, State

#: Reply codes, drawn at random, so that a reply with a spoofed sender number must guess
#: one (and guesses are limited, see server.replies.codes). They grow longer as a person has
#: more unresolved alarms, so one guess of any length hits with a chance of at most 4
#: in 900: (most open alarms of that person, counting the new one; the codes).
CODE_TIERS: tuple[tuple[int, range], ...] = (
    (4, range(100, 1000)),
    (40, range(1000, 10_000)),
    (1_000_000, range(10_000, 100_000)),
)
#: A resolved incident's code stays out of use for its people this long, so a late
#: "482g" meant for a closed room cannot find a new alarm that drew 482.
CODE_HOLD = timedelta(hours=12)


#: Codes drawn per person and checked against the database in one query.
DRAWN = 16


def free_codes(
    session: Session, staff_ids: list[str], incident: Incident, now: datetime
) -> dict[str, int]:
    """A random reply code for each person's pages of ``incident``: not used by any page
    of their unresolved incidents nor of one resolved within CODE_HOLD, and as long as
    CODE_TIERS asks for their number of unresolved alarms.

    Two queries for everyone, whatever their number of open alarms (in a storm of a
    thousand, reading every code each person holds, for every alarm, would grow with
    the square): a count of their open alarms, then which of a few drawn codes are
    taken.

    NOTE: on PostgreSQL two transactions could pick the same code for one person
    (SQLite serialises writers); steps._page holds a per-person advisory lock to commit,
    so the second waits and sees the first's page.
    """
    if not staff_ids:
        return {}
    session.flush()  # Core below, without the ORM's autoflush: this transaction's pages
    conn = session.connection()
    # NOTE: not dict(result): a Result has keys(), so dict() would index it by column.
    others: dict[str, int] = {  # noqa: C416 -- see the NOTE above
        staff_id: count
        for staff_id, count in conn.execute(_OPEN_ALARMS, {"staff": staff_ids, "id": incident.id})
    }
    alarms = {s: others.get(s, 0) + 1 for s in staff_ids}
    tiers = {s: _tier(alarms[s]) for s in staff_ids}
    drawn = {s: [secrets.choice(tiers[s]) for _ in range(DRAWN)] for s in staff_ids}
    taken: dict[str, set[int]] = {s: set() for s in staff_ids}
    codes_drawn = sorted({c for codes in drawn.values() for c in codes})
    since = now - CODE_HOLD
    params = {"staff": staff_ids, "codes": codes_drawn, "since": since}
    for staff_id, code in conn.execute(_TAKEN, params):
        taken[staff_id].add(code)
    codes = {}
    for s in staff_ids:
        free = [c for c in drawn[s] if c not in taken[s]]
        codes[s] = free[0] if free else _listed(session, s, alarms[s], _held(since))
    return codes


def _held(since: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """The codes a person may not draw: their unresolved incidents', and those of
    incidents resolved ``since`` then."""
    return (Incident.state != State.RESOLVED) | (Incident.resolved_at > since)


# Built once, run as Core on the session's connection: drawing codes is on the path of
# every press's first step.
_OPEN_ALARMS = (
    select(Page.staff_id, func.count(distinct(Page.incident_id)))
    .join(Incident, Incident.id == Page.incident_id)
    .where(
        Page.staff_id.in_(bindparam("staff", expanding=True)),
        Incident.state != State.RESOLVED,
        Incident.id != bindparam("id"),
    )
    .group_by(Page.staff_id)
)
_TAKEN = (
    select(Page.staff_id, Page.reply_code)
    .join(Incident, Incident.id == Page.incident_id)
    .where(
        Page.staff_id.in_(bindparam("staff", expanding=True)),
        Page.reply_code.in_(bindparam("codes", expanding=True)),
        _held(bindparam("since")),
    )
)


def _tier(open_alarms: int) -> range:
    """The codes for a person with this many unresolved alarms (the new one counted)."""
    return next((codes for most, codes in CODE_TIERS if open_alarms <= most), CODE_TIERS[-1][1])


def _listed(session: Session, staff_id: str, open_alarms: int, held: ColumnElement[bool]) -> int:
    """Every code drawn was taken (the range nearly full, rare): a free code listed, in
    the person's range or, when it is full, a longer one."""
    used = set(
        session.scalars(
            select(Page.reply_code)
            .join(Incident, Incident.id == Page.incident_id)
            .where(Page.staff_id == staff_id, held)
        )
    )
    for most, codes in CODE_TIERS:
        if open_alarms <= most or codes is CODE_TIERS[-1][1]:
            free = [c for c in codes if c not in used]
            if free:
                return secrets.choice(free)
    raise RuntimeError(f"no free reply code for {staff_id}")  # 90 000 open: not a real site
