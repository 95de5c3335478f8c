"""Signing in: enrolment and recovery links, passwords with TOTP, passkeys, throttling,
and personal API tokens.

Each method runs in its own transaction. A failed sign-in is counted per account
and per address (``sign_in_failures``) even though the attempt is refused; once
either count is over its limit within the window, attempts are refused with how
long to wait, before any password is checked. An unknown account and a wrong
password are refused alike and take as long (an argon2 check either way).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.db import changed
from server.errors import PeopleError
from server.log.append import audit
from server.people import passkeys, passwords
from server.people.auth import Principal, active_roles, end_sessions, sha256, start_session
from server.people.auth import new_token_secret as _new_token
from server.people.directory import find
from server.people.roles import Right
from server.people.tables import (
    ApiToken,
    EnrolmentLink,
    Passkey,
    Password,
    Person,
    SignInFailure,
)

PURPOSES = ("enrol", "recover")
#: How long a link works unless the manager says otherwise, and at most.
LINK_HOURS = 72
LONGEST_LINK_HOURS = 14 * 24


class WrongCredentialsError(PeopleError):
    """The id, password, code or passkey is wrong (which one is not said)."""


class ThrottledError(PeopleError):
    """Too many failed sign-ins; ``retry_after`` seconds until the next attempt counts."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LinkGoneError(PeopleError):
    """An enrolment or recovery link that has expired, was used, or is unknown."""


@dataclass(frozen=True, slots=True)
class Throttle:
    """How many failures are allowed per account and per address within ``window``."""

    per_account: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


def issue_link(
    session: Session,
    *,
    person_id: str,
    purpose: str,
    by: str,
    now: datetime,
    hours: int = LINK_HOURS,
) -> str:
    """A one-time link token for ``person_id`` (shown once; only its SHA-256 is kept)."""
    find(session, person_id)
    if purpose not in PURPOSES:
        raise PeopleError(f"a link is for one of {', '.join(PURPOSES)}, not {purpose!r}")
    if not 1 <= hours <= LONGEST_LINK_HOURS:
        raise PeopleError(f"a link lasts 1 to {LONGEST_LINK_HOURS} hours, not {hours}")
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
    audit(
        session,
        at=now,
        type="signin.link_issued",
        person=person_id,
        purpose=purpose,
        by=by,
        until=until,
    )
    return token


_GONE = (
    "this link has expired, was already used, or is not one of ours: ask a manager for a new one"
)


def open_link(session: Session, token: str, now: datetime) -> EnrolmentLink:
    """The unused, unexpired link ``token``; LinkGoneError otherwise."""
    link = session.get(EnrolmentLink, sha256(token)) if 0 < len(token) <= 100 else None
    if link is None or link.used_at is not None or link.expires_at <= now:
        raise LinkGoneError(_GONE)
    person = session.get(Person, link.person_id)
    if person is None or person.closed_at is not None:
        raise LinkGoneError(_GONE)
    return link


def use_link(session: Session, token: str, now: datetime) -> str:
    """Mark the link used (once, whichever server gets there first); a recovery link
    first ends all its owner's sessions. The person's id."""
    link = open_link(session, token, now)
    won = changed(
        session,
        update(EnrolmentLink)
        .where(EnrolmentLink.token_sha256 == link.token_sha256, EnrolmentLink.used_at.is_(None))
        .values(used_at=now),
    )
    if won != 1:
        raise LinkGoneError(_GONE)
    if link.purpose == "recover":
        count = end_sessions(session, person_id=link.person_id, now=now)
        audit(
            session,
            at=now,
            type="signin.sessions_ended",
            person=link.person_id,
            by=link.person_id,
            count=count,
        )
    return link.person_id


def set_password(
    session: Session,
    *,
    person_id: str,
    password: str,
    now: datetime,
    totp_secret: str = "",
    totp_code: str = "",
) -> None:
    """Set (or replace) a person's password; with a TOTP seed and a first code from it,
    turn TOTP on too. PeopleError says what is wrong."""
    hashed = passwords.hash_password(password)
    step = 0
    if totp_code.strip():
        totp_secret = passwords.check_totp_secret(totp_secret)
        found = passwords.totp_step(totp_secret, totp_code, now=now, after=0)
        if found is None:
            raise PeopleError(
                "the code does not match: check the time on your phone and enter the "
                "code your authenticator app shows now"
            )
        step = found
    row = session.get(Password, person_id)
    if row is None:
        row = Password(person_id=person_id, hash=hashed, changed_at=now, totp_last_step=0)
        session.add(row)
    row.hash, row.changed_at = hashed, now
    row.totp_secret = totp_secret if step else None
    row.totp_last_step = step
    audit(session, at=now, type="signin.method_added", person=person_id, method="password")
    if step:
        audit(session, at=now, type="signin.method_added", person=person_id, method="totp")


def _failures(session: Session, key: str, since: datetime) -> tuple[int, datetime | None]:
    count, first = session.execute(
        select(func.count(), func.min(SignInFailure.at)).where(
            SignInFailure.key == key, SignInFailure.at > since
        )
    ).one()
    return int(count), first


class SignIn:
    """Sign-in, enrolment and tokens, each call its own transaction."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        clock: Clock,
        rp: passkeys.RelyingParty,
        throttle: Throttle | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.rp = rp
        self._throttle = throttle or Throttle()

    # -- throttling ---------------------------------------------------------------

    def _check_throttle(
        self, session: Session, keys: Iterable[tuple[str, int]], now: datetime
    ) -> None:
        window = self._throttle.window
        session.execute(delete(SignInFailure).where(SignInFailure.at <= now - window))
        for key, limit in keys:
            count, first = _failures(session, key, now - window)
            if count >= limit and first is not None:
                wait = max(1, int((first + window - now).total_seconds()) + 1)
                what = "this account" if key.startswith("person:") else "your address"
                raise ThrottledError(
                    f"too many failed sign-ins for {what}: wait {wait // 60 + 1} minutes "
                    "and try again, or ask a manager for a recovery link",
                    retry_after=wait,
                )

    def _fail(self, keys: Iterable[str], now: datetime) -> None:
        with self._sessions.begin() as session:
            session.add_all(SignInFailure(key=key[:100], at=now) for key in keys)

    def _keys(self, person_id: str | None, address: str) -> list[tuple[str, int]]:
        keys = [(f"addr:{address}", self._throttle.per_address)]
        if person_id is not None:
            keys.insert(0, (f"person:{person_id}", self._throttle.per_account))
        return keys

    # -- links --------------------------------------------------------------------

    def link_person(self, token: str) -> tuple[str, str, str]:
        """(person id, display name, purpose) of a usable link; LinkGoneError otherwise."""
        with self._sessions.begin() as session:
            link = open_link(session, token, self._clock.now())
            person = find(session, link.person_id)
            return person.id, person.name, link.purpose

    def enrol_password(
        self, token: str, *, password: str, totp_secret: str, totp_code: str, agent: str
    ) -> str:
        """Set a password through a link (used up by it); the new session's cookie."""
        now = self._clock.now()
        with self._sessions.begin() as session:
            person_id = use_link(session, token, now)
            set_password(
                session,
                person_id=person_id,
                password=password,
                now=now,
                totp_secret=totp_secret,
                totp_code=totp_code,
            )
            method = "password+totp" if totp_code.strip() else "password"
            return start_session(session, person_id=person_id, agent=agent, method=method, now=now)

    def enrol_passkey_options(self, token: str) -> str:
        now = self._clock.now()
        with self._sessions.begin() as session:
            person = find(session, open_link(session, token, now).person_id)
            return passkeys.registration_options(
                session, self.rp, person_id=person.id, display=person.name, now=now
            )

    def enrol_passkey(
        self, token: str, *, credential: dict[str, Any], label: str, agent: str
    ) -> str:
        """Register a passkey through a link (used up by it); the new session's cookie."""
        now = self._clock.now()
        with self._sessions.begin() as session:
            challenge, owner = passkeys.take_challenge(session, credential, "register", now)
        with self._sessions.begin() as session:
            person_id = use_link(session, token, now)
            passkeys.register(
                session,
                self.rp,
                person_id=person_id,
                credential=credential,
                challenge=challenge,
                owner=owner,
                label=label,
                now=now,
            )
            audit(session, at=now, type="signin.method_added", person=person_id, method="passkey")
            return start_session(
                session, person_id=person_id, agent=agent, method="passkey", now=now
            )

    # -- one's own sign-in methods, while signed in ---------------------------------

    def passkey_options_for(self, person_id: str) -> str:
        """Options to register another passkey for a signed-in person."""
        now = self._clock.now()
        with self._sessions.begin() as session:
            person = find(session, person_id)
            return passkeys.registration_options(
                session, self.rp, person_id=person.id, display=person.name, now=now
            )

    def add_passkey(self, person_id: str, *, credential: dict[str, Any], label: str) -> Passkey:
        now = self._clock.now()
        with self._sessions.begin() as session:
            challenge, owner = passkeys.take_challenge(session, credential, "register", now)
        with self._sessions.begin() as session:
            passkey = passkeys.register(
                session,
                self.rp,
                person_id=person_id,
                credential=credential,
                challenge=challenge,
                owner=owner,
                label=label,
                now=now,
            )
            audit(session, at=now, type="signin.method_added", person=person_id, method="passkey")
            session.flush()
            session.expunge(passkey)
            return passkey

    def passkeys(self, person_id: str) -> list[Passkey]:
        with self._sessions.begin() as session:
            rows = list(
                session.scalars(
                    select(Passkey)
                    .where(Passkey.person_id == person_id)
                    .order_by(Passkey.created_at)
                )
            )
            session.expunge_all()
            return rows

    def remove_passkey(self, person_id: str, key_id: str) -> bool:
        """Remove one of a person's passkeys; False if they have no such passkey. The last
        way to sign in cannot be removed (a recovery link would be needed)."""
        now = self._clock.now()
        with self._sessions.begin() as session:
            row = session.get(Passkey, key_id)
            if row is None or row.person_id != person_id:
                return False
            others = session.scalar(
                select(func.count()).select_from(Passkey).where(Passkey.person_id == person_id)
            )
            if int(others or 0) <= 1 and session.get(Password, person_id) is None:
                raise PeopleError(
                    "this is your only way to sign in: add another passkey or a password first"
                )
            session.delete(row)
            audit(
                session,
                at=now,
                type="signin.method_removed",
                person=person_id,
                method="passkey",
                by=person_id,
            )
            return True

    def change_password(
        self, person_id: str, *, password: str, totp_secret: str = "", totp_code: str = ""
    ) -> None:
        """Set a signed-in person's password (TOTP on with a seed and its first code)."""
        with self._sessions.begin() as session:
            find(session, person_id)
            set_password(
                session,
                person_id=person_id,
                password=password,
                now=self._clock.now(),
                totp_secret=totp_secret,
                totp_code=totp_code,
            )

    # -- signing in ---------------------------------------------------------------

    def with_password(
        self, *, person_id: str, password: str, code: str, address: str, agent: str
    ) -> str:
        """Sign in with a password (and its TOTP code, if on); the session's cookie.
        ThrottledError or WrongCredentialsError otherwise."""
        now = self._clock.now()
        person_id = person_id.strip().lower()[:63]
        keys = self._keys(person_id, address)
        with self._sessions.begin() as session:
            self._check_throttle(session, keys, now)
            row = session.get(Password, person_id)
            ok = passwords.verify(row.hash if row else None, password)
            if ok and row is not None and row.totp_secret:
                step = passwords.totp_step(row.totp_secret, code, now=now, after=row.totp_last_step)
                ok = step is not None and (
                    changed(
                        session,
                        update(Password)
                        .where(
                            Password.person_id == person_id,
                            Password.totp_last_step == row.totp_last_step,
                        )
                        .values(totp_last_step=step),
                    )
                    == 1
                )
            if ok and not active_roles(session, person_id, now):
                ok = False
            if ok and row is not None:
                if passwords.needs_rehash(row.hash):
                    row.hash = passwords.HASHER.hash(password)
                method = "password+totp" if row.totp_secret else "password"
                return start_session(
                    session, person_id=person_id, agent=agent, method=method, now=now
                )
        self._fail((k for k, _ in keys), now)
        raise WrongCredentialsError(
            "wrong id, password or code: check them and try again (after a few failures "
            "sign-in pauses for a while)"
        )

    def passkey_options(self) -> str:
        with self._sessions.begin() as session:
            return passkeys.authentication_options(session, self.rp, now=self._clock.now())

    def with_passkey(self, *, credential: dict[str, Any], address: str, agent: str) -> str:
        """Sign in with a passkey's answer; the session's cookie."""
        now = self._clock.now()
        keys = self._keys(None, address)
        try:
            with self._sessions.begin() as session:
                self._check_throttle(session, keys, now)
                challenge, _ = passkeys.take_challenge(session, credential, "authenticate", now)
            with self._sessions.begin() as session:
                passkey = passkeys.authenticate(
                    session, self.rp, credential=credential, challenge=challenge, now=now
                )
                if not active_roles(session, passkey.person_id, now):
                    raise WrongCredentialsError("this account is closed or holds no role")
                return start_session(
                    session, person_id=passkey.person_id, agent=agent, method="passkey", now=now
                )
        except ThrottledError:
            raise
        except PeopleError as exc:
            self._fail((k for k, _ in keys), now)
            raise WrongCredentialsError(str(exc)) from None

    def sign_out(self, *, person_id: str, handle: str) -> None:
        with self._sessions.begin() as session:
            end_sessions(session, person_id=person_id, now=self._clock.now(), only=handle)

    def sign_out_everywhere(self, principal: Principal) -> int:
        now = self._clock.now()
        with self._sessions.begin() as session:
            count = end_sessions(session, person_id=principal.person_id, now=now)
            audit(
                session,
                at=now,
                type="signin.sessions_ended",
                person=principal.person_id,
                by=principal.person_id,
                count=count,
            )
            return count

    # -- personal API tokens -----------------------------------------------------

    def create_token(
        self, principal: Principal, *, scopes: Iterable[str], days: int, label: str
    ) -> tuple[ApiToken, str]:
        """A new token carrying ``scopes`` (a subset of the caller's rights); the row and
        the whole token, which is never shown again."""
        with self._sessions.begin() as session:
            row, token = create_token(
                session,
                person_id=principal.person_id,
                rights=principal.rights,
                scopes=scopes,
                days=days,
                label=label,
                now=self._clock.now(),
            )
            session.flush()
            session.expunge(row)
            return row, token

    def tokens(self, person_id: str) -> list[ApiToken]:
        with self._sessions.begin() as session:
            rows = list(
                session.scalars(
                    select(ApiToken)
                    .where(ApiToken.person_id == person_id)
                    .order_by(ApiToken.created_at, ApiToken.id)
                )
            )
            session.expunge_all()
            return rows

    def revoke_token(self, principal: Principal, token_id: str) -> bool:
        """Revoke one of the caller's own tokens; False if they have no such token."""
        now = self._clock.now()
        with self._sessions.begin() as session:
            done = changed(
                session,
                update(ApiToken)
                .where(
                    ApiToken.id == token_id,
                    ApiToken.person_id == principal.person_id,
                    ApiToken.revoked_at.is_(None),
                )
                .values(revoked_at=now),
            )
            if done:
                audit(
                    session,
                    at=now,
                    type="token.revoked",
                    person=principal.person_id,
                    token=token_id,
                    by=principal.person_id,
                )
            return done == 1


def create_token(
    session: Session,
    *,
    person_id: str,
    rights: frozenset[Right],
    scopes: Iterable[str],
    days: int,
    label: str,
    now: datetime,
) -> tuple[ApiToken, str]:
    """A personal API token for ``person_id`` (``rights``: what they may hand on)."""
    wanted = sorted(set(scopes))
    if not wanted:
        raise PeopleError("give at least one scope (a right the token carries), like 'records'")
    unknown = [s for s in wanted if s not in {r.value for r in Right}]
    if unknown:
        raise PeopleError(
            f"unknown scope(s) {', '.join(unknown)}: scopes are rights, one of "
            f"{', '.join(r.value for r in Right)}"
        )
    beyond = [s for s in wanted if Right(s) not in rights]
    if beyond:
        raise PeopleError(
            f"a token cannot carry more than you may do: you do not hold {', '.join(beyond)}"
        )
    if not 1 <= days <= 365:
        raise PeopleError(f"a token lasts 1 to 365 days, not {days}")
    if len(label) > 60:
        raise PeopleError("a token's label is at most 60 characters")
    token_id, token, secret_sha256 = _new_token()
    until = now + timedelta(days=days)
    row = ApiToken(
        id=token_id,
        person_id=person_id,
        secret_sha256=secret_sha256,
        label=label.strip(),
        scopes=wanted,
        created_at=now,
        expires_at=until,
        revoked_at=None,
        last_used_at=None,
    )
    session.add(row)
    audit(
        session,
        at=now,
        type="token.created",
        person=person_id,
        token=token_id,
        scopes=wanted,
        until=until,
    )
    return row, token
