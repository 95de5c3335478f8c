"""The presence page, for staff and managers: which workers are here now (check them
in and out), today's comings and goings, and one's own phone (confirm it, send oneself
a test page) since staff are paged on it.

Changes go through ``/api/v1/presence/check-in|check-out`` and ``/api/v1/me/...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from server.console import pages
from server.console.access import PresencePage
from server.console.pages import N_
from server.console.routes import PAGE
from server.people import presence
from server.people.roles import Role
from server.people.tables import Person, Presence, RoleGrant
from server.phones import masked
from server.routes.deps import ServicesDep

router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)


@dataclass(frozen=True)
class Stay:
    person: str
    name: str
    room: str
    since: datetime
    until: datetime | None
    by: str


@dataclass(frozen=True)
class Register:
    here: list[Stay]
    today: list[Stay]
    #: (id, name) of open workers' accounts not checked in.
    away: list[tuple[str, str]]
    #: The reader's own phone: (masked number or None, confirmed).
    phone: str | None
    phone_confirmed: bool


def read(services: ServicesDep, me_id: str) -> Register:
    """Who is here, today's stays (since local midnight) and the reader's phone."""
    site = services.site
    now = services.clock.now()
    local = now.astimezone(site.zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    rooms = {r.id: r.label for r in site.rooms}
    with services.sessions() as s:
        names: dict[str, str] = dict(s.execute(select(Person.id, Person.name)).all())

        def stay(r: Presence) -> Stay:
            return Stay(
                person=r.person_id,
                name=names.get(r.person_id, r.person_id),
                room=rooms.get(r.room_id or "", r.room_id or ""),
                since=r.checked_in_at,
                until=r.checked_out_at,
                by=r.in_by,
            )

        here = [stay(r) for r in presence.present(s)]
        today = [
            stay(r) for r in presence.history(s, since=midnight, until=now + timedelta(seconds=1))
        ]
        workers = s.scalars(
            select(Person)
            .join(RoleGrant, RoleGrant.person_id == Person.id)
            .where(
                RoleGrant.role == Role.WORKER.value,
                RoleGrant.revoked_at.is_(None),
                (RoleGrant.expires_at.is_(None)) | (RoleGrant.expires_at > now),
                Person.closed_at.is_(None),
            )
            .order_by(Person.id)
        ).all()
        present_ids = {h.person for h in here}
        away = [(w.id, w.name) for w in dict.fromkeys(workers) if w.id not in present_ids]
        me = s.get(Person, me_id)
        phone = masked(me.phone) if me is not None else None
        confirmed = me is not None and me.phone_confirmed_at is not None
    return Register(here=here, today=today, away=away, phone=phone, phone_confirmed=confirmed)


@router.get("/presence", summary="Presence: who is here now, today's register, your phone")
async def presence_page(request: Request, services: ServicesDep, me: PresencePage) -> Response:
    register = await run_in_threadpool(read, services, me.person_id)
    return pages.page(
        request,
        services,
        me,
        "presence.html",
        title=N_("Presence"),
        register=register,
        rooms=services.site.rooms,
        paged=me.principal.roles & {Role.STAFF, Role.MANAGER},
    )
