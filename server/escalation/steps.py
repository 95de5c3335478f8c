"""Escalation steps: a frozen plan carried out as persisted jobs.

A plan (:mod:`server.escalation.plans`) is frozen when paging begins. Step 0 runs
in the incident's own transaction (:func:`start`), or, for a room unit's alert,
right after it (:func:`defer` then :func:`run_first`): the unit hears "received"
as soon as its incident is committed, and step 0 is a pending job the
scheduler runs should the server stop before it. Every later step is a row in
``escalation_jobs`` with a due time, run by :mod:`server.escalation.scheduler`
through :mod:`server.runner`.
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

import copy
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from server.db import changed
from server.escalation import plans
from server.escalation.reply_codes import free_codes
from server.escalation.scheduler import FIRST_LEASE
from server.log.append import audit
from server.models import (
    ALARM_KINDS,
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
    its steps are numbered from ``round * plans.ROUND`` so they never meet the old ones.
    """
    session.add(
        EscalationJob(
            incident_id=incident.id,
            kind=JobKind.STEP,
            step=plans.base(incident),
            due_at=now,
            status=JobStatus.DONE,
            claimed_at=now,
            done_at=now,
        )
    )
    return begin(session=session, site=site, incident=incident, due=now, now=now)


def defer(session: Session, *, incident: Incident, now: datetime, by: str | None = None) -> None:
    """:func:`start` in two commits: here only step 0's job, due now, in the incident's
    transaction; :func:`run_first` (or the scheduler, should the server stop first)
    freezes the plan and pages in the next one.

    ``by``: the server instance that runs step 0 itself after the commit: the job is
    born claimed by it (for :data:`~server.escalation.scheduler.FIRST_LEASE`), so that
    no scheduler races it for the job (on PostgreSQL the two took the incident's row
    and the reply-code locks in opposite orders across a storm's batch, and
    deadlocked). Should that instance stop first, a scheduler takes the job over: at
    its clean stop, once another instance finds it stopped, or at its next start.
    None: the job is left pending, for whichever scheduler comes first.
    """
    session.add(
        EscalationJob(
            incident_id=incident.id,
            kind=JobKind.STEP,
            step=plans.base(incident),
            due_at=now,
            status=JobStatus.PENDING if by is None else JobStatus.RUNNING,
            claimed_at=None if by is None else now,
            claimed_by=by,
            lease_until=None if by is None else now + timedelta(seconds=FIRST_LEASE),
        )
    )


def run_first(
    *, session: Session, site: Site, incident_id: int, now: datetime, by: str | None = None
) -> list[int]:
    """Run the step 0 that :func:`defer` left (claimed ``by`` this instance, or pending),
    unless a scheduler took it first or the incident is no longer open; return the new
    page ids."""
    # The incident's row first, then its job's, as an acknowledgement takes them: the
    # other order could deadlock with one on PostgreSQL.
    incident = session.get_one(Incident, incident_id, with_for_update=True)
    # Taken before its first page (from the console): there is nobody to call. (Read
    # before the claim; one taken meanwhile has its pages cancelled before they go.)
    status = JobStatus.DONE if incident.state == State.OPEN else JobStatus.CANCELLED
    claimed = changed(
        session,
        update(EscalationJob)
        .where(
            EscalationJob.incident_id == incident_id,
            EscalationJob.kind == JobKind.STEP,
            EscalationJob.step == plans.base(incident),
            or_(
                EscalationJob.status == JobStatus.PENDING,
                (EscalationJob.status == JobStatus.RUNNING) & (EscalationJob.claimed_by == by),
            ),
        )
        .values(status=status, claimed_at=now, done_at=now)
        .execution_options(synchronize_session=False),
    )
    if not claimed or status == JobStatus.CANCELLED:
        return []
    return begin(session=session, site=site, incident=incident, due=incident.received_at, now=now)


def begin(
    *, session: Session, site: Site, incident: Incident, due: datetime, now: datetime
) -> list[int]:
    """Freeze the plan of an incident opened at ``due`` and run its step 0 (its job is
    the caller's); return the new page ids."""
    freeze(session=session, site=site, incident=incident, due=due, now=now)
    return run_step(session=session, incident=incident, n=plans.base(incident), due=due, now=now)


def freeze(
    *, session: Session, site: Site, incident: Incident, due: datetime, now: datetime
) -> dict[str, Any]:
    """Freeze the plan of an incident opened at ``due``, and log it; returns the plan."""
    # Alerts recorded together share their moment: one plan for all of a batch's.
    frozen = _this_transaction(session, "plans")
    key = (id(site), incident.kind, due)
    if key not in frozen:
        frozen[key] = plans.freeze_plan(session=session, site=site, kind=incident.kind, at=due)
    plan = {
        **copy.deepcopy(frozen[key]),
        "opened": due.isoformat(),
        "round": incident.round,
    }
    incident.plan = plan
    audit(session, at=now, type="escalation.plan_frozen", incident_id=incident.id, plan=plan)
    if not plan["duty_covered"] and incident.kind in ALARM_KINDS:
        audit(session, at=now, type="duty.uncovered", incident_id=incident.id)
    return plan


def run_step(
    *, session: Session, incident: Incident, n: int, due: datetime, now: datetime
) -> list[int]:
    """Page step ``n`` of the frozen plan and schedule the next; return new page ids."""
    plan = incident.plan or {}
    to, channels = plans.step_group(plan, n - plans.base(incident))
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
    following = plans.step_due(plan, plans.opened_at(incident), nxt - plans.base(incident))
    # After an outage, do not fire every missed repeat at once: go on from the
    # first one still ahead (the step just run already paged everyone for now).
    while (
        following is not None
        and following <= now
        and nxt - plans.base(incident) >= len(plan["steps"])
    ):
        nxt += 1
        following = plans.step_due(plan, plans.opened_at(incident), nxt - plans.base(incident))
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
    # The first follow-up goes to whoever took the alarm; later ones to them and everyone
    # in the last step. (No taker on record, as in a restored or hand-edited row: the
    # last step from the first follow-up on, rather than a job that fails for ever.)
    takers = [incident.acknowledged_by] if incident.acknowledged_by else []
    last, _ = plans.step_group(plan, len(plan.get("steps", [])))
    first = n == plans.base(incident) and bool(takers)
    to = takers if first else list(dict.fromkeys([*takers, *last]))
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


# Built once, run as Core on the session's connection: every step's pages read them.
_PAGES_OF = select(Page.staff_id, Page.channel, Page.step, Page.reply_code).where(
    Page.incident_id == bindparam("incident")
)
_OPTED_OUT = select(StaffState.staff_id).where(
    StaffState.sms_opted_out.is_(True),
    StaffState.staff_id.in_(bindparam("staff", expanding=True)),
)


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
        # transactions paging the same people cannot deadlock (see reply_codes.free_codes).
        # Held until the transaction ends: each once in it (a batch's step 0s).
        held = _this_transaction(session, "reply-code locks")
        for staff_id in sorted(set(staff_ids) - held.keys()):
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"reply-code:{staff_id}"},
            )
            held[staff_id] = True
    session.flush()  # Core below, without the ORM's autoflush: this transaction's pages
    conn = session.connection()
    existing: dict[tuple[str, str, int], int] = {
        (staff_id, channel, n): code
        for staff_id, channel, n, code in conn.execute(_PAGES_OF, {"incident": incident.id})
    }
    # Codes are kept within a round only: a resolved round's codes were free for others.
    codes = {
        staff_id: code
        for (staff_id, _, n), code in existing.items()
        if plans.round_of(n) == incident.round
    }
    # SMS cannot reach someone who sent STOP (the carrier refuses, 21610): call them.
    opted_out = set(conn.scalars(_OPTED_OUT, {"staff": staff_ids}))
    # One query draws the codes of everyone still without one this round.
    codes |= free_codes(
        session, [s for s in dict.fromkeys(staff_ids) if not codes.get(s)], incident, now
    )
    new: list[Page] = []
    for staff_id in staff_ids:
        code = codes[staff_id]
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


def _this_transaction(session: Session, name: str) -> dict[Any, Any]:
    """A dict kept for the session's current transaction only (a new one starts empty)."""
    root = session.get_transaction()
    if root is None:
        return {}
    kept = session.info.get(("steps", name))
    if kept is None or kept[0] is not root:  # the transaction is held: never a reused id
        kept = session.info[("steps", name)] = (root, {})
    return cast(dict[Any, Any], kept[1])


#: Seconds from an acknowledgement to the first follow-up, when the plan names none.
FOLLOW_UP_AFTER = 600


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
    # Acknowledged before its step 0 ran (defer), no plan says when to follow up: the
    # job runs at once, freezes the plan (paging nobody) and waits for its time by it
    # (server.runner).
    plan = incident.plan
    after = 0 if plan is None else plan.get("follow_up_after") or FOLLOW_UP_AFTER
    schedule(
        session,
        incident_id=incident.id,
        kind=JobKind.FOLLOW_UP,
        step=plans.base(incident),
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
        or nxt - plans.base(incident) >= len(plan.get("steps", []))
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
