"""Reception screens (role ``kiosk``): a person's kiosk PIN, and proving at a screen
that one is the person chosen there.

A reception screen is signed in with an account of its own that holds the role
``kiosk`` alone. Whoever answers an alarm at the screen chooses their name and
types their PIN: the acknowledgement is theirs, recorded as coming from that
screen. A PIN (4 to 8 digits) is much weaker than a password, so it opens
nothing but this, only at a signed-in screen, and wrong PINs are counted like
failed sign-ins (``sign_in_failures``): per person from every screen, and per
screen. It is stored as argon2id, like a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.errors import PeopleError
from server.log.append import audit
from server.people import passwords
from server.people.auth import active_roles
from server.people.roles import Right, rights_of
from server.people.signin import WrongCredentialsError, count_attempt, forget_attempt
from server.people.tables import KioskPin, Person

SHORTEST = 4
LONGEST = 8
#: Wrong PINs allowed within :data:`WINDOW`: for one person from every screen (10^4
#: PINs of 4 digits: a guesser needs years), and at one screen (someone trying names).
PER_PERSON = 5
PER_SCREEN = 20
WINDOW = timedelta(minutes=15)


def check_pin(pin: str) -> str:
    """``pin`` if it may be used; PeopleError saying why not."""
    if not pin.isascii() or not pin.isdigit() or not SHORTEST <= len(pin) <= LONGEST:
        raise PeopleError(f"a kiosk PIN is {SHORTEST} to {LONGEST} digits (0-9), nothing else")
    steps = {int(b) - int(a) for a, b in pairwise(pin)}
    if len(steps) == 1 and steps <= {-1, 0, 1}:
        raise PeopleError(
            f"{pin} is the first PIN a guesser tries (one digit repeated, or counting up "
            "or down): choose another"
        )
    return pin


@dataclass(frozen=True, slots=True)
class Responder:
    """Someone who may answer at a reception screen: holds ``respond`` and has a PIN."""

    person_id: str
    name: str


class Pins:
    """Kiosk PINs: set, remove, list who has one, check one; each call its own
    transaction."""

    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def set(self, person_id: str, pin: str) -> None:
        """Set (or replace) ``person_id``'s PIN; PeopleError if it is too weak."""
        hashed = passwords.HASHER.hash(check_pin(pin))
        now = self._clock.now()
        with self._sessions.begin() as session:
            row = session.get(KioskPin, person_id)
            if row is None:
                session.add(KioskPin(person_id=person_id, hash=hashed, changed_at=now))
            else:
                row.hash, row.changed_at = hashed, now
            audit(session, at=now, type="signin.method_added", person=person_id, method="kiosk-pin")

    def remove(self, person_id: str) -> bool:
        """Remove ``person_id``'s PIN; False if they had none."""
        now = self._clock.now()
        with self._sessions.begin() as session:
            row = session.get(KioskPin, person_id)
            if row is None:
                return False
            session.delete(row)
            audit(
                session,
                at=now,
                type="signin.method_removed",
                person=person_id,
                method="kiosk-pin",
                by=person_id,
            )
            return True

    def has(self, person_id: str) -> bool:
        with self._sessions() as session:
            return session.get(KioskPin, person_id) is not None

    def responders(self) -> list[Responder]:
        """Everyone who may answer at a screen now, by name."""
        now = self._clock.now()
        with self._sessions() as session:
            people = session.execute(
                select(Person.id, Person.name)
                .join(KioskPin, KioskPin.person_id == Person.id)
                .where(Person.closed_at.is_(None))
                .order_by(Person.name, Person.id)
            ).all()
            return [
                Responder(person_id, name)
                for person_id, name in people
                if _may_respond(session, person_id, now)
            ]

    def prove(self, *, screen_id: str, person_id: str, pin: str) -> None:
        """Check that ``pin`` is ``person_id``'s and that they may respond now, at the
        screen signed in as ``screen_id``. ThrottledError when too many PINs were wrong
        (nothing checked), WrongCredentialsError when this one is."""
        now = self._clock.now()
        person_id = person_id[:63]
        keys = [(f"pin:{person_id}", PER_PERSON), (f"screen:{screen_id}"[:100], PER_SCREEN)]
        attempt = count_attempt(
            self._sessions,
            keys,
            window=WINDOW,
            now=now,
            failed="PINs",
            then="answer from your phone (the text you were sent)",
        )
        with self._sessions.begin() as session:
            row = session.get(KioskPin, person_id)
            right = passwords.verify(row.hash if row else None, pin[:LONGEST])
            if right and _may_respond(session, person_id, now):
                forget_attempt(session, attempt)
                return
        raise WrongCredentialsError(
            "wrong PIN for this name: nothing was acknowledged. Check the name and try "
            "again (after a few wrong PINs the screen pauses for a while)"
        )


def _may_respond(session: Session, person_id: str, now: datetime) -> bool:
    return Right.RESPOND in rights_of(active_roles(session, person_id, now))
