"""Passwords (argon2id) and their optional second factor (TOTP codes).

A password is the fallback to a passkey: 12 to 128 characters, no composition
rules (NIST SP 800-63B), but what a guesser tries first is refused with the
reason (:func:`server.strength.weakness`). It is stored as argon2id with OWASP's
parameters (19 MiB, 2 passes, 1 lane), and rehashed at sign-in when those change.

A TOTP seed is turned on by confirming a first code; a code is accepted once
(the last accepted time step is kept), within one 30-second step either side.
"""

from __future__ import annotations

from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server.errors import PeopleError
from server.strength import weakness

SHORTEST = 12
LONGEST = 128
#: OWASP's argon2id floor: 19 MiB of memory, 2 iterations, 1 lane.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
#: Hashed once: an unknown account costs a check against it, as long as a known one.
_DUMMY = HASHER.hash("no account has this password: it only takes the time")


def check_password(password: str) -> str:
    """``password`` if it may be used; PeopleError saying why not."""
    if len(password) < SHORTEST:
        raise PeopleError(
            f"the password is too short: at least {SHORTEST} characters (a few words "
            f"make a good one), it has {len(password)}"
        )
    if len(password) > LONGEST:
        raise PeopleError(f"the password is too long: at most {LONGEST} characters")
    # The floor strength.py holds generated secrets to, at the password's own length:
    # only the checks that say something about a chosen phrase (not its entropy).
    why = weakness(password, SHORTEST)
    if why is not None and "few different characters" not in why:
        raise PeopleError(f"the password is {why}; choose a phrase of a few unrelated words")
    return password


def hash_password(password: str) -> str:
    return HASHER.hash(check_password(password))


def verify(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash; with no hash, takes as long
    and says no."""
    try:
        return HASHER.verify(stored or _DUMMY, password[:LONGEST]) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return HASHER.check_needs_rehash(stored)


STEP = 30


def new_totp_secret() -> str:
    """A fresh base32 TOTP seed (160 bits)."""
    return pyotp.random_base32()


def totp_uri(secret: str, *, person_id: str, issuer: str) -> str:
    """The ``otpauth://`` address an authenticator app reads (as a QR code or pasted)."""
    return pyotp.TOTP(secret).provisioning_uri(name=person_id, issuer_name=issuer)


def check_totp_secret(secret: str) -> str:
    secret = secret.strip().upper()
    if len(secret) != 32 or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in secret):
        raise PeopleError("the TOTP seed must be the 32 base32 characters this page gave")
    return secret


def totp_step(secret: str, code: str, *, now: datetime, after: int) -> int | None:
    """The time step ``code`` belongs to (within one step of ``now``), if it is later
    than ``after`` (the last step accepted); else None."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    here = int(now.timestamp()) // STEP
    for step in (here - 1, here, here + 1):
        if step > after and totp.verify(code, for_time=step * STEP, valid_window=0):
            return step
    return None
