"""``panicbutton people invite`` and ``panicbutton people token``: on the server, with
its settings, before anyone can sign in (the first manager) or for scripts.

There is no default account: the first manager is opened here and given a
one-time link to set up a passkey or a password.
"""

from __future__ import annotations

from collections.abc import Sequence

from panicbutton.clock import SystemClock
from server.db import make_engine, migrate, sessions
from server.errors import PeopleError
from server.people import directory
from server.people.auth import active_roles
from server.people.links import LINK_HOURS, can_sign_in, issue_link
from server.people.roles import rights_of
from server.people.signin import create_token
from server.people.tables import Person
from server.settings import Settings


def invite(
    settings: Settings,
    *,
    person_id: str,
    name: str,
    roles: Sequence[str],
    phone: str | None = None,
    language: str = "en",
    hours: int = LINK_HOURS,
) -> str:
    """Open the account if there is none (with ``roles``), then a one-time link: to
    enrol, or to recover for someone who already has a way to sign in. The link."""
    if not settings.public_base_url:
        raise PeopleError(
            "PANICBUTTON_PUBLIC_BASE_URL is not set: the link is made on it (the address "
            "people open the console at)"
        )
    wanted = [directory.role_of(r) for r in roles]
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        now = SystemClock().now()
        with sessions(engine).begin() as session:
            if session.get(Person, person_id) is None:
                if not wanted:
                    raise PeopleError("a new account needs at least one --role")
                directory.add_person(
                    session,
                    person_id=person_id,
                    name=name or person_id,
                    by=directory.SYSTEM,
                    now=now,
                    roles=wanted,
                    phone=phone,
                    language=language,
                )
            else:
                directory.find(session, person_id)
                held = active_roles(session, person_id, now)
                for role in wanted:
                    if role not in held:
                        directory.grant(
                            session, person_id=person_id, role=role, by=directory.SYSTEM, now=now
                        )
            token = issue_link(
                session,
                person_id=person_id,
                purpose="recover" if can_sign_in(session, person_id) else "enrol",
                by=directory.SYSTEM,
                now=now,
                hours=hours,
            )
    finally:
        engine.dispose()
    return f"{settings.public_base_url}/enrol/{token}"


def token(
    settings: Settings, *, person_id: str, scopes: Sequence[str], days: int, label: str
) -> str:
    """A personal API token for ``person_id`` with ``scopes`` (rights they hold)."""
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        now = SystemClock().now()
        with sessions(engine).begin() as session:
            directory.find(session, person_id)
            _, whole = create_token(
                session,
                person_id=person_id,
                rights=rights_of(active_roles(session, person_id, now)),
                scopes=scopes,
                days=days,
                label=label,
                now=now,
            )
    finally:
        engine.dispose()
    return whole
