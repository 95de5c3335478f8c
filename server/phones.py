"""Confirmed phones: a number is paged only after its owner entered a code sent to it
(as on-call tools do); a test page so a person knows pages reach them; and a number
the provider reports as unreachable or opted out is marked and the managers are told.

Every text goes through the pager (:meth:`server.paging.pager.Pager.send_text`), so it
is sent and logged (``message.sent``) like every other text. The code itself is kept
only as a SHA-256 bound to the person and the number.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.errors import PeopleError
from server.log.append import audit
from server.paging import messages
from server.paging.pager import Pager
from server.people import problems
from server.people.auth import sha256
from server.people.directory import find
from server.people.roles import Role
from server.people.tables import Person, PhoneCheck, RoleGrant
from server.site import Language, LiveSite, SiteSource, Staff

log = logging.getLogger(__name__)

#: How long a code is good for, how many wrong tries it takes, and how often one is sent.
CODE_LIFE = timedelta(minutes=10)
MAX_ATTEMPTS = 5
RESEND_AFTER = timedelta(minutes=1)
#: How often a person may send themselves a test page.
TEST_PAGE_EVERY = timedelta(minutes=1)
SENDS_PER_DAY = 5
DAY = timedelta(days=1)

_CODE_TEXT = {
    "fr": "Votre code panicbutton : {code}. Il confirme ce téléphone pour les alertes. "
    "Valable 10 minutes. Ne le communiquez à personne.",
    "nl": "Uw panicbutton-code: {code}. Hiermee bevestigt u deze telefoon voor alarmen. "
    "10 minuten geldig. Geef hem aan niemand.",
    "en": "Your panicbutton code: {code}. It confirms this phone for alarm pages. "
    "Valid 10 minutes. Do not share it.",
}
_TEST_TEXT = {
    "fr": "TEST à {time} : ce téléphone reçoit les alertes. Pas une vraie alerte. "
    "Aucune réponse nécessaire.",
    "nl": "TEST om {time}: deze telefoon krijgt de alarmen. Geen echt alarm. Geen antwoord nodig.",
    "en": "TEST at {time}: this phone gets alarm pages. Not a real alarm. No reply needed.",
}
_TEST_SPOKEN = {
    "fr": "Ceci est un test de panicbutton. Les alertes atteignent ce téléphone. "
    "Pas une vraie alerte. Au revoir.",
    "nl": "Dit is een test van panicbutton. Alarmen bereiken deze telefoon. "
    "Geen echt alarm. Tot ziens.",
    "en": "This is a panicbutton test. Alarm pages reach this phone. Not a real alarm. Goodbye.",
}
_PROBLEM_TEXT = {
    "fr": "PROBLÈME DE TÉLÉPHONE : les alertes vers {name} échouent (erreur Twilio {code}). "
    "Vérifiez son numéro dans la liste des personnes.",
    "nl": "TELEFOONPROBLEEM: alarmen naar {name} mislukken (Twilio-fout {code}). "
    "Controleer het nummer in de personenlijst.",
    "en": "PHONE PROBLEM: pages to {name} fail (Twilio error {code}). "
    "Check their number in the people list.",
}


class NoPhoneError(PeopleError):
    """The person has no number to check, or it is not confirmed yet (409)."""


class NoCodeError(PeopleError):
    """No code is waiting: none sent, expired, or locked after wrong tries (409)."""


class WrongCodeError(PeopleError):
    """The code entered is not the one sent (422)."""


class TooManyError(PeopleError):
    """A code was sent too recently, or too many today (429)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        #: Seconds until a code can be sent again.
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Sent:
    """A code on its way: when it stops being good."""

    expires_at: datetime


def _digest(person_id: str, phone: str, code: str) -> str:
    # Bound to the person and the number: a code sent to an old number proves nothing.
    return sha256(f"{person_id}:{phone}:{code}")


def as_staff(person: Person, role: Role = Role.STAFF) -> Staff:
    """A person as the pager knows people (it pages :class:`Staff`)."""
    assert person.phone is not None
    return Staff(
        id=person.id,
        name=person.name,
        phone=person.phone,
        language=cast(Language, person.language),
        role="manager" if role is Role.MANAGER else "staff",
    )


class Phones(LiveSite):
    """Codes to confirm a phone, test pages, and the provider's word on a bad number."""

    def __init__(
        self, *, sessions: sessionmaker[Session], site: SiteSource, pager: Pager, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._pager = pager
        self._clock = clock
        #: When each person last sent themselves a test page (this process).
        self._tested: dict[str, datetime] = {}
        self._tested_lock = threading.Lock()

    def send_code(self, person_id: str) -> Sent:
        """Text a fresh 6-digit code to the person's own number. NoPhoneError if there is
        none (or it is confirmed already); TooManyError if one went less than a minute ago
        or five went in the last day."""
        now = self._clock.now()
        code = f"{secrets.randbelow(1_000_000):06d}"
        with self._sessions.begin() as s:
            person = find(s, person_id)
            if person.phone is None:
                raise NoPhoneError(
                    "your account has no phone number: ask a manager to add it, then ask for a code"
                )
            if person.phone_confirmed_at is not None:
                raise NoPhoneError("your phone number is confirmed already: nothing to do")
            check = s.get(PhoneCheck, person_id)
            if check is None:
                check = PhoneCheck(person_id=person_id, sends=0, sends_since=None)
                s.add(check)
            else:
                _throttle(check, now)
            if check.sends_since is None or now - check.sends_since >= DAY:
                check.sends_since, check.sends = now, 0
            check.phone, check.code_sha256 = person.phone, _digest(person_id, person.phone, code)
            check.sent_at, check.attempts, check.sends = now, 0, check.sends + 1
            member = as_staff(person)
        text = _CODE_TEXT[member.language].format(code=code)
        self._pager.send_text(member, text, incident_id=None, purpose="phone_code")
        return Sent(expires_at=now + CODE_LIFE)

    def confirm(self, person_id: str, code: str) -> None:
        """Check ``code`` against the one sent; on a match the phone is confirmed
        (``phone.confirmed``) and any earlier problem with it forgotten. WrongCodeError says
        how many tries are left; after five, NoCodeError until a new code is sent."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            person = find(s, person_id)
            check = s.get(PhoneCheck, person_id)
            if check is None or not check.code_sha256 or check.phone != person.phone:
                raise NoCodeError("no code is waiting for this phone: ask for one first")
            if now - check.sent_at > CODE_LIFE:
                raise NoCodeError(
                    "the code has expired (codes are good for 10 minutes): ask for a new one"
                )
            if check.attempts >= MAX_ATTEMPTS:
                raise NoCodeError(
                    "too many wrong codes: this one no longer works; ask for a new one"
                )
            right = hmac.compare_digest(check.code_sha256, _digest(person_id, check.phone, code))
            if right:
                check.code_sha256 = ""
                person.phone_confirmed_at, person.phone_problem = now, ""
                audit(s, at=now, type="phone.confirmed", staff=person_id)
            else:
                check.attempts += 1
                left = MAX_ATTEMPTS - check.attempts
        # Outside the transaction: the wrong try must be counted (committed) before refusing.
        if not right:
            if left == 0:
                raise NoCodeError("wrong code, and that was the last try: ask for a new code")
            raise WrongCodeError(f"wrong code: {left} {'try' if left == 1 else 'tries'} left")

    def test_page(self, person_id: str, *, call: bool = False) -> None:
        """Send the person a test text through the pager, as a page would go (and a
        test call too, with ``call``)."""
        now = self._clock.now()
        with self._sessions() as s:
            person = find(s, person_id)
            if person.phone is None:
                raise NoPhoneError("your account has no phone number: ask a manager to add it")
            if person.phone_confirmed_at is None:
                raise NoPhoneError(
                    "your phone number is not confirmed yet, so it is not paged: ask for a "
                    "code (POST /api/v1/me/phone/code) and enter it first"
                )
            member = as_staff(person)
        self._may_test(person_id, now)
        text = _TEST_TEXT[member.language].format(
            time=messages.local_time(now, self._site.timezone)
        )
        self._pager.send_text(member, text, incident_id=None, purpose="test_page")
        if call:
            twiml = messages.call_answer(member.language, _TEST_SPOKEN[member.language])
            self._pager.send_text(member, twiml, incident_id=None, purpose="test_call", call=True)

    def _may_test(self, person_id: str, now: datetime) -> None:
        """TooManyError if ``person_id`` sent a test page less than a minute ago; else
        note this one (a test page costs a text and perhaps a call)."""
        with self._tested_lock:
            last = self._tested.get(person_id)
            if last is not None and now - last < TEST_PAGE_EVERY:
                wait = TEST_PAGE_EVERY - (now - last)
                raise TooManyError(
                    "you sent a test page less than a minute ago: wait for it to arrive, "
                    "or try again in a minute",
                    retry_after=max(1, math.ceil(wait.total_seconds())),
                )
            self._tested = {p: t for p, t in self._tested.items() if now - t < TEST_PAGE_EVERY}
            self._tested[person_id] = now

    def failed(self, s: Session, person_id: str, why: str, now: datetime) -> None:
        """A page to ``person_id`` failed (``why``: the error or status callback, with
        the provider's code). A permanent error marks the phone and, the first time,
        tells the managers (inside the caller's transaction; the texts go after)."""
        code = problems.code_in(why)
        if not problems.record_problem(s, person_id=person_id, code=code, now=now):
            return
        person = s.get_one(Person, person_id)
        log.warning("staff %s: phone problem, Twilio error %s", person_id, code)
        for manager in self._managers(s, now, but=person_id):
            text = _PROBLEM_TEXT[manager.language].format(
                name=messages.name_label(person.name), code=code
            )
            self._pager.send_text(manager, text, incident_id=None, purpose="phone_problem")

    def _managers(self, s: Session, now: datetime, *, but: str) -> list[Staff]:
        """Managers with a confirmed phone and no problem with it; else the site file's."""
        rows = s.scalars(
            select(Person)
            .join(RoleGrant, RoleGrant.person_id == Person.id)
            .where(
                RoleGrant.role == Role.MANAGER.value,
                RoleGrant.revoked_at.is_(None),
                (RoleGrant.expires_at.is_(None)) | (RoleGrant.expires_at > now),
                Person.closed_at.is_(None),
                Person.phone_confirmed_at.is_not(None),
                Person.phone_problem == "",
                Person.id != but,
            )
            .distinct()
            .order_by(Person.id)
        ).all()
        found = [as_staff(p, Role.MANAGER) for p in rows if p.phone is not None]
        return found or [m for m in self._site.managers() if m.id != but]


def _throttle(check: PhoneCheck, now: datetime) -> None:
    """Refuse a send too soon after the last one, or past the day's allowance."""
    if now - check.sent_at < RESEND_AFTER:
        wait = RESEND_AFTER - (now - check.sent_at)
        raise TooManyError(
            "a code was sent less than a minute ago: wait for it, or ask again in a minute",
            retry_after=max(1, int(wait.total_seconds()) + 1),
        )
    if (
        check.sends_since is not None
        and now - check.sends_since < DAY
        and check.sends >= SENDS_PER_DAY
    ):
        wait = DAY - (now - check.sends_since)
        raise TooManyError(
            f"{SENDS_PER_DAY} codes were sent in the last day: try again in "
            f"{int(wait.total_seconds()) // 3600 + 1} hours, or ask a manager to check the number",
            retry_after=int(wait.total_seconds()) + 1,
        )


def masked(phone: str | None) -> str | None:
    """A number as colleagues may see it: ``+32470123456`` -> ``+32 4** ** ** 56`` (the
    country code, the first digit and the last two)."""
    if phone is None:
        return None
    digits = phone.lstrip("+")
    cc = 3 if any(digits.startswith(p) for p in _CC3) else (1 if digits[0] in "17" else 2)
    country, national = digits[:cc], digits[cc:]
    first = len(national) % 2 or 2
    if first == 1 and len(national) > 3:
        first = 3
    groups = [national[:first]] + [national[i : i + 2] for i in range(first, len(national), 2)]
    shown, seen = [], 0
    for group in groups:
        out = ""
        for char in group:
            out += char if seen == 0 or seen >= len(national) - 2 else "*"
            seen += 1
        shown.append(out)
    return f"+{country} {' '.join(shown)}"


#: Country calling codes of three digits start so (the others have one or two digits).
_CC3 = (
    "21",
    "22",
    "23",
    "24",
    "25",
    "26",
    "29",
    "35",
    "37",
    "38",
    "42",
    "50",
    "59",
    "67",
    "68",
    "69",
    "80",
    "85",
    "87",
    "88",
    "96",
    "97",
    "99",
)
