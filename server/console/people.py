"""The people pages, for managers: everyone with an account, their roles (grant, revoke,
an inspector's with an end), their phone's state and problems; open an account with a
one-time invitation link (shown once), a new sign-in link, close an account; a
worker's mobile buttons (enrolled phones): enrol one from a one-time link shown with
its QR code, revoke one.

Changes go through the people API (``/api/v1/people...``) from the browser; the links
come back in the API's answer and are shown by ``static/people.js``, never stored here
(the QR code of a link is drawn by :func:`qr_code` for that script, and kept nowhere).
"""

from __future__ import annotations

import hmac
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import segno
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from server.console import pages
from server.console.access import PeoplePage
from server.console.pages import N_
from server.console.routes import PAGE
from server.mobile.phones import phones_of
from server.people.roles import Role
from server.people.tables import Person
from server.phones import masked
from server.routes.deps import CSRF_HEADER, MEANING, ServicesDep
from server.routes.people import INSPECTOR_DAYS, PersonOut, person_out

router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)

#: The roles a manager can grant, in the order the page offers them.
ROLES = tuple(r.value for r in Role)


@dataclass(frozen=True)
class PhoneRow:
    """A worker's enrolled phone as the person page lists it."""

    id: str
    label: str
    #: Masked: ``+32 4** ** ** 56``.
    number: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None


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
    def read() -> tuple[PersonOut, list[PhoneRow]] | None:
        with services.sessions() as s:
            person = s.get(Person, person_id)
            if person is None:
                return None
            phones = [
                PhoneRow(
                    id=p.id,
                    label=p.label,
                    number=masked(p.number) or "",
                    enrolled_at=p.created_at,
                    last_seen_at=p.last_seen_at,
                    revoked_at=p.revoked_at,
                )
                for p in phones_of(s, person_id)
            ]
            return person_out(s, person, services.clock.now()), phones

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(404, f"nobody has the id {person_id!r}")
    person, phones = found
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
        phones=phones,
    )


class QrIn(BaseModel):
    #: What to draw: the one-time link just made (its token stays out of every URL).
    text: str = Field(min_length=1, max_length=500)


@router.post(
    "/qr",
    summary="A one-time link just shown, as a QR code (SVG) to scan with the phone",
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def qr_code(
    body: QrIn,
    me: PeoplePage,
    x_csrf_token: Annotated[str, Header(alias=CSRF_HEADER, max_length=100)] = "",
) -> Response:
    """The QR code of ``text``, drawn here (the console needs no script library and no
    internet); nothing is kept. The link travels in the body, never in a URL."""
    if not me.principal.csrf or not hmac.compare_digest(x_csrf_token, me.principal.csrf):
        raise HTTPException(403, MEANING[403])
    return Response(qr_svg(body.text), media_type="image/svg+xml")


def qr_svg(text: str) -> bytes:
    """``text`` as a QR code: a whole SVG document (an image of its own, not inline)."""
    out = io.BytesIO()
    segno.make(text, error="m").save(
        out, kind="svg", scale=4, dark="#000", light="#fff", xmldecl=False, svgclass="qr"
    )
    return out.getvalue()
