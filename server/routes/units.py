"""Room units' health for installers and managers (the ``units`` right): each room, its
unit, and what the server last heard from it. Read-only; provisioning a unit is done
on the server (`panicbutton provision`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import select

from server.models import DeviceRecord
from server.people.auth import Principal
from server.people.roles import Right
from server.routes.deps import STRICT, ServicesDep, answers, need

router = APIRouter(
    prefix="/api/v1", tags=["units"], responses=answers(400, 401, 403), dependencies=STRICT
)


class UnitOut(BaseModel):
    room_id: str
    room: str
    device_id: str
    #: Whether the unit is connected now (its retained status, its heartbeats).
    online: bool
    last_seen: datetime | None
    offline_since: datetime | None
    #: The unit's own word on its health from its last heartbeat ("" when healthy).
    error: str
    #: Alerts waiting in its outbox (0 when all were confirmed).
    outbox: int
    uptime: int
    version: str
    #: Whether its second path (HTTPS with its own token) is set up.
    https: bool


@router.get("/units", responses=answers(422))
def list_units(
    services: ServicesDep,
    _: Annotated[Principal, Depends(need(Right.UNITS))],
    online: Annotated[
        bool | None,
        Query(description="only the units online (true) or offline (false); all if not given"),
    ] = None,
) -> list[UnitOut]:
    """Every room's unit and its health, room by room (a unit never heard from is
    offline with no last-seen time). ``online=false`` lists only the units offline: a
    short answer for a large site that is well (10,000 units are megabytes of JSON)."""
    site = services.site
    query = select(DeviceRecord)
    if online is not None:
        query = query.where(DeviceRecord.online.is_(online))
    with services.sessions() as session:
        known = {d.device_id: d for d in session.scalars(query)}
        # A unit never heard from has no record, and is offline.
        heard = set(session.scalars(select(DeviceRecord.device_id))) if online is False else None
    out = []
    for room in site.rooms:
        record = known.get(room.device)
        if record is None and online is not None and (online or room.device in (heard or ())):
            continue  # not of the kind asked for
        out.append(
            UnitOut(
                room_id=room.id,
                room=room.label,
                device_id=room.device,
                online=bool(record and record.online),
                last_seen=record.last_seen if record else None,
                offline_since=record.offline_since if record else None,
                error=record.error if record else "",
                outbox=record.outbox if record else 0,
                uptime=record.uptime if record else 0,
                version=record.version if record else "",
                https=room.token_sha256 is not None,
            )
        )
    return out
