"""Escalation: a plan frozen at trigger time, carried out as persisted jobs.

When an alert opens an incident, the plan (who, which channel, when) is
computed from the site's escalation steps and who is on duty at that moment,
copied onto the incident and logged. Step 0 runs in the incident's own
transaction (no scheduler hop before the first page); every later step is a
row in ``escalation_jobs`` with a due time, run by
:mod:`server.escalation.scheduler` through :mod:`server.runner`.
After the last step the last group is paged again every ``repeat_every``
seconds: paging stops only when a person acknowledges.

After an acknowledgement, a ``follow_up`` job is due ``follow_up_after``
seconds later: if the incident is still not resolved, the acknowledger is
paged again, then everyone in the last step, at the repeat pace, until someone
resolves it. Pages are unique per (incident, staff, channel, step), so a job
run twice (a crash between claim and commit) sends nothing twice.
Follow-up pages use negative step numbers (-1, -2, ...).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from server import duty
from server.db import changed
from server.log.append import audit
from server.models import (
    TECHNICAL_KINDS,
    EscalationJob,
    Incident,
    IncidentKind,
    JobKind,
    JobStatus,
    Page,
    PageStatus,
    StaffState,
    State,
)
from server.site import Site

PLAN_VERSION = 1
#: Step numbers of a reopened incident's round start at ``round * ROUND``.
ROUND = 1_000_000
#: Pages a unit-offline alert to managers by SMS; calls are for people in danger.


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


def schedule(session: Session, *, incident_id: int, kind: str, step: int, due: datetime) -> None:
    """Add a pending job unless that (incident, kind, step) job exists already."""
    exists = session.scalar(
        select(EscalationJob.id).where(
            EscalationJob.incident_id == incident_id,
            EscalationJob.kind == kind,
            EscalationJob.step == step,
        )
    )
    if exists is None:
        session.add(
            EscalationJob(
                incident_id=incident_id, kind=kind, step=step, due_at=due, status=JobStatus.PENDING
            )
        )


def start(*, session: Session, site: Site, incident: Incident, now: datetime) -> list[int]:
    """Freeze the plan, run step 0 at once, schedule step 1; return the new page ids.

    A reopened incident (pressed again after it was resolved) starts a new round:
    its steps are numbered from ``round * ROUND`` so they never meet the old ones.
    """
    incident.plan = {
        **freeze_plan(session=session, site=site, kind=incident.kind, at=now),
        "opened": now.isoformat(),
        "round": incident.round,
    }
    audit(
        session, at=now, type="escalation.plan_frozen", incident_id=incident.id, plan=incident.plan
    )
    if not incident.plan["duty_covered"] and incident.kind == IncidentKind.PANIC:
        audit(session, at=now, type="duty.uncovered", incident_id=incident.id)
    session.add(
        EscalationJob(
            incident_id=incident.id,
            kind=JobKind.STEP,
            step=_base(incident),
            due_at=now,
            status=JobStatus.DONE,
            claimed_at=now,
            done_at=now,
        )
    )
    return run_step(session=session, incident=incident, n=_base(incident), due=now, now=now)


def _base(incident: Incident) -> int:
    return incident.round * ROUND


def _opened(incident: Incident) -> datetime:
    opened = (incident.plan or {}).get("opened")
    return datetime.fromisoformat(opened) if opened else incident.received_at


def run_step(
    *, session: Session, incident: Incident, n: int, due: datetime, now: datetime
) -> list[int]:
    """Page step ``n`` of the frozen plan and schedule the next; return new page ids."""
    plan = incident.plan or {}
    to, channels = step_group(plan, n - _base(incident))
    audit(
        session,
        at=now,
        type="escalation.step_started",
        incident_id=incident.id,
        step=n,
        due=due,
        lag_ms=round((now - due).total_seconds() * 1000),
    )
    pages = _page(session, incident=incident, staff_ids=to, channels=channels, step=n, now=now)
    nxt = n + 1
    following = step_due(plan, _opened(incident), nxt - _base(incident))
    # After an outage, do not fire every missed repeat at once: go on from the
    # first one still ahead (the step just run already paged everyone for now).
    while (
        following is not None and following <= now and nxt - _base(incident) >= len(plan["steps"])
    ):
        nxt += 1
        following = step_due(plan, _opened(incident), nxt - _base(incident))
    if nxt > n + 1:
        audit(
            session,
            at=now,
            type="escalation.repeats_skipped",
            incident_id=incident.id,
            skipped=nxt - n - 1,
        )
    if following is not None:
        schedule(session, incident_id=incident.id, kind=JobKind.STEP, step=nxt, due=following)
    return pages


def run_follow_up(
    *, session: Session, incident: Incident, n: int, due: datetime, now: datetime
) -> list[int]:
    """An acknowledged incident still not resolved: the acknowledger first, then everyone."""
    plan = incident.plan or {}
    acker = incident.acknowledged_by
    # A follow-up runs only while the incident is acknowledged, which sets who took it.
    assert acker is not None, f"incident {incident.id}: a follow-up with no acknowledger"
    if n == _base(incident):
        to = [acker]
    else:
        last, _ = step_group(plan, len(plan.get("steps", [])))
        to = list(dict.fromkeys([acker, *last]))
    audit(
        session,
        at=now,
        type="escalation.follow_up",
        incident_id=incident.id,
        step=n,
        due=due,
        lag_ms=round((now - due).total_seconds() * 1000),
    )
    channels = ["sms"] if incident.kind in TECHNICAL_KINDS else ["sms", "call"]
    pages = _page(session, incident=incident, staff_ids=to, channels=channels, step=-1 - n, now=now)
    pace = plan.get("repeat_every") or 60
    schedule(
        session,
        incident_id=incident.id,
        kind=JobKind.FOLLOW_UP,
        step=n + 1,
        due=max(due, now) + timedelta(seconds=pace),
    )
    return pages


def round_of(step: int) -> int:
    """The round a page's step belongs to (follow-up steps are -1 - (base + n))."""
    return (step if step >= 0 else -1 - step) // ROUND


def _page(
    session: Session,
    *,
    incident: Incident,
    staff_ids: list[str],
    channels: list[str],
    step: int,
    now: datetime,
) -> list[int]:
    if session.get_bind().dialect.name == "postgresql":
        # NOTE: per-person locks for reply codes, taken up front in one order, so two
        # transactions paging the same people cannot deadlock (see _free_code).
        for staff_id in sorted(set(staff_ids)):
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"reply-code:{staff_id}"},
            )
    existing = {
        (p.staff_id, p.channel, p.step): p
        for p in session.scalars(select(Page).where(Page.incident_id == incident.id))
    }
    # Codes are kept within a round only: a resolved round's codes were free for others.
    codes = {
        p.staff_id: p.reply_code for p in existing.values() if round_of(p.step) == incident.round
    }
    # SMS cannot reach someone who sent STOP (the carrier refuses, 21610): call them.
    opted_out = set(
        session.scalars(
            select(StaffState.staff_id).where(
                StaffState.sms_opted_out.is_(True), StaffState.staff_id.in_(staff_ids)
            )
        )
    )
    new: list[Page] = []
    for staff_id in staff_ids:
        code = codes.get(staff_id) or _free_code(session, staff_id, incident, now)
        codes[staff_id] = code
        wanted = [("call" if c == "sms" and staff_id in opted_out else c) for c in channels]
        for channel in dict.fromkeys(wanted):
            if (staff_id, channel, step) in existing:
                continue  # NOTE: idempotent: this job ran before (a crash before commit)
            page = Page(
                incident_id=incident.id,
                staff_id=staff_id,
                channel=channel,
                step=step,
                reply_code=code,
                status=PageStatus.PENDING,
                created_at=now,
            )
            session.add(page)
            new.append(page)
    session.flush()
    for page in new:
        audit(
            session,
            at=now,
            type="page.queued",
            incident_id=incident.id,
            page=page.id,
            staff=page.staff_id,
            channel=page.channel,
            step=step,
        )
    return [p.id for p in new]


def cancel(session: Session, *, incident_id: int, kind: str | None = None) -> None:
    """Cancel pending jobs of an incident (all, or of one kind)."""
    query = update(EscalationJob).where(
        EscalationJob.incident_id == incident_id, EscalationJob.status == JobStatus.PENDING
    )
    if kind is not None:
        query = query.where(EscalationJob.kind == kind)
    session.execute(query.values(status=JobStatus.CANCELLED))


def acknowledged(session: Session, *, incident: Incident, now: datetime) -> None:
    """Stop the steps; watch for the incident to be resolved."""
    cancel(session, incident_id=incident.id, kind=JobKind.STEP)
    if incident.kind == IncidentKind.TEST or incident.kind in TECHNICAL_KINDS:
        return  # a unit offline closes itself when the unit returns
    after = (incident.plan or {}).get("follow_up_after") or 600
    schedule(
        session,
        incident_id=incident.id,
        kind=JobKind.FOLLOW_UP,
        step=_base(incident),
        due=now + timedelta(seconds=after),
    )


def resolved(session: Session, *, incident: Incident) -> None:
    cancel(session, incident_id=incident.id)


def hurry(session: Session, *, incident: Incident, failed_step: int, now: datetime) -> bool:
    """A page of step ``failed_step`` failed: bring the next *defined* step forward to now.

    Repeats keep their pace (a number that always fails must not turn the
    repeats into a flood for everyone else). True if a job was moved.
    """
    plan = incident.plan or {}
    nxt = failed_step + 1
    if (
        incident.state != State.OPEN
        or failed_step < 0
        or nxt - _base(incident) >= len(plan.get("steps", []))
    ):
        return False
    moved = changed(
        session,
        update(EscalationJob)
        .where(
            EscalationJob.incident_id == incident.id,
            EscalationJob.kind == JobKind.STEP,
            EscalationJob.step == nxt,
            EscalationJob.status == JobStatus.PENDING,
            EscalationJob.due_at > now,
        )
        .values(due_at=now),
    )
    if moved:
        audit(
            session,
            at=now,
            type="escalation.hurried",
            incident_id=incident.id,
            step=nxt,
            reason="page failed",
        )
    return bool(moved)


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


def _free_code(session: Session, staff_id: str, incident: Incident, now: datetime) -> int:
    """A random reply code for this person's pages of ``incident``: not used by any page of
    their unresolved incidents nor of one resolved within CODE_HOLD, and as long as
    CODE_TIERS asks for their number of unresolved alarms.

    NOTE: on PostgreSQL two transactions could pick the same code for one person
    (SQLite serialises writers); _page holds a per-person advisory lock to commit,
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
