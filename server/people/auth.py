"""Who is calling: a person's API token or web session, resolved to a :class:`Principal`.

An API token is ``pbt_<id>_<secret>``: the id finds the row, the secret's SHA-256
is compared in constant time, and its rights are its scopes cut down to what
its owner's roles carry *now* (a manager demoted loses them from every token).
A web session is a random cookie value whose SHA-256 is the row's key; it ends
after ``idle`` without use or ``absolute`` after sign-in, at sign-out (here or
everywhere), and when used from another browser than the one that signed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db import changed
from server.people.roles import Right, Role, rights_of
from server.people.tables import ApiToken, Person, RoleGrant, WebSession

TOKEN_RE = re.compile(r"^pbt_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
#: The session cookie. ``__Host-`` (Secure, path /, no domain) wherever cookies are
#: Secure; the demo on loopback uses the plain name over HTTP.
SESSION_COOKIE = "__Host-pb_session"
DEMO_SESSION_COOKIE = "pb_session"


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated person and what they may do on this request."""

    person_id: str
    roles: frozenset[Role]
    rights: frozenset[Right]
    via: Literal["token", "session"]
    #: The session's CSRF token (``via == "session"``), or None.
    csrf: str | None = None
    #: The session row's key, or the token's id.
    handle: str = ""

    def can(self, right: Right) -> bool:
        return right in self.rights


def active_roles(session: Session, person_id: str, now: datetime) -> frozenset[Role]:
    """The roles a person holds at ``now``: granted, not revoked, not expired, account open."""
    person = session.get(Person, person_id)
    if person is None or person.closed_at is not None:
        return frozenset()
    grants = session.scalars(
        select(RoleGrant.role).where(
            RoleGrant.person_id == person_id,
            RoleGrant.revoked_at.is_(None),
            (RoleGrant.expires_at.is_(None)) | (RoleGrant.expires_at > now),
        )
    ).all()
    return frozenset(Role(g) for g in grants if g in _ROLES)


def new_token_secret() -> tuple[str, str, str]:
    """A fresh API token: (id, the whole token to show once, SHA-256 of its secret)."""
    token_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return token_id, f"pbt_{token_id}_{secret}", sha256(secret)


def by_token(session: Session, token: str, now: datetime) -> Principal | None:
    """The principal of a personal API token, or None (unknown, wrong, revoked, expired)."""
    match = TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    token_id, secret = match.groups()
    row = session.get(ApiToken, token_id)
    if row is None or not hmac.compare_digest(row.secret_sha256, sha256(secret)):
        return None
    if row.revoked_at is not None or row.expires_at <= now:
        return None
    roles = active_roles(session, row.person_id, now)
    rights = rights_of(roles) & frozenset(Right(s) for s in row.scopes if s in _RIGHTS)
    if not roles:
        return None
    # Last use to the minute: enough to show which tokens are idle, and no write per call.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
    return Principal(
        person_id=row.person_id, roles=roles, rights=rights, via="token", handle=token_id
    )


_RIGHTS = {r.value for r in Right}
_ROLES = {r.value for r in Role}


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle: timedelta
    absolute: timedelta
    #: How long a reception screen's session (role ``kiosk`` alone) may stay unused; it
    #: has no other limit (a manager ends it by closing the screen's account).
    kiosk: timedelta = timedelta(days=30)


def by_session(
    session: Session, cookie: str, *, agent: str, now: datetime, limits: SessionLimits
) -> Principal | None:
    """The principal of a web session cookie, or None. Touches ``last_seen_at``; a
    session used from another browser (User-Agent) is ended on the spot."""
    if not cookie or len(cookie) > 100:
        return None
    row = session.get(WebSession, sha256(cookie))
    if row is None or row.ended_at is not None:
        return None
    if not hmac.compare_digest(row.agent_sha256, sha256(agent)):
        row.ended_at = now  # a stolen cookie: end it for its owner too
        row.justification = None
        return None
    roles = active_roles(session, row.person_id, now)
    if roles == {Role.KIOSK}:
        expired = now - row.last_seen_at > limits.kiosk
    else:
        expired = now - row.last_seen_at > limits.idle or now - row.created_at > limits.absolute
    if expired:
        row.ended_at = now
        row.justification = None
        return None
    if not roles:
        return None
    if now - row.last_seen_at > timedelta(seconds=30):
        row.last_seen_at = now
    return Principal(
        person_id=row.person_id,
        roles=roles,
        rights=rights_of(roles),
        via="session",
        csrf=row.csrf,
        handle=row.id_sha256,
    )


def start_session(
    session: Session, *, person_id: str, agent: str, method: str, now: datetime
) -> str:
    """Open a web session for ``person_id``; returns the cookie value (shown once)."""
    cookie = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id_sha256=sha256(cookie),
            person_id=person_id,
            csrf=secrets.token_urlsafe(32),
            agent_sha256=sha256(agent),
            method=method,
            created_at=now,
            last_seen_at=now,
            ended_at=None,
        )
    )
    return cookie


def end_sessions(
    session: Session,
    *,
    person_id: str,
    now: datetime,
    only: str | None = None,
    but: str | None = None,
) -> int:
    """End one session (``only``, a row key), every session of a person, or every one
    but ``but`` (the one making the request); how many."""
    stmt = update(WebSession).where(
        WebSession.person_id == person_id, WebSession.ended_at.is_(None)
    )
    if only is not None:
        stmt = stmt.where(WebSession.id_sha256 == only)
    if but is not None:
        stmt = stmt.where(WebSession.id_sha256 != but)
    return changed(session, stmt.values(ended_at=now, justification=None))
