"""Escalation plans: who is paged, on which channel, when — frozen at trigger time.

When an alert opens an incident, the plan is computed from the site's
escalation steps and who is on duty at that moment, copied onto the incident
(ids only, no names or numbers) and logged; roster edits after that do not
change a running incident. :mod:`server.escalation.steps` carries a plan out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from server import duty
from server.models import TECHNICAL_KINDS, Incident, IncidentKind
from server.site import Site

PLAN_VERSION = 1
#: Step numbers of a reopened incident's round start at ``round * ROUND``.
ROUND = 1_000_000


def freeze_plan(*, session: Session, site: Site, kind: str, at: datetime) -> dict[str, Any]:
    """The plan for an incident of ``kind`` opened at ``at``: ids only, no names or numbers."""
    overrides = duty.takeovers(session, at)
    covered = bool(duty.covering(site, overrides, at))
    if kind == IncidentKind.TEST:
        steps = [{"after": 0, "to": [m.id for m in site.test_group()], "channels": ["sms"]}]
        repeat: int | None = None
    elif kind in TECHNICAL_KINDS:
        steps = [{"after": 0, "to": [m.id for m in site.managers()], "channels": ["sms"]}]
        repeat = site.escalation.offline_repeat
    else:
        groups = {
            "on_duty": duty.responders(site, overrides, at),
            "all_staff": [s.id for s in site.staff],
            "managers": [m.id for m in site.managers()],
        }
        steps = [
            {"after": st.after, "to": groups[st.who], "channels": list(st.channels)}
            for st in site.escalation.steps
        ]
        repeat = site.escalation.repeat_every
    return {
        "v": PLAN_VERSION,
        "steps": steps,
        "repeat_every": repeat,
        "follow_up_after": site.escalation.follow_up_after,
        "duty_covered": covered,
    }


def step_due(plan: dict[str, Any], opened: datetime, n: int) -> datetime | None:
    """When step ``n`` is due (repeats count on after the last step); None if never."""
    steps = plan["steps"]
    if n < len(steps):
        return opened + timedelta(seconds=steps[n]["after"])
    if not plan["repeat_every"]:
        return None
    extra = n - (len(steps) - 1)
    return opened + timedelta(seconds=steps[-1]["after"] + extra * plan["repeat_every"])


def step_group(plan: dict[str, Any], n: int) -> tuple[list[str], list[str]]:
    """(staff ids, channels) of step ``n``; repeats page the last step's group."""
    step = plan["steps"][min(n, len(plan["steps"]) - 1)]
    return list(step["to"]), list(step["channels"])


def base(incident: Incident) -> int:
    return incident.round * ROUND


def opened_at(incident: Incident) -> datetime:
    opened = (incident.plan or {}).get("opened")
    return datetime.fromisoformat(opened) if opened else incident.received_at


def round_of(step: int) -> int:
    """The round a page's step belongs to (follow-up steps are -1 - (base + n))."""
    return (step if step >= 0 else -1 - step) // ROUND
