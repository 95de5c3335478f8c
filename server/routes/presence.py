"""The presence register over HTTP: check in and out, who is here, the history.

A worker checks themselves in and out; staff and managers (``presence``) check
anyone. Who is here by name needs ``presence``; a worker sees only themselves.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from server.errors import PeopleError
from server.people import presence
from server.people.auth import Principal
from server.people.roles import Right, Role
from server.people.tables import Person, Presence
from server.routes.deps import STRICT, Me, Problem, ServicesDep, answers, need
from server.services import Services

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/v1/presence",
    tags=["presence"],
    responses=answers(400, 401, 403),
    dependencies=STRICT,
)

#: 409 is not among the shared meanings of server.routes.deps yet.
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "checked in already, or not checked in"}
}


class CheckIn(BaseModel):
    #: The worker's id; yourself if left out.
    person: str | None = Field(default=None, max_length=63)
    #: The room they work in, if any (a room id of the site).
    room: str | None = Field(default=None, max_length=63)


class Stay(BaseModel):
    person: str
    #: The worker's name (their chosen code): shown to staff and to the worker only.
    name: str
    room: str | None
    checked_in_at: datetime
    checked_out_at: datetime | None


def _stays(rows: list[Presence], names: dict[str, str]) -> list[Stay]:
    return [
        Stay(
            person=r.person_id,
            name=names.get(r.person_id, ""),
            room=r.room_id,
            checked_in_at=r.checked_in_at,
            checked_out_at=r.checked_out_at,
        )
        for r in rows
    ]


def _whom(me: Principal, person: str | None) -> tuple[str, str]:
    """(the worker acted on, ``by`` for the log); 403 unless it is oneself as a worker
    or the caller may check others in and out."""
    if person is None or person == me.person_id:
        if Role.WORKER not in me.roles:
            raise HTTPException(
                403, "only workers check themselves in and out; name the worker as 'person'"
            )
        return me.person_id, presence.SELF
    if not me.can(Right.PRESENCE):
        raise HTTPException(
            403, "you may check in and out only yourself (staff and managers check others)"
        )
    return person, me.person_id


def _change(services: Services, me: Principal, body: CheckIn, *, into: bool) -> Stay:
    person_id, by = _whom(me, body.person)
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            if into:
                row = presence.check_in(
                    s, person_id=person_id, by=by, now=now, site=services.site, room_id=body.room
                )
            else:
                row = presence.check_out(s, person_id=person_id, by=by, now=now)
            name = s.get_one(Person, person_id).name
            stay = _stays([row], {person_id: name})[0]
    except presence.PresenceConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        services.continuity.check()  # a gap starts (or ends) at once, not at the next pass
    except Exception:  # the change is committed; the next supervision pass looks again
        log.exception("continuity check after a presence change failed")
    return stay


@router.post("/check-in", responses={**answers(400, 422), **CONFLICT})
async def check_in(body: CheckIn, me: Me, services: ServicesDep) -> Stay:
    """Check a worker in (yourself, or anyone with the ``presence`` right)."""
    return await run_in_threadpool(lambda: _change(services, me, body, into=True))


@router.post("/check-out", responses={**answers(400, 422), **CONFLICT})
async def check_out(body: CheckIn, me: Me, services: ServicesDep) -> Stay:
    """Check a worker out (yourself, or anyone with the ``presence`` right)."""
    return await run_in_threadpool(lambda: _change(services, me, body, into=False))


def _names(services: Services, rows: list[Presence]) -> dict[str, str]:
    ids = {r.person_id for r in rows}
    with services.sessions() as s:
        return dict(s.execute(select(Person.id, Person.name).where(Person.id.in_(ids))).all())


@router.get("")
def who_is_here(me: Me, services: ServicesDep) -> list[Stay]:
    """Who is checked in now: everyone, by name, for ``presence``; yourself otherwise."""
    with services.sessions() as s:
        rows = presence.present(s)
    if not me.can(Right.PRESENCE):
        rows = [r for r in rows if r.person_id == me.person_id]
    return _stays(rows, _names(services, rows))


@router.get("/history", responses=answers(422))
def history(
    since: Annotated[datetime, Query(description="from this time (ISO 8601, with zone)")],
    until: Annotated[datetime, Query(description="to this time (ISO 8601, with zone)")],
    _: Annotated[Principal, Depends(need(Right.PRESENCE))],
    services: ServicesDep,
) -> list[Stay]:
    """Every stay that overlaps [since, until)."""
    if since.tzinfo is None or until.tzinfo is None:
        raise HTTPException(422, "since and until need a time zone (e.g. 2026-11-30T08:00Z)")
    if until <= since:
        raise HTTPException(422, "until must come after since")
    with services.sessions() as s:
        rows = presence.history(s, since=since, until=until)
    return _stays(rows, _names(services, rows))
