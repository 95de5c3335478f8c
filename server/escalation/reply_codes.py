"""Reply codes: the digits a person replies to acknowledge an alarm by SMS.

One code per person per round of an incident, drawn at random from a range that
grows with that person's unresolved alarms, never one of their open codes nor one
resolved within :data:`CODE_HOLD`. Imports the foundation only.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
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


def free_code(session: Session, staff_id: str, incident: Incident, now: datetime) -> int:
    """A random reply code for this person's pages of ``incident``: not used by any page of
    their unresolved incidents nor of one resolved within CODE_HOLD, and as long as
    CODE_TIERS asks for their number of unresolved alarms.

    NOTE: on PostgreSQL two transactions could pick the same code for one person
    (SQLite serialises writers); steps._page holds a per-person advisory lock to commit,
    so the second waits and sees the first's page.
    """
    rows = session.execute(
        select(Page.reply_code, Page.incident_id, Incident.state)
        .join(Incident, Incident.id == Page.incident_id)
        .where(
            Page.staff_id == staff_id,
            (Incident.state != State.RESOLVED) | (Incident.resolved_at > now - CODE_HOLD),
        )
    ).all()
    used = {code for code, _, _ in rows}
    open_alarms = {i for _, i, state in rows if state != State.RESOLVED} | {incident.id}
    for most, codes in CODE_TIERS:
        if len(open_alarms) <= most or codes is CODE_TIERS[-1][1]:
            # NOTE: drawn, not listed: listing 90,000 codes for every page of a storm
            # costs milliseconds on the path to the first SMS. Used codes are few.
            for _ in range(64):
                if (code := secrets.choice(codes)) not in used:
                    return code
            free = [c for c in codes if c not in used]  # nearly full: rare
            if free:
                return secrets.choice(free)
    raise RuntimeError(f"no free reply code for {staff_id}")  # 90 000 open: not a real site
