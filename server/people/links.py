"""One-time links a manager sends so a person can set up sign-in (``enrol``) or get it
back (``recover``).

The link holds a random token; only its SHA-256 is stored (:class:`EnrolmentLink`).
The page that takes the link (``/enrol/{token}``) marks it used.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.errors import PeopleError
from server.log.append import audit
from server.people.auth import sha256
from server.people.directory import find
from server.people.tables import EnrolmentLink, Passkey, Password

#: What a link is for: setting up sign-in, getting it back, or enrolling a worker's
#: phone as their mobile button (:mod:`server.mobile.phones`).
PURPOSES = ("enrol", "recover", "phone")
#: How long a link stays good, in hours, unless the caller says otherwise.
LINK_HOURS = 72


class CanSignInError(PeopleError):
    """An enrolment link for someone who can sign in already (a recovery link is the
    one to send: it takes away what they had)."""


def can_sign_in(session: Session, person_id: str) -> bool:
    """Whether ``person_id`` has a passkey or a password."""
    has_key = session.scalar(select(Passkey.id).where(Passkey.person_id == person_id).limit(1))
    return has_key is not None or session.get(Password, person_id) is not None


def issue_link(
    session: Session,
    *,
    person_id: str,
    purpose: str,
    by: str,
    now: datetime,
    hours: int = LINK_HOURS,
) -> str:
    """Make a one-time link token for ``person_id`` (good for ``hours`` hours) and log
    ``signin.link_issued``; return the token, to be shown once in
    ``{PANICBUTTON_PUBLIC_BASE_URL}/enrol/{token}``. Earlier unused links of the same
    person and purpose stop working: only the newest one sent counts. PeopleError if
    there is no such open account; CanSignInError for an ``enrol`` link to someone who
    can sign in already."""
    find(session, person_id)
    if purpose not in PURPOSES:
        raise PeopleError(f"a link is for one of {', '.join(PURPOSES)}, got {purpose!r}")
    if not 1 <= hours <= 24 * 14:
        raise PeopleError("a link must stay good for 1 hour to 14 days")
    if purpose == "enrol" and can_sign_in(session, person_id):
        raise CanSignInError("they can sign in already: send a recovery link")
    session.execute(
        update(EnrolmentLink)
        .where(
            EnrolmentLink.person_id == person_id,
            EnrolmentLink.purpose == purpose,
            EnrolmentLink.used_at.is_(None),
            EnrolmentLink.expires_at > now,
        )
        .values(expires_at=now)
    )
    token = secrets.token_urlsafe(32)
    until = now + timedelta(hours=hours)
    session.add(
        EnrolmentLink(
            token_sha256=sha256(token),
            person_id=person_id,
            purpose=purpose,
            created_by=by,
            created_at=now,
            expires_at=until,
            used_at=None,
        )
    )
    # NOTE: a phone's link is logged without the person: followed by ``phone.enrolled``,
    # it would tie the phone's id, and so every alarm of that phone, to the worker in
    # the log for good. The link's row (personal data) keeps whose it was.
    whose: dict[str, Any] = {} if purpose == "phone" else {"person": person_id}
    audit(
        session,
        at=now,
        type="signin.link_issued",
        purpose=purpose,
        by=by,
        until=until,
        **whose,
    )
    return token


def link_url(public_base_url: str, token: str) -> str:
    """The address a person opens: ``{PANICBUTTON_PUBLIC_BASE_URL}/enrol/{token}``."""
    return f"{public_base_url.rstrip('/')}/enrol/{token}"
