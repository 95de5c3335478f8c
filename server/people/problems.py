"""What is wrong with a person's phone, as the provider said it: the permanent errors
that mean pages do not reach them (an invalid or landline number, opted out of SMS,
unreachable). Recorded on the person (``phone_problem``) and logged once per change.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.orm import Session

from server.log.append import audit
from server.people.tables import Person

#: Twilio error codes that will not go away by trying again, in words for managers.
PERMANENT: dict[int, str] = {
    21211: "not a valid phone number",
    21214: "the number cannot be reached",
    21610: "opted out of SMS (sent STOP); only calls reach it",
    21612: "Twilio cannot route to this number",
    21614: "not a mobile number: it cannot take SMS",
    30003: "unreachable: phone off or out of coverage for too long",
    30004: "the number blocks our messages",
    30005: "unknown number: it no longer exists at the operator",
    30006: "a landline, or an operator that cannot take SMS",
}

_CODE = re.compile(r"(?<!\d)(\d{5})(?!\d)")


def code_in(text: str) -> int | None:
    """The first permanent error code named in ``text`` (a page's error, a status
    callback's ``failed 30003``), or None."""
    for found in _CODE.findall(text):
        if int(found) in PERMANENT:
            return int(found)
    return None


def words(code: int) -> str:
    """What a manager reads about the phone (no number in it)."""
    return f"{PERMANENT[code]} (Twilio error {code})"


def record_problem(session: Session, *, person_id: str, code: int | None, now: datetime) -> bool:
    """Note a permanent error ``code`` against the person's phone; True when that is
    news (a ``phone.problem`` log entry is written then, and only then). A code that
    is not permanent, or someone without an account, changes nothing."""
    if code is None or code not in PERMANENT:
        return False
    person = session.get(Person, person_id)
    if person is None or person.closed_at is not None or person.phone is None:
        return False
    said = words(code)
    if person.phone_problem == said:
        return False
    person.phone_problem = said
    audit(session, at=now, type="phone.problem", staff=person_id, code=code)
    return True


def pageable(person: Person) -> bool:
    """Whether pages may go to the person's phone: confirmed by its owner, open account.
    (A phone with a problem is still tried: it may reach them by call.)"""
    return (
        person.phone is not None
        and person.phone_confirmed_at is not None
        and (person.closed_at is None)
    )
