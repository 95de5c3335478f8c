"""The HTTP API for the console and scripts. Every route needs the bearer token."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.models import Incident, Outcome
from server.routes.deps import IncidentId, ServicesDep, answers, require_token
from server.site import TAKEOVER_HOURS_MAX, TAKEOVER_HOURS_MIN

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(require_token)],
    tags=["incidents"],
    responses=answers(401),
)


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


class ResolveIn(BaseModel):
    staff_id: str
    outcome: Outcome


@router.post("/incidents/{incident_id}/resolve", responses=answers(400, 404, 422))
async def resolve_incident(
    incident_id: IncidentId, body: ResolveIn, services: ServicesDep
) -> IncidentOut:
    """Close an incident with its outcome (a staff decision; nothing at the unit can)."""
    if not any(s.id == body.staff_id for s in services.site.staff):
        raise HTTPException(422, f"staff_id {body.staff_id!r} is not in the site file")
    incident = await run_in_threadpool(
        lambda: services.responder.resolve(
            incident_id=incident_id, staff_id=body.staff_id, outcome=body.outcome
        )
    )
    if incident is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return IncidentOut.of(incident)


class AcknowledgeIn(BaseModel):
    staff_id: str


@router.post("/incidents/{incident_id}/acknowledge", responses=answers(400, 404, 422))
async def acknowledge_incident(
    incident_id: IncidentId, body: AcknowledgeIn, services: ServicesDep
) -> IncidentOut:
    """Acknowledge from the console: paging stops, the others are told who is going."""
    if not any(s.id == body.staff_id for s in services.site.staff):
        raise HTTPException(422, f"staff_id {body.staff_id!r} is not in the site file")
    incident = await run_in_threadpool(
        lambda: services.responder.acknowledge(
            incident_id=incident_id, staff_id=body.staff_id, via="console"
        )
    )
    if incident is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return IncidentOut.of(incident)


class TakeoverIn(BaseModel):
    staff_id: str
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
async def takeover(body: TakeoverIn, services: ServicesDep) -> None:
    """ "I take over now": this person alone is on duty until the take-over ends."""
    if not any(s.id == body.staff_id for s in services.site.staff):
        raise HTTPException(422, f"staff_id {body.staff_id!r} is not in the site file")
    await run_in_threadpool(
        lambda: services.rota.takeover(staff_id=body.staff_id, on=body.on, hours=body.hours)
    )


class PagingOut(BaseModel):
    send_backlog: int
    jobs_pending: int
    next_job_due: datetime | None


@router.get("/paging")
def paging_state(services: ServicesDep) -> PagingOut:
    """The send backlog (sends queued, under way or held for a bundle) and pending steps."""
    state = services.runner.paging_state()
    return PagingOut(
        send_backlog=state.send_backlog,
        jobs_pending=state.jobs_pending,
        next_job_due=state.next_job_due,
    )
