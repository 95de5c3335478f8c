"""The site's configuration as the log records it: ``config.changed`` (rooms, roles,
duty and escalation rules) and one ``config.staff`` per member, whose name and number
are kept apart as personal data."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from panicbutton.log import canonical
from server.log import append, personal
from server.log.personal import Retention
from server.models import LogEntry
from server.site import Site


def describe_site(site: Site) -> dict[str, Any]:
    """The site file as the log records it (ids, roles, rules); names and numbers are
    left to personal data."""
    duty = site.duty
    return {
        "rooms": [{"id": r.id, "device": r.device} for r in site.rooms],
        "staff": [{"id": s.id, "role": s.role, "language": str(s.language)} for s in site.staff],
        "duty": {
            "always": list(duty.always),
            "default": list(duty.default),
            "shifts": [
                {
                    "staff": sh.staff,
                    "days": sorted(sh.days),
                    "start": sh.start.strftime("%H:%M"),
                    "end": sh.end.strftime("%H:%M"),
                }
                for sh in duty.shifts
            ],
            "gap_warning": duty.gap_warning,
            "takeover_minutes": round(duty.takeover_hours * 60),
        },
        "escalation": {
            "steps": [
                {"after": st.after, "who": str(st.who), "channels": list(st.channels)}
                for st in site.escalation.steps
            ],
            "repeat_every": site.escalation.repeat_every,
            "follow_up_after": site.escalation.follow_up_after,
            "offline_repeat": site.escalation.offline_repeat,
        },
    }


def record_config(
    session: Session,
    *,
    site: Site,
    retention: Retention,
    now: datetime,
    digest_key: bytes,
    by: str = "system",
    version: int = 0,
) -> bool:
    """Append ``config.changed`` when the site (roster included) or its ``version``
    differs from the last one recorded; True if it did. ``digest_key`` keys the digest
    that tells (a secret); ``by`` made the change (a person's id, or ``system``)."""
    described = describe_site(site)
    private: dict[str, Any] = {
        "site": site.name,
        "rooms": {r.id: r.label for r in site.rooms},
        "staff": {s.id: {"name": s.name, "phone": s.phone} for s in site.staff},
    }
    # NOTE: keyed, not a plain hash: the digest stays in the log for good, and a plain
    # hash of names and numbers would let anyone confirm a guessed roster after the
    # names and numbers themselves were purged.
    digest = hmac.new(
        digest_key,
        canonical.dumps(
            {
                "public": described,
                "private": private,
                "retention": asdict(retention),
                "version": version,
            }
        ),
        hashlib.sha256,
    ).hexdigest()
    last = session.scalars(
        select(LogEntry.body)
        .where(LogEntry.type == "config.changed")
        .order_by(LogEntry.n.desc())
        .limit(1)
    ).first()
    if last is not None and json.loads(last)["data"]["site_sha256"] == digest:
        return False
    append.audit(
        session,
        at=now,
        type="config.changed",
        site_sha256=digest,
        retention=asdict(retention),
        by=by,
        version=version,
        **described,
    )
    # One entry per member of staff (what their own access request discloses): their
    # role and language, and a commitment to their name and number kept apart.
    for member in described["staff"]:
        personal.record(
            session,
            type="config.staff",
            kind="roster",
            value=private["staff"][member["id"]],
            subjects=[member["id"]],
            now=now,
            retention=retention,
            staff=member["id"],
            role=member["role"],
            language=member["language"],
        )
    return True
