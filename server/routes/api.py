"""The HTTP API for the console and scripts: incidents, duty, paging.

Every route names the right it needs (``need``); who acts is the signed-in person
(a personal API token or a browser session), never a name the caller writes: a
body's ``staff_id``, where one is still accepted, must be the caller's own id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.models import Incident, Outcome
from server.people.auth import Principal
from server.people.roles import Right
from server.routes.deps import STRICT, IncidentId, ServicesDep, answers, need
from server.services import Services
from server.site import ID, TAKEOVER_HOURS_MAX, TAKEOVER_HOURS_MIN

router = APIRouter(
    prefix="/api/v1", tags=["incidents"], responses=answers(400, 401, 403), dependencies=STRICT
)

Responding = Annotated[Principal, Depends(need(Right.RESPOND))]
Board = Annotated[Principal, Depends(need(Right.BOARD))]


def acting(principal: Principal, services: Services, staff_id: str | None) -> str:
    """The staff id a response is recorded under: the caller's own. 403 when the body
    names someone else; 422 when the caller is not a member of staff who can be paged
    (the others are told who is going, by name, and may call them back)."""
    if staff_id is not None and staff_id != principal.person_id:
        raise HTTPException(
            403,
            f"you are signed in as {principal.person_id!r} and cannot act as {staff_id!r}: "
            "leave staff_id out, or sign in as that person",
        )
    if not any(s.id == principal.person_id for s in services.site.staff):
        raise HTTPException(
            422,
            f"{principal.person_id!r} is not a member of staff who can be paged: a manager "
            "adds the staff role, and the phone number must be confirmed (Account: phone)",
        )
    return principal.person_id


class IncidentOut(BaseModel):
    id: int
    room_id: str
    device_id: str
    kind: str
    state: str
    received_at: datetime
    device_time: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    outcome: str | None

    @classmethod
    def of(cls, i: Incident) -> IncidentOut:
        return cls(
            id=i.id,
            room_id=i.room_id,
            device_id=i.device_id,
            kind=i.kind,
            state=i.state,
            received_at=i.received_at,
            device_time=i.pressed_at,
            acknowledged_by=i.acknowledged_by,
            acknowledged_at=i.acknowledged_at,
            resolved_at=i.resolved_at,
            outcome=i.outcome,
        )


#: The caller's own id, if given at all (the signed-in person acts, nobody else).
StaffId = Field(default=None, pattern=f"^{ID}$", description="the caller's own id, or left out")


class ResolveIn(BaseModel):
    staff_id: str | None = StaffId
    outcome: Outcome


@router.post("/incidents/{incident_id}/resolve", responses=answers(400, 404, 422))
async def resolve_incident(
    incident_id: IncidentId, body: ResolveIn, services: ServicesDep, me: Responding
) -> IncidentOut:
    """Close an incident with its outcome (a staff decision; nothing at the unit can)."""
    staff_id = acting(me, services, body.staff_id)
    incident = await run_in_threadpool(
        lambda: services.responder.resolve(
            incident_id=incident_id, staff_id=staff_id, outcome=body.outcome
        )
    )
    if incident is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return IncidentOut.of(incident)


class AcknowledgeIn(BaseModel):
    staff_id: str | None = StaffId


@router.post("/incidents/{incident_id}/acknowledge", responses=answers(400, 404, 422))
async def acknowledge_incident(
    incident_id: IncidentId, body: AcknowledgeIn, services: ServicesDep, me: Responding
) -> IncidentOut:
    """Acknowledge from the console ("I'm going"): paging stops, the others are told who
    is going."""
    staff_id = acting(me, services, body.staff_id)
    incident = await run_in_threadpool(
        lambda: services.responder.acknowledge(
            incident_id=incident_id, staff_id=staff_id, via="console"
        )
    )
    if incident is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return IncidentOut.of(incident)


class TakeoverIn(BaseModel):
    staff_id: str | None = StaffId
    #: How long, in hours (a quarter of an hour to a week); the site's ``takeover_hours``
    #: if None. Strict: a number, not ``"12"`` nor ``true``.
    hours: float | None = Field(
        default=None,
        ge=TAKEOVER_HOURS_MIN,
        le=TAKEOVER_HOURS_MAX,
        allow_inf_nan=False,
        strict=True,
    )
    on: bool = True


@router.post("/duty/takeover", status_code=204, responses=answers(400, 422))
async def takeover(body: TakeoverIn, services: ServicesDep, me: Responding) -> None:
    """ "I take over now": the caller alone is on duty until the take-over ends."""
    staff_id = acting(me, services, body.staff_id)
    await run_in_threadpool(
        lambda: services.rota.takeover(staff_id=staff_id, on=body.on, hours=body.hours)
    )
    # A take-over ends a gap in the reference person's duty at once, not at the next pass.
    await run_in_threadpool(services.continuity.check)


class PagingOut(BaseModel):
    send_backlog: int
    jobs_pending: int
    next_job_due: datetime | None


@router.get("/paging")
def paging_state(services: ServicesDep, _: Board) -> PagingOut:
    """The send backlog (sends queued, under way or held for a bundle) and pending steps."""
    state = services.runner.paging_state()
    return PagingOut(
        send_backlog=state.send_backlog,
        jobs_pending=state.jobs_pending,
        next_job_due=state.next_job_due,
    )
