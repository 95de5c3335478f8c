"""People, for managers: list, open accounts (with a one-time enrolment link), change
details, grant and revoke roles, send sign-in links, close accounts. Every route needs
the ``people`` right; every change is logged by :mod:`server.people.directory`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import PeopleError
from server.mobile import phones
from server.people import directory
from server.people.auth import Principal
from server.people.links import LINK_HOURS, CanSignInError, issue_link, link_url
from server.people.roles import Right, Role
from server.people.tables import Person, RoleGrant
from server.phones import masked
from server.routes.deps import STRICT, Problem, ServicesDep, SettingsDep, answers, need
from server.site import Language

router = APIRouter(
    prefix="/api/v1", tags=["people"], responses=answers(400, 401, 403), dependencies=STRICT
)
Manager = Annotated[Principal, Depends(need(Right.PEOPLE))]
PersonId = Annotated[str, Path(max_length=63, description="the person's pseudonymous id")]
_ROLES = {r.value for r in Role}
#: The longest an inspector's access may be granted for at once.
INSPECTOR_DAYS = 90
NO_PERSON: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "nobody has this id"}
}
CAN_SIGN_IN: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "they can sign in already: send a recovery link"}
}
LAST_MANAGER: dict[int | str, dict[str, Any]] = {
    409: {
        "model": Problem,
        "description": "the change would leave the site without a manager",
    }
}


class GrantOut(BaseModel):
    role: Role
    since: datetime
    #: When the role ends by itself (an inspector's always does), or None.
    until: datetime | None


class PersonOut(BaseModel):
    id: str
    name: str
    language: str
    roles: list[GrantOut]
    #: Masked: ``+32 4** ** ** 56``; None when the person has no number.
    phone: str | None
    #: Whether its owner confirmed the number (only a confirmed number is paged).
    phone_confirmed: bool
    #: What the provider last said is wrong with the number ("" when nothing).
    phone_problem: str
    closed: bool


class NewPerson(BaseModel):
    id: str = Field(max_length=63, description="pseudonymous: 'night-staff', 'w-17'")
    name: str = Field(max_length=200)
    phone: str | None = Field(default=None, max_length=24, description="E.164: +32470123456")
    language: Language = "en"
    roles: list[Role] = Field(default_factory=list, max_length=5)
    #: When an inspector's access ends (required with the inspector role).
    until: datetime | None = None


class Created(PersonOut):
    #: The one-time enrolment link to send to the person (shown only here).
    link: str
    link_expires_at: datetime


class Change(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=24)
    language: Language | None = None


class GrantIn(BaseModel):
    role: Role
    #: When the role ends by itself; required for an inspector, at most 90 days ahead.
    until: datetime | None = None


class LinkIn(BaseModel):
    purpose: str = Field(pattern="^(enrol|recover)$")


class LinkOut(BaseModel):
    link: str
    expires_at: datetime


class ProblemOut(BaseModel):
    id: str
    name: str
    phone: str | None
    problem: str


def person_out(s: Session, person: Person, now: datetime) -> PersonOut:
    grants = s.scalars(
        select(RoleGrant)
        .where(
            RoleGrant.person_id == person.id,
            RoleGrant.revoked_at.is_(None),
            (RoleGrant.expires_at.is_(None)) | (RoleGrant.expires_at > now),
        )
        .order_by(RoleGrant.granted_at, RoleGrant.id)
    ).all()
    return PersonOut(
        id=person.id,
        name=person.name,
        language=person.language,
        roles=[
            GrantOut(role=Role(g.role), since=g.granted_at, until=g.expires_at)
            for g in grants
            if g.role in _ROLES
        ],
        phone=masked(person.phone),
        phone_confirmed=person.phone_confirmed_at is not None,
        phone_problem=person.phone_problem,
        closed=person.closed_at is not None,
    )


def _check_until(role: Role, until: datetime | None, now: datetime) -> None:
    if (
        role is Role.INSPECTOR
        and until is not None
        and until > now + timedelta(days=INSPECTOR_DAYS)
    ):
        raise PeopleError(
            f"an inspector's access may be granted for at most {INSPECTOR_DAYS} days at a "
            "time: choose an earlier end, and grant it again later if needed"
        )


def _keeps_a_manager(s: Session, *, without: str) -> None:
    """409 unless someone other than ``without`` is a manager with an open account, for
    good (a manager role that ends by itself does not count)."""
    others = s.scalar(
        select(RoleGrant.person_id)
        .join(Person, Person.id == RoleGrant.person_id)
        .where(
            RoleGrant.role == Role.MANAGER.value,
            RoleGrant.revoked_at.is_(None),
            # A grant that ends by itself would leave the site without a manager then.
            RoleGrant.expires_at.is_(None),
            Person.closed_at.is_(None),
            Person.id != without,
        )
        .limit(1)
    )
    if others is None:
        raise HTTPException(
            409,
            "this would leave no manager: the site must keep someone who can run it. "
            "Make another person a manager first",
        )


def _get(s: Session, person_id: str) -> Person:
    person = s.get(Person, person_id)
    if person is None:
        raise HTTPException(404, f"nobody has the id {person_id!r}")
    return person


def _refused(exc: PeopleError) -> HTTPException:
    return HTTPException(422, str(exc))


LINK_REFUSED: dict[int | str, dict[str, Any]] = {
    403: {
        "model": Problem,
        "description": "not allowed: links are sent only from a signed-in browser (not "
        "with an API token), and never to oneself",
    },
}


def _may_send_links(me: Principal, person_id: str | None = None) -> None:
    """403 for a link to oneself, or from an API token: a link lets whoever opens it
    set up a way to sign in, so a leaked token must not be able to make one."""
    if me.via != "session":
        raise HTTPException(
            403,
            "sign-in links are sent only from a signed-in browser, not with an API token: "
            "sign in at /sign-in",
        )
    if person_id is not None and person_id == me.person_id:
        raise HTTPException(
            403,
            "you cannot send yourself a sign-in link: add a passkey or change your password "
            "on your account page, or ask another manager for a recovery link",
        )


@router.get("/people", response_model=list[PersonOut])
def list_people(_: Manager, services: ServicesDep) -> list[PersonOut]:
    """Everyone with an account, closed ones too, with their roles and phone state."""
    now = services.clock.now()
    with services.sessions() as s:
        people = s.scalars(select(Person).order_by(Person.id)).all()
        return [person_out(s, p, now) for p in people]


@router.get("/phone-problems", response_model=list[ProblemOut])
def phone_problems(_: Manager, services: ServicesDep) -> list[ProblemOut]:
    """Open accounts whose phone the provider reports as unreachable or opted out."""
    with services.sessions() as s:
        people = s.scalars(
            select(Person)
            .where(Person.phone_problem != "", Person.closed_at.is_(None))
            .order_by(Person.id)
        ).all()
        return [
            ProblemOut(id=p.id, name=p.name, phone=masked(p.phone), problem=p.phone_problem)
            for p in people
        ]


@router.get("/people/{person_id}", response_model=PersonOut, responses=NO_PERSON)
def show_person(person_id: PersonId, _: Manager, services: ServicesDep) -> PersonOut:
    with services.sessions() as s:
        return person_out(s, _get(s, person_id), services.clock.now())


@router.post(
    "/people",
    status_code=201,
    response_model=Created,
    responses={**answers(400, 422), **LINK_REFUSED},
)
def add_person(
    body: NewPerson, me: Manager, services: ServicesDep, settings: SettingsDep
) -> Created:
    """Open an account and make its one-time enrolment link (good for 72 hours); from a
    signed-in browser only."""
    _may_send_links(me)
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            for role in body.roles:
                _check_until(role, body.until, now)
            person = directory.add_person(
                s,
                person_id=body.id,
                name=body.name,
                by=me.person_id,
                now=now,
                phone=body.phone,
                language=body.language,
            )
            for role in body.roles:
                until = body.until if role is Role.INSPECTOR else None
                directory.grant(
                    s, person_id=body.id, role=role, by=me.person_id, now=now, until=until
                )
            token = issue_link(s, person_id=body.id, purpose="enrol", by=me.person_id, now=now)
            out = person_out(s, person, now)
    except PeopleError as exc:
        raise _refused(exc) from None
    return Created(
        **out.model_dump(),
        link=link_url(settings.public_base_url, token),
        link_expires_at=now + timedelta(hours=LINK_HOURS),
    )


@router.patch(
    "/people/{person_id}", response_model=PersonOut, responses={**answers(400, 422), **NO_PERSON}
)
def change_person(
    person_id: PersonId, body: Change, me: Manager, services: ServicesDep
) -> PersonOut:
    """Change a name, number or language. A new number must be confirmed again by its
    owner before it is paged."""
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            _get(s, person_id)
            directory.change(
                s,
                person_id=person_id,
                by=me.person_id,
                now=now,
                name=body.name,
                phone=body.phone,
                language=body.language,
            )
            return person_out(s, _get(s, person_id), now)
    except PeopleError as exc:
        raise _refused(exc) from None


@router.post(
    "/people/{person_id}/roles",
    response_model=PersonOut,
    responses={**answers(400, 422), **NO_PERSON},
)
def grant_role(person_id: PersonId, body: GrantIn, me: Manager, services: ServicesDep) -> PersonOut:
    """Grant a role; an inspector's must end (``until``), at most 90 days ahead."""
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            _get(s, person_id)
            _check_until(body.role, body.until, now)
            directory.grant(
                s, person_id=person_id, role=body.role, by=me.person_id, now=now, until=body.until
            )
            return person_out(s, _get(s, person_id), now)
    except PeopleError as exc:
        raise _refused(exc) from None


@router.delete(
    "/people/{person_id}/roles/{role}",
    response_model=PersonOut,
    responses={**NO_PERSON, **LAST_MANAGER},
)
def revoke_role(person_id: PersonId, role: Role, me: Manager, services: ServicesDep) -> PersonOut:
    """Take a role away. The last manager's manager role cannot be taken. Without the
    worker role, their enrolled phones are revoked (a mobile button is a worker's)."""
    now = services.clock.now()
    with services.sessions.begin() as s:
        _get(s, person_id)
        if role is Role.MANAGER:
            _keeps_a_manager(s, without=person_id)
        if not directory.revoke(s, person_id=person_id, role=role, by=me.person_id, now=now):
            raise HTTPException(404, f"{person_id!r} does not hold the role {role.value!r}")
        if role is Role.WORKER:
            phones.revoke_all(s, person_id=person_id, by=me.person_id, now=now)
        return person_out(s, _get(s, person_id), now)


@router.post(
    "/people/{person_id}/links",
    status_code=201,
    response_model=LinkOut,
    responses={**answers(400, 422), **NO_PERSON, **LINK_REFUSED, **CAN_SIGN_IN},
)
def new_link(
    person_id: PersonId, body: LinkIn, me: Manager, services: ServicesDep, settings: SettingsDep
) -> LinkOut:
    """A new one-time link to enrol or recover sign-in (earlier unused ones stop working).
    From a signed-in browser only, and not for oneself; an enrolment link only for
    someone who cannot sign in yet (a recovery link takes away what they had)."""
    _may_send_links(me, person_id)
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            token = issue_link(
                s, person_id=person_id, purpose=body.purpose, by=me.person_id, now=now
            )
    except CanSignInError as exc:
        raise HTTPException(409, str(exc)) from None
    except PeopleError as exc:
        raise HTTPException(404, str(exc)) from None
    return LinkOut(
        link=link_url(settings.public_base_url, token),
        expires_at=now + timedelta(hours=LINK_HOURS),
    )


@router.post(
    "/people/{person_id}/close", response_model=PersonOut, responses={**NO_PERSON, **LAST_MANAGER}
)
def close_person(person_id: PersonId, me: Manager, services: ServicesDep) -> PersonOut:
    """Close an account: its sessions end, its tokens and enrolled phones are revoked,
    it is paged never."""
    now = services.clock.now()
    with services.sessions.begin() as s:
        person = _get(s, person_id)
        if person.closed_at is not None:
            return person_out(s, person, now)
        _keeps_a_manager(s, without=person_id)
        directory.close(s, person_id=person_id, by=me.person_id, now=now)
        phones.revoke_all(s, person_id=person_id, by=me.person_id, now=now)
        return person_out(s, person, now)
