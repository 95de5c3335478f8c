"""The fallbacks of a worker's phone whose data connection failed: an SMS to the
site's number, or a call to it, from the number enrolled with the phone and
carrying the phone's fallback code, raises the phone's alarm (via ``sms`` or
``call``) through :class:`server.mobile.alarms.PhoneAlarms`.

Which alarm: an SMS may name one (the page writes ``SOS <code> <alert id>``: the
same incident as the HTTPS alarm the page could not confirm); else the phone's
open alarm (not resolved, not duress) counts a new press; else a new alarm, its
id made from the message's or call's provider id (a replayed webhook is caught by
the receipts before it gets here).

Only an enrolled number (of a phone not revoked, its account open) is heard;
another number gets nothing (an SMS is ignored, a call rejected). A code that is
not the phone's is answered plainly and counted: after :data:`MAX_WRONG_CODES`
within :data:`GUESS_WINDOW` from one number, its wrong codes are no longer answered
until the window passes (the same limits as staff's reply codes, kept apart). The
right code is always acted on, locked or not: wrong codes sent by someone who spoofs
the worker's number must never silence the worker.
STOP, START and the like keep their meaning at the carrier: never a code.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.mobile.alarms import (
    NotThisPhonesError,
    PhoneAlarms,
    PhoneView,
    TooManyAlarmsError,
    derived_alert_id,
)
from server.mobile.alarms import device_of as phone_device
from server.mobile.news import WorkerNews, WorkerPhone
from server.mobile.phones import CODE_DIGITS, by_number, code_sha256
from server.mobile.tables import MobilePhone
from server.models import Incident, IncidentKind, State
from server.paging import worker
from server.paging.notifier import mask
from server.people.tables import Person
from server.replies.codes import GUESS_WINDOW, MAX_WRONG_CODES, ReplyLimits
from server.replies.words import Kind, parse

log = logging.getLogger(__name__)

#: Letters and digits of a body: the code is its first run of digits, an alert id a
#: run of 32 hex digits.
_WORD = re.compile(r"[0-9A-Za-z]+")
_ALERT_ID = re.compile(r"[0-9a-f]{32}")
#: Digits of a number read as a code (longer runs count as a wrong code, unread).
_CODE_MAX = 12


def read(body: str) -> tuple[str | None, str | None]:
    """(code, alert id) in a fallback SMS body, each None when absent. Only the first
    run of digits is a code: a body listing many codes tries one."""
    words = _WORD.findall(body)
    alert_id = next((w.lower() for w in words if _ALERT_ID.fullmatch(w.lower())), None)
    code = next((w for w in words if w.isdigit() and w.lower() != alert_id), None)
    return code, alert_id


class Fallback:
    """Acts on fallback SMS and calls from workers' phones; answers go out through
    :class:`server.news.WorkerNews` (SMS) or as TwiML (calls).

    ``callback_url(path)`` gives the public URL Twilio calls back on (None without one).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        clock: Clock,
        alarms: PhoneAlarms,
        news: WorkerNews,
        callback_url: Callable[[str], str | None],
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._alarms = alarms
        self._news = news
        self._callback_url = callback_url
        # NOTE: kept apart from staff's: a worker's wrong codes never pause staff's codes.
        self._limits = ReplyLimits()

    # -- SMS -------------------------------------------------------------------------
    def holds_code(self, *, number: str, body: str) -> bool:
        """Whether ``body`` from ``number`` carries the fallback code of a phone enrolled
        with that number (a staff member who is also a worker, on one number)."""
        code, _ = read(body)
        return code is not None and _match(self._enrolled(number), code) is not None

    def sms(self, *, number: str, body: str, sid: str) -> None:
        """An SMS from a number that is no staff member's (or whose body holds the code
        of a phone enrolled with it)."""
        phones = self._enrolled(number)
        if not phones:
            log.warning("SMS from unknown number %s ignored", mask(number))
            return
        if parse(body).kind in (Kind.OPT_OUT, Kind.OPT_IN):
            # The carrier acts on these words (and answers them): never a code.
            log.info("a worker's phone %s sent an opt-out word", mask(number))
            return
        now = self._clock.now()
        code, alert_id = read(body)
        phone = _match(phones, code)
        if phone is None:
            # NOTE: a lock stops only the answers to wrong codes. The right code is always
            # acted on, locked or not: a spoofed caller id sending wrong codes must never
            # silence the real worker (a lucky guess raises a false alarm: the safe side).
            if self._locked(number, now):
                return
            if code is None:  # no code at all: not a guess, but answered a few times only
                if self._limits.not_understood(number):
                    self._news.tell(
                        phones[0],
                        worker.wrong_code(phones[0].language),
                        incident_id=None,
                        purpose="fallback_refused",
                    )
                return
            if self._wrong_code(number, now):
                text = worker.wrong_code(phones[0].language)
                self._news.tell(phones[0], text, incident_id=None, purpose="fallback_refused")
            return
        self._limits.understood(number)
        view = self._raise(phone, alert_id=alert_id, via="sms", provider_id=sid)
        going = _going(view)
        text = (
            worker.going(phone.language, name=going) if going else worker.received(phone.language)
        )
        self._news.tell(
            phone,
            text,
            incident_id=view.incident if view else None,
            purpose="fallback_going" if going else "fallback_received",
        )

    # -- calls -----------------------------------------------------------------------
    def call(self, *, number: str) -> str:
        """A call to the site's number: TwiML asking an enrolled number for its code, or
        rejecting any other (or one locked out for wrong codes)."""
        phones = self._enrolled(number)
        if not phones:
            log.warning("call from unknown number %s rejected", mask(number))
            return worker.reject()
        # A number locked for wrong codes is still asked: the right code always counts.
        return worker.ask_code(phones[0].language, action=self._action(1), digits=CODE_DIGITS)

    def call_code(self, *, number: str, digits: str, call_sid: str, attempt: int) -> str:
        """The keys typed in that call: the right code raises the alarm; a wrong one is
        asked once more (``attempt`` 1), then the call hangs up."""
        phones = self._enrolled(number)
        now = self._clock.now()
        if not phones:
            return worker.hang_up()
        code = "".join(c for c in digits if c.isdigit())
        if not code:
            return worker.hang_up()
        phone = _match(phones, code)
        lang = phones[0].language
        if phone is None:
            if self._locked(number, now):
                return worker.hang_up()
            self._wrong_code(number, now)
            if attempt < 2 and self._limits.locked_until(number, now) is None:
                action = self._action(attempt + 1)
                return worker.ask_code(lang, action=action, digits=CODE_DIGITS, again=True)
            return worker.call_said(lang, worker.not_recognised(lang))
        self._limits.understood(number)
        view = self._raise(phone, alert_id=None, via="call", provider_id=call_sid)
        going = _going(view)
        said = worker.going(lang, name=going) if going else worker.raised(lang)
        return worker.call_said(phone.language, said)

    def _action(self, attempt: int) -> str:
        path = f"/twilio/call/code?attempt={attempt}"
        return self._callback_url(path) or path

    # -- shared ----------------------------------------------------------------------
    def _enrolled(self, number: str) -> list[WorkerPhone]:
        """The phones (not revoked, account open) enrolled with ``number``."""
        if not number:
            return []
        with self._sessions() as s:
            phones = by_number(s, number)
            people = [p.person_id for p in phones]
            langs: dict[str, str] = dict(
                s.execute(
                    select(Person.id, Person.language).where(
                        Person.id.in_(people), Person.closed_at.is_(None)
                    )
                ).all()
            )
            return [WorkerPhone.of(p, langs[p.person_id]) for p in phones if p.person_id in langs]

    def _locked(self, number: str, now: datetime) -> bool:
        """True while this number is locked out for wrong codes (logged once per lock)."""
        until = self._limits.locked_until(number, now)
        if until is None:
            return False
        if self._limits.first_told(number, "fallback", until):
            log.warning(
                "fallback from %s ignored until %s: %d wrong codes within %d min",
                mask(number),
                until.isoformat(timespec="seconds"),
                MAX_WRONG_CODES,
                GUESS_WINDOW.total_seconds() // 60,
            )
        return True

    def _wrong_code(self, number: str, now: datetime) -> bool:
        """Count a wrong code from ``number``; True while it is still answered (up to the
        one that locks the number)."""
        count, _ = self._limits.wrong_code(number, now)
        log.warning(
            "fallback from %s: code not recognised (%d of %d allowed in %d min)",
            mask(number),
            count,
            MAX_WRONG_CODES,
            GUESS_WINDOW.total_seconds() // 60,
        )
        return count <= MAX_WRONG_CODES

    def _raise(
        self, phone: WorkerPhone, *, alert_id: str | None, via: str, provider_id: str
    ) -> PhoneView | None:
        """Raise or press the phone's alarm; where it stands (None in the rare case that
        the phone's open alarms are all hidden from it and allow no new one)."""
        own = (derived_alert_id(via, provider_id), 1, IncidentKind.PANIC)
        target = self._target(phone.phone_id, alert_id) or own
        for _ in range(2):
            chosen, presses, kind = target
            with self._sessions.begin() as s:
                # Before the alarm: an acknowledgement, however quick, finds it.
                s.get_one(MobilePhone, phone.phone_id).fallback_alert = chosen
            try:
                return self._alarms.raise_alarm(
                    phone_id=phone.phone_id,
                    alert_id=chosen,
                    pressed_at=self._clock.now(),
                    presses=presses,
                    kind=kind,
                    via=via,
                )
            except TooManyAlarmsError:
                # As many alarms open as a phone may have: press the newest instead.
                newest = self._target(phone.phone_id, None)
                if newest is None:
                    break
                target = newest
            except NotThisPhonesError:
                # The id named became another device's meanwhile: a new alarm of its own.
                target = own
        log.error("a fallback from phone %s found no alarm it may raise or press", phone.phone_id)
        return None

    def _target(self, phone_id: str, alert_id: str | None) -> tuple[str, int, IncidentKind] | None:
        """(alert id, presses, kind) to send: the alarm the SMS names (as it stands: the
        same press) unless it is not this phone's open one; else the phone's newest open
        alarm, pressed once more; None when there is neither."""
        if alert_id is not None:
            with self._sessions() as s:
                named = s.scalar(select(Incident).where(Incident.alert_id == alert_id))
                if named is None:
                    return alert_id, 1, IncidentKind.PANIC
                if (
                    named.device_id == phone_device(phone_id)
                    and named.state != State.RESOLVED
                    and named.kind != IncidentKind.DURESS  # never the phone's to name
                ):
                    return alert_id, named.presses, IncidentKind(named.kind)
        open_now = self._alarms.open_alarms(phone_id=phone_id)
        if not open_now:
            return None
        newest = open_now[-1]
        return newest.alert_id, newest.presses + 1, IncidentKind(newest.kind)


def _match(phones: list[WorkerPhone], code: str | None) -> WorkerPhone | None:
    """The phone whose fallback code ``code`` is (each phone's hash is checked)."""
    if code is None or len(code) > _CODE_MAX:
        return None
    found = None
    for phone in phones:
        if hmac.compare_digest(code_sha256(phone.phone_id, code), phone.fallback_sha256):
            found = found or phone
    return found


def _going(view: PhoneView | None) -> str | None:
    """Who is coming, for a press the worker may be told of (never a duress alarm's)."""
    if view is None or view.kind != IncidentKind.PANIC:
        return None
    return view.going
