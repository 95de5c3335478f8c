"""The people pages, for managers: everyone with an account, their roles (grant, revoke,
an inspector's with an end), their phone's state and problems; open an account with a
one-time invitation link (shown once), a new sign-in link, close an account.

Changes go through the people API (``/api/v1/people...``) from the browser; the links
come back in the API's answer and are shown by ``static/people.js``, never stored here.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from server.console import pages
from server.console.access import PeoplePage
from server.console.pages import N_
from server.console.routes import PAGE
from server.people.roles import Role
from server.people.tables import Person
from server.routes.deps import ServicesDep
from server.routes.people import INSPECTOR_DAYS, PersonOut, person_out

router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)

#: The roles a manager can grant, in the order the page offers them.
ROLES = tuple(r.value for r in Role)


@router.get("/people", summary="People: accounts, roles, phones, invitations")
async def people_page(request: Request, services: ServicesDep, me: PeoplePage) -> Response:
    def read() -> list[PersonOut]:
        now = services.clock.now()
        with services.sessions() as s:
            return [person_out(s, p, now) for p in s.scalars(select(Person).order_by(Person.id))]

    people = await run_in_threadpool(read)
    return pages.page(
        request,
        services,
        me,
        "people.html",
        title=N_("People"),
        people=people,
        problems=[p for p in people if p.phone_problem and not p.closed],
        roles=ROLES,
    )


@router.get("/people/{person_id}", summary="One person: roles, phone, links, closing")
async def person_page(
    person_id: str, request: Request, services: ServicesDep, me: PeoplePage
) -> Response:
    def read() -> PersonOut | None:
        with services.sessions() as s:
            person = s.get(Person, person_id)
            return None if person is None else person_out(s, person, services.clock.now())

    person = await run_in_threadpool(read)
    if person is None:
        raise HTTPException(404, f"nobody has the id {person_id!r}")
    return pages.page(
        request,
        services,
        me,
        "person.html",
        title=N_("Person"),
        person=person,
        roles=ROLES,
        held={g.role.value for g in person.roles},
        inspector_days=INSPECTOR_DAYS,
        is_me=person.id == me.person_id,
    )
