"""The people of a site: open an account, change details, grant and revoke roles, close.

Every change is one ``person.*`` or ``role.*`` log entry naming the person and who
made the change by pseudonymous id; names and numbers stay in ``people``. A
changed phone number must be confirmed again before it is paged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from server.db import changed
from server.errors import PeopleError, SiteError
from server.log.append import audit
from server.people.auth import active_roles, end_sessions
from server.people.roles import Role
from server.people.tables import (
    ApiToken,
    Passkey,
    Password,
    Person,
    PhoneCheck,
    Presence,
    RoleGrant,
)
from server.site import E164, ID_RE, LANGUAGES, printable

#: Who did it when no person did: the command line on the server, or an upgrade.
SYSTEM = "system"


#: Ids the log uses for no person: the server itself, and a worker acting for themselves.
RESERVED = frozenset({SYSTEM, "self"})


def check_id(person_id: str) -> str:
    if person_id in RESERVED:
        raise PeopleError(
            f"the id {person_id!r} is reserved (the log uses it for no person); choose another"
        )
    if not ID_RE.fullmatch(person_id):
        raise PeopleError(
            f"id {person_id!r} must be 1 to 63 lowercase letters, digits and '-', starting "
            "with a letter or digit (a pseudonym such as 'night-staff' or 'w-17', not a name)"
        )
    return person_id


def check_name(name: str) -> str:
    """A name with no control character (it is spoken in calls, printed in texts)."""
    try:
        return printable(name, "name")
    except SiteError as exc:
        raise PeopleError(str(exc)) from None


def check_phone(phone: str) -> str:
    phone = phone.replace(" ", "")
    if not E164.fullmatch(phone):
        raise PeopleError(
            f"phone {phone!r} is not in international (E.164) form: + and country code, "
            "like +32470123456"
        )
    return phone


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise PeopleError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    return language


def role_of(name: str) -> Role:
    try:
        return Role(name)
    except ValueError:
        raise PeopleError(
            f"role {name!r} is not one of {', '.join(r.value for r in Role)}"
        ) from None


def find(session: Session, person_id: str) -> Person:
    """The open account ``person_id``; PeopleError if there is none."""
    person = session.get(Person, person_id)
    if person is None or person.closed_at is not None:
        raise PeopleError(f"nobody has the id {person_id!r} (or their account is closed)")
    return person


def add_person(
    session: Session,
    *,
    person_id: str,
    name: str,
    by: str,
    now: datetime,
    roles: Iterable[Role] = (),
    phone: str | None = None,
    language: str = "en",
    phone_confirmed: bool = False,
) -> Person:
    """Open an account. ``phone_confirmed`` only for numbers already in use (an import
    of an existing site file); a new number is confirmed by its owner."""
    check_id(person_id)
    if not name.strip() or len(name) > 200:
        raise PeopleError("name must be 1 to 200 characters (a worker's chosen code is enough)")
    check_name(name)
    if session.get(Person, person_id) is not None:
        raise PeopleError(f"the id {person_id!r} is taken; choose another")
    if phone is not None:
        phone = check_phone(phone)
        if session.scalar(select(Person.id).where(Person.phone == phone)) is not None:
            raise PeopleError("that phone number is already someone else's")
    person = Person(
        id=person_id,
        name=name.strip(),
        phone=phone,
        language=check_language(language),
        phone_confirmed_at=now if phone is not None and phone_confirmed else None,
        phone_problem="",
        created_at=now,
        closed_at=None,
    )
    session.add(person)
    session.flush()
    audit(session, at=now, type="person.added", person=person_id, by=by)
    for role in roles:
        grant(session, person_id=person_id, role=role, by=by, now=now)
    return person


def change(
    session: Session,
    *,
    person_id: str,
    by: str,
    now: datetime,
    name: str | None = None,
    phone: str | None = None,
    language: str | None = None,
) -> list[str]:
    """Change a person's details; the names of the fields that changed. A new phone
    number is unconfirmed until its owner enters the code sent to it."""
    person = find(session, person_id)
    fields: list[str] = []
    if name is not None and name.strip() != person.name:
        if not name.strip() or len(name) > 200:
            raise PeopleError("name must be 1 to 200 characters")
        check_name(name)
        person.name = name.strip()
        fields.append("name")
    if phone is not None and check_phone(phone) != person.phone:
        phone = check_phone(phone)
        owner = session.scalar(select(Person.id).where(Person.phone == phone))
        if owner is not None:
            raise PeopleError("that phone number is already someone else's")
        person.phone = phone
        person.phone_confirmed_at = None
        person.phone_problem = ""
        fields.append("phone")
    if language is not None and check_language(language) != person.language:
        person.language = language
        fields.append("language")
    if fields:
        audit(session, at=now, type="person.changed", person=person_id, by=by, fields=fields)
    return fields


def grant(
    session: Session,
    *,
    person_id: str,
    role: Role,
    by: str,
    now: datetime,
    until: datetime | None = None,
) -> bool:
    """Grant ``role`` (until ``until``); False if the person already holds it so.
    An inspector's grant must end: ``until`` is required for it."""
    find(session, person_id)
    if role is Role.INSPECTOR and until is None:
        raise PeopleError("an inspector's access must end: give it an end date")
    if until is not None and until <= now:
        raise PeopleError("the end of a grant must be in the future")
    if role in active_roles(session, person_id, now) and until is None:
        return False
    session.add(
        RoleGrant(
            person_id=person_id,
            role=role.value,
            granted_by=by,
            granted_at=now,
            expires_at=until,
            revoked_at=None,
        )
    )
    audit(
        session,
        at=now,
        type="role.granted",
        person=person_id,
        role=role.value,
        by=by,
        until=until,
    )
    return True


def revoke(session: Session, *, person_id: str, role: Role, by: str, now: datetime) -> bool:
    """Take ``role`` away; False if the person did not hold it."""
    rows = session.scalars(
        select(RoleGrant).where(
            RoleGrant.person_id == person_id,
            RoleGrant.role == role.value,
            RoleGrant.revoked_at.is_(None),
        )
    ).all()
    if not rows:
        return False
    for row in rows:
        row.revoked_at = now
    audit(session, at=now, type="role.revoked", person=person_id, role=role.value, by=by)
    if role is Role.WORKER:
        _leave(session, person_id=person_id, by=by, now=now)
    return True


def close(session: Session, *, person_id: str, by: str, now: datetime) -> None:
    """Close an account: every session ends, every token is revoked, no page goes to it,
    a worker still checked in is checked out, and what is no longer needed goes at once
    (the phone number, free for someone else; the password, TOTP seed and passkeys).
    The name stays until the roster's retention ends (it explains past alarms)."""
    person = find(session, person_id)
    person.closed_at = now
    person.phone, person.phone_confirmed_at = None, None
    end_sessions(session, person_id=person_id, now=now)
    session.execute(
        update(ApiToken)
        .where(ApiToken.person_id == person_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    for table in (Password, Passkey, PhoneCheck):
        session.execute(delete(table).where(table.person_id == person_id))
    _leave(session, person_id=person_id, by=by, now=now)
    audit(session, at=now, type="person.closed", person=person_id, by=by)


def _leave(session: Session, *, person_id: str, by: str, now: datetime) -> None:
    """Check ``person_id`` out if they are still checked in (their account closed or no
    longer a worker's): the presence count, and the reference person's continuity, must
    not count them any more."""
    left = changed(
        session,
        update(Presence)
        .where(Presence.person_id == person_id, Presence.checked_out_at.is_(None))
        .values(checked_out_at=now, out_by=by, room_id=None),
    )
    if left:
        present = session.scalar(select(func.count()).where(Presence.checked_out_at.is_(None)))
        audit(session, at=now, type="presence.changed", present=present or 0, by=by)
