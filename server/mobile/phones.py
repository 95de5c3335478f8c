"""Enrolling a worker's phone as their mobile button, checking its signed requests,
and revoking it.

A manager issues a one-time link (``EnrolmentLink`` with purpose ``phone``) for a
worker; the worker opens it on their phone (``/phone/enrol#<token>``: the token is
in the fragment, so it never reaches a server log or a Referer). The page then
sends its public key, the check-out PIN and the duress PIN the worker chooses,
and the phone's own number (the only number fallback SMS and calls are accepted
from). The server answers with the fallback code, which the page keeps to fill in
the SMS and the call. The link works once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db import changed
from server.errors import PeopleError
from server.log.append import audit
from server.mobile import signing
from server.mobile.tables import MobilePhone
from server.people import passwords
from server.people.auth import active_roles
from server.people.directory import check_phone, find
from server.people.kiosk import check_pin
from server.people.links import issue_link
from server.people.roles import Role
from server.people.signin import use_link

#: How long a phone's enrolment link stays good, hours.
LINK_HOURS = 72
#: Digits of the fallback code (in the SMS body and typed in the call).
CODE_DIGITS = 6


class PhoneRefusedError(PeopleError):
    """A request from a phone that is unknown, revoked, or not signed by its key: the
    message says which, and what to do (never whose phone it is)."""


@dataclass(frozen=True, slots=True)
class Enrolled:
    """What the page keeps after enrolling: its id, whose it is, the fallback code."""

    phone_id: str
    person_id: str
    name: str
    fallback_code: str


def link_url(public_base_url: str, token: str) -> str:
    """The address a worker opens on their phone (the token stays in the fragment)."""
    return f"{public_base_url.rstrip('/')}/phone/enrol#{token}"


def issue(session: Session, *, person_id: str, by: str, now: datetime) -> str:
    """A one-time enrolment link token for ``person_id``'s phone; PeopleError if they
    hold no worker role (only workers carry a mobile button)."""
    find(session, person_id)
    if Role.WORKER not in active_roles(session, person_id, now):
        raise PeopleError(
            f"{person_id!r} does not hold the worker role: a mobile button is a worker's "
            "(a manager grants the role first)"
        )
    return issue_link(
        session, person_id=person_id, purpose="phone", by=by, now=now, hours=LINK_HOURS
    )


def code_sha256(phone_id: str, code: str) -> str:
    return hashlib.sha256(f"{phone_id}:{code}".encode()).hexdigest()


def enrol(
    session: Session,
    *,
    token: str,
    public_key: str,
    pin: str,
    duress_pin: str,
    number: str,
    label: str,
    now: datetime,
) -> Enrolled:
    """Enrol a phone through its link (used up by it). PeopleError saying what is wrong
    with the key, the PINs or the number (the link stays good then); LinkGoneError if
    the link is used, expired or unknown."""
    der = signing.load_key(public_key)
    check_pin(pin)
    check_pin(duress_pin)
    if pin == duress_pin:
        raise PeopleError(
            "the duress PIN must differ from the check-out PIN: it is the one that "
            "silently raises an alarm"
        )
    check_phone(number)
    person_id = use_link(session, token, now, purposes=("phone",))
    person = find(session, person_id)
    phone_id = secrets.token_hex(8)
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    session.add(
        MobilePhone(
            id=phone_id,
            person_id=person_id,
            public_key=der,
            number=number,
            fallback_sha256=code_sha256(phone_id, code),
            pin_hash=passwords.HASHER.hash(pin),
            duress_hash=passwords.HASHER.hash(duress_pin),
            label=label.strip()[:60],
            created_by=person_id,
            created_at=now,
            last_seen_at=now,
            pin_failures=0,
        )
    )
    session.flush()
    # The log names the phone only: its row says whose it is, and goes at retention.
    audit(session, at=now, type="phone.enrolled", phone=phone_id)
    return Enrolled(phone_id=phone_id, person_id=person_id, name=person.name, fallback_code=code)


def authenticate(
    session: Session,
    *,
    phone_id: str,
    millis: str,
    signature: str,
    method: str,
    path: str,
    body: bytes,
    now: datetime,
    alarm: bool = False,
) -> MobilePhone:
    """The phone that signed this request; PhoneRefusedError if none did. ``alarm``: an
    alarm is never refused for the phone's clock (see :mod:`server.mobile.signing`)."""
    phone = session.get(MobilePhone, phone_id) if 0 < len(phone_id) <= 24 else None
    if phone is None or not signing.verify(
        phone.public_key, signing.message(method, path, millis, body), signature
    ):
        raise PhoneRefusedError(
            "this phone is not enrolled here, or its request is not signed by its key: "
            "ask a manager for a new enrolment link"
        )
    if phone.revoked_at is not None:
        raise PhoneRefusedError(
            "this phone was removed by a manager and can no longer raise alarms here: "
            "ask a manager for a new enrolment link"
        )
    try:
        find(session, phone.person_id)
    except PeopleError:
        raise PhoneRefusedError("the account of this phone is closed: ask a manager") from None
    taken = signing.phone_time(millis)
    if not alarm and (taken is None or abs(taken - now) > signing.SKEW):
        raise PhoneRefusedError(
            "this phone's clock is more than 15 minutes from the server's: set the phone's "
            "date and time to automatic, then try again"
        )
    phone.last_seen_at = now
    return phone


def check_pins(session: Session, phone: MobilePhone, pin: str) -> str:
    """Which PIN ``pin`` is: ``pin``, ``duress`` or ``wrong``. Both hashes are always
    checked, so the answer takes as long whichever it is."""
    found = "wrong"
    for kind, stored in (("pin", phone.pin_hash), ("duress", phone.duress_hash)):
        try:
            if passwords.HASHER.verify(stored, pin) and found == "wrong":
                found = kind
        except (VerificationError, InvalidHashError):
            pass
    return found


def revoke(session: Session, *, phone_id: str, person_id: str, by: str, now: datetime) -> bool:
    """Revoke ``person_id``'s phone ``phone_id``; False if it was revoked already.
    PeopleError if that person has no such phone."""
    phone = session.get(MobilePhone, phone_id)
    if phone is None or phone.person_id != person_id:
        raise PeopleError(f"{person_id!r} has no phone {phone_id!r}")
    won = changed(
        session,
        update(MobilePhone)
        .where(MobilePhone.id == phone_id, MobilePhone.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by=by),
    )
    if won:
        audit(session, at=now, type="phone.revoked", phone=phone_id, by=by)
    return bool(won)


def revoke_all(session: Session, *, person_id: str, by: str, now: datetime) -> list[str]:
    """Revoke every phone of ``person_id`` not revoked yet, each logged as a manager's
    revocation is (their account was closed, or their worker role taken back: a mobile
    button is a worker's); the ids revoked."""
    ids = session.scalars(
        select(MobilePhone.id)
        .where(MobilePhone.person_id == person_id, MobilePhone.revoked_at.is_(None))
        .order_by(MobilePhone.id)
    ).all()
    return [p for p in ids if revoke(session, phone_id=p, person_id=person_id, by=by, now=now)]


def phones_of(session: Session, person_id: str) -> list[MobilePhone]:
    """``person_id``'s enrolled phones, newest first, revoked ones too."""
    return list(
        session.scalars(
            select(MobilePhone)
            .where(MobilePhone.person_id == person_id)
            .order_by(MobilePhone.created_at.desc(), MobilePhone.id)
        )
    )


def by_number(session: Session, number: str) -> list[MobilePhone]:
    """The phones not revoked enrolled with this number (fallback SMS and calls)."""
    return list(
        session.scalars(
            select(MobilePhone).where(
                MobilePhone.number == number, MobilePhone.revoked_at.is_(None)
            )
        )
    )
