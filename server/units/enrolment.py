"""One-time enrolment codes: how a fresh SD card becomes a unit with no keyboard.

A manager adds a unit on the console and gets a code (``ABCD-EFGH-JKLM-NPQR``, 80
random bits). The unit's first-boot script (``firmware_config/firstboot.sh``) sends the
code to ``POST /api/v1/enrol`` and gets its bundle (config and secrets, as
:func:`server.units.provision.bundle_files` makes them), then fetches the wheelhouse
with its new token, installs, checks, and reports (:func:`record_install`).

The bundle is sealed (AES-256-GCM) with a key derived from the code (HKDF-SHA256), and
the server keeps only the code's SHA-256 beside the sealed bytes: neither a copy of the
database nor a look at the server's disk gives a unit's secrets. A code works within
:data:`LIFETIME`, for one unit: once used, it gives the same bundle again for
:data:`GRACE` only (a unit whose answer was lost on the way retries with the code on
its card), then never. An unknown, used and expired code get the same answer.

The route is anonymous, so a code that cannot match writes nothing: a malformed code
is refused before the database, and an unknown one only reads, but for counting the
failure against the caller's address; after :data:`PER_ADDRESS` failures within
:data:`WINDOW` the address is refused (the sign-in throttle, reading only) until the
window passes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import ColumnElement, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from server.models import UTCDateTime
from server.people.signin import address_key, check_throttle, count_attempt
from server.units.tables import UnitEnrolment, UnitInstall

#: How long a code works.
LIFETIME: Final = timedelta(days=7)
#: How long a used code still gives its bundle to a unit that lost the first answer.
GRACE: Final = timedelta(minutes=15)
#: Failed codes allowed from one address (an IPv6 address as its /64) within WINDOW.
PER_ADDRESS: Final = 10
#: The sign-in throttle's window (count_attempt drops every older failure).
WINDOW: Final = timedelta(minutes=15)
#: Install reports kept per unit (the page shows the newest).
KEPT_REPORTS: Final = 20
#: What a refused address is told: "too many failed {_FAILED} ...: wait ..., or {_THEN}".
_FAILED: Final = "enrolment codes"
_THEN: Final = "check the code in enrol.txt against the one the console's Units page gave"
#: Crockford's base 32 without I, L, O, U: a code read aloud or typed is not misread.
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: 16 characters of 32: 80 bits.
LENGTH: Final = 16
#: What a unit may say of its install (the report's ``lines``).
MAX_LINES: Final = 40
MAX_LINE: Final = 300
ACTIONS: Final = ("install", "upgrade", "rollback")


def new_code() -> str:
    """A fresh code, grouped by four for reading: ``ABCD-EFGH-JKLM-NPQR``."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, LENGTH, 4))


def normal(code: str) -> str | None:
    """The code as stored: upper case, dashes and spaces dropped, O read as 0 and I/L as
    1; None if it cannot be one."""
    text = code.upper().replace("-", "").replace(" ", "")
    text = text.translate(str.maketrans("OIL", "011"))
    if len(text) != LENGTH or any(c not in ALPHABET for c in text):
        return None
    return text


def _key(code: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"panicbutton enrolment"
    ).derive(code.encode())


def _sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def create(s: Session, *, device_id: str, files: dict[str, str], by: str, now: datetime) -> str:
    """Seal ``files`` for ``device_id`` under a new code; return the code (shown once).
    A unit has one code at a time: an earlier one for the same unit stops working."""
    code = new_code()
    plain = normal(code) or ""
    nonce = secrets.token_bytes(12)
    body = json.dumps({"device_id": device_id, "files": files}).encode()
    sealed = nonce + AESGCM(_key(plain)).encrypt(nonce, body, device_id.encode())
    _forget_spent(s, now)
    s.execute(delete(UnitEnrolment).where(UnitEnrolment.device_id == device_id))
    s.add(
        UnitEnrolment(
            code_sha256=_sha(plain),
            device_id=device_id,
            sealed=sealed,
            created_by=by,
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    return code


def cancel(s: Session, device_id: str) -> None:
    """Forget ``device_id``'s waiting code, if any: a retired unit's code must not give
    out its secrets."""
    s.execute(delete(UnitEnrolment).where(UnitEnrolment.device_id == device_id))


@dataclass(frozen=True, slots=True)
class Enrolled:
    device_id: str
    files: dict[str, str]


def _usable(now: datetime) -> ColumnElement[bool]:
    """A code that still gives its bundle: unexpired, and unused or used within GRACE."""
    return (UnitEnrolment.expires_at > now) & or_(
        UnitEnrolment.redeemed_at.is_(None), UnitEnrolment.redeemed_at > now - GRACE
    )


def _forget_spent(s: Session, now: datetime) -> None:
    """Drop the codes that will never work again: expired, or used longer than GRACE ago."""
    s.execute(
        delete(UnitEnrolment).where(
            (UnitEnrolment.expires_at <= now) | (UnitEnrolment.redeemed_at <= now - GRACE)
        )
    )


def redeem(
    sessions: sessionmaker[Session], code: str, *, address: str, now: datetime
) -> Enrolled | None:
    """The bundle ``code`` gives; None for a code that is malformed, unknown, used more
    than GRACE ago or expired (which of them is not said). ThrottledError, before the
    code is looked at, once ``address`` has had PER_ADDRESS failures within WINDOW.

    The first use marks the code used; the same code gives the same bundle again within
    GRACE of that, then never."""
    plain = normal(code)
    if plain is None:
        return None  # it cannot match: not worth a query, nor a failure counted
    keys = [(f"enrol:{address_key(address)}"[:100], PER_ADDRESS)]
    # Reads first: a refused address and a code that matches nothing take no writer lock
    # (on SQLite one writer at a time serves every alert) but to count the failure, at
    # most PER_ADDRESS times per address and WINDOW.
    with sessions() as s:
        check_throttle(s, keys, window=WINDOW, now=now, failed=_FAILED, then=_THEN)
        known = s.scalar(
            select(UnitEnrolment.code_sha256).where(
                UnitEnrolment.code_sha256 == _sha(plain), _usable(now)
            )
        )
    if known is not None and (got := _use(sessions, plain, now)) is not None:
        return got
    count_attempt(sessions, keys, window=WINDOW, now=now, failed=_FAILED, then=_THEN)
    return None


def _use(sessions: sessionmaker[Session], plain: str, now: datetime) -> Enrolled | None:
    """Mark the code ``plain`` used (its first use is kept) and open its bundle; None if
    it stopped working meanwhile."""
    with sessions.begin() as s:
        # NOTE: this conditional UPDATE alone decides, on SQLite (one writer at a time)
        # and PostgreSQL (a racing server's UPDATE re-checks the WHERE on the row this one
        # changed) alike. coalesce keeps the first use, so retries do not stretch GRACE.
        first_use = func.coalesce(UnitEnrolment.redeemed_at, literal(now, UTCDateTime()))
        row = s.execute(
            update(UnitEnrolment)
            .where(UnitEnrolment.code_sha256 == _sha(plain), _usable(now))
            .values(redeemed_at=first_use)
            .returning(UnitEnrolment.device_id, UnitEnrolment.sealed)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if row is None:
            return None
        _forget_spent(s, now)
    device_id, sealed = row
    try:
        body = AESGCM(_key(plain)).decrypt(sealed[:12], sealed[12:], device_id.encode())
    except InvalidTag:
        return None  # not what was sealed: answered as an unknown code
    data = json.loads(body)
    return Enrolled(device_id=str(data["device_id"]), files=dict(data["files"]))


def pending(s: Session, *, now: datetime) -> dict[str, datetime]:
    """Units with a code still waiting to be used: device id -> when it expires."""
    return {
        row.device_id: row.expires_at
        for row in s.scalars(
            select(UnitEnrolment).where(
                UnitEnrolment.expires_at > now, UnitEnrolment.redeemed_at.is_(None)
            )
        )
    }


def record_install(
    s: Session,
    *,
    device_id: str,
    action: str,
    version: str,
    passed: bool,
    lines: list[str],
    now: datetime,
) -> None:
    """Keep what a unit reported of an install, an upgrade or a rollback, with its
    KEPT_REPORTS - 1 reports before (a unit may report as often as it likes)."""
    s.add(
        UnitInstall(
            device_id=device_id,
            at=now,
            action=action,
            version=version,
            result="passed" if passed else "failed",
            lines=[line[:MAX_LINE] for line in lines[:MAX_LINES]],
        )
    )
    s.flush()
    oldest_kept = (
        select(UnitInstall.id)
        .where(UnitInstall.device_id == device_id)
        .order_by(UnitInstall.id.desc())
        .limit(1)
        .offset(KEPT_REPORTS - 1)
    )
    if (cut := s.scalar(oldest_kept)) is not None:
        s.execute(
            delete(UnitInstall).where(UnitInstall.device_id == device_id, UnitInstall.id < cut)
        )


def last_installs(s: Session, device_ids: set[str]) -> dict[str, UnitInstall]:
    """The newest install report of each of ``device_ids`` that has one."""
    newest = (
        select(func.max(UnitInstall.id))
        .where(UnitInstall.device_id.in_(device_ids))
        .group_by(UnitInstall.device_id)
    )
    return {
        row.device_id: row
        for row in s.scalars(select(UnitInstall).where(UnitInstall.id.in_(newest)))
    }
