"""Signing in: enrolment and recovery links, passwords with TOTP, passkeys, throttling,
and personal API tokens.

Each method runs in its own transaction. A failed sign-in is counted per account
and per address (``sign_in_failures``) even though the attempt is refused; once
either count is over its limit within the window, attempts are refused with how
long to wait, before any password is checked. An unknown account and a wrong
password are refused alike and take as long (an argon2 check either way).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import ip_address, ip_network
from typing import Any

from sqlalchemy import delete, func, select, text, update
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
    KioskPin,
    Passkey,
    Password,
    Person,
    SignInFailure,
)


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
    """How many failed sign-ins are allowed within ``window``: for one account from one
    address, for one account from everywhere (much higher, so that nobody can lock
    someone else out from afar), and from one address (an IPv6 address counts as its
    /64)."""

    per_account_address: int = 5
    per_account: int = 50
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


def address_key(address: str) -> str:
    """The address failures are counted under: an IPv6 address as its /64 network."""
    try:
        ip = ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ip_network(f"{ip}/64", strict=False))
    return str(ip)


_GONE = (
    "this link has expired, was already used, or is not one of ours: ask a manager for a new one"
)


def open_link(
    session: Session,
    token: str,
    now: datetime,
    purposes: tuple[str, ...] = ("enrol", "recover"),
) -> EnrolmentLink:
    """The unused, unexpired link ``token`` for one of ``purposes``; LinkGoneError
    otherwise (a phone's link opens no sign-in, and a sign-in link enrols no phone)."""
    link = session.get(EnrolmentLink, sha256(token)) if 0 < len(token) <= 100 else None
    if link is None or link.used_at is not None or link.expires_at <= now:
        raise LinkGoneError(_GONE)
    if link.purpose not in purposes:
        raise LinkGoneError(_GONE)
    person = session.get(Person, link.person_id)
    if person is None or person.closed_at is not None:
        raise LinkGoneError(_GONE)
    return link


def use_link(
    session: Session,
    token: str,
    now: datetime,
    purposes: tuple[str, ...] = ("enrol", "recover"),
) -> str:
    """Mark the link used (once, whichever server gets there first). A recovery link
    first takes away everything that let anyone in as its owner: every API token is
    revoked, every passkey and the password (with TOTP) removed, every session ended,
    so that whoever held them keeps nothing once the owner recovers. The person's id."""
    link = open_link(session, token, now, purposes)
    won = changed(
        session,
        update(EnrolmentLink)
        .where(EnrolmentLink.token_sha256 == link.token_sha256, EnrolmentLink.used_at.is_(None))
        .values(used_at=now),
    )
    if won != 1:
        raise LinkGoneError(_GONE)
    if link.purpose == "recover":
        wipe_access(session, link.person_id, now)
    return link.person_id


def wipe_access(session: Session, person_id: str, now: datetime) -> None:
    """Revoke all of ``person_id``'s API tokens, remove their passkeys, password (and
    TOTP) and kiosk PIN, end their sessions; each logged, by the person (a recovery)."""
    tokens = session.scalars(
        select(ApiToken.id).where(ApiToken.person_id == person_id, ApiToken.revoked_at.is_(None))
    ).all()
    session.execute(
        update(ApiToken)
        .where(ApiToken.id.in_(tokens), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    for token_id in tokens:
        audit(session, at=now, type="token.revoked", person=person_id, token=token_id, by=person_id)
    removed = len(session.scalars(select(Passkey.id).where(Passkey.person_id == person_id)).all())
    session.execute(delete(Passkey).where(Passkey.person_id == person_id))
    methods = ["passkey"] * removed
    row = session.get(Password, person_id)
    if row is not None:
        methods += ["password", "totp"] if row.totp_secret else ["password"]
        session.delete(row)
        session.flush()
    pin = session.get(KioskPin, person_id)
    if pin is not None:
        methods.append("kiosk-pin")
        session.delete(pin)
        session.flush()
    for method in methods:
        audit(
            session,
            at=now,
            type="signin.method_removed",
            person=person_id,
            method=method,
            by=person_id,
        )
    _sessions_ended(session, person_id, now)


def set_password(
    session: Session,
    *,
    person_id: str,
    password: str,
    now: datetime,
    totp_secret: str = "",
    totp_code: str = "",
    keep_totp: bool = False,
) -> None:
    """Set (or replace) a person's password. With a TOTP seed and a first code from it,
    TOTP is turned on (with the new seed); else, with ``keep_totp``, TOTP stays as it
    was; else it is off. PeopleError says what is wrong."""
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
    had_totp = row is not None and bool(row.totp_secret)
    if row is None:
        row = Password(person_id=person_id, hash=hashed, changed_at=now, totp_last_step=0)
        session.add(row)
    row.hash, row.changed_at = hashed, now
    if step:
        row.totp_secret, row.totp_last_step = totp_secret, step
    elif not (keep_totp and had_totp):
        row.totp_secret, row.totp_last_step = None, 0
    audit(session, at=now, type="signin.method_added", person=person_id, method="password")
    if step:
        audit(session, at=now, type="signin.method_added", person=person_id, method="totp")
    elif had_totp and not row.totp_secret:
        audit(
            session,
            at=now,
            type="signin.method_removed",
            person=person_id,
            method="totp",
            by=person_id,
        )


_WHAT = {
    "from": "this account from your address",
    "person": "this account",
    "addr": "your address",
    "pin": "this person's kiosk PIN",
    "screen": "this reception screen",
    "enrol": "your address",
}


def _failures(session: Session, key: str, since: datetime) -> tuple[int, datetime | None]:
    count, first = session.execute(
        select(func.count(), func.min(SignInFailure.at)).where(
            SignInFailure.key == key, SignInFailure.at > since
        )
    ).one()
    return int(count), first


def check_throttle(
    session: Session,
    keys: list[tuple[str, int]],
    *,
    window: timedelta,
    now: datetime,
    failed: str = "sign-ins",
    then: str = "ask a manager for a recovery link",
) -> None:
    """ThrottledError when the failures under a key (``prefix:...``, with its limit)
    within ``window`` are at its limit, naming what ``failed`` and saying to wait or
    ``then``. It only reads: a caller refused here writes nothing."""
    for key, limit in keys:
        count, first = _failures(session, key, now - window)
        if count >= limit and first is not None:
            wait = max(1, int((first + window - now).total_seconds()) + 1)
            raise ThrottledError(
                f"too many failed {failed} for {_WHAT[key.split(':', 1)[0]]}: wait "
                f"{wait // 60 + 1} minutes and try again, or {then}",
                retry_after=wait,
            )


def count_attempt(
    sessions: sessionmaker[Session],
    keys: list[tuple[str, int]],
    *,
    window: timedelta,
    now: datetime,
    failed: str = "sign-ins",
    then: str = "ask a manager for a recovery link",
) -> list[int]:
    """Count this attempt as a failure under each key (``prefix:...``, with its limit),
    and check the counts, in one transaction committed before any password, code or PIN
    is checked: concurrent guesses each see the others. ThrottledError (nothing counted)
    when a count is at its limit (:func:`check_throttle`); else the ids of the rows, for
    :func:`forget_attempt` if the attempt succeeds.

    NOTE: failures older than ``window`` are dropped under every key, so every caller
    (sign-in, kiosk PINs, enrolment codes) uses the same window: 15 minutes."""
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            # One attempt at a time per key (SQLite writers are serialised anyway).
            for key, _ in sorted(keys):
                session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
        session.execute(delete(SignInFailure).where(SignInFailure.at <= now - window))
        check_throttle(session, keys, window=window, now=now, failed=failed, then=then)
        rows = [SignInFailure(key=key, at=now) for key, _ in keys]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def forget_attempt(session: Session, attempt: list[int]) -> None:
    """An attempt went through: it is not a failure after all."""
    session.execute(delete(SignInFailure).where(SignInFailure.id.in_(attempt)))


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

    def _attempt(self, keys: list[tuple[str, int]], now: datetime) -> list[int]:
        return count_attempt(self._sessions, keys, window=self._throttle.window, now=now)

    @staticmethod
    def _succeeded(session: Session, attempt: list[int]) -> None:
        forget_attempt(session, attempt)

    def _keys(self, person_id: str | None, address: str) -> list[tuple[str, int]]:
        where = address_key(address)
        keys = [(f"addr:{where}"[:100], self._throttle.per_address)]
        if person_id is not None:
            keys = [
                (f"from:{person_id}@{where}"[:100], self._throttle.per_account_address),
                (f"person:{person_id}"[:100], self._throttle.per_account),
                *keys,
            ]
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
        self,
        principal: Principal,
        *,
        current_password: str,
        current_code: str,
        password: str,
        address: str,
        totp_secret: str = "",
        totp_code: str = "",
        totp_off: bool = False,
    ) -> int:
        """Set a signed-in person's password. If they have one, ``current_password`` (and
        ``current_code`` while TOTP is on) must be right: a wrong one is a failed sign-in
        (throttled alike). TOTP is turned on with a seed and its first code, off only with
        ``totp_off``, and otherwise stays as it was. Their other sessions end; how many."""
        now = self._clock.now()
        person_id = principal.person_id
        if totp_off and (totp_secret.strip() or totp_code.strip()):
            raise PeopleError("either turn TOTP off or give a new seed and code, not both")
        attempt = self._attempt(self._keys(person_id, address), now)
        with self._sessions.begin() as session:
            find(session, person_id)
            if session.get(Password, person_id) is not None and not self._check_password(
                session, person_id, current_password, current_code, now
            ):
                raise WrongCredentialsError(
                    "your current password or code is wrong: nothing was changed (after a "
                    "few failures this pauses for a while)"
                )
            self._succeeded(session, attempt)
        with self._sessions.begin() as session:
            set_password(
                session,
                person_id=person_id,
                password=password,
                now=now,
                totp_secret=totp_secret,
                totp_code=totp_code,
                keep_totp=not totp_off,
            )
            return _end_others(session, principal, now)

    # -- signing in ---------------------------------------------------------------

    def with_password(
        self, *, person_id: str, password: str, code: str, address: str, agent: str
    ) -> str:
        """Sign in with a password (and its TOTP code, if on); the session's cookie.
        ThrottledError or WrongCredentialsError otherwise."""
        now = self._clock.now()
        person_id = person_id.strip().lower()[:63]
        attempt = self._attempt(self._keys(person_id, address), now)
        with self._sessions.begin() as session:
            method = self._check_password(session, person_id, password, code, now)
            if method and active_roles(session, person_id, now):
                self._succeeded(session, attempt)
                return start_session(
                    session, person_id=person_id, agent=agent, method=method, now=now
                )
        raise WrongCredentialsError(
            "wrong id, password or code: check them and try again (after a few failures "
            "sign-in pauses for a while)"
        )

    @staticmethod
    def _check_password(
        session: Session, person_id: str, password: str, code: str, now: datetime
    ) -> str:
        """``password`` or ``password+totp`` when the password (and the TOTP code, taken
        once) is right; "" otherwise (an argon2 check either way)."""
        row = session.get(Password, person_id)
        ok = passwords.verify(row.hash if row else None, password)
        if not ok or row is None:
            return ""
        if row.totp_secret:
            step = passwords.totp_step(row.totp_secret, code, now=now, after=row.totp_last_step)
            taken = step is not None and changed(
                session,
                update(Password)
                .where(
                    Password.person_id == person_id,
                    Password.totp_last_step == row.totp_last_step,
                )
                .values(totp_last_step=step),
            )
            if not taken:
                return ""
            session.refresh(row)
        if passwords.needs_rehash(row.hash):
            row.hash = passwords.HASHER.hash(password)
        return "password+totp" if row.totp_secret else "password"

    def passkey_options(self) -> str:
        with self._sessions.begin() as session:
            return passkeys.authentication_options(session, self.rp, now=self._clock.now())

    def with_passkey(self, *, credential: dict[str, Any], address: str, agent: str) -> str:
        """Sign in with a passkey's answer; the session's cookie."""
        now = self._clock.now()
        attempt = self._attempt(self._keys(None, address), now)
        try:
            with self._sessions.begin() as session:
                challenge, _ = passkeys.take_challenge(session, credential, "authenticate", now)
            with self._sessions.begin() as session:
                passkey = passkeys.authenticate(
                    session, self.rp, credential=credential, challenge=challenge, now=now
                )
                if not active_roles(session, passkey.person_id, now):
                    raise WrongCredentialsError("this account is closed or holds no role")
                self._succeeded(session, attempt)
                return start_session(
                    session, person_id=passkey.person_id, agent=agent, method="passkey", now=now
                )
        except PeopleError as exc:
            raise WrongCredentialsError(str(exc)) from None

    def sign_out(self, *, person_id: str, handle: str) -> None:
        with self._sessions.begin() as session:
            end_sessions(session, person_id=person_id, now=self._clock.now(), only=handle)

    def sign_out_everywhere(self, principal: Principal) -> int:
        now = self._clock.now()
        with self._sessions.begin() as session:
            return _sessions_ended(session, principal.person_id, now)

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


def _end_others(session: Session, principal: Principal, now: datetime) -> int:
    """End the person's sessions but the one making this request (logged); how many."""
    return _sessions_ended(session, principal.person_id, now, but=principal.handle)


def _sessions_ended(
    session: Session, person_id: str, now: datetime, *, but: str | None = None
) -> int:
    """End a person's sessions (all, or all but ``but``) at their own request, and log
    ``signin.sessions_ended``; how many."""
    count = end_sessions(session, person_id=person_id, now=now, but=but)
    audit(
        session, at=now, type="signin.sessions_ended", person=person_id, by=person_id, count=count
    )
    return count


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
